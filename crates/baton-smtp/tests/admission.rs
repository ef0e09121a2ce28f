//! Admission (`SessionConfig::admission`): MAIL, RCPT and AUTH wait for the driver's
//! `admission_result` before their reply; a refusal leaves the session as it was; pipelined
//! replies stay in command order.
#![allow(clippy::unwrap_used)]

mod common;

use baton_smtp::{Admission, ForwardPath, ListenerKind, Reply, ReversePath};
use common::{Harness, codes, config};

const PLAIN_OK: &str = "AHVzZXIAc2VjcmV0";
const PLAIN_BAD: &str = "AHVzZXIAd3Jvbmc=";

fn admitting(listener: ListenerKind) -> Harness {
    let mut c = config(listener);
    c.admission = true;
    let mut h = Harness::new(c);
    h.run("EHLO client.test\r\n");
    h
}

fn rate_limited() -> Reply {
    Reply::new(450, "4.7.1", "Message rate limit of example.com exceeded")
}

#[test]
fn without_admission_nothing_is_asked() {
    let mut h = Harness::ehloed();
    let out = h.run("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@dest.test>\r\n");
    assert_eq!(codes(&out), ["250 2.1.0", "250 2.1.5"]);
    assert!(h.admissions.is_empty());
}

#[test]
fn a_grant_without_shared_limits_skips_admission() {
    let mut h = admitting(ListenerKind::Relay);
    let out = h.run(
        "MAIL FROM:<a@example.com> ENVID=unlimited\r\nRCPT TO:<b@dest.test>\r\nDATA\r\n\
         Subject: x\r\n\r\nhi\r\n.\r\n",
    );
    assert_eq!(
        codes(&out),
        [
            "250 2.1.0",
            "250 2.1.5",
            "354 End d",
            "ENQUEUE",
            "250 2.0.0"
        ]
    );
    assert!(h.admissions.is_empty(), "{:?}", h.admissions);
    // The next transaction's grant asks again.
    let out = h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&out), ["ADMIT", "250 2.1.0"]);
}

#[test]
fn mail_and_rcpt_are_admitted_before_their_250() {
    let mut h = admitting(ListenerKind::Relay);
    let out = h.run("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@dest.test>\r\n");
    assert_eq!(codes(&out), ["ADMIT", "250 2.1.0", "ADMIT", "250 2.1.5"]);
    match &h.admissions[0] {
        Admission::Mail {
            grant,
            reverse_path,
            authenticated,
            client,
        } => {
            assert_eq!(grant.relay_domain, "example.com");
            assert_eq!(grant.pool, "default");
            assert!(matches!(reverse_path, ReversePath::Mailbox(a) if a.local_part == "a"));
            assert_eq!(*authenticated, None);
            assert_eq!(client.to_string(), "192.0.2.1");
        }
        other => panic!("{other:?}"),
    }
    match &h.admissions[1] {
        Admission::Rcpt {
            grant, recipient, ..
        } => {
            assert_eq!(grant.relay_domain, "example.com");
            assert!(matches!(recipient, ForwardPath::Mailbox(m) if m.domain == "dest.test"));
        }
        other => panic!("{other:?}"),
    }
    let out = h.run("DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
    assert_eq!(codes(&out), ["354 End d", "ENQUEUE", "250 2.0.0"]);
    assert_eq!(h.enqueued[0].recipients.len(), 1);
}

#[test]
fn a_refused_mail_opens_no_transaction_and_is_not_an_error() {
    let mut h = admitting(ListenerKind::Relay);
    h.admit_answers.push_back(Some(Err(rate_limited())));
    let out = h.run("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@dest.test>\r\n");
    assert_eq!(codes(&out), ["ADMIT", "450 4.7.1", "503 5.5.1"]);
    assert!(out[1].contains("Message rate limit of example.com exceeded"));
    assert_eq!(h.session.stats().rejections.get("rate_limited"), Some(&1));
    // Only the 503 counted as a client error.
    assert_eq!(h.session.stats().errors, 1);
    assert!(!h.session.in_transaction());
    // The next MAIL is admitted normally.
    let out = h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&out), ["ADMIT", "250 2.1.0"]);
}

#[test]
fn a_permanent_refusal_counts_as_an_error() {
    let mut h = admitting(ListenerKind::Relay);
    h.admit_answers
        .push_back(Some(Err(Reply::new(550, "5.7.1", "Sender denied"))));
    let out = h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&out), ["ADMIT", "550 5.7.1"]);
    assert_eq!(h.session.stats().errors, 1);
    assert!(!h.session.in_transaction());
}

#[test]
fn a_refused_recipient_is_not_added() {
    let mut h = admitting(ListenerKind::Relay);
    h.admit_answers.push_back(Some(Ok(())));
    h.admit_answers.push_back(Some(Err(Reply::new(
        452,
        "4.5.3",
        "Recipient rate limit of example.com exceeded",
    ))));
    let out = h.run(
        "MAIL FROM:<a@example.com>\r\nRCPT TO:<one@dest.test>\r\nRCPT TO:<two@dest.test>\r\n\
         DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
    );
    assert_eq!(
        codes(&out),
        [
            "ADMIT",
            "250 2.1.0",
            "ADMIT",
            "452 4.5.3",
            "ADMIT",
            "250 2.1.5",
            "354 End d",
            "ENQUEUE",
            "250 2.0.0"
        ]
    );
    let rcpts: Vec<String> = h.enqueued[0]
        .recipients
        .iter()
        .map(|r| r.path.address().unwrap().local_part.clone())
        .collect();
    assert_eq!(rcpts, ["two"]);
}

