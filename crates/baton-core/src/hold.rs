//! Holds: an operator's "stop sending this until I say so" (Postfix's `postsuper -h`,
//! KumoMTA's suspensions). A hold targets a whole SendingPool, a RelayDomain, a recipient
//! domain or one message (its queue id). Workers move the recipients a hold covers to the
//! pool's held place (`baton.held.<pool>`), consumed by no worker, instead of trying them;
//! releasing the hold moves them back to the fresh-mail lane.
//!
//! This module owns the entry kept in the `baton-holds` KV bucket (JSON, one key per target),
//! target validation and keys, and the decision which recipients of an envelope a set of
//! holds covers. The bucket is `baton_queue::holds`'s.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a hold applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum Target {
    /// Every message of a SendingPool.
    Pool(String),
    /// Every message of a RelayDomain (`namespace/name`).
    RelayDomain(String),
    /// Every recipient at a domain (lower case).
    Domain(String),
    /// One message, by queue id (its follow-ups share it).
    Message(String),
}

/// Why a target is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not one of `pool`, `relay-domain`, `domain`, `message`.
    #[error("unknown hold kind {0:?}: pool, relay-domain, domain or message")]
    Kind(String),
    /// The value cannot be what the kind names.
    #[error("{kind} {value:?} is not valid: {why}")]
    Value {
        /// The kind.
        kind: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
}

fn token_ok(s: &str, extra: &[char]) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || extra.contains(&c))
        && !s.starts_with('.')
        && !s.ends_with('.')
}

impl Target {
    /// Build and validate a target from its kind and value.
    pub fn parse(kind: &str, value: &str) -> Result<Target, TargetError> {
        let value = value.trim();
        let bad = |kind: &'static str, why: &'static str| TargetError::Value {
            kind,
            value: value.to_owned(),
            why,
        };
        match kind {
            "pool" if token_ok(value, &[]) && value == value.to_ascii_lowercase() => {
                Ok(Target::Pool(value.to_owned()))
            }
            "pool" => Err(bad("pool", "a SendingPool name (lower-case DNS label)")),
            "relay-domain" => match value.split_once('/') {
                Some((ns, name)) if token_ok(ns, &[]) && token_ok(name, &['.']) => {
                    Ok(Target::RelayDomain(value.to_ascii_lowercase()))
                }
                _ => Err(bad("relay-domain", "namespace/name")),
            },
            "domain" => {
                let d = value
                    .trim_start_matches('@')
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                if token_ok(&d, &['.']) && d.contains('.') {
                    Ok(Target::Domain(d))
                } else {
                    Err(bad("domain", "a domain name such as example.com"))
                }
            }
            "message" if token_ok(value, &['.', '_']) => Ok(Target::Message(value.to_owned())),
            "message" => Err(bad("message", "a queue id")),
            other => Err(TargetError::Kind(other.to_owned())),
        }
    }

    /// `pool`, `relay-domain`, `domain` or `message`.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Pool(_) => "pool",
            Target::RelayDomain(_) => "relay-domain",
            Target::Domain(_) => "domain",
            Target::Message(_) => "message",
        }
    }

    /// The value (pool, `namespace/name`, domain, queue id).
    pub fn value(&self) -> &str {
        match self {
            Target::Pool(v) | Target::RelayDomain(v) | Target::Domain(v) | Target::Message(v) => v,
        }
    }

    /// The KV key: `<kind>.<value>` (values are validated to be key-safe).
    pub fn key(&self) -> String {
        format!("{}.{}", self.kind(), self.value())
    }

    /// `domain example.com`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.kind(), self.value())
    }
}

/// One hold as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// What it applies to.
    pub target: Target,
    /// Why (shown to other operators).
    #[serde(default)]
    pub reason: String,
    /// Who placed it (the API caller's name).
    #[serde(default)]
    pub by: String,
    /// When (Unix ms).
    pub created_ms: i64,
}

impl Hold {
    /// JSON bytes for the bucket.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse bucket bytes (`None` for anything else).
    pub fn decode(b: &[u8]) -> Option<Hold> {
        serde_json::from_slice(b).ok()
    }
}

/// What the holds say about one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing held: deliver.
    Deliver,
    /// Every recipient is held (by the first matching hold, for the logs).
    All(Target),
    /// These recipients (indexes) are held; the others are delivered.
    Some(Target, Vec<usize>),
}

/// The holds in force, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    by_key: BTreeMap<String, Hold>,
}

impl Holds {
    /// From a list of holds.
    pub fn new(holds: impl IntoIterator<Item = Hold>) -> Self {
        Holds {
            by_key: holds.into_iter().map(|h| (h.target.key(), h)).collect(),
        }
    }

    /// Add or replace a hold under its key.
    pub fn insert(&mut self, hold: Hold) {
        self.by_key.insert(hold.target.key(), hold);
    }

