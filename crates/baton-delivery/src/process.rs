//! What a worker does with one queued message: wait until it is due, check expiry, deliver
//! each destination group, log one line per recipient outcome, publish follow-ups (retry
//! envelope for deferred recipients, one DSN for failed/expired ones) and only then ack the
//! original. Follow-ups carry deterministic `Nats-Msg-Id`s, so a crash between publishing
//! them and the ack duplicates nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_core::destination::RefusedAddress;
use baton_core::ids::{FollowUp, follow_up_msg_id};
use baton_core::retry::{RetryDecision, RetrySchedule};
use baton_core::routing::CongestionPolicy;
use baton_proto::v1::{
    BodyType, DeliveryMode, DsnRet, Envelope, EnvelopeKind, Recipient, SendingPool,
};
use baton_queue::{QueuedMessage, new_subject, retry_subject};
use baton_smtp_client::{OutgoingMessage, OutgoingRecipient};

use crate::deliver::{Fate, deliver_group};
use crate::notice::{Notice, dsn_for};
use crate::route::{Route, pick_egress, route};
use crate::slots::Grant;
use crate::{Ctx, WindowPlace, now_ms};

/// Process one message end to end. Returns without acking when a follow-up could not be
/// published: JetStream redelivers it after `ack_wait`.
pub(crate) async fn process(ctx: &Ctx, pool: &SendingPool, qm: QueuedMessage, place: &WindowPlace) {
    let env = &qm.envelope;
    if qm.delivered > 1 {
        ctx.metrics
            .delivery_redeliveries
            .with_label_values(&[&pool.name])
            .inc();
    }
    // A retry-lane message waits for its due time (the lane's head is always the earliest).
    // On shutdown a message still waiting is given back at once, so SIGTERM does not wait
    // for the retry schedule; its due time travels with it.
    let wait_ms = env.not_before_ms.saturating_sub(now_ms());
    if wait_ms > 0 {
        let waited = tokio::select! {
            _ = wait_with_progress(ctx, &qm, Duration::from_millis(wait_ms as u64)) => true,
            _ = ctx.release.cancelled() => false,
        };
        if !waited {
            if let Err(e) = qm.release().await {
                tracing::warn!(error = %e, "could not give back a waiting message on shutdown; it is redelivered after ack_wait");
            }
            return;
        }
    }
    let schedule = RetrySchedule::from_pool(pool);
    let fates = if schedule.is_expired(env.received_at_ms, now_ms()) {
        env.recipients
            .iter()
            .map(|r| Fate::Expired {
                reply: r.last_reply.clone(),
                remote: r.last_remote.clone(),
            })
            .collect()
    } else {
        let congestion = CongestionPolicy::from_first_tier(schedule.tiers().first().copied());
        let work = deliver_all(ctx, pool, &qm, place, congestion);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(ctx.progress_every);
        tick.tick().await;
        let fates: Vec<Fate> = loop {
            tokio::select! {
                f = &mut work => break f,
                _ = tick.tick() => { let _ = qm.progress().await; }
            }
        };
        // Shutdown ended every wait for a busy destination before anything was attempted:
        // give the message back for another worker, keeping its attempt count.
        if fates
            .iter()
            .all(|f| matches!(f, Fate::Deferred { reply, .. } if reply == SHUTTING_DOWN))
        {
            if let Err(e) = qm.release().await {
                tracing::warn!(error = %e, "could not give back a waiting message on shutdown; it is redelivered after ack_wait");
            }
            return;
        }
        fates
    };
    finish(ctx, pool, &qm, &schedule, fates).await;
}

/// Reply recorded for a destination group whose wait for a connection slot ended because the
/// worker is shutting down (nothing was attempted).
const SHUTTING_DOWN: &str = "451 4.3.0 worker shutting down";

async fn wait_with_progress(ctx: &Ctx, qm: &QueuedMessage, total: Duration) {
    let until = Instant::now() + total;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(ctx.progress_every)).await;
        if Instant::now() < until {
            let _ = qm.progress().await;
        }
    }
}

fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

/// Deliver every recipient: grouped by destination domain (Direct) or all at once (Smarthost).
async fn deliver_all(
    ctx: &Ctx,
    pool: &SendingPool,
    qm: &QueuedMessage,
    place: &WindowPlace,
    congestion: CongestionPolicy,
) -> Vec<Fate> {
    let env = &qm.envelope;
    let smarthost = DeliveryMode::try_from(pool.mode) == Ok(DeliveryMode::Smarthost);
    // With a return path each recipient gets its own VERP sender, hence its own transaction.
    let plan = ctx.bounces.plan(&env.relay_domain);
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    let mut suppressed = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        if let Some(f) = ctx.bounces.suppressed(env, &r.address) {
            suppressed.push((i, f));
            continue;
        }
        let key = if smarthost {
            String::new()
        } else {
            domain_of(&r.address)
        };
        let sender = plan
            .as_ref()
            .and_then(|p| p.verp_sender(env, &r.address))
            .unwrap_or_else(|| env.reverse_path.clone());
        groups.entry((key, sender)).or_default().push(i);
    }
    let runs = groups.into_iter().map(|((domain, sender), idx)| {
        deliver_domain(ctx, pool, qm, domain, sender, idx, place, congestion)
    });
    let results = futures::future::join_all(runs).await;
    let mut fates = vec![
        Fate::Deferred {
            reply: "not attempted".into(),
            remote: String::new()
        };
        env.recipients.len()
    ];
    let suppressed = suppressed.into_iter().map(|(i, f)| (vec![i], vec![f]));
    for (idx, group_fates) in results.into_iter().chain(suppressed) {
        for (i, f) in idx.into_iter().zip(group_fates) {
            if let Some(slot) = fates.get_mut(i) {
                *slot = f;
            }
        }
    }
    fates
}

