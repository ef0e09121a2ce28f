//! What a worker does with one queued message: wait until it is due, check expiry, deliver
//! each destination group, log one line per recipient outcome, publish follow-ups (retry
//! envelope for deferred recipients, one DSN for failed/expired ones) and only then ack the
//! original. Follow-ups carry deterministic `Nats-Msg-Id`s, so a crash between publishing
//! them and the ack duplicates nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_core::ids::{FollowUp, follow_up_msg_id};
use baton_core::outcome::RecipientOutcome;
use baton_core::retry::{RetryDecision, RetrySchedule};
use baton_core::routing::CongestionPolicy;
use baton_core::routing::shaping::uncounted_retry;
use baton_proto::v1::{Envelope, EnvelopeKind, Recipient, envelope::Body};
use baton_queue::{QueuedMessage, new_subject, retry_subject};
use baton_smtp::catalogue;

use crate::group::{self, Group, GroupPass};
use crate::notice::{Notice, dsn_for};
use crate::plan::PoolPlan;
use crate::{Ctx, WindowPlace, now_ms};

/// Process one message end to end. Returns without acking when a follow-up could not be
/// published: JetStream redelivers it after `ack_wait`.
pub(crate) async fn process(
    ctx: &Ctx,
    pool: &PoolPlan,
    mut qm: QueuedMessage,
    place: &WindowPlace,
) {
    if qm.delivered > 1 {
        ctx.metrics
            .delivery_redeliveries
            .with_label_values(&[&pool.name])
            .inc();
    }
    // Bounced by an operator: every recipient fails now, with a DSN to the sender.
    if !qm.envelope.operator_bounce.is_empty() {
        let reply = catalogue::bounced_by_operator(&qm.envelope.operator_bounce);
        let outcomes = qm
            .envelope
            .recipients
            .iter()
            .map(|_| RecipientOutcome::failed(reply.clone(), ""))
            .collect();
        finish(ctx, pool, &qm, &pool.retry, outcomes, &[]).await;
        return;
    }
    // Held mail does not wait for its due time: it leaves the lane at once.
    if crate::held::divert(ctx, pool, &mut qm).await {
        return;
    }
    let env = &qm.envelope;
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
        // Moved (retry now, bounce) or deleted by an operator while it waited: the copy
        // elsewhere is the one to deliver.
        if !qm.still_stored().await {
            tracing::info!(queue_id = %qm.envelope.id, sequence = qm.stream_sequence, "no longer queued here (moved or deleted by an operator); not attempted");
            if let Err(e) = qm.ack().await {
                tracing::debug!(error = %e, "ack of a message no longer stored");
            }
            return;
        }
        // A hold placed while it waited.
        if crate::held::divert(ctx, pool, &mut qm).await {
            return;
        }
    }
    let env = &qm.envelope;
    let schedule = &pool.retry;
    let (outcomes, uncounted) = if schedule.is_expired(env.received_at_ms, now_ms()) {
        let expired = env
            .recipients
            .iter()
            .map(RecipientOutcome::expired)
            .collect();
        (expired, Vec::new())
    } else {
        let congestion = CongestionPolicy::from_first_tier(schedule.tiers().first().copied());
        let work = deliver_all(ctx, pool, &qm, place, congestion);
        tokio::pin!(work);
        let mut tick = tokio::time::interval(ctx.progress_every);
        tick.tick().await;
        let pass = loop {
            tokio::select! {
                f = &mut work => break f,
                _ = tick.tick() => { let _ = qm.progress().await; }
            }
        };
        match pass {
            Pass::Attempted(outcomes, uncounted) => (outcomes, uncounted),
            // Shutdown ended every wait for a busy destination before anything was attempted:
            // give the message back for another worker, keeping its attempt count.
            Pass::ShutDown => {
                if let Err(e) = qm.release().await {
                    tracing::warn!(error = %e, "could not give back a waiting message on shutdown; it is redelivered after ack_wait");
                }
                return;
            }
        }
    };
    finish(ctx, pool, &qm, schedule, outcomes, &uncounted).await;
}

