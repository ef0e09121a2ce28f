//! Policy refusals: the SMTP reply a policy decision produces.
//!
//! baton-core does not depend on baton-smtp; the ingress converts a [`Refusal`] into its reply
//! type (`code`, `status` and `text` map one to one).

use std::fmt;

use crate::authors::AuthorError;

/// Longest piece of client-supplied text (an address, a domain) echoed in a refusal.
const MAX_ECHO: usize = 256;

/// A policy refusal: basic code, enhanced status, text and a bounded metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Basic SMTP reply code (`4xx` temporary, `5xx` permanent).
    pub code: u16,
    /// Enhanced status code (RFC 3463), e.g. `"5.7.1"`.
    pub status: &'static str,
    /// Human readable text, one line, printable ASCII.
    pub text: String,
    /// Bounded label for metrics and logs (never contains addresses).
    pub reason: &'static str,
}

impl Refusal {
    fn new(code: u16, status: &'static str, text: String, reason: &'static str) -> Self {
        Refusal {
            code,
            status,
            text,
            reason,
        }
    }

    /// `530 5.7.0 Authentication required`: no RelayDomain authorises an unauthenticated
    /// client (or the client is on the submission listener without AUTH).
    pub fn auth_required() -> Self {
        Self::new(
            530,
            "5.7.0",
            "Authentication required".into(),
            "auth_required",
        )
    }

    /// `550 5.7.1 Relay access denied: client not authorised`: the client authenticated, but
    /// neither its identity nor its address is authorised by any RelayDomain.
    pub fn client_not_authorised() -> Self {
        Self::new(
            550,
            "5.7.1",
            "Relay access denied: client not authorised".into(),
            "client_not_authorised",
        )
    }

    /// `550 5.7.1 Sender address <x> not allowed for this client`.
    pub fn sender_not_allowed(sender: &str) -> Self {
        Self::new(
            550,
            "5.7.1",
            format!(
                "Sender address <{}> not allowed for this client",
                sanitize(sender)
            ),
            "sender_not_allowed",
        )
    }

    /// `451 4.7.5 <domain>: <reason>`: the RelayDomain that would send the mail is not ready
    /// (e.g. its DKIM key is missing), so the mail is deferred rather than sent unsigned.
    pub fn domain_not_ready(domain: &str, not_ready_reason: &str) -> Self {
        let why = if not_ready_reason.trim().is_empty() {
            "relay domain not ready"
        } else {
            not_ready_reason
        };
        Self::new(
            451,
            "4.7.5",
            format!("{}: {}", sanitize(domain), sanitize(why)),
            "domain_not_ready",
        )
    }

    /// `550 5.6.0 <why>`: the author fields are malformed (no `From:`, several, a mailbox that
    /// is not a plain address, several authors without `Sender:`); the reason is the error's
    /// label (`from_missing`, `from_duplicate`, ...).
    pub fn authors_malformed(e: &AuthorError) -> Self {
        Self::new(550, "5.6.0", e.to_string(), e.metric_label())
    }

    /// `550 5.7.1 Sender: header domain <d> is not aligned with the sender domain`.
    pub fn sender_unaligned(sender_domain: &str) -> Self {
        Self::new(
            550,
            "5.7.1",
            format!(
                "Sender: header domain {} is not aligned with the sender domain",
                sanitize(sender_domain)
            ),
            "sender_unaligned",
        )
    }

    /// `550 5.7.1 From: header domain <d> is not aligned with the sender domain`.
    pub fn from_unaligned(from_domain: &str) -> Self {
        Self::new(
            550,
            "5.7.1",
            format!(
                "From: header domain {} is not aligned with the sender domain",
                sanitize(from_domain)
            ),
            "from_unaligned",
        )
    }

    /// `451 4.3.0 Configuration changed, try again`: the RelayDomain that granted the
    /// transaction is gone from the current snapshot (hot swap during a transaction).
    pub fn unknown_relay_domain() -> Self {
        Self::new(
            451,
            "4.3.0",
            "Configuration changed, try again".into(),
            "unknown_relay_domain",
        )
    }

    /// `451 4.7.1 Rate limit exceeded, try again later`.
    pub fn rate_limited() -> Self {
        Self::new(
            451,
            "4.7.1",
            "Rate limit exceeded, try again later".into(),
            "rate_limited",
        )
    }

    /// `552 5.3.4 Message size exceeds fixed limit of N bytes`.
    pub fn message_too_large(limit: u64) -> Self {
        Self::new(
            552,
            "5.3.4",
            format!("Message size exceeds fixed limit of {limit} bytes"),
            "message_too_large",
        )
    }

    /// Whether the refusal is permanent (`5xx`).
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.status, self.text)
    }
}

/// Make client-supplied text safe to echo in a reply: printable ASCII only, bounded length.
pub(crate) fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_ECHO)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if s.chars().count() > MAX_ECHO {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(
            Refusal::auth_required().to_string(),
            "530 5.7.0 Authentication required"
        );
        assert_eq!(
            Refusal::client_not_authorised().to_string(),
            "550 5.7.1 Relay access denied: client not authorised"
        );
        assert_eq!(
            Refusal::sender_not_allowed("a@b.c").to_string(),
            "550 5.7.1 Sender address <a@b.c> not allowed for this client"
        );
        let r = Refusal::domain_not_ready("example.com", "DKIM key not ready");
        assert_eq!(r.to_string(), "451 4.7.5 example.com: DKIM key not ready");
        assert!(!r.is_permanent());
        assert_eq!(
            Refusal::domain_not_ready("example.com", "").text,
            "example.com: relay domain not ready"
        );
        let r = Refusal::authors_malformed(&AuthorError::NoFrom);
        assert_eq!(r.to_string(), "550 5.6.0 Message has no From: header");
        assert_eq!(r.reason, "from_missing");
        let r = Refusal::authors_malformed(&AuthorError::SeveralFrom(2));
        assert_eq!(
            r.to_string(),
            "550 5.6.0 Message has 2 From: header fields, RFC 5322 allows exactly one"
        );
        assert_eq!(r.reason, "from_duplicate");
        assert_eq!(Refusal::sender_unaligned("evil.com").status, "5.7.1");
        assert_eq!(Refusal::from_unaligned("evil.com").reason, "from_unaligned");
        assert_eq!(Refusal::unknown_relay_domain().code, 451);
        assert_eq!(Refusal::rate_limited().status, "4.7.1");
        assert_eq!(
            Refusal::message_too_large(10).to_string(),
            "552 5.3.4 Message size exceeds fixed limit of 10 bytes"
        );
    }

    #[test]
    fn echoed_text_is_sanitized() {
        let r = Refusal::sender_not_allowed("a\r\n250 ok@b.c");
        assert!(!r.text.contains('\r') && !r.text.contains('\n'));
        let long = "x".repeat(1000);
        assert!(Refusal::sender_not_allowed(&long).text.len() < 400);
        assert_eq!(sanitize("é"), "?");
    }
}
