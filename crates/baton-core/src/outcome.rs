//! Per-recipient delivery outcomes: one type, [`RecipientOutcome`], that carries what happened
//! (the [`Disposition`]), the typed [`Reply`] that said so (the next hop's, or one of Baton's own
//! from `baton_smtp::catalogue`) and the remote host, from the SMTP client to the DSN, the log
//! line, the metric and the retry envelope; plus RFC 3461 NOTIFY decisions.

use baton_proto::v1::{Recipient, SmtpReply};
pub use baton_smtp::reply::{EnhancedStatus, Reply};

/// What happened to one recipient in one delivery attempt (or in the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Accepted by the next hop.
    Delivered {
        /// The next hop offers DSN and got the recipient's NOTIFY: reporting success is its
        /// duty now (RFC 3461 §4.1), not ours.
        next_hop_dsn: bool,
    },
    /// Temporarily failed; will be retried.
    Deferred,
    /// Permanently failed; the sender gets a DSN.
    Failed,
    /// Still deferred when the message reached its maximum age; the sender gets a DSN.
    Expired,
}

impl Disposition {
    /// How a reply disposes of a recipient: `2xx` delivered; `5xx` failed, except "too many
    /// recipients" (`5.5.3`, or a `552` saying so), which RFC 5321 §4.5.3.1.10 says to treat as
    /// temporary; anything else (`4xx`, or a `1xx`/`3xx` where a final reply was due) deferred,
    /// retrying being the safe choice.
    pub fn of(reply: &Reply, next_hop_dsn: bool) -> Disposition {
        match reply.code {
            200..=299 => Disposition::Delivered { next_hop_dsn },
            500..=599 => {
                let too_many = reply.effective_status() == EnhancedStatus::new(5, 5, 3)
                    || (reply.code == 552
                        && reply
                            .text()
                            .to_ascii_lowercase()
                            .contains("too many recipients"));
                if too_many {
                    Disposition::Deferred
                } else {
                    Disposition::Failed
                }
            }
            _ => Disposition::Deferred,
        }
    }
}

/// One recipient's outcome: what happened, the reply that said so, and who gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// What happened.
    pub disposition: Disposition,
    /// The reply behind it: the next hop's, or Baton's own (a routing failure, a suspended
    /// destination, a client error stated as a reply).
    pub reply: Reply,
    /// The next hop that gave the reply, `host[ip]`; empty for a local decision.
    pub remote: String,
}

impl RecipientOutcome {
    /// The outcome a reply means ([`Disposition::of`]).
    pub fn from_reply(reply: Reply, remote: impl Into<String>, next_hop_dsn: bool) -> Self {
        RecipientOutcome {
            disposition: Disposition::of(&reply, next_hop_dsn),
            reply,
            remote: remote.into(),
        }
    }

    /// A deferral (Baton's own decision or a transient reply).
    pub fn deferred(reply: Reply, remote: impl Into<String>) -> Self {
        RecipientOutcome {
            disposition: Disposition::Deferred,
            reply,
            remote: remote.into(),
        }
    }

    /// A permanent failure.
    pub fn failed(reply: Reply, remote: impl Into<String>) -> Self {
        RecipientOutcome {
            disposition: Disposition::Failed,
            reply,
            remote: remote.into(),
        }
    }

    /// Expiry after `maxAge`, with the last reply and remote recorded for the recipient in the
    /// queue: the typed `last` reply, or — for an envelope queued before it existed — the
    /// one-line `last_reply`; a `451 4.4.7` when nothing was ever tried.
    pub fn expired(recipient: &Recipient) -> Self {
        let reply = match (&recipient.last, recipient.last_reply.as_str()) {
            (Some(last), _) => reply_from_proto(last),
            (None, "") => Reply::with_status(
                451,
                EnhancedStatus::new(4, 4, 7),
                "no delivery attempt was made before the message expired",
            ),
            (None, line) => Reply::from_line(line),
        };
        RecipientOutcome {
            disposition: Disposition::Expired,
            reply,
            remote: recipient.last_remote.clone(),
        }
    }

    /// Record this (deferred) outcome on the recipient it belongs to, for the next attempt and
    /// a later DSN: the typed reply, its one-line form for older readers, and the remote host.
    pub fn record_on(&self, recipient: &mut Recipient) {
        recipient.last = Some(reply_to_proto(&self.reply));
        recipient.last_reply = self.reply.to_string();
        recipient.last_remote = self.remote.clone();
    }

    /// The same outcome, expired (a deferral when the message reached its maximum age).
    pub fn into_expired(self) -> Self {
        RecipientOutcome {
            disposition: Disposition::Expired,
            ..self
        }
    }

