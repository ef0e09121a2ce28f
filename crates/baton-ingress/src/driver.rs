//! The session driver: performs the I/O the sans-IO [`baton_smtp::Session`] asks for — read
//! with timeouts, write batched replies, upgrade to TLS, admit commands against the shared
//! limits (publishing a credential's spike once), count failed AUTH towards lockouts, hand off
//! to JetStream — and accounts the session's message bytes against the ingress budget. No SMTP
//! logic lives here.

use std::sync::Arc;
use std::time::Duration;

use baton_smtp::catalogue;
use baton_smtp::session::{Action, Admission, Session};
use baton_smtp::{ListenerKind, PeerInfo, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::budget::Reservation;
use crate::conn::Conn;
use crate::handoff::{self, Arrival};
use crate::limits::Admitted;
use crate::policy::SessionPolicy;
use crate::{Shared, listener_label};

/// Why a session ended (for logs).
#[derive(Debug, PartialEq, Eq)]
enum End {
    Closed,
    PeerGone,
    Timeout,
    Shutdown,
}

/// Drive one SMTP session to its end.
pub(crate) async fn run(
    conn: Conn,
    peer: PeerInfo,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
) {
    let label = listener_label(kind);
    let gauge = shared
        .metrics
        .ingress_sessions_active
        .with_label_values(&[label]);
    gauge.inc();
    let span = tracing::info_span!("smtp_session", client = %peer.addr, listener = label);
    let end = drive(conn, peer, kind, &shared, &stop, &hard_stop)
        .instrument(span.clone())
        .await;
    tracing::debug!(parent: &span, end = ?end, "session ended");
    gauge.dec();
}

async fn flush(conn: &mut Conn, out: &mut Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        conn.write_all(out).await?;
        out.clear();
    }
    conn.flush().await
}

