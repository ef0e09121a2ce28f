//! Scenario: a destination that only ever answers `451` until the message reaches the pool's
//! `maxAge` (3 s, tiers 1 s): the worker logs `status=deferred` for each attempt, then
//! `status=expired`, and the sender gets one DSN with `Action: failed`, `Status: 5.4.7`
//! (baton-core's code for "delivery time expired") and the last reply as `Diagnostic-Code`.

use std::sync::Arc;
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, parse_dsn, submit, tail, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

#[tokio::test]
async fn always_deferred_mail_expires_and_bounces() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-expiry")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let script = Arc::new(|s: &Stage<'_>| match s {
        Stage::Rcpt { .. } => Response::Reply(451, "4.7.1 greylisted, come back later".into()),
        _ => Response::Default,
    });
    let receiver = Receiver::start(
        &format!("127.0.0.1:{port}"),
        ReceiverConfig {
            script,
            ..Default::default()
        },
    )
    .await?;
    let bounces = Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_and_bounces().await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(port, "[1s]", "3s"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;

    let m = Submission {
        from: "app@example.com",
        mail_params: "ENVID=exp-1",
        rcpts: vec![("slow@dest.test", "")],
        subject: "expiry",
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let out = wait_outcome(&w.log, "slow@dest.test", "expired", Duration::from_secs(30)).await?;
    let Some((last, before)) = out.split_last() else {
        anyhow::bail!("no outcome lines");
    };
    assert!(
        before.len() >= 2,
        "deferred on several attempts first: {out:?}"
    );
    assert!(before.iter().all(|o| o.status == "deferred"), "{out:?}");
    assert_eq!(last.status, "expired");
    assert!(last.reply.contains("451 4.7.1"), "last reply kept: {out:?}");
    assert!(receiver.messages().is_empty());

    let dsn = bounces
        .wait_for_messages(1, Duration::from_secs(30))
        .await
        .map_err(|e| e.context(tail(&w.log)))?;
    assert_eq!(dsn[0].from, "");
    assert_eq!(dsn[0].to, vec!["app@example.com".to_string()]);
    let p = parse_dsn(&dsn[0].body)?;
    assert_eq!(p.content_type, "multipart/report");
    assert_eq!(p.report_type, "delivery-status");
    assert!(p.defects.is_empty(), "{p:?}");
    assert_eq!(
        p.per_message
            .get("Original-Envelope-Id")
            .map(String::as_str),
        Some("exp-1")
    );
    assert_eq!(p.recipients.len(), 1, "{p:?}");
    let r = |k: &str| p.recipients[0].get(k).cloned().unwrap_or_default();
    assert_eq!(r("Final-Recipient"), "rfc822;slow@dest.test");
    assert_eq!(r("Action"), "failed");
    assert_eq!(r("Status"), "5.4.7", "{p:?}");
    assert!(
        r("Diagnostic-Code").contains("451 4.7.1 greylisted"),
        "{p:?}"
    );
    assert!(r("Remote-MTA").contains("127.0.0.1"), "{p:?}");
    Ok(())
}
