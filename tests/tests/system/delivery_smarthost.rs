//! Scenario: Smarthost mode.
//! - Weights: two receivers weighted 1:3 get 25 % / 75 % of 5,000 messages (sent with
//!   `smtp-source`, 20 sessions, 2 KiB) within ±10 % relative (the 1-weight one gets
//!   22.5–27.5 %; binomial σ is 0.6 points, so this is > 4σ). Runs in well under 60 s here.
//! - Failover: the heavier smarthost's port is closed; every message goes to the other one,
//!   none lost, none twice, and `baton_delivery_smarthost_up` shows it down and the other up.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use baton_system_tests::config::smarthost;
use baton_system_tests::delivery::{JSON_LOG, header, smtp_source};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config, free_port, metric, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const N: usize = 5_000;

#[tokio::test]
async fn weights_split_mail_1_to_3() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-weights")?;
    let nats = Nats::start().await?;
    let light = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let heavy = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let cfg = smarthost(
        &[
            ("127.0.0.1", light.addr().port(), 1),
            ("127.0.0.1", heavy.addr().port(), 3),
        ],
        "[1s]",
        "1h",
    );
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", None, JSON_LOG).await?;

    let started = Instant::now();
    smtp_source(ing.smtp, N, 20, "x@dest.test").await?;
    let total = || light.messages().len() + heavy.messages().len();
    baton_system_tests::harness::assert_eventually(
        Duration::from_secs(120),
        &format!("{N} messages across both smarthosts"),
        || async { total() >= N },
    )
    .await
    .map_err(|e| e.context(format!("have {}", total())))?;
    let elapsed = started.elapsed();
    let (l, h) = (light.messages().len(), heavy.messages().len());
    let share = l as f64 / N as f64;
    println!(
        "{N} messages in {:.1}s: weight-1 smarthost {l} ({:.2} %), weight-3 smarthost {h}",
        elapsed.as_secs_f64(),
        share * 100.0
    );
    assert_eq!(l + h, N, "no message delivered twice");
    assert!(
        (0.225..=0.275).contains(&share),
        "weight-1 share {share:.4} outside 25 % ± 10 %"
    );
    let deferred = baton_system_tests::delivery::outcomes(&w.log)
        .iter()
        .filter(|o| o.status != "sent")
        .count();
    assert_eq!(deferred, 0, "every message sent on the first attempt");
    Ok(())
}

#[tokio::test]
async fn failover_when_one_smarthost_is_down() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-failover")?;
    let nats = Nats::start().await?;
    let live = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let dead_port = free_port()?; // nothing listens: connection refused
    let cfg = smarthost(
        &[
            ("127.0.0.1", dead_port, 3),
            ("127.0.0.1", live.addr().port(), 1),
        ],
        "[1s]",
        "1h",
    );
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", None, JSON_LOG).await?;

    let n = 300;
    smtp_source(ing.smtp, n, 10, "x@dest.test").await?;
    let got = live.wait_for_messages(n, Duration::from_secs(60)).await?;
    let ids: HashSet<String> = got
        .iter()
        .filter_map(|m| header(&m.body, "Message-ID").or_else(|| header(&m.body, "Message-Id")))
        .collect();
    assert_eq!(got.len(), n, "every message delivered once");
    assert_eq!(ids.len(), n, "distinct messages");
    // The receiver can hold the last message before the worker has logged its outcome (the
    // line follows the remote's 250): wait for the log, then check every line.
    baton_system_tests::harness::assert_eventually(
        Duration::from_secs(30),
        &format!("{n} outcome lines in the worker's log"),
        || async { baton_system_tests::delivery::outcomes(&w.log).len() >= n },
    )
    .await?;
    let out = baton_system_tests::delivery::outcomes(&w.log);
    assert_eq!(out.iter().filter(|o| o.status == "sent").count(), n);
    assert!(
        out.iter().all(|o| o.status == "sent" && o.attempt == 1),
        "failover happens within the attempt, nothing deferred"
    );
    // The worker reports the dead upstream down and the live one up.
    let up = |port: u16| {
        format!("baton_delivery_smarthost_up{{pool=\"test\",upstream=\"127.0.0.1:{port}\"}}")
    };
    assert_eq!(metric(w.metrics, &up(dead_port)).await, 0.0);
    assert_eq!(metric(w.metrics, &up(live.addr().port())).await, 1.0);
    Ok(())
}
