//! Scenario: suppression lists (issue 16).
//! - A `550 5.1.1` at delivery puts the recipient on its RelayDomain's list (class
//!   `invalid_recipient`); a *different* ingress process then refuses it at RCPT with
//!   `550 5.1.1 ... suppression list`, in any letter case; `baton suppression list` shows the
//!   entry with its reason; the entry expires (`expireAfter: 20s`) and mail is accepted again.
//! - A manual entry (`baton suppression add`, permanent) is refused; `remove` lets mail through
//!   and the message is delivered.
//! - `mode: AcceptAndBounce`: a suppressed recipient is accepted, failed without an attempt
//!   (the receiver never sees it) and reported to the sender in a DSN; the other recipient of
//!   the same message is delivered.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, parse_dsn, submit, tail, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, baton_bin, free_port,
    keyring_dir, metric, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use baton_system_tests::smtp::{Reply, Talk};

const RD: &str = "team-a/example-com";

/// EHLO, MAIL FROM:<app@example.com>, RCPT TO:<to>; the RCPT reply.
async fn rcpt(ingress: SocketAddr, to: &str) -> anyhow::Result<Reply> {
    let (mut t, _) = Talk::connect(ingress).await?;
    t.cmd("EHLO client.test").await?;
    let mail = t.cmd("MAIL FROM:<app@example.com>").await?;
    if mail.code != 250 {
        bail!("MAIL: {mail:?}");
    }
    let r = t.cmd(&format!("RCPT TO:<{to}>")).await?;
    let _ = t.cmd("QUIT").await;
    Ok(r)
}

async fn refused(ingress: SocketAddr, to: &str) -> bool {
    matches!(rcpt(ingress, to).await, Ok(r) if r.code == 550 && r.text.starts_with("5.1.1") && r.text.contains("suppression list"))
}

async fn accepted(ingress: SocketAddr, to: &str) -> bool {
    matches!(rcpt(ingress, to).await, Ok(r) if r.code == 250)
}

/// `baton suppression <args> --nats <url>`; stdout.
fn cli(nats: &Nats, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(baton_bin()?)
        .env("BATON_KEYRING", keyring_dir())
        .arg("suppression")
        .args(args)
        .args(["--nats", &nats.url])
        .output()?;
    if !out.status.success() {
        bail!(
            "baton suppression {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn with_suppression(config: String, spec: &str) -> String {
    config.replace(
        "  pool: test\n",
        &format!("  pool: test\n  suppression: {spec}\n"),
    )
}

#[tokio::test]
async fn hard_bounces_are_suppressed_by_every_ingress_until_they_expire() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-suppress")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let script = Arc::new(|s: &Stage<'_>| {
        match s {
        Stage::Rcpt { to } if to.starts_with("gone") => {
            Response::Reply(550, "5.1.1 <gone@dest.test>: Recipient address rejected: User unknown in local recipient table".into())
        }
        _ => Response::Default,
    }
    });
    let receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig {
            script,
            ..Default::default()
        },
    )
    .await?;
    let dns = Dns::dest_test().await?;
    let config = with_suppression(direct(port, "[1s]", "1h"), "{expireAfter: 20s}");
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config)?)?;
    let a = Ingress::start(&nats, &dir.0, &[]).await?;
    let b = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let wait = Duration::from_secs(30);

    assert!(
        accepted(b.smtp, "gone@dest.test").await,
        "not suppressed yet"
    );
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("gone@dest.test", "NOTIFY=NEVER")],
        subject: "first",
        ..Default::default()
    };
    assert_eq!(submit(a.smtp, &m).await?, 250);
    let out = wait_outcome(&w.log, "gone@dest.test", "bounced", wait).await?;
    assert_eq!(out[0].class, "invalid_recipient", "{out:?}");

    // The other ingress process refuses it, whatever the letter case.
    assert_eventually(wait, "ingress B refuses the suppressed recipient", || {
        refused(b.smtp, "gone@dest.test")
    })
    .await
    .with_context(|| tail(&w.log))?;
    assert!(refused(b.smtp, "Gone@DEST.test").await);
    assert!(
        accepted(b.smtp, "other@dest.test").await,
        "only that recipient"
    );
    assert_eq!(
        metric(
            w.metrics,
            "baton_suppressions_added_total{relay_domain=\"team-a/example-com\",source=\"bounce\"}"
        )
        .await,
        1.0
    );
    assert!(metric(b.metrics, "baton_ingress_suppressed_recipients_total").await >= 2.0);

    // The CLI shows it with its reason.
    let listed: serde_json::Value = serde_json::from_str(&cli(&nats, &["list", "-o", "json"])?)?;
    let entries = listed.as_array().context("a JSON array")?;
    assert_eq!(entries.len(), 1, "{listed}");
    let e = &entries[0];
    assert_eq!(e["address"], "gone@dest.test");
    assert_eq!(e["relay_domain"], RD);
    assert_eq!(e["source"], "bounce");
    assert_eq!(e["class"], "invalid_recipient");
    assert!(
        e["reply"].as_str().unwrap_or("").contains("User unknown"),
        "{e}"
    );
    assert!(e["expires_ms"].as_i64().unwrap_or(0) > 0, "expires: {e}");

    // expireAfter 20s: accepted again once it has expired.
    assert_eventually(Duration::from_secs(60), "the entry expires", || {
        accepted(b.smtp, "gone@dest.test")
    })
    .await?;
    assert!(
        cli(&nats, &["list"])?.lines().count() == 1,
        "only the header: expired entries are not listed without --all"
    );
    assert!(cli(&nats, &["list", "--all"])?.contains("expired"));
    assert!(cli(&nats, &["purge-expired"])?.contains("purged 1"));

    // A manual entry is permanent until removed.
    let added = cli(
        &nats,
        &[
            "add",
            "--relay-domain",
            RD,
            "Manual@dest.test",
            "--comment",
            "asked to stop",
        ],
    )?;
    assert!(added.contains("permanent"), "{added}");
    assert_eventually(wait, "manual entry refused", || {
        refused(a.smtp, "manual@dest.test")
    })
    .await?;
    let table = cli(&nats, &["list", "--relay-domain", RD])?;
    assert!(
        table.contains("manual@dest.test")
            && table.contains("manual")
            && table.contains("permanent"),
        "{table}"
    );
    assert!(
        cli(&nats, &["list", "--relay-domain", "team-b/other"])?
            .lines()
            .count()
            == 1
    );
    cli(&nats, &["remove", "--relay-domain", RD, "manual@dest.test"])?;
    assert!(
        cli(&nats, &["remove", "--relay-domain", RD, "manual@dest.test"]).is_err(),
        "already gone"
    );
    assert_eventually(wait, "removed entry accepted", || {
        accepted(a.smtp, "manual@dest.test")
    })
    .await?;
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("manual@dest.test", "")],
        subject: "after removal",
        ..Default::default()
    };
    assert_eq!(submit(a.smtp, &m).await?, 250);
    let got = receiver.wait_for_messages(1, wait).await?;
    assert_eq!(got[0].to, vec!["manual@dest.test".to_string()]);
    Ok(())
}

