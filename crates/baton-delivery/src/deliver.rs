//! One delivery attempt for a group of recipients sharing a destination (the caller holds one
//! of its slots, see `slots`): reuse or open a connection (target by target until one
//! answers), send, and turn every reply into a per-recipient outcome. Connections are kept for reuse (RSET between
//! messages) up to the pool's messages-per-connection cap and an idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton_core::outcome::{OutcomeClass, RecipientOutcome, classify_reply};
use baton_smtp_client::{
    ClientConfig, ClientError, Connection, OutgoingMessage, Reply, SendResult,
};

use parking_lot::Mutex;

use crate::route::Target;

/// Final per-recipient result of this pass.
#[derive(Clone, Debug)]
pub(crate) enum Fate {
    Delivered {
        reply: String,
        remote: String,
        /// The next hop offers DSN and got the recipient's NOTIFY: reporting success is its
        /// duty now (RFC 3461 §4.1), not ours.
        next_hop_dsn: bool,
    },
    Deferred {
        reply: String,
        remote: String,
    },
    Failed {
        reply: String,
        status: String,
        remote: String,
    },
    /// Past `maxAge`: `reply`/`remote` are the last ones seen for the recipient.
    Expired {
        reply: String,
        remote: String,
    },
}

impl Fate {
    /// The bounce class of a recipient that was not delivered (`None` when it was).
    pub(crate) fn class(
        &self,
        classifier: &baton_core::bounce::Classifier,
    ) -> Option<baton_core::bounce::BounceClass> {
        match self {
            Fate::Delivered { .. } => None,
            Fate::Deferred { reply, .. }
            | Fate::Failed { reply, .. }
            | Fate::Expired { reply, .. } => Some(classifier.classify_line(reply)),
        }
    }

    /// Whether the next hop took over DSN duty for this (delivered) recipient.
    pub(crate) fn next_hop_dsn(&self) -> bool {
        matches!(
            self,
            Fate::Delivered {
                next_hop_dsn: true,
                ..
            }
        )
    }

    /// The core outcome (without the remote host) for DSN decisions.
    pub(crate) fn outcome(&self) -> RecipientOutcome {
        match self.clone() {
            Fate::Delivered { reply, .. } => RecipientOutcome::Delivered { reply },
            Fate::Deferred { reply, .. } => RecipientOutcome::Deferred { reply },
            Fate::Failed { reply, status, .. } => RecipientOutcome::Failed { reply, status },
            Fate::Expired { reply, .. } => RecipientOutcome::Expired { last_reply: reply },
        }
    }
}

type Key = (SocketAddr, String, String);

