//! The `BATON_EVENTS` stream: delivery events (`baton_core::event`) as CloudEvents JSON under
//! `baton.events.<namespace>.<relaydomain>.<queue id>.<type>`, and the Message-ID index
//! (`baton.index.msgid.<hash>` → queue id), kept by limits (age and bytes), not consumed
//! away.
//!
//! Publishing an event never delays or endangers mail: [`Events::emit`] hands the event to a
//! background task and returns at once; the task waits for the PubAck (bounded by
//! [`ACK_TIMEOUT`]) and reports the result to the process's hook (a metric). At most
//! [`MAX_IN_FLIGHT`] events wait for their PubAck; beyond that an event is dropped and counted
//! as failed. A failed or dropped event is lost — the only thing Baton may lose; the message's
//! outcome stands. The event id is its `Nats-Msg-Id`, so a fact published twice (a worker
//! redelivered after a crash) is stored once within the duplicate window.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use baton_core::event::Event;
use tokio::sync::Semaphore;

/// Name of the event stream.
pub const EVENT_STREAM: &str = "BATON_EVENTS";
/// How long an event's PubAck is waited for.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Most events waiting for their PubAck at once.
pub const MAX_IN_FLIGHT: usize = 10_000;
/// Default retention of the stream: age.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default retention of the stream: bytes.
pub const DEFAULT_MAX_BYTES: i64 = 1 << 30;

/// How long the event stream keeps events: by age and by size, the oldest discarded first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRetention {
    /// Events older than this are discarded.
    pub max_age: Duration,
    /// Beyond this many bytes the oldest events are discarded.
    pub max_bytes: i64,
}

impl Default for EventRetention {
    fn default() -> Self {
        EventRetention {
            max_age: DEFAULT_MAX_AGE,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// The subjects of the event stream: the events and the Message-ID index.
pub const EVENT_SUBJECTS: [&str; 2] = ["baton.events.>", "baton.index.>"];

/// What became of one event: its type name and whether it was stored.
pub type Hook = Arc<dyn Fn(&'static str, bool) + Send + Sync>;

/// Publishes events in the background.
#[derive(Clone)]
pub struct Events {
    js: jetstream::Context,
    source: Arc<str>,
    hook: Hook,
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("source", &self.source)
            .finish()
    }
}

impl Events {
    /// Events from `source` (`baton/<component>/<instance>`), each result reported to `hook`.
    pub fn new(js: jetstream::Context, source: &str, hook: Hook) -> Self {
        Events {
            js,
            source: source.into(),
            hook,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    /// Publish `event` without waiting for it.
    pub fn emit(&self, event: Event) {
        let subject = event.subject();
        let payload = event.to_json(&self.source);
        self.emit_raw(event.kind.name(), subject, payload, event.id());
    }

    /// Publish `payload` on `subject` (in the event stream) with `id` as its `Nats-Msg-Id`,
    /// without waiting; the result is reported to the hook under `name`.
    pub fn emit_raw(&self, name: &'static str, subject: String, payload: Vec<u8>, id: String) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            (self.hook)(name, false);
            return;
        };
        let (js, hook) = (self.js.clone(), self.hook.clone());
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        tokio::spawn(async move {
            let stored = async {
                let ack = js.send_publish(subject, publish).await.ok()?;
                tokio::time::timeout(ACK_TIMEOUT, ack).await.ok()?.ok()
            }
            .await
            .is_some();
            if !stored {
                tracing::debug!(event = name, "event not stored");
            }
            hook(name, stored);
            drop(permit);
        });
    }
}
