//! [`Marks`]: shared back-off marks, "hold off `key` until `T`" (a destination that answered
//! 421 too often, a warm-up pause), seen by every process.
//!
//! # How it works
//!
//! A mark is the KV key `<namespace>.hold.<hash>` holding an end time (Unix ms, decimal).
//! [`Marks::hold_off`] max-merges its time into it (compare-and-set: a later mark is never
//! shortened by an earlier one). [`Marks::held_off`] reads it through a local cache: an answer
//! read from the KV (or written here) is reused for at most [`MARK_CACHE`] (1 s), so a hot
//! path reads the KV at most once per second per key.
//!
//! # Guarantees
//!
//! * A mark written anywhere is seen everywhere within [`MARK_CACHE`] plus one KV round trip.
//! * A mark written here is seen here at once.
//!
//! # Fallback
//!
//! On a KV timeout or error the marks enter their cool-down ([`crate::Options`]): `hold_off`
//! marks locally only, `held_off` answers from the local cache, however old (marks of other
//! processes made meanwhile are not seen).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::kv::{Kv, KvError, max_merge, parse_i64, timed};
use crate::table::Table;
use crate::window::BudgetKey;
use crate::{Health, Options};

/// How long an answer is reused without reading the KV.
pub const MARK_CACHE: Duration = Duration::from_secs(1);

/// What this process knows of one mark.
#[derive(Debug, Clone, Copy, Default)]
struct Cached {
    /// The end last read from (or written to) the KV.
    read: Option<i64>,
    /// When `read` was read from the KV; `None`: never.
    at: Option<Instant>,
    /// The latest end marked by this process (kept even if the KV write failed).
    local: Option<i64>,
}

/// See the module docs.
pub struct Marks {
    kv: Arc<dyn Kv>,
    opts: Options,
    health: Health,
    cache: Mutex<Table<Cached>>,
}

impl std::fmt::Debug for Marks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Marks")
            .field("opts", &self.opts)
            .field("degraded", &self.health.degraded())
            .finish_non_exhaustive()
    }
}

/// The KV key of `key`'s mark.
pub fn mark_key(key: &BudgetKey) -> String {
    format!("{}.hold.{}", key.namespace(), key.hash())
}

impl Marks {
    /// Marks over `kv`.
    pub fn new(kv: Arc<dyn Kv>, opts: Options) -> Marks {
        Marks {
            kv,
            health: Health::new(opts.cooldown, "marks"),
            cache: Mutex::new(Table::new(opts.max_keys)),
            opts,
        }
    }

    /// Whether the marks are in their fallback cool-down.
    pub fn in_fallback(&self) -> bool {
        self.health.degraded()
    }

    /// Hold `key` off until `until_ms` (a later existing mark wins). `true` if the mark is in
    /// the KV, `false` if it is only local (NATS slow or unreachable, or contention).
    pub async fn hold_off(&self, key: &BudgetKey, until_ms: i64, now_ms: i64) -> bool {
        let k = mark_key(key);
        {
            let mut cache = self.cache.lock();
            let c = cache.entry(&k, expiry(Some(until_ms), now_ms), now_ms, Cached::default);
            c.local = max_opt(c.local, Some(until_ms));
        }
        if self.health.degraded() {
            return false;
        }
        match max_merge(self.kv.as_ref(), &self.opts, &k, until_ms).await {
            Ok(until) => {
                let mut cache = self.cache.lock();
                let c = cache.entry(&k, expiry(Some(until), now_ms), now_ms, Cached::default);
                c.read = max_opt(c.read, Some(until));
                true
            }
            Err(e) => {
                self.note_failure(&e);
                false
            }
        }
    }

