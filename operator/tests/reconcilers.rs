//! The SendingPool and RelayDomain reconcilers and leader election against a scripted fake API
//! server: the exact requests (method, path, field manager, bodies) and status patches.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine as _;
use baton_operator::crd::{RelayDomain, SendingPool};
use baton_operator::leader::LeaderElector;
use baton_operator::{domain, pool};
use common::{context, now_str};
use http::Method;
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const DEPLOY: &str = "/apis/apps/v1/namespaces/baton-system/deployments/baton-worker-bulk";
const PDB: &str = "/apis/policy/v1/namespaces/baton-system/poddisruptionbudgets/baton-worker-bulk";
const HPA: &str =
    "/apis/autoscaling/v2/namespaces/baton-system/horizontalpodautoscalers/baton-worker-bulk";
const POOL_STATUS: &str = "/apis/baton.dev/v1alpha1/sendingpools/bulk/status";

fn pool(spec: Value, status: Option<Value>) -> Arc<SendingPool> {
    let mut v = json!({
        "apiVersion": "baton.dev/v1alpha1", "kind": "SendingPool",
        "metadata": {"name": "bulk", "uid": "pool-uid", "generation": 3},
        "spec": spec,
    });
    if let Some(s) = status {
        v["status"] = s;
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

#[tokio::test]
async fn sending_pool_applies_workload_provisions_lanes_and_writes_status() {
    let (ctx, mut api, queue, metrics) = context();
    queue.update(|s| s.depth = 7);
    let p = pool(
        json!({"workers": {"replicas": 2}, "retry": {"schedule": ["1m", "1h"]}}),
        None,
    );
    let p0 = p.clone();
    let task = tokio::spawn(pool::reconcile(p, ctx));

    let deploy = api
        .expect_apply(DEPLOY, json!({"status": {"readyReplicas": 2}}))
        .await;
    assert_eq!(deploy["kind"], "Deployment");
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(deploy["metadata"]["ownerReferences"][0]["uid"], "pool-uid");
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example/baton:1.0"
    );
    let pdb = api.expect_apply(PDB, json!({})).await;
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    // No autoscaling: look for a stale HPA (metadata only) and find none.
    api.expect(Method::GET, HPA).await.not_found();

    let status = api.expect(Method::PATCH, POOL_STATUS).await;
    status.assert_ssa();
    let t = now_str();
    assert_eq!(
        status.body,
        json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "SendingPool",
            "status": {
                "readyWorkers": 2, "queueDepth": 7, "observedGeneration": 3,
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Ready",
                     "message": "the pool delivers mail", "observedGeneration": 3,
                     "lastTransitionTime": t},
                    {"type": "QueueReady", "status": "True", "reason": "LanesProvisioned",
                     "message": "stream and lane consumers provisioned",
                     "observedGeneration": 3, "lastTransitionTime": t},
                    {"type": "WorkersReady", "status": "True", "reason": "WorkersAvailable",
                     "message": "2 worker(s) ready", "observedGeneration": 3,
                     "lastTransitionTime": t},
                    {"type": "Valid", "status": "True", "reason": "Compiled",
                     "message": "the pool compiles into the config snapshot",
                     "observedGeneration": 3, "lastTransitionTime": t},
                    {"type": "CredentialsProtected", "status": "True", "reason": "VerifiedTlsOnly",
                     "message": "smarthost credentials are only sent after the certificate verified",
                     "observedGeneration": 3, "lastTransitionTime": t},
                ]
            }
        })
    );
    let mut reply = serde_json::to_value(&*p0).unwrap();
    reply["status"] = status.body["status"].clone();
    status.respond(200, reply);
    // Cluster-scoped objects get their Events in `default`.
    let event = api.expect_event("default").await;
    assert_eq!(event["reason"], "Ready");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["kind"], "SendingPool");

    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(pool::RESYNC));
    assert_eq!(queue.state().ensured, vec![("bulk".to_owned(), 2)]);
    assert!(
        metrics
            .render()
            .contains("baton_operator_reconciles_total{kind=\"SendingPool\",result=\"ok\"} 1")
    );
}

