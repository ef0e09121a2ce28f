//! Transcript harness: feeds client bytes to a [`Session`] and records what it asks for.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use baton_smtp::{
    Action, ForwardPath, Grant, ListenerKind, PeerInfo, Policy, Reply, ReversePath, SenderContext,
    Session, SessionConfig, Transaction,
};

/// Allows senders `@example.com` (and `<>`), credentials user/secret, refuses recipient
/// local part `reject`.
pub(crate) struct TestPolicy;

thread_local! {
    /// Every `Policy::auth_failed` call of this test thread: (listener, username).
    pub static AUTH_FAILURES: std::cell::RefCell<Vec<(ListenerKind, String)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Policy for TestPolicy {
    fn auth_failed(&self, _peer: &PeerInfo, listener: ListenerKind, username: &str) {
        AUTH_FAILURES.with(|f| f.borrow_mut().push((listener, username.to_string())));
    }

    fn authenticate(
        &self,
        _peer: &PeerInfo,
        username: &str,
        password: &str,
    ) -> Result<String, Reply> {
        if username == "user" && password == "secret" {
            Ok("test/domain".into())
        } else {
            Err(Reply::new(535, "5.7.8", "Error: authentication failed"))
        }
    }

    fn check_sender(&self, ctx: &SenderContext<'_>) -> Result<Grant, Reply> {
        let ok = match ctx.reverse_path {
            ReversePath::Null => true,
            ReversePath::Mailbox(a) => a.domain_lowercase() == "example.com",
        };
        if !ok {
            return Err(Reply::new(550, "5.7.1", "Sender not allowed"));
        }
        let max_message_size = match ctx.params.envid.as_deref() {
            Some("small") => 100,
            Some("huge") => 1_000_000_000,
            _ => 0,
        };
        Ok(Grant {
            relay_domain: "example.com".into(),
            pool: "default".into(),
            max_message_size,
            inbound: false,
            // ENVID=unlimited: a relay domain without shared limits.
            admit: ctx.params.envid.as_deref() != Some("unlimited"),
        })
    }

    fn check_recipient(
        &self,
        _ctx: &SenderContext<'_>,
        _grant: &Grant,
        rcpt: &ForwardPath,
    ) -> Result<(), Reply> {
        match rcpt.address() {
            Some(a) if a.local_part == "reject" => {
                Err(Reply::new(550, "5.1.1", "Recipient unknown"))
            }
            _ => Ok(()),
        }
    }
}

/// The session plus everything it emitted.
pub(crate) struct Harness {
    pub session: Session,
    pub enqueued: Vec<Transaction>,
    /// Answer Enqueue automatically with Ok("Q<n>").
    pub auto_enqueue: bool,
    /// Answer StartTls automatically with tls_established().
    pub auto_tls: bool,
    /// Every Admit asked for, in order.
    pub admissions: Vec<baton_smtp::Admission>,
    /// Answers to Admit, in order; once empty, Admit is answered Ok. `None` in the queue
    /// leaves the session waiting (the test answers itself).
    pub admit_answers: std::collections::VecDeque<Option<Result<(), Reply>>>,
}

/// Test config: host mx.test, TLS available, 10 000 octet cap, lenient error limits.
pub(crate) fn config(listener: ListenerKind) -> SessionConfig {
    SessionConfig {
        hostname: "mx.test".into(),
        listener,
        tls_available: true,
        max_message_size: 10_000,
        error_delay: Duration::from_millis(5),
        // Generous so feature tests are not disturbed by error accounting; the limit tests
        // set the defaults explicitly.
        soft_error_limit: 100,
        max_errors: 100,
        // No AUTH tarpit either; the AUTH tests set it explicitly.
        auth_failure_delay: Duration::ZERO,
        ..SessionConfig::default()
    }
}

impl Harness {
    pub(crate) fn new(config: SessionConfig) -> Harness {
        let tls = config.listener == ListenerKind::Smtps;
        let peer = PeerInfo {
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            tls,
        };
        let mut session = Session::new(config, peer);
        let greeting = session.greeting();
        let Action::Send(greeting) = greeting else {
            panic!("no greeting: {greeting:?}")
        };
        assert_eq!(greeting.to_bytes(), b"220 mx.test ESMTP Baton ready\r\n");
        Harness {
            session,
            enqueued: Vec::new(),
            auto_enqueue: true,
            auto_tls: true,
            admissions: Vec::new(),
            admit_answers: std::collections::VecDeque::new(),
        }
    }

    pub(crate) fn relay() -> Harness {
        Harness::new(config(ListenerKind::Relay))
    }

    /// A relay session that already said EHLO.
    pub(crate) fn ehloed() -> Harness {
        let mut h = Harness::relay();
        h.run("EHLO client.test\r\n");
        h
    }

    /// A session over TLS (Smtps) that already said EHLO.
    pub(crate) fn tls_ehloed() -> Harness {
        let mut h = Harness::new(config(ListenerKind::Smtps));
        h.run("EHLO client.test\r\n");
        h
    }

    pub(crate) fn run(&mut self, input: &str) -> Vec<String> {
        self.run_bytes(input.as_bytes())
    }

    /// Feeds bytes, polls until None, and renders each action as a string: a reply without
    /// its final CRLF, or "DELAY", "STARTTLS", "ENQUEUE", "CLOSE", "ADMIT", "AUTHFAILED <user>".
    pub(crate) fn run_bytes(&mut self, input: &[u8]) -> Vec<String> {
        self.session.feed(input);
        self.drain()
    }

    pub(crate) fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(action) = self.session.poll(&TestPolicy) {
            match action {
                Action::Send(reply) => {
                    let s = String::from_utf8(reply.to_bytes()).unwrap();
                    assert!(s.ends_with("\r\n"), "reply without CRLF: {s:?}");
                    out.push(s.trim_end_matches("\r\n").to_string());
                }
                Action::Delay(_) => out.push("DELAY".into()),
                Action::StartTls => {
                    out.push("STARTTLS".into());
                    if self.auto_tls {
                        self.session.tls_established();
                    }
                }
                Action::Enqueue(t) => {
                    out.push("ENQUEUE".into());
                    self.enqueued.push(t);
                    if self.auto_enqueue {
                        let id = format!("Q{}", self.enqueued.len());
                        self.session.enqueue_result(Ok(id));
                    }
                }
                Action::Close => out.push("CLOSE".into()),
                Action::Admit(a) => {
                    out.push("ADMIT".into());
                    self.admissions.push(a);
                    match self.admit_answers.pop_front() {
                        Some(None) => {}
                        Some(Some(answer)) => self.session.admission_result(answer),
                        None => self.session.admission_result(Ok(())),
                    }
                }
                Action::AuthFailed { user, .. } => out.push(format!("AUTHFAILED {user}")),
            }
        }
        out
    }
}

/// First 9 characters of each entry ("250 2.1.0", "DELAY", ...) for compact assertions.
pub(crate) fn codes(out: &[String]) -> Vec<String> {
    out.iter().map(|s| s.chars().take(9).collect()).collect()
}
