//! The author of a message as a receiver would display it: every mailbox of the `From:` and
//! `Sender:` header fields (RFC 5322 §3.6.2), extracted strictly enough to be used for the
//! From: alignment check.
//!
//! Parsing is mail-parser's (groups, lists, comments, encoded words, quoted display names,
//! obsolete syntax); this module adds what a security check needs on top of a lenient parser:
//! - the fields are counted on the raw header block, so a second `From:` that a parser would
//!   skip or merge is still seen: exactly one `From:`, at most one `Sender:`;
//! - every mailbox must have an address that is a plain `local@domain` (one `@`, no spaces,
//!   no list or group punctuation); a parser that glued two addresses together
//!   (`<a@x> <b@y>`) or left a bare name therefore yields an error, never a half address;
//! - the raw field value has exactly one `@` outside quoted strings, comments and domain
//!   literals per mailbox, so an address-like display name (`boss@bank.example <a@b>`) or an
//!   obsolete source route is refused rather than shown to a reader as the author;
//! - a `From:` with several mailboxes needs a `Sender:` (with exactly one mailbox).

use mail_parser::{Addr, HeaderName, HeaderValue, MessageParser};
use thiserror::Error;

use crate::headers::{field_names, split_headers};

/// One author mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The address as written (display name and comments removed).
    pub address: String,
    /// Its domain, lower-cased.
    pub domain: String,
}

/// The author fields of a well-formed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authors {
    /// Every mailbox of the one `From:` field (at least one), in order.
    pub from: Vec<Mailbox>,
    /// The mailbox of the `Sender:` field, when there is one.
    pub sender: Option<Mailbox>,
}

/// Why the author fields of a message are unusable (each is a `550 5.6.0` refusal).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthorError {
    /// No `From:` field in the header block.
    #[error("Message has no From: header")]
    NoFrom,
    /// More than one `From:` field.
    #[error("Message has {0} From: header fields, RFC 5322 allows exactly one")]
    SeveralFrom(usize),
    /// The `From:` field holds no mailbox, or one that is not a plain address.
    #[error("From: header is malformed or holds no mailbox address")]
    MalformedFrom,
    /// More than one `Sender:` field.
    #[error("Message has {0} Sender: header fields, RFC 5322 allows at most one")]
    SeveralSender(usize),
    /// The `Sender:` field does not hold exactly one plain mailbox address.
    #[error("Sender: header must hold exactly one mailbox address")]
    MalformedSender,
    /// `From:` has several mailboxes and there is no `Sender:` (RFC 5322 §3.6.2).
    #[error("From: header has several mailboxes, so a Sender: header is required")]
    SenderRequired,
}

impl AuthorError {
    /// Bounded label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            AuthorError::NoFrom => "from_missing",
            AuthorError::SeveralFrom(_) => "from_duplicate",
            AuthorError::MalformedFrom => "from_malformed",
            AuthorError::SeveralSender(_) => "sender_duplicate",
            AuthorError::MalformedSender => "sender_malformed",
            AuthorError::SenderRequired => "sender_required",
        }
    }
}

/// Characters that never appear unquoted in an address a receiver shows as one mailbox.
const NOT_IN_ADDRESS: &[char] = &['<', '>', ',', ';', ':', '(', ')', '[', ']', '\\', '"'];

/// A plain `local@domain` address: one `@`, non-empty parts, no whitespace or control
/// characters, no list/group punctuation; the domain is dot-separated non-empty labels of
/// letters, digits, `-` and `_` (address literals never pass: they cannot be aligned anyway).
fn plain_mailbox(addr: &Addr<'_>) -> Option<Mailbox> {
    let address = addr.address()?.trim();
    let (local, domain) = address.split_once('@')?;
    let clean = |s: &str| {
        !s.is_empty()
            && !s.contains('@')
            && !s.contains(NOT_IN_ADDRESS)
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    let domain_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    });
    (clean(local) && clean(domain) && domain_ok).then(|| Mailbox {
        address: address.to_string(),
        domain: domain.to_lowercase(),
    })
}