#[tokio::test]
async fn unchanged_pool_status_is_not_patched_and_autoscaling_off_deletes_our_hpa() {
    let (ctx, mut api, queue, _) = context();
    queue.update(|s| s.depth = 0);
    let t = now_str();
    let cond = |type_: &str, reason: &str, message: &str| {
        json!({"type": type_, "status": "True", "reason": reason, "message": message,
               "observedGeneration": 3, "lastTransitionTime": t})
    };
    let status = json!({
        "readyWorkers": 1, "queueDepth": 0, "observedGeneration": 3,
        "conditions": [
            cond("Ready", "Ready", "the pool delivers mail"),
            cond("QueueReady", "LanesProvisioned", "stream and lane consumers provisioned"),
            cond("WorkersReady", "WorkersAvailable", "1 worker(s) ready"),
            cond("Valid", "Compiled", "the pool compiles into the config snapshot"),
            cond(
                "CredentialsProtected",
                "VerifiedTlsOnly",
                "smarthost credentials are only sent after the certificate verified"
            ),
        ]
    });
    let p = pool(json!({}), Some(status));
    let task = tokio::spawn(pool::reconcile(p, ctx));
    api.expect_apply(DEPLOY, json!({"status": {"readyReplicas": 1}}))
        .await;
    api.expect_apply(PDB, json!({})).await;
    let hpa = api.expect(Method::GET, HPA).await;
    hpa.respond(
        200,
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
               "metadata": {"name": "baton-worker-bulk", "namespace": "baton-system",
                            "labels": {"app.kubernetes.io/managed-by": "baton-operator"}}}),
    );
    let del = api.expect(Method::DELETE, HPA).await;
    del.respond(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
    );
    task.await.unwrap().unwrap();
    api.assert_idle();
}

#[tokio::test]
async fn jetstream_failure_shows_in_status_and_fails_the_reconcile() {
    let (ctx, mut api, queue, metrics) = context();
    queue.update(|s| s.fail = Some("JetStream not enabled".into()));
    let p = pool(
        json!({"workers": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}}),
        None,
    );
    let p0 = p.clone();
    let task = tokio::spawn(pool::reconcile(p, ctx));
    let deploy = api.expect_apply(DEPLOY, json!({})).await;
    assert!(
        deploy["spec"].get("replicas").is_none(),
        "the HPA owns replicas"
    );
    api.expect_apply(PDB, json!({})).await;
    let hpa = api.expect_apply(HPA, json!({})).await;
    assert_eq!(hpa["spec"]["maxReplicas"], 4);
    let status = api.expect(Method::PATCH, POOL_STATUS).await;
    let conditions = status.body["status"]["conditions"].clone();
    assert_eq!(conditions[0]["status"], "False");
    assert_eq!(conditions[0]["reason"], "ProvisioningFailed");
    assert!(
        conditions[1]["message"]
            .as_str()
            .unwrap()
            .contains("JetStream not enabled")
    );
    assert!(status.body["status"].get("queueDepth").is_none());
    let mut reply = serde_json::to_value(&*p0).unwrap();
    reply["status"] = status.body["status"].clone();
    status.respond(200, reply);
    let ready = api.expect_event("default").await;
    assert_eq!(ready["type"], "Warning");
    assert_eq!(ready["reason"], "ProvisioningFailed");
    // QueueReady=False has the same reason as Ready (not repeated); WorkersReady=False has its own.
    let workers = api.expect_event("default").await;
    assert_eq!(workers["type"], "Warning");
    assert_eq!(workers["reason"], "NoWorkerReady");
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.metric_label(), "queue_error");
    assert!(metrics.render().contains(
        "baton_operator_reconciles_total{kind=\"SendingPool\",result=\"queue_error\"} 1"
    ));
}

const UPSTREAM_SECRET: &str = "/api/v1/namespaces/baton-system/secrets/upstream";

fn upstream_secret(type_: &str) -> Value {
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    json!({"apiVersion": "v1", "kind": "Secret", "type": type_,
           "metadata": {"name": "upstream", "namespace": "baton-system"},
           "data": {"username": b64("relay"), "password": b64("hunter2-upstream")}})
}

/// Deployment, PDB and stale-HPA lookup of `bulk`, as in every reconcile without autoscaling.
async fn workload(api: &mut common::ApiServer, ready: i32) {
    api.expect_apply(DEPLOY, json!({"status": {"readyReplicas": ready}}))
        .await;
    api.expect_apply(PDB, json!({})).await;
    api.expect(Method::GET, HPA).await.not_found();
}

