//! The snapshot sync against a scripted fake API server: conflict (older claim wins), missing
//! pool, DKIM key rotation (new snapshot), deletion, no write when nothing changed, invalid
//! objects (pool left out, domain never ready) never blocking the rest, and a failed status write that does not
//! hold up the other domains.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine as _;
use baton_operator::crd::DkimAlgorithm;
use baton_operator::dkim::generate_pem;
use baton_operator::snapshot;
use common::{ApiServer, context, context_with_dns, list, now_str};
use http::Method;
use serde_json::{Value, json};

const POOLS: &str = "/apis/baton.dev/v1alpha1/sendingpools";
const DOMAINS: &str = "/apis/baton.dev/v1alpha1/relaydomains";
const SINKS: &str = "/apis/baton.dev/v1alpha1/eventsinks";

fn pool(name: &str) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "SendingPool",
           "metadata": {"name": name, "uid": format!("{name}-uid"), "generation": 1},
           "spec": {}})
}

fn domain(ns: &str, name: &str, created: &str, spec: Value) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "RelayDomain",
           "metadata": {"name": name, "namespace": ns, "uid": format!("{ns}-{name}"),
                        "generation": 2, "creationTimestamp": created},
           "spec": spec})
}

fn status_path(ns: &str, name: &str) -> String {
    format!("/apis/baton.dev/v1alpha1/namespaces/{ns}/relaydomains/{name}/status")
}

/// `(domain, namespace/name, ready)` of every RelayDomain in a published snapshot, in order.
fn domain_entries(config: &baton_proto::v1::RelayConfig) -> Vec<(&str, &str, bool)> {
    config
        .domains
        .iter()
        .map(|d| (d.domain.as_str(), d.name.as_str(), d.ready))
        .collect()
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "observedGeneration": 2, "lastTransitionTime": now_str()})
}

/// Answer the three lists (no EventSink: see `event_sinks.rs`).
async fn lists(api: &mut ApiServer, pools: Vec<Value>, domains: Vec<Value>) {
    api.expect(Method::GET, POOLS)
        .await
        .respond(200, list("SendingPool", "baton.dev/v1alpha1", pools));
    api.expect(Method::GET, DOMAINS)
        .await
        .respond(200, list("RelayDomain", "baton.dev/v1alpha1", domains));
    api.expect(Method::GET, SINKS)
        .await
        .respond(200, list("EventSink", "baton.dev/v1alpha1", vec![]));
}

/// Expect a forced SSA status patch of `object`; answer with the object carrying that status.
async fn status_patch(api: &mut ApiServer, object: &Value) -> Value {
    let ns = object["metadata"]["namespace"].as_str().unwrap();
    let name = object["metadata"]["name"].as_str().unwrap();
    let call = api.expect(Method::PATCH, &status_path(ns, name)).await;
    call.assert_ssa();
    assert_eq!(call.body["kind"], "RelayDomain");
    let status = call.body["status"].clone();
    let mut reply = object.clone();
    reply["status"] = status.clone();
    call.respond(200, reply);
    status
}

