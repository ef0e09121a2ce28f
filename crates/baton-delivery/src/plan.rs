//! The pool plan: a snapshot's `SendingPool` compiled once per config generation into the
//! typed, validated settings the worker's data plane reads — the twin of the ingress's policy
//! index. Routing, sending, retry and the lanes take their settings from a [`PoolPlan`] and
//! decide nothing again: no data-plane defaults, no raw protobuf enums, no string parsing per
//! message. A pool the plan refuses (a snapshot that the compiler would not have produced) keeps
//! the worker not ready with the reason, instead of being delivered with guessed settings.
//!
//! Pure: no I/O, no clock.

use std::net::IpAddr;
use std::time::Duration;

use baton_core::destination::DestinationPolicy;
use baton_core::retry::RetrySchedule;
use baton_proto::v1::{DeliveryMode, SendingPool, TlsPolicy};
use baton_smtp_client::{Credentials, TlsMode};
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

/// Direct (MX) delivery settings.
#[derive(Debug, Clone)]
pub struct Direct {
    /// TCP port at every MX.
    pub port: u16,
    /// STARTTLS policy toward MX hosts.
    pub tls: TlsMode,
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
    /// STARTTLS policy toward it.
    pub tls: TlsMode,
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
}

fn tls_mode(pool: &str, field: &str, value: i32) -> Result<TlsMode, PlanError> {
    match TlsPolicy::try_from(value) {
        Ok(TlsPolicy::Opportunistic) => Ok(TlsMode::Opportunistic),
        Ok(TlsPolicy::Required) => Ok(TlsMode::Required),
        Ok(TlsPolicy::Disabled) => Ok(TlsMode::Disabled),
        Err(_) => Err(PlanError::Tls {
            pool: pool.to_owned(),
            field: field.to_owned(),
            value,
        }),
    }
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
                let (destinations, invalid) = DestinationPolicy::new(&pool.allowed_networks);
                if let Some(value) = invalid.into_iter().next() {
                    return Err(PlanError::Network {
                        pool: name.to_owned(),
                        value,
                    });
                }
                Delivery::Direct(Direct {
                    port: port(name, "port", pool.port)?,
                    tls: tls_mode(name, "tlsPolicy", pool.tls_policy)?,
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
                let upstreams = pool
                    .smarthosts
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        Ok(Upstream {
                            host: s.host.clone(),
                            port: port(name, &format!("smarthosts[{i}].port"), s.port)?,
                            weight: s.weight,
                            tls: tls_mode(name, &format!("smarthosts[{i}].tls"), s.tls)?,
                            auth: (!s.username.is_empty()).then(|| Credentials {
                                username: s.username.clone(),
                                password: s.password.clone(),
                            }),
                        })
                    })
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
        assert_eq!((d.port, d.tls), (25, TlsMode::Required));
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
            }]
        );
        assert!(!plan.is_smarthost() && plan.upstreams().is_empty());
        assert_eq!(plan.default_name("w.example"), "w.example");
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
            (ups[1].tls, ups[1].auth.is_none()),
            (TlsMode::Opportunistic, true)
        );
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
