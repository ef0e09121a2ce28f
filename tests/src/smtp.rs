//! A raw SMTP conversation for tests that need to send exactly the bytes they mean
//! (hostile input, pipelining, smuggling) and read exactly what came back.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One reply: code and the text of all lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit code.
    pub code: u16,
    /// Text of every line (without the code), joined with `\n`.
    pub text: String,
}

/// A plain-TCP SMTP client that sends raw bytes.
pub struct Talk {
    reader: BufReader<TcpStream>,
}

impl Talk {
    /// Connect and read the greeting.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<(Talk, Reply)> {
        let s = TcpStream::connect(addr).await?;
        let mut t = Talk {
            reader: BufReader::new(s),
        };
        let g = t.reply().await?;
        Ok((t, g))
    }

    /// Connect from a chosen local address (e.g. `127.0.0.9`, a client outside the networks a
    /// RelayDomain admits) and read the greeting.
    pub async fn connect_from(
        addr: SocketAddr,
        local: std::net::IpAddr,
    ) -> anyhow::Result<(Talk, Reply)> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(local, 0))?;
        let s = socket.connect(addr).await?;
        let mut t = Talk {
            reader: BufReader::new(s),
        };
        let g = t.reply().await?;
        Ok((t, g))
    }

    /// Read one (possibly multi-line) reply, failing after 10 s.
    pub async fn reply(&mut self) -> anyhow::Result<Reply> {
        tokio::time::timeout(Duration::from_secs(10), self.reply_inner())
            .await
            .context("no reply within 10s")?
    }

    async fn reply_inner(&mut self) -> anyhow::Result<Reply> {
        let mut text = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("connection closed while waiting for a reply");
            }
            let line = line.trim_end_matches(['\r', '\n']);
            let code: u16 = line
                .get(..3)
                .and_then(|c| c.parse().ok())
                .context("bad reply line")?;
            text.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(Reply {
                    code,
                    text: text.join("\n"),
                });
            }
        }
    }

    /// Send raw bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.reader.get_mut().write_all(bytes).await?;
        Ok(())
    }

    /// Send one command line (CRLF added) and read its reply.
    pub async fn cmd(&mut self, line: &str) -> anyhow::Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// True when the server closed the connection (EOF within 10 s).
    pub async fn closed(&mut self) -> bool {
        let mut buf = String::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}
