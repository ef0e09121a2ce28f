//! Scenario: SIGTERM to a real `baton ingress` with a transaction in flight — the ingress stops
//! admitting sessions (421 to new connections), lets the DATA in progress finish with 250 (and
//! queues it), ends idle sessions with 421, and exits within the grace period.

use std::process::Command;
use std::time::{Duration, Instant};

use baton_system_tests::harness::assert_eventually;
use baton_system_tests::hostile::{Env, expect};
use baton_system_tests::wire::Wire;

#[tokio::test]
async fn sigterm_finishes_the_transaction_in_flight_and_refuses_new_sessions() -> anyhow::Result<()>
{
    let mut env = Env::direct("baton-sigterm", &["--shutdown-grace", "10s"]).await?;

    // A transaction in the middle of its DATA, and an idle session.
    let (mut busy, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(busy.cmd("EHLO client.test").await?.code, 250);
    expect(
        &busy.cmd("MAIL FROM:<app@example.com>").await?,
        250,
        "2.1.0",
    );
    expect(&busy.cmd("RCPT TO:<x@dest.test>").await?, 250, "2.1.5");
    expect(&busy.cmd("DATA").await?, 354, "End");
    busy.send(b"From: app@example.com\r\nSubject: in flight\r\n\r\nfirst half\r\n")
        .await?;
    let (mut idle, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(idle.cmd("EHLO client.test").await?.code, 250);

    let pid = env.ing.proc.child.id();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());
    let signalled = Instant::now();

    // The idle session is told 421 4.3.2 and closed.
    expect(&idle.reply().await?, 421, "4.3.2");
    assert!(idle.closed().await);
    // New connections are refused with 421 on every listener.
    let (smtp, submission) = (env.ing.smtp, env.ing.submission);
    for addr in [smtp, submission] {
        let (mut w, g) = Wire::connect(addr).await?;
        expect(&g, 421, "4.3.2");
        assert!(w.closed().await);
    }

    // The transaction in flight completes and is queued.
    busy.send(b"second half\r\n.\r\n").await?;
    expect(&busy.reply().await?, 250, "2.0.0");
    // Then it is idle, so it is ended too.
    expect(&busy.reply().await?, 421, "4.3.2");
    assert!(busy.closed().await);
    assert_eq!(env.queued().await?, 1);
    let e = env.stored(1).await?;
    let body = match &e.body {
        Some(baton_proto::v1::envelope::Body::InlineBody(b)) => String::from_utf8_lossy(b),
        _ => anyhow::bail!("no inline body"),
    };
    assert!(body.contains("first half\r\nsecond half\r\n"), "{body}");

    // The process exits, well within the grace period.
    let child = &mut env.ing.proc.child;
    let mut exited = None;
    assert_eventually(Duration::from_secs(10), "ingress exit", || {
        exited = child.try_wait().ok().flatten();
        std::future::ready(exited.is_some())
    })
    .await?;
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let code = exited.and_then(|s| s.code());
    assert_eq!(code, Some(0), "{}", env.log());
    Ok(())
}
