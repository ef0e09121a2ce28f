//! Scenario: a config snapshot that does not decode is refused by every data-plane process:
//! it is counted in `baton_config_errors_total`, the previous snapshot stays in force (the
//! generation does not move) and the process stays ready.

use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, http_get, metric, write_config,
};

#[tokio::test]
async fn undecodable_snapshot_is_counted_and_ignored() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-config-reject")?;
    let nats = Nats::start().await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(2525, "[1m]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", None, &[]).await?;
    for m in [ing.metrics, w.metrics] {
        assert_eq!(metric(m, "baton_config_generation").await, 1.0);
        assert_eq!(metric(m, "baton_config_errors_total").await, 0.0);
    }

    let js = nats.jetstream().await?;
    let kv = js.get_key_value("baton-config").await?;
    // A protobuf field 1 of wire type 7 does not exist: this can never decode.
    kv.put("relay-config", vec![0x0f, 0xff, 0xff].into())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    for m in [ing.metrics, w.metrics] {
        assert_eventually(
            Duration::from_secs(20),
            "rejection counted",
            || async move { metric(m, "baton_config_errors_total").await == 1.0 },
        )
        .await?;
        assert_eq!(metric(m, "baton_config_generation").await, 1.0);
        assert_eq!(http_get(m, "/readyz").await?.0, 200);
    }
    Ok(())
}
