//! What one worker process holds right now, per pool: the stream time of every queued message
//! it has taken from a lane and not yet acknowledged or given back. The queue-age gauge
//! (`baton_queue_oldest_message_age_seconds`) is the oldest of these.
//!
//! Lanes are first in, first out (a retry lane's head is always its earliest), and a worker
//! always holds each lane's head while the lane has mail, so the oldest message held by the
//! pool's workers is the oldest queued message of the pool; Prometheus takes the maximum over
//! the workers. Measuring it this way needs no read of the queue stream, whose message API
//! cannot be narrowed to one pool (`crate::permissions`).

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

/// The messages a process holds, by (stream time in Unix nanoseconds, stream sequence).
#[derive(Clone, Default, Debug)]
pub struct Holding {
    held: Arc<Mutex<BTreeSet<(i128, u64)>>>,
}

/// Removes its message from the [`Holding`] when dropped (acknowledged, given back, or
/// abandoned).
#[derive(Debug)]
pub(crate) struct Held {
    holding: Holding,
    key: (i128, u64),
}

impl Drop for Held {
    fn drop(&mut self) {
        self.holding.held.lock().remove(&self.key);
    }
}

impl Holding {
    /// An empty holding.
    pub fn new() -> Holding {
        Holding::default()
    }

    /// Hold the message stored at `stored_ns` (Unix nanoseconds) with `sequence`.
    pub(crate) fn hold(&self, stored_ns: i128, sequence: u64) -> Held {
        let key = (stored_ns, sequence);
        self.held.lock().insert(key);
        Held {
            holding: self.clone(),
            key,
        }
    }

    /// How many messages are held.
    pub fn len(&self) -> usize {
        self.held.lock().len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Age at `now_ns` (Unix nanoseconds) of the oldest message held; `None` when none is.
    pub fn oldest_age(&self, now_ns: i128) -> Option<Duration> {
        let oldest = self.held.lock().first().map(|(t, _)| *t)?;
        let age = u64::try_from(now_ns.saturating_sub(oldest).max(0)).unwrap_or(u64::MAX);
        Some(Duration::from_nanos(age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_held_message_sets_the_age_until_it_is_released() {
        let h = Holding::new();
        assert_eq!(h.oldest_age(10_000), None);
        let a = h.hold(1_000, 7);
        let b = h.hold(4_000, 8);
        // Same stream time, another sequence: both kept.
        let c = h.hold(4_000, 9);
        assert_eq!(h.len(), 3);
        assert_eq!(h.oldest_age(10_000), Some(Duration::from_nanos(9_000)));
        drop(a);
        assert_eq!(h.oldest_age(10_000), Some(Duration::from_nanos(6_000)));
        drop(b);
        assert_eq!(h.len(), 1);
        drop(c);
        assert!(h.is_empty());
        assert_eq!(h.oldest_age(10_000), None);
    }

    #[test]
    fn a_clock_behind_the_stream_says_zero() {
        let h = Holding::new();
        let _a = h.hold(5_000, 1);
        assert_eq!(h.oldest_age(1_000), Some(Duration::ZERO));
    }
}
