//! Scenario: the ingress's RFC 5321 limits against a real `baton ingress` and `nats-server` —
//! 512-octet command lines (the tail of an over-long line is never executed), 100 recipients
//! then 452 4.5.3, SIZE and 552 5.3.4 without buffering past the cap, per-command and
//! whole-session timeouts (421 4.4.2), connection caps per client address and per pod
//! (421 4.7.0), and the error and AUTH-failure caps (421 4.7.0). Each refusal has its exact
//! reply, moves its counter, leaves the session usable (or closed where the rule says so) and
//! queues nothing.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use baton_system_tests::harness::{assert_eventually, metric};
use baton_system_tests::hostile::{BODY, Env, advertises, expect};
use baton_system_tests::wire::{Wire, read_reply};
use tokio::io::{AsyncWriteExt, BufReader};

/// EHLO, then MAIL FROM `app@example.com`.
async fn open_mail(w: &mut Wire) -> anyhow::Result<()> {
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    Ok(())
}

#[tokio::test]
async fn over_long_command_lines_are_refused_and_their_tail_never_runs() -> anyhow::Result<()> {
    let env = Env::direct("baton-longline", &[]).await?;
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    open_mail(&mut w).await?;

    // Exactly 512 octets with CRLF is a legal line; 513 is not.
    let legal = format!("NOOP {}\r\n", "a".repeat(512 - 7));
    assert_eq!(legal.len(), 512);
    w.send(legal.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");
    let long = format!("NOOP {}\r\n", "a".repeat(513 - 7));
    w.send(long.as_bytes()).await?;
    expect(&w.reply().await?, 500, "5.5.6");

    // The tail `RSET` of an over-long line is discarded: the transaction survives, RCPT works.
    w.send(format!("NOOP {}RSET\r\n", "x".repeat(600)).as_bytes())
        .await?;
    expect(&w.reply().await?, 500, "5.5.6");
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 250, "2.1.5");
    // Same when the over-long line arrives in pieces, its tail in a later write.
    w.send("y".repeat(400).as_bytes()).await?;
    w.send(format!("{}RSET\r\n", "y".repeat(400)).as_bytes())
        .await?;
    expect(&w.reply().await?, 500, "5.5.6");
    expect(&w.cmd("RCPT TO:<b@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("RSET").await?, 250, "2.0.0");

    // The tail `MAIL FROM:` is not executed either: RCPT still needs MAIL.
    w.send(format!("{}MAIL FROM:<x@example.com>\r\n", "z".repeat(600)).as_bytes())
        .await?;
    expect(&w.reply().await?, 500, "5.5.6");
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 503, "5.5.1");

    // Exactly one reply per over-long line, then the session works normally.
    open_mail(&mut w).await?;
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");
    assert_eq!(env.queued().await?, 1);
    let e = env.stored(1).await?;
    let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["a@dest.test"]);
    assert_eq!(env.rejections(500, "5.5.6").await, 4.0);
    Ok(())
}

#[tokio::test]
async fn the_101st_recipient_gets_452_and_the_first_100_are_queued() -> anyhow::Result<()> {
    let env = Env::direct("baton-rcpts", &[]).await?;
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    open_mail(&mut w).await?;
    let mut batch = String::new();
    for i in 0..101 {
        batch.push_str(&format!("RCPT TO:<r{i}@dest.test>\r\n"));
    }
    w.send(batch.as_bytes()).await?; // pipelined
    for i in 0..100 {
        let r = w.reply().await?;
        assert_eq!(r.code, 250, "recipient {i}: {r:?}");
    }
    expect(&w.reply().await?, 452, "4.5.3");
    expect(&w.cmd("RCPT TO:<r101@dest.test>").await?, 452, "4.5.3");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");
    assert_eq!(env.queued().await?, 1);
    let e = env.stored(1).await?;
    assert_eq!(e.recipients.len(), 100);
    assert_eq!(e.recipients[99].address, "r99@dest.test");
    assert_eq!(env.rejections(452, "4.5.3").await, 2.0);
    // A new transaction may have 100 recipients again.
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<again@dest.test>").await?, 250, "2.1.5");
    Ok(())
}

/// Peak resident set size of a process in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("bad VmHWM"))?
        .parse()?)
}

