//! Which IP addresses direct delivery may connect to, and address-literal recipients.
//!
//! Direct delivery connects wherever DNS (or an address literal such as `user@[10.0.0.1]`)
//! points. Without a rule, an MX or A record pointing at `127.0.0.1`, a pod or node address,
//! or a cloud metadata endpoint would make workers open SMTP sessions inside the cluster (a
//! server-side request forgery). [`DestinationPolicy::check`] is that rule:
//!
//! - refused by default: every address IANA lists as not globally reachable — loopback,
//!   unspecified, link-local, multicast, broadcast, private (RFC 1918, RFC 4193 ULA, and the
//!   deprecated site-local `fec0::/10`), shared address space (CGNAT `100.64.0.0/10`),
//!   documentation, benchmarking and the other reserved ranges;
//! - IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 well-known-prefix (`64:ff9b::/96`) IPv6
//!   addresses are judged by the IPv4 address they carry;
//! - a pool may list exceptions (`spec.delivery.allowedNetworks`, e.g. `127.0.0.0/8` for a
//!   lab), except for unspecified, multicast and broadcast addresses, which are never a mail
//!   server.
//!
//! Smarthosts are configured explicitly by the platform team and are not subject to it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;

/// Why an address is not globally reachable (bounded: usable as a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `0.0.0.0/8` ("this network"), `::`.
    Unspecified,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// RFC 1918, RFC 4193 (`fc00::/7`), deprecated site-local `fec0::/10`.
    Private,
    /// Shared address space `100.64.0.0/10` (carrier-grade NAT).
    Shared,
    /// Documentation ranges (`192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`,
    /// `2001:db8::/32`, `3fff::/20`).
    Documentation,
    /// Benchmarking `198.18.0.0/15`, `2001:2::/48`.
    Benchmarking,
    /// Any other IANA special-purpose range that is not globally reachable (`192.0.0.0/24`,
    /// `240.0.0.0/4`, `100::/64`, `2001::/23`, `64:ff9b:1::/48`, `5f00::/16`, `::/96`).
    Reserved,
}

impl AddressClass {
    /// Bounded label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Unspecified => "unspecified",
            AddressClass::LinkLocal => "link_local",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Private => "private",
            AddressClass::Shared => "shared",
            AddressClass::Documentation => "documentation",
            AddressClass::Benchmarking => "benchmarking",
            AddressClass::Reserved => "reserved",
        }
    }

    /// Whether no pool exception can allow it (it is never a mail server).
    pub fn never_allowed(self) -> bool {
        matches!(
            self,
            AddressClass::Unspecified | AddressClass::Multicast | AddressClass::Broadcast
        )
    }
}

/// The special-purpose class of `ip`, `None` for a globally reachable address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, c, _] = ip.octets();
    let class = match (a, b, c) {
        _ if ip.is_broadcast() => AddressClass::Broadcast,
        (0, _, _) => AddressClass::Unspecified,
        (127, _, _) => AddressClass::Loopback,
        (169, 254, _) => AddressClass::LinkLocal,
        (224..=239, _, _) => AddressClass::Multicast,
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => AddressClass::Private,
        (100, 64..=127, _) => AddressClass::Shared,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => AddressClass::Documentation,
        (198, 18..=19, _) => AddressClass::Benchmarking,
        (192, 0, 0) | (240..=255, _, _) => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let s = ip.segments();
    // NAT64 well-known prefix: a gateway would connect to the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, hi, lo] = s;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return classify_v4(v4);
    }
    let class = match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => AddressClass::Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => AddressClass::Loopback,
        // IPv4-compatible (deprecated) and the rest of ::/96.
        [0, 0, 0, 0, 0, 0, _, _] => AddressClass::Reserved,
        [x, ..] if x & 0xff00 == 0xff00 => AddressClass::Multicast,
        [x, ..] if x & 0xffc0 == 0xfe80 => AddressClass::LinkLocal,
        [x, ..] if x & 0xffc0 == 0xfec0 => AddressClass::Private,
        [x, ..] if x & 0xfe00 == 0xfc00 => AddressClass::Private,
        [0x2001, 0xdb8, ..] => AddressClass::Documentation,
        [0x3fff, y, ..] if y < 0x1000 => AddressClass::Documentation,
        [0x2001, 0x2, 0, ..] => AddressClass::Benchmarking,
        [0x2001, y, ..] if y < 0x200 => AddressClass::Reserved,
        [0x64, 0xff9b, 1, ..] => AddressClass::Reserved,
        [0x100, 0, 0, 0, ..] => AddressClass::Reserved,
        [0x5f00, ..] => AddressClass::Reserved,
        _ => return None,
    };
    Some(class)
}

