//! A raw SMTP client for hostile-input scenarios: like [`crate::smtp::Talk`] it sends exactly
//! the bytes it is given, and it also speaks TLS (STARTTLS or implicit, verifying the
//! ingress's test certificate), connects from a chosen loopback source address, and hands its
//! socket over for tests that write and read at the same time.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, bail};
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::smtp::Reply;

/// Plain TCP or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, b),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, b),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TLS client config trusting exactly the PEM certificate at `cert` (the one
/// [`crate::harness::Ingress::start`] writes as `tls.crt` in its directory, issued for
/// `localhost`).
pub fn trusting(cert: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()?;
    let roots = crate::tls::root_store(&certs)?;
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One raw SMTP conversation over plain TCP or TLS.
pub struct Wire {
    reader: BufReader<Io>,
}

impl Wire {
    /// Connect over plain TCP and read the greeting.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<(Wire, Reply)> {
        Wire::start(Io::Plain(TcpStream::connect(addr).await?)).await
    }

    /// Connect from the loopback source address `source` (any of 127.0.0.0/8 works on Linux)
    /// and read the greeting.
    pub async fn connect_from(source: IpAddr, addr: SocketAddr) -> anyhow::Result<(Wire, Reply)> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        Wire::start(Io::Plain(socket.connect(addr).await?)).await
    }

    /// Connect to an implicit-TLS listener and read the greeting.
    pub async fn connect_tls(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<(Wire, Reply)> {
        let tcp = TcpStream::connect(addr).await?;
        let s = TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        Wire::start(Io::Tls(Box::new(s))).await
    }

    async fn start(io: Io) -> anyhow::Result<(Wire, Reply)> {
        let mut w = Wire {
            reader: BufReader::new(io),
        };
        let greeting = w.reply().await?;
        Ok((w, greeting))
    }

    /// The TLS handshake after the server's `220` to STARTTLS was read; returns the upgraded
    /// conversation. Fails if the server sent anything after that `220` in plaintext.
    pub async fn handshake(self, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Wire> {
        if !self.reader.buffer().is_empty() {
            bail!(
                "server sent plaintext after its STARTTLS reply: {:?}",
                String::from_utf8_lossy(self.reader.buffer())
            );
        }
        let Io::Plain(tcp) = self.reader.into_inner() else {
            bail!("TLS is already active");
        };
        let s = TlsConnector::from(tls)
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        Ok(Wire {
            reader: BufReader::new(Io::Tls(Box::new(s))),
        })
    }

    /// The plain TCP socket, for tests that write and read concurrently. Fails when TLS is
    /// active or reply bytes are buffered unread.
    pub fn into_tcp(self) -> anyhow::Result<TcpStream> {
        if !self.reader.buffer().is_empty() {
            bail!("unread reply bytes");
        }
        match self.reader.into_inner() {
            Io::Plain(s) => Ok(s),
            Io::Tls(_) => bail!("TLS is active"),
        }
    }

    /// Read one (possibly multi-line) reply, failing after 10 s.
    pub async fn reply(&mut self) -> anyhow::Result<Reply> {
        tokio::time::timeout(Duration::from_secs(10), read_reply(&mut self.reader))
            .await
            .context("no reply within 10s")?
    }

    /// Send raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let io = self.reader.get_mut();
        io.write_all(bytes).await?;
        io.flush().await?;
        Ok(())
    }

    /// Send one command line (CRLF added) and read its reply.
    pub async fn cmd(&mut self, line: &str) -> anyhow::Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// True when the server closed the connection (EOF or reset within 10 s) without
    /// sending anything more.
    pub async fn closed(&mut self) -> bool {
        let mut buf = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// Read one reply from any buffered reader.
pub async fn read_reply<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> anyhow::Result<Reply> {
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            bail!("connection closed while waiting for a reply");
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let code: u16 = line
            .get(..3)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("bad reply line {line:?}"))?;
        text.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(Reply {
                code,
                text: text.join("\n"),
            });
        }
    }
}
