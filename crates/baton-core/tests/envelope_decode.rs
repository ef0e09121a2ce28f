//! Queued envelopes from the wire: a worker decodes whatever payload JetStream hands it
//! (`baton-queue`'s `Lane::fetch`) and then runs the pure logic of this crate on it (retry
//! schedule, NOTIFY, DSN building, follow-up ids). Garbage must be rejected by the decoder
//! with an error, never a panic or an allocation sized by a length prefix; whatever does
//! decode must go through that logic without panicking, and a DSN built from it must stay a
//! well-formed message. The `envelope` fuzz target (crates/baton-smtp/fuzz) checks the same.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use baton_core::dsn::{DsnInput, DsnRecipient, build_dsn, should_bounce};
use baton_core::ids::{FollowUp, follow_up_msg_id};
use baton_core::outcome::{RecipientOutcome, Reply, notify_wanted};
use baton_core::retry::RetrySchedule;
use baton_proto::Message as _;
use baton_proto::v1::{DsnEnvelope, Envelope, Recipient, envelope::Body};
use proptest::prelude::*;

const NOW_MS: i64 = 1_750_000_000_000;

/// Every line ends in CRLF, no bare CR or LF, no line longer than 998 octets (RFC 5322 2.1.1).
fn check_message_lines(msg: &[u8]) -> Result<(), String> {
    for (i, line) in msg.split_inclusive(|&b| b == b'\n').enumerate() {
        let Some(text) = line.strip_suffix(b"\r\n") else {
            return Err(format!("line {i} does not end in CRLF: {line:?}"));
        };
        if text.contains(&b'\r') || text.contains(&b'\n') {
            return Err(format!("bare CR/LF in line {i}"));
        }
        if text.len() > 998 {
            return Err(format!("line {i} has {} octets", text.len()));
        }
    }
    Ok(())
}

/// What a worker does with a decoded envelope, minus I/O: expiry and retry decisions, a fate
/// per recipient, NOTIFY, the DSN and the follow-up ids.
fn after_decode(env: &Envelope) -> Result<(), String> {
    let schedule = RetrySchedule::new(
        vec![Duration::from_secs(60), Duration::from_secs(600)],
        Duration::from_secs(5 * 86_400),
    );
    let _ = schedule.is_expired(env.received_at_ms, NOW_MS);
    let attempt = env.attempt.saturating_add(1);
    let _ = schedule.next(attempt, env.received_at_ms, NOW_MS);
    let outcomes = [
        RecipientOutcome::from_reply(Reply::new(250, "2.0.0", "ok"), "", false),
        RecipientOutcome::failed(Reply::new(550, "5.1.1", "no such user"), ""),
    ];
    let mut blocks = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        let expired = RecipientOutcome::expired(r);
        let outcome = if i % 3 == 2 {
            &expired
        } else {
            &outcomes[i % 2]
        };
        if notify_wanted(r, outcome) {
            blocks.push(DsnRecipient::from_outcome(r, outcome));
        }
    }
    let _ = follow_up_msg_id(&env.id, attempt, FollowUp::Retry);
    if should_bounce(env) && !blocks.is_empty() {
        let dsn_id = follow_up_msg_id(&env.id, attempt, FollowUp::Dsn);
        let dsn = build_dsn(&DsnInput {
            reporting_mta: "worker.baton.test",
            from: "",
            original: env,
            original_message: match &env.body {
                Some(Body::InlineBody(b)) => b,
                _ => &[],
            },
            recipients: blocks,
            arrival_ms: env.received_at_ms,
            now: time::OffsetDateTime::from_unix_timestamp(NOW_MS / 1000).unwrap(),
            dsn_id: &dsn_id,
        });
        check_message_lines(&dsn)?;
    }
    Ok(())
}

/// Decode, and if it decodes: re-encoding is stable and the worker logic copes.
fn decode_and_process(bytes: &[u8]) -> Result<(), String> {
    let Ok(env) = Envelope::decode(bytes) else {
        return Ok(());
    };
    let again = Envelope::decode(env.encode_to_vec().as_slice()).map_err(|e| e.to_string())?;
    if again != env {
        return Err("re-encoded envelope decodes differently".into());
    }
    after_decode(&env)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9.@-]{0,30}",
        1 => any::<String>(),
        1 => (0usize..2000).prop_map(|n| "é".repeat(n)),
    ]
}

fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0i64),
        Just(NOW_MS),
        any::<i64>()
    ]
}

