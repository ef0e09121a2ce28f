//! Bounce classification: which kind of failure a reply is (invalid recipient, mailbox full,
//! policy or reputation block, TLS/authentication required, DNS failure, transient, message too
//! large, other), from its basic code, enhanced status code (RFC 3463) and text.
//!
//! The rules are data: `bounce/rules.yaml` ships with Baton (provider-specific texts for Gmail,
//! Microsoft, Yahoo/AOL and iCloud first, because their enhanced codes are often generic or
//! misused, then generic texts, then the RFC 3463 / RFC 7372 table, then the basic code), and an
//! operator's own rules are tried before them ([`Classifier::with_rules`]). The first rule whose
//! every condition matches wins. The class is a bounded label: it goes into logs, metrics and
//! DSNs, and decides which failures put a recipient on the suppression list.

use std::fmt;
use std::str::FromStr;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::outcome::enhanced_from_reply;

/// The kind of a failed or deferred delivery. The string forms are metric labels and DSN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BounceClass {
    /// The mailbox or domain does not exist (or no longer accepts mail).
    InvalidRecipient,
    /// The mailbox exists but is over quota.
    MailboxFull,
    /// Refused for content or local policy (spam, policy rules, relaying).
    Policy,
    /// Refused because of the sending IP's or domain's reputation (blocklists, rate of complaints).
    Reputation,
    /// The receiver requires TLS or sender authentication (SPF, DKIM, DMARC) that failed.
    TlsAuthRequired,
    /// The destination could not be resolved or routed.
    DnsFailure,
    /// A temporary condition: greylisting, busy server, connection failures.
    Transient,
    /// The message is larger than the receiver accepts.
    MessageTooLarge,
    /// Nothing more specific is known.
    Other,
}

impl BounceClass {
    /// Every class, in a fixed order (for metric initialisation and documentation).
    pub const ALL: [BounceClass; 9] = [
        BounceClass::InvalidRecipient,
        BounceClass::MailboxFull,
        BounceClass::Policy,
        BounceClass::Reputation,
        BounceClass::TlsAuthRequired,
        BounceClass::DnsFailure,
        BounceClass::Transient,
        BounceClass::MessageTooLarge,
        BounceClass::Other,
    ];

    /// The bounded label: `invalid_recipient`, `mailbox_full`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            BounceClass::InvalidRecipient => "invalid_recipient",
            BounceClass::MailboxFull => "mailbox_full",
            BounceClass::Policy => "policy",
            BounceClass::Reputation => "reputation",
            BounceClass::TlsAuthRequired => "tls_auth_required",
            BounceClass::DnsFailure => "dns_failure",
            BounceClass::Transient => "transient",
            BounceClass::MessageTooLarge => "message_too_large",
            BounceClass::Other => "other",
        }
    }
}

impl fmt::Display for BounceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BounceClass {
    type Err = BounceRuleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BounceClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| BounceRuleError::UnknownClass(s.to_string()))
    }
}

