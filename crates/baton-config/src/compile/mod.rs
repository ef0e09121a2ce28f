//! THE compiler from resources (SendingPools, RelayDomains and the Secrets they reference) to the
//! `baton.v1.RelayConfig` snapshot. The operator and `baton dev` / `baton config apply` both call
//! [`compile`], so what is tested locally is what the cluster runs.
//!
//! Rules:
//! - Errors ([`ConfigError`]) are reserved for input that is unusable as a whole: resources
//!   without `metadata.name`, two resources of a kind with the same name (two Secrets too). In
//!   Kubernetes neither can happen, so the operator always gets a snapshot.
//! - An invalid object never fails the snapshot. A SendingPool or RelayDomain with a field the
//!   compiler cannot use (CIDR, duration, size, weight, retry schedule, Smarthost mode without
//!   smarthosts, a missing or invalid smarthost credentials Secret, ...) is reported as an
//!   [`InvalidObject`] in its [`PoolReport`] / [`DomainReport`]; everything else compiles. An
//!   invalid SendingPool is left out of `RelayConfig`; an invalid RelayDomain stays in it, never
//!   ready and built from its valid parts, so its clients get a temporary `451 4.7.5` rather
//!   than a refusal while it is being fixed (only a bad domain name leaves no entry). A RelayDomain on an invalid pool stays in the snapshot, not ready
//!   (`PoolFound=False`, reason `PoolInvalid`); an invalid RelayDomain gets `Ready=False`, reason
//!   `Invalid`, and keeps its claim on its domain (a newer claim does not take it over).
//!   [`Compiled::ensure_valid`] is the all-or-nothing view for humans (`baton config check`,
//!   `baton config apply`, `baton dev`).
//! - Problems confined to one RelayDomain never fail the snapshot: the domain is compiled with
//!   `ready = false` and a `not_ready_reason`, and its [`DomainReport`] carries the conditions
//!   (`Ready`, `PoolFound`, `DkimKeyReady`, `Conflict`) the operator should set.
//! - A domain claimed by several RelayDomains belongs to the oldest (creation timestamp, ties by
//!   `namespace/name`); the others get `Conflict=True` and are left out of the snapshot, so each
//!   domain appears at most once in `RelayConfig.domains`.
//! - Output is deterministic: pools sorted by name, domains by domain name, pool reports by name,
//!   domain reports by `namespace/name`.
//!
//! Secret material in the snapshot: SMTP AUTH passwords only as salted SHA-256 hashes, but DKIM
//! private keys and smarthost passwords in clear (the data plane signs and authenticates with
//! them). The KV bucket holding the snapshot is therefore secret material.

mod dkim;
mod domain;
mod filter;
mod limits;
mod pool;
mod return_path;
mod secrets;
mod sink;

use std::collections::BTreeMap;

use baton_proto::v1 as pb;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};

pub use filter::{MAX_FILTER_TIMEOUT, MIN_FILTER_TIMEOUT, PROTECTED as PROTECTED_HEADERS};
pub use secrets::{
    ARGON2_M_KIB, ARGON2_P, ARGON2_T, BASIC_AUTH_TYPE, CA_BUNDLE_SECRET_KEY, verify_password,
};
pub use sink::{MAX_SINK_KEY, MIN_SINK_KEY, SINK_SECRET_KEY, SinkReport, signing_key};

use crate::crd::{EventSink, RelayDomain, SendingPool, SendingPoolSpec};
use crate::dns::DnsRecord;
use crate::{ConfigError, InvalidObject};

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
    /// EventSinks (`namespace/name` must be unique).
    pub sinks: Vec<EventSink>,
    /// Secrets referenced by the pools, domains and sinks (others are ignored).
    pub secrets: Vec<Secret>,
    /// RelayDomains (`namespace/name`) whose domain published its verification record
    /// ([`crate::verification`]); only consulted for pools that require it.
    pub verified_domains: std::collections::BTreeSet<String>,
}

impl Resources {
    /// Appends all resources of `other`.
    pub fn extend(&mut self, other: Resources) {
        self.pools.extend(other.pools);
        self.domains.extend(other.domains);
        self.sinks.extend(other.sinks);
        self.secrets.extend(other.secrets);
        self.verified_domains.extend(other.verified_domains);
    }

    /// The RelayDomains whose pool requires proof of domain ownership, each with the record it
    /// must publish: what the operator and `config apply` look up in DNS.
    pub fn verification_challenges(&self) -> Vec<(String, crate::dns::DnsRecord)> {
        let requiring: std::collections::BTreeSet<&str> = self
            .pools
            .iter()
            .filter(|p| p.spec.require_domain_verification)
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        self.domains
            .iter()
            .filter(|rd| requiring.contains(rd.spec.pool.as_str()))
            // A RelayDomain without a name never compiles; it has nothing to verify.
            .filter_map(|rd| Some((domain::key_of(rd).ok()?, crate::verification::challenge(rd))))
            .collect()
    }
}

/// The output of [`compile`]: the snapshot, one report per RelayDomain and one per SendingPool.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The snapshot to publish (without the invalid objects).
    pub config: pb::RelayConfig,
    /// One report per input RelayDomain, sorted by `namespace/name`.
    pub domains: Vec<DomainReport>,
    /// One report per input SendingPool, sorted by name.
    pub pools: Vec<PoolReport>,
    /// One report per input EventSink, sorted by `namespace/name`.
    pub sinks: Vec<SinkReport>,
}

impl Compiled {
    /// Every invalid object (a pool left out of the snapshot, a domain never ready): SendingPools by name, then
    /// RelayDomains by `namespace/name`.
    pub fn invalid(&self) -> impl Iterator<Item = &InvalidObject> {
        let pools = self.pools.iter().filter_map(|p| p.invalid.as_ref());
        pools
            .chain(self.domains.iter().filter_map(|d| d.invalid.as_ref()))
            .chain(self.sinks.iter().filter_map(|s| s.invalid.as_ref()))
    }

