//! Property tests for message framing, the same properties the `framing` fuzz target checks
//! (so they also run on the stable toolchain in `cargo test`):
//! - DATA: any chunking of the input gives the same outcome and the same consumed count as one
//!   chunk; dot-stuffed content decodes back exactly; bare CR / bare LF are flagged, never
//!   taken as line ends.
//! - BDAT: any split of the chunk bytes gives the same outcome; bare CR / LF are flagged.
//! - Session: one message sent with DATA, with one `BDAT LAST` or with many BDAT chunks, and
//!   the client stream cut at arbitrary socket boundaries, is enqueued with the same body.
//! - Session: a random client stream (without STARTTLS, whose pipelined leftovers are discarded
//!   by design) gives the same replies and transactions whatever the socket boundaries.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use baton_smtp::{
    Action, BdatReceiver, BodyOutcome, DataReceiver, ListenerKind, PeerInfo, Session,
    SessionConfig, Transaction,
};
use common::{TestPolicy, config};
use proptest::prelude::*;

/// Bytes biased towards what matters to framing: CR, LF, dot and a letter.
fn framing_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => proptest::sample::select(&[b'\r', b'\n', b'.', b'x'][..]),
        1 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..max)
}

/// Sorted cut points in `0..=len`, always including both ends.
fn cuts(len: usize, picks: &[prop::sample::Index]) -> Vec<usize> {
    let mut points: Vec<usize> = picks.iter().map(|i| i.index(len + 1)).collect();
    points.push(0);
    points.push(len);
    points.sort_unstable();
    points
}

/// Feeds `input` to a DATA decoder in the given pieces; returns the outcome (if the
/// terminator was seen) and how many bytes were consumed.
fn data_in_pieces(input: &[u8], points: &[usize], cap: usize) -> (Option<BodyOutcome>, usize) {
    let mut rx = DataReceiver::new(cap);
    let mut consumed = 0;
    for w in points.windows(2) {
        if rx.is_done() {
            break;
        }
        consumed = w[0] + rx.feed(&input[w[0]..w[1]]);
    }
    let done = rx.is_done();
    (done.then(|| rx.finish()), consumed)
}

/// Whether `content` holds a CR not followed by LF or an LF not preceded by CR.
fn has_bare_eol(content: &[u8]) -> bool {
    content.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && content.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || content[i - 1] != b'\r'))
    })
}

/// RFC 5321 4.5.2 transparency: a "." at the start of a CRLF-delimited line is doubled.
fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 8);
    for (i, &b) in content.iter().enumerate() {
        let line_start = i == 0 || (i >= 2 && &content[i - 2..i] == b"\r\n");
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
    }
    out
}

/// Content made of CRLF-terminated lines whose text may hold bare CR, bare LF and dots.
fn crlf_lines() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(framing_bytes(30), 0..20).prop_map(|lines| {
        let mut content = Vec::new();
        for l in lines {
            content.extend_from_slice(&l);
            content.extend_from_slice(b"\r\n");
        }
        content
    })
}

/// Runs a whole client stream through a relay session, cut at `points`; returns every reply
/// byte (delays and closes as markers) and the enqueued transactions.
fn run_session(stream: &[u8], points: &[usize]) -> (Vec<u8>, Vec<Transaction>) {
    let cfg = SessionConfig {
        max_message_size: 100_000,
        ..config(ListenerKind::Relay)
    };
    let peer = PeerInfo {
        addr: "192.0.2.9".parse().unwrap(),
        tls: false,
    };
    let mut s = Session::new(cfg, peer);
    let _ = s.greeting();
    let mut replies = Vec::new();
    let mut enqueued = Vec::new();
    for w in points.windows(2) {
        s.feed(&stream[w[0]..w[1]]);
        while let Some(action) = s.poll(&TestPolicy) {
            match action {
                Action::Send(r) => replies.extend_from_slice(&r.to_bytes()),
                Action::Enqueue(t) => {
                    enqueued.push(t);
                    s.enqueue_result(Ok(format!("Q{}", enqueued.len())));
                }
                Action::StartTls => s.tls_established(),
                Action::Delay(_) => replies.extend_from_slice(b"<delay>"),
                Action::Close => replies.extend_from_slice(b"<close>"),
                Action::Admit(_) => s.admission_result(Ok(())),
                Action::AuthFailed { .. } => {}
            }
        }
    }
    (replies, enqueued)
}

const ENVELOPE: &[u8] = b"EHLO c.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@dest.test>\r\n";

/// The client stream sending `content` with BDAT chunks of the given sizes, then QUIT.
fn bdat_stream(content: &[u8], sizes: &[usize]) -> Vec<u8> {
    let mut s = ENVELOPE.to_vec();
    let mut rest = content;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i)
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        i += 1;
        let last = if n == rest.len() { " LAST" } else { "" };
        s.extend_from_slice(format!("BDAT {n}{last}\r\n").as_bytes());
        s.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
    if content.is_empty() {
        s.extend_from_slice(b"BDAT 0 LAST\r\n");
    }
    s.extend_from_slice(b"QUIT\r\n");
    s
}

