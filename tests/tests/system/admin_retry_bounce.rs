//! Scenario: acting on mail that waits in a late retry tier (issue 14), over the production
//! NATS authorization. The pool retries after one hour; the receiver answers `451` until it is
//! fixed, so two messages wait in the retry tier:
//! - `baton queue retry --recipient a@dest.test` delivers the first within seconds, once;
//! - `baton queue bounce --recipient b@dest.test --reason ...` sends the sender a DSN that
//!   carries the reason, and the second is never delivered;
//! - the queue is then empty (the originals left the tier).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_system_tests::admin::Admin;
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{Dns, TempDir, assert_eventually, free_port, write_config};
use baton_system_tests::nats_users::{ingress_and_worker, login, secured_nats, strs};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

const WAIT: Duration = Duration::from_secs(60);

fn received(r: &Receiver, subject: &str) -> usize {
    r.messages()
        .iter()
        .filter(|m| String::from_utf8_lossy(&m.body).contains(subject))
        .count()
}

/// A receiver on 127.0.0.1:`port` answering `451` to every RCPT until the flag is set.
async fn deferring_receiver(port: u16) -> anyhow::Result<(Receiver, Arc<AtomicBool>)> {
    let fixed = Arc::new(AtomicBool::new(false));
    let f = fixed.clone();
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::Rcpt { .. } if !f.load(Ordering::SeqCst) => {
            Response::Reply(451, "4.3.0 try again later".into())
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
    Ok((receiver, fixed))
}

#[tokio::test]
async fn retry_now_delivers_and_bounce_returns_mail_waiting_in_a_late_tier() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-retry-bounce")?;
    let users = dir.0.join("users");
    let port = free_port()?;
    let (receiver, fixed) = deferring_receiver(port).await?;
    let bounces = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_and_bounces().await?;
    let cfg = write_config(&dir.0, "c.yaml", &direct(port, "[1h]", "2h"))?;
    let nats = secured_nats(&cfg, &users, &[]).await?;
    let admin_login = login(&users, "admin");
    let (ing, _w) = ingress_and_worker(&nats, &dir.0, &users, "test", Some(dns.addr)).await?;
    let api = Admin::start(&nats.url, &dir.0, &strs(&admin_login)).await?;
    let ops = api.token(&dir.0, "ops", "admin", &[])?;

    for (to, subject) in [("a@dest.test", "retry-me"), ("b@dest.test", "bounce-me")] {
        let m = Submission {
            from: "app@example.com",
            rcpts: vec![(to, "")],
            subject,
            ..Default::default()
        };
        assert_eq!(submit(ing.smtp, &m).await?, 250);
    }
    let (a, t) = (&api, &ops);
    assert_eventually(WAIT, "both deferred to the one-hour tier", || async move {
        a.queue_json(t, &["list", "--place", "retry"])
            .is_ok_and(|v| v["messages"].as_array().is_some_and(|m| m.len() == 2))
    })
    .await?;
    let waiting = api.queue_json(&ops, &["list", "--place", "retry"])?;
    let first = &waiting["messages"][0];
    assert_eq!(first["attempts"], 1, "{waiting}");
    assert!(
        first["recipients"][0]["lastReply"]
            .as_str()
            .is_some_and(|r| r.starts_with("451 4.3.0")),
        "{waiting}"
    );
    fixed.store(true, Ordering::SeqCst);

    let moved = api.queue_json(&ops, &["retry", "--recipient", "a@dest.test"])?;
    assert_eq!(moved["matched"], 1, "{moved}");
    let r = &receiver;
    assert_eventually(WAIT, "retried at once, not in an hour", || async move {
        received(r, "retry-me") == 1
    })
    .await?;

    let o = api.queue(&ops, &["bounce", "--recipient", "b@dest.test"])?;
    assert!(!o.status.success(), "a bounce needs --reason");
    let bounced = api.queue_json(
        &ops,
        &[
            "bounce",
            "--recipient",
            "b@dest.test",
            "--reason",
            "customer asked to stop",
        ],
    )?;
    assert_eq!(bounced["matched"], 1, "{bounced}");
    let dsn = bounces.wait_for_messages(1, WAIT).await?;
    assert_eq!(dsn[0].to, ["app@example.com"]);
    let text = String::from_utf8_lossy(&dsn[0].body);
    assert!(
        text.contains("bounced by the operator: customer asked to stop"),
        "{text}"
    );
    assert!(text.contains("b@dest.test"), "{text}");
    assert_eventually(WAIT, "an empty queue", || async move {
        a.queue_json(t, &["summary"])
            .is_ok_and(|s| s["scanned"] == 0)
    })
    .await?;
    assert_eq!(received(&receiver, "retry-me"), 1);
    assert_eq!(
        received(&receiver, "bounce-me"),
        0,
        "bounced, never delivered"
    );
    Ok(())
}

/// A worker holds a deferred message until its due time. An operator deletes it meanwhile:
/// when the time comes the worker learns so from the record of the move (`baton-moved`, the
/// only queue fact its identity may read besides its lanes) and does not attempt it, although
/// the receiver would now accept it. The worker's oldest-message gauge shows the message held
/// while it waits and 0 once it let go.
#[tokio::test]
async fn a_message_deleted_while_a_worker_waits_for_its_due_time_is_not_attempted()
-> anyhow::Result<()> {
    use baton_system_tests::harness::metric;
    let dir = TempDir::new("baton-deleted-waiting")?;
    let users = dir.0.join("users");
    let port = free_port()?;
    let (receiver, fixed) = deferring_receiver(port).await?;
    let dns = Dns::dest_and_bounces().await?;
    let cfg = write_config(&dir.0, "c.yaml", &direct(port, "[30s]", "2h"))?;
    let nats = secured_nats(&cfg, &users, &[]).await?;
    let admin_login = login(&users, "admin");
    let (ing, w) = ingress_and_worker(&nats, &dir.0, &users, "test", Some(dns.addr)).await?;
    let api = Admin::start(&nats.url, &dir.0, &strs(&admin_login)).await?;
    let ops = api.token(&dir.0, "ops", "admin", &[])?;

    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "delete-me",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let (a, t) = (&api, &ops);
    assert_eventually(WAIT, "deferred to the 30 s tier", || async move {
        a.queue_json(t, &["list", "--place", "retry"])
            .is_ok_and(|v| v["messages"].as_array().is_some_and(|m| m.len() == 1))
    })
    .await?;
    let series = "baton_queue_oldest_message_age_seconds{pool=\"test\"}";
    let wm = w.metrics;
    assert_eventually(WAIT, "the worker holds it", || async move {
        metric(wm, series).await > 0.0
    })
    .await?;
    let deleted = api.queue_json(&ops, &["delete", "--recipient", "a@dest.test", "--yes"])?;
    assert_eq!(deleted["matched"], 1, "{deleted}");
    fixed.store(true, Ordering::SeqCst);
    // The due time passes; the worker lets go of it without an attempt.
    assert_eventually(
        Duration::from_secs(90),
        "the worker let go",
        || async move { metric(wm, series).await == 0.0 },
    )
    .await?;
    assert_eq!(
        received(&receiver, "delete-me"),
        0,
        "deleted, never delivered"
    );
    assert_eq!(
        metric(w.metrics, "baton_nats_permission_denials_total").await,
        0.0
    );
    Ok(())
}
