//! One destination group of a message — the recipients that share a destination (a domain,
//! or the pool's smarthosts) and a sender — taken through the steps of an attempt: **admit**
//! (not suspended; a connection slot for the destination, or a deferral when it stays busy),
//! **resolve** (the route: MX hosts, an address literal or smarthosts), **shape** (the
//! pool-wide limits of the destination's site, `shaping`: held back without counting an
//! attempt), **attempt** (the SMTP transaction over a reused or new connection) and
//! **record** (upstream health, destination suspension, throttling back-off, metrics). Each
//! step is a function; the outcome per recipient comes back to `process`.

use std::time::Instant;

use baton_core::destination::RefusedAddress;
use baton_core::outcome::RecipientOutcome;
use baton_core::routing::CongestionPolicy;
use baton_core::routing::shaping::{ShapingReason, is_throttle};
use baton_proto::v1::{BodyType, DsnRet, Envelope, Recipient};
use baton_queue::QueuedMessage;
use baton_smtp::catalogue;
use baton_smtp_client::{Notify, OutgoingMessage, OutgoingRecipient};

use crate::deliver::{GroupResult, SmtpConnector, deliver_group};
use crate::plan::EgressIdentity;
use crate::plan::PoolPlan;
use crate::route::{Route, Target, route};
use crate::shaping::{self, CappedLease, Held};
use crate::slots::{Grant, Slot};
use crate::{Ctx, WindowPlace, now_ms};

/// One destination group of a message.
pub(crate) struct Group<'m> {
    /// The message.
    pub qm: &'m QueuedMessage,
    /// Recipient domain; empty for smarthost delivery (one group per sender).
    pub domain: String,
    /// The destination's key for slots and suspension: the domain, or `smarthosts:<pool>`.
    pub dest: String,
    /// The envelope sender for this group (a VERP address with a return path).
    pub sender: String,
    /// Indexes of the group's recipients in the envelope.
    pub idx: Vec<usize>,
}

/// What one destination group came to.
pub(crate) enum GroupPass {
    /// Outcomes for the group's recipients, in the group's order, each with — for a deferral
    /// by shaping that does not count as an attempt — when it wants to come back (ms).
    Done(Vec<(RecipientOutcome, Option<i64>)>),
    /// The worker shut down while the group waited for a connection slot.
    ShutDown,
}

impl Group<'_> {
    /// The same outcome for every recipient of the group (counted as an attempt).
    fn all(&self, outcome: RecipientOutcome) -> GroupPass {
        GroupPass::Done(vec![(outcome, None); self.idx.len()])
    }

    /// Every recipient held back by shaping: deferred without counting an attempt.
    fn held(&self, site: &str, held: Held) -> GroupPass {
        let reply = shaping::reply(held.reason, site, held.want_ms);
        let outcome = RecipientOutcome::deferred(reply, "");
        GroupPass::Done(vec![(outcome, Some(held.want_ms)); self.idx.len()])
    }
}

/// Deliver one group: admit, resolve, shape (the pool's shared limits of the destination's
/// site: back-off, connections, rate, warm-up — `shaping`), attempt, record.
pub(crate) async fn deliver(
    ctx: &Ctx,
    pool: &PoolPlan,
    group: &Group<'_>,
    place: &WindowPlace,
    congestion: CongestionPolicy,
) -> GroupPass {
    if let Some(outcome) = suspended(ctx, &group.dest) {
        return group.all(outcome);
    }
    let targets = match resolve(ctx, pool, group).await {
        Ok(targets) => targets,
        Err(outcome) => return group.all(outcome),
    };
    let site = shaping::site(pool, &targets);
    if let Some(held) = backing_off(ctx, &site).await {
        ctx.metrics
            .destination_waits
            .with_label_values(&[&pool.name, held.reason.as_str()])
            .inc();
        return group.held(&site, held);
    }
    let _slot = match admit(ctx, pool, group, place, congestion).await {
        Admission::Slot(slot) => slot,
        Admission::Refused(outcome) => return group.all(outcome),
        Admission::ShutDown => return GroupPass::ShutDown,
    };
    let first_retry_ms = i64::try_from(
        pool.retry
            .tiers()
            .first()
            .copied()
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX);
    let limits = pool
        .destination_limits
        .for_destination(&site, &group.domain);
    let shaped = shaping::admit(ctx, pool, &limits, place, congestion, first_retry_ms).await;
    let (lease, egress) = match shaped {
        shaping::Admitted::Go { lease, egress } => (lease, egress),
        shaping::Admitted::Held(held) => return group.held(&site, held),
        shaping::Admitted::ShutDown => return GroupPass::ShutDown,
    };
    // Throttled while this message waited: do not connect then.
    if let Some(held) = backing_off(ctx, &site).await {
        shaping::give_back(ctx, lease);
        return group.held(&site, held);
    }
    // A connection holding a pool-wide lease keeps it while it is idle for reuse; the lease
    // goes when the connection is closed.
    let result = attempt(ctx, pool, group, &targets, egress.as_ref(), lease).await;
    recorded(ctx, pool, group, &site, result).await
}

