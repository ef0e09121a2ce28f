//! Scenario: hostile bytes against a real `baton ingress` and `nats-server` — SMTP smuggling
//! (only `CRLF.CRLF` ends DATA; a message with a bare CR or LF is refused, so a fake second
//! transaction hidden in the content is never queued), plaintext pipelined after STARTTLS
//! (discarded, and all state reset by the handshake), and NUL bytes, invalid UTF-8 and
//! malformed addresses (5xx, the session goes on, the ingress stays healthy).

use baton_system_tests::harness::http_get;
use baton_system_tests::hostile::{BODY, Env, advertises, expect};
use baton_system_tests::wire::Wire;

/// The content of a message that hides a second transaction behind `eod`, a fake
/// end-of-data; ends with the real `CRLF.CRLF`.
fn smuggling(eod: &str) -> String {
    format!(
        "From: app@example.com\r\nSubject: real\r\n\r\nreal{eod}\
         MAIL FROM:<app@example.com>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n\
         From: app@example.com\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n"
    )
}

#[tokio::test]
async fn smuggled_transactions_are_never_queued() -> anyhow::Result<()> {
    let env = Env::direct("baton-smuggle", &[]).await?;
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    let variants = ["\n.\n", "\r\n.\n", "\n.\r\n", "\r\n.\r\r\n"];
    for eod in variants {
        expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
        expect(&w.cmd("RCPT TO:<real@dest.test>").await?, 250, "2.1.5");
        expect(&w.cmd("DATA").await?, 354, "End");
        w.send(smuggling(eod).as_bytes()).await?; // one write: content, fake EOD, fake txn
        // Exactly one reply for the whole content (the fake MAIL/RCPT/DATA were content),
        // refusing it for its bare line ending; the next reply is the NOOP's.
        let r = w.reply().await?;
        expect(&r, 550, "5.6.0");
        expect(&w.cmd("NOOP").await?, 250, "2.0.0");
        // No transaction was left open by the smuggled commands.
        expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 503, "5.5.1");
    }

    // BDAT carries no terminator, but a bare LF in a chunk is refused the same way.
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<real@dest.test>").await?, 250, "2.1.5");
    let content = smuggling("\n.\n");
    w.send(format!("BDAT {} LAST\r\n{content}", content.len()).as_bytes())
        .await?;
    expect(&w.reply().await?, 550, "5.6.0");
    expect(&w.cmd("NOOP").await?, 250, "2.0.0");

    assert_eq!(
        env.queued().await?,
        0,
        "neither the real nor the smuggled message"
    );
    assert_eq!(env.rejections(550, "5.6.0").await, 5.0);

    // A clean message afterwards is queued exactly once, with its own recipient only.
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<real@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");
    expect(&w.cmd("QUIT").await?, 221, "2.0.0");
    assert_eq!(env.queued().await?, 1);
    let e = env.stored(1).await?;
    let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["real@dest.test"]);
    Ok(())
}

#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_never_executed() -> anyhow::Result<()> {
    let env = Env::direct("baton-starttls", &[]).await?;
    let tls = env.tls()?;

    // Commands injected behind STARTTLS in the same write.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    let ehlo = w.cmd("EHLO client.test").await?;
    assert!(advertises(&ehlo, "STARTTLS") && !advertises(&ehlo, "AUTH"));
    w.send(
        b"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<app@example.com>\r\n\
          RCPT TO:<victim@dest.test>\r\n",
    )
    .await?;
    expect(&w.reply().await?, 220, "2.0.0");
    let mut w = w.handshake(tls.clone()).await?; // fails if plaintext replies followed the 220
    // The first reply over TLS is to our first TLS command: nothing injected ran, and the
    // injected EHLO did not count — EHLO is required again.
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 503, "5.5.1");
    let ehlo = w.cmd("EHLO client.tls").await?;
    assert!(advertises(&ehlo, "AUTH") && !advertises(&ehlo, "STARTTLS"));
    expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 503, "5.5.1");
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");
    expect(&w.cmd("STARTTLS").await?, 503, "5.5.1");
    assert_eq!(env.queued().await?, 1);
    let e = env.stored(1).await?;
    assert_eq!(e.helo, "client.tls");
    let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["x@dest.test"]);

    // A transaction opened before STARTTLS does not survive the handshake.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<victim@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("STARTTLS").await?, 220, "2.0.0");
    let mut w = w.handshake(tls).await?;
    assert_eq!(w.cmd("EHLO client.tls").await?.code, 250);
    expect(&w.cmd("DATA").await?, 503, "5.5.1");
    expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 503, "5.5.1");
    assert_eq!(env.queued().await?, 1);
    Ok(())
}

