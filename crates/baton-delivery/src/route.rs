//! Where a group of recipients goes: the ordered list of SMTP targets to try (MX hosts in
//! preference order, or the pool's smarthosts by weight and health), and which egress identity
//! speaks for us.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use baton_core::routing::{MxPlan, UpstreamHealth, choose_upstream, pick_weighted};
use baton_proto::v1::{DeliveryMode, Egress, SendingPool, TlsPolicy};
use baton_smtp_client::{Credentials, TlsMode};

use crate::resolve::{Dns, DnsFailure};

/// One place to try.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name (MX exchange or smarthost), for logs and SNI.
    pub host: String,
    /// Address and port to connect to.
    pub addr: SocketAddr,
    /// TLS policy for this hop.
    pub tls: TlsMode,
    /// AUTH credentials (smarthosts only).
    pub auth: Option<Credentials>,
    /// Index of the smarthost in the pool (for health accounting).
    pub upstream: Option<usize>,
}

/// Routing verdict for one destination domain.
#[derive(Debug)]
pub enum Route {
    /// Try these, in order.
    Targets(Vec<Target>),
    /// Permanent failure before connecting (null MX, no such domain).
    Fail { status: &'static str, text: String },
    /// Temporary failure before connecting (DNS trouble, no address).
    Defer { status: &'static str, text: String },
}

/// Maps the pool's TLS policy enum.
pub fn tls_mode(p: i32) -> TlsMode {
    match TlsPolicy::try_from(p).unwrap_or(TlsPolicy::Opportunistic) {
        TlsPolicy::Opportunistic => TlsMode::Opportunistic,
        TlsPolicy::Required => TlsMode::Required,
        TlsPolicy::Disabled => TlsMode::Disabled,
    }
}

/// Smarthost health per pool member, shared by all deliveries of a worker.
#[derive(Default)]
pub struct Health {
    upstreams: Mutex<Vec<UpstreamHealth>>,
}

impl Health {
    fn ensure(&self, n: usize) {
        if let Ok(mut v) = self.upstreams.lock()
            && v.len() != n
        {
            v.resize_with(n, UpstreamHealth::default);
        }
    }

    /// Record the result of a connection to smarthost `i`.
    pub fn record(&self, i: usize, ok: bool) {
        if let Ok(mut v) = self.upstreams.lock()
            && let Some(h) = v.get_mut(i)
        {
            if ok {
                h.record_success();
            } else {
                h.record_failure(crate::now_ms());
            }
        }
    }

    /// Whether smarthost `i` is considered healthy (not marked down since its last success).
    pub fn is_up(&self, i: usize) -> bool {
        self.upstreams
            .lock()
            .ok()
            .and_then(|v| v.get(i).map(UpstreamHealth::is_healthy))
            .unwrap_or(true)
    }

    fn order(&self, pool: &SendingPool) -> Vec<usize> {
        self.ensure(pool.smarthosts.len());
        let Ok(v) = self.upstreams.lock() else {
            return (0..pool.smarthosts.len()).collect();
        };
        let ups: Vec<(u32, &UpstreamHealth)> = pool
            .smarthosts
            .iter()
            .zip(v.iter())
            .map(|(s, h)| (s.weight, h))
            .collect();
        choose_upstream(&ups, crate::now_ms(), rand::random::<u64>())
    }
}

/// Pick the egress identity (EHLO name, source address) by weight.
pub fn pick_egress(pool: &SendingPool) -> Option<&Egress> {
    let i = pick_weighted(&pool.egress, |e: &Egress| e.weight, rand::random::<u64>())?;
    pool.egress.get(i)
}

/// Resolve the route for recipients at `domain`.
pub async fn route(dns: &Dns, pool: &SendingPool, health: &Health, domain: &str) -> Route {
    if DeliveryMode::try_from(pool.mode).unwrap_or(DeliveryMode::Direct) == DeliveryMode::Smarthost
    {
        return smarthost_route(dns, pool, health).await;
    }
    let port = if pool.port == 0 { 25 } else { pool.port as u16 };
    let hosts = match dns.mx(domain).await {
        Ok(MxPlan::Hosts(h)) => h,
        Ok(MxPlan::Implicit) => vec![domain.to_string()],
        Ok(MxPlan::NullMx) => {
            return Route::Fail {
                status: "5.1.10",
                text: format!("{domain} does not accept mail (null MX, RFC 7505)"),
            };
        }
        Err(DnsFailure::NoSuchDomain) => {
            return Route::Fail {
                status: "5.1.2",
                text: format!("domain {domain} does not exist"),
            };
        }
        Err(DnsFailure::Temporary(e)) => {
            return Route::Defer {
                status: "4.4.3",
                text: format!("DNS lookup for {domain} failed: {e}"),
            };
        }
    };
    let tls = tls_mode(pool.tls_policy);
    let mut targets = Vec::new();
    let mut last_err = String::from("no address for any MX host");
    for host in hosts {
        match dns.addresses(&host).await {
            Ok(ips) => targets.extend(ips.into_iter().map(|ip: IpAddr| Target {
                host: host.clone(),
                addr: SocketAddr::new(ip, port),
                tls,
                auth: None,
                upstream: None,
            })),
            Err(e) => last_err = format!("{host}: {e:?}"),
        }
    }
    if targets.is_empty() {
        return Route::Defer {
            status: "4.4.4",
            text: format!("no usable address for {domain}: {last_err}"),
        };
    }
    Route::Targets(targets)
}

async fn smarthost_route(dns: &Dns, pool: &SendingPool, health: &Health) -> Route {
    let mut targets = Vec::new();
    for i in health.order(pool) {
        let Some(s) = pool.smarthosts.get(i) else {
            continue;
        };
        let Ok(ips) = dns.addresses(&s.host).await else {
            continue;
        };
        let Some(ip) = ips.first() else { continue };
        let auth = (!s.username.is_empty()).then(|| Credentials {
            username: s.username.clone(),
            password: s.password.clone(),
        });
        targets.push(Target {
            host: s.host.clone(),
            addr: SocketAddr::new(*ip, s.port as u16),
            tls: tls_mode(s.tls),
            auth,
            upstream: Some(i),
        });
    }
    if targets.is_empty() {
        return Route::Defer {
            status: "4.4.1",
            text: "no smarthost could be resolved".into(),
        };
    }
    Route::Targets(targets)
}
