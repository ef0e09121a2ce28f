//! `baton-dkim`: DKIM signing (RFC 6376, RFC 8463 for Ed25519) with `mail-auth`, shared by the
//! ingress (the relayed mail) and the delivery worker (the DSNs it sends as a RelayDomain's
//! postmaster).
//!
//! Signers are built once per config snapshot ([`Signers::new`]): one [`DomainSigner`] per
//! RelayDomain holding a signer per configured key (two during a rotation: dual signing). A key
//! that does not parse is kept as a per-domain [`DkimError`], so mail for that domain is deferred
//! (`451 4.7.5`) rather than sent unsigned by surprise. A RelayDomain without DKIM keys signs
//! nothing (its mail is relayed unsigned, as configured).
//!
//! Signatures use relaxed/relaxed canonicalization over [`SIGNED_HEADERS`] (From over-signed;
//! listed headers absent from the message are over-signed too, so they cannot be added later),
//! with `x=` when the key has a lifetime.

use std::collections::HashMap;

use baton_proto::v1::{DkimKey, RelayConfig, RelayDomain};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256, SigningKey};
use mail_auth::common::headers::HeaderWriter as _;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use rustls::pki_types::PrivatePkcs8KeyDer;
use rustls::pki_types::pem::PemObject as _;
use thiserror::Error;

/// Headers covered by every signature, in `h=` order. `From` is listed twice: one more than the
/// message carries, so a second `From:` added in transit breaks the signature.
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Reply-To",
    "In-Reply-To",
    "References",
    // RFC 8058: a one-click unsubscribe must be covered by the signature (receivers such as
    // Gmail and Yahoo ignore it otherwise); over-signed when absent, so it cannot be added later.
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// Why a RelayDomain's mail cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DkimError {
    /// The key names an algorithm other than `rsa-sha256` or `ed25519-sha256`.
    #[error("DKIM key {selector}: unsupported algorithm {algorithm:?}")]
    UnsupportedAlgorithm {
        /// Selector of the key.
        selector: String,
        /// The algorithm found in the snapshot.
        algorithm: String,
    },
    /// The PEM does not hold a usable unencrypted PKCS#8 key for the key's algorithm.
    #[error("DKIM key {selector}: {reason}")]
    InvalidKey {
        /// Selector of the key.
        selector: String,
        /// What the crypto layer said.
        reason: String,
    },
    /// Signing a message failed (crypto layer error, or no header to sign).
    #[error("DKIM signing with key {selector} failed: {reason}")]
    Sign {
        /// Selector of the key.
        selector: String,
        /// What `mail-auth` said.
        reason: String,
    },
}

impl DkimError {
    /// Bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DkimError::UnsupportedAlgorithm { .. } => "unsupported_algorithm",
            DkimError::InvalidKey { .. } => "invalid_key",
            DkimError::Sign { .. } => "sign",
        }
    }

    /// Selector of the key concerned.
    pub fn selector(&self) -> &str {
        match self {
            DkimError::UnsupportedAlgorithm { selector, .. }
            | DkimError::InvalidKey { selector, .. }
            | DkimError::Sign { selector, .. } => selector,
        }
    }
}

/// A ready signer for one key.
enum KeySigner {
    Rsa(DkimSigner<RsaKey<Sha256>, Done>),
    Ed25519(DkimSigner<Ed25519Key, Done>),
}

struct Key {
    selector: String,
    signer: KeySigner,
}

/// The signers of one RelayDomain, primary key first.
pub struct DomainSigner {
    keys: Vec<Key>,
}

fn configure<T: SigningKey>(key: T, domain: &str, k: &DkimKey) -> DkimSigner<T, Done> {
    let signer = DkimSigner::from_key(key)
        .domain(domain)
        .selector(k.selector.as_str())
        .headers(SIGNED_HEADERS.iter().copied())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed);
    if k.expire_secs > 0 {
        signer.expiration(k.expire_secs)
    } else {
        signer
    }
}

