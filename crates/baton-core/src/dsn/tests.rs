use super::*;
use crate::outcome::Reply;
use baton_proto::v1::DsnEnvelope;
use mail_parser::{MessageParser, MimeHeaders};

fn envelope(ret: DsnRet, envid: &str) -> Envelope {
    Envelope {
        id: "Q1".into(),
        reverse_path: "alice@example.com".into(),
        dsn: Some(DsnEnvelope {
            ret: ret as i32,
            envid: envid.into(),
        }),
        ..Default::default()
    }
}

const ORIGINAL: &[u8] = b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\n\
Subject: hello\r\nMessage-ID: <m1@example.com>\r\n\r\nHi Bob,\r\nbody line\r\n";

fn failed() -> DsnRecipient {
    DsnRecipient {
        address: "bob@example.org".into(),
        orcpt: Some("rfc822;Bob@Example.org".into()),
        action: DsnAction::Failed,
        status: "5.1.1".into(),
        diagnostic: Some("550 5.1.1 <bob@example.org>: no such user".into()),
        remote_mta: Some("mx.example.org".into()),
        class: Some(crate::bounce::BounceClass::InvalidRecipient),
    }
}

fn build(env: &Envelope, original: &[u8], recipients: Vec<DsnRecipient>) -> Vec<u8> {
    build_from(env, original, recipients, "")
}

fn build_from(
    env: &Envelope,
    original: &[u8],
    recipients: Vec<DsnRecipient>,
    from: &str,
) -> Vec<u8> {
    build_dsn(&DsnInput {
        reporting_mta: "relay.baton.dev",
        from,
        original: env,
        original_message: original,
        recipients,
        arrival_ms: 1_772_546_709_000,
        now: OffsetDateTime::from_unix_timestamp(1_772_550_309).unwrap(),
        dsn_id: "Q1.dsn1",
    })
}

/// CRLF only, lines ≤ 998 octets.
fn assert_wire_clean(m: &[u8]) {
    for (i, &b) in m.iter().enumerate() {
        if b == b'\n' {
            assert_eq!(m[i - 1], b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    for line in m.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len());
    }
    assert!(m.ends_with(b"\r\n"));
}

fn part_text<'a>(msg: &'a mail_parser::Message<'a>, i: usize) -> String {
    String::from_utf8_lossy(msg.parts[i].contents()).into_owned()
}

#[test]
fn failed_headers_only() {
    let env = envelope(DsnRet::Hdrs, "env-42");
    let m = build(&env, ORIGINAL, vec![failed()]);
    assert_wire_clean(&m);
    let msg = MessageParser::new().parse(&m).unwrap();
    assert_eq!(msg.subject(), Some("Undelivered Mail Returned to Sender"));
    let from = msg.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("MAILER-DAEMON@relay.baton.dev"));
    assert_eq!(from.name(), Some("Mail Delivery System"));
    assert_eq!(
        msg.to().unwrap().first().unwrap().address(),
        Some("alice@example.com")
    );
    assert_eq!(msg.message_id(), Some("Q1.dsn1@relay.baton.dev"));
    assert_eq!(
        msg.header_raw("Auto-Submitted").map(str::trim),
        Some("auto-replied")
    );
    assert!(msg.date().is_some());
    let ct = msg.content_type().unwrap();
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    let subs = msg.parts[0].sub_parts().unwrap();
    assert_eq!(subs.len(), 3);
    let types: Vec<String> = subs
        .iter()
        .map(|&i| {
            let ct = msg.parts[i as usize].content_type().unwrap();
            format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""))
        })
        .collect();
    assert_eq!(
        types,
        [
            "text/plain",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );
    let text = part_text(&msg, subs[0] as usize);
    assert!(text.contains("could not be delivered"));
    assert!(text.contains("<bob@example.org>: failed: 550 5.1.1"));
    let status = part_text(&msg, subs[1] as usize);
    for field in [
        "Reporting-MTA: dns; relay.baton.dev\r\n",
        "Original-Envelope-Id: env-42\r\n",
        "Arrival-Date: Tue, 03 Mar 2026 14:05:09 +0000\r\n",
        "\r\n\r\nOriginal-Recipient: rfc822;Bob@Example.org\r\n",
        "Final-Recipient: rfc822;bob@example.org\r\n",
        "Action: failed\r\n",
        "Status: 5.1.1\r\n",
        "Remote-MTA: dns; mx.example.org\r\n",
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: no such user\r\n",
        "X-Baton-Bounce-Class: invalid_recipient\r\n",
        "Last-Attempt-Date: Tue, 03 Mar 2026 15:05:09 +0000\r\n",
    ] {
        assert!(status.contains(field), "{field:?} in {status:?}");
    }
    let returned = part_text(&msg, subs[2] as usize);
    assert!(returned.contains("Subject: hello"));
    assert!(!returned.contains("Hi Bob"));
}

