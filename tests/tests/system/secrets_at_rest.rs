//! Scenario: no secret is ever at rest in clear in JetStream, and the keyring rotates without
//! a restart (issue 13.3).
//!
//! A RelayDomain with an RSA DKIM key and a VERP return-path key sends through a smarthost
//! (aiosmtpd, `tests/tools/tls_smarthost.py`) that requires AUTH over verified TLS. After the
//! message is delivered, DKIM-signed and authenticated:
//! - every message of every stream (the queue, the config and suppression buckets, the body
//!   object store) is read back raw: no PEM armour, no line or DER chunk of the DKIM key, no
//!   password and no VERP key appears; the snapshot carries the three secrets sealed;
//! - an ingress started with a keyring whose `key-1` is other material does not load the
//!   snapshot: not ready, the reason in `/readyz`, `baton_config_errors_total` counted; once
//!   its directory holds the right key it loads it, without a restart;
//! - `baton keyring add` puts `key-2` in the running processes' keyring directory; the next
//!   `config apply` re-seals everything with it under a new generation, which the running
//!   ingress and worker load without a restart (a second message is delivered and signed),
//!   while an ingress whose directory only has `key-1` keeps the previous generation, stays
//!   ready and names the problem in `/readyz`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use baton_proto::Message as _;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::dkim::{key_secret, openssl_key};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config_with, assert_eventually, baton_bin, http_get,
    metric, write_config,
};
use baton_system_tests::smarthost::{TlsSmarthost, TlsStart};
use baton_system_tests::tls::TestCa;
use futures::StreamExt as _;

const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "relay-user";
const PASSWORD: &str = "Sm4rthost-Pa55word-at-rest";
const VERP_KEY: &str = "verp-key-0123456789abcdef0123456789";

fn config(smarthost_port: u16, ca_pem: &str, dkim_pem: &str) -> String {
    let ca = ca_pem.trim_end().replace('\n', "\n    ");
    format!(
        r#"apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {{name: relay}}
spec:
  ehloName: worker.baton.test
  delivery:
    mode: Smarthost
    smarthosts:
      - {{host: 127.0.0.1, port: {smarthost_port}, tls: Verify, caBundleSecretRef: {{name: upstream-ca}}, credentialsSecretRef: {{name: upstream}}}}
  retry: {{schedule: [1s], maxAge: 1h}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream, namespace: baton-system}}
type: kubernetes.io/basic-auth
stringData: {{username: {USER}, password: {PASSWORD}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: upstream-ca, namespace: baton-system}}
stringData:
  ca.crt: |
    {ca}
---
apiVersion: v1
kind: Secret
metadata: {{name: verp, namespace: default}}
stringData: {{key-0: '{VERP_KEY}'}}
---
{dkim}
---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {{name: example-com, namespace: default}}
spec:
  domain: example.com
  pool: relay
  submission: {{networks: [127.0.0.0/8]}}
  returnPath: {{domain: bounces.example.com, mxHost: mx.baton.test, keySecretRef: {{name: verp}}}}
  dkim:
    selector: s2026
    algorithm: rsa-sha256
    keySecretRef: {{name: dkim}}
"#,
        dkim = key_secret("default", "dkim", dkim_pem),
    )
}

fn submission(subject: &str) -> Submission<'_> {
    Submission {
        from: "app@example.com",
        mail_params: "",
        rcpts: vec![("someone@dest.test", "")],
        subject,
    }
}

