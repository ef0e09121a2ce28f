//! Outbound content filtering (issue 19): the clients of the content filters the ingress calls
//! after the final dot — before DKIM signing and the queue hand-off, so the client gets the
//! verdict in the DATA reply — and the pure logic that turns their answers into verdicts.
//!
//! - [`verdict`] (pure): [`Verdict`] (accept with header edits, reject, temporary failure,
//!   quarantine), the client-facing text and header cleaning, [`FailureMode`], how the verdicts
//!   of an ordered list combine, and the SMTP reply of each (`550 5.7.1`, `451 4.7.1`).
//! - [`rspamd`]: rspamd's HTTP protocol (`POST /checkv2`) and the mapping of its actions and
//!   score to a verdict ([`rspamd::RspamdPolicy`], pure).
//! - [`clamd`]: ClamAV's `clamd` (`zINSTREAM` over TCP) and its reply.
//! - [`grpc`]: the generic `baton.v1.Filter` gRPC service (`proto/baton/v1/filter.proto`).
//! - [`gate`]: each filter's bounds: a timeout per call and a concurrency bound that answers
//!   busy at once instead of queueing.
//! - [`chain`]: a configured [`Filter`] (one of the three, with its name, bounds and failure
//!   mode) and [`run`], which runs an ordered list of them on one message and reports what each
//!   did (for logs and metrics).
//!
//! Nothing here reads configuration or keeps state beyond each filter's connection pool and
//! semaphore; the ingress builds [`Filter`]s from its snapshot and calls [`run`].

pub mod chain;
pub mod clamd;
pub mod error;
pub mod gate;
pub mod grpc;
pub mod rspamd;
pub mod verdict;

use std::net::IpAddr;

pub use bytes::Bytes;
pub use chain::{Decision, Filter, FilterKind, Report, ReportResult, Settings, run};
pub use error::FilterError;
pub use gate::{Gate, Outcome};
pub use verdict::{ClientText, FailureMode, HeaderEdits, Verdict, VerdictKind};

/// One message and its SMTP context, as every filter receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanRequest {
    /// Envelope sender (MAIL FROM) without angle brackets, `""` for the null sender.
    pub sender: String,
    /// Envelope recipients (RCPT TO) without angle brackets, in order.
    pub recipients: Vec<String>,
    /// The SMTP client's address.
    pub client_ip: Option<IpAddr>,
    /// The client's host name when it is known (reverse DNS); rspamd's `Hostname`.
    pub client_hostname: Option<String>,
    /// The HELO/EHLO name.
    pub helo: Option<String>,
    /// The SMTP AUTH user.
    pub user: Option<String>,
    /// The sender's RelayDomain, `namespace/name`.
    pub relay_domain: String,
    /// The queue id the message gets if accepted.
    pub queue_id: String,
    /// The message as received: headers and body, CRLF, not dot-stuffed.
    pub message: Bytes,
}
