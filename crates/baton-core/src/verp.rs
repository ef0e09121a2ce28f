//! Signed VERP return paths (Variable Envelope Return Path): the envelope sender a RelayDomain
//! with a return-path domain uses for each recipient, so that a bounce arriving later says which
//! message and which recipient it is about — and cannot be forged.
//!
//! Local part: `b<key>-<queue id>-<tag>-<sig>` (40 characters, lower case), where `key` is the
//! two-digit id of the signing key (rotation: old keys keep verifying), `tag` is 6 hex digits of
//! HMAC(key, recipient) and `sig` 10 hex digits of HMAC(key, key id, queue id, tag). The
//! recipient itself is not in the address (local parts hold 64 octets); a bounce names it
//! (`Final-Recipient`/`Original-Recipient`, or `Original-Rcpt-To` in a complaint) and
//! [`Verp::matches`] checks that name against the tag. Verification is case-insensitive, since
//! some MTAs fold the case of local parts.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::suppression::normalize;

type HmacSha256 = Hmac<Sha256>;

/// Key ids are 0..=31 (`key-0` … `key-31` in the Secret).
pub const MAX_KEY_ID: u32 = 31;
/// Keys shorter than this are refused by the compiler.
pub const MIN_KEY_LEN: usize = 32;

/// The keys of one return path: the highest id signs, every one verifies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerpKeys {
    keys: Vec<(u32, Vec<u8>)>,
}

/// A verified VERP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verp {
    /// The queue id of the message the bounce is about (the id accepted at the ingress).
    pub queue_id: String,
    /// Tag of the recipient.
    tag: String,
    key: Vec<u8>,
}

impl Verp {
    /// Whether `recipient` is the recipient this address was made for.
    pub fn matches(&self, recipient: &str) -> bool {
        tag(&self.key, recipient) == self.tag
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let Ok(mut m) = HmacSha256::new_from_slice(key) else {
        return Vec::new();
    };
    for p in parts {
        m.update(&(p.len() as u32).to_be_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

fn tag(key: &[u8], recipient: &str) -> String {
    hex::encode(&mac(key, &[b"rcpt", normalize(recipient).as_bytes()])[..3])
}

fn sig(key: &[u8], key_id: u32, queue_id: &str, tag: &str) -> String {
    let id = key_id.to_string();
    hex::encode(
        &mac(
            key,
            &[
                b"verp",
                id.as_bytes(),
                queue_id.to_ascii_lowercase().as_bytes(),
                tag.as_bytes(),
            ],
        )[..5],
    )
}

impl VerpKeys {
    /// Keys as `(id, secret)`; ids above [`MAX_KEY_ID`] are ignored.
    pub fn new(keys: impl IntoIterator<Item = (u32, Vec<u8>)>) -> VerpKeys {
        let mut keys: Vec<(u32, Vec<u8>)> = keys
            .into_iter()
            .filter(|(id, k)| *id <= MAX_KEY_ID && !k.is_empty())
            .collect();
        keys.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        keys.dedup_by_key(|(id, _)| *id);
        VerpKeys { keys }
    }

    /// Whether there is a key to sign with.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The VERP local part for `recipient` of message `queue_id`, signed with the newest key
    /// (`None` without keys).
    pub fn local_part(&self, queue_id: &str, recipient: &str) -> Option<String> {
        let (id, key) = self.keys.first()?;
        let t = tag(key, recipient);
        let s = sig(key, *id, queue_id, &t);
        Some(format!(
            "b{id:02}-{}-{t}-{s}",
            queue_id.to_ascii_lowercase()
        ))
    }

    /// Verify a local part made by [`VerpKeys::local_part`] with any of the keys.
    pub fn verify(&self, local_part: &str) -> Option<Verp> {
        let lp = local_part.to_ascii_lowercase();
        let rest = lp.strip_prefix('b')?;
        let mut parts = rest.split('-');
        let (id, qid, t, s) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || id.len() != 2
            || qid.len() != crate::ids::QUEUE_ID_LEN
            || !qid.bytes().all(|b| b.is_ascii_alphanumeric())
            || t.len() != 6
            || s.len() != 10
        {
            return None;
        }
        let id: u32 = id.parse().ok()?;
        let (_, key) = self.keys.iter().find(|(k, _)| *k == id)?;
        let want = sig(key, id, qid, t);
        // Constant-time comparison of the signature.
        let same = want.len() == s.len()
            && want
                .bytes()
                .zip(s.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        same.then(|| Verp {
            queue_id: qid.to_ascii_uppercase(),
            tag: t.to_string(),
            key: key.clone(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    const QID: &str = "0ABCDEFGHJKMNPQRST";

    fn keys() -> VerpKeys {
        VerpKeys::new([(1, vec![7u8; 32]), (0, vec![9u8; 32])])
    }

    #[test]
    fn round_trip_and_recipient_match() {
        let k = keys();
        let lp = k.local_part(QID, "Bob@Example.org").expect("a key");
        assert_eq!(lp.len(), 40, "{lp}");
        assert!(
            lp.starts_with("b01-0abcdefghjkmnpqrst-"),
            "newest key signs: {lp}"
        );
        assert!(lp.len() <= 64);
        let v = k.verify(&lp).expect("verifies");
        assert_eq!(v.queue_id, QID);
        assert!(v.matches("bob@example.org") && v.matches("BOB@example.org"));
        assert!(!v.matches("alice@example.org"));
        // Case folded by some MTA on the way back.
        assert!(k.verify(&lp.to_ascii_uppercase()).is_some());
    }

    #[test]
    fn forgeries_and_garbage_are_refused() {
        let k = keys();
        let lp = k.local_part(QID, "bob@example.org").expect("a key");
        // Every single-character change is refused.
        for i in 0..lp.len() {
            let mut b = lp.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let forged = String::from_utf8(b).expect("ascii");
            if forged != lp {
                assert!(k.verify(&forged).is_none(), "{forged}");
            }
        }
        // Signed with a key we do not have.
        let other = VerpKeys::new([(1, vec![8u8; 32])]);
        assert!(
            k.verify(&other.local_part(QID, "bob@example.org").expect("key"))
                .is_none()
        );
        for junk in [
            "",
            "b",
            "postmaster",
            "b01-x-y-z",
            "b01--------",
            "b99-0abcdefghjkmnpqrst-abcdef-0123456789",
        ] {
            assert!(k.verify(junk).is_none(), "{junk}");
        }
        assert!(VerpKeys::default().local_part(QID, "a@b").is_none());
    }

    #[test]
    fn rotation_keeps_old_addresses_valid() {
        let old = VerpKeys::new([(0, vec![9u8; 32])]);
        let lp = old.local_part(QID, "bob@example.org").expect("key");
        assert!(lp.starts_with("b00-"));
        let rotated = keys();
        assert!(rotated.verify(&lp).is_some(), "old key still verifies");
        let dropped = VerpKeys::new([(1, vec![7u8; 32])]);
        assert!(
            dropped.verify(&lp).is_none(),
            "a removed key no longer does"
        );
    }
}
