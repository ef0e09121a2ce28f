//! Scenario: DSN duties towards the next hop (issue 12, items 3 and 4), with real receivers.
//! - `NOTIFY=SUCCESS` to a next hop that offers DSN: NOTIFY (and ORCPT) are passed on and
//!   Baton sends no success notice of its own (the next hop took DSN duty over, RFC 3461).
//! - `NOTIFY=SUCCESS` to a next hop without DSN: exactly one Baton DSN, `Action: relayed`.
//! - A message needing SMTPUTF8 relayed to a host without it bounces; the DSN to the
//!   plain-ASCII sender does not inherit SMTPUTF8 (RFC 6533) and reaches the sender's host,
//!   which has no SMTPUTF8 either.
//!
//! Hosts: `dest.test` → 127.0.0.1 (DSN, no SMTPUTF8), `nodsn.test` → 127.0.0.2 (neither),
//! `example.com` (the sender's domain) → 127.0.0.3 (DSN, no SMTPUTF8). "No success notice" is
//! checked without sleeping: the DSN counter is bumped before a message is acked, right after
//! its outcome line; the next case's DSN arrives only after that.

use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{
    JSON_LOG, Submission, outcomes, parse_dsn, submit, tail, wait_outcome,
};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, metric, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const DSN_METRIC: &str = "baton_delivery_dsn_generated_total";

#[tokio::test]
async fn success_notices_and_utf8_bounces_follow_the_next_hop() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-dsn-hop")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let with_dsn = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let without_dsn = Receiver::start(
        &format!("127.0.0.2:{port}"),
        ReceiverConfig {
            advertise_dsn: false,
            ..Default::default()
        },
    )
    .await?;
    let bounces = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::start_local(
        &[
            ("dest.test", "mx.dest.test", 10),
            ("nodsn.test", "mx.nodsn.test", 10),
            ("example.com", "mx.example.com", 10),
        ],
        &[
            ("mx.dest.test", "127.0.0.1"),
            ("mx.nodsn.test", "127.0.0.2"),
            ("mx.example.com", "127.0.0.3"),
        ],
        &["test", "example.com"],
    )
    .await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(port, "[1s, 2s]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let wait = Duration::from_secs(30);

    // 1. The next hop offers DSN: NOTIFY goes with the recipient, no notice from Baton.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("ok@dest.test", "NOTIFY=SUCCESS ORCPT=rfc822;ok@dest.test")],
        subject: "handed-over",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = with_dsn.wait_for_messages(1, wait).await?;
    assert_eq!(got[0].to, vec!["ok@dest.test".to_string()]);
    assert!(
        got[0].rcpt_params[0].contains("NOTIFY=SUCCESS"),
        "NOTIFY passed on: {:?}",
        got[0].rcpt_params
    );
    wait_outcome(&w.log, "ok@dest.test", "sent", wait).await?;

    // 2. The next hop has no DSN: one notice, `Action: relayed`.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("ok@nodsn.test", "NOTIFY=SUCCESS,FAILURE")],
        subject: "relayed",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = without_dsn.wait_for_messages(1, wait).await?;
    assert_eq!(got[0].rcpt_params, vec![String::new()], "no NOTIFY sent");
    let dsn = bounces
        .wait_for_messages(1, wait)
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    let p = parse_dsn(&dsn[0].body)?;
    assert!(p.defects.is_empty(), "{p:?}");
    assert_eq!(p.recipients.len(), 1, "{p:?}");
    let r = |k: &str| p.recipients[0].get(k).cloned().unwrap_or_default();
    assert_eq!(r("Final-Recipient"), "rfc822;ok@nodsn.test");
    assert_eq!(r("Action"), "relayed");
    assert_eq!(r("Status"), "2.0.0");
    assert!(r("Remote-MTA").contains("127.0.0.2"), "{p:?}");
    assert_eq!(
        metric(w.metrics, DSN_METRIC).await,
        1.0,
        "no success notice for the recipient handed over with NOTIFY"
    );

    // 3. UTF-8 message to a host without SMTPUTF8: bounced; the DSN to the ASCII sender is
    //    plain ASCII in envelope and headers and reaches a host without SMTPUTF8.
    let rcpt = "j\u{f6}rg@dest.test";
    let m = Submission {
        from: "app@example.com",
        mail_params: "SMTPUTF8 RET=FULL",
        rcpts: vec![(rcpt, "")],
        subject: "utf8-bounce",
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let out = wait_outcome(&w.log, rcpt, "bounced", wait).await?;
    assert!(out[0].reply.to_lowercase().contains("smtputf8"), "{out:?}");
    let dsn = bounces
        .wait_for_messages(2, wait)
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    let d = &dsn[1];
    assert_eq!(d.to, vec!["app@example.com".to_string()]);
    assert!(!d.mail_params.contains("SMTPUTF8"), "{}", d.mail_params);
    let head = String::from_utf8_lossy(&d.body);
    let head = head.split("\r\n\r\n").next().unwrap_or_default();
    assert!(head.is_ascii(), "DSN header fields are ASCII: {head}");
    let p = parse_dsn(&d.body)?;
    assert!(p.defects.is_empty(), "{p:?}");
    assert_eq!(
        p.parts,
        vec![
            "multipart/report",
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ],
        "UTF-8 header fields come back as a header block, not message/rfc822"
    );
    let r = |k: &str| p.recipients[0].get(k).cloned().unwrap_or_default();
    assert_eq!(r("Action"), "failed");
    assert_eq!(r("Final-Recipient"), "utf-8;j\\x{F6}rg@dest.test");
    assert!(r("Status").starts_with("5."), "{p:?}");
    // Every DSN was delivered (none bounced for lack of SMTPUTF8). The receiver can hold a DSN
    // before the worker has logged its outcome: wait for the lines first.
    baton_system_tests::harness::assert_eventually(
        Duration::from_secs(30),
        "2 DSN outcome lines",
        || async { outcomes(&w.log).iter().filter(|o| o.dsn).count() >= 2 },
    )
    .await?;
    let dsn_lines: Vec<_> = outcomes(&w.log).into_iter().filter(|o| o.dsn).collect();
    assert_eq!(dsn_lines.len(), 2, "{dsn_lines:?}");
    assert!(
        dsn_lines.iter().all(|o| o.status == "sent"),
        "{dsn_lines:?}"
    );
    assert_eq!(metric(w.metrics, DSN_METRIC).await, 2.0);
    Ok(())
}
