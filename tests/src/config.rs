//! Config YAML for scenarios: one Direct pool delivering to a given port, and one RelayDomain
//! for `example.com` open to loopback clients plus an AUTH user `app`/`secret`.
//!
//! The receivers listen on `127.0.0.x`, which Direct delivery refuses by default: the pool
//! opts in with `allowedNetworks: [127.0.0.0/8]` ([`LOOPBACK_ALLOWED`]).

/// The `spec.delivery` entries that let a Direct pool deliver to the loopback receivers.
pub const LOOPBACK_ALLOWED: &str = "allowedNetworks: [127.0.0.0/8]";

/// A Direct pool on `port` with the given retry schedule, and `example.com` for loopback.
pub fn direct(port: u16, schedule: &str, max_age: &str) -> String {
    direct_with(port, schedule, max_age, LOOPBACK_ALLOWED)
}

/// Like [`direct`] with these `spec.delivery` entries after mode and port instead of
/// [`LOOPBACK_ALLOWED`], e.g. `"addressLiterals: Allow, allowedNetworks: [127.0.0.2/32]"`.
pub fn direct_with(port: u16, schedule: &str, max_age: &str, delivery: &str) -> String {
    let delivery = if delivery.is_empty() {
        String::new()
    } else {
        format!(", {delivery}")
    };
    format!(
        r#"apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {{name: test}}
spec:
  delivery: {{mode: Direct, port: {port}{delivery}}}
  egress: [{{ehloName: out.baton.test, weight: 1}}]
  tls: {{policy: Disabled}}
  retry: {{schedule: {schedule}, maxAge: {max_age}}}
---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {{name: example-com, namespace: team-a}}
spec:
  domain: example.com
  pool: test
  allowedSenders: ["*@example.com"]
  submission:
    networks: [127.0.0.0/8]
    credentials: [{{secretRef: {{name: app-smtp}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: app-smtp, namespace: team-a}}
type: kubernetes.io/basic-auth
stringData: {{username: app, password: secret}}
"#
    )
}

/// Like [`direct`] but the RelayDomain admits no client network: every client must AUTH.
pub fn auth_only(port: u16) -> String {
    direct(port, "[1s]", "1h").replace("networks: [127.0.0.0/8]", "networks: [10.99.0.0/16]")
}

/// Like [`direct`] but pool `test` relays through smarthosts `(host, port, weight)`, each
/// without TLS or AUTH.
pub fn smarthost(hosts: &[(&str, u16, u32)], schedule: &str, max_age: &str) -> String {
    let list = hosts
        .iter()
        .map(|(h, p, w)| format!("{{host: {h}, port: {p}, weight: {w}, tls: Disabled}}"))
        .collect::<Vec<_>>()
        .join(", ");
    direct_with(0, schedule, max_age, "").replace(
        "delivery: {mode: Direct, port: 0}",
        &format!("delivery: {{mode: Smarthost, smarthosts: [{list}]}}"),
    )
}
