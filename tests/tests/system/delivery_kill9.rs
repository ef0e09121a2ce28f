//! Scenario: 500 messages are queued through the ingress (10 sessions, each answered 250),
//! then two workers deliver them; one worker is killed with SIGKILL once the receiver has
//! ~100 and is started again. Every accepted message must be delivered: what the dead worker
//! held unacked is redelivered after the consumer's ack wait (60 s), so this test takes a
//! minute. It ends when the queue stream is empty (WorkQueue retention: every message acked),
//! so late duplicates are counted too.
//!
//! Duplicates are counted by Subject (unique per message), printed, and must stay ≤ 1 %. They
//! are inherent to at-least-once delivery: a message the remote accepted in the instant
//! between its 250 and the worker's ack is sent again. Their number is the victim's
//! deliveries inside that window at the kill, so the kill is triggered by polling (an
//! arbitrary instant), not by the receiver's own "message recorded" event, which would aim the
//! kill at exactly that window.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, header, send_on};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, metric,
    write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};
use baton_system_tests::smtp::Talk;

const N: usize = 500;
const SESSIONS: usize = 10;

/// Submit messages `kill9-<i>` for `i` in `range` on one session; returns those answered 250.
async fn submit_range(ingress: std::net::SocketAddr, range: std::ops::Range<usize>) -> Vec<String> {
    let mut accepted = Vec::new();
    let Ok((mut t, _)) = Talk::connect(ingress).await else {
        return accepted;
    };
    for i in range {
        let subject = format!("kill9-{i:04}");
        let m = Submission {
            from: "app@example.com",
            rcpts: vec![("user@dest.test", "")],
            subject: &subject,
            ..Default::default()
        };
        if let Ok(250) = send_on(&mut t, &m).await {
            accepted.push(subject);
        }
    }
    accepted
}

#[tokio::test]
async fn kill_9_of_a_worker_loses_nothing() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-kill9")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    // The receiver takes 20 ms to answer DATA: deliveries are in flight at the kill. Not at
    // the end of DATA: a server that queues the message on the final dot and is slow to say
    // 250 makes every delivery cut there a duplicate (RFC 1047), which no sender can avoid.
    let receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig::slow_data(Duration::from_millis(20)),
    )
    .await?;
    let dns = Dns::dest_test().await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(port, "[1s, 2s]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;

    let per = N / SESSIONS;
    let senders: Vec<_> = (0..SESSIONS)
        .map(|s| tokio::spawn(submit_range(ing.smtp, s * per..(s + 1) * per)))
        .collect();
    let mut accepted = BTreeSet::new();
    for s in senders {
        accepted.extend(s.await?);
    }
    assert_eq!(accepted.len(), N, "the ingress accepted every message");

    // The whole batch is queued; both workers take their share (each holds up to its fetch
    // window), and the victim dies while holding undelivered messages.
    let mut victim = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let other = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    // Polled, not woken by the receiver: the kill lands at an arbitrary point of the delivery
    // cycle, as a real crash would (see the module comment on duplicates).
    assert_eventually(
        Duration::from_secs(60),
        "the receiver saw 100 messages",
        || async { receiver.messages().len() >= 100 },
    )
    .await?;
    victim.proc.kill();
    let seen_at_kill = receiver.messages().len();
    let victim_log = victim.log.clone();
    let victim_sent = baton_system_tests::delivery::outcomes(&victim_log).len();
    let restarted = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    println!(
        "killed a worker after the receiver had {seen_at_kill} messages ({victim_sent} logged sent by the victim)"
    );

    // Every accepted message delivered, and the queue drained (all acked).
    let subjects = || -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for msg in receiver.messages() {
            *m.entry(header(&msg.body, "Subject").unwrap_or_default())
                .or_insert(0) += 1;
        }
        m
    };
    let js = nats.jetstream().await?;
    assert_eventually(
        Duration::from_secs(150),
        "every accepted message delivered and the queue stream empty",
        || {
            let js = js.clone();
            let delivered = subjects();
            let all = accepted.iter().all(|s| delivered.contains_key(s));
            async move {
                let Ok(mut stream) = js.get_stream("BATON_QUEUE").await else {
                    return false;
                };
                let empty = stream
                    .info()
                    .await
                    .map(|i| i.state.messages == 0)
                    .unwrap_or(false);
                all && empty
            }
        },
    )
    .await
    .map_err(|e| {
        let d = subjects();
        let missing: Vec<_> = accepted.iter().filter(|s| !d.contains_key(*s)).collect();
        e.context(format!("{} missing: {missing:?}", missing.len()))
    })?;

    let delivered = subjects();
    let duplicates: Vec<(&String, &usize)> = delivered.iter().filter(|(_, n)| **n > 1).collect();
    let extra: usize = duplicates.iter().map(|(_, n)| **n - 1).sum();
    let redeliveries = (metric(other.metrics, "baton_delivery_redeliveries_total").await
        + metric(restarted.metrics, "baton_delivery_redeliveries_total").await)
        .abs();
    println!(
        "delivered {} distinct of {N}, {} messages received, {extra} duplicate deliveries {duplicates:?}; \
         JetStream redeliveries seen by the surviving workers: {redeliveries:.0}",
        delivered.len(),
        receiver.messages().len()
    );
    assert!(
        delivered.keys().all(|s| accepted.contains(s)),
        "nothing unexpected delivered"
    );
    assert!(
        extra * 100 <= N,
        "duplicates {extra} exceed 1 % of {N}: {duplicates:?}"
    );
    Ok(())
}
