//! [`SharedSemaphore`]: at most N concurrent connections to a destination across every worker
//! of a pool, with leases so a crashed worker's slots come back.
//!
//! # How it works
//!
//! The KV value of `<namespace>.conn.<hash(destination)>` (namespace e.g. `out.<pool>`) is a
//! small JSON map, holder id → `{"count": n, "expires_ms": t}` ([`LeaseTable`]). Acquiring
//! reads it, ignores (and prunes) expired entries, and if the live counts sum to less than the
//! cap, writes this holder's entry with one more permit and `expires_ms = now + ttl`
//! (compare-and-set; on a conflict read again). Dropping a [`Permit`] decrements the local
//! count at once and spawns the KV write (never blocking in `Drop`). A renewal task rewrites
//! this holder's entries every `ttl / 3` with the local count and a fresh expiry (which also
//! repairs a release whose write failed). Per destination, this holder's KV writes are
//! serialized, so its entry never counts fewer permits than it holds.
//!
//! # Guarantees
//!
//! * While NATS answers and holders renew, the live permits of all holders never exceed the
//!   cap (a permit exists only after the compare-and-set that counted it succeeded).
//! * A holder that stops renewing (crash, kill -9, dropped [`SharedSemaphore`]) loses its
//!   slots `ttl` after its last write (default ttl 30 s). Holder ids must be unique per
//!   process (e.g. the pod name plus a random suffix).
//! * A released slot is free for others after one KV round trip; until then the cap errs on
//!   the safe side.
//! * Contention beyond [`Options::cas_attempts`] answers [`Acquire::Full`]. Cap 0 means no cap
//!   (no KV access).
//!
//! # Fallback
//!
//! On a KV timeout or error the semaphore enters its cool-down ([`crate::Options`]): it grants
//! [`Acquire::Fallback`] permits from a local semaphore of `max(1, cap / fallback_divisor)` per
//! destination (this holder's shared permits count). Fallback permits are never written to the
//! KV. A holder that cannot renew for longer than `ttl` loses its slots in the KV, so after a
//! NATS outage longer than the ttl the cluster can exceed the cap until renewals resume.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::kv::{Kv, KvError, read_modify_write};
use crate::window::{InvalidNamespace, check_namespace, scope_hash};
use crate::{Health, Options};

/// One holder's permits of one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Permits held.
    pub count: u32,
    /// When they lapse unless renewed (Unix ms).
    pub expires_ms: i64,
}

/// The KV value of one destination: holder id → lease.
pub type LeaseTable = BTreeMap<String, Lease>;

/// Decode a KV value.
pub fn decode(value: &[u8]) -> Result<LeaseTable, serde_json::Error> {
    serde_json::from_slice(value)
}

/// Encode a KV value.
pub fn encode(table: &LeaseTable) -> Bytes {
    // A map of strings to plain structs always serializes.
    Bytes::from(serde_json::to_vec(table).unwrap_or_default())
}

/// Drop expired and empty leases; whether anything was dropped.
pub fn prune(table: &mut LeaseTable, now_ms: i64) -> bool {
    let before = table.len();
    table.retain(|_, l| l.count > 0 && l.expires_ms > now_ms);
    table.len() != before
}

/// Permits held by all live leases of a pruned table.
pub fn in_use(table: &LeaseTable) -> u64 {
    table.values().map(|l| u64::from(l.count)).sum()
}

/// The permits a fallback allows per destination: `max(1, cap / divisor)`.
pub const fn fallback_cap(cap: u32, divisor: u32) -> u32 {
    let d = if divisor == 0 { 1 } else { divisor };
    let c = cap / d;
    if c < 1 { 1 } else { c }
}

/// Lease tuning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseOptions {
    /// How long a holder's permits survive without renewal (default 30 s; renewed every
    /// ttl / 3).
    pub ttl: Duration,
    /// Timeouts, cool-down, fallback divisor, CAS attempts.
    pub limits: Options,
}

impl Default for LeaseOptions {
    fn default() -> LeaseOptions {
        LeaseOptions {
            ttl: Duration::from_secs(30),
            limits: Options::default(),
        }
    }
}

/// The answer of [`SharedSemaphore::try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// A slot counted in the KV.
    Granted(Permit),
    /// Every slot is taken (or contention was too high).
    Full,
    /// NATS slow or unreachable: a slot of the local fallback semaphore.
    Fallback(Permit),
}

