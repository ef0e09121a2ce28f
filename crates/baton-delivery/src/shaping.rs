//! Outbound shaping shared by every worker of a pool (issue 18), the worker's half: a
//! destination's *site*, the pool-wide connection cap per site (a leased `SharedSemaphore`
//! permit held for the connection's life, kept with it while it is idle for reuse: see
//! `leases`), messages per minute per site and warm-up budgets
//! per egress identity (`SharedCounter` windows), and the back-off after a throttling reply
//! (`Marks`). Everything is counted in the KV bucket `baton-limits` under the pool's prefix
//! `out.<pool>.` (the only keys a worker of the pool may write); the pure rules live in
//! [`baton_core::routing::shaping`]. While NATS is slow or unreachable each limit falls back
//! to the worker's local share (`--limit-fallback-divisor`, [`Shaper::new`]); the replies of
//! mail held back are the catalogue's (`baton_smtp::catalogue::pool_connections_full`, …).
//!
//! A message held back by shaping is deferred **without counting an attempt** (`process`
//! re-publishes it with the same attempt number, see
//! [`baton_core::routing::shaping::uncounted_retry`]); nothing bounces because of shaping,
//! though a message still expires at the pool's maximum age.
//!
//! Key namespaces (each followed by `baton_limits`' own layout, scope values hashed):
//!
//! | what | namespace |
//! |---|---|
//! | connections per site | `out.<pool>.conn` |
//! | messages per minute per site | `out.<pool>.rate` |
//! | warm-up budget per identity | `out.<pool>.warmup` |
//! | back-off mark per site | `out.<pool>.backoff` |

use std::sync::Arc;
use std::time::Duration;

use baton_core::outcome::Reply;
use baton_core::routing::shaping::{
    ShapingReason, SiteLimits, site_of_host, smarthost_site, until_next_utc_day, utc_day,
};
use baton_core::routing::{BackoffPolicy, CongestionPolicy, ThrottleStreaks, pick_weighted};
use baton_limits::marks::Marks;
use baton_limits::{BudgetKey, Kv, Options, Quota, SharedCounter, Take, Want};
use baton_smtp::catalogue;
use baton_smtp_client::Connection;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::deliver::{Capped, Key};
use crate::leases::{Acquired, Lease};
use crate::plan::{EgressIdentity, PoolPlan};
use crate::route::Target;
use crate::{Ctx, WindowPlace, now_ms};

/// Longest pause between two tries of a full pool-wide connection cap.
pub(crate) const CONN_POLL_MAX: Duration = Duration::from_millis(500);

/// The shared limits of one worker's pool.
pub(crate) struct Shaper {
    /// `out.<pool>`.
    prefix: String,
    counter: SharedCounter,
    marks: Marks,
    pub(crate) conns: crate::leases::Leases,
    streaks: Mutex<ThrottleStreaks>,
}

/// A deferral by shaping: why, and when the message wants to come back (ms from now).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    pub(crate) reason: ShapingReason,
    pub(crate) want_ms: i64,
}

impl Shaper {
    /// Shaping for `pool` over the `baton-limits` bucket `kv`, held as `holder` (unique per
    /// process). `fallback_divisor`: the workers assumed to share the pool's limits while NATS
    /// is slow or unreachable; each then allows `ceil(limit / divisor)` messages per window and
    /// `max(1, cap / divisor)` connections per site on its own (0 is taken as 1).
    pub(crate) fn new(kv: Arc<dyn Kv>, pool: &str, holder: &str, fallback_divisor: u32) -> Shaper {
        let opts = Options {
            fallback_divisor: fallback_divisor.max(1),
            ..Options::default()
        };
        let prefix = baton_queue::limits_outbound_prefix(pool);
        Shaper {
            counter: SharedCounter::new(kv.clone(), opts.clone()),
            marks: Marks::new(kv.clone(), opts.clone()),
            conns: crate::leases::Leases::new(kv, opts, &prefix, holder),
            prefix,
            streaks: Mutex::new(ThrottleStreaks::default()),
        }
    }

