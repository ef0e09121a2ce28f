//! [`NatsQueue`] against a real `nats-server -js` (from PATH): idempotent lane provisioning, the
//! queue depth the pool status reports, the snapshot round trip, and the EventSinks' records,
//! backlogs and stale consumers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use baton_operator::queue::{NatsQueue, QueueBackend};
use baton_proto::v1::RelayConfig;
use common::nats::Server;

/// `nats-server -js` with its store in the server's directory.
async fn nats_server() -> Server {
    Server::start(|dir, port| {
        let mut args: Vec<String> = ["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"]
            .map(String::from)
            .to_vec();
        args.push(dir.display().to_string());
        args
    })
    .await
}

#[tokio::test]
async fn lanes_are_provisioned_idempotently_and_depth_and_snapshot_round_trip() {
    let server = nats_server().await;
    let queue = NatsQueue::connect(&baton_queue::NatsOptions::new(&server.url), 1)
        .await
        .unwrap();
    assert!(queue.is_connected());
    queue.ensure_pool("bulk", 2).await.unwrap();
    queue.ensure_pool("bulk", 2).await.unwrap();
    assert_eq!(queue.queue_depth("bulk", 2).await.unwrap(), 0);

    let client = async_nats::connect(&server.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for subject in ["baton.new.bulk", "baton.retry.bulk.1"] {
        js.publish(subject, "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(queue.queue_depth("bulk", 2).await.unwrap(), 2);
    // Another pool's lanes are separate.
    queue.ensure_pool("other", 1).await.unwrap();
    assert_eq!(queue.queue_depth("other", 1).await.unwrap(), 0);

    assert_eq!(queue.current_snapshot().await.unwrap(), None);
    let config = RelayConfig {
        generation: 7,
        compiled_at_ms: 1,
        ..RelayConfig::default()
    };
    queue.put_snapshot(&config).await.unwrap();
    assert_eq!(queue.current_snapshot().await.unwrap(), Some(config));
}

#[tokio::test]
async fn the_operator_records_its_settings_and_reports_drift_it_cannot_correct() {
    use async_nats::jetstream::stream;
    let server = nats_server().await;
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // A pool's body bucket someone created in memory: storage cannot be changed in place.
    js.create_stream(stream::Config {
        name: "OBJ_baton-bodies-bulk".into(),
        subjects: vec![
            "$O.baton-bodies-bulk.C.>".into(),
            "$O.baton-bodies-bulk.M.>".into(),
        ],
        storage: stream::StorageType::Memory,
        allow_rollup: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .unwrap();
    let queue = NatsQueue::connect(&baton_queue::NatsOptions::new(&server.url), 1)
        .await
        .unwrap();
    let drift = queue.ensure_pool("bulk", 1).await.unwrap();
    assert_eq!(
        drift,
        ["OBJ_baton-bodies-bulk storage is memory but the recorded settings say file"]
    );
    let verified = baton_queue::Verifier::new(js).verify().await.unwrap();
    assert_eq!(verified.owner, "operator");
    assert_eq!(verified.settings.replicas, 1);
}

/// The sinks' side: no record or consumer is `None` (even without the record bucket or the
/// event stream), the dispatcher's record and the consumer's backlog are read, and a removed
/// sink's consumer goes while the kept ones stay.
#[tokio::test]
async fn sink_records_backlogs_and_stale_consumers() {
    use baton_queue::sinks::{SinkState, SinkStatusStore, consumer_name, ensure_consumer};
    let server = nats_server().await;
    let queue = NatsQueue::connect(&baton_queue::NatsOptions::new(&server.url), 1)
        .await
        .unwrap();
    let client = async_nats::connect(&server.url).await.unwrap();
    let js = async_nats::jetstream::new(client);

    // Neither the record bucket nor a consumer: nothing, not an error.
    js.delete_stream(format!("KV_{}", baton_queue::SINK_STATUS_BUCKET))
        .await
        .unwrap();
    assert_eq!(
        queue.sink_state("team-a/hooks").await.unwrap(),
        (None, None)
    );
    // Provisioning (the owner's job) brings the bucket back; the operator opens it then.
    queue.ensure_pool("bulk", 1).await.unwrap();
    assert_eq!(
        queue.sink_state("team-a/hooks").await.unwrap(),
        (None, None)
    );

    let sink = |ns: &str, name: &str| baton_proto::v1::EventSink {
        name: format!("{ns}/{name}"),
        namespace: ns.into(),
        ..Default::default()
    };
    ensure_consumer(&js, &sink("team-a", "hooks"))
        .await
        .unwrap();
    ensure_consumer(&js, &sink("team-b", "kept")).await.unwrap();
    let record = SinkState {
        sink: "team-a/hooks".into(),
        delivered: 3,
        failing: true,
        last_error: "503 Service Unavailable".into(),
        last_error_ms: 1_700_000_000_000,
        last_delivered_ms: 1_699_999_000_000,
        consecutive_failures: 2,
        ..SinkState::default()
    };
    SinkStatusStore::open(&js)
        .await
        .unwrap()
        .put(&record)
        .await
        .unwrap();
    for subject in [
        "baton.events.team-a.shop.q1.delivered",
        "baton.events.team-a.shop.q2.bounced",
        // Another namespace's event is not this sink's backlog.
        "baton.events.team-b.shop.q3.delivered",
    ] {
        js.publish(subject, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    assert_eq!(
        queue.sink_state("team-a/hooks").await.unwrap(),
        (Some(record.clone()), Some(2))
    );
    assert_eq!(
        queue.sink_state("team-b/kept").await.unwrap(),
        (None, Some(1))
    );

    let removed = queue
        .remove_stale_sinks(vec!["team-b/kept".into()])
        .await
        .unwrap();
    assert_eq!(removed, [consumer_name("team-a/hooks")]);
    assert_eq!(
        queue.sink_state("team-a/hooks").await.unwrap(),
        (Some(record.clone()), None),
        "the record stays until it expires; the backlog went with the consumer"
    );
    assert_eq!(queue.sink_state("team-b/kept").await.unwrap().1, Some(1));
    assert!(
        queue
            .remove_stale_sinks(vec!["team-b/kept".into()])
            .await
            .unwrap()
            .is_empty()
    );

    // Without the event stream there is no backlog, still not an error.
    js.delete_stream(baton_queue::events::EVENT_STREAM)
        .await
        .unwrap();
    assert_eq!(
        queue.sink_state("team-a/hooks").await.unwrap(),
        (Some(record), None)
    );
    assert!(
        queue
            .remove_stale_sinks(Vec::new())
            .await
            .unwrap()
            .is_empty()
    );
}
