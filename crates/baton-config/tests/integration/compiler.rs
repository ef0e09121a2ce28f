//! The compiler: defaults, per-domain readiness rules, conflicts, credentials, digest, errors.

use baton_config::compile::{ConditionType, verify_password};
use baton_config::{ConfigError, compile, config_digest};
use baton_proto::Message as _;
use baton_proto::v1::{DeliveryMode, TlsPolicy};

use super::{POOL, compile_err, compile_yaml, cond, dkim_secret, fixture, load, report};

const DOMAIN: &str = "---\napiVersion: baton.dev/v1alpha1\nkind: RelayDomain\n\
                      metadata: {name: example-com, namespace: team-a}\nspec: {domain: example.com}\n";

fn domain(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: baton.dev/v1alpha1\nkind: RelayDomain\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

/// Suppression and delay notices: on by default (30 days, invalid recipients; after 4h, then
/// every 24h), configurable, and an unknown class makes the domain never-ready.
#[test]
fn suppression_and_delay_notice_policies() {
    use baton_proto::v1::SuppressionMode;
    let compiled = compile_yaml(&format!("{POOL}---\n{DOMAIN}"));
    let d = &compiled.config.domains[0];
    let s = d.suppression.clone().expect("suppression policy");
    assert!(s.enabled);
    assert_eq!(s.mode, SuppressionMode::Refuse as i32);
    assert_eq!(s.expire_after_secs, 30 * 86_400);
    assert_eq!(s.classes, ["invalid_recipient"]);
    let n = d.delay_notice.expect("delay notice");
    assert_eq!((n.after_secs, n.interval_secs), (4 * 3600, 24 * 3600));
    assert_eq!(d.postmaster, "postmaster@example.com");

    let spec = "{domain: example.com, postmaster: bounces@mail.example.com}";
    let compiled = compile_yaml(&format!("{POOL}{}", domain("example-com", "team-a", spec)));
    assert_eq!(
        compiled.config.domains[0].postmaster,
        "bounces@mail.example.com"
    );
    for bad in ["postmaster@example.org", "a b@example.com", "@example.com"] {
        let spec = format!("{{domain: example.com, postmaster: '{bad}'}}");
        let compiled = compile_yaml(&format!("{POOL}{}", domain("example-com", "team-a", &spec)));
        let d = &compiled.config.domains[0];
        assert!(
            !d.ready && d.not_ready_reason.contains("spec.postmaster"),
            "{bad}: {}",
            d.not_ready_reason
        );
    }

    let spec = "{domain: example.com, suppression: {mode: AcceptAndBounce, expireAfter: 0s, \
                classes: [invalid_recipient, mailbox_full]}, delayNotice: {enabled: false}}";
    let compiled = compile_yaml(&format!("{POOL}{}", domain("example-com", "team-a", spec)));
    let d = &compiled.config.domains[0];
    let s = d.suppression.clone().expect("suppression policy");
    assert_eq!(s.mode, SuppressionMode::AcceptAndBounce as i32);
    assert_eq!(s.expire_after_secs, 0, "0s: permanent");
    assert_eq!(s.classes, ["invalid_recipient", "mailbox_full"]);
    assert!(d.delay_notice.is_none());
    assert!(d.ready);

    let spec = "{domain: example.com, suppression: {classes: [bogus]}}";
    let compiled = compile_yaml(&format!("{POOL}{}", domain("example-com", "team-a", spec)));
    let d = &compiled.config.domains[0];
    assert!(!d.ready);
    assert!(
        d.not_ready_reason.contains("spec.suppression.classes"),
        "{}",
        d.not_ready_reason
    );
}

#[test]
fn defaults_apply() {
    let compiled = compile_yaml(&format!("{POOL}---\n{DOMAIN}"));
    let config = &compiled.config;
    assert_eq!(
        (config.generation, config.compiled_at_ms),
        (1, 1_700_000_000_000)
    );
    let pool = &config.pools[0];
    assert_eq!(pool.name, "default");
    assert_eq!(pool.mode, DeliveryMode::Direct as i32);
    assert_eq!(pool.tls_policy, TlsPolicy::Opportunistic as i32);
    assert_eq!(pool.port, 25);
    assert!(!pool.allow_address_literals && pool.allowed_networks.is_empty());
    assert_eq!(pool.retry_schedule_secs, [60, 300, 900, 3600, 14_400]);
    assert_eq!(pool.max_age_secs, 5 * 86_400);
    assert_eq!(
        (
            pool.max_connections_per_destination,
            pool.max_messages_per_connection
        ),
        (20, 100)
    );
    assert_eq!(pool.workers, 1);

    let d = &config.domains[0];
    assert_eq!(d.name, "team-a/example-com");
    assert_eq!(d.pool, "default");
    assert_eq!(d.allowed_senders, ["*@example.com"]);
    assert_eq!(d.max_message_size, 0, "unset: the ingress limit applies");
    assert_eq!(d.messages_per_minute, 0);
    assert!(d.ready && d.not_ready_reason.is_empty());
    assert!(d.dkim_keys.is_empty() && d.credentials.is_empty() && !d.allow_unaligned_from);

    let r = report(&compiled, "team-a/example-com");
    assert!(r.ready);
    assert_eq!(cond(r, ConditionType::Ready), ("True", "Compiled"));
    assert_eq!(cond(r, ConditionType::PoolFound), ("True", "PoolFound"));
    assert_eq!(
        cond(r, ConditionType::DkimKeyReady),
        ("True", "NotConfigured"),
        "unsigned by choice"
    );
    assert_eq!(cond(r, ConditionType::Conflict), ("False", "NoConflict"));

    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default());
    let k8s = r
        .condition(ConditionType::Ready)
        .unwrap()
        .to_condition(Some(4), now.clone());
    assert_eq!(
        (k8s.type_.as_str(), k8s.status.as_str(), k8s.reason.as_str()),
        ("Ready", "True", "Compiled")
    );
    assert_eq!(
        (k8s.observed_generation, k8s.last_transition_time),
        (Some(4), now)
    );
}

