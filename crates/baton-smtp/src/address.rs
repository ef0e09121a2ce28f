//! Mailbox and path parsing for MAIL FROM / RCPT TO (RFC 5321 section 4.1.2, RFC 6531).
//!
//! UTF-8 local parts and domains are accepted by the parser; whether they are allowed
//! (the SMTPUTF8 parameter was given) is decided by the session with [`Address::is_utf8`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Maximum length of a local part in octets (RFC 5321 4.5.3.1.1).
pub const MAX_LOCAL_PART: usize = 64;
/// Maximum length of a domain in octets (RFC 5321 4.5.3.1.2).
pub const MAX_DOMAIN: usize = 255;
/// Maximum length of a domain label in octets.
pub const MAX_LABEL: usize = 63;

/// Why a path could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The path is not enclosed in angle brackets.
    #[error("path must be enclosed in <>")]
    MissingBrackets,
    /// Something follows the closing bracket that is not a parameter list.
    #[error("unexpected characters after the path")]
    TrailingGarbage,
    /// The local part is empty or not a valid Dot-string / Quoted-string.
    #[error("invalid local part")]
    InvalidLocalPart,
    /// The local part is longer than 64 octets.
    #[error("local part too long")]
    LocalPartTooLong,
    /// The domain is missing or invalid.
    #[error("invalid domain")]
    InvalidDomain,
    /// The address literal is not a valid IPv4 or IPv6 literal.
    #[error("invalid address literal")]
    InvalidLiteral,
    /// The source route (`@a,@b:`) is malformed.
    #[error("invalid source route")]
    InvalidRoute,
    /// A quoted string is not terminated.
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
    /// `<>` where a mailbox is required, or `<postmaster>` where not allowed.
    #[error("null path not allowed here")]
    NullNotAllowed,
    /// No `@domain` part.
    #[error("missing domain")]
    MissingDomain,
}

impl AddressError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AddressError::MissingBrackets => "missing_brackets",
            AddressError::TrailingGarbage => "trailing_garbage",
            AddressError::InvalidLocalPart => "invalid_local_part",
            AddressError::LocalPartTooLong => "local_part_too_long",
            AddressError::InvalidDomain => "invalid_domain",
            AddressError::InvalidLiteral => "invalid_literal",
            AddressError::InvalidRoute => "invalid_route",
            AddressError::UnbalancedQuotes => "unbalanced_quotes",
            AddressError::NullNotAllowed => "null_not_allowed",
            AddressError::MissingDomain => "missing_domain",
        }
    }
}

/// A mailbox `local@domain`, both parts exactly as written (quotes kept).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// Local part as written, e.g. `"\"a b\""` for a quoted local part.
    pub local_part: String,
    /// Domain as written, or an address literal such as `[1.2.3.4]`.
    pub domain: String,
}

impl Address {
    /// True when the local part or domain contains non-ASCII characters (needs SMTPUTF8).
    pub fn is_utf8(&self) -> bool {
        !self.local_part.is_ascii() || !self.domain.is_ascii()
    }

    /// The domain in lower case (for policy lookups).
    pub fn domain_lowercase(&self) -> String {
        self.domain.to_lowercase()
    }

    /// Parses a bare mailbox (`local@domain`, no brackets).
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        parse_mailbox(s)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local_part, self.domain)
    }
}

/// The MAIL FROM path: `<>` or a mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>` (bounces, DSNs).
    Null,
    /// A sender mailbox.
    Mailbox(Address),
}

impl ReversePath {
    /// The mailbox, if not null.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

/// The RCPT TO path: `<postmaster>` or a mailbox.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<postmaster>` without a domain (case-insensitive).
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Address),
}

impl ForwardPath {
    /// The mailbox, if not the bare postmaster.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

/// Parses `<path>[ params]` for MAIL FROM; returns the path and the parameter text
/// (without the separating space).
pub fn parse_reverse_path(s: &str) -> Result<(ReversePath, &str), AddressError> {
    let (inner, rest) = split_path(s)?;
    if inner.is_empty() {
        return Ok((ReversePath::Null, rest));
    }
    Ok((ReversePath::Mailbox(parse_routed(inner)?), rest))
}

/// Parses `<path>[ params]` for RCPT TO; returns the path and the parameter text.
pub fn parse_forward_path(s: &str) -> Result<(ForwardPath, &str), AddressError> {
    let (inner, rest) = split_path(s)?;
    if inner.is_empty() {
        return Err(AddressError::NullNotAllowed);
    }
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok((ForwardPath::Postmaster, rest));
    }
    Ok((ForwardPath::Mailbox(parse_routed(inner)?), rest))
}

