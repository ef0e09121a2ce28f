//! Scenario 5 (issue 7), a benchmark: scale-out of one pool's workers. The receiver takes
//! 50 ms per message (a stall before its `354`) and each worker runs `--concurrency 4`, so a
//! worker delivers at most ~80 messages/s and the workers, not the machine, are the
//! bottleneck. For 1, 2 and 4 workers, `M` messages are queued first (no worker running),
//! then the workers start; throughput is measured between 10 % and 90 % delivered (steady
//! state, start-up excluded). Prints messages/s and the scaling efficiency
//! `rate(k) / (k × rate(1))`.
//!
//! `#[ignore]`d: no timing assertion belongs in CI. Run it with `bench/scale_out.sh`.

use std::time::{Duration, Instant};

use baton_system_tests::cluster::{Bed, BedSpec, Load, merge};
use baton_system_tests::config::direct;
use baton_system_tests::harness::{Worker, free_port};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run bench/scale_out.sh"]
async fn scale_out_1_2_4_workers() -> anyhow::Result<()> {
    let m: usize = std::env::var("BATON_SCALE_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let port = free_port()?;
    let receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig::slow_data(Duration::from_millis(50)),
    )
    .await?;
    let mut spec = BedSpec::new("baton-c-scale", direct(port, "[1s, 2s]", "1h"), 2, 0);
    spec.worker_flags = ["--concurrency", "4", "--fetch-window", "16"]
        .map(String::from)
        .to_vec();
    let mut bed = Bed::start(spec).await?;

    let mut rates: Vec<(usize, f64)> = Vec::new();
    for (step, k) in [1usize, 2, 4].into_iter().enumerate() {
        let load = Load::new(&format!("s{k}"), m, 20, bed.smtp_addrs());
        let (_, _, accepted, abandoned) = merge(&load.run().await?);
        anyhow::ensure!(accepted.len() == m && abandoned == 0, "queueing failed");
        let base = step * m;
        let mut workers: Vec<Worker> = Vec::new();
        for _ in 0..k {
            workers.push(bed.start_worker().await?);
        }
        let wait = Duration::from_secs(600);
        receiver.wait_for_messages(base + m / 10, wait).await?;
        let t0 = Instant::now();
        receiver.wait_for_messages(base + m * 9 / 10, wait).await?;
        let rate = (m * 8 / 10) as f64 / t0.elapsed().as_secs_f64();
        receiver.wait_for_messages(base + m, wait).await?;
        drop(workers);
        println!("{k} worker(s): {rate:.1} messages/s");
        rates.push((k, rate));
    }
    let one = rates[0].1;
    println!("scale-out ({m} messages per step, receiver 50 ms/message, concurrency 4):");
    for (k, r) in &rates {
        println!(
            "  workers={k} rate={r:.1}/s speedup={:.2}x efficiency={:.0}%",
            r / one,
            100.0 * r / (*k as f64 * one)
        );
    }
    Ok(())
}