#[tokio::test]
async fn conflict_and_missing_pool_reach_status_and_only_the_winner_the_snapshot() {
    let (ctx, mut api, queue, metrics) = context();
    let spec = |d: &str, p: &str| json!({"domain": d, "pool": p});
    let winner = domain(
        "team-a",
        "example",
        "2024-01-01T00:00:00Z",
        spec("example.com", "default"),
    );
    let loser = domain(
        "team-b",
        "example",
        "2024-06-01T00:00:00Z",
        spec("example.com", "default"),
    );
    let orphan = domain(
        "team-c",
        "other",
        "2024-01-01T00:00:00Z",
        spec("other.example", "missing"),
    );
    let task = tokio::spawn(async move { snapshot::sync(&ctx).await });
    lists(
        &mut api,
        vec![pool("default")],
        vec![winner.clone(), loser.clone(), orphan.clone()],
    )
    .await;

    let status = status_patch(&mut api, &winner).await;
    assert_eq!(
        status["conditions"],
        json!([
            cond(
                "Ready",
                "True",
                "Compiled",
                "relaying through SendingPool \"default\""
            ),
            cond(
                "PoolFound",
                "True",
                "PoolFound",
                "SendingPool \"default\" exists"
            ),
            cond(
                "DkimKeyReady",
                "True",
                "NotConfigured",
                "DKIM not configured; mail is relayed unsigned"
            ),
            cond(
                "Conflict",
                "False",
                "NoConflict",
                "no older RelayDomain claims example.com"
            ),
        ])
    );
    assert_eq!(status["observedGeneration"], 2);
    let names: Vec<&str> = status["dnsRecords"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"_dmarc.example.com"), "{names:?}");
    let ready = api.expect_event("team-a").await;
    assert_eq!(
        (ready["type"].as_str(), ready["reason"].as_str()),
        (Some("Normal"), Some("Compiled"))
    );

    let status = status_patch(&mut api, &loser).await;
    let claimed = "domain example.com is claimed by older RelayDomain team-a/example";
    assert_eq!(
        status["conditions"][0],
        cond("Ready", "False", "Conflict", claimed)
    );
    assert_eq!(
        status["conditions"][3],
        cond("Conflict", "True", "DomainClaimed", claimed)
    );
    assert!(
        status.get("dnsRecords").is_none(),
        "the loser publishes no records"
    );
    for reason in ["Conflict", "DomainClaimed"] {
        let e = api.expect_event("team-b").await;
        assert_eq!(
            (e["type"].as_str(), e["reason"].as_str()),
            (Some("Warning"), Some(reason))
        );
    }

    let status = status_patch(&mut api, &orphan).await;
    let missing = "SendingPool \"missing\" not found";
    assert_eq!(
        status["conditions"][0],
        cond("Ready", "False", "PoolNotFound", missing)
    );
    assert_eq!(
        status["conditions"][1],
        cond("PoolFound", "False", "PoolNotFound", missing)
    );
    let e = api.expect_event("team-c").await;
    assert_eq!(e["reason"], "PoolNotFound");

    let plan = task.await.unwrap().unwrap();
    assert!(plan.publish);
    let snaps = queue.state().snapshots;
    assert_eq!(snaps.len(), 1);
    let config = &snaps[0];
    assert_eq!(config.generation, 1);
    assert_eq!(
        domain_entries(config),
        [
            ("example.com", "team-a/example", true),
            ("other.example", "team-c/other", false)
        ]
    );
    assert!(
        metrics
            .render()
            .contains("baton_operator_snapshot_generation 1")
    );
}

/// The decoded `data[key]` of a Secret body.
fn secret_data(secret: &Value, key: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap()
}

fn key_secret(pem: &str, version: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "dkim", "namespace": "team-a", "uid": "dkim-uid",
                        "resourceVersion": version},
           "type": "Opaque",
           "data": {"private.pem": base64::engine::general_purpose::STANDARD.encode(pem)}})
}

async fn sync_with_key(api: &mut ApiServer, rd: &Value, pem: &str, version: &str) {
    lists(api, vec![pool("default")], vec![rd.clone()]).await;
    api.expect(Method::GET, "/api/v1/namespaces/team-a/secrets/dkim")
        .await
        .respond(200, key_secret(pem, version));
}

