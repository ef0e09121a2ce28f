//! DNS for delivery: MX lookups (RFC 5321 §5.1) and address lookups through hickory, pointed at
//! the system resolver or at `--dns-server` (system tests run a DNS server on loopback). hickory
//! keeps its own TTL-bounded cache. Routing asks through the [`Resolve`] seam, so its unit tests
//! answer from a table.

use std::net::{IpAddr, SocketAddr};

use baton_core::routing::{MxPlan, order_mx};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use futures::future::BoxFuture;

use crate::DeliveryError;

/// What routing needs from DNS: [`Dns`] in a worker, a table in unit tests.
pub trait Resolve: Send + Sync {
    /// The MX plan of a domain: ordered hosts, null MX, or implicit (use the domain itself).
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxPlan, DnsFailure>>;
    /// A and AAAA addresses of a host (IPv4 first); an address literal is itself.
    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsFailure>>;
}

impl Resolve for Dns {
    fn mx<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Result<MxPlan, DnsFailure>> {
        Box::pin(Dns::mx(self, domain))
    }

    fn addresses<'a>(&'a self, host: &'a str) -> BoxFuture<'a, Result<Vec<IpAddr>, DnsFailure>> {
        Box::pin(Dns::addresses(self, host))
    }
}

/// Why a lookup gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsFailure {
    /// The domain does not exist (NXDOMAIN): permanent.
    NoSuchDomain,
    /// SERVFAIL, timeout, network: temporary.
    Temporary(String),
}

/// MX and address resolution.
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
}

impl Dns {
    /// A resolver using `server` (ip:port) if given, else the system configuration
    /// (`/etc/resolv.conf`).
    pub fn new(server: Option<SocketAddr>) -> Result<Dns, DeliveryError> {
        let provider = TokioRuntimeProvider::default();
        let config = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                ResolverConfig::from_parts(
                    None,
                    vec![],
                    vec![NameServerConfig::new(addr.ip(), true, vec![udp, tcp])],
                )
            }
            None => system_config()?,
        };
        let mut opts = ResolverOpts::default();
        opts.attempts = 2;
        opts.timeout = std::time::Duration::from_secs(5);
        opts.ndots = 0;
        let resolver = TokioResolver::builder_with_config(config, provider)
            .with_options(opts)
            .build()
            .map_err(|e| DeliveryError::Dns(e.to_string()))?;
        Ok(Dns { resolver })
    }

    /// The MX plan of a domain: ordered hosts, null MX, or implicit (use the domain itself).
    pub async fn mx(&self, domain: &str) -> Result<MxPlan, DnsFailure> {
        let name = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(name.as_str()).await {
            Ok(lookup) => {
                let records: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                Ok(order_mx(records, &mut rand::rng()))
            }
            Err(e) if e.is_nx_domain() => Err(DnsFailure::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Ok(MxPlan::Implicit),
            Err(e) => Err(DnsFailure::Temporary(e.to_string())),
        }
    }

    /// The TXT values at `name`, each record's character-strings joined; empty when the name
    /// has none or does not exist.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, DnsFailure> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        match self.resolver.txt_lookup(fqdn.as_str()).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(txt) => Some(
                        txt.txt_data
                            .iter()
                            .map(|part| String::from_utf8_lossy(part).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect()),
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(Vec::new()),
            Err(e) => Err(DnsFailure::Temporary(e.to_string())),
        }
    }

    /// A and AAAA addresses of a host (IPv4 first).
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, DnsFailure> {
        if let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(vec![ip]);
        }
        let name = format!("{}.", host.trim_end_matches('.'));
        match self.resolver.lookup_ip(name.as_str()).await {
            Ok(ips) => {
                let mut v: Vec<IpAddr> = ips.iter().collect();
                v.sort_by_key(|ip| ip.is_ipv6());
                Ok(v)
            }
            Err(e) if e.is_nx_domain() => Err(DnsFailure::NoSuchDomain),
            Err(e) if e.is_no_records_found() => Ok(vec![]),
            Err(e) => Err(DnsFailure::Temporary(e.to_string())),
        }
    }
}

/// Name servers from `/etc/resolv.conf` (hickory's `system-config` feature pulls more than an
/// MTA needs, so the few lines that matter are read here).
fn system_config() -> Result<ResolverConfig, DeliveryError> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers: Vec<NameServerConfig> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<IpAddr>().ok())
        .map(NameServerConfig::udp_and_tcp)
        .collect();
    if servers.is_empty() {
        return Err(DeliveryError::Dns(
            "no nameserver in /etc/resolv.conf; pass --dns-server".into(),
        ));
    }
    Ok(ResolverConfig::from_parts(None, vec![], servers))
}
