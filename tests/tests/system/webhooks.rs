//! Scenario: EventSinks (issue 15, signed webhooks), with real processes over the production
//! NATS authorization and an independent receiver (`tools/webhook_receiver.py`: signatures
//! verified with the `standardwebhooks` reference library, bodies parsed with the
//! `cloudevents` SDK, over HTTPS with a test CA the sinks name).
//! - A message deferred once and then delivered reaches its namespace's sink as exactly
//!   `accepted`, `deferred`, `delivered`, in that order, each POST signed and a CloudEvent;
//!   the other namespace's sink receives only its own message's events, filtered by type; a
//!   message refused at the end of DATA is a `refused` event of its tenant only.
//! - While one endpoint answers `503`, mail is delivered as usual, another sink of the same
//!   namespace gets its events, and the dispatcher counts failed POSTs; once the endpoint is
//!   back, every event arrives, in order per message.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{Submission, queue_id, submit};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, assert_eventually, free_port, metric, write_config,
};
use baton_system_tests::nats_users::{ingress_and_worker, login, secured_nats, strs};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use baton_system_tests::smtp::Talk;
use baton_system_tests::webhooks::{self, Webhooks, secret, sink_yaml};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(90);

/// A second tenant: `example.org` in namespace `team-b`, same pool, loopback clients.
const TEAM_B: &str = "---\napiVersion: baton.dev/v1alpha1\nkind: RelayDomain\n\
    metadata: {name: example-org, namespace: team-b}\n\
    spec: {domain: example.org, pool: test, allowedSenders: ['*@example.org'], \
    submission: {networks: [127.0.0.0/8]}}\n";

/// Short type names of `events`, for `subject`.
fn types_of(events: &[Value], subject: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["subject"] == subject)
        .filter_map(|e| e["type"].as_str())
        .map(|t| {
            t.trim_start_matches("dev.baton.message.")
                .trim_end_matches(".v1")
                .to_owned()
        })
        .collect()
}

/// Everything a test needs running: NATS with the production users, config applied, an
/// ingress, a worker, a dispatcher.
struct Stack {
    ingress: Ingress,
    _worker: Worker,
    webhooks: Webhooks,
    _nats: Nats,
    _dns: Dns,
}

async fn stack(dir: &TempDir, yaml: &str) -> anyhow::Result<Stack> {
    let users = dir.0.join("users");
    let dns = Dns::dest_test().await?;
    let cfg = write_config(&dir.0, "c.yaml", yaml)?;
    let nats = secured_nats(&cfg, &users, &[]).await?;
    let (ingress, worker) =
        ingress_and_worker(&nats, &dir.0, &users, "test", Some(dns.addr)).await?;
    let webhooks = Webhooks::start(&nats.url, &dir.0, &strs(&login(&users, "webhooks"))).await?;
    Ok(Stack {
        ingress,
        _worker: worker,
        webhooks,
        _nats: nats,
        _dns: dns,
    })
}

