//! The pool plan: a snapshot's `SendingPool` compiled once per config generation into the
//! typed, validated settings the worker's data plane reads — the twin of the ingress's policy
//! index. Routing, sending, retry and the lanes take their settings from a [`PoolPlan`] and
//! decide nothing again: no data-plane defaults, no raw protobuf enums, no string parsing per
//! message. A pool the plan refuses (a snapshot that the compiler would not have produced) keeps
//! the worker not ready with the reason, instead of being delivered with guessed settings.
//!
//! Pure: no I/O, no clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_core::destination::DestinationPolicy;
use baton_core::retry::RetrySchedule;
use baton_core::routing::{BackoffPolicy, DestinationLimits, DestinationOverride, Warmup};
use baton_proto::v1::{DeliveryMode, SendingPool, TlsPolicy};
use baton_smtp_client::{ClientConfig, Credentials, TlsMode, TrustError};
use rustls::RootCertStore;
use thiserror::Error;

/// Why a pool of a snapshot cannot be planned (each names the field, as the compiler would).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// `mode` is not a known delivery mode.
    #[error("pool {pool}: unknown delivery mode {value}")]
    Mode {
        /// The pool.
        pool: String,
        /// The raw value.
        value: i32,
    },
    /// A TLS policy is not a known one.
    #[error("pool {pool}: unknown TLS policy {value} in {field}")]
    Tls {
        /// The pool.
        pool: String,
        /// Which field.
        field: String,
        /// The raw value.
        value: i32,
    },
    /// A port outside 1–65535.
    #[error("pool {pool}: {field} {value} is not a port (1-65535)")]
    Port {
        /// The pool.
        pool: String,
        /// Which field.
        field: String,
        /// The raw value.
        value: u32,
    },
    /// A limit or schedule that must be set is zero or empty.
    #[error("pool {pool}: {field} must be at least 1")]
    Unset {
        /// The pool.
        pool: String,
        /// Which field.
        field: &'static str,
    },
    /// Smarthost mode without any smarthost.
    #[error("pool {pool}: Smarthost mode without smarthosts")]
    NoSmarthosts {
        /// The pool.
        pool: String,
    },
    /// An egress source address that is not an IP address.
    #[error("pool {pool}: egress[{index}].sourceAddress {value:?} is not an IP address")]
    SourceAddress {
        /// The pool.
        pool: String,
        /// Position in `egress`.
        index: usize,
        /// The raw value.
        value: String,
    },
    /// A CA bundle that holds no usable certificate.
    #[error("pool {pool}: {field}: {error}")]
    CaBundle {
        /// The pool.
        pool: String,
        /// Which field.
        field: String,
        /// Why.
        error: TrustError,
    },
    /// Implicit TLS with a policy that does not require TLS.
    #[error("pool {pool}: smarthosts[{index}] implicit TLS needs tls Required or Verify")]
    ImplicitTls {
        /// The pool.
        pool: String,
        /// Position in `smarthosts`.
        index: usize,
    },
    /// An allowed network that is not a CIDR or an address.
    #[error("pool {pool}: allowedNetworks entry {value:?} is not a network")]
    Network {
        /// The pool.
        pool: String,
        /// The raw value.
        value: String,
    },
}

/// How a pool delivers.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// To each recipient domain's MX hosts.
    Direct(Direct),
    /// Everything through these relays, picked by weight and health.
    Smarthost(Vec<Upstream>),
}

/// What a verified certificate must chain to.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The platform's trust anchors ([`baton_smtp_client::system_roots`], loaded on first use).
    System,
    /// A CA bundle of the pool (`caBundleSecretRef`), parsed once per snapshot.
    Bundle(Arc<RootCertStore>),
}

/// How one hop (an MX host or a smarthost) is secured, decided once per snapshot.
#[derive(Debug, Clone)]
pub struct HopTls {
    /// STARTTLS policy (`Required` whenever the certificate is verified).
    pub mode: TlsMode,
    /// TLS from the first byte (SMTPS) instead of STARTTLS.
    pub implicit: bool,
    /// `Some`: the certificate must chain to these anchors and name the host, or the attempt
    /// is deferred.
    pub verify: Option<Trust>,
    /// Credentials may be sent over TLS whose certificate was not verified.
    pub allow_unverified_auth: bool,
}

