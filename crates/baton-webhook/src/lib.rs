//! The EventSink dispatcher (`baton webhooks`): delivery events from the `BATON_EVENTS`
//! stream to HTTPS endpoints, each POST a CloudEvent in structured JSON mode signed per the
//! Standard Webhooks specification.
//!
//! This crate owns:
//! - [`sign`]: the signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`);
//! - [`policy`]: pure decisions: backlog and age bounds, what an answer means, back-off;
//! - [`http`]: one sink's HTTPS client (its CA bundle or the system roots, keep-alive,
//!   timeout);
//! - [`dispatch`]: the tasks per sink: pinned pull, lanes per message, the gate, records and
//!   metrics hooks.
//!
//! The consumers, their filters and the delivery records live in `baton_queue::sinks`; the
//! EventSink resource and its compilation in `baton_config`.

pub mod dispatch;
pub mod http;
pub mod policy;
pub mod sign;

pub use dispatch::{Dispatcher, Hooks};

/// Why a sink cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The endpoint URL is unusable.
    #[error("endpoint URL: {0}")]
    Url(String),
    /// The TLS client could not be built (CA bundle).
    #[error("TLS: {0}")]
    Tls(String),
}
