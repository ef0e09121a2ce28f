//! Outbound shaping shared by every worker of a pool (issue 18), the pure half: which *site* a
//! destination belongs to, the limits that apply to it, whether a reply means "you are sending
//! too fast", how long to back off, an IP warm-up day's budget, and where a deferral that does
//! not count as an attempt goes in the retry lanes. The counting itself (KV budgets,
//! semaphores, back-off marks) is `baton-limits`; the worker (`baton-delivery`) combines them.
//!
//! **Site.** Budgets are per site, not per recipient domain, so every domain one provider hosts
//! shares one budget: the registrable domain of the MX host (`gmail-smtp-in.l.google.com` →
//! `google.com`; `mx1.example.co.uk` → `example.co.uk`), an address literal as itself, and in
//! Smarthost mode the smarthost `host:port`. The registrable domain is the last two labels, or
//! three when the second-level label is a public one ([`public_second_level`]: a short list of
//! common ones plus the `co|com|net|org|ac|gov|edu|ne|or|go|gob|mil|nic` + two-letter country
//! code rule). No public-suffix list is shipped: a host under an unusual public suffix counts
//! as one site with its neighbours under that suffix, which only makes shaping stricter.
//!
//! **Throttling replies** ([`is_throttle`]): a `421` without an enhanced status or with a
//! `4.7.x` one (policy: "4.7.0 Too many connections"), or with another status but rate-limit
//! wording — a `421 4.3.2` (shutting down) or `421 4.4.2` (timeout) is the server's own
//! trouble, retried as usual; a `450`, `451` or `452` whose enhanced status is `4.7.x` and
//! which either has a rate-limit status (`4.7.28`, Gmail's "unusual rate"; `4.7.500`–`4.7.699`,
//! Microsoft's throttling ranges) or rate-limit wording ("rate", "too many", "throttl", "try
//! again later", "temporarily deferred", "slow down", "exceeded", "too fast"); greylisting
//! ("greylist"/"graylist") never is. A `5xx` never is (it bounces as any `5xx`).
//!
//! Times are Unix milliseconds.

use std::net::IpAddr;
use std::time::Duration;

use baton_smtp::reply::Reply;

use crate::retry::{RetryDecision, RetrySchedule, jitter};

/// Second-level labels that are public registries under a two-letter country code
/// (`example.co.uk`, `example.com.au`, `example.ne.jp`, `example.gob.mx`).
const PUBLIC_SECOND_LEVEL_LABELS: [&str; 13] = [
    "co", "com", "net", "org", "ac", "gov", "edu", "ne", "or", "go", "gob", "mil", "nic",
];

/// Public second levels outside the country-code rule.
const PUBLIC_SECOND_LEVEL_EXTRA: [&str; 6] = [
    "ltd.uk",
    "plc.uk",
    "me.uk",
    "asn.au",
    "id.au",
    "blogspot.com",
];

/// Whether `sld.tld` (lower-case) is a public registry, so that registrable domains under it
/// have three labels.
pub fn public_second_level(sld: &str, tld: &str) -> bool {
    let country = tld.len() == 2 && tld.bytes().all(|b| b.is_ascii_alphabetic());
    (country && PUBLIC_SECOND_LEVEL_LABELS.contains(&sld))
        || PUBLIC_SECOND_LEVEL_EXTRA
            .iter()
            .any(|e| e.split_once('.') == Some((sld, tld)))
}

/// The site of an MX host (or of a recipient domain delivered to its own A record): its
/// registrable domain, lower-case, without a trailing dot; an IP address (or an address
/// literal `[192.0.2.1]`) as itself.
pub fn site_of_host(host: &str) -> String {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    let bare = bare.strip_prefix("ipv6:").unwrap_or(bare);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return ip.to_string();
    }
    let labels: Vec<&str> = h.split('.').filter(|l| !l.is_empty()).collect();
    let n = labels.len();
    if n <= 2 {
        return labels.join(".");
    }
    let keep = if public_second_level(labels[n - 2], labels[n - 1]) {
        3
    } else {
        2
    };
    labels[n - keep..].join(".")
}