#[test]
fn failed_full_returns_message() {
    let m = build(&envelope(DsnRet::Full, ""), ORIGINAL, vec![failed()]);
    assert_wire_clean(&m);
    let text = String::from_utf8(m.clone()).unwrap();
    assert!(!text.contains("Original-Envelope-Id"));
    assert!(text.contains("Content-Type: message/rfc822\r\n"));
    let msg = MessageParser::new().parse(&m).unwrap();
    let subs = msg.parts[0].sub_parts().unwrap();
    let inner = msg.parts[subs[2] as usize].message().unwrap();
    assert_eq!(inner.subject(), Some("hello"));
    assert!(inner.body_text(0).unwrap().contains("Hi Bob"));
}

#[test]
fn delayed_and_success_subjects_and_content() {
    let mut r = failed();
    r.action = DsnAction::Delayed;
    r.status = "4.4.1".into();
    let m = build(&envelope(DsnRet::Full, ""), ORIGINAL, vec![r.clone()]);
    let msg = MessageParser::new().parse(&m).unwrap();
    assert_eq!(msg.subject(), Some("Delayed Mail (still being retried)"));
    // Delay reports return headers only, even with RET=FULL.
    assert!(String::from_utf8_lossy(&m).contains("text/rfc822-headers"));
    r.action = DsnAction::Delivered;
    let m = build(&envelope(DsnRet::Unspecified, ""), ORIGINAL, vec![r]);
    let msg = MessageParser::new().parse(&m).unwrap();
    assert_eq!(msg.subject(), Some("Delivery Status Notification"));
    assert!(String::from_utf8_lossy(&m).contains("Action: delivered\r\n"));
    let mut r = failed();
    (r.action, r.status) = (DsnAction::Relayed, "2.0.0".into());
    let m = build(&envelope(DsnRet::Unspecified, ""), ORIGINAL, vec![r]);
    let text = String::from_utf8_lossy(&m);
    assert!(text.contains("Action: relayed\r\n"), "{text}");
    assert!(text.contains("Your message was relayed"), "{text}");
}

#[test]
fn hostile_inputs_stay_clean() {
    let mut original = b"Subject: x\nX-Long: ".to_vec();
    original.extend(std::iter::repeat_n(b'a', 3000));
    original.extend_from_slice(
        b"\r\nX-Boundary: =_baton_Q1dsn1_0\rbare\r\n\r\nbody =_baton_Q1dsn1_1\n",
    );
    let mut r = failed();
    r.address = "bob@example.org\r\nBcc: evil@x".into();
    r.diagnostic = Some(format!("550 {}\r\n", "d".repeat(5000)));
    r.orcpt = Some("Bob@Example.org".into());
    let env = envelope(DsnRet::Full, "id\r\nX-Evil: 1");
    let m = build(&env, &original, vec![r, failed()]);
    assert_wire_clean(&m);
    let text = String::from_utf8_lossy(&m);
    assert!(text.contains("boundary=\"=_baton_Q1dsn1_1\""));
    assert!(!text.contains("\r\nBcc:") && !text.contains("\r\nX-Evil:"));
    assert!(text.contains("Original-Recipient: rfc822;Bob@Example.org\r\n"));
    // The long line cannot be embedded: headers only (so `_1`, in the body, is free).
    assert!(text.contains("text/rfc822-headers") && !text.contains("message/rfc822"));
    let msg = MessageParser::new().parse(&m).unwrap();
    assert_eq!(msg.parts[0].sub_parts().unwrap().len(), 3);
}

#[test]
fn eight_bit_original() {
    // ASCII header fields, 8-bit body: returned whole, as 8bit (8BITMIME, not SMTPUTF8).
    let original = "Subject: cafe\r\n\r\nna\u{ef}ve\r\n".as_bytes();
    let m = build(&envelope(DsnRet::Full, ""), original, vec![failed()]);
    assert!(needs_8bitmime(&m));
    assert!(String::from_utf8_lossy(&m).contains("Content-Transfer-Encoding: 8bit"));
    let m = build(&envelope(DsnRet::Hdrs, ""), ORIGINAL, vec![failed()]);
    assert!(!needs_8bitmime(&m));
}

