//! A programmable receiving SMTP server for system tests.
//!
//! It speaks real SMTP (EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN, MAIL/RCPT, DATA with
//! dot-unstuffing, BDAT, RSET, NOOP, QUIT, pipelined input) and lets a test script replies per
//! stage: refuse one recipient, fail DATA, drop the connection, stall, or inject plaintext after
//! STARTTLS. Accepted messages are recorded and can be awaited without sleeping.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Longest command line accepted.
const MAX_COMMAND: usize = 4096;
/// Longest message accepted.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A point in the conversation where the script is consulted.
#[derive(Debug)]
pub enum Stage<'a> {
    /// A connection was accepted; `n` counts connections from 1.
    Connect {
        /// Connection number.
        n: u64,
    },
    /// EHLO (HELO always gets the default reply).
    Ehlo {
        /// The client's name.
        name: &'a str,
    },
    /// STARTTLS; answer [`Response::PlaintextInjection`] to append bytes to the 220.
    StartTls,
    /// MAIL FROM, after syntax, AUTH and SIZE checks.
    Mail {
        /// Reverse path, without brackets.
        from: &'a str,
    },
    /// RCPT TO.
    Rcpt {
        /// Forward path, without brackets.
        to: &'a str,
    },
    /// DATA, or the first BDAT of a transaction; `n` counts these across connections from 1.
    Data {
        /// Ordinal of this DATA.
        n: u64,
    },
    /// The whole message was received.
    DataEnd {
        /// Reverse path.
        from: &'a str,
        /// Accepted recipients.
        to: &'a [String],
        /// Content, dot-unstuffed.
        body: &'a [u8],
    },
}

/// What the script wants at a [`Stage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The normal reply.
    Default,
    /// This reply instead, e.g. `(451, "4.3.0 try later")`; the command is not performed.
    Reply(u16, String),
    /// Close the TCP connection without replying.
    Drop,
    /// Wait, then behave as [`Response::Default`].
    Stall(Duration),
    /// On STARTTLS: send the 220 and these bytes in the same write.
    PlaintextInjection(String),
}

/// The script: called for every stage, must be cheap and must not block.
pub type Script = Arc<dyn Fn(&Stage<'_>) -> Response + Send + Sync>;

/// How the receiver behaves.
#[derive(Clone)]
pub struct ReceiverConfig {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Offer STARTTLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Advertise PIPELINING.
    pub advertise_pipelining: bool,
    /// Advertise CHUNKING (BDAT).
    pub advertise_chunking: bool,
    /// Advertise SMTPUTF8 (and refuse the MAIL parameter otherwise).
    pub advertise_smtputf8: bool,
    /// Advertise DSN (RFC 3461; default on). Off: NOTIFY/ORCPT/RET/ENVID are refused.
    pub advertise_dsn: bool,
    /// Advertise SIZE and refuse a larger declared size.
    pub advertise_size: Option<u64>,
    /// Require AUTH (PLAIN or LOGIN) with this username and password before MAIL.
    pub auth: Option<(String, String)>,
    /// Per-stage replies.
    pub script: Script,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            hostname: "receiver.test".into(),
            tls: None,
            advertise_pipelining: true,
            advertise_chunking: false,
            advertise_smtputf8: false,
            advertise_dsn: true,
            advertise_size: None,
            auth: None,
            script: Arc::new(|_| Response::Default),
        }
    }
}

impl ReceiverConfig {
    /// The default receiver, but every DATA waits `delay` before its `354`: deliveries are in
    /// flight that long, before the end of data (where a cut would make a duplicate).
    pub fn slow_data(delay: Duration) -> Self {
        ReceiverConfig {
            script: Arc::new(move |s| match s {
                Stage::Data { .. } => Response::Stall(delay),
                _ => Response::Default,
            }),
            ..ReceiverConfig::default()
        }
    }
}

impl std::fmt::Debug for ReceiverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field("hostname", &self.hostname)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// One message the receiver accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Reverse path.
    pub from: String,
    /// Accepted recipients.
    pub to: Vec<String>,
    /// Content, dot-unstuffed (DATA) or concatenated chunks (BDAT).
    pub body: Vec<u8>,
    /// Received over TLS.
    pub tls: bool,
    /// The authenticated username.
    pub authenticated: Option<String>,
    /// Name given in EHLO/HELO.
    pub ehlo: String,
    /// Received with BDAT.
    pub chunked: bool,
    /// MAIL FROM parameters after the address, e.g. `SIZE=123 BODY=8BITMIME`.
    pub mail_params: String,
    /// RCPT TO parameters after the address, one entry per accepted recipient (in the order
    /// of `to`), e.g. `NOTIFY=SUCCESS ORCPT=rfc822;a@b`.
    pub rcpt_params: Vec<String>,
}