#[tokio::test]
async fn oversize_is_552_declared_or_not_and_never_buffered() -> anyhow::Result<()> {
    // The RelayDomain's cap is the one in force (its default is 25Mi); the listener's flag
    // sets what EHLO advertises.
    let yaml = baton_system_tests::config::direct(2500, "[1s]", "1h").replace(
        "  pool: test\n",
        "  pool: test\n  limits: {maxMessageSize: 1Mi}\n",
    );
    assert!(yaml.contains("maxMessageSize"));
    let env = Env::start("baton-size", &yaml, &["--max-message-size", "1048576"]).await?;
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    let ehlo = w.cmd("EHLO client.test").await?;
    assert!(ehlo.text.contains("\nSIZE 1048576"), "{ehlo:?}");

    // Declared over the limit: refused at MAIL, no transaction opened.
    let r = w.cmd("MAIL FROM:<app@example.com> SIZE=1048577").await?;
    expect(&r, 552, "5.3.4");
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 503, "5.5.1");

    // Undeclared: 64 MiB of content against a 1 MiB cap, refused after the dot; the
    // ingress's peak RSS does not grow with it.
    let pid = env.ing.proc.child.id();
    let before = peak_rss_kib(pid)?;
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(b"From: app@example.com\r\nSubject: big\r\n\r\n")
        .await?;
    let line = format!("{}\r\n", "x".repeat(1022));
    let chunk = line.repeat(1024); // 1 MiB
    for _ in 0..64 {
        w.send(chunk.as_bytes()).await?;
    }
    w.send(b".\r\n").await?;
    expect(&w.reply().await?, 552, "5.3.4");
    let after = peak_rss_kib(pid)?;
    assert!(
        after < before + 16 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB for a refused 64 MiB body"
    );

    // Same session: a message within the limit is accepted.
    expect(
        &w.cmd("MAIL FROM:<app@example.com> SIZE=100").await?,
        250,
        "2.1.0",
    );
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");

    // BDAT over the cap is refused the same way.
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 250, "2.1.5");
    let body = format!("From: app@example.com\r\n\r\n{}", line.repeat(1100));
    w.send(format!("BDAT {} LAST\r\n{body}", body.len()).as_bytes())
        .await?;
    expect(&w.reply().await?, 552, "5.3.4");
    expect(&w.cmd("NOOP").await?, 250, "2.0.0");

    assert_eq!(env.queued().await?, 1, "only the message within the limit");
    assert_eq!(env.rejections(552, "5.3.4").await, 3.0);
    Ok(())
}

/// Reads replies from `reader` until EOF or reset; returns them.
async fn replies_until_closed(
    reader: tokio::net::tcp::OwnedReadHalf,
) -> Vec<baton_system_tests::smtp::Reply> {
    let mut reader = BufReader::new(reader);
    let mut out = Vec::new();
    while let Ok(Ok(r)) =
        tokio::time::timeout(Duration::from_secs(15), read_reply(&mut reader)).await
    {
        out.push(r);
    }
    out
}

#[tokio::test]
async fn idle_and_overlong_sessions_get_421_4_4_2() -> anyhow::Result<()> {
    let env = Env::direct(
        "baton-timeouts",
        &["--command-timeout", "1s", "--session-timeout", "2s"],
    )
    .await?;

    // Per-command: an idle client is told 421 4.4.2 and disconnected.
    let (mut idle, _) = Wire::connect(env.ing.smtp).await?;
    open_mail(&mut idle).await?;
    let t = Instant::now();
    expect(&idle.reply().await?, 421, "4.4.2");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(idle.closed().await);

    // Whole session: commands every 300 ms (never idle for 1 s) still end at 2 s.
    let started = Instant::now();
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    let (rd, mut wr) = w.into_tcp()?.into_split();
    let writer = tokio::spawn(async move {
        while wr.write_all(b"NOOP\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await; // the client's pace
        }
    });
    let replies = replies_until_closed(rd).await;
    writer.abort();
    let last = replies.last().ok_or_else(|| anyhow::anyhow!("no reply"))?;
    expect(last, 421, "4.4.2");
    assert!(replies[..replies.len() - 1].iter().all(|r| r.code == 250));
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );

    // Whole session, slow drip inside DATA: one body byte every 300 ms.
    let started = Instant::now();
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    open_mail(&mut w).await?;
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    let (rd, mut wr) = w.into_tcp()?.into_split();
    let writer = tokio::spawn(async move {
        while wr.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let replies = replies_until_closed(rd).await;
    writer.abort();
    assert_eq!(replies.len(), 1, "{replies:?}");
    expect(&replies[0], 421, "4.4.2");
    assert!(started.elapsed() >= Duration::from_millis(1900));

    // Whole session, flooding inside DATA: input always ready must not keep it alive.
    let before = env.rejections(421, "4.4.2").await;
    let started = Instant::now();
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    open_mail(&mut w).await?;
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    let (rd, mut wr) = w.into_tcp()?.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        while wr.write_all(&chunk).await.is_ok() {}
    });
    // The 421 may be lost to a reset (the server closes with our flood unread), so the
    // server's counter is the witness; the connection must end either way.
    let _ = replies_until_closed(rd).await;
    writer.abort();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "flooding session lived {took:?}"
    );
    assert_eq!(env.rejections(421, "4.4.2").await, before + 1.0);

    assert_eq!(env.queued().await?, 0);
    assert_eq!(env.rejections(421, "4.4.2").await, 4.0);
    Ok(())
}