#[allow(clippy::too_many_arguments)]
async fn deliver_domain(
    ctx: &Ctx,
    pool: &SendingPool,
    qm: &QueuedMessage,
    domain: String,
    reverse_path: String,
    idx: Vec<usize>,
    place: &WindowPlace,
    congestion: CongestionPolicy,
) -> (Vec<usize>, Vec<Fate>) {
    let env = &qm.envelope;
    let dest = if domain.is_empty() {
        format!("smarthosts:{}", pool.name)
    } else {
        domain.clone()
    };
    let n = idx.len();
    let all = |f: Fate| vec![f; n];
    let suspended = |until: i64| Fate::Deferred {
        reply: format!(
            "451 4.4.5 destination {dest} suspended after repeated failures until {until} ms"
        ),
        remote: String::new(),
    };
    if let Some(until) = ctx.suspended_until(&dest) {
        return (idx, all(suspended(until)));
    }
    let (routed, refused) = route(&ctx.dns, pool, &ctx.health, &domain).await;
    count_refused(ctx, pool, env, &dest, &refused);
    let targets = match routed {
        Route::Targets(t) => t,
        Route::Fail { status, text } => {
            let reply = format!("550 {status} {text}");
            return (
                idx,
                all(Fate::Failed {
                    reply,
                    status: status.into(),
                    remote: String::new(),
                }),
            );
        }
        Route::Defer { status, text } => {
            let reply = format!("451 {status} {text}");
            return (
                idx,
                all(Fate::Deferred {
                    reply,
                    remote: String::new(),
                }),
            );
        }
    };
    let cap = if pool.max_connections_per_destination == 0 {
        20
    } else {
        pool.max_connections_per_destination as usize
    };
    let policy = if ctx.crowded() {
        congestion.crowded()
    } else {
        congestion
    };
    let mut waited = false;
    let grant = ctx
        .dests
        .acquire(&dest, cap, policy, &ctx.release, || {
            waited = true;
            ctx.begin_wait(place);
        })
        .await;
    if waited {
        ctx.end_wait();
    }
    let _slot = match grant {
        Grant::Slot(s) => s,
        Grant::Busy { waiting, estimated } => {
            ctx.metrics
                .delivery_attempts
                .with_label_values(&[&pool.name, "destination_busy"])
                .inc();
            let reply = format!(
                "451 4.4.5 destination {dest} busy: {waiting} messages wait for {cap} connections, about {}s",
                estimated.as_secs()
            );
            return (
                idx,
                all(Fate::Deferred {
                    reply,
                    remote: String::new(),
                }),
            );
        }
        Grant::Closed => {
            return (
                idx,
                all(Fate::Deferred {
                    reply: SHUTTING_DOWN.into(),
                    remote: String::new(),
                }),
            );
        }
    };
    // It may have been suspended while this message waited for a slot: do not connect then.
    if let Some(until) = ctx.suspended_until(&dest) {
        return (idx, all(suspended(until)));
    }
    let _global = ctx.delivery_slots.acquire().await;
    let mut cfg = ctx.client.clone();
    if let Some(e) = pick_egress(pool) {
        if !e.ehlo_name.is_empty() {
            cfg.ehlo_name = e.ehlo_name.clone();
        }
        cfg.source_address = e.source_address.parse().ok();
    }
    let recipients: Vec<OutgoingRecipient<'_>> = idx
        .iter()
        .filter_map(|i| env.recipients.get(*i))
        .map(outgoing_recipient)
        .collect();
    let ret = env
        .dsn
        .as_ref()
        .and_then(|d| match DsnRet::try_from(d.ret) {
            Ok(DsnRet::Full) => Some("FULL"),
            Ok(DsnRet::Hdrs) => Some("HDRS"),
            _ => None,
        });
    let envid = env
        .dsn
        .as_ref()
        .map(|d| d.envid.as_str())
        .filter(|s| !s.is_empty());
    let msg = OutgoingMessage {
        reverse_path: &reverse_path,
        recipients,
        body: qm.body(),
        smtputf8: env.smtputf8,
        eight_bit: env.body_type == BodyType::BodyType8bitmime as i32,
        ret,
        envid,
    };
    let started = Instant::now();
    ctx.metrics
        .delivery_connections_active
        .with_label_values(&[&pool.name])
        .inc();
    let max_per_conn = if pool.max_messages_per_connection == 0 {
        100
    } else {
        pool.max_messages_per_connection
    };
    let result = deliver_group(&ctx.conns, &targets, &cfg, max_per_conn, &msg).await;
    ctx.metrics
        .delivery_connections_active
        .with_label_values(&[&pool.name])
        .dec();
    ctx.metrics
        .delivery_duration
        .with_label_values(&[&pool.name])
        .observe(started.elapsed().as_secs_f64());
    for t in &result.failed_targets {
        if let Some(i) = t.upstream {
            ctx.record_upstream(pool, i, false);
        }
    }
    if let Some(i) = result.used.as_ref().and_then(|t| t.upstream) {
        ctx.record_upstream(pool, i, true);
    }
    ctx.record_destination(&dest, result.used.is_some());
    let label = if result.used.is_some() {
        "connected"
    } else {
        "connect_failed"
    };
    ctx.metrics
        .delivery_attempts
        .with_label_values(&[&pool.name, label])
        .inc();
    let fates = result.attempts;
    (idx, fates)
}

/// Log and count the addresses direct delivery would not connect to (one line per group).
fn count_refused(
    ctx: &Ctx,
    pool: &SendingPool,
    env: &Envelope,
    dest: &str,
    refused: &[RefusedAddress],
) {
    if refused.is_empty() {
        return;
    }
    for r in refused {
        ctx.metrics
            .delivery_refused_addresses
            .with_label_values(&[&pool.name, r.class.as_str()])
            .inc();
    }
    let list: Vec<String> = refused
        .iter()
        .map(|r| format!("{} ({})", r.ip, r.class.as_str()))
        .collect();
    tracing::warn!(
        queue_id = %env.id,
        pool = %pool.name,
        destination = %dest,
        refused = %list.join(", "),
        "direct delivery does not connect to these addresses (not globally reachable, not in spec.delivery.allowedNetworks)"
    );
}

