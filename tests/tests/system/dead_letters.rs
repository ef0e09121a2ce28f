//! Scenario: messages a worker can never process end in the pool's dead letters
//! (`baton.dead.<pool>`) instead of being dropped or redelivered for ever, while other mail
//! flows (issue 14, dead letters):
//! - a payload that is not an envelope, published straight to `baton.new.test`, is moved at
//!   once (reason `undecodable`) with its bytes unchanged;
//! - an envelope whose large body is missing from the object store is given back every 5 s
//!   until its delivery limit (`max_deliver` 3, recorded in the queue settings as an owner
//!   would), then moved (reason `delivery_limit`) after two deliveries;
//! - a message submitted meanwhile is delivered; the worker stays ready;
//! - `baton_dead_letters_total{pool,reason}` and `baton_queue_dead_messages{pool}` count them.

use std::time::Duration;

use baton_proto::Message as _;
use baton_proto::v1::{Envelope, QueueSettings, envelope::Body};
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, http_get, metric,
    write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const WAIT: Duration = Duration::from_secs(60);
const GARBAGE: &[u8] = b"\xff\xfe not an envelope";

#[tokio::test]
async fn unprocessable_messages_become_dead_letters_while_mail_flows() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-dead-letters")?;
    let nats = Nats::start().await?;
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let dns = Dns::dest_test().await?;
    let cfg = write_config(
        &dir.0,
        "c.yaml",
        &direct(receiver.addr().port(), "[1s]", "1h"),
    )?;
    apply_config(&nats, &cfg)?;
    // A small delivery limit, recorded the way an owner records its settings; the next apply
    // brings the lanes to it.
    let js = nats.jetstream().await?;
    let kv = js.get_key_value("baton-config").await?;
    let raw = kv
        .get("queue-settings")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no queue settings recorded"))?;
    let mut settings = QueueSettings::decode(raw.as_ref())?;
    settings.max_deliver = 3;
    kv.put("queue-settings", settings.encode_to_vec().into())
        .await?;
    apply_config(&nats, &cfg)?;
    let stream = js.get_stream("BATON_QUEUE").await?;
    let mut lane = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("test-new")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(lane.info().await?.config.max_deliver, 3);

    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &[]).await?;

    js.publish("baton.new.test", GARBAGE.into()).await?.await?;
    let poison = Envelope {
        id: "poison-1".into(),
        pool: "test".into(),
        body: Some(Body::ObjectRef("no-such-body".into())),
        ..Envelope::default()
    };
    js.publish("baton.new.test", poison.encode_to_vec().into())
        .await?
        .await?;
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "flows-past-the-dead",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);

    let wm = w.metrics;
    for reason in ["undecodable", "delivery_limit"] {
        let series = format!("baton_dead_letters_total{{pool=\"test\",reason=\"{reason}\"}}");
        let s = &series;
        assert_eventually(WAIT, &series, || async move { metric(wm, s).await == 1.0 }).await?;
    }
    let r = &receiver;
    assert_eventually(WAIT, "the other message delivered", || async move {
        r.messages()
            .iter()
            .any(|m| String::from_utf8_lossy(&m.body).contains("flows-past-the-dead"))
    })
    .await?;
    assert_eventually(WAIT, "dead-letter gauge", || async move {
        metric(wm, "baton_queue_dead_messages{pool=\"test\"}").await == 2.0
    })
    .await?;
    assert_eq!(http_get(wm, "/readyz").await?.0, 200);

    // What the dead letters hold: the bytes as queued, and why.
    let first = stream
        .get_first_raw_message_by_subject("baton.dead.test", 1)
        .await?;
    let second = stream
        .get_first_raw_message_by_subject("baton.dead.test", first.sequence + 1)
        .await?;
    let mut seen = Vec::new();
    for m in [&first, &second] {
        let reason = m
            .headers
            .get("Baton-Dead-Reason")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let deliveries = m
            .headers
            .get("Baton-Dead-Deliveries")
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        match reason.as_str() {
            "undecodable" => {
                assert_eq!(m.payload.as_ref(), GARBAGE);
                assert_eq!(deliveries, "1");
            }
            "delivery_limit" => {
                assert_eq!(Envelope::decode(m.payload.as_ref())?.id, "poison-1");
                assert_eq!(deliveries, "3");
            }
            other => anyhow::bail!("unexpected dead letter reason {other:?}"),
        }
        seen.push(reason);
    }
    seen.sort();
    assert_eq!(seen, ["delivery_limit", "undecodable"]);
    // Nothing of either is left in the lanes.
    let info = lane.info().await?;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    Ok(())
}
