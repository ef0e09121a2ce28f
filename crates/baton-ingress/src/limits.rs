//! Cluster-wide inbound limits (issue 18): budgets shared by every ingress pod through the
//! `baton-limits` KV bucket ([`baton_limits::SharedCounter`]), the cluster-wide AUTH lockout
//! ([`baton_limits::Lockout`]) and the `--deny-network` list refused at connect.
//!
//! * **Budgets.** At MAIL FROM one message is taken from the RelayDomain's budgets, the
//!   credential's (relay domain + lower-cased AUTH user) and the client network's (the address
//!   truncated to the prefix lengths); at RCPT TO one recipient from the domain's and the
//!   credential's recipient budgets. All or nothing, per fixed UTC window (minute, hour, day).
//!   The budget in force is decided once per snapshot ([`Budgets::of`]): the lower non-zero of
//!   the RelayDomain's and its pool's `inboundLimits` (the pool's is a default and a ceiling).
//!   Spent: `450 4.7.1` (messages) or `452 4.5.3` (recipients) naming the limit, counted in
//!   `baton_limit_refusals_total{scope,period,unit}`.
//! * **NATS trouble.** Every KV round trip is bounded (250 ms); then the limit decides locally
//!   for a cool-down, allowing `ceil(limit / --limit-fallback-divisor)` per process and window
//!   — never unlimited, never a wait (`baton_limit_fallback_total{component="ingress"}`).
//! * **Lockout.** Every failed AUTH counts for the user name (lower-cased, whether or not it
//!   exists) and the client address; `--auth-lockout-failures` of either within
//!   `--auth-lockout-window` lock it for `--auth-lockout-duration`: AUTH gets `454 4.7.0` (same
//!   text for a user and a client), a locked client also `421 4.7.0` at connect.
//!
//! Every key is written under `in.` ([`baton_queue::LIMITS_INBOUND_PREFIX`]), the only prefix
//! the ingress's NATS user may write.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use baton_limits::kv::Versioned;
use baton_limits::{
    BudgetKey, Kv, KvError, Lockout, MemoryKv, Options, Period, Quota, SharedCounter, Subject,
    Take, Want,
};
use baton_proto::v1 as pb;
use baton_smtp::{Admission, Reply, catalogue};
use baton_telemetry::Metrics;
use bytes::Bytes;
use futures::future::BoxFuture;
use ipnet::IpNet;

use crate::Snapshot;

pub use baton_limits::LockoutPolicy;

/// Namespace of the RelayDomains' message budgets.
pub const NS_DOMAIN_MESSAGES: &str = "in.domain.msgs";
/// Namespace of the RelayDomains' recipient budgets.
pub const NS_DOMAIN_RECIPIENTS: &str = "in.domain.rcpts";
/// Namespace of the credentials' message budgets.
pub const NS_CREDENTIAL_MESSAGES: &str = "in.cred.msgs";
/// Namespace of the credentials' recipient budgets.
pub const NS_CREDENTIAL_RECIPIENTS: &str = "in.cred.rcpts";
/// Namespace of the client networks' message budgets.
pub const NS_CLIENT_MESSAGES: &str = "in.client.msgs";
/// Namespace of the AUTH lockout.
pub const NS_AUTH: &str = "in.auth";

// Every namespace is under the ingress's prefix.
const _: () = {
    let p = baton_queue::LIMITS_INBOUND_PREFIX.as_bytes();
    let all = [
        NS_DOMAIN_MESSAGES.as_bytes(),
        NS_DOMAIN_RECIPIENTS.as_bytes(),
        NS_CREDENTIAL_MESSAGES.as_bytes(),
        NS_CREDENTIAL_RECIPIENTS.as_bytes(),
        NS_CLIENT_MESSAGES.as_bytes(),
        NS_AUTH.as_bytes(),
    ];
    let mut i = 0;
    while i < all.len() {
        let ns = all[i];
        assert!(ns.len() > p.len() && ns[p.len()] == b'.');
        let mut j = 0;
        while j < p.len() {
            assert!(ns[j] == p[j]);
            j += 1;
        }
        i += 1;
    }
};

/// Metric label and reply word of a period.
pub fn period_label(p: Period) -> &'static str {
    match p {
        Period::Minute => "minute",
        Period::Hour => "hour",
        Period::Day => "day",
    }
}

/// Budgets per period (minute, hour, day, in [`Period::ALL`] order); 0 is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PerPeriod(pub [u64; 3]);

impl PerPeriod {
    fn of(minute: u32, hour: u32, day: u32) -> PerPeriod {
        PerPeriod([u64::from(minute), u64::from(hour), u64::from(day)])
    }

