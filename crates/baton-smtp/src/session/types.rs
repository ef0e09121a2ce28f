//! Public types of the session: configuration, peer, policy hooks, transactions, actions, stats.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::address::{ForwardPath, ReversePath};
use crate::params::{MailParams, RcptParams};
use crate::reply::Reply;

/// Which listener accepted the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// Port 25: relay from trusted networks / to relay domains.
    Relay,
    /// Port 587: message submission, AUTH required before MAIL.
    Submission,
    /// Port 465: implicit TLS submission, AUTH required before MAIL.
    Smtps,
}

/// Per-listener session limits and identity.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our host name, used in the greeting, EHLO and 421 replies.
    pub hostname: String,
    /// The listener the session runs on.
    pub listener: ListenerKind,
    /// A certificate is configured: STARTTLS may be offered (never on Smtps).
    pub tls_available: bool,
    /// Advertised in SIZE; also the hard cap unless the grant sets one.
    pub max_message_size: u64,
    /// Recipients per transaction; more get 452 4.5.3.
    pub max_recipients: usize,
    /// Error replies before 421 4.7.0 and close.
    pub max_errors: u32,
    /// Error replies after which every further error reply is delayed.
    pub soft_error_limit: u32,
    /// Tarpit delay before error replies beyond the soft limit.
    pub error_delay: Duration,
    /// Failed AUTH attempts before 421 4.7.0 and close.
    pub max_auth_failures: u32,
    /// Delay before the reply to the first failed AUTH of a session; it doubles with each
    /// further failure (see [`auth_failure_delay`]). Zero disables it.
    pub auth_failure_delay: Duration,
    /// Cap of that delay.
    pub auth_failure_delay_max: Duration,
    /// Ask the driver to admit every MAIL FROM, RCPT TO and AUTH the policy allowed
    /// ([`Action::Admit`], answered with [`super::Session::admission_result`]) and report every
    /// failed AUTH ([`Action::AuthFailed`]). Off: neither action is ever emitted.
    pub admission: bool,
}

/// How long to hold the reply to the `failures`-th failed AUTH of a session (1-based):
/// `base · 2^(failures-1)`, at most `max`; zero for `failures = 0` or a zero `base`. Only the
/// session's own task sleeps, so a guessing client slows itself down and nobody else.
pub fn auth_failure_delay(failures: u32, base: Duration, max: Duration) -> Duration {
    let Some(exp) = failures.checked_sub(1) else {
        return Duration::ZERO;
    };
    let factor = 1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            hostname: "localhost".to_string(),
            listener: ListenerKind::Relay,
            tls_available: false,
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            soft_error_limit: 3,
            error_delay: Duration::from_secs(1),
            max_auth_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            auth_failure_delay_max: Duration::from_secs(8),
            admission: false,
        }
    }
}

/// The connected client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Remote address.
    pub addr: IpAddr,
    /// The connection is encrypted (true on Smtps from the start).
    pub tls: bool,
}

/// What the policy hooks see when judging a sender or recipient.
#[derive(Clone, Copy, Debug)]
pub struct SenderContext<'a> {
    /// The client.
    pub peer: &'a PeerInfo,
    /// The listener.
    pub listener: ListenerKind,
    /// TLS is active.
    pub tls: bool,
    /// Authenticated user name, if any.
    pub authenticated: Option<&'a str>,
    /// The scope [`Policy::authenticate`] returned for that user (opaque to the session).
    pub auth_scope: Option<&'a str>,
    /// The EHLO/HELO argument.
    pub helo: &'a str,
    /// The MAIL FROM path.
    pub reverse_path: &'a ReversePath,
    /// The MAIL FROM parameters.
    pub params: &'a MailParams,
}

/// What the session asks of the outside world. Implemented by the ingress over the config
/// snapshot; pure and synchronous.
pub trait Policy {
    /// Verify AUTH credentials. Ok carries the authorization scope the session keeps and
    /// passes back in [`SenderContext::auth_scope`] (opaque to the session: the ingress names
    /// the RelayDomains whose credential verified the user); Err carries the reply (normally
    /// 535 5.7.8).
    fn authenticate(
        &self,
        peer: &PeerInfo,
        username: &str,
        password: &str,
    ) -> Result<String, Reply>;
    /// A failed AUTH attempt (credentials refused, or an authorisation identity other than
    /// the user), reported once per failure so the caller can log and count it. `username`
    /// is as the client gave it, unsanitised; the password is never passed.
    fn auth_failed(&self, _peer: &PeerInfo, _listener: ListenerKind, _username: &str) {}
    /// MAIL FROM: may this client send as this reverse-path? Ok carries the grant the
    /// transaction runs under.
    fn check_sender(&self, ctx: &SenderContext<'_>) -> Result<Grant, Reply>;
    /// RCPT TO under an accepted MAIL. Ok(()) to accept.
    fn check_recipient(
        &self,
        ctx: &SenderContext<'_>,
        grant: &Grant,
        rcpt: &ForwardPath,
    ) -> Result<(), Reply>;
}

/// The authority a transaction runs under, decided by [`Policy::check_sender`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The relay domain that allowed the sender.
    pub relay_domain: String,
    /// The sending pool the message goes to.
    pub pool: String,
    /// Size cap for this transaction; 0 means the listener default.
    pub max_message_size: u64,
    /// Mail *to* this relay rather than through it (reports arriving at a return-path
    /// domain): the policy accepts only its own addresses as recipients, and the driver
    /// consumes the message instead of queueing it.
    pub inbound: bool,
    /// This transaction's MAIL and RCPT are shared-limit checks for the driver
    /// ([`Action::Admit`], when [`SessionConfig::admission`] is on too): the relay domain has
    /// cluster-wide budgets or a spike policy. `false` (none configured) skips that turn of
    /// the driver for every command.
    pub admit: bool,
}

