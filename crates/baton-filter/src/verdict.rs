//! Verdicts, pure: what a content filter decided about one message, how a failed filter turns
//! into a verdict (its [`FailureMode`]), how the verdicts of an ordered list of filters combine,
//! and which SMTP reply each verdict is answered with.
//!
//! Everything a filter sends that reaches the client or the message is cleaned here: the
//! client-facing text ([`ClientText`]: one line of printable ASCII, bounded) and header edits
//! ([`HeaderEdits`]: valid field names, one-line values, bounded count). Internal details (a
//! scanner's error, a signature name, a score) never go into a [`ClientText`]; they travel in
//! the per-filter report (`crate::Report`) for logs and metrics.

use std::fmt;

use baton_smtp::{EnhancedStatus, Reply};

/// Longest client-facing text kept, in bytes (characters: it is ASCII).
pub const MAX_CLIENT_TEXT: usize = 200;
/// Longest header field name kept (RFC 5322 does not bound it; 76 keeps the line foldable).
pub const MAX_HEADER_NAME: usize = 76;
/// Longest added header value kept, in bytes (longer values are cut on a char boundary).
pub const MAX_HEADER_VALUE: usize = 4096;
/// Most header additions (and, separately, removals) kept from one filter's answer.
pub const MAX_HEADER_EDITS: usize = 64;

/// Text when a filter rejects without saying why.
pub const DEFAULT_REJECT_TEXT: &str = "Message rejected by content filter";
/// Text when a filter defers without saying why.
pub const DEFAULT_TEMPFAIL_TEXT: &str = "Message deferred by content filter, try again later";
/// Text of a fail-closed filter that failed or timed out.
pub const UNAVAILABLE_TEXT: &str = "Content filter unavailable, try again later";
/// Text when a filter's concurrency bound is reached.
pub const BUSY_TEXT: &str = "Content filter busy, try again later";

/// Text shown to the SMTP client in a refusal: one line of printable ASCII (`0x20..=0x7e`),
/// whitespace runs collapsed, at most [`MAX_CLIENT_TEXT`] bytes, never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientText(String);

impl ClientText {
    /// Cleans `raw` (a filter's text); `fallback` when nothing printable is left.
    pub fn new(raw: &str, fallback: &str) -> ClientText {
        let cleaned = clean_line(raw, MAX_CLIENT_TEXT);
        if cleaned.is_empty() {
            ClientText(clean_line(fallback, MAX_CLIENT_TEXT))
        } else {
            ClientText(cleaned)
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Printable ASCII only, whitespace (and anything else) collapsed to single spaces, trimmed,
/// cut to `max` bytes at a word boundary when one is near.
fn clean_line(raw: &str, max: usize) -> String {
    let mut out = String::with_capacity(raw.len().min(max));
    let mut space = false;
    for c in raw.chars() {
        if c.is_ascii_graphic() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        } else {
            space = true;
        }
        if out.len() >= max {
            break;
        }
    }
    if out.len() > max {
        out.truncate(max);
    }
    out.trim_end().to_owned()
}

/// Header edits of an accepting verdict: field names to remove (every instance, matched
/// case-insensitively) and fields to add. The ingress applies the removals first, then appends
/// the additions in order, before its own trace headers and DKIM signing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// `(name, value)` to add; names are valid field names, values one unfolded line.
    pub add: Vec<(String, String)>,
    /// Field names whose every instance is removed.
    pub remove: Vec<String>,
}

impl HeaderEdits {
    /// Adds `name: value` when both are valid (see [`header_name`], [`header_value`]); returns
    /// whether it was kept.
    pub fn push_add(&mut self, name: &str, value: &str) -> bool {
        if self.add.len() >= MAX_HEADER_EDITS {
            return false;
        }
        match header_name(name) {
            Some(name) => {
                self.add.push((name, header_value(value)));
                true
            }
            None => false,
        }
    }

