//! Issue 20: durability is a cluster decision. On a 3-node cluster, `baton config apply
//! --stream-replicas 3` provisions and records the queue settings once; ingresses and workers
//! start with no replica flags at all, and one more ingress with a conflicting
//! `--stream-replicas 1`. The stream stays at 3 replicas; the conflicting process reports the
//! drift (`baton_queue_settings_drift`, `/readyz`) and changes nothing. Then the node leading
//! the queue stream is killed with SIGKILL while a client keeps sending (resending on `4xx`):
//! every message answered `250` is delivered, and duplicates stay within what JetStream's
//! at-least-once delivery allows (see [`duplicate_bound`]).

use std::collections::BTreeSet;
use std::time::Duration;

use baton_system_tests::cluster::{
    Bed, BedSpec, Load, NatsCluster, STREAM, duplicates, merge, subject_counts,
};
use baton_system_tests::config::direct;
use baton_system_tests::harness::{Ingress, assert_eventually, free_port, http_get, metric};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

/// Worker fetch window (messages a worker holds from the fresh lane).
const FETCH_WINDOW: usize = 32;
/// A retry tier's window (baton-delivery's fixed 32) times the 2 tiers of the schedule below.
const RETRY_HELD: usize = 32 * 2;

/// Duplicates JetStream and SMTP allow: a message is delivered again only if (a) the client
/// resent it after an answer other than `250` (the first copy may have been stored before the
/// PubAck was lost) — at most one per such answer or I/O error — or (b) a worker delivered it
/// but its ack was lost in a leader change, which can only happen to messages a worker held at
/// that moment (at most its fetch window plus the retry-tier windows), once per leader change
/// of the node we kill and of its restart.
fn duplicate_bound(non_250: usize, io_errors: usize, workers: usize) -> usize {
    non_250 + io_errors + 2 * workers * (FETCH_WINDOW + RETRY_HELD)
}

async fn replicas(js: &async_nats::jetstream::Context, name: &str) -> anyhow::Result<usize> {
    Ok(js.get_stream(name).await?.info().await?.config.num_replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_replicas_hold_and_a_leader_kill_loses_nothing() -> anyhow::Result<()> {
    let n = 600;
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let mut spec = BedSpec::new("baton-c-durable", direct(port, "[1s, 2s]", "1h"), 2, 2);
    spec.worker_flags = vec!["--fetch-window".into(), FETCH_WINDOW.to_string()];
    let mut bed = Bed::start(spec).await?;
    let js = bed.cluster.jetstream().await?;
    for name in [STREAM, "KV_baton-config", "OBJ_baton-bodies-test"] {
        assert_eq!(replicas(&js, name).await?, 3, "{name} after start");
    }

    // Processes without replica flags report no drift.
    let quiet = bed.ingresses[0].metrics;
    let (_, body) = http_get(quiet, "/readyz").await?;
    assert_eq!(body, "ready\n");

    // A conflicting expectation: reported, nothing changed.
    let dir = baton_system_tests::harness::TempDir::new("baton-c-durable-x")?;
    let rogue =
        Ingress::start_url(&bed.cluster.urls(), &dir.0, &["--stream-replicas", "1"]).await?;
    let series = "baton_queue_settings_drift{object=\"expectation\",setting=\"replicas\"}";
    let m = rogue.metrics;
    assert_eventually(Duration::from_secs(20), "drift reported", || async move {
        metric(m, series).await == 1.0
            && http_get(m, "/readyz").await.is_ok_and(|(c, b)| {
                c == 200
                    && b.contains(
                        "--stream-replicas 1 contradicts the recorded replicas 3 (nothing changed)",
                    )
            })
    })
    .await?;
    for name in [STREAM, "KV_baton-config", "OBJ_baton-bodies-test"] {
        assert_eq!(replicas(&js, name).await?, 3, "{name} after the rogue");
    }
    assert_eq!(metric(quiet, "baton_queue_settings_drift").await, 0.0);
    drop(rogue);

    // The stream leader dies while a client keeps sending.
    let load = Load::new("dur", n, 4, bed.smtp_addrs());
    let sender = tokio::spawn(async move { load.run().await });
    assert_eventually(Duration::from_secs(60), "a quarter delivered", || async {
        receiver.messages().len() >= n / 4
    })
    .await?;
    let (leader, _) = NatsCluster::stream_peers(&js, STREAM)
        .await
        .ok_or_else(|| anyhow::anyhow!("no stream leader"))?;
    let victim = bed
        .cluster
        .index_of(&leader)
        .ok_or_else(|| anyhow::anyhow!("unknown leader {leader}"))?;
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
    let (replies, io_errors, accepted, abandoned) = merge(&tallies);
    println!("replies {replies:?}, {io_errors} I/O errors, {abandoned} abandoned");
    assert_eq!(abandoned, 0, "every message was eventually accepted");
    assert!(
        replies.keys().all(|c| *c == 250 || (400..500).contains(c)),
        "only 250 or 4xx: {replies:?}"
    );
    bed.wait_drained(&accepted, || receiver.messages(), Duration::from_secs(200))
        .await?;
    let counts = subject_counts(&receiver.messages());
    let expected: BTreeSet<String> = accepted.iter().cloned().collect();
    assert!(
        expected.iter().all(|s| counts.contains_key(s)),
        "every 250 delivered"
    );
    assert!(
        counts.keys().all(|s| expected.contains(s)),
        "nothing unexpected"
    );
    let non_250: usize = replies
        .iter()
        .filter(|(c, _)| **c != 250)
        .map(|(_, n)| n)
        .sum();
    let dups = duplicates(&counts);
    let bound = duplicate_bound(non_250, io_errors, bed.workers.len());
    println!(
        "{} delivered, {dups} duplicates (bound {bound})",
        counts.len()
    );
    assert!(dups <= bound, "{dups} duplicates > bound {bound}");
    // Still three replicas after the kill, the restart and all that traffic.
    for name in [STREAM, "KV_baton-config", "OBJ_baton-bodies-test"] {
        assert_eq!(replicas(&js, name).await?, 3, "{name} at the end");
    }
    Ok(())
}
