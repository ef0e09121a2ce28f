//! The one place where Baton reads the wall clock. Every other function of this crate takes
//! the time as an argument (Unix milliseconds or an [`OffsetDateTime`]); the async shells
//! (ingress, worker, queue, binary) read it here, so there is one conversion to milliseconds
//! and one thing to replace when a test needs another clock.

use time::OffsetDateTime;

/// The current time, UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    unix_ms(now())
}

/// `t` in Unix milliseconds, saturating at the ends of `i64` (about ±292 million years).
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_truncate_toward_zero_and_are_exact() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_772_546_709_123_999_999).unwrap();
        assert_eq!(unix_ms(t), 1_772_546_709_123);
        assert_eq!(unix_ms(OffsetDateTime::UNIX_EPOCH), 0);
        let before = OffsetDateTime::from_unix_timestamp_nanos(-1_500_000).unwrap();
        assert_eq!(unix_ms(before), -1);
    }

    #[test]
    fn now_is_after_2026() {
        assert!(now_ms() > 1_767_225_600_000);
    }
}
