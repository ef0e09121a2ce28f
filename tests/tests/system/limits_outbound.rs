//! Scenarios: outbound shaping shared by every worker of a pool (issue 18), with a real
//! nats-server, real `baton worker` processes and real receivers.
//!
//! - **Connections per site across workers.** Three workers deliver 60 messages to one
//!   receiver that takes 300 ms per message; the pool allows 10 connections per destination
//!   per worker but `destinations.maxConnections: 2` across the pool. The receiver never has
//!   more than 2 transactions in flight, everything arrives once, nothing bounces. Connections
//!   are reused with their leases: fewer SMTP sessions than messages.
//! - **Throttling replies back off without counting attempts.** The receiver greets the first
//!   two connections with `421 4.7.0 Too many connections` and answers the next two RCPTs with
//!   `450 4.7.28 rate limited`: the message is delivered later, its `sent` line says attempt 1
//!   (the throttled tries did not count), nothing bounced, no DSN, the throttle counter moved.
//!   This one runs under the production NATS authorization, with every shared limit in use:
//!   none of them falls back (the worker may write its pool's keys).
//! - **Warm-up.** Two egress identities (127.0.0.2 and 127.0.0.3), one warming with a budget
//!   of 5 a day: of 20 messages at most 5 leave from it, all 20 are delivered.
//! - **Messages per minute across workers.** Three workers, `messagesPerMinute: 2`, 5
//!   messages: the receiver sees at most 2 per UTC minute (+1 of tolerance: a unit taken in
//!   the last milliseconds of a minute may arrive in the next), every message arrives, the
//!   deferrals did not count as attempts.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, all_outcomes, outcomes, submit, tail};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, metric,
    write_config,
};
use baton_system_tests::nats_users::{login, secured_nats, strs};
use baton_system_tests::receiver::{ReceivedMessage, Receiver, ReceiverConfig, Response, Stage};

/// The pool's `limits` line with these entries after `tls`.
fn with_limits(config: &str, limits: &str) -> String {
    config.replace(
        "  tls: {policy: Disabled}\n",
        &format!("  tls: {{policy: Disabled}}\n  limits: {limits}\n"),
    )
}

fn subject_of(m: &ReceivedMessage) -> Option<String> {
    String::from_utf8_lossy(&m.body)
        .lines()
        .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
}

async fn submit_n(ing: &Ingress, prefix: &str, n: usize) -> anyhow::Result<HashSet<String>> {
    let mut subjects = HashSet::new();
    for i in 0..n {
        let subject = format!("{prefix}-{i}");
        let m = Submission {
            from: "app@example.com",
            rcpts: vec![("user@dest.test", "")],
            subject: &subject,
            ..Default::default()
        };
        assert_eq!(submit(ing.smtp, &m).await?, 250);
        subjects.insert(subject);
    }
    Ok(subjects)
}

#[tokio::test]
async fn the_pool_wide_connection_cap_holds_across_workers() -> anyhow::Result<()> {
    const N: usize = 60;
    const CAP: usize = 2;
    let dir = TempDir::new("baton-limits-conn")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    // In flight: from MAIL to the end of DATA (each DATA waits 300 ms before its 354).
    let current = Arc::new(AtomicUsize::new(0));
    let highest = Arc::new(AtomicUsize::new(0));
    let sessions = Arc::new(AtomicUsize::new(0));
    let (c, h, n) = (current.clone(), highest.clone(), sessions.clone());
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::Connect { .. } => {
            n.fetch_add(1, Ordering::SeqCst);
            Response::Default
        }
        Stage::Mail { .. } => {
            let now = c.fetch_add(1, Ordering::SeqCst) + 1;
            h.fetch_max(now, Ordering::SeqCst);
            Response::Default
        }
        Stage::Data { .. } => Response::Stall(Duration::from_millis(300)),
        Stage::DataEnd { .. } => {
            c.fetch_sub(1, Ordering::SeqCst);
            Response::Default
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
    let dns = Dns::dest_test().await?;
    let config = with_limits(
        &direct(port, "[2s, 4s]", "1h"),
        &format!("{{maxConnectionsPerDestination: 10, destinations: {{maxConnections: {CAP}}}}}"),
    );
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?);
    }
    let want = submit_n(&ing, "conn", N).await?;

    let got = receiver
        .wait_for_messages(N, Duration::from_secs(180))
        .await
        .map_err(|e| e.context(tail(&workers[0].log)))?;
    let seen: HashSet<String> = got.iter().filter_map(subject_of).collect();
    assert_eq!(seen, want, "every message delivered");
    assert_eq!(got.len(), N, "no message delivered twice");
    let highest = highest.load(Ordering::SeqCst);
    eprintln!("highest concurrency at the receiver: {highest}");
    assert!(
        highest <= CAP,
        "{highest} transactions in flight at once; the pool allows {CAP}"
    );
    // A connection to the capped site is kept idle with its lease and the next message to the
    // site (waiting for the cap) takes it: without reuse every message had its own session.
    let sessions = sessions.load(Ordering::SeqCst);
    eprintln!("SMTP sessions at the receiver for {N} messages: {sessions}");
    assert!(
        sessions < N,
        "{sessions} sessions for {N} messages: connections to a capped site are not reused"
    );
    let logs: Vec<&std::path::Path> = workers.iter().map(|w| w.log.as_path()).collect();
    let all = all_outcomes(&logs);
    assert!(
        !all.iter()
            .any(|o| o.status == "bounced" || o.status == "expired"),
        "nothing bounced for a capped destination"
    );
    let mut waits = 0.0;
    for w in &workers {
        waits += metric(
            w.metrics,
            r#"baton_destination_waits_total{pool="test",reason="connections"}"#,
        )
        .await;
    }
    eprintln!("waits for the pool-wide cap: {waits}");
    assert!(waits >= 1.0, "the cap made deliveries wait");
    Ok(())
}

