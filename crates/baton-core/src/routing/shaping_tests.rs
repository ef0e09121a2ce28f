use super::*;

#[test]
fn sites_are_registrable_domains() {
    let cases = [
        ("gmail-smtp-in.l.google.com", "google.com"),
        ("alt1.gmail-smtp-in.l.google.com.", "google.com"),
        ("example-com.mail.protection.outlook.com", "outlook.com"),
        ("MX1.Example.CO.UK", "example.co.uk"),
        ("mx.example.com.au", "example.com.au"),
        ("mail.example.ne.jp", "example.ne.jp"),
        ("mx.example.gob.mx", "example.gob.mx"),
        ("mx.example.ltd.uk", "example.ltd.uk"),
        ("mx.example.de", "example.de"),
        ("mx.co.uk", "mx.co.uk"),
        ("example.com", "example.com"),
        ("localhost", "localhost"),
        ("co.uk", "co.uk"),
        ("", ""),
        ("192.0.2.1", "192.0.2.1"),
        ("[192.0.2.1]", "192.0.2.1"),
        ("[IPv6:2001:db8::1]", "2001:db8::1"),
        ("2001:DB8::1", "2001:db8::1"),
        // A three-letter TLD is no country code: `com.net` is not a public second level.
        ("a.b.com.net", "com.net"),
        // A long second level under a country code is registrable itself.
        ("mx.company.uk", "company.uk"),
    ];
    for (host, site) in cases {
        assert_eq!(site_of_host(host), site, "{host}");
    }
    assert_eq!(smarthost_site("Relay.Example.", 587), "relay.example:587");
    assert!(public_second_level("co", "uk"));
    assert!(public_second_level("blogspot", "com"));
    assert!(!public_second_level("co", "com"));
    assert!(!public_second_level("example", "uk"));
}

#[test]
fn wildcards_match_subdomains_only() {
    assert!(destination_matches("example.org", "example.org"));
    assert!(!destination_matches("example.org", "a.example.org"));
    assert!(destination_matches("*.example.org", "a.example.org"));
    assert!(destination_matches("*.example.org", "a.b.example.org"));
    assert!(!destination_matches("*.example.org", "example.org"));
    assert!(!destination_matches("*.example.org", "badexample.org"));
    assert!(!destination_matches("*.example.org", ".example.org"));
    assert!(!destination_matches("example.org", ""));
    assert!(destination_matches("example.org", "example.org."));
}

fn limits() -> DestinationLimits {
    DestinationLimits {
        max_connections: 10,
        messages_per_minute: 600,
        overrides: vec![
            DestinationOverride {
                destination: "google.com".into(),
                max_connections: 4,
                messages_per_minute: 0,
            },
            DestinationOverride {
                destination: "*.example.org".into(),
                max_connections: 0,
                messages_per_minute: 5,
            },
            DestinationOverride {
                destination: "example.net".into(),
                max_connections: 1,
                messages_per_minute: 1,
            },
            // Never reached for google.com: the first match wins.
            DestinationOverride {
                destination: "google.com".into(),
                max_connections: 99,
                messages_per_minute: 99,
            },
        ],
    }
}

#[test]
fn overrides_first_match_wins_and_zero_falls_back() {
    let l = limits();
    let got = |site: &str, domain: &str| {
        let s = l.for_destination(site, domain);
        (s.scope, s.max_connections, s.messages_per_minute)
    };
    // No override: the pool's values, counted per site.
    assert_eq!(
        got("outlook.com", "example.com"),
        ("outlook.com".into(), 10, 600)
    );
    // A site override: 0 takes the pool's value.
    assert_eq!(
        got("google.com", "gmail.com"),
        ("google.com".into(), 4, 600)
    );
    // A recipient-domain override: its own scope, shared by every domain it names.
    assert_eq!(
        got("outlook.com", "a.example.org"),
        ("domain:*.example.org".into(), 10, 5)
    );
    assert_eq!(
        got("google.com", "b.example.org"),
        ("google.com".into(), 4, 600),
        "the site's override comes first"
    );
    assert_eq!(
        got("mx.test", "example.net"),
        ("domain:example.net".into(), 1, 1)
    );
    // A site matching a domain pattern is matched as a site.
    assert_eq!(got("example.net", ""), ("example.net".into(), 1, 1));
    assert!(!l.is_empty());
    assert!(DestinationLimits::default().is_empty());
    assert!(
        DestinationLimits::default()
            .for_destination("x.test", "y.test")
            .is_unlimited()
    );
}

