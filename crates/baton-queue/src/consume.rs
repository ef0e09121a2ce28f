//! Pulling from a lane and acknowledging: a [`QueuedMessage`] is acked only by its owner,
//! after every follow-up it caused was published and acknowledged.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use baton_proto::{Message as _, v1::Envelope, v1::envelope::Body};
use futures::StreamExt;

use crate::{Publisher, QueueError, STREAM, consumer_name};

/// Longest wait for an acknowledgement to be sent (and, for double acks, confirmed).
///
/// async-nats waits without limit to hand a command to its connection task, and while the
/// server is unreachable that queue fills up: unbounded, a worker would hang in an ack —
/// and never finish shutting down — until the server came back. A timed-out ack is an error
/// like any other; the message is redelivered after `ack_wait`.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

async fn bounded<E: std::fmt::Display>(
    ack: impl std::future::Future<Output = Result<(), E>>,
) -> Result<(), QueueError> {
    match tokio::time::timeout(ACK_TIMEOUT, ack).await {
        Ok(r) => r.map_err(|e| QueueError::Ack(e.to_string())),
        Err(_) => Err(QueueError::Ack(format!(
            "no acknowledgement within {ACK_TIMEOUT:?} (server unreachable?)"
        ))),
    }
}

/// Which lane of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LaneKind {
    /// Fresh mail (`baton.new.<pool>`).
    New,
    /// Retry tier `n` (`baton.retry.<pool>.<n>`).
    Retry(u32),
}

impl LaneKind {
    /// Bounded metric label: `new` or `retry-<n>`.
    pub fn label(&self) -> String {
        match self {
            LaneKind::New => "new".into(),
            LaneKind::Retry(t) => format!("retry-{t}"),
        }
    }
}

/// Called with each message a lane moved to the dead letters (for a metric).
pub type OnDead = std::sync::Arc<dyn Fn(crate::dead::DeadReason) + Send + Sync>;

/// How long a message whose large body cannot be read waits before its next delivery (each
/// one counts towards `max_deliver`, after which it is a dead letter).
pub const BODY_RETRY: Duration = Duration::from_secs(5);

/// A pull consumer for one lane of one pool.
pub struct Lane {
    consumer: PullConsumer,
    kind: LaneKind,
    pool: String,
    publisher: Publisher,
    /// The consumer's delivery limit (`<= 0`: none).
    max_deliver: i64,
    on_dead: OnDead,
    /// What this process holds (the queue-age gauge, [`crate::Holding`]).
    holding: crate::Holding,
}

/// One message taken from a lane, with its decoded envelope and body.
pub struct QueuedMessage {
    /// The decoded envelope; `body` is always inline here (object-store bodies are loaded).
    pub envelope: Envelope,
    /// How many times JetStream delivered this message (1 on first delivery).
    pub delivered: i64,
    /// Stream sequence, for logs.
    pub stream_sequence: u64,
    /// Lane it came from.
    pub lane: LaneKind,
    /// Where the body was stored, when it was in the Object Store.
    pub object_ref: Option<crate::BodyRef>,
    msg: jetstream::Message,
    /// The pool of the lane it came from.
    pool: String,
    /// Its place in the process's [`crate::Holding`] until it is dropped.
    _held: crate::holding::Held,
}

impl Lane {
    /// Bind to the durable consumer of `pool`'s `kind` lane (it must have been provisioned).
    pub async fn bind(
        js: &jetstream::Context,
        publisher: Publisher,
        pool: &str,
        kind: LaneKind,
    ) -> Result<Lane, QueueError> {
        let stream = js
            .get_stream(STREAM)
            .await
            .map_err(|e| QueueError::Consume(e.to_string()))?;
        let consumer: PullConsumer = stream
            .get_consumer(&consumer_name(pool, kind))
            .await
            .map_err(|e| QueueError::Consume(e.to_string()))?;
        let max_deliver = consumer.cached_info().config.max_deliver;
        Ok(Lane {
            consumer,
            kind,
            pool: pool.to_owned(),
            publisher,
            max_deliver,
            on_dead: std::sync::Arc::new(|_| {}),
            holding: crate::Holding::new(),
        })
    }

    /// Record the messages this lane hands out in `holding` (shared by a pool's lanes, for
    /// the queue-age gauge) until they are dropped.
    pub fn holding(mut self, holding: crate::Holding) -> Lane {
        self.holding = holding;
        self
    }

    /// Report each message this lane moves to the dead letters to `on_dead`.
    pub fn on_dead(mut self, on_dead: OnDead) -> Lane {
        self.on_dead = on_dead;
        self
    }

    /// Which lane this is.
    pub fn kind(&self) -> LaneKind {
        self.kind
    }