/// The site of a smarthost: `host:port`, lower-case.
pub fn smarthost_site(host: &str, port: u16) -> String {
    format!(
        "{}:{port}",
        host.trim().trim_end_matches('.').to_ascii_lowercase()
    )
}

/// One override of the destination limits (`spec.limits.destinations.overrides[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationOverride {
    /// A site or recipient domain, lower-case; `*.example.org` matches its subdomains.
    pub destination: String,
    /// Concurrent connections across the pool (0: the pool's value).
    pub max_connections: u32,
    /// Messages per minute across the pool (0: the pool's value).
    pub messages_per_minute: u32,
}

/// A pool's destination limits (`spec.limits.destinations`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationLimits {
    /// Concurrent connections per site across the pool (0: none beyond the per-worker cap).
    pub max_connections: u32,
    /// Messages per minute per site across the pool (0: none).
    pub messages_per_minute: u32,
    /// First match wins.
    pub overrides: Vec<DestinationOverride>,
}

/// The limits that apply to one delivery, and what they are counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteLimits {
    /// What the budgets are counted under: the site, or — when the override that applies
    /// matched the recipient domain rather than the site — `domain:<override destination>`,
    /// so every domain that override names shares one budget of its own.
    pub scope: String,
    /// Concurrent connections across the pool (0: no pool-wide cap).
    pub max_connections: u32,
    /// Messages per minute across the pool (0: no limit).
    pub messages_per_minute: u32,
}

impl SiteLimits {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.max_connections == 0 && self.messages_per_minute == 0
    }
}

/// Whether `name` (lower-case) is matched by `pattern`: equal, or `*.x` and a subdomain of `x`.
pub fn destination_matches(pattern: &str, name: &str) -> bool {
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(parent) => name
            .strip_suffix(parent)
            .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

impl DestinationLimits {
    /// Whether the pool limits nothing (no value and no override).
    pub fn is_empty(&self) -> bool {
        self.max_connections == 0 && self.messages_per_minute == 0 && self.overrides.is_empty()
    }

    /// The limits of a delivery to `site` for recipient `domain` (both lower-case; `domain`
    /// empty in Smarthost mode): the first override naming the site or the domain, its zero
    /// fields taking the pool's values; the pool's values when none does.
    pub fn for_destination(&self, site: &str, domain: &str) -> SiteLimits {
        let pool = SiteLimits {
            scope: site.to_owned(),
            max_connections: self.max_connections,
            messages_per_minute: self.messages_per_minute,
        };
        for o in &self.overrides {
            let pattern = o.destination.to_ascii_lowercase();
            let scope = if destination_matches(&pattern, site) {
                site.to_owned()
            } else if destination_matches(&pattern, domain) {
                format!("domain:{pattern}")
            } else {
                continue;
            };
            let or = |v: u32, d: u32| if v == 0 { d } else { v };
            return SiteLimits {
                scope,
                max_connections: or(o.max_connections, self.max_connections),
                messages_per_minute: or(o.messages_per_minute, self.messages_per_minute),
            };
        }
        pool
    }
}

/// Wording of a rate-limit reply (matched lower-case).
const THROTTLE_WORDS: [&str; 8] = [
    "rate",
    "too many",
    "throttl",
    "try again later",
    "temporarily deferred",
    "slow down",
    "exceeded",
    "too fast",
];

/// Whether `reply` says the sender is going too fast (see the module docs for the rule).
pub fn is_throttle(reply: &Reply) -> bool {
    if !matches!(reply.code, 421 | 450..=452) {
        return false;
    }
    let text = reply.text().to_ascii_lowercase();
    if text.contains("greylist") || text.contains("graylist") {
        return false;
    }
    let worded = THROTTLE_WORDS.iter().any(|w| text.contains(w));
    let status = reply.status.filter(|s| s.agrees_with(reply.code));
    if reply.code == 421 {
        // A 421 says why in its status: 4.7.x (or none) is the server's policy towards us;
        // 4.3.x (shutting down), 4.4.x (timeout) and the like are trouble of its own.
        return status.is_none_or(|s| s.subject == 7) || worded;
    }
    let Some(status) = status.filter(|s| s.class == 4 && s.subject == 7) else {
        return false;
    };
    status.detail == 28 || (500..=699).contains(&status.detail) || worded
}

/// Back-off after throttling replies (`spec.limits.throttle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    /// First back-off.
    pub initial_ms: i64,
    /// Longest back-off.
    pub max_ms: i64,
}

