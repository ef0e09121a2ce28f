//! The errors that stop an ingress from starting.

use std::net::SocketAddr;

use thiserror::Error;

/// Errors that stop an ingress from starting.
#[derive(Debug, Error)]
pub enum IngressError {
    /// A listener address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS material missing or invalid.
    #[error("tls: {0}")]
    Tls(String),
}

impl IngressError {
    /// Bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            IngressError::Bind { .. } => "bind",
            IngressError::Tls(_) => "tls",
        }
    }
}
