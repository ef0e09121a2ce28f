//! Publishing envelopes: inline or via the Object Store, always with a `Nats-Msg-Id`, and only
//! reporting success once JetStream's PubAck arrived.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, message::PublishMessage};
use baton_proto::{Message as _, v1::Envelope, v1::envelope::Body};
use bytes::Bytes;

use crate::QueueError;

/// What the server acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishReceipt {
    /// Stream sequence of the stored message.
    pub sequence: u64,
    /// True when the server had already stored this `Nats-Msg-Id` (a retried publish).
    pub duplicate: bool,
}

/// Publishes envelopes to the queue stream (and, when given [`crate::events::Events`], the
/// delivery events of what it did, in the background).
#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    timeout: Duration,
    events: Option<crate::events::Events>,
}

impl Publisher {
    /// A publisher that gives up (and reports an error) after `timeout` without a PubAck.
    pub fn new(js: jetstream::Context, timeout: Duration) -> Self {
        Publisher {
            js,
            timeout,
            events: None,
        }
    }

    /// This publisher, also emitting delivery events through `events`.
    pub fn with_events(mut self, events: crate::events::Events) -> Self {
        self.events = Some(events);
        self
    }

    /// Whether this publisher emits delivery events (so callers skip building them).
    pub fn emits_events(&self) -> bool {
        self.events.is_some()
    }

    /// Emit a delivery event without waiting (nothing when this publisher has no events).
    pub fn emit(&self, event: baton_core::event::Event) {
        if let Some(e) = &self.events {
            e.emit(event);
        }
    }

    /// Emit an event published exactly once without a `Nats-Msg-Id` ([`crate::events::Events::emit_once`]).
    pub fn emit_once(&self, event: baton_core::event::Event) {
        if let Some(e) = &self.events {
            e.emit_once(event);
        }
    }

    /// Index `message_id` → `queue_id` in the event stream (`trace <Message-ID>`), without
    /// waiting or an acknowledgement (nothing when this publisher has no events).
    pub fn index_message_id(&self, message_id: &str, queue_id: &str, relay_domain: &str) {
        if let Some(e) = &self.events {
            e.emit_unacknowledged(
                baton_core::event::message_id_subject(message_id),
                baton_core::event::message_id_record(message_id, queue_id, relay_domain),
            );
        }
    }

