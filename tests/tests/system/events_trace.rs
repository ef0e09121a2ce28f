//! Scenario: delivery events (issue 15, the event stream and trace), with real processes.
//! - Over the production NATS authorization, a message deferred once (`451` at RCPT) and then
//!   delivered leaves exactly `accepted`, `deferred`, `delivered` on `BATON_EVENTS`, as
//!   CloudEvents 1.0 JSON under its tenant's subjects, from the ingress and the worker; `baton
//!   queue trace <id>` shows that timeline, and so does `trace <Message-ID>`.
//! - With the event stream gone (JetStream refuses every event), mail is still accepted and
//!   delivered, and the lost events are counted (`baton_events_total{result="failed"}`); an
//!   ingress started with `--events=false` publishes none.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_system_tests::admin::Admin;
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{Submission, queue_id, submit};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, metric,
    write_config,
};
use baton_system_tests::nats_users::{connect_as, ingress_and_worker, login, secured_nats, strs};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn a_deferred_then_delivered_message_leaves_its_timeline() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-events")?;
    let users = dir.0.join("users");
    let port = free_port()?;
    let rcpts = Arc::new(AtomicU64::new(0));
    let n = rcpts.clone();
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::Rcpt { .. } if n.fetch_add(1, Ordering::SeqCst) == 0 => {
            Response::Reply(451, "4.7.1 greylisted, come back later".into())
        }
        _ => Response::Default,
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
    let cfg = write_config(&dir.0, "c.yaml", &direct(port, "[1s]", "1h"))?;
    // The owner sets the event stream's retention.
    let retention = ["--events-max-age", "2d", "--events-max-bytes", "64Mi"];
    let nats = secured_nats(&cfg, &users, &retention).await?;
    let admin_login = login(&users, "admin");
    let admin_js = async_nats::jetstream::new(connect_as(&nats.url, &users, "admin").await?);
    let info = admin_js
        .get_stream("BATON_EVENTS")
        .await?
        .info()
        .await?
        .config
        .clone();
    assert_eq!(info.max_age, Duration::from_secs(2 * 86_400));
    assert_eq!(info.max_bytes, 64 << 20);
    assert_eq!(info.subjects, ["baton.events.>", "baton.index.>"]);
    let (ing, w) = ingress_and_worker(&nats, &dir.0, &users, "test", Some(dns.addr)).await?;
    let api = Admin::start(&nats.url, &dir.0, &strs(&admin_login)).await?;
    let ops = api.token(&dir.0, "ops", "viewer", &[])?;

    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "timeline",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = receiver.wait_for_messages(1, WAIT).await?;
    let id = queue_id(&got[0].body).ok_or_else(|| anyhow::anyhow!("no queue id in the body"))?;

    let (a, t, qid) = (&api, &ops, id.as_str());
    let types = || async move {
        a.queue_json(t, &["trace", qid])
            .map(|v| {
                v["events"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["type"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    assert_eventually(WAIT, "three events traced", || async move {
        types().await.len() == 3
    })
    .await?;
    assert_eq!(
        types().await,
        [
            "dev.baton.message.accepted.v1",
            "dev.baton.message.deferred.v1",
            "dev.baton.message.delivered.v1"
        ]
    );
    let trace = api.queue_json(&ops, &["trace", &id])?;
    let events: Vec<Value> = trace["events"].as_array().cloned().unwrap_or_default();
    for e in &events {
        assert_eq!(e["specversion"], "1.0", "{e}");
        assert_eq!(e["subject"], id.as_str(), "{e}");
        assert_eq!(e["datacontenttype"], "application/json");
        assert_eq!(e["data"]["relayDomain"], "team-a/example-com", "{e}");
        assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
    }
    assert!(
        events[0]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("baton/ingress/"))
    );
    assert_eq!(events[0]["data"]["recipients"][0], "a@dest.test");
    assert!(
        events[1]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("baton/worker/"))
    );
    assert!(
        events[1]["data"]["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("451 4.7.1")),
        "{}",
        events[1]
    );
    assert_eq!(events[1]["data"]["attempt"], 1);
    assert_eq!(events[2]["data"]["recipient"], "a@dest.test");
    assert_eq!(events[2]["data"]["attempt"], 2);
    // What the ingress knew: the listener, the Message-ID, no TLS, no DKIM for this domain.
    assert_eq!(events[0]["data"]["listener"], "smtp", "{}", events[0]);
    assert_eq!(events[0]["data"]["messageId"], "<timeline@client.test>");
    assert_eq!(events[0]["data"]["tlsCipher"], "");
    assert_eq!(events[0]["data"]["tlsVersion"], "");
    assert_eq!(events[0]["data"]["dkim"], serde_json::json!([]));
    // The same timeline by Message-ID, with or without its angle brackets.
    for by in ["<timeline@client.test>", "timeline@client.test"] {
        let t = api.queue_json(&ops, &["trace", by])?;
        let seqs: Vec<&Value> = t["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["subject"])
            .collect();
        assert_eq!(seqs.len(), 3, "{t}");
        assert!(seqs.iter().all(|s| *s == id.as_str()), "{t}");
    }
    let table = api.queue(&ops, &["trace", &id])?;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("accepted") && text.contains("deferred") && text.contains("delivered"),
        "{text}"
    );
    let wm = w.metrics;
    assert_eq!(
        metric(
            wm,
            "baton_events_total{result=\"failed\",type=\"deferred\"}"
        )
        .await,
        0.0
    );
    Ok(())
}

#[tokio::test]
async fn mail_flows_when_events_cannot_be_stored() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-events-down")?;
    let nats = Nats::start().await?;
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let dns = Dns::dest_test().await?;
    let cfg = write_config(
        &dir.0,
        "c.yaml",
        &direct(receiver.addr().port(), "[1s]", "1h"),
    )?;
    apply_config(&nats, &cfg)?;
    // JetStream refuses every event from now on: there is no stream for them.
    nats.jetstream()
        .await?
        .delete_stream("BATON_EVENTS")
        .await?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let _w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &[]).await?;
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "no-events",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    receiver.wait_for_messages(1, WAIT).await?;
    let im = ing.metrics;
    assert_eventually(WAIT, "the lost event counted", || async move {
        metric(
            im,
            "baton_events_total{result=\"failed\",type=\"accepted\"}",
        )
        .await
            == 1.0
    })
    .await?;
    // `--events=false`: nothing is published, so nothing is lost either.
    let quiet = Ingress::start(&nats, &dir.0, &["--events=false"]).await?;
    let m = Submission {
        subject: "events-off",
        ..m
    };
    assert_eq!(submit(quiet.smtp, &m).await?, 250);
    receiver.wait_for_messages(2, WAIT).await?;
    assert_eq!(
        metric(
            quiet.metrics,
            "baton_events_total{result=\"failed\",type=\"accepted\"}"
        )
        .await,
        0.0
    );
    Ok(())
}
