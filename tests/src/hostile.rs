//! Fixtures shared by the hostile-input scenarios (`tests/ingress_*.rs`): one `nats-server`
//! plus one `baton ingress` with chosen flags, what JetStream holds, the rejection counter,
//! and exact reply assertions.

use std::sync::Arc;

use anyhow::Context as _;
use baton_proto::Message as _;
use baton_proto::v1::Envelope;

use crate::harness::{Ingress, Nats, TempDir, apply_config, metric, write_config};
use crate::smtp::Reply;

/// A body whose `From:` is aligned with the `example.com` RelayDomain, with its final dot.
pub const BODY: &str = "From: app@example.com\r\nSubject: t\r\n\r\nhello\r\n.\r\n";

/// An ingress with its own `nats-server`; dropped in field order (ingress first).
pub struct Env {
    /// The ingress.
    pub ing: Ingress,
    /// Its JetStream.
    pub nats: Nats,
    /// Scratch dir (config, certificate, logs).
    pub dir: TempDir,
}

impl Env {
    /// Start NATS, apply `yaml`, start an ingress with `flags` and wait until it is ready.
    pub async fn start(name: &str, yaml: &str, flags: &[&str]) -> anyhow::Result<Env> {
        crate::tls::install_crypto_provider();
        let dir = TempDir::new(name)?;
        let nats = Nats::start().await?;
        apply_config(&nats, &write_config(&dir.0, "c.yaml", yaml)?)?;
        let ing = Ingress::start(&nats, &dir.0, flags).await?;
        Ok(Env { ing, nats, dir })
    }

    /// The `example.com` config (loopback may relay; AUTH user `app`/`secret`), with
    /// `flags` (plus `--error-delay 10ms` unless given, so error-heavy tests stay fast).
    pub async fn direct(name: &str, flags: &[&str]) -> anyhow::Result<Env> {
        let mut all = flags.to_vec();
        if !flags.contains(&"--error-delay") {
            all.extend(["--error-delay", "10ms"]);
        }
        Env::start(name, &crate::config::direct(2500, "[1s]", "1h"), &all).await
    }

    /// A TLS client config trusting this ingress's certificate.
    pub fn tls(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        crate::wire::trusting(&self.dir.0.join("tls.crt"))
    }

    /// Messages in the queue stream.
    pub async fn queued(&self) -> anyhow::Result<u64> {
        let js = self.nats.jetstream().await?;
        let mut s = js
            .get_stream("BATON_QUEUE")
            .await
            .context("stream BATON_QUEUE")?;
        Ok(s.info().await?.state.messages)
    }

    /// The envelope stored at stream sequence `seq`.
    pub async fn stored(&self, seq: u64) -> anyhow::Result<Envelope> {
        let js = self.nats.jetstream().await?;
        let msg = js
            .get_stream("BATON_QUEUE")
            .await?
            .get_raw_message(seq)
            .await?;
        Ok(Envelope::decode(msg.payload.as_ref())?)
    }

    /// `baton_ingress_rejections_total` for one reply code and enhanced status.
    pub async fn rejections(&self, code: u16, status: &str) -> f64 {
        let series =
            format!("baton_ingress_rejections_total{{code=\"{code}\",reason=\"{status}\"}}");
        metric(self.ing.metrics, &series).await
    }

    /// The ingress log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.ing.log).unwrap_or_default()
    }
}

/// Assert a reply's code and enhanced status exactly.
#[track_caller]
pub fn expect(r: &Reply, code: u16, status: &str) {
    let got = r.text.split_whitespace().next().unwrap_or("");
    assert!(
        r.code == code && got == status,
        "expected {code} {status}, got {} {:?}",
        r.code,
        r.text
    );
}

/// The EHLO reply advertises `keyword` (e.g. `AUTH`, `STARTTLS`).
pub fn advertises(ehlo: &Reply, keyword: &str) -> bool {
    ehlo.text
        .lines()
        .any(|l| l.split_whitespace().next() == Some(keyword))
}
