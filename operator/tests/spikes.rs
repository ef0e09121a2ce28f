//! Credential spikes → Kubernetes Events ([`baton_operator::spikes`]) against a real
//! `nats-server -js` (from PATH) and the scripted API server: a `credential_spike` event
//! published into `BATON_EVENTS` as the ingress publishes it becomes a Warning Event
//! `CredentialSpike` on its RelayDomain; a spike published before the watcher started is not
//! replayed; other event types are not read; a spike of a RelayDomain that is gone records
//! nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use baton_operator::queue::NatsQueue;
use baton_operator::spikes::SpikeWatcher;
use baton_operator::{Context, Settings};
use baton_queue::events::{CredentialSpike, Events};
use baton_telemetry::Metrics;
use common::ApiServer;
use common::nats::Server;
use http::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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

/// What the ingress has: the event publisher, with a channel that says when each is stored.
struct Ingress {
    events: Events,
    stored: mpsc::UnboundedReceiver<(&'static str, bool)>,
}

impl Ingress {
    async fn new(url: &str) -> Ingress {
        let client = async_nats::connect(url).await.unwrap();
        let (tx, stored) = mpsc::unbounded_channel();
        let hook: baton_queue::events::Hook = Arc::new(move |name, ok| {
            let _ = tx.send((name, ok));
        });
        let events = Events::new(
            async_nats::jetstream::new(client),
            "baton/ingress/test",
            hook,
        );
        Ingress { events, stored }
    }

    /// Publish the spike of `credential` of RelayDomain `relay_domain` under queue id `id` and
    /// wait (bounded) until it is stored.
    async fn spike(&mut self, relay_domain: &str, credential: &str, id: &str) {
        let spike = CredentialSpike {
            relay_domain: relay_domain.into(),
            credential: credential.into(),
            count: 241,
            threshold: 241,
            action: "throttle".into(),
            factor: 10,
            minimum_per_hour: 100,
        };
        self.events.emit(spike.event(id, 1_796_381_153_596));
        let r = tokio::time::timeout(Duration::from_secs(10), self.stored.recv())
            .await
            .expect("the event's PubAck")
            .unwrap();
        assert_eq!(r, ("credential_spike", true));
    }
}

/// A context over the scripted API server and JetStream at `url`.
async fn context(url: &str) -> (Arc<Context>, ApiServer) {
    let queue = NatsQueue::connect(&baton_queue::NatsOptions::new(url), 1)
        .await
        .unwrap();
    let (client, api) = common::fake_api();
    let mut settings = Settings::new("baton-system", "baton:test", url);
    settings.identity = "operator-0".into();
    let ctx = Context::new(
        client,
        settings,
        Arc::new(queue),
        Metrics::new(),
        Arc::new(common::now),
    );
    (ctx, api)
}

fn relay_domain(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "baton.dev/v1alpha1",
        "kind": "RelayDomain",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
            "resourceVersion": "7"},
        "spec": {"domain": "example.com", "pool": "test"},
    })
}

/// Answer the GET of RelayDomain `ns/name` with the object, then take the Event it records.
async fn expect_spike_event(api: &mut ApiServer, ns: &str, name: &str) -> Value {
    api.expect(
        Method::GET,
        &format!("/apis/baton.dev/v1alpha1/namespaces/{ns}/relaydomains/{name}"),
    )
    .await
    .respond(200, relay_domain(ns, name));
    api.expect_event(ns).await
}

#[tokio::test]
async fn a_spike_becomes_a_warning_event_on_its_relay_domain_and_history_is_not_replayed() {
    let server = nats_server().await;
    let (ctx, mut api) = context(&server.url).await;
    let mut ingress = Ingress::new(&server.url).await;
    // Before the operator leads: not replayed.
    ingress.spike("team-a/old-domain", "old", "Q0").await;
    let mut watcher = SpikeWatcher::start(&ctx).await.unwrap();
    assert_eq!(
        watcher.cursor(),
        ctx.queue.events_last_sequence().await.unwrap() + 1
    );
    // Another type of event is not read.
    let client = async_nats::connect(&server.url).await.unwrap();
    async_nats::jetstream::new(client)
        .publish("baton.events.team-a.example-com.Q1.accepted", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    ingress.spike("team-a/example.com", "App", "Q2").await;

    let poll = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let n = watcher.poll(&ctx).await.unwrap();
            (watcher, n)
        })
    };
    // The first request is about the new spike's RelayDomain (the old one is not replayed);
    // the name comes from the event's data, not from the subject token.
    let event = expect_spike_event(&mut api, "team-a", "example.com").await;
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "CredentialSpike");
    assert_eq!(event["action"], "DetectSpike");
    assert_eq!(event["regarding"]["kind"], "RelayDomain");
    assert_eq!(event["regarding"]["name"], "example.com");
    assert_eq!(event["regarding"]["namespace"], "team-a");
    assert_eq!(event["regarding"]["uid"], "uid-example.com");
    assert_eq!(event["reportingController"], "baton-operator");
    let note = event["note"].as_str().unwrap();
    for part in ["\"App\"", "241 messages", "threshold 241", "Throttle"] {
        assert!(note.contains(part), "{part} in {note}");
    }
    let (mut watcher, n) = poll.await.unwrap();
    assert_eq!(n, 1);
    api.assert_idle();

    // Nothing new: nothing read, nothing recorded.
    assert_eq!(watcher.poll(&ctx).await.unwrap(), 0);
    api.assert_idle();

    // A spike of a RelayDomain that is gone records nothing.
    ingress.spike("team-a/gone", "app", "Q3").await;
    let poll = {
        let ctx = ctx.clone();
        tokio::spawn(async move { watcher.poll(&ctx).await.unwrap() })
    };
    api.expect(
        Method::GET,
        "/apis/baton.dev/v1alpha1/namespaces/team-a/relaydomains/gone",
    )
    .await
    .not_found();
    assert_eq!(poll.await.unwrap(), 0);
    api.assert_idle();
}

#[tokio::test]
async fn the_running_watcher_records_each_spike_once() {
    let server = nats_server().await;
    let (ctx, mut api) = context(&server.url).await;
    let mut ingress = Ingress::new(&server.url).await;
    let watcher = SpikeWatcher::start(&ctx).await.unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(watcher.run(ctx.clone(), Duration::from_millis(50), stop.clone()));

    ingress.spike("team-b/shop", "mailer", "Q1").await;
    let event = expect_spike_event(&mut api, "team-b", "shop").await;
    assert_eq!(event["reason"], "CredentialSpike");
    assert!(event["note"].as_str().unwrap().contains("\"mailer\""));
    // The next spike is the next request: the first is not recorded again.
    ingress.spike("team-b/other", "mailer", "Q2").await;
    let event = expect_spike_event(&mut api, "team-b", "other").await;
    assert_eq!(event["regarding"]["name"], "other");

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .unwrap()
        .unwrap();
    api.assert_idle();
}
