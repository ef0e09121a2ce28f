//! The pool-wide connection cap per site: a thin adapter over `baton_limits`' leased
//! semaphore ([`SharedSemaphore`]), keys `out.<pool>.conn.<hash(scope)>`. A lease is held for
//! the connection's life, idle time included: a connection to a capped site kept for reuse
//! keeps its lease in the connection cache (`deliver::Connections`, renewed with this
//! worker's other leases), the next delivery to the site takes both, and the lease is released
//! when the connection is closed — at the messages-per-connection cap, after the idle timeout,
//! or on trouble. So open connections never outnumber leases, and an idle connection holds
//! a slot of the cap for at most the idle timeout.

use std::sync::Arc;

use baton_limits::{Acquire, Kv, LeaseOptions, Options, Permit, SharedSemaphore};

/// Connection leases of one pool (`None` inside when the namespace is not key-safe).
pub(crate) struct Leases {
    sem: Option<SharedSemaphore>,
}

/// A held lease: released when dropped.
pub(crate) struct Lease {
    _permit: Permit,
}

/// The answer of [`Leases::try_acquire`].
pub(crate) enum Acquired {
    /// A lease is ours (`None`: no cap could be applied); `fallback`: decided locally (NATS
    /// slow or unreachable).
    Granted {
        /// The lease.
        lease: Option<Lease>,
        /// Decided by the local fallback.
        fallback: bool,
    },
    /// `cap` leases are held across the pool.
    Full,
}

impl Leases {
    /// Leases over `kv` under `<prefix>.conn`, held as `holder` (unique per process). Spawns
    /// the renewal task: call within a Tokio runtime.
    pub(crate) fn new(kv: Arc<dyn Kv>, opts: Options, prefix: &str, holder: &str) -> Leases {
        let lease_opts = LeaseOptions {
            limits: opts,
            ..LeaseOptions::default()
        };
        let sem = match SharedSemaphore::new(kv, prefix, holder, lease_opts) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "pool-wide connection caps not applied");
                None
            }
        };
        Leases { sem }
    }

    /// One of `cap` (> 0) connections to `scope` across the pool.
    pub(crate) async fn try_acquire(&self, scope: &str, cap: u32, now_ms: i64) -> Acquired {
        let Some(sem) = &self.sem else {
            return Acquired::Granted {
                lease: None,
                fallback: false,
            };
        };
        match sem.try_acquire(scope, cap, now_ms).await {
            Acquire::Granted(p) => Acquired::Granted {
                lease: Some(Lease { _permit: p }),
                fallback: false,
            },
            Acquire::Fallback(p) => Acquired::Granted {
                lease: Some(Lease { _permit: p }),
                fallback: true,
            },
            Acquire::Full => Acquired::Full,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use baton_limits::MemoryKv;

    #[tokio::test]
    async fn a_cap_is_shared_by_every_holder_and_freed_on_drop() {
        let kv = Arc::new(MemoryKv::new());
        let a = Leases::new(kv.clone(), Options::default(), "out.bulk", "w1");
        let b = Leases::new(kv.clone(), Options::default(), "out.bulk", "w2");
        // Wall-clock time: lease expiry is compared with it.
        let now = crate::now_ms();
        let Acquired::Granted {
            lease: Some(first),
            fallback: false,
        } = a.try_acquire("google.com", 2, now).await
        else {
            panic!("first lease");
        };
        assert!(matches!(
            b.try_acquire("google.com", 2, now).await,
            Acquired::Granted { lease: Some(_), .. }
        ));
        // The second lease of `b` was dropped at once: one slot is free again after its
        // release reaches the KV.
        let mut freed = false;
        for _ in 0..100 {
            if let Acquired::Granted { .. } = b.try_acquire("google.com", 2, now).await {
                freed = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(freed, "a dropped lease is given back");
        assert!(matches!(
            b.try_acquire("outlook.com", 1, now).await,
            Acquired::Granted { lease: Some(_), .. }
        ));
        let held = [first];
        let full = b.try_acquire("google.com", 1, now).await;
        assert!(matches!(full, Acquired::Full), "cap 1 is held by `a`");
        drop(held);
        for k in kv.keys() {
            assert!(k.starts_with("out.bulk.conn."), "{k}");
        }
    }
}
