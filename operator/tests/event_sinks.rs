//! EventSinks in the snapshot sync and the status refresh, against a scripted fake API server
//! and the in-memory queue: a sink with its Secret is published and `Ready`, one whose Secret is
//! missing is left out (`Ready=False`, reason `Invalid`) without holding up the others, the
//! dispatcher's record of a failing endpoint reaches the status (`Failing=True`, the error, the
//! backlog) and its recovery too, the consumers of deleted sinks are removed once the snapshot
//! without them is stored, and a cluster without the EventSink CRD still gets its snapshot.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use baton_operator::snapshot;
use baton_queue::sinks::SinkState;
use common::{ApiServer, context, list, now_str, opened};
use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

const POOLS: &str = "/apis/baton.dev/v1alpha1/sendingpools";
const DOMAINS: &str = "/apis/baton.dev/v1alpha1/relaydomains";
const SINKS: &str = "/apis/baton.dev/v1alpha1/eventsinks";
/// The signing key of every test sink.
const KEY: [u8; 32] = [7; 32];

fn pool(name: &str) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "SendingPool",
           "metadata": {"name": name, "uid": format!("{name}-uid"), "generation": 1},
           "spec": {}})
}

/// An EventSink whose signing secret is the Secret `<name>-secret` of its namespace.
fn sink(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "EventSink",
           "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}"),
                        "generation": 1},
           "spec": {"url": format!("https://{name}.example/baton"),
                    "secretRef": {"name": format!("{name}-secret")}}})
}

fn secret_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/secrets/{name}-secret")
}

/// The signing-secret Secret of sink `name` (a Standard Webhooks `whsec_` secret).
fn signing_secret(ns: &str, name: &str) -> Value {
    let whsec = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    );
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": format!("{name}-secret"), "namespace": ns},
           "stringData": {"secret": whsec}})
}

fn status_path(ns: &str, name: &str) -> String {
    format!("/apis/baton.dev/v1alpha1/namespaces/{ns}/eventsinks/{name}/status")
}

/// A condition as written at the tests' fixed clock for generation 1.
fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": 1, "lastTransitionTime": now_str()})
}

/// Answer the three lists of a sync.
async fn lists(api: &mut ApiServer, pools: Vec<Value>, sinks: Vec<Value>) {
    api.expect(Method::GET, POOLS)
        .await
        .respond(200, list("SendingPool", "baton.dev/v1alpha1", pools));
    api.expect(Method::GET, DOMAINS)
        .await
        .respond(200, list("RelayDomain", "baton.dev/v1alpha1", vec![]));
    api.expect(Method::GET, SINKS)
        .await
        .respond(200, list("EventSink", "baton.dev/v1alpha1", sinks));
}

/// Expect a forced SSA status patch of `object`; answer with the object carrying that status,
/// and return the status.
async fn status_patch(api: &mut ApiServer, object: &Value) -> Value {
    let ns = object["metadata"]["namespace"].as_str().unwrap();
    let name = object["metadata"]["name"].as_str().unwrap();
    let call = api.expect(Method::PATCH, &status_path(ns, name)).await;
    call.assert_ssa();
    assert_eq!(call.body["apiVersion"], "baton.dev/v1alpha1");
    assert_eq!(call.body["kind"], "EventSink");
    let status = call.body["status"].clone();
    let mut reply = object.clone();
    reply["status"] = status.clone();
    call.respond(200, reply);
    status
}

/// Expect one Event about an EventSink in `ns`; returns `(type, reason)`.
async fn event(api: &mut ApiServer, ns: &str) -> (String, String) {
    let e = api.expect_event(ns).await;
    assert_eq!(e["regarding"]["kind"], "EventSink");
    (
        e["type"].as_str().unwrap().to_owned(),
        e["reason"].as_str().unwrap().to_owned(),
    )
}