impl HopTls {
    /// Opportunistic STARTTLS, nothing verified (the default of a pool).
    pub const OPPORTUNISTIC: HopTls = HopTls {
        mode: TlsMode::Opportunistic,
        implicit: false,
        verify: None,
        allow_unverified_auth: false,
    };

    /// The hop's TLS settings in a client configuration for one connection.
    pub fn apply(&self, cfg: &mut ClientConfig) -> Result<(), TrustError> {
        cfg.tls = self.mode;
        cfg.implicit_tls = self.implicit;
        cfg.allow_auth_unverified = self.allow_unverified_auth;
        cfg.verify_certificates = self.verify.is_some();
        cfg.root_store = match &self.verify {
            None => None,
            Some(Trust::System) => Some(baton_smtp_client::system_roots()?),
            Some(Trust::Bundle(roots)) => Some(roots.clone()),
        };
        Ok(())
    }
}

/// Direct (MX) delivery settings.
#[derive(Debug, Clone)]
pub struct Direct {
    /// TCP port at every MX.
    pub port: u16,
    /// TLS toward MX hosts (verified against the MX host name under `Verify`).
    pub tls: HopTls,
    /// Which addresses may be connected to (non-global ones only when allowed).
    pub destinations: DestinationPolicy,
    /// Whether address-literal recipients are delivered straight to their address.
    pub allow_address_literals: bool,
}

/// One smarthost.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Host name (resolved per attempt).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Relative weight.
    pub weight: u32,
    /// TLS toward it. With credentials (and without `allowUnverifiedCredentials`) the
    /// certificate is always verified: credentials never go to an unverified server.
    pub tls: HopTls,
    /// AUTH credentials, when configured.
    pub auth: Option<Credentials>,
}

