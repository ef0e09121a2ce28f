//! One delivery attempt for a group of recipients sharing a destination (the caller holds one
//! of its slots, see `slots`): reuse or open a connection (target by target until one
//! answers), send, and turn every reply into a per-recipient outcome. Connections are kept for reuse (RSET between
//! messages) up to the pool's messages-per-connection cap and an idle timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton_core::outcome::RecipientOutcome;
use baton_smtp::catalogue;
use baton_smtp_client::{ClientConfig, ClientError, Connection, OutgoingMessage, SendResult};

use parking_lot::Mutex;

use crate::route::Target;

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
    pub attempts: Vec<RecipientOutcome>,
    /// Targets that failed at connection level (for health/suspension), and the one that answered.
    pub failed_targets: Vec<Target>,
    /// Target that carried the transaction, if any.
    pub used: Option<Target>,
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
    // The reply recorded when no target answers: the last connection error, stated as a reply
    // with the host that gave it.
    let mut last_error: Option<(ClientError, String)> = None;
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
                        last_error = Some((e, remote_of(t)));
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
                    last_error = Some((e, remote_of(t)));
                    failed_targets.push(t.clone());
                    continue;
                }
            },
        };
        let sent = conn.send(msg).await;
        let remote = remote_of(t);
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
                return GroupResult {
                    attempts: vec![RecipientOutcome::deferred(e.to_reply(), remote); n],
                    failed_targets,
                    used: Some(t.clone()),
                };
            }
        }
    }
    let none_answered = match last_error {
        Some((e, remote)) => RecipientOutcome::deferred(e.to_reply(), remote),
        None => RecipientOutcome::deferred(catalogue::no_delivery_target(), ""),
    };
    GroupResult {
        attempts: vec![none_answered; n],
        failed_targets,
        used: None,
    }
}

/// `host[ip]`, the form of a next hop in logs and DSNs (`Remote-MTA`).
fn remote_of(t: &Target) -> String {
    format!("{}[{}]", t.host, t.addr.ip())
}

fn permanent_for_all(n: usize, e: &ClientError, t: &Target, failed: Vec<Target>) -> GroupResult {
    // The reply comes from the typed error: "message of N octets exceeds..." states itself as
    // `552 5.3.4`, a `554 5.7.1` greeting keeps its `5.7.1`.
    GroupResult {
        attempts: vec![RecipientOutcome::failed(e.to_reply(), remote_of(t)); n],
        failed_targets: failed,
        used: Some(t.clone()),
    }
}

/// Per-recipient outcome from the replies of one transaction.
fn map_result(res: &SendResult, n: usize, remote: &str) -> Vec<RecipientOutcome> {
    let outcome =
        |r: &baton_smtp_client::Reply| RecipientOutcome::from_reply(r.clone(), remote, res.dsn);
    if !res.mail_reply.is_positive() {
        return vec![outcome(&res.mail_reply); n];
    }
    (0..n)
        .map(|i| match res.rcpt_replies.get(i) {
            Some(r) if !r.is_positive() => outcome(r),
            Some(_) => match &res.data_reply {
                Some(d) => outcome(d),
                None => RecipientOutcome::deferred(catalogue::no_reply("DATA"), remote),
            },
            None => RecipientOutcome::deferred(catalogue::no_reply("RCPT"), remote),
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
            .map(|o| {
                assert_eq!(o.disposition, baton_core::outcome::Disposition::Failed);
                assert_eq!(o.remote, "mx.dest.test[192.0.2.1]");
                o.status().to_string()
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
        let greeting = ClientError::Greeting(Reply::new(554, "5.7.1", "blocked"));
        assert_eq!(failed_status(&greeting), ["5.7.1", "5.7.1"]);
        assert_eq!(
            failed_status(&ClientError::Smtputf8NotSupported),
            ["5.6.7", "5.6.7"]
        );
    }
}
