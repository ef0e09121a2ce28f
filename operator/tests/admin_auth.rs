//! The operations API's Kubernetes authentication against a scripted fake API server: a token
//! is reviewed (TokenReview), then what its user may do on `queues.baton.dev` is asked
//! (SubjectAccessReview) cluster-wide and, when nothing is allowed there, per RelayDomain
//! namespace; decisions are cached per token; an unauthenticated token is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use baton_admin::{AuthError, Authenticator, Permission};
use baton_operator::admin_auth::KubeAuth;
use common::{ApiServer, fake_api, list};
use http::Method;
use serde_json::{Value, json};

const TOKENREVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const SARS: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const DOMAINS: &str = "/apis/baton.dev/v1alpha1/relaydomains";

async fn review(api: &mut ApiServer, token: &str, user: Option<&str>) {
    let call = api.expect(Method::POST, TOKENREVIEWS).await;
    assert_eq!(call.body["spec"]["token"], token);
    let status = match user {
        Some(u) => json!({"authenticated": true,
            "user": {"username": u, "uid": "uid-1", "groups": ["team"]}}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    let mut body = call.body.clone();
    body["status"] = status;
    call.respond(201, body);
}

/// Answer one SubjectAccessReview, asserting what it asks.
async fn sar(api: &mut ApiServer, user: &str, verb: &str, namespace: Option<&str>, allowed: bool) {
    let call = api.expect(Method::POST, SARS).await;
    let spec = &call.body["spec"];
    assert_eq!(spec["user"], user);
    assert_eq!(spec["groups"], json!(["team"]));
    let attrs = &spec["resourceAttributes"];
    assert_eq!(attrs["group"], "baton.dev");
    assert_eq!(attrs["resource"], "queues");
    assert_eq!(attrs["verb"], verb, "{spec}");
    assert_eq!(
        attrs.get("namespace").cloned().unwrap_or(Value::Null),
        namespace.map(Value::from).unwrap_or(Value::Null),
        "{spec}"
    );
    let mut body = call.body.clone();
    body["status"] = json!({"allowed": allowed});
    call.respond(201, body);
}

fn domain(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "baton.dev/v1alpha1", "kind": "RelayDomain",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"domain": format!("{name}.test"), "pool": "p"}})
}

#[tokio::test]
async fn a_cluster_wide_admin_is_unscoped_and_cached() {
    let (client, mut api) = fake_api();
    let auth = std::sync::Arc::new(KubeAuth::new(client));
    let a = auth.clone();
    let call = tokio::spawn(async move { a.authenticate("tok-alice").await });
    review(&mut api, "tok-alice", Some("alice")).await;
    sar(&mut api, "alice", "get", None, true).await;
    sar(&mut api, "alice", "update", None, true).await;
    let c = call.await.unwrap().unwrap();
    assert_eq!(c.name, "alice");
    assert_eq!(c.permission, Permission::Admin);
    assert!(c.namespaces.is_empty());
    // Cached: no request this time.
    let again = auth.authenticate("tok-alice").await.unwrap();
    assert_eq!(again, c);
    api.assert_idle();
}

#[tokio::test]
async fn a_namespace_binding_scopes_the_caller_to_those_namespaces() {
    let (client, mut api) = fake_api();
    let auth = KubeAuth::new(client);
    let call = tokio::spawn(async move { auth.authenticate("tok-bob").await });
    review(&mut api, "tok-bob", Some("bob")).await;
    sar(&mut api, "bob", "get", None, false).await;
    sar(&mut api, "bob", "update", None, false).await;
    let list_call = api.expect(Method::GET, DOMAINS).await;
    list_call.respond(
        200,
        list(
            "RelayDomain",
            "baton.dev/v1alpha1",
            vec![
                domain("team-b", "x"),
                domain("team-a", "y"),
                domain("team-a", "z"),
            ],
        ),
    );
    // Namespaces in order, each once.
    sar(&mut api, "bob", "get", Some("team-a"), true).await;
    sar(&mut api, "bob", "update", Some("team-a"), false).await;
    sar(&mut api, "bob", "get", Some("team-b"), false).await;
    sar(&mut api, "bob", "update", Some("team-b"), false).await;
    let c = call.await.unwrap().unwrap();
    assert_eq!(
        c.permission,
        Permission::Viewer,
        "update is not allowed in team-a"
    );
    assert_eq!(c.namespaces, ["team-a"]);
}

#[tokio::test]
async fn an_unauthenticated_token_and_a_user_without_rights_are_refused() {
    let (client, mut api) = fake_api();
    let auth = std::sync::Arc::new(KubeAuth::new(client));
    let a = auth.clone();
    let call = tokio::spawn(async move { a.authenticate("tok-bad").await });
    review(&mut api, "tok-bad", None).await;
    assert!(matches!(call.await.unwrap(), Err(AuthError::Unknown)));

    let a = auth.clone();
    let call = tokio::spawn(async move { a.authenticate("tok-eve").await });
    review(&mut api, "tok-eve", Some("eve")).await;
    sar(&mut api, "eve", "get", None, false).await;
    sar(&mut api, "eve", "update", None, false).await;
    api.expect(Method::GET, DOMAINS).await.respond(
        200,
        list(
            "RelayDomain",
            "baton.dev/v1alpha1",
            vec![domain("team-a", "y")],
        ),
    );
    sar(&mut api, "eve", "get", Some("team-a"), false).await;
    sar(&mut api, "eve", "update", Some("team-a"), false).await;
    match call.await.unwrap() {
        Err(AuthError::Forbidden(why)) => {
            assert!(why.contains("eve may not get queues.baton.dev"), "{why}")
        }
        other => panic!("{other:?}"),
    }
}