    /// Removes every `name` field (once per name); returns whether it was kept.
    pub fn push_remove(&mut self, name: &str) -> bool {
        let Some(name) = header_name(name) else {
            return false;
        };
        if self.remove.iter().any(|n| n.eq_ignore_ascii_case(&name)) {
            return true;
        }
        if self.remove.len() >= MAX_HEADER_EDITS {
            return false;
        }
        self.remove.push(name);
        true
    }

    /// Appends `other`'s edits after this one's (the order of the filter list).
    pub fn extend(&mut self, other: HeaderEdits) {
        for name in &other.remove {
            if !self.remove.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                self.remove.push(name.clone());
            }
        }
        self.add.extend(other.add);
    }

    /// No edit at all.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// A valid header field name (RFC 5322 `ftext`: printable ASCII except `:`, 1 to
/// [`MAX_HEADER_NAME`] bytes), trimmed; `None` otherwise.
pub fn header_name(raw: &str) -> Option<String> {
    let name = raw.trim();
    let valid = !name.is_empty()
        && name.len() <= MAX_HEADER_NAME
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    valid.then(|| name.to_owned())
}

/// A header value as one line: line breaks (folding) and other control characters become
/// single spaces, trimmed, cut to [`MAX_HEADER_VALUE`] bytes on a char boundary. Non-ASCII
/// text is kept (the ingress decides about SMTPUTF8); rspamd already MIME-encodes its values.
pub fn header_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_HEADER_VALUE));
    let mut space = false;
    for c in raw.chars() {
        if c.is_control() || c.is_whitespace() {
            space = true;
            continue;
        }
        if out.len() + c.len_utf8() + 1 > MAX_HEADER_VALUE {
            break;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(c);
    }
    out
}

/// What a filter decided about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Accept, applying the header edits (removals first, then additions).
    Accept {
        /// `(name, value)` to add, in order.
        add_headers: Vec<(String, String)>,
        /// Field names whose every instance is removed.
        remove_headers: Vec<String>,
    },
    /// Refuse permanently: `550 5.7.1 <text>`.
    Reject {
        /// What the client is told.
        text: ClientText,
    },
    /// Refuse for now: `451 4.7.1 <text>`.
    TempFail {
        /// What the client is told.
        text: ClientText,
    },
    /// Accept into quarantine: the message is held, not delivered until released.
    Quarantine {
        /// Why (internal: logs and the quarantine record, never the client).
        reason: String,
    },
}

impl Verdict {
    /// Accept without edits.
    pub fn accept() -> Verdict {
        Verdict::Accept {
            add_headers: Vec::new(),
            remove_headers: Vec::new(),
        }
    }

    /// Accept with `edits`.
    pub fn accept_with(edits: HeaderEdits) -> Verdict {
        Verdict::Accept {
            add_headers: edits.add,
            remove_headers: edits.remove,
        }
    }

    /// Reject with a filter's text (cleaned; [`DEFAULT_REJECT_TEXT`] when empty).
    pub fn reject(text: &str) -> Verdict {
        Verdict::Reject {
            text: ClientText::new(text, DEFAULT_REJECT_TEXT),
        }
    }

    /// Temporary failure with a filter's text (cleaned; [`DEFAULT_TEMPFAIL_TEXT`] when empty).
    pub fn tempfail(text: &str) -> Verdict {
        Verdict::TempFail {
            text: ClientText::new(text, DEFAULT_TEMPFAIL_TEXT),
        }
    }

    /// The verdict's kind, for metrics labels and logs.
    pub fn kind(&self) -> VerdictKind {
        match self {
            Verdict::Accept { .. } => VerdictKind::Accept,
            Verdict::Reject { .. } => VerdictKind::Reject,
            Verdict::TempFail { .. } => VerdictKind::TempFail,
            Verdict::Quarantine { .. } => VerdictKind::Quarantine,
        }
    }

    /// Whether the message goes on (accepted, possibly with edits).
    pub fn is_accept(&self) -> bool {
        matches!(self, Verdict::Accept { .. })
    }

