//! One delivery attempt for a group of recipients sharing a destination (the caller holds one
//! of its slots, see `slots`): reuse or open a connection (target by target until one
//! answers), send, and turn every reply into a per-recipient outcome. Connections are kept for
//! reuse up to the pool's messages-per-connection cap and an idle timeout; a reused one opens
//! its next transaction with RSET pipelined with the envelope, and if that RSET fails (the
//! server closed the idle connection) the message goes over a new connection within the same
//! attempt. A connection to a site with a pool-wide connection cap keeps its lease while it is
//! idle ([`Capped`]): the next delivery to that site takes the connection and its lease
//! together, and the lease is released when the connection is closed, reaped or dropped, so
//! open connections — busy or idle — never hold more than their leases. Connecting goes
//! through the [`Connector`] seam ([`SmtpConnector`] in a worker), so the unit tests below
//! drive every branch with scripted connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use baton_core::outcome::RecipientOutcome;
use baton_smtp::catalogue;
use baton_smtp_client::{ClientConfig, ClientError, Connection, OutgoingMessage, SendResult};
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::route::Target;

/// An idle connection is reused only for the same address, host name (the name its
/// certificate was checked against), EHLO name and source address.
pub(crate) type Key = (SocketAddr, String, String, String);

/// An open SMTP session as delivery uses it ([`Connection`] in a worker).
pub trait SmtpSession: Send + Sized + 'static {
    /// The session was idle and is used again: its next transaction opens with RSET (pipelined
    /// when the server allows), failing with [`ClientError::StaleConnection`] if it is gone.
    fn mark_reused(&mut self);
    /// One transaction.
    fn send<'a>(
        &'a mut self,
        msg: &'a OutgoingMessage<'a>,
    ) -> BoxFuture<'a, Result<SendResult, ClientError>>;
    /// QUIT and close.
    fn quit(self) -> BoxFuture<'static, ()>;
    /// Messages sent over this session so far.
    fn messages_sent(&self) -> u32;
}

/// Opens SMTP sessions ([`SmtpConnector`] in a worker).
pub trait Connector: Send + Sync {
    /// The session type.
    type Session: SmtpSession;
    /// Connect, greet, EHLO, STARTTLS and AUTH as `cfg` says.
    fn connect<'a>(
        &'a self,
        addr: SocketAddr,
        host: &'a str,
        cfg: &'a ClientConfig,
    ) -> BoxFuture<'a, Result<Self::Session, ClientError>>;
}

/// The real connector: `baton_smtp_client::Connection`.
pub struct SmtpConnector;

impl Connector for SmtpConnector {
    type Session = Connection;

    fn connect<'a>(
        &'a self,
        addr: SocketAddr,
        host: &'a str,
        cfg: &'a ClientConfig,
    ) -> BoxFuture<'a, Result<Connection, ClientError>> {
        Box::pin(Connection::connect(addr, host, cfg))
    }
}

impl SmtpSession for Connection {
    fn mark_reused(&mut self) {
        Connection::mark_reused(self);
    }

    fn send<'a>(
        &'a mut self,
        msg: &'a OutgoingMessage<'a>,
    ) -> BoxFuture<'a, Result<SendResult, ClientError>> {
        Box::pin(Connection::send(self, msg))
    }

    fn quit(self) -> BoxFuture<'static, ()> {
        Box::pin(Connection::quit(self))
    }

    fn messages_sent(&self) -> u32 {
        Connection::messages_sent(self)
    }
}