/// Every message of every stream, raw (headers and payload), in one buffer.
async fn dump_all_streams(nats: &Nats) -> anyhow::Result<(Vec<u8>, Vec<String>)> {
    let js = nats.jetstream().await?;
    let mut names = Vec::new();
    let mut listing = js.stream_names();
    while let Some(name) = listing.next().await {
        names.push(name?);
    }
    let mut all = Vec::new();
    for name in &names {
        let mut stream = js.get_stream(name).await?;
        let state = stream.info().await?.state.clone();
        for seq in state.first_sequence..=state.last_sequence {
            // Deleted or purged sequences have nothing to show.
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            all.extend_from_slice(m.subject.as_bytes());
            all.extend_from_slice(format!("{:?}", m.headers).as_bytes());
            all.extend_from_slice(&m.payload);
        }
    }
    Ok((all, names))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The snapshot as stored.
async fn stored_snapshot(nats: &Nats) -> anyhow::Result<baton_proto::v1::RelayConfig> {
    let js = nats.jetstream().await?;
    let kv = js.get_key_value("baton-config").await?;
    let raw = kv
        .get("relay-config")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no snapshot"))?;
    Ok(baton_proto::v1::RelayConfig::decode(raw.as_ref())?)
}

/// Wait until the process behind `metrics` runs snapshot `generation`.
async fn on_generation(metrics: std::net::SocketAddr, generation: u32) -> anyhow::Result<()> {
    assert_eventually(
        WAIT,
        &format!("process on generation {generation}"),
        || async move { metric(metrics, "baton_config_generation").await == f64::from(generation) },
    )
    .await
}

/// Wait until `/readyz` of `metrics` answers `code` with a body containing every needle.
async fn readyz(
    metrics: std::net::SocketAddr,
    code: u16,
    needles: &[&str],
) -> anyhow::Result<String> {
    let last = std::cell::RefCell::new(String::new());
    let found = assert_eventually(WAIT, "readyz", || async {
        match http_get(metrics, "/readyz").await {
            Ok((c, body)) => {
                let ok = c == code && needles.iter().all(|n| body.contains(n));
                *last.borrow_mut() = format!("{c} {body}");
                ok
            }
            Err(_) => false,
        }
    })
    .await;
    let last = last.into_inner();
    found.map_err(|e| e.context(format!("last /readyz: {last}")))?;
    Ok(last)
}

fn keyring_with(dir: &Path, keys: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in keys {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(dir.to_path_buf())
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_the_keyring_rotates_live() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-secrets-at-rest")?;
    let ca = TestCa::new()?;
    let (cert, key) = ca.issue(&["127.0.0.1"])?;
    let smarthost = TlsSmarthost::start(
        &dir.0,
        "sealed",
        &cert,
        &key,
        TlsStart::StartTls,
        USER,
        PASSWORD,
    )?;
    let dkim_pem = openssl_key("rsa")?;

    // This test's own keyring (the run's shared one must not rotate under other scenarios).
    let key_1 = baton_seal::generate_key_text()?;
    let live = keyring_with(&dir.0.join("keyring"), &[("key-1", &key_1)])?;
    let stale = keyring_with(&dir.0.join("keyring-stale"), &[("key-1", &key_1)])?;
    let other = keyring_with(
        &dir.0.join("keyring-other"),
        &[("key-1", &baton_seal::generate_key_text()?)],
    )?;
    let flag = |p: &Path| p.to_string_lossy().into_owned();
    let (live_s, stale_s, other_s) = (flag(&live), flag(&stale), flag(&other));

    let nats = Nats::start().await?;
    let yaml = write_config(
        &dir.0,
        "c.yaml",
        &config(smarthost.port, &ca.pem(), &dkim_pem),
    )?;
    apply_config_with(&nats.url, &yaml, &["--keyring", &live_s])?;
    let ing = Ingress::start(&nats, &dir.0, &["--keyring", &live_s]).await?;
    let stale_ing = Ingress::start(&nats, &dir.0, &["--keyring", &stale_s]).await?;
    let w = Worker::start(&nats, &dir.0, "relay", None, &["--keyring", &live_s]).await?;

    assert_eq!(submit(ing.smtp, &submission("sealed-1")).await?, 250);
    let got = smarthost.wait_messages(1, WAIT).await?;
    assert!(got[0].tls && got[0].login == USER, "{:?}", got[0]);
    assert!(
        got[0].content.contains("DKIM-Signature:") && got[0].content.contains("s=s2026"),
        "not signed: {}",
        got[0].content
    );
    assert!(
        got[0].from.ends_with("@bounces.example.com"),
        "VERP return path: {}",
        got[0].from
    );

    // The snapshot carries the three secrets, sealed with key 1.
    let snapshot = stored_snapshot(&nats).await?;
    assert_eq!(baton_seal::sealed_key_ids(&snapshot), [1, 1, 1]);
    assert!(baton_seal::clear_secrets(&snapshot).is_empty());

    // Nothing in any stream shows a secret.
    let (dump, streams) = dump_all_streams(&nats).await?;
    for s in ["BATON_QUEUE", "KV_baton-config"] {
        assert!(streams.iter().any(|n| n == s), "{s} not among {streams:?}");
    }
    // (Delivered mail has left the queue; the snapshot and its history are there.)
    assert!(
        contains(&dump, b"$KV.baton-config.relay-config")
            && contains(&dump, b"bounces.example.com"),
        "the dump reads the config bucket"
    );
    let pem_lines: Vec<&str> = dkim_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(pem_lines.concat())?;
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("PEM armour", b"PRIVATE KEY".to_vec()),
        (
            "a PEM line of the DKIM key",
            pem_lines[3].as_bytes().to_vec(),
        ),
        ("a DER chunk of the DKIM key", der[200..248].to_vec()),
        ("the smarthost password", PASSWORD.as_bytes().to_vec()),
        ("the VERP key", VERP_KEY.as_bytes().to_vec()),
    ];
    for (what, needle) in &secrets {
        assert!(
            !contains(&dump, needle),
            "{what} found at rest in JetStream"
        );
    }

    // A keyring with other material under the same id: the snapshot never loads.
    let wrong = Ingress::spawn_url(&nats.url, &dir.0, &["--keyring", &other_s])?;
    let body = readyz(
        wrong.metrics,
        503,
        &["no config snapshot yet", "does not open with keyring key 1"],
    )
    .await?;
    assert!(!body.contains(PASSWORD) && !body.contains(&key_1), "{body}");
    assert!(metric(wrong.metrics, "baton_config_errors_total").await >= 1.0);
    // Its keyring mount gets the right material: it loads the snapshot without a restart.
    std::fs::write(other.join("key-1"), &key_1)?;
    readyz(wrong.metrics, 200, &["ready"]).await?;
    assert_eq!(metric(wrong.metrics, "baton_config_generation").await, 1.0);

    // Rotation: key 2 joins the live directory, the next apply re-seals with it.
    let out = std::process::Command::new(baton_bin()?)
        .args(["keyring", "add", "--keyring", &live_s])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("added key 2"));
    apply_config_with(&nats.url, &yaml, &["--keyring", &live_s])?;
    let snapshot = stored_snapshot(&nats).await?;
    assert_eq!(snapshot.generation, 2, "re-sealing is a new generation");
    assert_eq!(baton_seal::sealed_key_ids(&snapshot), [2, 2, 2]);
    // The running processes read key 2 from their directory when the snapshot needs it.
    on_generation(ing.metrics, 2).await?;
    on_generation(w.metrics, 2).await?;
    assert_eq!(submit(ing.smtp, &submission("sealed-2")).await?, 250);
    let got = smarthost.wait_messages(2, WAIT).await?;
    let second = got
        .iter()
        .find(|m| m.content.contains("sealed-2"))
        .ok_or_else(|| anyhow::anyhow!("second message missing"))?;
    assert!(second.content.contains("s=s2026") && second.login == USER);

    // The ingress whose directory lacks key 2 keeps generation 1 and stays ready, saying why.
    let body = readyz(
        stale_ing.metrics,
        200,
        &[
            "config-rejected",
            "keyring key 2",
            "previous one stays in force",
        ],
    )
    .await?;
    assert!(!body.contains(PASSWORD), "{body}");
    assert_eq!(
        metric(stale_ing.metrics, "baton_config_generation").await,
        1.0
    );
    assert!(metric(stale_ing.metrics, "baton_config_errors_total").await >= 1.0);
    assert_eq!(submit(stale_ing.smtp, &submission("sealed-3")).await?, 250);
    let got = smarthost.wait_messages(3, WAIT).await?;
    assert!(got.iter().any(|m| m.content.contains("sealed-3")));

    // A newer snapshot it can open (sealed with key 1 only) supersedes the one it waits for:
    // once its directory gets key 2 as well, it must not fall back to generation 2.
    apply_config_with(&nats.url, &yaml, &["--keyring", &stale_s])?;
    assert_eq!(stored_snapshot(&nats).await?.generation, 3);
    on_generation(stale_ing.metrics, 3).await?;
    on_generation(ing.metrics, 3).await?;
    std::fs::copy(live.join("key-2"), stale.join("key-2"))?;
    // The waiting snapshot would be retried every 10 s (`baton_queue::KEY_RETRY`).
    let watch_until = tokio::time::Instant::now() + baton_queue::KEY_RETRY * 2;
    while tokio::time::Instant::now() < watch_until {
        let generation = metric(stale_ing.metrics, "baton_config_generation").await;
        assert_eq!(generation, 3.0, "went back to an older snapshot");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
