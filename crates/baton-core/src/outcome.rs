//! Per-recipient delivery outcomes: classifying remote replies, enhanced status codes and
//! RFC 3461 NOTIFY decisions.

use baton_proto::v1::Recipient;

/// What happened to one recipient in one delivery attempt (or in the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientOutcome {
    /// Accepted by the next hop.
    Delivered {
        /// The remote reply, e.g. `250 2.0.0 Ok: queued as X`.
        reply: String,
    },
    /// Temporarily failed; will be retried.
    Deferred {
        /// The remote reply or a local explanation (`4.4.1 connection refused`).
        reply: String,
    },
    /// Permanently failed; the sender gets a DSN.
    Failed {
        /// The remote reply or a local explanation.
        reply: String,
        /// Enhanced status code for the DSN, e.g. `5.1.1`.
        status: String,
    },
    /// Still deferred when the message reached its maximum age; the sender gets a DSN.
    Expired {
        /// The last reply seen for this recipient.
        last_reply: String,
    },
}

impl RecipientOutcome {
    /// Bounded label for metrics and logs: `delivered`, `deferred`, `failed`, `expired`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            RecipientOutcome::Delivered { .. } => "delivered",
            RecipientOutcome::Deferred { .. } => "deferred",
            RecipientOutcome::Failed { .. } => "failed",
            RecipientOutcome::Expired { .. } => "expired",
        }
    }

    /// The reply text carried by the outcome.
    pub fn reply(&self) -> &str {
        match self {
            RecipientOutcome::Delivered { reply }
            | RecipientOutcome::Deferred { reply }
            | RecipientOutcome::Failed { reply, .. } => reply,
            RecipientOutcome::Expired { last_reply } => last_reply,
        }
    }
}

/// Class of a remote reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeClass {
    /// `2xx`.
    Delivered,
    /// `4xx`, and anything unexpected (a `1xx`/`3xx` or out-of-range code where a final
    /// reply was due): retrying is the safe choice.
    Deferred,
    /// `5xx`, except "too many recipients" (`552 5.5.3`), which RFC 5321 §4.5.3.1.10 says to
    /// treat as temporary.
    Failed,
}

/// Classify a remote reply by its basic code (and the enhanced code or text when the basic
/// code alone is ambiguous).
pub fn classify_reply(code: u16, enhanced: Option<&str>, text: &str) -> OutcomeClass {
    match code {
        200..=299 => OutcomeClass::Delivered,
        500..=599 => {
            let enhanced = enhanced
                .map(str::to_string)
                .unwrap_or_else(|| enhanced_from_reply(code, text));
            let too_many = enhanced == "5.5.3"
                || (code == 552 && text.to_ascii_lowercase().contains("too many recipients"));
            if too_many {
                OutcomeClass::Deferred
            } else {
                OutcomeClass::Failed
            }
        }
        _ => OutcomeClass::Deferred,
    }
}

/// Whether the recipient asked (RFC 3461 NOTIFY) to be told about this outcome. Without
/// NOTIFY the default is FAILURE and DELAY; NEVER means nothing; SUCCESS covers delivery.
/// `Deferred` maps to DELAY, `Failed` and `Expired` to FAILURE. (How often to send DELAY
/// notices is the worker's choice.)
pub fn notify_wanted(recipient: &Recipient, outcome: &RecipientOutcome) -> bool {
    if recipient.notify_never {
        return false;
    }
    let explicit = recipient.notify_success || recipient.notify_failure || recipient.notify_delay;
    let (success, failure, delay) = if explicit {
        (
            recipient.notify_success,
            recipient.notify_failure,
            recipient.notify_delay,
        )
    } else {
        (false, true, true)
    };
    match outcome {
        RecipientOutcome::Delivered { .. } => success,
        RecipientOutcome::Deferred { .. } => delay,
        RecipientOutcome::Failed { .. } | RecipientOutcome::Expired { .. } => failure,
    }
}

/// Whether the sender gets a DSN block about this outcome from us (RFC 3461): what NOTIFY asks
/// for ([`notify_wanted`]), except that a success is not ours to report when the next hop
/// offers DSN (`next_hop_dsn`) — it received the NOTIFY with the recipient and reports (or
/// passes on) success itself (§4.1); reporting it too would send the sender two notices.
/// When the next hop does not offer DSN, the success is reported with `Action: relayed`.
pub fn report_wanted(
    recipient: &Recipient,
    outcome: &RecipientOutcome,
    next_hop_dsn: bool,
) -> bool {
    let handed_over = next_hop_dsn && matches!(outcome, RecipientOutcome::Delivered { .. });
    !handed_over && notify_wanted(recipient, outcome)
}

