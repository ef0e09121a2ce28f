//! Reports that come back to a return path: asynchronous delivery status notifications
//! (RFC 3464, `multipart/report; report-type=delivery-status`) and feedback-loop complaints
//! (ARF, RFC 5965, `report-type=feedback-report`). The MIME structure is read with
//! `mail-parser`; the report fields (RFC 822-style groups) are read here. Anything else is
//! `None`: it is not a report, and the return path refuses it.

use mail_parser::{MessageParser, MimeHeaders, PartType};

/// A report that came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A delivery status notification: one block per recipient.
    Dsn(Vec<DsnBlock>),
    /// A complaint (`Feedback-Type: abuse`, ...).
    Complaint(Complaint),
}

/// One per-recipient block of a DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnBlock {
    /// `Final-Recipient` (the address after `rfc822;`).
    pub final_recipient: String,
    /// `Original-Recipient`, when given.
    pub original_recipient: Option<String>,
    /// `Action`, lower case (`failed`, `delayed`, `delivered`, `relayed`, `expanded`).
    pub action: String,
    /// `Status`, e.g. `5.1.1`.
    pub status: String,
    /// `Diagnostic-Code` without its type (`550 5.1.1 user unknown`); may be empty.
    pub diagnostic: String,
}

/// An ARF feedback report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Complaint {
    /// `Feedback-Type`, lower case (`abuse`, `fraud`, `not-spam`, ...).
    pub feedback_type: String,
    /// `Original-Mail-From`, when given.
    pub original_mail_from: Option<String>,
    /// `Original-Rcpt-To` fields.
    pub original_rcpt_to: Vec<String>,
    /// `Return-Path` of the returned original message, when present.
    pub return_path: Option<String>,
    /// `To` addresses of the returned original message.
    pub original_to: Vec<String>,
}

/// Parse a message as a report; `None` when it is not one.
pub fn parse(message: &[u8]) -> Option<Report> {
    let msg = MessageParser::new().parse(message)?;
    let ct = msg.content_type()?;
    if !ct.ctype().eq_ignore_ascii_case("multipart")
        || !ct.subtype()?.eq_ignore_ascii_case("report")
    {
        return None;
    }
    let report_type = ct.attribute("report-type")?.to_ascii_lowercase();
    let part_of = |sub: &[&str]| {
        msg.parts.iter().find(|p| {
            p.content_type().is_some_and(|c| {
                c.ctype().eq_ignore_ascii_case("message")
                    && c.subtype()
                        .is_some_and(|s| sub.iter().any(|x| s.eq_ignore_ascii_case(x)))
            })
        })
    };
    match report_type.as_str() {
        "delivery-status" => {
            let part = part_of(&["delivery-status", "global-delivery-status"])?;
            let groups = field_groups(&part_bytes(part));
            let blocks: Vec<DsnBlock> = groups
                .iter()
                .skip(1)
                .filter_map(|g| {
                    let f = |name: &str| field(g, name);
                    let final_recipient = address_value(&f("final-recipient")?);
                    Some(DsnBlock {
                        final_recipient,
                        original_recipient: f("original-recipient").map(|v| address_value(&v)),
                        action: f("action").unwrap_or_default().to_ascii_lowercase(),
                        status: f("status")
                            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                            .unwrap_or_default(),
                        diagnostic: f("diagnostic-code")
                            .map(|v| after_type(&v))
                            .unwrap_or_default(),
                    })
                })
                .collect();
            (!blocks.is_empty()).then_some(Report::Dsn(blocks))
        }
        "feedback-report" => {
            let part = part_of(&["feedback-report"])?;
            let groups = field_groups(&part_bytes(part));
            let g = groups.first()?;
            let feedback_type = field(g, "feedback-type")?.to_ascii_lowercase();
            let original_rcpt_to = g
                .iter()
                .filter(|(n, _)| n == "original-rcpt-to")
                .map(|(_, v)| address_value(v))
                .collect();
            let mut c = Complaint {
                feedback_type,
                original_mail_from: field(g, "original-mail-from").map(|v| address_value(&v)),
                original_rcpt_to,
                ..Default::default()
            };
            // The returned original: a whole message or its headers.
            let original = msg.parts.iter().find_map(|p| match &p.body {
                PartType::Message(m) => Some(m.raw_message().to_vec()),
                _ => p
                    .content_type()
                    .filter(|c| {
                        c.subtype().is_some_and(|s| {
                            s.eq_ignore_ascii_case("rfc822-headers")
                                || s.eq_ignore_ascii_case("rfc822")
                        })
                    })
                    .map(|_| part_bytes(p)),
            });
            if let Some(raw) = original {
                let head = field_groups(&raw);
                if let Some(h) = head.first() {
                    c.return_path = field(h, "return-path").map(|v| address_value(&v));
                    c.original_to = field(h, "to")
                        .map(|v| {
                            v.split(',')
                                .map(address_value)
                                .filter(|a| a.contains('@'))
                                .collect()
                        })
                        .unwrap_or_default();
                }
            }
            Some(Report::Complaint(c))
        }
        _ => None,
    }
}

fn part_bytes(p: &mail_parser::MessagePart<'_>) -> Vec<u8> {
    match &p.body {
        PartType::Message(m) => m.raw_message().to_vec(),
        _ => p.contents().to_vec(),
    }
}

/// Header-style field groups separated by blank lines; names lower-cased, folded lines joined.
fn field_groups(text: &[u8]) -> Vec<Vec<(String, String)>> {
    let text = String::from_utf8_lossy(text);
    let mut groups = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                groups.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((n, v)) = line.split_once(':') {
            current.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

fn field(group: &[(String, String)], name: &str) -> Option<String> {
    group
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// `rfc822; Bob@Example.org` → `Bob@Example.org`; `<a@b>` → `a@b`; `Name <a@b>` → `a@b`.
fn address_value(v: &str) -> String {
    let v = after_type(v);
    let v = match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => &v[a + 1..b],
        _ => v.as_str(),
    };
    v.trim().to_string()
}

/// The value after `type;` (`smtp; 550 ...` → `550 ...`), or the whole value.
fn after_type(v: &str) -> String {
    match v.split_once(';') {
        Some((t, rest)) if !t.contains(['@', '<', ' ']) => rest.trim().to_string(),
        _ => v.trim().to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests;