    /// Per period, the lower non-zero of the two (0 only when both are 0).
    pub fn min_nonzero(self, other: PerPeriod) -> PerPeriod {
        let mut out = [0; 3];
        for (i, o) in out.iter_mut().enumerate() {
            let (a, b) = (self.0[i], other.0[i]);
            *o = match (a, b) {
                (0, b) => b,
                (a, 0) => a,
                (a, b) => a.min(b),
            };
        }
        PerPeriod(out)
    }

    /// No budget at all.
    pub fn is_unlimited(&self) -> bool {
        self.0.iter().all(|&n| n == 0)
    }

    fn quotas(&self) -> impl Iterator<Item = Quota> + '_ {
        Period::ALL
            .iter()
            .zip(self.0)
            .filter(|(_, limit)| *limit > 0)
            .map(|(&period, limit)| Quota { period, limit })
    }
}

fn messages(r: &pb::RateLimits) -> PerPeriod {
    PerPeriod::of(
        r.messages_per_minute,
        r.messages_per_hour,
        r.messages_per_day,
    )
}

fn recipients(r: &pb::RateLimits) -> PerPeriod {
    PerPeriod::of(
        r.recipients_per_minute,
        r.recipients_per_hour,
        r.recipients_per_day,
    )
}

/// The inbound budgets in force for one RelayDomain, decided once per snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    /// The sending domain (named in refusals).
    pub label: String,
    /// Messages of the whole RelayDomain.
    pub domain_messages: PerPeriod,
    /// Recipients of the whole RelayDomain.
    pub domain_recipients: PerPeriod,
    /// Messages of each credential.
    pub credential_messages: PerPeriod,
    /// Recipients of each credential.
    pub credential_recipients: PerPeriod,
    /// Messages of each client network.
    pub client_messages: PerPeriod,
    /// IPv4 prefix length grouping clients.
    pub ipv4_prefix: u8,
    /// IPv6 prefix length grouping clients.
    pub ipv6_prefix: u8,
    /// Spike detection per credential (`crate::spike`).
    pub spike: Option<pb::SpikePolicy>,
}

impl Budgets {
    /// The budgets of RelayDomain `d` under its pool: per budget the lower non-zero of the
    /// domain's and the pool's `inboundLimits`. The domain's `messages_per_minute` (snapshot
    /// field 9, from before issue 18) counts when `rates` does not set it. The client prefix
    /// lengths are the domain's when it sets client budgets, else the pool's, else 32 and 64.
    /// `None` when nothing is limited.
    pub fn of(d: &pb::RelayDomain, pool: Option<&pb::SendingPool>) -> Option<Budgets> {
        let mut rates = d.rates.unwrap_or_default();
        if rates.messages_per_minute == 0 {
            rates.messages_per_minute = d.messages_per_minute;
        }
        let cred = d.credential_rates.unwrap_or_default();
        let client = d.client_rates.unwrap_or_default();
        let inbound = pool.and_then(|p| p.inbound_limits).unwrap_or_default();
        let pool_domain = inbound.per_domain.unwrap_or_default();
        let pool_cred = inbound.per_credential.unwrap_or_default();
        let pool_client = inbound.per_client.unwrap_or_default();
        let client_of = |c: &pb::ClientRateLimits| {
            PerPeriod::of(
                c.messages_per_minute,
                c.messages_per_hour,
                c.messages_per_day,
            )
        };
        let prefixes = [d.client_rates, inbound.per_client]
            .into_iter()
            .flatten()
            .find(|c| !client_of(c).is_unlimited());
        let prefix = |len: u32, max: u8, default: u8| match u8::try_from(len) {
            Ok(n) if n >= 1 && n <= max => n,
            _ => default,
        };
        let b = Budgets {
            label: d.domain.clone(),
            domain_messages: messages(&rates).min_nonzero(messages(&pool_domain)),
            domain_recipients: recipients(&rates).min_nonzero(recipients(&pool_domain)),
            credential_messages: messages(&cred).min_nonzero(messages(&pool_cred)),
            credential_recipients: recipients(&cred).min_nonzero(recipients(&pool_cred)),
            client_messages: client_of(&client).min_nonzero(client_of(&pool_client)),
            ipv4_prefix: prefixes.map_or(32, |c| prefix(c.ipv4_prefix_length, 32, 32)),
            ipv6_prefix: prefixes.map_or(64, |c| prefix(c.ipv6_prefix_length, 128, 64)),
            spike: d.spike,
        };
        let unlimited = b.domain_messages.is_unlimited()
            && b.domain_recipients.is_unlimited()
            && b.credential_messages.is_unlimited()
            && b.credential_recipients.is_unlimited()
            && b.client_messages.is_unlimited()
            && b.spike.is_none();
        (!unlimited).then_some(b)
    }

