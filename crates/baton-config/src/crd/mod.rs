//! The `baton.dev/v1alpha1` custom resources: [`SendingPool`] (cluster-scoped, owned by the
//! platform team), [`RelayDomain`] and [`EventSink`] (namespaced, owned by an application
//! team).
//!
//! Doc comments on these types become the CRD schema descriptions shown by `kubectl explain`.
//! Defaults declared with `#[serde(default = ...)]` are published in the schema, so the API server
//! fills them in; the compiler applies the same defaults to YAML files.

// kube's `KubeSchema` derive emits items the `unreachable_pub` lint flags; the types
// themselves are re-exported below.
#[allow(unreachable_pub)]
mod domain;
#[allow(unreachable_pub)]
mod filter;
#[allow(unreachable_pub)]
mod limits;
#[allow(unreachable_pub)]
mod pool;
mod schema;
#[allow(unreachable_pub)]
mod sink;

pub use domain::{
    BOUNCE_CLASSES, DelayNoticeSpec, DkimAlgorithm, DkimKeySpec, DkimSpec, DomainLimits,
    RelayDomain, RelayDomainSpec, RelayDomainStatus, ReturnPathSpec, SmtpCredentialRef,
    SubmissionSpec, SuppressionMode, SuppressionSpec,
};
pub use filter::{
    ClamdFilterSpec, ContentFilterSpec, FailureMode, GrpcFilterSpec, HeaderFieldSpec,
    HeaderPolicySpec, RspamdFilterSpec, Treatment,
};
pub use limits::{
    ClientRateSpec, DenySpec, DestinationLimitsSpec, DestinationOverrideSpec, RateSpec,
    SpikeAction, SpikeSpec, ThrottleSpec, WarmupSpec,
};
pub use pool::{
    AddressLiterals, AutoscalingSpec, DeliveryMode, DeliverySpec, EgressSpec, InboundLimitsSpec,
    MAX_RETRY_TIERS, PoolLimits, RetrySpec, SendingPool, SendingPoolSpec, SendingPoolStatus,
    SmarthostSpec, TlsPolicy, TlsSpec, WorkersSpec,
};
pub use sink::{EVENT_TYPES, EventSink, EventSinkSpec, EventSinkStatus};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every Baton resource.
pub const GROUP: &str = "baton.dev";
/// API version of the Baton resources defined here.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` value of Baton documents (`baton.dev/v1alpha1`).
pub const API_VERSION: &str = "baton.dev/v1alpha1";

/// Namespace assumed for a SendingPool smarthost credentials Secret when the reference omits it.
pub const DEFAULT_SECRET_NAMESPACE: &str = "baton-system";

/// A reference to a Secret in the same namespace as the referring resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this resource (a DNS subdomain).
    #[schemars(length(min = 1, max = 253), pattern(schema::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// A reference to a Secret in any namespace (used by the cluster-scoped SendingPool).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespacedSecretRef {
    /// Name of the Secret (a DNS subdomain).
    #[schemars(length(min = 1, max = 253), pattern(schema::DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Namespace of the Secret (a DNS label). Defaults to `baton-system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(schema::DNS_LABEL_PATTERN))]
    pub namespace: Option<String>,
}

impl NamespacedSecretRef {
    /// The namespace of the referenced Secret, applying the `baton-system` default.
    pub fn namespace_or_default(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(DEFAULT_SECRET_NAMESPACE)
    }
}
