//! The `BATON_EVENTS` stream: delivery events (`baton_core::event`) as CloudEvents JSON under
//! `baton.events.<namespace>.<relaydomain>.<queue id>.<type>`, and the Message-ID index
//! (`baton.index.msgid.<hash>` → queue id), kept by limits (age and bytes), not consumed
//! away.
//!
//! Publishing an event never delays or endangers mail: [`Events::emit`] queues the event for
//! the process's one publisher task and returns at once; the task sends it, collects the PubAck
//! (bounded by [`ACK_TIMEOUT`]) and reports the result to the process's hook (a metric). At
//! most [`MAX_IN_FLIGHT`] events wait to be sent and as many for their PubAck; beyond that an
//! event is dropped and counted as failed. A failed or dropped event is lost — the only thing
//! Baton may lose; the message's outcome stands. The event id is its `Nats-Msg-Id`, so a fact published twice (a worker
//! redelivered after a crash) is stored once within the duplicate window. Facts that can only
//! be published once ([`Events::emit_once`]: the ingress's `accepted`, which follows the one
//! PubAck of its message) and the Message-ID index records carry no `Nats-Msg-Id`: the server
//! then keeps no duplicate-window entry for them (each entry is memory and garbage-collector
//! work on nats-server for the whole window).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use baton_core::event::Event;
/// The stream's event types and the typed data readers need (the operator reads
/// `credential_spike` events without a dependency of its own on `baton-core`).
pub use baton_core::event::{CredentialSpike, EventType, type_filter};

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

/// One event (or index record) waiting to be published.
struct Pending {
    name: &'static str,
    subject: String,
    payload: bytes::Bytes,
    /// The `Nats-Msg-Id` (none: a fact published once, nothing to deduplicate).
    id: Option<String>,
    /// Wait for the PubAck and report the result (events); index records are sent without.
    acknowledged: bool,
}

/// Publishes events in the background: [`Events::emit`] queues the event for one publisher
/// task per process and returns at once.
#[derive(Clone)]
pub struct Events {
    tx: tokio::sync::mpsc::Sender<Pending>,
    source: Arc<str>,
    hook: Hook,
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
    /// Starts the publisher task on the current Tokio runtime (without one, every event is
    /// reported as failed).
    pub fn new(js: jetstream::Context, source: &str, hook: Hook) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_IN_FLIGHT);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(publish_all(js, rx, hook.clone()));
        }
        Events {
            tx,
            source: source.into(),
            hook,
        }
    }

    /// Publish `event` without waiting for it.
    pub fn emit(&self, event: Event) {
        self.queue(Pending {
            name: event.kind.name(),
            subject: event.subject(),
            payload: event.to_json(&self.source).into(),
            id: Some(event.id()),
            acknowledged: true,
        });
    }

    /// Publish `event` without waiting and without a `Nats-Msg-Id`: for a fact its publisher
    /// emits exactly once (no retry, no redelivery can repeat it), so there is nothing for the
    /// server's duplicate window to catch.
    pub fn emit_once(&self, event: Event) {
        self.queue(Pending {
            name: event.kind.name(),
            subject: event.subject(),
            payload: event.to_json(&self.source).into(),
            id: None,
            acknowledged: true,
        });
    }

    /// Publish `payload` on `subject` (in the event stream) without waiting, without asking
    /// for an acknowledgement and without a `Nats-Msg-Id`: for index records, whose loss costs
    /// only a lookup (the events themselves are there) and whose repetition changes nothing
    /// (readers take the last record of a subject). Not counted.
    pub fn emit_unacknowledged(&self, subject: String, payload: Vec<u8>) {
        self.queue(Pending {
            name: "index",
            subject,
            payload: payload.into(),
            id: None,
            acknowledged: false,
        });
    }

    fn queue(&self, p: Pending) {
        let (name, acknowledged) = (p.name, p.acknowledged);
        if self.tx.try_send(p).is_err() && acknowledged {
            (self.hook)(name, false);
        }
    }
}

/// The publisher task: sends each queued event in order on the process's connection and
/// collects the PubAcks as they come (at most [`MAX_IN_FLIGHT`] outstanding, each waited for
/// at most [`ACK_TIMEOUT`]), reporting each result to `hook`. Ends when every [`Events`] is
/// dropped and the acknowledgements are in.
async fn publish_all(
    js: jetstream::Context,
    mut rx: tokio::sync::mpsc::Receiver<Pending>,
    hook: Hook,
) {
    use futures::StreamExt as _;
    let client = js.client();
    let mut acks = futures::stream::FuturesUnordered::new();
    let mut open = true;
    while open || !acks.is_empty() {
        tokio::select! {
            p = rx.recv(), if open && acks.len() < MAX_IN_FLIGHT => {
                let Some(p) = p else {
                    open = false;
                    continue;
                };
                if !p.acknowledged {
                    let _ = client.publish(p.subject, p.payload).await;
                    continue;
                }
                let mut publish = PublishMessage::build().payload(p.payload);
                if let Some(id) = p.id {
                    publish = publish.message_id(id);
                }
                match js.send_publish(p.subject, publish).await {
                    Ok(ack) => {
                        let name = p.name;
                        acks.push(async move {
                            let stored = matches!(
                                tokio::time::timeout(ACK_TIMEOUT, ack).await,
                                Ok(Ok(_))
                            );
                            (name, stored)
                        });
                    }
                    Err(e) => {
                        tracing::debug!(event = p.name, error = %e, "event not sent");
                        hook(p.name, false);
                    }
                }
            }
            Some((name, stored)) = acks.next(), if !acks.is_empty() => {
                if !stored {
                    tracing::debug!(event = name, "event not stored");
                }
                hook(name, stored);
            }
        }
    }
}