struct Shared {
    config: ReceiverConfig,
    messages: Mutex<Vec<ReceivedMessage>>,
    count: watch::Sender<usize>,
    connections: AtomicU64,
    datas: AtomicU64,
}

impl Shared {
    fn messages(&self) -> MutexGuard<'_, Vec<ReceivedMessage>> {
        self.messages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and starts accepting connections.
    pub async fn start(addr: &str, config: ReceiverConfig) -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            messages: Mutex::new(Vec::new()),
            count: watch::Sender::new(0),
            connections: AtomicU64::new(0),
            datas: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(Receiver { addr, shared, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages accepted so far.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.messages().clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages were accepted, then returns all of them.
    pub async fn wait_for_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<ReceivedMessage>> {
        let mut rx = self.shared.count.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|&count| count >= n)).await {
            Ok(Ok(_)) => Ok(self.messages()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => anyhow::bail!(
                "timed out after {timeout:?} waiting for {n} messages; have {}",
                self.shared.messages().len()
            ),
        }
    }

    /// Stops accepting and closes every session.
    pub fn shutdown(self) {}
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    // Owned here so that aborting this task aborts every session.
    let mut sessions = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let n = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
                sessions.spawn(serve(tcp, shared.clone(), n));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// What to do after a command.
#[derive(PartialEq, Eq)]
enum Next {
    /// Read the next command.
    Continue,
    /// Close the connection.
    Close,
    /// The 220 to STARTTLS was sent: hand the socket to TLS.
    StartTls,
}

type Step = std::io::Result<Next>;

/// The transport a session runs on: TCP, then TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Conn for T {}

async fn serve(tcp: TcpStream, shared: Arc<Shared>, n: u64) {
    let _ = tcp.set_nodelay(true);
    let mut session = Session::new(shared.clone(), false);
    let mut io = BufReader::new(tcp);
    let greeting = match session.decide(&Stage::Connect { n }).await {
        Act::Drop => return,
        Act::Reply(code, text) => format!("{code} {text}\r\n"),
        _ => format!(
            "220 {} ESMTP baton test receiver\r\n",
            shared.config.hostname
        ),
    };
    if write_raw(&mut io, greeting.as_bytes()).await.is_err() || !greeting.starts_with("220") {
        return;
    }
    let (Ok(Next::StartTls), Some(tls_config)) = (session.run(&mut io).await, &shared.config.tls)
    else {
        return;
    };
    // Dropping the BufReader discards anything pipelined after STARTTLS, as a server must.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config.clone());
    let Ok(tls) = acceptor.accept(io.into_inner()).await else {
        return;
    };
    let _ = Session::new(shared, true)
        .run(&mut BufReader::new(tls))
        .await;
}

/// The script's answer with `Stall` already served.
enum Act {
    Default,
    Reply(u16, String),
    Drop,
    Inject(String),
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    params: String,
    to: Vec<String>,
    rcpt_params: Vec<String>,
    body: Vec<u8>,
    data_started: bool,
}

struct Session {
    shared: Arc<Shared>,
    tls: bool,
    ehlo: String,
    authenticated: Option<String>,
    tx: Transaction,
}

impl Session {
    fn new(shared: Arc<Shared>, tls: bool) -> Self {
        let tx = Transaction::default();
        Self {
            shared,
            tls,
            ehlo: String::new(),
            authenticated: None,
            tx,
        }
    }

    async fn decide(&self, stage: &Stage<'_>) -> Act {
        match (self.shared.config.script)(stage) {
            Response::Default => Act::Default,
            Response::Reply(code, text) => Act::Reply(code, text),
            Response::Drop => Act::Drop,
            Response::Stall(delay) => {
                tokio::time::sleep(delay).await;
                Act::Default
            }
            Response::PlaintextInjection(extra) => Act::Inject(extra),
        }
    }

    /// The script's override for `stage`, if any: `Some(step)` means the command is answered.
    async fn overridden(&self, io: &mut impl Conn, stage: &Stage<'_>) -> Option<Step> {
        match self.decide(stage).await {
            Act::Drop => Some(Ok(Next::Close)),
            Act::Reply(code, text) => Some(reply(io, code, &text).await),
            Act::Default | Act::Inject(_) => None,
        }
    }

    async fn run(&mut self, io: &mut BufReader<impl Conn>) -> Step {
        loop {
            let Some(line) = read_line(io, MAX_COMMAND).await? else {
                return Ok(Next::Close);
            };
            let Some(line) = line.strip_suffix(b"\r\n") else {
                reply(io, 500, "5.5.2 Line too long or not CRLF-terminated").await?;
                return Ok(Next::Close);
            };
            let line = String::from_utf8_lossy(line).into_owned();
            let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let next = match verb.to_ascii_uppercase().as_str() {
                "EHLO" => self.ehlo(io, arg).await?,
                "HELO" => {
                    (self.ehlo, self.tx) = (arg.to_owned(), Transaction::default());
                    let text = self.shared.config.hostname.clone();
                    reply(io, 250, &text).await?
                }
                "STARTTLS" => self.starttls(io).await?,
                "AUTH" => self.auth(io, arg).await?,
                "MAIL" => self.mail(io, arg).await?,
                "RCPT" => self.rcpt(io, arg).await?,
                "DATA" => self.data(io).await?,
                "BDAT" => self.bdat(io, arg).await?,
                "RSET" => {
                    self.tx = Transaction::default();
                    reply(io, 250, "2.0.0 Ok").await?
                }
                "NOOP" => reply(io, 250, "2.0.0 Ok").await?,
                "QUIT" => reply(io, 221, "2.0.0 Bye").await.map(|_| Next::Close)?,
                _ => reply(io, 500, "5.5.2 Command not recognized").await?,
            };
            if next != Next::Continue {
                return Ok(next);
            }
        }
    }

    async fn ehlo(&mut self, io: &mut impl Conn, name: &str) -> Step {
        if let Some(step) = self.overridden(io, &Stage::Ehlo { name }).await {
            return step;
        }
        (self.ehlo, self.tx) = (name.to_owned(), Transaction::default());
        let config = &self.shared.config;
        let size = config.advertise_size.map(|n| format!("SIZE {n}"));
        let optional = [
            (config.advertise_pipelining, "PIPELINING"),
            (size.is_some(), size.as_deref().unwrap_or_default()),
            (true, "8BITMIME"),
            (true, "ENHANCEDSTATUSCODES"),
            (config.advertise_dsn, "DSN"),
            (config.advertise_smtputf8, "SMTPUTF8"),
            (config.advertise_chunking, "CHUNKING"),
            (config.tls.is_some() && !self.tls, "STARTTLS"),
            (config.auth.is_some(), "AUTH PLAIN LOGIN"),
        ];
        let mut out = format!("250-{} greets {name}\r\n", config.hostname);
        for (_, line) in optional.iter().filter(|(on, _)| *on) {
            out.push_str(&format!("250-{line}\r\n"));
        }
        out.push_str("250 HELP\r\n");
        write_raw(io, out.as_bytes()).await.map(|()| Next::Continue)
    }

    async fn starttls(&mut self, io: &mut impl Conn) -> Step {
        if self.shared.config.tls.is_none() || self.tls {
            return reply(io, 502, "5.5.1 STARTTLS not available").await;
        }
        let ready = "220 2.0.0 Ready to start TLS\r\n";
        let extra = match self.decide(&Stage::StartTls).await {
            Act::Drop => return Ok(Next::Close),
            Act::Reply(code, text) => return reply(io, code, &text).await,
            Act::Inject(extra) => extra,
            Act::Default => String::new(),
        };
        write_raw(io, format!("{ready}{extra}").as_bytes()).await?;
        Ok(Next::StartTls)
    }

    async fn auth(&mut self, io: &mut BufReader<impl Conn>, arg: &str) -> Step {
        let Some((user, pass)) = self.shared.config.auth.clone() else {
            return reply(io, 502, "5.5.1 AUTH not available").await;
        };
        if self.authenticated.is_some() {
            return reply(io, 503, "5.5.1 Already authenticated").await;
        }
        let text = |v: Option<&[u8]>| v.map(|v| String::from_utf8_lossy(v).into_owned());
        let (mechanism, initial) = arg.split_once(' ').unwrap_or((arg, ""));
        let (got_user, got_pass) = match mechanism.to_ascii_uppercase().as_str() {
            "PLAIN" => {
                let token = challenge(io, initial, "").await?.unwrap_or_default();
                let mut parts = token.split(|&b| b == 0).skip(1);
                (text(parts.next()), text(parts.next()))
            }
            "LOGIN" => {
                let u = challenge(io, initial, "VXNlcm5hbWU6").await?;
                let p = match u {
                    Some(_) => challenge(io, "", "UGFzc3dvcmQ6").await?,
                    None => None,
                };
                (text(u.as_deref()), text(p.as_deref()))
            }
            _ => return reply(io, 504, "5.5.4 Unrecognized mechanism").await,
        };
        if got_user.as_deref() != Some(user.as_str()) || got_pass.as_deref() != Some(pass.as_str())
        {
            return reply(io, 535, "5.7.8 Authentication credentials invalid").await;
        }
        self.authenticated = Some(user);
        reply(io, 235, "2.7.0 Authentication successful").await
    }

    async fn mail(&mut self, io: &mut impl Conn, arg: &str) -> Step {
        let config = &self.shared.config;
        if config.auth.is_some() && self.authenticated.is_none() {
            return reply(io, 530, "5.7.0 Authentication required").await;
        }
        if self.tx.from.is_some() {
            return reply(io, 503, "5.5.1 Nested MAIL command").await;
        }
        let Some((from, params)) = path_arg(arg, "FROM:") else {
            return reply(io, 501, "5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        for param in params.split_whitespace() {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            let size = value.parse::<u64>().unwrap_or(u64::MAX);
            match key.to_ascii_uppercase().as_str() {
                "SIZE"
                    if config
                        .advertise_size
                        .is_some_and(|max| max > 0 && size > max) =>
                {
                    return reply(io, 552, "5.3.4 Message size exceeds fixed limit").await;
                }
                "SMTPUTF8" if !config.advertise_smtputf8 => {
                    return reply(io, 555, "5.5.4 SMTPUTF8 not supported").await;
                }
                "RET" | "ENVID" if !config.advertise_dsn => {
                    return reply(io, 555, "5.5.4 DSN not supported").await;
                }
                _ => {}
            }
        }
        if let Some(step) = self.overridden(io, &Stage::Mail { from: &from }).await {
            return step;
        }
        self.tx = Transaction {
            from: Some(from),
            params,
            ..Transaction::default()
        };
        reply(io, 250, "2.1.0 Ok").await
    }

    async fn rcpt(&mut self, io: &mut impl Conn, arg: &str) -> Step {
        if self.tx.from.is_none() {
            return reply(io, 503, "5.5.1 Need MAIL command").await;
        }
        let Some((to, params)) = path_arg(arg, "TO:") else {
            return reply(io, 501, "5.5.4 Syntax: RCPT TO:<address>").await;
        };
        let dsn_param = params.split_whitespace().any(|p| {
            let key = p.split_once('=').map_or(p, |(k, _)| k);
            key.eq_ignore_ascii_case("NOTIFY") || key.eq_ignore_ascii_case("ORCPT")
        });
        if dsn_param && !self.shared.config.advertise_dsn {
            return reply(io, 555, "5.5.4 DSN not supported").await;
        }
        if let Some(step) = self.overridden(io, &Stage::Rcpt { to: &to }).await {
            return step;
        }
        self.tx.to.push(to);
        self.tx.rcpt_params.push(params);
        reply(io, 250, "2.1.5 Ok").await
    }

    /// Checks a DATA/first BDAT may start and consults the script; `None` = go ahead.
    async fn start_data(&mut self, io: &mut impl Conn) -> Option<Step> {
        if self.tx.from.is_none() || self.tx.to.is_empty() {
            return Some(reply(io, 554, "5.5.1 No valid recipients").await);
        }
        let n = self.shared.datas.fetch_add(1, Ordering::SeqCst) + 1;
        let step = self.overridden(io, &Stage::Data { n }).await;
        self.tx.data_started = step.is_none();
        step
    }

    async fn data(&mut self, io: &mut BufReader<impl Conn>) -> Step {
        if let Some(step) = self.start_data(io).await {
            return step;
        }
        reply(io, 354, "End data with <CR><LF>.<CR><LF>").await?;
        let (mut body, mut too_big) = (Vec::new(), false);
        // Only CRLF ends a line: after a bare LF, "." is content, not the terminator.
        let mut at_line_start = true;
        loop {
            let Some(line) = read_line(io, 1024 * 1024).await? else {
                return Ok(Next::Close);
            };
            if at_line_start && line == b".\r\n" {
                break;
            }
            let content = match line.strip_prefix(b".") {
                Some(rest) if at_line_start => rest,
                _ => &line[..],
            };
            at_line_start = line.ends_with(b"\r\n");
            too_big |= body.len() + content.len() > MAX_MESSAGE;
            if !too_big {
                body.extend_from_slice(content);
            }
        }
        if too_big {
            self.tx = Transaction::default();
            return reply(io, 552, "5.3.4 Message too big").await;
        }
        self.tx.body = body;
        self.finish(io, false).await
    }

    async fn bdat(&mut self, io: &mut BufReader<impl Conn>, arg: &str) -> Step {
        let mut words = arg.split_whitespace();
        let size = words.next().and_then(|n| n.parse::<usize>().ok());
        let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
        let Some(size) = size.filter(|&n| n <= MAX_MESSAGE) else {
            // The chunk length is unknown: the stream cannot be resynchronised.
            return reply(io, 501, "5.5.4 Syntax: BDAT <size> [LAST]")
                .await
                .map(|_| Next::Close);
        };
        let mut chunk = vec![0; size];
        io.read_exact(&mut chunk).await?;
        if !self.tx.data_started
            && let Some(step) = self.start_data(io).await
        {
            self.tx = Transaction::default();
            return step;
        }
        if self.tx.body.len() + chunk.len() > MAX_MESSAGE {
            self.tx = Transaction::default();
            return reply(io, 552, "5.3.4 Message too big").await;
        }
        self.tx.body.extend_from_slice(&chunk);
        if !last {
            return reply(io, 250, &format!("2.0.0 {size} octets received")).await;
        }
        self.finish(io, true).await
    }

    /// End of content: consult the script, record the message if accepted, reset.
    async fn finish(&mut self, io: &mut impl Conn, chunked: bool) -> Step {
        let tx = std::mem::take(&mut self.tx);
        let from = tx.from.unwrap_or_default();
        let stage = Stage::DataEnd {
            from: &from,
            to: &tx.to,
            body: &tx.body,
        };
        let (code, text) = match self.decide(&stage).await {
            Act::Drop => return Ok(Next::Close),
            Act::Reply(code, text) => (code, text),
            _ => (250, "2.0.0 Ok: queued".to_owned()),
        };
        if (200..300).contains(&code) {
            let message = ReceivedMessage {
                from,
                to: tx.to,
                body: tx.body,
                tls: self.tls,
                authenticated: self.authenticated.clone(),
                ehlo: self.ehlo.clone(),
                chunked,
                mail_params: tx.params,
                rcpt_params: tx.rcpt_params,
            };
            let count = {
                let mut messages = self.shared.messages();
                messages.push(message);
                messages.len()
            };
            self.shared.count.send_replace(count);
        }
        reply(io, code, &text).await
    }
}

/// Parses `FROM:<addr> params` (prefix case-insensitive, optional space after the colon).
fn path_arg(arg: &str, prefix: &str) -> Option<(String, String)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg.get(prefix.len()..)?.trim_start().strip_prefix('<')?;
    let (path, params) = rest.split_once('>')?;
    Some((path.to_owned(), params.trim().to_owned()))
}

/// One AUTH round: `initial` if given, else `334 prompt` and the answer. `None` when the
/// client cancelled (`*`) or sent invalid base64.
async fn challenge(
    io: &mut BufReader<impl Conn>,
    initial: &str,
    prompt: &str,
) -> std::io::Result<Option<Vec<u8>>> {
    let answer = if initial.is_empty() {
        reply(io, 334, prompt).await?;
        let line = read_line(io, MAX_COMMAND).await?.unwrap_or_default();
        String::from_utf8_lossy(&line).trim_end().to_owned()
    } else {
        initial.to_owned()
    };
    if answer == "=" {
        return Ok(Some(Vec::new()));
    }
    Ok(BASE64.decode(answer.as_bytes()).ok())
}

/// Reads one line including its LF; `None` at EOF. A line longer than `limit` comes back
/// truncated (without LF), which callers treat as malformed.
async fn read_line(
    io: &mut BufReader<impl AsyncRead + Unpin>,
    limit: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = (&mut *io)
        .take(limit as u64)
        .read_until(b'\n', &mut line)
        .await?;
    Ok((n > 0).then_some(line))
}

async fn reply(io: &mut impl Conn, code: u16, text: &str) -> Step {
    write_raw(io, format!("{code} {text}\r\n").as_bytes()).await?;
    Ok(Next::Continue)
}

async fn write_raw(io: &mut impl Conn, bytes: &[u8]) -> std::io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}
