//! Scenario: holding a destination while its receiver is down (issue 14), over the production
//! NATS authorization:
//! - `baton queue hold --domain dest.test` before anything is sent; every worker follows the
//!   hold (`baton_holds`);
//! - a message to `dest.test` and `other.test` is split: `other.test` is delivered at once,
//!   the `dest.test` recipient moves to the held place with a message only for `dest.test`
//!   (`baton queue list --place held`), and nothing connects to the down receiver;
//! - a token limited to a namespace may not hold a recipient domain;
//! - once the receiver is up, `baton queue release --domain dest.test` delivers both held
//!   recipients exactly once, the other recipient is not delivered again, no hold is left and
//!   the queue is empty.

use std::time::Duration;

use baton_system_tests::admin::Admin;
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Dns, TempDir, assert_eventually, free_port, metric, write_config,
};
use baton_system_tests::nats_users::{ingress_and_worker, login, secured_nats, strs};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const WAIT: Duration = Duration::from_secs(60);

fn received(r: &Receiver, rcpt: &str, subject: &str) -> usize {
    r.messages()
        .iter()
        .filter(|m| {
            m.to.iter().any(|t| t == rcpt) && String::from_utf8_lossy(&m.body).contains(subject)
        })
        .count()
}

#[tokio::test]
async fn a_held_destination_waits_and_is_delivered_once_on_release() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-hold")?;
    let users = dir.0.join("users");
    let port = free_port()?;
    // other.test is up on 127.0.0.2; dest.test (127.0.0.1) is down until the release.
    let other = Receiver::start(&format!("127.0.0.2:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::start_local(
        &[
            ("dest.test", "mx.dest.test", 10),
            ("other.test", "mx.other.test", 10),
        ],
        &[
            ("mx.dest.test", "127.0.0.1"),
            ("mx.other.test", "127.0.0.2"),
        ],
        &["test"],
    )
    .await?;
    let cfg = write_config(&dir.0, "c.yaml", &direct(port, "[1s]", "1h"))?;
    let nats = secured_nats(&cfg, &users, &[]).await?;
    let admin_login = login(&users, "admin");
    let (ing, w) = ingress_and_worker(&nats, &dir.0, &users, "test", Some(dns.addr)).await?;
    let api = Admin::start(&nats.url, &dir.0, &strs(&admin_login)).await?;
    let ops = api.token(&dir.0, "ops", "admin", &[])?;
    let tenant = api.token(&dir.0, "tenant", "admin", &["team-a"])?;

    let o = api.queue(&tenant, &["hold", "--domain", "dest.test"])?;
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("permission denied"));
    api.queue_json(
        &ops,
        &["hold", "--domain", "dest.test", "--reason", "receiver down"],
    )?;
    let holds = api.queue_json(&ops, &["holds"])?;
    assert_eq!(holds["holds"][0]["value"], "dest.test", "{holds}");
    assert_eq!(holds["holds"][0]["by"], "ops");
    let wm = w.metrics;
    assert_eventually(WAIT, "the worker follows the hold", || async move {
        metric(wm, "baton_holds").await == 1.0
    })
    .await?;

    let split = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", ""), ("b@other.test", "")],
        subject: "split-by-hold",
        ..Default::default()
    };
    let only_held = Submission {
        from: "app@example.com",
        rcpts: vec![("c@dest.test", "")],
        subject: "wholly-held",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &split).await?, 250);
    assert_eq!(submit(ing.smtp, &only_held).await?, 250);
    let o = &other;
    assert_eventually(WAIT, "other.test delivered meanwhile", || async move {
        received(o, "b@other.test", "split-by-hold") == 1
    })
    .await?;
    let (a, t) = (&api, &ops);
    assert_eventually(WAIT, "two envelopes held", || async move {
        a.queue_json(t, &["list", "--place", "held"])
            .is_ok_and(|v| v["messages"].as_array().is_some_and(|m| m.len() == 2))
    })
    .await?;
    let held = api.queue_json(&ops, &["list", "--place", "held"])?;
    let mut rcpts: Vec<String> = held["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["recipients"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["address"].as_str().map(str::to_owned))
        .collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@dest.test", "c@dest.test"], "{held}");
    assert_eq!(
        metric(wm, "baton_held_total{pool=\"test\"}").await,
        2.0,
        "held without a delivery attempt"
    );
    assert_eq!(
        metric(
            wm,
            "baton_delivery_attempts_total{pool=\"test\",result=\"connect_failed\"}"
        )
        .await,
        0.0,
        "nothing tried the down receiver"
    );

    // The receiver comes back; the release delivers each held recipient once.
    let dest = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let released = api.queue_json(&ops, &["release", "--domain", "dest.test"])?;
    assert_eq!(released["matched"], 2, "{released}");
    let d = &dest;
    assert_eventually(
        WAIT,
        "held mail delivered after the release",
        || async move {
            received(d, "a@dest.test", "split-by-hold") == 1
                && received(d, "c@dest.test", "wholly-held") == 1
        },
    )
    .await?;
    assert_eventually(WAIT, "an empty queue", || async move {
        a.queue_json(t, &["summary"])
            .is_ok_and(|s| s["scanned"] == 0)
    })
    .await?;
    assert_eq!(received(&dest, "a@dest.test", "split-by-hold"), 1);
    assert_eq!(received(&dest, "c@dest.test", "wholly-held"), 1);
    assert_eq!(received(&other, "b@other.test", "split-by-hold"), 1);
    assert_eq!(
        api.queue_json(&ops, &["holds"])?["holds"],
        serde_json::json!([])
    );
    Ok(())
}
