//! An ingress process's settings: listeners, host name and limits.

use std::net::SocketAddr;
use std::time::Duration;

use baton_smtp::ListenerKind;

/// Limits of one ingress process.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent connections per process.
    pub max_connections: usize,
    /// Concurrent connections per client address.
    pub max_connections_per_ip: usize,
    /// Idle time allowed between client inputs (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub command_timeout: Duration,
    /// Total lifetime of one session.
    pub session_timeout: Duration,
    /// Default maximum message size (a RelayDomain may set its own).
    pub max_message_size: u64,
    /// Recipients per transaction before `452 4.5.3`.
    pub max_recipients: usize,
    /// Error replies before `421` and disconnect.
    pub max_errors: u32,
    /// Errors after which every further error reply is delayed.
    pub soft_error_limit: u32,
    /// The delay.
    pub error_delay: Duration,
    /// Failed AUTH attempts before `421` and disconnect.
    pub max_auth_failures: u32,
    /// Delay of the reply to a session's first failed AUTH; doubles per further failure.
    pub auth_failure_delay: Duration,
    /// Cap of that delay.
    pub auth_failure_delay_max: Duration,
    /// Message bytes all sessions may hold together before `452 4.3.1`.
    pub inflight_bytes: usize,
    /// After SIGTERM: how long transactions in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 200,
            command_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(1800),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            soft_error_limit: 3,
            error_delay: Duration::from_secs(1),
            max_auth_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            auth_failure_delay_max: Duration::from_secs(8),
            inflight_bytes: 512 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Configuration of one ingress process.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Name in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// Listeners to bind.
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    /// Limits.
    pub limits: Limits,
}
