//! Scenario: `baton dev`'s TLS certificate is one a real client can trust. Started twice on the
//! same `--data-dir`, it presents the same certificate, kept in `<data-dir>/tls/dev.crt` and
//! named in its start-up log; `openssl x509` sees the names `localhost`, `127.0.0.1` and `::1`,
//! and a rustls client trusting only that file verifies the server both as `localhost` and as
//! `127.0.0.1` (what msmtp or nodemailer with `ca` do with default settings).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use baton_system_tests::harness::{
    Nats, Proc, TempDir, assert_eventually, baton_bin, free_port, http_get, write_config,
};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt as _;

/// A running `baton dev` with its implicit-TLS port.
struct Dev {
    proc: Proc,
    smtps: SocketAddr,
    log: std::path::PathBuf,
}

async fn start_dev(nats: &Nats, dir: &Path, round: u32) -> anyhow::Result<Dev> {
    let cfg = write_config(
        dir,
        "c.yaml",
        &baton_system_tests::config::direct(2500, "[1s]", "1h"),
    )?;
    let port = || free_port().map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let (smtp, sub, smtps, metrics, admin) = (port()?, port()?, port()?, port()?, port()?);
    let log = dir.join(format!("dev-{round}.log"));
    let child = Command::new(baton_bin()?)
        .args(["dev", "--nats", &nats.url, "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen-smtp", &smtp.to_string()])
        .args(["--listen-submission", &sub.to_string()])
        .args(["--listen-smtps", &smtps.to_string()])
        .args(["--listen-metrics", &metrics.to_string()])
        .args(["--listen-admin", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let dev = Dev {
        proc: Proc {
            child,
            name: "baton dev".into(),
        },
        smtps,
        log,
    };
    assert_eventually(
        Duration::from_secs(30),
        "baton dev /readyz",
        || async move {
            http_get(metrics, "/readyz")
                .await
                .is_ok_and(|(c, _)| c == 200)
        },
    )
    .await
    .with_context(|| std::fs::read_to_string(&dev.log).unwrap_or_default())?;
    Ok(dev)
}

/// The TLS greeting on `addr`, verifying the server as `name` against `tls`'s roots.
async fn greeting(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    name: &'static str,
) -> anyhow::Result<String> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut s = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(tls).connect(ServerName::try_from(name)?, tcp),
    )
    .await
    .context("TLS handshake timed out")?
    .with_context(|| format!("TLS handshake verifying {name}"))?;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// `openssl x509 -ext subjectAltName` of `cert`.
fn sans(cert: &Path) -> anyhow::Result<String> {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(cert)
        .output()
        .context("running openssl (Debian package `openssl`)")?;
    anyhow::ensure!(out.status.success(), "openssl x509: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn dev_certificate_is_kept_and_names_local_addresses() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-devcert")?;
    let nats = Nats::start().await?;
    let cert = dir.0.join("data/tls/dev.crt");

    let mut dev = start_dev(&nats, &dir.0, 1).await?;
    let pem = std::fs::read(&cert).with_context(|| format!("{} missing", cert.display()))?;
    let log = std::fs::read_to_string(&dev.log)?;
    assert!(
        log.lines()
            .any(|l| l.contains("dev TLS certificate") && l.contains("data/tls/dev.crt")),
        "the certificate path is printed at start-up:\n{log}"
    );
    let names = sans(&cert)?;
    for want in [
        "DNS:localhost",
        "IP Address:127.0.0.1",
        "IP Address:0:0:0:0:0:0:0:1",
    ] {
        assert!(names.contains(want), "{want} not in {names}");
    }
    let trusting = baton_system_tests::wire::trusting(&cert)?;
    for name in ["localhost", "127.0.0.1"] {
        let g = greeting(dev.smtps, trusting.clone(), name).await?;
        assert!(g.starts_with("220 "), "{name}: {g:?}");
    }
    assert!(
        dev.proc.terminate(Duration::from_secs(20)),
        "baton dev did not stop"
    );

    // Second start on the same data directory: the same certificate, still trusted.
    let dev = start_dev(&nats, &dir.0, 2).await?;
    assert_eq!(
        std::fs::read(&cert)?,
        pem,
        "the certificate changed across restarts"
    );
    for name in ["localhost", "127.0.0.1"] {
        let g = greeting(dev.smtps, trusting.clone(), name).await?;
        assert!(g.starts_with("220 "), "{name} after restart: {g:?}");
    }
    Ok(())
}