#[tokio::test]
async fn rotated_key_secret_gives_a_new_snapshot_and_unchanged_input_writes_nothing() {
    let (ctx, mut api, queue, _) = context();
    let mut rd = domain(
        "team-a",
        "example",
        "2024-01-01T00:00:00Z",
        json!({"domain": "example.com", "pool": "default",
               "dkim": {"selector": "s1", "algorithm": "ed25519-sha256",
                        "keySecretRef": {"name": "dkim"}}}),
    );
    let key_a = generate_pem(DkimAlgorithm::Ed25519Sha256).unwrap();
    let key_b = generate_pem(DkimAlgorithm::Ed25519Sha256).unwrap();

    // First sync: key A.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    sync_with_key(&mut api, &rd, &key_a, "1").await;
    let status_a = status_patch(&mut api, &rd).await;
    assert_eq!(
        status_a["conditions"][2],
        cond("DkimKeyReady", "True", "KeyLoaded", "DKIM keys loaded")
    );
    api.expect_event("team-a").await; // Ready
    task.await.unwrap().unwrap();
    rd["status"] = status_a.clone();

    // Rotation: key B. New snapshot, new DKIM record, no Event (conditions unchanged).
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    sync_with_key(&mut api, &rd, &key_b, "2").await;
    let status_b = status_patch(&mut api, &rd).await;
    assert_eq!(status_b["conditions"], status_a["conditions"]);
    assert_ne!(
        status_b["dnsRecords"][0]["value"],
        status_a["dnsRecords"][0]["value"]
    );
    assert_eq!(
        status_b["dnsRecords"][0]["name"],
        "s1._domainkey.example.com"
    );
    task.await.unwrap().unwrap();
    rd["status"] = status_b;

    // Nothing changed: no snapshot, no patch, no Event.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    sync_with_key(&mut api, &rd, &key_b, "2").await;
    let plan = task.await.unwrap().unwrap();
    assert!(!plan.publish);
    assert_eq!(plan.compiled.config.generation, 2);
    api.assert_idle();

    let snaps = queue.state().snapshots;
    // Stored sealed; ingress opens them with the keyring.
    for s in &snaps {
        assert!(s.domains[0].dkim_keys[0].private_key_pem.is_empty());
        assert!(s.domains[0].dkim_keys[0].sealed_private_key.is_some());
    }
    let snaps: Vec<_> = snaps.iter().map(common::opened).collect();
    let keys: Vec<(u64, &str)> = snaps
        .iter()
        .map(|s| {
            (
                s.generation,
                s.domains[0].dkim_keys[0].private_key_pem.as_str(),
            )
        })
        .collect();
    assert_eq!(keys, [(1, key_a.as_str()), (2, key_b.as_str())]);
    assert!(ctx.references_secret("team-a", "dkim"));
    assert!(!ctx.references_secret("team-a", "other"));
}

