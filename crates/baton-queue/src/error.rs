//! The crate's error type.

use thiserror::Error;

/// Everything that can go wrong talking to JetStream.
#[derive(Debug, Error)]
pub enum QueueError {
    /// Could not connect to the NATS server.
    #[error("connect to NATS: {0}")]
    Connect(String),
    /// The publish was not acknowledged (timeout, no stream, storage failure).
    #[error("publish not acknowledged: {0}")]
    Publish(String),
    /// Creating or reading the stream, consumers or buckets failed.
    #[error("provisioning {what}: {detail}")]
    Provision {
        /// Which object.
        what: String,
        /// Server or client error text.
        detail: String,
    },
    /// A server accepted a consumer/stream but dropped options Baton relies on.
    #[error("{what} drifted: {detail}")]
    Drift {
        /// Which object.
        what: String,
        /// Which setting differs.
        detail: String,
    },
    /// A stream, bucket, lane consumer or the recorded queue settings do not exist yet: the
    /// owner (`baton config apply`, `baton dev` or the operator) has not provisioned them.
    /// Ingress and workers never create them; they report not ready until they exist.
    #[error(
        "not ready: {what} does not exist — run `baton config apply` (or `baton dev`) or the operator to provision the queue"
    )]
    NotProvisioned {
        /// Which object.
        what: String,
    },
    /// Pulling messages failed.
    #[error("consume: {0}")]
    Consume(String),
    /// Acknowledging a message failed.
    #[error("ack: {0}")]
    Ack(String),
    /// A queued payload could not be decoded as an envelope.
    #[error("decode envelope: {0}")]
    Decode(String),
    /// Object Store read or write failed.
    #[error("object store: {0}")]
    ObjectStore(String),
    /// KV bucket read, write or watch failed.
    #[error("config store: {0}")]
    ConfigStore(String),
    /// The suppression bucket could not be read or written.
    #[error("suppression list: {0}")]
    Suppressions(String),
    /// The process registry could not be read or written.
    #[error("process registry: {0}")]
    Processes(String),
    /// The hold bucket could not be read or written.
    #[error("holds: {0}")]
    Holds(String),
    /// An EventSink's consumer or delivery record could not be read or written.
    #[error("event sink: {0}")]
    Sinks(String),
    /// Reading or deleting stored queue messages (the operations API) failed.
    #[error("inspect queue: {0}")]
    Inspect(String),
    /// A snapshot with secrets in clear was about to be stored (never done: seal it first).
    #[error(
        "refusing to store a config snapshot with secrets in clear ({}): give the writer a keyring (--keyring / BATON_KEYRING)",
        .0.join(", ")
    )]
    ClearSecrets(Vec<String>),
}

impl QueueError {
    /// Bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            QueueError::Connect(_) => "connect",
            QueueError::Publish(_) => "publish",
            QueueError::Provision { .. } => "provision",
            QueueError::Drift { .. } => "drift",
            QueueError::NotProvisioned { .. } => "not_provisioned",
            QueueError::Consume(_) => "consume",
            QueueError::Ack(_) => "ack",
            QueueError::Decode(_) => "decode",
            QueueError::ObjectStore(_) => "object_store",
            QueueError::ConfigStore(_) => "config_store",
            QueueError::Suppressions(_) => "suppressions",
            QueueError::ClearSecrets(_) => "clear_secrets",
            QueueError::Inspect(_) => "inspect",
            QueueError::Holds(_) => "holds",
            QueueError::Processes(_) => "processes",
            QueueError::Sinks(_) => "sinks",
        }
    }
}
