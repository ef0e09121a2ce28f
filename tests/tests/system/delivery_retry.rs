//! Scenario: temporary failures go to a retry tier and succeed later.
//! - The receiver answers `451` to the end of DATA of the first transaction of message
//!   `data-451`, then accepts: the message is delivered exactly once, after the first retry
//!   tier (1 s), and the worker logs `status=deferred` then `status=sent`.
//! - Partial success: in one transaction `ok@` gets `250` and `later@` gets `451` at RCPT;
//!   the retry carries only `later@`, so `ok@` is never sent twice.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, header, submit, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

#[tokio::test]
async fn deferred_then_delivered_once_and_partial_success_not_resent() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-retry")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let data_failed = Arc::new(AtomicBool::new(false));
    let rcpt_failed = Arc::new(AtomicBool::new(false));
    let (d, r) = (data_failed.clone(), rcpt_failed.clone());
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::DataEnd { body, .. }
            if String::from_utf8_lossy(body).contains("Subject: data-451")
                && !d.swap(true, Ordering::SeqCst) =>
        {
            Response::Reply(451, "4.3.0 try again later".into())
        }
        Stage::Rcpt { to } if to.starts_with("later@") && !r.swap(true, Ordering::SeqCst) => {
            Response::Reply(451, "4.2.1 mailbox busy".into())
        }
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
    let dns = Dns::dest_test().await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &direct(port, "[1s, 2s]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    let wait = Duration::from_secs(30);

    // 451 after DATA, then success on the retry tier.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "data-451",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let out = wait_outcome(&w.log, "a@dest.test", "sent", wait).await?;
    let statuses: Vec<(&str, u64)> = out.iter().map(|o| (o.status.as_str(), o.attempt)).collect();
    assert_eq!(statuses, vec![("deferred", 1), ("sent", 2)], "{out:?}");
    assert!(
        out[0].reply.contains("451 4.3.0"),
        "the reply is kept: {out:?}"
    );
    assert!(data_failed.load(Ordering::SeqCst));
    let got = receiver.wait_for_messages(1, wait).await?;
    assert_eq!(got.len(), 1, "delivered exactly once");
    assert_eq!(header(&got[0].body, "Subject").as_deref(), Some("data-451"));

    // Partial success: ok@ accepted in attempt 1, later@ deferred and delivered in attempt 2.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("ok@dest.test", ""), ("later@dest.test", "")],
        subject: "partial",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let later = wait_outcome(&w.log, "later@dest.test", "sent", wait).await?;
    let statuses: Vec<&str> = later.iter().map(|o| o.status.as_str()).collect();
    assert_eq!(statuses, vec!["deferred", "sent"], "{later:?}");
    let ok = wait_outcome(&w.log, "ok@dest.test", "sent", wait).await?;
    assert_eq!(
        ok.len(),
        1,
        "ok@ has one outcome, in the first attempt: {ok:?}"
    );
    assert_eq!(ok[0].attempt, 1);
    let got = receiver.wait_for_messages(3, wait).await?;
    let partial: Vec<&Vec<String>> = got
        .iter()
        .filter(|m| header(&m.body, "Subject").as_deref() == Some("partial"))
        .map(|m| &m.to)
        .collect();
    assert_eq!(
        partial,
        vec![
            &vec!["ok@dest.test".to_string()],
            &vec!["later@dest.test".to_string()]
        ],
        "first transaction delivers ok@ only, the retry later@ only"
    );
    assert_eq!(got.len(), 3, "nothing else was delivered: {got:?}");
    Ok(())
}
