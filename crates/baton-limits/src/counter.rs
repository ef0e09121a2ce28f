//! [`SharedCounter`]: windowed budgets ("at most 1 000 messages per hour for this domain")
//! shared by every process, reserved in chunks.
//!
//! # How it counts
//!
//! The KV value of a budget's window key (`<namespace>.<m|h|d><index>.<hash>`, see
//! [`crate::window`]) is the total number of units **reserved** by all processes in that
//! window, in decimal ASCII. A process hands out units from its local allowance; when that is
//! empty it reserves `grant = min(chunk, limit − reserved)` more with a compare-and-set
//! (`create` if the key is absent, else `update` at the revision it read; on a conflict it
//! reads again, at most [`Options::cas_attempts`] times). At most one reservation per key is in
//! flight per process. The chunk is [`chunk_size`]: `clamp(limit / 64, 1, 1000)` — so budgets
//! up to 127 reserve one unit at a time (exact), larger ones reserve 1/64 of the limit at a
//! time, never more than 1 000.
//!
//! # Guarantees
//!
//! * **Never more than the limit per window while NATS answers.** Reserved totals only grow,
//!   each through a compare-and-set that keeps them ≤ limit, and a unit is only handed out from
//!   a reservation.
//! * **Undershoot is bounded.** Units reserved but unused when the window ends are lost: the
//!   cluster may refuse while up to `processes × (chunk − 1)` units of the window are unused
//!   (≤ 1/64 of the limit per process). A reservation whose reply timed out may have been
//!   applied: its units are lost the same way. A `take` dropped before it finishes gives its
//!   units back locally.
//! * **Exhaustion is remembered.** Once the KV says a window is exhausted the process refuses
//!   that window locally until it ends, without asking again.
//! * **Contention.** If [`Options::cas_attempts`] compare-and-sets in a row lose, the unit is
//!   refused with `retry_after_ms` ≤ 1 s rather than risk the limit (`fallback: false`).
//! * Limit 0 is unlimited and never consults the KV.
//!
//! # Fallback
//!
//! On a KV timeout or error the counter enters its cool-down ([`crate::Options`]): while it
//! lasts, units already reserved locally are still handed out, and beyond them each process
//! allows at most `ceil(limit / fallback_divisor)` units per window **in total** (units it took
//! from the shared budget in the window count), a window the KV said was exhausted stays
//! refused. Results decided by the fallback say `fallback: true`. With `fallback_divisor` set
//! to the number of processes, the cluster stays near the limit if load is spread evenly; units
//! granted in fallback are not written to the KV afterwards.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::kv::{Kv, KvError, timed};
use crate::table::Table;
use crate::window::{BudgetKey, Quota, window_end, window_index};
use crate::{Health, Options, fallback_limit};

/// Largest chunk reserved at once.
pub const MAX_CHUNK: u64 = 1_000;
/// A chunk is at most `limit / CHUNK_DIVISOR`.
pub const CHUNK_DIVISOR: u64 = 64;
/// The longest `retry_after_ms` of a refusal caused by contention.
pub const CONTENTION_RETRY_MS: i64 = 1_000;

/// Units reserved at once for a budget of `limit` (> 0): `clamp(limit / 64, 1, 1000)`.
pub const fn chunk_size(limit: u64) -> u64 {
    let c = limit / CHUNK_DIVISOR;
    if c < 1 {
        1
    } else if c > MAX_CHUNK {
        MAX_CHUNK
    } else {
        c
    }
}

/// One budget a [`SharedCounter::take`] takes a unit from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// What is counted.
    pub key: BudgetKey,
    /// Per which window, how many.
    pub quota: Quota,
}

/// The answer of [`SharedCounter::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// One unit was taken from every want.
    Granted {
        /// The local fallback decided at least one want (NATS slow or unreachable).
        fallback: bool,
    },
    /// Nothing was taken: want `index` is exhausted.
    Exhausted {
        /// The index in `wants` of the exhausted budget.
        index: usize,
        /// Milliseconds until it may succeed (the end of the window, or ≤ 1 s after
        /// contention).
        retry_after_ms: i64,
        /// The local fallback decided at least one want.
        fallback: bool,
    },
}