    /// The client network `addr` belongs to (IPv4-mapped IPv6 taken as IPv4).
    pub fn client_network(&self, addr: IpAddr) -> IpNet {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        let len = match addr {
            IpAddr::V4(_) => self.ipv4_prefix.min(32),
            IpAddr::V6(_) => self.ipv6_prefix.min(128),
        };
        IpNet::new(addr, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(addr))
    }
}

/// The ingress's limit settings (flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Ingress pods assumed to share a limit when NATS is unreachable (`ceil(limit/divisor)`
    /// per pod).
    pub fallback_divisor: u32,
    /// AUTH lockout (failures 0: off).
    pub lockout: LockoutPolicy,
    /// Networks refused at connect with `554 5.7.1`.
    pub deny_networks: Vec<IpNet>,
    /// Longest KV round trip before the fallback decides.
    pub kv_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            fallback_divisor: 2,
            lockout: LockoutPolicy {
                failures: 10,
                window: Duration::from_secs(15 * 60),
                duration: Duration::from_secs(15 * 60),
            },
            deny_networks: Vec::new(),
            kv_timeout: Options::default().timeout,
        }
    }
}

/// How an admitted command proceeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// As usual.
    Proceed,
    /// MAIL of a credential whose spike policy holds its mail: the message goes to the
    /// pool's quarantine.
    Hold,
    /// As usual, and this MAIL's credential just crossed its spike threshold: the caller
    /// publishes the report once (`crate::spike::emit`).
    Spiked(Box<baton_core::event::CredentialSpike>),
}

/// The shared limits of one ingress process.
pub struct InboundLimits {
    counter: SharedCounter,
    lockout: Option<Lockout>,
    deny_networks: Vec<IpNet>,
    spikes: crate::spike::Spikes,
}

impl std::fmt::Debug for InboundLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundLimits")
            .field("counter", &self.counter)
            .field("lockout", &self.lockout)
            .field("deny_networks", &self.deny_networks)
            .finish()
    }
}

/// What one want of a take counts, to name it when it is spent.
struct Counted {
    scope: &'static str,
    unit: &'static str,
    quota: Quota,
}

/// One unit of `unit` from every window of `pp` (none when unlimited) for `scope_value` under
/// the key namespace `ns`, with the labels its refusal is counted under.
fn add_budget(
    wants: &mut Vec<Want>,
    counted: &mut Vec<Counted>,
    ns: &str,
    scope_value: &str,
    pp: &PerPeriod,
    scope: &'static str,
    unit: &'static str,
) {
    if pp.is_unlimited() {
        return;
    }
    let Ok(key) = BudgetKey::new(ns, scope_value) else {
        return;
    };
    for quota in pp.quotas() {
        wants.push(Want {
            key: key.clone(),
            quota,
        });
        counted.push(Counted { scope, unit, quota });
    }
}

/// The budgets a MAIL or RCPT of `grant` takes from: none for mail to the relay itself or a
/// RelayDomain without budgets.
fn budgets_of<'a>(
    snapshot: Option<&'a Snapshot>,
    grant: &baton_smtp::Grant,
) -> Option<&'a Budgets> {
    if grant.inbound {
        return None;
    }
    snapshot.and_then(|s| s.budgets.get(&grant.relay_domain))
}

/// What a command takes one unit of: MAIL a message, RCPT a recipient, each with its own
/// per-domain and per-credential budgets.
struct Unit {
    name: &'static str,
    domain_ns: &'static str,
    credential_ns: &'static str,
    domain: fn(&Budgets) -> &PerPeriod,
    credential: fn(&Budgets) -> &PerPeriod,
}

impl Unit {
    const MESSAGES: Unit = Unit {
        name: "messages",
        domain_ns: NS_DOMAIN_MESSAGES,
        credential_ns: NS_CREDENTIAL_MESSAGES,
        domain: |b| &b.domain_messages,
        credential: |b| &b.credential_messages,
    };
    const RECIPIENTS: Unit = Unit {
        name: "recipients",
        domain_ns: NS_DOMAIN_RECIPIENTS,
        credential_ns: NS_CREDENTIAL_RECIPIENTS,
        domain: |b| &b.domain_recipients,
        credential: |b| &b.credential_recipients,
    };

