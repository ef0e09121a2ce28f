//! SMTP replies (RFC 5321 section 4.2) with enhanced status codes (RFC 2034, RFC 3463): the one
//! reply vocabulary of Baton. The server session sends [`Reply`]s, the SMTP client parses the
//! next hop's answers into the same type ([`ReplyParser`]), and a delivery outcome carries it to
//! the DSN, the log line and the metric; nothing turns a reply into text and parses it back.

use std::fmt;

/// Longest reply line a parser accepts, CRLF excluded (RFC 5321 says 512; servers exceed it).
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines a parser accepts in one multi-line reply.
pub const MAX_REPLY_LINES: usize = 100;

/// An enhanced mail system status code such as `5.7.1` (RFC 3463).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnhancedStatus {
    /// Class: 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject sub-code (0..=999).
    pub subject: u16,
    /// Detail sub-code (0..=999).
    pub detail: u16,
}

impl EnhancedStatus {
    /// A status from its parts (the caller keeps them in range).
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    /// Parses `"5.7.1"`; returns `None` for anything that is not a valid status code.
    pub fn parse(s: &str) -> Option<EnhancedStatus> {
        let mut parts = s.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        let num = |p: &str, max_len: usize| -> Option<u16> {
            if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let class = num(class, 1)?;
        if !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some(EnhancedStatus {
            class: u8::try_from(class).ok()?,
            subject: num(subject, 3)?,
            detail: num(detail, 3)?,
        })
    }

    /// The generic status of a reply code's class: `2.0.0`, `5.0.0`, and `4.0.0` for
    /// everything else (a 1xx/3xx where a final reply was due is treated as transient).
    pub const fn generic(code: u16) -> EnhancedStatus {
        let class = match code / 100 {
            2 => 2,
            5 => 5,
            _ => 4,
        };
        EnhancedStatus::new(class, 0, 0)
    }

    /// Whether this status may accompany `code` (RFC 3463 §2: the classes must agree).
    pub fn agrees_with(&self, code: u16) -> bool {
        u16::from(self.class) == code / 100
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply: a three-digit code, an optional enhanced status and one or more text lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (e.g. 250).
    pub code: u16,
    /// Enhanced status code, prefixed on every line when present.
    pub status: Option<EnhancedStatus>,
    /// Text lines (without code and status); an empty vector is sent as one empty line.
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a single-line reply; `status` is `"5.7.1"` or `""` for none.
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: EnhancedStatus::parse(status),
            lines: vec![text.into()],
        }
    }

