//! ClamAV's `clamd` over TCP: `zINSTREAM` (the message in chunks, each prefixed with its length
//! as a 4-byte big-endian integer, then a zero-length chunk), one NUL-terminated answer:
//! `stream: OK`, `stream: <signature> FOUND`, or `… ERROR` (e.g. `INSTREAM size limit exceeded.
//! ERROR` past clamd's `StreamMaxLength`). [`parse_reply`] (pure) reads it; a virus is a reject
//! ("Virus found in message", the usual MTA wording; the signature name goes to the logs only)
//! or, if configured, a quarantine; an error is a filter failure.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::verdict::Verdict;
use crate::{FilterError, ScanRequest};

/// Largest chunk sent (clamd reads chunks of any size up to its `StreamMaxLength`).
pub const CHUNK: usize = 64 * 1024;
/// Most bytes of an answer read.
const MAX_ANSWER: usize = 4096;
/// What the client is told when a virus is found.
pub const VIRUS_TEXT: &str = "Virus found in message";

/// clamd's answer to one scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClamdReply {
    /// `stream: OK`.
    Clean,
    /// `stream: <signature> FOUND`.
    Found(String),
    /// `… ERROR`.
    Error(String),
}

/// Reads clamd's answer (trailing NUL and line end ignored).
pub fn parse_reply(raw: &[u8]) -> Result<ClamdReply, FilterError> {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\0', '\n', '\r']).trim();
    if let Some(error) = text.strip_suffix("ERROR") {
        let error = error.trim();
        let error = error.strip_prefix("stream:").unwrap_or(error).trim();
        return Ok(ClamdReply::Error(error.to_owned()));
    }
    let Some(rest) = text.strip_prefix("stream:") else {
        return Err(FilterError::Protocol(format!("clamd answered {text:?}")));
    };
    let rest = rest.trim();
    if rest == "OK" {
        return Ok(ClamdReply::Clean);
    }
    if let Some(name) = rest.strip_suffix("FOUND") {
        let name = name.trim();
        if !name.is_empty() {
            return Ok(ClamdReply::Found(name.to_owned()));
        }
    }
    Err(FilterError::Protocol(format!("clamd answered {text:?}")))
}

/// Where clamd listens and what a virus means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClamdConfig {
    /// `host:port` of clamd's `TCPSocket`.
    pub address: String,
    /// Quarantine infected messages instead of rejecting them.
    pub quarantine: bool,
}

/// A client of one clamd (a connection per scan, as clamd expects for `INSTREAM`).
#[derive(Clone, Debug)]
pub struct ClamdClient {
    config: ClamdConfig,
}

impl ClamdClient {
    /// A client for `config`.
    pub fn new(config: ClamdConfig) -> ClamdClient {
        ClamdClient { config }
    }

    async fn connect(&self) -> Result<TcpStream, FilterError> {
        let stream = TcpStream::connect(self.config.address.as_str())
            .await
            .map_err(|source| FilterError::Connect {
                address: self.config.address.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Scans one message (unbounded: the caller's [`crate::Gate`] bounds it).
    pub async fn scan(&self, message: &[u8]) -> Result<ClamdReply, FilterError> {
        let mut stream = self.connect().await?;
        let sent = send_stream(&mut stream, message).await;
        // clamd answers (and closes) early past its size limit: read its answer even when
        // sending failed, and report the sending error only if there is none.
        let answer = read_answer(&mut stream).await;
        match (sent, answer) {
            (_, Ok(answer)) if !answer.is_empty() => parse_reply(&answer),
            (Err(e), _) => Err(FilterError::Io(e)),
            (Ok(()), Err(e)) => Err(FilterError::Io(e)),
            (Ok(()), Ok(_)) => Err(FilterError::Protocol(
                "clamd closed the connection without an answer".into(),
            )),
        }
    }

    /// Scans and maps the answer: `(verdict, detail for logs)`.
    pub async fn check(&self, request: &ScanRequest) -> Result<(Verdict, String), FilterError> {
        match self.scan(&request.message).await? {
            ClamdReply::Clean => Ok((Verdict::accept(), "clean".into())),
            ClamdReply::Found(name) => {
                let detail = format!("virus {name}");
                let verdict = if self.config.quarantine {
                    Verdict::Quarantine {
                        reason: format!("clamd: {detail}"),
                    }
                } else {
                    Verdict::reject(VIRUS_TEXT)
                };
                Ok((verdict, detail))
            }
            ClamdReply::Error(e) => Err(FilterError::Scanner(format!("clamd: {e}"))),
        }
    }

    /// `zPING` answered `PONG` (readiness).
    pub async fn ping(&self) -> Result<(), FilterError> {
        let mut stream = self.connect().await?;
        stream.write_all(b"zPING\0").await?;
        let answer = read_answer(&mut stream).await?;
        if answer
            .trim_ascii_end()
            .strip_suffix(b"\0")
            .unwrap_or(&answer)
            == b"PONG"
        {
            Ok(())
        } else {
            Err(FilterError::Protocol(format!(
                "clamd answered {:?} to PING",
                String::from_utf8_lossy(&answer)
            )))
        }
    }
}

async fn send_stream(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    stream.write_all(b"zINSTREAM\0").await?;
    for chunk in message.chunks(CHUNK) {
        let len = u32::try_from(chunk.len()).map_err(std::io::Error::other)?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(chunk).await?;
    }
    stream.write_all(&0u32.to_be_bytes()).await?;
    stream.flush().await
}

/// Reads up to the NUL that ends a `z` command's answer, or to the end of the stream.
async fn read_answer(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut answer = Vec::with_capacity(64);
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(answer);
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.contains(&0) || answer.len() >= MAX_ANSWER {
            if let Some(end) = answer.iter().position(|b| *b == 0) {
                answer.truncate(end);
            }
            return Ok(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_clamd_answers() {
        assert_eq!(parse_reply(b"stream: OK\0").ok(), Some(ClamdReply::Clean));
        assert_eq!(parse_reply(b"stream: OK\n").ok(), Some(ClamdReply::Clean));
        assert_eq!(
            parse_reply(b"stream: Eicar-Test-Signature FOUND\0").ok(),
            Some(ClamdReply::Found("Eicar-Test-Signature".into()))
        );
        assert_eq!(
            parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND").ok(),
            Some(ClamdReply::Found("Win.Test.EICAR_HDB-1".into()))
        );
        assert_eq!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0").ok(),
            Some(ClamdReply::Error("INSTREAM size limit exceeded.".into()))
        );
        assert_eq!(
            parse_reply(b"stream: Can't allocate memory ERROR").ok(),
            Some(ClamdReply::Error("Can't allocate memory".into()))
        );
        for bad in [&b""[..], b"PONG", b"stream: FOUND", b"stream: maybe"] {
            assert!(
                matches!(parse_reply(bad), Err(FilterError::Protocol(_))),
                "{bad:?}"
            );
        }
    }
}
