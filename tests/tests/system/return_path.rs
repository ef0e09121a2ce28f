//! Scenario: return path and asynchronous bounces (issue 16). The RelayDomain has
//! `returnPath: {domain: bounces.example.com, ...}`; its clients are `127.0.0.1/32` only.
//! - A real Postfix accepts mail for `gone@dest.test` (`250`) and relays it to the final
//!   server, which refuses it (`550 5.1.1`); Postfix bounces it to the envelope sender it got —
//!   Baton's signed VERP address — via the ingress. Baton matches the report to the recipient, classifies it
//!   (`invalid_recipient`) and suppresses the recipient (`async_bounce`): the next RCPT to it is
//!   refused. The DSN is never queued or relayed (Postfix sees no further mail).
//! - A forged VERP address is refused at RCPT (`550 5.1.1`).
//! - A stranger (`127.0.0.9`, not a client of any RelayDomain) may write to the return path
//!   but to nothing else (`530`/`550` at RCPT, never relayed); plain mail to the return path
//!   is refused after DATA (`550 5.7.1`).
//! - An ARF complaint sent by the stranger to `fbl@bounces.example.com`, about a message that
//!   a receiver got from Baton with a VERP sender, suppresses that recipient (`complaint`).

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, Submission, submit, tail, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, baton_bin, free_port,
    keyring_dir, metric, write_config,
};
use baton_system_tests::postfix::Postfix;
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use baton_system_tests::smtp::Talk;

const RP: &str = "bounces.example.com";
const STRANGER: &str = "127.0.0.9";

fn config(port: u16) -> String {
    direct(port, "[1s]", "1h")
        .replace("networks: [127.0.0.0/8]", "networks: [127.0.0.1/32]")
        .replace(
            "  pool: test\n",
            &format!(
                "  pool: test\n  returnPath: {{domain: {RP}, mxHost: mx.baton.test, keySecretRef: {{name: verp}}}}\n"
            ),
        )
        + "---\napiVersion: v1\nkind: Secret\nmetadata: {name: verp, namespace: team-a}\n\
           stringData: {key-0: 'k0-0123456789abcdef0123456789abcdef'}\n"
}

async fn rcpt_code(
    ingress: SocketAddr,
    from_ip: &str,
    mail: &str,
    to: &str,
) -> anyhow::Result<(u16, String)> {
    let ip: IpAddr = from_ip.parse()?;
    let (mut t, _) = Talk::connect_from(ingress, ip).await?;
    t.cmd("EHLO client.test").await?;
    let m = t.cmd(&format!("MAIL FROM:<{mail}>")).await?;
    if m.code != 250 {
        return Ok((m.code, m.text));
    }
    let r = t.cmd(&format!("RCPT TO:<{to}>")).await?;
    let _ = t.cmd("QUIT").await;
    Ok((r.code, r.text))
}

/// One message from `from_ip`: the final reply (or the first refusal).
async fn send_from(
    ingress: SocketAddr,
    from_ip: &str,
    mail: &str,
    to: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let ip: IpAddr = from_ip.parse()?;
    let (mut t, _) = Talk::connect_from(ingress, ip).await?;
    t.cmd("EHLO reporter.test").await?;
    for (cmd, want) in [
        (format!("MAIL FROM:<{mail}>"), 250),
        (format!("RCPT TO:<{to}>"), 250),
        ("DATA".to_string(), 354),
    ] {
        let r = t.cmd(&cmd).await?;
        if r.code != want {
            return Ok((r.code, r.text));
        }
    }
    t.send(body.replace('\n', "\r\n").as_bytes()).await?;
    let r = t.cmd("\r\n.").await?;
    let _ = t.cmd("QUIT").await;
    Ok((r.code, r.text))
}

