//! The notice a worker sends the sender after an attempt: one RFC 3464 DSN for the recipients
//! whose fate the sender asked to hear about (NOTIFY), built by `baton_core::dsn` and queued
//! like any other mail (null reverse-path, NOTIFY=NEVER, deterministic id).

use baton_core::dsn::{
    DsnInput, DsnRecipient, build_dsn, needs_8bitmime, needs_smtputf8, should_bounce,
};
use baton_core::ids::{FollowUp, follow_up_msg_id};
use baton_core::outcome::{RecipientOutcome, report_wanted};
use baton_proto::v1::{BodyType, Envelope, EnvelopeKind, Recipient, envelope::Body};

use crate::plan::PoolPlan;
use crate::{Ctx, now_ms};

/// Which notice: the final one (delivered, failed, expired recipients) or a delay notice
/// (deferred recipients only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    Final,
    Delay,
}

/// One DSN for the recipients whose fate the sender asked to hear about.
pub(crate) fn dsn_for(
    ctx: &Ctx,
    pool: &PoolPlan,
    env: &Envelope,
    outcomes: &[RecipientOutcome],
    attempt: u32,
    notice: Notice,
) -> Option<Envelope> {
    if !should_bounce(env) {
        return None;
    }
    let mut recipients = Vec::new();
    for (r, outcome) in env.recipients.iter().zip(outcomes) {
        // The block comes from baton-core (one definition of action and status: expired is
        // `failed` with 5.4.7, deferred is `delayed`); the remote MTA is the outcome's.
        let wanted = match notice {
            Notice::Delay => outcome.is_deferred(),
            Notice::Final => !outcome.is_deferred(),
        };
        if !wanted || !report_wanted(r, outcome) {
            continue;
        }
        let mut block = DsnRecipient::from_outcome(r, outcome);
        block.class =
            (!outcome.is_delivered()).then(|| ctx.classifier.classify_reply(&outcome.reply));
        recipients.push(block);
    }
    if recipients.is_empty() {
        return None;
    }
    let kind = match notice {
        Notice::Final => FollowUp::Dsn,
        Notice::Delay => FollowUp::Delay,
    };
    let dsn_id = follow_up_msg_id(&env.id, attempt, kind);
    let plan = ctx.bounces.plan(&env.relay_domain);
    let from = plan.as_ref().map_or("", |p| p.postmaster.as_str());
    let body = build_dsn(&DsnInput {
        reporting_mta: pool.default_name(&ctx.client.ehlo_name),
        from,
        original: env,
        original_message: match &env.body {
            Some(Body::InlineBody(b)) => b.as_ref(),
            _ => &[],
        },
        recipients,
        arrival_ms: env.received_at_ms,
        now: baton_core::clock::now(),
        dsn_id: &dsn_id,
    });
    // Signed with the domain's keys (its postmaster is in the domain, so the signature aligns).
    let body = match plan.as_ref().and_then(|p| p.dkim.as_ref()) {
        Some(signer) => match signer.sign(&[&body]) {
            Ok(mut signed) => {
                signed.extend_from_slice(&body);
                signed
            }
            Err(e) => {
                tracing::warn!(relay_domain = %env.relay_domain, error = %e, "DSN sent unsigned");
                body
            }
        },
        None => body,
    };
    let body_type = if needs_8bitmime(&body) {
        BodyType::BodyType8bitmime
    } else {
        BodyType::BodyType7bit
    };
    Some(Envelope {
        id: dsn_id.clone(),
        reverse_path: String::new(),
        recipients: vec![Recipient {
            address: env.reverse_path.clone(),
            notify_never: true,
            ..Default::default()
        }],
        relay_domain: env.relay_domain.clone(),
        pool: env.pool.clone(),
        client_address: String::new(),
        authenticated_as: String::new(),
        received_at_ms: now_ms(),
        attempt: 0,
        not_before_ms: 0,
        size: body.len() as u64,
        body: Some(Body::InlineBody(body.into())),
        dsn: None,
        // Only the DSN's own envelope and headers count (RFC 6533): a DSN about a UTF-8
        // message to an ASCII sender must reach servers without SMTPUTF8.
        smtputf8: needs_smtputf8(env, &ctx.client.ehlo_name),
        body_type: body_type as i32,
        helo: String::new(),
        kind: EnvelopeKind::Dsn as i32,
        retry_tier: 0,
        origin_id: env.id.clone(),
        last_delay_notice_ms: 0,
        operator_bounce: String::new(),
        object_bucket: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::outcome::Disposition;

    #[test]
    fn expired_recipients_are_reported_failed_with_5_4_7() {
        let r = Recipient {
            address: "a@dest.test".into(),
            ..Default::default()
        };
        let o = RecipientOutcome::expired(&Recipient {
            last_reply: "451 4.7.1 later".into(),
            last_remote: "mx[127.0.0.1]".into(),
            ..Default::default()
        });
        assert_eq!(o.disposition, Disposition::Expired);
        let block = DsnRecipient::from_outcome(&r, &o);
        assert_eq!(block.status, "5.4.7");
        assert_eq!(block.action, baton_core::dsn::DsnAction::Failed);
        assert_eq!(block.remote_mta.as_deref(), Some("mx[127.0.0.1]"));
        assert_eq!(block.diagnostic.as_deref(), Some("451 4.7.1 later"));
    }
}
