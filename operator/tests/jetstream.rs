//! [`NatsQueue`] against a real `nats-server -js` (from PATH): idempotent lane provisioning, the
//! queue depth the pool status reports, and the snapshot round trip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use baton_operator::queue::{NatsQueue, QueueBackend};
use baton_proto::v1::RelayConfig;

struct Server {
    child: Child,
    url: String,
    _dir: std::path::PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

async fn nats_server() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("baton-operator-js-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on PATH (apt-get install nats-server)");
    let server = Server {
        child,
        url: format!("nats://127.0.0.1:{port}"),
        _dir: dir,
    };
    // Wait for the listener (bounded: a server that never listens fails the test).
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nats-server did not listen on {port}");
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