    /// The SMTP reply the ingress answers DATA with when the message does not go on:
    /// `550 5.7.1` (reject), `451 4.7.1` (temporary failure, busy, fail-closed). `None` for
    /// accept and quarantine: the message is handed off (to its pool or the quarantine) and
    /// the ingress answers its usual `250` once stored.
    pub fn reply(&self) -> Option<Reply> {
        match self {
            Verdict::Reject { text } => Some(rejected_reply(text)),
            Verdict::TempFail { text } => Some(tempfail_reply(text)),
            Verdict::Accept { .. } | Verdict::Quarantine { .. } => None,
        }
    }
}

/// `550 5.7.1 <text>`: a filter refused the message (RFC 3463 5.7.1: delivery not authorized,
/// message refused).
pub fn rejected_reply(text: &ClientText) -> Reply {
    Reply::with_status(550, EnhancedStatus::new(5, 7, 1), text.as_str())
}

/// `451 4.7.1 <text>`: a filter deferred the message, failed closed, or was busy.
pub fn tempfail_reply(text: &ClientText) -> Reply {
    Reply::with_status(451, EnhancedStatus::new(4, 7, 1), text.as_str())
}

/// `451 4.7.1 Content filter busy, try again later`: a filter's concurrency bound is reached.
pub fn busy_reply() -> Reply {
    tempfail_reply(&ClientText::new(BUSY_TEXT, BUSY_TEXT))
}

/// A verdict's kind (metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    /// [`Verdict::Accept`].
    Accept,
    /// [`Verdict::Reject`].
    Reject,
    /// [`Verdict::TempFail`].
    TempFail,
    /// [`Verdict::Quarantine`].
    Quarantine,
}

impl VerdictKind {
    /// Lower-case label: `accept`, `reject`, `tempfail`, `quarantine`.
    pub fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Accept => "accept",
            VerdictKind::Reject => "reject",
            VerdictKind::TempFail => "tempfail",
            VerdictKind::Quarantine => "quarantine",
        }
    }
}

/// What a filter's failure (unreachable, timeout, error, unreadable answer) means for the
/// message, declared per filter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailureMode {
    /// Accept as if the filter had accepted without edits; the caller counts the failure.
    Open,
    /// `451 4.7.1`: the client retries later.
    #[default]
    Closed,
}

impl FailureMode {
    /// The verdict for a failed filter.
    pub fn verdict(self) -> Verdict {
        match self {
            FailureMode::Open => Verdict::accept(),
            FailureMode::Closed => Verdict::TempFail {
                text: ClientText::new(UNAVAILABLE_TEXT, UNAVAILABLE_TEXT),
            },
        }
    }