#[tokio::test]
async fn signed_events_reach_their_own_namespace_sink_in_order() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-webhooks")?;
    let port = free_port()?;
    // `a@dest.test` is greylisted once; everything else is accepted.
    let greylisted = Arc::new(AtomicBool::new(false));
    let g = greylisted.clone();
    // Every transaction waits 1.5 s at MAIL, so the worker's events are stored well after the
    // ingress's `accepted` (published in the background) whatever the machine's load; the
    // dispatcher's own reordering is covered by its unit tests.
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::Mail { .. } => Response::Stall(Duration::from_millis(1500)),
        Stage::Rcpt { to } if *to == "a@dest.test" && !g.swap(true, Ordering::SeqCst) => {
            Response::Reply(451, "4.7.1 greylisted, come back later".into())
        }
        _ => Response::Default,
    });
    let smtp = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig {
            script,
            ..Default::default()
        },
    )
    .await?;
    let (sa, sb) = (secret(1), secret(2));
    let hooks = webhooks::Receiver::start(&dir.0, &[("/a", &sa), ("/b", &sb)]).await?;
    let yaml = [
        direct(port, "[1s]", "1h"),
        TEAM_B.to_owned(),
        sink_yaml(
            "team-a",
            "hooks-a",
            &format!("{}/a", hooks.base),
            &sa,
            &hooks.ca_pem,
            "",
        ),
        sink_yaml(
            "team-b",
            "hooks-b",
            &format!("{}/b", hooks.base),
            &sb,
            &hooks.ca_pem,
            "types: [accepted, delivered]",
        ),
    ]
    .concat();
    let s = stack(&dir, &yaml).await?;

    for (from, to) in [
        ("app@example.com", "a@dest.test"),
        ("app@example.org", "b@dest.test"),
    ] {
        let m = Submission {
            from,
            rcpts: vec![(to, "")],
            subject: "webhook",
            ..Default::default()
        };
        assert_eq!(submit(s.ingress.smtp, &m).await?, 250);
    }
    // A message whose From: does not align is refused at the end of DATA: the tenant's
    // `refused` event.
    let (mut t, _) = Talk::connect(s.ingress.smtp).await?;
    for (cmd, want) in [
        ("EHLO client.test", 250),
        ("MAIL FROM:<app@example.com>", 250),
        ("RCPT TO:<c@dest.test>", 250),
        ("DATA", 354),
    ] {
        assert_eq!(t.cmd(cmd).await?.code, want, "{cmd}");
    }
    t.send(b"From: <someone@elsewhere.test>\r\nSubject: misaligned\r\n\r\nx\r\n")
        .await?;
    assert_eq!(t.cmd(".").await?.code, 550);
    let _ = t.cmd("QUIT").await;
    let got = smtp.wait_for_messages(2, WAIT).await?;
    let mut ids: HashMap<String, String> = HashMap::new();
    for m in &got {
        let id = queue_id(&m.body).ok_or_else(|| anyhow::anyhow!("no queue id"))?;
        ids.insert(m.to[0].clone(), id);
    }
    let (qa, qb) = (ids["a@dest.test"].clone(), ids["b@dest.test"].clone());

    let (h, a, b) = (&hooks, qa.as_str(), qb.as_str());
    assert_eventually(WAIT, "three events at /a and two at /b", || async move {
        types_of(&h.events("/a"), a).len() >= 3 && types_of(&h.events("/b"), b).len() >= 2
    })
    .await?;
    assert_eventually(WAIT, "the refusal at /a", || async move {
        h.events("/a")
            .iter()
            .any(|e| e["type"] == "dev.baton.message.refused.v1")
    })
    .await?;
    let at_a = hooks.events("/a");
    let at_b = hooks.events("/b");
    let refused = at_a
        .iter()
        .find(|e| e["type"] == "dev.baton.message.refused.v1")
        .cloned()
        .unwrap_or_default();
    assert_eq!(refused["data"]["phase"], "data", "{refused}");
    assert_eq!(refused["data"]["code"], 550, "{refused}");
    assert_eq!(refused["data"]["sender"], "app@example.com", "{refused}");
    assert!(
        at_b.iter()
            .all(|e| e["type"] != "dev.baton.message.refused.v1"),
        "team-a's refusal reached team-b"
    );
    assert_eq!(types_of(&at_a, &qa), ["accepted", "deferred", "delivered"]);
    assert_eq!(
        types_of(&at_b, &qb),
        ["accepted", "delivered"],
        "filtered by type"
    );
    // Each namespace's sink sees only its own tenant's events.
    for e in &at_a {
        assert_eq!(e["data"]["relayDomain"], "team-a/example-com", "{e}");
        assert_ne!(
            e["subject"],
            qb.as_str(),
            "team-b's event at team-a's sink: {e}"
        );
    }
    for e in &at_b {
        assert_eq!(e["data"]["relayDomain"], "team-b/example-org", "{e}");
    }
    // Every request verified with its own sink's secret, as a structured CloudEvent whose id is
    // the webhook-id.
    for r in hooks.requests() {
        assert_eq!(r["verified"], true, "{r}");
        assert_eq!(r["cloudevent"], true, "{r}");
        assert_eq!(r["webhookId"], r["id"], "{r}");
        assert!(
            r["contentType"]
                .as_str()
                .is_some_and(|c| c.starts_with("application/cloudevents+json")),
            "{r}"
        );
    }
    let deferred = at_a
        .iter()
        .find(|e| e["type"] == "dev.baton.message.deferred.v1");
    assert!(
        deferred.is_some_and(|e| e["data"]["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("451 4.7.1"))),
        "{deferred:?}"
    );
    let m = s.webhooks.metrics;
    assert_eventually(WAIT, "delivered events counted", || async move {
        metric(
            m,
            "baton_webhook_events_total{result=\"delivered\",sink=\"team-a/hooks-a\"}",
        )
        .await
            >= 3.0
    })
    .await?;
    assert_eq!(metric(m, "baton_webhook_sinks").await, 2.0);
    Ok(())
}

#[tokio::test]
async fn a_down_endpoint_delays_no_mail_and_then_gets_every_event_in_order() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-webhooks-down")?;
    let port = free_port()?;
    // Deliveries take 1.5 s (as above: `delivered` is stored well after `accepted`).
    let smtp = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig::slow_data(Duration::from_millis(1500)),
    )
    .await?;
    let (sa, sb) = (secret(3), secret(4));
    let hooks = webhooks::Receiver::start(&dir.0, &[("/a", &sa), ("/b", &sb)]).await?;
    hooks.set_down(Some("/a"))?;
    let yaml = [
        direct(port, "[1s]", "1h"),
        sink_yaml(
            "team-a",
            "hooks-a",
            &format!("{}/a", hooks.base),
            &sa,
            &hooks.ca_pem,
            "",
        ),
        // A second sink of the same namespace, whose endpoint stays up.
        sink_yaml(
            "team-a",
            "hooks-b",
            &format!("{}/b", hooks.base),
            &sb,
            &hooks.ca_pem,
            "",
        ),
    ]
    .concat();
    let s = stack(&dir, &yaml).await?;
    let rcpts = ["r1@dest.test", "r2@dest.test", "r3@dest.test"];
    for to in rcpts {
        let m = Submission {
            from: "app@example.com",
            rcpts: vec![(to, "")],
            subject: "while the endpoint is down",
            ..Default::default()
        };
        assert_eq!(submit(s.ingress.smtp, &m).await?, 250);
    }
    // Mail does not wait for the endpoint.
    let got = smtp.wait_for_messages(3, WAIT).await?;
    let ids: Vec<String> = got.iter().filter_map(|m| queue_id(&m.body)).collect();
    assert_eq!(ids.len(), 3);
    let m = s.webhooks.metrics;
    assert_eventually(WAIT, "failed POSTs counted", || async move {
        metric(
            m,
            "baton_webhook_events_total{result=\"failed\",sink=\"team-a/hooks-a\"}",
        )
        .await
            >= 1.0
    })
    .await?;
    // The other sink is not held up by the down one.
    let (h, ids_ref) = (&hooks, &ids);
    assert_eventually(WAIT, "every event at the sink that is up", || async move {
        let events = h.events("/b");
        ids_ref.iter().all(|id| {
            let t = types_of(&events, id);
            t.contains(&"accepted".to_owned()) && t.contains(&"delivered".to_owned())
        })
    })
    .await?;
    assert!(hooks.events("/a").is_empty(), "nothing accepted while down");
    assert!(
        hooks
            .requests()
            .iter()
            .filter(|r| r["path"] == "/a")
            .all(|r| r["down"] == true),
        "every request to /a was answered 503"
    );

    hooks.set_down(None)?;
    assert_eventually(WAIT, "every event after the outage", || async move {
        let events = h.events("/a");
        ids_ref.iter().all(|id| {
            let t = types_of(&events, id);
            t.contains(&"accepted".to_owned()) && t.contains(&"delivered".to_owned())
        })
    })
    .await?;
    let events = hooks.events("/a");
    for id in &ids {
        let t = types_of(&events, id);
        // At least once: a repeat is possible, but never out of order.
        let first_delivered = t.iter().position(|x| x == "delivered");
        let last_accepted = t.iter().rposition(|x| x == "accepted");
        assert!(
            last_accepted < first_delivered,
            "events of {id} out of order: {t:?}"
        );
    }
    assert_eventually(WAIT, "the sink is healthy again", || async move {
        metric(
            m,
            "baton_webhook_events_total{result=\"delivered\",sink=\"team-a/hooks-a\"}",
        )
        .await
            >= 6.0
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_standby_dispatcher_takes_over_when_the_pinned_one_dies() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-webhooks-failover")?;
    let port = free_port()?;
    let smtp = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let sa = secret(5);
    let hooks = webhooks::Receiver::start(&dir.0, &[("/a", &sa)]).await?;
    let yaml = [
        direct(port, "[1s]", "1h"),
        sink_yaml(
            "team-a",
            "hooks-a",
            &format!("{}/a", hooks.base),
            &sa,
            &hooks.ca_pem,
            "",
        ),
    ]
    .concat();
    let mut s = stack(&dir, &yaml).await?;
    let send = |to: &'static str| Submission {
        from: "app@example.com",
        rcpts: vec![(to, "")],
        subject: "failover",
        ..Default::default()
    };
    let both = |id: String| {
        let h = &hooks;
        move || {
            let id = id.clone();
            async move {
                let t = types_of(&h.events("/a"), &id);
                t.contains(&"accepted".to_owned()) && t.contains(&"delivered".to_owned())
            }
        }
    };
    // The first dispatcher holds the sink's pin.
    assert_eq!(submit(s.ingress.smtp, &send("f1@dest.test")).await?, 250);
    let got = smtp.wait_for_messages(1, WAIT).await?;
    let first = queue_id(&got[0].body).ok_or_else(|| anyhow::anyhow!("no queue id"))?;
    assert_eventually(WAIT, "the first message's events", both(first.clone())).await?;
    // A second one waits on standby; the first dies without a word.
    let standby = Webhooks::start(
        &s._nats.url,
        &dir.0,
        &strs(&login(&dir.0.join("users"), "webhooks")),
    )
    .await?;
    s.webhooks.proc.kill();
    assert_eq!(submit(s.ingress.smtp, &send("f2@dest.test")).await?, 250);
    let got = smtp.wait_for_messages(2, WAIT).await?;
    let second = got
        .iter()
        .filter_map(|m| queue_id(&m.body))
        .find(|id| *id != first)
        .ok_or_else(|| anyhow::anyhow!("no second queue id"))?;
    assert_eventually(
        WAIT,
        "the second message's events, via the standby",
        both(second),
    )
    .await?;
    let m = standby.metrics;
    assert!(
        metric(
            m,
            "baton_webhook_events_total{result=\"delivered\",sink=\"team-a/hooks-a\"}"
        )
        .await
            >= 2.0,
        "the standby sent them"
    );
    // A dispatcher told to stop hands its sinks back and exits.
    let mut standby = standby;
    assert!(
        standby.proc.terminate(Duration::from_secs(15)),
        "the dispatcher did not exit on SIGTERM: {}",
        std::fs::read_to_string(&standby.log).unwrap_or_default()
    );
    Ok(())
}

