//! The ingress side of [`baton_smtp::Policy`]: answers the session's questions from the
//! config snapshot in force (via `baton_core::PolicyIndex`) and the pools' deny lists; the
//! cluster-wide budgets are taken afterwards, by admission (`crate::limits`).

use std::collections::HashMap;
use std::sync::Arc;

use baton_core::clock::now_ms;
use baton_core::policy::PolicyIndex;
use baton_core::refusal::Refusal;
use baton_core::suppression;
use baton_proto::v1::RelayConfig;
use baton_queue::suppression::SuppressionCache;
use baton_smtp::session::{Grant, Policy, SenderContext};
use baton_smtp::{ForwardPath, ListenerKind, PeerInfo, Reply, ReversePath, catalogue};

use baton_telemetry::Metrics;

use crate::authlog::AuthLog;
use crate::dkim::{DkimError, Signers};
use crate::intake::ReturnPaths;
use crate::listener_label;

/// A compiled view of one config snapshot.
pub struct Snapshot {
    /// The snapshot itself.
    pub config: Arc<RelayConfig>,
    /// Pre-parsed policy lookups.
    pub index: PolicyIndex,
    /// DKIM signers per RelayDomain (keys parsed once per snapshot).
    pub dkim: Signers,
    /// Suppression policy per RelayDomain (`namespace/name`), decided once per snapshot.
    pub suppression: HashMap<String, suppression::Policy>,
    /// Return-path domains and their VERP keys.
    pub return_paths: ReturnPaths,
    /// Recent successful AUTH verifications under this snapshot.
    pub auth_cache: crate::authcache::AuthCache,
    /// Content filters per pool and header policies per RelayDomain, built once per snapshot.
    pub filtering: crate::filtering::Filtering,
    /// Inbound budgets in force per RelayDomain (`namespace/name`), decided once per snapshot;
    /// absent: nothing limited.
    pub budgets: HashMap<String, crate::limits::Budgets>,
    /// Deny lists per pool, compiled once per snapshot; absent: nothing denied.
    pub deny: HashMap<String, crate::deny::Deny>,
}

impl Snapshot {
    /// Index a snapshot and build its DKIM signers.
    pub fn new(config: Arc<RelayConfig>) -> Self {
        let index = PolicyIndex::new(&config);
        let dkim = Signers::new(&config);
        let suppression = config
            .domains
            .iter()
            .map(|d| (d.name.clone(), suppression::Policy::of(d)))
            .collect();
        let return_paths = ReturnPaths::new(&config);
        let filtering = crate::filtering::Filtering::new(&config);
        let budgets = config
            .domains
            .iter()
            .filter_map(|d| {
                let pool = config.pools.iter().find(|p| p.name == d.pool);
                crate::limits::Budgets::of(d, pool).map(|b| (d.name.clone(), b))
            })
            .collect();
        let deny = config
            .pools
            .iter()
            .filter_map(|p| {
                let d = crate::deny::Deny::new(&p.name, p.deny.as_ref()?);
                (!d.is_empty()).then(|| (p.name.clone(), d))
            })
            .collect();
        Snapshot {
            config,
            index,
            dkim,
            suppression,
            return_paths,
            auth_cache: crate::authcache::AuthCache::default(),
            filtering,
            budgets,
            deny,
        }
    }

    /// `Err(451 4.7.5)` when the RelayDomain's DKIM keys are configured but unusable: its mail
    /// is deferred, never sent unsigned.
    pub fn check_signing(&self, relay_domain: &str) -> Result<(), Reply> {
        match self.dkim.get(relay_domain) {
            Some(Err(e)) => Err(dkim_unavailable(&self.index, relay_domain, e)),
            _ => Ok(()),
        }
    }
}

/// `451 4.7.5 <domain>: DKIM key <selector> unusable, mail deferred`.
pub fn dkim_unavailable(index: &PolicyIndex, relay_domain: &str, e: &DkimError) -> Reply {
    let domain = index
        .domain(relay_domain)
        .map(|d| d.domain.as_str())
        .unwrap_or(relay_domain);
    tracing::warn!(
        relay_domain,
        reason = e.metric_label(),
        "DKIM signing unavailable: {e}"
    );
    catalogue::dkim_unusable(domain, e.selector(), e.metric_label())
}

/// Converts a core refusal into the SMTP reply the client sees.
pub fn refusal_reply(r: &Refusal) -> Reply {
    Reply::new(r.code, r.status, r.text.clone())
}

/// The policy a session consults, bound to one snapshot (or none yet).
pub struct SessionPolicy<'a> {
    /// Snapshot in force, `None` before the first one arrived.
    pub snapshot: Option<&'a Snapshot>,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// The failed-AUTH log.
    pub auth_log: &'a AuthLog,
    /// The listener of the session (label of the AUTH counter).
    pub listener: ListenerKind,
    /// The suppression lists (none: not consulted).
    pub suppressions: Option<&'a SuppressionCache>,
}