/// A rule file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BounceRuleError {
    /// Not YAML of the expected shape.
    #[error("bounce rules are not valid: {0}")]
    Syntax(#[from] serde_yaml::Error),
    /// A rule's `text` is not a valid regular expression.
    #[error("bounce rule {index}: text is not a valid regular expression: {source}")]
    Regex {
        /// Position of the rule in its file (0-based).
        index: usize,
        /// What the regex parser said.
        #[source]
        source: regex::Error,
    },
    /// A rule's `codes` entry is neither a reply code (`550`) nor a code class (`5xx`).
    #[error("bounce rule {index}: code {code:?} is neither a reply code (550) nor a class (5xx)")]
    Code {
        /// Position of the rule in its file (0-based).
        index: usize,
        /// The entry as written.
        code: String,
    },
    /// A rule with no condition would match everything.
    #[error("bounce rule {0}: has no condition (codes, status or text)")]
    Empty(usize),
    /// A class name that is not one of [`BounceClass::ALL`].
    #[error("unknown bounce class {0:?}")]
    UnknownClass(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    class: BounceClass,
    #[serde(default)]
    codes: Vec<serde_yaml::Value>,
    #[serde(default)]
    status: Vec<String>,
    text: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeMatch {
    Exact(u16),
    Class(u16),
}

#[derive(Debug, Clone)]
struct Rule {
    class: BounceClass,
    codes: Vec<CodeMatch>,
    status: Vec<String>,
    text: Option<Regex>,
}

impl Rule {
    fn matches(&self, code: u16, status: &str, text: &str) -> bool {
        let code_ok = self.codes.is_empty()
            || self.codes.iter().any(|c| match *c {
                CodeMatch::Exact(x) => x == code,
                CodeMatch::Class(x) => code / 100 == x,
            });
        let status_ok = self.status.is_empty()
            || self.status.iter().any(|s| {
                status == s
                    || (s.matches('.').count() == 1
                        && status.starts_with(s.as_str())
                        && status.as_bytes().get(s.len()) == Some(&b'.'))
            });
        let text_ok = self.text.as_ref().is_none_or(|r| r.is_match(text));
        code_ok && status_ok && text_ok
    }
}

/// The shipped rule file.
pub const SHIPPED_RULES: &str = include_str!("bounce/rules.yaml");

/// Parse a rule file (the format of `bounce/rules.yaml`).
fn parse_rules(yaml: &str) -> Result<Vec<Rule>, BounceRuleError> {
    let file: RuleFile = serde_yaml::from_str(yaml)?;
    file.rules
        .into_iter()
        .enumerate()
        .map(|(index, raw)| {
            if raw.codes.is_empty() && raw.status.is_empty() && raw.text.is_none() {
                return Err(BounceRuleError::Empty(index));
            }
            let codes = raw
                .codes
                .iter()
                .map(|v| {
                    parse_code(v).ok_or_else(|| BounceRuleError::Code {
                        index,
                        code: yaml_text(v),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let text = raw
                .text
                .map(|t| {
                    RegexBuilder::new(&t)
                        .case_insensitive(true)
                        .size_limit(1 << 20)
                        .build()
                        .map_err(|source| BounceRuleError::Regex { index, source })
                })
                .transpose()?;
            Ok(Rule {
                class: raw.class,
                codes,
                status: raw.status,
                text,
            })
        })
        .collect()
}

fn yaml_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

fn parse_code(v: &serde_yaml::Value) -> Option<CodeMatch> {
    let s = yaml_text(v);
    let s = s.trim();
    if let Some(class) = s.strip_suffix("xx") {
        let c: u16 = class.parse().ok()?;
        return (2..=5).contains(&c).then_some(CodeMatch::Class(c));
    }
    let c: u16 = s.parse().ok()?;
    (200..=599).contains(&c).then_some(CodeMatch::Exact(c))
}

/// Classifies replies with the operator's rules (if any) first, then the shipped ones.
#[derive(Debug, Clone)]
pub struct Classifier {
    rules: Vec<Rule>,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::shipped()
    }
}

impl Classifier {
    /// The shipped rules only.
    pub fn shipped() -> Classifier {
        // The shipped file is tested to parse (`shipped_rules_parse`); should it ever not, the
        // built-in fallbacks below still classify by code.
        Classifier {
            rules: parse_rules(SHIPPED_RULES).unwrap_or_default(),
        }
    }

    /// The operator's rules (a YAML document in the shipped format), tried before the shipped
    /// ones.
    pub fn with_rules(operator_yaml: &str) -> Result<Classifier, BounceRuleError> {
        let mut rules = parse_rules(operator_yaml)?;
        rules.extend(parse_rules(SHIPPED_RULES)?);
        Ok(Classifier { rules })
    }

    /// Classify a reply given as its parts. `status` may be empty (then it is read from the
    /// start of `text`, or synthesised from the code).
    pub fn classify(&self, code: u16, status: &str, text: &str) -> BounceClass {
        let status = if status.is_empty() {
            enhanced_from_reply(code, text)
        } else {
            status.to_string()
        };
        // The text proper: without a leading copy of the enhanced status.
        let trimmed = text.trim_start();
        let text = trimmed
            .split_once(char::is_whitespace)
            .filter(|(first, _)| *first == status)
            .map(|(_, rest)| rest.trim_start())
            .unwrap_or(if trimmed == status { "" } else { trimmed });
        self.rules
            .iter()
            .find(|r| r.matches(code, &status, text))
            .map(|r| r.class)
            .unwrap_or(match code / 100 {
                4 => BounceClass::Transient,
                _ => BounceClass::Other,
            })
    }

    /// Classify a typed reply (an outcome's): its code, its effective status and its text.
    pub fn classify_reply(&self, reply: &baton_smtp::Reply) -> BounceClass {
        self.classify(
            reply.code,
            &reply.effective_status().to_string(),
            &reply.text(),
        )
    }

    /// Classify a whole reply line as the worker records it (`550 5.1.1 <a@b>: no such user`;
    /// a multi-line reply may be joined with spaces or newlines). A line that does not start
    /// with a code is treated as a local temporary failure when it carries a 4.x.x status and
    /// as `other` otherwise.
    pub fn classify_line(&self, line: &str) -> BounceClass {
        let line = line.trim_start();
        let code = line
            .get(..3)
            .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(code) => {
                let text = line[3..].trim_start_matches([' ', '-']);
                self.classify(code, "", text)
            }
            None => {
                let code = if line.starts_with("4.") { 451 } else { 550 };
                self.classify(code, "", line)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests;
