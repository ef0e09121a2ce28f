//! [`NatsQueue`] against a real `nats-server -js` (from PATH): idempotent lane provisioning, the
//! queue depth the pool status reports, and the snapshot round trip.
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
    // A body bucket someone created in memory: storage cannot be changed in place.
    js.create_stream(stream::Config {
        name: "OBJ_baton-bodies".into(),
        subjects: vec!["$O.baton-bodies.C.>".into(), "$O.baton-bodies.M.>".into()],
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
        ["OBJ_baton-bodies storage is memory but the recorded settings say file"]
    );
    let verified = baton_queue::Verifier::new(js).verify().await.unwrap();
    assert_eq!(verified.owner, "operator");
    assert_eq!(verified.settings.replicas, 1);
}