/// Splits `<inner> rest` honouring quoted strings; `rest` must be empty or follow a space.
fn split_path(s: &str) -> Result<(&str, &str), AddressError> {
    let body = s.strip_prefix('<').ok_or(AddressError::MissingBrackets)?;
    let bytes = body.as_bytes();
    let mut in_quote = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'>' if !in_quote => {
                let inner = &body[..i];
                let rest = &body[i + 1..];
                if rest.is_empty() {
                    return Ok((inner, rest));
                }
                return match rest.strip_prefix(' ') {
                    Some(params) => Ok((inner, params)),
                    None => Err(AddressError::TrailingGarbage),
                };
            }
            _ => {}
        }
        i += 1;
    }
    if in_quote {
        Err(AddressError::UnbalancedQuotes)
    } else {
        Err(AddressError::MissingBrackets)
    }
}

/// `[A-d-l ":"] Mailbox`: the source route is validated and dropped.
fn parse_routed(inner: &str) -> Result<Address, AddressError> {
    if !inner.starts_with('@') {
        return parse_mailbox(inner);
    }
    let (route, mailbox) = inner.split_once(':').ok_or(AddressError::InvalidRoute)?;
    for hop in route.split(',') {
        let domain = hop.strip_prefix('@').ok_or(AddressError::InvalidRoute)?;
        if !valid_domain(domain) {
            return Err(AddressError::InvalidRoute);
        }
    }
    parse_mailbox(mailbox)
}

fn parse_mailbox(s: &str) -> Result<Address, AddressError> {
    let local_len = local_part_len(s)?;
    let local = &s[..local_len];
    let domain = s[local_len..]
        .strip_prefix('@')
        .ok_or(AddressError::MissingDomain)?;
    if local.len() > MAX_LOCAL_PART {
        return Err(AddressError::LocalPartTooLong);
    }
    if domain.starts_with('[') {
        if !valid_literal(domain) {
            return Err(AddressError::InvalidLiteral);
        }
    } else if !valid_domain(domain) {
        return Err(AddressError::InvalidDomain);
    }
    Ok(Address {
        local_part: local.to_string(),
        domain: domain.to_string(),
    })
}

/// Length in bytes of the local part at the start of `s` (up to, not including, the `@`).
fn local_part_len(s: &str) -> Result<usize, AddressError> {
    let bytes = s.as_bytes();
    if bytes.first() == Some(&b'"') {
        let mut i = 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    // quoted-pairSMTP = "\" %d32-126
                    match bytes.get(i + 1) {
                        Some(&c) if (32..=126).contains(&c) => i += 2,
                        _ => return Err(AddressError::InvalidLocalPart),
                    }
                }
                b'"' => return Ok(i + 1),
                c if c == 32 || c == 33 || (35..=126).contains(&c) || c >= 0x80 => i += 1,
                _ => return Err(AddressError::InvalidLocalPart),
            }
        }
        return Err(AddressError::UnbalancedQuotes);
    }
    let end = s.find('@').ok_or(AddressError::MissingDomain)?;
    let local = &s[..end];
    if local.is_empty() || !local.split('.').all(valid_atom) {
        return Err(AddressError::InvalidLocalPart);
    }
    Ok(end)
}

fn valid_atom(atom: &str) -> bool {
    !atom.is_empty()
        && atom.chars().all(|c| {
            c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || is_utf8_non_ascii(c)
        })
}

fn is_utf8_non_ascii(c: char) -> bool {
    !c.is_ascii() && !c.is_control() && !c.is_whitespace()
}

/// Dot-separated labels of letters, digits, hyphens (no leading/trailing hyphen) or U-labels.
pub fn valid_domain(domain: &str) -> bool {
    if domain.is_empty() || domain.len() > MAX_DOMAIN {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || is_utf8_non_ascii(c))
    })
}

