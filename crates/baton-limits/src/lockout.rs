//! [`Lockout`]: AUTH failures counted across every ingress pod, and the lockouts they cause.
//!
//! # How it counts
//!
//! A failure of a [`Subject`] (a user name, case-insensitive, or a client address, IPv6
//! grouped by /64) adds one to the KV key `<namespace>.fail.<window s>s<index>.<hash>` of the
//! current fixed window of [`LockoutPolicy::window`] (compare-and-set increment). When the
//! window's count reaches [`LockoutPolicy::failures`], the subject is locked until
//! `now + duration`: the time is max-merged into `<namespace>.lock.<hash>` and every process
//! reads it there ([`Lockout::locked`]). Further failures while locked extend the lock. Scope
//! values appear only as hashes (see [`crate::window`]).
//!
//! # Guarantees
//!
//! * While NATS answers, the failures of a window are counted exactly across processes: the
//!   `failures`-th failure locks, wherever it happened. Windows are fixed, so up to
//!   `2 × failures − 2` failures can straddle a window boundary without a lock.
//! * The crate never knows whether a user exists; callers must count failures for unknown
//!   users the same way, so a lockout reveals nothing.
//! * Locks seen by this process are remembered locally until they end (bounded table).
//! * A subject found *not* locked is remembered as such for [`CLEAR_FOR`] (its own bounded
//!   table, so a flood of clients cannot evict known locks): a client opening many
//!   connections costs one KV read per [`CLEAR_FOR`], not one per connection. A lock written
//!   by another process is therefore honoured here at most [`CLEAR_FOR`] late; a lock this
//!   process writes or reads takes effect at once.
//!
//! # Fallback
//!
//! On a KV timeout or error the lockout enters its cool-down ([`crate::Options`]): failures are
//! counted locally per window and lock locally at `ceil(failures / fallback_divisor)`; locks
//! already known locally stay in force, locks written by other processes meanwhile are not
//! seen. `failures: 0` disables the lockout (no KV access).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::kv::{Kv, KvError, max_merge, parse_i64, read_modify_write, timed};
use crate::table::Table;
use crate::window::{InvalidNamespace, check_namespace, end_of, index_of, scope_hash};
use crate::{Health, Options, fallback_limit};

/// How long a subject found not locked is taken as not locked without asking the KV again.
pub const CLEAR_FOR: Duration = Duration::from_secs(1);

/// When failures lock a subject out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures in one window that lock the subject; 0 disables the lockout.
    pub failures: u32,
    /// The fixed window failures are counted in (rounded to whole seconds, at least 1 s).
    pub window: Duration,
    /// How long a lock lasts from the failure that caused it.
    pub duration: Duration,
}

impl LockoutPolicy {
    /// The window in milliseconds (whole seconds, ≥ 1 s).
    pub fn window_ms(&self) -> i64 {
        (self.window.as_secs().max(1) as i64).saturating_mul(1_000)
    }

    fn duration_ms(&self) -> i64 {
        i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Who failed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An AUTH user name (compared case-insensitively).
    User(String),
    /// A client address (IPv6 addresses grouped by /64, IPv4-mapped IPv6 as IPv4).
    Client(IpAddr),
}

impl Subject {
    /// The scope value that is hashed into keys: `user:<lower-cased name>` or
    /// `client:<address>` / `client:<IPv6 /64 network>/64`.
    pub fn scope(&self) -> String {
        match self {
            Subject::User(name) => format!("user:{}", name.to_lowercase()),
            Subject::Client(ip) => match ip {
                IpAddr::V4(v4) => format!("client:{v4}"),
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => format!("client:{v4}"),
                    None => {
                        let net = Ipv6Addr::from(u128::from(*v6) & !(u128::from(u64::MAX)));
                        format!("client:{net}/64")
                    }
                },
            },
        }
    }
}

#[derive(Debug)]
struct Local {
    /// Lock end per lock key.
    locks: Table<i64>,
    /// Fallback failure counts per failure-window key.
    failures: Table<u32>,
    /// Lock keys the KV said were not locked, until [`CLEAR_FOR`] after that answer.
    clear: Table<()>,
}