fn ready_and_idle() -> Value {
    json!([
        cond(
            "Ready",
            "True",
            "Delivering",
            "events are sent to the endpoint"
        ),
        cond("Failing", "False", "NoEvents", "no event was delivered yet"),
    ])
}

#[tokio::test]
async fn a_sink_with_its_secret_is_published_and_ready() {
    let (ctx, mut api, queue, _) = context();
    let mut hooks = sink("team-a", "hooks");
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![hooks.clone()]).await;
    api.expect(Method::GET, &secret_path("team-a", "hooks"))
        .await
        .respond(200, signing_secret("team-a", "hooks"));
    let status = status_patch(&mut api, &hooks).await;
    assert_eq!(
        status,
        json!({"observedGeneration": 1, "conditions": ready_and_idle()})
    );
    assert_eq!(
        event(&mut api, "team-a").await,
        ("Normal".to_owned(), "Delivering".to_owned())
    );
    let plan = task.await.unwrap().unwrap();
    assert!(plan.publish);
    api.assert_idle();

    let state = queue.state();
    assert_eq!(state.snapshots.len(), 1);
    let stored = &state.snapshots[0].sinks;
    assert_eq!(stored.len(), 1);
    assert!(
        stored[0].secret.is_empty(),
        "the signing key is stored sealed"
    );
    let sinks = opened(&state.snapshots[0]).sinks;
    assert_eq!(
        (
            sinks[0].name.as_str(),
            sinks[0].namespace.as_str(),
            sinks[0].url.as_str()
        ),
        ("team-a/hooks", "team-a", "https://hooks.example/baton")
    );
    assert_eq!(sinks[0].secret, KEY);
    // The snapshot was stored, then the consumers of other sinks removed (there were none).
    assert_eq!(state.sink_keeps, [vec!["team-a/hooks".to_owned()]]);
    assert!(state.removed_sinks.is_empty());

    // Nothing changed: no snapshot, no status patch, no consumer removal.
    hooks["status"] = status;
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![hooks]).await;
    api.expect(Method::GET, &secret_path("team-a", "hooks"))
        .await
        .respond(200, signing_secret("team-a", "hooks"));
    let plan = task.await.unwrap().unwrap();
    assert!(!plan.publish);
    api.assert_idle();
    let state = queue.state();
    assert_eq!(state.snapshots.len(), 1);
    assert_eq!(state.sink_keeps.len(), 1);
}

#[tokio::test]
async fn a_sink_whose_secret_is_missing_is_left_out_and_invalid_without_blocking_others() {
    let (ctx, mut api, queue, _) = context();
    let broken = sink("team-a", "hooks");
    let alerts = sink("team-b", "alerts");
    let task = tokio::spawn(async move { snapshot::sync(&ctx).await });
    lists(
        &mut api,
        vec![pool("default")],
        vec![broken.clone(), alerts.clone()],
    )
    .await;
    api.expect(Method::GET, &secret_path("team-a", "hooks"))
        .await
        .not_found();
    api.expect(Method::GET, &secret_path("team-b", "alerts"))
        .await
        .respond(200, signing_secret("team-b", "alerts"));

    let status = status_patch(&mut api, &broken).await;
    assert_eq!(
        status,
        json!({"observedGeneration": 1, "conditions": [
            cond("Ready", "False", "Invalid",
                 "spec.secretRef: Secret team-a/hooks-secret not found"),
            cond("Failing", "False", "NoEvents", "no event was delivered yet"),
        ]})
    );
    assert_eq!(
        event(&mut api, "team-a").await,
        ("Warning".to_owned(), "Invalid".to_owned())
    );
    let status = status_patch(&mut api, &alerts).await;
    assert_eq!(status["conditions"], ready_and_idle());
    assert_eq!(
        event(&mut api, "team-b").await,
        ("Normal".to_owned(), "Delivering".to_owned())
    );

    // The sync succeeded; only the valid sink is in the snapshot and keeps its consumer.
    let plan = task.await.unwrap().unwrap();
    assert!(plan.publish);
    api.assert_idle();
    let state = queue.state();
    let names: Vec<&str> = state.snapshots[0]
        .sinks
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["team-b/alerts"]);
    assert_eq!(state.sink_keeps, [vec!["team-b/alerts".to_owned()]]);
}

