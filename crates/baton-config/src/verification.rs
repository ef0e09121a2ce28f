//! Proof of domain ownership (issue 13.6): a SendingPool with
//! `spec.requireDomainVerification` serves a RelayDomain only once its domain publishes
//! `_baton-verification.<domain> TXT "baton-verification=<token>"`. The token is derived from
//! the RelayDomain's identity (its `uid`, or `namespace/name` in files) and the domain, so
//! another tenant's RelayDomain claiming the same domain needs its own record; it is not a
//! secret (it is shown in the RelayDomain's `status.dnsRecords`), only a proof that whoever
//! created the RelayDomain controls the domain's DNS.
//!
//! Pure: the record to publish and the check of what DNS returned. The operator and `baton
//! config apply` / `baton dev` look the records up and pass the verified RelayDomains to
//! [`crate::compile`] in [`crate::Resources::verified_domains`].

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

use sha2::{Digest as _, Sha256};

use crate::compile::namespace_of;
use crate::crd::RelayDomain;
use crate::dns::DnsRecord;

/// Label of the challenge record under the domain.
pub const CHALLENGE_LABEL: &str = "_baton-verification";
/// Prefix of the challenge record's value.
pub const CHALLENGE_PREFIX: &str = "baton-verification=";

/// The TXT record a RelayDomain's domain must publish.
pub fn challenge(rd: &RelayDomain) -> DnsRecord {
    let identity = match rd.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => format!("uid:{uid}"),
        _ => format!(
            "name:{}/{}",
            namespace_of(&rd.metadata),
            rd.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    let domain = rd
        .spec
        .domain
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut h = Sha256::new();
    h.update(b"baton.dev/domain-verification/v1\0");
    h.update(identity.as_bytes());
    h.update(b"\0");
    h.update(domain.as_bytes());
    let token = hex::encode(&h.finalize()[..16]);
    DnsRecord {
        name: format!("{CHALLENGE_LABEL}.{domain}"),
        rtype: "TXT".to_owned(),
        value: format!("{CHALLENGE_PREFIX}{token}"),
    }
}

/// Whether the TXT values found at the challenge name prove ownership (one of them is the
/// expected value; surrounding quotes and whitespace are ignored).
pub fn proves(challenge: &DnsRecord, txt_values: &[String]) -> bool {
    txt_values
        .iter()
        .any(|v| v.trim().trim_matches('"').trim() == challenge.value)
}

/// TXT lookups, as the operator and `config apply` do them (hickory in Baton's binary).
pub trait TxtResolver: Send + Sync {
    /// The TXT values at `name` (each record's character-strings joined); empty when there
    /// is none; `Err` for a lookup that failed (a timeout, SERVFAIL).
    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'a>>;
}

/// The RelayDomains (`namespace/name`) of `res` whose challenge record is published. A
/// failed lookup is logged and counts as not (yet) verified.
pub async fn verified_domains(res: &crate::Resources, dns: &dyn TxtResolver) -> BTreeSet<String> {
    let mut verified = BTreeSet::new();
    for (key, challenge) in res.verification_challenges() {
        match dns.txt(&challenge.name).await {
            Ok(values) if proves(&challenge, &values) => {
                verified.insert(key);
            }
            Ok(_) => tracing::info!(
                relay_domain = %key,
                record = %challenge.name,
                "domain verification record not published (yet)"
            ),
            Err(error) => tracing::warn!(
                relay_domain = %key,
                record = %challenge.name,
                %error,
                "domain verification lookup failed"
            ),
        }
    }
    verified
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::crd::RelayDomainSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rd(ns: &str, name: &str, uid: Option<&str>, domain: &str) -> RelayDomain {
        let mut rd = RelayDomain::new(
            name,
            serde_json::from_value::<RelayDomainSpec>(
                serde_json::json!({"domain": domain, "pool": "p"}),
            )
            .unwrap(),
        );
        rd.metadata = ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            uid: uid.map(Into::into),
            ..ObjectMeta::default()
        };
        rd
    }

    #[test]
    fn each_relay_domain_has_its_own_stable_challenge() {
        let a = challenge(&rd("team-a", "ex", Some("u-1"), "Example.COM."));
        assert_eq!(a.name, "_baton-verification.example.com");
        assert_eq!(a.rtype, "TXT");
        assert!(a.value.starts_with("baton-verification=") && a.value.len() == 19 + 32);
        assert_eq!(
            a,
            challenge(&rd("team-a", "ex", Some("u-1"), "example.com"))
        );
        assert_ne!(
            a,
            challenge(&rd("team-b", "ex", Some("u-2"), "example.com"))
        );
        assert_ne!(
            challenge(&rd("a", "x", None, "example.com")),
            challenge(&rd("b", "x", None, "example.com"))
        );
    }

    #[test]
    fn only_the_expected_value_proves_ownership() {
        let c = challenge(&rd("team-a", "ex", Some("u-1"), "example.com"));
        assert!(proves(&c, &[format!("\"{}\"", c.value)]));
        assert!(proves(&c, &["v=spf1 -all".into(), c.value.clone()]));
        assert!(!proves(&c, &[]));
        assert!(!proves(&c, &["baton-verification=00".into()]));
    }
}