/// See the module docs.
pub struct Lockout {
    kv: Arc<dyn Kv>,
    opts: Options,
    namespace: String,
    policy: Mutex<LockoutPolicy>,
    health: Health,
    local: Mutex<Local>,
}

impl std::fmt::Debug for Lockout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lockout")
            .field("namespace", &self.namespace)
            .field("policy", &*self.policy.lock())
            .field("degraded", &self.health.degraded())
            .finish_non_exhaustive()
    }
}

impl Lockout {
    /// A lockout over `kv` with keys under `namespace` (e.g. `in.auth`).
    pub fn new(
        kv: Arc<dyn Kv>,
        namespace: &str,
        policy: LockoutPolicy,
        opts: Options,
    ) -> Result<Lockout, InvalidNamespace> {
        check_namespace(namespace)?;
        Ok(Lockout {
            kv,
            namespace: namespace.to_owned(),
            policy: Mutex::new(policy),
            health: Health::new(opts.cooldown, "lockout"),
            local: Mutex::new(Local {
                locks: Table::new(opts.max_keys),
                failures: Table::new(opts.max_keys),
                clear: Table::new(opts.max_keys),
            }),
            opts,
        })
    }

    /// Replace the policy (a new config snapshot); counts and locks are kept.
    pub fn set_policy(&self, policy: LockoutPolicy) {
        *self.policy.lock() = policy;
    }

    /// Whether the lockout is in its fallback cool-down.
    pub fn in_fallback(&self) -> bool {
        self.health.degraded()
    }

    /// The KV key of `subject`'s lock.
    pub fn lock_key(&self, subject: &Subject) -> String {
        format!("{}.lock.{}", self.namespace, scope_hash(&subject.scope()))
    }

    /// The KV key of `subject`'s failure count in the window holding `now_ms`.
    pub fn failure_key(&self, subject: &Subject, now_ms: i64) -> String {
        let window_ms = self.policy.lock().window_ms();
        failure_key(
            &self.namespace,
            window_ms,
            now_ms,
            &scope_hash(&subject.scope()),
        )
    }

    /// If `subject` is locked out at `now_ms`: until when (Unix ms).
    pub async fn locked(&self, subject: &Subject, now_ms: i64) -> Option<i64> {
        if self.policy.lock().failures == 0 {
            return None;
        }
        let lock_key = self.lock_key(subject);
        if let Some(until) = self.local_lock(&lock_key, now_ms) {
            return Some(until);
        }
        if self.health.degraded() || self.recently_clear(&lock_key, now_ms) {
            return None;
        }
        match timed(self.opts.timeout, self.kv.entry(&lock_key)).await {
            Ok(Some((value, _))) => match parse_i64(&value) {
                Some(until) if until > now_ms => {
                    self.remember_lock(&lock_key, until, now_ms);
                    Some(until)
                }
                _ => {
                    self.remember_clear(&lock_key, now_ms);
                    None
                }
            },
            Ok(None) => {
                self.remember_clear(&lock_key, now_ms);
                None
            }
            Err(e) => {
                self.health.trip(&e);
                None
            }
        }
    }