impl Upstream {
    /// `host:port`, the `upstream` label of `baton_delivery_smarthost_up`.
    pub fn label(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One egress identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressIdentity {
    /// Relative weight.
    pub weight: u32,
    /// EHLO name (`None`: the worker's own).
    pub ehlo_name: Option<String>,
    /// Local address outgoing connections bind to (`None`: any).
    pub source_address: Option<IpAddr>,
    /// IP warm-up schedule (`None`: no daily limit).
    pub warmup: Option<Warmup>,
}

impl EgressIdentity {
    /// What the identity's warm-up budget is counted under (its address and name).
    pub fn budget_scope(&self) -> String {
        format!(
            "{}|{}",
            self.source_address
                .map(|a| a.to_string())
                .unwrap_or_default(),
            self.ehlo_name.as_deref().unwrap_or("")
        )
    }
}

/// Everything a worker needs to know about its pool, decided once per snapshot.
#[derive(Debug, Clone)]
pub struct PoolPlan {
    /// The SendingPool's name.
    pub name: String,
    /// Direct or smarthost delivery.
    pub delivery: Delivery,
    /// Egress identities, picked by weight per attempt (empty: the worker's defaults).
    pub egress: Vec<EgressIdentity>,
    /// EHLO name and DSN `Reporting-MTA` when no egress identity names one (`spec.ehloName`);
    /// `None`: the worker's `--hostname`.
    pub ehlo_name: Option<String>,
    /// Concurrent connections per destination (across this worker's deliveries).
    pub max_connections_per_destination: usize,
    /// Messages sent over one connection before it is closed.
    pub max_messages_per_connection: u32,
    /// Retry tiers and maximum age.
    pub retry: RetrySchedule,
    /// Connections and messages per minute per destination site across the pool's workers
    /// (`spec.limits.destinations`; empty: none).
    pub destination_limits: DestinationLimits,
    /// Back-off after throttling replies (`spec.limits.throttle`).
    pub backoff: BackoffPolicy,
}

/// The snapshot's destination limits, override destinations lower-cased.
fn destination_limits(d: Option<&baton_proto::v1::DestinationLimits>) -> DestinationLimits {
    let Some(d) = d else {
        return DestinationLimits::default();
    };
    DestinationLimits {
        max_connections: d.max_connections,
        messages_per_minute: d.messages_per_minute,
        overrides: d
            .overrides
            .iter()
            .map(|o| DestinationOverride {
                destination: o.destination.trim_end_matches('.').to_ascii_lowercase(),
                max_connections: o.max_connections,
                messages_per_minute: o.messages_per_minute,
            })
            .collect(),
    }
}

/// A TLS policy of the snapshot: the STARTTLS mode and whether the certificate is verified.
fn tls_policy(pool: &str, field: &str, value: i32) -> Result<(TlsMode, bool), PlanError> {
    match TlsPolicy::try_from(value) {
        Ok(TlsPolicy::Opportunistic) => Ok((TlsMode::Opportunistic, false)),
        Ok(TlsPolicy::Required) => Ok((TlsMode::Required, false)),
        Ok(TlsPolicy::Verify) => Ok((TlsMode::Required, true)),
        Ok(TlsPolicy::Disabled) => Ok((TlsMode::Disabled, false)),
        Err(_) => Err(PlanError::Tls {
            pool: pool.to_owned(),
            field: field.to_owned(),
            value,
        }),
    }
}

/// The anchors of a CA bundle field (`None` when empty: the caller's fallback applies).
fn bundle(pool: &str, field: &str, pem: &str) -> Result<Option<Trust>, PlanError> {
    if pem.is_empty() {
        return Ok(None);
    }
    baton_smtp_client::roots_from_pem(pem.as_bytes())
        .map(|roots| Some(Trust::Bundle(Arc::new(roots))))
        .map_err(|error| PlanError::CaBundle {
            pool: pool.to_owned(),
            field: field.to_owned(),
            error,
        })
}

fn port(pool: &str, field: &str, value: u32) -> Result<u16, PlanError> {
    u16::try_from(value)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| PlanError::Port {
            pool: pool.to_owned(),
            field: field.to_owned(),
            value,
        })
}

/// One smarthost: its TLS is verified when its policy says `Verify`, and also whenever it has
/// credentials that may not go to an unverified server (then STARTTLS is required too).
fn upstream(
    pool: &str,
    i: usize,
    s: &baton_proto::v1::Smarthost,
    pool_trust: Option<&Trust>,
) -> Result<Upstream, PlanError> {
    let (mut mode, mut verify) = tls_policy(pool, &format!("smarthosts[{i}].tls"), s.tls)?;
    let auth = (!s.username.is_empty()).then(|| Credentials {
        username: s.username.clone(),
        password: s.password.clone(),
    });
    if auth.is_some() && !s.allow_unverified_credentials && mode != TlsMode::Disabled {
        // Disabled keeps its meaning: the client then never sends the credentials at all.
        (mode, verify) = (TlsMode::Required, true);
    }
    if s.implicit_tls && mode != TlsMode::Required {
        return Err(PlanError::ImplicitTls {
            pool: pool.to_owned(),
            index: i,
        });
    }
    let trust = bundle(pool, &format!("smarthosts[{i}].caBundle"), &s.ca_bundle_pem)?
        .or_else(|| pool_trust.cloned())
        .unwrap_or(Trust::System);
    Ok(Upstream {
        host: s.host.clone(),
        port: port(pool, &format!("smarthosts[{i}].port"), s.port)?,
        weight: s.weight,
        tls: HopTls {
            mode,
            implicit: s.implicit_tls,
            verify: verify.then_some(trust),
            allow_unverified_auth: s.allow_unverified_credentials,
        },
        auth,
    })
}

impl PoolPlan {
    /// Plan `pool`, validating every field the data plane reads.
    pub fn compile(pool: &SendingPool) -> Result<PoolPlan, PlanError> {
        let name = pool.name.as_str();
        let unset = |field| PlanError::Unset {
            pool: name.to_owned(),
            field,
        };
        let delivery = match DeliveryMode::try_from(pool.mode) {
            Ok(DeliveryMode::Direct) => {
                let (mode, verify) = tls_policy(name, "tlsPolicy", pool.tls_policy)?;
                let trust = bundle(name, "caBundle", &pool.ca_bundle_pem)?.unwrap_or(Trust::System);
                let (destinations, invalid) = DestinationPolicy::new(&pool.allowed_networks);
                if let Some(value) = invalid.into_iter().next() {
                    return Err(PlanError::Network {
                        pool: name.to_owned(),
                        value,
                    });
                }
                Delivery::Direct(Direct {
                    port: port(name, "port", pool.port)?,
                    tls: HopTls {
                        mode,
                        implicit: false,
                        verify: verify.then_some(trust),
                        allow_unverified_auth: false,
                    },
                    destinations,
                    allow_address_literals: pool.allow_address_literals,
                })
            }
            Ok(DeliveryMode::Smarthost) => {
                if pool.smarthosts.is_empty() {
                    return Err(PlanError::NoSmarthosts {
                        pool: name.to_owned(),
                    });
                }
                let pool_trust = bundle(name, "caBundle", &pool.ca_bundle_pem)?;
                let upstreams = pool
                    .smarthosts
                    .iter()
                    .enumerate()
                    .map(|(i, s)| upstream(name, i, s, pool_trust.as_ref()))
                    .collect::<Result<Vec<_>, PlanError>>()?;
                Delivery::Smarthost(upstreams)
            }
            Err(_) => {
                return Err(PlanError::Mode {
                    pool: name.to_owned(),
                    value: pool.mode,
                });
            }
        };
        let egress = pool
            .egress
            .iter()
            .enumerate()
            .map(|(index, e)| {
                let source_address = match e.source_address.as_str() {
                    "" => None,
                    s => Some(s.parse().map_err(|_| PlanError::SourceAddress {
                        pool: name.to_owned(),
                        index,
                        value: s.to_owned(),
                    })?),
                };
                Ok(EgressIdentity {
                    weight: e.weight,
                    ehlo_name: (!e.ehlo_name.is_empty()).then(|| e.ehlo_name.clone()),
                    source_address,
                    warmup: e.warmup.as_ref().map(|w| Warmup {
                        start_day: w.start_day,
                        daily_limits: w.daily_limits.clone(),
                    }),
                })
            })
            .collect::<Result<Vec<_>, PlanError>>()?;
        if pool.max_connections_per_destination == 0 {
            return Err(unset("maxConnectionsPerDestination"));
        }
        if pool.max_messages_per_connection == 0 {
            return Err(unset("maxMessagesPerConnection"));
        }
        if pool.retry_schedule_secs.is_empty() || pool.retry_schedule_secs.contains(&0) {
            return Err(unset("retry schedule"));
        }
        if pool.max_age_secs == 0 {
            return Err(unset("maxAge"));
        }
        let retry = RetrySchedule::new(
            pool.retry_schedule_secs
                .iter()
                .map(|&s| Duration::from_secs(s))
                .collect(),
            Duration::from_secs(pool.max_age_secs),
        );
        Ok(PoolPlan {
            name: name.to_owned(),
            delivery,
            egress,
            ehlo_name: (!pool.ehlo_name.is_empty()).then(|| pool.ehlo_name.clone()),
            max_connections_per_destination: pool.max_connections_per_destination as usize,
            max_messages_per_connection: pool.max_messages_per_connection,
            retry,
            destination_limits: destination_limits(pool.destinations.as_ref()),
            backoff: pool
                .throttle
                .as_ref()
                .map(|t| BackoffPolicy::from_secs(t.initial_secs, t.max_secs))
                .unwrap_or_default(),
        })
    }

