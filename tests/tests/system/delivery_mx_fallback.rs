//! Scenario: routing by MX in Direct mode, against dnsmasq on loopback.
//! - `fallback.test`: MX 10 → 127.0.0.2 (nothing listens) and MX 20 → 127.0.0.1 (receiver):
//!   delivered to the second host within the same attempt.
//! - `implicit.test`: no MX, only an A record → delivered to that address (RFC 5321 §5.1).
//! - `nullmx.test`: `MX 0 .` (RFC 7505) → permanent failure without connecting, and a DSN with
//!   status 5.1.10 to the sender's domain (`example.com` MX → receiver on 127.0.0.3).

use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, parse_dsn, submit, tail, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

#[tokio::test]
async fn mx_fallback_implicit_a_and_null_mx() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-mx")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let bounces = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::start_local(
        &[
            ("fallback.test", "mx1.fallback.test", 10),
            ("fallback.test", "mx2.fallback.test", 20),
            ("nullmx.test", ".", 0),
            ("example.com", "mx.example.com", 10),
        ],
        &[
            ("mx1.fallback.test", "127.0.0.2"),
            ("mx2.fallback.test", "127.0.0.1"),
            ("implicit.test", "127.0.0.1"),
            ("mx.example.com", "127.0.0.3"),
        ],
        &["test", "example.com"],
    )
    .await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(port, "[1s, 2s]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let wait = Duration::from_secs(30);

    // MX fallback: the first MX refuses the connection, the second takes the message.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("user@fallback.test", "")],
        subject: "mx-fallback",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = receiver.wait_for_messages(1, wait).await?;
    assert_eq!(got[0].to, vec!["user@fallback.test".to_string()]);
    let out = wait_outcome(&w.log, "user@fallback.test", "sent", wait).await?;
    assert_eq!(out.len(), 1, "one outcome line, no deferral: {out:?}");
    assert_eq!(
        out[0].attempt, 1,
        "fallback happens within the first attempt"
    );
    assert!(
        out[0].relay.starts_with("mx2.fallback.test[127.0.0.1]"),
        "{out:?}"
    );

    // No MX record: the domain's own A record is used.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("user@implicit.test", "")],
        subject: "implicit-a",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = receiver.wait_for_messages(2, wait).await?;
    assert_eq!(got[1].to, vec!["user@implicit.test".to_string()]);
    let out = wait_outcome(&w.log, "user@implicit.test", "sent", wait).await?;
    assert!(
        out[0].relay.starts_with("implicit.test[127.0.0.1]"),
        "{out:?}"
    );

    // Null MX: bounced at once, never deferred, and the sender gets a DSN.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("user@nullmx.test", "")],
        subject: "null-mx",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let out = wait_outcome(&w.log, "user@nullmx.test", "bounced", wait).await?;
    assert_eq!(out.len(), 1, "bounced on the first attempt: {out:?}");
    assert!(out[0].reply.contains("5.1.10"), "{out:?}");
    let dsn = bounces
        .wait_for_messages(1, wait)
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    assert_eq!(dsn[0].from, "", "DSN has a null reverse-path");
    assert_eq!(dsn[0].to, vec!["app@example.com".to_string()]);
    let p = parse_dsn(&dsn[0].body)?;
    assert_eq!(p.content_type, "multipart/report");
    assert_eq!(p.report_type, "delivery-status");
    assert_eq!(p.recipients.len(), 1, "{p:?}");
    let r = &p.recipients[0];
    assert_eq!(
        r.get("Final-Recipient").map(String::as_str),
        Some("rfc822;user@nullmx.test")
    );
    assert_eq!(r.get("Action").map(String::as_str), Some("failed"));
    assert_eq!(r.get("Status").map(String::as_str), Some("5.1.10"));
    // Nothing was ever sent to the null-MX domain or to the dead first MX.
    assert_eq!(receiver.messages().len(), 2);
    Ok(())
}
