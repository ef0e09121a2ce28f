//! The failed-AUTH log: one line per failed SMTP AUTH (client address, listener, user name as
//! given — never the password), rate-limited per ingress process so that a password-guessing
//! flood cannot fill the disk.
//!
//! At most [`LINES_PER_MINUTE`] lines per minute (bursts of as many); failures beyond that are
//! still counted (`baton_ingress_auth_total{result="failed"}`) but not logged, and the next
//! line written carries `suppressed=<n>`, the number of failures left out since the previous
//! line. The pure part ([`AuthLogBudget`], [`printable_username`]) has no clock or I/O.

use std::net::IpAddr;

use baton_core::clock::now_ms;
use baton_core::ratelimit::TokenBucket;
use parking_lot::Mutex;

/// Failed-AUTH log lines per minute per ingress process (and the burst).
pub const LINES_PER_MINUTE: u32 = 120;

/// Longest user name logged, in characters (longer ones are cut and marked with `…`).
const MAX_USERNAME: usize = 128;

/// Which failures may be logged: a token bucket plus the count of those left out.
#[derive(Debug)]
pub struct AuthLogBudget {
    bucket: TokenBucket,
    suppressed: u64,
}

impl AuthLogBudget {
    /// A full budget of `per_minute` lines at `now_ms`.
    pub fn new(per_minute: u32, now_ms: i64) -> Self {
        AuthLogBudget {
            bucket: TokenBucket::new(per_minute.max(1), now_ms),
            suppressed: 0,
        }
    }

    /// One failure at `now_ms`: `Some(n)` when its line may be written, `n` being the number
    /// of failures suppressed since the last written line; `None` when it is suppressed.
    pub fn admit(&mut self, now_ms: i64) -> Option<u64> {
        if self.bucket.try_take(now_ms) {
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            None
        }
    }
}

/// The user name as the client gave it, safe for one log line: control characters and
/// backslashes escaped (`\r`, `\n`, `\u{1b}`, `\\`), bounded to [`MAX_USERNAME`] characters.
pub fn printable_username(username: &str) -> String {
    let mut out = String::new();
    for (i, c) in username.chars().enumerate() {
        if i == MAX_USERNAME {
            out.push('…');
            break;
        }
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The process-wide failed-AUTH logger.
pub struct AuthLog {
    budget: Mutex<AuthLogBudget>,
}

impl Default for AuthLog {
    fn default() -> Self {
        AuthLog {
            budget: Mutex::new(AuthLogBudget::new(LINES_PER_MINUTE, now_ms())),
        }
    }
}

impl AuthLog {
    /// Log one failed AUTH, if the budget allows.
    pub fn failed(&self, client: IpAddr, listener: &str, username: &str) {
        let admitted = self.budget.lock().admit(now_ms());
        if let Some(suppressed) = admitted {
            tracing::warn!(
                client = %client,
                listener,
                username = %printable_username(username),
                suppressed,
                "SMTP AUTH failed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_a_burst_then_a_steady_rate_and_counts_the_rest() {
        let mut b = AuthLogBudget::new(2, 0);
        assert_eq!(b.admit(0), Some(0));
        assert_eq!(b.admit(0), Some(0));
        assert_eq!(b.admit(0), None);
        assert_eq!(b.admit(10_000), None);
        // Half a minute refills one line at 2/minute: it reports the two left out.
        assert_eq!(b.admit(30_000), Some(2));
        assert_eq!(b.admit(30_001), None);
        assert_eq!(b.admit(90_000), Some(1));
        assert_eq!(b.admit(90_000), Some(0));
        // A flood of a million failures writes no more than the rate allows.
        let mut b = AuthLogBudget::new(LINES_PER_MINUTE, 0);
        let written = (0..1_000_000i64)
            .filter(|&ms| b.admit(ms).is_some())
            .count();
        // 1000 s, one failure per millisecond: the burst plus one line per 500 ms.
        assert_eq!(written, 120 + 1999);
        // A zero rate still logs (at one line per minute), never unlimited.
        let mut b = AuthLogBudget::new(0, 0);
        assert_eq!(b.admit(0), Some(0));
        assert_eq!(b.admit(1), None);
    }

    #[test]
    fn usernames_are_printable_and_bounded() {
        assert_eq!(printable_username("alice"), "alice");
        assert_eq!(printable_username("jöran"), "jöran");
        assert_eq!(
            printable_username("eve\r\nbaton: AUTH ok"),
            "eve\\r\\nbaton: AUTH ok"
        );
        assert_eq!(printable_username("a\u{1b}[31mb\\"), "a\\u{1b}[31mb\\\\");
        assert_eq!(printable_username("\0"), "\\u{0}");
        let long = printable_username(&"x".repeat(1000));
        assert_eq!(long.chars().count(), MAX_USERNAME + 1);
        assert!(long.ends_with('…'));
        assert_eq!(printable_username(""), "");
    }
}