    /// One unit from the RelayDomain's budget and, when authenticated, the credential's.
    fn add_domain_and_credential(
        &self,
        wants: &mut Vec<Want>,
        counted: &mut Vec<Counted>,
        b: &Budgets,
        relay_domain: &str,
        authenticated: Option<&str>,
    ) {
        let (domain, credential) = (self.domain, self.credential);
        add_budget(
            wants,
            counted,
            self.domain_ns,
            relay_domain,
            domain(b),
            "domain",
            self.name,
        );
        if let Some(user) = authenticated {
            add_budget(
                wants,
                counted,
                self.credential_ns,
                &credential_scope(relay_domain, user),
                credential(b),
                "credential",
                self.name,
            );
        }
    }
}

impl InboundLimits {
    /// Limits over `kv` (the `baton-limits` bucket).
    pub fn new(kv: Arc<dyn Kv>, settings: Settings) -> InboundLimits {
        let opts = Options {
            timeout: settings.kv_timeout,
            fallback_divisor: settings.fallback_divisor.max(1),
            ..Options::default()
        };
        let lockout = match Lockout::new(kv.clone(), NS_AUTH, settings.lockout, opts.clone()) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(error = %e, "AUTH lockout disabled");
                None
            }
        };
        InboundLimits {
            spikes: crate::spike::Spikes::new(kv.clone(), opts.timeout),
            counter: SharedCounter::new(kv, opts),
            lockout,
            deny_networks: settings.deny_networks,
        }
    }

    /// Limits counted in this process only (no NATS): tests and an ingress built without a
    /// bucket.
    pub fn local(settings: Settings) -> InboundLimits {
        InboundLimits::new(Arc::new(MemoryKv::new()), settings)
    }

    /// The client's network is refused at connect (`--deny-network`).
    pub fn denies_connection(&self, addr: IpAddr) -> bool {
        crate::deny::in_networks(&self.deny_networks, addr)
    }

    /// The client is locked out after too many failed AUTH attempts.
    pub async fn client_locked(&self, addr: IpAddr) -> bool {
        match &self.lockout {
            Some(l) => l
                .locked(&Subject::Client(addr), baton_core::clock::now_ms())
                .await
                .is_some(),
            None => false,
        }
    }

    /// Admit a command the synchronous policy allowed (see the module docs).
    pub async fn admit(
        &self,
        admission: &Admission,
        snapshot: Option<&Snapshot>,
        metrics: &Metrics,
    ) -> Result<Admitted, Reply> {
        match admission {
            Admission::Auth { user, client } => self
                .admit_auth(user, *client, metrics)
                .await
                .map(|()| Admitted::Proceed),
            Admission::Mail {
                grant,
                authenticated,
                client,
                ..
            } => {
                let Some(b) = budgets_of(snapshot, grant) else {
                    return Ok(Admitted::Proceed);
                };
                let (mut wants, mut counted) = (Vec::new(), Vec::new());
                let unit = Unit::MESSAGES;
                unit.add_domain_and_credential(
                    &mut wants,
                    &mut counted,
                    b,
                    &grant.relay_domain,
                    authenticated.as_deref(),
                );
                let network = b.client_network(*client);
                add_budget(
                    &mut wants,
                    &mut counted,
                    NS_CLIENT_MESSAGES,
                    &format!("{}\u{0}{network}", grant.relay_domain),
                    &b.client_messages,
                    "client",
                    unit.name,
                );
                self.take(&wants, &counted, b, network, metrics).await?;
                match (&b.spike, authenticated) {
                    (Some(policy), Some(user)) => {
                        self.spike(policy, &grant.relay_domain, user, b, metrics)
                            .await
                    }
                    _ => Ok(Admitted::Proceed),
                }
            }
            Admission::Rcpt {
                grant,
                authenticated,
                client,
                ..
            } => {
                let Some(b) = budgets_of(snapshot, grant) else {
                    return Ok(Admitted::Proceed);
                };
                let (mut wants, mut counted) = (Vec::new(), Vec::new());
                Unit::RECIPIENTS.add_domain_and_credential(
                    &mut wants,
                    &mut counted,
                    b,
                    &grant.relay_domain,
                    authenticated.as_deref(),
                );
                let network = b.client_network(*client);
                self.take(&wants, &counted, b, network, metrics)
                    .await
                    .map(|()| Admitted::Proceed)
            }
        }
    }

    /// Count a message of `user` of RelayDomain `relay_domain` for spike detection and apply
    /// the policy's action.
    async fn spike(
        &self,
        policy: &pb::SpikePolicy,
        relay_domain: &str,
        user: &str,
        b: &Budgets,
        metrics: &Metrics,
    ) -> Result<Admitted, Reply> {
        use crate::spike::Verdict;
        let scope = credential_scope(relay_domain, user);
        let verdict = match self
            .spikes
            .count(policy, &scope, baton_core::clock::now_ms())
            .await
        {
            Ok(v) => v,
            Err(e) => {
                metrics
                    .limit_fallback
                    .with_label_values(&["ingress", "spike"])
                    .inc();
                tracing::debug!(error = %e, "spike detection skipped: KV unavailable");
                return Ok(Admitted::Proceed);
            }
        };
        let action = match verdict {
            Verdict::Normal => return Ok(Admitted::Proceed),
            // The message that crossed the threshold goes through (it is what is reported);
            // Throttle and Hold apply to the credential's further messages this hour.
            Verdict::Crossed(crossing) => {
                let label = crate::spike::action_label(crossing.action);
                metrics.limit_spikes.with_label_values(&[label]).inc();
                tracing::warn!(
                    relay_domain = %b.label,
                    action = label,
                    count = crossing.count,
                    threshold = crossing.threshold,
                    factor = policy.factor,
                    minimum_per_hour = policy.minimum_per_hour,
                    "sending spike of an SMTP credential: this hour's messages are far above its mean of the previous 24 hours"
                );
                let report = crate::spike::report(relay_domain, user, &crossing, policy);
                return Ok(Admitted::Spiked(Box::new(report)));
            }
            Verdict::Beyond(action) => action,
        };
        match action {
            pb::SpikeAction::Alert => Ok(Admitted::Proceed),
            pb::SpikeAction::Hold => Ok(Admitted::Hold),
            pb::SpikeAction::Throttle => Err(catalogue::spike_throttled(&format!(
                "this credential of {}",
                b.label
            ))),
        }
    }

    async fn take(
        &self,
        wants: &[Want],
        counted: &[Counted],
        b: &Budgets,
        network: IpNet,
        metrics: &Metrics,
    ) -> Result<(), Reply> {
        if wants.is_empty() {
            return Ok(());
        }
        let take = self.counter.take(wants, baton_core::clock::now_ms()).await;
        if take.fallback() {
            metrics
                .limit_fallback
                .with_label_values(&["ingress", "budget"])
                .inc();
        }
        let Take::Exhausted { index, .. } = take else {
            return Ok(());
        };
        let Some(c) = counted.get(index) else {
            return Ok(());
        };
        let period = period_label(c.quota.period);
        metrics
            .limit_refusals
            .with_label_values(&[c.scope, period, c.unit])
            .inc();
        let of = match c.scope {
            "domain" => b.label.clone(),
            "credential" => format!("this credential of {}", b.label),
            _ => format!("client network {network}"),
        };
        tracing::info!(
            relay_domain = %b.label,
            scope = c.scope,
            unit = c.unit,
            period,
            limit = c.quota.limit,
            fallback = take.fallback(),
            "refused: inbound budget spent"
        );
        Err(if c.unit == "recipients" {
            catalogue::recipient_rate_exceeded(&of, c.quota.limit, period)
        } else {
            catalogue::message_rate_exceeded(&of, c.quota.limit, period)
        })
    }

    async fn admit_auth(&self, user: &str, client: IpAddr, metrics: &Metrics) -> Result<(), Reply> {
        let Some(l) = &self.lockout else {
            return Ok(());
        };
        let now = baton_core::clock::now_ms();
        let user_locked = l.locked(&Subject::User(user.to_string()), now).await;
        let client_locked = match user_locked {
            Some(_) => None,
            None => l.locked(&Subject::Client(client), now).await,
        };
        if l.in_fallback() {
            metrics
                .limit_fallback
                .with_label_values(&["ingress", "lockout"])
                .inc();
        }
        if user_locked.is_some() || client_locked.is_some() {
            tracing::info!(
                client = %client,
                locked = if user_locked.is_some() { "user" } else { "client" },
                "AUTH refused: locked out after failed attempts"
            );
            return Err(catalogue::auth_locked_out());
        }
        Ok(())
    }

    /// Count one failed AUTH of `user` (whether or not it exists) from `client`.
    pub async fn auth_failed(&self, user: &str, client: IpAddr, metrics: &Metrics) {
        let Some(l) = &self.lockout else { return };
        let now = baton_core::clock::now_ms();
        for (subject, label) in [
            (Subject::User(user.to_string()), "user"),
            (Subject::Client(client), "client"),
        ] {
            if let Some(until) = l.failed(&subject, now).await {
                metrics.auth_lockouts.with_label_values(&[label]).inc();
                tracing::warn!(
                    client = %client,
                    subject = label,
                    until_ms = until,
                    "AUTH locked out after too many failed attempts"
                );
            }
        }
        if l.in_fallback() {
            metrics
                .limit_fallback
                .with_label_values(&["ingress", "lockout"])
                .inc();
        }
    }
}