fn parse_key(domain: &str, k: &DkimKey) -> Result<Key, DkimError> {
    let invalid = |reason: String| DkimError::InvalidKey {
        selector: k.selector.clone(),
        reason,
    };
    let der = PrivatePkcs8KeyDer::from_pem_slice(k.private_key_pem.as_bytes())
        .map_err(|e| invalid(format!("not an unencrypted PKCS#8 PEM key: {e}")))?;
    let signer = match k.algorithm.as_str() {
        "rsa-sha256" => RsaKey::<Sha256>::from_key_der(der.into())
            .map(|key| KeySigner::Rsa(configure(key, domain, k)))
            .map_err(|e| invalid(format!("not a usable RSA key: {e}")))?,
        "ed25519-sha256" => Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
            .map(|key| KeySigner::Ed25519(configure(key, domain, k)))
            .map_err(|e| invalid(format!("not a usable Ed25519 key: {e}")))?,
        other => {
            return Err(DkimError::UnsupportedAlgorithm {
                selector: k.selector.clone(),
                algorithm: other.to_string(),
            });
        }
    };
    Ok(Key {
        selector: k.selector.clone(),
        signer,
    })
}

impl DomainSigner {
    /// Parse every key of `domain` (signing as `d=<domain.domain>`).
    pub fn new(domain: &RelayDomain) -> Result<DomainSigner, DkimError> {
        let keys = domain
            .dkim_keys
            .iter()
            .map(|k| parse_key(&domain.domain, k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DomainSigner { keys })
    }

    /// Whether this domain signs at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of keys (signatures per message).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Sign the message made of `chunks` (concatenated: header block and body, CRLF line ends)
    /// and return the `DKIM-Signature:` header fields to put on top of it, one per key,
    /// primary first. Empty when the domain has no keys.
    pub fn sign(&self, chunks: &[&[u8]]) -> Result<Vec<u8>, DkimError> {
        let mut out = Vec::with_capacity(self.keys.len() * 700);
        for key in &self.keys {
            let parts = chunks.iter().copied();
            let signature = match &key.signer {
                KeySigner::Rsa(s) => s.sign_chained(parts),
                KeySigner::Ed25519(s) => s.sign_chained(parts),
            }
            .map_err(|e| DkimError::Sign {
                selector: key.selector.clone(),
                reason: e.to_string(),
            })?;
            out.extend_from_slice(unfold_final_semicolon(signature.to_header()).as_bytes());
        }
        Ok(out)
    }
}

/// `mail-auth` (0.13) folds its header at 76 columns and, when the `b=` value ends exactly
/// there, puts the closing `;` on a continuation line of its own (`b=…==\r\n\t;`). RFC 6376
/// §3.7 has the verifier delete the `b=` value "including all surrounding whitespace", but
/// dkimpy (and other verifiers) keep that folding whitespace, hash `b= ;` instead of the `b=;`
/// that was signed, and fail the signature. Joining the `;` to the previous line removes the
/// ambiguity; the signed form (`b=;`) does not change.
fn unfold_final_semicolon(mut header: String) -> String {
    for fold in ["\r\n\t;\r\n", "\r\n ;\r\n"] {
        if header.ends_with(fold) {
            header.truncate(header.len() - fold.len());
            header.push_str(";\r\n");
            break;
        }
    }
    header
}

/// The DKIM signers of one config snapshot, by RelayDomain name (`namespace/name`).
pub struct Signers {
    by_name: HashMap<String, Result<DomainSigner, DkimError>>,
}

impl Signers {
    /// Build the signers of every RelayDomain in `config`; unusable keys are logged and kept as
    /// that domain's error.
    pub fn new(config: &RelayConfig) -> Signers {
        let by_name = config
            .domains
            .iter()
            .map(|d| {
                let signer = DomainSigner::new(d);
                if let Err(e) = &signer {
                    tracing::warn!(
                        relay_domain = %d.name,
                        reason = e.metric_label(),
                        "DKIM key unusable, mail for this domain is deferred: {e}"
                    );
                }
                (d.name.clone(), signer)
            })
            .collect();
        Signers { by_name }
    }

