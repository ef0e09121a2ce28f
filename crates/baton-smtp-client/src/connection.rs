//! Session setup (greeting, EHLO/HELO, STARTTLS, AUTH) and the low-level reply/command I/O.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tracing::{debug, warn};

use crate::stream::Stream;

/// Most bytes of message content written (and timed) at once.
pub(crate) const DATA_BLOCK: usize = 64 * 1024;
use crate::{Capabilities, ClientConfig, ClientError, Credentials, Reply, Timeouts, TlsMode};
use crate::{MAX_REPLY_LINE, ReplyParser};

/// An established SMTP session, ready for [`Connection::send`].
///
/// After any error other than a refused reply the session is poisoned: further calls return
/// [`ClientError::Unusable`].
#[derive(Debug)]
pub struct Connection {
    pub(crate) io: BufReader<Stream>,
    remote: SocketAddr,
    server_name: String,
    pub(crate) caps: Capabilities,
    greeting: Reply,
    tls: bool,
    /// The TLS handshake verified the certificate chain and name.
    verified: bool,
    pub(crate) timeouts: Timeouts,
    pub(crate) messages_sent: u32,
    /// A transaction was started and not finished: RSET before the next MAIL.
    pub(crate) needs_reset: bool,
    /// Taken from a pool of idle connections ([`Connection::mark_reused`]): the next
    /// transaction opens with RSET, which also proves the connection still works.
    pub(crate) reused: bool,
    pub(crate) poisoned: bool,
}

/// Runs `fut` under `limit`, mapping expiry to [`ClientError::Timeout`].
pub(crate) async fn timed<T>(
    stage: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or(Err(ClientError::Timeout { stage }))
}

impl Connection {
    /// Connects to `addr` (with TLS first when [`ClientConfig::implicit_tls`]), reads the
    /// greeting, says EHLO, upgrades with STARTTLS according to [`ClientConfig::tls`] and
    /// authenticates when [`ClientConfig::auth`] is set — only over TLS whose certificate
    /// verified, unless [`ClientConfig::allow_auth_unverified`] says otherwise.
    ///
    /// `server_name` is used for TLS SNI and verification and in logs.
    pub async fn connect(
        addr: SocketAddr,
        server_name: &str,
        config: &ClientConfig,
    ) -> Result<Connection, ClientError> {
        let timeouts = config.timeouts;
        let tcp = tokio::time::timeout(timeouts.connect, tcp_connect(addr, config))
            .await
            .map_err(|_| ClientError::Timeout { stage: "connect" })??;
        let (stream, tls) = if config.implicit_tls {
            let stream = handshake(tcp, server_name, config).await?;
            (Stream::Tls(Box::new(stream)), true)
        } else {
            (Stream::Plain(tcp), false)
        };
        let mut conn = Connection {
            io: BufReader::new(stream),
            remote: addr,
            server_name: server_name.to_owned(),
            caps: Capabilities::default(),
            greeting: Reply::new(0, "", ""),
            tls,
            verified: tls && crate::tls::verifies(config),
            timeouts,
            messages_sent: 0,
            needs_reset: false,
            reused: false,
            poisoned: false,
        };
        conn.read_greeting().await?;
        conn.hello(&config.ehlo_name, true).await?;
        if conn.tls {
            // Implicit TLS: already encrypted, STARTTLS would be a protocol error.
        } else if conn.caps.starttls && config.tls != TlsMode::Disabled {
            conn = conn.starttls(config).await?;
        } else if config.tls == TlsMode::Required {
            conn.quit().await;
            return Err(ClientError::TlsRequired);
        }
        if let Some(credentials) = &config.auth
            && let Err(e) = conn.authenticate(credentials, config).await
        {
            if !conn.poisoned {
                conn.quit().await;
            }
            return Err(e);
        }
        debug!(
            server = %conn.server_name,
            remote = %addr,
            tls = conn.tls,
            verified = conn.verified,
            "smtp session ready"
        );
        Ok(conn)
    }

    /// What the server advertised in its (last) EHLO reply.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the session runs over TLS whose certificate chain and name were verified.
    pub fn is_verified(&self) -> bool {
        self.verified
    }

    /// The peer address.
    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// The server's 220 banner.
    pub fn greeting(&self) -> &Reply {
        &self.greeting
    }

    /// Messages accepted (positive final reply) on this connection so far.
    pub fn messages_sent(&self) -> u32 {
        self.messages_sent
    }

    /// Whether the session can still be used for another message.
    pub fn is_usable(&self) -> bool {
        !self.poisoned
    }

    async fn read_greeting(&mut self) -> Result<(), ClientError> {
        let greeting = self.read_reply("greeting", self.timeouts.greeting).await?;
        if greeting.code != 220 {
            self.poisoned = true;
            return Err(ClientError::Greeting(greeting));
        }
        self.greeting = greeting;
        Ok(())
    }

