//! Why a filter gave no verdict. Every one of these is internal: it is logged and counted, and
//! the filter's [`crate::FailureMode`] decides what the client sees.

use std::time::Duration;

/// A filter call that did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The filter's configuration is unusable (bad URL, address).
    #[error("invalid filter configuration: {0}")]
    Config(String),
    /// The scanner could not be reached.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// Reading from or writing to the scanner failed.
    #[error("i/o with the scanner: {0}")]
    Io(#[from] std::io::Error),
    /// No answer within the filter's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An HTTP-level failure (rspamd): the request failed or the status was not 200.
    #[error("http: {0}")]
    Http(String),
    /// A gRPC status other than OK (the generic filter).
    #[error("grpc {code:?}: {message}")]
    Grpc {
        /// The status code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The answer could not be understood.
    #[error("unreadable answer: {0}")]
    Protocol(String),
    /// The scanner answered with an error of its own (clamd `... ERROR`, e.g. its size limit).
    #[error("scanner error: {0}")]
    Scanner(String),
}

impl FilterError {
    /// A short label for metrics: `config`, `connect`, `io`, `timeout`, `http`, `grpc`,
    /// `protocol`, `scanner`.
    pub fn label(&self) -> &'static str {
        match self {
            FilterError::Config(_) => "config",
            FilterError::Connect { .. } => "connect",
            FilterError::Io(_) => "io",
            FilterError::Timeout(_) => "timeout",
            FilterError::Http(_) => "http",
            FilterError::Grpc { .. } => "grpc",
            FilterError::Protocol(_) => "protocol",
            FilterError::Scanner(_) => "scanner",
        }
    }
}

impl From<tonic::Status> for FilterError {
    fn from(status: tonic::Status) -> FilterError {
        FilterError::Grpc {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}
