//! Property tests: never panics, memory stays bounded, DATA decoding is exact.
#![allow(clippy::unwrap_used)]

mod common;

use baton_smtp::session::MAX_AUTH_LINE;
use baton_smtp::{
    Action, DataReceiver, ListenerKind, PeerInfo, Session, SessionConfig, parse_command,
};
use common::{TestPolicy, config};
use proptest::prelude::*;

/// Fragments that steer random streams into every session state.
const FRAGMENTS: &[&[u8]] = &[
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
    b"RCPT TO:<b@d.test>\r\n",
    b"RCPT TO:<postmaster>\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b"BDAT 1000000\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"STARTTLS\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AHVzZXIAc2VjcmV0\r\n",
    b"*\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"\0",
    b"\xff\xfe",
];

fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => proptest::sample::select(FRAGMENTS).prop_map(|f| f.to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
        1 => (1usize..3000).prop_map(|n| vec![b'x'; n]),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

/// Feeds `input` in chunks of the given sizes and checks the invariants after every poll.
/// `refuse_every` > 0 turns admission on and refuses every n-th admission (450 4.7.1 or, for
/// odd n, 550 5.7.1).
fn drive(listener: ListenerKind, input: &[u8], chunks: &[usize], refuse_every: usize) {
    let cap = 10_000u64;
    let cfg = SessionConfig {
        max_message_size: cap,
        admission: refuse_every > 0,
        ..config(listener)
    };
    let mut admissions = 0usize;
    let peer = PeerInfo {
        addr: "192.0.2.7".parse().unwrap(),
        tls: listener == ListenerKind::Smtps,
    };
    let mut s = Session::new(cfg, peer);
    let _ = s.greeting();
    let mut rest = input;
    let mut i = 0;
    let mut steps = 0;
    while !rest.is_empty() {
        let n = chunks[i % chunks.len()].clamp(1, rest.len());
        i += 1;
        s.feed(&rest[..n]);
        rest = &rest[n..];
        while let Some(action) = s.poll(&TestPolicy) {
            steps += 1;
            assert!(steps < 1_000_000, "poll loops forever");
            match action {
                Action::StartTls => s.tls_established(),
                Action::Enqueue(t) => {
                    assert!(t.body.len() as u64 <= cap);
                    assert!(!t.recipients.is_empty());
                    s.enqueue_result(Ok("Q".into()));
                }
                Action::Send(reply) => {
                    let bytes = reply.to_bytes();
                    assert!(bytes.ends_with(b"\r\n"));
                    let crs = bytes.iter().filter(|&&b| b == b'\r').count();
                    let lfs = bytes.iter().filter(|&&b| b == b'\n').count();
                    let crlfs = bytes.windows(2).filter(|w| w == b"\r\n").count();
                    assert!(crs == crlfs && lfs == crlfs, "bare CR/LF in reply");
                }
                Action::Admit(_) => {
                    assert!(refuse_every > 0, "admission asked for while off");
                    admissions += 1;
                    if admissions.is_multiple_of(refuse_every) {
                        let r = if refuse_every.is_multiple_of(2) {
                            baton_smtp::Reply::new(450, "4.7.1", "rate")
                        } else {
                            baton_smtp::Reply::new(550, "5.7.1", "denied")
                        };
                        s.admission_result(Err(r));
                    } else {
                        s.admission_result(Ok(()));
                    }
                }
                Action::Delay(_) | Action::Close | Action::AuthFailed { .. } => {}
            }
        }
        assert!(
            s.buffered_len() <= MAX_AUTH_LINE,
            "buffered {}",
            s.buffered_len()
        );
        assert!(s.body_len() as u64 <= cap);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn parse_command_never_panics(line in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = parse_command(&line);
    }

    #[test]
    fn parse_command_never_panics_on_commandish(
        verb in proptest::sample::select(&["MAIL FROM:", "RCPT TO:", "BDAT ", "AUTH ", "EHLO "][..]),
        tail in "[ -~\u{80}-\u{10ffff}]{0,80}",
    ) {
        let _ = parse_command(format!("{verb}{tail}\r\n").as_bytes());
    }

    #[test]
    fn session_never_panics_and_stays_bounded(
        input in stream(),
        chunks in proptest::collection::vec(1usize..700, 1..8),
        listener in proptest::sample::select(&[ListenerKind::Relay, ListenerKind::Submission, ListenerKind::Smtps][..]),
    ) {
        drive(listener, &input, &chunks, 0);
    }

    #[test]
    fn session_with_admission_never_panics_and_stays_bounded(
        input in stream(),
        chunks in proptest::collection::vec(1usize..700, 1..8),
        listener in proptest::sample::select(&[ListenerKind::Relay, ListenerKind::Submission, ListenerKind::Smtps][..]),
        refuse_every in 1usize..5,
    ) {
        drive(listener, &input, &chunks, refuse_every);
    }

    #[test]
    fn session_random_bytes(input in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..600) {
        drive(ListenerKind::Relay, &input, &[chunk], 0);
    }

    #[test]
    fn data_decoder_round_trips(
        lines in proptest::collection::vec(
            proptest::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..40)
                .prop_map(|mut l| { if l.first() == Some(&b'x') { l[0] = b'.'; } l }),
            0..30),
        splits in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut content = Vec::new();
        let mut wire = Vec::new();
        for line in &lines {
            content.extend_from_slice(line);
            content.extend_from_slice(b"\r\n");
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\nMAIL FROM:<after@example.com>\r\n");
        let end = wire.len() - b"MAIL FROM:<after@example.com>\r\n".len();
        let mut points: Vec<usize> = splits.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut rx = DataReceiver::new(1 << 20);
        let mut consumed = 0;
        for w in points.windows(2) {
            if rx.is_done() {
                break;
            }
            // Every earlier window was consumed whole, so this one starts at w[0].
            consumed = w[0] + rx.feed(&wire[w[0]..w[1]]);
        }
        prop_assert!(rx.is_done());
        prop_assert_eq!(consumed, end);
        let outcome = rx.finish();
        prop_assert!(!outcome.bare_eol && !outcome.overflow);
        prop_assert_eq!(outcome.body, content);
    }
}