#[tokio::test]
async fn accept_and_bounce_fails_suppressed_recipients_without_an_attempt() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-suppress-accept")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let bounces = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_and_bounces().await?;
    let config = with_suppression(direct(port, "[1s]", "1h"), "{mode: AcceptAndBounce}");
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let wait = Duration::from_secs(30);

    cli(&nats, &["add", "--relay-domain", RD, "blocked@dest.test"])?;
    // The worker's copy of the list is followed like the ingress's; wait until it is there by
    // watching the worker's gauge.
    assert_eventually(wait, "worker knows the entry", || async {
        metric(w.metrics, "baton_suppression_entries").await >= 1.0
    })
    .await?;
    assert!(
        accepted(ing.smtp, "blocked@dest.test").await,
        "accepted in this mode"
    );
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("blocked@dest.test", ""), ("ok@dest.test", "")],
        subject: "half suppressed",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let out = wait_outcome(&w.log, "blocked@dest.test", "bounced", wait).await?;
    assert!(out[0].reply.contains("suppression list"), "{out:?}");
    assert!(out[0].relay.is_empty(), "no attempt: {out:?}");
    let got = receiver.wait_for_messages(1, wait).await?;
    assert_eq!(
        got[0].to,
        vec!["ok@dest.test".to_string()],
        "only the other recipient"
    );
    let dsn = bounces.wait_for_messages(1, wait).await?;
    let p = parse_dsn(&dsn[0].body)?;
    assert_eq!(p.recipients.len(), 1, "{p:?}");
    let r = |k: &str| p.recipients[0].get(k).cloned().unwrap_or_default();
    assert_eq!(r("Final-Recipient"), "rfc822;blocked@dest.test");
    assert_eq!(r("Status"), "5.1.1");
    assert!(r("Diagnostic-Code").contains("suppression list"), "{p:?}");
    // Not added again by its own failure.
    assert_eq!(
        metric(w.metrics, "baton_suppressions_added_total").await,
        0.0
    );
    Ok(())
}