#[tokio::test]
async fn invalid_pool_gets_valid_false_and_one_warning_then_recovers() {
    let (ctx, mut api, queue, _) = context();
    queue.update(|s| s.depth = 0);
    let spec = json!({"delivery": {"mode": "Smarthost", "smarthosts": [
        {"host": "smtp.upstream.example", "credentialsSecretRef": {"name": "upstream"}}]}});
    let p = pool(spec, None);
    let task = tokio::spawn(pool::reconcile(p.clone(), ctx.clone()));

    // The credentials Secret is read (as the snapshot sync does) and has the wrong type.
    api.expect(Method::GET, UPSTREAM_SECRET)
        .await
        .respond(200, upstream_secret("Opaque"));
    workload(&mut api, 1).await;
    let status = api.expect(Method::PATCH, POOL_STATUS).await;
    status.assert_ssa();
    let t = now_str();
    let why = "left out of the config snapshot: spec.delivery.smarthosts[0].credentialsSecretRef: \
               Secret baton-system/upstream has type \"Opaque\", expected \"kubernetes.io/basic-auth\"";
    assert_eq!(
        status.body,
        json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "SendingPool",
            "status": {
                "readyWorkers": 1, "queueDepth": 0, "observedGeneration": 3,
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "Invalid", "message": why,
                     "observedGeneration": 3, "lastTransitionTime": t},
                    {"type": "QueueReady", "status": "True", "reason": "LanesProvisioned",
                     "message": "stream and lane consumers provisioned",
                     "observedGeneration": 3, "lastTransitionTime": t},
                    {"type": "WorkersReady", "status": "True", "reason": "WorkersAvailable",
                     "message": "1 worker(s) ready", "observedGeneration": 3,
                     "lastTransitionTime": t},
                    {"type": "Valid", "status": "False", "reason": "Invalid", "message": why,
                     "observedGeneration": 3, "lastTransitionTime": t},
                    {"type": "CredentialsProtected", "status": "True", "reason": "VerifiedTlsOnly",
                     "message": "smarthost credentials are only sent after the certificate verified",
                     "observedGeneration": 3, "lastTransitionTime": t},
                ]
            }
        })
    );
    assert!(
        !status.body.to_string().contains("hunter2"),
        "no secret material"
    );
    let mut reply = serde_json::to_value(&*p).unwrap();
    reply["status"] = status.body["status"].clone();
    status.respond(200, reply.clone());
    // One Warning Event: `Valid` repeats `Ready`'s reason.
    let event = api.expect_event("default").await;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("Invalid"))
    );
    assert_eq!(event["note"], format!("Ready=False: {why}"));
    assert_eq!(event["regarding"]["name"], "bulk");
    assert!(!event.to_string().contains("hunter2"), "no secret material");
    // Still a successful reconcile: the workload and lanes stay, mail already queued is kept.
    assert_eq!(task.await.unwrap().unwrap(), Action::requeue(pool::RESYNC));
    api.assert_idle();
    assert_eq!(queue.state().ensured, vec![("bulk".to_owned(), 5)]);

    // Fixed: the Secret now has the right type. Valid and Ready flip, one Normal Event.
    let fixed: Arc<SendingPool> = Arc::new(serde_json::from_value(reply).unwrap());
    let task = tokio::spawn(pool::reconcile(fixed, ctx));
    api.expect(Method::GET, UPSTREAM_SECRET)
        .await
        .respond(200, upstream_secret("kubernetes.io/basic-auth"));
    workload(&mut api, 1).await;
    let status = api.expect(Method::PATCH, POOL_STATUS).await;
    let conditions = &status.body["status"]["conditions"];
    assert_eq!(
        (
            conditions[0]["status"].as_str(),
            conditions[0]["reason"].as_str()
        ),
        (Some("True"), Some("Ready"))
    );
    assert_eq!(
        conditions[3],
        json!({"type": "Valid", "status": "True", "reason": "Compiled",
               "message": "the pool compiles into the config snapshot",
               "observedGeneration": 3, "lastTransitionTime": t})
    );
    assert!(
        !status.body.to_string().contains("hunter2"),
        "no secret material"
    );
    let mut reply = serde_json::to_value(&*p).unwrap();
    reply["status"] = status.body["status"].clone();
    status.respond(200, reply);
    let event = api.expect_event("default").await;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Normal"), Some("Ready"))
    );
    task.await.unwrap().unwrap();
    api.assert_idle();
}

fn relay_domain(dkim: Value) -> Arc<RelayDomain> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "RelayDomain",
            "metadata": {"name": "example-com", "namespace": "team-a", "uid": "rd-uid",
                         "generation": 1},
            "spec": {"domain": "example.com", "pool": "bulk", "dkim": dkim},
        }))
        .unwrap(),
    )
}

