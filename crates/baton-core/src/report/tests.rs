use super::*;

/// An asynchronous bounce as Postfix writes it (shortened).
const POSTFIX_DSN: &str = "From: MAILER-DAEMON@mx.dest.test (Mail Delivery System)\r\n\
Subject: Undelivered Mail Returned to Sender\r\n\
To: b01-0abcdefghjkmnpqrst-abcdef-0123456789@bounces.example.com\r\n\
Auto-Submitted: auto-replied\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status;\r\n\
\tboundary=\"B1\"\r\n\
\r\n\
--B1\r\n\
Content-Type: text/plain; charset=us-ascii\r\n\
\r\n\
I'm sorry to have to inform you that your message could not be delivered.\r\n\
\r\n\
--B1\r\n\
Content-Description: Delivery report\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns; mx.dest.test\r\n\
X-Postfix-Queue-ID: 4ABC\r\n\
Arrival-Date: Thu,  3 Dec 2026 12:00:00 +0000 (UTC)\r\n\
\r\n\
Final-Recipient: rfc822; Gone@dest.test\r\n\
Original-Recipient: rfc822;gone@dest.test\r\n\
Action: failed\r\n\
Status: 5.1.1\r\n\
Diagnostic-Code: X-Postfix; User unknown\r\n\
\x20in virtual mailbox table\r\n\
\r\n\
--B1\r\n\
Content-Type: text/rfc822-headers\r\n\
\r\n\
From: app@example.com\r\n\
To: gone@dest.test\r\n\
\r\n\
--B1--\r\n";

const ARF: &str = "From: fbl@mailbox.test\r\n\
To: fbl@bounces.example.com\r\n\
Subject: complaint\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"A\"\r\n\
\r\n\
--A\r\n\
Content-Type: text/plain\r\n\
\r\n\
This is an abuse report.\r\n\
--A\r\n\
Content-Type: message/feedback-report\r\n\
\r\n\
Feedback-Type: abuse\r\n\
User-Agent: SomeFBL/1.0\r\n\
Version: 1\r\n\
Original-Mail-From: <b01-0abcdefghjkmnpqrst-abcdef-0123456789@bounces.example.com>\r\n\
Original-Rcpt-To: <reader@mailbox.test>\r\n\
\r\n\
--A\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Return-Path: <b01-0abcdefghjkmnpqrst-abcdef-0123456789@bounces.example.com>\r\n\
From: app@example.com\r\n\
To: Reader <reader@mailbox.test>\r\n\
Subject: hello\r\n\
\r\n\
body\r\n\
--A--\r\n";

#[test]
fn postfix_dsn() {
    let Some(Report::Dsn(blocks)) = parse(POSTFIX_DSN.as_bytes()) else {
        panic!("a DSN");
    };
    assert_eq!(blocks.len(), 1);
    let b = &blocks[0];
    assert_eq!(b.final_recipient, "Gone@dest.test");
    assert_eq!(b.original_recipient.as_deref(), Some("gone@dest.test"));
    assert_eq!(b.action, "failed");
    assert_eq!(b.status, "5.1.1");
    assert_eq!(b.diagnostic, "User unknown in virtual mailbox table");
}

#[test]
fn arf_complaint() {
    let Some(Report::Complaint(c)) = parse(ARF.as_bytes()) else {
        panic!("a complaint");
    };
    assert_eq!(c.feedback_type, "abuse");
    let verp = "b01-0abcdefghjkmnpqrst-abcdef-0123456789@bounces.example.com";
    assert_eq!(c.original_mail_from.as_deref(), Some(verp));
    assert_eq!(c.original_rcpt_to, ["reader@mailbox.test"]);
    assert_eq!(c.return_path.as_deref(), Some(verp));
    assert_eq!(c.original_to, ["reader@mailbox.test"]);
}

#[test]
fn baton_own_dsn_parses() {
    use crate::dsn::{DsnAction, DsnInput, DsnRecipient, build_dsn};
    use baton_proto::v1::Envelope;
    let env = Envelope {
        reverse_path: "app@example.com".into(),
        ..Default::default()
    };
    let m = build_dsn(&DsnInput {
        reporting_mta: "relay.test",
        from: "",
        original: &env,
        original_message: b"Subject: x\r\n\r\nbody\r\n",
        recipients: vec![DsnRecipient {
            address: "bob@dest.test".into(),
            orcpt: None,
            action: DsnAction::Failed,
            status: "5.2.2".into(),
            diagnostic: Some("552 5.2.2 mailbox full".into()),
            remote_mta: None,
            class: None,
        }],
        arrival_ms: 0,
        now: time::OffsetDateTime::UNIX_EPOCH,
        dsn_id: "x",
    });
    let Some(Report::Dsn(b)) = parse(&m) else {
        panic!("a DSN");
    };
    assert_eq!(
        (b[0].final_recipient.as_str(), b[0].status.as_str()),
        ("bob@dest.test", "5.2.2")
    );
    assert_eq!(b[0].diagnostic, "552 5.2.2 mailbox full");
}

#[test]
fn not_reports() {
    for m in [
        "Subject: hi\r\n\r\nplain mail\r\n",
        "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n",
        "Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n",
        // A delivery-status report without recipient blocks.
        "Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n--x--\r\n",
        "",
    ] {
        assert_eq!(parse(m.as_bytes()), None, "{m:?}");
    }
}

proptest::proptest! {
    #[test]
    fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
        let _ = parse(&bytes);
    }
}
