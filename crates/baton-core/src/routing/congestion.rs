//! Waiting for a busy destination.
//!
//! A destination has a fixed number of connection slots (`maxConnectionsPerDestination`).
//! When every slot is taken, a message for it either waits in the worker's memory for a slot
//! or is deferred to the retry schedule. Waiting is right for a destination that is merely
//! busy (a burst to one big provider drains in seconds); deferring is right for one that is
//! slow or stalled: a message that would wait longer than its first retry delay gains nothing
//! by waiting in memory, and while it waits it holds a place in the worker's fetch window,
//! which would keep mail for every other destination from being fetched (head-of-line
//! blocking). Postfix keeps such mail in its active queue; KumoMTA defers what its per-
//! destination ready queue cannot hold. Baton estimates the wait and defers what exceeds
//! [`CongestionPolicy::max_wait_ms`].
//!
//! A worker holds at most a fixed number of waiting messages without their window place;
//! beyond that it is [`CongestionPolicy::crowded`]: only short waits are allowed, holding the
//! place (back-pressure for a busy but fast destination), and the rest is deferred.
//!
//! The estimate: messages already waiting drain `slots` at a time, each round taking one
//! service time — the moving average of how long a delivery held a slot, or, when all slots
//! have been busy for longer than that (a stalled destination), how long the youngest of them
//! has been busy.

use std::time::Duration;

/// Lowest wait a message is allowed (even when the first retry tier is shorter).
pub const MIN_WAIT: Duration = Duration::from_secs(10);
/// Highest wait a message is allowed (even when the first retry tier is longer).
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// How long a message may wait for a busy destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CongestionPolicy {
    /// Longest estimated (and actual) wait for a connection slot, in milliseconds.
    pub max_wait_ms: i64,
}

impl CongestionPolicy {
    /// The policy for a pool whose first retry tier is `first_tier`: wait at most that long,
    /// clamped to [`MIN_WAIT`]..=[`MAX_WAIT`] (no tier at all: [`MIN_WAIT`]).
    pub fn from_first_tier(first_tier: Option<Duration>) -> Self {
        let wait = first_tier.unwrap_or(MIN_WAIT).clamp(MIN_WAIT, MAX_WAIT);
        CongestionPolicy {
            max_wait_ms: i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The policy when the worker already holds as many waiting messages as it may: a tenth
    /// of the wait. Messages then wait holding their place in the fetch window, so only short
    /// waits (a busy but fast destination) are allowed; longer ones are deferred.
    pub fn crowded(&self) -> Self {
        CongestionPolicy {
            max_wait_ms: self.max_wait_ms / 10,
        }
    }

    /// [`CongestionPolicy::max_wait_ms`] as a duration.
    pub fn max_wait(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.max_wait_ms).unwrap_or(0))
    }

    /// Decide for a message that found every one of `slots` busy with `waiting_ahead`
    /// messages already waiting, at a service time of `service_ms`.
    pub fn decide(&self, waiting_ahead: usize, slots: usize, service_ms: i64) -> SlotWait {
        let rounds = i64::try_from(waiting_ahead / slots.max(1))
            .unwrap_or(i64::MAX)
            .saturating_add(1);
        let estimated_ms = rounds.saturating_mul(service_ms.max(0));
        if estimated_ms > self.max_wait_ms {
            SlotWait::Defer { estimated_ms }
        } else {
            SlotWait::Wait { estimated_ms }
        }
    }
}

/// What a message does when every slot of its destination is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotWait {
    /// Wait in memory for a slot (about `estimated_ms`).
    Wait {
        /// Estimated wait.
        estimated_ms: i64,
    },
    /// Defer to the retry schedule without connecting (`451 4.4.5`).
    Defer {
        /// Estimated wait that was judged too long.
        estimated_ms: i64,
    },
}

/// How long one delivery holds a connection slot of a destination: an exponentially weighted
/// moving average (weight 1/4 for the newest sample), unknown until the first one finishes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceTime {
    average_ms: Option<f64>,
}

impl ServiceTime {
    /// Record that a delivery held a slot for `held_ms`.
    pub fn observe(&mut self, held_ms: i64) {
        let x = held_ms.max(0) as f64;
        self.average_ms = Some(match self.average_ms {
            None => x,
            Some(a) => a + (x - a) / 4.0,
        });
    }