    /// Bounded label for metrics: `delivered`, `deferred`, `bounced`, `expired`.
    pub fn metric_label(&self) -> &'static str {
        match self.disposition {
            Disposition::Delivered { .. } => "delivered",
            Disposition::Deferred => "deferred",
            Disposition::Failed => "bounced",
            Disposition::Expired => "expired",
        }
    }

    /// The log line's `status=`: `sent`, `deferred`, `bounced`, `expired` (Postfix's words).
    pub fn log_status(&self) -> &'static str {
        match self.disposition {
            Disposition::Delivered { .. } => "sent",
            Disposition::Deferred => "deferred",
            Disposition::Failed => "bounced",
            Disposition::Expired => "expired",
        }
    }

    /// The RFC 3463 status a DSN reports: `5.4.7` for an expired recipient (delivery time
    /// expired), otherwise the reply's own status ([`Reply::effective_status`]).
    pub fn status(&self) -> EnhancedStatus {
        match self.disposition {
            Disposition::Expired => EnhancedStatus::new(5, 4, 7),
            _ => self.reply.effective_status(),
        }
    }

    /// Whether the recipient was delivered.
    pub fn is_delivered(&self) -> bool {
        matches!(self.disposition, Disposition::Delivered { .. })
    }

    /// Whether the recipient stays queued for another attempt.
    pub fn is_deferred(&self) -> bool {
        self.disposition == Disposition::Deferred
    }

    /// Whether the next hop took over DSN duty for this (delivered) recipient.
    pub fn next_hop_dsn(&self) -> bool {
        self.disposition == Disposition::Delivered { next_hop_dsn: true }
    }
}

/// The queue's form of a reply.
pub fn reply_to_proto(reply: &Reply) -> SmtpReply {
    let (class, subject, detail) = reply.status.map_or((0, 0, 0), |s| {
        (
            u32::from(s.class),
            u32::from(s.subject),
            u32::from(s.detail),
        )
    });
    SmtpReply {
        code: u32::from(reply.code),
        status_class: class,
        status_subject: subject,
        status_detail: detail,
        lines: reply.lines.clone(),
    }
}