    /// Count one failure of `subject` at `now_ms`; if it locks the subject out (or extends a
    /// lock), until when.
    pub async fn failed(&self, subject: &Subject, now_ms: i64) -> Option<i64> {
        let policy = *self.policy.lock();
        if policy.failures == 0 {
            return None;
        }
        let hash = scope_hash(&subject.scope());
        let window_ms = policy.window_ms();
        let fail_key = failure_key(&self.namespace, window_ms, now_ms, &hash);
        let lock_key = format!("{}.lock.{hash}", self.namespace);
        let until = now_ms.saturating_add(policy.duration_ms());

        if !self.health.degraded() {
            let counted = read_modify_write(self.kv.as_ref(), &self.opts, &fail_key, |v| {
                let n = match v {
                    None => 0,
                    Some(v) => parse_i64(v).ok_or_else(|| {
                        KvError::Other(format!("key {fail_key}: not a decimal count"))
                    })?,
                };
                let n = n.saturating_add(1);
                Ok((Some(Bytes::from(n.to_string())), n))
            })
            .await;
            match counted {
                Ok(n) if n < i64::from(policy.failures) => return None,
                Ok(_) => {
                    // Locked: share it; if that fails the lock still holds here.
                    let until =
                        match max_merge(self.kv.as_ref(), &self.opts, &lock_key, until).await {
                            Ok(u) => u,
                            Err(e) => {
                                self.note_failure(&e);
                                until
                            }
                        };
                    self.remember_lock(&lock_key, until, now_ms);
                    return Some(until);
                }
                Err(e) => self.note_failure(&e),
            }
        }

        // Fallback: count locally.
        let local_limit = fallback_limit(u64::from(policy.failures), self.opts.fallback_divisor);
        let end = end_of(window_ms, index_of(window_ms, now_ms));
        let mut local = self.local.lock();
        let n = local.failures.entry(&fail_key, end, now_ms, || 0);
        *n = n.saturating_add(1);
        if u64::from(*n) < local_limit {
            return None;
        }
        let v = local.locks.entry(&lock_key, until, now_ms, || until);
        *v = (*v).max(until);
        Some(*v)
    }

    fn note_failure(&self, e: &KvError) {
        // Contention is not a NATS failure: fall back for this call only.
        if *e != KvError::Contended {
            self.health.trip(e);
        }
    }

    fn local_lock(&self, lock_key: &str, now_ms: i64) -> Option<i64> {
        let mut local = self.local.lock();
        local
            .locks
            .get_mut(lock_key, now_ms)
            .map(|u| *u)
            .filter(|u| *u > now_ms)
    }

    fn recently_clear(&self, lock_key: &str, now_ms: i64) -> bool {
        self.local.lock().clear.get_mut(lock_key, now_ms).is_some()
    }

    fn remember_clear(&self, lock_key: &str, now_ms: i64) {
        let until = now_ms.saturating_add(CLEAR_FOR.as_millis() as i64);
        self.local
            .lock()
            .clear
            .entry(lock_key, until, now_ms, || ());
    }

    fn remember_lock(&self, lock_key: &str, until: i64, now_ms: i64) {
        let mut local = self.local.lock();
        let v = local.locks.entry(lock_key, until, now_ms, || until);
        *v = (*v).max(until);
    }
}