    /// All or nothing: [`ConfigError::InvalidObjects`] naming every invalid object, if any. What
    /// a human running `baton config check` / `apply` wants; the operator publishes the rest.
    pub fn ensure_valid(&self) -> Result<(), ConfigError> {
        let invalid: Vec<InvalidObject> = self.invalid().cloned().collect();
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::InvalidObjects(invalid))
        }
    }

    /// The report of the SendingPool `name`.
    pub fn pool(&self, name: &str) -> Option<&PoolReport> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// What the compiler concluded about one SendingPool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolReport {
    /// `metadata.name` of the SendingPool.
    pub name: String,
    /// Why it was left out of the snapshot (`None`: it is in the snapshot).
    pub invalid: Option<InvalidObject>,
    /// Smarthosts (`host:port`) whose credentials the spec allows to be sent over TLS whose
    /// certificate was not verified (`allowUnverifiedCredentials`): the operator's warning
    /// condition `CredentialsProtected=False`.
    pub unverified_credentials: Vec<String>,
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
    /// Why the RelayDomain itself is invalid, and so never ready (`None`: valid).
    pub invalid: Option<InvalidObject>,
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
    /// The domain published its verification record (only when the pool requires it).
    DomainVerified,
}

impl ConditionType {
    /// The condition type as written in `status.conditions[].type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "Ready",
            Self::PoolFound => "PoolFound",
            Self::DkimKeyReady => "DkimKeyReady",
            Self::Conflict => "Conflict",
            Self::DomainVerified => "DomainVerified",
        }
    }
}

/// Every SendingPool by name: its spec when it compiled, why not otherwise.
pub(crate) type PoolIndex<'a> = BTreeMap<&'a str, Result<&'a SendingPoolSpec, InvalidObject>>;

/// Compiles `res` into a snapshot with the given `generation` and `compiled_at_ms` (`now_ms`).
/// Invalid objects are reported (see the module docs); `Err` only for input that is
/// unusable as a whole.
pub fn compile(res: &Resources, generation: u64, now_ms: i64) -> Result<Compiled, ConfigError> {
    let secrets = secrets::SecretIndex::new(&res.secrets)?;
    let mut pool_index: PoolIndex<'_> = BTreeMap::new();
    let mut pools = Vec::with_capacity(res.pools.len());
    for pool in &res.pools {
        let name = required_name("SendingPool", &pool.metadata)?;
        if pool_index.contains_key(name) {
            return Err(ConfigError::Duplicate {
                kind: "SendingPool",
                name: name.to_owned(),
            });
        }
        let compiled = pool::compile_pool(pool, name, &secrets);
        pool_index.insert(
            name,
            compiled.as_ref().map(|_| &pool.spec).map_err(Clone::clone),
        );
        pools.extend(compiled.ok());
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));

    let owners = domain::domain_owners(&res.domains)?;
    let mut entries = Vec::new();
    let mut reports = Vec::with_capacity(res.domains.len());
    for rd in &res.domains {
        let key = domain::key_of(rd)?;
        let owner = owners.get(rd.spec.domain.as_str()).map(String::as_str);
        let conflict_with = owner.filter(|o| *o != key);
        let verified = res.verified_domains.contains(&key);
        let (entry, report) =
            domain::compile_domain(rd, &key, &pool_index, &secrets, conflict_with, verified);
        entries.extend(entry);
        reports.push(report);
    }
    entries.sort_by(|a, b| a.domain.cmp(&b.domain));
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    let pool_reports: Vec<PoolReport> = pool_index
        .into_iter()
        .map(|(name, compiled)| PoolReport {
            name: name.to_owned(),
            unverified_credentials: compiled
                .as_ref()
                .map(|spec| pool::unverified_credentials(spec))
                .unwrap_or_default(),
            invalid: compiled.err(),
        })
        .collect();
    let mut sinks = Vec::new();
    let mut sink_reports: Vec<SinkReport> = Vec::with_capacity(res.sinks.len());
    for sink in &res.sinks {
        let name = required_name("EventSink", &sink.metadata)?;
        let namespace = namespace_of(&sink.metadata);
        let key = format!("{namespace}/{name}");
        if sink_reports.iter().any(|r| r.name == key) {
            return Err(ConfigError::Duplicate {
                kind: "EventSink",
                name: key,
            });
        }
        let compiled = sink::compile_sink(sink, &key, namespace, &secrets);
        sink_reports.push(SinkReport {
            name: key,
            namespace: namespace.to_owned(),
            resource_name: name.to_owned(),
            invalid: compiled.as_ref().err().cloned(),
        });
        sinks.extend(compiled.ok());
    }
    sinks.sort_by(|a, b| a.name.cmp(&b.name));
    sink_reports.sort_by(|a, b| a.name.cmp(&b.name));
    tracing::debug!(
        sinks = sinks.len(),
        pools = pools.len(),
        domains = entries.len(),
        not_ready = reports.iter().filter(|r| !r.ready).count(),
        invalid_pools = pool_reports.iter().filter(|p| p.invalid.is_some()).count(),
        invalid_domains = reports.iter().filter(|r| r.invalid.is_some()).count(),
        "compiled relay config"
    );
    Ok(Compiled {
        config: pb::RelayConfig {
            generation,
            compiled_at_ms: now_ms,
            domains: entries,
            pools,
            sinks,
        },
        domains: reports,
        pools: pool_reports,
        sinks: sink_reports,
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
        _ => Err(InvalidObject::new(kind, "<unnamed>", "metadata.name", "is required").into()),
    }
}
