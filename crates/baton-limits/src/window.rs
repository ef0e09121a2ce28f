//! Pure window maths and KV key naming.
//!
//! Windows are fixed and aligned to UTC: window `i` of a period of `p` milliseconds covers Unix
//! times `[i·p, (i+1)·p)` (a day window starts at 00:00 UTC). Every process computes the same
//! window from its own clock, so clock skew between processes moves the boundary by the skew,
//! nothing more.
//!
//! Keys. A scope value (a domain, a user name, an IP address) never appears in a key in clear:
//! it is replaced by [`scope_hash`], the first 12 bytes of its SHA-256 in lower-case hex (24
//! characters). Every key starts with a caller-chosen namespace (dot-separated tokens of
//! `[-/_=a-zA-Z0-9]`), which is what the NATS permissions grant: the ingress writes keys under
//! `in.`, the workers of pool `P` under `out.P.` (`baton_queue::permissions`). Layouts:
//!
//! | what | key |
//! |---|---|
//! | budget window ([`crate::counter`]) | `<namespace>.<m\|h\|d><window index>.<hash>` |
//! | AUTH failures ([`crate::lockout`]) | `<namespace>.fail.<window seconds>s<window index>.<hash>` |
//! | AUTH lock ([`crate::lockout`]) | `<namespace>.lock.<hash>` |
//! | connection leases ([`crate::lease`]) | `<namespace>.conn.<hash>` |
//! | back-off marks ([`crate::marks`]) | `<namespace>.hold.<hash>` |
//!
//! The second token tells the kinds apart, so one namespace can serve several of them.

use std::fmt::Write as _;

/// The length of a fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    /// 60 s.
    Minute,
    /// 3 600 s.
    Hour,
    /// 86 400 s, 00:00 to 24:00 UTC.
    Day,
}

impl Period {
    /// Every period.
    pub const ALL: [Period; 3] = [Period::Minute, Period::Hour, Period::Day];

    /// The period's length in milliseconds.
    pub const fn millis(self) -> i64 {
        match self {
            Period::Minute => 60_000,
            Period::Hour => 3_600_000,
            Period::Day => 86_400_000,
        }
    }

    /// The letter naming the period in keys.
    pub const fn letter(self) -> char {
        match self {
            Period::Minute => 'm',
            Period::Hour => 'h',
            Period::Day => 'd',
        }
    }
}

/// At most `limit` units per window of `period`; `limit` 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    /// The window length.
    pub period: Period,
    /// Units per window; 0: unlimited.
    pub limit: u64,
}

impl Quota {
    /// `limit` per minute.
    pub const fn per_minute(limit: u64) -> Quota {
        Quota {
            period: Period::Minute,
            limit,
        }
    }
    /// `limit` per hour.
    pub const fn per_hour(limit: u64) -> Quota {
        Quota {
            period: Period::Hour,
            limit,
        }
    }
    /// `limit` per UTC day.
    pub const fn per_day(limit: u64) -> Quota {
        Quota {
            period: Period::Day,
            limit,
        }
    }
}

/// The index of the window of `length_ms` (> 0) holding Unix time `now_ms` (floor division, so
/// times before 1970 get negative indices rather than sharing window 0).
pub const fn index_of(length_ms: i64, now_ms: i64) -> i64 {
    now_ms.div_euclid(length_ms)
}

/// The Unix time (ms) at which window `index` of `length_ms` ends (saturating).
pub const fn end_of(length_ms: i64, index: i64) -> i64 {
    index.saturating_add(1).saturating_mul(length_ms)
}

/// The index of the `period` window holding `now_ms`.
pub const fn window_index(period: Period, now_ms: i64) -> i64 {
    index_of(period.millis(), now_ms)
}

/// The Unix time (ms) at which window `index` of `period` ends.
pub const fn window_end(period: Period, index: i64) -> i64 {
    end_of(period.millis(), index)
}

/// Milliseconds from `now_ms` to the end of its `period` window (≥ 1).
pub const fn until_window_end(period: Period, now_ms: i64) -> i64 {
    let end = window_end(period, window_index(period, now_ms));
    let left = end.saturating_sub(now_ms);
    if left < 1 { 1 } else { left }
}

/// Bytes of SHA-256 kept in a key.
pub const HASH_BYTES: usize = 12;

/// The first [`HASH_BYTES`] bytes of SHA-256 of `scope`, lower-case hex.
pub fn scope_hash(scope: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, scope.as_bytes());
    let mut out = String::with_capacity(HASH_BYTES * 2);
    for b in d.as_ref().iter().take(HASH_BYTES) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A byte allowed in a key token.
const fn key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=')
}

/// Whether `s` is a valid namespace: one or more dot-separated non-empty tokens of
/// `[-/_=a-zA-Z0-9]` (so every key built on it matches JetStream's `[-/_=.a-zA-Z0-9]+`
/// and neither starts nor ends with a dot).
pub fn valid_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|t| !t.is_empty() && t.bytes().all(key_byte))
}

/// Whether `key` is acceptable to JetStream KV (what `async_nats` checks before publishing).
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key.bytes().all(|b| b == b'.' || key_byte(b))
}

/// A namespace was not made of dot-separated tokens of `[-/_=a-zA-Z0-9]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid KV key namespace {0:?}: dot-separated tokens of [-/_=a-zA-Z0-9] expected")]
pub struct InvalidNamespace(pub String);

