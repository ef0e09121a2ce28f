//! The generated CRDs admit every valid object and refuse the invalid ones, the way
//! kube-apiserver will (structural schema + CEL, see [`super::apiserver`]): a table of crafted
//! objects (each a valid base object with one field set), every example in
//! `manifests/examples/` and the README's YAML blocks.

use serde_json::Value;

use super::apiserver::{Crd, Refusal};
use super::manifests_dir;

/// A valid SendingPool touching every field the rows change.
const POOL: &str = r#"
apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {name: pool-a}
spec:
  workers:
    replicas: 2
    resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {memory: 1Gi}}
    nodeSelector: {kubernetes.io/os: linux}
    tolerations: [{key: dedicated, operator: Equal, value: mail, effect: NoSchedule}]
  delivery:
    mode: Smarthost
    smarthosts:
      - {host: smtp.example.net, port: 587, weight: 3, tls: Required,
         credentialsSecretRef: {name: upstream, namespace: baton-system}}
  egress: [{ehloName: mta1.example.net, sourceAddress: 203.0.113.10, weight: 1}]
  limits: {maxConnectionsPerDestination: 20, maxMessagesPerConnection: 100}
  retry: {schedule: [1m, 5m], maxAge: 5d}
"#;

/// A valid RelayDomain touching every field the rows change.
const DOMAIN: &str = r#"
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {name: example-com, namespace: team-a}
spec:
  domain: example.com
  pool: pool-a
  submission:
    networks: [10.0.0.0/8]
    credentials: [{secretRef: {name: app-a-smtp}}]
  dkim:
    selector: s1
    keySecretRef: {name: dkim-1}
    additionalKeys: [{selector: s2, keySecretRef: {name: dkim-2}}]
    expireAfter: 7d
  limits: {maxMessageSize: 25Mi, messagesPerMinute: 600}
  suppression: {enabled: true, mode: Refuse, expireAfter: 30d, classes: [invalid_recipient]}
  delayNotice: {enabled: true, after: 4h, interval: 24h}
  postmaster: postmaster@example.com
"#;

/// A valid EventSink touching every field the rows change.
const SINK: &str = r#"
apiVersion: baton.dev/v1alpha1
kind: EventSink
metadata: {name: hooks, namespace: team-a}
spec:
  url: https://hooks.example.com/baton
  secretRef: {name: hooks-secret}
  types: [delivered, bounced]
  relayDomains: [example-com]
  caBundleSecretRef: {name: hooks-ca}
  timeout: 5s
  maxBacklog: 1000
  maxEventAge: 1h
"#;

#[derive(Clone, Copy, Debug)]
enum Base {
    Pool,
    Domain,
    Sink,
}

/// Expected verdict: admitted, or refused at a path (exact) with a message containing a text.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    Admit,
    Refuse(&'static str, &'static str),
}
use Verdict::{Admit, Refuse};

/// `(base, JSON pointer to set, YAML value, verdict)`.
type Row = (Base, &'static str, &'static str, Verdict);

const LONG_NAME: &str = "a123456789b123456789c123456789d123456789e123456789f123456789g12";

