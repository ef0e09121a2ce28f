//! The client's error type.

use crate::{EnhancedStatus, Reply, ReplyError};

/// Why a connection could not be set up or a transaction could not complete.
///
/// Replies the server gave to MAIL, RCPT or DATA are *not* errors: they come back in
/// [`SendResult`](crate::SendResult). Errors here mean the session itself failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be established (or the source address not bound).
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// A stage did not complete within its time limit.
    #[error("timed out during {stage}")]
    Timeout {
        /// Which stage: `connect`, `greeting`, `ehlo`, `starttls`, `auth`, `mail`, `rcpt`,
        /// `data_init`, `data_block`, `data_term`, `rset` or `quit`.
        stage: &'static str,
    },
    /// Reading from or writing to the connection failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection while a reply was expected.
    #[error("connection closed by server during {stage}")]
    ConnectionClosed {
        /// The stage that was waiting for a reply.
        stage: &'static str,
    },
    /// The banner was not 220.
    #[error("greeting refused: {0}")]
    Greeting(Reply),
    /// Both EHLO and the HELO fallback (or EHLO after STARTTLS) were refused.
    #[error("EHLO refused: {0}")]
    Ehlo(Reply),
    /// Policy is [`TlsMode::Required`](crate::TlsMode::Required) but the server does not offer
    /// STARTTLS.
    #[error("TLS required but the server does not offer STARTTLS")]
    TlsRequired,
    /// The TLS handshake failed or TLS could not be configured (bad name, no root store,
    /// certificate rejected).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// STARTTLS was refused.
    #[error("STARTTLS refused: {0}")]
    StartTls(Reply),
    /// The server rejected the credentials or the AUTH exchange.
    #[error("authentication failed: {0}")]
    Auth(Reply),
    /// Credentials are configured but cannot be used: no supported mechanism offered, or the
    /// connection is not encrypted and plaintext AUTH is not allowed.
    #[error("authentication unavailable: {0}")]
    AuthUnavailable(&'static str),
    /// The server violated the protocol: malformed reply, line too long, too many lines,
    /// unexpected intermediate reply.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server's reply could not be parsed (bad code, line too long, too many lines).
    #[error("protocol error: {0}")]
    Reply(#[source] ReplyError),
    /// The message exceeds the server's advertised SIZE limit; nothing was sent.
    #[error("message of {size} octets exceeds the server limit of {limit}")]
    MessageTooLarge {
        /// Octets in the message.
        size: u64,
        /// The server's advertised limit.
        limit: u64,
    },
    /// The message needs SMTPUTF8 and the server does not offer it; nothing was sent.
    #[error("message requires SMTPUTF8, which the server does not support")]
    Smtputf8NotSupported,
    /// The message cannot be expressed as SMTP commands (no recipients, CR/LF or NUL in an
    /// address or parameter).
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// An earlier error left the session in an unknown state; open a new connection.
    #[error("connection unusable after an earlier error")]
    Unusable,
    /// A reused connection failed before its transaction began: the RSET that opens it
    /// (pipelined with the envelope, [`Connection::mark_reused`](crate::Connection::mark_reused))
    /// was not answered `250`. Nothing of the message reached the server; open a new
    /// connection and send it there.
    #[error("reused connection no longer usable: {0}")]
    StaleConnection(#[source] Box<ClientError>),
}

impl ClientError {
    /// Whether retrying the same message later is pointless (the message should bounce).
    ///
    /// Connection-level failures are transient: another attempt (or another MX) may work.
    /// AUTH failures count as transient like Postfix's `smtp_sasl_auth_soft_bounce`.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::Greeting(reply) | Self::Ehlo(reply) => reply.is_permanent(),
            Self::MessageTooLarge { .. } | Self::Smtputf8NotSupported | Self::InvalidMessage(_) => {
                true
            }
            _ => false,
        }
    }

    /// The reply to record for every recipient this error affected (its
    /// [`Reply::effective_status`] is the RFC 3463 status a DSN reports): the server's own reply
    /// when it refused the greeting or EHLO (a `554 5.7.1` greeting keeps its `5.7.1`), otherwise one that states the error with the
    /// status of its kind (`552 5.3.4` for a message over the server's SIZE, `451 4.4.2` for
    /// a connection that failed). The outcome, the DSN, the log line and the metric all read
    /// this one value.
    pub fn to_reply(&self) -> Reply {
        match self {
            Self::Greeting(r) | Self::Ehlo(r) if r.is_permanent() || r.is_transient() => r.clone(),
            other => {
                let status = other.kind_status();
                let code = match (status.class, other) {
                    (5, Self::MessageTooLarge { .. }) => 552,
                    (5, Self::Smtputf8NotSupported) => 553,
                    (5, _) => 554,
                    (_, Self::TlsRequired | Self::Tls(_) | Self::StartTls(_)) => 454,
                    _ => 451,
                };
                Reply::with_status(code, status, other.to_string())
            }
        }
    }

    fn kind_status(&self) -> EnhancedStatus {
        let (class, subject, detail) = match self {
            Self::MessageTooLarge { .. } => (5, 3, 4),
            Self::Smtputf8NotSupported => (5, 6, 7),
            Self::InvalidMessage(_) => (5, 6, 0),
            Self::Greeting(r) | Self::Ehlo(r) if r.is_permanent() => (5, 0, 0),
            Self::TlsRequired | Self::Tls(_) | Self::StartTls(_) => (4, 7, 5),
            Self::Auth(_) | Self::AuthUnavailable(_) => (4, 7, 0),
            Self::Protocol(_) | Self::Reply(_) => (4, 5, 0),
            _ => (4, 4, 2),
        };
        EnhancedStatus::new(class, subject, detail)
    }

    /// Whether this is [`ClientError::StaleConnection`]: the message is unaffected and may be
    /// sent over a new connection at once.
    pub fn is_stale(&self) -> bool {
        matches!(self, Self::StaleConnection(_))
    }

    /// Bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Timeout { .. } => "timeout",
            Self::Io(_) => "io",
            Self::ConnectionClosed { .. } => "connection_closed",
            Self::Greeting(_) => "greeting",
            Self::Ehlo(_) => "ehlo",
            Self::TlsRequired => "tls_required",
            Self::Tls(_) => "tls",
            Self::StartTls(_) => "starttls",
            Self::Auth(_) => "auth",
            Self::AuthUnavailable(_) => "auth_unavailable",
            Self::Protocol(_) | Self::Reply(_) => "protocol",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::Smtputf8NotSupported => "smtputf8_not_supported",
            Self::InvalidMessage(_) => "invalid_message",
            Self::Unusable => "unusable",
            Self::StaleConnection(_) => "stale_connection",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanence() {
        assert!(ClientError::Smtputf8NotSupported.is_permanent());
        assert!(ClientError::MessageTooLarge { size: 2, limit: 1 }.is_permanent());
        assert!(ClientError::Greeting(Reply::new(554, "", "go away")).is_permanent());
        assert!(!ClientError::Greeting(Reply::new(421, "", "busy")).is_permanent());
        assert!(!ClientError::TlsRequired.is_permanent());
        assert!(!ClientError::Timeout { stage: "mail" }.is_permanent());
        let status = |e: ClientError| e.to_reply().effective_status().to_string();
        assert_eq!(status(ClientError::Smtputf8NotSupported), "5.6.7");
        assert_eq!(
            status(ClientError::MessageTooLarge { size: 2, limit: 1 }),
            "5.3.4"
        );
        assert_eq!(ClientError::Unusable.metric_label(), "unusable");
    }

    #[test]
    fn a_permanent_refusal_keeps_the_servers_enhanced_status() {
        let greeting = |code, status| ClientError::Greeting(Reply::new(code, status, "no"));
        let status = |e: ClientError| e.to_reply().effective_status().to_string();
        assert_eq!(status(greeting(554, "5.7.1")), "5.7.1");
        assert_eq!(
            greeting(554, "5.7.1").to_reply().to_string(),
            "554 5.7.1 no"
        );
        assert_eq!(status(greeting(554, "")), "5.0.0");
        // A code of the wrong class is not believed.
        assert_eq!(status(greeting(554, "4.7.1")), "5.0.0");
        assert_eq!(status(greeting(421, "4.3.2")), "4.3.2");
        let ehlo = ClientError::Ehlo(Reply::new(550, "5.7.0", "go away"));
        assert_eq!(status(ehlo), "5.7.0");
    }

    /// Errors without a server reply state themselves with their kind's code and status.
    #[test]
    fn errors_become_typed_replies() {
        let too_large = ClientError::MessageTooLarge {
            size: 2_000_000,
            limit: 1_000_000,
        };
        assert_eq!(
            too_large.to_reply().to_string(),
            "552 5.3.4 message of 2000000 octets exceeds the server limit of 1000000"
        );
        let r = ClientError::Timeout { stage: "rcpt" }.to_reply();
        assert_eq!(r.to_string(), "451 4.4.2 timed out during rcpt");
        assert_eq!(ClientError::TlsRequired.to_reply().code, 454);
        assert_eq!(ClientError::Smtputf8NotSupported.to_reply().code, 553);
        let bad = ClientError::Reply(ReplyError::TooManyLines);
        assert_eq!(bad.to_reply().effective_status().to_string(), "4.5.0");
    }
}
