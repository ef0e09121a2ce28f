//! Suppression lists: recipients a RelayDomain no longer sends to, because they hard-bounced
//! (or an operator put them there). This module owns the entry format kept in the
//! `baton-suppressions` KV bucket (JSON, one key per relay domain and recipient), the key
//! encoding, expiry, and the policy decisions: which outcome adds an entry and what happens to
//! mail for a suppressed recipient. The bucket itself is `baton_queue::suppression`'s.

use serde::{Deserialize, Serialize};

use baton_proto::v1::{RelayDomain, SuppressionMode, SuppressionPolicy};

use crate::bounce::BounceClass;

/// Why an entry exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A permanent failure at delivery.
    Bounce,
    /// Added by an operator (`baton suppression add`).
    Manual,
    /// A delivery report that came back to the return path after the receiver's `250`.
    AsyncBounce,
    /// A feedback-loop complaint (ARF) that came back to the return path.
    Complaint,
}

impl Source {
    /// Bounded label (metrics, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Bounce => "bounce",
            Source::Manual => "manual",
            Source::AsyncBounce => "async_bounce",
            Source::Complaint => "complaint",
        }
    }
}

/// One suppressed recipient of one relay domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The recipient, normalised by [`normalize`].
    pub address: String,
    /// The relay domain's `namespace/name`.
    pub relay_domain: String,
    /// Why.
    pub source: Source,
    /// Bounce class of the failure (`invalid_recipient`, ...); `manual` entries may leave it
    /// empty.
    #[serde(default)]
    pub class: String,
    /// The remote reply that caused it (or the operator's comment).
    #[serde(default)]
    pub reply: String,
    /// Queue id of the message that bounced.
    #[serde(default)]
    pub queue_id: String,
    /// When it was added (Unix ms).
    pub created_ms: i64,
    /// When it stops applying (Unix ms); 0: never.
    #[serde(default)]
    pub expires_ms: i64,
}

impl Entry {
    /// Whether the entry still applies at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.expires_ms == 0 || now_ms < self.expires_ms
    }

    /// The bucket key of this entry.
    pub fn key(&self) -> String {
        key(&self.relay_domain, &self.address)
    }

    /// Decode a stored entry.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        serde_json::from_slice(bytes).ok()
    }

    /// Encode for storage.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The form addresses are compared in: the whole address lower-cased and trimmed. (RFC 5321
/// makes local parts case-sensitive, but no mailbox provider treats `Bob@` and `bob@` as
/// different people; suppression errs toward not mailing an address that bounced.)
pub fn normalize(address: &str) -> String {
    address.trim().trim_end_matches('.').to_lowercase()
}

/// Bucket key of (`relay_domain`, `address`): `<hex(relay domain)>.<hex(normalised address)>`.
/// KV keys allow only `[-/_=.A-Za-z0-9]`; addresses may hold any character, so both parts are
/// hex-encoded, and every key of one relay domain shares a prefix.
pub fn key(relay_domain: &str, address: &str) -> String {
    format!(
        "{}.{}",
        hex::encode(relay_domain.as_bytes()),
        hex::encode(normalize(address).as_bytes())
    )
}

/// The key prefix shared by every entry of a relay domain (for listing).
pub fn key_prefix(relay_domain: &str) -> String {
    format!("{}.", hex::encode(relay_domain.as_bytes()))
}

/// (`relay_domain`, `address`) of a key, if it is one of ours.
pub fn parse_key(key: &str) -> Option<(String, String)> {
    let (rd, addr) = key.split_once('.')?;
    let rd = String::from_utf8(hex::decode(rd).ok()?).ok()?;
    let addr = String::from_utf8(hex::decode(addr).ok()?).ok()?;
    Some((rd, addr))
}

/// A relay domain's suppression policy, decided once from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Off: nothing is added and nothing is refused.
    pub enabled: bool,
    /// What happens to mail for a suppressed recipient.
    pub mode: Mode,
    /// Lifetime of an entry added by a bounce, ms (0: permanent).
    pub expire_after_ms: i64,
    /// Classes whose permanent failures add an entry.
    pub classes: Vec<BounceClass>,
}

/// What happens to mail for a suppressed recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `550 5.1.1` at RCPT.
    Refuse,
    /// Accepted, failed without an attempt, DSN to the sender.
    AcceptAndBounce,
}

impl Policy {
    /// No suppression (a snapshot without a policy for the domain).
    pub fn disabled() -> Policy {
        Policy {
            enabled: false,
            mode: Mode::Refuse,
            expire_after_ms: 0,
            classes: Vec::new(),
        }
    }

    /// The policy of a relay domain in the snapshot. Unknown class names (a newer compiler)
    /// are ignored.
    pub fn of(domain: &RelayDomain) -> Policy {
        domain
            .suppression
            .as_ref()
            .map(Policy::from_proto)
            .unwrap_or_else(Policy::disabled)
    }

