//! Credential spikes → Kubernetes Events: this module owns turning the `credential_spike`
//! events the ingress publishes to `BATON_EVENTS` (once per crossing of a RelayDomain's
//! `spec.limits.spike` threshold, [`CredentialSpike`]) into a Warning Event
//! [`REASON`] on that RelayDomain.
//!
//! The operator's NATS identity may read the event stream with direct gets but may not create
//! consumers on it, so the leader polls: every [`POLL_EVERY`] it reads at most
//! [`MAX_PER_POLL`] spike events (one subject filter, [`type_filter`]) from its cursor. The
//! cursor starts after the stream's last sequence when the replica starts leading: history is
//! not replayed (a spike published while no replica led, or during a hand-over, gets no Event;
//! it is still in the stream, the metric and the log). A spike whose RelayDomain no longer
//! exists, a document that does not parse, and an Event the API server refuses are logged and
//! skipped: these are notifications, never retried.

use std::sync::Arc;
use std::time::Duration;

use baton_config::crd::RelayDomain;
use baton_queue::events::{CredentialSpike, EventType, type_filter};
use kube::api::Api;
use kube::runtime::events::{Event, EventType as K8sEventType};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::error::Result;

/// How often the leader reads new spike events.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// Most spike events handled per poll (the rest wait for the next one).
pub const MAX_PER_POLL: usize = 64;
/// The Event's reason.
pub const REASON: &str = "CredentialSpike";
/// The Event's action.
pub const ACTION: &str = "DetectSpike";
/// Most characters of the credential's name quoted in an Event.
const MAX_CREDENTIAL_CHARS: usize = 128;
/// Most bytes of an Event's note (the API server refuses more than 1 kB).
const MAX_NOTE_BYTES: usize = 1024;

/// The note of the Event about `spike`: the credential, the count, the threshold and what the
/// action does.
pub fn note(spike: &CredentialSpike) -> String {
    let mut credential: String = spike
        .credential
        .chars()
        .take(MAX_CREDENTIAL_CHARS)
        .collect();
    if credential.len() < spike.credential.len() {
        credential.push('…');
    }
    let effect = match spike.action.as_str() {
        "alert" => "action Alert: its mail still flows".to_owned(),
        "throttle" => {
            "action Throttle: its further messages this hour are refused with 450 4.7.1".to_owned()
        }
        "hold" => "action Hold: its further messages this hour go to the pool's quarantine \
                   (baton queue quarantine list)"
            .to_owned(),
        other => format!("action {other:?}"),
    };
    let mut note = format!(
        "sending spike of SMTP credential {credential:?}: {} messages this hour reached the \
         threshold {} (more than {} times its hourly mean over the previous 24 hours, at least \
         {}); {effect}",
        spike.count, spike.threshold, spike.factor, spike.minimum_per_hour
    );
    if note.len() > MAX_NOTE_BYTES {
        let mut end = MAX_NOTE_BYTES;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    note
}

/// The Kubernetes Event about `spike` (on its RelayDomain).
pub fn k8s_event(spike: &CredentialSpike) -> Event {
    Event {
        type_: K8sEventType::Warning,
        reason: REASON.to_owned(),
        note: Some(note(spike)),
        action: ACTION.to_owned(),
        secondary: None,
    }
}

/// Reads spike events from a cursor and records their Events (see the module docs).
#[derive(Debug)]
pub struct SpikeWatcher {
    /// The next sequence to read.
    cursor: u64,
    filter: String,
}

impl SpikeWatcher {
    /// A watcher starting after the event stream's current last sequence.
    pub async fn start(ctx: &Context) -> Result<SpikeWatcher> {
        let last = ctx.queue.events_last_sequence().await?;
        Ok(SpikeWatcher {
            cursor: last.saturating_add(1),
            filter: type_filter(EventType::CredentialSpike),
        })
    }

    /// The next sequence it reads.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Read at most [`MAX_PER_POLL`] spike events and record their Events; returns how many
    /// Events were recorded. On an error the cursor stays where it was.
    pub async fn poll(&mut self, ctx: &Context) -> Result<usize> {
        let events = ctx
            .queue
            .read_events(&self.filter, self.cursor, MAX_PER_POLL)
            .await?;
        if events.is_empty() {
            // A stream that was deleted and created again starts its sequences over.
            let last = ctx.queue.events_last_sequence().await?;
            if last.saturating_add(1) < self.cursor {
                tracing::info!(
                    cursor = self.cursor,
                    last,
                    "event stream starts over: reading spikes after its last sequence"
                );
                self.cursor = last.saturating_add(1);
            }
            return Ok(0);
        }
        let mut recorded = 0;
        for e in events {
            self.cursor = self.cursor.max(e.sequence.saturating_add(1));
            let Some(spike) = CredentialSpike::from_cloud_event(&e.payload) else {
                tracing::warn!(
                    sequence = e.sequence,
                    subject = %e.subject,
                    "credential spike event that does not parse: no Event"
                );
                continue;
            };
            if record(ctx, &spike).await {
                recorded += 1;
            }
        }
        Ok(recorded)
    }

    /// Poll every `every` until `stop`.
    pub async fn run(mut self, ctx: Arc<Context>, every: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            if let Err(e) = self.poll(&ctx).await {
                tracing::warn!(error = %e, "reading credential spike events failed");
            }
        }
    }
}

