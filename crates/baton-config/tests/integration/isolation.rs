//! One invalid object does not fail the snapshot: an invalid pool is left out, an invalid
//! domain is kept never ready, both are reported, everything else compiles; RelayDomains on an invalid pool are not ready; `ensure_valid` is all or nothing.

use baton_config::compile::ConditionType;
use baton_config::{ConfigError, InvalidObject};

use super::{compile_yaml, cond, report};

fn pool(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {{name: {name}}}\n\
         spec: {spec}\n"
    )
}

fn domain(name: &str, ns: &str, created: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: baton.dev/v1alpha1\nkind: RelayDomain\n\
         metadata: {{name: {name}, namespace: {ns}, creationTimestamp: '{created}'}}\nspec: {spec}\n"
    )
}

const BAD_SCHEDULE: &str = "{retry: {schedule: [1m, soon]}}";

#[test]
fn a_bad_pool_is_left_out_and_the_good_one_compiles() {
    let yaml = [
        pool("good", "{}"),
        pool("bad", BAD_SCHEDULE),
        domain(
            "on-good",
            "team-a",
            "2025-01-01T00:00:00Z",
            "{domain: a.example, pool: good}",
        ),
        domain(
            "on-bad",
            "team-b",
            "2025-01-01T00:00:00Z",
            "{domain: b.example, pool: bad}",
        ),
    ]
    .concat();
    let compiled = compile_yaml(&yaml);

    let pools: Vec<&str> = compiled
        .config
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(pools, ["good"], "the bad pool is left out");
    assert_eq!(compiled.pool("good").unwrap().invalid, None);
    let why = compiled.pool("bad").unwrap().invalid.clone().unwrap();
    assert_eq!(
        (why.kind, why.name.as_str(), why.field.as_str()),
        ("SendingPool", "bad", "spec.retry.schedule[1]")
    );
    assert!(
        why.message.starts_with("invalid duration \"soon\""),
        "{}",
        why.message
    );

    // The domain on the good pool is untouched.
    let good = report(&compiled, "team-a/on-good");
    assert!(good.ready && good.invalid.is_none());
    assert_eq!(cond(good, ConditionType::Ready), ("True", "Compiled"));

    // The domain on the bad pool stays in the snapshot, not ready, with the pool's error.
    let on_bad = report(&compiled, "team-b/on-bad");
    assert!(!on_bad.ready);
    assert_eq!(on_bad.invalid, None, "the domain itself is valid");
    let expected = format!("SendingPool \"bad\" is invalid: {}", why.detail());
    assert_eq!(on_bad.not_ready_reason, expected);
    let pool_found = on_bad.condition(ConditionType::PoolFound).unwrap();
    assert_eq!(
        (pool_found.status, pool_found.reason.as_str()),
        (false, "PoolInvalid")
    );
    assert_eq!(pool_found.message, expected);
    assert_eq!(cond(on_bad, ConditionType::Ready), ("False", "PoolInvalid"));
    let names: Vec<&str> = on_bad.dns_records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["_dmarc.b.example"], "no SPF from an invalid pool");

    let entries: Vec<(&str, bool, &str)> = compiled
        .config
        .domains
        .iter()
        .map(|d| (d.domain.as_str(), d.ready, d.not_ready_reason.as_str()))
        .collect();
    assert_eq!(
        entries,
        [
            ("a.example", true, ""),
            ("b.example", false, expected.as_str())
        ]
    );

    // All or nothing for humans: the one invalid object, named.
    let err = compiled.ensure_valid().unwrap_err();
    assert_eq!(err.metric_label(), "invalid_objects");
    let ConfigError::InvalidObjects(listed) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(listed.as_slice(), std::slice::from_ref(&why));
    assert_eq!(err.to_string(), format!("1 invalid object(s): {why}"));
}

