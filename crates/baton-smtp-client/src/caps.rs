//! EHLO capability parsing (RFC 5321 section 4.1.1.1 and the extension RFCs).

use crate::Reply;

/// What the server advertised in its EHLO reply. All false/empty after a HELO fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// RFC 2920 command pipelining.
    pub pipelining: bool,
    /// RFC 1870 SIZE. `Some(0)` means advertised without a fixed limit.
    pub size: Option<u64>,
    /// RFC 6152 8BITMIME.
    pub eight_bit_mime: bool,
    /// RFC 6531 SMTPUTF8.
    pub smtputf8: bool,
    /// RFC 3030 CHUNKING (BDAT).
    pub chunking: bool,
    /// RFC 3461 delivery status notifications.
    pub dsn: bool,
    /// RFC 3207 STARTTLS.
    pub starttls: bool,
    /// RFC 4954 SASL mechanisms, upper-cased.
    pub auth: Vec<String>,
    /// RFC 2034 enhanced status codes.
    pub enhanced_status_codes: bool,
}

impl Capabilities {
    /// Parses an EHLO reply; the first line (the server's name) is skipped.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Self::default();
        for line in reply.lines.iter().skip(1) {
            caps.add_line(line);
        }
        caps
    }

    fn add_line(&mut self, line: &str) {
        // Old servers send "AUTH=PLAIN LOGIN".
        let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
        let Some(keyword) = words.next() else {
            return;
        };
        match keyword.to_ascii_uppercase().as_str() {
            "PIPELINING" => self.pipelining = true,
            "SIZE" => {
                self.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0));
            }
            "8BITMIME" => self.eight_bit_mime = true,
            "SMTPUTF8" => self.smtputf8 = true,
            "CHUNKING" => self.chunking = true,
            "DSN" => self.dsn = true,
            "STARTTLS" => self.starttls = true,
            "ENHANCEDSTATUSCODES" => self.enhanced_status_codes = true,
            "AUTH" => {
                for mechanism in words {
                    let mechanism = mechanism.to_ascii_uppercase();
                    if !self.auth.contains(&mechanism) {
                        self.auth.push(mechanism);
                    }
                }
            }
            _ => {}
        }
    }

    /// The advertised SIZE limit, if any (0 and absence mean none).
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Capabilities {
        let reply = Reply {
            code: 250,
            status: None,
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        };
        Capabilities::from_ehlo(&reply)
    }

    #[test]
    fn parses_common_extensions() {
        let caps = ehlo(&[
            "mx.example Hello",
            "PIPELINING",
            "SIZE 10240000",
            "8BITMIME",
            "smtputf8",
            "CHUNKING",
            "DSN",
            "STARTTLS",
            "AUTH PLAIN login",
            "AUTH=LOGIN CRAM-MD5",
            "ENHANCEDSTATUSCODES",
            "X-UNKNOWN foo",
        ]);
        assert!(caps.pipelining && caps.eight_bit_mime && caps.smtputf8 && caps.chunking);
        assert!(caps.dsn && caps.starttls && caps.enhanced_status_codes);
        assert_eq!(caps.size, Some(10_240_000));
        assert_eq!(caps.size_limit(), Some(10_240_000));
        assert_eq!(caps.auth, vec!["PLAIN", "LOGIN", "CRAM-MD5"]);
    }

    #[test]
    fn first_line_is_the_name_not_a_keyword() {
        let caps = ehlo(&["PIPELINING"]);
        assert!(!caps.pipelining);
    }

    #[test]
    fn size_without_limit() {
        assert_eq!(ehlo(&["x", "SIZE"]).size, Some(0));
        assert_eq!(ehlo(&["x", "SIZE"]).size_limit(), None);
        assert_eq!(ehlo(&["x", "SIZE 0"]).size_limit(), None);
        assert_eq!(ehlo(&["x"]).size, None);
    }
}
