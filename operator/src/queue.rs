//! The operator's view of JetStream, behind [`QueueBackend`] so the Kubernetes-facing reconcilers
//! can be tested without a NATS server: [`NatsQueue`] is the real one (baton-queue's
//! `Provisioner`, `ConfigStore`, the EventSinks' records and consumers, and direct gets of
//! stored events), [`MemoryQueue`] an in-memory stand-in that records calls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use baton_proto::v1::RelayConfig;
use baton_queue::sinks::{SinkState, SinkStatusStore};
use baton_queue::{ConfigStore, Provisioner, QueueError, StreamSettings};
use futures::future::BoxFuture;
use parking_lot::Mutex;

/// What the webhook dispatcher recorded about an EventSink (`None`: no record yet) and the
/// events waiting for it (`None`: no consumer).
pub type SinkObservation = (Option<SinkState>, Option<u64>);

/// What the operator needs from JetStream.
pub trait QueueBackend: Send + Sync {
    /// Create or correct the stream, buckets and a pool's lane consumers (`new` +
    /// `retry_tiers`) with the operator's settings, reading the configuration back
    /// (idempotent). Returns the settings that still differ from the recorded ones (drift
    /// the operator could not correct, e.g. memory storage), as readable lines.
    fn ensure_pool<'a>(
        &'a self,
        pool: &'a str,
        retry_tiers: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, QueueError>>;
    /// Messages waiting or unacknowledged in the pool's lanes.
    fn queue_depth<'a>(
        &'a self,
        pool: &'a str,
        retry_tiers: u32,
    ) -> BoxFuture<'a, Result<i64, QueueError>>;
    /// Raise the large-body bucket's expiry to at least `at_least` (never shortened); returns
    /// the expiry in force.
    fn ensure_body_retention(
        &self,
        at_least: Duration,
    ) -> BoxFuture<'_, Result<Duration, QueueError>>;
    /// The snapshot currently in the KV bucket.
    fn current_snapshot(&self) -> BoxFuture<'_, Result<Option<RelayConfig>, QueueError>>;
    /// Store a snapshot; returns the KV revision.
    fn put_snapshot<'a>(
        &'a self,
        config: &'a RelayConfig,
    ) -> BoxFuture<'a, Result<u64, QueueError>>;
    /// What the webhook dispatcher recorded about the EventSink `sink` (`namespace/name`) and
    /// the events waiting for it: `None` for a sink without a record yet, or without a consumer
    /// (no dispatcher ran it yet, or it was removed).
    fn sink_state<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<SinkObservation, QueueError>>;
    /// Remove the event consumers of sinks not named in `keep` (`namespace/name`), once the
    /// snapshot without them is stored. Returns what was removed (JetStream: consumer names).
    fn remove_stale_sinks(
        &self,
        keep: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<String>, QueueError>>;
    /// The last sequence of the event stream `BATON_EVENTS` (0: empty, or no stream yet).
    fn events_last_sequence(&self) -> BoxFuture<'_, Result<u64, QueueError>>;
    /// Up to `limit` events stored at or after sequence `from` whose subject matches `filter`
    /// (wildcards allowed), oldest first, with their sequences: batched direct gets (the
    /// operator's identity creates no consumer on the event stream).
    fn read_events<'a>(
        &'a self,
        filter: &'a str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, QueueError>>;
    /// Whether the connection is up (readiness).
    fn is_connected(&self) -> bool;
}

/// One stored event as [`QueueBackend::read_events`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its sequence in the event stream.
    pub sequence: u64,
    /// Its subject.
    pub subject: String,
    /// The CloudEvent (JSON).
    pub payload: Vec<u8>,
}

/// How the operator signs the queue settings it records.
pub const OWNER: &str = "operator";

/// JetStream through baton-queue.
#[derive(Clone)]
pub struct NatsQueue {
    client: async_nats::Client,
    js: jetstream::Context,
    provisioner: Provisioner,
    store: ConfigStore,
    /// The sinks' delivery records, opened at first use (kept once it exists).
    sink_status: Arc<Mutex<Option<SinkStatusStore>>>,
    /// Direct gets on the event stream.
    inspector: baton_queue::Inspector,
}

