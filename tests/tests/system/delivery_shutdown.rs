//! Scenario: a worker stopped with SIGTERM while it holds a retry-lane message that is not due
//! yet (tier 1 h) gives the message back at once instead of waiting out the schedule: the worker
//! exits promptly, the message can be pulled again at once (not after `ack_wait`), and the next
//! worker takes it. Nothing is acked, nothing lost.

use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, submit, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, metric, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use futures::StreamExt;
use std::sync::Arc;

/// The pool's first retry-tier consumer.
async fn retry_consumer(nats: &Nats) -> anyhow::Result<PullConsumer> {
    let js = nats.jetstream().await?;
    let stream = js.get_stream("BATON_QUEUE").await?;
    stream
        .get_consumer("test-retry-0")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::test]
async fn sigterm_gives_back_waiting_retry_messages() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-worker-term")?;
    let nats = Nats::start().await?;
    let script = Arc::new(|s: &Stage<'_>| match s {
        Stage::Rcpt { .. } => Response::Reply(451, "4.2.1 come back later".into()),
        _ => Response::Default,
    });
    let receiver = Receiver::start(
        "127.0.0.1:0",
        ReceiverConfig {
            script,
            ..Default::default()
        },
    )
    .await?;
    let dns = Dns::dest_test().await?;
    let cfg = direct(receiver.addr().port(), "[1h]", "5d");
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let mut w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;

    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "held",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    wait_outcome(&w.log, "a@dest.test", "deferred", Duration::from_secs(30)).await?;
    // The worker fetched the retry envelope and waits for its due time, one hour away.
    let n = &nats;
    assert_eventually(
        Duration::from_secs(20),
        "retry message held",
        || async move {
            match retry_consumer(n).await {
                Ok(mut c) => {
                    matches!(c.info().await, Ok(i) if i.num_pending == 0 && i.num_ack_pending == 1)
                }
                Err(_) => false,
            }
        },
    )
    .await?;

    assert!(
        w.proc.terminate(Duration::from_secs(30)),
        "the worker exits on SIGTERM without waiting for the retry tier"
    );
    // Given back: a pull gets it now (second delivery), not after the 60 s ack_wait.
    let mut got = retry_consumer(&nats)
        .await?
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(15))
        .messages()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let msg = got
        .next()
        .await
        .ok_or_else(|| anyhow::anyhow!("no message: not given back on SIGTERM"))?
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = msg.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        info.delivered,
        2,
        "worker log:\n{}",
        baton_system_tests::delivery::tail(&w.log)
    );
    msg.double_ack_with(AckKind::Nak(None))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    drop(got);

    // The next worker takes it (and counts the redelivery); nothing was acked or lost.
    let w2 = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let m2 = w2.metrics;
    assert_eventually(Duration::from_secs(20), "next worker holds it", || async move {
        metric(m2, "baton_delivery_redeliveries_total{pool=\"test\"}").await >= 1.0
    })
    .await?;
    Ok(())
}
