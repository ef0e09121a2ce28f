//! Table tests of [`super::authors`]: well-formed author fields in their RFC 5322 variety, and
//! every way found to make a receiver display an author the old first-address check missed.

#![allow(clippy::unwrap_used)]

use super::*;

fn from_list(body: &str) -> Result<Vec<String>, AuthorError> {
    authors(body.as_bytes()).map(|a| a.from.into_iter().map(|m| m.address).collect())
}

#[test]
fn well_formed_from_fields() {
    let cases: &[(&str, &[&str])] = &[
        ("From: app@example.com\r\n\r\nbody", &["app@example.com"]),
        ("from: app@Example.COM\r\n\r\n", &["app@Example.COM"]),
        ("FROM:app@example.com\r\n\r\n", &["app@example.com"]),
        // Obsolete syntax: white space before the colon (obs-optional).
        ("From : app@example.com\r\n\r\n", &["app@example.com"]),
        ("From: App <app@example.com>\r\n\r\n", &["app@example.com"]),
        (
            "From: \"Doe, John\" <john@example.com>\r\n\r\n",
            &["john@example.com"],
        ),
        (
            "From: \"boss@bank.example\" <app@example.com>\r\n\r\n",
            &["app@example.com"],
        ),
        (
            "From: =?utf-8?q?J=C3=B6rg?= <j@example.com>\r\n\r\n",
            &["j@example.com"],
        ),
        (
            "From: =?utf-8?b?Ym9zc0BiYW5rLmV4YW1wbGU=?= <app@example.com>\r\n\r\n",
            &["app@example.com"],
        ),
        (
            "From: (comment) a@example.com (x)\r\n\r\n",
            &["a@example.com"],
        ),
        (
            "From: app@example.com (boss@bank.example)\r\n\r\n",
            &["app@example.com"],
        ),
        // Folded over several lines.
        (
            "From: Application\r\n <app@example.com>\r\nTo: x@y.z\r\n\r\n",
            &["app@example.com"],
        ),
        (
            "Subject: x\r\nFrom: app@example.com\r\n\r\nFrom: boss@bank.example\r\n",
            &["app@example.com"],
        ),
        (
            "From: app@example.com\n\nFrom: boss@bank.example\n",
            &["app@example.com"],
        ),
    ];
    for (body, want) in cases {
        let want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
        assert_eq!(from_list(body), Ok(want), "{body:?}");
    }
}

#[test]
fn several_authors_need_a_sender() {
    // The bypasses 2 and 3, now with every mailbox returned (each is then checked).
    let list = "From: app@example.com, boss@bank.example\r\nSender: app@example.com\r\n\r\n";
    assert_eq!(
        from_list(list).unwrap(),
        ["app@example.com", "boss@bank.example"]
    );
    let group = "From: grp: app@example.com, boss@bank.example;\r\nSender: app@example.com\r\n\r\n";
    let a = authors(group.as_bytes()).unwrap();
    assert_eq!(a.from.len(), 2);
    assert_eq!(a.from[1].domain, "bank.example");
    assert_eq!(a.sender.unwrap().address, "app@example.com");
    let obs_list =
        "From: , app@example.com, , Boss <boss@bank.example>\r\nSender: a@example.com\r\n\r\n";
    assert_eq!(
        from_list(obs_list).unwrap(),
        ["app@example.com", "boss@bank.example"]
    );
    for body in [
        "From: app@example.com, boss@bank.example\r\n\r\n",
        "From: grp: app@example.com, boss@bank.example;\r\n\r\n",
        "From: app@example.com; boss@bank.example\r\n\r\n",
    ] {
        assert_eq!(
            authors(body.as_bytes()),
            Err(AuthorError::SenderRequired),
            "{body:?}"
        );
    }
}

