//! SMTP replies (RFC 5321 section 4.2) and their incremental, I/O-free parser.

use std::fmt;

/// Longest reply line accepted, CRLF excluded (RFC 5321 says 512; servers exceed it).
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines accepted in one multi-line reply.
pub const MAX_REPLY_LINES: usize = 100;

/// One complete server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code (RFC 3463) from the first line, e.g. `5.1.1`.
    pub enhanced: Option<String>,
    /// Text of each line, without the code and without a leading enhanced status code.
    pub lines: Vec<String>,
}

impl Reply {
    /// Builds a single-line reply (tests, synthetic outcomes).
    pub fn new(code: u16, enhanced: Option<&str>, text: &str) -> Self {
        Self {
            code,
            enhanced: enhanced.map(str::to_owned),
            lines: vec![text.to_owned()],
        }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// All lines joined by a space.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = &self.enhanced {
            write!(f, " {enhanced}")?;
        }
        let text = self.text();
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

/// Accumulates reply lines until the final `ddd ` line.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    code: Option<u16>,
    enhanced: Option<String>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Feeds one line (CRLF or LF already stripped). Returns the reply once complete.
    ///
    /// Errors (as text for [`ClientError::Protocol`](crate::ClientError::Protocol)): a line
    /// too long, too many lines, a malformed code, or a code changing within the reply.
    pub(crate) fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, String> {
        if line.len() > MAX_REPLY_LINE {
            return Err(format!("reply line longer than {MAX_REPLY_LINE} octets"));
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(format!("reply longer than {MAX_REPLY_LINES} lines"));
        }
        let code = parse_code(line)?;
        if self.code.is_some_and(|c| c != code) {
            return Err(format!(
                "reply code changed within a multi-line reply: {code}"
            ));
        }
        self.code = Some(code);
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(format!("malformed reply line: {}", lossy(line))),
        };
        let text = line.get(4..).map(lossy).unwrap_or_default();
        let (enhanced, text) = split_enhanced(code, &text);
        if self.lines.is_empty() {
            self.enhanced = enhanced.map(str::to_owned);
        }
        self.lines.push(text.to_owned());
        if !last {
            return Ok(None);
        }
        let reply = Reply {
            code,
            enhanced: self.enhanced.take(),
            lines: std::mem::take(&mut self.lines),
        };
        self.code = None;
        Ok(Some(reply))
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn parse_code(line: &[u8]) -> Result<u16, String> {
    match line.get(..3) {
        Some([a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9']) => {
            Ok(u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'))
        }
        _ => Err(format!("malformed reply code: {}", lossy(line))),
    }
}

/// Splits a leading RFC 3463 status (`class.subject.detail`) whose class matches the reply code.
fn split_enhanced(code: u16, text: &str) -> (Option<&str>, &str) {
    let (candidate, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = candidate.split('.');
    let class_ok = parts.next().is_some_and(|class| {
        matches!(class, "2" | "4" | "5")
            && class.as_bytes().first() == Some(&(b'0' + (code / 100) as u8))
    });
    let digits = |p: Option<&str>| {
        p.is_some_and(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if class_ok && digits(parts.next()) && digits(parts.next()) && parts.next().is_none() {
        (Some(candidate), rest)
    } else {
        (None, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Option<Reply>, String> {
        let mut parser = ReplyParser::default();
        let mut out = None;
        for line in lines {
            out = parser.push_line(line.as_bytes())?;
        }
        Ok(out)
    }

    #[test]
    fn single_line_with_enhanced_code() {
        let reply = parse(&["550 5.1.1 No such user"]).unwrap().unwrap();
        assert_eq!(reply.code, 550);
        assert_eq!(reply.enhanced.as_deref(), Some("5.1.1"));
        assert_eq!(reply.lines, vec!["No such user"]);
        assert_eq!(reply.to_string(), "550 5.1.1 No such user");
        assert!(reply.is_permanent() && !reply.is_transient() && !reply.is_positive());
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
    fn incomplete_until_final_line() {
        let mut parser = ReplyParser::default();
        assert_eq!(parser.push_line(b"250-mx.example").unwrap(), None);
        let reply = parser.push_line(b"250 PIPELINING").unwrap().unwrap();
        assert_eq!(reply.lines, vec!["mx.example", "PIPELINING"]);
        // The parser is reusable for the next reply.
        assert_eq!(parser.push_line(b"221 bye").unwrap().unwrap().code, 221);
    }

    #[test]
    fn bare_code_and_empty_text() {
        assert_eq!(parse(&["250"]).unwrap().unwrap().lines, vec![""]);
        let reply = parse(&["250 "]).unwrap().unwrap();
        assert_eq!(reply.to_string(), "250");
    }

    #[test]
    fn enhanced_code_needs_matching_class() {
        let reply = parse(&["250 5.1.1 odd"]).unwrap().unwrap();
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.lines, vec!["5.1.1 odd"]);
        let reply = parse(&["220 2.0.0"]).unwrap().unwrap();
        assert_eq!(reply.enhanced.as_deref(), Some("2.0.0"));
        let reply = parse(&["250 2.1.0000 x"]).unwrap().unwrap();
        assert_eq!(reply.enhanced, None);
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse(&["abc hello"]).is_err());
        assert!(parse(&["25"]).is_err());
        assert!(parse(&["250x"]).is_err());
        assert!(parse(&["650 nope"]).is_err());
        assert!(parse(&["250-a", "251 b"]).is_err());
        let long = format!("250 {}", "x".repeat(MAX_REPLY_LINE));
        assert!(parse(&[&long]).is_err());
        let many: Vec<&str> = std::iter::repeat_n("250-x", MAX_REPLY_LINES + 1).collect();
        assert!(parse(&many).is_err());
    }
}
