//! Scenario: a slow destination does not hold up mail for a healthy one.
//!
//! `slow.test` (127.0.0.2) takes 1 s per message and the pool allows it 2 connections;
//! `fast.test` (127.0.0.3) answers at once. The worker's fetch window is 8 messages. 40
//! messages for `slow.test` are queued first, then 10 for `fast.test`.
//!
//! Before the fix, a message waiting for one of `slow.test`'s 2 connections kept its place
//! in the fetch window, so the window filled with slow mail and the fast messages were
//! fetched only after at least 30 slow ones had been delivered. Now a waiting message gives
//! its place back (the lane keeps fetching), and one that would wait longer than the pool's
//! first retry delay (10 s here) is deferred with `451 4.4.5` and delivered on a later attempt.
//! Asserted: all fast messages arrive while at most 16 slow ones have; slow mail is deferred
//! with 4.4.5 (never bounced); the waiting gauge moved; a worker SIGTERMed while slow mail
//! waits exits and gives it back; every slow message arrives exactly once.

use std::collections::HashSet;
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, outcomes, submit, tail};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, metric,
    write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

const SLOW: usize = 40;
const FAST: usize = 10;

#[tokio::test]
async fn a_slow_destination_does_not_block_a_healthy_one() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-slow")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let slow = Receiver::start(
        &format!("127.0.0.2:{port}"),
        ReceiverConfig {
            script: std::sync::Arc::new(|s| match s {
                Stage::DataEnd { .. } => Response::Stall(Duration::from_secs(1)),
                _ => Response::Default,
            }),
            ..ReceiverConfig::default()
        },
    )
    .await?;
    let fast = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::start_local(
        &[
            ("slow.test", "mx.slow.test", 10),
            ("fast.test", "mx.fast.test", 10),
        ],
        &[("mx.slow.test", "127.0.0.2"), ("mx.fast.test", "127.0.0.3")],
        &["test"],
    )
    .await?;
    let config = direct(port, "[10s]", "1h").replace(
        "  tls: {policy: Disabled}\n",
        "  tls: {policy: Disabled}\n  limits: {maxConnectionsPerDestination: 2}\n",
    );
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let mut flags = JSON_LOG.to_vec();
    flags.extend(["--fetch-window", "8"]);
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &flags).await?;

    let subjects: Vec<String> = (0..SLOW).map(|i| format!("slow-{i}")).collect();
    for s in &subjects {
        let m = Submission {
            from: "app@example.com",
            rcpts: vec![("user@slow.test", "")],
            subject: s,
            ..Default::default()
        };
        assert_eq!(submit(ing.smtp, &m).await?, 250);
    }
    for i in 0..FAST {
        let subject = format!("fast-{i}");
        let m = Submission {
            from: "app@example.com",
            rcpts: vec![("user@fast.test", "")],
            subject: &subject,
            ..Default::default()
        };
        assert_eq!(submit(ing.smtp, &m).await?, 250);
    }

    fast.wait_for_messages(FAST, Duration::from_secs(60))
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    let slow_then = slow.messages().len();
    assert!(
        slow_then <= 16,
        "{slow_then} of {SLOW} slow messages were delivered before the {FAST} fast ones: \
         the fast mail waited behind the slow backlog"
    );

    // Slow mail waits (the gauge shows it) and what would wait too long is deferred with
    // 4.4.5, counted as a destination_busy attempt; nothing is bounced.
    assert_eventually(Duration::from_secs(30), "slow mail waiting", || async {
        metric(w.metrics, r#"baton_delivery_waiting_messages{pool="test"}"#).await > 0.0
    })
    .await?;
    assert_eventually(
        Duration::from_secs(30),
        "a slow.test recipient deferred with 4.4.5",
        || async {
            outcomes(&w.log).iter().any(|o| {
                o.to == "user@slow.test" && o.status == "deferred" && o.reply.contains("4.4.5")
            })
        },
    )
    .await
    .map_err(|e| e.context(tail(&w.log)))?;
    let busy = metric(
        w.metrics,
        r#"baton_delivery_attempts_total{pool="test",result="destination_busy"}"#,
    )
    .await;
    assert!(busy >= 1.0, "destination_busy attempts: {busy}");

    // SIGTERM while slow mail waits: the waits end and those messages are given back to the
    // queue; the next worker delivers them. Nothing is lost or delivered twice.
    assert_eventually(Duration::from_secs(30), "slow mail waiting", || async {
        metric(w.metrics, r#"baton_delivery_waiting_messages{pool="test"}"#).await > 0.0
    })
    .await?;
    // `terminate` blocks; the receivers live on this runtime and must keep answering.
    let t = std::time::Instant::now();
    let (w, exited) = tokio::task::spawn_blocking(move || {
        let mut w = w;
        let exited = w.proc.terminate(Duration::from_secs(30));
        (w, exited)
    })
    .await?;
    assert!(
        exited,
        "worker did not exit after SIGTERM: {}",
        tail(&w.log)
    );
    eprintln!("worker exited {:?} after SIGTERM", t.elapsed());
    let first_log = w.log.clone();
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &flags).await?;

    // Everything arrives, each message once.
    let got = slow
        .wait_for_messages(SLOW, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    let seen: HashSet<String> = got
        .iter()
        .filter_map(|m| {
            let body = String::from_utf8_lossy(&m.body);
            body.lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect();
    let want: HashSet<String> = subjects.into_iter().collect();
    assert_eq!(seen, want, "every slow message delivered");
    assert_eq!(got.len(), SLOW, "no slow message delivered twice");
    for log in [&first_log, &w.log] {
        assert!(
            !outcomes(log)
                .iter()
                .any(|o| o.status == "bounced" || o.status == "expired"),
            "nothing bounced for a busy destination"
        );
    }
    assert_eq!(
        metric(w.metrics, r#"baton_delivery_waiting_messages{pool="test"}"#).await,
        0.0,
        "no message left waiting"
    );
    Ok(())
}