/// Default first back-off: one minute.
pub const DEFAULT_BACKOFF_INITIAL_SECS: u64 = 60;
/// Default longest back-off: fifteen minutes.
pub const DEFAULT_BACKOFF_MAX_SECS: u64 = 900;
/// Shortest back-off whatever the configuration says.
const MIN_BACKOFF_MS: i64 = 1_000;

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy::from_secs(0, 0)
    }
}

impl BackoffPolicy {
    /// From seconds; 0 takes the default; `max` is at least `initial`.
    pub fn from_secs(initial: u64, max: u64) -> BackoffPolicy {
        let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let initial_ms = ms(if initial == 0 {
            DEFAULT_BACKOFF_INITIAL_SECS
        } else {
            initial
        })
        .max(MIN_BACKOFF_MS);
        let max_ms = ms(if max == 0 {
            DEFAULT_BACKOFF_MAX_SECS
        } else {
            max
        })
        .max(initial_ms);
        BackoffPolicy { initial_ms, max_ms }
    }

    /// The un-jittered back-off after the `consecutive`-th throttling reply in a row (1 =
    /// the first): `initial · 2^(consecutive − 1)`, at most `max`.
    pub fn base_ms(&self, consecutive: u32) -> i64 {
        let doublings = consecutive.saturating_sub(1).min(62);
        let factor = 1i64.checked_shl(doublings).unwrap_or(i64::MAX);
        self.initial_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// [`BackoffPolicy::base_ms`] with ±20 % jitter drawn from the uniform random `r`, never
    /// above `max` nor below one second.
    pub fn delay_ms(&self, consecutive: u32, r: u64) -> i64 {
        let base = self.base_ms(consecutive);
        let span = base / 5; // 20 %
        let width = u64::try_from(span.saturating_mul(2)).unwrap_or(0);
        let offset = if width == 0 {
            0
        } else {
            i64::try_from(r % (width + 1)).unwrap_or(0)
        };
        let floor = MIN_BACKOFF_MS.min(self.max_ms);
        (base - span + offset).clamp(floor, self.max_ms.max(floor))
    }
}

/// Throttling streaks per site, as one worker saw them: the number of back-offs in a row and
/// when the current one ends. Replies that arrive while a back-off runs (connections opened
/// before it began) belong to the same burst: they neither lengthen the streak nor the
/// back-off. A success ends the streak. Bounded: past [`ThrottleStreaks::MAX_SITES`] sites
/// every streak is forgotten (a forgotten streak only means a shorter next back-off).
#[derive(Debug, Default)]
pub struct ThrottleStreaks {
    streaks: std::collections::HashMap<String, (u32, i64)>,
}

impl ThrottleStreaks {
    /// Most sites remembered.
    pub const MAX_SITES: usize = 10_000;

    /// A throttling reply from `site` at `now_ms`: when its back-off ends. Outside a running
    /// back-off the streak grows by one and a new back-off starts
    /// ([`BackoffPolicy::delay_ms`] with the random `r`).
    pub fn throttled(&mut self, site: &str, now_ms: i64, policy: &BackoffPolicy, r: u64) -> i64 {
        if self.streaks.len() >= Self::MAX_SITES && !self.streaks.contains_key(site) {
            self.streaks.clear();
        }
        let (n, until) = self.streaks.entry(site.to_owned()).or_insert((0, i64::MIN));
        if now_ms < *until {
            return *until;
        }
        *n = n.saturating_add(1);
        *until = now_ms.saturating_add(policy.delay_ms(*n, r));
        *until
    }

    /// `site` accepted mail: its streak ends.
    pub fn succeeded(&mut self, site: &str) {
        self.streaks.remove(site);
    }