#[test]
fn fields_are_compiled() {
    let pool = "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: out}\nspec:\n\
                \x20 workers: {autoscaling: {minReplicas: 3, maxReplicas: 9}}\n\
                \x20 delivery: {mode: Direct, port: 2525, addressLiterals: Allow, \
                allowedNetworks: [127.0.0.1/8, 10.1.2.3, 'fd00::/8']}\n\
                \x20 egress: [{ehloName: mta1.example.net, sourceAddress: 2001:db8::1, weight: 2}]\n\
                \x20 tls: {policy: Required}\n\
                \x20 limits: {maxConnectionsPerDestination: 5, maxMessagesPerConnection: 7}\n\
                \x20 retry: {schedule: [30s, 1h30m], maxAge: 36h}\n";
    let rd = domain(
        "d",
        "ns",
        "{domain: example.org, pool: out, allowedSenders: [app@example.org, '*@*.example.org'], \
          allowUnalignedFrom: true, submission: {networks: [10.0.0.0/8, 'fd00::/8']}, \
          limits: {maxMessageSize: 10M, messagesPerMinute: 600}}",
    );
    let compiled = compile_yaml(&format!("{pool}{rd}"));
    let p = &compiled.config.pools[0];
    assert_eq!(
        (p.workers, p.port, p.tls_policy),
        (3, 2525, TlsPolicy::Required as i32)
    );
    assert_eq!(p.egress[0].source_address, "2001:db8::1");
    assert!(p.allow_address_literals);
    assert_eq!(
        p.allowed_networks,
        ["127.0.0.0/8", "10.1.2.3/32", "fd00::/8"]
    );
    assert_eq!(p.egress[0].weight, 2);
    assert_eq!(
        (
            p.max_connections_per_destination,
            p.max_messages_per_connection
        ),
        (5, 7)
    );
    assert_eq!(
        (p.retry_schedule_secs.as_slice(), p.max_age_secs),
        (&[30, 5400][..], 36 * 3600)
    );
    let d = &compiled.config.domains[0];
    assert_eq!(d.allowed_senders, ["app@example.org", "*@*.example.org"]);
    assert_eq!(d.networks, ["10.0.0.0/8", "fd00::/8"]);
    assert_eq!(
        (d.max_message_size, d.messages_per_minute),
        (10_000_000, 600)
    );
    assert!(d.allow_unaligned_from && d.ready);
}

#[test]
fn limits_are_compiled() {
    let pool = "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: out}\nspec:\n\
                \x20 egress: [{ehloName: mta1.example.net, warmup: {start: '2026-12-01', \
                dailyLimits: [50, 100]}}]\n\
                \x20 inboundLimits: {perDomain: {messagesPerHour: 1000}, \
                perClient: {messagesPerMinute: 30, ipv6PrefixLength: 56}}\n\
                \x20 deny: {clientNetworks: [192.0.2.7, '10.9.0.0/16'], senders: ['*@Spam.example'], \
                recipientDomains: ['*.blocked.example']}\n\
                \x20 limits: {destinations: {maxConnections: 10, messagesPerMinute: 600, \
                overrides: [{destination: google.com, maxConnections: 4}]}, \
                throttle: {backoff: 30s, maxBackoff: 10m}}\n";
    let rd = domain(
        "d",
        "ns",
        "{domain: example.org, pool: out, limits: {messagesPerMinute: 60, recipientsPerDay: 9000, \
          perCredential: {messagesPerMinute: 10}, perClient: {messagesPerDay: 500}, \
          spike: {action: Hold}}}",
    );
    let compiled = compile_yaml(&format!("{pool}{rd}"));
    let p = &compiled.config.pools[0];
    let warmup = p.egress[0]
        .warmup
        .as_ref()
        .map(|w| (w.start_day, w.daily_limits.clone()));
    assert_eq!(warmup, Some((20_788, vec![50, 100])));
    let inbound = p.inbound_limits.unwrap_or_default();
    assert_eq!(inbound.per_domain.map(|r| r.messages_per_hour), Some(1_000));
    assert_eq!(
        inbound.per_client.map(|c| (
            c.messages_per_minute,
            c.ipv4_prefix_length,
            c.ipv6_prefix_length
        )),
        Some((30, 32, 56))
    );
    let deny = p.deny.clone().unwrap_or_default();
    assert_eq!(deny.client_networks, ["192.0.2.7/32", "10.9.0.0/16"]);
    assert_eq!(deny.senders, ["*@spam.example"]);
    assert_eq!(deny.recipient_domains, ["*.blocked.example"]);
    let dest = p.destinations.clone().unwrap_or_default();
    assert_eq!((dest.max_connections, dest.messages_per_minute), (10, 600));
    assert_eq!(dest.overrides[0].destination, "google.com");
    assert_eq!(
        p.throttle.as_ref().map(|t| (t.initial_secs, t.max_secs)),
        Some((30, 600))
    );
    let d = &compiled.config.domains[0];
    assert!(d.ready);
    let rates = d.rates.unwrap_or_default();
    assert_eq!(
        (rates.messages_per_minute, rates.recipients_per_day),
        (60, 9_000)
    );
    assert_eq!(
        d.credential_rates.as_ref().map(|r| r.messages_per_minute),
        Some(10)
    );
    assert_eq!(
        d.client_rates
            .as_ref()
            .map(|r| (r.messages_per_day, r.ipv4_prefix_length)),
        Some((500, 32))
    );
    assert_eq!(
        d.spike
            .as_ref()
            .map(|s| (s.action, s.factor, s.minimum_per_hour)),
        Some((baton_proto::v1::SpikeAction::Hold as i32, 10, 100))
    );
}

