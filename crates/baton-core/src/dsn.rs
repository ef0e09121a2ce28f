//! RFC 3464 delivery status notifications.
//!
//! The message is written by hand rather than with mail-builder: a DSN needs exact control
//! over parts mail-builder treats as opaque or re-encodes (`message/delivery-status` must be
//! plain `7bit` field lines, `message/rfc822` must embed the original unencoded), plus the
//! guarantees checked here — CRLF only, lines ≤ 998 octets, a boundary absent from content.
//!
//! **SMTPUTF8 (RFC 6533).** A DSN needs SMTPUTF8 only when its own envelope or header fields
//! do ([`needs_smtputf8`]: the original sender's address or our host name is non-ASCII), not
//! because the message it reports on did. Otherwise it is built so that a server without
//! SMTPUTF8 takes it: non-ASCII addresses in the report use the `utf-8` address type with
//! `\x{HEX}` escapes, other non-ASCII field text is escaped the same way, and returned
//! content whose header fields are not ASCII is downgraded to its header block as
//! `text/rfc822-headers` in base64 (its body is dropped).

use baton_proto::v1::{DsnRet, Envelope, EnvelopeKind, Recipient};
use time::OffsetDateTime;

use crate::headers::{rfc5322_date, split_headers};
use crate::outcome::{Disposition, RecipientOutcome};

/// Longest line allowed by RFC 5322.
const MAX_LINE: usize = 998;
/// Longest field value (diagnostic, address) written into the report, in octets: two of them
/// share one line of the explanation (`<address>: failed: diagnostic`), which stays ≤ 998.
const MAX_VALUE: usize = 480;

/// RFC 3464 `Action` of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DsnAction {
    /// Permanently failed (including expired).
    Failed,
    /// Still being retried.
    Delayed,
    /// Delivered to the next hop (NOTIFY=SUCCESS).
    Delivered,
    /// Relayed to a system that does not offer DSNs.
    Relayed,
    /// Expanded to several recipients.
    Expanded,
}

impl DsnAction {
    /// The field value.
    pub fn as_str(self) -> &'static str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
            DsnAction::Expanded => "expanded",
        }
    }
}

/// One recipient block of a DSN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The recipient address (`Final-Recipient: rfc822;<address>`).
    pub address: String,
    /// ORCPT as given by the client, `addr-type;address` (`rfc822;` is assumed without `;`).
    pub orcpt: Option<String>,
    /// What happened.
    pub action: DsnAction,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// The reply behind the status, e.g. `550 5.1.1 no such user`.
    pub diagnostic: Option<String>,
    /// Host that gave the diagnostic.
    pub remote_mta: Option<String>,
    /// Bounce class of a failed or delayed recipient, as the extension field
    /// `X-Baton-Bounce-Class` (RFC 3464 §7 allows `X-` fields in a per-recipient block).
    pub class: Option<crate::bounce::BounceClass>,
}

impl DsnRecipient {
    /// The block for a queued recipient and its outcome: the status is the outcome's
    /// ([`RecipientOutcome::status`]: the reply's own, `5.4.7` for an expired recipient), the
    /// reply is the diagnostic and the outcome's remote host the `Remote-MTA`. Accepted
    /// recipients are `relayed`; expired ones `failed`.
    pub fn from_outcome(recipient: &Recipient, outcome: &RecipientOutcome) -> Self {
        let action = match outcome.disposition {
            // Baton is a relay: a recipient accepted by the next hop was relayed, not
            // delivered to a mailbox (and is reported only when that hop has no DSN, see
            // `outcome::report_wanted`).
            Disposition::Delivered { .. } => DsnAction::Relayed,
            Disposition::Deferred => DsnAction::Delayed,
            Disposition::Failed | Disposition::Expired => DsnAction::Failed,
        };
        let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        DsnRecipient {
            address: recipient.address.clone(),
            orcpt: non_empty(&recipient.orcpt),
            action,
            status: outcome.status().to_string(),
            diagnostic: Some(outcome.reply.to_string()),
            remote_mta: non_empty(&outcome.remote),
            class: None,
        }
    }
}

/// Whether a delay notice about a message is due at `now_ms`: it has been in the queue for at
/// least `after_ms` since it was accepted, and no notice was sent within the last
/// `interval_ms` (`last_notice_ms` 0: none yet). Like Postfix's `delay_warning_time`, but
/// repeated at most once per interval.
pub fn delay_notice_due(
    received_at_ms: i64,
    last_notice_ms: i64,
    now_ms: i64,
    after_ms: i64,
    interval_ms: i64,
) -> bool {
    let old_enough = now_ms.saturating_sub(received_at_ms) >= after_ms;
    let quiet_long_enough =
        last_notice_ms == 0 || now_ms.saturating_sub(last_notice_ms) >= interval_ms.max(1);
    old_enough && quiet_long_enough
}

