//! The SMTP server session state machine: bytes in through [`Session::feed`], actions out
//! through [`Session::poll`]. No I/O, no clock: the driver performs the [`Action`]s.
//!
//! Driver contract: after every `feed`, call `poll` until it returns `None`. `feed` only
//! appends; `poll` consumes, so the buffered input stays bounded by one command line (512
//! octets, 12288 for AUTH continuations) while DATA/BDAT content goes into the size-capped
//! body buffer. After [`Action::StartTls`], [`Action::Enqueue`] or [`Action::Admit`] the
//! session processes nothing until [`Session::tls_established`] / [`Session::enqueue_result`] /
//! [`Session::admission_result`] is called; after [`Action::Close`] it does nothing at all.
//!
//! Admission ([`SessionConfig::admission`]): after the synchronous [`Policy`] allowed a MAIL
//! FROM or RCPT TO, and before AUTH credentials are verified, the session asks the driver
//! ([`Action::Admit`]) and holds that command's reply — and every later command — until the
//! answer. Replies therefore stay in command order however deep the client pipelines.

mod auth;
mod bdat;
mod data;
mod ehlo;
mod mail;
mod misc;
mod rcpt;
mod starttls;
mod types;

use std::collections::VecDeque;

pub use types::{
    Action, Admission, Grant, ListenerKind, PeerInfo, Policy, Recipient, SenderContext,
    SessionConfig, SessionStats, Transaction, auth_failure_delay,
};

use crate::address::ReversePath;
use crate::catalogue;
use crate::command::{self, Command, MAX_COMMAND_LINE};
use crate::data::{BdatReceiver, DataReceiver};
use crate::params::MailParams;
use crate::reply::Reply;

/// Maximum AUTH continuation line length (RFC 4954 section 4: 12288 octets).
pub const MAX_AUTH_LINE: usize = 12288;

/// An open mail transaction (after MAIL FROM was accepted).
#[derive(Debug)]
struct Envelope {
    reverse_path: ReversePath,
    params: MailParams,
    recipients: Vec<Recipient>,
    grant: Grant,
    bdat: Option<BdatReceiver>,
}

/// A BDAT chunk being read.
#[derive(Debug)]
struct BdatChunk {
    remaining: u64,
    size: u64,
    last: bool,
    /// The chunk is consumed and discarded, then this error is answered.
    reject: Option<(&'static str, Reply)>,
}

/// Where the AUTH exchange stands.
#[derive(Debug)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPass { user: String },
}

/// A password held while its AUTH waits for admission; overwritten when dropped.
struct Password(Vec<u8>);

impl Password {
    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Password {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The command waiting for [`Session::admission_result`].
#[derive(Debug)]
enum Pending {
    /// The transaction MAIL FROM would open.
    Mail(Box<Envelope>),
    /// The recipient RCPT TO would add.
    Rcpt(Recipient),
    /// AUTH credentials to verify once admitted.
    Auth { user: String, password: Password },
}

#[derive(Debug)]
enum Mode {
    Command,
    Auth(AuthStep),
    Data(DataReceiver),
    Bdat(BdatChunk),
    WaitTls,
    WaitEnqueue,
    WaitAdmit(Pending),
    /// AUTH was admitted: verify the credentials on the next poll (it needs the policy).
    Verify {
        user: String,
        password: Password,
    },
    Closed,
}

enum LineRead {
    NeedMore,
    TooLong,
    Line(Vec<u8>),
}

/// One SMTP server conversation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    peer: PeerInfo,
    helo: Option<String>,
    authenticated: Option<String>,
    /// What the policy said the AUTH speaks for (see [`Policy::authenticate`]).
    auth_scope: Option<String>,
    txn: Option<Envelope>,
    mode: Mode,
    input: Vec<u8>,
    pos: usize,
    discarding_line: bool,
    pending: VecDeque<Action>,
    errors: u32,
    auth_failures: u32,
    failed: Option<Reply>,
    stats: SessionStats,
}

impl Session {
    /// A new session for a freshly accepted connection.
    pub fn new(config: SessionConfig, peer: PeerInfo) -> Session {
        Session {
            config,
            peer,
            helo: None,
            authenticated: None,
            auth_scope: None,
            txn: None,
            mode: Mode::Command,
            input: Vec::new(),
            pos: 0,
            discarding_line: false,
            pending: VecDeque::new(),
            errors: 0,
            auth_failures: 0,
            failed: None,
            stats: SessionStats::default(),
        }
    }

