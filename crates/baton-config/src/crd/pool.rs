//! `SendingPool`: how mail leaves the cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NamespacedSecretRef;
use super::schema::{
    self, DNS_LABEL_PATTERN, DURATION_PATTERN, EHLO_NAME_PATTERN, FQDN_PATTERN, HOST_NAME_PATTERN,
};

/// Desired state of a SendingPool: its delivery workers, how they route mail (direct MX delivery
/// or through smarthosts), the identities they present, outbound TLS policy, per-destination
/// limits and the retry schedule.
// Several `printcolumn(type_ = ...)` entries trip clippy's duplicated-attribute check.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "SendingPool",
    plural = "sendingpools",
    singular = "sendingpool",
    shortname = "sp",
    category = "baton",
    status = "SendingPoolStatus",
    doc = "A pool of delivery workers and the policy they deliver with. Cluster-scoped; \
           RelayDomains select one by name.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.delivery.mode",
        description = "Delivery mode (Direct or Smarthost)"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".spec.workers.replicas",
        description = "Desired worker replicas"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyWorkers",
        description = "Ready worker pods"
    ),
    printcolumn(
        name = "Queue",
        type_ = "integer",
        json_path = ".status.queueDepth",
        description = "Messages waiting in the pool's queues"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = Rule::new("self.metadata.name.size() <= 63").message(
    "metadata.name must be at most 63 characters: it becomes a label value on the worker objects"
))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = schema::unsigned_bounds)]
pub struct SendingPoolSpec {
    /// Delivery worker Deployment settings: replicas, resources, scheduling and autoscaling.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// How mail is routed: direct MX delivery or through smarthosts.
    #[serde(default)]
    pub delivery: DeliverySpec,
    /// Egress identities (EHLO name and optional source address), chosen by weight. Empty: any local
    /// address and the worker's default EHLO name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub egress: Vec<EgressSpec>,
    /// EHLO name (and DSN `Reporting-MTA`) of this pool's workers when `egress` is empty: a
    /// fully qualified domain name that resolves to the pool's outbound addresses and back.
    /// Omitted: the workers' `--hostname` (the operator's `--worker-hostname`, chart value
    /// `workers.hostname`). Workers never announce their pod name: without either, the pool's
    /// workers are not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 253), pattern(FQDN_PATTERN))]
    pub ehlo_name: Option<String>,
    /// Namespaces whose RelayDomains may use this pool. Omitted or empty: every namespace (as
    /// before this field existed). A RelayDomain of another namespace is not ready
    /// (`PoolFound=False`, reason `NotAllowed`) and its clients get `451 4.7.5` saying why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))
    )]
    pub allowed_namespaces: Vec<String>,
    /// RelayDomains using this pool must prove they control their domain: each is not ready
    /// (`DomainVerified=False`) until `_baton-verification.<domain>` publishes the TXT value
    /// shown in its `status.dnsRecords`. Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_domain_verification: bool,
    /// Outbound TLS policy for direct delivery.
    #[serde(default)]
    pub tls: TlsSpec,
    /// Per-destination concurrency limits.
    #[serde(default)]
    pub limits: PoolLimits,
    /// Retry schedule and maximum queue lifetime.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Content filters every message of this pool's RelayDomains passes at the end of DATA,
    /// in order, before DKIM signing and the hand-off (README "Content filtering"): the first
    /// that does not accept decides (`550 5.7.1`, `451 4.7.1`, or quarantine). Names must be
    /// unique. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub content_filters: Vec<super::filter::ContentFilterSpec>,
    /// Inbound budgets for every RelayDomain of this pool, counted across all ingress pods: the
    /// default where a RelayDomain sets none, and the ceiling where it sets a higher one (the
    /// lower non-zero value wins). Same fields as RelayDomain `spec.limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_limits: Option<InboundLimitsSpec>,
    /// Client networks, senders and recipient domains refused for every RelayDomain of this
    /// pool (`550 5.7.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny: Option<super::limits::DenySpec>,
}

