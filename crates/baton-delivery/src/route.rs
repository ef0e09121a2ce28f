//! Where a group of recipients goes: the ordered list of SMTP targets to try (MX hosts in
//! preference order, an allowed address literal, or the pool's smarthosts by weight and
//! health), and which egress identity speaks for us. Direct-mode addresses pass the pool's
//! destination policy (no loopback, private, link-local... unless allowed) first.

use std::net::{IpAddr, SocketAddr};

use baton_core::destination::{DestinationPolicy, DomainPart, RefusedAddress, domain_part};
use baton_core::routing::{MxPlan, UpstreamHealth, choose_upstream, pick_weighted};
use baton_smtp_client::Credentials;
use parking_lot::Mutex;

use baton_smtp::EnhancedStatus;
use baton_smtp::catalogue;
use baton_smtp::reply::Reply;

use crate::plan::{Delivery, EgressIdentity, HopTls, PoolPlan, Upstream};
use crate::resolve::{DnsFailure, Resolve};

/// One place to try.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name (MX exchange or smarthost), for logs and SNI.
    pub host: String,
    /// Address and port to connect to.
    pub addr: SocketAddr,
    /// TLS for this hop.
    pub tls: HopTls,
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
    Fail {
        /// Enhanced status code for the DSN and the log.
        status: EnhancedStatus,
        /// Why, for the DSN's diagnostic and the log.
        text: String,
    },
    /// Temporary failure before connecting (DNS trouble, no address).
    Defer {
        /// Enhanced status code for the log and the retry.
        status: EnhancedStatus,
        /// Why, for the log.
        text: String,
    },
}

impl Route {
    /// The reply a verdict that does not connect records for its recipients (`550` for a
    /// failure, `451` for a deferral, with the verdict's status); `None` for targets.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Route::Targets(_) => None,
            Route::Fail { status, text } | Route::Defer { status, text } => {
                Some(catalogue::routing(*status, text))
            }
        }
    }
}

/// Smarthost health per pool member, shared by all deliveries of a worker.
#[derive(Default)]
pub struct Health {
    upstreams: Mutex<Vec<UpstreamHealth>>,
}

impl Health {
    fn ensure(&self, n: usize) {
        let mut v = self.upstreams.lock();
        if v.len() != n {
            v.resize_with(n, UpstreamHealth::default);
        }
    }

    /// Forget every smarthost's health (the pool's smarthost list changed: positions now
    /// name other relays).
    pub fn reset(&self) {
        self.upstreams.lock().clear();
    }