#[tokio::test]
async fn connections_over_the_per_address_and_per_pod_caps_get_421() -> anyhow::Result<()> {
    let env = Env::direct(
        "baton-conncap",
        &["--max-connections-per-ip", "2", "--max-connections", "3"],
    )
    .await?;
    let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(127, 0, 0, n));
    let (mut a1, g) = Wire::connect_from(ip(1), env.ing.smtp).await?;
    expect(&g, 220, "baton.test");
    let (_a2, g) = Wire::connect_from(ip(1), env.ing.smtp).await?;
    expect(&g, 220, "baton.test");

    // Third from the same address: refused, and the first two still work.
    let (mut a3, g) = Wire::connect_from(ip(1), env.ing.smtp).await?;
    expect(&g, 421, "4.7.0");
    assert!(a3.closed().await);
    let per_ip = "baton_ingress_connections_total{listener=\"smtp\",result=\"over_per_ip\"}";
    assert_eq!(metric(env.ing.metrics, per_ip).await, 1.0);
    // The cap is per address, not per listener.
    let (mut s3, g) = Wire::connect_from(ip(1), env.ing.submission).await?;
    expect(&g, 421, "4.7.0");
    assert!(s3.closed().await);

    // Another address may connect, up to the pod's cap of 3; the fourth is refused.
    let (_b1, g) = Wire::connect_from(ip(2), env.ing.smtp).await?;
    expect(&g, 220, "baton.test");
    let (mut c1, g) = Wire::connect_from(ip(3), env.ing.smtp).await?;
    expect(&g, 421, "4.7.0");
    assert!(c1.closed().await);
    let over = "baton_ingress_connections_total{listener=\"smtp\",result=\"over_capacity\"}";
    assert_eq!(metric(env.ing.metrics, over).await, 1.0);
    expect(&a1.cmd("NOOP").await?, 250, "2.0.0");

    // A slot freed by QUIT is usable again.
    expect(&a1.cmd("QUIT").await?, 221, "2.0.0");
    let smtp = env.ing.smtp;
    assert_eventually(Duration::from_secs(10), "a freed slot", || async move {
        match Wire::connect_from(ip(1), smtp).await {
            Ok((mut w, g)) if g.code == 220 => {
                let ok = w.cmd("EHLO client.test").await.is_ok_and(|r| r.code == 250);
                let _ = w.cmd("QUIT").await;
                ok
            }
            _ => false,
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn repeated_errors_and_auth_failures_end_the_session_with_421() -> anyhow::Result<()> {
    let env = Env::direct("baton-errcap", &["--error-delay", "200ms"]).await?;

    // Ten error replies: nine are answered (those after the third delayed), the tenth is 421.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    let t = Instant::now();
    for _ in 0..9 {
        expect(&w.cmd("FOO").await?, 500, "5.5.2");
    }
    assert!(
        t.elapsed() >= Duration::from_millis(6 * 200),
        "errors 4-9 are tarpitted: {:?}",
        t.elapsed()
    );
    expect(&w.cmd("FOO").await?, 421, "4.7.0");
    assert!(w.closed().await);
    assert_eq!(env.rejections(500, "5.5.2").await, 9.0);
    assert_eq!(env.rejections(421, "4.7.0").await, 1.0);

    // Good commands in between do not reset the count, and do not count themselves.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    for _ in 0..9 {
        expect(&w.cmd("FOO").await?, 500, "5.5.2");
        expect(&w.cmd("NOOP").await?, 250, "2.0.0");
    }
    expect(&w.cmd("RCPT TO:<a@dest.test>").await?, 421, "4.7.0");
    assert!(w.closed().await);

    // AUTH failures (over implicit TLS): two 535s, the third attempt is 421 and close.
    let tls = env.tls()?;
    let (mut w, _) = Wire::connect_tls(env.ing.smtps, tls.clone()).await?;
    let ehlo = w.cmd("EHLO client.test").await?;
    assert!(advertises(&ehlo, "AUTH"), "{ehlo:?}");
    let wrong = plain("app", "wrong");
    expect(&w.cmd(&format!("AUTH PLAIN {wrong}")).await?, 535, "5.7.8");
    expect(&w.cmd(&format!("AUTH PLAIN {wrong}")).await?, 535, "5.7.8");
    expect(&w.cmd(&format!("AUTH PLAIN {wrong}")).await?, 421, "4.7.0");
    assert!(w.closed().await);
    assert_eq!(env.rejections(535, "5.7.8").await, 2.0);
    assert_eq!(env.rejections(421, "4.7.0").await, 3.0);

    // The cap is per session: a new one may authenticate.
    let (mut w, _) = Wire::connect_tls(env.ing.smtps, tls).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    let right = plain("app", "secret");
    expect(&w.cmd(&format!("AUTH PLAIN {right}")).await?, 235, "2.7.0");
    assert_eq!(env.queued().await?, 0);
    Ok(())
}

/// `AUTH PLAIN` initial response for `user`/`pass`.
fn plain(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}
