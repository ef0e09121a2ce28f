//! The errors that stop a worker.

use thiserror::Error;

/// Errors that stop a worker.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// Resolver could not be set up.
    #[error("dns: {0}")]
    Dns(String),
    /// JetStream trouble that prevents consuming.
    #[error(transparent)]
    Queue(#[from] baton_queue::QueueError),
}

impl DeliveryError {
    /// Bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DeliveryError::Dns(_) => "dns",
            DeliveryError::Queue(e) => e.metric_label(),
        }
    }
}