    /// Record the result of a connection to smarthost `i`.
    pub fn record(&self, i: usize, ok: bool) {
        if let Some(h) = self.upstreams.lock().get_mut(i) {
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
            .get(i)
            .is_none_or(UpstreamHealth::is_healthy)
    }

    fn order(&self, upstreams: &[Upstream]) -> Vec<usize> {
        self.ensure(upstreams.len());
        let v = self.upstreams.lock();
        let ups: Vec<(u32, &UpstreamHealth)> = upstreams
            .iter()
            .zip(v.iter())
            .map(|(s, h)| (s.weight, h))
            .collect();
        choose_upstream(&ups, crate::now_ms(), rand::random::<u64>())
    }
}

/// Pick the egress identity (EHLO name, source address) by weight.
pub fn pick_egress(plan: &PoolPlan) -> Option<&EgressIdentity> {
    let i = pick_weighted(
        &plan.egress,
        |e: &EgressIdentity| e.weight,
        rand::random::<u64>(),
    )?;
    plan.egress.get(i)
}

/// Resolve the route for recipients at `domain`. Direct mode never connects to an address
/// the pool's [`DestinationPolicy`] refuses; those come back as the second value (for logs
/// and metrics), and only when no allowed address is left does the route fail for them.
pub async fn route(
    dns: &dyn Resolve,
    plan: &PoolPlan,
    health: &Health,
    domain: &str,
) -> (Route, Vec<RefusedAddress>) {
    let direct = match &plan.delivery {
        Delivery::Smarthost(upstreams) => {
            return (smarthost_route(dns, upstreams, health).await, Vec::new());
        }
        Delivery::Direct(d) => d,
    };
    let (policy, port, tls) = (&direct.destinations, direct.port, &direct.tls);
    let hosts = match domain_part(domain) {
        DomainPart::Literal(ip) if direct.allow_address_literals => {
            return select_targets(vec![(ip.to_string(), Ok(vec![ip]))], policy, port, tls);
        }
        DomainPart::Literal(_) | DomainPart::BadLiteral => {
            let text = if direct.allow_address_literals {
                format!("unsupported address literal {domain}")
            } else {
                format!(
                    "address literal {domain} not accepted by pool {}",
                    plan.name
                )
            };
            // Accepted under an older config, or not an IPv4/IPv6 literal: permanent, like
            // the RCPT refusal.
            let status = EnhancedStatus::new(5, 1, 2);
            return (Route::Fail { status, text }, Vec::new());
        }
        DomainPart::Name => match dns.mx(domain).await {
            Ok(MxPlan::Hosts(h)) => h,
            Ok(MxPlan::Implicit) => vec![domain.to_string()],
            Ok(MxPlan::NullMx) => {
                let text = format!("{domain} does not accept mail (null MX, RFC 7505)");
                return (
                    Route::Fail {
                        status: EnhancedStatus::new(5, 1, 10),
                        text,
                    },
                    Vec::new(),
                );
            }
            Err(DnsFailure::NoSuchDomain) => {
                let text = format!("domain {domain} does not exist");
                return (
                    Route::Fail {
                        status: EnhancedStatus::new(5, 1, 2),
                        text,
                    },
                    Vec::new(),
                );
            }
            Err(DnsFailure::Temporary(e)) => {
                let text = format!("DNS lookup for {domain} failed: {e}");
                return (
                    Route::Defer {
                        status: EnhancedStatus::new(4, 4, 3),
                        text,
                    },
                    Vec::new(),
                );
            }
        },
    };
    let mut resolved = Vec::with_capacity(hosts.len());
    for host in hosts {
        let ips = dns.addresses(&host).await;
        resolved.push((host, ips));
    }
    select_targets(resolved, policy, port, tls)
}

/// The targets of resolved MX hosts (in order) whose addresses the policy allows. Without any:
/// defer when a lookup failed or found nothing (it may work later), else fail permanently
/// with the first refused address as the reason.
fn select_targets(
    resolved: Vec<(String, Result<Vec<IpAddr>, DnsFailure>)>,
    policy: &DestinationPolicy,
    port: u16,
    tls: &HopTls,
) -> (Route, Vec<RefusedAddress>) {
    let mut targets = Vec::new();
    let mut refused = Vec::new();
    let mut last_err = None;
    for (host, ips) in resolved {
        let ips = match ips {
            Ok(ips) if ips.is_empty() => {
                last_err = Some(format!("{host}: no address"));
                continue;
            }
            Ok(ips) => ips,
            Err(e) => {
                last_err = Some(format!("{host}: {e:?}"));
                continue;
            }
        };
        for ip in ips {
            match policy.check(ip) {
                Ok(()) => targets.push(Target {
                    host: host.clone(),
                    addr: SocketAddr::new(ip, port),
                    tls: tls.clone(),
                    auth: None,
                    upstream: None,
                }),
                Err(r) => refused.push(r),
            }
        }
    }
    let route = match (targets.is_empty(), refused.first(), last_err) {
        (false, _, _) => Route::Targets(targets),
        (true, _, Some(e)) => Route::Defer {
            status: EnhancedStatus::new(4, 4, 4),
            text: format!("no usable address: {e}"),
        },
        (true, Some(r), None) => Route::Fail {
            status: RefusedAddress::STATUS,
            text: r.text(),
        },
        (true, None, None) => Route::Defer {
            status: EnhancedStatus::new(4, 4, 4),
            text: "no address for any MX host".into(),
        },
    };
    (route, refused)
}

async fn smarthost_route(dns: &dyn Resolve, upstreams: &[Upstream], health: &Health) -> Route {
    let mut targets = Vec::new();
    for i in health.order(upstreams) {
        let Some(s) = upstreams.get(i) else {
            continue;
        };
        let Ok(ips) = dns.addresses(&s.host).await else {
            continue;
        };
        let Some(ip) = ips.first() else { continue };
        targets.push(Target {
            host: s.host.clone(),
            addr: SocketAddr::new(*ip, s.port),
            tls: s.tls.clone(),
            auth: s.auth.clone(),
            upstream: Some(i),
        });
    }
    if targets.is_empty() {
        return Route::Defer {
            status: EnhancedStatus::new(4, 4, 1),
            text: "no smarthost could be resolved".into(),
        };
    }
    Route::Targets(targets)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn select(
        resolved: Vec<(&str, Result<Vec<IpAddr>, DnsFailure>)>,
        allowed: &[&str],
    ) -> (Route, Vec<RefusedAddress>) {
        let (policy, _) = DestinationPolicy::new(allowed);
        let resolved = resolved
            .into_iter()
            .map(|(h, r)| (h.to_string(), r))
            .collect();
        select_targets(resolved, &policy, 25, &HopTls::OPPORTUNISTIC)
    }

    #[test]
    fn refused_addresses_are_skipped_and_allowed_ones_used() {
        let (route, refused) = select(
            vec![
                ("mx1.test", Ok(vec![ip("127.0.0.1"), ip("192.0.2.1")])),
                ("mx2.test", Ok(vec![ip("8.8.8.8"), ip("::ffff:10.0.0.1")])),
            ],
            &[],
        );
        let Route::Targets(t) = route else {
            panic!("{route:?}")
        };
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].addr, SocketAddr::new(ip("8.8.8.8"), 25));
        assert_eq!(t[0].host, "mx2.test");
        let classes: Vec<&str> = refused.iter().map(|r| r.class.as_str()).collect();
        assert_eq!(classes, ["loopback", "documentation", "private"]);
    }

    #[test]
    fn only_refused_addresses_is_a_permanent_failure_with_the_reason() {
        let (route, refused) = select(vec![("localhost", Ok(vec![ip("127.0.0.1")]))], &[]);
        assert_eq!(refused.len(), 1);
        match route {
            Route::Fail { status, text } => {
                assert_eq!(status.to_string(), "5.4.4");
                assert_eq!(
                    text,
                    "destination address 127.0.0.1 is not allowed (loopback)"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_failed_lookup_beside_refused_addresses_defers() {
        let (route, _) = select(
            vec![
                ("mx1.test", Ok(vec![ip("10.0.0.1")])),
                ("mx2.test", Err(DnsFailure::Temporary("timeout".into()))),
            ],
            &[],
        );
        assert!(
            matches!(route, Route::Defer { status, .. } if status == EnhancedStatus::new(4, 4, 4)),
            "{route:?}"
        );
        assert_eq!(route.reply().map(|r| r.code), Some(451));
    }

    #[test]
    fn allowed_networks_open_the_listed_ranges_only() {
        let (route, refused) = select(
            vec![("mx.test", Ok(vec![ip("127.0.0.1"), ip("10.0.0.1")]))],
            &["127.0.0.0/8"],
        );
        let Route::Targets(t) = route else {
            panic!("{route:?}")
        };
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].addr.ip(), ip("127.0.0.1"));
        assert_eq!(refused.len(), 1);
    }

    /// DNS from a table: `mx` per domain, `a` per host; anything else is NXDOMAIN.
    #[derive(Default)]
    struct Table {
        mx: std::collections::HashMap<String, Result<MxPlan, DnsFailure>>,
        a: std::collections::HashMap<String, Result<Vec<IpAddr>, DnsFailure>>,
    }

    impl Resolve for Table {
        fn mx<'a>(
            &'a self,
            domain: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<MxPlan, DnsFailure>> {
            let r = self
                .mx
                .get(domain)
                .cloned()
                .unwrap_or(Err(DnsFailure::NoSuchDomain));
            Box::pin(async move { r })
        }

        fn addresses<'a>(
            &'a self,
            host: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<Vec<IpAddr>, DnsFailure>> {
            let r = self
                .a
                .get(host)
                .cloned()
                .unwrap_or(Err(DnsFailure::NoSuchDomain));
            Box::pin(async move { r })
        }
    }

    fn table() -> Table {
        let mut t = Table::default();
        let hosts = |h: &[&str]| Ok(MxPlan::Hosts(h.iter().map(|s| s.to_string()).collect()));
        t.mx.insert(
            "dest.test".into(),
            hosts(&["mx1.dest.test", "mx2.dest.test"]),
        );
        t.mx.insert("null.test".into(), Ok(MxPlan::NullMx));
        t.mx.insert("implicit.test".into(), Ok(MxPlan::Implicit));
        t.mx.insert(
            "flaky.test".into(),
            Err(DnsFailure::Temporary("SERVFAIL".into())),
        );
        t.mx.insert("local.test".into(), hosts(&["localhost"]));
        t.a.insert("mx1.dest.test".into(), Ok(vec![ip("93.184.216.1")]));
        t.a.insert(
            "mx2.dest.test".into(),
            Ok(vec![ip("93.184.216.2"), ip("2606:4700::2")]),
        );
        t.a.insert("implicit.test".into(), Ok(vec![ip("93.184.216.9")]));
        t.a.insert("localhost".into(), Ok(vec![ip("127.0.0.1")]));
        t.a.insert("relay-b.test".into(), Ok(vec![ip("198.51.100.2")]));
        t
    }

    fn plan(f: impl FnOnce(&mut baton_proto::v1::SendingPool)) -> PoolPlan {
        let mut pool = baton_proto::v1::SendingPool {
            name: "p".into(),
            mode: baton_proto::v1::DeliveryMode::Direct as i32,
            port: 2525,
            tls_policy: baton_proto::v1::TlsPolicy::Opportunistic as i32,
            max_connections_per_destination: 1,
            max_messages_per_connection: 1,
            retry_schedule_secs: vec![60],
            max_age_secs: 3600,
            ..Default::default()
        };
        f(&mut pool);
        PoolPlan::compile(&pool).unwrap()
    }

    fn targets(r: &Route) -> Vec<String> {
        match r {
            Route::Targets(t) => t.iter().map(|t| format!("{}={}", t.host, t.addr)).collect(),
            other => panic!("no targets: {other:?}"),
        }
    }

    fn status(r: &Route) -> String {
        match r {
            Route::Fail { status, .. } => format!("fail {status}"),
            Route::Defer { status, .. } => format!("defer {status}"),
            Route::Targets(_) => "targets".into(),
        }
    }

    /// Direct delivery through the DNS seam: MX order and every address, on the pool's port.
    #[tokio::test]
    async fn direct_routes_follow_the_mx_records() {
        let (dns, health, p) = (table(), Health::default(), plan(|_| {}));
        let (r, refused) = route(&dns, &p, &health, "dest.test").await;
        assert_eq!(
            targets(&r),
            [
                "mx1.dest.test=93.184.216.1:2525",
                "mx2.dest.test=93.184.216.2:2525",
                "mx2.dest.test=[2606:4700::2]:2525"
            ]
        );
        assert!(refused.is_empty());
        let (r, _) = route(&dns, &p, &health, "implicit.test").await;
        assert_eq!(targets(&r), ["implicit.test=93.184.216.9:2525"]);
        let verdicts = [
            ("null.test", "fail 5.1.10"),
            ("nowhere.test", "fail 5.1.2"),
            ("flaky.test", "defer 4.4.3"),
            ("local.test", "fail 5.4.4"),
            ("[93.184.216.5]", "fail 5.1.2"),
        ];
        for (domain, want) in verdicts {
            let (r, _) = route(&dns, &p, &health, domain).await;
            assert_eq!(status(&r), want, "{domain}");
            let code = want.split_once(' ').map_or("", |(_, c)| c);
            let reply = r.reply().unwrap();
            assert_eq!(reply.effective_status().to_string(), code, "{domain}");
            assert_eq!(reply.is_permanent(), want.starts_with("fail"), "{domain}");
        }
        // The pool may allow a network and address literals.
        let open = plan(|p| {
            p.allowed_networks = vec!["127.0.0.0/8".into()];
            p.allow_address_literals = true;
        });
        let (r, _) = route(&dns, &open, &health, "local.test").await;
        assert_eq!(targets(&r), ["localhost=127.0.0.1:2525"]);
        let (r, _) = route(&dns, &open, &health, "[93.184.216.5]").await;
        assert_eq!(targets(&r), ["93.184.216.5=93.184.216.5:2525"]);
    }

    /// Smarthost delivery: a relay that does not resolve is skipped; none resolving defers.
    #[tokio::test]
    async fn smarthost_routes_skip_what_does_not_resolve() {
        let smarthosts = |hosts: &[&str]| {
            let hosts: Vec<baton_proto::v1::Smarthost> = hosts
                .iter()
                .map(|h| baton_proto::v1::Smarthost {
                    host: (*h).into(),
                    port: 587,
                    weight: 1,
                    tls: baton_proto::v1::TlsPolicy::Required as i32,
                    username: "u".into(),
                    password: "p".into(),
                    ..Default::default()
                })
                .collect();
            plan(move |p| {
                p.mode = baton_proto::v1::DeliveryMode::Smarthost as i32;
                p.smarthosts = hosts;
            })
        };
        let (dns, health) = (table(), Health::default());
        let p = smarthosts(&["relay-a.test", "relay-b.test"]);
        let (r, _) = route(&dns, &p, &health, "anything.test").await;
        assert_eq!(targets(&r), ["relay-b.test=198.51.100.2:587"]);
        let Route::Targets(t) = r else { panic!() };
        assert_eq!(
            (t[0].tls.mode, t[0].upstream),
            (baton_smtp_client::TlsMode::Required, Some(1))
        );
        assert!(t[0].auth.is_some());
        let (r, _) = route(&dns, &smarthosts(&["relay-a.test"]), &health, "x.test").await;
        assert_eq!(status(&r), "defer 4.4.1");
    }
}