/// Everything a DSN is built from.
#[derive(Debug, Clone)]
pub struct DsnInput<'a> {
    /// Host name of this MTA (`Reporting-MTA`).
    pub reporting_mta: &'a str,
    /// The DSN's `From:` address, the RelayDomain's postmaster (e.g. `postmaster@example.com`);
    /// its domain is also the `Message-ID`'s. Empty: `MAILER-DAEMON@<reporting_mta>`.
    pub from: &'a str,
    /// The envelope the DSN reports on (reverse path, ENVID, RET).
    pub original: &'a Envelope,
    /// The original message content.
    pub original_message: &'a [u8],
    /// One block per recipient reported.
    pub recipients: Vec<DsnRecipient>,
    /// When the original was accepted (Unix ms).
    pub arrival_ms: i64,
    /// Now (`Date`, `Last-Attempt-Date`).
    pub now: OffsetDateTime,
    /// Unique id of the DSN, used in its Message-ID (`<dsn_id@<domain of from>>`).
    pub dsn_id: &'a str,
}

/// Whether a failure of `original` may be reported to its sender: never for the null
/// reverse-path nor for a DSN (no bounce loops).
pub fn should_bounce(original: &Envelope) -> bool {
    !original.reverse_path.is_empty() && original.kind != EnvelopeKind::Dsn as i32
}

/// Whether a DSN about `original`, sent by `reporting_mta`, needs SMTPUTF8: only when its own
/// envelope or header fields do (RFC 6533 §6) — its recipient (the original reverse-path) or
/// the reporting host name is not ASCII. The original's own SMTPUTF8 flag does not matter.
pub fn needs_smtputf8(original: &Envelope, reporting_mta: &str) -> bool {
    !original.reverse_path.is_ascii() || !reporting_mta.is_ascii()
}

/// Whether a built DSN carries 8-bit content (the original was 8-bit), so it must be sent
/// with `BODY=8BITMIME`.
pub fn needs_8bitmime(dsn: &[u8]) -> bool {
    !dsn.is_ascii()
}

/// Printable single-line value: control characters become spaces, at most [`MAX_VALUE`]
/// octets (cut on a character boundary).
fn clean(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > MAX_VALUE {
            break;
        }
        out.push(c);
    }
    out
}

/// Normalise line endings to CRLF (bare CR and bare LF become CRLF).
fn to_crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 32);
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' if input.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn longest_line(crlf: &[u8]) -> usize {
    crlf.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len())
        .max()
        .unwrap_or(0)
}