/// A pool's inbound budgets for its RelayDomains (README "Limits").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundLimitsSpec {
    /// Per RelayDomain (all its senders together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_domain: Option<super::limits::RateSpec>,
    /// Per SMTP credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_credential: Option<super::limits::RateSpec>,
    /// Per client network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<super::limits::ClientRateSpec>,
}

/// Delivery worker Deployment settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkersSpec {
    /// Desired worker replicas. Defaults to 1 (or `autoscaling.minReplicas` when autoscaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// CPU and memory requests and limits of each worker container (non-negative quantities:
    /// `100m`, `128Mi`, `0.5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::resource_quantities)]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the worker pods must be scheduled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::label_values)]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the worker pods (`operator`: `Equal` or `Exists`; `effect`: `NoSchedule`,
    /// `PreferNoSchedule`, `NoExecute` or empty for all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = schema::toleration_enums)]
    pub tolerations: Option<Vec<Toleration>>,
    /// Horizontal autoscaling of the workers on CPU. When set, `replicas` is ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

/// Horizontal autoscaling of the delivery workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("minReplicas must not exceed maxReplicas"))]
pub struct AutoscalingSpec {
    /// Lower bound of worker replicas.
    #[serde(default = "one_i32")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound of worker replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average CPU utilization (percent of requests) the autoscaler aims for.
    #[serde(
        default = "default_target_cpu",
        rename = "targetCPUUtilizationPercentage"
    )]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

/// How a pool routes mail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.mode != 'Smarthost' || (has(self.smarthosts) && size(self.smarthosts) > 0)")
    .message("at least one smarthost is required when mode is Smarthost")
    .field_path(".smarthosts"))]
pub struct DeliverySpec {
    /// `Direct`: look up the recipient domain's MX hosts and deliver there. `Smarthost`: relay
    /// everything through the listed smarthosts.
    #[serde(default)]
    pub mode: DeliveryMode,
    /// Direct mode: TCP port used at every MX host.
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Smarthost mode: the upstream relays, chosen by weight with failover. At least one is
    /// required when mode is Smarthost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub smarthosts: Vec<SmarthostSpec>,
    /// Recipients written with an address literal (`user@[192.0.2.1]`, `user@[IPv6:...]`):
    /// `Refuse` (default) answers their RCPT with `550 5.1.2`; `Allow` accepts them — Direct
    /// mode then connects straight to the address (subject to `allowedNetworks`), Smarthost
    /// mode relays them through the smarthosts like any other recipient.
    #[serde(default)]
    pub address_literals: AddressLiterals,
    /// Direct mode: networks (CIDR or single address) that delivery may connect to although
    /// they are not globally reachable. By default workers never connect to loopback, private
    /// (RFC 1918, ULA), shared (CGNAT), link-local, documentation or other reserved addresses,
    /// whatever DNS or an address literal says; list e.g. `127.0.0.0/8` for a lab. Unspecified,
    /// multicast and broadcast addresses stay refused. Smarthosts are not subject to this.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 49)))]
    #[x_kube(validation = Rule::new("self.all(n, isCIDR(n) || isIP(n))")
        .message("allowedNetworks must be IP addresses or CIDRs"))]
    pub allowed_networks: Vec<String>,
}

impl SendingPoolSpec {
    /// Retry tiers (retry lanes) of this pool: one per schedule entry, at most
    /// [`MAX_RETRY_TIERS`] (a longer schedule is refused by the compiler).
    pub fn retry_tiers(&self) -> u32 {
        u32::try_from(self.retry.schedule.len().min(MAX_RETRY_TIERS)).unwrap_or(0)
    }
}

impl Default for DeliverySpec {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::default(),
            port: default_smtp_port(),
            smarthosts: Vec::new(),
            address_literals: AddressLiterals::default(),
            allowed_networks: Vec::new(),
        }
    }
}