impl Take {
    /// Whether the unit was granted.
    pub fn granted(&self) -> bool {
        matches!(self, Take::Granted { .. })
    }

    /// Whether the fallback decided (part of) the answer.
    pub fn fallback(&self) -> bool {
        match self {
            Take::Granted { fallback } | Take::Exhausted { fallback, .. } => *fallback,
        }
    }
}

/// What one reservation round found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reserved {
    /// `grant` units are ours; the key now holds `total` at `revision`.
    Granted {
        grant: u64,
        total: u64,
        revision: u64,
    },
    /// The window's budget is fully reserved.
    Exhausted,
    /// Every compare-and-set lost.
    Contended,
    /// The KV failed or timed out.
    Failed(KvError),
}

/// Local state of one budget window.
#[derive(Debug)]
struct Slot {
    /// Reserved here, not yet handed out.
    allowance: u64,
    /// Handed out by this process in this window (shared and fallback units).
    taken: u64,
    /// The reserved total and revision last seen.
    known: Option<(u64, u64)>,
    /// The KV said the window is exhausted.
    exhausted: bool,
    /// One reservation in flight per key.
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            allowance: 0,
            taken: 0,
            known: None,
            exhausted: false,
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// How one unit was taken (to give it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Shared,
    Fallback,
}

/// One want refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused {
    retry_after_ms: i64,
    fallback: bool,
}

/// See the module docs.
pub struct SharedCounter {
    kv: Arc<dyn Kv>,
    opts: Options,
    health: Health,
    slots: Mutex<Table<Slot>>,
}

impl std::fmt::Debug for SharedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCounter")
            .field("opts", &self.opts)
            .field("degraded", &self.health.degraded())
            .finish_non_exhaustive()
    }
}

impl SharedCounter {
    /// A counter over `kv` (the `baton-limits` bucket).
    pub fn new(kv: Arc<dyn Kv>, opts: Options) -> SharedCounter {
        SharedCounter {
            kv,
            health: Health::new(opts.cooldown, "counter"),
            slots: Mutex::new(Table::new(opts.max_keys)),
            opts,
        }
    }

    /// Whether the counter is in its fallback cool-down.
    pub fn in_fallback(&self) -> bool {
        self.health.degraded()
    }

    /// Keys of local state held (bounded by [`Options::max_keys`]).
    pub fn tracked_keys(&self) -> usize {
        self.slots.lock().len()
    }

    /// Take one unit from every want, all or nothing: if one is exhausted, the units already
    /// taken for earlier wants are given back (locally) and nothing is taken. Wants with limit
    /// 0 are skipped. Never waits longer than a few KV timeouts.
    pub async fn take(&self, wants: &[Want], now_ms: i64) -> Take {
        let mut held = GiveBack {
            counter: self,
            units: Vec::with_capacity(wants.len()),
            now_ms,
        };
        let mut fallback = false;
        for (index, want) in wants.iter().enumerate() {
            if want.quota.limit == 0 {
                continue;
            }
            let key = want
                .key
                .window_key(want.quota.period, window_index(want.quota.period, now_ms));
            match self.take_one(&key, want.quota, now_ms).await {
                Ok(unit) => {
                    fallback |= unit == Unit::Fallback;
                    held.units.push((key, unit));
                }
                Err(r) => {
                    // `held` gives the earlier units back when it drops.
                    return Take::Exhausted {
                        index,
                        retry_after_ms: r.retry_after_ms,
                        fallback: fallback || r.fallback,
                    };
                }
            }
        }
        held.units.clear();
        Take::Granted { fallback }
    }