/// Idle sessions of one worker, kept for reuse: those of uncapped destinations by [`Key`],
/// those holding a pool-wide connection lease `L` by the lease's scope (a site, or an
/// override's pattern), so any delivery counted against that scope can take them.
pub struct Connections<S = Connection, L = ()> {
    idle: Mutex<HashMap<Key, Vec<(S, Instant)>>>,
    leased: Mutex<HashMap<String, Vec<LeasedIdle<S, L>>>>,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// An idle connection kept with its pool-wide lease (released when this is dropped).
pub(crate) struct LeasedIdle<S, L> {
    /// The lease's scope.
    pub(crate) scope: String,
    pub(crate) key: Key,
    pub(crate) conn: S,
    pub(crate) lease: L,
    since: Instant,
}

/// The pool-wide connection lease a delivery to a capped site holds: a fresh one, or the one
/// of an idle connection it took from the cache. `deliver_group` keeps it with the connection
/// when the connection is kept idle; otherwise it is released when dropped.
pub(crate) enum Capped<S, L> {
    /// A lease taken for this delivery.
    Fresh {
        /// The lease's scope.
        scope: String,
        /// The lease.
        lease: L,
    },
    /// An idle connection of the scope with its lease: used if it goes to one of the
    /// targets with the chosen identity, else closed (the lease serves a new connection).
    Idle(Box<LeasedIdle<S, L>>),
}

impl<S, L> Connections<S, L> {
    /// An empty cache.
    pub fn new(idle_timeout: Duration) -> Self {
        Connections {
            idle: Mutex::new(HashMap::new()),
            leased: Mutex::new(HashMap::new()),
            idle_timeout,
        }
    }

    /// The most recently used idle connection holding a lease of `scope`, if any (expired ones
    /// are closed on the way, releasing their leases).
    pub(crate) fn claim_leased(&self, scope: &str) -> Option<LeasedIdle<S, L>> {
        let mut m = self.leased.lock();
        let list = m.get_mut(scope)?;
        let mut found = None;
        while let Some(c) = list.pop() {
            if c.since.elapsed() < self.idle_timeout {
                found = Some(c);
                break;
            }
        }
        if list.is_empty() {
            m.remove(scope);
        }
        found
    }

    /// Put a claimed connection back unused (its idle time keeps running).
    pub(crate) fn restore(&self, c: LeasedIdle<S, L>) {
        self.leased
            .lock()
            .entry(c.scope.clone())
            .or_default()
            .push(c);
    }

    fn keep_leased(&self, scope: String, key: Key, conn: S, lease: L) {
        let c = LeasedIdle {
            scope,
            key,
            conn,
            lease,
            since: Instant::now(),
        };
        self.restore(c);
    }

    /// Idle connections holding a lease of `scope`.
    #[cfg(test)]
    pub(crate) fn idle_leased(&self, scope: &str) -> usize {
        self.leased.lock().get(scope).map_or(0, Vec::len)
    }

