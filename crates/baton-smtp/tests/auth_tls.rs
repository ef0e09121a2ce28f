//! Transcript tests: STARTTLS and AUTH.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use baton_smtp::session::auth_failure_delay;
use baton_smtp::{Action, ListenerKind, SessionConfig};
use common::{AUTH_FAILURES, Harness, TestPolicy, codes, config};

/// base64("\0user\0secret")
const PLAIN_OK: &str = "AHVzZXIAc2VjcmV0";
/// base64("\0user\0wrong")
const PLAIN_BAD: &str = "AHVzZXIAd3Jvbmc=";

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut h = Harness::ehloed();
    h.auto_tls = false;
    let out = h.run("STARTTLS\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@c.test>\r\n");
    assert_eq!(out, vec!["220 2.0.0 Ready to start TLS", "STARTTLS"]);
    // Bytes arriving before the handshake completes are discarded too.
    h.session.feed(b"NOOP\r\n");
    assert!(h.drain().is_empty());
    h.session.tls_established();
    assert_eq!(h.session.stats().plaintext_after_starttls, 53);
    assert!(h.session.peer().tls);
    // Fresh state: EHLO is needed again.
    assert_eq!(
        codes(&h.run("MAIL FROM:<a@example.com>\r\n")),
        vec!["503 5.5.1"]
    );
    let out = h.run("EHLO c\r\n");
    assert!(out[0].ends_with("250 AUTH PLAIN LOGIN") && !out[0].contains("STARTTLS"));
    assert_eq!(codes(&h.run("STARTTLS\r\n")), vec!["503 5.5.1"]);
    h.run(&format!(
        "AUTH PLAIN {PLAIN_OK}\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@c.test>\r\n"
    ));
    h.run("DATA\r\nx\r\n.\r\n");
    assert!(h.enqueued[0].tls);
    assert_eq!(h.enqueued[0].authenticated.as_deref(), Some("user"));
}

#[test]
fn starttls_refusals() {
    let mut h = Harness::new(SessionConfig {
        tls_available: false,
        ..config(ListenerKind::Relay)
    });
    assert_eq!(codes(&h.run("STARTTLS\r\n")), vec!["502 5.5.1"]);
    let mut h = Harness::ehloed();
    assert_eq!(codes(&h.run("STARTTLS now\r\n")), vec!["501 5.5.4"]);
    let mut h = Harness::tls_ehloed();
    assert_eq!(codes(&h.run("STARTTLS\r\n")), vec!["503 5.5.1"]);
}

#[test]
fn auth_refused_before_tls() {
    let mut h = Harness::ehloed();
    let out = h.run(&format!("AUTH PLAIN {PLAIN_OK}\r\n"));
    assert!(
        out.len() == 1 && out[0].starts_with("538 5.7.11 "),
        "{out:?}"
    );
    assert!(h.session.authenticated().is_none());
}

#[test]
fn auth_plain_initial_and_continuation() {
    let mut h = Harness::tls_ehloed();
    assert_eq!(
        h.run(&format!("AUTH PLAIN {PLAIN_OK}\r\n")),
        vec!["235 2.7.0 Authentication successful"]
    );
    assert_eq!(h.session.authenticated(), Some("user"));
    assert_eq!(codes(&h.run("AUTH PLAIN\r\n")), vec!["503 5.5.1"]);

    let mut h = Harness::tls_ehloed();
    assert_eq!(h.run("AUTH PLAIN\r\n"), vec!["334 "]);
    assert_eq!(codes(&h.run(&format!("{PLAIN_OK}\r\n"))), vec!["235 2.7.0"]);

    // authzid different from authcid.
    let mut h = Harness::tls_ehloed();
    // base64("admin\0user\0secret")
    assert_eq!(
        codes(&h.run("AUTH PLAIN YWRtaW4AdXNlcgBzZWNyZXQ=\r\n")),
        vec!["535 5.7.8"]
    );
    // Same authzid is fine: base64("user\0user\0secret")
    assert_eq!(
        codes(&h.run("AUTH PLAIN dXNlcgB1c2VyAHNlY3JldA==\r\n")),
        vec!["235 2.7.0"]
    );
}

#[test]
fn auth_login_success_failure_cancel() {
    let mut h = Harness::tls_ehloed();
    assert_eq!(h.run("AUTH LOGIN\r\n"), vec!["334 VXNlcm5hbWU6"]);
    assert_eq!(h.run("dXNlcg==\r\n"), vec!["334 UGFzc3dvcmQ6"]);
    assert_eq!(codes(&h.run("c2VjcmV0\r\n")), vec!["235 2.7.0"]);

    let mut h = Harness::tls_ehloed();
    assert_eq!(h.run("AUTH LOGIN dXNlcg==\r\n"), vec!["334 UGFzc3dvcmQ6"]);
    assert_eq!(
        h.run("d3Jvbmc=\r\n"),
        vec!["535 5.7.8 Error: authentication failed"]
    );
    assert_eq!(
        h.run("AUTH LOGIN\r\n*\r\n"),
        vec!["334 VXNlcm5hbWU6", "501 5.0.0 Authentication cancelled"]
    );
    assert_eq!(codes(&h.run("AUTH PLAIN !!!\r\n")), vec!["501 5.5.2"]);
    assert_eq!(
        codes(&h.run("AUTH PLAIN\r\n%%%\r\n")),
        vec!["334 ", "501 5.5.2"]
    );
    assert_eq!(codes(&h.run("AUTH CRAM-MD5\r\n")), vec!["504 5.5.4"]);
    assert_eq!(h.session.stats().auth_failures, 1);
    assert!(h.session.authenticated().is_none());
}