/// Whether recipients with an address literal are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AddressLiterals {
    /// Refuse them at RCPT with `550 5.1.2`.
    #[default]
    Refuse,
    /// Accept and deliver them.
    Allow,
}

/// Delivery mode of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeliveryMode {
    /// Deliver to the recipient domain's MX hosts.
    #[default]
    Direct,
    /// Relay all mail through the pool's smarthosts.
    Smarthost,
}

/// Outbound TLS policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsPolicy {
    /// Use STARTTLS when offered; deliver in clear text otherwise.
    #[default]
    Opportunistic,
    /// Require STARTTLS; defer delivery when it is not offered or fails. The certificate is not
    /// verified (Postfix's `encrypt`): this protects against passive observers only.
    Required,
    /// Require TLS and a verified certificate: it chains to the system roots (or to the
    /// `caBundleSecretRef` bundle) and names the host — the smarthost's `host`, or the MX host
    /// name from DNS in Direct mode (Postfix's `secure`). Otherwise delivery is deferred.
    Verify,
    /// Never use STARTTLS.
    Disabled,
}

/// An upstream relay used in Smarthost mode.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.implicitTls) || !self.implicitTls || (has(self.tls) && self.tls in ['Required', 'Verify'])")
    .message("implicitTls needs tls Required or Verify"))]
pub struct SmarthostSpec {
    /// Host name (`smtp.example.net`) or IPv4/IPv6 address (`192.0.2.1`, `2001:db8::1`, without
    /// brackets) of the smarthost.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new(format!("isIP(self) || self.matches('{HOST_NAME_PATTERN}')"))
        .message("host must be a host name or an IP address"))]
    pub host: String,
    /// TCP port of the smarthost (25 or 587 with STARTTLS, 465 with `implicitTls`).
    #[serde(default = "default_smtp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Relative share of mail sent to this smarthost (at least 1).
    #[serde(default = "one_u32")]
    #[schemars(range(min = 1))]
    pub weight: u32,
    /// TLS policy towards this smarthost: `Opportunistic`, `Required` (encrypted, certificate
    /// not checked), `Verify` (certificate checked) or `Disabled`. With `credentialsSecretRef`
    /// the credentials are only ever sent after the certificate verified, whatever this says,
    /// unless `allowUnverifiedCredentials` is set.
    #[serde(default)]
    pub tls: TlsPolicy,
    /// TLS from the first byte (SMTPS, RFC 8314, usually port 465) instead of STARTTLS. Needs
    /// `tls` `Required` or `Verify`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub implicit_tls: bool,
    /// Secret whose `ca.crt` key holds the PEM certificates that the smarthost's certificate
    /// must chain to, instead of the system roots (a private CA). Namespace defaults to
    /// `baton-system`. Omitted: the pool's `tls.caBundleSecretRef`, else the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<NamespacedSecretRef>,
    /// Secret of type `kubernetes.io/basic-auth` (keys `username`, `password`) used to AUTH at the
    /// smarthost. Namespace defaults to `baton-system`. Omitted: no AUTH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<NamespacedSecretRef>,
    /// Send the credentials even when the certificate was not verified (anyone on the network
    /// path could collect them). Off by default; when on, the SendingPool's condition
    /// `CredentialsProtected` is `False` (reason `UnverifiedCredentialsAllowed`) as a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unverified_credentials: bool,
}

