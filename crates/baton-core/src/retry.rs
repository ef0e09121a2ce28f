//! The retry schedule: a pure function from (attempts made, arrival, now) to the next step.
//!
//! Deferred recipients are re-published to retry tier `t` of their pool; each tier has one
//! fixed delay. A message older than the pool's maximum age expires (and bounces). Times are
//! Unix milliseconds.
//!
//! **Jitter.** Mail deferred together (a receiver's outage) would otherwise come back
//! together, in lockstep, at every tier. [`RetrySchedule::next_jittered`] adds to the tier
//! delay `d` an extra `j ∈ [0, d / 10]` (at most 10 % of the tier delay), a pure function of
//! a seed (the message id and attempt), so it is deterministic and testable.
//!
//! The jitter only ever *adds* delay, never retries earlier than the tier says, and that is
//! what keeps a tier consumer's head-of-line wait bounded: within a tier, due times are no
//! longer exactly in arrival order, but a message arriving at `a₁` is due by `a₁ + d + d/10`
//! and any message behind it (arrival `a₂ ≥ a₁`) is due no earlier than `a₂ + d ≥ a₁ + d`. So
//! when the consumer waits for its head, mail behind it waits past its own due time by at
//! most `d / 10` — the jitter bound (symmetric ±10 % jitter would allow twice that).

use std::time::Duration;

/// Tier delays used when a pool sets none: 1m, 5m, 15m, 1h, 4h.
pub const DEFAULT_TIERS_SECS: [u64; 5] = [60, 300, 900, 3600, 14_400];
/// Maximum queue lifetime used when a pool sets none: 5 days.
pub const DEFAULT_MAX_AGE_SECS: u64 = 5 * 24 * 3600;

/// What to do after a failed delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Publish to retry tier `tier`, not to be attempted before `not_before_ms`.
    Retry {
        /// Retry tier index (`baton.retry.<pool>.<tier>`).
        tier: u32,
        /// Earliest next attempt, Unix milliseconds.
        not_before_ms: i64,
    },
    /// The message is too old: give up and bounce.
    Expire,
}

/// Retry tiers and maximum age of one SendingPool (the worker builds it from its pool plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule {
    tiers: Vec<Duration>,
    max_age: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl RetrySchedule {
    /// A schedule from explicit tiers and maximum age; empty tiers or a zero age take the
    /// defaults.
    pub fn new(tiers: Vec<Duration>, max_age: Duration) -> Self {
        let tiers = if tiers.is_empty() {
            DEFAULT_TIERS_SECS
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect()
        } else {
            tiers
        };
        let max_age = if max_age.is_zero() {
            Duration::from_secs(DEFAULT_MAX_AGE_SECS)
        } else {
            max_age
        };
        RetrySchedule { tiers, max_age }
    }

    /// Tier delays, in order (never empty).
    pub fn tiers(&self) -> &[Duration] {
        &self.tiers
    }

    /// Maximum queue lifetime.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Tier used after `attempt_done` attempts: attempt 1 → tier 0, attempt k → tier
    /// `min(k - 1, last)` (attempt 0 is treated as 1).
    pub fn tier_for_attempt(&self, attempt_done: u32) -> u32 {
        let last = u32::try_from(self.tiers.len().saturating_sub(1)).unwrap_or(u32::MAX);
        attempt_done.saturating_sub(1).min(last)
    }

    /// Whether a message received at `received_at_ms` has reached its maximum age.
    pub fn is_expired(&self, received_at_ms: i64, now_ms: i64) -> bool {
        now_ms.saturating_sub(received_at_ms) >= millis(self.max_age)
    }

    /// Next step after `attempt_done` failed attempts: [`RetryDecision::Expire`] once
    /// `now - received_at >= max_age`; otherwise retry on the attempt's tier at
    /// `now + delay`, capped at `received_at + max_age` so the last attempt happens at expiry.
    pub fn next(&self, attempt_done: u32, received_at_ms: i64, now_ms: i64) -> RetryDecision {
        if self.is_expired(received_at_ms, now_ms) {
            return RetryDecision::Expire;
        }
        let tier = self.tier_for_attempt(attempt_done);
        let delay = self
            .tiers
            .get(tier as usize)
            .copied()
            .unwrap_or(Duration::ZERO);
        let deadline = received_at_ms.saturating_add(millis(self.max_age));
        RetryDecision::Retry {
            tier,
            not_before_ms: now_ms.saturating_add(millis(delay)).min(deadline),
        }
    }
}