    /// The 220 greeting to send first: `220 <host> ESMTP Baton ready`. Not `… ESMTP Baton`
    /// alone: nmap's service probes take `220 <host> ESMTP <one word>` for Postfix smtpd,
    /// and scanners then report Postfix's CVEs against Baton.
    pub fn greeting(&mut self) -> Action {
        let host = &self.config.hostname;
        Action::Send(catalogue::greeting(host))
    }

    /// Appends bytes read from the socket; commands are executed in [`Session::poll`]. DATA
    /// content is decoded here when nothing is buffered ahead of it (no second copy).
    /// Bytes arriving while waiting for the TLS handshake are discarded (never executed).
    pub fn feed(&mut self, input: &[u8]) {
        match &mut self.mode {
            Mode::Closed => {}
            Mode::WaitTls => self.stats.plaintext_after_starttls += input.len() as u64,
            // DATA content with nothing buffered ahead of it goes straight to the decoder
            // rather than through `input`: one copy of every body byte fewer. What follows
            // the final dot (pipelined commands) is buffered as usual for `poll`, which also
            // produces the end-of-data verdict.
            Mode::Data(rx) if self.pos >= self.input.len() && !rx.is_done() => {
                let used = rx.feed(input);
                self.input.clear();
                self.pos = 0;
                self.input
                    .extend_from_slice(input.get(used..).unwrap_or_default());
            }
            _ => self.input.extend_from_slice(input),
        }
    }

    /// The next action, or `None` when more input is needed (or the session is waiting for
    /// [`Session::tls_established`] / [`Session::enqueue_result`] /
    /// [`Session::admission_result`], or is closed).
    pub fn poll(&mut self, policy: &dyn Policy) -> Option<Action> {
        loop {
            if let Some(action) = self.pending.pop_front() {
                return Some(action);
            }
            if !self.step(policy) {
                self.compact();
                return None;
            }
        }
    }

    /// TLS is up: all state is reset (EHLO, AUTH, transaction) and bytes buffered before
    /// the handshake are discarded.
    pub fn tls_established(&mut self) {
        if matches!(self.mode, Mode::Closed) {
            return;
        }
        let leftover = self.input.len().saturating_sub(self.pos);
        self.stats.plaintext_after_starttls += leftover as u64;
        self.input = Vec::new();
        self.pos = 0;
        self.discarding_line = false;
        self.helo = None;
        self.authenticated = None;
        self.auth_scope = None;
        self.txn = None;
        self.failed = None;
        self.peer.tls = true;
        self.mode = Mode::Command;
    }

    /// The driver's answer to [`Action::Enqueue`]: `Ok(queue id)` → 250, `Err(reply)` → that
    /// reply. The transaction is cleared either way.
    pub fn enqueue_result(&mut self, result: Result<String, Reply>) {
        if !matches!(self.mode, Mode::WaitEnqueue) {
            return;
        }
        self.mode = Mode::Command;
        match result {
            Ok(id) => self.send(catalogue::queued(&id)),
            Err(reply) => {
                self.stats.reject("enqueue_failed");
                self.send(reply);
            }
        }
    }

    /// The driver's answer to [`Action::Admit`]: `Ok(())` lets the command proceed (MAIL opens
    /// the transaction and gets 250, RCPT adds the recipient and gets 250, AUTH goes on to
    /// verify the credentials); `Err(reply)` refuses it with `reply` and leaves the session as
    /// it was before the command (no transaction opened, no recipient added, not
    /// authenticated). A transient refusal (4xx, e.g. a rate limit) is not counted as a client
    /// error; a permanent one is, like any policy refusal.
    pub fn admission_result(&mut self, result: Result<(), Reply>) {
        if !matches!(self.mode, Mode::WaitAdmit(_)) {
            return;
        }
        let Mode::WaitAdmit(pending) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return;
        };
        match (pending, result) {
            (Pending::Mail(envelope), Ok(())) => {
                self.txn = Some(*envelope);
                self.failed = None;
                self.send(catalogue::sender_ok());
            }
            (Pending::Rcpt(recipient), Ok(())) => {
                if let Some(txn) = self.txn.as_mut() {
                    txn.recipients.push(recipient);
                    self.send(catalogue::recipient_ok());
                } else {
                    // The transaction ended meanwhile (it cannot: nothing runs while waiting).
                    self.reject("bad_sequence", catalogue::need_mail());
                }
            }
            (Pending::Auth { user, password }, Ok(())) => {
                self.mode = Mode::Verify { user, password };
            }
            (Pending::Auth { .. }, Err(reply)) => self.reject("auth_refused", reply),
            (Pending::Mail(_) | Pending::Rcpt(_), Err(reply)) => {
                if reply.is_transient() {
                    self.stats.reject("rate_limited");
                    self.send(reply);
                } else {
                    self.reject("admission_refused", reply);
                }
            }
        }
    }

