//! Traffic of every kind against one ingress and one worker, shared by the metrics scenarios
//! (`monitoring.rs`, `dashboard_prometheus.rs`). One [`Env::round`] sends, on three
//! connections:
//! - relay port: a sender refused by policy (`550 5.7.1`), a syntax error, three accepted
//!   messages — `ok-<k>@` (delivered), `defer-<k>@` (the receiver answers `451` to its first
//!   DATA, delivered on the 1 s retry tier) and `bad-<k>@` (`550 5.1.1` at RCPT: bounced, one
//!   DSN to `app@example.com`, delivered to the sender's MX) — and a message with a bare LF
//!   (`550 5.6.0`);
//! - submission port: STARTTLS (handshake ok), a wrong password (`535 5.7.8`), the right one;
//! - implicit-TLS port: plaintext instead of a ClientHello (handshake failed).
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::{JSON_LOG, wait_outcome};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use baton_system_tests::wire::{Wire, trusting};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The RelayDomain label of every message.
pub(crate) const RELAY_DOMAIN: &str = "team-a/example-com";
/// The pool label.
pub(crate) const POOL: &str = "test";

/// NATS, DNS, receivers, one ingress and one worker; dropped in field order.
pub(crate) struct Env {
    /// The ingress.
    pub ing: Ingress,
    /// The worker of pool `test`.
    pub worker: Worker,
    /// Receives mail for `dest.test`.
    pub receiver: Receiver,
    /// Receives DSNs (MX of `example.com`).
    pub bounces: Receiver,
    /// DNS with both MX records.
    pub dns: Dns,
    /// JetStream.
    pub nats: Nats,
    /// Scratch dir.
    pub dir: TempDir,
}

/// What one round did, as the replies the client saw (`(code, enhanced status)`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Round {
    /// Replies to the refused commands, in order: policy, syntax, bare LF, wrong password.
    pub refusals: Vec<(u16, String)>,
}