fn recipient() -> impl Strategy<Value = Recipient> {
    (
        text(),
        any::<[bool; 4]>(),
        text(),
        text(),
        text(),
        proptest::option::of((any::<[u32; 4]>(), proptest::collection::vec(text(), 0..3))),
    )
        .prop_map(
            |(address, n, orcpt, last_reply, last_remote, last)| Recipient {
                address,
                notify_never: n[0],
                notify_success: n[1],
                notify_failure: n[2],
                notify_delay: n[3],
                orcpt,
                last_reply,
                last_remote,
                last: last.map(|(c, lines)| baton_proto::v1::SmtpReply {
                    code: c[0],
                    status_class: c[1],
                    status_subject: c[2],
                    status_detail: c[3],
                    lines,
                }),
            },
        )
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        (text(), text(), proptest::collection::vec(recipient(), 0..4)),
        (
            extreme_i64(),
            extreme_i64(),
            any::<u32>(),
            any::<i32>(),
            any::<i32>(),
        ),
        proptest::collection::vec(any::<u8>(), 0..300),
        (any::<bool>(), text()),
    )
        .prop_map(
            |((id, from, rcpts), (recv, nb, attempt, ret, kind), body, (utf8, envid))| Envelope {
                id,
                reverse_path: from,
                recipients: rcpts,
                received_at_ms: recv,
                not_before_ms: nb,
                attempt,
                kind: kind % 3,
                body: Some(Body::InlineBody(body.into())),
                dsn: Some(DsnEnvelope {
                    ret: ret % 4,
                    envid,
                }),
                smtputf8: utf8,
                ..Default::default()
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert_eq!(decode_and_process(&bytes), Ok(()));
    }

    #[test]
    fn valid_envelopes_survive_the_worker_logic(env in envelope()) {
        prop_assert_eq!(decode_and_process(&env.encode_to_vec()), Ok(()));
    }

    #[test]
    fn mutated_envelopes_never_panic(
        env in envelope(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = env.encode_to_vec();
        for (at, b) in &flips {
            let i = at.index(bytes.len().max(1));
            if let Some(slot) = bytes.get_mut(i) {
                *slot ^= *b;
            }
        }
        prop_assert_eq!(decode_and_process(&bytes), Ok(()));
        bytes.truncate(cut.index(bytes.len() + 1));
        prop_assert_eq!(decode_and_process(&bytes), Ok(()));
    }
}

/// Protobuf base-128 varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A field key: tag and wire type (2 = length-delimited, 3 = start group).
fn key(tag: u64, wire_type: u64, out: &mut Vec<u8>) {
    varint(tag << 3 | wire_type, out);
}

/// A length prefix far beyond the payload is an error, not an allocation of that size.
#[test]
fn huge_length_prefixes_are_rejected() {
    // field 11 (inline_body, length-delimited), length 2^62; field 3 (recipients), 2^40.
    for (tag, len) in [(11u64, 1u64 << 62), (3, 1 << 40), (1, u64::MAX)] {
        let mut bytes = Vec::new();
        key(tag, 2, &mut bytes);
        varint(len, &mut bytes);
        bytes.extend_from_slice(b"short");
        assert!(Envelope::decode(bytes.as_slice()).is_err(), "tag {tag}");
    }
}

/// Deeply nested unknown groups hit prost's recursion limit instead of the stack.
#[test]
fn deep_unknown_groups_are_rejected() {
    let mut bytes = Vec::new();
    for _ in 0..100_000 {
        key(99, 3, &mut bytes);
    }
    assert!(Envelope::decode(bytes.as_slice()).is_err());
}

/// Truncating a valid envelope anywhere inside a field is an error.
#[test]
fn truncated_envelope_is_an_error_or_a_prefix() {
    let env = Envelope {
        id: "Q1".into(),
        reverse_path: "a@example.com".into(),
        recipients: vec![Recipient {
            address: "b@dest.test".into(),
            ..Default::default()
        }],
        body: Some(Body::InlineBody(
            b"Subject: x\r\n\r\nhi\r\n".to_vec().into(),
        )),
        ..Default::default()
    };
    let bytes = env.encode_to_vec();
    for n in 0..bytes.len() {
        if let Ok(e) = Envelope::decode(&bytes[..n]) {
            // Only a cut at a field boundary decodes, and then to a strict prefix.
            assert_ne!(e, env, "cut at {n}");
        }
    }
}

/// Regression (found by `valid_envelopes_survive_the_worker_logic`): values were capped at 900
/// *characters*, so a long non-ASCII address, or a long address next to a long diagnostic on
/// the explanation line, made a DSN line longer than 998 octets.
#[test]
fn long_values_keep_dsn_lines_within_998_octets() {
    let long_utf8 = Recipient {
        address: "é".repeat(500),
        notify_failure: true,
        ..Default::default()
    };
    let long_ascii = Recipient {
        address: format!("{}@dest.test", "a".repeat(245)),
        last_reply: format!("451 4.2.0 {}", "d".repeat(1000)),
        ..Default::default()
    };
    for r in [long_utf8, long_ascii] {
        let env = Envelope {
            reverse_path: "0".into(),
            recipients: vec![r.clone(), r.clone(), r],
            received_at_ms: i64::MIN,
            ..Default::default()
        };
        assert_eq!(decode_and_process(&env.encode_to_vec()), Ok(()));
    }
}