    /// The signer of a RelayDomain, `None` when the snapshot does not know it.
    pub fn get(&self, relay_domain: &str) -> Option<&Result<DomainSigner, DkimError>> {
        self.by_name.get(relay_domain)
    }
}

/// Keys and helpers for tests of this crate and of its users (feature `test-support`): an RSA
/// and an Ed25519 key, a RelayDomain holding keys, and verification with `mail-auth`.
#[cfg(any(test, feature = "test-support"))]
#[allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
pub mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::time::{Duration, Instant};

    use base64::Engine as _;
    use mail_auth::common::parse::TxtRecordParser as _;
    use mail_auth::common::verify::DomainKey;
    use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, Txt};

    /// 2048-bit RSA, PKCS#8, made with `openssl genpkey -algorithm RSA`.
    pub const RSA_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDsGSO/5uvKgaim
JYMpNypPvHe9JNesBnEdg+bvmTguQVeg79LeB3zclYFp34JqnBBOwKAD5VPpG5U4
hUd5JF/CVNNwGTb+hfi8fp0k777g7hrHrMvERf5jCjualEJtk/y6l988VAehBXpl
zIYdD1v+RiFrLyNdXGtD2r5tV/QJ80EUYs8hghrqe1vo8nral2iN3LFw+IW6q7Um
cWdXCjQtprEDuy9phmrafYUlbiSPkUdDOgMnVFmpZXApX81u/u9DbrcOQlewLJaN
V4ig/xiYBqSr0gZoxcY/Znz/JI+lwTz/P0y+2oFxtBFuxvxeGXA3AofbypOOidvZ
9pg2UODzAgMBAAECggEAANv0j9m4yPNg2D3xtMAxJLokW2lbaZJabgeRWxTdKfnt
5jWJOGqhjzHyFx8Lm/S2cHrt+iWnAQWrLNn7URsLSCtD27gTxahaJ+F0E/LVaH8l
VM2xriStENI0NlNMzJZJyKoN02vg3TqmX+F3KXrpVEsQCxJQWCIid8w/filgR3r7
2u3TqwwLY2o8zDLKlZ4gAxYHzCcixjYPqIok10AzAgKxqHkyOzIV+OOh6iJFIGQ0
rmqlXAIOUA+hSNZHbks60bFj1GbWAnFO6aXko8cDcGdQAEeJnf55+DMWHVjVvRzQ
2QJyHIUp+Ql8dBOwK/FTy6E31ucm3KUZc49d84oy/QKBgQD74En9FVnKRExzL5PE
HzZe6uP3kacTlpML3aotAVIw41QlXtIhTks0lXf9tgxYZ1UJFf28EDyKRtOXdpj4
OeiZe/yLhE2cS07UJnd1Q96bMipm9lboKYclJdvppRNhDp9ZIFp5/nAgJJ3VQScB
4nfn5as286XYSiMLmKOMxYoOlwKBgQDv9rgcyE59PNt+h1zM1XOutbXD32PFfeZa
SHQra64TKnD0p8AME2CZlWmQRdvh/PGQsfuUNT0Ir2CjEKD6KRuUp46XGZxGGNoo
a2CSYC6/f+NSARzFqN8jU3GM+6oLwxUNYhE9DWcq4UG3jHd1x9d7e7mQGyNftjiO
EkpyDEEoBQKBgQDi9s3VJ1scv4SgOtwNWw7UYxb/LBmAtitVAu5o1YrpkL9vWU1C
Q9nSzWktjtD7DEn9APr+bycOdxoNnwnii9QEEkyUr6h70QR8eRkl6v15na/Fze6s
D1e/aqkKlfyrddCzMEs3KMaCwFwVITt0IE1qAnPQ9aaZCt0fgvDFVe+8iwKBgHJy
kGMh4dV3ZhRVyRvknhTwk22FKNezcV8T+VwQMmjvsAnvy/e2cjct/LgTqYiCFFB3
os6QCbkPtB5xuuU1H/NpaueEDnWcOshWVivZ9dHd0/RzlV5saWg2zwx3pyWO+IZ2
hFRDBTZ9UtORChTBqHM7kkg5uUhX52dTL/BvCdBlAoGAQiRl3wRx69EtMxlF0VOG
CLCvsVEo1OfOKWWfvyCgIL5FKIksZYaEIz6zeO3kvaxsiXcCDSmdAZ7+5HpLARbm
E3dTFgLJu/vW2IqxyENPTyT6L08LEsTrnTjWqUvKsNWo0o/q1pWT43WOOMnNKziX
8iHIPu8P6LaXHC1i9vAHOGg=
-----END PRIVATE KEY-----
";
    /// Ed25519, PKCS#8 v1 (no public key inside), as `openssl genpkey -algorithm ed25519` writes.
    pub const ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGr/XV1oKxhoXGfkPqPLWT9vH0+66mTU2n61sh/Kh8oW
