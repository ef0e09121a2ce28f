use super::*;
use BounceClass::*;

#[test]
fn shipped_rules_parse() {
    let rules = parse_rules(SHIPPED_RULES).expect("shipped rules parse");
    assert!(rules.len() > 20);
    // Every class is reachable from the shipped file (or is the fallback).
    for class in BounceClass::ALL {
        assert!(
            class == Other || rules.iter().any(|r| r.class == class),
            "{class} has no rule"
        );
    }
}

/// Replies as real receivers send them (texts from provider documentation and bounce logs),
/// and Baton's own local failures.
#[test]
fn real_world_replies() {
    let table: &[(&str, BounceClass)] = &[
        // Gmail
        (
            "550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos",
            InvalidRecipient,
        ),
        (
            "550 5.2.1 The email account that you tried to reach is disabled.",
            InvalidRecipient,
        ),
        (
            "452-4.2.2 The recipient's inbox is out of storage space. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
            MailboxFull,
        ),
        (
            "552-5.2.2 The recipient's inbox is out of storage space and inactive.",
            MailboxFull,
        ),
        (
            "550-5.7.1 [203.0.113.5] Our system has detected that this message is likely unsolicited mail.",
            Policy,
        ),
        (
            "421-4.7.0 [203.0.113.5] Our system has detected an unusual rate of unsolicited mail originating from your IP address.",
            Reputation,
        ),
        (
            "550-5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.",
            TlsAuthRequired,
        ),
        (
            "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail from your domain with low reputation of the sending domain",
            Reputation,
        ),
        (
            "552-5.3.4 Your message exceeded Google's message size limits.",
            MessageTooLarge,
        ),
        (
            "450-4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
            Transient,
        ),
        (
            "550-5.7.1 This message has been blocked because its content presents a potential security issue.",
            Policy,
        ),
        // Microsoft
        (
            "550 5.5.0 Requested action not taken: mailbox unavailable (S2017)",
            InvalidRecipient,
        ),
        (
            "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [BN8NAM11FT012.eop-nam11.prod.protection.outlook.com]",
            InvalidRecipient,
        ),
        (
            "550 5.7.1 Unfortunately, messages from [203.0.113.5] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).",
            Reputation,
        ),
        (
            "451 4.7.500 Server busy. Please try again later from [203.0.113.5]. (S77714)",
            Reputation,
        ),
        (
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            InvalidRecipient,
        ),
        (
            "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException",
            MailboxFull,
        ),
        (
            "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
            Policy,
        ),
        // Yahoo / AOL
        (
            "421 4.7.0 [TSS04] Messages from 203.0.113.5 temporarily deferred due to unexpected volume or user complaints",
            Reputation,
        ),
        (
            "554 5.7.9 Message not accepted for policy reasons. See https://senders.yahooinc.com/error-codes",
            Policy,
        ),
        (
            "553 5.7.1 [BL21] Connections will not be accepted from 203.0.113.5, because the ip is in Spamhaus's list",
            Reputation,
        ),
        (
            "552 1 Requested mail action aborted, mailbox not found",
            InvalidRecipient,
        ),
        (
            "554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0]",
            InvalidRecipient,
        ),
        (
            "421 4.7.0 [TS01] Messages from 203.0.113.5 temporarily deferred",
            Reputation,
        ),
        // Apple iCloud
        (
            "550 5.1.1 <x@icloud.com>: user does not exist",
            InvalidRecipient,
        ),
        (
            "554 5.7.1 [CS01] Message rejected due to local policy.",
            Policy,
        ),
        ("421 4.7.1 [HM08] Message rejected", Reputation),
        // Generic MTAs (Postfix, Exim, Sendmail, qmail)
        (
            "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in local recipient table",
            InvalidRecipient,
        ),
        ("550 No such user here", InvalidRecipient),
        (
            "450 4.2.0 <a@example.com>: Recipient address rejected: Greylisted, see https://postgrey.schweikert.ch/",
            Transient,
        ),
        ("451 4.7.1 Please try again later", Transient),
        (
            "554 5.7.1 Service unavailable; Client host [203.0.113.5] blocked using zen.spamhaus.org",
            Reputation,
        ),
        (
            "530 5.7.0 Must issue a STARTTLS command first",
            TlsAuthRequired,
        ),
        ("552 5.3.4 Error: message file too big", MessageTooLarge),
        (
            "552 Message size exceeds fixed maximum message size",
            MessageTooLarge,
        ),
        ("554 5.7.1 <a@example.com>: Relay access denied", Policy),
        ("550 5.7.23 SPF validation failed", TlsAuthRequired),
        ("421 4.3.2 Service shutting down", Transient),
        ("522 mailbox full", MailboxFull),
        ("550 5.0.0 something we have never seen", Other),
        ("503 5.5.1 Error: need RCPT command", Other),
        // Baton's own local failures
        (
            "550 5.1.2 domain nonexistent.example does not exist",
            DnsFailure,
        ),
        (
            "451 4.4.3 temporary DNS failure for example.com",
            DnsFailure,
        ),
        (
            "550 5.1.10 example.com has a null MX: it accepts no mail",
            InvalidRecipient,
        ),
        ("451 4.4.1 connection refused by 192.0.2.1:25", Transient),
        (
            "451 4.4.5 destination example.com busy: 3 messages wait for 2 connections, about 4s",
            Transient,
        ),
        (
            "550 5.4.4 destination address 127.0.0.1 is not allowed (loopback)",
            DnsFailure,
        ),
    ];
    let c = Classifier::shipped();
    let mut wrong = Vec::new();
    for (reply, want) in table {
        let got = c.classify_line(reply);
        if got != *want {
            wrong.push(format!("{reply:?}: got {got}, want {want}"));
        }
        // The worker classifies the typed reply; a reply that has a code classifies the same.
        if reply.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let typed = c.classify_reply(&baton_smtp::Reply::from_line(reply));
            if typed != *want {
                wrong.push(format!("{reply:?} (typed): got {typed}, want {want}"));
            }
        }
    }
    assert!(wrong.is_empty(), "misclassified:\n{}", wrong.join("\n"));
}