#[test]
fn bounce_rules() {
    let mut env = envelope(DsnRet::Unspecified, "");
    assert!(should_bounce(&env));
    env.kind = EnvelopeKind::Dsn as i32;
    assert!(!should_bounce(&env));
    env.kind = EnvelopeKind::Message as i32;
    env.reverse_path.clear();
    assert!(!should_bounce(&env));
}

#[test]
fn recipient_from_outcome() {
    let rcpt = Recipient {
        address: "bob@example.org".into(),
        orcpt: "rfc822;bob@example.org".into(),
        ..Default::default()
    };
    let r = DsnRecipient::from_outcome(
        &rcpt,
        &RecipientOutcome::failed(Reply::new(550, "5.1.1", "no"), "mx.example.org"),
    );
    assert_eq!(r.action, DsnAction::Failed);
    assert_eq!(r.status, "5.1.1");
    assert_eq!(r.orcpt.as_deref(), Some("rfc822;bob@example.org"));
    assert_eq!(r.remote_mta.as_deref(), Some("mx.example.org"));
    let r = DsnRecipient::from_outcome(
        &rcpt,
        &RecipientOutcome::expired(&Recipient {
            last_reply: "451 4.4.1 timeout".into(),
            last_remote: "mx.example.org".into(),
            ..Default::default()
        }),
    );
    assert_eq!((r.action, r.status.as_str()), (DsnAction::Failed, "5.4.7"));
    assert_eq!(r.diagnostic.as_deref(), Some("451 4.4.1 timeout"));
    let r = DsnRecipient::from_outcome(
        &Recipient::default(),
        &RecipientOutcome::deferred(Reply::new(421, "4.7.0", "later"), ""),
    );
    assert_eq!((r.action, r.status.as_str()), (DsnAction::Delayed, "4.7.0"));
    assert_eq!((r.orcpt, r.remote_mta), (None, None));
    let r = DsnRecipient::from_outcome(
        &rcpt,
        &RecipientOutcome::from_reply(Reply::new(250, "", "ok"), "mx.example.org", false),
    );
    assert_eq!(
        (r.action, r.status.as_str()),
        (DsnAction::Relayed, "2.0.0"),
        "a relay reports an accepted recipient as relayed, never delivered"
    );
    assert_eq!(DsnAction::Relayed.as_str(), "relayed");
    assert_eq!(DsnAction::Expanded.as_str(), "expanded");
}

/// The message an SMTPUTF8 client sent: UTF-8 recipient and header fields.
const UTF8_ORIGINAL: &str = "From: Alice <alice@example.com>\r\nTo: J\u{f6}rg <j\u{f6}rg@b\u{fc}cher.example>\r\n\
Subject: Gr\u{fc}\u{df}e\r\nMessage-ID: <m2@example.com>\r\n\r\nHall\u{f6}chen\r\n";

fn utf8_failed() -> DsnRecipient {
    DsnRecipient {
        address: "j\u{f6}rg+x@b\u{fc}cher.example".into(),
        orcpt: Some("rfc822;J\u{f6}rg@b\u{fc}cher.example".into()),
        diagnostic: Some("SMTPUTF8 needed but not offered by b\u{fc}cher".into()),
        ..failed()
    }
}