#[test]
fn invalid_limits_are_refused_with_their_field() {
    for (spec, field) in [
        (
            "deny: {clientNetworks: [not-a-net]}",
            "spec.deny.clientNetworks[0]",
        ),
        (
            "deny: {senders: ['a*b@example.com']}",
            "spec.deny.senders[0]",
        ),
        (
            "limits: {throttle: {backoff: 10m, maxBackoff: 1m}}",
            "spec.limits.throttle.maxBackoff",
        ),
        (
            "egress: [{ehloName: a.example, warmup: {start: '2026-02-30', dailyLimits: [1]}}]",
            "spec.egress[0].warmup.start",
        ),
    ] {
        let pool = format!(
            "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {{name: out}}\nspec: {{{spec}}}\n"
        );
        let err = compile_yaml(&pool)
            .ensure_valid()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(field), "{spec}: {err}");
    }
}

#[test]
fn missing_pool_makes_the_domain_not_ready() {
    let yaml = format!(
        "{POOL}{}",
        domain("d", "ns", "{domain: example.com, pool: nope}")
    );
    let compiled = compile_yaml(&yaml);
    let d = &compiled.config.domains[0];
    assert!(!d.ready);
    assert_eq!(d.not_ready_reason, "SendingPool \"nope\" not found");
    let r = report(&compiled, "ns/d");
    assert_eq!(cond(r, ConditionType::PoolFound), ("False", "PoolNotFound"));
    assert_eq!(cond(r, ConditionType::Ready), ("False", "PoolNotFound"));
    assert_eq!(
        r.dns_records.len(),
        1,
        "only DMARC without a pool: {:?}",
        r.dns_records
    );
}

const DKIM_SPEC: &str = "{domain: example.com, dkim: {selector: baton1, keySecretRef: {name: k}}}";

fn dkim_case(secret: &str) -> (bool, String, (&'static str, String)) {
    let yaml = format!("{POOL}{}{secret}", domain("d", "ns", DKIM_SPEC));
    let compiled = compile_yaml(&yaml);
    let d = &compiled.config.domains[0];
    let r = report(&compiled, "ns/d");
    let (status, reason) = cond(r, ConditionType::DkimKeyReady);
    assert_eq!(r.ready, d.ready);
    (
        d.ready,
        d.not_ready_reason.clone(),
        (status, reason.to_owned()),
    )
}

#[test]
fn dkim_key_secret_problems_make_only_the_domain_not_ready() {
    let (ready, why, c) = dkim_case("");
    assert!(!ready);
    assert_eq!(why, "DKIM key Secret ns/k not found");
    assert_eq!(c, ("False", "SecretNotFound".to_owned()));

    let no_key = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: k, namespace: ns}\n\
                  stringData: {other.pem: x}\n";
    assert_eq!(dkim_case(no_key).2, ("False", "KeyMissing".to_owned()));

    let garbage = dkim_secret(
        "ns",
        "k",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
    );
    assert_eq!(dkim_case(&garbage).2, ("False", "InvalidKey".to_owned()));

    let (_, why, c) = dkim_case(&dkim_secret("ns", "k", &fixture("ed25519.pem")));
    assert_eq!(c, ("False", "AlgorithmMismatch".to_owned()));
    assert!(
        why.contains("Ed25519 key but the algorithm is rsa-sha256"),
        "{why}"
    );

    let (_, why, c) = dkim_case(&dkim_secret("ns", "k", &fixture("rsa1024.pem")));
    assert_eq!(c, ("False", "InvalidKey".to_owned()), "{why}");

    let (ready, why, c) = dkim_case(&dkim_secret("ns", "k", &fixture("rsa2048.pem")));
    assert!(ready, "{why}");
    assert_eq!(c, ("True", "KeyLoaded".to_owned()));
}