fn reply(line: &str) -> Reply {
    Reply::from_line(line)
}

#[test]
fn throttling_replies_are_classified() {
    let yes = [
        "421 4.7.0 Too many connections",
        "421 Service not available, closing transmission channel",
        "421 4.3.2 Too many connections from your IP",
        "421 4.4.5 Server busy, rate limited",
        "450 4.7.28 Our system has detected an unusual rate of unsolicited mail",
        "451 4.7.28 whatever the text",
        "451 4.7.500 Server busy. Please try again later from [192.0.2.1]",
        "451 4.7.650 The mail server has been temporarily rate limited",
        "452 4.7.699 anything",
        "450 4.7.1 Too many messages from your IP",
        "451 4.7.1 Rate limit exceeded",
        "451 4.7.0 Throttling: please slow down",
        "451 4.7.1 Please try again later",
        "450 4.7.0 Messages temporarily deferred due to user complaints",
    ];
    for l in yes {
        assert!(is_throttle(&reply(l)), "{l}");
    }
    let no = [
        "250 2.0.0 OK",
        "421 4.3.2 System shutting down",
        "421 4.3.2 busy, try later",
        "421 4.4.2 closing",
        "421 4.7.1 Greylisted, try again later",
        "450 4.2.0 Mailbox busy, too many messages",
        "452 4.5.3 Too many recipients",
        "451 4.3.0 Local error, try again later",
        "451 4.7.1 Greylisted, please try again later",
        "450 4.7.1 graylisting in action, try again later",
        "451 4.7.1 Client host rejected: cannot find your hostname",
        "454 4.7.0 TLS not available due to local problem",
        "550 5.7.1 Too many messages, rate limited",
        "554 5.7.28 rate",
        "451 Rate limited",
        // A status whose class disagrees with the code is not trusted.
        "451 5.7.28 rate",
        "451 4.7.700 busy",
    ];
    for l in no {
        assert!(!is_throttle(&reply(l)), "{l}");
    }
}

#[test]
fn backoff_doubles_to_the_max_with_jitter() {
    let p = BackoffPolicy::from_secs(60, 900);
    let base: Vec<i64> = (1..=7).map(|n| p.base_ms(n) / 1000).collect();
    assert_eq!(base, vec![60, 120, 240, 480, 900, 900, 900]);
    assert_eq!(p.base_ms(0), 60_000);
    assert_eq!(p.base_ms(u32::MAX), 900_000);
    // ±20 %: the extremes of r, and everything in between stays inside.
    assert_eq!(p.delay_ms(1, 0), 48_000);
    assert_eq!(p.delay_ms(1, 24_000), 72_000);
    for r in [1u64, 7, 1 << 20, u64::MAX, 123_456_789] {
        let d = p.delay_ms(2, r);
        assert!((96_000..=144_000).contains(&d), "{d}");
        // At the max, jitter only shortens.
        let d = p.delay_ms(9, r);
        assert!((720_000..=900_000).contains(&d), "{d}");
    }
    // Defaults and sanity.
    assert_eq!(BackoffPolicy::default(), BackoffPolicy::from_secs(60, 900));
    let odd = BackoffPolicy::from_secs(120, 30);
    assert_eq!((odd.initial_ms, odd.max_ms), (120_000, 120_000));
    let tiny = BackoffPolicy {
        initial_ms: 1,
        max_ms: 1,
    };
    assert_eq!(tiny.delay_ms(1, 5), 1);
}

