//! Client configuration: TLS policy, credentials and per-stage timeouts.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Outbound TLS policy for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Use STARTTLS when the server offers it; never verify the certificate (Postfix's `may`).
    /// Without STARTTLS the message goes out in plaintext.
    Opportunistic,
    /// STARTTLS is mandatory: a server that does not offer it yields
    /// [`ClientError::TlsRequired`](crate::ClientError::TlsRequired). The certificate is verified
    /// against [`ClientConfig::root_store`] when [`ClientConfig::verify_certificates`] is set
    /// (Postfix's `secure`; without it, Postfix's `encrypt`).
    Required,
    /// Never issue STARTTLS, even when offered.
    Disabled,
}

/// Per-stage time limits. Defaults follow RFC 5321 section 4.5.3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect (not in RFC 5321; default 30 s).
    pub connect: Duration,
    /// Waiting for the 220 banner (5 min).
    pub greeting: Duration,
    /// EHLO/HELO, STARTTLS and AUTH replies (5 min).
    pub ehlo: Duration,
    /// MAIL FROM reply (5 min).
    pub mail: Duration,
    /// Each RCPT TO reply (5 min).
    pub rcpt: Duration,
    /// The 354 reply to DATA (2 min).
    pub data_init: Duration,
    /// Each write of message data, and each intermediate BDAT reply (3 min).
    pub data_block: Duration,
    /// The final reply after the end of data (10 min).
    pub data_term: Duration,
    /// RSET reply (default 2 min).
    pub rset: Duration,
    /// QUIT reply (default 30 s).
    pub quit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        const MIN: u64 = 60;
        Self {
            connect: Duration::from_secs(30),
            greeting: Duration::from_secs(5 * MIN),
            ehlo: Duration::from_secs(5 * MIN),
            mail: Duration::from_secs(5 * MIN),
            rcpt: Duration::from_secs(5 * MIN),
            data_init: Duration::from_secs(2 * MIN),
            data_block: Duration::from_secs(3 * MIN),
            data_term: Duration::from_secs(10 * MIN),
            rset: Duration::from_secs(2 * MIN),
            quit: Duration::from_secs(30),
        }
    }
}

impl Timeouts {
    /// The same limit for every stage (handy in tests).
    pub fn uniform(limit: Duration) -> Self {
        Self {
            connect: limit,
            greeting: limit,
            ehlo: limit,
            mail: limit,
            rcpt: limit,
            data_init: limit,
            data_block: limit,
            data_term: limit,
            rset: limit,
            quit: limit,
        }
    }
}

/// SMTP AUTH credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Authentication identity.
    pub username: String,
    /// Password; never logged.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything a [`Connection`](crate::Connection) needs besides the peer address.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name sent in EHLO/HELO.
    pub ehlo_name: String,
    /// STARTTLS policy.
    pub tls: TlsMode,
    /// Verify the server certificate (chain to [`ClientConfig::root_store`]) and that it names
    /// the server. Only honoured with [`TlsMode::Required`] or [`ClientConfig::implicit_tls`]
    /// (opportunistic TLS never verifies); requires [`ClientConfig::root_store`].
    pub verify_certificates: bool,
    /// TLS from the first byte (SMTPS, RFC 8314, usually port 465): the handshake comes before
    /// the greeting and STARTTLS is never issued; [`ClientConfig::tls`] is then irrelevant.
    pub implicit_tls: bool,
    /// Trust anchors used when verifying. There are no built-in roots: the caller provides them.
    pub root_store: Option<Arc<rustls::RootCertStore>>,
    /// Local address to bind before connecting (egress identity).
    pub source_address: Option<IpAddr>,
    /// Authenticate with these credentials after STARTTLS (PLAIN preferred, else LOGIN).
    pub auth: Option<Credentials>,
    /// Allow AUTH over a plaintext connection (implies [`ClientConfig::allow_auth_unverified`]).
    /// Off by default.
    pub allow_auth_plaintext: bool,
    /// Allow AUTH over TLS whose certificate was not verified (anyone on the path could be the
    /// server and collect the credentials). Off by default: credentials are only sent once the
    /// certificate verified ([`ClientError::AuthUnavailable`](crate::ClientError::AuthUnavailable)
    /// otherwise, before any credential leaves).
    pub allow_auth_unverified: bool,
    /// Per-stage time limits.
    pub timeouts: Timeouts,
}

impl ClientConfig {
    /// Opportunistic TLS, no AUTH, default timeouts.
    pub fn new(ehlo_name: impl Into<String>) -> Self {
        Self {
            ehlo_name: ehlo_name.into(),
            tls: TlsMode::Opportunistic,
            verify_certificates: false,
            implicit_tls: false,
            root_store: None,
            source_address: None,
            auth: None,
            allow_auth_plaintext: false,
            allow_auth_unverified: false,
            timeouts: Timeouts::default(),
        }
    }
}
