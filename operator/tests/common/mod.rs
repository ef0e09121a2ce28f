//! A scripted fake Kubernetes API server in front of `kube::Client` (tower-test's mock pair):
//! the test awaits each request the code under test makes, asserts it, and answers it.
//! A request that never comes fails the test after a generous guard timeout (no timing is
//! asserted).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub(crate) mod nats;

use baton_operator::queue::MemoryQueue;
use baton_operator::{Context, Settings};
use baton_telemetry::Metrics;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock::{Handle, SendResponse};

/// Fixed clock of every test context.
pub(crate) fn now() -> Time {
    Time(Timestamp::from_second(1_700_000_000).unwrap())
}

/// The RFC 3339 string of [`now`] as serialized in bodies.
pub(crate) fn now_str() -> String {
    serde_json::to_value(now())
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

/// The operator settings used by the tests.
pub(crate) fn settings() -> Settings {
    let mut s = Settings::new(
        "baton-system",
        "registry.example/baton:1.0",
        "nats://nats:4222",
    );
    s.identity = "operator-0".into();
    s.keyring = baton_seal::KeySource::new(Some(keyring_dir()));
    s
}

/// The tests' keyring directory (one per test process, created on first use).
pub(crate) fn keyring_dir() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("baton-operator-keyring-{}", std::process::id()));
        baton_seal::ensure_keyring(&dir).unwrap();
        dir
    })
    .clone()
}

/// A stored snapshot with its secrets opened, as ingress and workers see it.
pub(crate) fn opened(config: &baton_proto::v1::RelayConfig) -> baton_proto::v1::RelayConfig {
    let keyring = baton_seal::Keyring::load_dir(&keyring_dir()).unwrap();
    let mut c = config.clone();
    baton_seal::unseal_config(&mut c, Some(&keyring)).unwrap();
    c
}

/// A context over a fake API server and an in-memory queue.
pub(crate) fn context() -> (Arc<Context>, ApiServer, MemoryQueue, Metrics) {
    context_with_dns(None)
}

/// [`context`] with a resolver for domain verification records.
#[allow(dead_code, reason = "not every test binary verifies domains")]
pub(crate) fn context_with_dns(
    dns: Option<Arc<dyn baton_config::verification::TxtResolver>>,
) -> (Arc<Context>, ApiServer, MemoryQueue, Metrics) {
    context_with(settings(), dns)
}

/// A context with the given settings.
pub(crate) fn context_with(
    settings: Settings,
    dns: Option<Arc<dyn baton_config::verification::TxtResolver>>,
) -> (Arc<Context>, ApiServer, MemoryQueue, Metrics) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let queue = MemoryQueue::default();
    let metrics = Metrics::new();
    let ctx = Context::with_dns(
        client,
        settings,
        Arc::new(queue.clone()),
        metrics.clone(),
        Arc::new(now),
        dns,
    );
    (ctx, ApiServer { handle }, queue, metrics)
}

/// A client whose every request goes to the returned scripted server (no operator context).
pub(crate) fn fake_api() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle })
}

/// The scripted server side.
pub(crate) struct ApiServer {
    handle: Handle<Request<Body>, Response<Body>>,
}

/// One request received by the fake server, waiting for its answer.
pub(crate) struct Call {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Value,
    send: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// The next request; asserts its method and path (without query).
    pub(crate) async fn expect(&mut self, method: Method, path: &str) -> Call {
        let next = tokio::time::timeout(Duration::from_secs(30), self.handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
            .unwrap_or_else(|| panic!("client gone; expected {method} {path}"));
        let (req, send) = next;
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        let query = parts
            .uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let call = Call {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query,
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body,
            send,
        };
        assert_eq!(
            (call.method.clone(), call.path.as_str()),
            (method.clone(), path),
            "unexpected request {} {} body {}",
            call.method,
            call.path,
            call.body
        );
        call
    }

    /// Expect a server-side apply (PATCH with the apply content type, field manager
    /// `baton-operator`, force) and answer with the applied body merged with `extra`.
    pub(crate) async fn expect_apply(&mut self, path: &str, extra: Value) -> Value {
        let call = self.expect(Method::PATCH, path).await;
        call.assert_ssa();
        let body = call.body.clone();
        let mut reply = body.clone();
        merge(&mut reply, extra);
        call.respond(200, reply);
        body
    }

    /// Expect an Event (events.k8s.io/v1) in `namespace`; returns its body.
    pub(crate) async fn expect_event(&mut self, namespace: &str) -> Value {
        let call = self
            .expect(
                Method::POST,
                &format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events"),
            )
            .await;
        let body = call.body.clone();
        call.respond(201, body.clone());
        body
    }

    /// Assert that no request is pending right now (the client may be gone).
    pub(crate) fn assert_idle(&mut self) {
        if let std::task::Poll::Ready(Some((req, _))) = self.handle.poll_request() {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

impl Call {
    /// Assert a forced server-side apply by `baton-operator`.
    pub(crate) fn assert_ssa(&self) {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/apply-patch+yaml"),
            "{} {}",
            self.method,
            self.path
        );
        assert_eq!(
            self.query.get("fieldManager").map(String::as_str),
            Some("baton-operator")
        );
        assert_eq!(self.query.get("force").map(String::as_str), Some("true"));
    }

    /// Answer with a status code and JSON body.
    pub(crate) fn respond(self, status: u16, body: Value) {
        let bytes = serde_json::to_vec(&body).unwrap();
        let resp = Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .unwrap();
        self.send.send_response(resp);
    }

    /// Answer 404 with a Kubernetes Status.
    pub(crate) fn not_found(self) {
        let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "not found"});
        self.respond(404, body);
    }
}

/// Deep-merge `extra` into `base` (objects merged, other values replaced).
pub(crate) fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A list response.
pub(crate) fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": format!("{kind}List"), "apiVersion": api_version,
        "metadata": {"resourceVersion": "1"}, "items": items})
}