    /// The current streak of `site`.
    pub fn streak(&self, site: &str) -> u32 {
        self.streaks.get(site).map_or(0, |(n, _)| *n)
    }
}

/// Milliseconds per UTC day.
pub const DAY_MS: i64 = 86_400_000;

/// The UTC day (days since 1970-01-01) holding `now_ms`.
pub const fn utc_day(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

/// Milliseconds from `now_ms` to the next 00:00 UTC (≥ 1).
pub const fn until_next_utc_day(now_ms: i64) -> i64 {
    let left = (utc_day(now_ms) + 1) * DAY_MS - now_ms;
    if left < 1 { 1 } else { left }
}

/// An egress identity's warm-up schedule (`spec.egress[].warmup`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warmup {
    /// First day of the schedule, days since 1970-01-01 (UTC).
    pub start_day: i64,
    /// Messages per day from `start_day`; unlimited after the last entry.
    pub daily_limits: Vec<u32>,
}

impl Warmup {
    /// Messages allowed on UTC day `day`: `None` when unlimited (after the schedule, or an
    /// empty schedule); the first entry before the start; a zero entry allows nothing.
    pub fn budget(&self, day: i64) -> Option<u32> {
        let first = *self.daily_limits.first()?;
        if day < self.start_day {
            return Some(first);
        }
        let d = usize::try_from(day - self.start_day).ok()?;
        self.daily_limits.get(d).copied()
    }

    /// Whether the identity is warmed on `day` (its schedule is over).
    pub fn finished(&self, day: i64) -> bool {
        self.budget(day).is_none()
    }
}

/// Why a message waited or was deferred before (or instead of) a delivery attempt; the
/// `reason` label of `baton_destination_waits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShapingReason {
    /// The site's pool-wide connection cap was full.
    Connections,
    /// The site's pool-wide messages-per-minute budget was spent.
    Rate,
    /// Every egress identity's warm-up budget for the day was spent.
    Warmup,
    /// The site is held off after a throttling reply.
    Backoff,
}

impl ShapingReason {
    /// Every reason.
    pub const ALL: [ShapingReason; 4] = [
        ShapingReason::Connections,
        ShapingReason::Rate,
        ShapingReason::Warmup,
        ShapingReason::Backoff,
    ];

    /// The metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ShapingReason::Connections => "connections",
            ShapingReason::Rate => "rate",
            ShapingReason::Warmup => "warmup",
            ShapingReason::Backoff => "backoff",
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Where a deferral that does **not** count as an attempt goes (shaping: a full connection
/// cap, a spent budget, a back-off, a throttling reply). The message wants to come back in
/// `want_ms` (at least one second): it goes to the first tier whose delay is at least that
/// (the last tier when none is), due after `min(want, tier delay)` plus the schedule's jitter
/// (≤ 10 % of that wait), never past the maximum age. Choosing a tier whose delay covers the
/// wait keeps the tiers' ordering: the message never becomes due later than mail published to
/// the same tier after it, so it delays no one. [`RetryDecision::Expire`] once the message is
/// too old (expiry still applies to shaped mail).
pub fn uncounted_retry(
    schedule: &RetrySchedule,
    want_ms: i64,
    received_at_ms: i64,
    now_ms: i64,
    seed: &str,
) -> RetryDecision {
    if schedule.is_expired(received_at_ms, now_ms) {
        return RetryDecision::Expire;
    }
    let want = want_ms.max(MIN_BACKOFF_MS);
    let tiers = schedule.tiers();
    let last = tiers.len().saturating_sub(1);
    let tier = tiers
        .iter()
        .position(|d| millis(*d) >= want)
        .unwrap_or(last);
    let delay = tiers.get(tier).map_or(want, |d| millis(*d)).min(want);
    let extra = millis(jitter(
        Duration::from_millis(u64::try_from(delay).unwrap_or(0)),
        seed,
    ));
    let deadline = received_at_ms.saturating_add(millis(schedule.max_age()));
    RetryDecision::Retry {
        tier: u32::try_from(tier).unwrap_or(u32::MAX),
        not_before_ms: now_ms
            .saturating_add(delay)
            .saturating_add(extra)
            .min(deadline),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "shaping_tests.rs"]
mod tests;
