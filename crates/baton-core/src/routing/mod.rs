//! Routing decisions: weighted picking (egress identities, smarthosts), MX ordering,
//! upstream health with cool-down, suspension of failing destinations, and whether a message
//! waits for a busy destination or is deferred ([`congestion`]); outbound shaping shared by a
//! pool's workers — sites, destination limits, throttling replies, back-off, warm-up
//! ([`shaping`]).
//!
//! Times are milliseconds on a clock of the caller's choice (monotonic preferred), the same
//! clock for every call on one tracker.

pub mod congestion;
mod health;
pub mod shaping;
mod suspension;

pub use congestion::{CongestionPolicy, ServiceTime, SlotWait};
pub use health::{HealthPolicy, UpstreamHealth};
pub use shaping::{
    BackoffPolicy, DestinationLimits, DestinationOverride, ShapingReason, SiteLimits,
    ThrottleStreaks, Warmup,
};
pub use suspension::{SuspensionPolicy, SuspensionTracker};

use rand::Rng;
use rand::seq::SliceRandom;

/// Pick an index with probability proportional to its weight; `r` is a uniform random
/// number. Zero weights are never picked unless all weights are zero (then uniform).
/// `None` only for an empty slice.
pub fn pick_weighted<T>(items: &[T], weight: impl Fn(&T) -> u32, r: u64) -> Option<usize> {
    if items.is_empty() {
        return None;
    }
    let total: u64 = items.iter().map(|i| u64::from(weight(i))).sum();
    if total == 0 {
        let len = u64::try_from(items.len()).ok()?;
        return usize::try_from(r % len).ok();
    }
    let mut x = r % total;
    for (i, item) in items.iter().enumerate() {
        let w = u64::from(weight(item));
        if x < w {
            return Some(i);
        }
        x -= w;
    }
    None
}

/// How to reach a domain's mail servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxPlan {
    /// MX hosts to try in order (lower-case, no trailing dot).
    Hosts(Vec<String>),
    /// RFC 7505 null MX: the domain accepts no mail; fail permanently (`5.1.10`).
    NullMx,
    /// No MX records: use the domain's own A/AAAA records (RFC 5321 §5.1).
    Implicit,
}

/// Order MX records: by preference, equal preferences shuffled (load spreading), hosts
/// lower-cased without trailing dot, duplicates dropped. A record set consisting only of
/// `0 .` is a null MX; `.` entries mixed with real hosts are ignored; no records →
/// [`MxPlan::Implicit`].
pub fn order_mx(records: Vec<(u16, String)>, rng: &mut impl Rng) -> MxPlan {
    if records.is_empty() {
        return MxPlan::Implicit;
    }
    let mut hosts: Vec<(u16, String)> = records
        .into_iter()
        .map(|(pref, host)| (pref, host.trim_end_matches('.').to_ascii_lowercase()))
        .filter(|(_, host)| !host.is_empty())
        .collect();
    if hosts.is_empty() {
        return MxPlan::NullMx;
    }
    hosts.shuffle(rng);
    hosts.sort_by_key(|(pref, _)| *pref); // stable: keeps the shuffle within a preference
    let mut out: Vec<String> = Vec::with_capacity(hosts.len());
    for (_, host) in hosts {
        if !out.contains(&host) {
            out.push(host);
        }
    }
    MxPlan::Hosts(out)
}

/// Order in which to try a pool's upstreams (smarthosts), given `(weight, health)` pairs:
/// a weighted pick among the available ones first, then the other available ones by
/// descending weight (index order on ties). Upstreams in cool-down are left out while any is
/// available; when none is, all are returned in the same manner (a down upstream is better
/// than no attempt).
pub fn choose_upstream(upstreams: &[(u32, &UpstreamHealth)], now_ms: i64, r: u64) -> Vec<usize> {
    let available: Vec<usize> = (0..upstreams.len())
        .filter(|&i| upstreams[i].1.is_available(now_ms))
        .collect();
    let pool = if available.is_empty() {
        (0..upstreams.len()).collect()
    } else {
        available
    };
    let Some(first) = pick_weighted(&pool, |&i| upstreams[i].0, r) else {
        return Vec::new();
    };
    let mut rest: Vec<usize> = pool.iter().copied().filter(|&i| i != pool[first]).collect();
    rest.sort_by_key(|&i| std::cmp::Reverse(upstreams[i].0));
    let mut order = vec![pool[first]];
    order.extend(rest);
    order
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