/// `@` signs of a raw field value outside quoted strings, comments (nested) and domain
/// literals, i.e. the ones that separate a local part from a domain. A well-formed list has
/// exactly one per mailbox; a display name with a bare `@` (`boss@bank.example <a@b>`, which
/// RFC 5322 does not allow and which clients show as if it were the address) has more.
fn bare_at_signs(raw: &[u8]) -> usize {
    let (mut n, mut depth, mut quoted, mut literal, mut escaped) = (0, 0usize, false, false, false);
    for &b in raw {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted || depth > 0 || literal => escaped = true,
            b'"' if depth == 0 && !literal => quoted = !quoted,
            b'(' if !quoted && !literal => depth += 1,
            b')' if !quoted && !literal => depth = depth.saturating_sub(1),
            b'[' if !quoted && depth == 0 => literal = true,
            b']' if !quoted && depth == 0 => literal = false,
            b'@' if !quoted && depth == 0 && !literal => n += 1,
            _ => {}
        }
    }
    n
}

/// Every mailbox of one parsed address field; `None` when any of them is not plain, there is
/// none at all, or the raw value has more bare `@` signs than mailboxes.
fn mailboxes(value: &HeaderValue<'_>, raw: &[u8]) -> Option<Vec<Mailbox>> {
    let HeaderValue::Address(address) = value else {
        return None;
    };
    let all: Option<Vec<Mailbox>> = address.iter().map(plain_mailbox).collect();
    all.filter(|m| !m.is_empty() && bare_at_signs(raw) == m.len())
}

/// The author mailboxes of `body` (a whole message or just its header block), checked as the
/// module documentation describes.
pub fn authors(body: &[u8]) -> Result<Authors, AuthorError> {
    let (headers, _) = split_headers(body);
    let (mut n_from, mut n_sender) = (0usize, 0usize);
    for name in field_names(headers) {
        n_from += usize::from(name.eq_ignore_ascii_case(b"from"));
        n_sender += usize::from(name.eq_ignore_ascii_case(b"sender"));
    }
    match n_from {
        0 => return Err(AuthorError::NoFrom),
        1 => {}
        n => return Err(AuthorError::SeveralFrom(n)),
    }
    if n_sender > 1 {
        return Err(AuthorError::SeveralSender(n_sender));
    }
    let mut block = headers.to_vec();
    block.extend_from_slice(b"\r\n");
    let parsed = MessageParser::new()
        .parse_headers(&block)
        .ok_or(AuthorError::MalformedFrom)?;
    // (parsed value, raw value) of the one field named `want`; `Err` when there are several.
    let field = |want: HeaderName<'static>| {
        let mut fields = parsed.headers().iter().filter(move |h| h.name == want);
        let first = fields.next().map(|h| {
            let raw = block
                .get(h.offset_start as usize..h.offset_end as usize)
                .unwrap_or_default();
            (&h.value, raw)
        });
        if fields.next().is_some() {
            Err(())
        } else {
            Ok(first)
        }
    };
    // The parser must see exactly the fields counted above; anything else is malformed.
    let from = match field(HeaderName::From) {
        Ok(Some((v, raw))) => mailboxes(v, raw).ok_or(AuthorError::MalformedFrom)?,
        _ => return Err(AuthorError::MalformedFrom),
    };
    let sender = match (field(HeaderName::Sender), n_sender) {
        (Ok(None), 0) => None,
        (Ok(Some((v, raw))), 1) => match mailboxes(v, raw) {
            Some(mut m) if m.len() == 1 => m.pop(),
            _ => return Err(AuthorError::MalformedSender),
        },
        _ => return Err(AuthorError::MalformedSender),
    };
    if from.len() > 1 && sender.is_none() {
        return Err(AuthorError::SenderRequired);
    }
    Ok(Authors { from, sender })
}

#[cfg(test)]
#[path = "authors_tests.rs"]
mod tests;