    /// The budget of `scope` in `out.<pool>.<kind>`; `None` when the pool's name makes no
    /// valid key (then that limit is not applied; pool names are DNS labels, so never).
    pub(crate) fn key(&self, kind: &str, scope: &str) -> Option<BudgetKey> {
        match BudgetKey::new(&format!("{}.{kind}", self.prefix), scope) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "outbound limit not applied");
                None
            }
        }
    }

    /// If `site` is held off after a throttling reply: until when.
    pub(crate) async fn held_off(&self, site: &str, now_ms: i64) -> Option<i64> {
        let key = self.key("backoff", site)?;
        self.marks
            .held_off(&key, now_ms)
            .await
            .filter(|until| *until > now_ms)
    }

    /// `site` throttled us: hold it off across the pool for the next back-off of its streak.
    /// Returns the back-off (ms) and whether the mark reached the KV.
    pub(crate) async fn throttled(
        &self,
        site: &str,
        policy: BackoffPolicy,
        now_ms: i64,
    ) -> (i64, bool) {
        let until = self
            .streaks
            .lock()
            .throttled(site, now_ms, &policy, rand::random::<u64>());
        let delay = until.saturating_sub(now_ms);
        let Some(key) = self.key("backoff", site) else {
            return (delay, true);
        };
        let shared = self.marks.hold_off(&key, until, now_ms).await;
        (delay, shared)
    }

    /// `site` accepted mail: its throttling streak ends.
    pub(crate) fn succeeded(&self, site: &str) {
        self.streaks.lock().succeeded(site);
    }

    /// One message to `scope` this minute, at most `per_minute` across the pool (0: no limit).
    pub(crate) async fn take_rate(&self, scope: &str, per_minute: u32, now_ms: i64) -> Take {
        self.take(
            "rate",
            scope,
            Quota::per_minute(u64::from(per_minute)),
            now_ms,
        )
        .await
    }

    /// One message of an egress identity's warm-up budget for today.
    pub(crate) async fn take_warmup(&self, identity: &str, budget: u32, now_ms: i64) -> Take {
        self.take(
            "warmup",
            identity,
            Quota::per_day(u64::from(budget)),
            now_ms,
        )
        .await
    }

    async fn take(&self, kind: &str, scope: &str, quota: Quota, now_ms: i64) -> Take {
        let Some(key) = self.key(kind, scope) else {
            return Take::Granted { fallback: false };
        };
        self.counter.take(&[Want { key, quota }], now_ms).await
    }
}

/// The site of a delivery to `targets` (the first one: where the transaction goes first): the
/// smarthost's `host:port`, or the registrable domain of the MX host.
pub(crate) fn site(pool: &PoolPlan, targets: &[Target]) -> String {
    let Some(t) = targets.first() else {
        return String::new();
    };
    if pool.is_smarthost() {
        smarthost_site(&t.host, t.addr.port())
    } else {
        site_of_host(&t.host)
    }
}

/// The reply recorded for a recipient held back by shaping: one of the catalogue's
/// `451 4.4.5` replies (never a throttling reply itself).
pub(crate) fn reply(reason: ShapingReason, site: &str, want_ms: i64) -> Reply {
    let secs = want_ms.max(0) / 1000;
    match reason {
        ShapingReason::Connections => catalogue::pool_connections_full(site, secs),
        ShapingReason::Rate => catalogue::pool_rate_spent(site, secs),
        ShapingReason::Warmup => catalogue::warmup_spent(secs),
        ShapingReason::Backoff => catalogue::site_backing_off(site, secs),
    }
}

/// A capped site's lease for one delivery (with the idle connection it came with, if any).
pub(crate) type CappedLease = Capped<Connection, Lease>;

/// What the shared limits said about one delivery.
pub(crate) enum Admitted {
    /// Connect: with this pool-wide lease (held for the connection's life, kept with it while
    /// it is idle) and identity.
    Go {
        /// The site's connection lease (`None`: no pool-wide cap).
        lease: Option<CappedLease>,
        /// The egress identity to speak with (`None`: the worker's defaults).
        egress: Option<EgressIdentity>,
    },
    /// Held back: defer without counting an attempt.
    Held(Held),
    /// The worker is shutting down.
    ShutDown,
}

/// Marks a message as waiting (its window place given back) once, until dropped.
struct Waiting<'a> {
    ctx: &'a Ctx,
    place: &'a WindowPlace,
    started: bool,
}