    /// The service time to plan with: the average, or — when every slot has been busy for
    /// longer (`youngest_busy_ms`: age of the most recently started delivery still running,
    /// given only when all slots are busy) — that age, so a stalled destination is noticed
    /// before any of its deliveries finishes. Zero when nothing is known yet.
    pub fn estimate_ms(&self, youngest_busy_ms: Option<i64>) -> i64 {
        let average = self.average_ms.map_or(0, |a| a.round() as i64);
        average.max(youngest_busy_ms.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy(ms: i64) -> CongestionPolicy {
        CongestionPolicy { max_wait_ms: ms }
    }

    #[test]
    fn max_wait_follows_the_first_tier_within_bounds() {
        let p = |s: u64| CongestionPolicy::from_first_tier(Some(Duration::from_secs(s)));
        assert_eq!(p(60).max_wait(), Duration::from_secs(60));
        assert_eq!(p(1).max_wait(), MIN_WAIT);
        assert_eq!(p(3600).max_wait(), MAX_WAIT);
        assert_eq!(CongestionPolicy::from_first_tier(None).max_wait(), MIN_WAIT);
    }

    #[test]
    fn a_crowded_worker_allows_a_tenth_of_the_wait() {
        let p = CongestionPolicy::from_first_tier(Some(Duration::from_secs(60)));
        assert_eq!(p.crowded().max_wait(), Duration::from_secs(6));
        // A slow destination that may still wait when there is room is deferred when crowded;
        // a fast one still waits.
        assert!(matches!(p.decide(120, 20, 1_000), SlotWait::Wait { .. }));
        assert!(matches!(
            p.crowded().decide(120, 20, 1_000),
            SlotWait::Defer { .. }
        ));
        assert!(matches!(
            p.crowded().decide(1_000, 20, 5),
            SlotWait::Wait { .. }
        ));
    }

    #[test]
    fn a_fast_destination_is_waited_for_even_with_a_long_queue() {
        // 20 slots, 5 ms per message: 4,000 ahead drain in 201 rounds ≈ 1 s.
        assert_eq!(
            policy(10_000).decide(4_000, 20, 5),
            SlotWait::Wait { estimated_ms: 1005 }
        );
    }

    #[test]
    fn a_slow_destination_is_deferred_once_the_queue_exceeds_the_wait() {
        // 2 slots, 4 s per message, 10 s allowed: two rounds (8 s) wait, three (12 s) defer.
        let p = policy(10_000);
        assert_eq!(
            p.decide(0, 2, 4_000),
            SlotWait::Wait {
                estimated_ms: 4_000
            }
        );
        assert_eq!(
            p.decide(3, 2, 4_000),
            SlotWait::Wait {
                estimated_ms: 8_000
            }
        );
        assert_eq!(
            p.decide(4, 2, 4_000),
            SlotWait::Defer {
                estimated_ms: 12_000
            }
        );
    }

    #[test]
    fn unknown_service_time_waits() {
        assert_eq!(
            policy(10_000).decide(1_000_000, 1, 0),
            SlotWait::Wait { estimated_ms: 0 }
        );
    }

    #[test]
    fn zero_slots_count_as_one() {
        assert_eq!(
            policy(10).decide(5, 0, 2),
            SlotWait::Defer { estimated_ms: 12 }
        );
    }

    #[test]
    fn service_time_averages_and_a_stall_overrides_it() {
        let mut s = ServiceTime::default();
        assert_eq!(s.estimate_ms(None), 0);
        s.observe(100);
        assert_eq!(s.estimate_ms(None), 100);
        s.observe(500);
        assert_eq!(s.estimate_ms(None), 200);
        // Every slot busy for 30 s: the destination stalls, whatever the average says.
        assert_eq!(s.estimate_ms(Some(30_000)), 30_000);
        // A young busy slot does not lower the average.
        assert_eq!(s.estimate_ms(Some(1)), 200);
        s.observe(-5);
        assert_eq!(s.estimate_ms(None), 150);
    }

    proptest! {
        /// More messages ahead or a slower destination never turns a deferral into a wait.
        #[test]
        fn decisions_are_monotonic(
            ahead in 0usize..100_000, more in 0usize..1_000, slots in 0usize..64,
            service in 0i64..600_000, slower in 0i64..600_000, max in 0i64..600_000,
        ) {
            let p = policy(max);
            let defer = |a, s| matches!(p.decide(a, slots, s), SlotWait::Defer { .. });
            if defer(ahead, service) {
                prop_assert!(defer(ahead + more, service));
                prop_assert!(defer(ahead, service + slower));
            }
        }

        /// The estimate never exceeds the allowed wait when the decision is to wait.
        #[test]
        fn waits_are_within_the_policy(
            ahead in 0usize..100_000, slots in 0usize..64, service in -10i64..600_000,
            max in 0i64..600_000,
        ) {
            match policy(max).decide(ahead, slots, service) {
                SlotWait::Wait { estimated_ms } => prop_assert!(estimated_ms <= max),
                SlotWait::Defer { estimated_ms } => prop_assert!(estimated_ms > max),
            }
        }
    }
}