/// What one pass over a message's destination groups came to.
enum Pass {
    /// Outcomes per recipient, in envelope order, and per recipient when a deferral by
    /// shaping (not counted as an attempt) wants to come back (ms).
    Attempted(Vec<RecipientOutcome>, Vec<Option<i64>>),
    /// The worker shut down while every group waited for a connection slot: nothing was
    /// attempted.
    ShutDown,
}

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
    pool: &PoolPlan,
    qm: &QueuedMessage,
    place: &WindowPlace,
    congestion: CongestionPolicy,
) -> Pass {
    let env = &qm.envelope;
    let smarthost = pool.is_smarthost();
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
    let groups: Vec<Group<'_>> = groups
        .into_iter()
        .map(|((domain, sender), idx)| Group {
            qm,
            dest: if domain.is_empty() {
                format!("smarthosts:{}", pool.name)
            } else {
                domain.clone()
            },
            domain,
            sender,
            idx,
        })
        .collect();
    let runs = groups.iter().map(|g| async move {
        let pass = group::deliver(ctx, pool, g, place, congestion).await;
        (g.idx.clone(), pass)
    });
    let results = futures::future::join_all(runs).await;
    if suppressed.is_empty()
        && !results.is_empty()
        && results
            .iter()
            .all(|(_, g)| matches!(g, GroupPass::ShutDown))
    {
        return Pass::ShutDown;
    }
    let mut outcomes =
        vec![RecipientOutcome::deferred(catalogue::not_attempted(), ""); env.recipients.len()];
    let mut uncounted = vec![None; env.recipients.len()];
    let groups = results.into_iter().map(|(idx, g)| {
        let outcomes = match g {
            GroupPass::Done(o) => o,
            GroupPass::ShutDown => {
                let o = RecipientOutcome::deferred(catalogue::worker_shutting_down(), "");
                vec![(o, None); idx.len()]
            }
        };
        (idx, outcomes)
    });
    let suppressed = suppressed
        .into_iter()
        .map(|(i, o)| (vec![i], vec![(o, None)]));
    for (idx, group) in groups.chain(suppressed) {
        for (i, (o, u)) in idx.into_iter().zip(group) {
            if let (Some(slot), Some(w)) = (outcomes.get_mut(i), uncounted.get_mut(i)) {
                *slot = o;
                *w = u;
            }
        }
    }
    Pass::Attempted(outcomes, uncounted)
}

/// When a pass does not count as an attempt: every deferred recipient was held back by
/// shaping (`uncounted`, per recipient), and no recipient gets a final report this pass (so
/// the DSN ids, which carry the attempt number, stay unique). The latest wanted return (ms).
fn uncounted_want(
    env: &Envelope,
    outcomes: &[RecipientOutcome],
    uncounted: &[Option<i64>],
) -> Option<i64> {
    let mut want: Option<i64> = None;
    for (i, o) in outcomes.iter().enumerate() {
        if o.is_deferred() {
            let w = uncounted.get(i).copied().flatten()?;
            want = Some(want.map_or(w, |m| m.max(w)));
        } else if env
            .recipients
            .get(i)
            .is_some_and(|r| baton_core::outcome::report_wanted(r, o))
        {
            return None;
        }
    }
    want
}