/// An egress identity: the EHLO name and source address outgoing connections use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressSpec {
    /// Host name announced in EHLO (letters, digits, `-` and dots); should resolve to
    /// `sourceAddress` and back (FCrDNS).
    #[schemars(length(min = 1, max = 253), pattern(EHLO_NAME_PATTERN))]
    pub ehlo_name: String,
    /// Local IPv4 or IPv6 address to bind outgoing connections to (must exist on the worker
    /// nodes, e.g. with hostNetwork). Omitted: any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 45))]
    #[x_kube(validation = Rule::new("isIP(self)").message("sourceAddress must be an IP address"))]
    pub source_address: Option<String>,
    /// Relative share of connections using this identity (at least 1).
    #[serde(default = "one_u32")]
    #[schemars(range(min = 1))]
    pub weight: u32,
    /// IP warm-up: a daily volume schedule for a new address. Omitted: no daily limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<super::limits::WarmupSpec>,
}

/// Outbound TLS settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsSpec {
    /// `Opportunistic` (STARTTLS when offered), `Required` (defer without TLS), `Verify` (defer
    /// unless the MX host's certificate verifies and names it) or `Disabled`.
    #[serde(default)]
    pub policy: TlsPolicy,
    /// Secret whose `ca.crt` key holds the PEM certificates that verified certificates must
    /// chain to, instead of the system roots: the MX hosts' under `Verify`, and the smarthosts'
    /// without their own `caBundleSecretRef`. Namespace defaults to `baton-system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<NamespacedSecretRef>,
}

/// Per-destination limits of a pool: per worker, and shared by all its workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolLimits {
    /// Maximum simultaneous connections per destination (MX host or smarthost), per worker.
    #[serde(default = "default_max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections_per_destination: u32,
    /// Messages sent over one connection before it is closed and reopened.
    #[serde(default = "default_max_messages")]
    #[schemars(range(min = 1))]
    pub max_messages_per_connection: u32,
    /// Connections and messages per minute per destination site across all the pool's workers
    /// (counted in NATS). Omitted: none beyond the per-worker cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<super::limits::DestinationLimitsSpec>,
    /// Back-off of a destination that answers `421` or a rate-limit reply.
    #[serde(default)]
    pub throttle: super::limits::ThrottleSpec,
}

impl Default for PoolLimits {
    fn default() -> Self {
        Self {
            max_connections_per_destination: default_max_connections(),
            max_messages_per_connection: default_max_messages(),
            destinations: None,
            throttle: super::limits::ThrottleSpec::default(),
        }
    }
}

/// Most retry tiers a pool may have (each tier is a JetStream consumer).
pub const MAX_RETRY_TIERS: usize = 16;

/// Retry schedule and maximum queue lifetime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrySpec {
    /// Fixed delay of each retry tier, in order (`1m`, `1h30m`, `4h`, ...: numbers with units
    /// `s`, `m`, `h`, `d`, `w`, ...), each at least 1s. A deferred message moves to the next tier
    /// after each failed attempt and stays in the last one. At most 16.
    #[serde(default = "default_retry_schedule")]
    #[schemars(
        length(min = 1, max = 16),
        inner(length(min = 1, max = 32), pattern(DURATION_PATTERN))
    )]
    pub schedule: Vec<String>,
    /// Maximum queue lifetime (`5d`, `36h`, ...; at least 1s); older mail expires and bounces to
    /// its sender.
    #[serde(default = "default_max_age")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub max_age: String,
}

impl Default for RetrySpec {
    fn default() -> Self {
        Self {
            schedule: default_retry_schedule(),
            max_age: default_max_age(),
        }
    }
}

/// Observed state of a SendingPool, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendingPoolStatus {
    /// Worker pods that are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_workers: Option<i32>,
    /// Messages waiting in the pool's new and retry queues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<i64>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions (`Ready`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

fn one_i32() -> i32 {
    1
}
fn one_u32() -> u32 {
    1
}
fn default_target_cpu() -> i32 {
    80
}
fn default_smtp_port() -> u16 {
    25
}
fn default_max_connections() -> u32 {
    20
}
fn default_max_messages() -> u32 {
    100
}
fn default_retry_schedule() -> Vec<String> {
    ["1m", "5m", "15m", "1h", "4h"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
fn default_max_age() -> String {
    "5d".to_owned()
}