#[test]
fn refused_author_fields() {
    use AuthorError::*;
    let cases: &[(&str, AuthorError)] = &[
        ("", NoFrom),
        ("Subject: x\r\n\r\nFrom: a@example.com\r\n", NoFrom),
        ("X-From: a@example.com\r\n\r\n", NoFrom),
        ("Subject: x\r\n From: a@example.com\r\n\r\n", NoFrom),
        // Bypass 1: two From: fields, in any spelling.
        (
            "From: app@example.com\r\nFrom: boss@bank.example\r\n\r\n",
            SeveralFrom(2),
        ),
        (
            "From: app@example.com\r\nSubject: x\r\nfrom : boss@bank.example\r\n\r\n",
            SeveralFrom(2),
        ),
        // Bypass 4 and its relatives: two addresses glued into one mailbox.
        (
            "From: <boss@bank.example> <app@example.com>\r\n\r\n",
            MalformedFrom,
        ),
        (
            "From: app@example.com boss@bank.example\r\n\r\n",
            MalformedFrom,
        ),
        (
            "From: Boss <boss@bank.example> app@example.com\r\n\r\n",
            MalformedFrom,
        ),
        // An address-like display name that is not quoted (RFC 5322 forbids the bare `@`).
        (
            "From: boss@bank.example <app@example.com>\r\n\r\n",
            MalformedFrom,
        ),
        (
            "From: app@example.com, boss@bank.example <app@example.com>\r\nSender: app@example.com\r\n\r\n",
            MalformedFrom,
        ),
        // Obsolete source route: refused rather than guessed at.
        (
            "From: <@relay.example:app@example.com>\r\n\r\n",
            MalformedFrom,
        ),
        // No usable mailbox.
        ("From: nobody\r\n\r\n", MalformedFrom),
        ("From:\r\n\r\n", MalformedFrom),
        ("From: undisclosed-recipients:;\r\n\r\n", MalformedFrom),
        ("From: <>\r\n\r\n", MalformedFrom),
        ("From: Name <app@>\r\n\r\n", MalformedFrom),
        ("From: <@example.com>\r\n\r\n", MalformedFrom),
        ("From: app@example.com, nobody\r\n\r\n", MalformedFrom),
        (
            "From: =?utf-8?q?boss=40bank.example?=\r\n\r\n",
            MalformedFrom,
        ),
        ("From: app@[192.0.2.1]\r\n\r\n", MalformedFrom),
        ("From: app@exa mple.com\r\n\r\n", MalformedFrom),
        // Sender:
        (
            "From: a@example.com\r\nSender: a@example.com\r\nSender: b@bank.example\r\n\r\n",
            SeveralSender(2),
        ),
        (
            "From: a@example.com, b@example.com\r\nSender: a@example.com, b@bank.example\r\n\r\n",
            MalformedSender,
        ),
        (
            "From: a@example.com\r\nSender: nobody\r\n\r\n",
            MalformedSender,
        ),
        (
            "From: a@example.com\r\nSender: <b@bank.example> <a@example.com>\r\n\r\n",
            MalformedSender,
        ),
    ];
    for (body, want) in cases {
        assert_eq!(authors(body.as_bytes()).as_ref(), Err(want), "{body:?}");
    }
}

#[test]
fn bare_at_signs_skip_quotes_comments_and_literals() {
    for (raw, n) in [
        ("a@b", 1),
        ("\"x@y\" <a@b>", 1),
        ("\"x\\\"@y\" <a@b>", 1),
        ("a@b (c@d (e@f) g@h)", 1),
        ("(\\(@) a@b", 1),
        ("a@[1.2.3.4] , c@d", 2),
        ("x@y <a@b>", 2),
        ("<@r:a@b>", 2),
        ("", 0),
    ] {
        assert_eq!(bare_at_signs(raw.as_bytes()), n, "{raw}");
    }
}

#[test]
fn sender_alone_is_returned() {
    let a = authors(b"From: a@example.com\r\nSender: Ops <Ops@Example.com>\r\n\r\n").unwrap();
    assert_eq!(
        a.sender,
        Some(Mailbox {
            address: "Ops@Example.com".into(),
            domain: "example.com".into()
        })
    );
    assert_eq!(a.from[0].domain, "example.com");
}

#[test]
fn labels_are_distinct() {
    use AuthorError::*;
    let all = [
        NoFrom,
        SeveralFrom(2),
        MalformedFrom,
        SeveralSender(2),
        MalformedSender,
        SenderRequired,
    ];
    let labels: std::collections::BTreeSet<_> = all.iter().map(|e| e.metric_label()).collect();
    assert_eq!(labels.len(), all.len());
    assert!(all.iter().all(|e| e.to_string().is_ascii()));
}