    /// The driver's answer to [`Action::Enqueue`] when it consumed the message itself instead of
    /// queueing it (a report to a return path): `reply` is sent as is. The transaction is
    /// cleared.
    pub fn transaction_consumed(&mut self, reply: Reply) {
        if !matches!(self.mode, Mode::WaitEnqueue) {
            return;
        }
        self.mode = Mode::Command;
        self.send(reply);
    }

    /// Fails the open transaction (e.g. the ingress memory budget is exhausted): the rest of
    /// the current DATA/BDAT body is discarded and `reply` is answered at its end.
    pub fn fail_transaction(&mut self, reply: Reply) {
        if self.txn.is_none() && !matches!(self.mode, Mode::Data(_) | Mode::Bdat(_)) {
            return;
        }
        if let Mode::Data(rx) = &mut self.mode {
            rx.discard();
        }
        if let Some(rx) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) {
            rx.discard();
        }
        self.failed = Some(reply);
    }

    /// Bytes buffered for the open transaction body.
    pub fn body_len(&self) -> usize {
        let bdat = self
            .txn
            .as_ref()
            .and_then(|t| t.bdat.as_ref())
            .map_or(0, BdatReceiver::body_len);
        match &self.mode {
            Mode::Data(rx) => rx.body_len() + bdat,
            _ => bdat,
        }
    }

    /// Raw input bytes buffered and not yet consumed (bounded by one command line after
    /// `poll` returned `None`).
    pub fn buffered_len(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The RelayDomain and reverse path of the open transaction (MAIL accepted, the message
    /// not yet handed over), unless it is mail *to* the relay (a report).
    pub fn open_transaction(&self) -> Option<(&str, &ReversePath)> {
        self.txn
            .as_ref()
            .filter(|t| !t.grant.inbound)
            .map(|t| (t.grant.relay_domain.as_str(), &t.reverse_path))
    }

    /// MAIL was accepted and the transaction is not finished.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || matches!(self.mode, Mode::Data(_))
    }

    /// The idle timeout fired: 421 4.4.2 and close.
    pub fn timeout(&mut self) -> Vec<Action> {
        let host = self.config.hostname.clone();
        self.stats.reject("timeout");
        self.terminate(catalogue::timeout(&host))
    }

    /// The server is shutting down: 421 4.3.2 and close.
    pub fn shutdown(&mut self) -> Vec<Action> {
        let host = self.config.hostname.clone();
        self.terminate(catalogue::shutting_down(&host))
    }

    /// The session asked to close (or was terminated).
    pub fn is_closed(&self) -> bool {
        matches!(self.mode, Mode::Closed)
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// The peer as currently known (tls flips after STARTTLS).
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The authenticated user, if any.
    pub fn authenticated(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    fn terminate(&mut self, reply: Reply) -> Vec<Action> {
        if self.is_closed() {
            return Vec::new();
        }
        self.pending.clear();
        self.close_with(reply);
        self.pending.drain(..).collect()
    }

    // ---- plumbing shared by the command handlers ----

    fn send(&mut self, reply: Reply) {
        self.pending.push_back(Action::Send(reply));
    }

    /// Sends `reply`, then closes: nothing more is processed.
    fn close_with(&mut self, reply: Reply) {
        self.send(reply);
        self.pending.push_back(Action::Close);
        self.mode = Mode::Closed;
        self.txn = None;
        self.input = Vec::new();
        self.pos = 0;
    }

    /// An error reply caused by client input: counted, tarpitted past the soft limit,
    /// replaced by 421 and close at the hard limit.
    fn reject(&mut self, reason: &'static str, reply: Reply) {
        self.stats.reject(reason);
        self.stats.errors += 1;
        self.errors = self.errors.saturating_add(1);
        if self.errors >= self.config.max_errors {
            self.stats.reject("too_many_errors");
            let host = self.config.hostname.clone();
            self.close_with(catalogue::too_many_errors(&host));
            return;
        }
        if self.errors > self.config.soft_error_limit {
            self.pending
                .push_back(Action::Delay(self.config.error_delay));
        }
        self.send(reply);
    }

    fn reset_transaction(&mut self) {
        self.txn = None;
        self.failed = None;
    }

    /// The size cap of the open transaction: the listener's limit, lowered by the grant's
    /// (a RelayDomain can lower the limit, never raise it past what the pod advertises).
    fn message_cap(&self) -> u64 {
        match &self.txn {
            Some(t) if t.grant.max_message_size > 0 => {
                t.grant.max_message_size.min(self.config.max_message_size)
            }
            _ => self.config.max_message_size,
        }
    }

    fn compact(&mut self) {
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
    }

    /// Does one unit of work; false when nothing can be done now.
    fn step(&mut self, policy: &dyn Policy) -> bool {
        match self.mode {
            Mode::Closed | Mode::WaitTls | Mode::WaitEnqueue | Mode::WaitAdmit(_) => false,
            Mode::Verify { .. } => {
                if let Mode::Verify { user, mut password } =
                    std::mem::replace(&mut self.mode, Mode::Command)
                {
                    self.verify_now(user, password.take(), policy);
                }
                true
            }
            Mode::Data(_) => self.step_data(),
            Mode::Bdat(_) => self.step_bdat(),
            Mode::Auth(_) => self.step_auth(policy),
            Mode::Command => self.step_command(policy),
        }
    }

    /// Takes the next line of at most `limit` octets; an over-long line is skipped up to
    /// its LF without being buffered, however many feeds it spans.
    fn next_line(&mut self, limit: usize) -> LineRead {
        let avail = &self.input[self.pos..];
        let lf = avail.iter().position(|&b| b == b'\n');
        if self.discarding_line {
            return match lf {
                None => {
                    self.pos = self.input.len();
                    LineRead::NeedMore
                }
                Some(i) => {
                    self.pos += i + 1;
                    self.discarding_line = false;
                    LineRead::TooLong
                }
            };
        }
        match lf {
            Some(i) if i + 1 > limit => {
                self.pos += i + 1;
                LineRead::TooLong
            }
            Some(i) => {
                let line = avail[..=i].to_vec();
                self.pos += i + 1;
                LineRead::Line(line)
            }
            None if avail.len() >= limit => {
                self.discarding_line = true;
                self.pos = self.input.len();
                LineRead::NeedMore
            }
            None => LineRead::NeedMore,
        }
    }

    fn line_too_long(&mut self) {
        self.reject("line_too_long", catalogue::line_too_long());
    }

    fn step_command(&mut self, policy: &dyn Policy) -> bool {
        match self.next_line(MAX_COMMAND_LINE) {
            LineRead::NeedMore => false,
            LineRead::TooLong => {
                self.stats.commands += 1;
                self.line_too_long();
                true
            }
            LineRead::Line(line) => {
                self.stats.commands += 1;
                match command::parse_command(&line) {
                    Ok(cmd) => self.dispatch(cmd, policy),
                    Err(reply) => self.command_error(&line, reply),
                }
                true
            }
        }
    }

    fn command_error(&mut self, line: &[u8], reply: Reply) {
        let reason = match (reply.code, reply.status.as_ref().map(|s| s.subject)) {
            (502, _) => "not_implemented",
            (501, Some(1)) => "bad_address",
            (555, _) => "bad_parameters",
            (501, _) => "bad_arguments",
            _ => "syntax",
        };
        self.reject(reason, reply);
        // A BDAT we cannot parse has an unknown chunk length: the following bytes cannot be
        // told apart from commands, so stop rather than execute message content.
        if command::verb_of(line) == "BDAT" && !self.is_closed() {
            self.pending.push_back(Action::Close);
            self.mode = Mode::Closed;
            self.txn = None;
            self.input = Vec::new();
            self.pos = 0;
        }
    }

    fn dispatch(&mut self, cmd: Command, policy: &dyn Policy) {
        match cmd {
            Command::Ehlo(domain) => self.handle_ehlo(domain, true),
            Command::Helo(domain) => self.handle_ehlo(domain, false),
            Command::Mail {
                reverse_path,
                params,
            } => self.handle_mail(reverse_path, params, policy),
            Command::Rcpt {
                forward_path,
                params,
            } => self.handle_rcpt(forward_path, params, policy),
            Command::Data => self.handle_data(),
            Command::Bdat { size, last } => self.handle_bdat(size, last),
            Command::Rset => self.handle_rset(),
            Command::Noop => self.handle_noop(),
            Command::Quit => self.handle_quit(),
            Command::Vrfy => self.handle_vrfy(),
            Command::Help => self.handle_help(),
            Command::StartTls => self.handle_starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.handle_auth(&mechanism, initial_response, policy),
        }
    }

    /// Hands the finished transaction to the driver.
    fn enqueue(&mut self, envelope: Envelope, body: Vec<u8>) {
        let transaction = Transaction {
            helo: self.helo.clone().unwrap_or_default(),
            reverse_path: envelope.reverse_path,
            params: envelope.params,
            recipients: envelope.recipients,
            grant: envelope.grant,
            authenticated: self.authenticated.clone(),
            tls: self.peer.tls,
            body,
        };
        self.stats.messages += 1;
        self.pending.push_back(Action::Enqueue(transaction));
        self.mode = Mode::WaitEnqueue;
    }
}