/// What the dispatcher records for a sink whose endpoint started failing.
fn failing_record() -> SinkState {
    SinkState {
        sink: "team-a/hooks".into(),
        delivered: 41,
        dropped: 0,
        failing: true,
        last_error: "POST https://hooks.example/baton: 503 Service Unavailable".into(),
        last_error_ms: 1_700_000_000_000,
        last_delivered_ms: 1_699_999_000_500,
        consecutive_failures: 7,
    }
}

fn time_str(secs: i64) -> Value {
    serde_json::to_value(Time(Timestamp::from_second(secs).unwrap())).unwrap()
}

#[tokio::test]
async fn a_failing_endpoint_reaches_the_status_and_the_refresh_follows_its_recovery() {
    let (ctx, mut api, queue, metrics) = context();
    queue.update(|s| {
        s.sink_states
            .insert("team-a/hooks".into(), failing_record());
        s.sink_backlogs.insert("team-a/hooks".into(), 1234);
    });
    let mut hooks = sink("team-a", "hooks");
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![hooks.clone()]).await;
    api.expect(Method::GET, &secret_path("team-a", "hooks"))
        .await
        .respond(200, signing_secret("team-a", "hooks"));
    let status = status_patch(&mut api, &hooks).await;
    let error = "POST https://hooks.example/baton: 503 Service Unavailable";
    assert_eq!(
        status,
        json!({
            "observedGeneration": 1,
            "conditions": [
                cond("Ready", "False", "EndpointFailing", error),
                cond("Failing", "True", "EndpointFailing",
                     &format!("{error} (7 failed attempts in a row)")),
            ],
            "lastDeliveredTime": time_str(1_699_999_000),
            "backlog": 1234,
            "delivered": 41,
            "dropped": 0,
        })
    );
    // Ready and Failing share the reason: one Warning Event.
    assert_eq!(
        event(&mut api, "team-a").await,
        ("Warning".to_owned(), "EndpointFailing".to_owned())
    );
    task.await.unwrap().unwrap();
    api.assert_idle();
    hooks["status"] = status;

    // The endpoint recovers: the refresh (no sync) writes it from the record.
    queue.update(|s| {
        let record = s.sink_states.get_mut("team-a/hooks").unwrap();
        record.failing = false;
        record.delivered = 1275;
        record.last_delivered_ms = 1_700_000_010_000;
        record.consecutive_failures = 0;
        s.sink_backlogs.insert("team-a/hooks".into(), 0);
    });
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::refresh_sink_statuses(&c).await });
    api.expect(Method::GET, SINKS).await.respond(
        200,
        list("EventSink", "baton.dev/v1alpha1", vec![hooks.clone()]),
    );
    let status = status_patch(&mut api, &hooks).await;
    assert_eq!(
        status["conditions"],
        json!([
            cond(
                "Ready",
                "True",
                "Delivering",
                "events are sent to the endpoint"
            ),
            cond(
                "Failing",
                "False",
                "Delivering",
                "the endpoint accepted the last event"
            ),
        ])
    );
    assert_eq!(
        (
            &status["backlog"],
            &status["delivered"],
            &status["lastDeliveredTime"]
        ),
        (&json!(0), &json!(1275), &time_str(1_700_000_010))
    );
    assert_eq!(
        event(&mut api, "team-a").await,
        ("Normal".to_owned(), "Delivering".to_owned())
    );
    task.await.unwrap().unwrap();
    api.assert_idle();
    hooks["status"] = status;

    // Unchanged record: listed, not patched.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::refresh_sink_statuses(&c).await });
    api.expect(Method::GET, SINKS).await.respond(
        200,
        list("EventSink", "baton.dev/v1alpha1", vec![hooks.clone()]),
    );
    task.await.unwrap().unwrap();
    api.assert_idle();

    // A sink changed since the last sync (new generation), or one it never saw, is left to the
    // next sync even though the record changed.
    queue.update(|s| {
        s.sink_backlogs.insert("team-a/hooks".into(), 9);
    });
    let mut edited = hooks.clone();
    edited["metadata"]["generation"] = json!(2);
    let task = tokio::spawn(async move { snapshot::refresh_sink_statuses(&ctx).await });
    api.expect(Method::GET, SINKS).await.respond(
        200,
        list(
            "EventSink",
            "baton.dev/v1alpha1",
            vec![edited, sink("team-c", "new")],
        ),
    );
    task.await.unwrap().unwrap();
    api.assert_idle();
    assert!(
        metrics
            .render()
            .contains("baton_operator_snapshot_generation 1")
    );
}