/// A destination address direct delivery must not connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedAddress {
    /// The address.
    pub ip: IpAddr,
    /// Why.
    pub class: AddressClass,
}

impl RefusedAddress {
    /// Enhanced status of the permanent failure (`5.4.4`: unable to route).
    pub const STATUS: baton_smtp::EnhancedStatus = baton_smtp::EnhancedStatus::new(5, 4, 4);

    /// Text for the reply and the DSN: `destination address 127.0.0.1 is not allowed (loopback)`.
    pub fn text(&self) -> String {
        format!(
            "destination address {} is not allowed ({})",
            self.ip,
            self.class.as_str()
        )
    }
}

/// Where a pool's direct delivery may connect: the default rule plus its exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    allowed: Vec<IpNet>,
}

impl DestinationPolicy {
    /// A policy with `allowed` exceptions (CIDRs or single addresses). Returns the policy and
    /// the entries that did not parse (the config compiler refuses those; a snapshot written
    /// by an older compiler simply has none).
    pub fn new<S: AsRef<str>>(allowed: &[S]) -> (Self, Vec<String>) {
        let mut nets = Vec::new();
        let mut invalid = Vec::new();
        for a in allowed {
            match parse_network(a.as_ref()) {
                Some(n) => nets.push(n),
                None => invalid.push(a.as_ref().to_string()),
            }
        }
        (DestinationPolicy { allowed: nets }, invalid)
    }

    /// `Ok` when direct delivery may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), RefusedAddress> {
        let Some(class) = classify(ip) else {
            return Ok(());
        };
        let refused = RefusedAddress { ip, class };
        if class.never_allowed() {
            return Err(refused);
        }
        // An IPv4-mapped address is allowed by the IPv4 network that covers it, too.
        let v4 = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let covered = |a: IpAddr| self.allowed.iter().any(|n| n.contains(&a));
        if covered(ip) || v4.is_some_and(covered) {
            Ok(())
        } else {
            Err(refused)
        }
    }
}

/// A CIDR, or a bare address meaning a single host.
pub fn parse_network(s: &str) -> Option<IpNet> {
    let s = s.trim();
    IpNet::from_str(s)
        .ok()
        .or_else(|| IpAddr::from_str(s).ok().map(IpNet::from))
}

/// What the domain part of a recipient is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainPart {
    /// A domain name.
    Name,
    /// An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`), RFC 5321 §4.1.3.
    Literal(IpAddr),
    /// Bracketed but not an IPv4 or IPv6 literal (a general address literal or garbage).
    BadLiteral,
}

/// Classify the domain part of an address (without the `@`).
pub fn domain_part(domain: &str) -> DomainPart {
    let Some(inner) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) else {
        return DomainPart::Name;
    };
    let v6 = inner
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("IPv6:"))
        .and_then(|_| inner.get(5..));
    let ip = match v6 {
        Some(v6) => Ipv6Addr::from_str(v6).ok().map(IpAddr::V6),
        None => Ipv4Addr::from_str(inner).ok().map(IpAddr::V4),
    };
    ip.map_or(DomainPart::BadLiteral, DomainPart::Literal)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
