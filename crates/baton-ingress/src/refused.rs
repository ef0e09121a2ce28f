//! `refused` delivery events: a refusal in a transaction whose RelayDomain is known (a
//! recipient refused at RCPT, the message refused at the end of DATA) is an event of that
//! tenant, so its sinks and `trace` see why mail did not get in. Refusals before a RelayDomain
//! is known (an unknown sender, a client not allowed to relay) belong to no tenant: they are
//! counted (`baton_ingress_rejections_total`) and logged only.
//!
//! A client can make refusals as fast as it can send commands, so at most
//! [`PER_SECOND`] refused events per ingress process are published each second; beyond that
//! they are counted as `baton_events_total{type="refused",result="rate_limited"}`.

use baton_core::event::{Event, EventType};
use baton_smtp::{ListenerKind, Reply};
use parking_lot::Mutex;

use crate::shared::{Shared, listener_label};

/// Most refused events one ingress process publishes per second.
pub const PER_SECOND: u32 = 100;

/// The per-second budget of refused events.
#[derive(Debug, Default)]
pub struct Budget(Mutex<(i64, u32)>);

impl Budget {
    /// Whether one more event fits in the second `now_s`.
    pub fn take(&self, now_s: i64) -> bool {
        let mut g = self.0.lock();
        if g.0 != now_s {
            *g = (now_s, 0);
        }
        if g.1 >= PER_SECOND {
            return false;
        }
        g.1 += 1;
        true
    }
}

/// What is known about the refused transaction.
pub(crate) struct Refusal<'a> {
    pub relay_domain: &'a str,
    pub sender: String,
    pub client: std::net::IpAddr,
    pub listener: ListenerKind,
    pub authenticated: Option<&'a str>,
    /// `command` (a command of the transaction, e.g. RCPT) or `data` (the message at the end
    /// of DATA).
    pub phase: &'static str,
}

/// Whether `reply` makes a `refused` event: a 4xx or 5xx, with events on. Checked before a
/// [`Refusal`] is built, so the replies that accept (most of them) cost nothing here.
pub(crate) fn wanted(shared: &Shared, reply: &Reply) -> bool {
    shared.publisher.emits_events() && (reply.is_transient() || reply.is_permanent())
}

/// Publish the `refused` event of `reply` (a 4xx or 5xx) if the budget allows.
pub(crate) fn emit(shared: &Shared, refusal: &Refusal<'_>, reply: &Reply) {
    if !wanted(shared, reply) {
        return;
    }
    let now_ms = baton_core::clock::now_ms();
    if !shared.refused_budget.take(now_ms.div_euclid(1000)) {
        shared
            .metrics
            .events
            .with_label_values(&["refused", "rate_limited"])
            .inc();
        return;
    }
    let id = baton_core::ids::new_queue_id(now_ms, &mut rand::rng());
    let event = Event::new(EventType::Refused, &id, refusal.relay_domain, now_ms, "0")
        .with("phase", refusal.phase)
        .with(
            "reply",
            String::from_utf8_lossy(&reply.to_bytes()).trim_end(),
        )
        .with("code", reply.code)
        .with(
            "status",
            reply.status.map(|s| s.to_string()).unwrap_or_default(),
        )
        .with("sender", refusal.sender.as_str())
        .with("clientAddress", refusal.client.to_string())
        .with("listener", listener_label(refusal.listener))
        .with("authenticatedAs", refusal.authenticated.unwrap_or_default());
    shared.publisher.emit(event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refills_each_second() {
        let b = Budget::default();
        assert!((0..PER_SECOND).all(|_| b.take(7)));
        assert!(!b.take(7));
        assert!(b.take(8));
    }
}