    fn from_proto(p: &SuppressionPolicy) -> Policy {
        Policy {
            enabled: p.enabled,
            mode: match SuppressionMode::try_from(p.mode) {
                Ok(SuppressionMode::AcceptAndBounce) => Mode::AcceptAndBounce,
                _ => Mode::Refuse,
            },
            expire_after_ms: i64::try_from(p.expire_after_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            classes: p.classes.iter().filter_map(|c| c.parse().ok()).collect(),
        }
    }

    /// Whether a failure of `class` puts the recipient on the list. Only permanent failures
    /// do (a `Failed` outcome): a deferral or an expiry says nothing certain about the mailbox.
    pub fn adds(&self, class: BounceClass) -> bool {
        self.enabled && self.classes.contains(&class)
    }

    /// The entry for a recipient that failed permanently with `reply` at `now_ms`.
    pub fn entry_for_bounce(
        &self,
        relay_domain: &str,
        address: &str,
        class: BounceClass,
        reply: &str,
        queue_id: &str,
        now_ms: i64,
    ) -> Entry {
        Entry {
            address: normalize(address),
            relay_domain: relay_domain.to_string(),
            source: Source::Bounce,
            class: class.as_str().to_string(),
            reply: reply.chars().take(512).collect(),
            queue_id: queue_id.to_string(),
            created_ms: now_ms,
            expires_ms: if self.expire_after_ms == 0 {
                0
            } else {
                now_ms.saturating_add(self.expire_after_ms)
            },
        }
    }
}

/// The reply text (after `550 5.1.1`) for a suppressed recipient: the RCPT refusal, or the DSN
/// diagnostic in accept-and-bounce mode.
pub fn refusal_text(entry: &Entry) -> String {
    let why = if entry.class.is_empty() {
        entry.source.as_str().to_string()
    } else {
        entry.class.clone()
    };
    format!(
        "recipient is on this sender's suppression list ({why}); not sent to protect the sender's reputation"
    )
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn policy(classes: &[&str], expire_secs: u64, mode: SuppressionMode) -> Policy {
        Policy::of(&RelayDomain {
            suppression: Some(SuppressionPolicy {
                enabled: true,
                mode: mode as i32,
                expire_after_secs: expire_secs,
                classes: classes.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        })
    }

    #[test]
    fn keys_round_trip_and_normalise() {
        let k = key("team-a/example-com", " Bob.Smith+x@Example.ORG. ");
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
        );
        assert_eq!(
            parse_key(&k),
            Some((
                "team-a/example-com".to_string(),
                "bob.smith+x@example.org".to_string()
            ))
        );
        assert_eq!(k, key("team-a/example-com", "bob.smith+x@example.org"));
        assert!(k.starts_with(&key_prefix("team-a/example-com")));
        assert_ne!(k, key("team-b/example-com", "bob.smith+x@example.org"));
        // Odd local parts stay valid keys.
        let odd = key("a/b", "\"john..doe\"@example.org");
        assert_eq!(
            parse_key(&odd).map(|p| p.1),
            Some("\"john..doe\"@example.org".into())
        );
        assert_eq!(parse_key("zz.00"), None);
        assert_eq!(parse_key("nodot"), None);
    }

    #[test]
    fn policy_decisions() {
        let p = policy(
            &["invalid_recipient", "nonsense"],
            3600,
            SuppressionMode::Refuse,
        );
        assert!(p.enabled);
        assert_eq!(p.mode, Mode::Refuse);
        assert_eq!(
            p.classes,
            [BounceClass::InvalidRecipient],
            "unknown names ignored"
        );
        assert!(p.adds(BounceClass::InvalidRecipient));
        assert!(!p.adds(BounceClass::MailboxFull));
        let e = p.entry_for_bounce(
            "a/b",
            "X@Y.org",
            BounceClass::InvalidRecipient,
            "550 5.1.1 no",
            "q1",
            1000,
        );
        assert_eq!(
            (e.address.as_str(), e.expires_ms),
            ("x@y.org", 1000 + 3_600_000)
        );
        assert!(e.is_live(1000) && e.is_live(3_600_999) && !e.is_live(3_601_000));
        assert_eq!(Entry::decode(&e.encode()), Some(e.clone()));
        assert!(refusal_text(&e).contains("suppression list (invalid_recipient)"));

        let permanent = policy(&["invalid_recipient"], 0, SuppressionMode::AcceptAndBounce);
        assert_eq!(permanent.mode, Mode::AcceptAndBounce);
        let e = permanent.entry_for_bounce("a/b", "x@y", BounceClass::InvalidRecipient, "", "q", 5);
        assert_eq!(e.expires_ms, 0);
        assert!(e.is_live(i64::MAX));

        let none = Policy::of(&RelayDomain::default());
        assert!(!none.enabled && !none.adds(BounceClass::InvalidRecipient));
        let mut off = policy(&["invalid_recipient"], 0, SuppressionMode::Refuse);
        off.enabled = false;
        assert!(!off.adds(BounceClass::InvalidRecipient));
    }

    #[test]
    fn stored_entries_tolerate_missing_optional_fields() {
        let e = Entry::decode(
            br#"{"address":"a@b","relay_domain":"x/y","source":"manual","created_ms":1}"#,
        )
        .expect("decodes");
        assert_eq!(e.expires_ms, 0);
        assert!(e.is_live(10));
        assert!(refusal_text(&e).contains("(manual)"));
        assert_eq!(Entry::decode(b"not json"), None);
    }
}