    fn take_idle(&self, key: &Key) -> Option<S> {
        let mut m = self.idle.lock();
        let list = m.get_mut(key)?;
        while let Some((c, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout {
                return Some(c);
            }
        }
        None
    }

    fn put_idle(&self, key: Key, c: S) {
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
        drop(m);
        let mut m = self.leased.lock();
        for list in m.values_mut() {
            list.retain(|c| c.since.elapsed() < timeout);
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

/// Try `targets` in order until one carries the transaction. `capped`: the pool-wide lease
/// of the site (and an idle connection that came with it): a connection kept for reuse keeps
/// the lease; a claimed idle connection that none of the targets can use is closed.
pub(crate) async fn deliver_group<C: Connector, L>(
    connector: &C,
    conns: &Connections<C::Session, L>,
    targets: &[Target],
    base: &ClientConfig,
    max_per_conn: u32,
    msg: &OutgoingMessage<'_>,
    capped: Option<Capped<C::Session, L>>,
) -> GroupResult {
    let mut lease = None;
    let mut claimed = None;
    match capped {
        None => {}
        Some(Capped::Fresh { scope, lease: l }) => lease = Some((scope, l)),
        Some(Capped::Idle(c)) => {
            let c = *c;
            lease = Some((c.scope, c.lease));
            claimed = Some((c.key, c.conn));
        }
    }
    let result = try_targets(
        connector,
        conns,
        targets,
        base,
        max_per_conn,
        msg,
        &mut lease,
        &mut claimed,
    )
    .await;
    if let Some((_, c)) = claimed {
        c.quit().await;
    }
    // A lease not kept with an idle connection is released here.
    drop(lease);
    result
}

#[allow(clippy::too_many_arguments)]
async fn try_targets<C: Connector, L>(
    connector: &C,
    conns: &Connections<C::Session, L>,
    targets: &[Target],
    base: &ClientConfig,
    max_per_conn: u32,
    msg: &OutgoingMessage<'_>,
    lease: &mut Option<(String, L)>,
    claimed: &mut Option<(Key, C::Session)>,
) -> GroupResult {
    let n = msg.recipients.len();
    let mut failed_targets = Vec::new();
    // The reply recorded when no target answers: the last connection error, stated as a reply
    // with the host that gave it.
    let mut last_error: Option<(ClientError, String)> = None;
    let key_of = |t: &Target| -> Key {
        (
            t.addr,
            t.host.clone(),
            base.ehlo_name.clone(),
            base.source_address
                .map(|a| a.to_string())
                .unwrap_or_default(),
        )
    };
    // A claimed idle connection goes to one of the targets: that target first (the session is
    // up). It is never kept open beside a new connection: the lease counts one connection.
    let mut order: Vec<&Target> = targets.iter().collect();
    if let Some((k, _)) = claimed.as_ref()
        && let Some(i) = targets.iter().position(|t| key_of(t) == *k)
    {
        let t = order.remove(i);
        order.insert(0, t);
    }
    for t in order {
        let key = key_of(t);
        let mine = if claimed.as_ref().is_some_and(|(k, _)| *k == key) {
            claimed.take().map(|(_, c)| c)
        } else {
            if let Some((_, c)) = claimed.take() {
                c.quit().await;
            }
            None
        };
        let mut cfg = base.clone();
        cfg.auth = t.auth.clone();
        if let Err(e) = t.tls.apply(&mut cfg) {
            // No trust anchors to verify with: this target cannot be used as configured.
            last_error = Some((ClientError::Tls(e.to_string()), remote_of(t)));
            failed_targets.push(t.clone());
            continue;
        }
        let reused = mine.or_else(|| conns.take_idle(&key));
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(mut c) => {
                c.mark_reused();
                c
            }
            None => match connector.connect(t.addr, &t.host, &cfg).await {
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
        let mut sent = conn.send(msg).await;
        if was_reused && sent.as_ref().is_err_and(ClientError::is_stale) {
            // The idle connection had gone away (its RSET failed): nothing of this message
            // reached the server, so it goes over a new connection at once.
            match connector.connect(t.addr, &t.host, &cfg).await {
                Ok(c) => {
                    conn = c;
                    sent = conn.send(msg).await;
                }
                Err(e) => {
                    last_error = Some((e, remote_of(t)));
                    failed_targets.push(t.clone());
                    continue;
                }
            }
        }
        let remote = remote_of(t);
        match sent {
            Ok(result) => {
                let attempts = map_result(&result, n, &remote);
                if conn.messages_sent() < max_per_conn.max(1) {
                    match lease.take() {
                        Some((scope, l)) => conns.keep_leased(scope, key, conn, l),
                        None => conns.put_idle(key, conn),
                    }
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
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use baton_smtp_client::{OutgoingRecipient, Reply};
    use std::collections::VecDeque;
    use std::sync::Arc;

    fn target() -> Target {
        Target {
            host: "mx.dest.test".into(),
            addr: SocketAddr::from(([192, 0, 2, 1], 25)),
            tls: crate::plan::HopTls::OPPORTUNISTIC,
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

    /// What a scripted next hop does on connect, and then per transaction.
    #[derive(Clone)]
    enum Hop {
        Refuse(fn() -> ClientError),
        Accept(Vec<fn() -> Result<SendResult, ClientError>>),
    }

    /// Connections to scripted hops; records every connect.
    #[derive(Default)]
    struct Scripted {
        hops: HashMap<SocketAddr, Hop>,
        connects: Mutex<Vec<SocketAddr>>,
        /// Sessions closed before each connect.
        quits_at_connect: Mutex<Vec<u32>>,
    }

    struct FakeSession {
        sends: VecDeque<fn() -> Result<SendResult, ClientError>>,
        sent: u32,
        quits: Arc<Mutex<u32>>,
    }

    impl SmtpSession for FakeSession {
        fn mark_reused(&mut self) {}

        fn send<'a>(
            &'a mut self,
            _msg: &'a OutgoingMessage<'a>,
        ) -> BoxFuture<'a, Result<SendResult, ClientError>> {
            self.sent += 1;
            let r = self
                .sends
                .pop_front()
                .map_or(Err(ClientError::Unusable), |f| f());
            Box::pin(async move { r })
        }

        fn quit(self) -> BoxFuture<'static, ()> {
            *self.quits.lock() += 1;
            Box::pin(async {})
        }

        fn messages_sent(&self) -> u32 {
            self.sent
        }
    }

    struct Fake {
        script: Scripted,
        quits: Arc<Mutex<u32>>,
    }

    impl Connector for Fake {
        type Session = FakeSession;

        fn connect<'a>(
            &'a self,
            addr: SocketAddr,
            _host: &'a str,
            _cfg: &'a ClientConfig,
        ) -> BoxFuture<'a, Result<FakeSession, ClientError>> {
            self.script.connects.lock().push(addr);
            self.script.quits_at_connect.lock().push(*self.quits.lock());
            let r = match self.script.hops.get(&addr) {
                None => Err(ClientError::Timeout { stage: "connect" }),
                Some(Hop::Refuse(e)) => Err(e()),
                Some(Hop::Accept(sends)) => Ok(FakeSession {
                    sends: sends.iter().copied().collect(),
                    sent: 0,
                    quits: self.quits.clone(),
                }),
            };
            Box::pin(async move { r })
        }
    }

    fn fake(hops: &[(u8, Hop)]) -> Fake {
        Fake {
            script: Scripted {
                hops: hops
                    .iter()
                    .map(|(i, h)| (SocketAddr::from(([192, 0, 2, *i], 25)), h.clone()))
                    .collect(),
                connects: Mutex::default(),
                quits_at_connect: Mutex::default(),
            },
            quits: Arc::default(),
        }
    }

    fn mx(i: u8) -> Target {
        Target {
            host: format!("mx{i}.dest.test"),
            addr: SocketAddr::from(([192, 0, 2, i], 25)),
            ..target()
        }
    }

    fn accepted() -> Result<SendResult, ClientError> {
        let ok = Reply::new(250, "2.0.0", "ok");
        Ok(SendResult {
            mail_reply: ok.clone(),
            rcpt_replies: vec![ok.clone(), Reply::new(550, "5.1.1", "no such user")],
            data_reply: Some(Reply::new(250, "2.0.0", "queued as Q")),
            dsn: true,
        })
    }

    fn dropped() -> Result<SendResult, ClientError> {
        Err(ClientError::ConnectionClosed { stage: "data_term" })
    }

    async fn deliver(
        f: &Fake,
        conns: &Connections<FakeSession>,
        targets: &[Target],
    ) -> GroupResult {
        let rcpt = |a| OutgoingRecipient {
            address: a,
            notify: None,
            orcpt: None,
        };
        let msg = OutgoingMessage {
            reverse_path: "a@src.test",
            recipients: vec![rcpt("ok@dest.test"), rcpt("gone@dest.test")],
            body: b"Subject: x\r\n\r\nx\r\n",
            smtputf8: false,
            eight_bit: false,
            ret: None,
            envid: None,
        };
        deliver_group(
            f,
            conns,
            targets,
            &ClientConfig::new("w.test"),
            2,
            &msg,
            None,
        )
        .await
    }

    fn summary(r: &GroupResult) -> Vec<String> {
        r.attempts
            .iter()
            .map(|o| format!("{} {} {}", o.metric_label(), o.reply, o.remote))
            .collect()
    }

    /// A target that does not answer is skipped and counted; the next one carries the
    /// transaction, and each recipient gets its own reply with the remote host.
    #[tokio::test]
    async fn the_next_target_carries_the_transaction_per_recipient_replies() {
        let f = fake(&[(2, Hop::Accept(vec![accepted]))]);
        let conns = Connections::new(Duration::from_secs(60));
        let r = deliver(&f, &conns, &[mx(1), mx(2)]).await;
        assert_eq!(
            summary(&r),
            [
                "delivered 250 2.0.0 queued as Q mx2.dest.test[192.0.2.2]",
                "bounced 550 5.1.1 no such user mx2.dest.test[192.0.2.2]"
            ]
        );
        assert!(r.attempts[0].next_hop_dsn());
        assert_eq!(r.failed_targets.len(), 1);
        assert_eq!(r.used.map(|t| t.host), Some("mx2.dest.test".into()));
    }

    /// No target answers: every recipient is deferred with the last connection error as a
    /// reply, from the host that gave it.
    #[tokio::test]
    async fn no_answer_defers_with_the_last_error() {
        let f = fake(&[(1, Hop::Refuse(|| ClientError::TlsRequired))]);
        let conns = Connections::new(Duration::from_secs(60));
        let r = deliver(&f, &conns, &[mx(2), mx(1)]).await;
        assert_eq!(
            summary(&r)[0],
            "deferred 454 4.7.5 TLS required but the server does not offer STARTTLS mx1.dest.test[192.0.2.1]"
        );
        assert!(r.used.is_none() && r.failed_targets.len() == 2);
        let r = deliver(&f, &conns, &[]).await;
        assert_eq!(summary(&r)[1], "deferred 451 4.4.0 no delivery target ");
    }

    /// A permanent refusal at connection time bounces everyone with the server's status and
    /// stops (no other MX is tried).
    #[tokio::test]
    async fn a_permanent_greeting_refusal_bounces_without_trying_further() {
        let f = fake(&[
            (
                1,
                Hop::Refuse(|| ClientError::Greeting(Reply::new(554, "5.7.1", "go away"))),
            ),
            (2, Hop::Accept(vec![accepted])),
        ]);
        let conns = Connections::new(Duration::from_secs(60));
        let r = deliver(&f, &conns, &[mx(1), mx(2)]).await;
        assert_eq!(
            summary(&r),
            ["bounced 554 5.7.1 go away mx1.dest.test[192.0.2.1]"; 2]
        );
        assert_eq!(r.attempts[0].status().to_string(), "5.7.1");
        assert_eq!(f.script.connects.lock().len(), 1);
    }

    /// Trouble mid-transaction defers on that host (the message may have been taken): the
    /// next MX is not tried in the same attempt.
    #[tokio::test]
    async fn trouble_mid_transaction_defers_without_the_next_mx() {
        let f = fake(&[
            (1, Hop::Accept(vec![dropped])),
            (2, Hop::Accept(vec![accepted])),
        ]);
        let conns = Connections::new(Duration::from_secs(60));
        let r = deliver(&f, &conns, &[mx(1), mx(2)]).await;
        assert_eq!(
            summary(&r)[0],
            "deferred 451 4.4.2 connection closed by server during data_term mx1.dest.test[192.0.2.1]"
        );
        assert_eq!(f.script.connects.lock().len(), 1);
    }

    /// A pool-wide lease in the tests: counts its releases.
    struct FakeLease(Arc<Mutex<u32>>);

    impl Drop for FakeLease {
        fn drop(&mut self) {
            *self.0.lock() += 1;
        }
    }

    fn message() -> OutgoingMessage<'static> {
        OutgoingMessage {
            reverse_path: "a@src.test",
            recipients: vec![OutgoingRecipient {
                address: "ok@dest.test",
                notify: None,
                orcpt: None,
            }],
            body: b"Subject: x\r\n\r\nx\r\n",
            smtputf8: false,
            eight_bit: false,
            ret: None,
            envid: None,
        }
    }

    /// Deliver one message to a capped site: with the cache's idle connection of the scope
    /// and its lease if there is one (as `shaping::admit` does), else with a fresh lease.
    async fn deliver_capped(
        f: &Fake,
        conns: &Connections<FakeSession, FakeLease>,
        targets: &[Target],
        released: &Arc<Mutex<u32>>,
    ) -> GroupResult {
        let capped = match conns.claim_leased("dest.test") {
            Some(idle) => Capped::Idle(Box::new(idle)),
            None => Capped::Fresh {
                scope: "dest.test".into(),
                lease: FakeLease(released.clone()),
            },
        };
        let msg = message();
        let cfg = ClientConfig::new("w.test");
        deliver_group(f, conns, targets, &cfg, 3, &msg, Some(capped)).await
    }

    /// A connection to a capped site is kept idle with its lease, and the next message to the
    /// site takes both: one SMTP session for three messages (the messages-per-connection cap),
    /// one lease, released only when the connection is closed at the cap.
    #[tokio::test]
    async fn a_capped_sites_connection_is_reused_with_its_lease() {
        let f = fake(&[(1, Hop::Accept(vec![accepted, accepted, accepted]))]);
        let conns = Connections::new(Duration::from_secs(60));
        let released = Arc::new(Mutex::new(0));
        let r = deliver_capped(&f, &conns, &[mx(1)], &released).await;
        assert_eq!(r.attempts[0].metric_label(), "delivered");
        assert_eq!(
            conns.idle_leased("dest.test"),
            1,
            "kept idle with its lease"
        );
        assert_eq!(*released.lock(), 0, "an idle connection keeps its lease");
        for _ in 0..2 {
            let r = deliver_capped(&f, &conns, &[mx(1)], &released).await;
            assert_eq!(r.attempts[0].metric_label(), "delivered");
        }
        assert_eq!(
            f.script.connects.lock().len(),
            1,
            "one session for three messages"
        );
        assert_eq!(
            *f.quits.lock(),
            1,
            "closed at the messages-per-connection cap"
        );
        assert_eq!(*released.lock(), 1, "its lease released with it");
        assert_eq!(conns.idle_leased("dest.test"), 0);
        // The fourth message opens a new session with a fresh lease; another scope's
        // deliveries never take it.
        let r = deliver_capped(&f, &conns, &[mx(1)], &released).await;
        assert_eq!(r.attempts[0].metric_label(), "delivered");
        assert_eq!(f.script.connects.lock().len(), 2);
        assert!(conns.claim_leased("other.test").is_none());
        assert_eq!(conns.idle_leased("dest.test"), 1);
    }

    /// The idle connection that came with the lease goes to a host none of the targets names:
    /// it is closed, and the lease serves the new connection (which keeps it when idle).
    #[tokio::test]
    async fn an_unusable_idle_connection_is_closed_and_its_lease_serves_the_new_one() {
        let f = fake(&[
            (1, Hop::Accept(vec![accepted])),
            (2, Hop::Accept(vec![accepted])),
        ]);
        let conns = Connections::new(Duration::from_secs(60));
        let released = Arc::new(Mutex::new(0));
        let _ = deliver_capped(&f, &conns, &[mx(1)], &released).await;
        let r = deliver_capped(&f, &conns, &[mx(2)], &released).await;
        assert_eq!(r.attempts[0].metric_label(), "delivered");
        assert_eq!(*f.quits.lock(), 1, "the session to mx1 was closed");
        assert_eq!(
            *released.lock(),
            0,
            "one lease, handed from mx1's session to mx2's"
        );
        assert_eq!(conns.idle_leased("dest.test"), 1);
        assert_eq!(f.script.connects.lock().len(), 2);
        assert_eq!(
            *f.script.quits_at_connect.lock(),
            [0, 1],
            "mx1's session was closed before mx2's was opened"
        );
    }

    /// The idle connection that came with the lease goes to the second target: that target is
    /// tried first, over the open session (no new connection beside it).
    #[tokio::test]
    async fn a_claimed_connection_to_a_later_target_is_used_first() {
        let f = fake(&[
            (1, Hop::Accept(vec![accepted, accepted])),
            (2, Hop::Accept(vec![accepted])),
        ]);
        let conns = Connections::new(Duration::from_secs(60));
        let released = Arc::new(Mutex::new(0));
        let _ = deliver_capped(&f, &conns, &[mx(1)], &released).await;
        let r = deliver_capped(&f, &conns, &[mx(2), mx(1)], &released).await;
        assert_eq!(r.used.map(|t| t.host), Some("mx1.dest.test".into()));
        assert_eq!(f.script.connects.lock().len(), 1);
        assert_eq!(*released.lock(), 0);
    }

    /// An idle connection past the idle timeout gives its lease back when it is reaped (or
    /// when a delivery looks for one): no idle connection holds a lease longer than that.
    #[tokio::test]
    async fn reaping_an_idle_connection_releases_its_lease() {
        let f = fake(&[(1, Hop::Accept(vec![accepted]))]);
        let conns = Connections::new(Duration::ZERO);
        let released = Arc::new(Mutex::new(0));
        let _ = deliver_capped(&f, &conns, &[mx(1)], &released).await;
        assert_eq!(*released.lock(), 0);
        conns.reap();
        assert_eq!(*released.lock(), 1);
        assert_eq!(conns.idle_leased("dest.test"), 0);
        let conns = Connections::new(Duration::ZERO);
        let f = fake(&[(1, Hop::Accept(vec![accepted]))]);
        let _ = deliver_capped(&f, &conns, &[mx(1)], &released).await;
        assert!(conns.claim_leased("dest.test").is_none());
        assert_eq!(*released.lock(), 2);
    }

    /// A lease for a delivery whose connection is not kept (trouble, or nobody answered) is
    /// released when the delivery ends.
    #[tokio::test]
    async fn a_lease_without_a_kept_connection_is_released() {
        let f = fake(&[(1, Hop::Accept(vec![dropped]))]);
        let conns = Connections::new(Duration::from_secs(60));
        let released = Arc::new(Mutex::new(0));
        let _ = deliver_capped(&f, &conns, &[mx(1)], &released).await;
        assert_eq!(*released.lock(), 1);
        let _ = deliver_capped(&f, &conns, &[mx(3)], &released).await;
        assert_eq!(*released.lock(), 2);
        assert_eq!(conns.idle_leased("dest.test"), 0);
    }

    /// A connection is reused until the pool's messages-per-connection cap (2 here), then
    /// closed with QUIT; the third message opens a new one.
    #[tokio::test]
    async fn connections_are_reused_up_to_the_cap() {
        let f = fake(&[(1, Hop::Accept(vec![accepted, accepted]))]);
        let conns = Connections::new(Duration::from_secs(60));
        for _ in 0..2 {
            let r = deliver(&f, &conns, &[mx(1)]).await;
            assert_eq!(r.attempts[0].metric_label(), "delivered");
        }
        assert_eq!(
            f.script.connects.lock().len(),
            1,
            "second message reused the session"
        );
        assert_eq!(*f.quits.lock(), 1, "closed at the cap");
        let _ = deliver(&f, &conns, &[mx(1)]).await;
        assert_eq!(f.script.connects.lock().len(), 2);
    }

    fn stale() -> Result<SendResult, ClientError> {
        Err(ClientError::StaleConnection(Box::new(
            ClientError::ConnectionClosed { stage: "rset" },
        )))
    }

    /// A reused idle connection whose opening RSET fails (the server closed it meanwhile): the
    /// message goes over a new connection at once, with no attempt lost or counted.
    #[tokio::test]
    async fn a_stale_idle_connection_is_replaced_within_the_same_attempt() {
        let f = fake(&[(1, Hop::Accept(vec![accepted, stale]))]);
        let conns = Connections::new(Duration::from_secs(60));
        let first = deliver(&f, &conns, &[mx(1)]).await;
        assert_eq!(first.attempts[0].metric_label(), "delivered");
        let second = deliver(&f, &conns, &[mx(1)]).await;
        assert_eq!(summary(&second), summary(&first), "delivered, not deferred");
        assert_eq!(
            f.script.connects.lock().len(),
            2,
            "the stale session was replaced by a new one"
        );
    }
}