fn outgoing_recipient(r: &Recipient) -> OutgoingRecipient<'_> {
    OutgoingRecipient {
        address: &r.address,
        notify: notify_param(r),
        orcpt: (!r.orcpt.is_empty()).then_some(r.orcpt.as_str()),
    }
}

/// The client's `NOTIFY` as given at ingress, relayed to a DSN-capable next hop (RFC 3461
/// §4.1): without it the next hop would apply the default (FAILURE,DELAY) and could bounce
/// mail whose sender asked for NEVER.
fn notify_param(r: &Recipient) -> Option<&'static str> {
    if r.notify_never {
        return Some("NEVER");
    }
    match (r.notify_success, r.notify_failure, r.notify_delay) {
        (false, false, false) => None,
        (true, false, false) => Some("SUCCESS"),
        (false, true, false) => Some("FAILURE"),
        (false, false, true) => Some("DELAY"),
        (true, true, false) => Some("SUCCESS,FAILURE"),
        (true, false, true) => Some("SUCCESS,DELAY"),
        (false, true, true) => Some("FAILURE,DELAY"),
        (true, true, true) => Some("SUCCESS,FAILURE,DELAY"),
    }
}

/// Log, count, publish follow-ups, then ack.
async fn finish(
    ctx: &Ctx,
    pool: &SendingPool,
    qm: &QueuedMessage,
    schedule: &RetrySchedule,
    mut fates: Vec<Fate>,
) {
    let env = &qm.envelope;
    let attempt = env.attempt.saturating_add(1);
    let now = now_ms();
    // Deferred recipients either go to the next tier (due time jittered by up to 10 % of the
    // tier delay, so mail deferred together does not come back together) or, past maxAge,
    // expire now.
    let decision = schedule.next_jittered(attempt, env.received_at_ms, now, &env.id);
    if matches!(decision, RetryDecision::Expire) {
        for f in fates.iter_mut() {
            if let Fate::Deferred { reply, remote } = f {
                *f = Fate::Expired {
                    reply: reply.clone(),
                    remote: remote.clone(),
                };
            }
        }
    }
    for (r, f) in env.recipients.iter().zip(&fates) {
        log_outcome(ctx, pool, env, r, f, attempt, now);
    }
    crate::bounces::record_suppressions(ctx, env, &fates).await;
    let mut follow_ups: Vec<(String, String, Envelope)> = Vec::new();
    let deferred: Vec<Recipient> = env
        .recipients
        .iter()
        .zip(&fates)
        .filter_map(|(r, f)| match f {
            Fate::Deferred { reply, remote } => {
                let mut r = r.clone();
                r.last_reply = reply.clone();
                r.last_remote = remote.clone();
                Some(r)
            }
            _ => None,
        })
        .collect();
    if let (
        false,
        RetryDecision::Retry {
            tier,
            not_before_ms,
        },
    ) = (deferred.is_empty(), decision)
    {
        let mut last_delay_notice_ms = env.last_delay_notice_ms;
        if delay_notice_due(ctx, env, now)
            && let Some(notice) = dsn_for(ctx, env, &fates, attempt, Notice::Delay)
        {
            ctx.metrics
                .delivery_delay_notices
                .with_label_values(&[&pool.name])
                .inc();
            last_delay_notice_ms = now;
            follow_ups.push((new_subject(&pool.name), notice.id.clone(), notice));
        }
        let mut next = env.clone();
        next.last_delay_notice_ms = last_delay_notice_ms;
        next.recipients = deferred;
        next.attempt = attempt;
        next.retry_tier = tier;
        next.not_before_ms = not_before_ms;
        follow_ups.push((
            retry_subject(&pool.name, tier),
            follow_up_msg_id(&env.id, attempt, FollowUp::Retry),
            next,
        ));
    }
    if let Some(dsn) = dsn_for(ctx, env, &fates, attempt, Notice::Final) {
        ctx.metrics
            .delivery_dsn_generated
            .with_label_values(&[&pool.name])
            .inc();
        follow_ups.push((new_subject(&pool.name), dsn.id.clone(), dsn));
    }
    for (subject, msg_id, e) in &follow_ups {
        if let Err(err) = ctx.publisher.publish(subject, msg_id, e).await {
            tracing::error!(queue_id = %env.id, error = %err, "follow-up publish failed; leaving message for redelivery");
            return;
        }
    }
    if let Err(err) = qm.ack().await {
        tracing::warn!(queue_id = %env.id, error = %err, "ack failed; message will be redelivered");
        return;
    }
    if let Some(name) = &qm.object_ref {
        let _ = ctx.publisher.delete_body(name).await;
    }
}