    async fn take_one(&self, key: &str, quota: Quota, now_ms: i64) -> Result<Unit, Refused> {
        let end = window_end(quota.period, window_index(quota.period, now_ms));
        let until_end = end.saturating_sub(now_ms).max(1);
        let exhausted = Refused {
            retry_after_ms: until_end,
            fallback: false,
        };
        let fb_limit = fallback_limit(quota.limit, self.opts.fallback_divisor);
        loop {
            let gate = {
                let mut slots = self.slots.lock();
                let slot = slots.entry(key, end, now_ms, Slot::new);
                if let Some(r) = local_decision(slot, self.health.degraded(), fb_limit, until_end) {
                    return r;
                }
                slot.gate.clone()
            };
            let _reserving = gate.lock().await;
            let known = {
                let mut slots = self.slots.lock();
                let slot = slots.entry(key, end, now_ms, Slot::new);
                if slot.exhausted || slot.allowance > 0 || self.health.degraded() {
                    // Another task reserved (or failed) meanwhile: decide locally.
                    continue;
                }
                slot.known
            };
            let reserved = reserve(self.kv.as_ref(), &self.opts, key, quota.limit, known).await;
            let mut slots = self.slots.lock();
            let slot = slots.entry(key, end, now_ms, Slot::new);
            match reserved {
                Reserved::Granted {
                    grant,
                    total,
                    revision,
                } => {
                    slot.known = Some((total, revision));
                    slot.allowance += grant.saturating_sub(1);
                    slot.taken += 1;
                    return Ok(Unit::Shared);
                }
                Reserved::Exhausted => {
                    slot.exhausted = true;
                    slot.known = None;
                    return Err(exhausted);
                }
                Reserved::Contended => {
                    slot.known = None;
                    return Err(Refused {
                        retry_after_ms: until_end.min(CONTENTION_RETRY_MS),
                        fallback: false,
                    });
                }
                Reserved::Failed(e) => {
                    slot.known = None;
                    self.health.trip(&e);
                    return fallback_take(slot, fb_limit, until_end);
                }
            }
        }
    }

    fn give_back(&self, units: &[(String, Unit)], now_ms: i64) {
        let mut slots = self.slots.lock();
        for (key, unit) in units {
            if let Some(slot) = slots.get_mut(key, now_ms) {
                slot.taken = slot.taken.saturating_sub(1);
                if *unit == Unit::Shared {
                    slot.allowance += 1;
                }
            }
        }
    }
}

/// Decide without the KV if the slot allows it: a remembered exhaustion, local allowance, or
/// the fallback during a cool-down. `None`: a reservation is needed.
fn local_decision(
    slot: &mut Slot,
    degraded: bool,
    fb_limit: u64,
    until_end: i64,
) -> Option<Result<Unit, Refused>> {
    if slot.exhausted {
        return Some(Err(Refused {
            retry_after_ms: until_end,
            fallback: false,
        }));
    }
    if slot.allowance > 0 {
        slot.allowance -= 1;
        slot.taken += 1;
        return Some(Ok(Unit::Shared));
    }
    if degraded {
        return Some(fallback_take(slot, fb_limit, until_end));
    }
    None
}

/// The fallback: at most `fb_limit` units handed out by this process in the window.
fn fallback_take(slot: &mut Slot, fb_limit: u64, until_end: i64) -> Result<Unit, Refused> {
    if slot.taken < fb_limit {
        slot.taken += 1;
        Ok(Unit::Fallback)
    } else {
        Err(Refused {
            retry_after_ms: until_end,
            fallback: true,
        })
    }
}

