//! Transcript tests: command sequencing, limits and error accounting.
#![allow(clippy::unwrap_used)]

mod common;

use baton_smtp::{ForwardPath, ListenerKind, Reply, SessionConfig};
use common::{Harness, codes, config};

const MAIL: &str = "MAIL FROM:<alice@example.com>\r\n";
const RCPT: &str = "RCPT TO:<bob@dest.test>\r\n";

#[test]
fn ehlo_advertises_extensions_without_auth_before_tls() {
    let mut h = Harness::relay();
    let out = h.run("EHLO client.test\r\n");
    assert_eq!(
        out,
        vec![
            "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-CHUNKING\r\n250-DSN\r\n250 STARTTLS"
        ]
    );
    let mut no_cert = Harness::new(SessionConfig {
        tls_available: false,
        ..config(ListenerKind::Relay)
    });
    let out = no_cert.run("EHLO client.test\r\n");
    assert!(out[0].ends_with("250 DSN"), "{out:?}");
}

#[test]
fn ehlo_over_tls_offers_auth_not_starttls() {
    let mut h = Harness::new(config(ListenerKind::Smtps));
    let out = h.run("EHLO client.test\r\n");
    assert!(
        out[0].ends_with("250-DSN\r\n250 AUTH PLAIN LOGIN"),
        "{out:?}"
    );
    assert!(!out[0].contains("STARTTLS"));
}

#[test]
fn helo_and_missing_arguments() {
    let mut h = Harness::relay();
    assert_eq!(h.run("HELO client.test\r\n"), vec!["250 mx.test"]);
    assert_eq!(codes(&h.run("EHLO\r\n")), vec!["501 5.5.4"]);
    assert_eq!(codes(&h.run("HELO \r\n")), vec!["501 5.5.4"]);
}