#[rustfmt::skip]
fn rows() -> Vec<Row> {
    use Base::{Domain as D, Pool as P, Sink as S};
    let over_63 = Box::leak(format!("{LONG_NAME}x").into_boxed_str());
    vec![
        // --- valid objects the old CRD refused or that sit on a boundary ---
        (D, "/spec/submission/networks", "['::1/128']", Admit),
        (D, "/spec/submission/networks", "['fd00::/8']", Admit),
        (D, "/spec/submission/networks", "['::/0', 0.0.0.0/0, 192.0.2.1/32]", Admit),
        (D, "/spec/submission/networks", "['2001:db8:1234:5678:9abc:def0:1234:5678/128']", Admit),
        (D, "/spec/dkim/expireAfter", "36h", Admit),
        (D, "/spec/dkim/expireAfter", "1h 30m", Admit),
        (D, "/spec/limits/maxMessageSize", "0", Admit),
        (D, "/spec/limits/maxMessageSize", "1048576", Admit),
        (D, "/spec/limits/maxMessageSize", "'1.5Mi'", Admit),
        (D, "/spec/limits/maxMessageSize", "'1e6'", Admit),
        (D, "/spec/limits/maxMessageSize", "'10M'", Admit),
        (D, "/spec/limits/messagesPerMinute", "4294967295", Admit),
        (D, "/spec/pool", LONG_NAME, Admit),
        (D, "/spec/dkim/additionalKeys", "[]", Admit),
        (P, "/metadata/name", LONG_NAME, Admit),
        (D, "/metadata/name", LONG_NAME, Admit),
        (P, "/spec/retry/schedule", "[30s, 90s, 1h30m, 1.5h, 2d, 1w]", Admit),
        (P, "/spec/retry/maxAge", "'5 days'", Admit),
        (P, "/spec/delivery/smarthosts/0/host", "'2001:db8::25'", Admit),
        (P, "/spec/delivery/smarthosts/0/host", "192.0.2.25", Admit),
        (P, "/spec/delivery/smarthosts/0/host", "SMTP.Example.NET.", Admit),
        (P, "/spec/delivery/smarthosts/0/host", "localhost", Admit),
        (P, "/spec/delivery/smarthosts/0/weight", "4294967295", Admit),
        (P, "/spec/delivery/smarthosts/0/credentialsSecretRef", "{name: upstream}", Admit),
        (P, "/spec/delivery/smarthosts/0", "{host: smtp.example.net, port: 465, tls: Verify, implicitTls: true, caBundleSecretRef: {name: ca}}", Admit),
        (P, "/spec/delivery/smarthosts/0", "{host: smtp.example.net, port: 465, tls: Required, implicitTls: true}", Admit),
        (P, "/spec/delivery/smarthosts/0", "{host: smtp.example.net, port: 465, implicitTls: false}", Admit),
        (P, "/spec/delivery/smarthosts/0/allowUnverifiedCredentials", "true", Admit),
        (P, "/spec/tls", "{policy: Verify, caBundleSecretRef: {name: ca, namespace: certs}}", Admit),
        (P, "/spec/egress/0/ehloName", "baton.localhost", Admit),
        (P, "/spec/egress/0/sourceAddress", "'2001:db8::10'", Admit),
        (P, "/spec/workers/tolerations", "[{operator: Exists}]", Admit),
        (P, "/spec/workers/tolerations/0/effect", "NoExecute", Admit),
        (P, "/spec/workers/resources/requests/cpu", "'0.5'", Admit),
        (P, "/spec/workers/resources/requests/cpu", "2", Admit),
        (P, "/spec/delivery", "{mode: Direct}", Admit),
        (P, "/spec/delivery/allowedNetworks", "[127.0.0.0/8, '::1/128', 10.1.2.3, 'fd00::1']", Admit),
        (P, "/spec/delivery/addressLiterals", "Allow", Admit),
        (D, "/spec/suppression", "{enabled: false}", Admit),
        (D, "/spec/suppression", "{mode: AcceptAndBounce, expireAfter: 0s, classes: [invalid_recipient, mailbox_full, policy]}", Admit),
        (D, "/spec/delayNotice", "{after: 30m, interval: 2h}", Admit),
        (D, "/spec/postmaster", "bounces@mail.example.com", Admit),
        (D, "/spec/returnPath", "{domain: bounces.example.com, mxHost: mx.example.com, keySecretRef: {name: verp}}", Admit),
        (D, "/spec/returnPath", "{domain: Bounces, mxHost: mx.example.com, keySecretRef: {name: verp}}", Refuse("spec.returnPath.domain", "should match")),
        (D, "/spec/returnPath", "{domain: bounces.example.com, keySecretRef: {name: verp}}", Refuse("spec.returnPath.mxHost", "Required value")),
        (D, "/spec/postmaster", "postmaster@example.org", Refuse("spec.postmaster", "postmaster must be an address in the domain")),
        (D, "/spec/suppression/classes", "[bogus]", Refuse("spec.suppression.classes", "classes must be bounce classes")),
        (D, "/spec/suppression/mode", "Drop", Refuse("spec.suppression.mode", "Unsupported value")),
        (D, "/spec/suppression/expireAfter", "forever", Refuse("spec.suppression.expireAfter", "should match")),
        (D, "/spec/delayNotice/after", "later", Refuse("spec.delayNotice.after", "should match")),
        // --- the invalid objects of issue 21 ---
        (P, "/spec/retry/schedule", "[soon]", Refuse("spec.retry.schedule[0]", "should match")),
        (P, "/spec/retry/schedule", "[1x]", Refuse("spec.retry.schedule[0]", "should match")),
        (P, "/spec/retry/maxAge", "forever", Refuse("spec.retry.maxAge", "should match")),
        (D, "/spec/dkim/expireAfter", "soon", Refuse("spec.dkim.expireAfter", "should match")),
        (D, "/spec/limits/maxMessageSize", "'-5Mi'", Refuse("spec.limits.maxMessageSize", "should match")),
        (D, "/spec/limits/maxMessageSize", "-5", Refuse("spec.limits.maxMessageSize", "greater than or equal to 0")),
        (D, "/spec/submission/credentials/0/secretRef/name", "Not_A_Name", Refuse("spec.submission.credentials[0].secretRef.name", "should match")),
        (P, "/spec/delivery/smarthosts/0/credentialsSecretRef/namespace", "Bad_NS", Refuse("spec.delivery.smarthosts[0].credentialsSecretRef.namespace", "should match")),
        (P, "/spec/delivery/smarthosts/0/host", "bad host!", Refuse("spec.delivery.smarthosts[0].host", "host must be a host name or an IP address")),
        (P, "/spec/egress/0/ehloName", "not a host name", Refuse("spec.egress[0].ehloName", "should match")),
        (P, "/spec/egress/0/ehloName", "mta1.example.net.", Refuse("spec.egress[0].ehloName", "should match")),
        (D, "/spec/limits/messagesPerMinute", "4294967296", Refuse("spec.limits.messagesPerMinute", "less than or equal to 4294967295")),
        (P, "/spec/delivery/smarthosts/0/weight", "4294967296", Refuse("spec.delivery.smarthosts[0].weight", "less than or equal to 4294967295")),
        (P, "/spec/limits/maxMessagesPerConnection", "4294967296", Refuse("spec.limits.maxMessagesPerConnection", "less than or equal to 4294967295")),
        (P, "/spec/workers/tolerations/0/operator", "Maybe", Refuse("spec.workers.tolerations[0].operator", "Unsupported value")),
        (P, "/spec/workers/resources/requests/cpu", "lots", Refuse("spec.workers.resources.requests.cpu", "should match")),
        (D, "/spec/dkim/additionalKeys/0/selector", "s1", Refuse("spec.dkim.additionalKeys", "must not reuse the primary selector")),
        (P, "/metadata/name", over_63, Refuse("", "metadata.name must be at most 63 characters")),
        (D, "/metadata/name", over_63, Refuse("", "metadata.name must be at most 63 characters")),
        // --- more invalid objects of the same kinds ---
        (P, "/spec/retry/schedule", "['1.5ns']", Refuse("spec.retry.schedule[0]", "should match")),
        (P, "/spec/retry/schedule", "['-1m']", Refuse("spec.retry.schedule[0]", "should match")),
        (D, "/spec/limits/maxMessageSize", "'100m'", Refuse("spec.limits.maxMessageSize", "should match")),
        (D, "/spec/limits/maxMessageSize", "1.5", Refuse("spec.limits.maxMessageSize", "integer or string")),
        (D, "/spec/dkim/additionalKeys", "[{selector: s2, keySecretRef: {name: a}}, {selector: s2, keySecretRef: {name: b}}]", Refuse("spec.dkim.additionalKeys", "selectors must be unique")),
        (P, "/spec/delivery/allowedNetworks", "[10.0.0.0/33]", Refuse("spec.delivery.allowedNetworks", "must be IP addresses or CIDRs")),
        (P, "/spec/delivery/allowedNetworks", "[lab.example]", Refuse("spec.delivery.allowedNetworks", "must be IP addresses or CIDRs")),
        (P, "/spec/delivery/addressLiterals", "Sometimes", Refuse("spec.delivery.addressLiterals", "Unsupported value")),
        (D, "/spec/submission/networks", "[10.0.0.0/33]", Refuse("spec.submission.networks", "networks must be CIDRs")),
        (D, "/spec/submission/networks", "['fd00::1']", Refuse("spec.submission.networks", "networks must be CIDRs")),
        (D, "/spec/pool", "Bad_Pool", Refuse("spec.pool", "should match")),
        (D, "/spec/pool", over_63, Refuse("spec.pool", "Too long")),
        (D, "/spec/limits/messagesPerMinute", "-1", Refuse("spec.limits.messagesPerMinute", "greater than or equal to 0")),
        (D, "/spec/dkim/keySecretRef/name", "Bad.", Refuse("spec.dkim.keySecretRef.name", "should match")),
        (D, "/spec/unknownField", "1", Refuse("spec.unknownField", "unknown field")),
        (P, "/spec/delivery/smarthosts/0/host", "'[2001:db8::25]'", Refuse("spec.delivery.smarthosts[0].host", "host name or an IP address")),
        (P, "/spec/delivery/smarthosts/0/host", "-leading.example", Refuse("spec.delivery.smarthosts[0].host", "host name or an IP address")),
        (P, "/spec/delivery/smarthosts/0/port", "70000", Refuse("spec.delivery.smarthosts[0].port", "less than or equal to 65535")),
        (P, "/spec/delivery/smarthosts", "[]", Refuse("spec.delivery.smarthosts", "at least one smarthost")),
        (P, "/spec/delivery/smarthosts/0", "{host: smtp.example.net, port: 465, implicitTls: true}", Refuse("spec.delivery.smarthosts[0]", "implicitTls needs tls Required or Verify")),
        (P, "/spec/delivery/smarthosts/0", "{host: smtp.example.net, port: 465, tls: Opportunistic, implicitTls: true}", Refuse("spec.delivery.smarthosts[0]", "implicitTls needs tls Required or Verify")),
        (P, "/spec/delivery/smarthosts/0/tls", "Sometimes", Refuse("spec.delivery.smarthosts[0].tls", "Unsupported value")),
        (P, "/spec/egress/0/sourceAddress", "mta1", Refuse("spec.egress[0].sourceAddress", "must be an IP address")),
        (P, "/spec/egress/0/weight", "0", Refuse("spec.egress[0].weight", "greater than or equal to 1")),
        (P, "/spec/limits/maxConnectionsPerDestination", "4294967296", Refuse("spec.limits.maxConnectionsPerDestination", "less than or equal to 4294967295")),
        (P, "/spec/workers/tolerations/0/effect", "Sometimes", Refuse("spec.workers.tolerations[0].effect", "Unsupported value")),
        (P, "/spec/workers/resources/limits/memory", "'-1Gi'", Refuse("spec.workers.resources.limits.memory", "should match")),
        (P, "/spec/workers/resources/requests/cpu", "-1", Refuse("spec.workers.resources.requests.cpu", "greater than or equal to 0")),
        (P, "/spec/workers/nodeSelector/pool", "'not a label value'", Refuse("spec.workers.nodeSelector.pool", "should match")),
        (P, "/spec/workers/autoscaling", "{minReplicas: 3, maxReplicas: 2}", Refuse("spec.workers.autoscaling", "minReplicas must not exceed maxReplicas")),
        (P, "/metadata/name", "Not_A_Name", Refuse("metadata.name", "RFC 1123")),
        // --- content filtering (issue 19) ---
        (P, "/spec/contentFilters", "[{name: spam, rspamd: {url: 'http://rspamd.mail.svc:11333', onSpam: Quarantine, quarantineScore: '12.5'}}, {name: av, clamd: {address: 'clamav:3310'}, timeout: 1500ms, failureMode: Open, maxConcurrent: 8}, {name: own, grpc: {endpoint: 'http://filter:50051'}}]", Admit),
        (P, "/spec/contentFilters", "[{name: a}]", Refuse("spec.contentFilters[0]", "exactly one of rspamd, clamd or grpc")),
        (P, "/spec/contentFilters", "[{name: a, clamd: {address: 'c:1'}, grpc: {endpoint: 'http://g:1'}}]", Refuse("spec.contentFilters[0]", "exactly one of rspamd, clamd or grpc")),
        (P, "/spec/contentFilters", "[{name: a, rspamd: {url: 'https://r:1'}}]", Refuse("spec.contentFilters[0].rspamd.url", "should match")),
        (P, "/spec/contentFilters", "[{name: a, rspamd: {url: 'http://u@r:1'}}]", Refuse("spec.contentFilters[0].rspamd.url", "should match")),
        (P, "/spec/contentFilters", "[{name: a, clamd: {address: clamav}}]", Refuse("spec.contentFilters[0].clamd.address", "should match")),
        (P, "/spec/contentFilters", "[{name: a, clamd: {address: 'c:1'}, failureMode: Sometimes}]", Refuse("spec.contentFilters[0].failureMode", "Unsupported value")),
        (P, "/spec/contentFilters", "[{name: a, clamd: {address: 'c:1'}, maxConcurrent: 0}]", Refuse("spec.contentFilters[0].maxConcurrent", "greater than or equal to 1")),
        (P, "/spec/contentFilters", "[{name: Bad_Name, clamd: {address: 'c:1'}}]", Refuse("spec.contentFilters[0].name", "should match")),
        (D, "/spec/headers", "{remove: [X-Internal-*, X-Mailer], removeReceived: true, add: [{name: List-Unsubscribe, value: '<mailto:unsubscribe@example.com>'}]}", Admit),
        (D, "/spec/headers", "{remove: ['X:Y']}", Refuse("spec.headers.remove[0]", "should match")),
        (D, "/spec/headers", "{remove: ['X-*-Y']}", Refuse("spec.headers.remove[0]", "should match")),
        (D, "/spec/headers", "{add: [{name: 'X A', value: v}]}", Refuse("spec.headers.add[0].name", "should match")),
        (D, "/spec/headers", "{add: [{name: X-A, value: \"a\\r\\nBcc: x@evil.example\"}]}", Refuse("spec.headers.add[0].value", "should match")),
        // --- EventSink ---
        (S, "/spec/types", "[]", Admit),
        (S, "/spec/types", "[accepted, operator_bounced, dsn_queued]", Admit),
        (S, "/spec/url", "'https://hooks.example.com:8443/a/b?x=1'", Admit),
        (S, "/spec/maxEventAge", "0s", Admit),
        (S, "/spec/types", "[opened]", Refuse("spec.types", "unknown event type")),
        (S, "/spec/url", "'http://hooks.example.com/'", Refuse("spec.url", "should match")),
        (S, "/spec/url", "'https://user@hooks.example.com/'", Refuse("spec.url", "should match")),
        (S, "/spec/timeout", "soon", Refuse("spec.timeout", "should match")),
        (S, "/spec/maxBacklog", "0", Refuse("spec.maxBacklog", "greater than or equal to 1")),
        (S, "/spec/relayDomains", "[Bad_Name]", Refuse("spec.relayDomains[0]", "should match")),
        (S, "/spec/secretRef", "{}", Refuse("spec.secretRef.name", "Required value")),
    ]
}

