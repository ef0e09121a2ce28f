//! Scenario: the ingress certificate is renewed without a restart (what cert-manager does to a
//! mounted Secret). A session opened with the first certificate stays up; once the files are
//! replaced, new sessions are served the new certificate (`baton_ingress_tls_reloads_total
//! {result="ok"}` counts it); files that do not load are refused (`result="refused"`) and the
//! certificate in force stays.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, apply_config, assert_eventually, http_get, write_config,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::client::TlsStream;

type Session = TlsStream<tokio::net::TcpStream>;

/// An implicit-TLS session verified as `localhost` against `roots`; returns the session, after
/// its greeting, and the certificate the server presented.
async fn session(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
) -> anyhow::Result<(Session, Vec<u8>)> {
    let roots = baton_system_tests::tls::root_store(roots)?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost")?, tcp),
    )
    .await
    .context("TLS handshake timed out")??;
    let presented = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
    anyhow::ensure!(buf[..n].starts_with(b"220 "), "greeting: {:?}", &buf[..n]);
    Ok((s, presented))
}

async fn reloads(metrics: SocketAddr, result: &str) -> f64 {
    let Ok((_, body)) = http_get(metrics, "/metrics").await else {
        return -1.0;
    };
    let prefix = format!("baton_ingress_tls_reloads_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Replace a file the way a Secret update does: write a new file, then rename it into place.
fn replace(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-tls-reload")?;
    let nats = Nats::start().await?;
    let cfg = baton_system_tests::config::direct(2500, "[1s]", "1h");
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;
    let ing = Ingress::start(&nats, &dir.0, &["--tls-reload-every", "200ms"]).await?;
    let (cert_path, key_path) = (dir.0.join("tls.crt"), dir.0.join("tls.key"));
    let first = CertificateDer::from_pem_file(&cert_path)?;
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let second = renewed.cert.der().clone();
    let roots = [first.clone(), second.clone()];

    let (mut old, presented) = session(ing.smtps, &roots).await?;
    assert_eq!(presented, first.to_vec(), "the first certificate is served");

    // Renewal: key first, then the certificate.
    replace(&key_path, renewed.signing_key.serialize_pem().as_bytes())?;
    replace(&cert_path, renewed.cert.pem().as_bytes())?;
    let want = second.to_vec();
    assert_eventually(
        Duration::from_secs(20),
        "new sessions get the renewed certificate",
        || {
            let (roots, want) = (roots.clone(), want.clone());
            async move { matches!(session(ing.smtps, &roots).await, Ok((_, p)) if p == want) }
        },
    )
    .await?;
    assert_eventually(Duration::from_secs(10), "the reload is counted", || async {
        reloads(ing.metrics, "ok").await == 1.0
    })
    .await?;

    // The session opened before the renewal is still served.
    old.write_all(b"NOOP\r\n").await?;
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), old.read(&mut buf)).await??;
    assert!(buf[..n].starts_with(b"250 "), "{:?}", &buf[..n]);

    // Files that do not load are refused; the renewed certificate stays in force.
    let refused = reloads(ing.metrics, "refused").await;
    replace(&cert_path, b"not a certificate\n")?;
    assert_eventually(
        Duration::from_secs(20),
        "a broken renewal is refused",
        || async { reloads(ing.metrics, "refused").await > refused },
    )
    .await?;
    let (_, presented) = session(ing.smtps, &roots).await?;
    assert_eq!(presented, want, "the certificate in force stays");
    assert_eq!(reloads(ing.metrics, "ok").await, 1.0);
    Ok(())
}
