//! The KV seam: the three compare-and-set operations every limit in this crate is built from,
//! an implementation for a JetStream KV bucket ([`async_nats::jetstream::kv::Store`]) and an
//! in-memory one ([`MemoryKv`]) that tests can make fail or hang.
//!
//! Revisions are the bucket's sequence numbers: a write succeeds only if the key's latest
//! revision is still the one the writer read ([`Kv::update`]) or the key does not exist
//! ([`Kv::create`]); otherwise it fails with [`KvError::Conflict`] and the caller reads again.
//! A deleted or purged key reads as absent (and `create` re-creates it).
//!
//! This module does not time calls out: the limits wrap every round trip in their own timeout
//! ([`crate::Options::timeout`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_nats::jetstream::kv::{CreateErrorKind, Operation, Store, UpdateErrorKind};
use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;

/// Why a KV operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The key changed since it was read (`update`), or exists (`create`): read it again.
    #[error("the key changed concurrently (wrong last revision)")]
    Conflict,
    /// The round trip did not finish within the limit's timeout.
    #[error("the KV round trip timed out")]
    Timeout,
    /// Every compare-and-set attempt of one operation lost to concurrent writers
    /// ([`crate::Options::cas_attempts`]); NATS itself is fine.
    #[error("every compare-and-set attempt lost to concurrent writers")]
    Contended,
    /// Anything else: NATS unreachable, no JetStream, permission denied, an invalid key.
    #[error("KV error: {0}")]
    Other(String),
}

/// A key's latest value and its revision.
pub type Versioned = (Bytes, u64);

/// Compare-and-set access to one KV bucket. Object safe: the limits hold an `Arc<dyn Kv>`.
pub trait Kv: Send + Sync + 'static {
    /// The key's latest value and revision; `None` if it does not exist (or was deleted).
    fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>>;
    /// Write `value` if the key does not exist; the new revision, or [`KvError::Conflict`].
    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, KvError>>;
    /// Write `value` if the key's latest revision is `revision`; the new revision, or
    /// [`KvError::Conflict`].
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<u64, KvError>>;
}