impl Acquire {
    /// The permit, if any.
    pub fn permit(self) -> Option<Permit> {
        match self {
            Acquire::Granted(p) | Acquire::Fallback(p) => Some(p),
            Acquire::Full => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unlimited,
    Shared,
    Fallback,
}

/// One slot; released when dropped.
pub struct Permit {
    inner: Arc<Inner>,
    key: String,
    kind: Kind,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.key)
            .field("kind", &self.kind)
            .finish()
    }
}

impl Permit {
    /// Whether the permit came from the local fallback.
    pub fn is_fallback(&self) -> bool {
        self.kind == Kind::Fallback
    }

    /// The destination's KV key.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        match self.kind {
            Kind::Unlimited => {}
            Kind::Fallback => {
                let mut st = self.inner.state.lock();
                if let Some(n) = st.fallback.get_mut(&self.key) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        st.fallback.remove(&self.key);
                    }
                }
            }
            Kind::Shared => {
                if let Some(d) = self.inner.state.lock().dests.get_mut(&self.key) {
                    d.held = d.held.saturating_sub(1);
                }
                // Without a runtime the lease lapses after the ttl instead.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let inner = self.inner.clone();
                    let key = std::mem::take(&mut self.key);
                    rt.spawn(async move {
                        if let Err(e) = inner.sync(&key, wall_ms()).await {
                            tracing::debug!(key, error = %e, "lease release not written; renewal retries");
                        }
                    });
                }
            }
        }
    }
}

#[derive(Debug, Default)]
struct Dest {
    /// Shared permits alive here.
    held: u32,
    /// Serializes this holder's writes of the key.
    gate: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct State {
    dests: HashMap<String, Dest>,
    fallback: HashMap<String, u32>,
}

struct Inner {
    kv: Arc<dyn Kv>,
    opts: Options,
    ttl_ms: i64,
    namespace: String,
    holder: String,
    health: Health,
    state: Mutex<State>,
}

/// See the module docs. Dropping it stops the renewal (permits still alive are released when
/// dropped, or lapse after the ttl).
pub struct SharedSemaphore {
    inner: Arc<Inner>,
    renewal: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for SharedSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSemaphore")
            .field("namespace", &self.inner.namespace)
            .field("holder", &self.inner.holder)
            .field("ttl_ms", &self.inner.ttl_ms)
            .field("degraded", &self.inner.health.degraded())
            .finish_non_exhaustive()
    }
}

impl Drop for SharedSemaphore {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

impl SharedSemaphore {
    /// A semaphore over `kv` with keys under `namespace` (e.g. `out.<pool>`), holding as
    /// `holder` (unique per process). Spawns the renewal task: call within a Tokio runtime.
    pub fn new(
        kv: Arc<dyn Kv>,
        namespace: &str,
        holder: &str,
        opts: LeaseOptions,
    ) -> Result<SharedSemaphore, InvalidNamespace> {
        check_namespace(namespace)?;
        let ttl = opts.ttl.max(Duration::from_millis(3));
        let inner = Arc::new(Inner {
            kv,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
            namespace: namespace.to_owned(),
            holder: holder.to_owned(),
            health: Health::new(opts.limits.cooldown, "semaphore"),
            state: Mutex::new(State::default()),
            opts: opts.limits,
        });
        let renewal = tokio::spawn(renew_loop(Arc::downgrade(&inner), ttl / 3));
        Ok(SharedSemaphore { inner, renewal })
    }

    /// The KV key of `dest`.
    pub fn key(&self, dest: &str) -> String {
        format!("{}.conn.{}", self.inner.namespace, scope_hash(dest))
    }

    /// Whether the semaphore is in its fallback cool-down.
    pub fn in_fallback(&self) -> bool {
        self.inner.health.degraded()
    }

    /// Shared permits of `dest` this holder has.
    pub fn held(&self, dest: &str) -> u32 {
        let key = self.key(dest);
        self.inner
            .state
            .lock()
            .dests
            .get(&key)
            .map_or(0, |d| d.held)
    }