/// The scope of a credential's budgets: the RelayDomain and the lower-cased user name.
fn credential_scope(relay_domain: &str, user: &str) -> String {
    format!("{relay_domain}\u{0}{}", user.to_lowercase())
}

/// The `baton-limits` bucket, opened on first use and again after a failure to open it, so an
/// ingress that started while NATS was away starts sharing its limits once it is back.
pub struct LazyBucket {
    js: async_nats::jetstream::Context,
    store: tokio::sync::OnceCell<Store>,
}

impl std::fmt::Debug for LazyBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyBucket")
            .field("open", &self.store.initialized())
            .finish()
    }
}

impl LazyBucket {
    /// The bucket of `js`, not yet opened.
    pub fn new(js: async_nats::jetstream::Context) -> LazyBucket {
        LazyBucket {
            js,
            store: tokio::sync::OnceCell::new(),
        }
    }

    /// Open the bucket now (at startup, to report a problem early).
    pub async fn open(&self) -> Result<&Store, KvError> {
        self.store
            .get_or_try_init(|| async {
                self.js
                    .get_key_value(baton_queue::LIMITS_BUCKET)
                    .await
                    .map_err(|e| KvError::Other(e.to_string()))
            })
            .await
    }
}

impl Kv for LazyBucket {
    fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        Box::pin(async move { Kv::entry(self.open().await?, key).await })
    }

    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, KvError>> {
        Box::pin(async move { Kv::create(self.open().await?, key, value).await })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<u64, KvError>> {
        Box::pin(async move { Kv::update(self.open().await?, key, value, revision).await })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use baton_smtp::{ForwardPath, Grant, ReversePath};

    fn domain(rates: Option<pb::RateLimits>) -> pb::RelayDomain {
        pb::RelayDomain {
            name: "ns/example".into(),
            domain: "example.com".into(),
            pool: "p".into(),
            rates,
            ..Default::default()
        }
    }

    fn pool(per_domain: Option<pb::RateLimits>) -> pb::SendingPool {
        pb::SendingPool {
            name: "p".into(),
            inbound_limits: Some(pb::InboundLimits {
                per_domain,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn per_minute(n: u32) -> Option<pb::RateLimits> {
        Some(pb::RateLimits {
            messages_per_minute: n,
            ..Default::default()
        })
    }

    #[test]
    fn the_lower_non_zero_budget_wins() {
        let a = PerPeriod([10, 0, 0]);
        let b = PerPeriod([5, 7, 0]);
        assert_eq!(a.min_nonzero(b), PerPeriod([5, 7, 0]));
        assert_eq!(b.min_nonzero(a), PerPeriod([5, 7, 0]));
        assert_eq!(PerPeriod::default().min_nonzero(a), a);

        // The pool's is a default…
        let b = Budgets::of(&domain(None), Some(&pool(per_minute(50)))).unwrap();
        assert_eq!(b.domain_messages, PerPeriod([50, 0, 0]));
        // …and a ceiling.
        let b = Budgets::of(&domain(per_minute(600)), Some(&pool(per_minute(50)))).unwrap();
        assert_eq!(b.domain_messages, PerPeriod([50, 0, 0]));
        let b = Budgets::of(&domain(per_minute(20)), Some(&pool(per_minute(50)))).unwrap();
        assert_eq!(b.domain_messages, PerPeriod([20, 0, 0]));
        assert_eq!(b.label, "example.com");
        // Nothing limited: no budgets.
        assert_eq!(Budgets::of(&domain(None), None), None);
        // The old field 9 counts.
        let mut d = domain(None);
        d.messages_per_minute = 30;
        let b = Budgets::of(&d, None).unwrap();
        assert_eq!(b.domain_messages, PerPeriod([30, 0, 0]));
    }

    #[test]
    fn client_networks_use_the_prefix_lengths() {
        let mut d = domain(None);
        d.client_rates = Some(pb::ClientRateLimits {
            messages_per_hour: 5,
            ipv4_prefix_length: 24,
            ipv6_prefix_length: 48,
            ..Default::default()
        });
        let b = Budgets::of(&d, None).unwrap();
        assert_eq!(b.client_messages, PerPeriod([0, 5, 0]));
        assert_eq!(
            b.client_network("192.0.2.77".parse().unwrap()).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            b.client_network("::ffff:192.0.2.77".parse().unwrap())
                .to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(
            b.client_network("2001:db8:1:2::5".parse().unwrap())
                .to_string(),
            "2001:db8:1::/48"
        );
        // Defaults: 32 and 64.
        let b = Budgets::of(&domain(per_minute(1)), None).unwrap();
        assert_eq!(
            b.client_network("192.0.2.77".parse().unwrap()).to_string(),
            "192.0.2.77/32"
        );
    }

    fn snapshot(d: pb::RelayDomain, p: pb::SendingPool) -> Snapshot {
        Snapshot::new(Arc::new(pb::RelayConfig {
            domains: vec![d],
            pools: vec![p],
            ..Default::default()
        }))
    }

    fn mail(user: Option<&str>) -> Admission {
        Admission::Mail {
            grant: Grant {
                relay_domain: "ns/example".into(),
                pool: "p".into(),
                max_message_size: 0,
                inbound: false,
                admit: true,
            },
            reverse_path: ReversePath::Null,
            authenticated: user.map(str::to_string),
            client: "192.0.2.1".parse().unwrap(),
        }
    }

    fn rcpt(user: Option<&str>) -> Admission {
        let Admission::Mail {
            grant,
            authenticated,
            client,
            ..
        } = mail(user)
        else {
            unreachable!()
        };
        Admission::Rcpt {
            grant,
            recipient: ForwardPath::Postmaster,
            authenticated,
            client,
        }
    }

    #[tokio::test]
    async fn messages_beyond_the_domain_budget_get_450() {
        let metrics = Metrics::new();
        let s = snapshot(domain(per_minute(3)), pool(None));
        let limits = InboundLimits::local(Settings::default());
        for _ in 0..3 {
            limits.admit(&mail(None), Some(&s), &metrics).await.unwrap();
        }
        let r = limits
            .admit(&mail(None), Some(&s), &metrics)
            .await
            .unwrap_err();
        assert_eq!(
            r.to_string(),
            "450 4.7.1 Message rate limit of example.com exceeded (3 per minute); try again later"
        );
        assert_eq!(
            metrics
                .limit_refusals
                .with_label_values(&["domain", "minute", "messages"])
                .get(),
            1
        );
        // Another domain, or no snapshot: not limited.
        limits.admit(&mail(None), None, &metrics).await.unwrap();
    }

    #[tokio::test]
    async fn credential_and_recipient_budgets() {
        let metrics = Metrics::new();
        let mut d = domain(Some(pb::RateLimits {
            recipients_per_hour: 2,
            ..Default::default()
        }));
        d.credential_rates = Some(pb::RateLimits {
            messages_per_day: 1,
            ..Default::default()
        });
        let s = snapshot(d, pool(None));
        let limits = InboundLimits::local(Settings::default());
        limits
            .admit(&mail(Some("Alice")), Some(&s), &metrics)
            .await
            .unwrap();
        // The same credential, whatever the case of the name.
        let r = limits
            .admit(&mail(Some("alice")), Some(&s), &metrics)
            .await
            .unwrap_err();
        assert_eq!(r.code, 450);
        assert!(
            r.to_string()
                .contains("this credential of example.com exceeded (1 per day)"),
            "{r}"
        );
        // Another credential and no credential are not limited by it.
        limits
            .admit(&mail(Some("bob")), Some(&s), &metrics)
            .await
            .unwrap();
        limits.admit(&mail(None), Some(&s), &metrics).await.unwrap();
        // Two recipients per hour for the domain.
        limits.admit(&rcpt(None), Some(&s), &metrics).await.unwrap();
        limits
            .admit(&rcpt(Some("bob")), Some(&s), &metrics)
            .await
            .unwrap();
        let r = limits
            .admit(&rcpt(None), Some(&s), &metrics)
            .await
            .unwrap_err();
        assert_eq!(
            r.to_string(),
            "452 4.5.3 Recipient rate limit of example.com exceeded (2 per hour); try again later"
        );
        assert_eq!(
            metrics
                .limit_refusals
                .with_label_values(&["domain", "hour", "recipients"])
                .get(),
            1
        );
        assert_eq!(
            metrics
                .limit_refusals
                .with_label_values(&["credential", "day", "messages"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_client_network_budget_names_the_network() {
        let metrics = Metrics::new();
        let mut p = pool(None);
        p.inbound_limits = Some(pb::InboundLimits {
            per_client: Some(pb::ClientRateLimits {
                messages_per_minute: 1,
                ipv4_prefix_length: 24,
                ipv6_prefix_length: 64,
                ..Default::default()
            }),
            ..Default::default()
        });
        let s = snapshot(domain(None), p);
        let limits = InboundLimits::local(Settings::default());
        limits.admit(&mail(None), Some(&s), &metrics).await.unwrap();
        let r = limits
            .admit(&mail(None), Some(&s), &metrics)
            .await
            .unwrap_err();
        assert!(r.to_string().contains("client network 192.0.2.0/24"), "{r}");
    }

    #[tokio::test]
    async fn a_spiking_credential_is_reported_then_throttled_or_held() {
        let metrics = Metrics::new();
        let limits = InboundLimits::local(Settings::default());
        for (action, label) in [
            (pb::SpikeAction::Throttle, "throttle"),
            (pb::SpikeAction::Hold, "hold"),
            (pb::SpikeAction::Alert, "alert"),
        ] {
            let mut d = domain(None);
            d.name = format!("ns/{label}");
            d.spike = Some(pb::SpikePolicy {
                action: action as i32,
                factor: 2,
                minimum_per_hour: 3,
            });
            let s = snapshot(d, pool(None));
            let mail = |user: Option<&str>| {
                let Admission::Mail {
                    mut grant,
                    reverse_path,
                    authenticated,
                    client,
                } = mail(user)
                else {
                    unreachable!()
                };
                grant.relay_domain = format!("ns/{label}");
                Admission::Mail {
                    grant,
                    reverse_path,
                    authenticated,
                    client,
                }
            };
            // No history: the minimum (3) is the threshold; the 3rd message crosses it, goes
            // through and is reported once.
            for _ in 0..2 {
                let a = limits.admit(&mail(Some("dave")), Some(&s), &metrics).await;
                assert_eq!(a, Ok(Admitted::Proceed), "{label}");
            }
            let third = limits.admit(&mail(Some("Dave")), Some(&s), &metrics).await;
            let expected = baton_core::event::CredentialSpike {
                relay_domain: format!("ns/{label}"),
                credential: "Dave".into(),
                count: 3,
                threshold: 3,
                action: label.into(),
                factor: 2,
                minimum_per_hour: 3,
            };
            assert_eq!(third, Ok(Admitted::Spiked(Box::new(expected))), "{label}");
            let fourth = limits.admit(&mail(Some("dave")), Some(&s), &metrics).await;
            match action {
                pb::SpikeAction::Throttle => {
                    let r = fourth.unwrap_err();
                    assert_eq!(r.code, 450);
                    assert!(r.to_string().contains("far above its usual rate"), "{r}");
                }
                pb::SpikeAction::Hold => assert_eq!(fourth, Ok(Admitted::Hold)),
                pb::SpikeAction::Alert => assert_eq!(fourth, Ok(Admitted::Proceed)),
            }
            // Unauthenticated mail is not counted.
            let a = limits.admit(&mail(None), Some(&s), &metrics).await;
            assert_eq!(a, Ok(Admitted::Proceed));
            assert_eq!(metrics.limit_spikes.with_label_values(&[label]).get(), 1);
        }
    }

    #[tokio::test]
    async fn failed_auth_locks_user_and_client() {
        let metrics = Metrics::new();
        let settings = Settings {
            lockout: LockoutPolicy {
                failures: 3,
                window: Duration::from_secs(60),
                duration: Duration::from_secs(60),
            },
            deny_networks: vec!["10.0.0.0/8".parse().unwrap()],
            ..Settings::default()
        };
        let limits = InboundLimits::local(settings);
        let client: IpAddr = "192.0.2.9".parse().unwrap();
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        let auth = |user: &str, client| Admission::Auth {
            user: user.into(),
            client,
        };
        for _ in 0..2 {
            limits.auth_failed("Carol", client, &metrics).await;
        }
        limits
            .admit(&auth("carol", other), None, &metrics)
            .await
            .unwrap();
        limits.auth_failed("CAROL", client, &metrics).await;
        // The user is locked from any client, the client for any user, with the same reply.
        let a = limits
            .admit(&auth("carol", other), None, &metrics)
            .await
            .unwrap_err();
        let b = limits
            .admit(&auth("nobody", client), None, &metrics)
            .await
            .unwrap_err();
        assert_eq!(a, b);
        assert_eq!(a.code, 454);
        assert!(limits.client_locked(client).await);
        assert!(!limits.client_locked(other).await);
        assert_eq!(metrics.auth_lockouts.with_label_values(&["user"]).get(), 1);
        assert_eq!(
            metrics.auth_lockouts.with_label_values(&["client"]).get(),
            1
        );
        assert!(limits.denies_connection("10.1.2.3".parse().unwrap()));
        assert!(!limits.denies_connection(client));
    }
}