#[test]
fn dkim_keys_with_rotation_and_expiry() {
    let spec = "{domain: example.com, dkim: {selector: new, algorithm: ed25519-sha256, \
                keySecretRef: {name: k2}, expireAfter: 7d, additionalKeys: \
                [{selector: old, algorithm: rsa-sha256, keySecretRef: {name: k1}}]}}";
    let yaml = format!(
        "{POOL}{}{}{}",
        domain("d", "ns", spec),
        dkim_secret("ns", "k1", &fixture("rsa2048.pem")),
        dkim_secret("ns", "k2", &fixture("ed25519.pem")),
    );
    let compiled = compile_yaml(&yaml);
    let keys = &compiled.config.domains[0].dkim_keys;
    let summary: Vec<_> = keys
        .iter()
        .map(|k| (k.selector.as_str(), k.algorithm.as_str(), k.expire_secs))
        .collect();
    assert_eq!(
        summary,
        [
            ("new", "ed25519-sha256", 604_800),
            ("old", "rsa-sha256", 604_800)
        ]
    );
    assert_eq!(keys[0].private_key_pem, fixture("ed25519.pem"));
    let names: Vec<_> = report(&compiled, "ns/d")
        .dns_records
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(
        names,
        [
            "new._domainkey.example.com",
            "old._domainkey.example.com",
            "_dmarc.example.com"
        ]
    );
}

#[test]
fn conflicts_go_to_the_oldest_claim() {
    let claim = |name: &str, ns: &str, created: Option<&str>| {
        let created = created
            .map(|c| format!(", creationTimestamp: '{c}'"))
            .unwrap_or_default();
        format!(
            "---\napiVersion: baton.dev/v1alpha1\nkind: RelayDomain\n\
             metadata: {{name: {name}, namespace: {ns}{created}}}\nspec: {{domain: example.com}}\n"
        )
    };
    // team-z's claim is older, so it wins although team-a sorts first.
    let yaml = format!(
        "{POOL}{}{}",
        claim("a", "team-a", Some("2025-02-01T00:00:00Z")),
        claim("z", "team-z", Some("2025-01-01T00:00:00Z"))
    );
    let compiled = compile_yaml(&yaml);
    assert_eq!(
        compiled.config.domains.len(),
        1,
        "the loser is left out of the snapshot"
    );
    assert_eq!(compiled.config.domains[0].name, "team-z/z");
    let loser = report(&compiled, "team-a/a");
    assert!(!loser.ready);
    assert_eq!(
        cond(loser, ConditionType::Conflict),
        ("True", "DomainClaimed")
    );
    assert_eq!(cond(loser, ConditionType::Ready), ("False", "Conflict"));
    assert_eq!(
        loser.not_ready_reason,
        "domain example.com is claimed by older RelayDomain team-z/z"
    );
    assert!(loser.dns_records.is_empty());
    let winner = report(&compiled, "team-z/z");
    assert!(winner.ready);
    assert_eq!(
        cond(winner, ConditionType::Conflict),
        ("False", "NoConflict")
    );

    // Without timestamps (files), ties break by namespace/name.
    let yaml = format!(
        "{POOL}{}{}",
        claim("z", "team-z", None),
        claim("a", "team-a", None)
    );
    let compiled = compile_yaml(&yaml);
    assert_eq!(compiled.config.domains[0].name, "team-a/a");
    assert!(!report(&compiled, "team-z/z").ready);
}

const CRED_SPEC: &str =
    "{domain: example.com, submission: {credentials: [{secretRef: {name: app}}]}}";

#[test]
fn credentials_are_hashed_and_verifiable() {
    let secret = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: app, namespace: ns}\n\
                  type: kubernetes.io/basic-auth\ndata: {username: YXBwLWE=, password: czNjcmV0LXB3}\n";
    let compiled = compile_yaml(&format!("{POOL}{}{secret}", domain("d", "ns", CRED_SPEC)));
    let d = &compiled.config.domains[0];
    assert!(d.ready);
    let cred = &d.credentials[0];
    assert_eq!(cred.username, "app-a");
    // An argon2id verifier with the documented parameters, no fast hash beside it.
    let prefix = format!(
        "$argon2id$v=19$m={},t={},p={}$",
        baton_config::compile::ARGON2_M_KIB,
        baton_config::compile::ARGON2_T,
        baton_config::compile::ARGON2_P
    );
    assert!(cred.argon2id.starts_with(&prefix), "{}", cred.argon2id);
    assert!(cred.password_sha256.is_empty() && cred.salt.is_empty());
    assert!(verify_password(cred, b"s3cret-pw"));
    assert!(!verify_password(cred, b"s3cret-pX"));
    let bytes = compiled.config.encode_to_vec();
    assert!(
        !bytes.windows(9).any(|w| w == b"s3cret-pw"),
        "password must not be in the snapshot"
    );

    // stringData works too; another Secret gives another salt.
    let other = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: app, namespace: ns2}\n\
                 stringData: {username: app-a, password: s3cret-pw}\n";
    let compiled2 = compile_yaml(&format!("{POOL}{}{other}", domain("d", "ns2", CRED_SPEC)));
    let cred2 = &compiled2.config.domains[0].credentials[0];
    assert!(verify_password(cred2, b"s3cret-pw"));
    assert_ne!(cred2.argon2id, cred.argon2id, "its own salt");
    // Deterministic: the same Secret compiles to the same verifier (the digest stays put).
    let again = compile_yaml(&format!("{POOL}{}{secret}", domain("d", "ns", CRED_SPEC)));
    assert_eq!(
        again.config.domains[0].credentials[0].argon2id,
        cred.argon2id
    );
}