    /// Take a slot of `dest` if fewer than `cap` are taken across all holders (0: no cap).
    pub async fn try_acquire(&self, dest: &str, cap: u32, now_ms: i64) -> Acquire {
        let key = self.key(dest);
        let inner = &self.inner;
        if cap == 0 {
            return Acquire::Granted(self.permit(key, Kind::Unlimited));
        }
        if inner.health.degraded() {
            return self.fallback(key, cap);
        }
        let gate = inner
            .state
            .lock()
            .dests
            .entry(key.clone())
            .or_default()
            .gate
            .clone();
        let _writing = gate.lock().await;
        let result = read_modify_write(inner.kv.as_ref(), &inner.opts, &key, |value| {
            let mut table = match value {
                None => LeaseTable::new(),
                Some(v) => decode(v)
                    .map_err(|e| KvError::Other(format!("key {key}: bad lease table: {e}")))?,
            };
            prune(&mut table, now_ms);
            if in_use(&table) >= u64::from(cap) {
                return Ok((None, false));
            }
            let held = inner.state.lock().dests.get(&key).map_or(0, |d| d.held);
            table.insert(
                inner.holder.clone(),
                Lease {
                    count: held.saturating_add(1),
                    expires_ms: now_ms.saturating_add(inner.ttl_ms),
                },
            );
            Ok((Some(encode(&table)), true))
        })
        .await;
        let mut st = inner.state.lock();
        match result {
            Ok(true) => {
                st.dests.entry(key.clone()).or_default().held += 1;
                drop(st);
                Acquire::Granted(self.permit(key, Kind::Shared))
            }
            Ok(false) | Err(KvError::Contended) => {
                forget_idle(&mut st, &key, &gate);
                Acquire::Full
            }
            Err(e) => {
                forget_idle(&mut st, &key, &gate);
                drop(st);
                inner.health.trip(&e);
                self.fallback(key, cap)
            }
        }
    }

    /// Renew this holder's leases now (the renewal task does this every ttl / 3).
    pub async fn renew(&self, now_ms: i64) {
        self.inner.renew_all(now_ms).await;
    }

    fn fallback(&self, key: String, cap: u32) -> Acquire {
        let limit = fallback_cap(cap, self.inner.opts.fallback_divisor);
        let mut st = self.inner.state.lock();
        let shared = st.dests.get(&key).map_or(0, |d| d.held);
        let n = st.fallback.entry(key.clone()).or_insert(0);
        if shared.saturating_add(*n) >= limit {
            if *n == 0 {
                st.fallback.remove(&key);
            }
            return Acquire::Full;
        }
        *n += 1;
        drop(st);
        Acquire::Fallback(self.permit(key, Kind::Fallback))
    }

    fn permit(&self, key: String, kind: Kind) -> Permit {
        Permit {
            inner: self.inner.clone(),
            key,
            kind,
        }
    }
}

/// Forget `key`'s local state if no permit and no other task uses it.
fn forget_idle(st: &mut State, key: &str, gate: &Arc<tokio::sync::Mutex<()>>) {
    // The map's clone and the caller's: nobody else is waiting on the gate.
    if st
        .dests
        .get(key)
        .is_some_and(|d| d.held == 0 && Arc::ptr_eq(&d.gate, gate) && Arc::strong_count(gate) == 2)
    {
        st.dests.remove(key);
    }
}

impl Inner {
    /// Write this holder's entry of `key` as the local count says (removing it at 0).
    async fn sync(&self, key: &str, now_ms: i64) -> Result<(), KvError> {
        let gate = match self.state.lock().dests.get(key) {
            Some(d) => d.gate.clone(),
            None => return Ok(()),
        };
        let _writing = gate.lock().await;
        let result = read_modify_write(self.kv.as_ref(), &self.opts, key, |value| {
            let mut table = match value {
                None => LeaseTable::new(),
                Some(v) => decode(v)
                    .map_err(|e| KvError::Other(format!("key {key}: bad lease table: {e}")))?,
            };
            let mut changed = prune(&mut table, now_ms);
            let held = self.state.lock().dests.get(key).map_or(0, |d| d.held);
            if held == 0 {
                changed |= table.remove(&self.holder).is_some();
            } else {
                table.insert(
                    self.holder.clone(),
                    Lease {
                        count: held,
                        expires_ms: now_ms.saturating_add(self.ttl_ms),
                    },
                );
                changed = true;
            }
            Ok((changed.then(|| encode(&table)), ()))
        })
        .await;
        if result.is_ok() {
            forget_idle(&mut self.state.lock(), key, &gate);
        } else if let Err(e) = &result
            && *e != KvError::Contended
        {
            self.health.trip(e);
        }
        result
    }

    async fn renew_all(&self, now_ms: i64) {
        if self.health.degraded() {
            return;
        }
        let keys: Vec<String> = self.state.lock().dests.keys().cloned().collect();
        for key in keys {
            if let Err(e) = self.sync(&key, now_ms).await {
                tracing::debug!(key, error = %e, "lease renewal failed");
                if self.health.degraded() {
                    return;
                }
            }
        }
    }
}

async fn renew_loop(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        inner.renew_all(wall_ms()).await;
    }
}