#[test]
fn parts_and_fallbacks() {
    let c = Classifier::shipped();
    assert_eq!(c.classify(550, "5.1.1", "whatever"), InvalidRecipient);
    assert_eq!(c.classify(451, "", "???"), Transient);
    assert_eq!(c.classify(599, "", "???"), Other);
    // Without a code: a bare local explanation.
    assert_eq!(c.classify_line("4.4.1 connection timed out"), Transient);
    assert_eq!(c.classify_line(""), Other);
    assert_eq!(c.classify_line("not attempted"), Other);
    // A status that only shares a prefix with a subject rule does not match it.
    assert_eq!(c.classify(550, "5.71.0", "x"), Other);
}

#[test]
fn operator_rules_come_first() {
    let c = Classifier::with_rules(
        "rules:\n  - { class: reputation, text: 'example-blocklist' }\n  - { class: mailbox_full, codes: [5xx], status: ['5.1.1'], text: 'over the limit' }\n",
    )
    .expect("rules parse");
    assert_eq!(
        c.classify_line("550 5.7.1 listed at example-blocklist"),
        Reputation
    );
    assert_eq!(
        c.classify_line("550 5.1.1 mailbox over the limit"),
        MailboxFull
    );
    // Everything else is still classified by the shipped rules.
    assert_eq!(c.classify_line("550 5.1.1 no such user"), InvalidRecipient);
}

#[test]
fn bad_rule_files_are_refused_with_the_rule_named() {
    let err = |y: &str| Classifier::with_rules(y).expect_err("refused").to_string();
    assert!(err("rules:\n  - { class: nonsense, codes: [550] }\n").contains("unknown variant"));
    assert!(err("rules:\n  - { class: policy, text: '(' }\n").contains("bounce rule 0"));
    assert!(err("rules:\n  - { class: policy }\n").contains("no condition"));
    assert!(err("rules:\n  - { class: policy, codes: [99x] }\n").contains("neither a reply code"));
    assert!(err("rules:\n  - { class: policy, codes: [700] }\n").contains("neither a reply code"));
    assert!(err("rules:\n  - { class: policy, colour: red }\n").contains("unknown field"));
    assert!(err("nonsense").contains("not valid"));
}

#[test]
fn class_names_round_trip() {
    for class in BounceClass::ALL {
        assert_eq!(class.as_str().parse::<BounceClass>().ok(), Some(class));
    }
    assert!("Policy".parse::<BounceClass>().is_err());
}

proptest::proptest! {
    /// Any input is classified without panicking (rules are data; replies come from strangers).
    #[test]
    fn never_panics(line in ".{0,300}") {
        let _ = Classifier::shipped().classify_line(&line);
    }
}