#[test]
fn pipelined_commands_wait_for_the_answer_and_keep_their_order() {
    let mut h = admitting(ListenerKind::Relay);
    h.admit_answers.push_back(None); // the test answers MAIL itself
    let out = h.run("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@dest.test>\r\nNOOP\r\n");
    // Nothing after the MAIL runs while it waits.
    assert_eq!(codes(&out), ["ADMIT"]);
    assert!(!h.session.in_transaction());
    // More input while waiting is buffered, not executed.
    assert_eq!(codes(&h.run("RSET\r\n")), Vec::<String>::new());
    h.session.admission_result(Ok(()));
    let out = h.drain();
    assert_eq!(
        codes(&out),
        ["250 2.1.0", "ADMIT", "250 2.1.5", "250 2.0.0", "250 2.0.0"]
    );
    // RSET ran last: no transaction.
    assert!(!h.session.in_transaction());
    // A stray answer is ignored.
    h.session.admission_result(Err(rate_limited()));
    assert!(h.drain().is_empty());
}

#[test]
fn policy_refusals_are_not_sent_for_admission() {
    let mut h = admitting(ListenerKind::Relay);
    let out = h.run("MAIL FROM:<a@elsewhere.test>\r\n");
    assert_eq!(codes(&out), ["550 5.7.1"]);
    let out = h.run("MAIL FROM:<a@example.com>\r\nRCPT TO:<reject@dest.test>\r\n");
    assert_eq!(codes(&out), ["ADMIT", "250 2.1.0", "550 5.1.1"]);
    assert_eq!(h.admissions.len(), 1);
}

#[test]
fn auth_is_admitted_before_verification() {
    let mut h = admitting(ListenerKind::Smtps);
    let out = h.run(&format!("AUTH PLAIN {PLAIN_OK}\r\n"));
    assert_eq!(codes(&out), ["ADMIT", "235 2.7.0"]);
    match &h.admissions[0] {
        Admission::Auth { user, client } => {
            assert_eq!(user, "user");
            assert_eq!(client.to_string(), "192.0.2.1");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(h.session.authenticated(), Some("user"));
    let out = h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&out), ["ADMIT", "250 2.1.0"]);
    assert!(matches!(
        &h.admissions[1],
        Admission::Mail { authenticated: Some(u), .. } if u == "user"
    ));
}

#[test]
fn a_refused_auth_is_not_verified_and_not_authenticated() {
    let mut h = admitting(ListenerKind::Smtps);
    h.admit_answers.push_back(Some(Err(Reply::new(
        454,
        "4.7.0",
        "Too many failed authentication attempts, try again later",
    ))));
    // The right password, refused without verification: no AUTH failure either.
    let out = h.run(&format!("AUTH PLAIN {PLAIN_OK}\r\n"));
    assert_eq!(codes(&out), ["ADMIT", "454 4.7.0"]);
    assert_eq!(h.session.authenticated(), None);
    assert_eq!(h.session.stats().auth_failures, 0);
    assert_eq!(h.session.stats().auth_successes, 0);
    // Once admitted, it succeeds.
    let out = h.run(&format!("AUTH PLAIN {PLAIN_OK}\r\n"));
    assert_eq!(codes(&out), ["ADMIT", "235 2.7.0"]);
}

#[test]
fn a_failed_auth_is_reported_before_its_reply() {
    let mut h = admitting(ListenerKind::Smtps);
    let out = h.run(&format!("AUTH PLAIN {PLAIN_BAD}\r\n"));
    assert_eq!(codes(&out), ["ADMIT", "AUTHFAILE", "535 5.7.8"]);
    assert_eq!(out[1], "AUTHFAILED user");
    // LOGIN: the user name, then the password; admitted after the password.
    let out = h.run("AUTH LOGIN\r\ndXNlcg==\r\nd3Jvbmc=\r\n");
    assert_eq!(
        codes(&out),
        ["334 VXNlc", "334 UGFzc", "ADMIT", "AUTHFAILE", "535 5.7.8"]
    );
    assert_eq!(out[3], "AUTHFAILED user");
    // An authorisation identity other than the user fails before verification.
    let out = h.run("AUTH PLAIN YWRtaW4AdXNlcgBzZWNyZXQ=\r\n");
    assert_eq!(out[0], "AUTHFAILED user");
}

#[test]
fn terminating_while_waiting_drops_the_pending_command() {
    let mut h = admitting(ListenerKind::Relay);
    h.admit_answers.push_back(None);
    assert_eq!(codes(&h.run("MAIL FROM:<a@example.com>\r\n")), ["ADMIT"]);
    let actions = h.session.shutdown();
    assert_eq!(actions.len(), 2);
    assert!(h.session.is_closed());
    h.session.admission_result(Ok(()));
    assert!(h.drain().is_empty());
}