#[test]
fn credential_secret_problems_make_only_the_domain_not_ready() {
    let compiled = compile_yaml(&format!("{POOL}{}", domain("d", "ns", CRED_SPEC)));
    let r = report(&compiled, "ns/d");
    assert_eq!(
        cond(r, ConditionType::Ready),
        ("False", "CredentialsSecretNotFound")
    );
    let opaque = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: app, namespace: ns}\n\
                  type: Opaque\nstringData: {username: u, password: p}\n";
    let compiled = compile_yaml(&format!("{POOL}{}{opaque}", domain("d", "ns", CRED_SPEC)));
    let r = report(&compiled, "ns/d");
    assert_eq!(
        cond(r, ConditionType::Ready),
        ("False", "InvalidCredentialsSecret")
    );
    assert!(
        r.not_ready_reason.contains("has type \"Opaque\""),
        "{}",
        r.not_ready_reason
    );
}

#[test]
fn smarthost_credentials_are_kept_for_auth() {
    let yaml = "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: relay}\nspec:\n\
                \x20 delivery:\n    mode: Smarthost\n    smarthosts:\n\
                \x20     - {host: smtp.upstream.example, port: 587, weight: 3, tls: Required,\n\
                \x20        credentialsSecretRef: {name: upstream}}\n\
                ---\napiVersion: v1\nkind: Secret\nmetadata: {name: upstream, namespace: baton-system}\n\
                stringData: {username: relay, password: up-pw}\n";
    let compiled = compile_yaml(yaml);
    let p = &compiled.config.pools[0];
    assert_eq!(p.mode, DeliveryMode::Smarthost as i32);
    let s = &p.smarthosts[0];
    assert_eq!(
        (s.host.as_str(), s.port, s.weight),
        ("smtp.upstream.example", 587, 3)
    );
    assert_eq!(s.tls, TlsPolicy::Required as i32);
    assert_eq!(
        (s.username.as_str(), s.password.as_str()),
        ("relay", "up-pw")
    );

    let missing = yaml.split("---").next().unwrap();
    let compiled = compile_yaml(missing);
    assert!(compiled.config.pools.is_empty(), "left out of the snapshot");
    assert_eq!(
        compiled.ensure_valid().unwrap_err().to_string(),
        "1 invalid object(s): SendingPool relay: spec.delivery.smarthosts[0].credentialsSecretRef: \
         Secret baton-system/upstream not found"
    );
}

#[test]
fn digest_ignores_generation_and_order_but_not_content() {
    let secrets = format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: app, namespace: ns}}\n\
         stringData: {{username: u, password: p}}\n",
        dkim_secret("ns", "k", &fixture("rsa2048.pem"))
    );
    let spec = "{domain: example.com, dkim: {selector: s, keySecretRef: {name: k}}, \
                submission: {credentials: [{secretRef: {name: app}}]}}";
    let rd = domain("d", "ns", spec);
    let other = domain("e", "ns", "{domain: example.net}");
    let res = load(&format!("{POOL}{rd}{other}{secrets}"));
    let a = compile(&res, 1, 1).unwrap().config;
    let b = compile(&res, 2, 99).unwrap().config;
    assert_eq!(config_digest(&a), config_digest(&b));
    assert_eq!(config_digest(&a).len(), 64);

    let reordered = load(&format!("{secrets}{other}{rd}{POOL}"));
    assert_eq!(
        config_digest(&compile(&reordered, 3, 3).unwrap().config),
        config_digest(&a)
    );

    let changed = load(&format!(
        "{POOL}{rd}{}{secrets}",
        other.replace("example.net", "example.io")
    ));
    assert_ne!(
        config_digest(&compile(&changed, 1, 1).unwrap().config),
        config_digest(&a)
    );
    let new_password = load(&format!(
        "{POOL}{rd}{other}{}",
        secrets.replace("password: p", "password: q")
    ));
    assert_ne!(
        config_digest(&compile(&new_password, 1, 1).unwrap().config),
        config_digest(&a)
    );
}

/// The report of the invalid pool `default` (left out of the snapshot), as one line.
fn pool_err(spec: &str) -> String {
    let compiled = compile_yaml(&POOL.replace("spec: {}", &format!("spec: {spec}")));
    assert!(compiled.config.pools.is_empty(), "{spec}: left out");
    let report = compiled.pool("default").expect("a report for the pool");
    let invalid = report.invalid.as_ref().expect("the pool is invalid");
    assert_eq!(compiled.invalid().collect::<Vec<_>>(), [invalid]);
    invalid.to_string()
}

/// The report of the invalid RelayDomain `ns/d` (left out of the snapshot), as one line.
fn domain_err(spec: &str) -> String {
    let compiled = compile_yaml(&format!("{POOL}{}", domain("d", "ns", spec)));
    assert_eq!(compiled.config.pools.len(), 1, "the pool still compiles");
    let r = report(&compiled, "ns/d");
    assert!(!r.ready);
    assert_eq!(cond(r, ConditionType::Ready), ("False", "Invalid"));
    let invalid = r.invalid.as_ref().expect("the domain is invalid");
    assert_eq!(r.not_ready_reason, invalid.detail());
    // Kept as a never-ready entry (its clients get a temporary 451), unless its very name is
    // bad (nothing could match it then).
    let entries: Vec<(&str, bool, &str)> = compiled
        .config
        .domains
        .iter()
        .map(|d| (d.name.as_str(), d.ready, d.not_ready_reason.as_str()))
        .collect();
    if invalid.field == "spec.domain" {
        assert!(entries.is_empty(), "{spec}: left out");
    } else {
        assert_eq!(
            entries,
            [("ns/d", false, r.not_ready_reason.as_str())],
            "{spec}"
        );
    }
    invalid.to_string()
}

