//! Fuzzes a whole session: the first byte picks listener and chunk size, the rest is the
//! client's byte stream. Checks the buffering bounds after every poll.
#![no_main]

use baton_smtp::session::MAX_AUTH_LINE;
use baton_smtp::{
    Action, ForwardPath, Grant, ListenerKind, PeerInfo, Policy, Reply, SenderContext, Session,
    SessionConfig,
};
use libfuzzer_sys::fuzz_target;

struct AllowAll;

impl Policy for AllowAll {
    fn authenticate(&self, _: &PeerInfo, user: &str, _: &str) -> Result<String, Reply> {
        if user == "user" {
            Ok(String::new())
        } else {
            Err(Reply::new(535, "5.7.8", "no"))
        }
    }
    fn check_sender(&self, _: &SenderContext<'_>) -> Result<Grant, Reply> {
        Ok(Grant {
            relay_domain: "d".into(),
            pool: "p".into(),
            max_message_size: 0,
            inbound: false,
            admit: true,
        })
    }
    fn check_recipient(
        &self,
        _: &SenderContext<'_>,
        _: &Grant,
        _: &ForwardPath,
    ) -> Result<(), Reply> {
        Ok(())
    }
}

const CAP: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let listener = match selector % 3 {
        0 => ListenerKind::Relay,
        1 => ListenerKind::Submission,
        _ => ListenerKind::Smtps,
    };
    let chunk = usize::from(selector / 3).max(1);
    let config = SessionConfig {
        listener,
        tls_available: true,
        max_message_size: CAP,
        ..SessionConfig::default()
    };
    let peer = PeerInfo {
        addr: [192, 0, 2, 1].into(),
        tls: listener == ListenerKind::Smtps,
    };
    let mut session = Session::new(config, peer);
    let _ = session.greeting();
    for piece in input.chunks(chunk) {
        session.feed(piece);
        while let Some(action) = session.poll(&AllowAll) {
            match action {
                Action::StartTls => session.tls_established(),
                Action::Enqueue(t) => {
                    assert!(t.body.len() as u64 <= CAP);
                    session.enqueue_result(Ok("id".into()));
                }
                Action::Admit(_) => session.admission_result(Ok(())),
                Action::Send(_) | Action::Delay(_) | Action::Close | Action::AuthFailed { .. } => {}
            }
        }
        assert!(session.buffered_len() <= MAX_AUTH_LINE);
        assert!(session.body_len() as u64 <= CAP);
    }
});
