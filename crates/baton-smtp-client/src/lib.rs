//! Async SMTP client for Baton's delivery workers.
//!
//! Owns the outbound SMTP conversation with one server: connect (optionally from a given
//! source address), greeting, EHLO with HELO fallback (RFC 5321), STARTTLS (RFC 3207) with an
//! opportunistic/required/disabled policy, AUTH PLAIN/LOGIN (RFC 4954), MAIL/RCPT with SIZE
//! (RFC 1870), 8BITMIME, SMTPUTF8 (RFC 6531) and DSN (RFC 3461) parameters, pipelining
//! (RFC 2920), DATA with dot-stuffing or BDAT (RFC 3030; a message that fits one chunk goes in
//! the same write as MAIL and RCPT, so a reused connection costs one round trip per message),
//! RSET for connection reuse (pipelined with the next envelope, [`Connection::mark_reused`]),
//! QUIT. Message content is written as it is queued, without a copy, unless it needs
//! dot-stuffing or line-ending repair.
//!
//! It does not resolve MX records, choose routes, pool connections or decide retries: the
//! delivery worker does, using the per-recipient replies in [`SendResult`] and
//! [`ClientError::is_permanent`].
//!
//! Every stage runs under its own timeout ([`Timeouts`], RFC 5321 section 4.5.3.2 defaults).
//! TLS uses rustls with the aws-lc-rs provider. Replies are `baton_smtp`'s [`Reply`], the same type
//! the server session sends, so an outcome keeps the next hop's code and status as they came.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod body;
mod caps;
mod config;
mod connection;
mod error;
mod stream;
mod tls;
mod transaction;
mod trust;

pub use baton_smtp::params::{DsnRet, Notify};
pub use baton_smtp::reply::{
    EnhancedStatus, MAX_REPLY_LINE, MAX_REPLY_LINES, Reply, ReplyError, ReplyParser,
};
pub use body::MAX_CHUNK;
pub use caps::Capabilities;
pub use config::{ClientConfig, Credentials, Timeouts, TlsMode};
pub use connection::Connection;
pub use error::ClientError;
pub use transaction::{OutgoingMessage, OutgoingRecipient, SendResult};
pub use trust::{TrustError, roots_from_pem, system_roots};