fn status_of(r: &baton_system_tests::smtp::Reply) -> (u16, String) {
    let status = r.text.split_whitespace().next().unwrap_or("").to_string();
    (r.code, status)
}

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Env {
    /// Start everything; `extra_ingress` are extra `baton ingress` flags.
    pub(crate) async fn start(name: &str) -> anyhow::Result<Env> {
        baton_system_tests::tls::install_crypto_provider();
        let dir = TempDir::new(name)?;
        let nats = Nats::start().await?;
        let port = free_port()?;
        let deferred_once: Arc<Mutex<HashSet<String>>> = Arc::default();
        let script = Arc::new(move |s: &Stage<'_>| match s {
            Stage::Rcpt { to } if to.starts_with("bad-") => {
                Response::Reply(550, "5.1.1 no such user here".into())
            }
            Stage::DataEnd { to, .. }
                if to.iter().any(|t| t.starts_with("defer-"))
                    && deferred_once
                        .lock()
                        .map(|mut seen| seen.insert(to.join(",")))
                        .unwrap_or(false) =>
            {
                Response::Reply(451, "4.3.0 try again later".into())
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
        let bounces =
            Receiver::start(&format!("127.0.0.3:{port}"), ReceiverConfig::default()).await?;
        let dns = Dns::dest_and_bounces().await?;
        apply_config(
            &nats,
            &write_config(&dir.0, "c.yaml", &direct(port, "[1s, 2s]", "1h"))?,
        )?;
        let ing = Ingress::start(&nats, &dir.0, &["--error-delay", "10ms"]).await?;
        let worker = Worker::start(&nats, &dir.0, POOL, Some(dns.addr), JSON_LOG).await?;
        Ok(Env {
            ing,
            worker,
            receiver,
            bounces,
            dns,
            nats,
            dir,
        })
    }

    /// One round of traffic (see the module docs); `k` makes its recipients unique.
    pub(crate) async fn round(&self, k: u32) -> anyhow::Result<Round> {
        let mut round = Round::default();
        // Relay port: policy refusal, syntax error, three accepted messages, bare LF.
        let (mut w, _) = Wire::connect(self.ing.smtp).await?;
        anyhow::ensure!(w.cmd("EHLO client.test").await?.code == 250);
        round
            .refusals
            .push(status_of(&w.cmd("MAIL FROM:<intruder@evil.test>").await?));
        round
            .refusals
            .push(status_of(&w.cmd("MAIL FROM:no-brackets").await?));
        for local in ["ok", "defer", "bad"] {
            let to = format!("{local}-{k}@dest.test");
            let body = format!("From: app@example.com\r\nSubject: {to}\r\n\r\nhello\r\n.\r\n");
            anyhow::ensure!(w.cmd("MAIL FROM:<app@example.com>").await?.code == 250);
            anyhow::ensure!(w.cmd(&format!("RCPT TO:<{to}>")).await?.code == 250);
            anyhow::ensure!(w.cmd("DATA").await?.code == 354);
            w.send(body.as_bytes()).await?;
            let r = w.reply().await?;
            anyhow::ensure!(r.code == 250, "{to}: {r:?}");
        }
        anyhow::ensure!(w.cmd("MAIL FROM:<app@example.com>").await?.code == 250);
        anyhow::ensure!(w.cmd("RCPT TO:<x@dest.test>").await?.code == 250);
        anyhow::ensure!(w.cmd("DATA").await?.code == 354);
        w.send(b"Subject: bare\n\nsmuggled?\r\n.\r\n").await?;
        round.refusals.push(status_of(&w.reply().await?));
        let _ = w.cmd("QUIT").await;

        // Submission port: STARTTLS, a wrong password, the right one.
        let tls = trusting(&self.dir.0.join("tls.crt"))?;
        let (mut w, _) = Wire::connect(self.ing.submission).await?;
        anyhow::ensure!(w.cmd("EHLO client.test").await?.code == 250);
        anyhow::ensure!(w.cmd("STARTTLS").await?.code == 220);
        let mut w = w.handshake(tls).await?;
        anyhow::ensure!(w.cmd("EHLO client.test").await?.code == 250);
        let wrong = w
            .cmd(&format!("AUTH PLAIN {}", b64("\0app\0wrong")))
            .await?;
        round.refusals.push(status_of(&wrong));
        let right = w
            .cmd(&format!("AUTH PLAIN {}", b64("\0app\0secret")))
            .await?;
        anyhow::ensure!(right.code == 235, "{right:?}");
        let _ = w.cmd("QUIT").await;

        // Implicit TLS port spoken to in plaintext: the handshake fails, the server closes.
        let mut tcp = tokio::net::TcpStream::connect(self.ing.smtps).await?;
        tcp.write_all(b"EHLO plaintext.test\r\n\r\n").await?;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut sink)).await;
        Ok(round)
    }

    /// `n` more accepted messages on one relay connection (to `burst-<k>-<i>@dest.test`),
    /// for a livelier rendered dashboard.
    pub(crate) async fn burst(&self, k: u32, n: u32) -> anyhow::Result<()> {
        let (mut w, _) = Wire::connect(self.ing.smtp).await?;
        anyhow::ensure!(w.cmd("EHLO client.test").await?.code == 250);
        for i in 0..n {
            let to = format!("burst-{k}-{i}@dest.test");
            let body = format!("From: app@example.com\r\nSubject: {to}\r\n\r\nhello\r\n.\r\n");
            anyhow::ensure!(w.cmd("MAIL FROM:<app@example.com>").await?.code == 250);
            anyhow::ensure!(w.cmd(&format!("RCPT TO:<{to}>")).await?.code == 250);
            anyhow::ensure!(w.cmd("DATA").await?.code == 354);
            w.send(body.as_bytes()).await?;
            let r = w.reply().await?;
            anyhow::ensure!(r.code == 250, "{to}: {r:?}");
        }
        let _ = w.cmd("QUIT").await;
        Ok(())
    }

    /// Wait until the worker logged the final outcome of every message of round `k`
    /// (including the DSN for `bad-<k>@`).
    pub(crate) async fn wait_round_delivered(&self, k: u32) -> anyhow::Result<()> {
        let wait = Duration::from_secs(60);
        let log = &self.worker.log;
        wait_outcome(log, &format!("ok-{k}@dest.test"), "sent", wait).await?;
        wait_outcome(log, &format!("defer-{k}@dest.test"), "sent", wait).await?;
        wait_outcome(log, &format!("bad-{k}@dest.test"), "bounced", wait).await?;
        let dsns = k as usize + 1;
        baton_system_tests::harness::assert_eventually(wait, "DSNs delivered", || async {
            baton_system_tests::delivery::outcomes(log)
                .iter()
                .filter(|o| o.to == "app@example.com" && o.status == "sent")
                .count()
                >= dsns
        })
        .await
    }
}