    /// Publish `envelope` on `subject` with `msg_id` as `Nats-Msg-Id`. An inline body above
    /// [`crate::INLINE_BODY_LIMIT`] is first stored in the Object Store under `msg_id` and
    /// replaced by a reference. Returns only after the PubAck (or an error: nothing is then
    /// known to be queued, and the caller must answer 4xx or keep its own message unacked).
    pub async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        envelope: &Envelope,
    ) -> Result<PublishReceipt, QueueError> {
        self.within_timeout(self.publish_inner(subject, msg_id, envelope))
            .await
    }

    /// Move `payload` (a queued message, unchanged) to `pool`'s dead letters with the headers
    /// of `letter` ([`crate::dead`]); returns after the PubAck. A repeated move of the same
    /// original (a crash before its ack) is stored once.
    pub async fn publish_dead(
        &self,
        pool: &str,
        payload: Bytes,
        letter: &crate::dead::DeadLetter,
    ) -> Result<PublishReceipt, QueueError> {
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in letter.headers() {
            headers.insert(name, value.as_str());
        }
        let message = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(letter.msg_id());
        self.within_timeout(self.send(crate::dead_subject(pool), message))
            .await
    }

    /// Publish `payload` unchanged on `subject` with `msg_id` as `Nats-Msg-Id` (moving a stored
    /// message between places, e.g. requeueing a dead letter).
    pub async fn publish_raw(
        &self,
        subject: &str,
        msg_id: &str,
        payload: Bytes,
    ) -> Result<PublishReceipt, QueueError> {
        let message = PublishMessage::build().payload(payload).message_id(msg_id);
        self.within_timeout(self.send(subject.to_owned(), message))
            .await
    }

    /// `publish` bounded by this publisher's timeout.
    async fn within_timeout(
        &self,
        publish: impl std::future::Future<Output = Result<PublishReceipt, QueueError>>,
    ) -> Result<PublishReceipt, QueueError> {
        match tokio::time::timeout(self.timeout, publish).await {
            Ok(r) => r,
            Err(_) => Err(QueueError::Publish(format!(
                "no PubAck within {:?}",
                self.timeout
            ))),
        }
    }

    /// While disconnected, async-nats would buffer a publish and send it after a reconnect —
    /// after we answered 4xx. Refuse up front so a 451 never leaves a copy queued behind the
    /// client's back.
    fn ensure_connected(&self) -> Result<(), QueueError> {
        if crate::is_connected(&self.js.client()) {
            Ok(())
        } else {
            Err(QueueError::Publish("not connected to NATS".into()))
        }
    }

    /// Publish one message and wait for its PubAck.
    async fn send(
        &self,
        subject: String,
        message: PublishMessage,
    ) -> Result<PublishReceipt, QueueError> {
        self.ensure_connected()?;
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| publish_error(e.kind(), e))?
            .await
            .map_err(|e| QueueError::Publish(e.to_string()))?;
        Ok(PublishReceipt {
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    async fn publish_inner(
        &self,
        subject: &str,
        msg_id: &str,
        envelope: &Envelope,
    ) -> Result<PublishReceipt, QueueError> {
        // Checked before a large body is uploaded too.
        self.ensure_connected()?;
        let payload = match &envelope.body {
            Some(Body::InlineBody(b)) if b.len() > crate::INLINE_BODY_LIMIT => {
                // The pool's own bucket: the envelope's pool, else the subject's
                // (`baton.<place>.<pool>[.<tier>]`).
                let pool = match envelope.pool.as_str() {
                    "" => subject.split('.').nth(2).unwrap_or_default(),
                    p => p,
                };
                if pool.is_empty() {
                    return Err(QueueError::ObjectStore(format!(
                        "no pool for the large body of {msg_id} on {subject}"
                    )));
                }
                let body = crate::BodyRef {
                    bucket: crate::body_bucket(pool),
                    name: msg_id.to_owned(),
                };
                self.store_body(&body, b).await?;
                let mut e = envelope.clone();
                body.attach(&mut e);
                e.encode_to_vec()
            }
            _ => envelope.encode_to_vec(),
        };
        let message = PublishMessage::build()
            .payload(Bytes::from(payload))
            .message_id(msg_id);
        self.send(subject.to_string(), message).await
    }

    async fn store_body(&self, at: &crate::BodyRef, body: &[u8]) -> Result<(), QueueError> {
        let store = self.body_store(at).await?;
        let mut reader = body;
        store
            .put(at.name.as_str(), &mut reader)
            .await
            .map_err(|e| QueueError::ObjectStore(format!("{}: {e}", at.bucket)))?;
        Ok(())
    }

    async fn body_store(
        &self,
        at: &crate::BodyRef,
    ) -> Result<jetstream::object_store::ObjectStore, QueueError> {
        self.js
            .get_object_store(&at.bucket)
            .await
            .map_err(|e| QueueError::ObjectStore(format!("{}: {e}", at.bucket)))
    }

    /// Delete a body object once no queued envelope references it any more.
    pub async fn delete_body(&self, at: &crate::BodyRef) -> Result<(), QueueError> {
        self.body_store(at)
            .await?
            .delete(&at.name)
            .await
            .map_err(|e| QueueError::ObjectStore(format!("{}: {e}", at.bucket)))
    }

    /// Read a body stored by [`Publisher::publish`].
    pub async fn load_body(&self, at: &crate::BodyRef) -> Result<Vec<u8>, QueueError> {
        use tokio::io::AsyncReadExt;
        let mut obj = self
            .body_store(at)
            .await?
            .get(&at.name)
            .await
            .map_err(|e| QueueError::ObjectStore(format!("{}: {e}", at.bucket)))?;
        let mut out = Vec::new();
        obj.read_to_end(&mut out)
            .await
            .map_err(|e| QueueError::ObjectStore(format!("{}: {e}", at.bucket)))?;
        Ok(out)
    }
}

fn publish_error(kind: PublishErrorKind, e: impl std::fmt::Display) -> QueueError {
    QueueError::Publish(format!("{kind:?}: {e}"))
}
