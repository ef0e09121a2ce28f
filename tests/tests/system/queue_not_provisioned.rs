//! Issue 20: ingress and workers never provision the queue. Started before `baton config
//! apply`, they stay not ready with a `/readyz` that says what is missing and how to fix it,
//! and the queue stream is not created behind the owner's back. Once `config apply` has
//! provisioned it, both become ready without a restart.

use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, http_get, write_config,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_and_worker_wait_for_the_owner_and_create_nothing() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let dir = TempDir::new("baton-unprovisioned")?;
    let ing = Ingress::spawn_url(&nats.url, &dir.0, &[])?;
    let w = Worker::spawn_url(&nats.url, &dir.0, "test", None, &[])?;
    for (what, addr) in [("ingress", ing.metrics), ("worker", w.metrics)] {
        assert_eventually(
            Duration::from_secs(20),
            &format!("{what} /readyz says the queue is not provisioned"),
            || async move {
                http_get(addr, "/readyz").await.is_ok_and(|(code, body)| {
                    code == 503
                        && body.contains("queue: not ready: stream")
                        && body.contains("run `baton config apply`")
                })
            },
        )
        .await?;
    }
    // Both processes have looked for the queue at least once: nothing was created.
    let js = nats.jetstream().await?;
    for stream in ["BATON_QUEUE", "KV_baton-config", "OBJ_baton-bodies-test"] {
        assert!(
            js.get_stream(stream).await.is_err(),
            "{stream} was created by a data-plane process"
        );
    }

    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(2526, "[1m]", "1h"))?,
    )?;
    ing.wait_ready(Duration::from_secs(20)).await?;
    let m = w.metrics;
    assert_eventually(Duration::from_secs(20), "worker ready", || async move {
        http_get(m, "/readyz").await.is_ok_and(|(c, _)| c == 200)
    })
    .await?;
    let mut stream = js.get_stream("BATON_QUEUE").await?;
    assert_eq!(stream.info().await?.config.num_replicas, 1);
    Ok(())
}
