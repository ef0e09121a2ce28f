//! Recent successful SMTP AUTH verifications, so that a client authenticating on every
//! connection does not pay argon2id (tens of milliseconds of CPU) each time.
//!
//! One cache per config snapshot: a new snapshot (a changed password, a removed credential)
//! starts empty. Entries are keyed by a keyed digest of user name and password (the key is
//! random per snapshot and never leaves memory), expire after [`AuthCache::TTL`], and the cache
//! holds at most [`AuthCache::MAX`] of them (cleared when full). Only successes are cached: a
//! wrong password always costs a full verification. A leaked snapshot is as hard to attack as
//! its argon2id verifiers; the cache is memory only.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};

/// See the module docs.
pub struct AuthCache {
    key: [u8; 32],
    entries: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache {
            key: rand::random(),
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl AuthCache {
    /// How long a verified password is remembered.
    pub const TTL: Duration = Duration::from_secs(600);
    /// Most entries kept.
    pub const MAX: usize = 10_000;

    fn digest(&self, username: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(username.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The scope of a recent successful verification of exactly this user and password.
    pub fn get(&self, username: &str, password: &str, now: Instant) -> Option<String> {
        let digest = self.digest(username, password);
        let entries = self.entries.lock();
        let (scope, at) = entries.get(&digest)?;
        (now.duration_since(*at) < Self::TTL).then(|| scope.clone())
    }

    /// Remember a successful verification.
    pub fn put(&self, username: &str, password: &str, scope: &str, now: Instant) {
        let digest = self.digest(username, password);
        let mut entries = self.entries.lock();
        if entries.len() >= Self::MAX {
            entries.retain(|_, (_, at)| now.duration_since(*at) < Self::TTL);
            if entries.len() >= Self::MAX {
                entries.clear();
            }
        }
        entries.insert(digest, (scope.to_owned(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_password_hits_and_entries_expire() {
        let c = AuthCache::default();
        let t0 = Instant::now();
        assert_eq!(c.get("app", "pw", t0), None);
        c.put("app", "pw", "team-a/ex", t0);
        assert_eq!(c.get("app", "pw", t0).as_deref(), Some("team-a/ex"));
        assert_eq!(c.get("app", "pW", t0), None, "another password");
        assert_eq!(c.get("app2", "pw", t0), None, "another user");
        assert_eq!(c.get("ap", "ppw", t0), None, "user/password boundary");
        assert_eq!(c.get("app", "pw", t0 + AuthCache::TTL), None, "expired");
    }

    #[test]
    fn the_cache_is_bounded() {
        let c = AuthCache::default();
        let t0 = Instant::now();
        for i in 0..=AuthCache::MAX {
            c.put(&format!("u{i}"), "pw", "s", t0);
        }
        assert!(c.entries.lock().len() <= AuthCache::MAX);
    }
}
