//! Scenario 1 (issue 7): on a 3-node JetStream cluster (stream replicas 3) with two ingress
//! processes and three workers of one pool, a random worker is killed with SIGKILL every
//! few seconds while messages flow, and started again. Every message answered `250` must be
//! delivered; duplicates are counted and printed.
//!
//! CI runs 2,000 messages with a kill every 1.5 s; `BATON_FULL=1` runs 10,000 with a kill
//! every 3 s (see `docs/fault-injection.md`).
//!
//! The duplicate bound. A duplicate is a message the receiver accepted in the instant between
//! its `250` and the dead worker's ack; a killed worker has at most `--concurrency` (here 16)
//! deliveries in flight, so `kills × 16` is a hard bound the CI run asserts. The issue's
//! 0.5 % is asserted on the full run, where 10,000 messages make the ratio meaningful; on
//! 2,000 messages a single duplicate is already 0.05 %, so the short run prints the ratio.
//! Held-but-undelivered messages of a dead worker come back after the consumer's ack wait
//! (60 s): the run ends when the queue stream is empty, so this takes a bit over a minute.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_system_tests::cluster::{Bed, BedSpec, Load, duplicates, full, merge, subject_counts};
use baton_system_tests::config::direct;
use baton_system_tests::harness::{free_port, metric};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const CONCURRENCY: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_random_workers_under_load_loses_nothing() -> anyhow::Result<()> {
    let n = if full() { 10_000 } else { 2_000 };
    let kill_every = Duration::from_millis(if full() { 3000 } else { 1500 });
    let port = free_port()?;
    // A short stall before 354: deliveries are in flight at every kill, mostly before the
    // end of data (see `delivery_kill9.rs` for why not at the final dot).
    let receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig::slow_data(Duration::from_millis(10)),
    )
    .await?;
    let mut spec = BedSpec::new("baton-c-kill9", direct(port, "[1s, 2s]", "1h"), 2, 3);
    spec.worker_flags = ["--concurrency", "16", "--fetch-window", "64"]
        .map(String::from)
        .to_vec();
    let mut bed = Bed::start(spec).await?;

    let load = Load::new("w9", n, 20, bed.smtp_addrs());
    let sender = tokio::spawn(async move { load.run().await });
    // Kill while mail is being accepted or delivered; a fixed cadence, a random victim.
    let mut seed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64 | 1;
    println!("victim seed {seed}");
    let mut kills = 0usize;
    let mut tick = tokio::time::interval(kill_every);
    tick.tick().await;
    while !sender.is_finished() || receiver.messages().len() < n * 9 / 10 {
        tick.tick().await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % bed.workers.len() as u64) as usize;
        bed.restart_worker(victim).await?;
        kills += 1;
        println!(
            "kill #{kills}: worker {victim}; receiver has {} messages",
            receiver.messages().len()
        );
        if kills > 200 {
            anyhow::bail!("deliveries stalled: {} received", receiver.messages().len());
        }
    }
    let tallies = sender.await??;
    let (replies, io_errors, accepted, abandoned) = merge(&tallies);
    println!("client replies {replies:?}, {io_errors} I/O errors, {abandoned} abandoned");
    assert_eq!(abandoned, 0, "every message was eventually accepted");
    assert_eq!(accepted.len(), n);

    bed.wait_drained(&accepted, || receiver.messages(), Duration::from_secs(200))
        .await?;
    let counts = subject_counts(&receiver.messages());
    let dups = duplicates(&counts);
    let mut redeliveries = 0.0;
    for w in &bed.workers {
        redeliveries += metric(w.metrics, "baton_delivery_redeliveries_total").await;
    }
    println!(
        "{n} accepted, {} distinct delivered, {dups} duplicates ({:.3} %), {kills} kills \
         (bound {}), redeliveries seen by the last workers {redeliveries:.0}",
        counts.len(),
        dups as f64 * 100.0 / n as f64,
        kills * CONCURRENCY
    );
    assert!(
        counts.keys().all(|s| accepted.contains(s)),
        "nothing unexpected delivered"
    );
    assert!(dups <= kills * CONCURRENCY, "{dups} duplicates");
    if full() {
        assert!(dups * 200 <= n, "{dups} duplicates exceed 0.5 % of {n}");
    }
    Ok(())
}