/// Parse `class.subject.detail` (RFC 3463: class 2/4/5, subject and detail 1–3 digits).
fn parse_enhanced(token: &str) -> Option<&str> {
    let mut parts = token.split('.');
    let (c, s, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    let ok = parts.next().is_none() && matches!(c, "2" | "4" | "5") && digits(s, 3) && digits(d, 3);
    ok.then_some(token)
}

/// The enhanced status code of a reply: the `x.y.z` at the start of `text` (after an optional
/// leading copy of the basic code) when its class matches the code's, else a synthesized
/// `2.0.0`/`4.0.0`/`5.0.0` (`4.0.0` for codes outside 2xx/4xx/5xx).
pub fn enhanced_from_reply(code: u16, text: &str) -> String {
    let class = match code / 100 {
        2 => '2',
        5 => '5',
        _ => '4',
    };
    let code_str = code.to_string();
    let mut rest = text.trim_start();
    if let Some(r) = rest.strip_prefix(code_str.as_str()) {
        rest = r.trim_start_matches([' ', '-']);
    }
    let token = rest.split_whitespace().next().unwrap_or("");
    match parse_enhanced(token) {
        Some(e) if e.starts_with(class) => e.to_string(),
        _ => format!("{class}.0.0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        use OutcomeClass::*;
        assert_eq!(classify_reply(250, None, "ok"), Delivered);
        assert_eq!(classify_reply(251, None, "ok"), Delivered);
        assert_eq!(classify_reply(421, None, "bye"), Deferred);
        assert_eq!(classify_reply(450, Some("4.2.0"), "greylisted"), Deferred);
        assert_eq!(classify_reply(550, Some("5.1.1"), "no such user"), Failed);
        assert_eq!(classify_reply(554, None, "5.7.1 rejected"), Failed);
        assert_eq!(classify_reply(552, Some("5.5.3"), "x"), Deferred);
        assert_eq!(classify_reply(552, None, "Too many recipients"), Deferred);
        assert_eq!(classify_reply(552, None, "5.2.2 mailbox full"), Failed);
        assert_eq!(classify_reply(354, None, "go ahead"), Deferred);
        assert_eq!(classify_reply(0, None, ""), Deferred);
        assert_eq!(classify_reply(999, None, ""), Deferred);
    }

    #[test]
    fn enhanced() {
        assert_eq!(enhanced_from_reply(550, "5.1.1 no such user"), "5.1.1");
        assert_eq!(enhanced_from_reply(550, "550 5.1.1 no such user"), "5.1.1");
        assert_eq!(
            enhanced_from_reply(550, "550-5.7.26 unauthenticated"),
            "5.7.26"
        );
        assert_eq!(enhanced_from_reply(550, "no such user"), "5.0.0");
        assert_eq!(enhanced_from_reply(550, "4.1.1 mismatched class"), "5.0.0");
        assert_eq!(enhanced_from_reply(451, "4.3.0 try later"), "4.3.0");
        assert_eq!(enhanced_from_reply(451, ""), "4.0.0");
        assert_eq!(enhanced_from_reply(250, "2.0.0 ok"), "2.0.0");
        assert_eq!(enhanced_from_reply(250, "ok"), "2.0.0");
        assert_eq!(enhanced_from_reply(354, "go"), "4.0.0");
        assert_eq!(enhanced_from_reply(550, "5.1.1.1 x"), "5.0.0");
        assert_eq!(enhanced_from_reply(550, "5.1234.1 x"), "5.0.0");
        assert_eq!(enhanced_from_reply(550, "5..1 x"), "5.0.0");
    }

    fn rcpt(never: bool, success: bool, failure: bool, delay: bool) -> Recipient {
        Recipient {
            address: "a@b".into(),
            notify_never: never,
            notify_success: success,
            notify_failure: failure,
            notify_delay: delay,
            ..Default::default()
        }
    }

    #[test]
    fn notify() {
        let delivered = RecipientOutcome::Delivered {
            reply: "250 ok".into(),
        };
        let deferred = RecipientOutcome::Deferred {
            reply: "451".into(),
        };
        let failed = RecipientOutcome::Failed {
            reply: "550".into(),
            status: "5.0.0".into(),
        };
        let expired = RecipientOutcome::Expired {
            last_reply: "451".into(),
        };
        let all = [&delivered, &deferred, &failed, &expired];
        let wants = |r: &Recipient| all.map(|o| notify_wanted(r, o));
        assert_eq!(
            wants(&rcpt(false, false, false, false)),
            [false, true, true, true]
        );
        assert_eq!(wants(&rcpt(true, true, true, true)), [false; 4]);
        assert_eq!(
            wants(&rcpt(false, true, false, false)),
            [true, false, false, false]
        );
        assert_eq!(
            wants(&rcpt(false, false, true, false)),
            [false, false, true, true]
        );
        assert_eq!(
            wants(&rcpt(false, false, false, true)),
            [false, true, false, false]
        );
        assert_eq!(wants(&rcpt(false, true, true, true)), [true; 4]);
        assert_eq!(expired.metric_label(), "expired");
        assert_eq!(failed.reply(), "550");
        assert_eq!(expired.reply(), "451");
        assert_eq!(delivered.metric_label(), "delivered");
    }

    /// NOTIFY=SUCCESS (RFC 3461 §4.1): a next hop offering DSN took the NOTIFY over, so no
    /// success notice from us; without DSN there, one (sent as `Action: relayed`). Failures
    /// are ours to report either way.
    #[test]
    fn success_is_reported_only_when_the_next_hop_cannot() {
        let delivered = RecipientOutcome::Delivered {
            reply: "250 ok".into(),
        };
        let failed = RecipientOutcome::Failed {
            reply: "550".into(),
            status: "5.0.0".into(),
        };
        let success = rcpt(false, true, true, false);
        assert!(!report_wanted(&success, &delivered, true));
        assert!(report_wanted(&success, &delivered, false));
        assert!(report_wanted(&success, &failed, true));
        assert!(report_wanted(&success, &failed, false));
        let default = rcpt(false, false, false, false);
        assert!(!report_wanted(&default, &delivered, false));
        assert!(report_wanted(&default, &failed, true));
        let never = rcpt(true, false, false, false);
        assert!(!report_wanted(&never, &failed, false));
    }
}
