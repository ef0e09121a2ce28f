//! A SendingPool's deny lists (`spec.deny`), compiled once per snapshot: client networks and
//! sender patterns refused at MAIL FROM, recipient domains refused at RCPT TO (each `550
//! 5.7.1`), and the ingress's own `--deny-network` list refused at connect (`554 5.7.1`).
//! Pure checks; the caller counts and replies.

use std::net::IpAddr;

use baton_proto::v1 as pb;
use ipnet::IpNet;

/// A domain pattern: `example.net` (that domain) or `*.example.net` (its subdomains).
#[derive(Clone, Debug, PartialEq, Eq)]
enum DomainPattern {
    Exact(String),
    Below(String),
}

impl DomainPattern {
    fn parse(text: &str) -> Option<DomainPattern> {
        let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (below, bare) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t.as_str()),
        };
        let ok = !bare.is_empty()
            && bare.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !ok {
            return None;
        }
        Some(if below {
            DomainPattern::Below(format!(".{bare}"))
        } else {
            DomainPattern::Exact(bare.to_string())
        })
    }

    /// `domain` is lower-case without a trailing dot.
    fn matches(&self, domain: &str) -> bool {
        match self {
            DomainPattern::Exact(d) => d == domain,
            DomainPattern::Below(suffix) => domain.len() > suffix.len() && domain.ends_with(suffix),
        }
    }
}

/// A sender pattern: `user@example.com`, `*@example.com`, `*@*.example.com`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SenderPattern {
    /// `None`: any local part.
    local: Option<String>,
    domain: DomainPattern,
}

impl SenderPattern {
    fn parse(text: &str) -> Option<SenderPattern> {
        let t = text.trim().to_ascii_lowercase();
        let (local, domain) = t.rsplit_once('@')?;
        if local.is_empty() {
            return None;
        }
        Some(SenderPattern {
            local: (local != "*").then(|| local.to_string()),
            domain: DomainPattern::parse(domain)?,
        })
    }
}

/// One pool's deny lists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deny {
    networks: Vec<IpNet>,
    senders: Vec<SenderPattern>,
    recipient_domains: Vec<DomainPattern>,
}

/// Lower-case, no trailing dot.
fn normal_domain(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

impl Deny {
    /// Compile a pool's `deny`; entries that do not parse are skipped (the compiler already
    /// refused them) and logged.
    pub fn new(pool: &str, d: &pb::DenyList) -> Deny {
        let mut out = Deny::default();
        for n in &d.client_networks {
            match parse_network(n) {
                Some(net) => out.networks.push(net),
                None => tracing::warn!(pool, network = %n, "deny list: not a network, ignored"),
            }
        }
        for s in &d.senders {
            match SenderPattern::parse(s) {
                Some(p) => out.senders.push(p),
                None => {
                    tracing::warn!(pool, sender = %s, "deny list: not a sender pattern, ignored")
                }
            }
        }
        for r in &d.recipient_domains {
            match DomainPattern::parse(r) {
                Some(p) => out.recipient_domains.push(p),
                None => {
                    tracing::warn!(pool, domain = %r, "deny list: not a domain pattern, ignored")
                }
            }
        }
        out
    }

    /// Nothing is denied.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty() && self.senders.is_empty() && self.recipient_domains.is_empty()
    }

    /// The client's address is in a denied network.
    pub fn client(&self, addr: IpAddr) -> bool {
        in_networks(&self.networks, addr)
    }

    /// The sender `local@domain` matches a denied pattern (the null sender never does).
    pub fn sender(&self, local: &str, domain: &str) -> bool {
        if self.senders.is_empty() {
            return false;
        }
        let local = local.to_ascii_lowercase();
        let domain = normal_domain(domain);
        self.senders
            .iter()
            .any(|p| p.local.as_ref().is_none_or(|l| *l == local) && p.domain.matches(&domain))
    }

    /// The recipient's domain matches a denied pattern.
    pub fn recipient_domain(&self, domain: &str) -> bool {
        if self.recipient_domains.is_empty() {
            return false;
        }
        let domain = normal_domain(domain);
        self.recipient_domains.iter().any(|p| p.matches(&domain))
    }
}

/// A CIDR or a single address.
pub fn parse_network(text: &str) -> Option<IpNet> {
    let t = text.trim();
    t.parse::<IpNet>()
        .ok()
        .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|n| n.trunc())
}

/// `addr` (IPv4-mapped IPv6 taken as IPv4) is in one of `networks`.
pub fn in_networks(networks: &[IpNet], addr: IpAddr) -> bool {
    if networks.is_empty() {
        return false;
    }
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|n| n.contains(&addr))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn deny(networks: &[&str], senders: &[&str], domains: &[&str]) -> Deny {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Deny::new(
            "p",
            &pb::DenyList {
                client_networks: s(networks),
                senders: s(senders),
                recipient_domains: s(domains),
            },
        )
    }

    #[test]
    fn networks_match_by_prefix_and_mapped_addresses() {
        let d = deny(&["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"], &[], &[]);
        assert!(d.client("192.0.2.200".parse().unwrap()));
        assert!(!d.client("192.0.3.1".parse().unwrap()));
        assert!(d.client("::ffff:192.0.2.9".parse().unwrap()));
        assert!(d.client("2001:db8:1::1".parse().unwrap()));
        assert!(!d.client("2001:db9::1".parse().unwrap()));
        assert!(d.client("198.51.100.7".parse().unwrap()));
        assert!(!d.client("198.51.100.8".parse().unwrap()));
        assert!(!Deny::default().client("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn sender_patterns() {
        let d = deny(
            &[],
            &["Spam@Example.com", "*@bad.example", "*@*.worse.example"],
            &[],
        );
        assert!(d.sender("spam", "example.com"));
        assert!(d.sender("SPAM", "EXAMPLE.COM."));
        assert!(!d.sender("ham", "example.com"));
        assert!(d.sender("anyone", "bad.example"));
        assert!(!d.sender("anyone", "sub.bad.example"));
        assert!(d.sender("x", "a.worse.example"));
        assert!(d.sender("x", "a.b.worse.example"));
        assert!(!d.sender("x", "worse.example"));
        assert!(!d.sender("x", "notworse.example"));
    }

    #[test]
    fn recipient_domain_patterns() {
        let d = deny(&[], &[], &["example.net", "*.blocked.test"]);
        assert!(d.recipient_domain("example.net"));
        assert!(d.recipient_domain("Example.NET."));
        assert!(!d.recipient_domain("sub.example.net"));
        assert!(d.recipient_domain("a.blocked.test"));
        assert!(!d.recipient_domain("blocked.test"));
        assert!(!d.recipient_domain("xblocked.test"));
        assert!(!d.is_empty());
        assert!(deny(&[], &[], &[]).is_empty());
    }

    #[test]
    fn invalid_entries_are_skipped() {
        let d = deny(&["nope"], &["no-at-sign"], &["*."]);
        assert!(d.is_empty());
        assert_eq!(
            parse_network(" 10.1.2.3/8 ").unwrap().to_string(),
            "10.0.0.0/8"
        );
    }
}