#[test]
fn pipelined_transaction_in_one_feed() {
    let mut h = Harness::relay();
    let input = format!(
        "EHLO client.test\r\n{MAIL}{RCPT}RCPT TO:<postmaster>\r\nDATA\r\nSubject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    );
    let out = h.run(&input);
    assert_eq!(
        &out[1..],
        &[
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "ENQUEUE",
            "250 2.0.0 Ok: queued as Q1",
            "221 2.0.0 Bye",
            "CLOSE",
        ]
    );
    let t = &h.enqueued[0];
    assert_eq!(t.body, b"Subject: hi\r\n\r\nbody\r\n");
    assert_eq!(t.helo, "client.test");
    assert_eq!(t.reverse_path.to_string(), "<alice@example.com>");
    assert_eq!(t.recipients.len(), 2);
    assert_eq!(t.recipients[1].path, ForwardPath::Postmaster);
    assert_eq!(t.grant.pool, "default");
    assert!(!t.tls);
    assert!(h.session.is_closed());
    h.session.feed(b"NOOP\r\n");
    assert!(h.drain().is_empty());
}

#[test]
fn nothing_is_processed_while_waiting_for_enqueue() {
    let mut h = Harness::ehloed();
    h.auto_enqueue = false;
    let out = h.run(&format!("{MAIL}{RCPT}DATA\r\nx\r\n.\r\nNOOP\r\nQUIT\r\n"));
    assert_eq!(
        codes(&out),
        vec!["250 2.1.0", "250 2.1.5", "354 End d", "ENQUEUE"]
    );
    assert!(h.drain().is_empty());
    h.session
        .enqueue_result(Err(Reply::new(451, "4.3.0", "Error: queue unavailable")));
    assert_eq!(
        h.drain(),
        vec![
            "451 4.3.0 Error: queue unavailable",
            "250 2.0.0 Ok",
            "221 2.0.0 Bye",
            "CLOSE"
        ]
    );
    assert!(!h.session.in_transaction());
}

#[test]
fn sequencing_errors() {
    let mut h = Harness::relay();
    assert_eq!(codes(&h.run(MAIL)), vec!["503 5.5.1"]);
    h.run("EHLO c\r\n");
    assert_eq!(codes(&h.run(RCPT)), vec!["503 5.5.1"]);
    assert_eq!(codes(&h.run("DATA\r\n")), vec!["503 5.5.1"]);
    assert_eq!(codes(&h.run(MAIL)), vec!["250 2.1.0"]);
    assert!(h.session.in_transaction());
    assert_eq!(codes(&h.run(MAIL)), vec!["503 5.5.1"]);
    assert_eq!(codes(&h.run("DATA\r\n")), vec!["554 5.5.1"]);
    assert_eq!(codes(&h.run("RSET\r\n")), vec!["250 2.0.0"]);
    assert!(!h.session.in_transaction());
    assert_eq!(codes(&h.run(MAIL)), vec!["250 2.1.0"]);
    h.run("EHLO c\r\n");
    assert!(!h.session.in_transaction(), "EHLO resets the transaction");
}

#[test]
fn policy_and_parameter_rejections() {
    let mut h = Harness::ehloed();
    assert_eq!(
        h.run("MAIL FROM:<eve@evil.test>\r\n"),
        vec!["550 5.7.1 Sender not allowed"]
    );
    assert_eq!(
        codes(&h.run("MAIL FROM:<a@example.com> SIZE=10001\r\n")),
        vec!["552 5.3.4"]
    );
    // A size too large for any integer is still a size: 552, not a syntax error.
    assert_eq!(
        codes(&h.run("MAIL FROM:<a@example.com> SIZE=99999999999999999999999\r\n")),
        vec!["552 5.3.4"]
    );
    assert_eq!(
        codes(&h.run("MAIL FROM:<a@example.com> BODY=BINARYMIME\r\n")),
        vec!["555 5.5.4"]
    );
    assert_eq!(
        codes(&h.run("MAIL FROM:<a@example.com> X=1\r\n")),
        vec!["555 5.5.4"]
    );
    assert_eq!(
        codes(&h.run("MAIL FROM:a@example.com\r\n")),
        vec!["501 5.1.7"]
    );
    assert_eq!(
        codes(&h.run("MAIL FROM:<jöran@example.com>\r\n")),
        vec!["553 5.6.7"]
    );
    let mut h = Harness::ehloed();
    assert_eq!(
        codes(&h.run("MAIL FROM:<jöran@example.com> SMTPUTF8\r\n")),
        vec!["250 2.1.0"]
    );
    assert_eq!(
        codes(&h.run("RCPT TO:<müller@dest.test>\r\n")),
        vec!["250 2.1.5"]
    );
    assert_eq!(
        codes(&h.run("RCPT TO:<reject@dest.test>\r\n")),
        vec!["550 5.1.1"]
    );
    assert_eq!(codes(&h.run("RCPT TO:<a@b@c>\r\n")), vec!["501 5.1.3"]);
    assert_eq!(codes(&h.run("RCPT TO:<>\r\n")), vec!["501 5.1.3"]);
    let out = h.run("RCPT TO: <c@d.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c+40d.test\r\n");
    assert_eq!(codes(&out), vec!["250 2.1.5"]);
    assert_eq!(
        codes(&h.run("RCPT TO:<c@d.test> NOTIFY=NEVER,DELAY\r\n")),
        vec!["501 5.5.4"]
    );
    assert_eq!(codes(&h.run("MAIL FROM:<> \r\n")), vec!["503 5.5.1"]);
    let stats = h.session.stats();
    assert_eq!(stats.rejections.get("recipient_policy"), Some(&1));
}

#[test]
fn hundred_recipients_then_452() {
    let mut h = Harness::ehloed();
    h.run(MAIL);
    for i in 0..100 {
        let out = h.run(&format!("RCPT TO:<r{i}@dest.test>\r\n"));
        assert_eq!(codes(&out), vec!["250 2.1.5"], "rcpt {i}");
    }
    for _ in 0..20 {
        assert_eq!(h.run(RCPT), vec!["452 4.5.3 Error: too many recipients"]);
    }
    // 452 is not an error: no delays, no disconnect.
    assert_eq!(h.session.stats().errors, 0);
    assert_eq!(
        codes(&h.run("DATA\r\n.\r\n")),
        vec!["354 End d", "ENQUEUE", "250 2.0.0"]
    );
    assert_eq!(h.enqueued[0].recipients.len(), 100);
}

#[test]
fn misc_commands() {
    let mut h = Harness::relay();
    assert_eq!(h.run("NOOP\r\n"), vec!["250 2.0.0 Ok"]);
    assert_eq!(codes(&h.run("VRFY bob\r\n")), vec!["252 2.5.0"]);
    assert_eq!(codes(&h.run("HELP\r\n")), vec!["214 2.0.0"]);
    assert_eq!(codes(&h.run("EXPN list\r\n")), vec!["502 5.5.1"]);
    assert_eq!(codes(&h.run("TURN\r\n")), vec!["502 5.5.1"]);
    assert_eq!(codes(&h.run("ETRN x\r\n")), vec!["502 5.5.1"]);
    assert_eq!(codes(&h.run("FOO\r\n")), vec!["500 5.5.2"]);
    assert_eq!(h.run("quit\r\n"), vec!["221 2.0.0 Bye", "CLOSE"]);
}

#[test]
fn bad_command_bytes_are_never_executed() {
    let mut h = Harness::relay();
    assert_eq!(codes(&h.run("QUIT\n")), vec!["500 5.5.2"]);
    assert_eq!(codes(&h.run("QU\rIT\r\n")), vec!["500 5.5.2"]);
    assert_eq!(codes(&h.run("QUIT\0\r\n")), vec!["500 5.5.2"]);
    assert_eq!(codes(&h.run_bytes(b"QUIT \xc3\x28\r\n")), vec!["500 5.5.2"]);
    assert!(!h.session.is_closed());
}

#[test]
fn over_long_line_tail_is_not_a_command() {
    let mut h = Harness::relay();
    let line = format!("NOOP {}RSET\r\nQUIT\r\n", "a".repeat(600));
    assert_eq!(
        h.run(&line),
        vec!["500 5.5.6 Error: line too long", "221 2.0.0 Bye", "CLOSE"]
    );

    // Spread over many feeds, never buffered.
    let mut h = Harness::relay();
    assert!(h.run("NOOP ").is_empty());
    for _ in 0..1000 {
        assert!(h.run(&"x".repeat(1000)).is_empty());
        assert!(h.session.buffered_len() <= 512);
    }
    assert!(h.run("QUIT\r").is_empty());
    assert_eq!(codes(&h.run("\nNOOP\r\n")), vec!["500 5.5.6", "250 2.0.0"]);
    // A line of exactly 512 octets including CRLF is fine; 513 is not.
    let ok = format!("NOOP {}\r\n", "a".repeat(505));
    assert_eq!(codes(&h.run(&ok)), vec!["250 2.0.0"]);
    let long = format!("NOOP {}\r\n", "a".repeat(506));
    assert_eq!(codes(&h.run(&long)), vec!["500 5.5.6"]);
}

#[test]
fn error_limit_tarpits_then_closes() {
    let defaults = SessionConfig::default();
    let mut h = Harness::new(SessionConfig {
        soft_error_limit: defaults.soft_error_limit,
        max_errors: defaults.max_errors,
        ..config(ListenerKind::Relay)
    });
    let mut all = Vec::new();
    for _ in 0..10 {
        all.extend(h.run("BOGUS\r\n"));
    }
    let mut expected = vec!["500 5.5.2"; 3];
    for _ in 3..9 {
        expected.extend(["DELAY", "500 5.5.2"]);
    }
    expected.extend(["421 4.7.0", "CLOSE"]);
    assert_eq!(codes(&all), expected);
    assert!(all[all.len() - 2].contains("mx.test Error: too many errors"));
    assert!(h.session.is_closed());
    assert!(h.run("NOOP\r\n").is_empty());
    assert_eq!(h.session.stats().errors, 10);
}

#[test]
fn submission_requires_auth() {
    let mut h = Harness::new(config(ListenerKind::Submission));
    h.run("EHLO c\r\n");
    // Before STARTTLS (AUTH is not offered yet) the reply says what to do first.
    assert_eq!(
        h.run(MAIL),
        vec!["530 5.7.0 Must issue a STARTTLS command first"]
    );
    assert_eq!(h.session.stats().rejections.get("auth_required"), Some(&1));
    let mut h = Harness::new(SessionConfig {
        tls_available: false,
        ..config(ListenerKind::Submission)
    });
    h.run("EHLO c\r\n");
    assert_eq!(h.run(MAIL), vec!["530 5.7.0 Authentication required"]);
    let mut h = Harness::tls_ehloed();
    assert_eq!(h.run(MAIL), vec!["530 5.7.0 Authentication required"]);
}

#[test]
fn timeout_and_shutdown() {
    let mut h = Harness::relay();
    let actions = h.session.timeout();
    assert_eq!(
        actions,
        vec![
            baton_smtp::Action::Send(baton_smtp::Reply::new(
                421,
                "4.4.2",
                "mx.test Error: timeout exceeded"
            )),
            baton_smtp::Action::Close
        ]
    );
    assert!(h.session.is_closed());
    assert!(h.session.shutdown().is_empty());
    let mut h = Harness::relay();
    let actions = h.session.shutdown();
    assert_eq!(
        actions[0],
        baton_smtp::Action::Send(baton_smtp::Reply::new(
            421,
            "4.3.2",
            "mx.test Service shutting down"
        ))
    );
    assert_eq!(actions[1], baton_smtp::Action::Close);
}