/// Wall-clock Unix time in ms.
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::kv::{MemoryKv, MemoryMode};
    use crate::window::valid_key;

    fn sem(kv: &Arc<MemoryKv>, holder: &str, ttl: Duration) -> SharedSemaphore {
        SharedSemaphore::new(
            kv.clone() as Arc<dyn Kv>,
            "out.pool-a",
            holder,
            LeaseOptions {
                ttl,
                limits: Options::default(),
            },
        )
        .unwrap()
    }

    fn table_of(kv: &MemoryKv, s: &SharedSemaphore, dest: &str) -> LeaseTable {
        kv.value(&s.key(dest))
            .map(|v| decode(&v).unwrap())
            .unwrap_or_default()
    }

    /// Wait (bounded) until `f` holds, yielding to spawned tasks.
    async fn until(mut f: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("condition not reached");
    }

    #[test]
    fn codec_and_pruning() {
        let mut t = LeaseTable::new();
        t.insert(
            "w1".into(),
            Lease {
                count: 2,
                expires_ms: 100,
            },
        );
        t.insert(
            "w2".into(),
            Lease {
                count: 1,
                expires_ms: 50,
            },
        );
        t.insert(
            "w3".into(),
            Lease {
                count: 0,
                expires_ms: 500,
            },
        );
        let bytes = encode(&t);
        assert_eq!(
            &bytes[..],
            br#"{"w1":{"count":2,"expires_ms":100},"w2":{"count":1,"expires_ms":50},"w3":{"count":0,"expires_ms":500}}"#
        );
        assert_eq!(decode(&bytes).unwrap(), t);
        assert!(decode(b"[1]").is_err());
        assert!(decode(br#"{"w":{"count":-1,"expires_ms":1}}"#).is_err());
        assert!(prune(&mut t, 50));
        assert_eq!(t.keys().collect::<Vec<_>>(), ["w1"]);
        assert_eq!(in_use(&t), 2);
        assert!(!prune(&mut t, 99));
        assert!(prune(&mut t, 100));
        assert!(t.is_empty());
    }

    #[test]
    fn fallback_caps() {
        assert_eq!(fallback_cap(10, 3), 3);
        assert_eq!(fallback_cap(2, 3), 1);
        assert_eq!(fallback_cap(1, 1), 1);
        assert_eq!(fallback_cap(7, 0), 7);
    }

    #[tokio::test]
    async fn keys_hide_the_destination() {
        let kv = Arc::new(MemoryKv::new());
        let s = sem(&kv, "w1", Duration::from_secs(30));
        let k = s.key("mx.example.com");
        assert!(valid_key(&k) && k.starts_with("out.pool-a.conn.") && !k.contains("example"));
        assert!(
            SharedSemaphore::new(kv as Arc<dyn Kv>, "out.*", "w", LeaseOptions::default()).is_err()
        );
    }

    #[tokio::test]
    async fn holders_share_the_cap_and_release_on_drop() {
        let kv = Arc::new(MemoryKv::new());
        let now = wall_ms();
        let a = sem(&kv, "w1", Duration::from_secs(30));
        let b = sem(&kv, "w2", Duration::from_secs(30));
        let p1 = a.try_acquire("d", 2, now).await.permit().unwrap();
        assert!(!p1.is_fallback());
        let p2 = b.try_acquire("d", 2, now).await;
        assert!(matches!(p2, Acquire::Granted(_)));
        assert!(matches!(a.try_acquire("d", 2, now).await, Acquire::Full));
        assert!(matches!(b.try_acquire("d", 2, now).await, Acquire::Full));
        // Another destination is independent.
        assert!(matches!(
            b.try_acquire("e", 2, now).await,
            Acquire::Granted(_)
        ));
        drop(p1);
        assert_eq!(a.held("d"), 0);
        until(|| !table_of(&kv, &a, "d").contains_key("w1")).await;
        let p3 = b.try_acquire("d", 2, now).await;
        assert!(matches!(p3, Acquire::Granted(_)));
        assert_eq!(table_of(&kv, &a, "d")["w2"].count, 2);
        assert_eq!(b.held("d"), 2);
        drop(p2);
        drop(p3);
        until(|| table_of(&kv, &a, "d").is_empty()).await;
        until(|| b.inner.state.lock().dests.len() <= 1).await;
    }

    #[tokio::test]
    async fn cap_zero_is_unlimited_without_the_kv() {
        let kv = Arc::new(MemoryKv::new());
        kv.set_mode(MemoryMode::Hang);
        let a = sem(&kv, "w1", Duration::from_secs(30));
        let mut ps = Vec::new();
        for _ in 0..100 {
            ps.push(a.try_acquire("d", 0, 0).await);
        }
        assert!(ps.iter().all(|p| matches!(p, Acquire::Granted(_))));
        drop(ps);
        assert!(kv.keys().is_empty());
    }

    #[tokio::test]
    async fn an_abandoned_holder_lapses_after_the_ttl() {
        let kv = Arc::new(MemoryKv::new());
        let now = wall_ms();
        let a = sem(&kv, "crashed", Duration::from_secs(30));
        let b = sem(&kv, "alive", Duration::from_secs(30));
        std::mem::forget(a.try_acquire("d", 1, now).await.permit().unwrap());
        drop(a);
        assert!(matches!(
            b.try_acquire("d", 1, now + 29_999).await,
            Acquire::Full
        ));
        let p = b.try_acquire("d", 1, now + 30_000).await;
        assert!(matches!(p, Acquire::Granted(_)));
        // The expired lease was pruned.
        let t = table_of(&kv, &b, "d");
        assert_eq!(t.keys().collect::<Vec<_>>(), ["alive"]);
    }

    #[tokio::test]
    async fn renewal_extends_and_repairs() {
        let kv = Arc::new(MemoryKv::new());
        let now = wall_ms();
        let a = sem(&kv, "w1", Duration::from_secs(30));
        let _p = a.try_acquire("d", 3, now).await.permit().unwrap();
        let _q = a.try_acquire("d", 3, now).await.permit().unwrap();
        assert_eq!(
            table_of(&kv, &a, "d")["w1"],
            Lease {
                count: 2,
                expires_ms: now + 30_000
            }
        );
        // A lost write (someone overwrote the entry) is repaired by the renewal.
        kv.put(&a.key("d"), Bytes::from_static(b"{}"));
        a.renew(now + 10_000).await;
        assert_eq!(
            table_of(&kv, &a, "d")["w1"],
            Lease {
                count: 2,
                expires_ms: now + 40_000
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_kv_falls_back_to_a_local_semaphore() {
        let kv = Arc::new(MemoryKv::new());
        let a = SharedSemaphore::new(
            kv.clone() as Arc<dyn Kv>,
            "out.pool-a",
            "w1",
            LeaseOptions {
                ttl: Duration::from_secs(30),
                limits: Options {
                    fallback_divisor: 2,
                    ..Options::default()
                },
            },
        )
        .unwrap();
        let shared = a.try_acquire("d", 6, 0).await;
        assert!(matches!(shared, Acquire::Granted(_)));
        kv.set_mode(MemoryMode::Hang);
        let start = tokio::time::Instant::now();
        // max(1, 6 / 2) = 3, one shared permit held.
        let f1 = a.try_acquire("d", 6, 0).await;
        assert!(matches!(&f1, Acquire::Fallback(p) if p.is_fallback()));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        let f2 = a.try_acquire("d", 6, 0).await;
        assert!(matches!(f2, Acquire::Fallback(_)));
        assert!(matches!(a.try_acquire("d", 6, 0).await, Acquire::Full));
        drop(f1);
        let f3 = a.try_acquire("d", 6, 0).await;
        assert!(matches!(f3, Acquire::Fallback(_)));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert!(a.in_fallback());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_holders_never_exceed_the_cap() {
        let kv = Arc::new(MemoryKv::new());
        let cap = 3u32;
        let live = Arc::new(AtomicU32::new(0));
        let peak = Arc::new(AtomicU32::new(0));
        let granted = Arc::new(AtomicU32::new(0));
        let mut hs = Vec::new();
        let sems: Vec<_> = (0..3)
            .map(|i| Arc::new(sem(&kv, &format!("w{i}"), Duration::from_secs(30))))
            .collect();
        for s in &sems {
            for _ in 0..4 {
                let (s, live, peak, granted) =
                    (s.clone(), live.clone(), peak.clone(), granted.clone());
                hs.push(tokio::spawn(async move {
                    for _ in 0..50 {
                        match s.try_acquire("hot", cap, wall_ms()).await {
                            Acquire::Granted(p) => {
                                let n = live.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(n, Ordering::SeqCst);
                                granted.fetch_add(1, Ordering::SeqCst);
                                tokio::task::yield_now().await;
                                live.fetch_sub(1, Ordering::SeqCst);
                                drop(p);
                            }
                            Acquire::Full => tokio::task::yield_now().await,
                            Acquire::Fallback(_) => panic!("no fallback expected"),
                        }
                    }
                }));
            }
        }
        for h in hs {
            h.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= cap);
        assert!(granted.load(Ordering::SeqCst) > 0);
        // Every release lands.
        let key = sems[0].key("hot");
        for _ in 0..1_000 {
            let t = kv
                .value(&key)
                .map(|v| decode(&v).unwrap())
                .unwrap_or_default();
            if in_use(&t) == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("releases did not land");
    }
}