#[test]
fn auth_during_transaction_and_long_continuation() {
    // Relay over STARTTLS: MAIL without AUTH opens a transaction (465/587 would refuse it).
    let mut h = Harness::ehloed();
    h.run("STARTTLS\r\n");
    h.run("EHLO client.test\r\n");
    assert_eq!(
        codes(&h.run("MAIL FROM:<a@example.com>\r\n")),
        vec!["250 2.1.0"]
    );
    assert_eq!(
        codes(&h.run(&format!("AUTH PLAIN {PLAIN_OK}\r\n"))),
        vec!["503 5.5.1"]
    );
    let mut h = Harness::tls_ehloed();
    h.run("AUTH PLAIN\r\n");
    let long = format!("{}\r\nNOOP\r\n", "A".repeat(20_000));
    assert_eq!(codes(&h.run(&long)), vec!["500 5.5.6", "250 2.0.0"]);
}

#[test]
fn auth_failure_limit_closes() {
    let mut h = Harness::tls_ehloed();
    assert_eq!(
        codes(&h.run(&format!("AUTH PLAIN {PLAIN_BAD}\r\n"))),
        vec!["535 5.7.8"]
    );
    assert_eq!(
        codes(&h.run(&format!("AUTH PLAIN {PLAIN_BAD}\r\n"))),
        vec!["535 5.7.8"]
    );
    let out = h.run(&format!(
        "AUTH PLAIN {PLAIN_OK}\r\nAUTH PLAIN {PLAIN_BAD}\r\n"
    ));
    assert_eq!(codes(&out), vec!["235 2.7.0", "503 5.5.1"]);
    let mut h = Harness::tls_ehloed();
    let bad = format!("AUTH PLAIN {PLAIN_BAD}\r\n");
    let out = h.run(&bad.repeat(4));
    assert_eq!(
        codes(&out),
        vec!["535 5.7.8", "535 5.7.8", "421 4.7.0", "CLOSE"]
    );
    assert!(h.session.is_closed());
}

/// Every failed AUTH is reported to the policy with the user name as given, and its reply is
/// held back by a delay that doubles per failure in the session, up to the cap.
#[test]
fn auth_failures_are_reported_and_slowed_down() {
    let mut h = Harness::new(SessionConfig {
        max_auth_failures: 6,
        auth_failure_delay: Duration::from_secs(1),
        auth_failure_delay_max: Duration::from_secs(5),
        ..config(ListenerKind::Smtps)
    });
    h.run("EHLO c\r\n");
    // base64("admin\0user\0secret"): the authorisation identity is refused too.
    let input = format!(
        "AUTH PLAIN {PLAIN_BAD}\r\nAUTH PLAIN YWRtaW4AdXNlcgBzZWNyZXQ=\r\n\
         AUTH LOGIN ZXZlDQo=\r\nd3Jvbmc=\r\n{}",
        format!("AUTH PLAIN {PLAIN_BAD}\r\n").repeat(3)
    );
    h.session.feed(input.as_bytes());
    let mut seen = Vec::new();
    while let Some(a) = h.session.poll(&TestPolicy) {
        seen.push(match a {
            Action::Delay(d) => format!("DELAY {}s", d.as_secs()),
            Action::Send(r) => r.code.to_string(),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        seen,
        [
            "DELAY 1s", "535", "DELAY 2s", "535", "334", "DELAY 4s", "535", "DELAY 5s", "535",
            "DELAY 5s", "535", "DELAY 5s", "421", "Close"
        ]
    );
    let reported = AUTH_FAILURES.with(|f| f.borrow().clone());
    let users: Vec<&str> = reported.iter().map(|(_, u)| u.as_str()).collect();
    assert_eq!(users, ["user", "user", "eve\r\n", "user", "user", "user"]);
    assert!(reported.iter().all(|(l, _)| *l == ListenerKind::Smtps));
}

#[test]
fn auth_failure_delay_grows_and_is_capped() {
    let (s, max) = (Duration::from_secs(1), Duration::from_secs(30));
    let d = |n| auth_failure_delay(n, s, max).as_secs();
    assert_eq!(
        (0..8).map(d).collect::<Vec<_>>(),
        [0, 1, 2, 4, 8, 16, 30, 30]
    );
    assert_eq!(d(u32::MAX), 30);
    assert_eq!(d(33), 30);
    assert_eq!(auth_failure_delay(3, Duration::ZERO, max), Duration::ZERO);
    assert_eq!(
        auth_failure_delay(2, Duration::from_millis(300), max),
        Duration::from_millis(600)
    );
    assert_eq!(
        auth_failure_delay(40, Duration::MAX, Duration::from_secs(9)),
        Duration::from_secs(9)
    );
}

#[test]
fn submission_after_auth_can_send() {
    let mut h = Harness::new(config(ListenerKind::Submission));
    h.auto_tls = false;
    h.run("EHLO c\r\n");
    assert_eq!(codes(&h.run("STARTTLS\r\n")), vec!["220 2.0.0", "STARTTLS"]);
    h.session.tls_established();
    h.run(&format!("EHLO c\r\nAUTH PLAIN {PLAIN_OK}\r\n"));
    let out = h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&out), vec!["250 2.1.0"]);
    // Implicit TLS (465) is submission too: AUTH before MAIL.
    let mut h = Harness::tls_ehloed();
    let out = h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&out), vec!["530 5.7.0"]);
    h.run(&format!("AUTH PLAIN {PLAIN_OK}\r\n"));
    let out = h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&out), vec!["250 2.1.0"]);
    // The policy sees the authenticated user.
    let _ = TestPolicy;
    let _ = Action::Close;
}
