//! Scenario: cluster-wide inbound limits (issue 18) against real `baton ingress` processes
//! sharing one `nats-server`:
//!
//! - three ingresses together never accept more messages than the RelayDomain's per-minute
//!   budget within one UTC minute; the rest get `450 4.7.1` naming the limit, counted in
//!   `baton_limit_refusals_total`;
//! - the same for one SMTP credential's budget (AUTH PLAIN) through two ingresses, while
//!   unauthenticated mail of the same RelayDomain is not charged to it;
//! - deny lists: `--deny-network` refuses at connect (`554 5.7.1`), the pool's client networks
//!   and senders at MAIL and recipient domains at RCPT (`550 5.7.1`);
//! - ten failed AUTH attempts spread over two ingresses lock the user out on both (`454
//!   4.7.0`, the right password included); a client with ten failures is turned away at
//!   connect (`421 4.7.0`);
//! - with NATS stopped, a take falls back within a bounded time and the local fallback still
//!   refuses beyond `ceil(limit / --limit-fallback-divisor)`;
//! - a credential whose hourly count crosses its spike threshold is reported once
//!   (`baton_limit_spikes_total`, one `credential_spike` event in `BATON_EVENTS`) and, under
//!   `action: Throttle`, refused further (`450 4.7.1`);
//!   under `action: Hold`, its further messages are accepted into the pool's quarantine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use baton_system_tests::config;
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, apply_config, assert_eventually, metric, write_config,
};
use baton_system_tests::hostile::{BODY, expect};
use baton_system_tests::smtp::Reply;
use baton_system_tests::wire::{Wire, trusting};

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `AUTH PLAIN` initial response for `user`/`pass`.
fn plain(user: &str, pass: &str) -> String {
    b64(&format!("\0{user}\0{pass}"))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Wait (at most one window) until at least `left` remains in the current UTC window of
/// `period_ms`, so a short run stays in one window; the window's index.
async fn window_with(period_ms: i64, left: Duration) -> i64 {
    let left = left.as_millis() as i64;
    loop {
        let now = now_ms();
        let remaining = period_ms - now.rem_euclid(period_ms);
        if remaining >= left {
            return now.div_euclid(period_ms);
        }
        tokio::time::sleep(Duration::from_millis(remaining as u64 + 50)).await;
    }
}

/// One NATS, the config applied, `n` ingresses each with its own directory (certificate).
struct Cluster {
    ings: Vec<(Ingress, TempDir)>,
    nats: Nats,
    _dir: TempDir,
}

impl Cluster {
    async fn start(name: &str, yaml: &str, flags: &[&[&str]]) -> anyhow::Result<Cluster> {
        baton_system_tests::tls::install_crypto_provider();
        let dir = TempDir::new(name)?;
        let nats = Nats::start().await?;
        apply_config(&nats, &write_config(&dir.0, "c.yaml", yaml)?)?;
        let mut ings = Vec::new();
        for f in flags {
            let d = TempDir::new(&format!("{name}-ing"))?;
            let ing = Ingress::start(&nats, &d.0, f).await?;
            ings.push((ing, d));
        }
        Ok(Cluster {
            ings,
            nats,
            _dir: dir,
        })
    }

    fn ing(&self, i: usize) -> &Ingress {
        &self.ings[i].0
    }

    fn tls(&self, i: usize) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        trusting(&self.ings[i].1.0.join("tls.crt"))
    }

    /// A metric summed over every ingress.
    async fn total(&self, series: &str) -> f64 {
        let mut sum = 0.0;
        for (ing, _) in &self.ings {
            sum += metric(ing.metrics, series).await;
        }
        sum
    }

    async fn queued(&self) -> anyhow::Result<u64> {
        let js = self.nats.jetstream().await?;
        let mut s = js.get_stream("BATON_QUEUE").await?;
        Ok(s.info().await?.state.messages)
    }

    /// The `credential_spike` events stored in `BATON_EVENTS` (each under its own subject),
    /// oldest subject first.
    async fn spike_events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        use futures::StreamExt as _;
        let js = self.nats.jetstream().await?;
        let stream = js.get_stream("BATON_EVENTS").await?;
        let mut subjects = stream
            .info_with_subjects("baton.events.*.*.*.credential_spike")
            .await?;
        let mut out = Vec::new();
        while let Some(entry) = subjects.next().await {
            let (subject, n) = entry?;
            for _ in 0..n {
                let m = stream.get_last_raw_message_by_subject(&subject).await?;
                out.push(serde_json::from_slice(&m.payload)?);
            }
        }
        Ok(out)
    }

    fn logs(&self) -> String {
        self.ings
            .iter()
            .map(|(i, _)| std::fs::read_to_string(&i.log).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

/// The `example.com` config with `limits` in the RelayDomain's spec.
fn with_limits(limits: &str) -> String {
    let yaml = config::direct(2500, "[1s]", "1h");
    let out = yaml.replace(
        "  pool: test\n",
        &format!("  pool: test\n  limits: {limits}\n"),
    );
    assert_ne!(out, yaml);
    out
}

/// MAIL FROM; on 250 the message is completed (RCPT, DATA) and must be queued. The MAIL reply.
async fn one_message(w: &mut Wire) -> anyhow::Result<Reply> {
    let r = w.cmd("MAIL FROM:<app@example.com>").await?;
    if r.code == 250 {
        expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 250, "2.1.5");
        expect(&w.cmd("DATA").await?, 354, "End");
        w.send(BODY.as_bytes()).await?;
        expect(&w.reply().await?, 250, "2.0.0");
    }
    Ok(r)
}

#[tokio::test]
async fn three_ingresses_share_the_domains_per_minute_budget() -> anyhow::Result<()> {
    const LIMIT: u64 = 12;
    const SENT: usize = 36;
    let yaml = with_limits(&format!("{{messagesPerMinute: {LIMIT}}}"));
    let c = Cluster::start("baton-lim-domain", &yaml, &[&[], &[], &[]]).await?;
    // Budgets up to 127 are reserved one unit at a time: nothing can be left unused in
    // another process when the window is spent, so the documented undershoot is 0.
    let tolerance = 3 * (baton_limits::counter::chunk_size(LIMIT) - 1);

    // 36 messages take a second or two; 40 s leaves room for a loaded CI machine.
    let window = window_with(60_000, Duration::from_secs(40)).await;
    // One session per ingress, the ingresses concurrently, the messages round-robin.
    let mut tasks = Vec::new();
    for i in 0..3 {
        let addr = c.ing(i).smtp;
        tasks.push(tokio::spawn(async move {
            let (mut w, _) = Wire::connect(addr).await?;
            assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
            let mut replies = Vec::new();
            for _ in 0..SENT / 3 {
                replies.push(one_message(&mut w).await?);
            }
            anyhow::Ok(replies)
        }));
    }
    let mut replies = Vec::new();
    for t in tasks {
        replies.extend(t.await??);
    }
    assert_eq!(
        now_ms().div_euclid(60_000),
        window,
        "the run crossed a minute boundary"
    );

    let accepted = replies.iter().filter(|r| r.code == 250).count() as u64;
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.code != 250).collect();
    assert!(accepted <= LIMIT, "accepted {accepted} > {LIMIT}");
    assert!(
        accepted >= LIMIT - tolerance,
        "accepted {accepted} < {LIMIT} - {tolerance}:\n{}",
        c.logs()
    );
    for r in &refused {
        expect(r, 450, "4.7.1");
        assert!(
            r.text.contains(&format!(
                "Message rate limit of example.com exceeded ({LIMIT} per minute)"
            )),
            "{r:?}"
        );
    }
    assert_eq!(c.queued().await?, accepted);
    let counted = c
        .total(r#"baton_limit_refusals_total{period="minute",scope="domain",unit="messages"}"#)
        .await;
    assert_eq!(counted, refused.len() as f64);
    assert_eq!(
        c.total(r#"baton_ingress_rejections_total{code="450",reason="4.7.1"}"#)
            .await,
        refused.len() as f64
    );
    // NATS answered throughout: no decision was left to the local fallback.
    assert_eq!(c.total("baton_limit_fallback_total").await, 0.0);
    Ok(())
}

/// An implicit-TLS session authenticated as `app`.
async fn authenticated(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Wire> {
    let (mut w, greeting) = Wire::connect_tls(addr, tls).await?;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    let auth = format!("AUTH PLAIN {}", plain("app", "secret"));
    expect(&w.cmd(&auth).await?, 235, "2.7.0");
    Ok(w)
}

#[tokio::test]
async fn a_credentials_budget_is_shared_by_two_ingresses() -> anyhow::Result<()> {
    const LIMIT: u64 = 6;
    let yaml = with_limits(&format!("{{perCredential: {{messagesPerHour: {LIMIT}}}}}"));
    let c = Cluster::start("baton-lim-cred", &yaml, &[&[], &[]]).await?;
    let window = window_with(3_600_000, Duration::from_secs(20)).await;

    let mut sessions = [
        authenticated(c.ing(0).smtps, c.tls(0)?).await?,
        authenticated(c.ing(1).smtps, c.tls(1)?).await?,
    ];
    let mut replies = Vec::new();
    for n in 0..2 * LIMIT as usize {
        replies.push(one_message(&mut sessions[n % 2]).await?);
    }
    assert_eq!(now_ms().div_euclid(3_600_000), window, "crossed an hour");
    let accepted = replies.iter().filter(|r| r.code == 250).count() as u64;
    assert_eq!(accepted, LIMIT, "chunk 1: exact ({replies:?})");
    for r in replies.iter().filter(|r| r.code != 250) {
        expect(r, 450, "4.7.1");
        assert!(
            r.text.contains(&format!(
                "Message rate limit of this credential of example.com exceeded ({LIMIT} per hour)"
            )),
            "{r:?}"
        );
    }
    // A new session of the same credential on either ingress is refused too…
    let mut w = authenticated(c.ing(1).smtps, c.tls(1)?).await?;
    expect(&one_message(&mut w).await?, 450, "4.7.1");
    // …while the RelayDomain's unauthenticated mail (a trusted network) is not charged to it.
    let (mut w, _) = Wire::connect(c.ing(0).smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&one_message(&mut w).await?, 250, "2.1.0");
    assert_eq!(
        c.total(r#"baton_limit_refusals_total{period="hour",scope="credential",unit="messages"}"#)
            .await,
        (LIMIT + 1) as f64
    );
    assert_eq!(c.queued().await?, LIMIT + 1);
    Ok(())
}

#[tokio::test]
async fn deny_lists_refuse_networks_senders_and_recipient_domains() -> anyhow::Result<()> {
    let yaml = config::direct(2500, "[1s]", "1h").replace(
        "  tls: {policy: Disabled}\n",
        "  tls: {policy: Disabled}\n  deny:\n    clientNetworks: [127.0.0.2/32]\n    \
         senders: [blocked@example.com, \"*@*.example.com\"]\n    \
         recipientDomains: [denied.test, \"*.denied.test\"]\n",
    );
    assert!(yaml.contains("recipientDomains"));
    let c = Cluster::start(
        "baton-lim-deny",
        &yaml,
        &[
            &["--deny-network", "127.0.0.0/8", "--deny-network", "::1"],
            &[],
        ],
    )
    .await?;

    // `--deny-network`: 554 5.7.1 at connect, then the connection is closed.
    let (mut w, greeting) = Wire::connect(c.ing(0).smtp).await?;
    expect(&greeting, 554, "5.7.1");
    assert!(w.closed().await);
    assert_eq!(
        metric(
            c.ing(0).metrics,
            r#"baton_deny_refusals_total{list="connect"}"#
        )
        .await,
        1.0
    );

    // The pool's client networks: 550 5.7.1 at MAIL.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let (mut w, greeting) = Wire::connect_from(other, c.ing(1).smtp).await?;
    assert_eq!(greeting.code, 220);
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 550, "5.7.1");

    // Senders and recipient domains.
    let (mut w, _) = Wire::connect(c.ing(1).smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(
        &w.cmd("MAIL FROM:<Blocked@example.com>").await?,
        550,
        "5.7.1",
    );
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<a@denied.test>").await?, 550, "5.7.1");
    expect(&w.cmd("RCPT TO:<a@sub.DENIED.test>").await?, 550, "5.7.1");
    expect(&w.cmd("RCPT TO:<a@notdenied.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");
    assert_eq!(c.queued().await?, 1);

    let m = c.ing(1).metrics;
    for (list, n) in [("network", 1.0), ("sender", 1.0), ("recipient_domain", 2.0)] {
        let series = format!("baton_deny_refusals_total{{list=\"{list}\"}}");
        assert_eq!(metric(m, &series).await, n, "{list}");
    }
    Ok(())
}

/// A STARTTLS session on the relay port from loopback address `from`, after EHLO.
async fn tls_from(
    from: IpAddr,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<Result<Wire, Reply>> {
    let (mut w, greeting) = Wire::connect_from(from, addr).await?;
    if greeting.code != 220 {
        return Ok(Err(greeting));
    }
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("STARTTLS").await?, 220, "2.0.0");
    let mut w = w.handshake(tls).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    Ok(Ok(w))
}

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

#[tokio::test]
async fn failed_auth_locks_out_across_ingresses() -> anyhow::Result<()> {
    let flags: &[&str] = &[
        "--auth-failure-delay",
        "0s",
        "--auth-lockout-failures",
        "10",
    ];
    let c = Cluster::start(
        "baton-lim-lockout",
        &config::direct(2500, "[1s]", "1h"),
        &[flags, flags],
    )
    .await?;
    let ing = |i: usize| c.ing(i).smtp;

    // A client: ten failures with ten different (unknown) user names lock it out, on both
    // ingresses, at connect.
    let guesser = loopback(20);
    for n in 0..5 {
        let i = n % 2;
        let mut w = tls_from(guesser, ing(i), c.tls(i)?)
            .await?
            .map_err(|r| anyhow::anyhow!("refused early: {r:?}"))?;
        for k in 0..2 {
            let auth = format!("AUTH PLAIN {}", plain(&format!("u{n}-{k}"), "x"));
            expect(&w.cmd(&auth).await?, 535, "5.7.8");
        }
    }
    for i in 0..2 {
        let (tls, addr) = (c.tls(i)?, ing(i));
        assert_eventually(Duration::from_secs(10), "client locked at connect", || {
            let tls = tls.clone();
            async move {
                matches!(tls_from(guesser, addr, tls).await, Ok(Err(r)) if r.code == 421 && r.text.starts_with("4.7.0"))
            }
        })
        .await?;
    }
    assert_eq!(
        c.total(r#"baton_auth_lockouts_total{subject="client"}"#)
            .await,
        1.0
    );
    // Another client still authenticates as `app`.
    let mut w = tls_from(loopback(21), ing(1), c.tls(1)?)
        .await?
        .map_err(|r| anyhow::anyhow!("{r:?}"))?;
    let right = format!("AUTH PLAIN {}", plain("app", "secret"));
    expect(&w.cmd(&right).await?, 235, "2.7.0");

    // A user: ten wrong passwords from five clients (two each, so no client is locked), split
    // over both ingresses; then `app` is locked on both, the right password included.
    for n in 0..5u8 {
        let i = usize::from(n % 2);
        let mut w = tls_from(loopback(30 + n), ing(i), c.tls(i)?)
            .await?
            .map_err(|r| anyhow::anyhow!("{r:?}"))?;
        for _ in 0..2 {
            let wrong = format!("AUTH PLAIN {}", plain("APP", "wrong"));
            expect(&w.cmd(&wrong).await?, 535, "5.7.8");
        }
    }
    let mut locked = Vec::new();
    for i in [1, 0] {
        let tls = c.tls(i)?;
        let addr = ing(i);
        let right = right.clone();
        assert_eventually(Duration::from_secs(10), "user locked", || {
            let (tls, right) = (tls.clone(), right.clone());
            async move {
                let Ok(Ok(mut w)) = tls_from(loopback(40), addr, tls).await else {
                    return false;
                };
                matches!(w.cmd(&right).await, Ok(r) if r.code == 454)
            }
        })
        .await?;
        let mut w = tls_from(loopback(41), addr, c.tls(i)?)
            .await?
            .map_err(|r| anyhow::anyhow!("{r:?}"))?;
        let r = w.cmd(&right).await?;
        expect(&r, 454, "4.7.0");
        // The same reply as for a locked client, and for a user that does not exist.
        locked.push(r.text.clone());
    }
    assert_eq!(locked[0], locked[1]);
    assert_eq!(
        c.total(r#"baton_auth_lockouts_total{subject="user"}"#)
            .await,
        1.0
    );
    Ok(())
}

#[tokio::test]
async fn with_nats_stopped_the_local_fallback_still_refuses() -> anyhow::Result<()> {
    const LIMIT: u64 = 9;
    const DIVISOR: u64 = 3;
    let yaml = with_limits(&format!("{{messagesPerMinute: {LIMIT}}}"));
    let mut c = Cluster::start(
        "baton-lim-fallback",
        &yaml,
        &[&["--limit-fallback-divisor", "3"]],
    )
    .await?;
    let window = window_with(60_000, Duration::from_secs(30)).await;
    let (mut w, _) = Wire::connect(c.ing(0).smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    c.nats.stop();

    let mut codes = Vec::new();
    for _ in 0..LIMIT {
        // Bounded: a KV call that cannot be answered times out (250 ms); never a hang.
        let r = tokio::time::timeout(Duration::from_secs(8), w.cmd("MAIL FROM:<app@example.com>"))
            .await
            .map_err(|_| anyhow::anyhow!("MAIL hung with NATS stopped"))??;
        if r.code == 250 {
            expect(&w.cmd("RSET").await?, 250, "2.0.0");
        } else {
            expect(&r, 450, "4.7.1");
        }
        codes.push(r.code);
    }
    assert_eq!(now_ms().div_euclid(60_000), window, "crossed a minute");
    let accepted = codes.iter().filter(|&&c| c == 250).count() as u64;
    // ceil(9 / 3) = 3 in this process alone: never unlimited, never nothing.
    assert_eq!(accepted, LIMIT.div_ceil(DIVISOR), "{codes:?}\n{}", c.logs());
    assert!(
        metric(
            c.ing(0).metrics,
            r#"baton_limit_fallback_total{component="ingress",limit="budget"}"#
        )
        .await
            >= 1.0
    );
    Ok(())
}

#[tokio::test]
async fn a_credentials_sending_spike_is_reported_then_throttled() -> anyhow::Result<()> {
    // No history: the minimum (3 in the hour) is the threshold.
    let yaml = with_limits("{spike: {action: Throttle, factor: 2, minimumPerHour: 3}}");
    let c = Cluster::start("baton-lim-spike", &yaml, &[&[], &[]]).await?;
    let window = window_with(3_600_000, Duration::from_secs(20)).await;
    let mut sessions = [
        authenticated(c.ing(0).smtps, c.tls(0)?).await?,
        authenticated(c.ing(1).smtps, c.tls(1)?).await?,
    ];
    for n in 0..3 {
        expect(&one_message(&mut sessions[n % 2]).await?, 250, "2.1.0");
    }
    // The third crossed the threshold: reported once, on one ingress, and published once as a
    // `credential_spike` event (in the background: waited for).
    assert_eq!(
        c.total(r#"baton_limit_spikes_total{action="throttle"}"#)
            .await,
        1.0
    );
    assert_eventually(
        Duration::from_secs(10),
        "the spike event is stored",
        || async { c.spike_events().await.is_ok_and(|e| !e.is_empty()) },
    )
    .await?;
    // Further messages of the credential this hour: 450 4.7.1 on both ingresses.
    for w in &mut sessions {
        let r = one_message(w).await?;
        expect(&r, 450, "4.7.1");
        assert!(r.text.contains("far above its usual rate"), "{r:?}");
    }
    assert_eq!(now_ms().div_euclid(3_600_000), window, "crossed an hour");
    // Unauthenticated mail of the RelayDomain is not counted.
    let (mut w, _) = Wire::connect(c.ing(0).smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&one_message(&mut w).await?, 250, "2.1.0");
    assert_eq!(c.queued().await?, 4);
    // Exactly one spike event, for the crossing (none for the throttled messages after it).
    let events = c.spike_events().await?;
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["type"], "dev.baton.message.credential_spike.v1", "{e}");
    assert!(
        e["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("baton/ingress/")),
        "{e}"
    );
    assert_eq!(e["data"]["relayDomain"], "team-a/example-com", "{e}");
    assert_eq!(e["data"]["credential"], "app", "{e}");
    assert_eq!(e["data"]["count"], 3, "{e}");
    assert_eq!(e["data"]["threshold"], 3, "{e}");
    assert_eq!(e["data"]["action"], "throttle", "{e}");
    assert!(!e.to_string().contains("secret"), "no password in {e}");
    Ok(())
}

#[tokio::test]
async fn a_held_spike_goes_to_the_pools_quarantine() -> anyhow::Result<()> {
    let yaml = with_limits("{spike: {action: Hold, factor: 2, minimumPerHour: 2}}");
    let c = Cluster::start("baton-lim-hold", &yaml, &[&[]]).await?;
    let window = window_with(3_600_000, Duration::from_secs(20)).await;
    let mut w = authenticated(c.ing(0).smtps, c.tls(0)?).await?;
    // The second message crosses the threshold and goes through; the third is accepted held.
    for _ in 0..3 {
        expect(&one_message(&mut w).await?, 250, "2.1.0");
    }
    assert_eq!(now_ms().div_euclid(3_600_000), window, "crossed an hour");
    let m = c.ing(0).metrics;
    assert_eq!(
        metric(m, r#"baton_limit_spikes_total{action="hold"}"#).await,
        1.0
    );
    assert_eq!(
        metric(m, r#"baton_quarantined_total{pool="test"}"#).await,
        1.0
    );
    let js = c.nats.jetstream().await?;
    let stream = js.get_stream("BATON_QUEUE").await?;
    let mut subjects = Vec::new();
    for seq in 1..=3 {
        subjects.push(stream.get_raw_message(seq).await?.subject.to_string());
    }
    assert_eq!(
        subjects,
        ["baton.new.test", "baton.new.test", "baton.quarantine.test"]
    );
    Ok(())
}
