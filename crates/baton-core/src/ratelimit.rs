//! Inbound rate limiting: token buckets refilled per minute, time passed in (Unix ms).

use std::collections::HashMap;

/// Units per token: refill is `per_minute` units per millisecond, exact in integers.
const UNITS_PER_TOKEN: u64 = 60_000;

/// A token bucket allowing `per_minute` messages per minute with bursts up to `per_minute`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    per_minute: u32,
    /// Available units (`UNITS_PER_TOKEN` per token).
    units: u64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`. `per_minute = 0` means unlimited.
    pub fn new(per_minute: u32, now_ms: i64) -> Self {
        TokenBucket {
            per_minute,
            units: Self::capacity(per_minute),
            last_ms: now_ms,
        }
    }

    fn capacity(per_minute: u32) -> u64 {
        u64::from(per_minute) * UNITS_PER_TOKEN
    }

    /// The configured rate.
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    fn refill(&mut self, now_ms: i64) {
        if now_ms > self.last_ms {
            let elapsed = now_ms.abs_diff(self.last_ms);
            let added = elapsed.saturating_mul(u64::from(self.per_minute));
            self.units = self
                .units
                .saturating_add(added)
                .min(Self::capacity(self.per_minute));
            self.last_ms = now_ms;
        }
    }

    /// Take one token if available. Always `true` when unlimited. A clock going backwards
    /// adds nothing.
    pub fn try_take(&mut self, now_ms: i64) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        self.refill(now_ms);
        if self.units >= UNITS_PER_TOKEN {
            self.units -= UNITS_PER_TOKEN;
            true
        } else {
            false
        }
    }

    /// Milliseconds until one token is available (0 when one is).
    pub fn wait_ms(&mut self, now_ms: i64) -> u64 {
        if self.per_minute == 0 {
            return 0;
        }
        self.refill(now_ms);
        let missing = UNITS_PER_TOKEN.saturating_sub(self.units);
        missing.div_ceil(u64::from(self.per_minute))
    }

    /// Whether the bucket is full at `now_ms` (an idle key that can be forgotten).
    fn is_full(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.units >= Self::capacity(self.per_minute)
    }
}

/// One [`TokenBucket`] per key (e.g. RelayDomain name), with a bounded number of keys.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    buckets: HashMap<String, TokenBucket>,
    max_keys: usize,
}

impl RateLimiter {
    /// A limiter remembering at most `max_keys` keys (full, idle buckets are dropped first;
    /// dropping a bucket only ever makes the limit more lenient).
    pub fn new(max_keys: usize) -> Self {
        RateLimiter {
            buckets: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Take one token for `key` at rate `per_minute` (0 = unlimited, always `true`). A rate
    /// change (config swap) restarts the key's bucket full at the new rate.
    pub fn check(&mut self, key: &str, per_minute: u32, now_ms: i64) -> bool {
        if per_minute == 0 {
            self.buckets.remove(key);
            return true;
        }
        if let Some(b) = self.buckets.get_mut(key)
            && b.per_minute() == per_minute
        {
            return b.try_take(now_ms);
        }
        if self.buckets.len() >= self.max_keys && !self.buckets.contains_key(key) {
            self.buckets.retain(|_, b| !b.is_full(now_ms));
            if self.buckets.len() >= self.max_keys {
                let oldest = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, b)| b.last_ms)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.buckets.remove(&k);
                }
            }
        }
        let mut bucket = TokenBucket::new(per_minute, now_ms);
        let ok = bucket.try_take(now_ms);
        self.buckets.insert(key.to_string(), bucket);
        ok
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket() {
        let mut b = TokenBucket::new(60, 0);
        for _ in 0..60 {
            assert!(b.try_take(0));
        }
        assert!(!b.try_take(0));
        assert_eq!(b.wait_ms(0), 1000);
        assert!(!b.try_take(999));
        assert_eq!(b.wait_ms(999), 1);
        assert!(b.try_take(1000));
        // Refill never exceeds the burst.
        assert!(TokenBucket::new(2, 0).is_full(10_000_000));
        let mut b = TokenBucket::new(2, 0);
        assert!(b.try_take(i64::MAX) && b.try_take(i64::MAX) && !b.try_take(i64::MAX));
        // Clock going backwards adds nothing.
        let mut b = TokenBucket::new(1, 1000);
        assert!(b.try_take(1000));
        assert!(!b.try_take(0));
        // Unlimited.
        let mut b = TokenBucket::new(0, 0);
        assert!((0..1000).all(|_| b.try_take(0)));
        assert_eq!(b.wait_ms(0), 0);
    }

    #[test]
    fn limiter() {
        let mut l = RateLimiter::new(2);
        assert!(l.check("a", 1, 0));
        assert!(!l.check("a", 1, 1));
        assert!(l.check("b", 1, 0));
        // Rate change restarts the bucket.
        assert!(l.check("a", 2, 2));
        assert!(l.check("a", 2, 2));
        assert!(!l.check("a", 2, 2));
        // A third key evicts the least recently refilled one.
        assert!(l.check("c", 1, 3));
        assert_eq!(l.len(), 2);
        assert!(l.check("x", 0, 3));
        assert!(!l.is_empty());
    }
}
