//! SMTP replies (RFC 5321 section 4.2) with enhanced status codes (RFC 2034, RFC 3463).

use std::fmt;

/// An enhanced mail system status code such as `5.7.1` (RFC 3463).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    /// Class: 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// Subject sub-code (0..=999).
    pub subject: u16,
    /// Detail sub-code (0..=999).
    pub detail: u16,
}

impl EnhancedStatus {
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
    /// Text lines; an empty vector is sent as one empty line.
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

    /// Builds a multi-line reply; `status` is `"2.0.0"` or `""` for none.
    pub fn multiline(code: u16, status: &str, lines: Vec<String>) -> Reply {
        Reply {
            code,
            status: EnhancedStatus::parse(status),
            lines,
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

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(status) = &self.status {
            write!(f, " {status}")?;
        }
        let first = self.lines.first().map(String::as_str).unwrap_or("");
        write!(f, " {}", sanitize(first))
    }
}

#[cfg(test)]
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
}