impl Kv for Store {
    fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        Box::pin(async move {
            match Store::entry(self, key).await {
                Ok(Some(e)) => match e.operation {
                    Operation::Put => Ok(Some((e.value, e.revision))),
                    Operation::Delete | Operation::Purge => Ok(None),
                },
                Ok(None) => Ok(None),
                Err(e) => Err(KvError::Other(e.to_string())),
            }
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, KvError>> {
        Box::pin(async move {
            Store::create(self, key, value)
                .await
                .map_err(|e| match e.kind() {
                    CreateErrorKind::AlreadyExists => KvError::Conflict,
                    _ => KvError::Other(e.to_string()),
                })
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<u64, KvError>> {
        Box::pin(async move {
            Store::update(self, key, value, revision)
                .await
                .map_err(|e| match e.kind() {
                    UpdateErrorKind::WrongLastRevision => KvError::Conflict,
                    UpdateErrorKind::TimedOut => KvError::Timeout,
                    _ => KvError::Other(e.to_string()),
                })
        })
    }
}

impl<T: Kv + ?Sized> Kv for Arc<T> {
    fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        (**self).entry(key)
    }
    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, KvError>> {
        (**self).create(key, value)
    }
    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<u64, KvError>> {
        (**self).update(key, value, revision)
    }
}

/// How a [`MemoryKv`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryMode {
    /// Like a healthy bucket.
    Healthy,
    /// Every call fails with [`KvError::Other`].
    Fail,
    /// Every call never completes (a NATS that accepts the connection and never answers).
    Hang,
}

/// An in-memory bucket with the same compare-and-set semantics as JetStream KV (one global
/// revision sequence, values of the latest revision only). Every call yields to the scheduler
/// first, so concurrent tasks interleave between a read and the write that depends on it.
#[derive(Debug, Default)]
pub struct MemoryKv {
    state: Mutex<MemoryState>,
    mode: AtomicU8,
}

#[derive(Debug, Default)]
struct MemoryState {
    seq: u64,
    entries: BTreeMap<String, Versioned>,
}

impl MemoryKv {
    /// An empty, healthy bucket.
    pub fn new() -> MemoryKv {
        MemoryKv::default()
    }

    /// Change how every following call answers.
    pub fn set_mode(&self, mode: MemoryMode) {
        let m = match mode {
            MemoryMode::Healthy => 0,
            MemoryMode::Fail => 1,
            MemoryMode::Hang => 2,
        };
        self.mode.store(m, Ordering::SeqCst);
    }

    fn mode(&self) -> MemoryMode {
        match self.mode.load(Ordering::SeqCst) {
            1 => MemoryMode::Fail,
            2 => MemoryMode::Hang,
            _ => MemoryMode::Healthy,
        }
    }

    /// The latest value of `key` (for assertions), whatever the mode.
    pub fn value(&self, key: &str) -> Option<Bytes> {
        self.state.lock().entries.get(key).map(|(v, _)| v.clone())
    }

    /// Every key (for assertions), whatever the mode.
    pub fn keys(&self) -> Vec<String> {
        self.state.lock().entries.keys().cloned().collect()
    }

    /// Write `value` unconditionally (for test setup), whatever the mode.
    pub fn put(&self, key: &str, value: Bytes) -> u64 {
        let mut s = self.state.lock();
        s.seq += 1;
        let rev = s.seq;
        s.entries.insert(key.to_owned(), (value, rev));
        rev
    }

    async fn gate(&self) -> Result<(), KvError> {
        tokio::task::yield_now().await;
        match self.mode() {
            MemoryMode::Healthy => Ok(()),
            MemoryMode::Fail => Err(KvError::Other("memory KV set to fail".into())),
            MemoryMode::Hang => futures::future::pending().await,
        }
    }
}

impl Kv for MemoryKv {
    fn entry<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, KvError>> {
        Box::pin(async move {
            self.gate().await?;
            Ok(self.state.lock().entries.get(key).cloned())
        })
    }

    fn create<'a>(&'a self, key: &'a str, value: Bytes) -> BoxFuture<'a, Result<u64, KvError>> {
        Box::pin(async move {
            self.gate().await?;
            let mut s = self.state.lock();
            if s.entries.contains_key(key) {
                return Err(KvError::Conflict);
            }
            s.seq += 1;
            let rev = s.seq;
            s.entries.insert(key.to_owned(), (value, rev));
            Ok(rev)
        })
    }

    fn update<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        revision: u64,
    ) -> BoxFuture<'a, Result<u64, KvError>> {
        Box::pin(async move {
            self.gate().await?;
            let mut s = self.state.lock();
            match s.entries.get(key) {
                Some((_, r)) if *r == revision => {}
                _ => return Err(KvError::Conflict),
            }
            s.seq += 1;
            let rev = s.seq;
            s.entries.insert(key.to_owned(), (value, rev));
            Ok(rev)
        })
    }
}

/// `fut` within `timeout`, a timeout being [`KvError::Timeout`].
pub async fn timed<T>(
    timeout: std::time::Duration,
    fut: impl std::future::Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(KvError::Timeout),
    }
}