    /// The name this pool's workers announce when the egress identity names none, and put
    /// in DSNs as `Reporting-MTA`: `spec.ehloName`, else the worker's own (`--hostname`).
    pub fn default_name<'a>(&'a self, worker: &'a str) -> &'a str {
        self.ehlo_name.as_deref().unwrap_or(worker)
    }

    /// Why this pool's workers may not deliver with `worker` as their name: no egress identity
    /// and no `spec.ehloName` names them, and `worker` is not a fully qualified domain name (a
    /// pod name). `None` when every name the pool can announce is one.
    pub fn unnamed(&self, worker: &str) -> Option<String> {
        let named = !self.egress.is_empty() || self.ehlo_name.is_some();
        (!named && !baton_core::names::is_fqdn(worker)).then(|| {
            format!(
                "pool {}: no fully qualified name to say EHLO with (the worker's is {worker:?}): \
                 set spec.ehloName or an egress identity, or the workers' --hostname \
                 (operator --worker-hostname, chart value workers.hostname)",
                self.name
            )
        })
    }

    /// Number of retry tiers (one retry lane each).
    pub fn retry_tiers(&self) -> u32 {
        u32::try_from(self.retry.tiers().len()).unwrap_or(u32::MAX)
    }

    /// The smarthosts (empty for direct delivery).
    pub fn upstreams(&self) -> &[Upstream] {
        match &self.delivery {
            Delivery::Smarthost(u) => u,
            Delivery::Direct(_) => &[],
        }
    }