/// Log, count, publish follow-ups, then ack. `uncounted`: per recipient, when a deferral by
/// shaping wants to come back (empty: none).
async fn finish(
    ctx: &Ctx,
    pool: &PoolPlan,
    qm: &QueuedMessage,
    schedule: &RetrySchedule,
    mut outcomes: Vec<RecipientOutcome>,
    uncounted: &[Option<i64>],
) {
    let env = &qm.envelope;
    let attempt = env.attempt.saturating_add(1);
    let now = now_ms();
    let held_back = uncounted_want(env, &outcomes, uncounted);
    // Deferred recipients either go to the next tier (due time jittered by up to 10 % of the
    // tier delay, so mail deferred together does not come back together) or, past maxAge,
    // expire now. Held back by shaping only: the attempt is not counted, and the message
    // comes back when the limit allows (on the tier that covers that wait).
    let decision = match held_back {
        Some(want_ms) => uncounted_retry(
            schedule,
            want_ms,
            env.received_at_ms,
            now,
            &format!("{}/{attempt}/s{}", env.id, qm.stream_sequence),
        ),
        None => schedule.next_jittered(attempt, env.received_at_ms, now, &env.id),
    };
    if matches!(decision, RetryDecision::Expire) {
        for o in outcomes.iter_mut() {
            if o.is_deferred() {
                *o = o.clone().into_expired();
            }
        }
    }
    for (r, o) in env.recipients.iter().zip(&outcomes) {
        let uncounted_pass = held_back.map(|_| qm.stream_sequence);
        log_outcome(ctx, pool, env, r, o, attempt, uncounted_pass, now);
    }
    crate::bounces::record_suppressions(ctx, env, &outcomes).await;
    let mut follow_ups: Vec<(String, String, Envelope)> = Vec::new();
    let deferred: Vec<Recipient> = env
        .recipients
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| o.is_deferred())
        .map(|(r, o)| {
            let mut r = r.clone();
            o.record_on(&mut r);
            r
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
            && let Some(notice) = dsn_for(ctx, pool, env, &outcomes, attempt, Notice::Delay)
        {
            ctx.metrics
                .delivery_delay_notices
                .with_label_values(&[&pool.name])
                .inc();
            last_delay_notice_ms = now;
            follow_ups.push((new_subject(&pool.name), notice.id.clone(), notice));
        }
        let mut next = env.clone();
        // A large body stays where it is: the retry references the same object instead of
        // uploading the body again (it is deleted after the final outcome, or expires with
        // the bucket's retention).
        if let Some(body) = &qm.object_ref {
            body.attach(&mut next);
        }
        next.last_delay_notice_ms = last_delay_notice_ms;
        next.recipients = deferred;
        next.retry_tier = tier;
        next.not_before_ms = not_before_ms;
        let mut msg_id = follow_up_msg_id(&env.id, attempt, FollowUp::Retry);
        if held_back.is_some() {
            // Not an attempt: the number stays, and the id names this stored copy (a
            // redelivery of it publishes the same id; the next copy has another sequence).
            next.attempt = env.attempt;
            msg_id = format!("{msg_id}.s{}", qm.stream_sequence);
        } else {
            next.attempt = attempt;
        }
        follow_ups.push((retry_subject(&pool.name, tier), msg_id, next));
    }
    if let Some(dsn) = dsn_for(ctx, pool, env, &outcomes, attempt, Notice::Final) {
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
    for (_, msg_id, e) in follow_ups
        .iter()
        .filter(|(_, _, e)| e.kind == EnvelopeKind::Dsn as i32)
    {
        let queue_id = if env.origin_id.is_empty() {
            &env.id
        } else {
            &env.origin_id
        };
        let to: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
        ctx.publisher.emit(
            baton_core::event::Event::new(
                baton_core::event::EventType::DsnQueued,
                queue_id,
                &env.relay_domain,
                now,
                msg_id.clone(),
            )
            .with("pool", pool.name.as_str())
            .with("dsnId", e.id.as_str())
            .with("to", to)
            .with("attempt", attempt),
        );
    }
    if let Err(err) = qm.ack().await {
        tracing::warn!(queue_id = %env.id, error = %err, "ack failed; message will be redelivered");
        return;
    }
    // The body object goes with the last envelope that references it.
    let retried = follow_ups
        .iter()
        .any(|(_, _, e)| matches!(&e.body, Some(Body::ObjectRef(_))));
    if let Some(body) = qm.object_ref.as_ref().filter(|_| !retried)
        && let Err(e) = ctx.publisher.delete_body(body).await
    {
        tracing::warn!(queue_id = %env.id, error = %e, "could not delete the body object; it expires with the bucket's retention");
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

/// One line per recipient outcome. `uncounted_pass`: the stream sequence of the stored copy
/// when this pass does not count as an attempt (every deferral was shaping's); it keeps the
/// event ids of such passes apart, since their attempt number repeats.
#[allow(clippy::too_many_arguments)]
fn log_outcome(
    ctx: &Ctx,
    pool: &PoolPlan,
    env: &Envelope,
    r: &Recipient,
    o: &RecipientOutcome,
    attempt: u32,
    uncounted_pass: Option<u64>,
    now: i64,
) {
    let counted = uncounted_pass.is_none();
    let delay = now.saturating_sub(env.received_at_ms).max(0) as f64 / 1000.0;
    let class = (!o.is_delivered()).then(|| ctx.classifier.classify_reply(&o.reply));
    let status = o.log_status();
    let dest = domain_of(&r.address);
    tracing::info!(
        queue_id = %env.id,
        pool = %pool.name,
        relay_domain = %env.relay_domain,
        to = %r.address,
        relay = %o.remote,
        destination = %dest,
        attempt,
        counted,
        delay,
        status,
        dsn_status = %o.status(),
        class = class.map(|c| c.as_str()).unwrap_or(""),
        dsn = env.kind == EnvelopeKind::Dsn as i32,
        reply = %o.reply,
        "status={status}"
    );
    let outcome = o.metric_label();
    if let Some(kind) = baton_core::event::EventType::of_outcome(outcome) {
        let queue_id = if env.origin_id.is_empty() {
            &env.id
        } else {
            &env.origin_id
        };
        ctx.publisher.emit(
            baton_core::event::Event::new(
                kind,
                queue_id,
                &env.relay_domain,
                now,
                match uncounted_pass {
                    None => format!("{}.{attempt}.{}", env.id, r.address),
                    Some(seq) => format!("{}.{attempt}.s{seq}.{}", env.id, r.address),
                },
            )
            .with("pool", pool.name.as_str())
            .with("recipient", r.address.as_str())
            .with("remote", o.remote.as_str())
            .with("reply", o.reply.to_string())
            .with("status", o.status().to_string())
            .with("class", class.map(|c| c.as_str()).unwrap_or(""))
            .with("attempt", attempt)
            .with("dsn", env.kind == EnvelopeKind::Dsn as i32),
        );
    }
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
    if o.is_delivered() {
        ctx.metrics
            .delivery_accept_to_delivery
            .with_label_values(&[&pool.name])
            .observe(delay);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_smtp::reply::Reply;

    #[test]
    fn only_passes_held_back_entirely_by_shaping_are_uncounted() {
        let env = Envelope {
            recipients: vec![Recipient::default(), Recipient::default()],
            ..Default::default()
        };
        let deferred = RecipientOutcome::deferred(Reply::from_line("451 4.4.5 held"), "");
        let sent = RecipientOutcome::from_reply(Reply::from_line("250 ok"), "mx", false);
        let failed = RecipientOutcome::failed(Reply::from_line("550 5.1.1 no"), "mx");
        let want = |o: Vec<RecipientOutcome>, u: Vec<Option<i64>>| uncounted_want(&env, &o, &u);
        assert_eq!(
            want(
                vec![deferred.clone(), deferred.clone()],
                vec![Some(5), Some(9)]
            ),
            Some(9),
            "the latest wanted return"
        );
        assert_eq!(
            want(
                vec![deferred.clone(), deferred.clone()],
                vec![Some(5), None]
            ),
            None,
            "a real deferral counts"
        );
        assert_eq!(
            want(vec![sent.clone(), deferred.clone()], vec![None, Some(5)]),
            Some(5)
        );
        assert_eq!(
            want(vec![failed, deferred.clone()], vec![None, Some(5)]),
            None,
            "a final report this pass counts (its DSN id carries the attempt)"
        );
        assert_eq!(
            want(vec![sent.clone(), sent], vec![]),
            None,
            "nothing deferred"
        );
        assert_eq!(want(vec![deferred.clone(), deferred], vec![]), None);
    }
}