/// Read `key`, let `f` decide from its value (`None`: absent) what to write (`None`: nothing)
/// and what to return, and write it with a compare-and-set; on a conflict read again, at most
/// `opts.cas_attempts` times ([`KvError::Contended`] after that). Every round trip is timed out.
pub async fn read_modify_write<T>(
    kv: &dyn Kv,
    opts: &crate::Options,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> Result<(Option<Bytes>, T), KvError>,
) -> Result<T, KvError> {
    for _ in 0..opts.cas_attempts.max(1) {
        let current = timed(opts.timeout, kv.entry(key)).await?;
        let (write, out) = f(current.as_ref().map(|(v, _)| v.as_ref()))?;
        let Some(value) = write else {
            return Ok(out);
        };
        let written = match current {
            None => timed(opts.timeout, kv.create(key, value)).await,
            Some((_, revision)) => timed(opts.timeout, kv.update(key, value, revision)).await,
        };
        match written {
            Ok(_) => return Ok(out),
            Err(KvError::Conflict) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(KvError::Contended)
}

/// A decimal integer (surrounding whitespace allowed).
pub(crate) fn parse_i64(value: &[u8]) -> Option<i64> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// Write `until_ms` to `key` unless it already holds a later time (max-merge); the time the
/// key holds afterwards.
pub(crate) async fn max_merge(
    kv: &dyn Kv,
    opts: &crate::Options,
    key: &str,
    until_ms: i64,
) -> Result<i64, KvError> {
    read_modify_write(kv, opts, key, |current| {
        let old = current.and_then(parse_i64);
        match old {
            Some(old) if old >= until_ms => Ok((None, old)),
            _ => Ok((Some(Bytes::from(until_ms.to_string())), until_ms)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_kv_has_compare_and_set_semantics() {
        let kv = MemoryKv::new();
        assert_eq!(kv.entry("a").await, Ok(None));
        let r1 = kv.create("a", Bytes::from_static(b"1")).await.unwrap();
        assert_eq!(
            kv.create("a", Bytes::from_static(b"x")).await,
            Err(KvError::Conflict)
        );
        assert_eq!(
            kv.update("a", Bytes::from_static(b"x"), r1 + 7).await,
            Err(KvError::Conflict)
        );
        let r2 = kv.update("a", Bytes::from_static(b"2"), r1).await.unwrap();
        assert!(r2 > r1);
        assert_eq!(
            kv.entry("a").await,
            Ok(Some((Bytes::from_static(b"2"), r2)))
        );
        assert_eq!(
            kv.update("missing", Bytes::from_static(b"2"), 0).await,
            Err(KvError::Conflict)
        );
    }

    #[tokio::test]
    async fn max_merge_keeps_the_latest_time() {
        let kv = MemoryKv::new();
        let o = crate::Options::default();
        assert_eq!(max_merge(&kv, &o, "k", 100).await, Ok(100));
        assert_eq!(max_merge(&kv, &o, "k", 50).await, Ok(100));
        assert_eq!(kv.value("k"), Some(Bytes::from_static(b"100")));
        assert_eq!(max_merge(&kv, &o, "k", 150).await, Ok(150));
        kv.put("k", Bytes::from_static(b"garbage"));
        assert_eq!(max_merge(&kv, &o, "k", 10).await, Ok(10));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn read_modify_write_counts_exactly_under_contention() {
        let kv = Arc::new(MemoryKv::new());
        let o = crate::Options {
            cas_attempts: 10_000,
            ..crate::Options::default()
        };
        let mut hs = Vec::new();
        for _ in 0..16 {
            let (kv, o) = (kv.clone(), o.clone());
            hs.push(tokio::spawn(async move {
                for _ in 0..25 {
                    read_modify_write(kv.as_ref(), &o, "n", |v| {
                        let n = v.and_then(parse_i64).unwrap_or(0) + 1;
                        Ok((Some(Bytes::from(n.to_string())), n))
                    })
                    .await
                    .unwrap();
                }
            }));
        }
        for h in hs {
            h.await.unwrap();
        }
        assert_eq!(kv.value("n"), Some(Bytes::from_static(b"400")));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_kv_fails_and_hangs_on_demand() {
        let kv = MemoryKv::new();
        kv.set_mode(MemoryMode::Fail);
        assert!(matches!(kv.entry("a").await, Err(KvError::Other(_))));
        kv.set_mode(MemoryMode::Hang);
        let r = timed(std::time::Duration::from_millis(250), kv.entry("a")).await;
        assert_eq!(r, Err(KvError::Timeout));
        kv.set_mode(MemoryMode::Healthy);
        assert_eq!(kv.entry("a").await, Ok(None));
    }
}