/// Whether the message's relay domain wants a delay notice now (`spec.delayNotice`).
fn delay_notice_due(ctx: &Ctx, env: &Envelope, now: i64) -> bool {
    let Some(n) = ctx
        .bounces
        .plan(&env.relay_domain)
        .and_then(|p| p.delay_notice)
    else {
        return false;
    };
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    baton_core::dsn::delay_notice_due(
        env.received_at_ms,
        env.last_delay_notice_ms,
        now,
        ms(n.after_secs),
        ms(n.interval_secs),
    )
}

fn log_outcome(
    ctx: &Ctx,
    pool: &SendingPool,
    env: &Envelope,
    r: &Recipient,
    f: &Fate,
    attempt: u32,
    now: i64,
) {
    let delay = now.saturating_sub(env.received_at_ms).max(0) as f64 / 1000.0;
    let class = f.class(&ctx.classifier);
    let (status, reply, remote) = match f {
        Fate::Delivered { reply, remote, .. } => ("sent", reply, remote.as_str()),
        Fate::Deferred { reply, remote } => ("deferred", reply, remote.as_str()),
        Fate::Failed { reply, remote, .. } => ("bounced", reply, remote.as_str()),
        Fate::Expired { reply, remote } => ("expired", reply, remote.as_str()),
    };
    let dest = domain_of(&r.address);
    tracing::info!(
        queue_id = %env.id,
        pool = %pool.name,
        relay_domain = %env.relay_domain,
        to = %r.address,
        relay = %remote,
        destination = %dest,
        attempt,
        delay,
        status,
        class = class.map(|c| c.as_str()).unwrap_or(""),
        dsn = env.kind == EnvelopeKind::Dsn as i32,
        reply = %reply,
        "status={status}"
    );
    let outcome = match f {
        Fate::Delivered { .. } => "delivered",
        Fate::Deferred { .. } => "deferred",
        Fate::Failed { .. } => "bounced",
        Fate::Expired { .. } => "expired",
    };
    ctx.metrics
        .delivery_recipients
        .with_label_values(&[&pool.name, &env.relay_domain, outcome])
        .inc();
    if let Some(class) = class {
        ctx.metrics
            .delivery_bounces
            .with_label_values(&[&pool.name, class.as_str(), outcome])
            .inc();
    }
    if let Fate::Delivered { .. } = f {
        ctx.metrics
            .delivery_accept_to_delivery
            .with_label_values(&[&pool.name])
            .observe(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_is_relayed_as_given() {
        let r = |never, success, failure, delay| Recipient {
            notify_never: never,
            notify_success: success,
            notify_failure: failure,
            notify_delay: delay,
            ..Default::default()
        };
        assert_eq!(notify_param(&r(false, false, false, false)), None);
        assert_eq!(notify_param(&r(true, false, false, false)), Some("NEVER"));
        assert_eq!(
            notify_param(&r(false, true, true, false)),
            Some("SUCCESS,FAILURE")
        );
        assert_eq!(
            notify_param(&r(false, false, true, true)),
            Some("FAILURE,DELAY")
        );
        assert_eq!(
            outgoing_recipient(&r(false, true, false, false)).notify,
            Some("SUCCESS")
        );
    }
}