impl SessionPolicy<'_> {
    fn denied(&self, list: &'static str) {
        self.metrics.deny_refusals.with_label_values(&[list]).inc();
    }

    /// `550 5.7.1` for a client network or a sender on the pool's deny list.
    fn check_deny_sender(
        &self,
        ctx: &SenderContext<'_>,
        relay_domain: &str,
        deny: &crate::deny::Deny,
    ) -> Result<(), Reply> {
        if deny.client(ctx.peer.addr) {
            self.denied("network");
            tracing::info!(client = %ctx.peer.addr, relay_domain, reason = "network_denied", "sender refused: the client network is on the pool's deny list");
            return Err(catalogue::client_denied());
        }
        if let ReversePath::Mailbox(a) = ctx.reverse_path
            && deny.sender(&a.local_part, &a.domain)
        {
            self.denied("sender");
            tracing::info!(client = %ctx.peer.addr, relay_domain, reason = "sender_denied", "sender refused: on the pool's deny list");
            return Err(catalogue::sender_denied());
        }
        Ok(())
    }

    /// `550 5.1.1` for a recipient on the relay domain's suppression list (mode `Refuse`).
    /// In `AcceptAndBounce` mode the worker fails it without an attempt instead.
    fn check_suppressed(
        &self,
        ctx: &SenderContext<'_>,
        grant: &Grant,
        address: &str,
    ) -> Result<(), Reply> {
        let (Some(cache), Some(s)) = (self.suppressions, self.snapshot) else {
            return Ok(());
        };
        let refuse = s
            .suppression
            .get(&grant.relay_domain)
            .is_some_and(|p| p.enabled && p.mode == suppression::Mode::Refuse);
        if !refuse {
            return Ok(());
        }
        let Some(entry) = cache.lookup(&grant.relay_domain, address, now_ms()) else {
            return Ok(());
        };
        self.metrics
            .ingress_suppressed_recipients
            .with_label_values(&[&grant.relay_domain])
            .inc();
        tracing::info!(
            client = %ctx.peer.addr,
            relay_domain = %grant.relay_domain,
            reason = "suppressed",
            source = entry.source.as_str(),
            class = %entry.class,
            "recipient refused: on the suppression list"
        );
        Err(catalogue::suppressed(suppression::refusal_text(&entry)))
    }
}

/// Size cap of a report to a return path (a DSN returns at most the original's headers or a
/// full message; providers' complaints are small).
const REPORT_MAX_SIZE: u64 = 10 * 1024 * 1024;

/// The RelayDomain a client may send as, or why not.
fn authorize(s: &Snapshot, ctx: &SenderContext<'_>) -> Result<baton_core::SenderGrant, Refusal> {
    let domain_lc;
    let sender = match ctx.reverse_path {
        ReversePath::Null => None,
        ReversePath::Mailbox(a) => {
            domain_lc = a.domain_lowercase();
            Some((a.local_part.as_str(), domain_lc.as_str()))
        }
    };
    let auth = ctx.authenticated.map(|username| baton_core::Auth {
        username,
        scope: ctx.auth_scope.unwrap_or(""),
    });
    s.index.authorize_sender(
        ctx.peer.addr,
        auth,
        sender,
        matches!(ctx.listener, ListenerKind::Submission | ListenerKind::Smtps),
    )
}

/// Password verifications running at once in this process (argon2id is CPU work by design).
static VERIFYING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A permit for one verification; at most twice the cores (at least 4) at once.
struct VerifySlot;

