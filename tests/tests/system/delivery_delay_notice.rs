//! Scenario: delay notices (RFC 3464 `Action: delayed`), like Postfix's `delay_warning_time`.
//! One message to two recipients that the receiver keeps deferring (`451 4.2.0`), with
//! `spec.delayNotice: {after: 1s, interval: 1h}` and a retry every second:
//! - exactly one delay notice arrives at the sender's MX; Python's `email` reads it as
//!   `multipart/report` with `Action: delayed`, a `4.x.x` status and the bounce class, and it
//!   lists only the recipient whose NOTIFY includes DELAY (not the NOTIFY=FAILURE one);
//! - later attempts within the interval send no second notice (checked on the counter after two
//!   more attempts have finished, so nothing is in flight).

use std::sync::Arc;
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, outcomes, parse_dsn, submit, tail};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, metric,
    write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

const NOTICES: &str = "baton_delivery_delay_notices_total";

#[tokio::test]
async fn deferred_mail_gets_one_delay_notice_per_interval() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-delay")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let script = Arc::new(|s: &Stage<'_>| match s {
        Stage::Rcpt { to } if to.starts_with("slow") => {
            Response::Reply(451, "4.2.0 Greylisted, please try again later".into())
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
    let dns = Dns::dest_and_bounces().await?;
    let config = direct(port, "[1s]", "1h").replace(
        "  pool: test\n",
        "  pool: test\n  delayNotice: {after: 1s, interval: 1h}\n",
    );
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let wait = Duration::from_secs(30);

    let m = Submission {
        from: "app@example.com",
        rcpts: vec![
            ("slow-delay@dest.test", "NOTIFY=DELAY,FAILURE"),
            ("slow-failure@dest.test", "NOTIFY=FAILURE"),
        ],
        subject: "greylisted",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let notices = bounces
        .wait_for_messages(1, wait)
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    let n = &notices[0];
    assert_eq!(n.from, "", "sent with the null reverse-path");
    assert_eq!(n.to, vec!["app@example.com".to_string()]);
    let p = parse_dsn(&n.body)?;
    assert_eq!(p.content_type, "multipart/report", "{p:?}");
    assert_eq!(p.report_type, "delivery-status", "{p:?}");
    assert!(p.defects.is_empty(), "{p:?}");
    assert_eq!(p.recipients.len(), 1, "only NOTIFY=DELAY: {p:?}");
    let r = |k: &str| p.recipients[0].get(k).cloned().unwrap_or_default();
    assert_eq!(r("Final-Recipient"), "rfc822;slow-delay@dest.test");
    assert_eq!(r("Action"), "delayed");
    assert_eq!(r("Status"), "4.2.0");
    assert_eq!(r("X-Baton-Bounce-Class"), "transient");
    assert!(r("Diagnostic-Code").contains("Greylisted"), "{p:?}");

    // Two more attempts finish within the interval: still one notice.
    let first_notice_attempt = outcomes(&w.log)
        .iter()
        .filter(|o| o.to == "slow-delay@dest.test")
        .map(|o| o.attempt)
        .max()
        .unwrap_or(0);
    assert_eventually(wait, "two more attempts", || async {
        outcomes(&w.log)
            .iter()
            .any(|o| o.to == "slow-delay@dest.test" && o.attempt >= first_notice_attempt + 3)
    })
    .await
    .map_err(|e| e.context(tail(&w.log)))?;
    assert_eq!(metric(w.metrics, NOTICES).await, 1.0);
    assert_eq!(bounces.messages().len(), 1, "no second notice");
    Ok(())
}