/// The jitter of one deferral: `[0, delay / JITTER_DIVISOR]`, from `seed`.
pub const JITTER_DIVISOR: u32 = 10;

/// Extra delay in `[0, delay / 10]` chosen by a hash of `seed`.
pub fn jitter(delay: Duration, seed: &str) -> Duration {
    use sha2::{Digest, Sha256};
    let max_ms = u64::try_from((delay / JITTER_DIVISOR).as_millis()).unwrap_or(u64::MAX);
    if max_ms == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(seed.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let n = u64::from_le_bytes(first);
    Duration::from_millis(n % max_ms.saturating_add(1))
}

impl RetrySchedule {
    /// [`RetrySchedule::next`] with the tier delay stretched by [`jitter`] (at most 10 %),
    /// seeded with `message_id` and the attempt; still capped at `received_at + max_age`.
    pub fn next_jittered(
        &self,
        attempt_done: u32,
        received_at_ms: i64,
        now_ms: i64,
        message_id: &str,
    ) -> RetryDecision {
        match self.next(attempt_done, received_at_ms, now_ms) {
            RetryDecision::Retry {
                tier,
                not_before_ms,
            } => {
                let delay = self
                    .tiers
                    .get(tier as usize)
                    .copied()
                    .unwrap_or(Duration::ZERO);
                let extra = millis(jitter(delay, &format!("{message_id}/{attempt_done}")));
                let deadline = received_at_ms.saturating_add(millis(self.max_age));
                RetryDecision::Retry {
                    tier,
                    not_before_ms: not_before_ms.saturating_add(extra).min(deadline),
                }
            }
            RetryDecision::Expire => RetryDecision::Expire,
        }
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        Self::new(Vec::new(), Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = 60_000;

    #[test]
    fn defaults() {
        let s = RetrySchedule::new(Vec::new(), Duration::ZERO);
        assert_eq!(s, RetrySchedule::default());
        let secs: Vec<u64> = s.tiers().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [60, 300, 900, 3600, 14_400]);
        assert_eq!(s.max_age(), Duration::from_secs(432_000));
    }

    /// Exact vector: a message that keeps failing, each attempt made when it is due.
    #[test]
    fn exact_vector() {
        let s = RetrySchedule::default();
        let t0 = 1_700_000_000_000;
        let mut now = t0;
        let mut got = Vec::new();
        for attempt in 1..=40 {
            match s.next(attempt, t0, now) {
                RetryDecision::Retry {
                    tier,
                    not_before_ms,
                } => {
                    got.push((attempt, tier, (not_before_ms - t0) / M));
                    now = not_before_ms;
                }
                RetryDecision::Expire => {
                    got.push((attempt, u32::MAX, (now - t0) / M));
                    break;
                }
            }
        }
        // Minutes since arrival: 1, 6, 21, 81, then every 240 until the 7200-minute cap.
        let mut want = vec![(1, 0, 1), (2, 1, 6), (3, 2, 21), (4, 3, 81)];
        let mut at = 81;
        let mut attempt = 5;
        while at + 240 < 7200 {
            at += 240;
            want.push((attempt, 4, at));
            attempt += 1;
        }
        want.push((attempt, 4, 7200)); // capped at max age: last attempt at expiry
        want.push((attempt + 1, u32::MAX, 7200));
        assert_eq!(got, want);
        assert_eq!(got.len(), 35);
    }

    /// Mail deferred at the same moment comes back spread over the first 10 % of the tier
    /// delay (never earlier), deterministically per message and attempt.
    #[test]
    fn jitter_spreads_retries_within_ten_percent_of_the_tier() {
        let s = RetrySchedule::default();
        let t0 = 1_700_000_000_000;
        let due: Vec<i64> = (0..200)
            .map(|i| match s.next_jittered(1, t0, t0, &format!("msg-{i}")) {
                RetryDecision::Retry {
                    tier: 0,
                    not_before_ms,
                } => not_before_ms - t0,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(due.iter().all(|d| (60_000..=66_000).contains(d)), "{due:?}");
        let distinct: std::collections::BTreeSet<i64> = due.iter().copied().collect();
        assert!(
            distinct.len() > 150,
            "not in lockstep: {} distinct",
            distinct.len()
        );
        let lo = due.iter().copied().min().unwrap_or_default();
        let hi = due.iter().copied().max().unwrap_or_default();
        assert!(hi - lo > 4_000, "spread over the window: {lo}..{hi}");
        // Deterministic per seed; another attempt of the same message is another draw.
        assert_eq!(
            s.next_jittered(1, t0, t0, "msg-7"),
            s.next_jittered(1, t0, t0, "msg-7")
        );
        assert_eq!(
            jitter(Duration::from_secs(60), "a/1"),
            jitter(Duration::from_secs(60), "a/1")
        );
        assert_ne!(
            jitter(Duration::from_secs(3600), "a/4"),
            jitter(Duration::from_secs(3600), "a/5")
        );
        // Bounds: tiny delays get none, the cap at max age still holds, expiry is unchanged.
        assert_eq!(jitter(Duration::from_millis(9), "x"), Duration::ZERO);
        for seed in ["a", "b", "c", "d"] {
            assert!(jitter(Duration::from_secs(14_400), seed) <= Duration::from_secs(1_440));
        }
        let near_end = t0 + 5 * 24 * 3600 * 1000 - 1;
        assert_eq!(
            s.next_jittered(9, t0, near_end, "m"),
            RetryDecision::Retry {
                tier: 4,
                not_before_ms: t0 + 5 * 24 * 3600 * 1000
            }
        );
        assert_eq!(
            s.next_jittered(9, t0, near_end + 1, "m"),
            RetryDecision::Expire
        );
    }

    #[test]
    fn custom_pool_and_edges() {
        let s = RetrySchedule::new(
            vec![Duration::from_secs(10), Duration::from_secs(20)],
            Duration::from_secs(100),
        );
        let r = |a, now| s.next(a, 0, now);
        assert_eq!(
            r(0, 0),
            RetryDecision::Retry {
                tier: 0,
                not_before_ms: 10_000
            }
        );
        assert_eq!(
            r(1, 0),
            RetryDecision::Retry {
                tier: 0,
                not_before_ms: 10_000
            }
        );
        assert_eq!(
            r(2, 10_000),
            RetryDecision::Retry {
                tier: 1,
                not_before_ms: 30_000
            }
        );
        assert_eq!(
            r(9, 30_000),
            RetryDecision::Retry {
                tier: 1,
                not_before_ms: 50_000
            }
        );
        assert_eq!(
            r(9, 90_000),
            RetryDecision::Retry {
                tier: 1,
                not_before_ms: 100_000
            }
        );
        assert_eq!(
            r(9, 99_999),
            RetryDecision::Retry {
                tier: 1,
                not_before_ms: 100_000
            }
        );
        assert_eq!(r(9, 100_000), RetryDecision::Expire);
        assert!(!s.is_expired(0, 99_999));
        assert!(s.is_expired(0, 100_000));
        assert_eq!(s.tier_for_attempt(u32::MAX), 1);
        // Clock skew (now before arrival) still retries.
        assert_eq!(
            r(1, -5_000),
            RetryDecision::Retry {
                tier: 0,
                not_before_ms: 5_000
            }
        );
        // No overflow at the extremes.
        assert_eq!(s.next(1, i64::MIN, i64::MAX), RetryDecision::Expire);
        assert!(matches!(
            s.next(1, i64::MAX, i64::MAX),
            RetryDecision::Retry { .. }
        ));
    }
}
