//! Scenario: a pool that requires proof of domain ownership (issue 13.6). `baton dns-records`
//! names the TXT record to publish; while the test DNS does not serve it, `config apply` leaves
//! the RelayDomain not ready and the ingress answers `451` for its mail; once the record is in
//! DNS, the next `config apply` makes it ready and the mail is accepted and delivered.

use std::time::Duration;

use anyhow::Context as _;
use baton_system_tests::config::smarthost;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config_with, baton_bin, keyring_dir, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_domain_is_ready_only_once_its_txt_record_is_published() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-domain-verify")?;
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let cfg = smarthost(&[("127.0.0.1", receiver.addr().port(), 1)], "[1s]", "1h").replacen(
        "spec:\n",
        "spec:\n  requireDomainVerification: true\n",
        1,
    );
    assert!(cfg.contains("requireDomainVerification: true"), "{cfg}");
    let path = write_config(&dir.0, "c.yaml", &cfg)?;

    // The record to publish, as a user finds it.
    let out = std::process::Command::new(baton_bin()?)
        .env("BATON_KEYRING", keyring_dir())
        .args(["dns-records", "--config"])
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = String::from_utf8(out.stdout)?;
    let line = records
        .lines()
        .find(|l| l.starts_with("_baton-verification.example.com"))
        .with_context(|| format!("no verification record in:\n{records}"))?;
    let value = line
        .split('"')
        .nth(1)
        .with_context(|| format!("no quoted value in {line:?}"))?
        .to_owned();
    assert!(value.starts_with("baton-verification="), "{value}");

    let nats = Nats::start().await?;
    let empty = Dns::start_records(&[], &[], &[], &["example.com"]).await?;
    let dns_flag = |dns: &Dns| vec!["--dns-server".to_owned(), dns.addr.to_string()];
    let flags = dns_flag(&empty);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    apply_config_with(&nats.url, &path, &flags)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let _w = Worker::start(&nats, &dir.0, "test", None, &[]).await?;
    let m = |subject| Submission {
        from: "app@example.com",
        mail_params: "",
        rcpts: vec![("x@dest.test", "")],
        subject,
    };
    // Not ready: a temporary refusal at MAIL that says what is missing.
    let before = submit(ing.smtp, &m("before-verification")).await;
    let err = before
        .err()
        .context("accepted before verification")?
        .to_string();
    assert!(err.contains("451") && err.contains(&value), "{err}");

    let published = Dns::start_records(
        &[],
        &[],
        &[("_baton-verification.example.com", value.as_str())],
        &["example.com"],
    )
    .await?;
    let flags = dns_flag(&published);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    apply_config_with(&nats.url, &path, &flags)?;
    baton_system_tests::harness::assert_eventually(WAIT, "the domain becomes ready", || async {
        submit(ing.smtp, &m("after-verification")).await.ok() == Some(250)
    })
    .await?;
    let got = receiver.wait_for_messages(1, WAIT).await?;
    assert!(String::from_utf8_lossy(&got[0].body).contains("after-verification"));
    assert_eq!(got.len(), 1, "the refused message was never queued");
    Ok(())
}