    /// What the pool's connection history depends on: the smarthosts (address, port, TLS) or
    /// the direct port and TLS. When it changes between snapshots, destination suspensions
    /// and smarthost health measured on the old routes no longer apply.
    pub fn route_identity(&self) -> String {
        let tls = |t: &HopTls| {
            let verify = match &t.verify {
                None => "none".to_owned(),
                Some(Trust::System) => "system".to_owned(),
                Some(Trust::Bundle(roots)) => format!("bundle({})", roots.len()),
            };
            format!("{:?}/{}/{verify}", t.mode, t.implicit)
        };
        match &self.delivery {
            Delivery::Direct(d) => format!("direct:{}:{}", d.port, tls(&d.tls)),
            Delivery::Smarthost(ups) => ups
                .iter()
                .map(|u| format!("{}:{}", u.label(), tls(&u.tls)))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Whether all recipients go through smarthosts (one group per sender, not per domain).
    pub fn is_smarthost(&self) -> bool {
        matches!(self.delivery, Delivery::Smarthost(_))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use baton_proto::v1::{Egress, Smarthost};

    fn direct() -> SendingPool {
        SendingPool {
            name: "p".into(),
            mode: DeliveryMode::Direct as i32,
            port: 25,
            tls_policy: TlsPolicy::Required as i32,
            max_connections_per_destination: 7,
            max_messages_per_connection: 50,
            retry_schedule_secs: vec![60, 600],
            max_age_secs: 3600,
            allowed_networks: vec!["10.0.0.0/8".into()],
            egress: vec![Egress {
                ehlo_name: "out.example".into(),
                source_address: "192.0.2.7".into(),
                weight: 3,
                warmup: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_compiled_pool_is_planned_with_typed_settings() {
        let plan = PoolPlan::compile(&direct()).unwrap();
        let Delivery::Direct(d) = &plan.delivery else {
            panic!("not direct")
        };
        assert_eq!((d.port, d.tls.mode), (25, TlsMode::Required));
        assert!(d.tls.verify.is_none() && !d.tls.implicit);
        assert!(d.destinations.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(d.destinations.check("127.0.0.1".parse().unwrap()).is_err());
        assert_eq!(plan.max_connections_per_destination, 7);
        assert_eq!(plan.max_messages_per_connection, 50);
        assert_eq!(plan.retry_tiers(), 2);
        assert_eq!(plan.retry.max_age(), Duration::from_secs(3600));
        assert_eq!(
            plan.egress,
            [EgressIdentity {
                weight: 3,
                ehlo_name: Some("out.example".into()),
                source_address: Some("192.0.2.7".parse().unwrap()),
                warmup: None,
            }]
        );
        assert!(!plan.is_smarthost() && plan.upstreams().is_empty());
        assert_eq!(plan.default_name("w.example"), "w.example");
    }

    #[test]
    fn shared_destination_limits_throttle_and_warmup_are_planned() {
        let plan = PoolPlan::compile(&direct()).unwrap();
        assert!(plan.destination_limits.is_empty());
        assert_eq!(plan.backoff, BackoffPolicy::default());
        let mut pool = direct();
        pool.destinations = Some(baton_proto::v1::DestinationLimits {
            max_connections: 20,
            messages_per_minute: 600,
            overrides: vec![baton_proto::v1::DestinationOverride {
                destination: "*.Example.ORG.".into(),
                max_connections: 2,
                messages_per_minute: 0,
            }],
        });
        pool.throttle = Some(baton_proto::v1::ThrottleBackoff {
            initial_secs: 30,
            max_secs: 600,
        });
        pool.egress[0].warmup = Some(baton_proto::v1::Warmup {
            start_day: 20_000,
            daily_limits: vec![50, 100],
        });
        let plan = PoolPlan::compile(&pool).unwrap();
        let l = plan
            .destination_limits
            .for_destination("google.com", "a.example.org");
        assert_eq!(
            (l.scope.as_str(), l.max_connections, l.messages_per_minute),
            ("domain:*.example.org", 2, 600)
        );
        assert_eq!(
            plan.backoff,
            BackoffPolicy {
                initial_ms: 30_000,
                max_ms: 600_000
            }
        );
        let w = plan.egress[0].warmup.as_ref().unwrap();
        assert_eq!((w.budget(20_000), w.budget(20_002)), (Some(50), None));
        assert_eq!(plan.egress[0].budget_scope(), "192.0.2.7|out.example");
    }

    /// Workers never announce a pod name: a pool is named by its egress identities, its
    /// `spec.ehloName` or a fully qualified worker `--hostname`.
    #[test]
    fn a_pool_must_have_a_fully_qualified_name() {
        let pod = "baton-worker-bulk-7d9c5b8f4-x2x9q";
        let mut pool = direct();
        assert_eq!(
            PoolPlan::compile(&pool).unwrap().unnamed(pod),
            None,
            "egress names it"
        );
        pool.egress.clear();
        let plan = PoolPlan::compile(&pool).unwrap();
        assert!(plan.unnamed(pod).unwrap().contains("spec.ehloName"));
        assert_eq!(plan.unnamed("worker.example.com"), None);
        assert_eq!(plan.default_name(pod), pod);
        pool.ehlo_name = "out.example.com".into();
        let plan = PoolPlan::compile(&pool).unwrap();
        assert_eq!(plan.unnamed(pod), None);
        assert_eq!(plan.default_name(pod), "out.example.com");
    }

    #[test]
    fn smarthosts_are_typed_with_their_credentials() {
        let mut pool = direct();
        pool.mode = DeliveryMode::Smarthost as i32;
        pool.smarthosts = vec![
            Smarthost {
                host: "relay.example".into(),
                port: 587,
                weight: 2,
                tls: TlsPolicy::Required as i32,
                username: "u".into(),
                password: "p".into(),
                ..Default::default()
            },
            Smarthost {
                host: "backup.example".into(),
                port: 25,
                weight: 1,
                tls: TlsPolicy::Opportunistic as i32,
                ..Default::default()
            },
        ];
        let plan = PoolPlan::compile(&pool).unwrap();
        assert!(plan.is_smarthost());
        let ups = plan.upstreams();
        assert_eq!(ups[0].label(), "relay.example:587");
        assert_eq!(ups[0].auth.as_ref().map(|c| c.username.as_str()), Some("u"));
        assert_eq!(
            (ups[1].tls.mode, ups[1].auth.is_none()),
            (TlsMode::Opportunistic, true)
        );
        assert!(ups[1].tls.verify.is_none());
    }

    fn ca_pem() -> String {
        rcgen::generate_simple_self_signed(vec!["relay.example".to_owned()])
            .unwrap()
            .cert
            .pem()
    }

    fn smarthost_pool(s: Smarthost) -> SendingPool {
        SendingPool {
            mode: DeliveryMode::Smarthost as i32,
            smarthosts: vec![s],
            ..direct()
        }
    }

    fn only_upstream(pool: &SendingPool) -> Upstream {
        PoolPlan::compile(pool).unwrap().upstreams()[0].clone()
    }

    /// Credentials never go to a server whose certificate was not verified: a smarthost with
    /// credentials is verified (STARTTLS required) whatever its policy says, unless the pool
    /// explicitly allows unverified credentials; `Disabled` keeps its meaning (the client then
    /// never sends them).
    #[test]
    fn credentials_are_only_planned_over_verified_tls() {
        let with = |tls: TlsPolicy, allow: bool| Smarthost {
            host: "relay.example".into(),
            port: 587,
            weight: 1,
            tls: tls as i32,
            username: "u".into(),
            password: "p".into(),
            allow_unverified_credentials: allow,
            ..Default::default()
        };
        for tls in [
            TlsPolicy::Opportunistic,
            TlsPolicy::Required,
            TlsPolicy::Verify,
        ] {
            let up = only_upstream(&smarthost_pool(with(tls, false)));
            assert_eq!(up.tls.mode, TlsMode::Required, "{tls:?}");
            assert!(matches!(up.tls.verify, Some(Trust::System)), "{tls:?}");
            assert!(!up.tls.allow_unverified_auth);
        }
        let up = only_upstream(&smarthost_pool(with(TlsPolicy::Opportunistic, true)));
        assert_eq!(up.tls.mode, TlsMode::Opportunistic);
        assert!(up.tls.verify.is_none() && up.tls.allow_unverified_auth);
        // Verify stays verified even when unverified credentials are allowed.
        let up = only_upstream(&smarthost_pool(with(TlsPolicy::Verify, true)));
        assert!(up.tls.verify.is_some());
        let up = only_upstream(&smarthost_pool(with(TlsPolicy::Disabled, false)));
        assert_eq!(up.tls.mode, TlsMode::Disabled);
        assert!(up.tls.verify.is_none());
        // Without credentials, Required means encrypted but not verified (Postfix's `encrypt`).
        let mut plain = with(TlsPolicy::Required, false);
        plain.username.clear();
        let up = only_upstream(&smarthost_pool(plain));
        assert!(up.tls.verify.is_none() && up.auth.is_none());
    }

    /// A smarthost's own CA bundle wins over the pool's, which wins over the system roots;
    /// implicit TLS needs a policy that requires TLS; a bundle without certificates is refused.
    #[test]
    fn ca_bundles_and_implicit_tls_are_planned() {
        let verify = Smarthost {
            host: "relay.example".into(),
            port: 465,
            weight: 1,
            tls: TlsPolicy::Verify as i32,
            implicit_tls: true,
            ..Default::default()
        };
        let up = only_upstream(&smarthost_pool(verify.clone()));
        assert!(up.tls.implicit && matches!(up.tls.verify, Some(Trust::System)));
        let mut pool = smarthost_pool(verify.clone());
        pool.ca_bundle_pem = ca_pem();
        let Some(Trust::Bundle(pool_roots)) = only_upstream(&pool).tls.verify else {
            panic!("the pool's bundle")
        };
        assert_eq!(pool_roots.len(), 1);
        pool.smarthosts[0].ca_bundle_pem = format!("{}{}", ca_pem(), ca_pem());
        let Some(Trust::Bundle(own)) = only_upstream(&pool).tls.verify else {
            panic!("the smarthost's bundle")
        };
        assert_eq!(own.len(), 2);
        pool.smarthosts[0].ca_bundle_pem = "not a certificate".into();
        let err = PoolPlan::compile(&pool).unwrap_err().to_string();
        assert!(err.contains("smarthosts[0].caBundle"), "{err}");
        let mut opportunistic = verify;
        opportunistic.tls = TlsPolicy::Opportunistic as i32;
        let err = PoolPlan::compile(&smarthost_pool(opportunistic))
            .unwrap_err()
            .to_string();
        assert!(err.contains("implicit TLS"), "{err}");
        // Direct Verify: the pool's bundle, else the system roots.
        let mut direct = direct();
        direct.tls_policy = TlsPolicy::Verify as i32;
        let Delivery::Direct(d) = PoolPlan::compile(&direct).unwrap().delivery else {
            panic!("direct")
        };
        assert!(d.tls.mode == TlsMode::Required && matches!(d.tls.verify, Some(Trust::System)));
    }

    /// The route identity changes with the smarthosts and their TLS, not with unrelated
    /// settings.
    #[test]
    fn route_identity_follows_routes_only() {
        let one = |port: u32, tls: TlsPolicy| {
            smarthost_pool(Smarthost {
                host: "relay.example".into(),
                port,
                weight: 1,
                tls: tls as i32,
                ..Default::default()
            })
        };
        let id = |p: &SendingPool| PoolPlan::compile(p).unwrap().route_identity();
        let base = one(587, TlsPolicy::Required);
        let mut limits = base.clone();
        limits.max_connections_per_destination = 99;
        assert_eq!(id(&base), id(&limits));
        assert_ne!(id(&base), id(&one(465, TlsPolicy::Required)));
        assert_ne!(id(&base), id(&one(587, TlsPolicy::Verify)));
        assert_ne!(id(&base), id(&direct()));
    }

    /// The hop's settings reach the client configuration as planned.
    #[test]
    fn hop_tls_applies_to_the_client_configuration() {
        let roots = baton_smtp_client::roots_from_pem(ca_pem().as_bytes()).unwrap();
        let hop = HopTls {
            mode: TlsMode::Required,
            implicit: true,
            verify: Some(Trust::Bundle(Arc::new(roots))),
            allow_unverified_auth: false,
        };
        let mut cfg = ClientConfig::new("out.example");
        hop.apply(&mut cfg).unwrap();
        assert!(cfg.implicit_tls && cfg.verify_certificates && !cfg.allow_auth_unverified);
        assert_eq!(cfg.root_store.as_ref().map(|r| r.len()), Some(1));
        HopTls::OPPORTUNISTIC.apply(&mut cfg).unwrap();
        assert!(!cfg.implicit_tls && !cfg.verify_certificates && cfg.root_store.is_none());
        assert_eq!(cfg.tls, TlsMode::Opportunistic);
    }

    /// What the compiler would never produce is refused with the field, not defaulted.
    #[test]
    fn invalid_snapshots_are_refused_not_defaulted() {
        let refused = |f: &dyn Fn(&mut SendingPool)| {
            let mut p = direct();
            f(&mut p);
            PoolPlan::compile(&p).unwrap_err().to_string()
        };
        assert_eq!(
            refused(&|p| p.max_connections_per_destination = 0),
            "pool p: maxConnectionsPerDestination must be at least 1"
        );
        assert!(
            refused(&|p| p.max_messages_per_connection = 0).contains("maxMessagesPerConnection")
        );
        assert!(refused(&|p| p.retry_schedule_secs.clear()).contains("retry schedule"));
        assert!(refused(&|p| p.max_age_secs = 0).contains("maxAge"));
        assert!(refused(&|p| p.port = 0).contains("port 0"));
        assert!(refused(&|p| p.port = 70_000).contains("port 70000"));
        assert!(refused(&|p| p.mode = 9).contains("delivery mode 9"));
        assert!(refused(&|p| p.tls_policy = 9).contains("TLS policy 9"));
        assert!(refused(&|p| p.allowed_networks = vec!["nope".into()]).contains("\"nope\""));
        assert!(refused(&|p| p.egress[0].source_address = "x".into()).contains("egress[0]"));
        assert!(
            refused(&|p| p.mode = DeliveryMode::Smarthost as i32).contains("without smarthosts")
        );
    }
}
