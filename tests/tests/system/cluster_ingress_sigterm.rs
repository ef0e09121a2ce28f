//! Scenario 3 (issue 7): SIGTERM to one of two ingress processes under load. Sessions in
//! flight finish (`250`) or are told `421`; new connections to the stopping ingress are
//! refused; clients resend anything not answered `250` through the other ingress. The
//! ingress exits 0 within its grace period, and every message answered `250` is delivered.
//!
//! CI sends 1,000 messages over 20 sessions; `BATON_FULL=1` sends 10,000.

use std::time::Duration;

use baton_system_tests::cluster::{Bed, BedSpec, Load, duplicates, full, merge, subject_counts};
use baton_system_tests::config::direct;
use baton_system_tests::harness::{assert_eventually, free_port};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_an_ingress_under_load_loses_nothing() -> anyhow::Result<()> {
    let n = if full() { 10_000 } else { 1_000 };
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let mut spec = BedSpec::new("baton-c-term", direct(port, "[1s, 2s]", "1h"), 2, 2);
    spec.ingress_flags = ["--shutdown-grace", "10s"].map(String::from).to_vec();
    let mut bed = Bed::start(spec).await?;

    // Sessions start on both ingresses (session s on ingress s % 2).
    let load = Load::new("term", n, 20, bed.smtp_addrs());
    let sender = tokio::spawn(async move { load.run().await });
    assert_eventually(Duration::from_secs(60), "a quarter delivered", || async {
        receiver.messages().len() >= n / 4
    })
    .await?;
    let mut stopping = bed.ingresses.remove(0);
    let at_term = receiver.messages().len();
    let (exited, stopping) = tokio::task::spawn_blocking(move || {
        let exited = stopping.proc.terminate(Duration::from_secs(15));
        (exited, stopping)
    })
    .await?;
    let mut stopping = stopping;
    let status = stopping.proc.child.try_wait()?;
    println!("SIGTERM with {at_term} delivered; exited: {exited} {status:?}");
    assert!(exited, "the ingress exits within its grace period");
    assert_eq!(status.and_then(|s| s.code()), Some(0));

    let tallies = sender.await??;
    let (replies, io_errors, accepted, abandoned) = merge(&tallies);
    println!("client replies {replies:?}, {io_errors} refused/closed connections");
    assert_eq!(abandoned, 0, "every message was eventually accepted");
    assert_eq!(accepted.len(), n);
    assert!(
        replies.keys().all(|c| *c == 250 || (400..500).contains(c)),
        "only 250 or 4xx, never 5xx: {replies:?}"
    );
    bed.wait_drained(&accepted, || receiver.messages(), Duration::from_secs(200))
        .await?;
    let counts = subject_counts(&receiver.messages());
    println!(
        "{n} accepted, {} distinct delivered, {} duplicates",
        counts.len(),
        duplicates(&counts)
    );
    assert!(counts.keys().all(|s| accepted.contains(s)));
    Ok(())
}