fn crd(base: Base) -> Crd {
    match base {
        Base::Pool => Crd::load("sendingpools.baton.dev.yaml"),
        Base::Domain => Crd::load("relaydomains.baton.dev.yaml"),
        Base::Sink => Crd::load("eventsinks.baton.dev.yaml"),
    }
}

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// `object` with the value at `pointer` set (creating the last key of an object if absent).
fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = object
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent} in the base object"));
    match target {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().expect("index")] = value,
        _ => panic!("{parent} is neither object nor array"),
    }
    object
}

fn show(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

#[test]
fn base_objects_are_admitted() {
    for (base, text) in [
        (Base::Pool, POOL),
        (Base::Domain, DOMAIN),
        (Base::Sink, SINK),
    ] {
        let refusals = crd(base).admit(&yaml(text));
        assert!(refusals.is_empty(), "{base:?}:\n  {}", show(&refusals));
    }
}

#[test]
fn table_of_valid_and_invalid_objects() {
    let (pool_crd, domain_crd, sink_crd) = (crd(Base::Pool), crd(Base::Domain), crd(Base::Sink));
    let mut failures = Vec::new();
    for (base, pointer, value, verdict) in rows() {
        let (crd, text) = match base {
            Base::Pool => (&pool_crd, POOL),
            Base::Domain => (&domain_crd, DOMAIN),
            Base::Sink => (&sink_crd, SINK),
        };
        let object = with(yaml(text), pointer, yaml(value));
        let refusals = crd.admit(&object);
        let row = format!("{base:?} {pointer} = {value}");
        match verdict {
            Admit if !refusals.is_empty() => failures.push(format!(
                "{row}: refused, should be admitted:\n  {}",
                show(&refusals)
            )),
            Refuse(path, text)
                if !refusals
                    .iter()
                    .any(|r| r.path == path && r.message.contains(text)) =>
            {
                failures.push(format!(
                    "{row}: want a refusal at {path:?} containing {text:?}, got:\n  {}",
                    show(&refusals)
                ));
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every SendingPool, RelayDomain and EventSink document in `manifests/examples/` (recursively) and in the
/// README's YAML blocks.
fn example_documents() -> Vec<(String, Value)> {
    let mut sources = Vec::new();
    let mut dirs = vec![manifests_dir().join("examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).expect("read example");
                sources.push((path.display().to_string(), text));
            }
        }
    }
    let readme = manifests_dir().join("../README.md");
    let readme = std::fs::read_to_string(readme).expect("README");
    for (i, block) in readme.split("```yaml\n").skip(1).enumerate() {
        let block = block.split("```").next().unwrap_or_default();
        sources.push((format!("README.md yaml block {i}"), block.to_owned()));
    }
    let mut docs = Vec::new();
    for (origin, text) in sources {
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let value: Value = serde::Deserialize::deserialize(doc).expect("YAML document");
            if matches!(
                value["kind"].as_str(),
                Some("SendingPool" | "RelayDomain" | "EventSink")
            ) {
                docs.push((format!("{origin} document {i}"), value));
            }
        }
    }
    docs
}

#[test]
fn examples_and_readme_are_admitted() {
    let docs = example_documents();
    let kinds = |k: &str| docs.iter().filter(|(_, d)| d["kind"] == k).count();
    assert!(
        kinds("SendingPool") >= 4 && kinds("RelayDomain") >= 3,
        "{docs:?}"
    );
    let (pool_crd, domain_crd, sink_crd) = (crd(Base::Pool), crd(Base::Domain), crd(Base::Sink));
    for (origin, doc) in docs {
        let crd = match doc["kind"].as_str() {
            Some("SendingPool") => &pool_crd,
            Some("EventSink") => &sink_crd,
            _ => &domain_crd,
        };
        let refusals = crd.admit(&doc);
        assert!(refusals.is_empty(), "{origin}:\n  {}", show(&refusals));
    }
}

/// The schema's duration and size patterns admit exactly what the compiler parses, on samples.
#[test]
fn unit_patterns_agree_with_the_parsers() {
    let pool = crd(Base::Pool).schema;
    let domain = crd(Base::Domain).schema;
    let pattern = |schema: &Value, pointer: &str| {
        let p = schema
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no pattern at {pointer}"));
        regex::Regex::new(p).expect("pattern")
    };
    let duration = pattern(
        &pool,
        "/properties/spec/properties/retry/properties/maxAge/pattern",
    );
    for text in [
        "1s", "30s", "1m", "1h30m", "1h 30m", "1.5h", "5d", "2w", "1M", "1y", "500ms", "90 min",
        "3 days", "0s", "s", "5", "1x", "soon", "-1m", "1.5ns", "1..5h", "1h-30m", "h1", "1 h 30",
    ] {
        let parses = baton_config::units::parse_duration(text).is_ok();
        assert_eq!(duration.is_match(text), parses, "duration {text:?}");
    }
    let size = pattern(
        &domain,
        "/properties/spec/properties/limits/properties/maxMessageSize/pattern",
    );
    for text in [
        "0", "25Mi", "10M", "1048576", "1.5Mi", "1e6", "1E6", "1E", "64k", ".5", "1.", "+1Ki",
        "-1", "-5Mi", "100m", "25MB", "1e", "1e-3", "Mi", "1.2.3", "", "1n",
    ] {
        let parses = baton_config::units::parse_size(text).is_ok();
        assert_eq!(size.is_match(text), parses, "size {text:?}");
    }
}

/// Every CEL rule of both CRDs passes kube-cel's cost estimate at the node it sits on: the lists
/// it walks are bounded (`maxItems`), as the API server's cost budget requires. (kube-cel's
/// scope analysis is not used: it flags the variables of `all`/`exists_one` macros.)
#[test]
fn cel_rules_are_in_scope_and_bounded() {
    fn walk(node: &Value, path: &str, out: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        for rule in map
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = rule["rule"].as_str().expect("rule text");
            let compiled = kube_cel::compile_schema(node);
            for w in kube_cel::estimate_rule_cost(text, &compiled) {
                out.push(format!("{path}: {text}: {}", w.message));
            }
            out.push(String::new()); // one entry per rule, to count them
        }
        for (key, child) in map {
            match child {
                Value::Object(_) => walk(child, &format!("{path}/{key}"), out),
                Value::Array(items) => {
                    for item in items {
                        walk(item, &format!("{path}/{key}"), out);
                    }
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for base in [Base::Pool, Base::Domain] {
        walk(&crd(base).schema, "", &mut out);
    }
    let rules = out.iter().filter(|w| w.is_empty()).count();
    let warnings: Vec<_> = out.iter().filter(|w| !w.is_empty()).collect();
    assert!(rules >= 9, "only {rules} CEL rules found");
    assert!(warnings.is_empty(), "{warnings:#?}");
}