/// Sends `line` (raw bytes, CRLF included) and checks the refusal, then that the session
/// still answers.
async fn refused(w: &mut Wire, line: &[u8], code: u16, status: &str) -> anyhow::Result<()> {
    w.send(line).await?;
    let r = w.reply().await?;
    assert!(
        r.code == code && r.text.starts_with(status),
        "{:?}: expected {code} {status}, got {r:?}",
        String::from_utf8_lossy(line)
    );
    expect(&w.cmd("NOOP").await?, 250, "2.0.0");
    Ok(())
}

#[tokio::test]
async fn nul_bytes_bad_utf8_and_malformed_addresses_get_5xx() -> anyhow::Result<()> {
    let env = Env::direct("baton-malformed", &[]).await?;

    // NUL, invalid UTF-8, bare LF: 500 5.5.2, never executed.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    refused(&mut w, b"NOOP\0\r\n", 500, "5.5.2").await?;
    refused(&mut w, b"EHLO \xff\xfe\r\n", 500, "5.5.2").await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    refused(&mut w, b"MAIL FROM:<a\0pp@example.com>\r\n", 500, "5.5.2").await?;
    refused(
        &mut w,
        b"MAIL FROM:<\xc3\x28@example.com>\r\n",
        500,
        "5.5.2",
    )
    .await?;
    refused(&mut w, b"MAIL FROM:<app@example.com>\n", 500, "5.5.2").await?;
    refused(
        &mut w,
        b"MAIL FROM:<app@example.com>\rRSET\r\n",
        500,
        "5.5.2",
    )
    .await?;
    expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 503, "5.5.1");

    // Malformed reverse-paths: 501 5.1.7.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    for path in [
        "<a@b@c>",
        "<@>",
        "<\"app@example.com>",
        "<app\"@example.com>",
        "<app@example.com",
        "app@example.com",
        "<app@[300.1.1.1]>",
        &format!("<{}@example.com>", "a".repeat(65)),
    ] {
        refused(
            &mut w,
            format!("MAIL FROM:{path}\r\n").as_bytes(),
            501,
            "5.1.7",
        )
        .await?;
    }
    // Malformed forward-paths: 501 5.1.3; the transaction stays usable.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    for path in ["<x@y@z>", "<\"x@dest.test>", "<>", "<x@>", "<x@dest..test>"] {
        refused(
            &mut w,
            format!("RCPT TO:{path}\r\n").as_bytes(),
            501,
            "5.1.3",
        )
        .await?;
    }
    refused(
        &mut w,
        "RCPT TO:<usér@dest.test>\r\n".as_bytes(),
        553,
        "5.6.7",
    )
    .await?;
    expect(&w.cmd("RCPT TO:<ok@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");

    // Nothing else was queued and the process is alive and healthy.
    assert_eq!(env.queued().await?, 1);
    let e = env.stored(1).await?;
    let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["ok@dest.test"]);
    let (code, _) = http_get(env.ing.metrics, "/healthz").await?;
    assert_eq!(code, 200, "{}", env.log());
    let mut env = env;
    assert!(env.ing.proc.child.try_wait()?.is_none(), "ingress exited");
    Ok(())
}
