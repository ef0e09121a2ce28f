//! Scenario: where direct delivery may connect (issue 12, items 5 and 6), with real DNS and
//! receivers on loopback.
//! - By default a pool refuses address-literal recipients at RCPT (`550 5.1.2`), IPv4 and
//!   IPv6, and never connects to a non-global address: an MX pointing at 127.0.0.1 is a
//!   permanent failure naming the address and why (and the receiver there sees no
//!   connection); an MX list with a refused and an allowed host uses the allowed one. Only
//!   `allowedNetworks` (here 127.0.0.3/32, the sender's own host for the DSN) opens a range.
//! - With `addressLiterals: Allow`, a literal is delivered straight to its address (no DNS
//!   lookup) when the address is allowed, and bounces with the reason when it is not.

use std::time::Duration;

use baton_system_tests::config::direct_with;
use baton_system_tests::delivery::{JSON_LOG, Submission, parse_dsn, submit, tail, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, metric, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};
use baton_system_tests::smtp::Talk;

const REFUSED_LOOPBACK: &str =
    "baton_delivery_refused_addresses_total{pool=\"test\",reason=\"loopback\"}";

/// Receivers on 127.0.0.1 (`internal.test`, first MX of `mixed.test`) and 127.0.0.3
/// (`example.com`, second MX of `mixed.test`), DNS, NATS, ingress and worker.
struct Env {
    _dir: TempDir,
    _nats: Nats,
    _dns: Dns,
    internal: Receiver,
    allowed: Receiver,
    ing: Ingress,
    w: Worker,
}

async fn start(name: &str, delivery: &str) -> anyhow::Result<Env> {
    let dir = TempDir::new(name)?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let internal = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let allowed = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::start_local(
        &[
            ("internal.test", "mx.internal.test", 10),
            ("mixed.test", "mx1.mixed.test", 10),
            ("mixed.test", "mx2.mixed.test", 20),
            ("example.com", "mx.example.com", 10),
        ],
        &[
            ("mx.internal.test", "127.0.0.1"),
            ("mx1.mixed.test", "127.0.0.1"),
            ("mx2.mixed.test", "127.0.0.3"),
            ("mx.example.com", "127.0.0.3"),
        ],
        &["test", "example.com"],
    )
    .await?;
    let yaml = direct_with(port, "[1s]", "1h", delivery);
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &yaml)?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    Ok(Env {
        _dir: dir,
        _nats: nats,
        _dns: dns,
        internal,
        allowed,
        ing,
        w,
    })
}

/// The reply to `RCPT TO:<rcpt>` after a MAIL the ingress accepts.
async fn rcpt_reply(env: &Env, rcpt: &str) -> anyhow::Result<(u16, String)> {
    let (mut t, _) = Talk::connect(env.ing.smtp).await?;
    t.cmd("EHLO client.test").await?;
    let mail = t.cmd("MAIL FROM:<app@example.com>").await?;
    anyhow::ensure!(mail.code == 250, "MAIL: {mail:?}");
    let r = t.cmd(&format!("RCPT TO:<{rcpt}>")).await?;
    let _ = t.cmd("QUIT").await;
    Ok((r.code, r.text))
}

fn to(rcpt: &'static str, subject: &'static str) -> Submission<'static> {
    Submission {
        from: "app@example.com",
        rcpts: vec![(rcpt, "")],
        subject,
        ..Default::default()
    }
}

#[tokio::test]
async fn internal_destinations_and_literals_are_refused_by_default() -> anyhow::Result<()> {
    let env = start("baton-addr-default", "allowedNetworks: [127.0.0.3/32]").await?;
    let wait = Duration::from_secs(30);

    for literal in ["user@[127.0.0.1]", "user@[IPv6:::1]", "user@[192.0.2.1]"] {
        let (code, text) = rcpt_reply(&env, literal).await?;
        assert_eq!(code, 550, "{literal}: {text}");
        assert!(text.starts_with("5.1.2"), "{literal}: {text}");
    }

    // An MX pointing at loopback: permanent failure with the reason, no connection.
    assert_eq!(
        submit(env.ing.smtp, &to("a@internal.test", "internal")).await?,
        250
    );
    let out = wait_outcome(&env.w.log, "a@internal.test", "bounced", wait).await?;
    assert!(
        out[0]
            .reply
            .contains("550 5.4.4 destination address 127.0.0.1 is not allowed (loopback)"),
        "{out:?}"
    );
    // The sender hears why (its host, 127.0.0.3, is the one allowed network).
    let dsn = env
        .allowed
        .wait_for_messages(1, wait)
        .await
        .map_err(|e| e.context(tail(&env.w.log)))?;
    let p = parse_dsn(&dsn[0].body)?;
    let r = |k: &str| p.recipients[0].get(k).cloned().unwrap_or_default();
    assert_eq!(r("Action"), "failed");
    assert_eq!(r("Status"), "5.4.4");
    assert!(r("Diagnostic-Code").contains("(loopback)"), "{p:?}");

    // Refused MX skipped, allowed MX used.
    assert_eq!(
        submit(env.ing.smtp, &to("b@mixed.test", "mixed")).await?,
        250
    );
    let got = env.allowed.wait_for_messages(2, wait).await?;
    assert_eq!(got[1].to, vec!["b@mixed.test".to_string()]);
    let out = wait_outcome(&env.w.log, "b@mixed.test", "sent", wait).await?;
    assert!(out[0].relay.contains("127.0.0.3"), "{out:?}");

    assert_eq!(
        env.internal.connections(),
        0,
        "never connected to 127.0.0.1"
    );
    assert!(metric(env.w.metrics, REFUSED_LOOPBACK).await >= 2.0);
    Ok(())
}

#[tokio::test]
async fn allowed_literals_are_delivered_straight_to_their_address() -> anyhow::Result<()> {
    let env = start(
        "baton-addr-literals",
        "addressLiterals: Allow, allowedNetworks: [127.0.0.3/32]",
    )
    .await?;
    let wait = Duration::from_secs(30);

    // Straight to the address; no DNS name has that address's A record here.
    assert_eq!(
        submit(env.ing.smtp, &to("lit@[127.0.0.3]", "literal")).await?,
        250
    );
    let got = env
        .allowed
        .wait_for_messages(1, wait)
        .await
        .map_err(|e| e.context(tail(&env.w.log)))?;
    assert_eq!(got[0].to, vec!["lit@[127.0.0.3]".to_string()]);

    // Accepted at RCPT, but the address itself is not allowed: bounced with the reason.
    for (rcpt, why) in [
        (
            "lit@[127.0.0.1]",
            "destination address 127.0.0.1 is not allowed (loopback)",
        ),
        (
            "lit6@[IPv6:::1]",
            "destination address ::1 is not allowed (loopback)",
        ),
    ] {
        assert_eq!(
            submit(env.ing.smtp, &to(rcpt, "literal-refused")).await?,
            250
        );
        let out = wait_outcome(&env.w.log, rcpt, "bounced", wait).await?;
        assert!(out[0].reply.contains(why), "{rcpt}: {out:?}");
    }
    assert_eq!(
        env.internal.connections(),
        0,
        "never connected to 127.0.0.1"
    );
    Ok(())
}
