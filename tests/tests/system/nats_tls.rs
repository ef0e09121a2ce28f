//! Scenario: TLS to NATS (issue 13.2). nats-server requires TLS and verifies clients
//! (`verify: true`); its certificate and the clients' come from a test CA. With `--nats-ca`,
//! `--nats-cert` and `--nats-key`, `config apply`, the ingress and a worker connect and mail flows
//! end to end. An ingress that does not trust the server's CA, or presents no client
//! certificate, stays not ready and keeps running (it never crashes or spins into a restart),
//! and `config apply` without TLS settings fails instead of writing anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_system_tests::config::smarthost;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config_with, assert_eventually, baton_bin, http_get,
    keyring_dir, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};
use baton_system_tests::tls::TestCa;

const WAIT: Duration = Duration::from_secs(30);

/// Write `(cert, key)` PEM into `dir/name.crt|key`.
fn write_pair(
    dir: &Path,
    name: &str,
    (cert, key): (String, String),
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert)?;
    std::fs::write(&k, key)?;
    Ok((c, k))
}

fn flags<'a>(ca: &'a Path, cert: Option<&'a (PathBuf, PathBuf)>) -> Vec<&'a str> {
    let mut v = vec!["--nats-ca", ca.to_str().unwrap_or_default()];
    if let Some((c, k)) = cert {
        v.extend([
            "--nats-cert",
            c.to_str().unwrap_or_default(),
            "--nats-key",
            k.to_str().unwrap_or_default(),
        ]);
    }
    v
}

/// An ingress started with `extra` answers `/readyz` but never 200 within a few seconds, and
/// is still running.
async fn stays_not_ready(nats: &Nats, dir: &Path, extra: &[&str], why: &str) -> anyhow::Result<()> {
    let mut ing = Ingress::spawn_url(&nats.url, dir, extra)?;
    let m = ing.metrics;
    assert_eventually(WAIT, &format!("{why}: /readyz answers"), || async move {
        http_get(m, "/readyz").await.is_ok()
    })
    .await?;
    for _ in 0..20 {
        let (code, body) = http_get(m, "/readyz").await?;
        assert_ne!(
            code, 200,
            "{why}: ready without a trusted TLS connection: {body}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (_, body) = http_get(m, "/readyz").await?;
    assert!(body.contains("nats"), "{why}: /readyz names NATS: {body}");
    assert!(
        ing.proc.child.try_wait()?.is_none(),
        "{why}: the ingress exited"
    );
    Ok(())
}

#[tokio::test]
async fn everything_reaches_nats_over_verified_tls() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-nats-tls")?;
    let ca = TestCa::new()?;
    let ca_file = dir.0.join("ca.crt");
    std::fs::write(&ca_file, ca.pem())?;
    let (server_cert, server_key) =
        write_pair(&dir.0, "server", ca.issue(&["127.0.0.1", "localhost"])?)?;
    let client = write_pair(&dir.0, "client", ca.issue(&["baton-client"])?)?;
    let other_ca = TestCa::new()?;
    let other_ca_file = dir.0.join("other-ca.crt");
    std::fs::write(&other_ca_file, other_ca.pem())?;

    let tls = format!(
        "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: true\n  timeout: 5\n}}\n",
        server_cert.display().to_string(),
        server_key.display().to_string(),
        ca_file.display().to_string()
    );
    let nats = Nats::start_with(Some(tls)).await?;

    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let cfg = smarthost(&[("127.0.0.1", receiver.addr().port(), 1)], "[1s]", "1h");
    let path = write_config(&dir.0, "c.yaml", &cfg)?;

    // Without TLS settings `config apply` fails (the server demands a client certificate)
    // and writes nothing; bounded, so a hang fails the test too.
    let plain = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(baton_bin()?)
            .env("BATON_KEYRING", keyring_dir())
            .args(["config", "apply", "--nats", &nats.url])
            .arg(&path)
            .output(),
    )
    .await??;
    assert!(
        !plain.status.success(),
        "config apply without TLS succeeded"
    );

    let good = flags(&ca_file, Some(&client));
    apply_config_with(&nats.url, &path, &good)?;
    let ing = Ingress::start(&nats, &dir.0, &good).await?;
    let _w = Worker::start(&nats, &dir.0, "test", None, &good).await?;
    let m = Submission {
        from: "app@example.com",
        mail_params: "",
        rcpts: vec![("x@dest.test", "")],
        subject: "over-tls-nats",
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = receiver.wait_for_messages(1, WAIT).await?;
    assert!(String::from_utf8_lossy(&got[0].body).contains("over-tls-nats"));

    // A client that does not trust the server's CA, and one without a client certificate.
    stays_not_ready(
        &nats,
        &dir.0,
        &flags(&other_ca_file, Some(&client)),
        "wrong CA",
    )
    .await?;
    stays_not_ready(
        &nats,
        &dir.0,
        &flags(&ca_file, None),
        "no client certificate",
    )
    .await?;
    Ok(())
}
