//! THE compiler from resources (SendingPools, RelayDomains and the Secrets they reference) to the
//! `baton.v1.RelayConfig` snapshot. The operator and `baton dev` / `baton config apply` both call
//! [`compile`], so what is tested locally is what the cluster runs.
//!
//! Rules:
//! - Errors ([`ConfigError`]) are reserved for input that is unusable as a whole: duplicate
//!   resources, invalid fields (CIDR, duration, size, weight, ...), Smarthost mode without
//!   smarthosts, a missing or invalid smarthost credentials Secret.
//! - Problems confined to one RelayDomain never fail the snapshot: the domain is compiled with
//!   `ready = false` and a `not_ready_reason`, and its [`DomainReport`] carries the conditions
//!   (`Ready`, `PoolFound`, `DkimKeyReady`, `Conflict`) the operator should set.
//! - A domain claimed by several RelayDomains belongs to the oldest (creation timestamp, ties by
//!   `namespace/name`); the others get `Conflict=True` and are left out of the snapshot, so each
//!   domain appears at most once in `RelayConfig.domains`.
//! - Output is deterministic: pools sorted by name, domains by domain name, reports by
//!   `namespace/name`.
//!
//! Secret material in the snapshot: SMTP AUTH passwords only as salted SHA-256 hashes, but DKIM
//! private keys and smarthost passwords in clear (the data plane signs and authenticates with
//! them). The KV bucket holding the snapshot is therefore secret material.

mod dkim;
mod domain;
mod pool;
mod secrets;

use std::collections::BTreeMap;

use baton_proto::v1 as pb;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

pub use secrets::{BASIC_AUTH_TYPE, verify_password};

use crate::ConfigError;
use crate::crd::{RelayDomain, SendingPool, SendingPoolSpec};
use crate::dns::DnsRecord;

/// Namespace assumed for a namespaced resource without `metadata.namespace` (as in files).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Key of the DKIM private key in a DKIM key Secret.
pub const DKIM_KEY_SECRET_KEY: &str = "private.pem";

/// The input of [`compile`]: every SendingPool, RelayDomain and Secret to consider.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// SendingPools (cluster-scoped; names must be unique).
    pub pools: Vec<SendingPool>,
    /// RelayDomains (`namespace/name` must be unique).
    pub domains: Vec<RelayDomain>,
    /// Secrets referenced by the pools and domains (others are ignored).
    pub secrets: Vec<Secret>,
}

impl Resources {
    /// Appends all resources of `other`.
    pub fn extend(&mut self, other: Resources) {
        self.pools.extend(other.pools);
        self.domains.extend(other.domains);
        self.secrets.extend(other.secrets);
    }
}

/// The output of [`compile`]: the snapshot and one report per RelayDomain.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The snapshot to publish.
    pub config: pb::RelayConfig,
    /// One report per input RelayDomain, sorted by `namespace/name`.
    pub domains: Vec<DomainReport>,
}

/// What the compiler concluded about one RelayDomain: the status the operator should write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainReport {
    /// `namespace/name` of the RelayDomain.
    pub name: String,
    /// Namespace of the RelayDomain.
    pub namespace: String,
    /// `metadata.name` of the RelayDomain.
    pub resource_name: String,
    /// The sending domain.
    pub domain: String,
    /// Whether the domain is usable (also in the snapshot entry, if any).
    pub ready: bool,
    /// Why it is not ready (empty when ready).
    pub not_ready_reason: String,
    /// `Ready`, `PoolFound`, `DkimKeyReady` and `Conflict`, in that order.
    pub conditions: Vec<DomainCondition>,
    /// DNS records to publish (empty for a RelayDomain that lost a conflict).
    pub dns_records: Vec<DnsRecord>,
}

impl DomainReport {
    /// The condition of the given type.
    pub fn condition(&self, type_: ConditionType) -> Option<&DomainCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// A status condition the operator should set on a RelayDomain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainCondition {
    /// Condition type.
    pub type_: ConditionType,
    /// `True` (`true`) or `False` (`false`).
    pub status: bool,
    /// CamelCase reason (`PoolNotFound`, `SecretNotFound`, ...).
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl DomainCondition {
    /// `"True"` or `"False"`, as written in `status.conditions[].status`.
    pub fn status_str(&self) -> &'static str {
        if self.status { "True" } else { "False" }
    }

    /// The Kubernetes condition to write. The caller keeps the previous `lastTransitionTime` when
    /// the status did not change and passes it as `last_transition_time`.
    pub fn to_condition(
        &self,
        observed_generation: Option<i64>,
        last_transition_time: Time,
    ) -> Condition {
        Condition {
            type_: self.type_.as_str().to_owned(),
            status: self.status_str().to_owned(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            observed_generation,
            last_transition_time,
        }
    }
}

/// Types of the RelayDomain conditions computed by the compiler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConditionType {
    /// The domain is accepted for relay.
    Ready,
    /// The referenced SendingPool exists.
    PoolFound,
    /// Every DKIM key Secret exists and holds a valid key (True when DKIM is not configured).
    DkimKeyReady,
    /// Another, older RelayDomain claims the same domain.
    Conflict,
}

impl ConditionType {
    /// The condition type as written in `status.conditions[].type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::PoolFound => "PoolFound",
            Self::DkimKeyReady => "DkimKeyReady",
            Self::Conflict => "Conflict",
        }
    }
}

/// Compiles `res` into a snapshot with the given `generation` and `compiled_at_ms` (`now_ms`).
pub fn compile(res: &Resources, generation: u64, now_ms: i64) -> Result<Compiled, ConfigError> {
    let secrets = secrets::SecretIndex::new(&res.secrets)?;
    let mut pool_specs: BTreeMap<&str, &SendingPoolSpec> = BTreeMap::new();
    let mut pools = Vec::with_capacity(res.pools.len());
    for pool in &res.pools {
        let name = required_name("SendingPool", &pool.metadata)?;
        if pool_specs.insert(name, &pool.spec).is_some() {
            return Err(ConfigError::Duplicate {
                kind: "SendingPool",
                name: name.to_owned(),
            });
        }
        pools.push(pool::compile_pool(pool, name, &secrets)?);
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));

    let owners = domain::domain_owners(&res.domains)?;
    let mut entries = Vec::new();
    let mut reports = Vec::with_capacity(res.domains.len());
    for rd in &res.domains {
        let key = domain::key_of(rd)?;
        let owner = owners.get(rd.spec.domain.as_str()).map(String::as_str);
        let conflict_with = owner.filter(|o| *o != key);
        let (entry, report) =
            domain::compile_domain(rd, &key, &pool_specs, &secrets, conflict_with)?;
        if let Some(entry) = entry {
            entries.push(entry);
        }
        reports.push(report);
    }
    entries.sort_by(|a, b| a.domain.cmp(&b.domain));
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    tracing::debug!(
        pools = pools.len(),
        domains = entries.len(),
        not_ready = reports.iter().filter(|r| !r.ready).count(),
        "compiled relay config"
    );
    Ok(Compiled {
        config: pb::RelayConfig {
            generation,
            compiled_at_ms: now_ms,
            domains: entries,
            pools,
        },
        domains: reports,
    })
}

/// `metadata.namespace`, or [`DEFAULT_NAMESPACE`] when absent or empty.
pub(crate) fn namespace_of(meta: &ObjectMeta) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

fn required_name<'m>(kind: &'static str, meta: &'m ObjectMeta) -> Result<&'m str, ConfigError> {
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(ConfigError::invalid(
            kind,
            "<unnamed>",
            "metadata.name",
            "is required",
        )),
    }
}