fn data_stream(content: &[u8]) -> Vec<u8> {
    let mut s = ENVELOPE.to_vec();
    s.extend_from_slice(b"DATA\r\n");
    s.extend_from_slice(&dot_stuff(content));
    s.extend_from_slice(b".\r\nQUIT\r\n");
    s
}

/// Fragments for random client streams; no STARTTLS (see the module docs).
const FRAGMENTS: &[&[u8]] = &[
    b"EHLO c\r\n",
    b"MAIL FROM:<a@example.com>\r\n",
    b"MAIL FROM:<x@evil.test>\r\n",
    b"RCPT TO:<b@d.test>\r\n",
    b"RCPT TO:<reject@d.test>\r\n",
    b"DATA\r\n",
    b"BDAT 5\r\n",
    b"BDAT 3 LAST\r\n",
    b".\r\n",
    b"..\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b"AUTH PLAIN\r\n",
    b"AHVzZXIAc2VjcmV0\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
];

fn client_stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => proptest::sample::select(FRAGMENTS).prop_map(<[u8]>::to_vec),
        1 => framing_bytes(40),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn data_chunking_does_not_change_the_outcome(
        input in framing_bytes(400),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        cap in prop_oneof![Just(1usize << 20), 0usize..64],
    ) {
        let whole = data_in_pieces(&input, &[0, input.len()], cap);
        let split = data_in_pieces(&input, &cuts(input.len(), &picks), cap);
        prop_assert_eq!(&whole, &split);
        if let (Some(o), n) = &whole {
            prop_assert!(input[..*n].ends_with(b"\r\n.\r\n") || input[..*n] == *b".\r\n");
            prop_assert!(o.body.len() <= cap);
        } else {
            prop_assert_eq!(whole.1, input.len(), "all input is consumed until the end");
        }
    }

    #[test]
    fn data_unstuffs_exactly_and_flags_bare_eol(
        content in crlf_lines(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = dot_stuff(&content);
        wire.extend_from_slice(b".\r\nNOOP\r\n");
        let end = wire.len() - b"NOOP\r\n".len();
        let (outcome, consumed) = data_in_pieces(&wire, &cuts(wire.len(), &picks), 1 << 20);
        let outcome = outcome.expect("terminator found");
        prop_assert_eq!(consumed, end);
        prop_assert_eq!(outcome.bare_eol, has_bare_eol(&content));
        prop_assert_eq!(outcome.size, content.len() as u64);
        prop_assert_eq!(outcome.body, content);
    }

    #[test]
    fn bdat_split_does_not_change_the_outcome(
        content in framing_bytes(400),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut whole = BdatReceiver::new(1 << 20);
        whole.push(&content);
        let mut split = BdatReceiver::new(1 << 20);
        for w in cuts(content.len(), &picks).windows(2) {
            split.push(&content[w[0]..w[1]]);
        }
        let (whole, split) = (whole.finish(), split.finish());
        prop_assert_eq!(&whole, &split);
        prop_assert_eq!(whole.bare_eol, has_bare_eol(&content));
        prop_assert_eq!(whole.body, content);
    }

    #[test]
    fn data_and_any_bdat_chunking_enqueue_the_same_message(
        content in crlf_lines().prop_filter("no bare CR/LF", |c| !has_bare_eol(c)),
        sizes in proptest::collection::vec(1usize..50, 0..10),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        for stream in [data_stream(&content), bdat_stream(&content, &[]), bdat_stream(&content, &sizes)] {
            let (replies, got) = run_session(&stream, &cuts(stream.len(), &picks));
            prop_assert_eq!(got.len(), 1, "{}", String::from_utf8_lossy(&replies));
            prop_assert_eq!(&got[0].body, &content);
        }
    }

    #[test]
    fn bare_eol_in_data_or_bdat_is_refused(
        content in crlf_lines().prop_filter("bare CR/LF", |c| has_bare_eol(c)),
        sizes in proptest::collection::vec(1usize..50, 0..10),
    ) {
        for stream in [data_stream(&content), bdat_stream(&content, &sizes)] {
            let (replies, got) = run_session(&stream, &[0, stream.len()]);
            prop_assert!(got.is_empty());
            let text = String::from_utf8_lossy(&replies).into_owned();
            prop_assert!(text.contains("550 5.6.0"), "{}", text);
        }
    }

    #[test]
    fn socket_boundaries_do_not_change_the_conversation(
        stream in client_stream(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 1..12),
    ) {
        let whole = run_session(&stream, &[0, stream.len()]);
        let split = run_session(&stream, &cuts(stream.len(), &picks));
        prop_assert_eq!(String::from_utf8_lossy(&whole.0), String::from_utf8_lossy(&split.0));
        prop_assert_eq!(whole.1, split.1);
    }
}