    /// Remove the hold stored under `key`.
    pub fn remove(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    /// The holds, in key order.
    pub fn list(&self) -> impl Iterator<Item = &Hold> {
        self.by_key.values()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn has(&self, t: Target) -> Option<Target> {
        self.by_key.contains_key(&t.key()).then_some(t)
    }

    /// Which recipients of an envelope of `pool`, RelayDomain `relay_domain`, queue id
    /// `queue_id` (the origin id of a follow-up) with `recipients` the holds cover.
    pub fn verdict(
        &self,
        pool: &str,
        relay_domain: &str,
        queue_id: &str,
        recipients: &[&str],
    ) -> Verdict {
        if self.by_key.is_empty() {
            return Verdict::Deliver;
        }
        let whole = self
            .has(Target::Pool(pool.to_owned()))
            .or_else(|| self.has(Target::RelayDomain(relay_domain.to_ascii_lowercase())))
            .or_else(|| self.has(Target::Message(queue_id.to_owned())));
        if let Some(t) = whole {
            return Verdict::All(t);
        }
        let mut first = None;
        let mut held = Vec::new();
        for (i, r) in recipients.iter().enumerate() {
            let domain = r
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
                .unwrap_or_default();
            if let Some(t) = self.has(Target::Domain(domain)) {
                first.get_or_insert(t);
                held.push(i);
            }
        }
        match first {
            None => Verdict::Deliver,
            Some(t) if held.len() == recipients.len() => Verdict::All(t),
            Some(t) => Verdict::Some(t, held),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn hold(kind: &str, value: &str) -> Hold {
        Hold {
            target: Target::parse(kind, value).unwrap(),
            reason: "test".into(),
            by: "ops".into(),
            created_ms: 1,
        }
    }

    #[test]
    fn targets_are_validated_and_normalised_into_safe_keys() {
        assert_eq!(
            Target::parse("domain", "@Example.COM.").unwrap().key(),
            "domain.example.com"
        );
        assert_eq!(
            Target::parse("relay-domain", "shop/Main").unwrap().key(),
            "relay-domain.shop/main"
        );
        assert_eq!(Target::parse("pool", "bulk").unwrap().key(), "pool.bulk");
        assert_eq!(
            Target::parse("message", "1M90AJ69WSKAJAKRV3")
                .unwrap()
                .key(),
            "message.1M90AJ69WSKAJAKRV3"
        );
        for (kind, value) in [
            ("pool", "Bulk"),
            ("pool", "a.b"),
            ("pool", ""),
            ("relay-domain", "no-slash"),
            ("relay-domain", "a/b/c"),
            ("domain", "localhost"),
            ("domain", "a b.com"),
            ("domain", "*.example.com"),
            ("message", "a>b"),
        ] {
            assert!(Target::parse(kind, value).is_err(), "{kind} {value}");
        }
        assert_eq!(
            Target::parse("sender", "x"),
            Err(TargetError::Kind("sender".into()))
        );
    }

    #[test]
    fn a_hold_round_trips_through_its_bucket_bytes() {
        let h = hold("relay-domain", "shop/main");
        assert_eq!(Hold::decode(&h.encode()), Some(h.clone()));
        let json = String::from_utf8(h.encode()).unwrap();
        assert!(json.contains(r#""kind":"relay-domain""#), "{json}");
        assert_eq!(Hold::decode(b"nonsense"), None);
    }

    #[test]
    fn verdicts_cover_whole_messages_or_the_held_domains_recipients() {
        let none = Holds::default();
        let rcpts = ["a@x.test", "b@Y.test", "c@y.test."];
        assert_eq!(
            none.verdict("bulk", "shop/main", "q1", &rcpts),
            Verdict::Deliver
        );
        let domain = Holds::new([hold("domain", "y.test")]);
        assert_eq!(
            domain.verdict("bulk", "shop/main", "q1", &rcpts),
            Verdict::Some(Target::Domain("y.test".into()), vec![1, 2])
        );
        assert_eq!(
            domain.verdict("bulk", "shop/main", "q1", &["b@y.test"]),
            Verdict::All(Target::Domain("y.test".into()))
        );
        assert_eq!(
            domain.verdict("bulk", "shop/main", "q1", &["a@x.test"]),
            Verdict::Deliver
        );
        for (h, pool, rd, id) in [
            (hold("pool", "bulk"), "bulk", "shop/main", "q1"),
            (hold("relay-domain", "shop/main"), "bulk", "Shop/Main", "q1"),
            (hold("message", "q1"), "bulk", "shop/main", "q1"),
        ] {
            let t = h.target.clone();
            let holds = Holds::new([h, hold("domain", "y.test")]);
            assert_eq!(holds.verdict(pool, rd, id, &rcpts), Verdict::All(t));
            assert_eq!(
                holds.verdict("other", "shop/other", "q2", &["a@x.test"]),
                Verdict::Deliver
            );
        }
        let mut holds = Holds::new([hold("domain", "y.test")]);
        holds.remove("domain.y.test");
        assert!(holds.is_empty());
    }
}
