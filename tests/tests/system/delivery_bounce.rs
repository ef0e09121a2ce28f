//! Scenario: permanent failures produce RFC 3464 DSNs, only when they should.
//! - `550` for one of two recipients: the other is delivered; one DSN reaches the sender's
//!   domain (`example.com` MX → receiver on 127.0.0.3) with a null MAIL FROM, and Python's
//!   `email` package reads `multipart/report; report-type=delivery-status` with
//!   `Original-Envelope-Id`, `Final-Recipient`, `Original-Recipient`, `Action: failed`,
//!   `Status: 5.1.1`, `Diagnostic-Code`.
//! - `NOTIFY=NEVER`: the recipient bounces (log line) and no DSN is generated.
//! - A failed message with a null reverse-path is never bounced.
//!
//! "No DSN" is checked without sleeping: after the worker's `status=bounced` line (the DSN, if
//! any, is published before the original is acked, right after that line), a sentinel message
//! that *does* bounce is submitted; once its DSN has arrived, the DSN receiver must hold only
//! the expected DSNs, and the DSN counter must match.

use std::sync::Arc;
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{
    JSON_LOG, Submission, header, parse_dsn, submit, tail, wait_outcome,
};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, metric, write_config,
};
use baton_system_tests::receiver::{ReceivedMessage, Receiver, ReceiverConfig, Response, Stage};

const DSN_METRIC: &str = "baton_delivery_dsn_generated_total";

/// DSNs received so far, by the `Subject` of the returned original's headers.
fn reported_subjects(dsns: &[ReceivedMessage]) -> Vec<String> {
    dsns.iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.body).into_owned();
            text.lines()
                .filter_map(|l| l.strip_prefix("Subject: "))
                .nth(1) // the first is the DSN's own subject
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn failures_bounce_to_the_sender_unless_they_must_not() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-bounce")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let script = Arc::new(|s: &Stage<'_>| match s {
        Stage::Rcpt { to } if to.starts_with("bad") => {
            Response::Reply(550, "5.1.1 no such user here".into())
        }
        _ => Response::Default,
    });
    let receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig {
            script,
            ..Default::default()
        },
    )
    .await?;
    let bounces = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_and_bounces().await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(port, "[1s, 2s]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let wait = Duration::from_secs(30);

    // One recipient refused with 550, the other delivered; ENVID and ORCPT are echoed.
    let m = Submission {
        from: "app@example.com",
        mail_params: "RET=HDRS ENVID=env-42",
        rcpts: vec![
            ("good@dest.test", ""),
            ("bad@dest.test", "ORCPT=rfc822;bad@dest.test"),
        ],
        subject: "mixed",
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = receiver.wait_for_messages(1, wait).await?;
    assert_eq!(got[0].to, vec!["good@dest.test".to_string()]);
    let out = wait_outcome(&w.log, "bad@dest.test", "bounced", wait).await?;
    assert!(out[0].reply.contains("550 5.1.1"), "{out:?}");
    assert_eq!(out[0].class, "invalid_recipient", "{out:?}");
    let dsn = bounces
        .wait_for_messages(1, wait)
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    let d = &dsn[0];
    assert_eq!(d.from, "", "a DSN is sent with the null reverse-path");
    assert_eq!(d.to, vec!["app@example.com".to_string()]);
    assert!(header(&d.body, "Auto-Submitted").is_some());
    let p = parse_dsn(&d.body)?;
    assert_eq!(p.content_type, "multipart/report", "{p:?}");
    assert_eq!(p.report_type, "delivery-status", "{p:?}");
    assert!(p.defects.is_empty(), "python found defects: {p:?}");
    assert_eq!(
        p.parts,
        vec![
            "multipart/report",
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ],
        "RET=HDRS returns the headers only"
    );
    let pm = |k: &str| p.per_message.get(k).cloned().unwrap_or_default();
    assert_eq!(pm("Original-Envelope-Id"), "env-42");
    assert!(pm("Reporting-MTA").starts_with("dns;"), "{p:?}");
    assert_eq!(
        p.recipients.len(),
        1,
        "only the failed recipient is reported: {p:?}"
    );
    let r = |k: &str| p.recipients[0].get(k).cloned().unwrap_or_default();
    assert_eq!(r("Final-Recipient"), "rfc822;bad@dest.test");
    assert_eq!(r("Original-Recipient"), "rfc822;bad@dest.test");
    assert_eq!(r("Action"), "failed");
    assert_eq!(r("Status"), "5.1.1");
    assert!(r("Status").starts_with("5."));
    assert!(r("Diagnostic-Code").starts_with("smtp;"), "{p:?}");
    assert!(
        r("Diagnostic-Code").contains("550 5.1.1 no such user here"),
        "{p:?}"
    );
    assert!(r("Remote-MTA").contains("127.0.0.1"), "{p:?}");
    assert_eq!(r("X-Baton-Bounce-Class"), "invalid_recipient", "{p:?}");
    assert_eq!(reported_subjects(&dsn), vec!["mixed"]);
    assert_eq!(metric(w.metrics, DSN_METRIC).await, 1.0);
    assert_eq!(
        metric(
            w.metrics,
            "baton_delivery_bounces_total{class=\"invalid_recipient\",outcome=\"bounced\",pool=\"test\"}"
        )
        .await,
        1.0
    );

    // NOTIFY=NEVER: bounced, no DSN.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("bad-never@dest.test", "NOTIFY=NEVER")],
        subject: "never",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    wait_outcome(&w.log, "bad-never@dest.test", "bounced", wait).await?;

    // Null reverse-path: bounced, never a DSN.
    let m = Submission {
        from: "",
        rcpts: vec![("bad-null@dest.test", "")],
        subject: "null-sender",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    wait_outcome(&w.log, "bad-null@dest.test", "bounced", wait).await?;

    // Sentinel: submitted after both bounced lines; its DSN arrives after any DSN those two
    // could have caused (they are published before their originals are acked).
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("bad-sentinel@dest.test", "")],
        subject: "sentinel",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    wait_outcome(&w.log, "bad-sentinel@dest.test", "bounced", wait).await?;
    let dsn = bounces.wait_for_messages(2, wait).await?;
    assert_eq!(reported_subjects(&dsn), vec!["mixed", "sentinel"]);
    assert_eq!(
        metric(w.metrics, DSN_METRIC).await,
        2.0,
        "no DSN generated for NEVER or <>"
    );
    // The DSNs themselves were delivered (dsn=true lines), never bounced further. The receiver
    // can hold a DSN before the worker has logged its outcome: wait for the lines first.
    baton_system_tests::harness::assert_eventually(wait, "2 DSN outcome lines", || async {
        baton_system_tests::delivery::outcomes(&w.log)
            .iter()
            .filter(|o| o.dsn)
            .count()
            >= 2
    })
    .await?;
    let dsn_lines: Vec<_> = baton_system_tests::delivery::outcomes(&w.log)
        .into_iter()
        .filter(|o| o.dsn)
        .collect();
    assert_eq!(dsn_lines.len(), 2, "{dsn_lines:?}");
    assert!(
        dsn_lines
            .iter()
            .all(|o| o.status == "sent" && o.to == "app@example.com")
    );
    Ok(())
}