/// `<namespace>.fail.<window s>s<index>.<hash>`.
fn failure_key(namespace: &str, window_ms: i64, now_ms: i64, hash: &str) -> String {
    format!(
        "{namespace}.fail.{}s{}.{hash}",
        window_ms / 1_000,
        index_of(window_ms, now_ms)
    )
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::kv::{MemoryKv, MemoryMode};
    use crate::window::valid_key;

    const T0: i64 = 1_796_415_300_000;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            failures: 3,
            window: Duration::from_secs(300),
            duration: Duration::from_secs(900),
        }
    }

    fn lockout(kv: &Arc<MemoryKv>, policy: LockoutPolicy, opts: Options) -> Lockout {
        Lockout::new(kv.clone() as Arc<dyn Kv>, "in.auth", policy, opts).unwrap()
    }

    #[test]
    fn subjects_normalise() {
        assert_eq!(
            Subject::User("Alice@Example.COM".into()).scope(),
            Subject::User("alice@example.com".into()).scope()
        );
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Subject::Client(a).scope(), "client:2001:db8:1:2::/64");
        assert_eq!(Subject::Client(a).scope(), Subject::Client(b).scope());
        assert_ne!(Subject::Client(a).scope(), Subject::Client(c).scope());
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(Subject::Client(mapped).scope(), "client:192.0.2.1");
        assert_eq!(
            Subject::Client(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).scope(),
            "client:192.0.2.1"
        );
        // A user named like an address is another subject.
        assert_ne!(
            Subject::User("192.0.2.1".into()).scope(),
            Subject::Client(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))).scope()
        );
        assert_eq!(
            Subject::Client(IpAddr::V6(Ipv6Addr::LOCALHOST)).scope(),
            "client:::/64"
        );
    }

    #[test]
    fn keys_are_valid_and_hide_the_subject() {
        let kv = Arc::new(MemoryKv::new());
        let l = lockout(&kv, policy(), Options::default());
        let s = Subject::User("Bob".into());
        let k = l.lock_key(&s);
        assert!(valid_key(&k) && k.starts_with("in.auth.lock.") && !k.contains("bob"));
        let f = l.failure_key(&s, T0);
        assert!(valid_key(&f), "{f}");
        assert_eq!(
            f,
            format!(
                "in.auth.fail.300s{}.{}",
                T0 / 300_000,
                scope_hash("user:bob")
            )
        );
        assert!(Lockout::new(kv as Arc<dyn Kv>, "in auth", policy(), Options::default()).is_err());
    }

    #[tokio::test]
    async fn failures_lock_across_processes() {
        let kv = Arc::new(MemoryKv::new());
        let a = lockout(&kv, policy(), Options::default());
        let b = lockout(&kv, policy(), Options::default());
        let s = Subject::User("Carol".into());
        assert_eq!(a.failed(&s, T0).await, None);
        assert_eq!(b.failed(&Subject::User("CAROL".into()), T0 + 1).await, None);
        assert_eq!(a.locked(&s, T0 + 2).await, None);
        let until = b.failed(&s, T0 + 2).await;
        assert_eq!(until, Some(T0 + 2 + 900_000));
        // `a` found the subject clear at T0 + 2 and trusts that for CLEAR_FOR; the process
        // that wrote the lock knows it at once.
        assert_eq!(a.locked(&s, T0 + 3).await, None);
        assert_eq!(b.locked(&s, T0 + 3).await, until);
        assert_eq!(a.locked(&s, T0 + 2 + 1_000).await, until);
        // Another subject is not affected.
        assert_eq!(a.locked(&Subject::User("dave".into()), T0 + 3).await, None);
        // Locks end.
        assert_eq!(a.locked(&s, T0 + 2 + 900_000).await, None);
        // A further failure extends the lock.
        let later = a.failed(&s, T0 + 10).await;
        assert_eq!(later, Some(T0 + 10 + 900_000));
        assert_eq!(b.locked(&s, T0 + 900_005).await, later);
    }

    #[tokio::test]
    async fn counts_restart_each_window() {
        let kv = Arc::new(MemoryKv::new());
        let l = lockout(&kv, policy(), Options::default());
        let s = Subject::Client("192.0.2.7".parse().unwrap());
        let w0 = (T0 / 300_000) * 300_000;
        assert_eq!(l.failed(&s, w0 + 299_998).await, None);
        assert_eq!(l.failed(&s, w0 + 299_999).await, None);
        assert_eq!(l.failed(&s, w0 + 300_000).await, None);
        assert_eq!(l.failed(&s, w0 + 300_001).await, None);
        assert!(l.failed(&s, w0 + 300_002).await.is_some());
    }

    #[tokio::test]
    async fn disabled_never_touches_the_kv() {
        let kv = Arc::new(MemoryKv::new());
        kv.set_mode(MemoryMode::Hang);
        let l = lockout(
            &kv,
            LockoutPolicy {
                failures: 0,
                ..policy()
            },
            Options::default(),
        );
        let s = Subject::User("x".into());
        for _ in 0..10 {
            assert_eq!(l.failed(&s, T0).await, None);
        }
        assert_eq!(l.locked(&s, T0).await, None);
        assert!(kv.keys().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_kv_counts_and_locks_locally() {
        let kv = Arc::new(MemoryKv::new());
        let l = lockout(
            &kv,
            LockoutPolicy {
                failures: 6,
                ..policy()
            },
            Options {
                fallback_divisor: 2,
                ..Options::default()
            },
        );
        let s = Subject::User("eve".into());
        // One failure recorded in the KV before it hangs: the local count starts afresh.
        assert_eq!(l.failed(&s, T0).await, None);
        kv.set_mode(MemoryMode::Hang);
        let start = tokio::time::Instant::now();
        assert_eq!(l.failed(&s, T0).await, None);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert!(l.in_fallback());
        assert_eq!(l.locked(&s, T0).await, None);
        assert_eq!(l.failed(&s, T0).await, None);
        // ceil(6 / 2) = 3 local failures lock.
        assert_eq!(l.failed(&s, T0).await, Some(T0 + 900_000));
        assert_eq!(l.locked(&s, T0 + 1).await, Some(T0 + 900_000));
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        // The local lock outlives the cool-down.
        kv.set_mode(MemoryMode::Healthy);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(l.locked(&s, T0 + 6_000).await, Some(T0 + 900_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_clear_answer_is_trusted_for_clear_for_only() {
        let kv = Arc::new(MemoryKv::new());
        let l = lockout(&kv, policy(), Options::default());
        let s = Subject::Client("192.0.2.9".parse().unwrap());
        assert_eq!(l.locked(&s, T0).await, None);
        // Within CLEAR_FOR the KV is not asked: a hanging KV costs no time and no fallback.
        kv.set_mode(MemoryMode::Hang);
        let start = tokio::time::Instant::now();
        assert_eq!(l.locked(&s, T0 + 999).await, None);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(!l.in_fallback());
        // Another subject is asked for.
        assert_eq!(l.locked(&Subject::User("x".into()), T0 + 999).await, None);
        assert!(l.in_fallback());
        // After CLEAR_FOR the KV is asked again and a lock written meanwhile is honoured.
        kv.set_mode(MemoryMode::Healthy);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(!l.in_fallback());
        kv.put(&l.lock_key(&s), Bytes::from((T0 + 60_000).to_string()));
        assert_eq!(l.locked(&s, T0 + 500).await, None);
        assert_eq!(l.locked(&s, T0 + 1_000).await, Some(T0 + 60_000));
    }

    #[tokio::test]
    async fn a_lock_written_elsewhere_is_read() {
        let kv = Arc::new(MemoryKv::new());
        let l = lockout(&kv, policy(), Options::default());
        let s = Subject::User("frank".into());
        kv.put(&l.lock_key(&s), Bytes::from((T0 + 5).to_string()));
        assert_eq!(l.locked(&s, T0).await, Some(T0 + 5));
        assert_eq!(l.locked(&s, T0 + 5).await, None);
        // Known locally: remembered without the KV.
        kv.put(&l.lock_key(&s), Bytes::from_static(b"junk"));
        assert_eq!(l.locked(&s, T0 + 4).await, Some(T0 + 5));
        let fresh = lockout(&kv, policy(), Options::default());
        assert_eq!(fresh.locked(&s, T0).await, None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_failures_are_counted_exactly() {
        let kv = Arc::new(MemoryKv::new());
        let opts = Options {
            cas_attempts: 10_000,
            ..Options::default()
        };
        let p = LockoutPolicy {
            failures: 40,
            ..policy()
        };
        let ls: Vec<_> = (0..4)
            .map(|_| Arc::new(lockout(&kv, p, opts.clone())))
            .collect();
        let s = Subject::User("grace".into());
        let mut hs = Vec::new();
        for l in &ls {
            for _ in 0..3 {
                let (l, s) = (l.clone(), s.clone());
                hs.push(tokio::spawn(async move {
                    let mut locks = 0;
                    for _ in 0..3 {
                        if l.failed(&s, T0).await.is_some() {
                            locks += 1;
                        }
                    }
                    locks
                }));
            }
        }
        let mut locks = 0;
        for h in hs {
            locks += h.await.unwrap();
        }
        // 36 failures < 40: no lock.
        assert_eq!(locks, 0);
        let key = ls[0].failure_key(&s, T0);
        assert_eq!(kv.value(&key), Some(Bytes::from_static(b"36")));
        for _ in 0..3 {
            assert_eq!(ls[1].failed(&s, T0).await, None);
        }
        assert!(ls[2].failed(&s, T0).await.is_some());
        for l in &ls {
            assert!(l.locked(&s, T0).await.is_some());
        }
    }
}