/// `[1.2.3.4]` or `[IPv6:...]`.
pub fn valid_literal(literal: &str) -> bool {
    let Some(inner) = literal.strip_prefix('[').and_then(|l| l.strip_suffix(']')) else {
        return false;
    };
    if let Some(v6) = strip_prefix_ignore_case(inner, "IPv6:") {
        return v6.parse::<Ipv6Addr>().is_ok();
    }
    inner.bytes().all(|b| b.is_ascii_digit() || b == b'.') && inner.parse::<Ipv4Addr>().is_ok()
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rev(s: &str) -> Result<ReversePath, AddressError> {
        parse_reverse_path(s).map(|(p, rest)| {
            assert_eq!(rest, "");
            p
        })
    }

    fn fwd(s: &str) -> Result<ForwardPath, AddressError> {
        parse_forward_path(s).map(|(p, _)| p)
    }

    fn mb(local: &str, domain: &str) -> Address {
        Address {
            local_part: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn valid_paths() {
        assert_eq!(rev("<>").unwrap(), ReversePath::Null);
        assert_eq!(
            rev("<a@b.c>").unwrap(),
            ReversePath::Mailbox(mb("a", "b.c"))
        );
        assert_eq!(
            rev("<\"a b\"@x.org>").unwrap(),
            ReversePath::Mailbox(mb("\"a b\"", "x.org"))
        );
        assert_eq!(
            rev("<\"a\\\"b>\"@x.org>").unwrap(),
            ReversePath::Mailbox(mb("\"a\\\"b>\"", "x.org"))
        );
        assert_eq!(
            rev("<@r1.net,@r2.net:u@d.com>").unwrap(),
            ReversePath::Mailbox(mb("u", "d.com"))
        );
        assert_eq!(
            rev("<u@[1.2.3.4]>").unwrap(),
            ReversePath::Mailbox(mb("u", "[1.2.3.4]"))
        );
        assert_eq!(
            rev("<u@[IPv6:::1]>").unwrap(),
            ReversePath::Mailbox(mb("u", "[IPv6:::1]"))
        );
        assert_eq!(fwd("<postmaster>").unwrap(), ForwardPath::Postmaster);
        assert_eq!(fwd("<PostMaster>").unwrap(), ForwardPath::Postmaster);
        assert_eq!(
            fwd("<postmaster@x.org>").unwrap(),
            ForwardPath::Mailbox(mb("postmaster", "x.org"))
        );
        let utf8 = rev("<jöran@bücher.de>").unwrap();
        assert!(utf8.address().unwrap().is_utf8());
        let (p, rest) = parse_reverse_path("<a@b> SIZE=10 BODY=8BITMIME").unwrap();
        assert_eq!(p.to_string(), "<a@b>");
        assert_eq!(rest, "SIZE=10 BODY=8BITMIME");
        assert_eq!(mb("a", "EXAMPLE.com").domain_lowercase(), "example.com");
    }

    #[test]
    fn invalid_paths() {
        for bad in [
            "a@b",
            "<a@b",
            "<a@b@c>",
            "<@b>",
            "<a@>",
            "<a>",
            "<\"a@b>",
            "<a@b>x",
            "<a..b@c>",
            "<.a@c>",
            "<a.@c>",
            "<a b@c>",
            "<a@-b.c>",
            "<a@b-.c>",
            "<a@b..c>",
            "<a@[1.2.3]>",
            "<a@[300.1.1.1]>",
            "<a@[IPv6:zz]>",
            "<a\0@b>",
            "<a@b\0>",
            "<@a:b@c>x",
            "<@a,b:c@d>",
            "<a\u{1}b@c>",
            "<postmaster>",
        ] {
            assert!(rev(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(fwd("<>"), Err(AddressError::NullNotAllowed));
        let long = format!("<{}@b.c>", "a".repeat(65));
        assert_eq!(rev(&long), Err(AddressError::LocalPartTooLong));
        let long_domain = format!("<a@{}.com>", "a".repeat(64));
        assert_eq!(rev(&long_domain), Err(AddressError::InvalidDomain));
    }
}