impl Waiting<'_> {
    fn begin(&mut self) {
        if !self.started {
            self.started = true;
            self.ctx.begin_wait(self.place);
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.started {
            self.ctx.end_wait();
        }
    }
}

fn count_wait(ctx: &Ctx, pool: &PoolPlan, reason: ShapingReason) {
    ctx.metrics
        .destination_waits
        .with_label_values(&[&pool.name, reason.as_str()])
        .inc();
}

/// Sleep `d`, or `false` when the worker shuts down first.
async fn pause(ctx: &Ctx, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = ctx.release.cancelled() => false,
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The shared limits of one delivery to `limits.scope`, in order: a pool-wide connection
/// lease (an idle connection of this worker to the scope, which holds one, first), one unit of
/// the site's messages per minute, an egress identity with warm-up budget left (the idle
/// connection's first). A full cap or a spent minute is waited for (the message's window
/// place given back) as long as `congestion` allows, like a busy per-worker slot; beyond
/// that, and when every identity spent its day's budget, the delivery is held back (a claimed
/// idle connection goes back to the cache). `first_retry_ms`: when a message held back by a
/// full connection cap wants to come back.
pub(crate) async fn admit(
    ctx: &Ctx,
    pool: &PoolPlan,
    limits: &SiteLimits,
    place: &WindowPlace,
    congestion: CongestionPolicy,
    first_retry_ms: i64,
) -> Admitted {
    let policy = if ctx.crowded() {
        congestion.crowded()
    } else {
        congestion
    };
    let deadline = Instant::now() + policy.max_wait();
    let mut waiting = Waiting {
        ctx,
        place,
        started: false,
    };
    let mut lease = None;
    if limits.max_connections > 0 {
        let mut counted = false;
        loop {
            if let Some(idle) = ctx.conns.claim_leased(&limits.scope) {
                lease = Some(Capped::Idle(Box::new(idle)));
                break;
            }
            let cap = limits.max_connections;
            match ctx
                .shaper
                .conns
                .try_acquire(&limits.scope, cap, now_ms())
                .await
            {
                Acquired::Granted { lease: l, fallback } => {
                    if fallback {
                        ctx.count_limit_fallback("connections");
                    }
                    lease = l.map(|lease| Capped::Fresh {
                        scope: limits.scope.clone(),
                        lease,
                    });
                    break;
                }
                Acquired::Full => {
                    if !counted {
                        counted = true;
                        count_wait(ctx, pool, ShapingReason::Connections);
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Admitted::Held(Held {
                            reason: ShapingReason::Connections,
                            want_ms: first_retry_ms,
                        });
                    }
                    waiting.begin();
                    let jitter = Duration::from_millis(rand::random::<u64>() % 250);
                    let nap = (CONN_POLL_MAX / 2 + jitter).min(left);
                    if !pause(ctx, nap).await {
                        return Admitted::ShutDown;
                    }
                }
            }
        }
    }
    if limits.messages_per_minute > 0 {
        let mut counted = false;
        loop {
            let take = ctx
                .shaper
                .take_rate(&limits.scope, limits.messages_per_minute, now_ms())
                .await;
            if take.fallback() {
                ctx.count_limit_fallback("rate");
            }
            let Take::Exhausted { retry_after_ms, .. } = take else {
                break;
            };
            if !counted {
                counted = true;
                count_wait(ctx, pool, ShapingReason::Rate);
            }
            let left = ms(deadline.saturating_duration_since(Instant::now()));
            if retry_after_ms > left {
                give_back(ctx, lease);
                return Admitted::Held(Held {
                    reason: ShapingReason::Rate,
                    want_ms: retry_after_ms,
                });
            }
            waiting.begin();
            let nap =
                u64::try_from(retry_after_ms.max(1)).unwrap_or(0) + rand::random::<u64>() % 250;
            if !pause(ctx, Duration::from_millis(nap)).await {
                give_back(ctx, lease);
                return Admitted::ShutDown;
            }
        }
    }
    drop(waiting);
    let prefer = match &lease {
        Some(Capped::Idle(idle)) => Some(&idle.key),
        _ => None,
    };
    match choose_egress(ctx, pool, prefer).await {
        Ok(egress) => Admitted::Go { lease, egress },
        Err(want_ms) => {
            give_back(ctx, lease);
            count_wait(ctx, pool, ShapingReason::Warmup);
            Admitted::Held(Held {
                reason: ShapingReason::Warmup,
                want_ms,
            })
        }
    }
}

/// A delivery held back after it claimed an idle connection: the connection goes back to
/// the cache unused, with its lease.
pub(crate) fn give_back(ctx: &Ctx, lease: Option<CappedLease>) {
    if let Some(Capped::Idle(idle)) = lease {
        ctx.conns.restore(*idle);
    }
}

/// The order in which to try the pool's egress identities: `prefer` (the identity of an idle
/// connection to reuse) if given, else one picked by weight; then the others by descending
/// weight.
pub(crate) fn egress_order(egress: &[EgressIdentity], r: u64, prefer: Option<usize>) -> Vec<usize> {
    let Some(first) = prefer
        .filter(|&i| i < egress.len())
        .or_else(|| pick_weighted(egress, |e| e.weight, r))
    else {
        return Vec::new();
    };
    let mut rest: Vec<usize> = (0..egress.len()).filter(|&i| i != first).collect();
    rest.sort_by_key(|&i| std::cmp::Reverse(egress.get(i).map_or(0, |e| e.weight)));
    let mut order = vec![first];
    order.extend(rest);
    order
}

/// An egress identity with budget left today: the weighted pick (or the identity of the idle
/// connection `prefer` keys) if it has, else the next one that has (an identity without
/// warm-up, or past its schedule, always has). `Err`: every identity spent its day's budget;
/// the ms until the next UTC day.
async fn choose_egress(
    ctx: &Ctx,
    pool: &PoolPlan,
    prefer: Option<&Key>,
) -> Result<Option<EgressIdentity>, i64> {
    if pool.egress.is_empty() {
        return Ok(None);
    }
    let now = now_ms();
    let day = utc_day(now);
    let default_name = pool.default_name(&ctx.client.ehlo_name);
    let prefer = prefer.and_then(|key| {
        pool.egress
            .iter()
            .position(|e| speaks_as(e, default_name, &key.2, &key.3))
    });
    for i in egress_order(&pool.egress, rand::random::<u64>(), prefer) {
        let Some(e) = pool.egress.get(i) else {
            continue;
        };
        match e.warmup.as_ref().and_then(|w| w.budget(day)) {
            None => return Ok(Some(e.clone())),
            Some(0) => continue,
            Some(budget) => {
                let take = ctx.shaper.take_warmup(&e.budget_scope(), budget, now).await;
                if take.fallback() {
                    ctx.count_limit_fallback("warmup");
                }
                if take.granted() {
                    return Ok(Some(e.clone()));
                }
            }
        }
    }
    Err(until_next_utc_day(now))
}

/// Whether a connection opened with identity `e` announces `ehlo` from `source` (the parts of
/// a connection's [`Key`]; `default_name` when `e` names no EHLO name, no source address as
/// an empty string).
fn speaks_as(e: &EgressIdentity, default_name: &str, ehlo: &str, source: &str) -> bool {
    e.ehlo_name.as_deref().unwrap_or(default_name) == ehlo
        && e.source_address.map(|a| a.to_string()).unwrap_or_default() == source
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use baton_limits::MemoryKv;

    #[tokio::test]
    async fn keys_stay_under_the_pools_prefix() {
        let kv = Arc::new(MemoryKv::new());
        let s = Shaper::new(kv.clone(), "bulk", "w1", 1);
        let now = 1_796_415_300_000;
        assert!(s.take_rate("google.com", 2, now).await.granted());
        assert!(s.take_rate("google.com", 2, now).await.granted());
        assert!(!s.take_rate("google.com", 2, now).await.granted());
        assert!(s.take_rate("outlook.com", 2, now).await.granted());
        assert!(s.take_warmup("192.0.2.1|", 1, now).await.granted());
        assert!(!s.take_warmup("192.0.2.1|", 1, now).await.granted());
        assert_eq!(s.held_off("google.com", now).await, None);
        let (delay, shared) = s
            .throttled("google.com", BackoffPolicy::default(), now)
            .await;
        assert!(shared && (48_000..=72_000).contains(&delay), "{delay}");
        assert_eq!(s.held_off("google.com", now).await, Some(now + delay));
        // The same burst keeps the back-off; the next throttle after it doubles; a success
        // resets the streak.
        let policy = BackoffPolicy::default();
        let (same, _) = s.throttled("google.com", policy, now + 1).await;
        assert_eq!(same, delay - 1);
        let later = now + delay;
        let (second, _) = s.throttled("google.com", policy, later).await;
        assert!((96_000..=144_000).contains(&second), "{second}");
        s.succeeded("google.com");
        let (third, _) = s.throttled("google.com", policy, later + second).await;
        assert!(third <= 72_000);
        let keys = kv.keys();
        assert!(!keys.is_empty());
        for k in keys {
            assert!(k.starts_with("out.bulk."), "{k}");
            assert!(!k.contains("google"), "{k}");
        }
    }

    /// NATS unreachable: what one worker allows alone, for a pool cap of 4 connections and 10
    /// messages per minute to a site, with `divisor` workers assumed.
    async fn fallback_allowance(divisor: u32) -> (usize, usize) {
        let kv = Arc::new(MemoryKv::new());
        kv.set_mode(baton_limits::MemoryMode::Fail);
        let s = Shaper::new(kv, "bulk", "w1", divisor);
        let now = crate::now_ms();
        let mut leases = Vec::new();
        for _ in 0..10 {
            match s.conns.try_acquire("google.com", 4, now).await {
                Acquired::Granted { lease, fallback } => {
                    assert!(fallback, "decided without NATS");
                    leases.push(lease);
                }
                Acquired::Full => break,
            }
        }
        let mut messages = 0;
        for _ in 0..20 {
            let take = s.take_rate("google.com", 10, now).await;
            assert!(take.fallback(), "decided without NATS");
            if !take.granted() {
                break;
            }
            messages += 1;
        }
        (leases.len(), messages)
    }

    #[tokio::test]
    async fn the_fallback_divides_the_pools_limits_among_the_workers() {
        // --limit-fallback-divisor 2: two workers together stay within the pool's limits.
        assert_eq!(fallback_allowance(2).await, (2, 5));
        assert_eq!(fallback_allowance(3).await, (1, 4));
        // 1 (and 0, taken as 1): one worker may use the whole pool's limits.
        assert_eq!(fallback_allowance(1).await, (4, 10));
        assert_eq!(fallback_allowance(0).await, (4, 10));
    }

    #[test]
    fn egress_order_tries_every_identity_once_weighted_first() {
        let id = |weight: u32| EgressIdentity {
            weight,
            ehlo_name: None,
            source_address: None,
            warmup: None,
        };
        let ids = [id(1), id(5), id(0), id(3)];
        for r in 0..9u64 {
            let order = egress_order(&ids, r, None);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3], "{order:?}");
            // After the weighted pick, descending weight; weight 0 never first.
            assert_ne!(order[0], 2);
            let rest: Vec<u32> = order[1..].iter().map(|&i| ids[i].weight).collect();
            assert!(rest.windows(2).all(|w| w[0] >= w[1]), "{order:?}");
        }
        // r = 0 lands in the first weight band, r = 1 in the second.
        assert_eq!(egress_order(&ids, 0, None), vec![0, 1, 3, 2]);
        assert_eq!(egress_order(&ids, 1, None), vec![1, 3, 0, 2]);
        // The identity of an idle connection to reuse comes first, even of weight 0.
        assert_eq!(egress_order(&ids, 0, Some(2)), vec![2, 1, 3, 0]);
        assert_eq!(egress_order(&ids, 0, Some(9)), vec![0, 1, 3, 2]);
        assert!(egress_order(&[], 3, None).is_empty());
        assert!(egress_order(&[], 3, Some(0)).is_empty());
    }

    #[test]
    fn shaping_replies_are_not_throttling_replies() {
        for r in ShapingReason::ALL {
            let reply = reply(r, "google.com", 61_000);
            assert_eq!(reply.code, 451);
            assert!(
                !baton_core::routing::shaping::is_throttle(&reply),
                "{reply}"
            );
        }
    }
}
