//! Fuzzes queued-envelope decoding and what a worker does with a decoded envelope (retry
//! schedule, NOTIFY, DSN building, follow-up ids): decoding garbage is an error, never a panic;
//! a decoded envelope re-encodes stably; a DSN built from it is a well-formed message (CRLF
//! only, lines ≤ 998 octets). Same properties as `crates/baton-core/tests/envelope_decode.rs`.
//! An even first byte feeds the rest to the decoder as raw bytes; an odd one builds the
//! envelope field by field from the rest (so long and odd field values are reached quickly)
//! and sends its encoding through the same path.
#![no_main]

use std::time::Duration;

use baton_core::dsn::{DsnInput, DsnRecipient, build_dsn, should_bounce};
use baton_core::ids::{FollowUp, follow_up_msg_id};
use baton_core::outcome::{RecipientOutcome, Reply, notify_wanted};
use baton_core::retry::RetrySchedule;
use baton_proto::Message as _;
use baton_proto::v1::{DsnEnvelope, Envelope, Recipient, envelope::Body};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const NOW_MS: i64 = 1_750_000_000_000;

fn check_lines(msg: &[u8]) {
    for line in msg.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\r\n").expect("line ends in CRLF");
        assert!(
            !text.contains(&b'\r') && !text.contains(&b'\n'),
            "bare CR/LF"
        );
        assert!(text.len() <= 998, "line of {} octets", text.len());
    }
}

fn recipient(u: &mut Unstructured<'_>) -> Result<Recipient> {
    Ok(Recipient {
        address: u.arbitrary()?,
        notify_never: u.arbitrary()?,
        notify_success: u.arbitrary()?,
        notify_failure: u.arbitrary()?,
        notify_delay: u.arbitrary()?,
        orcpt: u.arbitrary()?,
        last_reply: u.arbitrary()?,
        last_remote: u.arbitrary()?,
        last: if u.arbitrary()? {
            Some(baton_proto::v1::SmtpReply {
                code: u.arbitrary()?,
                status_class: u.arbitrary()?,
                status_subject: u.arbitrary()?,
                status_detail: u.arbitrary()?,
                lines: u.arbitrary()?,
            })
        } else {
            None
        },
    })
}

fn envelope(u: &mut Unstructured<'_>) -> Result<Envelope> {
    let n = u.int_in_range(0..=4)?;
    let recipients = (0..n).map(|_| recipient(u)).collect::<Result<Vec<_>>>()?;
    Ok(Envelope {
        id: u.arbitrary()?,
        reverse_path: u.arbitrary()?,
        recipients,
        received_at_ms: u.arbitrary()?,
        not_before_ms: u.arbitrary()?,
        attempt: u.arbitrary()?,
        kind: u.int_in_range(0..=2)?,
        dsn: Some(DsnEnvelope {
            ret: u.int_in_range(0..=3)?,
            envid: u.arbitrary()?,
        }),
        smtputf8: u.arbitrary()?,
        body: Some(Body::InlineBody(u.arbitrary::<Vec<u8>>()?.into())),
        ..Default::default()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let built;
    let bytes = if mode % 2 == 0 {
        rest
    } else {
        let Ok(env) = envelope(&mut Unstructured::new(rest)) else {
            return;
        };
        built = env.encode_to_vec();
        &built[..]
    };
    let Ok(env) = Envelope::decode(bytes) else {
        return;
    };
    let again = Envelope::decode(env.encode_to_vec().as_slice()).expect("re-encoded decodes");
    assert_eq!(again, env);

    let schedule = RetrySchedule::new(
        vec![Duration::from_secs(60), Duration::from_secs(600)],
        Duration::from_secs(5 * 86_400),
    );
    let attempt = env.attempt.saturating_add(1);
    let _ = schedule.is_expired(env.received_at_ms, NOW_MS);
    let _ = schedule.next(attempt, env.received_at_ms, NOW_MS);
    let mut blocks = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        let outcome = match i % 3 {
            0 => RecipientOutcome::from_reply(Reply::new(250, "2.0.0", "ok"), "", false),
            1 => RecipientOutcome::failed(Reply::new(550, "5.1.1", "no such user"), ""),
            _ => RecipientOutcome::expired(r),
        };
        if notify_wanted(r, &outcome) {
            blocks.push(DsnRecipient::from_outcome(r, &outcome));
        }
    }
    let _ = follow_up_msg_id(&env.id, attempt, FollowUp::Retry);
    if should_bounce(&env) && !blocks.is_empty() {
        let dsn_id = follow_up_msg_id(&env.id, attempt, FollowUp::Dsn);
        let dsn = build_dsn(&DsnInput {
            reporting_mta: "worker.baton.test",
            from: "",
            original: &env,
            original_message: match &env.body {
                Some(Body::InlineBody(b)) => b,
                _ => &[],
            },
            recipients: blocks,
            arrival_ms: env.received_at_ms,
            now: time::OffsetDateTime::from_unix_timestamp(NOW_MS / 1000).expect("valid time"),
            dsn_id: &dsn_id,
        });
        check_lines(&dsn);
    }
});