    /// If `key` is held off at `now_ms`: until when.
    pub async fn held_off(&self, key: &BudgetKey, now_ms: i64) -> Option<i64> {
        let k = mark_key(key);
        let cached = self
            .cache
            .lock()
            .get_mut(&k, now_ms)
            .copied()
            .unwrap_or_default();
        let fresh = cached.at.is_some_and(|at| at.elapsed() < MARK_CACHE);
        let mut read = cached.read;
        if !fresh && !self.health.degraded() {
            match timed(self.opts.timeout, self.kv.entry(&k)).await {
                Ok(v) => {
                    read = v.and_then(|(v, _)| parse_i64(&v));
                    let mut cache = self.cache.lock();
                    let c = cache.entry(&k, expiry(read, now_ms), now_ms, Cached::default);
                    c.read = read;
                    c.at = Some(Instant::now());
                    return max_opt(read, c.local).filter(|u| *u > now_ms);
                }
                Err(e) => self.note_failure(&e),
            }
        }
        max_opt(read, cached.local).filter(|u| *u > now_ms)
    }

    fn note_failure(&self, e: &KvError) {
        if *e != KvError::Contended {
            self.health.trip(e);
        }
    }
}

/// Keep a cache entry until its mark ends, and at least a second (a negative answer too).
fn expiry(until: Option<i64>, now_ms: i64) -> i64 {
    until
        .unwrap_or(now_ms)
        .max(now_ms)
        .saturating_add(MARK_CACHE.as_millis() as i64)
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::kv::{MemoryKv, MemoryMode};
    use crate::window::valid_key;

    const T0: i64 = 1_796_415_300_000;

    fn marks(kv: &Arc<MemoryKv>) -> Marks {
        Marks::new(kv.clone() as Arc<dyn Kv>, Options::default())
    }

    fn key() -> BudgetKey {
        BudgetKey::new("out.pool-a.dest", "mx.example.com").unwrap()
    }

    #[test]
    fn keys() {
        let k = mark_key(&key());
        assert!(valid_key(&k));
        assert!(k.starts_with("out.pool-a.dest.hold."));
        assert!(!k.contains("example"));
        assert_eq!(max_opt(None, Some(1)), Some(1));
        assert_eq!(max_opt(Some(3), Some(1)), Some(3));
        assert_eq!(max_opt(None, None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn marks_are_shared_and_max_merged() {
        let kv = Arc::new(MemoryKv::new());
        let a = marks(&kv);
        let b = marks(&kv);
        assert_eq!(b.held_off(&key(), T0).await, None);
        assert!(a.hold_off(&key(), T0 + 10_000, T0).await);
        assert_eq!(a.held_off(&key(), T0).await, Some(T0 + 10_000));
        // b's negative answer is cached for up to a second.
        assert_eq!(b.held_off(&key(), T0).await, None);
        tokio::time::advance(MARK_CACHE).await;
        assert_eq!(b.held_off(&key(), T0 + 1_000).await, Some(T0 + 10_000));
        // An earlier mark does not shorten it.
        assert!(b.hold_off(&key(), T0 + 5_000, T0 + 1_000).await);
        assert_eq!(
            kv.value(&mark_key(&key())),
            Some(Bytes::from((T0 + 10_000).to_string()))
        );
        assert_eq!(b.held_off(&key(), T0 + 10_000).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_bounds_kv_reads() {
        let kv = Arc::new(MemoryKv::new());
        let m = marks(&kv);
        assert_eq!(m.held_off(&key(), T0).await, None);
        // The KV now hangs: cached answers come back at once for a second.
        kv.set_mode(MemoryMode::Hang);
        let start = Instant::now();
        for _ in 0..1_000 {
            assert_eq!(m.held_off(&key(), T0).await, None);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_kv_keeps_local_marks() {
        let kv = Arc::new(MemoryKv::new());
        let m = marks(&kv);
        kv.set_mode(MemoryMode::Fail);
        assert!(!m.hold_off(&key(), T0 + 60_000, T0).await);
        assert!(m.in_fallback());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(m.held_off(&key(), T0 + 2_000).await, Some(T0 + 60_000));
        kv.set_mode(MemoryMode::Hang);
        tokio::time::advance(Duration::from_secs(10)).await;
        let start = Instant::now();
        assert_eq!(m.held_off(&key(), T0 + 12_000).await, Some(T0 + 60_000));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
    }
}
