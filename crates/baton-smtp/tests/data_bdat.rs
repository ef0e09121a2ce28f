//! Transcript tests: DATA framing, SMTP smuggling, size caps, BDAT, fail_transaction.
#![allow(clippy::unwrap_used)]

mod common;

use baton_smtp::Reply;
use common::{Harness, codes};

const ENVELOPE: &str = "MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@dest.test>\r\n";

fn in_data() -> Harness {
    let mut h = Harness::ehloed();
    let out = h.run(&format!("{ENVELOPE}DATA\r\n"));
    assert_eq!(codes(&out), vec!["250 2.1.0", "250 2.1.5", "354 End d"]);
    h
}

#[test]
fn terminator_split_at_every_boundary() {
    let stream = b"Subject: x\r\n\r\n..dot\r\nline\r\n.\r\nNOOP\r\n";
    for split in 0..=stream.len() {
        let mut h = in_data();
        let mut out = h.run_bytes(&stream[..split]);
        out.extend(h.run_bytes(&stream[split..]));
        assert_eq!(
            codes(&out),
            vec!["ENQUEUE", "250 2.0.0", "250 2.0.0"],
            "split at {split}"
        );
        assert_eq!(h.enqueued[0].body, b"Subject: x\r\n\r\n.dot\r\nline\r\n");
    }
    // Byte by byte.
    let mut h = in_data();
    let mut out = Vec::new();
    for b in stream {
        out.extend(h.run_bytes(&[*b]));
    }
    assert_eq!(codes(&out), vec!["ENQUEUE", "250 2.0.0", "250 2.0.0"]);
}

/// DATA content is decoded as it is fed, not held a second time as raw input: what stays
/// buffered is only what follows the final dot.
#[test]
fn data_content_is_not_buffered_twice() {
    let mut h = in_data();
    let body = "Subject: x\r\n\r\n".to_owned() + &"0123456789abcdef\r\n".repeat(100);
    h.session.feed(body.as_bytes());
    assert_eq!(h.session.buffered_len(), 0);
    assert_eq!(h.session.body_len(), body.len());
    h.session.feed(b".\r\nNOOP\r\n");
    assert_eq!(h.session.buffered_len(), b"NOOP\r\n".len());
    let out = h.run("");
    assert_eq!(codes(&out), vec!["ENQUEUE", "250 2.0.0", "250 2.0.0"]);
    assert_eq!(h.enqueued[0].body, body.as_bytes());
}

#[test]
fn empty_message_and_dot_unstuffing() {
    let mut h = in_data();
    assert_eq!(codes(&h.run(".\r\n")), vec!["ENQUEUE", "250 2.0.0"]);
    assert!(h.enqueued[0].body.is_empty());
    let mut h = in_data();
    h.run("..\r\n...x\r\n.y\r\n.\r\n");
    assert_eq!(h.enqueued[0].body, b".\r\n..x\r\ny\r\n");
}

#[test]
fn smuggling_variants_are_refused_and_never_executed() {
    for variant in ["\n.\n", "\r\n.\n", "\n.\r\n", "\r\n.\r\r\n", "\r.\r\n"] {
        let mut h = in_data();
        let input = format!(
            "Subject: x\r\n\r\nhello{variant}MAIL FROM:<mallory@example.com>\r\n\
             RCPT TO:<victim@dest.test>\r\nDATA\r\n\r\nsmuggled\r\n.\r\nNOOP\r\n"
        );
        let out = h.run(&input);
        assert_eq!(out.len(), 2, "{variant:?}: {out:?}");
        assert!(out[0].starts_with("550 5.6.0"), "{variant:?}: {out:?}");
        assert!(out[0].contains("bare CR or LF"));
        assert_eq!(out[1], "250 2.0.0 Ok");
        assert!(h.enqueued.is_empty(), "{variant:?}");
        assert!(!h.session.in_transaction());
        assert_eq!(h.session.stats().rejections.get("bare_eol"), Some(&1));
    }
}

#[test]
fn size_cap_discards_without_memory_growth() {
    let mut h = in_data();
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..100 {
        // 100 000 octets against a 10 000 octet cap.
        assert!(h.run(&line).is_empty());
        assert!(h.session.body_len() <= 10_000 + 1000);
        assert!(h.session.buffered_len() <= 1000);
    }
    assert_eq!(h.session.body_len(), 0, "buffer dropped once over the cap");
    assert_eq!(
        codes(&h.run(".\r\nNOOP\r\n")),
        vec!["552 5.3.4", "250 2.0.0"]
    );
    assert!(h.enqueued.is_empty());

    // Exactly at the cap is fine.
    let mut h = in_data();
    let body = format!("{}\r\n", "y".repeat(9_998));
    h.run(&format!("{body}.\r\n"));
    assert_eq!(h.enqueued[0].body.len(), 10_000);
}

#[test]
fn grant_cannot_raise_the_listener_limit() {
    // TestPolicy grants 1e9 octets when ENVID=huge; the listener's 10,000 still caps the body.
    let mut h = Harness::ehloed();
    let out = h.run("MAIL FROM:<a@example.com> ENVID=huge\r\nRCPT TO:<b@c.test>\r\nDATA\r\n");
    assert_eq!(codes(&out), vec!["250 2.1.0", "250 2.1.5", "354 End d"]);
    let out = h.run(&format!("{}\r\n.\r\n", "z".repeat(20_000)));
    assert_eq!(codes(&out), vec!["552 5.3.4"]);
}