#[test]
fn streaks_count_bursts_until_a_success() {
    let p = BackoffPolicy::from_secs(10, 100);
    let mut s = ThrottleStreaks::default();
    // r = 10_000 is the middle of the ±20 % band: exactly the base.
    let mid = |base_ms: i64| u64::try_from(base_ms * 2 / 5 / 2).unwrap();
    assert_eq!(s.throttled("a", 0, &p, mid(10_000)), 10_000);
    // The same burst (replies to connections opened before the back-off): same end.
    assert_eq!(s.throttled("a", 5_000, &p, 0), 10_000);
    assert_eq!(s.streak("a"), 1);
    // After it: the streak grows, the back-off doubles.
    assert_eq!(s.throttled("a", 10_000, &p, mid(20_000)), 30_000);
    assert_eq!(s.streak("a"), 2);
    assert_eq!(s.throttled("b", 0, &p, mid(10_000)), 10_000);
    s.succeeded("a");
    assert_eq!(s.streak("a"), 0);
    assert_eq!(s.throttled("a", 40_000, &p, mid(10_000)), 50_000);
    assert_eq!(s.streak("b"), 1);
    for i in 0..ThrottleStreaks::MAX_SITES + 5 {
        s.throttled(&format!("s{i}"), 0, &p, 0);
        assert!(s.streaks.len() <= ThrottleStreaks::MAX_SITES);
    }
}

#[test]
fn warmup_budgets_by_utc_day() {
    let w = Warmup {
        start_day: 20_000,
        daily_limits: vec![5, 50, 0, 500],
    };
    assert_eq!(
        w.budget(19_000),
        Some(5),
        "before the start: the first entry"
    );
    assert_eq!(w.budget(20_000), Some(5));
    assert_eq!(w.budget(20_001), Some(50));
    assert_eq!(w.budget(20_002), Some(0));
    assert_eq!(w.budget(20_003), Some(500));
    assert_eq!(w.budget(20_004), None, "after the last entry: unlimited");
    assert!(w.finished(30_000));
    assert!(!w.finished(20_003));
    let empty = Warmup {
        start_day: 0,
        daily_limits: vec![],
    };
    assert_eq!(empty.budget(5), None);
    // 2026-12-04T20:15:02.123Z is day 20_791; midnight is 13 h 44 m 57.877 s away.
    let t = 1_796_415_302_123;
    assert_eq!(utc_day(t), 20_791);
    assert_eq!(until_next_utc_day(t), 86_400_000 - (t % 86_400_000));
    assert_eq!(until_next_utc_day(20_792 * DAY_MS), DAY_MS);
    assert_eq!(utc_day(-1), -1);
}

#[test]
fn reasons_have_bounded_labels() {
    let labels: Vec<&str> = ShapingReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels, vec!["connections", "rate", "warmup", "backoff"]);
}

#[test]
fn uncounted_deferrals_pick_a_tier_that_covers_the_wait() {
    let s = RetrySchedule::new(
        [60, 300, 900, 3600]
            .iter()
            .map(|&x| Duration::from_secs(x))
            .collect(),
        Duration::from_secs(86_400),
    );
    let t0 = 1_000_000_000;
    let now = t0 + 10_000;
    let check = |want: i64, tier: u32, wait_min: i64| {
        let RetryDecision::Retry {
            tier: got,
            not_before_ms,
        } = uncounted_retry(&s, want, t0, now, "id/x")
        else {
            panic!("expired");
        };
        assert_eq!(got, tier, "want {want}");
        let wait = not_before_ms - now;
        assert!(
            wait >= wait_min && wait <= wait_min + wait_min / 10,
            "want {want}: waits {wait}"
        );
    };
    check(0, 0, 1_000);
    check(30_000, 0, 30_000);
    check(60_000, 0, 60_000);
    check(61_000, 1, 61_000);
    check(600_000, 2, 600_000);
    check(3_600_000, 3, 3_600_000);
    // Longer than every tier: the last tier, after its delay.
    check(50_000_000, 3, 3_600_000);
    // Never past the maximum age; expired once there.
    let late = t0 + 86_400_000 - 5_000;
    let RetryDecision::Retry { not_before_ms, .. } = uncounted_retry(&s, 60_000, t0, late, "x")
    else {
        panic!("expired");
    };
    assert_eq!(not_before_ms, t0 + 86_400_000);
    assert_eq!(
        uncounted_retry(&s, 60_000, t0, t0 + 86_400_000, "x"),
        RetryDecision::Expire
    );
}