#[tokio::test]
async fn the_consumers_of_removed_sinks_are_removed_after_the_snapshot_is_stored() {
    let (ctx, mut api, queue, _) = context();
    // Consumers exist for a sink deleted while the operator was away, and for the live one.
    queue.update(|s| {
        s.sink_backlogs.insert("team-a/hooks".into(), 0);
        s.sink_backlogs.insert("team-b/gone".into(), 5);
    });
    let mut hooks = sink("team-a", "hooks");
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![hooks.clone()]).await;
    api.expect(Method::GET, &secret_path("team-a", "hooks"))
        .await
        .respond(200, signing_secret("team-a", "hooks"));
    let status = status_patch(&mut api, &hooks).await;
    assert_eq!(status["backlog"], 0);
    event(&mut api, "team-a").await;
    task.await.unwrap().unwrap();
    let state = queue.state();
    assert_eq!(state.sink_keeps, [vec!["team-a/hooks".to_owned()]]);
    assert_eq!(state.removed_sinks, ["team-b/gone"]);
    hooks["status"] = status;

    // Unchanged: nothing to remove, not even asked.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![hooks]).await;
    api.expect(Method::GET, &secret_path("team-a", "hooks"))
        .await
        .respond(200, signing_secret("team-a", "hooks"));
    assert!(!task.await.unwrap().unwrap().publish);
    assert_eq!(queue.state().sink_keeps.len(), 1);

    // The sink is deleted: a new snapshot without it, then its consumer goes.
    let task = tokio::spawn(async move { snapshot::sync(&ctx).await });
    lists(&mut api, vec![pool("default")], vec![]).await;
    assert!(task.await.unwrap().unwrap().publish);
    api.assert_idle();
    let state = queue.state();
    assert_eq!(state.snapshots.len(), 2);
    assert!(state.snapshots[1].sinks.is_empty());
    assert_eq!(state.sink_keeps.last().unwrap(), &Vec::<String>::new());
    assert_eq!(state.removed_sinks, ["team-b/gone", "team-a/hooks"]);
    assert!(state.sink_backlogs.is_empty());
}

#[tokio::test]
async fn a_cluster_without_the_event_sink_crd_still_gets_its_snapshot() {
    let (ctx, mut api, queue, _) = context();
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    api.expect(Method::GET, POOLS).await.respond(
        200,
        list("SendingPool", "baton.dev/v1alpha1", vec![pool("default")]),
    );
    api.expect(Method::GET, DOMAINS)
        .await
        .respond(200, list("RelayDomain", "baton.dev/v1alpha1", vec![]));
    api.expect(Method::GET, SINKS).await.not_found();
    assert!(task.await.unwrap().unwrap().publish);
    api.assert_idle();
    let state = queue.state();
    assert_eq!(state.snapshots[0].pools.len(), 1);
    assert!(state.snapshots[0].sinks.is_empty());
    // No sink was compiled: the refresh has nothing to do and asks nothing.
    snapshot::refresh_sink_statuses(&ctx).await.unwrap();
    api.assert_idle();
}