/// Idle connections of one worker, kept for reuse.
pub struct Connections {
    idle: Mutex<HashMap<Key, Vec<(Connection, Instant)>>>,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

impl Connections {
    /// An empty cache.
    pub fn new(idle_timeout: Duration) -> Self {
        Connections {
            idle: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    fn take_idle(&self, key: &Key) -> Option<Connection> {
        let mut m = self.idle.lock();
        let list = m.get_mut(key)?;
        while let Some((c, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, key: Key, c: Connection) {
        self.idle
            .lock()
            .entry(key)
            .or_default()
            .push((c, Instant::now()));
    }

    /// Drop connections idle for longer than the idle timeout (called periodically).
    pub fn reap(&self) {
        let timeout = self.idle_timeout;
        let mut m = self.idle.lock();
        for list in m.values_mut() {
            list.retain(|(_, since)| since.elapsed() < timeout);
        }
        m.retain(|_, l| !l.is_empty());
    }
}

/// Result of trying a list of targets.
pub(crate) struct GroupResult {
    /// Per recipient, in input order.
    pub attempts: Vec<Fate>,
    /// Targets that failed at connection level (for health/suspension), and the one that answered.
    pub failed_targets: Vec<Target>,
    /// Target that carried the transaction, if any.
    pub used: Option<Target>,
}

fn reply_text(r: &Reply) -> String {
    r.to_string()
}

/// Try `targets` in order until one carries the transaction.
pub(crate) async fn deliver_group(
    conns: &Connections,
    targets: &[Target],
    base: &ClientConfig,
    max_per_conn: u32,
    msg: &OutgoingMessage<'_>,
) -> GroupResult {
    let n = msg.recipients.len();
    let mut failed_targets = Vec::new();
    let mut last_error = String::from("no delivery target");
    for t in targets {
        let key: Key = (
            t.addr,
            base.ehlo_name.clone(),
            base.source_address
                .map(|a| a.to_string())
                .unwrap_or_default(),
        );
        let mut cfg = base.clone();
        cfg.tls = t.tls;
        cfg.auth = t.auth.clone();
        let reused = conns.take_idle(&key);
        let mut conn = match reused {
            Some(mut c) => match c.reset().await {
                Ok(()) => c,
                Err(_) => match Connection::connect(t.addr, &t.host, &cfg).await {
                    Ok(c) => c,
                    Err(e) => {
                        last_error = e.to_string();
                        failed_targets.push(t.clone());
                        continue;
                    }
                },
            },
            None => match Connection::connect(t.addr, &t.host, &cfg).await {
                Ok(c) => c,
                Err(e) if e.is_permanent() => {
                    return permanent_for_all(n, &e, t, failed_targets);
                }
                Err(e) => {
                    last_error = format!("{}: {e}", t.host);
                    failed_targets.push(t.clone());
                    continue;
                }
            },
        };
        let sent = conn.send(msg).await;
        let remote = format!("{}[{}]", t.host, t.addr.ip());
        match sent {
            Ok(result) => {
                let attempts = map_result(&result, n, &remote);
                if conn.messages_sent() < max_per_conn.max(1) {
                    conns.put_idle(key, conn);
                } else {
                    conn.quit().await;
                }
                return GroupResult {
                    attempts,
                    failed_targets,
                    used: Some(t.clone()),
                };
            }
            Err(e) if e.is_permanent() => {
                return permanent_for_all(n, &e, t, failed_targets);
            }
            Err(e) => {
                // Trouble mid-transaction: the message may or may not have been taken; defer
                // rather than try the next host in the same attempt (RFC 5321 §4.5.4.1 allows
                // either; deferring keeps duplicate risk to one per retry).
                let reply = format!("{}: {e}", t.host);
                return GroupResult {
                    attempts: vec![
                        Fate::Deferred {
                            reply,
                            remote: remote.clone()
                        };
                        n
                    ],
                    failed_targets,
                    used: Some(t.clone()),
                };
            }
        }
    }
    GroupResult {
        attempts: vec![
            Fate::Deferred {
                reply: last_error,
                remote: String::new()
            };
            n
        ],
        failed_targets,
        used: None,
    }
}

fn permanent_for_all(n: usize, e: &ClientError, t: &Target, failed: Vec<Target>) -> GroupResult {
    // The status comes from the typed error, not from its text: "message of N octets
    // exceeds..." has no status to find (it used to be reported as 5.0.0, not 5.3.4).
    let text = e.to_string();
    let status = e.enhanced_status();
    GroupResult {
        attempts: vec![
            Fate::Failed {
                reply: text,
                status,
                remote: format!("{}[{}]", t.host, t.addr.ip()),
            };
            n
        ],
        failed_targets: failed,
        used: Some(t.clone()),
    }
}

fn classify(r: &Reply, remote: &str, next_hop_dsn: bool) -> Fate {
    let text = reply_text(r);
    match classify_reply(r.code, r.enhanced.as_deref(), &text) {
        OutcomeClass::Delivered => Fate::Delivered {
            reply: text,
            remote: remote.to_string(),
            next_hop_dsn,
        },
        OutcomeClass::Deferred => Fate::Deferred {
            reply: text,
            remote: remote.to_string(),
        },
        OutcomeClass::Failed => Fate::Failed {
            status: r
                .enhanced
                .clone()
                .unwrap_or_else(|| baton_core::outcome::enhanced_from_reply(r.code, &text)),
            reply: text,
            remote: remote.to_string(),
        },
    }
}

/// Per-recipient outcome from the replies of one transaction.
fn map_result(res: &SendResult, n: usize, remote: &str) -> Vec<Fate> {
    if !res.mail_reply.is_positive() {
        return vec![classify(&res.mail_reply, remote, res.dsn); n];
    }
    (0..n)
        .map(|i| match res.rcpt_replies.get(i) {
            Some(r) if !r.is_positive() => classify(r, remote, res.dsn),
            Some(_) => match &res.data_reply {
                Some(d) => classify(d, remote, res.dsn),
                None => Fate::Deferred {
                    reply: "no reply to DATA".into(),
                    remote: remote.to_string(),
                },
            },
            None => Fate::Deferred {
                reply: "no reply to RCPT".into(),
                remote: remote.to_string(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_smtp_client::{Reply, TlsMode};

    fn target() -> Target {
        Target {
            host: "mx.dest.test".into(),
            addr: SocketAddr::from(([192, 0, 2, 1], 25)),
            tls: TlsMode::Opportunistic,
            auth: None,
            upstream: None,
        }
    }

    fn failed_status(e: &ClientError) -> Vec<String> {
        permanent_for_all(2, e, &target(), Vec::new())
            .attempts
            .into_iter()
            .map(|f| match f {
                Fate::Failed { status, .. } => status,
                other => panic!("not failed: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn permanent_errors_report_their_own_status_to_every_recipient() {
        let too_large = ClientError::MessageTooLarge {
            size: 2_000_000,
            limit: 1_000_000,
        };
        assert_eq!(failed_status(&too_large), ["5.3.4", "5.3.4"]);
        let greeting = ClientError::Greeting(Reply::new(554, Some("5.7.1"), "blocked"));
        assert_eq!(failed_status(&greeting), ["5.7.1", "5.7.1"]);
        assert_eq!(
            failed_status(&ClientError::Smtputf8NotSupported),
            ["5.6.7", "5.6.7"]
        );
    }
}