/// Cut every line to [`MAX_LINE`] octets (used for the headers-only part as a last resort).
fn truncate_lines(crlf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(crlf.len());
    for line in crlf.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\r\n").unwrap_or(line);
        out.extend_from_slice(&body[..body.len().min(MAX_LINE)]);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The returned-content part, content CRLF-terminated.
struct Returned {
    content_type: &'static str,
    transfer_encoding: &'static str,
    content: Vec<u8>,
}

/// RET=FULL on a DSN reporting a failure returns the whole message, unless a line is too long
/// to embed; otherwise (and for delay/success reports, RFC 3461 §4.3) the header block only.
/// Without SMTPUTF8 (`utf8` false), content whose header fields are not ASCII is downgraded to
/// its header block in base64 (RFC 6533 §6: a message/rfc822 part cannot carry them).
fn returned_content(input: &DsnInput<'_>, utf8: bool) -> Returned {
    let ret = input.original.dsn.as_ref().map_or(0, |d| d.ret);
    let any_failed = input
        .recipients
        .iter()
        .any(|r| r.action == DsnAction::Failed);
    let (headers, _) = split_headers(input.original_message);
    let headers = truncate_lines(&to_crlf(headers));
    if !utf8 && !headers.is_ascii() {
        return Returned {
            content_type: "text/rfc822-headers",
            transfer_encoding: "base64",
            content: base64_lines(&headers),
        };
    }
    if ret == DsnRet::Full as i32 && any_failed {
        let mut full = to_crlf(input.original_message);
        if longest_line(&full) <= MAX_LINE {
            if !full.ends_with(b"\r\n") {
                full.extend_from_slice(b"\r\n");
            }
            return Returned {
                content_type: "message/rfc822",
                transfer_encoding: transfer_encoding(&full),
                content: full,
            };
        }
    }
    Returned {
        content_type: "text/rfc822-headers",
        transfer_encoding: transfer_encoding(&headers),
        content: headers,
    }
}

/// Base64 in CRLF-terminated lines of 76 characters.
fn base64_lines(data: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `s` (already [`clean`]ed) with non-ASCII characters — and, in an address, `+`, `=` and
/// `\` — as RFC 6533 `\x{HEX}` escapes, at most [`MAX_VALUE`] octets (never cutting an
/// escape). For fields of a `message/delivery-status` sent without SMTPUTF8.
fn escaped(s: &str, address: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let plain = c.is_ascii() && !(address && matches!(c, '+' | '=' | '\\'));
        let piece = if plain {
            c.to_string()
        } else {
            format!("\\x{{{:X}}}", u32::from(c))
        };
        if out.len() + piece.len() > MAX_VALUE {
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// A field value of the report: [`clean`], and ASCII-only without SMTPUTF8.
fn report_value(s: &str, utf8: bool) -> String {
    let c = clean(s);
    if utf8 || c.is_ascii() {
        c
    } else {
        escaped(&c, false)
    }
}

/// An address for `Final-Recipient`/`Original-Recipient`: `rfc822;addr`, or without SMTPUTF8
/// and with non-ASCII characters `utf-8;` and RFC 6533 utf-8-addr-xtext.
fn address_field(addr: &str, utf8: bool) -> String {
    let c = clean(addr);
    if utf8 || c.is_ascii() {
        format!("rfc822;{c}")
    } else {
        format!("utf-8;{}", escaped(&c, true))
    }
}

fn subject(recipients: &[DsnRecipient]) -> &'static str {
    if recipients.iter().any(|r| r.action == DsnAction::Failed) {
        "Undelivered Mail Returned to Sender"
    } else if recipients.iter().any(|r| r.action == DsnAction::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Delivery Status Notification"
    }
}

/// The human-readable first part.
fn explanation(input: &DsnInput<'_>) -> String {
    let mta = clean(input.reporting_mta);
    let mut t = format!("This is the mail system at host {mta}.\r\n\r\n");
    let intro = match subject(&input.recipients) {
        "Undelivered Mail Returned to Sender" => {
            "Your message could not be delivered to one or more recipients.\r\n\
             It is attached below.\r\n"
        }
        "Delayed Mail (still being retried)" => {
            "Your message could not be delivered yet to one or more recipients.\r\n\
             Delivery will be retried; you do not need to resend it.\r\n"
        }
        _ if input
            .recipients
            .iter()
            .all(|r| r.action == DsnAction::Relayed) =>
        {
            "Your message was relayed to the following recipients. The next mail system does\r\n\
             not offer delivery status notifications, so no further notice will follow.\r\n"
        }
        _ => "Your message was delivered to the following recipients.\r\n",
    };
    t.push_str(intro);
    for r in &input.recipients {
        let why = r.diagnostic.as_deref().unwrap_or(&r.status);
        t.push_str(&format!(
            "\r\n<{}>: {}: {}\r\n",
            clean(&r.address),
            r.action.as_str(),
            clean(why)
        ));
    }
    t
}

/// The `message/delivery-status` body: per-message fields, then one block per recipient.
/// Without SMTPUTF8 (`utf8` false) it is ASCII only (see the module docs).
fn delivery_status(input: &DsnInput<'_>, utf8: bool) -> String {
    let mut s = format!("Reporting-MTA: dns; {}\r\n", clean(input.reporting_mta));
    if let Some(envid) = input.original.dsn.as_ref().map(|d| &d.envid)
        && !envid.is_empty()
    {
        s.push_str(&format!(
            "Original-Envelope-Id: {}\r\n",
            report_value(envid, utf8)
        ));
    }
    let arrival =
        OffsetDateTime::from_unix_timestamp(input.arrival_ms.div_euclid(1000)).unwrap_or(input.now);
    s.push_str(&format!("Arrival-Date: {}\r\n", rfc5322_date(arrival)));
    let now = rfc5322_date(input.now);
    for r in &input.recipients {
        s.push_str("\r\n");
        if let Some(orcpt) = r.orcpt.as_deref().filter(|o| !o.is_empty()) {
            let orcpt = match orcpt.split_once(';') {
                Some((t, a)) if t.eq_ignore_ascii_case("rfc822") => address_field(a, utf8),
                Some(_) => report_value(orcpt, utf8),
                None => address_field(orcpt, utf8),
            };
            s.push_str(&format!("Original-Recipient: {orcpt}\r\n"));
        }
        s.push_str(&format!(
            "Final-Recipient: {}\r\n",
            address_field(&r.address, utf8)
        ));
        s.push_str(&format!("Action: {}\r\n", r.action.as_str()));
        s.push_str(&format!("Status: {}\r\n", report_value(&r.status, utf8)));
        if let Some(remote) = &r.remote_mta {
            let remote = report_value(remote, utf8);
            s.push_str(&format!("Remote-MTA: dns; {remote}\r\n"));
        }
        if let Some(diag) = &r.diagnostic {
            let diag = report_value(diag, utf8);
            s.push_str(&format!("Diagnostic-Code: smtp; {diag}\r\n"));
        }
        if let Some(class) = r.class {
            s.push_str(&format!("X-Baton-Bounce-Class: {class}\r\n"));
        }
        s.push_str(&format!("Last-Attempt-Date: {now}\r\n"));
    }
    s
}

/// A boundary that occurs in none of the parts.
fn boundary(dsn_id: &str, parts: &[&[u8]]) -> String {
    let id: String = dsn_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(40)
        .collect();
    let mut n = 0u32;
    loop {
        let b = format!("=_baton_{id}_{n}");
        let found = parts
            .iter()
            .any(|p| p.windows(b.len()).any(|w| w == b.as_bytes()));
        if !found {
            return b;
        }
        n += 1;
    }
}

fn transfer_encoding(content: &[u8]) -> &'static str {
    if content.is_ascii() { "7bit" } else { "8bit" }
}

/// Build one complete RFC 3464 DSN message (CRLF line endings, lines ≤ 998 octets).
pub fn build_dsn(input: &DsnInput<'_>) -> Vec<u8> {
    let mta = clean(input.reporting_mta);
    let text = explanation(input);
    let utf8 = needs_smtputf8(input.original, input.reporting_mta);
    let status = delivery_status(input, utf8);
    let returned = returned_content(input, utf8);
    let b = boundary(
        input.dsn_id,
        &[text.as_bytes(), status.as_bytes(), &returned.content],
    );
    let to = if input.original.reverse_path.is_empty() {
        "undisclosed-recipients:;".to_string()
    } else {
        format!("<{}>", clean(&input.original.reverse_path))
    };
    let mut m = Vec::with_capacity(returned.content.len() + text.len() + status.len() + 1024);
    let mut w = |s: &str| m.extend_from_slice(s.as_bytes());
    let from = if input.from.is_empty() || !input.from.is_ascii() {
        format!("MAILER-DAEMON@{mta}")
    } else {
        clean(input.from)
    };
    let id_domain = from
        .rsplit_once('@')
        .map_or(mta.as_str(), |(_, d)| d)
        .to_string();
    w(&format!("From: Mail Delivery System <{from}>\r\n"));
    w(&format!("To: {to}\r\n"));
    w(&format!("Subject: {}\r\n", subject(&input.recipients)));
    w(&format!("Date: {}\r\n", rfc5322_date(input.now)));
    w(&format!(
        "Message-ID: <{}@{id_domain}>\r\n",
        clean(input.dsn_id)
    ));
    w("Auto-Submitted: auto-replied\r\n");
    w("MIME-Version: 1.0\r\n");
    w("Content-Type: multipart/report; report-type=delivery-status;\r\n");
    w(&format!("\tboundary=\"{b}\"\r\n\r\n"));
    w("This is a MIME-encapsulated message.\r\n\r\n");
    w(&format!("--{b}\r\n"));
    w(&format!(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {}\r\n\r\n",
        transfer_encoding(text.as_bytes())
    ));
    w(&text);
    w(&format!("\r\n--{b}\r\n"));
    w("Content-Type: message/delivery-status\r\n");
    w(&format!(
        "Content-Transfer-Encoding: {}\r\n\r\n",
        transfer_encoding(status.as_bytes())
    ));
    w(&status);
    w(&format!("\r\n--{b}\r\n"));
    w(&format!("Content-Type: {}\r\n", returned.content_type));
    w(&format!(
        "Content-Transfer-Encoding: {}\r\n\r\n",
        returned.transfer_encoding
    ));
    m.extend_from_slice(&returned.content);
    m.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    m
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