/// A reply from the queue's form. Out-of-range values (only a corrupt or foreign envelope has
/// them) become a `451` without status / no status, never a panic.
pub fn reply_from_proto(r: &SmtpReply) -> Reply {
    let code = u16::try_from(r.code)
        .ok()
        .filter(|c| (200..600).contains(c))
        .unwrap_or(451);
    let status = u8::try_from(r.status_class)
        .ok()
        .filter(|c| matches!(c, 2 | 4 | 5))
        .zip(u16::try_from(r.status_subject).ok().filter(|v| *v <= 999))
        .zip(u16::try_from(r.status_detail).ok().filter(|v| *v <= 999))
        .map(|((c, s), d)| EnhancedStatus::new(c, s, d));
    Reply {
        code,
        status,
        lines: r.lines.clone(),
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
    match outcome.disposition {
        Disposition::Delivered { .. } => success,
        Disposition::Deferred => delay,
        Disposition::Failed | Disposition::Expired => failure,
    }
}

/// Whether the sender gets a DSN block about this outcome from us (RFC 3461): what NOTIFY asks
/// for ([`notify_wanted`]), except that a success is not ours to report when the next hop
/// offers DSN ([`RecipientOutcome::next_hop_dsn`]) — it received the NOTIFY with the recipient and reports (or
/// passes on) success itself (§4.1); reporting it too would send the sender two notices.
/// When the next hop does not offer DSN, the success is reported with `Action: relayed`.
pub fn report_wanted(recipient: &Recipient, outcome: &RecipientOutcome) -> bool {
    !outcome.next_hop_dsn() && notify_wanted(recipient, outcome)
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

/// The enhanced status code of a reply known only as text (a line of a delivery report that
/// came back, an operator's bounce-rule test): the `x.y.z` at the start of `text` (after an optional
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
        use Disposition::*;
        let of = |code, status, text| Disposition::of(&Reply::new(code, status, text), false);
        assert_eq!(
            of(250, "", "ok"),
            Delivered {
                next_hop_dsn: false
            }
        );
        assert_eq!(
            Disposition::of(&Reply::new(251, "", "ok"), true),
            Delivered { next_hop_dsn: true }
        );
        assert_eq!(of(421, "", "bye"), Deferred);
        assert_eq!(of(450, "4.2.0", "greylisted"), Deferred);
        assert_eq!(of(550, "5.1.1", "no such user"), Failed);
        assert_eq!(of(552, "5.5.3", "x"), Deferred);
        assert_eq!(of(552, "", "Too many recipients"), Deferred);
        assert_eq!(of(552, "5.2.2", "mailbox full"), Failed);
        assert_eq!(of(354, "", "go ahead"), Deferred);
        assert_eq!(of(0, "", ""), Deferred);
        assert_eq!(of(999, "", ""), Deferred);
    }

    /// The DSN status comes from the typed reply: a refusal's own status, 5.4.7 for expiry,
    /// the generic status of the class when the reply had none.
    #[test]
    fn status_from_the_typed_reply() {
        let failed = RecipientOutcome::from_reply(Reply::new(554, "5.7.1", "no"), "mx[1]", false);
        assert_eq!(failed.disposition, Disposition::Failed);
        assert_eq!(failed.status().to_string(), "5.7.1");
        assert_eq!(
            (failed.metric_label(), failed.log_status()),
            ("bounced", "bounced")
        );
        let bare = RecipientOutcome::failed(Reply::new(550, "", "no"), "");
        assert_eq!(bare.status().to_string(), "5.0.0");
        // An envelope queued before the typed reply existed: the one-line form is read.
        let old = Recipient {
            last_reply: "451 4.4.1 timeout".into(),
            last_remote: "mx[1]".into(),
            ..Default::default()
        };
        let expired = RecipientOutcome::expired(&old);
        assert_eq!(expired.status().to_string(), "5.4.7");
        assert_eq!(expired.reply, Reply::new(451, "4.4.1", "timeout"));
        assert_eq!(expired.remote, "mx[1]");
        let never = RecipientOutcome::expired(&Recipient::default());
        assert_eq!(never.reply.effective_status().to_string(), "4.4.7");
        // Recorded and read back typed, multi-line replies included.
        let deferred = RecipientOutcome::deferred(
            Reply::multiline(452, "4.2.2", vec!["mailbox".into(), "full".into()]),
            "mx[2]",
        );
        let mut r = Recipient::default();
        deferred.record_on(&mut r);
        assert_eq!(r.last_reply, "452 4.2.2 mailbox full");
        let back = RecipientOutcome::expired(&r);
        assert_eq!(back.reply, deferred.reply);
        assert_eq!(back.remote, "mx[2]");
        // Garbage in the queue's form does not panic.
        let odd = reply_from_proto(&SmtpReply {
            code: 70_000,
            status_class: 9,
            ..Default::default()
        });
        assert_eq!((odd.code, odd.status), (451, None));
        let deferred = RecipientOutcome::deferred(Reply::new(451, "4.3.0", "x"), "");
        assert!(deferred.is_deferred());
        assert_eq!(
            deferred.clone().into_expired().disposition,
            Disposition::Expired
        );
        let sent = RecipientOutcome::from_reply(Reply::new(250, "", "ok"), "", true);
        assert!(sent.is_delivered() && sent.next_hop_dsn());
        assert_eq!(
            (sent.log_status(), sent.metric_label()),
            ("sent", "delivered")
        );
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
        let delivered = RecipientOutcome::from_reply(Reply::new(250, "", "ok"), "", false);
        let deferred = RecipientOutcome::deferred(Reply::new(451, "", ""), "");
        let failed = RecipientOutcome::failed(Reply::new(550, "", ""), "");
        let expired = RecipientOutcome::expired(&Recipient {
            last_reply: "451".into(),
            ..Default::default()
        });
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
        assert_eq!(failed.reply.to_string(), "550");
        assert_eq!(expired.reply.to_string(), "451");
        assert_eq!(delivered.metric_label(), "delivered");
    }

    /// NOTIFY=SUCCESS (RFC 3461 §4.1): a next hop offering DSN took the NOTIFY over, so no
    /// success notice from us; without DSN there, one (sent as `Action: relayed`). Failures
    /// are ours to report either way.
    #[test]
    fn success_is_reported_only_when_the_next_hop_cannot() {
        let ok = || Reply::new(250, "", "ok");
        let handed_over = RecipientOutcome::from_reply(ok(), "", true);
        let relayed = RecipientOutcome::from_reply(ok(), "", false);
        let failed = RecipientOutcome::failed(Reply::new(550, "", ""), "");
        let success = rcpt(false, true, true, false);
        assert!(!report_wanted(&success, &handed_over));
        assert!(report_wanted(&success, &relayed));
        assert!(report_wanted(&success, &failed));
        let default = rcpt(false, false, false, false);
        assert!(!report_wanted(&default, &relayed));
        assert!(report_wanted(&default, &failed));
        let never = rcpt(true, false, false, false);
        assert!(!report_wanted(&never, &failed));
    }
}
