//! Suspension of destinations that keep failing, so they cannot eat all delivery slots.

use std::collections::HashMap;

/// When a destination is suspended and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspensionPolicy {
    /// Consecutive connection-level failures that suspend a destination.
    pub failure_threshold: u32,
    /// How long a suspension lasts, milliseconds.
    pub duration_ms: i64,
    /// Most destinations remembered; the least recently seen is evicted beyond that.
    pub max_entries: usize,
}

impl Default for SuspensionPolicy {
    /// 5 failures, 2 minutes, 10 000 destinations.
    fn default() -> Self {
        SuspensionPolicy {
            failure_threshold: 5,
            duration_ms: 120_000,
            max_entries: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    failures: u32,
    suspended_until_ms: Option<i64>,
    last_seen_ms: i64,
}

/// Consecutive-failure tracking per destination key (e.g. the MX domain or smarthost).
///
/// After `failure_threshold` consecutive failures the destination is suspended for
/// `duration_ms`: the worker defers its mail without connecting. When the suspension ends the
/// next attempt is a probe: one failure suspends it again, a success forgets it. Failures
/// reported during a suspension do not extend it.
#[derive(Debug, Clone)]
pub struct SuspensionTracker {
    policy: SuspensionPolicy,
    entries: HashMap<String, Entry>,
}

impl Default for SuspensionTracker {
    fn default() -> Self {
        Self::new(SuspensionPolicy::default())
    }
}

impl SuspensionTracker {
    /// An empty tracker.
    pub fn new(policy: SuspensionPolicy) -> Self {
        SuspensionTracker {
            policy,
            entries: HashMap::new(),
        }
    }

    /// Record a connection-level failure of `dest` at `now_ms`.
    pub fn record_failure(&mut self, dest: &str, now_ms: i64) {
        if !self.entries.contains_key(dest) {
            self.make_room();
        }
        let policy = self.policy;
        let entry = self.entries.entry(dest.to_string()).or_insert(Entry {
            failures: 0,
            suspended_until_ms: None,
            last_seen_ms: now_ms,
        });
        entry.failures = entry.failures.saturating_add(1);
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        let suspended = entry.suspended_until_ms.is_some_and(|u| now_ms < u);
        if !suspended && entry.failures >= policy.failure_threshold.max(1) {
            entry.suspended_until_ms = Some(now_ms.saturating_add(policy.duration_ms));
        }
    }

    /// Forget every destination: the routes they were measured on changed (a new smarthost
    /// list, another TLS policy), so their failures say nothing about the new ones.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Record a success: `dest` is forgotten.
    pub fn record_success(&mut self, dest: &str) {
        self.entries.remove(dest);
    }

    /// End of `dest`'s suspension, if it is suspended at `now_ms`.
    pub fn suspended_until(&self, dest: &str, now_ms: i64) -> Option<i64> {
        self.entries
            .get(dest)
            .and_then(|e| e.suspended_until_ms)
            .filter(|&until| now_ms < until)
    }

    /// Number of destinations suspended at `now_ms` (for a gauge).
    pub fn suspended_count(&self, now_ms: i64) -> usize {
        self.entries
            .values()
            .filter(|e| e.suspended_until_ms.is_some_and(|u| now_ms < u))
            .count()
    }

    /// Number of destinations tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no destination is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Evict the least recently seen entry when full.
    fn make_room(&mut self) {
        if self.entries.len() < self.policy.max_entries.max(1) {
            return;
        }
        let oldest = self
            .entries
            .iter()
            .min_by_key(|(_, e)| e.last_seen_ms)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.entries.remove(&k);
        }
    }
}
