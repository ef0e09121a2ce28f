//! Outbound shaping shared by every worker of a pool (issue 18), the worker's half: a
//! destination's *site*, the pool-wide connection cap per site (a leased `SharedSemaphore`
//! permit held for the connection's life), messages per minute per site and warm-up budgets
//! per egress identity (`SharedCounter` windows), and the back-off after a throttling reply
//! (`Marks`). Everything is counted in the KV bucket `baton-limits` under the pool's prefix
//! `out.<pool>.` (the only keys a worker of the pool may write); the pure rules live in
//! [`baton_core::routing::shaping`].
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

use baton_core::outcome::{EnhancedStatus, Reply};
use baton_core::routing::shaping::{
    ShapingReason, SiteLimits, site_of_host, smarthost_site, until_next_utc_day, utc_day,
};
use baton_core::routing::{BackoffPolicy, CongestionPolicy, ThrottleStreaks, pick_weighted};
use baton_limits::marks::Marks;
use baton_limits::{BudgetKey, Kv, Options, Quota, SharedCounter, Take, Want};
use parking_lot::Mutex;
use tokio::time::Instant;

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
    /// Shaping for `pool` over the `baton-limits` bucket `kv`.
    pub(crate) fn new(kv: Arc<dyn Kv>, pool: &str, holder: &str) -> Shaper {
        let opts = Options::default();
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

/// The reply recorded for a recipient held back by shaping (`451 4.4.5`, never a throttling
/// reply itself).
pub(crate) fn reply(reason: ShapingReason, site: &str, want_ms: i64) -> Reply {
    let secs = want_ms.max(0) / 1000;
    let text = match reason {
        ShapingReason::Connections => {
            format!("pool-wide connection limit for {site} reached; retry in {secs} s")
        }
        ShapingReason::Rate => {
            format!("pool-wide messages-per-minute limit for {site} reached; retry in {secs} s")
        }
        ShapingReason::Warmup => {
            format!("every egress identity spent its warm-up budget for today; retry in {secs} s")
        }
        ShapingReason::Backoff => {
            format!("{site} is throttling this pool; backing off for {secs} s")
        }
    };
    Reply::with_status(451, EnhancedStatus::new(4, 4, 5), text)
}

/// What the shared limits said about one delivery.
pub(crate) enum Admitted {
    /// Connect: with this pool-wide lease (held for the connection's life) and identity.
    Go {
        /// The site's connection lease (`None`: no pool-wide cap).
        lease: Option<Lease>,
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
/// lease, one unit of the site's messages per minute, an egress identity with warm-up budget
/// left. A full cap or a spent minute is waited for (the message's window place given back)
/// as long as `congestion` allows, like a busy per-worker slot; beyond that, and when every
/// identity spent its day's budget, the delivery is held back. `first_retry_ms`: when a
/// message held back by a full connection cap wants to come back.
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
                    lease = l;
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
                return Admitted::Held(Held {
                    reason: ShapingReason::Rate,
                    want_ms: retry_after_ms,
                });
            }
            waiting.begin();
            let nap =
                u64::try_from(retry_after_ms.max(1)).unwrap_or(0) + rand::random::<u64>() % 250;
            if !pause(ctx, Duration::from_millis(nap)).await {
                return Admitted::ShutDown;
            }
        }
    }
    drop(waiting);
    match choose_egress(ctx, pool).await {
        Ok(egress) => Admitted::Go { lease, egress },
        Err(want_ms) => {
            count_wait(ctx, pool, ShapingReason::Warmup);
            Admitted::Held(Held {
                reason: ShapingReason::Warmup,
                want_ms,
            })
        }
    }
}

/// The order in which to try the pool's egress identities: one picked by weight, then the
/// others by descending weight.
pub(crate) fn egress_order(egress: &[EgressIdentity], r: u64) -> Vec<usize> {
    let Some(first) = pick_weighted(egress, |e| e.weight, r) else {
        return Vec::new();
    };
    let mut rest: Vec<usize> = (0..egress.len()).filter(|&i| i != first).collect();
    rest.sort_by_key(|&i| std::cmp::Reverse(egress.get(i).map_or(0, |e| e.weight)));
    let mut order = vec![first];
    order.extend(rest);
    order
}

/// An egress identity with budget left today: the weighted pick if it has, else the next one
/// that has (an identity without warm-up, or past its schedule, always has). `Err`: every
/// identity spent its day's budget; the ms until the next UTC day.
async fn choose_egress(ctx: &Ctx, pool: &PoolPlan) -> Result<Option<EgressIdentity>, i64> {
    if pool.egress.is_empty() {
        return Ok(None);
    }
    let now = now_ms();
    let day = utc_day(now);
    for i in egress_order(&pool.egress, rand::random::<u64>()) {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use baton_limits::MemoryKv;

    #[tokio::test]
    async fn keys_stay_under_the_pools_prefix() {
        let kv = Arc::new(MemoryKv::new());
        let s = Shaper::new(kv.clone(), "bulk", "w1");
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
            let order = egress_order(&ids, r);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, vec![0, 1, 2, 3], "{order:?}");
            // After the weighted pick, descending weight; weight 0 never first.
            assert_ne!(order[0], 2);
            let rest: Vec<u32> = order[1..].iter().map(|&i| ids[i].weight).collect();
            assert!(rest.windows(2).all(|w| w[0] >= w[1]), "{order:?}");
        }
        // r = 0 lands in the first weight band, r = 1 in the second.
        assert_eq!(egress_order(&ids, 0), vec![0, 1, 3, 2]);
        assert_eq!(egress_order(&ids, 1), vec![1, 3, 0, 2]);
        assert!(egress_order(&[], 3).is_empty());
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
