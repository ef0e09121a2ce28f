//! The operator's error type: one variant per failing dependency, each with a bounded
//! [`Error::metric_label`] for `baton_operator_reconciles_total{result}`.

/// Why a reconcile, the snapshot sync or leader election failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(kube::Error),
    /// A JetStream call (provisioning, lane stats, the KV snapshot) failed.
    #[error("jetstream: {0}")]
    Queue(baton_queue::QueueError),
    /// The resources do not compile into a snapshot at all (unnamed or duplicate resources).
    /// An invalid SendingPool or RelayDomain is not an error: it is left out and reported.
    #[error("config: {0}")]
    Config(baton_config::ConfigError),
    /// A DKIM key could not be generated or encoded.
    #[error("DKIM key generation: {0}")]
    KeyGeneration(String),
    /// An object lacks a field the operator needs (name, uid, ...).
    #[error("{kind} is missing {field}")]
    MissingField {
        /// Kind of the object.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// This replica lost (or never held) the leader Lease.
    #[error("leader election: {0}")]
    Leadership(String),
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_error",
            Error::Queue(_) => "queue_error",
            Error::Config(_) => "config_error",
            Error::KeyGeneration(_) => "keygen_error",
            Error::MissingField { .. } => "invalid_object",
            Error::Leadership(_) => "leadership_lost",
        }
    }
}

// The wrapped error is part of the message (for log lines), not a `source()`: `{:#}` chains
// would print it twice.
macro_rules! from_error {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::$v(e)
            }
        }
    )*};
}
from_error!(
    kube::Error => Kube,
    baton_queue::QueueError => Queue,
    baton_config::ConfigError => Config,
);

/// Result alias of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