#[tokio::test]
async fn absent_dkim_key_secret_is_generated_owned_and_announced_without_the_key() {
    let (ctx, mut api, _, _) = context();
    let rd = relay_domain(json!({"selector": "s1", "algorithm": "ed25519-sha256",
                                "keySecretRef": {"name": "example-com-dkim"}}));
    let task = tokio::spawn(domain::reconcile(rd, ctx));
    api.expect(
        Method::GET,
        "/api/v1/namespaces/team-a/secrets/example-com-dkim",
    )
    .await
    .not_found();
    let create = api
        .expect(Method::POST, "/api/v1/namespaces/team-a/secrets")
        .await;
    assert_eq!(
        create.query.get("fieldManager").map(String::as_str),
        Some("baton-operator")
    );
    let secret = create.body.clone();
    assert_eq!(secret["metadata"]["name"], "example-com-dkim");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(
        secret["metadata"]["ownerReferences"],
        json!([{"apiVersion": "baton.dev/v1alpha1", "kind": "RelayDomain",
                "name": "example-com", "uid": "rd-uid", "controller": true}])
    );
    assert_eq!(
        secret["metadata"]["labels"]["baton.dev/relay-domain"],
        "example-com"
    );
    assert_eq!(
        secret["metadata"]["annotations"]["baton.dev/dkim-algorithm"],
        "ed25519-sha256"
    );
    let pem = base64::engine::general_purpose::STANDARD
        .decode(secret["data"]["private.pem"].as_str().unwrap())
        .unwrap();
    let pem = String::from_utf8(pem).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
    create.respond(201, secret.clone());

    let event = api.expect_event("team-a").await;
    assert_eq!(event["reason"], "DkimKeyGenerated");
    assert_eq!(event["regarding"]["name"], "example-com");
    let event_text = event.to_string();
    assert!(!event_text.contains("PRIVATE KEY"));
    let key_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!event_text.contains(&key_body));
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
}

#[tokio::test]
async fn existing_key_secrets_are_left_alone_and_a_concurrent_create_is_fine() {
    let (ctx, mut api, _, _) = context();
    let rd = relay_domain(json!({"selector": "s1", "algorithm": "ed25519-sha256",
        "keySecretRef": {"name": "k1"},
        "additionalKeys": [{"selector": "s2", "algorithm": "ed25519-sha256",
                            "keySecretRef": {"name": "k2"}}]}));
    let task = tokio::spawn(domain::reconcile(rd, ctx));
    api.expect(Method::GET, "/api/v1/namespaces/team-a/secrets/k1")
        .await
        .respond(
            200,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                   "metadata": {"name": "k1", "namespace": "team-a"}}),
        );
    api.expect(Method::GET, "/api/v1/namespaces/team-a/secrets/k2")
        .await
        .not_found();
    let create = api
        .expect(Method::POST, "/api/v1/namespaces/team-a/secrets")
        .await;
    assert_eq!(create.body["metadata"]["name"], "k2");
    create.respond(
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "AlreadyExists", "code": 409, "message": "exists"}),
    );
    task.await.unwrap().unwrap();
    api.assert_idle();
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/baton-system/leases/baton-operator";

#[tokio::test]
async fn leader_election_creates_renews_and_yields_the_lease() {
    let (ctx, mut api, _, _) = context();
    let elector = Arc::new(LeaderElector::new(
        ctx.client.clone(),
        "baton-system",
        "baton-operator",
        "operator-0",
    ));

    // No lease: create it.
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_once().await });
    api.expect(Method::GET, LEASE).await.not_found();
    let create = api
        .expect(
            Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/baton-system/leases",
        )
        .await;
    assert_eq!(create.body["spec"]["holderIdentity"], "operator-0");
    assert_eq!(create.body["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(create.body["spec"]["leaseTransitions"], 0);
    let mut lease = create.body.clone();
    lease["metadata"]["resourceVersion"] = json!("10");
    create.respond(201, lease.clone());
    assert!(task.await.unwrap().unwrap());

    // Held by someone else and fresh: standby, no write.
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_once().await });
    let mut theirs = lease.clone();
    theirs["spec"]["holderIdentity"] = json!("operator-1");
    theirs["spec"]["renewTime"] = json!("2999-01-01T00:00:00.000000Z");
    api.expect(Method::GET, LEASE).await.respond(200, theirs);
    assert!(!task.await.unwrap().unwrap());
    api.assert_idle();

    // Held by someone else but expired: take over with the resourceVersion; lose the race (409).
    let e = elector.clone();
    let task = tokio::spawn(async move { e.try_once().await });
    let mut stale = lease.clone();
    stale["spec"]["holderIdentity"] = json!("operator-1");
    stale["spec"]["renewTime"] = json!("2000-01-01T00:00:00.000000Z");
    api.expect(Method::GET, LEASE).await.respond(200, stale);
    let put = api.expect(Method::PUT, LEASE).await;
    assert_eq!(put.body["metadata"]["resourceVersion"], "10");
    assert_eq!(put.body["spec"]["holderIdentity"], "operator-0");
    assert_eq!(put.body["spec"]["leaseTransitions"], 1);
    put.respond(
        409,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "Conflict", "code": 409, "message": "conflict"}),
    );
    assert!(!task.await.unwrap().unwrap());
}