/// Check `namespace` ([`valid_namespace`]).
pub fn check_namespace(namespace: &str) -> Result<(), InvalidNamespace> {
    if valid_namespace(namespace) {
        Ok(())
    } else {
        Err(InvalidNamespace(namespace.to_owned()))
    }
}

/// What a budget counts: a namespace (e.g. `in.msgs.domain`) and a scope value (e.g. the
/// domain), kept only as its hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BudgetKey {
    namespace: String,
    hash: String,
}

impl BudgetKey {
    /// The budget of `scope` in `namespace`; an error if the namespace is not key-safe.
    pub fn new(namespace: &str, scope: &str) -> Result<BudgetKey, InvalidNamespace> {
        check_namespace(namespace)?;
        Ok(BudgetKey {
            namespace: namespace.to_owned(),
            hash: scope_hash(scope),
        })
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The scope's hash.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The KV key of this budget's window `index` of `period`.
    pub fn window_key(&self, period: Period, index: i64) -> String {
        window_key(&self.namespace, period, index, &self.hash)
    }
}

/// `<namespace>.<period letter><index>.<hash>`. A negative index (before 1970) is written with
/// `-`, which keys allow.
pub fn window_key(namespace: &str, period: Period, index: i64, hash: &str) -> String {
    format!("{namespace}.{}{index}.{hash}", period.letter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_fixed_and_utc_aligned() {
        // 2026-12-04T20:15:02.123Z
        let t = 1_796_415_302_123;
        assert_eq!(window_index(Period::Minute, t), t / 60_000);
        assert_eq!(window_index(Period::Hour, t), t / 3_600_000);
        assert_eq!(window_index(Period::Day, t), t / 86_400_000);
        for p in Period::ALL {
            let i = window_index(p, t);
            let start = i * p.millis();
            assert!(start <= t && t < window_end(p, i));
            assert_eq!(window_end(p, i) - start, p.millis());
            // The first and last millisecond of a window are in it.
            assert_eq!(window_index(p, start), i);
            assert_eq!(window_index(p, window_end(p, i) - 1), i);
            assert_eq!(window_index(p, window_end(p, i)), i + 1);
            assert_eq!(until_window_end(p, start), p.millis());
            assert_eq!(until_window_end(p, window_end(p, i) - 1), 1);
        }
        // A day starts at midnight UTC.
        let midnight = 1_796_342_400_000; // 2026-12-04T00:00:00Z
        assert_eq!(midnight % 86_400_000, 0);
        assert_eq!(
            window_index(Period::Day, midnight),
            window_index(Period::Day, t)
        );
        assert_eq!(
            window_index(Period::Day, midnight - 1) + 1,
            window_index(Period::Day, t)
        );
    }

    #[test]
    fn negative_times_floor() {
        assert_eq!(window_index(Period::Minute, -1), -1);
        assert_eq!(window_index(Period::Minute, -60_000), -1);
        assert_eq!(window_index(Period::Minute, -60_001), -2);
        assert_eq!(window_end(Period::Minute, -1), 0);
        assert_eq!(window_end(Period::Day, i64::MAX), i64::MAX);
        assert_eq!(window_key("a", Period::Minute, -3, "ff"), "a.m-3.ff");
        assert!(valid_key(&window_key("a", Period::Minute, -3, "ff")));
    }

    #[test]
    fn hashes_are_24_hex_and_stable() {
        // SHA-256("example.com") = a379a6f6eeafb9a55e378c118034e2751e682fab9f2d30ab13d2125586ce1947
        assert_eq!(scope_hash("example.com"), "a379a6f6eeafb9a55e378c11");
        assert_eq!(scope_hash("").len(), 24);
        assert_ne!(scope_hash("a"), scope_hash("b"));
        assert!(scope_hash("x").bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn keys_never_carry_the_scope_in_clear() {
        for scope in [
            "example.com",
            "user@example.com",
            "2001:db8::1",
            "ünïcode",
            "a b\r\n*>",
        ] {
            let k = BudgetKey::new("in.msgs.domain", scope).unwrap();
            let key = k.window_key(Period::Hour, 499_004);
            assert!(valid_key(&key), "{key}");
            assert!(!key.contains(scope));
            assert!(key.starts_with("in.msgs.domain.h499004."));
            assert_eq!(key.len(), "in.msgs.domain.h499004.".len() + 24);
        }
    }

    #[test]
    fn namespaces_are_checked() {
        for ok in ["in", "in.msgs", "out.pool-1.dest", "a/b=c_d-e"] {
            assert!(valid_namespace(ok), "{ok}");
            assert!(BudgetKey::new(ok, "s").is_ok());
        }
        for bad in [
            "", ".", "in.", ".in", "in..x", "in.*", "in.>", "in x", "ü", "in.m\n",
        ] {
            assert!(!valid_namespace(bad), "{bad:?}");
            assert_eq!(
                BudgetKey::new(bad, "s"),
                Err(InvalidNamespace(bad.to_owned()))
            );
        }
    }

    #[test]
    fn valid_key_matches_jetstream_rules() {
        assert!(valid_key("a.b-c/d_e=f.0"));
        assert!(!valid_key(""));
        assert!(!valid_key(".a"));
        assert!(!valid_key("a."));
        assert!(!valid_key("a*b"));
        assert!(!valid_key("a b"));
    }
}