#[tokio::test]
async fn throttling_replies_back_off_without_counting_attempts() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-limits-throttle")?;
    let port = free_port()?;
    let greetings = Arc::new(AtomicU64::new(0));
    let rcpts = Arc::new(AtomicU64::new(0));
    let (g, r) = (greetings.clone(), rcpts.clone());
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::Connect { .. } if g.fetch_add(1, Ordering::SeqCst) < 2 => {
            Response::Reply(421, "4.7.0 Too many connections, slow down".into())
        }
        Stage::Rcpt { .. } if r.fetch_add(1, Ordering::SeqCst) < 2 => {
            Response::Reply(450, "4.7.28 rate limited".into())
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
    let dns = Dns::dest_test().await?;
    // Every shared limit in use, under the production NATS authorization: the worker writes
    // its pool's keys only (`out.test.>`), and none of it falls back.
    let config = with_limits(
        &direct(port, "[1s, 2s]", "1h"),
        "{throttle: {backoff: 1s, maxBackoff: 2s}, \
         destinations: {maxConnections: 1, messagesPerMinute: 1000}}",
    );
    let cfg = write_config(&dir.0, "c.yaml", &config)?;
    let users = dir.0.join("users");
    let nats = secured_nats(&cfg, &users, &[]).await?;
    let ing = Ingress::start(&nats, &dir.0, &strs(&login(&users, "ingress"))).await?;
    let mut flags = login(&users, "worker-test");
    flags.extend(JSON_LOG.iter().map(|s| (*s).to_owned()));
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &strs(&flags)).await?;
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("user@dest.test", "")],
        subject: "throttled",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);

    let got = receiver
        .wait_for_messages(1, Duration::from_secs(90))
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    assert_eq!(got.len(), 1);
    assert_eventually(Duration::from_secs(30), "the sent line", || async {
        outcomes(&w.log).iter().any(|o| o.status == "sent")
    })
    .await
    .map_err(|e| e.context(tail(&w.log)))?;
    let out: Vec<_> = outcomes(&w.log)
        .into_iter()
        .filter(|o| o.to == "user@dest.test")
        .collect();
    let throttled: Vec<_> = out
        .iter()
        .filter(|o| {
            o.status == "deferred" && (o.reply.starts_with("421") || o.reply.contains("4.7.28"))
        })
        .collect();
    assert!(throttled.len() >= 4, "four throttled tries: {out:?}");
    let sent: Vec<_> = out.iter().filter(|o| o.status == "sent").collect();
    assert_eq!(sent.len(), 1, "{out:?}");
    assert_eq!(
        sent[0].attempt, 1,
        "the throttled tries did not count as attempts: {out:?}"
    );
    assert!(
        !out.iter()
            .any(|o| o.status == "bounced" || o.status == "expired"),
        "nothing bounced: {out:?}"
    );
    assert!(
        !outcomes(&w.log).iter().any(|o| o.dsn),
        "no DSN was generated"
    );
    let throttles = metric(
        w.metrics,
        r#"baton_destination_throttled_total{pool="test"}"#,
    )
    .await;
    assert!(throttles >= 4.0, "throttle counter: {throttles}");
    Ok(())
}