/// Reserve a chunk of `key`'s window budget of `limit`, starting from the `known` total and
/// revision if any (a stale one costs one conflict).
pub(crate) async fn reserve(
    kv: &dyn Kv,
    opts: &Options,
    key: &str,
    limit: u64,
    known: Option<(u64, u64)>,
) -> Reserved {
    let chunk = chunk_size(limit);
    let mut current = known;
    for _ in 0..opts.cas_attempts.max(1) {
        let (total, revision) = match current.take() {
            Some(k) => k,
            None => match timed(opts.timeout, kv.entry(key)).await {
                Ok(None) => (0, 0),
                Ok(Some((value, revision))) => match parse_total(&value) {
                    Some(total) => (total, revision),
                    None => {
                        return Reserved::Failed(KvError::Other(format!(
                            "key {key}: not a decimal count"
                        )));
                    }
                },
                Err(e) => return Reserved::Failed(e),
            },
        };
        if total >= limit {
            return Reserved::Exhausted;
        }
        let grant = chunk.min(limit - total);
        let new_total = total + grant;
        let value = Bytes::from(new_total.to_string());
        let written = if revision == 0 {
            timed(opts.timeout, kv.create(key, value)).await
        } else {
            timed(opts.timeout, kv.update(key, value, revision)).await
        };
        match written {
            Ok(revision) => {
                return Reserved::Granted {
                    grant,
                    total: new_total,
                    revision,
                };
            }
            Err(KvError::Conflict) => continue,
            Err(e) => return Reserved::Failed(e),
        }
    }
    Reserved::Contended
}