fn list(nats: &Nats) -> anyhow::Result<Vec<serde_json::Value>> {
    let out = Command::new(baton_bin()?)
        .env("BATON_KEYRING", keyring_dir())
        .args(["suppression", "list", "-o", "json", "--nats", &nats.url])
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn async_bounces_and_complaints_come_back_to_the_return_path() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-return-path")?;
    let nats = Nats::start().await?;
    let port = free_port()?;
    let inbox = Receiver::start(&format!("127.0.0.4:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::start_local(
        &[
            ("dest.test", "mx.dest.test", 10),
            ("inbox.test", "mx.inbox.test", 10),
        ],
        &[
            ("mx.dest.test", "127.0.0.1"),
            ("mx.inbox.test", "127.0.0.4"),
        ],
        &["test"],
    )
    .await?;
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &config(port))?)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), JSON_LOG).await?;
    // The bouncing receiver: a Postfix that accepts everything for dest.test and relays it to
    // the final server (127.0.0.5), which refuses gone@ with 550; Postfix then bounces it to
    // the envelope sender it got, routing the return-path domain straight to the ingress.
    let refuse_gone = Arc::new(|s: &Stage<'_>| {
        match s {
        Stage::Rcpt { to } if to.starts_with("gone") => Response::Reply(
            550,
            "5.1.1 <gone@dest.test>: Recipient address rejected: User unknown in virtual mailbox table".into(),
        ),
        _ => Response::Default,
    }
    });
    let _final = Receiver::start(
        &format!("127.0.0.5:{port}"),
        ReceiverConfig {
            script: refuse_gone,
            ..Default::default()
        },
    )
    .await?;
    let postfix = Postfix::start(
        &dir.0,
        format!("127.0.0.1:{port}").parse()?,
        &[
            "relay_domains = dest.test".into(),
            format!(
                "transport_maps = inline:{{ {{ dest.test = smtp:[127.0.0.5]:{port} }}, {{ {RP} = smtp:[127.0.0.1]:{} }} }}",
                ing.smtp.port()
            ),
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination".into(),
        ],
    )?;
    let wait = Duration::from_secs(60);

    // 1. An asynchronous bounce from a real MTA suppresses the recipient.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("gone@dest.test", "")],
        subject: "to a mailbox that is gone",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let out = wait_outcome(&w.log, "gone@dest.test", "sent", wait)
        .await
        .map_err(|e| {
            let mine: Vec<_> = baton_system_tests::delivery::outcomes(&w.log)
                .into_iter()
                .filter(|o| o.to == "gone@dest.test")
                .collect();
            anyhow::anyhow!("{e:#}: {mine:?}\n--- postfix ---\n{}", postfix.log_text())
        })?;
    let queue_id = out[0].queue_id.clone();
    assert_eventually(
        wait,
        "the async bounce suppresses gone@dest.test",
        || async {
            matches!(rcpt_code(ing.smtp, "127.0.0.1", "app@example.com", "gone@dest.test").await,
            Ok((550, text)) if text.contains("suppression list"))
        },
    )
    .await
    .map_err(|e| {
        e.context(format!(
            "{}\n--- postfix ---\n{}",
            tail(&ing.log),
            postfix.log_text()
        ))
    })?;
    let entries = list(&nats)?;
    let e = entries
        .iter()
        .find(|e| e["address"] == "gone@dest.test")
        .context("an entry")?;
    assert_eq!(e["source"], "async_bounce", "{e}");
    assert_eq!(e["class"], "invalid_recipient", "{e}");
    assert_eq!(
        e["queue_id"],
        queue_id.as_str(),
        "matched to the message: {e}"
    );
    assert!(
        e["reply"].as_str().unwrap_or("").contains("User unknown"),
        "{e}"
    );
    assert_eq!(
        metric(
            ing.metrics,
            "baton_ingress_reports_total{kind=\"dsn\",result=\"suppressed\"}"
        )
        .await,
        1.0
    );
    // The report was consumed: the worker never saw a message for the return path.
    assert!(
        !baton_system_tests::delivery::outcomes(&w.log)
            .iter()
            .any(|o| o.to.ends_with(RP)),
        "{}",
        tail(&w.log)
    );

    // 2. A forged VERP address is refused at RCPT.
    let forged = format!(
        "b00-{}-abcdef-0123456789@{RP}",
        queue_id.to_ascii_lowercase()
    );
    let (code, text) = rcpt_code(ing.smtp, STRANGER, "", &forged).await?;
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.1.1"), "{text}");

    // 3. A stranger can write to the return path only.
    let (code, text) = rcpt_code(ing.smtp, STRANGER, "spam@evil.test", "victim@dest.test").await?;
    assert!(
        code == 530 || code == 550,
        "relaying refused at RCPT: {code} {text}"
    );
    let (code, text) = send_from(
        ing.smtp,
        STRANGER,
        "someone@evil.test",
        &format!("fbl@{RP}"),
        "Subject: hello\n\njust mail, not a report\n",
    )
    .await?;
    assert_eq!(code, 550, "{text}");
    assert!(text.starts_with("5.7.1"), "{text}");

    // 4. A complaint about a message the inbox received with a VERP sender.
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("reader@inbox.test", "")],
        subject: "newsletter",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);
    let got = inbox.wait_for_messages(1, wait).await?;
    let verp = got[0].from.clone();
    assert!(
        verp.ends_with(&format!("@{RP}")) && verp.starts_with("b00-"),
        "VERP sender: {verp}"
    );
    let arf = format!(
        "From: fbl@inbox.test\nTo: fbl@{RP}\nSubject: complaint\nMIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\n\n\
--arf\nContent-Type: text/plain\n\nThis is an email abuse report.\n\
--arf\nContent-Type: message/feedback-report\n\n\
Feedback-Type: abuse\nUser-Agent: InboxFBL/1.0\nVersion: 1\n\
Original-Mail-From: <{verp}>\nOriginal-Rcpt-To: <reader@inbox.test>\n\n\
--arf\nContent-Type: text/rfc822-headers\n\n\
Return-Path: <{verp}>\nFrom: app@example.com\nTo: reader@inbox.test\nSubject: newsletter\n\n\
--arf--\n"
    );
    let (code, text) = send_from(
        ing.smtp,
        STRANGER,
        "fbl@inbox.test",
        &format!("fbl@{RP}"),
        &arf,
    )
    .await?;
    assert_eq!(code, 250, "{text}");
    assert_eventually(
        wait,
        "the complaint suppresses reader@inbox.test",
        || async {
            matches!(
                rcpt_code(
                    ing.smtp,
                    "127.0.0.1",
                    "app@example.com",
                    "reader@inbox.test"
                )
                .await,
                Ok((550, _))
            )
        },
    )
    .await?;
    let entries = list(&nats)?;
    let e = entries
        .iter()
        .find(|e| e["address"] == "reader@inbox.test")
        .context("an entry")?;
    assert_eq!(e["source"], "complaint", "{e}");
    assert_eq!(e["expires_ms"], 0, "complaints do not expire: {e}");
    Ok(())
}