#[tokio::test]
async fn a_warming_identity_keeps_to_its_daily_budget() -> anyhow::Result<()> {
    const N: usize = 20;
    const BUDGET: usize = 5;
    let dir = TempDir::new("baton-limits-warmup")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_test().await?;
    // A start in the future: until then the first entry applies, so today's budget is 5.
    let config = direct(port, "[2s]", "1h").replace(
        "  egress: [{ehloName: out.baton.test, weight: 1}]\n",
        &format!(
            "  egress:\n  - {{ehloName: warm.baton.test, sourceAddress: 127.0.0.2, weight: 1, \
             warmup: {{start: \"2099-01-01\", dailyLimits: [{BUDGET}, 50]}}}}\n  \
             - {{ehloName: out.baton.test, sourceAddress: 127.0.0.3, weight: 1}}\n"
        ),
    );
    assert!(config.contains("warm.baton.test"), "{config}");
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w1 = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let w2 = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let want = submit_n(&ing, "warm", N).await?;

    let got = receiver
        .wait_for_messages(N, Duration::from_secs(120))
        .await
        .map_err(|e| e.context(tail(&w1.log)))?;
    let seen: HashSet<String> = got.iter().filter_map(subject_of).collect();
    assert_eq!(seen, want, "every message delivered");
    assert_eq!(got.len(), N, "no message delivered twice");
    let warm = got.iter().filter(|m| m.ehlo == "warm.baton.test").count();
    let other = got.iter().filter(|m| m.ehlo == "out.baton.test").count();
    eprintln!("warming identity: {warm}, warmed identity: {other}");
    assert!(
        warm <= BUDGET,
        "{warm} messages left from the warming identity; its budget today is {BUDGET}"
    );
    assert_eq!(warm + other, N);
    let all = all_outcomes(&[w1.log.as_path(), w2.log.as_path()]);
    assert!(
        all.iter()
            .filter(|o| o.status == "sent")
            .all(|o| o.attempt == 1),
        "no attempt was spent on the warm-up: {all:?}"
    );
    Ok(())
}

#[tokio::test]
async fn messages_per_minute_hold_across_workers() -> anyhow::Result<()> {
    // Five messages at two a minute: even if they are sent across a minute boundary, at
    // least one must wait for a later minute (so the wait below is certain).
    const N: usize = 5;
    const PER_MINUTE: usize = 2;
    let dir = TempDir::new("baton-limits-rate")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    // The minute (Unix time / 60) of every end of data.
    let minutes = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let m = minutes.clone();
    let script = Arc::new(move |s: &Stage<'_>| {
        if let Stage::DataEnd { .. } = s {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            m.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(now / 60);
        }
        Response::Default
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
    let config = with_limits(
        &direct(port, "[5s, 10s]", "1h"),
        &format!("{{destinations: {{messagesPerMinute: {PER_MINUTE}}}}}"),
    );
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?);
    }
    // Start at least 15 s before the end of a UTC minute, so the first two units are not
    // taken in the last milliseconds of one minute and received in the next (held messages
    // come back a retry delay, 5 s, after a minute begins).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 60
        > 45
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let want = submit_n(&ing, "rate", N).await?;

    let got = receiver
        .wait_for_messages(N, Duration::from_secs(240))
        .await
        .map_err(|e| e.context(tail(&workers[0].log)))?;
    let seen: HashSet<String> = got.iter().filter_map(subject_of).collect();
    assert_eq!(seen, want, "every message delivered");
    assert_eq!(got.len(), N, "no message delivered twice");
    let minutes = minutes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut per_minute = std::collections::BTreeMap::<u64, usize>::new();
    for m in minutes {
        *per_minute.entry(m).or_default() += 1;
    }
    eprintln!("messages per minute at the receiver: {per_minute:?}");
    assert!(
        per_minute.values().all(|&n| n <= PER_MINUTE + 1),
        "more than {PER_MINUTE} (+1) messages in one minute: {per_minute:?}"
    );
    let logs: Vec<&std::path::Path> = workers.iter().map(|w| w.log.as_path()).collect();
    let all = all_outcomes(&logs);
    assert!(
        !all.iter()
            .any(|o| o.status == "bounced" || o.status == "expired"),
        "nothing bounced"
    );
    assert!(
        all.iter()
            .filter(|o| o.status == "sent")
            .all(|o| o.attempt == 1),
        "waiting for the rate did not count as attempts: {all:?}"
    );
    let mut waits = 0.0;
    for w in &workers {
        waits += metric(
            w.metrics,
            r#"baton_destination_waits_total{pool="test",reason="rate"}"#,
        )
        .await;
    }
    assert!(waits >= 1.0, "the rate made deliveries wait");
    Ok(())
}
