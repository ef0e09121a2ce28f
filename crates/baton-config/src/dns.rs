//! The DNS records a RelayDomain owner should publish: DKIM public keys, an SPF suggestion, a
//! starting DMARC policy, and the MX and SPF records of its return-path domain. They are reported in `RelayDomain.status.dnsRecords`.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crd::{DeliveryMode, DkimAlgorithm, RelayDomainSpec, SendingPoolSpec};

/// One DNS record to publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsRecord {
    /// Fully qualified record name, without the trailing dot (`baton1._domainkey.example.com`).
    pub name: String,
    /// Record type (`TXT`).
    #[serde(rename = "type")]
    pub rtype: String,
    /// Record value. Values longer than 255 bytes (RSA keys) must be split into several
    /// character-strings by the DNS provider or zone file; the concatenation is this value.
    pub value: String,
}

/// The public half of a DKIM key, as published in DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DkimPublicKey {
    /// Selector of the key.
    pub selector: String,
    /// Signing algorithm of the key.
    pub algorithm: DkimAlgorithm,
    /// RSA: DER SubjectPublicKeyInfo. Ed25519: the raw 32-byte public key (RFC 8463).
    pub public_key: Vec<u8>,
}

impl DkimPublicKey {
    /// The DKIM key record value: `v=DKIM1; k=rsa; p=<base64>`.
    pub fn record_value(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.algorithm.key_type(),
            STANDARD.encode(&self.public_key)
        )
    }
}

/// The records to publish for `domain`: one DKIM TXT record per key in `dkim` (primary first),
/// an SPF suggestion derived from `pool` (omitted when the pool is unknown or names no address or
/// smarthost), and a DMARC policy to start monitoring with (`p=none`).
pub fn dns_records(
    domain: &RelayDomainSpec,
    pool: Option<&SendingPoolSpec>,
    dkim: &[DkimPublicKey],
) -> Vec<DnsRecord> {
    let name = domain.domain.as_str();
    let mut records: Vec<DnsRecord> = dkim
        .iter()
        .map(|key| {
            txt(
                format!("{}._domainkey.{name}", key.selector),
                key.record_value(),
            )
        })
        .collect();
    if let Some(spf) = pool.and_then(spf_value) {
        records.push(txt(name.to_owned(), spf));
    }
    records.push(txt(
        format!("_dmarc.{name}"),
        format!("v=DMARC1; p=none; rua=mailto:dmarc@{name}"),
    ));
    // The return-path domain receives the bounces (its MX is Baton's ingress) and is the
    // envelope sender SPF checks.
    if let Some(rp) = &domain.return_path {
        records.push(DnsRecord {
            name: rp.domain.clone(),
            rtype: "MX".into(),
            value: format!("10 {}.", rp.mx_host.trim_end_matches('.')),
        });
        if let Some(spf) = pool.and_then(spf_value) {
            records.push(txt(rp.domain.clone(), spf));
        }
    }
    records
}

/// The SPF value authorising a pool's outbound addresses, or `None` when it names none:
/// Direct mode lists the egress source addresses (`ip4:`/`ip6:`), Smarthost mode the smarthosts
/// (`a:<host>`, or `ip4:`/`ip6:` for address literals).
pub fn spf_value(pool: &SendingPoolSpec) -> Option<String> {
    let mut mechanisms: Vec<String> = Vec::new();
    match pool.delivery.mode {
        DeliveryMode::Direct => {
            let addresses = pool
                .egress
                .iter()
                .filter_map(|e| e.source_address.as_deref());
            mechanisms.extend(
                addresses
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                    .map(ip_mechanism),
            );
        }
        DeliveryMode::Smarthost => {
            for smarthost in &pool.delivery.smarthosts {
                mechanisms.push(match smarthost.host.parse::<IpAddr>() {
                    Ok(ip) => ip_mechanism(ip),
                    Err(_) => format!("a:{}", smarthost.host.trim_end_matches('.')),
                });
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    mechanisms.retain(|m| seen.insert(m.clone()));
    if mechanisms.is_empty() {
        return None;
    }
    Some(format!("v=spf1 {} ~all", mechanisms.join(" ")))
}

fn ip_mechanism(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip4:{v4}"),
        IpAddr::V6(v6) => format!("ip6:{v6}"),
    }
}

fn txt(name: String, value: String) -> DnsRecord {
    DnsRecord {
        name,
        rtype: "TXT".to_owned(),
        value,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::crd::{EgressSpec, SmarthostSpec};

    fn egress(addr: Option<&str>) -> EgressSpec {
        EgressSpec {
            ehlo_name: "mta.example.net".into(),
            source_address: addr.map(Into::into),
            weight: 1,
            warmup: None,
        }
    }

    #[test]
    fn spf_direct_lists_source_addresses_once() {
        let mut pool = SendingPoolSpec {
            egress: vec![
                egress(Some("203.0.113.10")),
                egress(Some("2001:db8::25")),
                egress(None),
                egress(Some("203.0.113.10")),
            ],
            ..Default::default()
        };
        assert_eq!(
            spf_value(&pool).as_deref(),
            Some("v=spf1 ip4:203.0.113.10 ip6:2001:db8::25 ~all")
        );
        pool.egress = vec![egress(None)];
        assert_eq!(spf_value(&pool), None);
    }

    #[test]
    fn spf_smarthost_uses_a_mechanisms() {
        let mut pool = SendingPoolSpec::default();
        pool.delivery.mode = DeliveryMode::Smarthost;
        let host = |h: &str| SmarthostSpec {
            host: h.into(),
            port: 587,
            weight: 1,
            tls: Default::default(),
            implicit_tls: false,
            ca_bundle_secret_ref: None,
            credentials_secret_ref: None,
            allow_unverified_credentials: false,
        };
        pool.delivery.smarthosts = vec![host("smtp.upstream.example"), host("192.0.2.7")];
        assert_eq!(
            spf_value(&pool).as_deref(),
            Some("v=spf1 a:smtp.upstream.example ip4:192.0.2.7 ~all")
        );
    }
}