#[tokio::test]
async fn the_keyring_secret_is_created_once_and_a_new_key_reseals() {
    const KEYRING: &str = "/api/v1/namespaces/baton-system/secrets/baton-keyring";
    let mut settings = common::settings();
    settings.keyring = baton_seal::KeySource::default();
    settings.keyring_secret = Some("baton-keyring".into());
    let (ctx, mut api, queue, _) = common::context_with(settings, None);
    let mut rd = domain(
        "team-a",
        "example",
        "2024-01-01T00:00:00Z",
        json!({"domain": "example.com", "pool": "default",
               "dkim": {"selector": "s1", "algorithm": "ed25519-sha256",
                        "keySecretRef": {"name": "dkim"}}}),
    );
    let pem = generate_pem(DkimAlgorithm::Ed25519Sha256).unwrap();

    // First sync: no keyring Secret yet; the operator creates one with key 1 and seals with it.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![rd.clone()]).await;
    api.expect(Method::GET, KEYRING).await.not_found();
    api.expect(Method::GET, "/api/v1/namespaces/team-a/secrets/dkim")
        .await
        .respond(200, key_secret(&pem, "1"));
    let create = api
        .expect(Method::POST, "/api/v1/namespaces/baton-system/secrets")
        .await;
    let created = create.body.clone();
    assert_eq!(created["metadata"]["name"], "baton-keyring");
    assert_eq!(
        created["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "baton-operator"
    );
    let keys: Vec<&String> = created["data"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["key-1"]);
    create.respond(201, created.clone());
    rd["status"] = status_patch(&mut api, &rd).await;
    api.expect_event("team-a").await;
    task.await.unwrap().unwrap();
    assert!(ctx.references_secret("baton-system", "baton-keyring"));

    let key_1 = secret_data(&created, "key-1");
    let first = queue.state().snapshots[0].clone();
    assert_eq!(baton_seal::sealed_key_ids(&first), [1]);
    let ring_1 = baton_seal::Keyring::from_files("test", [("key-1", key_1.as_slice())]).unwrap();
    let mut opened = first.clone();
    baton_seal::unseal_config(&mut opened, Some(&ring_1)).unwrap();
    assert_eq!(opened.domains[0].dkim_keys[0].private_key_pem, pem);

    // Key 2 added to the Secret: the next sync re-seals everything with it (new generation).
    let key_2 = baton_seal::generate_key_text().unwrap();
    let mut rotated = created.clone();
    rotated["data"]["key-2"] = json!(base64::engine::general_purpose::STANDARD.encode(&key_2));
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![rd.clone()]).await;
    api.expect(Method::GET, KEYRING).await.respond(200, rotated);
    api.expect(Method::GET, "/api/v1/namespaces/team-a/secrets/dkim")
        .await
        .respond(200, key_secret(&pem, "1"));
    let plan = task.await.unwrap().unwrap();
    api.assert_idle();
    assert!(plan.publish);
    assert_eq!(plan.compiled.config.generation, 2);
    assert_eq!(baton_seal::sealed_key_ids(&plan.compiled.config), [2]);
    let ring_2 = baton_seal::Keyring::from_files("test", [("key-2", key_2.as_bytes())]).unwrap();
    let mut opened = plan.compiled.config.clone();
    baton_seal::unseal_config(&mut opened, Some(&ring_2)).unwrap();
    assert_eq!(opened.domains[0].dkim_keys[0].private_key_pem, pem);
}

#[tokio::test]
async fn nats_users_follow_the_pools_and_are_written_only_on_change() {
    const AUTH: &str = "/api/v1/namespaces/baton-system/secrets/baton-nats-auth";
    let mut settings = common::settings();
    settings.nats_auth_secret = Some("baton-nats-auth".into());
    let (ctx, mut api, _, _) = common::context_with(settings, None);
    let mut rd = domain(
        "team-a",
        "example",
        "2024-01-01T00:00:00Z",
        json!({"domain": "example.com", "pool": "default"}),
    );

    // First sync: the Secret is created with a user per role, the pool's worker included.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![rd.clone()]).await;
    api.expect(Method::GET, AUTH).await.not_found();
    let create = api
        .expect(Method::POST, "/api/v1/namespaces/baton-system/secrets")
        .await;
    let created = create.body.clone();
    create.respond(201, created.clone());
    rd["status"] = status_patch(&mut api, &rd).await;
    api.expect_event("team-a").await;
    task.await.unwrap().unwrap();
    let keys: Vec<&String> = created["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "admin",
            "auth.conf",
            "bcrypt.json",
            "ingress",
            "webhooks",
            "worker-default"
        ]
    );
    let field = |v: &Value, k: &str| String::from_utf8(secret_data(v, k)).unwrap();
    let conf = field(&created, "auth.conf");
    for user in [
        "baton-admin",
        "baton-ingress",
        "baton-webhooks",
        "baton-worker-default",
    ] {
        assert!(conf.contains(&format!("user: \"{user}\"")), "{conf}");
    }
    assert!(
        !conf.contains(&field(&created, "worker-default")),
        "clear password in auth.conf"
    );

    // Nothing changed: read, not written.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![rd.clone()]).await;
    let mut stored = created.clone();
    stored["metadata"]["resourceVersion"] = json!("7");
    api.expect(Method::GET, AUTH)
        .await
        .respond(200, stored.clone());
    task.await.unwrap().unwrap();
    api.assert_idle();

    // A second pool: its worker user is added, the others keep their passwords.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(
        &mut api,
        vec![pool("default"), pool("bulk")],
        vec![rd.clone()],
    )
    .await;
    api.expect(Method::GET, AUTH).await.respond(200, stored);
    let replace = api.expect(Method::PUT, AUTH).await;
    let replaced = replace.body.clone();
    replace.respond(200, replaced.clone());
    task.await.unwrap().unwrap();
    assert_eq!(
        replaced["metadata"]["resourceVersion"], "7",
        "optimistic concurrency"
    );
    assert!(field(&replaced, "auth.conf").contains("baton-worker-bulk"));
    assert_eq!(field(&replaced, "admin"), field(&created, "admin"));
    assert_eq!(
        field(&replaced, "worker-default"),
        field(&created, "worker-default")
    );
}