async fn drive(
    mut conn: Conn,
    peer: PeerInfo,
    kind: ListenerKind,
    shared: &Shared,
    stop: &CancellationToken,
    hard_stop: &CancellationToken,
) -> End {
    let limits = &shared.config.limits;
    let mut session = Session::new(shared.session_config(kind), peer.clone());
    let mut out = Vec::with_capacity(1024);
    let mut reservation = Reservation::new(&shared.budget);
    let deadline = Instant::now() + limits.session_timeout;
    let mut buf = vec![0u8; 16 * 1024];
    // The open transaction's MAIL was admitted to be held (a credential's sending spike).
    let mut held = false;
    // A client locked out after too many failed AUTH attempts is turned away at once.
    if shared.limits.client_locked(peer.addr).await {
        let reply = catalogue::client_locked_out(&shared.config.hostname);
        count_reply(shared, &reply);
        tracing::info!(
            reason = "auth_lockout",
            "connection refused: client locked out"
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = conn.write_all(&reply.to_bytes()).await;
            let _ = conn.shutdown().await;
        })
        .await;
        return End::Closed;
    }
    if let Action::Send(reply) = session.greeting() {
        out.extend_from_slice(&reply.to_bytes());
    }
    loop {
        // Perform every action the session has for the input seen so far.
        loop {
            let snapshot = shared.snapshot.borrow().clone();
            let action = {
                let policy = SessionPolicy {
                    snapshot: snapshot.as_deref(),
                    metrics: &shared.metrics,
                    auth_log: &shared.auth_log,
                    listener: kind,
                    suppressions: shared.suppressions.as_ref(),
                };
                session.poll(&policy)
            };
            let Some(action) = action else { break };
            match action {
                Action::Send(reply) => {
                    count_reply(shared, &reply);
                    // A refusal inside a known RelayDomain's transaction is that tenant's event.
                    if crate::refused::wanted(shared, &reply)
                        && let Some((relay_domain, sender)) = session.open_transaction()
                    {
                        let refusal = crate::refused::Refusal {
                            relay_domain,
                            sender: handoff::sender_text(sender),
                            client: peer.addr,
                            listener: kind,
                            authenticated: session.authenticated(),
                            phase: "command",
                        };
                        crate::refused::emit(shared, &refusal, &reply);
                    }
                    out.extend_from_slice(&reply.to_bytes());
                }
                Action::Delay(d) => {
                    if flush(&mut conn, &mut out).await.is_err() {
                        return End::PeerGone;
                    }
                    tokio::time::sleep(d).await;
                }
                Action::StartTls => {
                    if flush(&mut conn, &mut out).await.is_err() {
                        return End::PeerGone;
                    }
                    match upgrade(conn, shared, kind).await {
                        Some(c) => conn = c,
                        None => return End::PeerGone,
                    }
                    session.tls_established();
                }
                Action::Enqueue(mut tx) => {
                    // Reports to a return-path domain are consumed here, never queued.
                    if let Some(reply) =
                        intake_reports(&mut tx, snapshot.as_deref(), &peer, shared).await
                    {
                        session.transaction_consumed(reply);
                        account(&mut session, &mut reservation, shared);
                        continue;
                    }
                    let id = baton_core::ids::new_queue_id(
                        baton_core::clock::now_ms(),
                        &mut rand::rng(),
                    );
                    let arrival = Arrival {
                        hostname: &shared.config.hostname,
                        client: peer.addr,
                        listener: kind,
                        tls_cipher: conn.cipher(),
                        tls_version: conn.tls_version(),
                    };
                    let now = baton_core::clock::now();
                    // Who the message was from, for a `refused` event should it not get in.
                    let refusal_of = shared.publisher.emits_events().then(|| {
                        (
                            tx.grant.relay_domain.clone(),
                            handoff::sender_text(&tx.reverse_path),
                        )
                    });
                    let result =
                        match handoff::prepare(tx, &id, &arrival, now, snapshot, &shared.metrics)
                            .await
                        {
                            Ok(p) => {
                                let quarantine = p.quarantine.clone().or_else(|| {
                                    held.then(|| {
                                        (
                                            "spike".to_string(),
                                            "sending spike of the SMTP credential".to_string(),
                                        )
                                    })
                                });
                                handoff::publish(
                                    &shared.publisher,
                                    &shared.metrics,
                                    &p.envelope,
                                    &arrival,
                                    quarantine.as_ref(),
                                )
                                .await
                            }
                            Err(reply) => Err(reply),
                        };
                    if let (Err(reply), Some((relay_domain, sender))) = (&result, &refusal_of) {
                        let refusal = crate::refused::Refusal {
                            relay_domain,
                            sender: sender.clone(),
                            client: peer.addr,
                            listener: kind,
                            authenticated: session.authenticated(),
                            phase: "data",
                        };
                        crate::refused::emit(shared, &refusal, reply);
                    }
                    session.enqueue_result(result);
                }
                Action::Admit(admission) => {
                    let result = shared
                        .limits
                        .admit(&admission, snapshot.as_deref(), &shared.metrics)
                        .await;
                    if matches!(admission, Admission::Mail { .. }) {
                        held = matches!(result, Ok(Admitted::Hold));
                    }
                    // A credential's spike is published once, by the session that crossed it.
                    if let Ok(Admitted::Spiked(spike)) = &result {
                        crate::spike::emit(shared, spike);
                    }
                    session.admission_result(result.map(|_| ()));
                }
                Action::AuthFailed { user, client } => {
                    shared
                        .limits
                        .auth_failed(&user, client, &shared.metrics)
                        .await;
                }
                Action::Close => {
                    let _ = flush(&mut conn, &mut out).await;
                    let _ = conn.shutdown().await;
                    return End::Closed;
                }
            }
            account(&mut session, &mut reservation, shared);
        }
        account(&mut session, &mut reservation, shared);
        if flush(&mut conn, &mut out).await.is_err() {
            return End::PeerGone;
        }
        // Wait for input, the command timeout, the session deadline, or shutdown. The deadline
        // is checked before reading: a read that is always ready (a client flooding DATA) would
        // otherwise win over a zero timeout forever.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return time_out(&mut conn, &mut session, shared).await;
        }
        let wait = limits.command_timeout.min(left);
        let idle = !session.in_transaction();
        tokio::select! {
            r = tokio::time::timeout(wait, conn.read(&mut buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) => return End::PeerGone,
                Ok(Ok(n)) => session.feed(&buf[..n]),
                Err(_) => return time_out(&mut conn, &mut session, shared).await,
            },
            _ = stop.cancelled(), if idle => {
                finish(&mut conn, session.shutdown()).await;
                return End::Shutdown;
            }
            _ = hard_stop.cancelled() => {
                finish(&mut conn, session.shutdown()).await;
                return End::Shutdown;
            }
        }
    }
}

