#![allow(clippy::unwrap_used)]

use super::*;
use baton_proto::v1::Credential as ProtoCredential;
use proptest::prelude::*;

fn cred(username: &str, salt: &[u8], password: &str) -> ProtoCredential {
    ProtoCredential {
        username: username.into(),
        salt: hex::encode(salt),
        password_sha256: hex::encode(salted_sha256(salt, password)),
        ..Default::default()
    }
}

fn rd(name: &str, domain: &str, senders: &[&str], networks: &[&str]) -> RelayDomain {
    RelayDomain {
        name: name.into(),
        domain: domain.into(),
        pool: "default".into(),
        allowed_senders: senders.iter().map(|s| s.to_string()).collect(),
        networks: networks.iter().map(|s| s.to_string()).collect(),
        ready: true,
        max_message_size: 1000,
        ..Default::default()
    }
}

fn index() -> PolicyIndex {
    let mut shop = rd(
        "shop/mail",
        "example.com",
        &["*@example.com"],
        &["10.0.0.0/8"],
    );
    shop.credentials = vec![
        cred("shop", b"salt1", "s3cret"),
        cred("shared", b"s", "one"),
    ];
    let mut sub = rd(
        "shop/sub",
        "example.com",
        &["*@*.example.com"],
        &["10.1.0.0/16"],
    );
    sub.credentials = vec![cred("shared", b"t", "two")];
    let app = rd(
        "app/mail",
        "app.org",
        &["noreply@app.org"],
        &["192.168.1.7", "2001:db8::/32"],
    );
    let mut down = rd("down/mail", "down.net", &["*@down.net"], &["172.16.0.0/12"]);
    down.ready = false;
    down.not_ready_reason = "DKIM key not ready".into();
    let bad = rd(
        "bad/x",
        "bad.net",
        &["nonsense", "*@bad.net"],
        &["not-a-cidr"],
    );
    PolicyIndex::new(&RelayConfig {
        domains: vec![shop, sub, app, down, bad],
        pools: vec![SendingPool {
            name: "default".into(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn skipped_entries_are_reported() {
    let idx = index();
    let labels: Vec<_> = idx.skipped().iter().map(|e| e.metric_label()).collect();
    assert_eq!(labels, ["invalid_network", "invalid_sender_pattern"]);
    assert!(idx.domain("shop/mail").is_some());
    assert!(idx.domain("nope/x").is_none());
    assert!(idx.pool("default").is_some());
    assert!(idx.pool("other").is_none());
    let names: Vec<_> = idx.domains().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["app/mail", "bad/x", "down/mail", "shop/mail", "shop/sub"]
    );
}

#[test]
fn invalid_credentials_are_skipped() {
    let mut d = rd("a/b", "a.com", &["*@a.com"], &[]);
    d.credentials = vec![
        ProtoCredential {
            username: "u".into(),
            salt: "zz".into(),
            password_sha256: "00".into(),
            ..Default::default()
        },
        ProtoCredential {
            username: "v".into(),
            salt: "00".into(),
            password_sha256: "0011".into(),
            ..Default::default()
        },
        ProtoCredential {
            username: "w".into(),
            argon2id: "not a PHC string".into(),
            ..Default::default()
        },
    ];
    let idx = PolicyIndex::new(&RelayConfig {
        domains: vec![d],
        ..Default::default()
    });
    assert_eq!(idx.skipped().len(), 3);
    assert!(idx.authenticate("u", "").is_none());
}

#[test]
fn authenticate() {
    let idx = index();
    assert_eq!(
        idx.authenticate("shop", "s3cret").as_deref(),
        Some("shop/mail")
    );
    assert!(idx.authenticate("shop", "s3cret ").is_none());
    assert!(idx.authenticate("Shop", "s3cret").is_none());
    assert!(idx.authenticate("nobody", "s3cret").is_none());
    assert!(idx.authenticate("", "").is_none());
    // The same username in two RelayDomains: either password works, for its own domain only.
    assert_eq!(
        idx.authenticate("shared", "one").as_deref(),
        Some("shop/mail")
    );
    assert_eq!(
        idx.authenticate("shared", "two").as_deref(),
        Some("shop/sub")
    );
    assert!(idx.authenticate("shared", "three").is_none());
    assert!(constant_time_eq(b"ab", b"ab"));
    assert!(!constant_time_eq(b"ab", b"ac"));
    assert!(!constant_time_eq(b"ab", b"abc"));
}

#[test]
fn grant_by_network() {
    let idx = index();
    let g = idx
        .authorize_sender(ip("10.2.3.4"), None, Some(("app", "example.com")), false)
        .unwrap();
    assert_eq!(
        g,
        SenderGrant {
            relay_domain: "shop/mail".into(),
            pool: "default".into(),
            max_message_size: 1000
        }
    );
    // IPv4-mapped IPv6 client addresses match IPv4 networks.
    assert!(
        idx.authorize_sender(
            ip("::ffff:10.2.3.4"),
            None,
            Some(("a", "example.com")),
            false
        )
        .is_ok()
    );
    // A bare address in `networks` is a single host.
    assert!(
        idx.authorize_sender(ip("192.168.1.7"), None, Some(("noreply", "app.org")), false)
            .is_ok()
    );
    assert!(
        idx.authorize_sender(ip("2001:db8::5"), None, Some(("noreply", "app.org")), false)
            .is_ok()
    );
    let r = idx
        .authorize_sender(ip("192.168.1.8"), None, Some(("noreply", "app.org")), false)
        .unwrap_err();
    assert_eq!((r.code, r.status), (530, "5.7.0"));
}

/// A credential speaks only for the RelayDomain whose Secret it came from: the user name
/// `shared` verified with shop/sub's password may send as `*.example.com` (shop/sub), not as
/// `example.com` (shop/mail), even though shop/mail has a credential with the same name.
#[test]
fn a_credential_authorises_only_its_own_relay_domain() {
    let idx = index();
    let far = ip("8.8.8.8");
    let sub_scope = idx.authenticate("shared", "two").unwrap();
    let sub = Some(Auth {
        username: "shared",
        scope: &sub_scope,
    });
    let g = idx
        .authorize_sender(far, sub, Some(("a", "news.example.com")), true)
        .unwrap();
    assert_eq!(g.relay_domain, "shop/sub");
    let r = idx
        .authorize_sender(far, sub, Some(("a", "example.com")), true)
        .unwrap_err();
    assert_eq!(r.code, 550, "{r}");
    // With shop/mail's password it is the other way round.
    let mail_scope = idx.authenticate("shared", "one").unwrap();
    let mail = Some(Auth {
        username: "shared",
        scope: &mail_scope,
    });
    let g = idx
        .authorize_sender(far, mail, Some(("a", "example.com")), true)
        .unwrap();
    assert_eq!(g.relay_domain, "shop/mail");
}

#[test]
fn grant_by_auth() {
    let idx = index();
    let scope = idx.authenticate("shop", "s3cret").unwrap();
    let shop = Some(Auth {
        username: "shop",
        scope: &scope,
    });
    let g = idx
        .authorize_sender(ip("8.8.8.8"), shop, Some(("x", "Example.COM")), true)
        .unwrap();
    assert_eq!(g.relay_domain, "shop/mail");
    let r = idx
        .authorize_sender(
            ip("8.8.8.8"),
            Some(Auth {
                username: "stranger",
                scope: "shop/mail",
            }),
            Some(("x", "example.com")),
            false,
        )
        .unwrap_err();
    assert_eq!(
        r.to_string(),
        "550 5.7.1 Relay access denied: client not authorised"
    );
    // `shop` may not send as app.org.
    let r = idx
        .authorize_sender(ip("8.8.8.8"), shop, Some(("noreply", "app.org")), false)
        .unwrap_err();
    assert_eq!(
        r.to_string(),
        "550 5.7.1 Sender address <noreply@app.org> not allowed for this client"
    );
}

#[test]
fn submission_listener_requires_auth() {
    let idx = index();
    let r = idx
        .authorize_sender(ip("10.2.3.4"), None, Some(("a", "example.com")), true)
        .unwrap_err();
    assert_eq!(r.reason, "auth_required");
}

#[test]
fn subdomain_grants_and_specificity() {
    let idx = index();
    // 10.1.x is authorised by both shop/mail and shop/sub; only shop/sub allows subdomains.
    let g = idx
        .authorize_sender(ip("10.1.0.1"), None, Some(("a", "news.example.com")), false)
        .unwrap();
    assert_eq!(g.relay_domain, "shop/sub");
    let g = idx
        .authorize_sender(ip("10.1.0.1"), None, Some(("a", "example.com")), false)
        .unwrap();
    assert_eq!(g.relay_domain, "shop/mail");
    // Outside 10.1/16 the subdomain pattern is not available.
    assert!(
        idx.authorize_sender(ip("10.2.0.1"), None, Some(("a", "news.example.com")), false)
            .is_err()
    );
}

#[test]
fn exact_local_part() {
    let idx = index();
    let c = ip("192.168.1.7");
    assert!(
        idx.authorize_sender(c, None, Some(("noreply", "APP.org")), false)
            .is_ok()
    );
    assert!(
        idx.authorize_sender(c, None, Some(("NoReply", "app.org")), false)
            .is_err()
    );
    assert!(
        idx.authorize_sender(c, None, Some(("\"noreply\"", "app.org")), false)
            .is_err()
    );
    assert!(
        idx.authorize_sender(c, None, Some(("other", "app.org")), false)
            .is_err()
    );
}

#[test]
fn not_ready_is_temporary() {
    let idx = index();
    let r = idx
        .authorize_sender(ip("172.16.0.1"), None, Some(("a", "down.net")), false)
        .unwrap_err();
    assert_eq!(r.to_string(), "451 4.7.5 down.net: DKIM key not ready");
    let r = idx
        .authorize_sender(ip("172.16.0.1"), None, None, false)
        .unwrap_err();
    assert_eq!(r.code, 451);
}

#[test]
fn null_sender_uses_first_ready_authorising_domain() {
    let idx = index();
    let g = idx
        .authorize_sender(ip("10.1.0.1"), None, None, false)
        .unwrap();
    assert_eq!(g.relay_domain, "shop/mail");
    let r = idx
        .authorize_sender(ip("8.8.8.8"), None, None, false)
        .unwrap_err();
    assert_eq!(r.code, 530);
}

#[test]
fn never_an_open_relay_for_odd_forms() {
    let idx = index();
    let c = ip("10.2.3.4"); // authorised only for *@example.com
    let ok = |l: &str, d: &str| idx.authorize_sender(c, None, Some((l, d)), false).is_ok();
    // Mailboxes *at* example.com, whatever their local part: allowed, they are example.com's.
    assert!(ok("user%evil.com", "example.com"));
    assert!(ok("\"x@evil\"", "example.com"));
    assert!(ok("a", "EXAMPLE.COM"));
    // Everything else is refused.
    for d in [
        "example.com.",
        "[1.2.3.4]",
        "[IPv6:2001:db8::1]",
        "example.com.evil.com",
        "evilexample.com",
        "evil.com",
        "sub.example.com",
        "com",
        "",
        "example..com",
        "exa mple.com",
        "example.com@evil.com",
    ] {
        assert!(!ok("a", d), "{d}");
    }
}

#[test]
fn pattern_outside_own_domain_is_ignored() {
    // A misconfigured pattern cannot widen a RelayDomain beyond its own domain.
    let d = rd("a/b", "a.com", &["*@other.com", "*@a.com"], &["10.0.0.0/8"]);
    let idx = PolicyIndex::new(&RelayConfig {
        domains: vec![d],
        ..Default::default()
    });
    let c = ip("10.0.0.1");
    assert!(
        idx.authorize_sender(c, None, Some(("x", "other.com")), false)
            .is_err()
    );
    assert!(
        idx.authorize_sender(c, None, Some(("x", "a.com")), false)
            .is_ok()
    );
}

/// Author fields of a message whose `From:` is `from` (and `Sender:` when given).
fn msg(from: &str, sender: Option<&str>) -> Result<Authors, AuthorError> {
    let sender = sender
        .map(|s| format!("Sender: {s}\r\n"))
        .unwrap_or_default();
    crate::authors::authors(format!("From: {from}\r\n{sender}\r\nbody\r\n").as_bytes())
}

#[test]
fn from_alignment() {
    let idx = index();
    let check = |s: &str, a: &Result<Authors, AuthorError>| idx.check_authors("shop/mail", s, a);
    assert!(check("example.com", &msg("a@example.com", None)).is_ok());
    assert!(check("example.com", &msg("a@Example.com", None)).is_ok());
    assert!(check("example.com", &msg("a@news.example.com", None)).is_ok());
    assert!(check("news.example.com", &msg("a@example.com", None)).is_ok());
    assert!(check("other.org", &msg("a@other.org", None)).is_ok());
    assert!(check("", &msg("a@example.com", None)).is_ok());
    let r = check("example.com", &msg("a@evil.com", None)).unwrap_err();
    assert_eq!(r.reason, "from_unaligned");
    assert_eq!(r.code, 550);
    assert_eq!(r.status, "5.7.1");
    assert!(check("example.com", &msg("a@evilexample.com", None)).is_err());
    assert!(check("example.com", &msg("a@example.com.evil.com", None)).is_err());
    let r = check("example.com", &Err(AuthorError::NoFrom)).unwrap_err();
    assert_eq!(r.to_string(), "550 5.6.0 Message has no From: header");
    let r = idx
        .check_authors("gone/x", "example.com", &msg("a@example.com", None))
        .unwrap_err();
    assert_eq!(r.code, 451);

    let mut d = rd("a/b", "a.com", &["*@a.com"], &[]);
    d.allow_unaligned_from = true;
    let idx = PolicyIndex::new(&RelayConfig {
        domains: vec![d],
        ..Default::default()
    });
    assert!(
        idx.check_authors("a/b", "a.com", &msg("x@b.com", None))
            .is_ok()
    );
    assert!(
        idx.check_authors("a/b", "a.com", &Err(AuthorError::NoFrom))
            .is_err()
    );
    let r = idx
        .check_authors("a/b", "a.com", &Err(AuthorError::SeveralFrom(2)))
        .unwrap_err();
    assert_eq!((r.code, r.status), (550, "5.6.0"));
}

/// Every author mailbox is checked, not only the first (the four bypasses, each with
/// a Sender: so that only alignment decides), and the Sender: mailbox too.
#[test]
fn every_author_is_aligned() {
    let idx = index();
    let check = |a: &Result<Authors, AuthorError>| idx.check_authors("shop/mail", "example.com", a);
    let ok = Some("app@example.com");
    for (from, sender, want) in [
        (
            "app@example.com, boss@bank.example",
            ok,
            Some("from_unaligned"),
        ),
        (
            "boss@bank.example, app@example.com",
            ok,
            Some("from_unaligned"),
        ),
        (
            "grp: app@example.com, boss@bank.example;",
            ok,
            Some("from_unaligned"),
        ),
        (
            "grp: app@example.com;, x: boss@bank.example;",
            ok,
            Some("from_unaligned"),
        ),
        ("app@example.com, ops@news.example.com", ok, None),
        (
            "app@example.com",
            Some("boss@bank.example"),
            Some("sender_unaligned"),
        ),
        ("app@example.com", Some("Ops <ops@news.example.com>"), None),
        (
            "app@example.com, boss@bank.example",
            None,
            Some("sender_required"),
        ),
        (
            "<boss@bank.example> <app@example.com>",
            ok,
            Some("from_malformed"),
        ),
    ] {
        let r = check(&msg(from, sender));
        assert_eq!(
            r.as_ref().err().map(|r| r.reason),
            want,
            "{from} / {sender:?}"
        );
        if let Err(r) = r {
            assert_eq!(r.code, 550);
        }
    }
    let r = check(&crate::authors::authors(
        b"From: app@example.com\r\nFrom: boss@bank.example\r\n\r\n",
    ))
    .unwrap_err();
    assert_eq!(
        (r.code, r.status, r.reason),
        (550, "5.6.0", "from_duplicate")
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random sender strings never obtain a grant for a domain they are not within.
    #[test]
    fn never_an_open_relay(
        local in "[a-zA-Z0-9%!\"@.+*\\[\\]-]{0,12}",
        domain in "[a-zA-Z0-9.\\[\\]:_ -]{0,20}(\\.?(example\\.com|app\\.org|EXAMPLE\\.com))?\\.?",
        auth in prop::option::of(prop::sample::select(vec![
            ("shop", "s3cret"), ("shared", "one"), ("shared", "two"), ("nobody", "x"),
        ])),
        client in prop::sample::select(vec!["10.1.2.3", "10.2.0.1", "192.168.1.7", "8.8.8.8"]),
    ) {
        let idx = index();
        // Only what AUTH verified is passed on, as the session does.
        let verified = auth.and_then(|(u, p)| idx.authenticate(u, p).map(|scope| (u, scope)));
        let a = verified.as_ref().map(|(u, scope)| Auth { username: u, scope });
        if let Ok(g) = idx.authorize_sender(ip(client), a, Some((&local, &domain)), false) {
            let rd = idx.domain(&g.relay_domain).unwrap();
            let d = domain.to_lowercase();
            let suffix = format!(".{}", rd.domain);
            prop_assert!(d == rd.domain || d.ends_with(&suffix));
            prop_assert!(!d.ends_with('.') && !d.starts_with('['));
            // And the RelayDomain authorises this client.
            let by_net = rd.networks.iter().filter_map(|n| parse_network(n))
                .any(|n| n.contains(&ip(client)));
            // By AUTH only with this RelayDomain's own credential (its name in the scope).
            let by_auth = a.is_some_and(|a| {
                a.domains().any(|d| d == g.relay_domain)
                    && rd.credentials.iter().any(|c| c.username == a.username)
            });
            prop_assert!(by_net || by_auth);
        }
    }
}

/// An argon2id credential (what the compiler produces) with cheap test parameters: the right
/// password verifies, another does not; the dummy verifier for unknown users parses (so it
/// costs a real verification).
#[test]
fn argon2id_credentials_verify() {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let params = argon2::Params::new(64, 1, 1, Some(32)).unwrap();
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let phc = argon.hash_password(b"s3cret", &salt).unwrap().to_string();
    let mut d = rd("team/app", "example.org", &["*@example.org"], &[]);
    d.credentials = vec![ProtoCredential {
        username: "app".into(),
        argon2id: phc,
        ..Default::default()
    }];
    let idx = PolicyIndex::new(&RelayConfig {
        domains: vec![d],
        ..Default::default()
    });
    assert!(idx.skipped().is_empty(), "{:?}", idx.skipped());
    assert_eq!(
        idx.authenticate("app", "s3cret").as_deref(),
        Some("team/app")
    );
    assert_eq!(idx.authenticate("app", "s3creT"), None);
    assert_eq!(idx.authenticate("nobody", "s3cret"), None);
    assert!(argon2::password_hash::PasswordHash::new(DUMMY_ARGON2ID).is_ok());
}