#[test]
fn invalid_input_is_one_clear_error() {
    let cases = [
        (
            pool_err("{retry: {schedule: [1m, soon]}}"),
            "SendingPool default: spec.retry.schedule[1]: invalid duration \"soon\"",
        ),
        (
            pool_err("{retry: {maxAge: 0s}}"),
            "SendingPool default: spec.retry.maxAge: \"0s\" is shorter than 1s",
        ),
        (
            pool_err("{ehloName: baton-worker-bulk-7d9c5b8f4-x2x9q}"),
            "SendingPool default: spec.ehloName: \"baton-worker-bulk-7d9c5b8f4-x2x9q\" is not a fully qualified domain name",
        ),
        (
            pool_err("{egress: [{ehloName: a.example, weight: 0}]}"),
            "SendingPool default: spec.egress[0].weight: must be at least 1",
        ),
        (
            pool_err("{egress: [{ehloName: a.example, sourceAddress: 203.0.113.300}]}"),
            "SendingPool default: spec.egress[0].sourceAddress: \"203.0.113.300\" is not an IP address",
        ),
        (
            pool_err("{delivery: {allowedNetworks: [127.0.0.0/8, lab]}}"),
            "SendingPool default: spec.delivery.allowedNetworks[1]: \"lab\" is not a CIDR or an IP address",
        ),
        (
            pool_err("{contentFilters: [{name: av, clamd: {address: clamav}}]}"),
            "SendingPool default: spec.contentFilters[0].clamd.address: \"clamav\" is not host:port",
        ),
        (
            domain_err(
                "{domain: example.com, headers: {add: [{name: From, value: 'ceo@bank.example'}]}}",
            ),
            "RelayDomain ns/d: spec.headers.add[0].name: From fields are checked or written by Baton itself",
        ),
        (
            pool_err("{delivery: {mode: Smarthost}}"),
            "SendingPool default: spec.delivery.smarthosts: at least one smarthost is required when mode is Smarthost",
        ),
        (
            pool_err("{delivery: {mode: Smarthost, smarthosts: [{host: h.example, weight: 0}]}}"),
            "SendingPool default: spec.delivery.smarthosts[0].weight: must be at least 1",
        ),
        (
            domain_err("{domain: example.com, submission: {networks: [10.0.0.0/33]}}"),
            "RelayDomain ns/d: spec.submission.networks[0]: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            domain_err("{domain: example.com, limits: {maxMessageSize: 25MB}}"),
            "RelayDomain ns/d: spec.limits.maxMessageSize: invalid size \"25MB\"",
        ),
        (
            domain_err(
                "{domain: example.com, dkim: {selector: s, keySecretRef: {name: k}, expireAfter: weekly}}",
            ),
            "RelayDomain ns/d: spec.dkim.expireAfter: invalid duration \"weekly\"",
        ),
        (
            domain_err("{domain: Example.COM}"),
            "RelayDomain ns/d: spec.domain: \"Example.COM\" is not a lower-case DNS name",
        ),
        (
            domain_err("{domain: example.com, allowedSenders: ['*@evil.example']}"),
            "RelayDomain ns/d: spec.allowedSenders[0]: \"*@evil.example\" is not an address pattern in example.com",
        ),
        (
            compile_err(&format!("{POOL}---\n{POOL}")).to_string(),
            "duplicate SendingPool \"default\"",
        ),
        (
            compile_err(&format!("{POOL}{DOMAIN}---\n{DOMAIN}")).to_string(),
            "duplicate RelayDomain \"team-a/example-com\"",
        ),
    ];
    for (text, expected) in cases {
        assert!(
            text.starts_with(expected),
            "got:      {text}\nexpected: {expected}…"
        );
        assert!(!text.contains('\n'), "one line: {text}");
    }
    let err = compile_err(&format!("{POOL}---\n{POOL}"));
    assert!(matches!(err, ConfigError::Duplicate { .. }));
    assert_eq!(err.metric_label(), "duplicate");
}