/// One accepted recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The forward-path.
    pub path: ForwardPath,
    /// Its DSN parameters.
    pub params: RcptParams,
}

/// A complete message handed to the driver with [`Action::Enqueue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// The EHLO/HELO argument.
    pub helo: String,
    /// MAIL FROM path.
    pub reverse_path: ReversePath,
    /// MAIL FROM parameters.
    pub params: MailParams,
    /// Accepted recipients (at least one).
    pub recipients: Vec<Recipient>,
    /// The grant from the sender check.
    pub grant: Grant,
    /// Authenticated user, if any.
    pub authenticated: Option<String>,
    /// Received over TLS.
    pub tls: bool,
    /// Content as received after dot-unstuffing, CRLF line endings, no terminating "." line.
    pub body: Vec<u8>,
}

/// What [`Action::Admit`] asks the driver to admit: a command the synchronous [`Policy`]
/// already allowed, before its reply is sent. The driver answers with
/// [`super::Session::admission_result`] (shared budgets, lockouts: anything needing a round
/// trip).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// MAIL FROM, allowed under `grant`.
    Mail {
        /// The grant the transaction would run under.
        grant: Grant,
        /// The MAIL FROM path.
        reverse_path: ReversePath,
        /// The authenticated user, if any.
        authenticated: Option<String>,
        /// The client.
        client: IpAddr,
    },
    /// RCPT TO in the transaction of `grant`.
    Rcpt {
        /// The transaction's grant.
        grant: Grant,
        /// The recipient.
        recipient: ForwardPath,
        /// The authenticated user, if any.
        authenticated: Option<String>,
        /// The client.
        client: IpAddr,
    },
    /// AUTH by `user`, before the credentials are verified.
    Auth {
        /// The user name as the client gave it.
        user: String,
        /// The client.
        client: IpAddr,
    },
}

/// What the session asks the driver to do.
// Enqueue carries the whole transaction by value (the API the driver is written against);
// actions are short-lived, so the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write this reply ([`Reply::to_bytes`]; the driver may batch replies until poll returns
    /// None or another action comes, and counts refusals by the reply's typed status).
    Send(Reply),
    /// Tarpit: sleep before continuing.
    Delay(Duration),
    /// Upgrade to TLS now, then call [`super::Session::tls_established`].
    StartTls,
    /// Publish this message, then call [`super::Session::enqueue_result`].
    Enqueue(Transaction),
    /// Decide whether this command may proceed, then call
    /// [`super::Session::admission_result`]; the command's reply waits for it (only with
    /// [`SessionConfig::admission`]).
    Admit(Admission),
    /// An AUTH attempt failed (credentials refused, or an authorisation identity other than
    /// the user): count it wherever failures are counted before going on. Nothing waits for
    /// an answer; the failure reply follows (only with [`SessionConfig::admission`]).
    AuthFailed {
        /// The user name as the client gave it.
        user: String,
        /// The client.
        client: IpAddr,
    },
    /// Flush and close the connection.
    Close,
}

/// Counters the driver turns into metrics; all labels are bounded `&'static str`s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Command lines processed.
    pub commands: u64,
    /// Error replies counted against `max_errors`.
    pub errors: u64,
    /// Failed AUTH attempts.
    pub auth_failures: u64,
    /// Successful AUTH.
    pub auth_successes: u64,
    /// Transactions handed over with [`Action::Enqueue`].
    pub messages: u64,
    /// Plaintext bytes received after STARTTLS and discarded unexecuted.
    pub plaintext_after_starttls: u64,
    /// Rejections by reason label (e.g. "syntax", "sender_policy", "bare_eol").
    pub rejections: BTreeMap<&'static str, u64>,
}

impl SessionStats {
    pub(crate) fn reject(&mut self, reason: &'static str) {
        *self.rejections.entry(reason).or_insert(0) += 1;
    }
}