impl NatsQueue {
    /// Connect, provision the stream and buckets with the operator's settings (it is their
    /// owner in Kubernetes), record them for ingress and workers, and open the config bucket.
    pub async fn connect(
        nats: &baton_queue::NatsOptions,
        stream_replicas: usize,
    ) -> Result<Self, QueueError> {
        Self::connect_with(nats, stream_replicas, Default::default()).await
    }

    /// Like [`NatsQueue::connect`], keeping events as `retention` says.
    pub async fn connect_with(
        nats: &baton_queue::NatsOptions,
        stream_replicas: usize,
        retention: baton_queue::events::EventRetention,
    ) -> Result<Self, QueueError> {
        let client = baton_queue::connect(nats, "baton-operator").await?;
        let js = async_nats::jetstream::new(client.clone());
        let provisioner = Provisioner::new(
            js.clone(),
            StreamSettings {
                replicas: stream_replicas,
                ..StreamSettings::default()
            },
        )
        .with_event_retention(retention);
        for d in provisioner.provision(OWNER, &[]).await? {
            tracing::warn!(object = %d.object, setting = d.setting, "queue settings drift: {d}");
        }
        let store = ConfigStore::open(&js).await?;
        Ok(NatsQueue {
            inspector: baton_queue::Inspector::new(client.clone(), js.clone()),
            client,
            js,
            provisioner,
            store,
            sink_status: Arc::new(Mutex::new(None)),
        })
    }

    /// The sinks' record bucket, or `None` while it does not exist.
    async fn sink_status_store(&self) -> Result<Option<SinkStatusStore>, QueueError> {
        if let Some(store) = self.sink_status.lock().clone() {
            return Ok(Some(store));
        }
        let bucket_stream = format!("KV_{}", baton_queue::SINK_STATUS_BUCKET);
        if !stream_exists(&self.js, &bucket_stream).await? {
            return Ok(None);
        }
        let store = SinkStatusStore::open(&self.js).await?;
        *self.sink_status.lock() = Some(store.clone());
        Ok(Some(store))
    }
}

/// Whether the stream `name` exists (any other failure is an error).
async fn stream_exists(js: &jetstream::Context, name: &str) -> Result<bool, QueueError> {
    use jetstream::context::GetStreamErrorKind;
    match js.get_stream(name).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(js_err)
                if js_err.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(QueueError::Sinks(format!("stream {name}: {e}"))),
        },
    }
}

impl QueueBackend for NatsQueue {
    fn ensure_pool<'a>(
        &'a self,
        pool: &'a str,
        retry_tiers: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, QueueError>> {
        Box::pin(async move {
            let pools = [(pool.to_owned(), retry_tiers)];
            let drift = self.provisioner.provision(OWNER, &pools).await?;
            Ok(drift.iter().map(ToString::to_string).collect())
        })
    }