#[tokio::test]
async fn deleted_relay_domain_leaves_the_snapshot() {
    let (ctx, mut api, queue, _) = context();
    let rd = domain(
        "team-a",
        "example",
        "2024-01-01T00:00:00Z",
        json!({"domain": "example.com", "pool": "default"}),
    );
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![rd.clone()]).await;
    status_patch(&mut api, &rd).await;
    api.expect_event("team-a").await;
    task.await.unwrap().unwrap();

    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![pool("default")], vec![]).await;
    let plan = task.await.unwrap().unwrap();
    assert!(plan.publish);
    api.assert_idle();
    let snaps = queue.state().snapshots;
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1].generation, 2);
    assert!(snaps[1].domains.is_empty());
    assert_eq!(snaps[1].pools.len(), 1);
}

/// TXT records served to the operator: `(name, values)`, changeable between syncs.
#[derive(Default)]
struct FakeTxt(parking_lot::Mutex<Vec<(String, String)>>);

impl baton_config::verification::TxtResolver for FakeTxt {
    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, String>> + Send + 'a>>
    {
        let values = self
            .0
            .lock()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect();
        Box::pin(async move { Ok(values) })
    }
}

/// A pool requiring proof of domain ownership: the operator looks the record up at each sync;
/// the domain stays out of service (`DomainVerified=False`, the record in `dnsRecords`) until
/// the TXT value appears, then becomes ready in the next snapshot.
#[tokio::test]
async fn a_domain_needing_verification_is_ready_once_its_record_resolves() {
    let txt = std::sync::Arc::new(FakeTxt::default());
    let (ctx, mut api, queue, _) = context_with_dns(Some(txt.clone()));
    let mut verified_pool = pool("verified");
    verified_pool["spec"] = json!({"requireDomainVerification": true});
    let rd = domain(
        "team-a",
        "example",
        "2024-01-01T00:00:00Z",
        json!({"domain": "example.com", "pool": "verified"}),
    );
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![verified_pool.clone()], vec![rd.clone()]).await;
    let status = status_patch(&mut api, &rd).await;
    // Ready=False and DomainVerified=False are announced (two reasons, two Warning Events).
    let first = api.expect_event("team-a").await;
    let second = api.expect_event("team-a").await;
    assert_eq!(
        (first["type"].as_str(), second["type"].as_str()),
        (Some("Warning"), Some("Warning"))
    );
    task.await.unwrap().unwrap();
    let verified = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DomainVerified")
        .cloned()
        .unwrap();
    assert_eq!(verified["status"], "False");
    assert_eq!(verified["reason"], "TxtRecordMissing");
    let record = status["dnsRecords"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "_baton-verification.example.com")
        .cloned()
        .unwrap();
    let value = record["value"].as_str().unwrap().to_owned();
    assert_eq!(
        domain_entries(&queue.state().snapshots[0]),
        [("example.com", "team-a/example", false)]
    );

    txt.0
        .lock()
        .push(("_baton-verification.example.com".into(), value));
    let mut current = rd.clone();
    current["status"] = status;
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, vec![verified_pool], vec![current.clone()]).await;
    let status = status_patch(&mut api, &current).await;
    // Ready flips: one Normal Event (a condition turning True is announced only for Ready).
    let event = api.expect_event("team-a").await;
    assert_eq!(event["type"], "Normal");
    task.await.unwrap().unwrap();
    assert!(
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "DomainVerified" && c["status"] == "True"),
        "{status}"
    );
    let snaps = queue.state().snapshots;
    assert_eq!(
        domain_entries(&snaps[snaps.len() - 1]),
        [("example.com", "team-a/example", true)]
    );
}

