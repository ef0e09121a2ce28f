//! DNS records: exact strings for RSA and Ed25519 keys, SPF and DMARC.

use baton_config::dns::DnsRecord;

use super::{POOL, compile_yaml, dkim_secret, fixture, report};

fn records(algorithm: &str, pem: &str, pool: &str) -> Vec<DnsRecord> {
    let rd = format!(
        "---\napiVersion: baton.dev/v1alpha1\nkind: RelayDomain\nmetadata: {{name: d, namespace: ns}}\n\
         spec: {{domain: example.com, dkim: {{selector: baton1, algorithm: {algorithm}, \
         keySecretRef: {{name: k}}}}}}\n"
    );
    let compiled = compile_yaml(&format!("{pool}{rd}{}", dkim_secret("ns", "k", pem)));
    report(&compiled, "ns/d").dns_records.clone()
}

fn txt(name: &str, value: &str) -> DnsRecord {
    DnsRecord {
        name: name.into(),
        rtype: "TXT".into(),
        value: value.into(),
    }
}

const DIRECT_POOL: &str = "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: default}\n\
    spec: {egress: [{ehloName: mta1.example.net, sourceAddress: 203.0.113.10}, \
    {ehloName: mta2.example.net, sourceAddress: '2001:db8::25'}]}\n";

#[test]
fn rsa_key_records() {
    let spki = fixture("rsa2048.pub.b64");
    assert_eq!(
        records("rsa-sha256", &fixture("rsa2048.pem"), DIRECT_POOL),
        [
            txt(
                "baton1._domainkey.example.com",
                &format!("v=DKIM1; k=rsa; p={}", spki.trim())
            ),
            txt(
                "example.com",
                "v=spf1 ip4:203.0.113.10 ip6:2001:db8::25 ~all"
            ),
            txt(
                "_dmarc.example.com",
                "v=DMARC1; p=none; rua=mailto:dmarc@example.com"
            ),
        ]
    );
}

#[test]
fn ed25519_key_records() {
    let smarthost_pool = "apiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: default}\n\
        spec: {delivery: {mode: Smarthost, smarthosts: [{host: smtp.upstream.example}]}}\n";
    let got = records("ed25519-sha256", &fixture("ed25519.pem"), smarthost_pool);
    assert_eq!(
        got,
        [
            txt(
                "baton1._domainkey.example.com",
                "v=DKIM1; k=ed25519; p=30oxAWZWm652Afi7vJN1jjnKWvZv7K5WFpUys93/aWA="
            ),
            txt("example.com", "v=spf1 a:smtp.upstream.example ~all"),
            txt(
                "_dmarc.example.com",
                "v=DMARC1; p=none; rua=mailto:dmarc@example.com"
            ),
        ]
    );
    assert_eq!(
        fixture("ed25519.pub.b64").trim(),
        "30oxAWZWm652Afi7vJN1jjnKWvZv7K5WFpUys93/aWA="
    );
}

#[test]
fn pool_without_addresses_gives_no_spf() {
    let got = records("rsa-sha256", &fixture("rsa2048.pem"), POOL);
    let names: Vec<_> = got.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["baton1._domainkey.example.com", "_dmarc.example.com"]
    );
}
