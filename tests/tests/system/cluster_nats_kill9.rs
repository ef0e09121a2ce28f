//! Scenario 2 (issue 7): NATS nodes die under load.
//!
//! 1. While 10 clients send through two ingress processes, the node leading the queue stream
//!    is killed with SIGKILL, then restarted once mail flows again on the two survivors. The
//!    stream elects a new leader; publishes caught in between are answered `451` (counted per
//!    client), clients resend on `4xx`, and every message answered `250` is delivered.
//! 2. Quorum lost: two of the three nodes are killed. Each probe submission must be answered
//!    `4xx` — never `250` without storage. Both nodes come back, the probes are resent and
//!    delivered.
//!
//! CI sends 1,000 messages; `BATON_FULL=1` sends 10,000.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_system_tests::cluster::{
    Bed, BedSpec, Load, NatsCluster, STREAM, duplicates, full, merge, subject_counts,
};
use baton_system_tests::config::direct;
use baton_system_tests::harness::{assert_eventually, free_port};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_nats_nodes_loses_nothing_and_never_acks_without_storage() -> anyhow::Result<()> {
    let n = if full() { 10_000 } else { 1_000 };
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let spec = BedSpec::new("baton-c-nats", direct(port, "[1s, 2s]", "1h"), 2, 2);
    let mut bed = Bed::start(spec).await?;
    let js = bed.cluster.jetstream().await?;

    // Phase 1: the stream leader dies mid-run.
    let load = Load::new("nk", n, 10, bed.smtp_addrs());
    let sender = tokio::spawn(async move { load.run().await });
    assert_eventually(Duration::from_secs(60), "a quarter delivered", || async {
        receiver.messages().len() >= n / 4
    })
    .await?;
    let (leader, _) = NatsCluster::stream_peers(&js, STREAM)
        .await
        .ok_or_else(|| anyhow::anyhow!("no stream leader"))?;
    let victim = bed.cluster.index_of(&leader).unwrap_or(0);
    bed.cluster.kill(victim);
    let at_kill = receiver.messages().len();
    println!("killed stream leader {leader} with {at_kill} delivered");
    assert_eventually(
        Duration::from_secs(60),
        "mail flowing again on two nodes",
        || async { sender.is_finished() || receiver.messages().len() >= at_kill + n / 10 },
    )
    .await?;
    bed.cluster.restart(victim).await?;
    bed.cluster
        .wait_meta_leader(Duration::from_secs(30))
        .await?;
    bed.cluster
        .wait_stream_current(STREAM, 3, Duration::from_secs(60))
        .await?;
    let tallies = sender.await??;
    for (i, t) in tallies.iter().enumerate() {
        println!(
            "client {i}: replies {:?}, {} I/O errors",
            t.replies, t.io_errors
        );
    }
    let (replies, io_errors, mut accepted, abandoned) = merge(&tallies);
    println!("phase 1 total: replies {replies:?}, {io_errors} I/O errors, {abandoned} abandoned");
    assert_eq!(abandoned, 0, "every message was eventually accepted");
    assert!(
        replies.keys().all(|c| *c == 250 || (400..500).contains(c)),
        "only 250 or 4xx: {replies:?}"
    );

    // Phase 2: no quorum, so no 250.
    let survivor = (victim + 1) % 3;
    for i in (0..3).filter(|i| *i != survivor) {
        bed.cluster.kill(i);
    }
    let mut probe = Load::new("probe", 4, 2, bed.smtp_addrs());
    probe.max_attempts = 1;
    let (probe_replies, probe_io, probe_accepted, _) = merge(&probe.run().await?);
    println!("without quorum: replies {probe_replies:?}, {probe_io} I/O errors");
    assert!(
        probe_accepted.is_empty(),
        "250 without quorum: {probe_replies:?}"
    );
    assert!(
        probe_replies.keys().all(|c| (400..500).contains(c)),
        "{probe_replies:?}"
    );
    for i in (0..3).filter(|i| *i != survivor) {
        bed.cluster.restart(i).await?;
    }
    bed.cluster
        .wait_meta_leader(Duration::from_secs(30))
        .await?;
    bed.cluster
        .wait_stream_current(STREAM, 3, Duration::from_secs(60))
        .await?;
    probe.max_attempts = 120;
    let (_, _, resent, abandoned) = merge(&probe.run().await?);
    assert_eq!(
        (resent.len(), abandoned),
        (4, 0),
        "probes accepted on resend"
    );
    accepted.extend(resent);

    bed.wait_drained(&accepted, || receiver.messages(), Duration::from_secs(200))
        .await?;
    let counts = subject_counts(&receiver.messages());
    let expected: BTreeSet<String> = accepted.iter().cloned().collect();
    println!(
        "{} accepted, {} distinct delivered, {} duplicates",
        accepted.len(),
        counts.len(),
        duplicates(&counts)
    );
    assert!(
        counts.keys().all(|s| expected.contains(s)),
        "nothing unexpected"
    );
    Ok(())
}