#[test]
fn a_bad_domain_is_never_ready_and_keeps_its_claim() {
    let yaml = [
        pool("default", "{}"),
        // The oldest claim on example.com, with a bad network (and a good one).
        domain(
            "bad",
            "team-a",
            "2024-01-01T00:00:00Z",
            "{domain: example.com, submission: {networks: [10.0.0.0/33, 192.0.2.0/24]}}",
        ),
        domain(
            "newer",
            "team-b",
            "2025-01-01T00:00:00Z",
            "{domain: example.com}",
        ),
        domain(
            "other",
            "team-c",
            "2025-01-01T00:00:00Z",
            "{domain: example.org}",
        ),
    ]
    .concat();
    let compiled = compile_yaml(&yaml);

    let bad = report(&compiled, "team-a/bad");
    let why = InvalidObject {
        kind: "RelayDomain",
        name: "team-a/bad".into(),
        field: "spec.submission.networks[0]".into(),
        message: "\"10.0.0.0/33\" is not a CIDR".into(),
    };
    assert_eq!(bad.invalid.as_ref(), Some(&why));
    assert!(!bad.ready);
    let ready = bad.condition(ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status, ready.reason.as_str(), ready.message.as_str()),
        (
            false,
            "Invalid",
            "spec.submission.networks[0]: \"10.0.0.0/33\" is not a CIDR"
        )
    );
    assert_eq!(cond(bad, ConditionType::PoolFound), ("True", "PoolFound"));
    assert!(bad.dns_records.is_empty());

    // A typo must not hand the domain to a newer claim.
    let newer = report(&compiled, "team-b/newer");
    assert_eq!(
        cond(newer, ConditionType::Conflict),
        ("True", "DomainClaimed")
    );

    let other = report(&compiled, "team-c/other");
    assert!(other.ready);
    let entries: Vec<(&str, bool)> = compiled
        .config
        .domains
        .iter()
        .map(|d| (d.name.as_str(), d.ready))
        .collect();
    // The bad one stays in the snapshot, never ready: its clients get 451 4.7.5 (try later),
    // not a refusal, while it is being fixed. Its valid network is kept for matching them.
    assert_eq!(entries, [("team-a/bad", false), ("team-c/other", true)]);
    let entry = &compiled.config.domains[0];
    assert_eq!(entry.not_ready_reason, why.detail());
    assert_eq!(
        entry.networks,
        ["192.0.2.0/24"],
        "the bad network is skipped"
    );
    assert_eq!(compiled.config.pools.len(), 1);
    assert_eq!(compiled.invalid().collect::<Vec<_>>(), [&why]);
}

#[test]
fn ensure_valid_names_every_invalid_object_pools_first() {
    let yaml = [
        pool("good", "{}"),
        pool("zeta", "{egress: [{ehloName: a.example, weight: 0}]}"),
        domain(
            "d",
            "ns",
            "2025-01-01T00:00:00Z",
            "{domain: Example.COM, pool: good}",
        ),
        pool("alpha", BAD_SCHEDULE),
    ]
    .concat();
    let compiled = compile_yaml(&yaml);
    let names: Vec<String> = compiled
        .invalid()
        .map(|e| format!("{} {}", e.kind, e.name))
        .collect();
    assert_eq!(
        names,
        ["SendingPool alpha", "SendingPool zeta", "RelayDomain ns/d"]
    );
    let text = compiled.ensure_valid().unwrap_err().to_string();
    assert!(
        text.starts_with("3 invalid object(s): SendingPool alpha: spec.retry.schedule[1]: "),
        "{text}"
    );
    assert!(
        text.contains("; SendingPool zeta: spec.egress[0].weight: must be at least 1; "),
        "{text}"
    );
    assert!(
        text.contains("; RelayDomain ns/d: spec.domain: \"Example.COM\" is not"),
        "{text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert_eq!(compiled.config.pools.len(), 1);

    let all_good = compile_yaml(&pool("good", "{}"));
    assert!(all_good.ensure_valid().is_ok());
}

/// Tenant isolation: a pool lists the namespaces whose RelayDomains may use it. A domain of
/// another namespace is never ready (`PoolFound=False`, reason `NotAllowed`, its clients get a
/// 451 saying why); a pool without the list serves every namespace, as before.
#[test]
fn a_pool_serves_only_the_namespaces_it_allows() {
    let yaml = [
        pool("shared", "{}"),
        pool("team-a-only", "{allowedNamespaces: [team-a]}"),
        domain(
            "a",
            "team-a",
            "2025-01-01T00:00:00Z",
            "{domain: a.example, pool: team-a-only}",
        ),
        domain(
            "b",
            "team-b",
            "2025-01-01T00:00:00Z",
            "{domain: b.example, pool: team-a-only}",
        ),
        domain(
            "c",
            "team-b",
            "2025-01-01T00:00:00Z",
            "{domain: c.example, pool: shared}",
        ),
    ]
    .concat();
    let compiled = compile_yaml(&yaml);
    assert!(report(&compiled, "team-a/a").ready);
    assert!(
        report(&compiled, "team-b/c").ready,
        "a pool without the list serves everyone"
    );
    let b = report(&compiled, "team-b/b");
    assert!(!b.ready);
    assert_eq!(cond(b, ConditionType::PoolFound), ("False", "NotAllowed"));
    assert_eq!(
        b.not_ready_reason,
        "SendingPool \"team-a-only\" does not allow RelayDomains of namespace team-b (spec.allowedNamespaces)"
    );
    let entry = compiled
        .config
        .domains
        .iter()
        .find(|d| d.domain == "b.example")
        .expect("kept as a never-ready entry");
    assert!(!entry.ready);
}