    /// Fetch up to `max` messages, waiting at most `wait` for the first one. A payload that
    /// does not decode, and a message on its last allowed delivery, are moved to the pool's
    /// dead letters ([`crate::dead`]) and skipped; a message whose large body cannot be read
    /// is given back for a later delivery ([`BODY_RETRY`]) and skipped. Neither fails the
    /// batch: the other messages go on.
    pub async fn fetch(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<QueuedMessage>, QueueError> {
        // Sending the pull request is bounded like an ack (see [`ACK_TIMEOUT`]); the batch
        // itself ends on async-nats's own timer if the server's expiry notice never comes.
        let request = self
            .consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages();
        let mut batch = tokio::time::timeout(ACK_TIMEOUT, request)
            .await
            .map_err(|_| QueueError::Consume("pull request not sent (server unreachable?)".into()))?
            .map_err(|e| QueueError::Consume(e.to_string()))?;
        let mut out = Vec::new();
        while let Some(item) = batch.next().await {
            let msg = item.map_err(|e| QueueError::Consume(e.to_string()))?;
            match self.decode(msg).await {
                Ok(Some(m)) => out.push(m),
                Ok(None) => {}
                // That one message stays unacknowledged and comes back after `ack_wait`.
                Err(e) => {
                    tracing::warn!(lane = %self.kind.label(), error = %e, "queued message left for redelivery")
                }
            }
        }
        Ok(out)
    }

    /// Move `msg` to the dead letters (PubAck first), then acknowledge it.
    async fn bury(
        &self,
        msg: &jetstream::Message,
        letter: crate::dead::DeadLetter,
    ) -> Result<(), QueueError> {
        self.publisher
            .publish_dead(&self.pool, msg.payload.clone(), &letter)
            .await?;
        bounded(msg.double_ack()).await?;
        tracing::error!(
            pool = %self.pool,
            lane = %self.kind.label(),
            stream_seq = letter.stream_sequence,
            deliveries = letter.delivered,
            reason = letter.reason.label(),
            detail = %letter.detail,
            "queued message moved to the dead letters"
        );
        (self.on_dead)(letter.reason);
        Ok(())
    }

    async fn decode(&self, msg: jetstream::Message) -> Result<Option<QueuedMessage>, QueueError> {
        let (delivered, seq, stored_ns) = match msg.info() {
            Ok(i) => (
                i.delivered,
                i.stream_sequence,
                i.published.unix_timestamp_nanos(),
            ),
            Err(_) => (1, 0, time::OffsetDateTime::now_utc().unix_timestamp_nanos()),
        };
        let letter = |reason, detail: String| crate::dead::DeadLetter {
            reason,
            lane: self.kind,
            stream_sequence: seq,
            delivered,
            detail,
        };
        let mut envelope = match Envelope::decode(msg.payload.clone()) {
            Ok(e) => e,
            Err(e) => {
                let why = format!("not an envelope: {e}");
                self.bury(&msg, letter(crate::dead::DeadReason::Undecodable, why))
                    .await?;
                return Ok(None);
            }
        };
        if crate::dead::exhausted(delivered, self.max_deliver) {
            let why = format!(
                "delivered {delivered} times (max_deliver {}) without an outcome",
                self.max_deliver
            );
            self.bury(&msg, letter(crate::dead::DeadReason::DeliveryLimit, why))
                .await?;
            return Ok(None);
        }
        let mut object_ref = None;
        if let Some(at) = crate::BodyRef::of(&envelope) {
            // A body object is only deleted after the final outcome, so a failed read is a
            // fault of the moment (or, repeated up to the delivery limit, a dead letter).
            // Another pool's bucket is not readable with this pool's identity.
            let body = match self.publisher.load_body(&at).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(stream_seq = seq, delivered, error = %e, "large body not readable; delivering again later");
                    bounded(msg.ack_with(AckKind::Nak(Some(BODY_RETRY)))).await?;
                    return Ok(None);
                }
            };
            envelope.body = Some(Body::InlineBody(body.into()));
            object_ref = Some(at);
        }
        Ok(Some(QueuedMessage {
            envelope,
            delivered,
            stream_sequence: seq,
            lane: self.kind,
            object_ref,
            msg,
            pool: self.pool.clone(),
            _held: self.holding.hold(stored_ns, seq),
        }))
    }
}

impl QueuedMessage {
    /// The message body (always inline after [`Lane::fetch`]).
    pub fn body(&self) -> &[u8] {
        match &self.envelope.body {
            Some(Body::InlineBody(b)) => b,
            _ => &[],
        }
    }

    /// Final acknowledgement: the message leaves the queue. Called only once the outcome is
    /// durable (sent, or the follow-up published and PubAck'd). Not confirmed by the server
    /// (no double ack): a lost ack means a redelivery after `ack_wait`, exactly as a lost
    /// confirmation would, so waiting for one bought nothing but a round trip per message
    /// (issue 17); the worker flushes its connection before it exits.
    pub async fn ack(&self) -> Result<(), QueueError> {
        bounded(self.msg.ack()).await
    }

    /// Tell JetStream we are still working on it (resets the ack-wait timer).
    pub async fn progress(&self) -> Result<(), QueueError> {
        bounded(self.msg.ack_with(AckKind::Progress)).await
    }

    /// Whether the message is still the one to deliver: an operator may have moved it (retry
    /// now, bounce) or deleted it while a worker waited for its due time. The operations API
    /// records every such move in [`crate::moved`] before deleting the stored message; only a
    /// record found says no (a duplicate attempt is better than a lost message). The queue
    /// stream itself is not read: its message API would let a worker read any pool's mail.
    pub async fn still_stored(&self) -> bool {
        !crate::moved::was_moved(&self.msg.context, &self.pool, self.stream_sequence).await
    }

    /// Give it back for immediate redelivery (only used on shutdown, never to park deferred
    /// mail). Confirmed by the server, so a process exiting right after has really released it.
    pub async fn release(&self) -> Result<(), QueueError> {
        bounded(self.msg.double_ack_with(AckKind::Nak(None))).await
    }
}