    /// Builds a single-line reply with a typed status.
    pub fn with_status(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Reply {
        Reply {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// Builds a multi-line reply; `status` is `"2.0.0"` or `""` for none.
    pub fn multiline(code: u16, status: &str, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status: EnhancedStatus::parse(status),
            lines,
        }
    }

    /// Reads the one-line form written by [`fmt::Display`] (`"550 5.1.1 No such user"`), as
    /// stored in a queued envelope's last reply. A line without a reply code (older envelopes
    /// stored a local explanation such as `mx.example: connect failed`) becomes a `451` whose
    /// text is the whole line, so nothing recorded is lost.
    pub fn from_line(line: &str) -> Reply {
        let mut parser = ReplyParser::default();
        match parser.push_line(line.as_bytes()) {
            Ok(Some(reply)) => reply,
            _ => Reply {
                code: 451,
                status: None,
                lines: vec![line.to_owned()],
            },
        }
    }

    /// Wire form: `"250-a\r\n250 b\r\n"`. Control characters in the text (CR, LF, NUL, ...)
    /// are replaced by spaces so a reply can never inject extra lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let code = self.code.min(999);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 16).sum());
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            out.extend_from_slice(format!("{code:03}{sep}").as_bytes());
            if let Some(status) = &self.status {
                out.extend_from_slice(status.to_string().as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(sanitize(line).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The status to report for this reply (a DSN's `Status:`, a metric's reason): its own
    /// enhanced status when the class agrees with the code, otherwise the code's generic
    /// status ([`EnhancedStatus::generic`]).
    pub fn effective_status(&self) -> EnhancedStatus {
        self.status
            .filter(|s| s.agrees_with(self.code))
            .unwrap_or_else(|| EnhancedStatus::generic(self.code))
    }

    /// All text lines joined with a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The one-line form: code, status and all text lines joined by a space (`550 5.1.1 No such
/// user`), control characters replaced; what logs, DSN diagnostic codes and the queue record.
impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.code.min(999))?;
        if let Some(status) = &self.status {
            write!(f, " {status}")?;
        }
        let text = sanitize(&self.text());
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

/// Why a peer's reply could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line longer than [`MAX_REPLY_LINE`].
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    /// More lines than [`MAX_REPLY_LINES`].
    #[error("reply longer than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    /// No three-digit 2xx–5xx code at the start of a line.
    #[error("malformed reply code: {0}")]
    BadCode(String),
    /// The code changed within a multi-line reply.
    #[error("reply code changed within a multi-line reply: {0}")]
    CodeChanged(u16),
    /// Neither a space nor a hyphen after the code.
    #[error("malformed reply line: {0}")]
    BadSeparator(String),
}

/// Accumulates a peer's reply lines until the final `ddd ` line (I/O-free; the SMTP client
/// feeds it what it reads).
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line (CRLF or LF already stripped). Returns the reply once complete. A leading
    /// enhanced status is split off each line when its class agrees with the code; the
    /// reply's status is the first line's.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        if line.len() > MAX_REPLY_LINE {
            return Err(ReplyError::LineTooLong);
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let code = parse_code(line)?;
        if self.code.is_some_and(|c| c != code) {
            return Err(ReplyError::CodeChanged(code));
        }
        self.code = Some(code);
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(ReplyError::BadSeparator(lossy(line))),
        };
        let text = line.get(4..).map(lossy).unwrap_or_default();
        let (status, text) = split_status(code, &text);
        if self.lines.is_empty() {
            self.status = status;
        }
        self.lines.push(text.to_owned());
        if !last {
            return Ok(None);
        }
        let reply = Reply {
            code,
            status: self.status.take(),
            lines: std::mem::take(&mut self.lines),
        };
        self.code = None;
        Ok(Some(reply))
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_code(line: &[u8]) -> Result<u16, ReplyError> {
    match line.get(..3) {
        Some([a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9']) => {
            Ok(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => Err(ReplyError::BadCode(lossy(line))),
    }
}

/// Splits a leading RFC 3463 status whose class agrees with the reply code.
fn split_status(code: u16, text: &str) -> (Option<EnhancedStatus>, &str) {
    let (candidate, rest) = text.split_once(' ').unwrap_or((text, ""));
    match EnhancedStatus::parse(candidate) {
        Some(s) if s.agrees_with(code) => (Some(s), rest),
        _ => (None, text),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multi_line() {
        let r = Reply::new(550, "5.7.1", "no");
        assert_eq!(r.to_bytes(), b"550 5.7.1 no\r\n");
        assert_eq!(r.to_string(), "550 5.7.1 no");
        assert!(r.is_permanent() && !r.is_transient() && !r.is_positive());
        let m = Reply::multiline(250, "", vec!["a".into(), "b".into()]);
        assert_eq!(m.to_bytes(), b"250-a\r\n250 b\r\n");
        assert_eq!(m.text(), "a b");
        assert_eq!(m.to_string(), "250 a b");
        let s = Reply::multiline(250, "2.0.0", vec!["a".into(), "b".into()]);
        assert_eq!(s.to_bytes(), b"250-2.0.0 a\r\n250 2.0.0 b\r\n");
    }

    #[test]
    fn sanitizes_and_parses_status() {
        let r = Reply::new(250, "", "a\r\n250 b\0");
        assert_eq!(r.to_bytes(), b"250 a  250 b \r\n");
        assert_eq!(
            EnhancedStatus::parse("4.4.2").map(|s| s.to_string()),
            Some("4.4.2".into())
        );
        assert_eq!(EnhancedStatus::parse("3.1.1"), None);
        assert_eq!(EnhancedStatus::parse("5.1"), None);
        assert_eq!(EnhancedStatus::parse(""), None);
        assert_eq!(Reply::multiline(221, "", vec![]).to_bytes(), b"221 \r\n");
    }

    fn parse(lines: &[&str]) -> Result<Option<Reply>, ReplyError> {
        let mut parser = ReplyParser::default();
        let mut out = None;
        for line in lines {
            out = parser.push_line(line.as_bytes())?;
        }
        Ok(out)
    }

    fn status(s: &str) -> Option<EnhancedStatus> {
        EnhancedStatus::parse(s)
    }

    #[test]
    fn parses_single_line_with_enhanced_code() {
        let reply = parse(&["550 5.1.1 No such user"]).unwrap().unwrap();
        assert_eq!(reply.code, 550);
        assert_eq!(reply.status, status("5.1.1"));
        assert_eq!(reply.lines, vec!["No such user"]);
        assert_eq!(reply.to_string(), "550 5.1.1 No such user");
        assert_eq!(reply.effective_status().to_string(), "5.1.1");
    }

    #[test]
    fn multi_line_strips_repeated_enhanced_code() {
        let reply = parse(&["451-4.3.0 first", "451-4.3.0 second", "451 4.3.0 third"])
            .unwrap()
            .unwrap();
        assert_eq!(reply.lines, vec!["first", "second", "third"]);
        assert_eq!(reply.to_string(), "451 4.3.0 first second third");
        assert!(reply.is_transient());
    }

    #[test]
    fn incomplete_until_final_line_and_reusable() {
        let mut parser = ReplyParser::default();
        assert_eq!(parser.push_line(b"250-mx.example").unwrap(), None);
        let reply = parser.push_line(b"250 PIPELINING").unwrap().unwrap();
        assert_eq!(reply.lines, vec!["mx.example", "PIPELINING"]);
        assert_eq!(parser.push_line(b"221 bye").unwrap().unwrap().code, 221);
    }

    #[test]
    fn bare_code_and_empty_text() {
        assert_eq!(parse(&["250"]).unwrap().unwrap().lines, vec![""]);
        assert_eq!(parse(&["250 "]).unwrap().unwrap().to_string(), "250");
    }

    #[test]
    fn enhanced_code_needs_matching_class() {
        let reply = parse(&["250 5.1.1 odd"]).unwrap().unwrap();
        assert_eq!(reply.status, None);
        assert_eq!(reply.lines, vec!["5.1.1 odd"]);
        assert_eq!(
            parse(&["220 2.0.0"]).unwrap().unwrap().status,
            status("2.0.0")
        );
        assert_eq!(parse(&["250 2.1.0000 x"]).unwrap().unwrap().status, None);
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(matches!(parse(&["abc hello"]), Err(ReplyError::BadCode(_))));
        assert!(parse(&["25"]).is_err());
        assert!(matches!(parse(&["250x"]), Err(ReplyError::BadSeparator(_))));
        assert!(parse(&["650 nope"]).is_err());
        assert_eq!(
            parse(&["250-a", "251 b"]),
            Err(ReplyError::CodeChanged(251))
        );
        let long = format!("250 {}", "x".repeat(MAX_REPLY_LINE));
        assert_eq!(parse(&[&long]), Err(ReplyError::LineTooLong));
        let many: Vec<&str> = std::iter::repeat_n("250-x", MAX_REPLY_LINES + 1).collect();
        assert_eq!(parse(&many), Err(ReplyError::TooManyLines));
    }

    /// The status a DSN reports: the reply's own when its class agrees, else the generic one.
    #[test]
    fn effective_status_and_stored_form() {
        let own = Reply::new(554, "5.7.1", "blocked");
        assert_eq!(own.effective_status().to_string(), "5.7.1");
        assert_eq!(
            Reply::new(554, "4.7.1", "x").effective_status().to_string(),
            "5.0.0"
        );
        assert_eq!(
            Reply::new(550, "", "x").effective_status().to_string(),
            "5.0.0"
        );
        assert_eq!(
            Reply::new(421, "", "x").effective_status().to_string(),
            "4.0.0"
        );
        assert_eq!(
            Reply::new(354, "", "x").effective_status().to_string(),
            "4.0.0"
        );
        // Stored as one line, read back the same.
        let stored = Reply::multiline(550, "5.1.1", vec!["no such".into(), "user".into()]);
        let back = Reply::from_line(&stored.to_string());
        assert_eq!(back, Reply::new(550, "5.1.1", "no such user"));
        // A line without a code (an older queue entry) is kept as the text of a 451.
        let old = Reply::from_line("mx.example: connect failed");
        assert_eq!(
            (old.code, old.text().as_str()),
            (451, "mx.example: connect failed")
        );
        assert!(Reply::from_line("").is_transient());
    }
}