#[test]
fn grant_size_limit_applies() {
    // TestPolicy grants a 100 octet cap when ENVID=small.
    let mut h = Harness::ehloed();
    let out = h.run("MAIL FROM:<a@example.com> ENVID=small SIZE=200\r\n");
    assert_eq!(codes(&out), vec!["552 5.3.4"]);
    let out = h.run("MAIL FROM:<a@example.com> ENVID=small\r\nRCPT TO:<b@c.test>\r\nDATA\r\n");
    assert_eq!(codes(&out), vec!["250 2.1.0", "250 2.1.5", "354 End d"]);
    let out = h.run(&format!("{}\r\n.\r\n", "z".repeat(150)));
    assert_eq!(codes(&out), vec!["552 5.3.4"]);
}

#[test]
fn fail_transaction_mid_data() {
    let mut h = in_data();
    h.run("partial content\r\n");
    assert!(h.session.body_len() > 0);
    h.session
        .fail_transaction(Reply::new(451, "4.3.0", "Error: memory budget exceeded"));
    assert_eq!(h.session.body_len(), 0);
    assert!(h.run("more content\r\n").is_empty());
    assert_eq!(h.session.body_len(), 0);
    let out = h.run(".\r\nNOOP\r\n");
    assert_eq!(
        out,
        vec!["451 4.3.0 Error: memory budget exceeded", "250 2.0.0 Ok"]
    );
    assert!(h.enqueued.is_empty());
    assert!(!h.session.in_transaction());
}

#[test]
fn bdat_chunks_and_last() {
    let mut h = Harness::ehloed();
    let out = h.run(&format!("{ENVELOPE}BDAT 12\r\nHello\r\nWorld"));
    assert_eq!(out[2], "250 2.0.0 12 octets received");
    // Chunk contents that look like commands are data, not commands.
    let out = h.run("BDAT 8 LAST\r\n\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(codes(&out), vec!["ENQUEUE", "250 2.0.0", "250 2.0.0"]);
    assert_eq!(h.enqueued[0].body, b"Hello\r\nWorld\r\nQUIT\r\n");
    // BDAT 0 LAST on its own, split across feeds.
    let mut h = Harness::ehloed();
    h.run(ENVELOPE);
    let out = h.run("BDAT 3\r\nab");
    assert!(out.is_empty());
    assert_eq!(codes(&h.run("c")), vec!["250 2.0.0"]);
    assert_eq!(
        codes(&h.run("BDAT 0 LAST\r\n")),
        vec!["ENQUEUE", "250 2.0.0"]
    );
    assert_eq!(h.enqueued[0].body, b"abc");
}

#[test]
fn bdat_sequencing() {
    let mut h = Harness::ehloed();
    // Before MAIL: refused, but the chunk is consumed, not executed.
    let out = h.run("BDAT 6\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(codes(&out), vec!["503 5.5.1", "250 2.0.0"]);
    h.run("MAIL FROM:<a@example.com>\r\n");
    assert_eq!(codes(&h.run("BDAT 6 LAST\r\nQUIT\r\n")), vec!["503 5.5.1"]);
    h.run("RCPT TO:<b@c.test>\r\n");
    assert_eq!(codes(&h.run("BDAT 2\r\nab")), vec!["250 2.0.0"]);
    assert_eq!(codes(&h.run("DATA\r\n")), vec!["503 5.5.1"]);
    // Invalid BDAT: the chunk length is unknown, so the session closes.
    assert_eq!(
        codes(&h.run("BDAT x\r\nQUIT\r\n")),
        vec!["501 5.5.4", "CLOSE"]
    );
    assert!(h.enqueued.is_empty());
}

#[test]
fn bdat_over_cap_and_bare_lf() {
    let mut h = Harness::ehloed();
    h.run(ENVELOPE);
    let big = "x".repeat(6_000);
    assert_eq!(
        codes(&h.run(&format!("BDAT 6000\r\n{big}"))),
        vec!["250 2.0.0"]
    );
    let out = h.run(&format!("BDAT 6000\r\n{big}NOOP\r\n"));
    assert_eq!(codes(&out), vec!["552 5.3.4", "250 2.0.0"]);
    assert!(!h.session.in_transaction());
    assert_eq!(h.session.body_len(), 0);
    // Remaining chunks of the aborted transaction are consumed and refused.
    assert_eq!(codes(&h.run("BDAT 3 LAST\r\nabc")), vec!["503 5.5.1"]);

    let mut h = Harness::ehloed();
    h.run(ENVELOPE);
    assert_eq!(codes(&h.run("BDAT 4\r\na\nb\r")), vec!["250 2.0.0"]);
    let out = h.run("BDAT 1 LAST\r\n\n");
    assert!(out[0].starts_with("550 5.6.0"), "{out:?}");
    assert!(h.enqueued.is_empty());
}

#[test]
fn bdat_fail_transaction() {
    let mut h = Harness::ehloed();
    h.run(ENVELOPE);
    h.run("BDAT 10\r\n12345");
    h.session
        .fail_transaction(Reply::new(451, "4.3.0", "Error: memory budget exceeded"));
    assert_eq!(h.session.body_len(), 0);
    assert_eq!(codes(&h.run("67890")), vec!["451 4.3.0"]);
    assert!(!h.session.in_transaction());
}