/// Issue 12 item 3: the DSN about a UTF-8 message to an ASCII sender needs no SMTPUTF8; its
/// header fields and report are ASCII and the UTF-8 header block comes back in base64.
#[test]
fn dsn_about_a_utf8_message_to_an_ascii_sender_needs_no_smtputf8() {
    let mut env = envelope(DsnRet::Full, "");
    env.smtputf8 = true;
    assert!(!needs_smtputf8(&env, "relay.baton.dev"));
    assert!(needs_smtputf8(&env, "r\u{e9}lais.example"));
    let m = build(&env, UTF8_ORIGINAL.as_bytes(), vec![utf8_failed()]);
    assert_wire_clean(&m);
    let text = String::from_utf8(m.clone()).unwrap();
    let (head, _) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.is_ascii(), "{head}");
    let msg = MessageParser::new().parse(&m).unwrap();
    let subs = msg.parts[0].sub_parts().unwrap();
    let status = part_text(&msg, subs[1] as usize);
    assert!(status.is_ascii(), "{status}");
    assert!(
        status.contains("Final-Recipient: utf-8;j\\x{F6}rg\\x{2B}x@b\\x{FC}cher.example\r\n"),
        "{status}"
    );
    assert!(
        status.contains("Original-Recipient: utf-8;J\\x{F6}rg@b\\x{FC}cher.example\r\n"),
        "{status}"
    );
    assert!(status.contains("not offered by b\\x{FC}cher"), "{status}");
    // RET=FULL cannot embed UTF-8 header fields without SMTPUTF8: the header block instead.
    assert!(!text.contains("message/rfc822"));
    assert!(
        text.contains("Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: base64\r\n")
    );
    let returned = part_text(&msg, subs[2] as usize);
    assert!(
        returned.contains("Subject: Gr\u{fc}\u{df}e\r\n"),
        "{returned}"
    );
    assert!(!returned.contains("Hall"), "body dropped: {returned}");
    // Only the explanation (text/plain, 8bit) may be 8-bit: 8BITMIME, not SMTPUTF8.
    let text_part = part_text(&msg, subs[0] as usize);
    assert!(text_part.contains("j\u{f6}rg+x@b\u{fc}cher.example"));
}

/// A non-ASCII sender's DSN goes with SMTPUTF8 and keeps the original content as it was.
#[test]
fn dsn_to_a_utf8_sender_keeps_utf8_content() {
    let mut env = envelope(DsnRet::Full, "");
    env.smtputf8 = true;
    env.reverse_path = "al\u{ef}ce@example.com".into();
    assert!(needs_smtputf8(&env, "relay.baton.dev"));
    let m = build(&env, UTF8_ORIGINAL.as_bytes(), vec![utf8_failed()]);
    assert_wire_clean(&m);
    let text = String::from_utf8(m).unwrap();
    assert!(text.contains("Content-Type: message/rfc822\r\n"));
    assert!(text.contains("Final-Recipient: rfc822;j\u{f6}rg+x@b\u{fc}cher.example\r\n"));
    assert!(text.contains("Hall\u{f6}chen"));
}

/// ASCII originals are unchanged by the downgrade rules.
#[test]
fn ascii_original_is_not_downgraded() {
    let env = envelope(DsnRet::Hdrs, "");
    let m = build(&env, ORIGINAL, vec![failed()]);
    let text = String::from_utf8(m).unwrap();
    assert!(
        text.contains("Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: 7bit\r\n")
    );
    assert!(text.contains("Subject: hello\r\n"));
}

#[test]
fn delay_notices_are_due_after_the_delay_and_once_per_interval() {
    let (after, interval) = (4 * 3_600_000, 24 * 3_600_000);
    let t0 = 1_000_000;
    assert!(!delay_notice_due(t0, 0, t0, after, interval));
    assert!(!delay_notice_due(t0, 0, t0 + after - 1, after, interval));
    assert!(delay_notice_due(t0, 0, t0 + after, after, interval));
    let sent = t0 + after + 5;
    assert!(!delay_notice_due(t0, sent, sent + 1, after, interval));
    assert!(!delay_notice_due(
        t0,
        sent,
        sent + interval - 1,
        after,
        interval
    ));
    assert!(delay_notice_due(t0, sent, sent + interval, after, interval));
    // A zero interval still means "not twice in the same millisecond".
    assert!(!delay_notice_due(t0, sent, sent, 0, 0));
    assert!(delay_notice_due(t0, 0, t0, 0, 0));
}

/// A DSN from a RelayDomain's postmaster: From and the Message-ID's domain are the domain's.
#[test]
fn dsn_from_the_postmaster_of_the_domain() {
    let env = envelope(DsnRet::Hdrs, "env-42");
    let m = build_from(&env, ORIGINAL, vec![failed()], "postmaster@example.com");
    assert_wire_clean(&m);
    let msg = MessageParser::new().parse(&m).unwrap();
    let from = msg.from().unwrap().first().unwrap();
    assert_eq!(from.address(), Some("postmaster@example.com"));
    assert_eq!(msg.message_id(), Some("Q1.dsn1@example.com"));
    // Reporting-MTA stays the host that tried.
    assert!(String::from_utf8_lossy(&m).contains("Reporting-MTA: dns; relay.baton.dev\r\n"));
}