    /// `open` or `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// The verdict when a filter's concurrency bound is reached: `451 4.7.1` (busy), whatever the
/// failure mode — accepting unscanned mail under load would make load a way around the filter.
pub fn busy_verdict() -> Verdict {
    Verdict::TempFail {
        text: ClientText::new(BUSY_TEXT, BUSY_TEXT),
    }
}

/// Combines the verdicts of an ordered list of filters: the first reject, temporary failure or
/// quarantine wins (later verdicts are ignored); when all accept, their header edits accumulate
/// in order. No verdict at all (no filter) is an accept without edits.
pub fn combine(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let mut edits = HeaderEdits::default();
    for verdict in verdicts {
        match verdict {
            Verdict::Accept {
                add_headers,
                remove_headers,
            } => edits.extend(HeaderEdits {
                add: add_headers,
                remove: remove_headers,
            }),
            other => return other,
        }
    }
    Verdict::accept_with(edits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_one_bounded_line_of_printable_ascii() {
        let t = ClientText::new("  Spam\r\n detected:\tscore\x00 15 — über  ", "x");
        assert_eq!(t.as_str(), "Spam detected: score 15 ber");
        let long = "a".repeat(1000);
        assert_eq!(ClientText::new(&long, "x").as_str().len(), MAX_CLIENT_TEXT);
        assert_eq!(ClientText::new("\r\n\t ", "Fallback").as_str(), "Fallback");
        assert_eq!(ClientText::new("", "").as_str(), "");
        // A 550 line with it never carries a second line.
        let reply = rejected_reply(&ClientText::new("a\r\n550 b", "x"));
        assert_eq!(reply.to_string(), "550 5.7.1 a 550 b");
    }

    #[test]
    fn replies_are_typed_and_their_status_agrees_with_the_code() {
        let reject = Verdict::reject("Gtube pattern").reply();
        let tempfail = Verdict::tempfail("").reply();
        let closed = FailureMode::Closed.verdict().reply();
        let busy = busy_verdict().reply();
        assert_eq!(
            reject.as_ref().map(ToString::to_string).as_deref(),
            Some("550 5.7.1 Gtube pattern")
        );
        assert_eq!(
            tempfail.as_ref().map(ToString::to_string).as_deref(),
            Some("451 4.7.1 Message deferred by content filter, try again later")
        );
        assert_eq!(
            closed.as_ref().map(ToString::to_string).as_deref(),
            Some("451 4.7.1 Content filter unavailable, try again later")
        );
        assert_eq!(busy, Some(busy_reply()));
        for reply in [reject, tempfail, closed, busy].into_iter().flatten() {
            let status = reply.status.unwrap_or(EnhancedStatus::generic(reply.code));
            assert!(status.agrees_with(reply.code), "{reply}");
        }
        assert_eq!(Verdict::accept().reply(), None);
        assert_eq!(
            Verdict::Quarantine {
                reason: "score".into()
            }
            .reply(),
            None
        );
    }

    #[test]
    fn failure_modes() {
        assert_eq!(FailureMode::Open.verdict(), Verdict::accept());
        assert_eq!(FailureMode::Closed.verdict().kind(), VerdictKind::TempFail);
        assert_eq!(FailureMode::default(), FailureMode::Closed);
    }

    #[test]
    fn the_first_refusal_wins_and_accepted_edits_accumulate() {
        let mut a = HeaderEdits::default();
        a.push_add("X-Spam-Score", "1.0");
        a.push_remove("X-Spam");
        let mut b = HeaderEdits::default();
        b.push_add("X-Scanned", "yes");
        b.push_remove("x-spam");
        b.push_remove("X-Internal");
        let all = combine([Verdict::accept_with(a.clone()), Verdict::accept_with(b)]);
        assert_eq!(
            all,
            Verdict::Accept {
                add_headers: vec![
                    ("X-Spam-Score".into(), "1.0".into()),
                    ("X-Scanned".into(), "yes".into())
                ],
                remove_headers: vec!["X-Spam".into(), "X-Internal".into()],
            }
        );
        let refused = combine([
            Verdict::accept_with(a),
            Verdict::tempfail("later"),
            Verdict::reject("no"),
        ]);
        assert_eq!(refused, Verdict::tempfail("later"));
        let quarantined = combine([
            Verdict::Quarantine { reason: "q".into() },
            Verdict::reject("no"),
        ]);
        assert_eq!(quarantined.kind(), VerdictKind::Quarantine);
        assert_eq!(combine([]), Verdict::accept());
    }

    #[test]
    fn header_edits_are_valid_and_bounded() {
        let mut e = HeaderEdits::default();
        assert!(!e.push_add("Bad Name", "v"));
        assert!(!e.push_add("Bad:Name", "v"));
        assert!(!e.push_add("", "v"));
        assert!(!e.push_add(&"X".repeat(MAX_HEADER_NAME + 1), "v"));
        assert!(e.push_add(" X-Ok ", "a\r\n\tfolded\x00 value  "));
        assert_eq!(
            e.add,
            vec![("X-Ok".to_owned(), "a folded value".to_owned())]
        );
        for i in 0..MAX_HEADER_EDITS * 2 {
            e.push_add(&format!("X-{i}"), "v");
            e.push_remove(&format!("X-R{i}"));
        }
        assert_eq!(e.add.len(), MAX_HEADER_EDITS);
        assert_eq!(e.remove.len(), MAX_HEADER_EDITS);
        let long = header_value(&"é".repeat(MAX_HEADER_VALUE));
        assert!(long.len() <= MAX_HEADER_VALUE && long.chars().all(|c| c == 'é'));
    }
}
