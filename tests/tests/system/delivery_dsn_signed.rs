//! Scenario: DSNs a receiver will accept (issue 16). A RelayDomain with an RSA DKIM key and
//! `postmaster: bounces@example.com`; a recipient refused with `550 5.1.1`:
//! - the DSN comes `From: bounces@example.com` with a `Message-ID` in example.com and
//!   `Auto-Submitted: auto-replied`, with the null reverse-path;
//! - it carries a DKIM signature of `d=example.com` that the independent verifier dkimpy
//!   accepts against the key published — as `baton dns-records` prints it — by a real DNS
//!   server on loopback;
//! - Python's `email` reads it as `multipart/report`, and RET=FULL returns the whole message.

use std::sync::Arc;
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, header, parse_dsn, submit, tail};
use baton_system_tests::dkim::{dkimpy_verify, dns_records, key_secret, openssl_key};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

#[tokio::test]
async fn dsns_come_from_the_postmaster_and_verify_with_dkimpy() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-dsn-signed")?;
    let port = free_port()?;
    let rsa = openssl_key("rsa")?;
    let config = direct(port, "[1s]", "1h").replace(
        "  pool: test\n",
        "  pool: test\n  postmaster: bounces@example.com\n  dkim: {selector: dsn2026, keySecretRef: {name: dkim-rsa}}\n",
    ) + "---\n"
        + &key_secret("team-a", "dkim-rsa", &rsa);
    let cfg_path = write_config(&dir.0, "c.yaml", &config)?;
    let records = dns_records(&cfg_path)?;
    let dkim: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r.rtype == "TXT" && r.name.contains("._domainkey."))
        .map(|r| (r.name.as_str(), r.value.as_str()))
        .collect();
    assert_eq!(dkim.len(), 1, "{records:?}");
    let dns = Dns::start_records(
        &[
            ("dest.test", "mx.dest.test", 10),
            ("example.com", "mx.example.com", 10),
        ],
        &[
            ("mx.dest.test", "127.0.0.1"),
            ("mx.example.com", "127.0.0.3"),
        ],
        &dkim,
        &["test", "com"],
    )
    .await?;
    let script = Arc::new(|s: &Stage<'_>| match s {
        Stage::Rcpt { to } if to.starts_with("bad") => {
            Response::Reply(550, "5.1.1 no such user".into())
        }
        _ => Response::Default,
    });
    let _receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig {
            script,
            ..Default::default()
        },
    )
    .await?;
    let bounces = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let nats = Nats::start().await?;
    apply_config(&nats, &cfg_path)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;

    let m = Submission {
        from: "app@example.com",
        mail_params: "RET=FULL",
        rcpts: vec![("bad@dest.test", "")],
        subject: "signed bounce",
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let dsn = bounces
        .wait_for_messages(1, Duration::from_secs(30))
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    let d = &dsn[0];
    assert_eq!(d.from, "");
    let from = header(&d.body, "From").unwrap_or_default();
    assert!(from.contains("<bounces@example.com>"), "{from}");
    let id = header(&d.body, "Message-ID").unwrap_or_default();
    assert!(id.ends_with("@example.com>"), "{id}");
    assert_eq!(
        header(&d.body, "Auto-Submitted").as_deref(),
        Some("auto-replied")
    );
    let verdicts = dkimpy_verify(&d.body, dns.addr)?;
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert!(verdicts[0].ok, "dkimpy: {verdicts:?}");
    assert_eq!(
        (verdicts[0].domain.as_str(), verdicts[0].selector.as_str()),
        ("example.com", "dsn2026")
    );
    let p = parse_dsn(&d.body)?;
    assert_eq!(p.content_type, "multipart/report", "{p:?}");
    assert!(p.defects.is_empty(), "{p:?}");
    assert_eq!(
        p.parts.last().map(String::as_str),
        Some("message/rfc822"),
        "RET=FULL returns the whole message: {p:?}"
    );
    // A tampered DSN does not verify (the check can fail).
    let mut tampered = d.body.clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 0x01;
    assert!(!dkimpy_verify(&tampered, dns.addr)?[0].ok);
    Ok(())
}