-----END PRIVATE KEY-----
";

    pub fn key(selector: &str, algorithm: &str, pem: &str, expire_secs: u64) -> DkimKey {
        DkimKey {
            selector: selector.into(),
            algorithm: algorithm.into(),
            private_key_pem: pem.into(),
            expire_secs,
            ..DkimKey::default()
        }
    }

    pub fn domain(keys: Vec<DkimKey>) -> RelayDomain {
        RelayDomain {
            name: "team-a/example-com".into(),
            domain: "example.com".into(),
            pool: "test".into(),
            allowed_senders: vec!["*@example.com".into()],
            networks: vec!["127.0.0.0/8".into()],
            dkim_keys: keys,
            ready: true,
            ..Default::default()
        }
    }

    /// The DNS record value of a key, as `baton dns-records` prints it.
    pub fn record(k: &DkimKey) -> String {
        let der = PrivatePkcs8KeyDer::from_pem_slice(k.private_key_pem.as_bytes()).unwrap();
        let (kind, public) = match k.algorithm.as_str() {
            "rsa-sha256" => (
                "rsa",
                RsaKey::<Sha256>::from_key_der(der.into())
                    .unwrap()
                    .public_key(),
            ),
            _ => (
                "ed25519",
                Ed25519Key::from_pkcs8_maybe_unchecked_der(der.secret_pkcs8_der())
                    .unwrap()
                    .public_key(),
            ),
        };
        let p = base64::engine::general_purpose::STANDARD.encode(public);
        format!("v=DKIM1; k={kind}; p={p}")
    }

    /// A TXT cache standing in for DNS: `mail-auth` consults it before any lookup.
    pub struct TxtCache(Mutex<HashMap<Box<str>, Txt>>);

    impl mail_auth::ResolverCache<Box<str>, Txt> for TxtCache {
        fn get<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().get(name).cloned()
        }
        fn remove<Q>(&self, name: &Q) -> Option<Txt>
        where
            Box<str>: std::borrow::Borrow<Q>,
            Q: std::hash::Hash + Eq + ?Sized,
        {
            self.0.lock().remove(name)
        }
        fn insert(&self, key: Box<str>, value: Txt, _: Instant) {
            self.0.lock().insert(key, value);
        }
    }

    /// Verify every DKIM signature of `message` with `mail-auth` against the public keys of
    /// `keys` (published for `example.com`); returns the results in header order.
    pub async fn verify(message: &[u8], keys: &[DkimKey]) -> Vec<DkimResult> {
        use mail_auth::ResolverCache as _;
        let cache = TxtCache(Mutex::new(HashMap::new()));
        for k in keys {
            let dk = DomainKey::parse(record(k).as_bytes()).unwrap();
            cache.insert(
                format!("{}._domainkey.example.com.", k.selector).into(),
                Txt::from(dk),
                Instant::now() + Duration::from_secs(3600),
            );
        }
        let resolver = MessageAuthenticator::new_cloudflare().unwrap();
        let parsed = AuthenticatedMessage::parse(message).unwrap();
        let params = Parameters::new(&parsed).with_txt_cache(&cache);
        resolver
            .verify_dkim(params)
            .await
            .iter()
            .map(|o| o.result().clone())
            .collect()
    }

    /// The signature fields followed by the message.
    pub fn signed(signer: &DomainSigner, msg: &[u8]) -> Vec<u8> {
        let mut out = signer.sign(&[msg]).unwrap();
        out.extend_from_slice(msg);
        out
    }

    /// A small message from `app@example.com`.
    pub const MSG: &[u8] = b"From: App <app@example.com>\r\nTo: x@dest.test\r\n\
Subject: hello\r\n  folded subject line\r\nDate: Tue, 03 Mar 2026 14:05:09 +0000\r\n\
Message-ID: <1@example.com>\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
Gr\xc3\xbc\xc3\x9fe  aus   K\xc3\xb6ln \r\n\r\n\r\n";

    #[test]
    fn a_lone_final_semicolon_is_joined_to_the_signature() {
        assert_eq!(
            unfold_final_semicolon("DKIM-Signature: a=1; b=AAAA==\r\n\t;\r\n".into()),
            "DKIM-Signature: a=1; b=AAAA==;\r\n"
        );
        assert_eq!(
            unfold_final_semicolon("DKIM-Signature: a=1; b=AA\r\n\tAA==;\r\n".into()),
            "DKIM-Signature: a=1; b=AA\r\n\tAA==;\r\n"
        );
    }

    /// Every subset of the signed headers present changes `h=` and so where the header folds;
    /// no signature ends with a lone `;` line, and every one verifies.
    #[tokio::test]
    async fn signatures_verify_whatever_headers_are_present() {
        let optional = [
            "Cc: c@dest.test\r\n",
            "Reply-To: r@example.com\r\n",
            "In-Reply-To: <0@example.com>\r\n",
            "References: <0@example.com>\r\n",
            "List-Unsubscribe: <mailto:u@example.com>\r\n",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: text/plain\r\n",
            "Date: Tue, 03 Mar 2026 14:05:09 +0000\r\n",
            "Message-ID: <1@example.com>\r\n",
        ];
        let k = key("rsa1", "rsa-sha256", RSA_PEM, 0);
        let signer = DomainSigner::new(&domain(vec![k.clone()])).unwrap();
        for mask in 0u32..(1 << optional.len()) {
            let mut msg = b"From: app@example.com\r\nTo: x@dest.test\r\nSubject: s\r\n".to_vec();
            for (i, h) in optional.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    msg.extend_from_slice(h.as_bytes());
                }
            }
            msg.extend_from_slice(b"\r\nbody\r\n");
            let out = signed(&signer, &msg);
            let head = String::from_utf8_lossy(&out[..out.len() - msg.len()]).into_owned();
            assert!(
                !head.contains("\r\n\t;") && !head.contains("\r\n ;"),
                "{head}"
            );
            assert_eq!(
                verify(&out, std::slice::from_ref(&k)).await,
                vec![DkimResult::Pass],
                "{head}"
            );
        }
    }

    #[tokio::test]
    async fn rsa_and_ed25519_signatures_verify() {
        for k in [
            key("rsa1", "rsa-sha256", RSA_PEM, 0),
            key("ed1", "ed25519-sha256", ED25519_PEM, 0),
        ] {
            let signer = DomainSigner::new(&domain(vec![k.clone()])).unwrap();
            let out = signed(&signer, MSG);
            let head = String::from_utf8_lossy(&out[..out.len() - MSG.len()]).into_owned();
            assert!(head.starts_with("DKIM-Signature: v=1; a="), "{head}");
            assert!(head.contains("c=relaxed/relaxed"), "{head}");
            assert!(head.contains(&format!("s={}; d=example.com", k.selector)));
            assert!(!head.contains("x="), "no expiry: {head}");
            let h = head.replace("\r\n\t", "");
            let tags = h.split("h=").nth(1).unwrap().split(';').next().unwrap();
            assert_eq!(tags.matches("From").count(), 2, "From over-signed: {tags}");
            assert_eq!(
                verify(&out, std::slice::from_ref(&k)).await,
                vec![DkimResult::Pass]
            );
            // A changed body or a changed signed header fails.
            let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let mut tampered = out.clone();
            tampered[split + 6] = b'r';
            let r = verify(&tampered, std::slice::from_ref(&k)).await;
            // mail-auth reports a body hash mismatch as neutral, a bad signature as fail.
            assert!(
                matches!(
                    r[..],
                    [DkimResult::Neutral(mail_auth::Error::Dkim(
                        mail_auth::dkim::DkimError::FailedBodyHashMatch
                    ))]
                ),
                "{r:?}"
            );
            let mut extra_from = b"From: evil@attacker.test\r\n".to_vec();
            extra_from.extend_from_slice(&out);
            assert!(matches!(
                verify(&extra_from, std::slice::from_ref(&k)).await[..],
                [DkimResult::Fail(_)]
            ));
        }
    }

    #[tokio::test]
    async fn dual_signing_adds_one_signature_per_key() {
        let keys = vec![
            key("old", "rsa-sha256", RSA_PEM, 0),
            key("new", "ed25519-sha256", ED25519_PEM, 0),
        ];
        let signer = DomainSigner::new(&domain(keys.clone())).unwrap();
        assert_eq!(signer.len(), 2);
        let out = signed(&signer, MSG);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(text.matches("DKIM-Signature:").count(), 2);
        assert!(text.find("s=old").unwrap() < text.find("s=new").unwrap());
        assert_eq!(
            verify(&out, &keys).await,
            vec![DkimResult::Pass, DkimResult::Pass]
        );
    }

    #[tokio::test]
    async fn expiry_sets_x_tag_and_empty_body_verifies() {
        let k = key("ed1", "ed25519-sha256", ED25519_PEM, 7 * 86_400);
        let signer = DomainSigner::new(&domain(vec![k.clone()])).unwrap();
        let msg = b"From: app@example.com\r\nSubject: empty\r\n\r\n";
        let out = signed(&signer, msg);
        let text = String::from_utf8_lossy(&out).replace("\r\n\t", " ");
        let tag = |name: &str| -> u64 {
            text.split(&format!(" {name}="))
                .nth(1)
                .and_then(|v| v.split(';').next())
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(tag("x") - tag("t"), 7 * 86_400, "{text}");
        assert_eq!(verify(&out, &[k]).await, vec![DkimResult::Pass]);
    }

    #[test]
    fn no_keys_signs_nothing() {
        let signer = DomainSigner::new(&domain(vec![])).unwrap();
        assert!(signer.is_empty());
        assert!(signer.sign(&[MSG]).unwrap().is_empty());
    }

    #[test]
    fn unusable_keys_are_per_domain_errors() {
        let bad = [
            key("k", "rsa-sha1", RSA_PEM, 0),
            key("k", "rsa-sha256", "not a pem", 0),
            key("k", "rsa-sha256", ED25519_PEM, 0),
            key("k", "ed25519-sha256", RSA_PEM, 0),
        ];
        let labels: Vec<&str> = bad
            .iter()
            .map(|k| {
                DomainSigner::new(&domain(vec![k.clone()]))
                    .err()
                    .unwrap()
                    .metric_label()
            })
            .collect();
        assert_eq!(
            labels,
            [
                "unsupported_algorithm",
                "invalid_key",
                "invalid_key",
                "invalid_key"
            ]
        );
        let mut cfg = RelayConfig::default();
        let mut broken = domain(vec![bad[1].clone()]);
        broken.name = "team-b/broken".into();
        cfg.domains = vec![
            domain(vec![key("k", "ed25519-sha256", ED25519_PEM, 0)]),
            broken,
        ];
        let signers = Signers::new(&cfg);
        assert!(signers.get("team-a/example-com").unwrap().is_ok());
        assert_eq!(
            signers
                .get("team-b/broken")
                .unwrap()
                .as_ref()
                .err()
                .unwrap()
                .selector(),
            "k"
        );
        assert!(signers.get("nope/nope").is_none());
    }
}
