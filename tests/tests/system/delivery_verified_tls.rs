//! Scenario: smarthost credentials only ever reach a server whose certificate verified
//! (issue 13.4). The smarthosts are aiosmtpd (`tests/tools/tls_smarthost.py`), which records
//! every AUTH attempt before answering it. One message travels through four configurations of
//! its pool:
//! 1. `tls: Required` with credentials, smarthost with a self-signed certificate: the
//!    certificate does not chain to the system roots, the attempt is deferred and the smarthost
//!    sees no AUTH at all;
//! 2. `tls: Verify` with the right CA bundle, but a certificate for another name: deferred, no
//!    AUTH;
//! 3. the same CA bundle and a certificate naming the smarthost: delivered once, authenticated;
//! 4. a second message through implicit TLS (SMTPS, as on port 465) with `tls: Verify`:
//!    delivered, authenticated.

use std::path::Path;
use std::time::Duration;

use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, metric, write_config,
};
use baton_system_tests::smarthost::{TlsSmarthost, TlsStart};
use baton_system_tests::tls::{TestCa, self_signed_pem};

const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "relay-user";
const PASSWORD: &str = "relay-secret-pw";

/// The pool (`tls` line given), its credentials Secret, the CA bundle Secret and an open
/// RelayDomain.
fn config(smarthost: &str, tls_spec: &str, ca_pem: &str) -> String {
    let ca = ca_pem.trim_end().replace('\n', "\n    ");
    format!(
        r#"apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {{name: tls}}
spec:
  ehloName: worker.baton.test
  delivery:
    mode: Smarthost
    smarthosts:
      - {{host: 127.0.0.1, {smarthost}, credentialsSecretRef: {{name: upstream}}}}
  tls: {tls_spec}
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
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {{name: example-com, namespace: default}}
spec:
  domain: example.com
  pool: tls
  submission: {{networks: [127.0.0.0/8]}}
"#
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

/// Wait until the worker log mentions `needle` (a deferral's reply) at least `times` times.
async fn logged(log: &Path, needle: &str, times: usize) -> anyhow::Result<()> {
    let found = assert_eventually(
        WAIT,
        &format!("worker log: {needle:?} x{times}"),
        || async {
            std::fs::read_to_string(log)
                .map(|l| l.matches(needle).count() >= times)
                .unwrap_or(false)
        },
    )
    .await;
    found.map_err(|e| {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let mut replies: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(" reply=").map(|(_, r)| r))
            .collect();
        replies.dedup();
        let tail: Vec<&str> = replies.into_iter().rev().take(6).collect();
        e.context(format!("last distinct worker replies: {tail:#?}"))
    })
}

/// Wait until the worker runs snapshot `generation` (each `config apply` is one more).
async fn generation(w: &Worker, generation: u32) -> anyhow::Result<()> {
    let m = w.metrics;
    assert_eventually(
        WAIT,
        &format!("worker on generation {generation}"),
        || async move { metric(m, "baton_config_generation").await == f64::from(generation) },
    )
    .await
}

#[tokio::test]
async fn credentials_only_reach_a_verified_smarthost() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-verified-tls")?;
    let ca = TestCa::new()?;
    let start = |name: &str, (cert, key): (String, String), mode| {
        TlsSmarthost::start(&dir.0, name, &cert, &key, mode, USER, PASSWORD)
    };
    let untrusted = start(
        "self-signed",
        self_signed_pem(&["127.0.0.1"]),
        TlsStart::StartTls,
    )?;
    let wrong_name = start(
        "wrong-name",
        ca.issue(&["mail.other.test"])?,
        TlsStart::StartTls,
    )?;
    let good = start("good", ca.issue(&["127.0.0.1"])?, TlsStart::StartTls)?;
    let implicit = start("implicit", ca.issue(&["127.0.0.1"])?, TlsStart::Implicit)?;

    let nats = Nats::start().await?;
    let apply = |smarthost: String, tls: &str| {
        let yaml = config(&smarthost, tls, &ca.pem());
        apply_config(&nats, &write_config(&dir.0, "c.yaml", &yaml)?)
    };
    // 1. Required + credentials: verified against the system roots, which do not know the
    //    self-signed certificate.
    apply(
        format!("port: {}, tls: Required", untrusted.port),
        "{policy: Disabled}",
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "tls", None, &[]).await?;
    assert_eq!(submit(ing.smtp, &submission("verified-tls-1")).await?, 250);
    generation(&w, 1).await?;
    // (UnknownIssuer with a system store, "no system trust anchors" on a machine without one.)
    logged(&w.log, "454 4.7.5 TLS failed", 1).await?;
    assert!(
        untrusted.auth_attempts().is_empty(),
        "credentials offered to an unverified server: {:?}",
        untrusted.auth_attempts()
    );
    assert!(untrusted.messages()?.is_empty(), "delivered unverified");

    // 2. Verify with the right CA, but the certificate names another host.
    let before = std::fs::read_to_string(&w.log)?
        .matches("invalid peer certificate")
        .count();
    apply(
        format!(
            "port: {}, tls: Verify, caBundleSecretRef: {{name: upstream-ca}}",
            wrong_name.port
        ),
        "{policy: Disabled}",
    )?;
    generation(&w, 2).await?;
    logged(&w.log, "certificate not valid for name \"127.0.0.1\"", 1).await?;
    assert!(
        std::fs::read_to_string(&w.log)?
            .matches("invalid peer certificate")
            .count()
            > before
    );
    assert!(
        wrong_name.auth_attempts().is_empty(),
        "{:?}",
        wrong_name.auth_attempts()
    );
    assert!(
        wrong_name.messages()?.is_empty(),
        "delivered to a wrong name"
    );

    // 3. The certificate names the smarthost and chains to the bundle: delivered, once.
    apply(
        format!(
            "port: {}, tls: Required, caBundleSecretRef: {{name: upstream-ca}}",
            good.port
        ),
        "{policy: Disabled}",
    )?;
    generation(&w, 3).await?;
    let got = good.wait_messages(1, WAIT).await?;
    assert_eq!(got.len(), 1);
    assert!(got[0].tls && got[0].login == USER, "{:?}", got[0]);
    assert!(got[0].content.contains("verified-tls-1"));
    assert_eq!(good.auth_attempts(), [format!("PLAIN {USER} ok")]);

    // 4. Implicit TLS (SMTPS) with Verify and the pool-wide CA bundle.
    apply(
        format!("port: {}, tls: Verify, implicitTls: true", implicit.port),
        "{policy: Disabled, caBundleSecretRef: {name: upstream-ca}}",
    )?;
    generation(&w, 4).await?;
    assert_eq!(submit(ing.smtp, &submission("verified-tls-2")).await?, 250);
    let got = implicit.wait_messages(1, WAIT).await?;
    assert!(got[0].tls && got[0].login == USER, "{:?}", got[0]);
    assert!(got[0].content.contains("verified-tls-2"));
    // Nothing else went anywhere: each message exactly once.
    assert_eq!(good.messages()?.len(), 1);
    assert!(untrusted.messages()?.is_empty() && wrong_name.messages()?.is_empty());
    assert!(untrusted.auth_attempts().is_empty() && wrong_name.auth_attempts().is_empty());
    Ok(())
}