/// Whether every worker of the pool backs off `site` after a throttling reply: until when.
async fn backing_off(ctx: &Ctx, site: &str) -> Option<Held> {
    let until = ctx.shaper.held_off(site, now_ms()).await?;
    Some(Held {
        reason: ShapingReason::Backoff,
        want_ms: until.saturating_sub(now_ms()),
    })
}

/// Record an attempt's result and turn it into the group's outcomes. A throttling reply
/// holds the site off across the pool and its recipients are deferred without counting an
/// attempt (and without counting towards the destination's suspension).
async fn recorded(
    ctx: &Ctx,
    pool: &PoolPlan,
    group: &Group<'_>,
    site: &str,
    result: GroupResult,
) -> GroupPass {
    let throttled = result
        .attempts
        .iter()
        .any(|o| o.is_deferred() && is_throttle(&o.reply));
    if !throttled {
        if result.attempts.iter().any(RecipientOutcome::is_delivered) {
            ctx.shaper.succeeded(site);
        }
        record(ctx, pool, &group.dest, &result, false);
        return GroupPass::Done(result.attempts.into_iter().map(|o| (o, None)).collect());
    }
    let (delay, shared) = ctx.shaper.throttled(site, pool.backoff, now_ms()).await;
    ctx.metrics
        .destination_throttled
        .with_label_values(&[&pool.name])
        .inc();
    if !shared {
        ctx.count_limit_fallback("backoff");
    }
    tracing::info!(
        queue_id = %group.qm.envelope.id,
        pool = %pool.name,
        destination = %group.dest,
        site = %site,
        backoff_ms = delay,
        "destination throttled us; every worker of the pool backs off"
    );
    record(ctx, pool, &group.dest, &result, true);
    let outcomes = result
        .attempts
        .into_iter()
        .map(|o| {
            let uncounted = (o.is_deferred() && is_throttle(&o.reply)).then_some(delay);
            (o, uncounted)
        })
        .collect();
    GroupPass::Done(outcomes)
}

/// A deferral while the destination is suspended after repeated failures.
fn suspended(ctx: &Ctx, dest: &str) -> Option<RecipientOutcome> {
    let until = ctx.suspended_until(dest)?;
    let reply = catalogue::destination_suspended(dest, until);
    Some(RecipientOutcome::deferred(reply, ""))
}

/// Resolve: the targets to try, or the outcome of a route that does not connect (null MX, no
/// such domain, DNS trouble, only refused addresses).
async fn resolve(
    ctx: &Ctx,
    pool: &PoolPlan,
    group: &Group<'_>,
) -> Result<Vec<Target>, RecipientOutcome> {
    let (routed, refused) = route(ctx.dns.as_ref(), pool, &ctx.health, &group.domain).await;
    count_refused(ctx, pool, &group.qm.envelope, &group.dest, &refused);
    match routed {
        Route::Targets(t) => Ok(t),
        verdict => {
            let reply = verdict
                .reply()
                .unwrap_or_else(catalogue::no_delivery_target);
            Err(RecipientOutcome::from_reply(reply, "", false))
        }
    }
}

enum Admission<'a> {
    /// Connect now; the slot is given back when dropped.
    Slot(Slot<'a>),
    /// Deferred: the destination stays busy longer than the first retry, or was suspended
    /// while the message waited.
    Refused(RecipientOutcome),
    /// The worker is shutting down.
    ShutDown,
}

/// Admit: a connection slot for the destination (waiting, with the message's window place given
/// back, while it is busy), then the worker-wide delivery limit.
async fn admit<'c>(
    ctx: &'c Ctx,
    pool: &PoolPlan,
    group: &Group<'_>,
    place: &WindowPlace,
    congestion: CongestionPolicy,
) -> Admission<'c> {
    let cap = pool.max_connections_per_destination;
    let policy = if ctx.crowded() {
        congestion.crowded()
    } else {
        congestion
    };
    let mut waited = false;
    let grant = ctx
        .dests
        .acquire(&group.dest, cap, policy, &ctx.release, || {
            waited = true;
            ctx.begin_wait(place);
        })
        .await;
    if waited {
        ctx.end_wait();
    }
    match grant {
        Grant::Slot(slot) => {
            // It may have been suspended while this message waited: do not connect then.
            match suspended(ctx, &group.dest) {
                Some(outcome) => Admission::Refused(outcome),
                None => Admission::Slot(slot),
            }
        }
        Grant::Busy { waiting, estimated } => {
            ctx.metrics
                .delivery_attempts
                .with_label_values(&[&pool.name, "destination_busy"])
                .inc();
            let reply = catalogue::destination_busy(&group.dest, waiting, cap, estimated.as_secs());
            Admission::Refused(RecipientOutcome::deferred(reply, ""))
        }
        Grant::Closed => Admission::ShutDown,
    }
}