/// `spec.returnPath`: keys from the Secret (highest id first), MX and SPF records for the
/// return-path domain; a missing Secret or a short key keeps the domain never-ready.
#[test]
fn return_path_keys_and_records() {
    let pool = "---\napiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: default}\n\
                spec: {egress: [{ehloName: mta1.example.com, sourceAddress: 203.0.113.10}]}\n";
    let spec = "{domain: example.com, returnPath: {domain: bounces.example.com, \
                mxHost: mx.baton.example.com, keySecretRef: {name: verp}}}";
    let secret = |keys: &str| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: verp, namespace: team-a}}\n\
             stringData: {{{keys}}}\n"
        )
    };
    let k32 = "0123456789abcdef0123456789abcdef";
    let ok = compile_yaml(&format!(
        "{pool}{}{}",
        domain("example-com", "team-a", spec),
        secret(&format!("key-0: '{k32}', key-3: '{k32}x'"))
    ));
    let d = &ok.config.domains[0];
    assert!(d.ready, "{}", d.not_ready_reason);
    let rp = d.return_path.clone().expect("return path");
    assert_eq!(rp.domain, "bounces.example.com");
    let ids: Vec<u32> = rp.keys.iter().map(|k| k.id).collect();
    assert_eq!(ids, [3, 0], "newest first");
    assert_eq!(rp.keys[1].secret, k32.as_bytes());
    let records = &report(&ok, "team-a/example-com").dns_records;
    let find = |name: &str, t: &str| {
        records
            .iter()
            .find(|r| r.name == name && r.rtype == t)
            .map(|r| r.value.clone())
    };
    assert_eq!(
        find("bounces.example.com", "MX").as_deref(),
        Some("10 mx.baton.example.com.")
    );
    assert_eq!(
        find("bounces.example.com", "TXT").as_deref(),
        Some("v=spf1 ip4:203.0.113.10 ~all")
    );

    for (secret_yaml, why) in [
        (String::new(), "not found"),
        (secret("key-0: short"), "at least 32"),
        (secret("other: x"), "no key-0"),
    ] {
        let c = compile_yaml(&format!(
            "{pool}{}{secret_yaml}",
            domain("example-com", "team-a", spec)
        ));
        let d = &c.config.domains[0];
        assert!(
            !d.ready && d.not_ready_reason.contains(why),
            "{why}: {}",
            d.not_ready_reason
        );
        assert!(d.return_path.is_none());
        assert_eq!(
            cond(report(&c, "team-a/example-com"), ConditionType::Ready).1,
            "ReturnPathInvalid"
        );
    }
}

/// `spec.ehloName` is a fully qualified name, normalised (lower case, no trailing dot);
/// omitted, the compiled pool has none (the workers' own name applies).
#[test]
fn a_pool_ehlo_name_is_a_normalised_fqdn() {
    let named = compile_yaml(&POOL.replace("spec: {}", "spec: {ehloName: Out.Example.COM.}"));
    assert_eq!(named.config.pools[0].ehlo_name, "out.example.com");
    let unnamed = compile_yaml(POOL);
    assert_eq!(unnamed.config.pools[0].ehlo_name, "");
}

/// `tls: Verify`, `implicitTls` and CA bundles compile into the snapshot; the bundle must hold
/// certificates and nothing else (a private key would travel in the snapshot); implicit TLS
/// needs a policy that requires TLS; credentials allowed over unverified TLS are reported.
#[test]
fn verified_upstream_tls_compiles() {
    let indent = |pem: &str| pem.replace('\n', "\n    ");
    let ca_secret = |name: &str, pem: &str| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: baton-system}}\n\
             stringData:\n  ca.crt: |\n    {}\n",
            indent(pem)
        )
    };
    let pool = |smarthost: &str| {
        format!(
            "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {{name: relay}}\nspec:\n\
             \x20 tls: {{policy: Verify, caBundleSecretRef: {{name: pool-ca}}}}\n\
             \x20 delivery:\n    mode: Smarthost\n    smarthosts:\n      - {smarthost}\n\
             ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: upstream, namespace: baton-system}}\n\
             stringData: {{username: relay, password: up-pw}}\n"
        )
    };
    let ca = fixture("ca.pem");
    let secrets = format!("{}{}", ca_secret("pool-ca", &ca), ca_secret("own-ca", &ca));
    let yaml = format!(
        "{}{secrets}",
        pool(
            "{host: smtp.upstream.example, port: 465, tls: Verify, implicitTls: true, \
              caBundleSecretRef: {name: own-ca}, credentialsSecretRef: {name: upstream}}"
        )
    );
    let compiled = compile_yaml(&yaml);
    compiled.ensure_valid().unwrap();
    let p = &compiled.config.pools[0];
    assert_eq!(p.tls_policy, TlsPolicy::Verify as i32);
    assert_eq!(p.ca_bundle_pem.trim(), ca.trim());
    let s = &p.smarthosts[0];
    assert_eq!(s.tls, TlsPolicy::Verify as i32);
    assert!(s.implicit_tls && !s.allow_unverified_credentials);
    assert_eq!(s.ca_bundle_pem.trim(), ca.trim());
    assert!(
        compiled
            .pool("relay")
            .unwrap()
            .unverified_credentials
            .is_empty()
    );

    let allowed = format!(
        "{}{secrets}",
        pool(
            "{host: smtp.upstream.example, port: 587, tls: Required, \
              credentialsSecretRef: {name: upstream}, allowUnverifiedCredentials: true}"
        )
    );
    let compiled = compile_yaml(&allowed);
    assert!(compiled.config.pools[0].smarthosts[0].allow_unverified_credentials);
    assert_eq!(
        compiled.pool("relay").unwrap().unverified_credentials,
        ["smtp.upstream.example:587"]
    );

    let invalid = |smarthost: &str, secrets: &str| {
        let compiled = compile_yaml(&format!("{}{secrets}", pool(smarthost)));
        assert!(compiled.config.pools.is_empty(), "left out of the snapshot");
        compiled.ensure_valid().unwrap_err().to_string()
    };
    let err = invalid(
        "{host: smtp.upstream.example, port: 465, implicitTls: true}",
        &secrets,
    );
    assert!(
        err.contains("smarthosts[0].implicitTls: needs tls Required or Verify"),
        "{err}"
    );
    let with_key = format!(
        "{ca}{}",
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ed25519.pem")
        )
        .unwrap()
    );
    let err = invalid(
        "{host: smtp.upstream.example, caBundleSecretRef: {name: own-ca}}",
        &format!(
            "{}{}",
            ca_secret("pool-ca", &ca),
            ca_secret("own-ca", &with_key)
        ),
    );
    assert!(
        err.contains("caBundleSecretRef: Secret baton-system/own-ca: `ca.crt` holds a"),
        "{err}"
    );
    let err = invalid(
        "{host: smtp.upstream.example}",
        &ca_secret("pool-ca", "no certificate here"),
    );
    assert!(
        err.contains("spec.tls.caBundleSecretRef: Secret baton-system/pool-ca: `ca.crt` holds no PEM certificate"),
        "{err}"
    );
    let err = invalid("{host: smtp.upstream.example}", "");
    assert!(
        err.contains("Secret baton-system/pool-ca not found"),
        "{err}"
    );
}