fn relay_pool() -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "SendingPool",
        "metadata": {"name": "relay", "uid": "relay-uid", "generation": 1},
        "spec": {"delivery": {"mode": "Smarthost", "smarthosts": [
            {"host": "up.example", "credentialsSecretRef": {"name": "upstream"}}]}}})
}

const UPSTREAM: &str = "/api/v1/namespaces/baton-system/secrets/upstream";

#[tokio::test]
async fn invalid_objects_never_block_everything_else() {
    let (ctx, mut api, queue, metrics) = context();
    let mut good = domain(
        "team-a",
        "example",
        "2024-01-01T00:00:00Z",
        json!({"domain": "example.com", "pool": "default"}),
    );
    let mut on_bad_pool = domain(
        "team-b",
        "mail",
        "2024-01-01T00:00:00Z",
        json!({"domain": "b.example", "pool": "relay"}),
    );
    let mut typo = domain(
        "team-c",
        "typo",
        "2024-01-01T00:00:00Z",
        json!({"domain": "c.example", "pool": "default",
               "submission": {"networks": ["10.0.0.0/33"]}}),
    );
    let pools = vec![pool("default"), relay_pool()];

    // The smarthost pool's credentials Secret does not exist: that pool is invalid.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(
        &mut api,
        pools.clone(),
        vec![good.clone(), on_bad_pool.clone(), typo.clone()],
    )
    .await;
    api.expect(Method::GET, UPSTREAM).await.not_found();

    let status = status_patch(&mut api, &good).await;
    assert_eq!(
        status["conditions"][0],
        cond(
            "Ready",
            "True",
            "Compiled",
            "relaying through SendingPool \"default\""
        )
    );
    api.expect_event("team-a").await;
    good["status"] = status;

    let status = status_patch(&mut api, &on_bad_pool).await;
    let why = "SendingPool \"relay\" is invalid: spec.delivery.smarthosts[0].credentialsSecretRef: \
               Secret baton-system/upstream not found";
    assert_eq!(
        status,
        json!({
            "observedGeneration": 2,
            "conditions": [
                cond("Ready", "False", "PoolInvalid", why),
                cond("PoolFound", "False", "PoolInvalid", why),
                cond("DkimKeyReady", "True", "NotConfigured",
                     "DKIM not configured; mail is relayed unsigned"),
                cond("Conflict", "False", "NoConflict", "no older RelayDomain claims b.example"),
            ],
            "dnsRecords": [{"name": "_dmarc.b.example", "type": "TXT",
                            "value": "v=DMARC1; p=none; rua=mailto:dmarc@b.example"}],
        })
    );
    // Ready and PoolFound share the reason: one Warning Event.
    let e = api.expect_event("team-b").await;
    assert_eq!(
        (e["type"].as_str(), e["reason"].as_str()),
        (Some("Warning"), Some("PoolInvalid"))
    );
    on_bad_pool["status"] = status;

    let status = status_patch(&mut api, &typo).await;
    let invalid = "spec.submission.networks[0]: \"10.0.0.0/33\" is not a CIDR";
    assert_eq!(
        status["conditions"][0],
        cond("Ready", "False", "Invalid", invalid)
    );
    assert_eq!(
        status["conditions"][1],
        cond(
            "PoolFound",
            "True",
            "PoolFound",
            "SendingPool \"default\" exists"
        )
    );
    assert!(status.get("dnsRecords").is_none(), "{status}");
    let e = api.expect_event("team-c").await;
    assert_eq!(
        (e["type"].as_str(), e["reason"].as_str()),
        (Some("Warning"), Some("Invalid"))
    );
    typo["status"] = status;

    // Published without the invalid pool, with the invalid domain never ready (its clients get
    // 451 4.7.5 until it is fixed); the sync itself succeeded.
    let plan = task.await.unwrap().unwrap();
    assert!(plan.publish);
    api.assert_idle(); // the pool's status is its reconciler's (see reconcilers.rs)
    let snaps = queue.state().snapshots;
    assert_eq!(snaps.len(), 1);
    let pools_in: Vec<&str> = snaps[0].pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pools_in, ["default"]);
    assert_eq!(
        domain_entries(&snaps[0]),
        [
            ("b.example", "team-b/mail", false),
            ("c.example", "team-c/typo", false),
            ("example.com", "team-a/example", true)
        ]
    );
    assert!(
        metrics
            .render()
            .contains("baton_operator_snapshot_generation 1")
    );

    // The Secret appears: the pool joins the next snapshot and its domain becomes ready.
    let c = ctx.clone();
    let task = tokio::spawn(async move { snapshot::sync(&c).await });
    lists(&mut api, pools, vec![good, on_bad_pool.clone(), typo]).await;
    api.expect(Method::GET, UPSTREAM).await.respond(
        200,
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/basic-auth",
               "metadata": {"name": "upstream", "namespace": "baton-system"},
               "stringData": {"username": "relay", "password": "up-pw"}}),
    );
    let status = status_patch(&mut api, &on_bad_pool).await;
    assert_eq!(
        status["conditions"][1],
        cond(
            "PoolFound",
            "True",
            "PoolFound",
            "SendingPool \"relay\" exists"
        )
    );
    let e = api.expect_event("team-b").await;
    assert_eq!(
        (e["type"].as_str(), e["reason"].as_str()),
        (Some("Normal"), Some("Compiled"))
    );
    let plan = task.await.unwrap().unwrap();
    assert!(plan.publish);
    api.assert_idle();
    let snaps = queue.state().snapshots;
    assert_eq!(snaps[1].generation, 2);
    let pools_in: Vec<&str> = snaps[1].pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(pools_in, ["default", "relay"]);
    assert_eq!(
        domain_entries(&snaps[1]),
        [
            ("b.example", "team-b/mail", true),
            ("c.example", "team-c/typo", false),
            ("example.com", "team-a/example", true)
        ],
        "the domain on the fixed pool is ready; the invalid one still is not"
    );
}

#[tokio::test]
async fn a_rejected_status_patch_does_not_hold_up_the_other_domains() {
    let (ctx, mut api, queue, _) = context();
    let first = domain(
        "team-a",
        "gone",
        "2024-01-01T00:00:00Z",
        json!({"domain": "a.example", "pool": "default"}),
    );
    let second = domain(
        "team-b",
        "mail",
        "2024-01-01T00:00:00Z",
        json!({"domain": "b.example", "pool": "default"}),
    );
    let task = tokio::spawn(async move { snapshot::sync(&ctx).await });
    lists(&mut api, vec![pool("default")], vec![first, second.clone()]).await;
    // Deleted between the list and the patch.
    api.expect(Method::PATCH, &status_path("team-a", "gone"))
        .await
        .not_found();
    let status = status_patch(&mut api, &second).await;
    assert_eq!(status["conditions"][0]["status"], "True");
    api.expect_event("team-b").await;
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(err.metric_label(), "kube_error");
    assert_eq!(
        queue.state().snapshots.len(),
        1,
        "published before the statuses"
    );
}