    fn queue_depth<'a>(
        &'a self,
        pool: &'a str,
        retry_tiers: u32,
    ) -> BoxFuture<'a, Result<i64, QueueError>> {
        Box::pin(async move {
            let lanes = self.provisioner.lane_stats(pool, retry_tiers).await?;
            let total: u64 = lanes.iter().map(|l| l.pending + l.ack_pending).sum();
            Ok(i64::try_from(total).unwrap_or(i64::MAX))
        })
    }

    fn ensure_body_retention(
        &self,
        at_least: Duration,
    ) -> BoxFuture<'_, Result<Duration, QueueError>> {
        Box::pin(self.provisioner.ensure_body_retention(at_least))
    }

    fn current_snapshot(&self) -> BoxFuture<'_, Result<Option<RelayConfig>, QueueError>> {
        Box::pin(self.store.get())
    }

    fn put_snapshot<'a>(
        &'a self,
        config: &'a RelayConfig,
    ) -> BoxFuture<'a, Result<u64, QueueError>> {
        Box::pin(self.store.put(config))
    }

    fn sink_state<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<SinkObservation, QueueError>> {
        Box::pin(async move {
            let state = match self.sink_status_store().await? {
                Some(store) => store.get(sink).await?,
                None => None,
            };
            let backlog = match baton_queue::sinks::backlog(&self.js, sink).await {
                Ok(backlog) => backlog,
                // No event stream (yet): no consumer either.
                Err(_) if !stream_exists(&self.js, baton_queue::events::EVENT_STREAM).await? => {
                    None
                }
                Err(e) => return Err(e),
            };
            Ok((state, backlog))
        })
    }

    fn remove_stale_sinks(
        &self,
        keep: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<String>, QueueError>> {
        Box::pin(async move { baton_queue::sinks::remove_stale(&self.js, &keep).await })
    }

    fn events_last_sequence(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        Box::pin(async move {
            let stream = baton_queue::events::EVENT_STREAM;
            if !stream_exists(&self.js, stream).await? {
                return Ok(0);
            }
            let mut s = self
                .js
                .get_stream(stream)
                .await
                .map_err(|e| QueueError::Inspect(format!("stream {stream}: {e}")))?;
            let info = s
                .info()
                .await
                .map_err(|e| QueueError::Inspect(format!("stream {stream}: {e}")))?;
            Ok(info.state.last_sequence)
        })
    }

    fn read_events<'a>(
        &'a self,
        filter: &'a str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, QueueError>> {
        Box::pin(async move {
            let batch = self
                .inspector
                .batch_in(baton_queue::events::EVENT_STREAM, filter, from, limit)
                .await?;
            Ok(batch
                .messages
                .into_iter()
                .map(|m| StoredEvent {
                    sequence: m.sequence,
                    subject: m.subject,
                    payload: m.payload.to_vec(),
                })
                .collect())
        })
    }

    fn is_connected(&self) -> bool {
        baton_queue::is_connected(&self.client)
    }
}

/// An in-memory [`QueueBackend`] recording what was asked (tests, dry runs).
#[derive(Clone, Default)]
pub struct MemoryQueue {
    inner: Arc<Mutex<MemoryState>>,
}

/// What a [`MemoryQueue`] holds and saw.
#[derive(Clone, Debug, Default)]
pub struct MemoryState {
    /// `ensure_pool` calls: pool and retry tiers.
    pub ensured: Vec<(String, u32)>,
    /// Drift every `ensure_pool` reports.
    pub drift: Vec<String>,
    /// Depth reported for every pool.
    pub depth: i64,
    /// Every snapshot put, in order.
    pub snapshots: Vec<RelayConfig>,
    /// The large-body bucket's expiry (raised by `ensure_body_retention`).
    pub body_retention: Duration,
    /// The dispatcher's record of each EventSink (`namespace/name`), as `sink_state` reads it.
    pub sink_states: BTreeMap<String, SinkState>,
    /// The backlog of each EventSink that has a consumer (`namespace/name`); `remove_stale_sinks`
    /// removes the entries of sinks it does not keep.
    pub sink_backlogs: BTreeMap<String, u64>,
    /// The `keep` list of every `remove_stale_sinks` call, in order.
    pub sink_keeps: Vec<Vec<String>>,
    /// Every sink whose consumer `remove_stale_sinks` removed, in order.
    pub removed_sinks: Vec<String>,
    /// The event stream: subject and payload, the sequence being the position + 1.
    pub events: Vec<(String, Vec<u8>)>,
    /// When set, every call fails with this message.
    pub fail: Option<String>,
}

impl MemoryQueue {
    /// A copy of the state.
    pub fn state(&self) -> MemoryState {
        self.inner.lock().clone()
    }