/// A decimal count (surrounding whitespace allowed).
pub(crate) fn parse_total(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Gives units back when a `take` is refused or dropped before it finishes.
struct GiveBack<'a> {
    counter: &'a SharedCounter,
    units: Vec<(String, Unit)>,
    now_ms: i64,
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        if !self.units.is_empty() {
            self.counter.give_back(&self.units, self.now_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::kv::{MemoryKv, MemoryMode};
    use crate::window::Period;

    const T0: i64 = 1_796_415_300_000; // 2026-12-04T20:15:00Z, the start of a minute

    fn want(ns: &str, scope: &str, quota: Quota) -> Want {
        Want {
            key: BudgetKey::new(ns, scope).unwrap(),
            quota,
        }
    }

    fn counter(kv: &Arc<MemoryKv>, opts: Options) -> SharedCounter {
        SharedCounter::new(kv.clone() as Arc<dyn Kv>, opts)
    }

    fn stored(kv: &MemoryKv, w: &Want, now: i64) -> Option<u64> {
        let key = w
            .key
            .window_key(w.quota.period, window_index(w.quota.period, now));
        kv.value(&key).and_then(|v| parse_total(&v))
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(1), 1);
        assert_eq!(chunk_size(50), 1);
        assert_eq!(chunk_size(127), 1);
        assert_eq!(chunk_size(128), 2);
        assert_eq!(chunk_size(6_400), 100);
        assert_eq!(chunk_size(64_000), 1_000);
        assert_eq!(chunk_size(64_063), 1_000);
        assert_eq!(chunk_size(u64::MAX), MAX_CHUNK);
        for limit in 1..100_000u64 {
            let c = chunk_size(limit);
            assert!((1..=MAX_CHUNK).contains(&c));
            assert!(c <= limit);
            // Undershoot per process is at most 1/64 of the limit (or nothing when c = 1).
            assert!(c == 1 || c * CHUNK_DIVISOR <= limit);
        }
    }

    #[test]
    fn totals_parse() {
        assert_eq!(parse_total(b"42"), Some(42));
        assert_eq!(parse_total(b" 7\n"), Some(7));
        assert_eq!(parse_total(b"-1"), None);
        assert_eq!(parse_total(b"x"), None);
        assert_eq!(parse_total(&[0xff]), None);
    }

    #[tokio::test]
    async fn grants_exactly_the_limit_then_refuses_until_the_window_ends() {
        let kv = Arc::new(MemoryKv::new());
        let c = counter(&kv, Options::default());
        let w = [want("in.msgs", "example.com", Quota::per_minute(5))];
        for _ in 0..5 {
            assert_eq!(c.take(&w, T0 + 10).await, Take::Granted { fallback: false });
        }
        assert_eq!(
            c.take(&w, T0 + 10).await,
            Take::Exhausted {
                index: 0,
                retry_after_ms: 59_990,
                fallback: false
            }
        );
        assert_eq!(stored(&kv, &w[0], T0), Some(5));
        // Remembered: even a failing KV is not asked again in this window.
        kv.set_mode(MemoryMode::Fail);
        assert_eq!(
            c.take(&w, T0 + 20).await,
            Take::Exhausted {
                index: 0,
                retry_after_ms: 59_980,
                fallback: false
            }
        );
        assert!(!c.in_fallback());
        kv.set_mode(MemoryMode::Healthy);
        // The next window starts afresh.
        assert!(c.take(&w, T0 + 60_000).await.granted());
        assert_eq!(stored(&kv, &w[0], T0 + 60_000), Some(1));
    }

    #[tokio::test]
    async fn limit_zero_never_touches_the_kv() {
        let kv = Arc::new(MemoryKv::new());
        kv.set_mode(MemoryMode::Hang);
        let c = counter(&kv, Options::default());
        let w = [want("in.msgs", "x", Quota::per_hour(0))];
        for _ in 0..1_000 {
            assert_eq!(c.take(&w, T0).await, Take::Granted { fallback: false });
        }
        assert!(kv.keys().is_empty());
        assert_eq!(c.take(&[], T0).await, Take::Granted { fallback: false });
    }

    #[tokio::test]
    async fn reserves_in_chunks() {
        let kv = Arc::new(MemoryKv::new());
        let c = counter(&kv, Options::default());
        let w = [want("in.rcpts", "example.com", Quota::per_hour(6_400))];
        assert!(c.take(&w, T0).await.granted());
        assert_eq!(stored(&kv, &w[0], T0), Some(100));
        for _ in 0..99 {
            assert!(c.take(&w, T0).await.granted());
        }
        assert_eq!(stored(&kv, &w[0], T0), Some(100));
        assert!(c.take(&w, T0).await.granted());
        assert_eq!(stored(&kv, &w[0], T0), Some(200));
    }

    #[tokio::test]
    async fn the_last_chunk_is_cut_to_what_is_left() {
        let kv = Arc::new(MemoryKv::new());
        let w = [want("in.rcpts", "example.com", Quota::per_hour(6_400))];
        let key = w[0]
            .key
            .window_key(Period::Hour, window_index(Period::Hour, T0));
        kv.put(&key, Bytes::from_static(b"6370"));
        let c = counter(&kv, Options::default());
        for _ in 0..30 {
            assert!(c.take(&w, T0).await.granted());
        }
        assert_eq!(stored(&kv, &w[0], T0), Some(6_400));
        assert!(!c.take(&w, T0).await.granted());
    }

    #[tokio::test]
    async fn all_or_nothing_gives_earlier_units_back() {
        let kv = Arc::new(MemoryKv::new());
        let c = counter(&kv, Options::default());
        let domain = want("in.msgs.domain", "example.com", Quota::per_hour(10));
        let user = want("in.msgs.user", "app", Quota::per_minute(2));
        let both = [domain.clone(), user.clone()];
        assert!(c.take(&both, T0).await.granted());
        assert!(c.take(&both, T0).await.granted());
        // The user's minute budget is exhausted: the domain's unit is given back.
        match c.take(&both, T0).await {
            Take::Exhausted {
                index, fallback, ..
            } => {
                assert_eq!(index, 1);
                assert!(!fallback);
            }
            t => panic!("{t:?}"),
        }
        assert_eq!(stored(&kv, &domain, T0), Some(3));
        // The given-back unit is used first: 8 more domain units fit (10 - 2 taken).
        for i in 0..8 {
            assert!(
                c.take(std::slice::from_ref(&domain), T0).await.granted(),
                "{i}"
            );
        }
        assert_eq!(stored(&kv, &domain, T0), Some(10));
        assert!(!c.take(std::slice::from_ref(&domain), T0).await.granted());
    }

    #[tokio::test]
    async fn exhausted_reports_the_index_of_the_exhausted_want() {
        let kv = Arc::new(MemoryKv::new());
        let c = counter(&kv, Options::default());
        let a = want("in.a", "s", Quota::per_day(1));
        let b = want("in.b", "s", Quota::per_day(0));
        let d = want("in.d", "s", Quota::per_day(1));
        assert!(
            c.take(&[a.clone(), b.clone(), d.clone()], T0)
                .await
                .granted()
        );
        match c.take(&[b.clone(), d.clone(), a.clone()], T0).await {
            Take::Exhausted {
                index,
                retry_after_ms,
                ..
            } => {
                assert_eq!(index, 1);
                // The day ends at midnight UTC.
                assert_eq!(retry_after_ms, 1_796_428_800_000 - T0);
            }
            t => panic!("{t:?}"),
        }
    }

    #[tokio::test]
    async fn a_stale_cached_revision_costs_a_retry_not_a_wrong_count() {
        let kv = Arc::new(MemoryKv::new());
        let a = counter(&kv, Options::default());
        let b = counter(&kv, Options::default());
        let w = [want("in.msgs", "x", Quota::per_minute(4))];
        assert!(a.take(&w, T0).await.granted());
        assert!(b.take(&w, T0).await.granted());
        assert!(a.take(&w, T0).await.granted()); // a's cached revision is stale
        assert!(b.take(&w, T0).await.granted());
        assert!(!a.take(&w, T0).await.granted());
        assert!(!b.take(&w, T0).await.granted());
        assert_eq!(stored(&kv, &w[0], T0), Some(4));
    }

    /// Many processes (counters) and many tasks each, one budget: the sum granted never
    /// exceeds the limit, and undershoot stays within processes × chunk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_contention_never_exceeds_the_limit() {
        for (limit, processes, tasks) in [(50u64, 3usize, 8usize), (1_000, 4, 8), (6_400, 5, 6)] {
            let kv = Arc::new(MemoryKv::new());
            let granted = Arc::new(AtomicU64::new(0));
            let opts = Options {
                cas_attempts: 1_000,
                ..Options::default()
            };
            let w = Arc::new([want("in.msgs", "hot", Quota::per_hour(limit))]);
            let mut handles = Vec::new();
            for _ in 0..processes {
                let c = Arc::new(counter(&kv, opts.clone()));
                for _ in 0..tasks {
                    let (c, w, granted) = (c.clone(), w.clone(), granted.clone());
                    handles.push(tokio::spawn(async move {
                        loop {
                            match c.take(&w[..], T0).await {
                                Take::Granted { fallback } => {
                                    assert!(!fallback);
                                    granted.fetch_add(1, Ordering::SeqCst);
                                }
                                Take::Exhausted { fallback, .. } => {
                                    assert!(!fallback);
                                    break;
                                }
                            }
                        }
                    }));
                }
            }
            for h in handles {
                h.await.unwrap();
            }
            let total = granted.load(Ordering::SeqCst);
            let slack = processes as u64 * (chunk_size(limit) - 1);
            assert!(total <= limit, "{total} > {limit}");
            assert!(total + slack >= limit, "{total} + {slack} < {limit}");
            assert_eq!(stored(&kv, &w[0], T0), Some(limit));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_kv_falls_back_within_the_timeout_then_cools_down() {
        let kv = Arc::new(MemoryKv::new());
        kv.set_mode(MemoryMode::Hang);
        let opts = Options {
            fallback_divisor: 3,
            ..Options::default()
        };
        let c = counter(&kv, opts);
        let w = [want("in.msgs", "x", Quota::per_minute(10))];
        let start = tokio::time::Instant::now();
        assert_eq!(c.take(&w, T0).await, Take::Granted { fallback: true });
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        // In the cool-down: no more timeouts; ceil(10 / 3) = 4 per window.
        for _ in 0..3 {
            assert_eq!(c.take(&w, T0).await, Take::Granted { fallback: true });
        }
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(
            c.take(&w, T0).await,
            Take::Exhausted {
                index: 0,
                retry_after_ms: 60_000,
                fallback: true
            }
        );
        // After the cool-down NATS is tried again (and here it answers).
        kv.set_mode(MemoryMode::Healthy);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!c.in_fallback());
        assert_eq!(c.take(&w, T0).await, Take::Granted { fallback: false });
        assert_eq!(stored(&kv, &w[0], T0), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_kv_costs_one_failure_per_cooldown_across_keys() {
        let kv = Arc::new(MemoryKv::new());
        kv.set_mode(MemoryMode::Fail);
        let c = counter(&kv, Options::default());
        let a = want("in.a", "x", Quota::per_minute(2));
        let b = want("in.b", "x", Quota::per_minute(100));
        assert_eq!(
            c.take(&[a.clone(), b.clone()], T0).await,
            Take::Granted { fallback: true }
        );
        assert!(c.in_fallback());
        assert!(c.take(&[a.clone(), b.clone()], T0).await.granted());
        // a's fallback budget (2) is spent; b's unit is given back.
        assert_eq!(
            c.take(&[b.clone(), a.clone()], T0).await,
            Take::Exhausted {
                index: 1,
                retry_after_ms: 60_000,
                fallback: true
            }
        );
        for _ in 0..98 {
            assert!(c.take(std::slice::from_ref(&b), T0).await.granted());
        }
        assert!(!c.take(std::slice::from_ref(&b), T0).await.granted());
    }

    #[tokio::test(start_paused = true)]
    async fn fallback_counts_units_already_taken_from_the_shared_budget() {
        let kv = Arc::new(MemoryKv::new());
        let opts = Options {
            fallback_divisor: 2,
            ..Options::default()
        };
        let c = counter(&kv, opts);
        let w = [want("in.msgs", "x", Quota::per_minute(10))];
        for _ in 0..4 {
            assert_eq!(c.take(&w, T0).await, Take::Granted { fallback: false });
        }
        kv.set_mode(MemoryMode::Fail);
        // ceil(10 / 2) = 5 per process, 4 already taken.
        assert_eq!(c.take(&w, T0).await, Take::Granted { fallback: true });
        assert!(!c.take(&w, T0).await.granted());
    }

    #[tokio::test]
    async fn a_dropped_take_gives_its_units_back() {
        let kv = Arc::new(MemoryKv::new());
        let c = counter(&kv, Options::default());
        let d = want("in.d", "x", Quota::per_minute(3));
        let b = want("in.b", "x", Quota::per_minute(5));
        let d_key = d
            .key
            .window_key(Period::Minute, window_index(Period::Minute, T0));
        // One unit of d is reserved locally; b needs the KV, which hangs.
        c.slots
            .lock()
            .entry(&d_key, T0 + 60_000, T0, Slot::new)
            .allowance = 1;
        kv.set_mode(MemoryMode::Hang);
        let r = tokio::time::timeout(Duration::from_millis(10), c.take(&[d, b], T0)).await;
        assert!(r.is_err(), "the take should still be waiting on the KV");
        let mut slots = c.slots.lock();
        let slot = slots.get_mut(&d_key, T0).unwrap();
        assert_eq!((slot.allowance, slot.taken), (1, 0));
    }

    #[tokio::test]
    async fn local_state_is_bounded() {
        let kv = Arc::new(MemoryKv::new());
        let opts = Options {
            max_keys: 100,
            ..Options::default()
        };
        let c = counter(&kv, opts);
        for i in 0..1_000 {
            let w = [want("in.msgs", &format!("scope{i}"), Quota::per_minute(5))];
            assert!(c.take(&w, T0 + i).await.granted());
            assert!(c.tracked_keys() <= 100);
        }
        // Windows that ended are dropped.
        let w = [want("in.msgs", "late", Quota::per_minute(5))];
        assert!(c.take(&w, T0 + 120_000).await.granted());
        assert_eq!(c.tracked_keys(), 1);
    }
}