/// A pool that requires proof of domain ownership: its RelayDomain shows the TXT record to
/// publish and is not ready (`DomainVerified=False`) until the caller says the record was
/// found; other pools' domains are unaffected and get no such condition.
#[test]
fn domain_verification_gates_readiness() {
    use baton_config::verification::{CHALLENGE_PREFIX, challenge};
    let pool = "---\napiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: verified}\n\
                spec: {requireDomainVerification: true}\n";
    let yaml = format!(
        "{pool}{}{}",
        domain("ex", "team-a", "{domain: example.com, pool: verified}"),
        domain("other", "team-a", "{domain: example.net}"),
    );
    let mut res = load(&format!("{POOL}{yaml}"));
    let compiled = compile(&res, 1, 0).unwrap();
    let r = report(&compiled, "team-a/ex");
    assert!(!r.ready);
    assert_eq!(
        cond(r, ConditionType::DomainVerified),
        ("False", "TxtRecordMissing")
    );
    let rd = res
        .domains
        .iter()
        .find(|d| d.spec.domain == "example.com")
        .unwrap();
    let expected = challenge(rd);
    assert_eq!(expected.name, "_baton-verification.example.com");
    assert!(expected.value.starts_with(CHALLENGE_PREFIX));
    assert!(r.dns_records.contains(&expected), "{:?}", r.dns_records);
    assert!(
        r.not_ready_reason.contains(&expected.value),
        "{}",
        r.not_ready_reason
    );
    let other = report(&compiled, "team-a/other");
    assert!(other.ready && other.condition(ConditionType::DomainVerified).is_none());
    assert_eq!(
        res.verification_challenges(),
        [("team-a/ex".to_owned(), expected)]
    );

    res.verified_domains.insert("team-a/ex".into());
    let compiled = compile(&res, 1, 0).unwrap();
    let r = report(&compiled, "team-a/ex");
    assert!(r.ready, "{}", r.not_ready_reason);
    assert_eq!(
        cond(r, ConditionType::DomainVerified),
        ("True", "TxtRecordFound")
    );
}

fn sink(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: baton.dev/v1alpha1\nkind: EventSink\n\
         metadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    )
}

fn sink_secret(name: &str, ns: &str, value: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         stringData: {{secret: \"{value}\"}}\n"
    )
}

/// An EventSink compiles with its Standard Webhooks key decoded and its filter sorted; one whose
/// Secret is missing, malformed or in another namespace is reported and left out, and never
/// fails the rest of the snapshot.
#[test]
fn event_sinks_compile_with_their_own_namespace_secret_only() {
    // base64 of 32 bytes 0x01.
    let key = "whsec_AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    let yaml = [
        POOL.to_owned(),
        DOMAIN.to_owned(),
        sink(
            "hooks",
            "team-a",
            "{url: 'https://hooks.example.com/in', secretRef: {name: s}, types: [delivered, bounced, delivered], timeout: 2s}",
        ),
        sink_secret("s", "team-a", key),
        // Its Secret lives in another namespace: not visible to it.
        sink(
            "thief",
            "team-b",
            "{url: 'https://evil.example.net/', secretRef: {name: s}}",
        ),
        sink("short", "team-a", "{url: 'https://h.example/', secretRef: {name: short}}"),
        sink_secret("short", "team-a", "whsec_AQID"),
    ]
    .concat();
    let compiled = compile_yaml(&yaml);
    assert_eq!(compiled.config.domains.len(), 1, "sinks never fail domains");
    let names: Vec<_> = compiled
        .config
        .sinks
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["team-a/hooks"]);
    let s = &compiled.config.sinks[0];
    assert_eq!(s.namespace, "team-a");
    assert_eq!(s.secret, vec![1u8; 32]);
    assert_eq!(s.types, ["bounced", "delivered"]);
    assert_eq!(s.timeout_ms, 2_000);
    assert_eq!(s.max_backlog, 100_000);
    assert_eq!(s.max_event_age_ms, 86_400_000);
    let reports: Vec<_> = compiled
        .sinks
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.invalid.as_ref().map(|i| i.message.clone()),
            )
        })
        .collect();
    assert_eq!(reports[0].0, "team-a/hooks");
    assert_eq!(reports[0].1, None);
    assert!(
        reports[1]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("3 bytes"),
        "{reports:?}"
    );
    assert_eq!(reports[2].0, "team-b/thief");
    assert!(
        reports[2]
            .1
            .as_deref()
            .unwrap_or_default()
            .contains("Secret team-b/s not found"),
        "{reports:?}"
    );
    assert!(compiled.ensure_valid().is_err());
}