impl VerifySlot {
    fn take() -> Option<VerifySlot> {
        use std::sync::atomic::Ordering;
        let cap = std::thread::available_parallelism().map_or(4, |n| (2 * n.get()).max(4));
        let before = VERIFYING.fetch_add(1, Ordering::AcqRel);
        if before >= cap {
            VERIFYING.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(VerifySlot)
    }
}

impl Drop for VerifySlot {
    fn drop(&mut self) {
        VERIFYING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Run CPU-heavy `f` without stalling the other sessions of this async worker: on a
/// multi-threaded runtime the worker hands its other tasks over while `f` runs
/// (`block_in_place`); elsewhere (tests, a current-thread runtime) it just runs.
fn off_the_async_workers<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn not_ready() -> Reply {
    catalogue::config_not_loaded()
}

impl Policy for SessionPolicy<'_> {
    fn authenticate(
        &self,
        _peer: &PeerInfo,
        username: &str,
        password: &str,
    ) -> Result<String, Reply> {
        let Some(s) = self.snapshot else {
            return Err(catalogue::auth_unavailable());
        };
        let now = std::time::Instant::now();
        let cached = s.auth_cache.get(username, password, now);
        let verified = match cached {
            Some(scope) => Some(scope),
            None => {
                let Some(_slot) = VerifySlot::take() else {
                    // More argon2id verifications in flight than cores to run them: a
                    // temporary failure (RFC 4954 454 4.7.0) rather than a queue of CPU work.
                    return Err(catalogue::auth_unavailable());
                };
                let scope = off_the_async_workers(|| s.index.authenticate(username, password));
                if let Some(scope) = &scope {
                    s.auth_cache.put(username, password, scope, now);
                }
                scope
            }
        };
        if let Some(scope) = verified {
            self.metrics
                .ingress_auth
                .with_label_values(&[listener_label(self.listener), "ok"])
                .inc();
            Ok(scope)
        } else {
            // Counted and logged by `auth_failed`, which the session calls for every failure.
            Err(catalogue::credentials_invalid())
        }
    }

    fn auth_failed(&self, peer: &PeerInfo, listener: ListenerKind, username: &str) {
        let label = listener_label(listener);
        self.metrics
            .ingress_auth
            .with_label_values(&[label, "failed"])
            .inc();
        self.auth_log.failed(peer.addr, label, username);
    }

    fn check_sender(&self, ctx: &SenderContext<'_>) -> Result<Grant, Reply> {
        let Some(s) = self.snapshot else {
            return Err(not_ready());
        };
        let grant = match authorize(s, ctx) {
            Ok(g) => g,
            // Reports to a return-path domain come from anyone, on the relay port: the
            // transaction may then only name return-path addresses (checked at RCPT, where a
            // stranger's other recipients get the refusal MAIL would have given).
            Err(_)
                if ctx.listener == ListenerKind::Relay
                    && ctx.authenticated.is_none()
                    && !s.return_paths.is_empty() =>
            {
                return Ok(Grant {
                    relay_domain: String::new(),
                    pool: String::new(),
                    max_message_size: REPORT_MAX_SIZE,
                    inbound: true,
                    admit: false,
                });
            }
            Err(r) => {
                tracing::info!(client = %ctx.peer.addr, reason = r.reason, "sender refused: {}", r.text);
                return Err(refusal_reply(&r));
            }
        };
        s.check_signing(&grant.relay_domain)?;
        // Budgets are taken by admission (`crate::limits`), after this check.
        if let Some(deny) = s.deny.get(&grant.pool) {
            self.check_deny_sender(ctx, &grant.relay_domain, deny)?;
        }
        // Shared budgets and spike policies (`crate::limits`) are taken by admission; a relay
        // domain without any skips it.
        let admit = s.budgets.contains_key(&grant.relay_domain);
        Ok(Grant {
            relay_domain: grant.relay_domain,
            pool: grant.pool,
            max_message_size: grant.max_message_size,
            inbound: false,
            admit,
        })
    }

    fn check_recipient(
        &self,
        ctx: &SenderContext<'_>,
        grant: &Grant,
        rcpt: &ForwardPath,
    ) -> Result<(), Reply> {
        // The client is already authorised to relay (checked at MAIL FROM); recipients may be
        // anywhere. `<postmaster>` without a domain has no destination for an outbound relay.
        let mailbox = match rcpt {
            ForwardPath::Postmaster => {
                return Err(catalogue::postmaster_needs_domain());
            }
            ForwardPath::Mailbox(m) => m,
        };
        if let Some(s) = self.snapshot
            && s.return_paths.owns(&mailbox.domain)
        {
            return match s
                .return_paths
                .recipient(&mailbox.local_part, &mailbox.domain)
            {
                Some(_) => Ok(()),
                None => {
                    tracing::info!(client = %ctx.peer.addr, reason = "return_path_unknown", "recipient refused: not an address of the return path (forged or stale VERP?)");
                    Err(catalogue::unknown_return_path_recipient())
                }
            };
        }
        if grant.inbound {
            // A stranger that is not writing to a return path: the refusal MAIL deferred.
            let reply = match self.snapshot.map(|s| authorize(s, ctx)) {
                Some(Err(r)) => {
                    tracing::info!(client = %ctx.peer.addr, reason = r.reason, "recipient refused: {}", r.text);
                    refusal_reply(&r)
                }
                _ => not_ready(),
            };
            return Err(reply);
        }
        // An address literal is accepted only when the transaction's pool allows them.
        if mailbox.domain.starts_with('[') {
            let allowed = self
                .snapshot
                .and_then(|s| s.index.pool(&grant.pool))
                .is_some_and(|p| p.allow_address_literals);
            if !allowed {
                tracing::info!(
                    client = %ctx.peer.addr,
                    relay_domain = %grant.relay_domain,
                    pool = %grant.pool,
                    reason = "address_literal",
                    "recipient refused: address literals are not accepted by the pool"
                );
                return Err(catalogue::address_literal_refused());
            }
        }
        if let Some(deny) = self.snapshot.and_then(|s| s.deny.get(&grant.pool))
            && deny.recipient_domain(&mailbox.domain)
        {
            self.denied("recipient_domain");
            tracing::info!(
                client = %ctx.peer.addr,
                relay_domain = %grant.relay_domain,
                pool = %grant.pool,
                reason = "recipient_domain_denied",
                "recipient refused: its domain is on the pool's deny list"
            );
            return Err(catalogue::recipient_domain_denied());
        }
        self.check_suppressed(
            ctx,
            grant,
            &format!("{}@{}", mailbox.local_part, mailbox.domain),
        )
    }
}