/// Attempt: one SMTP transaction for the group's recipients over the targets in order, under
/// the worker-wide concurrency limit, with the chosen egress identity; `lease`: the capped
/// site's pool-wide lease (kept with the connection if it is kept for another message).
async fn attempt(
    ctx: &Ctx,
    pool: &PoolPlan,
    group: &Group<'_>,
    targets: &[Target],
    egress: Option<&EgressIdentity>,
    lease: Option<CappedLease>,
) -> GroupResult {
    let env = &group.qm.envelope;
    let _global = ctx.delivery_slots.acquire().await;
    let mut cfg = ctx.client.clone();
    cfg.ehlo_name = pool.default_name(&ctx.client.ehlo_name).to_owned();
    if let Some(e) = egress {
        if let Some(name) = &e.ehlo_name {
            cfg.ehlo_name = name.clone();
        }
        cfg.source_address = e.source_address;
    }
    let recipients: Vec<OutgoingRecipient<'_>> = group
        .idx
        .iter()
        .filter_map(|i| env.recipients.get(*i))
        .map(outgoing_recipient)
        .collect();
    let ret = env
        .dsn
        .as_ref()
        .and_then(|d| match DsnRet::try_from(d.ret) {
            Ok(DsnRet::Full) => Some(baton_smtp_client::DsnRet::Full),
            Ok(DsnRet::Hdrs) => Some(baton_smtp_client::DsnRet::Headers),
            _ => None,
        });
    let envid = env
        .dsn
        .as_ref()
        .map(|d| d.envid.as_str())
        .filter(|s| !s.is_empty());
    let msg = OutgoingMessage {
        reverse_path: &group.sender,
        recipients,
        body: group.qm.body(),
        smtputf8: env.smtputf8,
        eight_bit: env.body_type == BodyType::BodyType8bitmime as i32,
        ret,
        envid,
    };
    let started = Instant::now();
    let active = ctx
        .metrics
        .delivery_connections_active
        .with_label_values(&[&pool.name]);
    active.inc();
    let result = deliver_group(
        &SmtpConnector,
        &ctx.conns,
        targets,
        &cfg,
        pool.max_messages_per_connection,
        &msg,
        lease,
    )
    .await;
    active.dec();
    ctx.metrics
        .delivery_duration
        .with_label_values(&[&pool.name])
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Record: smarthost health, the destination's failure count (suspension; not for a
/// throttling reply, which backs off instead) and the attempt metric.
fn record(ctx: &Ctx, pool: &PoolPlan, dest: &str, result: &GroupResult, throttled: bool) {
    for t in &result.failed_targets {
        if let Some(i) = t.upstream {
            ctx.record_upstream(pool, i, false);
        }
    }
    if let Some(i) = result.used.as_ref().and_then(|t| t.upstream) {
        ctx.record_upstream(pool, i, true);
    }
    if !throttled || result.used.is_some() {
        ctx.record_destination(dest, result.used.is_some());
    }
    let label = if result.used.is_some() {
        "connected"
    } else {
        "connect_failed"
    };
    ctx.metrics
        .delivery_attempts
        .with_label_values(&[&pool.name, label])
        .inc();
}

/// Log and count the addresses direct delivery would not connect to (one line per group).
fn count_refused(
    ctx: &Ctx,
    pool: &PoolPlan,
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
/// mail whose sender asked for NEVER. `None` when the client gave none.
fn notify_param(r: &Recipient) -> Option<Notify> {
    let notify = Notify {
        never: r.notify_never,
        success: r.notify_success,
        failure: r.notify_failure,
        delay: r.notify_delay,
    };
    (!notify.is_unset()).then_some(notify)
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
        let wire = |n: Option<Notify>| n.map(|n| n.to_string());
        assert_eq!(wire(notify_param(&r(false, false, false, false))), None);
        assert_eq!(
            wire(notify_param(&r(true, false, false, false))).as_deref(),
            Some("NEVER")
        );
        assert_eq!(
            wire(notify_param(&r(false, true, true, false))).as_deref(),
            Some("SUCCESS,FAILURE")
        );
        assert_eq!(
            wire(notify_param(&r(false, false, true, true))).as_deref(),
            Some("FAILURE,DELAY")
        );
        assert_eq!(
            wire(notify_param(&r(false, true, true, true))).as_deref(),
            Some("SUCCESS,FAILURE,DELAY")
        );
        assert_eq!(
            wire(outgoing_recipient(&r(false, true, false, false)).notify).as_deref(),
            Some("SUCCESS")
        );
    }
}
