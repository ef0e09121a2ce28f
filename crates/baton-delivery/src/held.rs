//! Holds at delivery time: before a worker tries a message (and again when a retry's wait
//! ends), the recipients an operator's hold covers (`baton_core::hold`) are moved to the
//! pool's held place `baton.held.<pool>`, which no worker consumes, so held mail never
//! occupies a consumer or delays other mail. The operations API moves them back on release.
//!
//! The move is publish-then-ack with the deterministic `Nats-Msg-Id`
//! `<envelope id>.held-<stream sequence>`: a crash in between republishes the same id
//! (stored once), and a message held again after a release is a new stored message with a new
//! sequence, so it is never mistaken for a duplicate.

use baton_core::hold::Verdict;
use baton_queue::{QueuedMessage, held_subject};

use crate::Ctx;
use crate::plan::PoolPlan;

/// Move what the holds cover out of `qm`. True when nothing is left to deliver (the whole
/// message was held and acknowledged, or the move failed and it waits for redelivery); false
/// when `qm` (possibly with fewer recipients) is to be delivered.
pub(crate) async fn divert(ctx: &Ctx, pool: &PoolPlan, qm: &mut QueuedMessage) -> bool {
    let env = &qm.envelope;
    let queue_id = if env.origin_id.is_empty() {
        &env.id
    } else {
        &env.origin_id
    };
    let rcpts: Vec<&str> = env.recipients.iter().map(|r| r.address.as_str()).collect();
    let (target, idx) = match ctx
        .holds
        .verdict(&pool.name, &env.relay_domain, queue_id, &rcpts)
    {
        Verdict::Deliver => return false,
        Verdict::All(t) => (t, (0..rcpts.len()).collect::<Vec<_>>()),
        Verdict::Some(t, idx) => (t, idx),
    };
    let all = idx.len() == env.recipients.len();
    let mut held = env.clone();
    held.recipients = idx
        .iter()
        .filter_map(|&i| env.recipients.get(i).cloned())
        .collect();
    held.not_before_ms = 0;
    // A large body stays in the object store, referenced by the held envelope.
    if let Some(body) = &qm.object_ref {
        body.attach(&mut held);
    }
    let msg_id = format!("{}.held-{}", env.id, qm.stream_sequence);
    let subject = held_subject(&pool.name);
    if let Err(e) = ctx.publisher.publish(&subject, &msg_id, &held).await {
        tracing::warn!(queue_id = %env.id, error = %e, "could not move held recipients; the message is redelivered after ack_wait");
        return true;
    }
    ctx.metrics.held.with_label_values(&[&pool.name]).inc();
    let to: Vec<&str> = held.recipients.iter().map(|r| r.address.as_str()).collect();
    ctx.publisher.emit(
        baton_core::event::Event::new(
            baton_core::event::EventType::Held,
            queue_id,
            &env.relay_domain,
            baton_core::clock::now_ms(),
            msg_id.clone(),
        )
        .with("pool", pool.name.as_str())
        .with("hold", target.describe())
        .with("recipients", to),
    );
    for r in &held.recipients {
        tracing::info!(
            queue_id = %env.id, pool = %pool.name, relay_domain = %env.relay_domain,
            to = %r.address, hold = %target.describe(), status = "held",
            "held: moved to {subject} until the hold is released"
        );
    }
    if all {
        if let Err(e) = qm.ack().await {
            tracing::warn!(queue_id = %env.id, error = %e, "ack after holding failed; the message is redelivered and held again (stored once)");
        }
        return true;
    }
    let keep: Vec<_> = qm
        .envelope
        .recipients
        .iter()
        .enumerate()
        .filter(|(i, _)| !idx.contains(i))
        .map(|(_, r)| r.clone())
        .collect();
    qm.envelope.recipients = keep;
    // The held envelope references the large body now: the rest must not delete it (a retry
    // of the rest stores its own copy).
    qm.object_ref = None;
    false
}