/// The command timeout or the session deadline passed: 421 4.4.2 (counted) and close.
async fn time_out(conn: &mut Conn, session: &mut Session, shared: &Shared) -> End {
    shared
        .metrics
        .ingress_rejections
        .with_label_values(&["4.4.2", "421"])
        .inc();
    finish(conn, session.timeout()).await;
    End::Timeout
}

/// Keep the session's reservation equal to the bytes it buffers; over budget → 452 4.3.1.
fn account(session: &mut Session, reservation: &mut Reservation<'_>, shared: &Shared) {
    let want = session.body_len();
    if !reservation.resize(want) {
        session.fail_transaction(catalogue::insufficient_resources());
        let _ = reservation.resize(session.body_len());
    }
    shared
        .metrics
        .ingress_inflight_bytes
        .set(shared.budget.used() as i64);
}

async fn finish(conn: &mut Conn, actions: Vec<Action>) {
    let mut out = Vec::new();
    for a in actions {
        if let Action::Send(reply) = a {
            out.extend_from_slice(&reply.to_bytes());
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = flush(conn, &mut out).await;
        let _ = conn.shutdown().await;
    })
    .await;
}

/// Count every reply that refuses something, labelled by its enhanced status code (the
/// reason, a small fixed set; `none` without one) and reply code. Session replies are the
/// single source, so each refusal is counted once whatever produced it (session rules, policy,
/// queue); the labels come from the typed reply, never from its wire form.
fn count_reply(shared: &Shared, reply: &Reply) {
    if !(reply.is_transient() || reply.is_permanent()) {
        return;
    }
    let reason = reply
        .status
        .filter(|s| s.agrees_with(reply.code))
        .map(|s| s.to_string());
    shared
        .metrics
        .ingress_rejections
        .with_label_values(&[reason.as_deref().unwrap_or("none"), &reply.code.to_string()])
        .inc();
}

async fn upgrade(conn: Conn, shared: &Shared, kind: ListenerKind) -> Option<Conn> {
    let Conn::Plain(tcp) = conn else { return None };
    crate::tls_accept(tcp, shared, listener_label(kind)).await
}

/// Take the return-path recipients out of `tx` and process the report they were sent; the
/// reply when nothing is left to queue, `None` when the rest of `tx` is to be queued as usual.
async fn intake_reports(
    tx: &mut baton_smtp::session::Transaction,
    snapshot: Option<&crate::Snapshot>,
    peer: &PeerInfo,
    shared: &Shared,
) -> Option<baton_smtp::Reply> {
    let s = snapshot?;
    if s.return_paths.is_empty() {
        return None;
    }
    let mut reports = Vec::new();
    let mut domain = String::new();
    tx.recipients.retain(|r| match &r.path {
        baton_smtp::ForwardPath::Mailbox(m) => {
            match s.return_paths.recipient(&m.local_part, &m.domain) {
                Some(rp) => {
                    domain = m.domain.to_ascii_lowercase();
                    reports.push(rp);
                    false
                }
                None => true,
            }
        }
        baton_smtp::ForwardPath::Postmaster => true,
    });
    if reports.is_empty() {
        return None;
    }
    let now = baton_core::clock::now_ms();
    let outcome = crate::intake::handle(&tx.body, &reports, s, &shared.classifier, now);
    let mut stored = 0;
    for e in &outcome.entries {
        match shared.suppression_store().await {
            Some(store) => match store.put(e).await {
                Ok(_) => {
                    stored += 1;
                    shared
                        .metrics
                        .suppressions_added
                        .with_label_values(&[&e.relay_domain, e.source.as_str()])
                        .inc();
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not add a reported recipient to the suppression list")
                }
            },
            None => tracing::warn!("suppression list unavailable; report not recorded"),
        }
    }
    shared
        .metrics
        .ingress_reports
        .with_label_values(&[outcome.kind, outcome.result])
        .inc();
    tracing::info!(
        client = %peer.addr,
        kind = outcome.kind,
        result = outcome.result,
        relay_domain = %outcome.relay_domain,
        queue_ids = %outcome.entries.iter().map(|e| e.queue_id.as_str()).collect::<Vec<_>>().join(","),
        suppressed = stored,
        "report received at the return path"
    );
    let reply = crate::intake::reply(&outcome, &domain);
    if tx.recipients.is_empty() || tx.grant.inbound {
        Some(reply)
    } else {
        None
    }
}
