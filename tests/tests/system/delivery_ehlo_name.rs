//! Scenario: a worker never announces its pod name. With a `--hostname` that is not fully
//! qualified (what a pod's host name is) and a pool with neither egress identities nor
//! `spec.ehloName`, the worker stays not ready and says why; once the pool gets
//! `spec.ehloName`, it delivers and the receiver sees that name in EHLO.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, http_get,
    write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

const POD_NAME: &str = "baton-worker-test-5d8f7c9b4-x2x9q";

#[tokio::test]
async fn a_worker_never_says_ehlo_with_its_pod_name() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-ehlo-name")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let names: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = names.clone();
    let script = Arc::new(move |s: &Stage<'_>| {
        if let (Stage::Ehlo { name }, Ok(mut seen)) = (s, seen.lock()) {
            seen.push((*name).to_owned());
        }
        Response::Default
    });
    let receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig {
            script,
            ..Default::default()
        },
    )
    .await?;
    let dns = Dns::dest_test().await?;
    let unnamed = direct(port, "[1s]", "1h")
        .replace("  egress: [{ehloName: out.baton.test, weight: 1}]\n", "");
    assert!(!unnamed.contains("egress"), "{unnamed}");
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &unnamed)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::spawn_url(
        &nats.url,
        &dir.0,
        "test",
        Some(dns.addr),
        &["--hostname", POD_NAME],
    )?;
    let m = w.metrics;
    assert_eventually(
        Duration::from_secs(20),
        "the worker says why it is not ready",
        || async move {
            http_get(m, "/readyz")
                .await
                .is_ok_and(|(c, body)| c == 503 && body.contains("spec.ehloName"))
        },
    )
    .await?;
    assert_eq!(
        submit(
            ing.smtp,
            &Submission {
                from: "app@example.com",
                rcpts: vec![("a@dest.test", "")],
                subject: "named",
                ..Default::default()
            }
        )
        .await?,
        250
    );

    // The pool gets a name: the worker becomes ready and delivers under it.
    let named = unnamed.replace(
        "  tls: {policy: Disabled}\n",
        "  tls: {policy: Disabled}\n  ehloName: pool.baton.test\n",
    );
    assert!(named.contains("ehloName: pool.baton.test"), "{named}");
    apply_config(&nats, &write_config(&dir.0, "c2.yaml", &named)?)?;
    let got = receiver
        .wait_for_messages(1, Duration::from_secs(30))
        .await?;
    assert_eq!(got.len(), 1);
    let names = names.lock().map(|n| n.clone()).unwrap_or_default();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n == "pool.baton.test"),
        "EHLO names: {names:?}"
    );
    assert_eventually(
        Duration::from_secs(20),
        "the worker is ready",
        || async move { http_get(m, "/readyz").await.is_ok_and(|(c, _)| c == 200) },
    )
    .await?;
    Ok(())
}