    /// EHLO, falling back to HELO on 500/502/504 when `allow_helo`.
    async fn hello(&mut self, name: &str, allow_helo: bool) -> Result<(), ClientError> {
        let limit = self.timeouts.ehlo;
        let reply = self
            .command(&format!("EHLO {name}\r\n"), "ehlo", limit)
            .await?;
        if reply.code == 250 {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if !(allow_helo && matches!(reply.code, 500 | 502 | 504)) {
            return Err(ClientError::Ehlo(reply));
        }
        debug!(server = %self.server_name, %reply, "EHLO refused, trying HELO");
        let reply = self
            .command(&format!("HELO {name}\r\n"), "ehlo", limit)
            .await?;
        if reply.code != 250 {
            return Err(ClientError::Ehlo(reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// STARTTLS, handshake, EHLO again. Opportunistic mode continues in plaintext when the
    /// server refuses the command; a failed handshake is always an error.
    async fn starttls(mut self, config: &ClientConfig) -> Result<Self, ClientError> {
        let limit = self.timeouts.ehlo;
        let reply = self.command("STARTTLS\r\n", "starttls", limit).await?;
        if reply.code != 220 {
            if config.tls == TlsMode::Required {
                return Err(ClientError::StartTls(reply));
            }
            warn!(server = %self.server_name, %reply, "STARTTLS refused, continuing without TLS");
            return Ok(self);
        }
        if !self.io.buffer().is_empty() {
            // Anything the server sent after its 220 arrived in plaintext and could have been
            // injected by a man in the middle (CVE-2011-0411 class): drop it.
            warn!(
                server = %self.server_name,
                octets = self.io.buffer().len(),
                "discarding plaintext received after STARTTLS 220"
            );
        }
        let tcp = match self.io.into_inner() {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => return Err(ClientError::Protocol("STARTTLS inside TLS".into())),
        };
        let tls = handshake(tcp, &self.server_name, config).await?;
        self.io = BufReader::new(Stream::Tls(Box::new(tls)));
        self.tls = true;
        self.verified = crate::tls::verifies(config);
        self.hello(&config.ehlo_name, false).await?;
        Ok(self)
    }

    async fn authenticate(
        &mut self,
        credentials: &Credentials,
        config: &ClientConfig,
    ) -> Result<(), ClientError> {
        if !self.tls && !config.allow_auth_plaintext {
            return Err(ClientError::AuthUnavailable("connection is not encrypted"));
        }
        if self.tls
            && !self.verified
            && !(config.allow_auth_unverified || config.allow_auth_plaintext)
        {
            return Err(ClientError::AuthUnavailable(
                "the server certificate was not verified; credentials withheld",
            ));
        }
        let limit = self.timeouts.ehlo;
        let has = |m: &str| self.caps.auth.iter().any(|a| a == m);
        let reply = if has("PLAIN") {
            let token = format!("\0{}\0{}", credentials.username, credentials.password);
            let line = format!("AUTH PLAIN {}\r\n", BASE64.encode(token));
            self.command(&line, "auth", limit).await?
        } else if has("LOGIN") {
            let reply = self.command("AUTH LOGIN\r\n", "auth", limit).await?;
            if reply.code != 334 {
                return Err(ClientError::Auth(reply));
            }
            let line = format!("{}\r\n", BASE64.encode(&credentials.username));
            let reply = self.command(&line, "auth", limit).await?;
            if reply.code != 334 {
                return Err(ClientError::Auth(reply));
            }
            let line = format!("{}\r\n", BASE64.encode(&credentials.password));
            self.command(&line, "auth", limit).await?
        } else {
            return Err(ClientError::AuthUnavailable(
                "no supported AUTH mechanism offered",
            ));
        };
        if reply.code != 235 {
            return Err(ClientError::Auth(reply));
        }
        Ok(())
    }

    /// Sends RSET; needed between messages when the previous transaction did not finish.
    /// [`Connection::send`] issues it itself when required, so calling it is always safe.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        let reply = self.command("RSET\r\n", "rset", self.timeouts.rset).await?;
        if reply.code != 250 {
            self.poisoned = true;
            return Err(ClientError::Protocol(format!("RSET refused: {reply}")));
        }
        self.needs_reset = false;
        Ok(())
    }

    /// This connection was idle in a pool and is used again: the next [`Connection::send`]
    /// opens with RSET — pipelined with MAIL, RCPT and DATA when the server offers
    /// PIPELINING (RFC 2920 allows RSET in a group), so reuse costs no extra round trip. If
    /// the RSET is not answered `250` (the server closed the idle connection, or refuses),
    /// `send` fails with [`ClientError::StaleConnection`]: nothing of the message was
    /// delivered, and it can go over a new connection.
    pub fn mark_reused(&mut self) {
        self.reused = true;
    }

    /// Sends NOOP, e.g. to check an idle pooled connection before reusing it.
    pub async fn noop(&mut self) -> Result<Reply, ClientError> {
        self.command("NOOP\r\n", "rset", self.timeouts.rset).await
    }

    /// Sends QUIT and closes the connection. Best effort: errors are ignored.
    pub async fn quit(mut self) {
        if !self.poisoned {
            let limit = self.timeouts.quit;
            let _ = self.command("QUIT\r\n", "quit", limit).await;
        }
        let _ = tokio::time::timeout(self.timeouts.quit, self.io.get_mut().shutdown()).await;
    }

    /// Writes `line` and reads one reply.
    pub(crate) async fn command(
        &mut self,
        line: &str,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        self.write(line.as_bytes(), stage, limit).await?;
        self.read_reply(stage, limit).await
    }

    /// Writes and flushes `bytes` under `limit`; poisons the session on failure.
    pub(crate) async fn write(
        &mut self,
        bytes: &[u8],
        stage: &'static str,
        limit: Duration,
    ) -> Result<(), ClientError> {
        if self.poisoned {
            return Err(ClientError::Unusable);
        }
        let stream = self.io.get_mut();
        let result = timed(stage, limit, async {
            stream.write_all(bytes).await?;
            stream.flush().await?;
            Ok(())
        })
        .await;
        self.poisoned |= result.is_err();
        result
    }

    /// Writes `head`, then `body`, then `tail` as one byte stream, without copying `body`: in
    /// blocks of at most [`DATA_BLOCK`] bytes of body, each written (vectored, so a short
    /// message with its commands is one system call) and flushed under `limit` — RFC 5321
    /// 4.5.3.2.5 times each send of message data, not the whole message. Poisons the session on
    /// failure.
    pub(crate) async fn write_framed(
        &mut self,
        head: &[u8],
        body: &[u8],
        tail: &[u8],
        stage: &'static str,
        limit: Duration,
    ) -> Result<(), ClientError> {
        if self.poisoned {
            return Err(ClientError::Unusable);
        }
        let stream = self.io.get_mut();
        let count = body.len().div_ceil(DATA_BLOCK).max(1);
        let mut result = Ok(());
        for i in 0..count {
            let block = body
                .get(i * DATA_BLOCK..body.len().min((i + 1) * DATA_BLOCK))
                .unwrap_or_default();
            let first: &[u8] = if i == 0 { head } else { &[] };
            let last: &[u8] = if i + 1 == count { tail } else { &[] };
            let mut parts = bytes::Buf::chain(bytes::Buf::chain(first, block), last);
            result = timed(stage, limit, async {
                stream.write_all_buf(&mut parts).await?;
                stream.flush().await?;
                Ok(())
            })
            .await;
            if result.is_err() {
                break;
            }
        }
        self.poisoned |= result.is_err();
        result
    }

    /// Reads one complete (possibly multi-line) reply under `limit`.
    pub(crate) async fn read_reply(
        &mut self,
        stage: &'static str,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        if self.poisoned {
            return Err(ClientError::Unusable);
        }
        let io = &mut self.io;
        let result = timed(stage, limit, async {
            let mut parser = ReplyParser::default();
            let mut line = Vec::with_capacity(128);
            loop {
                read_line(io, &mut line, stage).await?;
                if let Some(reply) = parser.push_line(&line).map_err(ClientError::Reply)? {
                    return Ok(reply);
                }
            }
        })
        .await;
        self.poisoned |= result.is_err();
        result
    }
}

/// The TLS handshake (after STARTTLS's 220, or first thing for implicit TLS), under the EHLO
/// stage's limit.
async fn handshake(
    tcp: TcpStream,
    server_name: &str,
    config: &ClientConfig,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let tls_config = crate::tls::rustls_config(config)?;
    let name = crate::tls::server_name(server_name)?;
    let connector = tokio_rustls::TlsConnector::from(tls_config);
    let handshake = async {
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Tls(e.to_string()))
    };
    timed("starttls", config.timeouts.ehlo, handshake).await
}

async fn tcp_connect(addr: SocketAddr, config: &ClientConfig) -> Result<TcpStream, ClientError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(ClientError::Connect)?;
    if let Some(source) = config.source_address {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(ClientError::Connect)?;
    }
    let tcp = socket.connect(addr).await.map_err(ClientError::Connect)?;
    // Commands are small and latency matters more than segment count.
    tcp.set_nodelay(true).map_err(ClientError::Connect)?;
    Ok(tcp)
}

/// Reads one line into `line` without its CRLF (or bare LF), bounded by [`MAX_REPLY_LINE`].
async fn read_line(
    io: &mut BufReader<Stream>,
    line: &mut Vec<u8>,
    stage: &'static str,
) -> Result<(), ClientError> {
    line.clear();
    let cap = (MAX_REPLY_LINE + 2) as u64;
    let n = (&mut *io).take(cap).read_until(b'\n', line).await?;
    if line.last() != Some(&b'\n') {
        if n as u64 >= cap {
            return Err(ClientError::Protocol(format!(
                "reply line longer than {MAX_REPLY_LINE} octets"
            )));
        }
        return Err(ClientError::ConnectionClosed { stage });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(())
}
