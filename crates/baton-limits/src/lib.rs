//! Cluster-wide limits, shared by every Baton process through the JetStream KV bucket
//! `baton-limits` (provisioned by `baton_queue`).
//!
//! | module | owns |
//! |---|---|
//! | [`kv`] | the compare-and-set seam ([`Kv`]) over a JetStream KV bucket, and [`MemoryKv`] for tests |
//! | [`window`] | fixed UTC windows, quotas, and the KV key layout (scope values only as hashes) |
//! | [`counter`] | [`SharedCounter`]: windowed budgets (messages per domain per hour, …) reserved in chunks |
//! | [`lockout`] | [`Lockout`]: AUTH failure counting and lockouts per user name or client network |
//! | [`lease`] | [`SharedSemaphore`]: at most N concurrent connections to a destination across a pool |
//! | [`marks`] | [`Marks`]: "hold off this key until T" marks shared across processes |
//!
//! # One rule for NATS trouble
//!
//! Every KV round trip has a timeout ([`Options::timeout`], default 250 ms). A timeout or an
//! error switches that limit object to its **local fallback** for a cool-down
//! ([`Options::cooldown`], default 5 s): during the cool-down no KV call is made at all, so a
//! dead or slow NATS costs one timeout per cool-down, not one per message. The fallback is
//! never "unlimited" and never waits: it enforces the limit locally, divided by
//! [`Options::fallback_divisor`] (the number of processes assumed to share the limit), rounded
//! up. Each result says whether the fallback decided it, so callers can count it. After the
//! cool-down the next call tries NATS again.
//!
//! # Local state is bounded
//!
//! Every limit keeps its local state (allowances, exhausted windows, fallback counts, cached
//! marks and locks) in a table of at most [`Options::max_keys`] keys (default 100 000):
//! entries of ended windows are dropped, and beyond the cap the oldest entry is evicted
//! (losing at most its unused allowance or its fallback count).
//!
//! # Clocks
//!
//! Callers pass the time as Unix milliseconds (`now_ms`), which must be wall-clock time: the
//! windows are aligned to UTC and shared by every process, so skew between processes moves a
//! window boundary by the skew. Timeouts and cool-downs use the monotonic clock.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod counter;
pub mod kv;
pub mod lease;
pub mod lockout;
pub mod marks;
mod table;
pub mod window;

use std::time::Duration;

pub use counter::{SharedCounter, Take, Want};
pub use kv::{Kv, KvError, MemoryKv, MemoryMode, read_modify_write, timed};
pub use lease::{Acquire, LeaseOptions, Permit, SharedSemaphore};
pub use lockout::{Lockout, LockoutPolicy, Subject};
pub use marks::Marks;
pub use window::{BudgetKey, InvalidNamespace, Period, Quota};

use parking_lot::Mutex;
use tokio::time::Instant;

/// Tuning shared by every limit object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Longest wait for one KV round trip (default 250 ms).
    pub timeout: Duration,
    /// How long a limit object stays in its local fallback after a KV timeout or error,
    /// without calling NATS (default 5 s).
    pub cooldown: Duration,
    /// The number of processes assumed to share a limit: the fallback allows
    /// `ceil(limit / fallback_divisor)` locally (default 1; 0 is taken as 1).
    pub fallback_divisor: u32,
    /// Most keys of local state (default 100 000; 0 is taken as 1).
    pub max_keys: usize,
    /// Most compare-and-set attempts of one operation before it gives up on contention
    /// (default 16).
    pub cas_attempts: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: Duration::from_millis(250),
            cooldown: Duration::from_secs(5),
            fallback_divisor: 1,
            max_keys: 100_000,
            cas_attempts: 16,
        }
    }
}

/// `ceil(limit / divisor)`, at least 1 for a non-zero limit: what one process allows alone.
pub const fn fallback_limit(limit: u64, divisor: u32) -> u64 {
    let d = if divisor == 0 { 1 } else { divisor as u64 };
    limit.div_ceil(d)
}

/// Whether a limit object is in its cool-down after a KV failure.
#[derive(Debug)]
pub(crate) struct Health {
    until: Mutex<Option<Instant>>,
    cooldown: Duration,
    what: &'static str,
}

impl Health {
    pub(crate) fn new(cooldown: Duration, what: &'static str) -> Health {
        Health {
            until: Mutex::new(None),
            cooldown,
            what,
        }
    }

    /// In the cool-down: use the local fallback, do not call NATS.
    pub(crate) fn degraded(&self) -> bool {
        matches!(*self.until.lock(), Some(t) if Instant::now() < t)
    }

    /// A KV call failed: start (or extend) the cool-down.
    pub(crate) fn trip(&self, err: &KvError) {
        let mut until = self.until.lock();
        let now = Instant::now();
        let fresh = !matches!(*until, Some(t) if now < t);
        *until = Some(now + self.cooldown);
        if fresh {
            tracing::warn!(
                limit = self.what,
                error = %err,
                cooldown_ms = self.cooldown.as_millis() as u64,
                "shared limits KV unavailable: using the local fallback"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_limit_rounds_up_and_never_reaches_zero() {
        assert_eq!(fallback_limit(50, 3), 17);
        assert_eq!(fallback_limit(51, 3), 17);
        assert_eq!(fallback_limit(52, 3), 18);
        assert_eq!(fallback_limit(1, 64), 1);
        assert_eq!(fallback_limit(10, 1), 10);
        assert_eq!(fallback_limit(10, 0), 10);
        assert_eq!(fallback_limit(0, 3), 0);
        assert_eq!(fallback_limit(u64::MAX, 1), u64::MAX);
        for limit in 1..500u64 {
            for d in 1..20u32 {
                let f = fallback_limit(limit, d);
                assert!(f >= 1);
                // d processes together allow at least the limit, and less than limit + d.
                assert!(f * d as u64 >= limit);
                assert!(f * (d as u64) < limit + d as u64);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn health_cools_down() {
        let h = Health::new(Duration::from_secs(5), "test");
        assert!(!h.degraded());
        h.trip(&KvError::Timeout);
        assert!(h.degraded());
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(h.degraded());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!h.degraded());
    }
}