/// Record the Event of `spike` on its RelayDomain; false when there is none to record it on.
async fn record(ctx: &Context, spike: &CredentialSpike) -> bool {
    let Some((ns, name)) = spike.relay_domain.split_once('/') else {
        tracing::warn!(relay_domain = %spike.relay_domain, "credential spike without a RelayDomain namespace: no Event");
        return false;
    };
    let api: Api<RelayDomain> = Api::namespaced(ctx.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(rd)) => {
            tracing::info!(
                relay_domain = %spike.relay_domain,
                action = %spike.action,
                count = spike.count,
                threshold = spike.threshold,
                "credential spike: recording an Event on the RelayDomain"
            );
            ctx.event(&rd, k8s_event(spike)).await;
            true
        }
        Ok(None) => {
            tracing::info!(relay_domain = %spike.relay_domain, "credential spike of a RelayDomain that no longer exists: no Event");
            false
        }
        Err(e) => {
            tracing::warn!(relay_domain = %spike.relay_domain, error = %e, "cannot read the RelayDomain of a credential spike: no Event");
            false
        }
    }
}

/// While leading: start after the event stream's last sequence (retried every [`POLL_EVERY`]
/// until NATS answers), then poll every [`POLL_EVERY`] until `stop`.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let watcher = loop {
        match SpikeWatcher::start(&ctx).await {
            Ok(w) => break w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the event stream for credential spikes");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            _ = stop.cancelled() => return,
        }
    };
    watcher.run(ctx, POLL_EVERY, stop).await;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spike(action: &str) -> CredentialSpike {
        CredentialSpike {
            relay_domain: "team-a/example-com".into(),
            credential: "app".into(),
            count: 241,
            threshold: 241,
            action: action.into(),
            factor: 10,
            minimum_per_hour: 100,
        }
    }

    #[test]
    fn the_event_names_the_credential_count_threshold_and_action() {
        let e = k8s_event(&spike("throttle"));
        assert_eq!(e.type_, K8sEventType::Warning);
        assert_eq!(e.reason, "CredentialSpike");
        assert_eq!(e.action, "DetectSpike");
        assert_eq!(
            e.note.as_deref(),
            Some(
                "sending spike of SMTP credential \"app\": 241 messages this hour reached the \
                 threshold 241 (more than 10 times its hourly mean over the previous 24 hours, \
                 at least 100); action Throttle: its further messages this hour are refused \
                 with 450 4.7.1"
            )
        );
        assert!(note(&spike("alert")).ends_with("action Alert: its mail still flows"));
        assert!(note(&spike("hold")).contains("quarantine"));
        // An action this operator does not know yet is named, not dropped.
        assert!(note(&spike("pause")).ends_with("action \"pause\""));
    }

    #[test]
    fn a_long_or_odd_credential_keeps_the_note_bounded_and_quoted() {
        let mut s = spike("alert");
        s.credential = format!("{}\n", "é".repeat(5000));
        let n = note(&s);
        assert!(n.len() <= MAX_NOTE_BYTES);
        assert!(n.contains('…'));
        assert!(!n.contains('\n'));
        s.credential = "a\"b\nc".into();
        assert!(note(&s).contains(r#""a\"b\nc""#));
    }
}