#[tokio::test]
async fn a_sink_that_was_down_drops_what_is_beyond_its_backlog() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-webhooks-backlog")?;
    let port = free_port()?;
    let smtp = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let sa = secret(6);
    let hooks = webhooks::Receiver::start(&dir.0, &[("/a", &sa)]).await?;
    hooks.set_down(Some("/a"))?;
    let yaml = [
        direct(port, "[1s]", "1h"),
        sink_yaml(
            "team-a",
            "hooks-a",
            &format!("{}/a", hooks.base),
            &sa,
            &hooks.ca_pem,
            "maxBacklog: 2",
        ),
    ]
    .concat();
    let s = stack(&dir, &yaml).await?;
    for to in ["k1@dest.test", "k2@dest.test", "k3@dest.test"] {
        let m = Submission {
            from: "app@example.com",
            rcpts: vec![(to, "")],
            subject: "backlog",
            ..Default::default()
        };
        assert_eq!(submit(s.ingress.smtp, &m).await?, 250);
    }
    smtp.wait_for_messages(3, WAIT).await?;
    // Six events (an `accepted` and a `delivered` per message) wait for the sink.
    let m = s.webhooks.metrics;
    let sink = "sink=\"team-a/hooks-a\"";
    assert_eventually(WAIT, "six events waiting", || async move {
        metric(m, &format!("baton_webhook_backlog{{{sink}}}")).await >= 6.0
    })
    .await?;
    hooks.set_down(None)?;
    let count = |result: &'static str| async move {
        metric(
            m,
            &format!("baton_webhook_events_total{{result=\"{result}\",{sink}}}"),
        )
        .await
    };
    assert_eventually(WAIT, "every event sent or dropped", || async move {
        count("delivered").await + count("dropped_backlog").await >= 6.0
    })
    .await?;
    assert!(count("dropped_backlog").await >= 1.0, "nothing was dropped");
    assert!(count("delivered").await >= 1.0, "nothing was delivered");
    assert_eq!(
        hooks.events("/a").len() as f64,
        count("delivered").await,
        "what the receiver verified is what was counted delivered"
    );
    Ok(())
}