    /// Change the state.
    pub fn update(&self, f: impl FnOnce(&mut MemoryState)) {
        f(&mut self.inner.lock());
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> Result<T, QueueError> {
        let mut s = self.inner.lock();
        if let Some(msg) = &s.fail {
            return Err(QueueError::Provision {
                what: "memory".into(),
                detail: msg.clone(),
            });
        }
        Ok(f(&mut s))
    }
}

impl QueueBackend for MemoryQueue {
    fn ensure_pool<'a>(
        &'a self,
        pool: &'a str,
        retry_tiers: u32,
    ) -> BoxFuture<'a, Result<Vec<String>, QueueError>> {
        let r = self.with(|s| {
            s.ensured.push((pool.to_owned(), retry_tiers));
            s.drift.clone()
        });
        Box::pin(async move { r })
    }

    fn queue_depth<'a>(
        &'a self,
        _pool: &'a str,
        _retry_tiers: u32,
    ) -> BoxFuture<'a, Result<i64, QueueError>> {
        let r = self.with(|s| s.depth);
        Box::pin(async move { r })
    }

    fn ensure_body_retention(
        &self,
        at_least: Duration,
    ) -> BoxFuture<'_, Result<Duration, QueueError>> {
        let r = self.with(|s| {
            s.body_retention = s.body_retention.max(at_least);
            s.body_retention
        });
        Box::pin(async move { r })
    }

    fn current_snapshot(&self) -> BoxFuture<'_, Result<Option<RelayConfig>, QueueError>> {
        let r = self.with(|s| s.snapshots.last().cloned());
        Box::pin(async move { r })
    }

    fn put_snapshot<'a>(
        &'a self,
        config: &'a RelayConfig,
    ) -> BoxFuture<'a, Result<u64, QueueError>> {
        // The same guard as the real store: a secret in clear is never stored.
        let clear = baton_seal::clear_secrets(config);
        if !clear.is_empty() {
            return Box::pin(async move { Err(QueueError::ClearSecrets(clear)) });
        }
        let r = self.with(|s| {
            s.snapshots.push(config.clone());
            s.snapshots.len() as u64
        });
        Box::pin(async move { r })
    }

    fn sink_state<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<SinkObservation, QueueError>> {
        let r = self.with(|s| {
            (
                s.sink_states.get(sink).cloned(),
                s.sink_backlogs.get(sink).copied(),
            )
        });
        Box::pin(async move { r })
    }

    fn remove_stale_sinks(
        &self,
        keep: Vec<String>,
    ) -> BoxFuture<'_, Result<Vec<String>, QueueError>> {
        let r = self.with(|s| {
            let stale: Vec<String> = s
                .sink_backlogs
                .keys()
                .filter(|name| !keep.contains(name))
                .cloned()
                .collect();
            for name in &stale {
                s.sink_backlogs.remove(name);
            }
            s.removed_sinks.extend(stale.iter().cloned());
            s.sink_keeps.push(keep);
            stale
        });
        Box::pin(async move { r })
    }

    fn events_last_sequence(&self) -> BoxFuture<'_, Result<u64, QueueError>> {
        let r = self.with(|s| s.events.len() as u64);
        Box::pin(async move { r })
    }

    fn read_events<'a>(
        &'a self,
        filter: &'a str,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, QueueError>> {
        let r = self.with(|s| {
            s.events
                .iter()
                .zip(1u64..)
                .filter(|((subject, _), seq)| *seq >= from && subject_matches(filter, subject))
                .take(limit)
                .map(|((subject, payload), sequence)| StoredEvent {
                    sequence,
                    subject: subject.clone(),
                    payload: payload.clone(),
                })
                .collect()
        });
        Box::pin(async move { r })
    }

    fn is_connected(&self) -> bool {
        self.state().fail.is_none()
    }
}

/// Whether NATS subject `subject` matches `filter` (`*`: one token, `>`: the rest).
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject = subject.split('.');
    for f in filter.split('.') {
        match (f, subject.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    subject.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subjects_match_filters_as_nats_does() {
        let f = "baton.events.*.*.*.credential_spike";
        assert!(subject_matches(f, "baton.events.a.b.Q.credential_spike"));
        assert!(!subject_matches(f, "baton.events.a.b.Q.accepted"));
        assert!(!subject_matches(f, "baton.events.a.b.credential_spike"));
        assert!(subject_matches("baton.>", "baton.events.a"));
        assert!(!subject_matches("baton.>", "baton"));
    }
}
