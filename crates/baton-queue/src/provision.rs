//! Idempotent provisioning of the stream, the per-pool lane consumers and the buckets, with a
//! read-back after every create/update: old servers silently drop options they do not know, so
//! what matters is what the server reports, not what was asked for.
//!
//! Only the owner of the settings provisions — the operator, `baton config apply`, `baton dev`
//! ([`Provisioner::provision`] records what it decided); ingress and workers only verify
//! ([`crate::Verifier`]). The read-only queue statistics live here too.

use std::time::Duration;

use async_nats::jetstream::{
    self, consumer,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType},
};
use futures::StreamExt as _;

use crate::settings::{Drift, StreamSettings};
use crate::verify::{Verifier, body_bucket_stream, config_bucket_stream};
use crate::{ConfigStore, QueueError, STREAM, consume::LaneKind, consumer_name};

/// Counts read from one lane consumer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LaneStats {
    /// `new` or `retry-<tier>`.
    pub lane: String,
    /// Messages not yet delivered to any worker.
    pub pending: u64,
    /// Messages handed out and not yet acknowledged.
    pub ack_pending: u64,
    /// Messages delivered more than once and still unacknowledged.
    pub redelivered: u64,
}

/// Creates and checks JetStream objects.
#[derive(Clone)]
pub struct Provisioner {
    js: jetstream::Context,
    settings: StreamSettings,
    event_retention: crate::events::EventRetention,
}

/// How long the owner keeps retrying a provisioning step that failed transiently.
const PATIENCE: Duration = Duration::from_secs(30);

/// How long the shared large-body bucket of earlier versions must have seen no write before
/// its owner deletes it (when it also holds no body): longer than any rolling upgrade.
pub(crate) const LEGACY_BODIES_QUIET: Duration = Duration::from_secs(3600);

/// Run a provisioning step, retrying [`QueueError::Provision`] failures (a request timeout
/// while a just-created replicated stream elects its leader, a leader election on a cluster)
/// every 500 ms for up to [`PATIENCE`]; other errors and the last failure are returned.
async fn patiently<T, F, Fut>(mut step: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match step().await {
            Err(e @ QueueError::Provision { .. }) if tokio::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "provisioning step failed, retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            r => return r,
        }
    }
}

fn provision_err(what: impl Into<String>, e: impl std::fmt::Display) -> QueueError {
    QueueError::Provision {
        what: what.into(),
        detail: e.to_string(),
    }
}

impl Provisioner {
    /// A provisioner over a JetStream context.
    pub fn new(js: jetstream::Context, settings: StreamSettings) -> Self {
        Provisioner {
            js,
            settings,
            event_retention: crate::events::EventRetention::default(),
        }
    }

    /// The settings this provisioner applies.
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// The owner's whole job: create or correct the queue stream and both buckets, record the
    /// settings (`owner`: `operator`, `config-apply`, `dev`) where every process reads them,
    /// provision the lanes of `pools` (name, retry tiers), then verify. Returns what still
    /// differs from the settings (e.g. a bucket created with memory storage, which cannot be
    /// changed in place).
    pub async fn provision(
        &self,
        owner: &str,
        pools: &[(String, u32)],
    ) -> Result<Vec<Drift>, QueueError> {
        patiently(|| self.ensure_stream()).await?;
        patiently(|| self.ensure_buckets()).await?;
        patiently(|| self.ensure_event_stream()).await?;
        let store = ConfigStore::open(&self.js).await?;
        let record = self.settings.to_record(owner);
        if store.queue_settings().await?.as_ref() != Some(&record) {
            store.put_queue_settings(&record).await?;
        }
        for (pool, tiers) in pools {
            patiently(|| self.ensure_lanes(pool, *tiers)).await?;
            patiently(|| self.ensure_body_bucket(pool)).await?;
        }
        if let Err(e) = self.retire_legacy_bodies().await {
            tracing::warn!(error = %e, "could not check the shared large-body bucket of earlier versions");
        }
        let verifier = Verifier::new(self.js.clone());
        let verified = patiently(|| verifier.verify()).await?;
        let mut drift = verified.drift;
        for (pool, _) in pools {
            let bucket = format!("OBJ_{}", crate::body_bucket(pool));
            let observed = verifier.observe(&bucket, false).await?;
            drift.extend(crate::settings::drift(&verified.settings, &observed));
        }
        drift.sort();
        Ok(drift)
    }

    fn stream_config(&self) -> stream::Config {
        stream::Config {
            name: STREAM.to_string(),
            subjects: vec![
                "baton.new.>".into(),
                "baton.retry.>".into(),
                "baton.dead.>".into(),
                "baton.held.>".into(),
                "baton.quarantine.>".into(),
            ],
            retention: RetentionPolicy::WorkQueue,
            storage: StorageType::File,
            discard: DiscardPolicy::New,
            num_replicas: self.settings.replicas,
            duplicate_window: self.settings.duplicate_window,
            // The operations API reads the queue in batches without a consumer
            // (`crate::inspect`).
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Create or update the queue stream and verify what the server kept.
    pub async fn ensure_stream(&self) -> Result<(), QueueError> {
        let want = self.stream_config();
        let info = match self.js.get_stream(STREAM).await {
            Ok(mut s) => {
                let have = s
                    .info()
                    .await
                    .map_err(|e| provision_err("stream info", e))?
                    .config
                    .clone();
                if have.subjects != want.subjects
                    || have.duplicate_window != want.duplicate_window
                    || have.num_replicas != want.num_replicas
                    || have.allow_direct != want.allow_direct
                {
                    self.js
                        .update_stream(&want)
                        .await
                        .map_err(|e| provision_err("update stream", e))?
                } else {
                    s.info()
                        .await
                        .map_err(|e| provision_err("stream info", e))?
                        .clone()
                }
            }
            Err(_) => self
                .js
                .create_stream(want.clone())
                .await
                .map_err(|e| provision_err("create stream", e))?
                .cached_info()
                .clone(),
        };
        let have = &info.config;
        if have.retention != RetentionPolicy::WorkQueue {
            return Err(QueueError::Drift {
                what: STREAM.into(),
                detail: "retention is not WorkQueue".into(),
            });
        }
        if have.duplicate_window != want.duplicate_window {
            return Err(QueueError::Drift {
                what: STREAM.into(),
                detail: format!("duplicate_window is {:?}", have.duplicate_window),
            });
        }
        Ok(())
    }

    fn lane_config(&self, pool: &str, kind: LaneKind) -> consumer::pull::Config {
        let (filter, max_ack_pending) = match kind {
            LaneKind::New => (crate::new_subject(pool), self.settings.max_ack_pending),
            // A retry tier is consumed in order, head first; a worker holds the few messages
            // it waits on, so a small window is enough and keeps due-order.
            LaneKind::Retry(t) => (crate::retry_subject(pool, t), 256),
        };
        consumer::pull::Config {
            durable_name: Some(consumer_name(pool, kind)),
            description: Some(format!("Baton lane {filter}")),
            filter_subject: filter,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            max_deliver: self.settings.max_deliver,
            max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            num_replicas: 0,
            ..Default::default()
        }
    }

    /// Create or update the lane consumers of a pool (`new` and `retry_tiers` retry tiers), then
    /// read each back and check the options that matter.
    pub async fn ensure_lanes(&self, pool: &str, retry_tiers: u32) -> Result<(), QueueError> {
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| provision_err("get stream", e))?;
        let kinds = std::iter::once(LaneKind::New).chain((0..retry_tiers).map(LaneKind::Retry));
        for kind in kinds {
            let want = self.lane_config(pool, kind);
            let name = consumer_name(pool, kind);
            let existing: Result<consumer::PullConsumer, _> = stream.get_consumer(&name).await;
            let mut c = match existing {
                Ok(mut c) => {
                    let have = c
                        .info()
                        .await
                        .map_err(|e| provision_err(&name, e))?
                        .config
                        .clone();
                    if have.ack_wait != want.ack_wait
                        || have.max_deliver != want.max_deliver
                        || have.max_ack_pending != want.max_ack_pending
                    {
                        stream
                            .update_consumer(want.clone())
                            .await
                            .map_err(|e| provision_err(&name, e))?
                    } else {
                        c
                    }
                }
                Err(_) => stream
                    .create_consumer(want.clone())
                    .await
                    .map_err(|e| provision_err(&name, e))?,
            };
            let have = c
                .info()
                .await
                .map_err(|e| provision_err(&name, e))?
                .config
                .clone();
            if have.filter_subject != want.filter_subject || have.max_deliver != want.max_deliver {
                return Err(QueueError::Drift {
                    what: name,
                    detail: format!(
                        "filter {:?} max_deliver {}",
                        have.filter_subject, have.max_deliver
                    ),
                });
            }
        }
        Ok(())
    }

    /// Create the Object Store bucket for large bodies, the config KV bucket and the
    /// suppression KV bucket if missing, and
    /// bring the replicas of existing ones to the settings.
    pub async fn ensure_buckets(&self) -> Result<(), QueueError> {
        // The shared large-body bucket of earlier versions is kept (never created) until it
        // is empty ([`Provisioner::retire_legacy_bodies`]); each pool has its own.
        self.scale_existing(&body_bucket_stream()).await?;
        self.scale_existing(&config_bucket_stream()).await?;
        if self.js.get_key_value(crate::CONFIG_BUCKET).await.is_err() {
            // async-nats' `create_key_value` first queries account info, whose reply from
            // nats-server 2.9 does not parse; create the bucket's backing stream with the KV
            // conventions (ADR-8) instead, which is what `create_key_value` would send.
            self.js
                .create_stream(stream::Config {
                    name: format!("KV_{}", crate::CONFIG_BUCKET),
                    description: Some("Baton RelayConfig snapshots".into()),
                    subjects: vec![format!("$KV.{}.>", crate::CONFIG_BUCKET)],
                    max_messages_per_subject: 5,
                    storage: StorageType::File,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    num_replicas: self.settings.replicas,
                    discard: DiscardPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| provision_err(crate::CONFIG_BUCKET, e))?;
        }
        // One value per key; deletes are markers, so watchers see them.
        self.ensure_kv(crate::SUPPRESSION_BUCKET, "Baton suppression lists", None)
            .await?;
        self.ensure_kv(crate::HOLD_BUCKET, "Baton holds", None)
            .await?;
        // The operations API's moves, read by the workers holding a moved message.
        self.ensure_kv(
            crate::MOVED_BUCKET,
            "Baton messages moved or deleted by the operations API",
            Some(crate::MOVED_MAX_AGE),
        )
        .await?;
        // Beats expire: a stopped process is forgotten after `FORGET_AFTER`.
        self.ensure_kv(
            crate::PROCESS_BUCKET,
            "Baton processes and the config they run",
            Some(crate::processes::FORGET_AFTER),
        )
        .await?;
        // Cluster-wide limits: the longest window is a day.
        self.ensure_kv(
            crate::LIMITS_BUCKET,
            "Baton cluster-wide limits",
            Some(crate::LIMITS_MAX_AGE),
        )
        .await?;
        // A sink's record outlives a dispatcher restart; a removed sink's is forgotten.
        self.ensure_kv(
            crate::SINK_STATUS_BUCKET,
            "Baton EventSink delivery state",
            Some(crate::sinks::STATUS_MAX_AGE),
        )
        .await?;
        Ok(())
    }

    /// Create the KV bucket `bucket` (one value per key, entries older than `max_age`
    /// forgotten) when missing, or bring its replicas to the settings. async-nats'
    /// `create_key_value` first queries account info, whose reply from nats-server 2.9 does
    /// not parse; this creates the backing stream with the KV conventions (ADR-8) instead.
    async fn ensure_kv(
        &self,
        bucket: &str,
        description: &str,
        max_age: Option<Duration>,
    ) -> Result<(), QueueError> {
        self.scale_existing(&format!("KV_{bucket}")).await?;
        if self.js.get_key_value(bucket).await.is_ok() {
            return Ok(());
        }
        self.js
            .create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                description: Some(description.into()),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                max_age: max_age.unwrap_or_default(),
                storage: StorageType::File,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                num_replicas: self.settings.replicas,
                discard: DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| provision_err(bucket, e))?;
        Ok(())
    }

    /// This provisioner keeping events as `retention` says (default:
    /// [`crate::events::EventRetention::default`]).
    pub fn with_event_retention(mut self, retention: crate::events::EventRetention) -> Self {
        self.event_retention = retention;
        self
    }

    /// Create the event stream when missing, or bring an existing one's subjects, retention
    /// (age and bytes, [`Provisioner::with_event_retention`]) and replicas to the settings.
    pub async fn ensure_event_stream(&self) -> Result<(), QueueError> {
        use crate::events::{EVENT_STREAM, EVENT_SUBJECTS};
        let retention = self.event_retention;
        let subjects: Vec<String> = EVENT_SUBJECTS.iter().map(|s| (*s).to_owned()).collect();
        if let Ok(mut existing) = self.js.get_stream(EVENT_STREAM).await {
            self.scale_existing(EVENT_STREAM).await?;
            let mut config = existing
                .info()
                .await
                .map_err(|e| provision_err(EVENT_STREAM, e))?
                .config
                .clone();
            if config.subjects != subjects
                || config.max_age != retention.max_age
                || config.max_bytes != retention.max_bytes
            {
                tracing::info!(
                    max_age = ?retention.max_age, max_bytes = retention.max_bytes,
                    "updating the event stream's subjects and retention"
                );
                config.subjects = subjects;
                config.max_age = retention.max_age;
                config.max_bytes = retention.max_bytes;
                self.js
                    .update_stream(&config)
                    .await
                    .map_err(|e| provision_err(EVENT_STREAM, e))?;
            }
            return Ok(());
        }
        self.js
            .create_stream(stream::Config {
                name: EVENT_STREAM.into(),
                description: Some("Baton delivery events (CloudEvents JSON)".into()),
                subjects,
                retention: RetentionPolicy::Limits,
                max_age: retention.max_age,
                max_bytes: retention.max_bytes,
                discard: DiscardPolicy::Old,
                storage: StorageType::File,
                num_replicas: self.settings.replicas,
                duplicate_window: self.settings.duplicate_window,
                allow_direct: true,
                ..Default::default()
            })
            .await
            .map_err(|e| provision_err(EVENT_STREAM, e))?;
        Ok(())
    }

    /// Set the replicas of bucket stream `name` to the settings when it exists with others.
    /// Give every large-body Object Store bucket an expiry of at least `at_least`, so a body
    /// whose delete failed (or whose envelope was never published) does not stay forever.
    /// The owner passes the longest time any pool can keep a message (see
    /// `baton_config::plan::SnapshotPlan::body_retention`). Only ever raised, never shortened:
    /// bodies of mail accepted under a longer `maxAge` must outlive it. A bucket without expiry
    /// (created before Baton set one) gets it now. Returns the shortest expiry in force.
    pub async fn ensure_body_retention(&self, at_least: Duration) -> Result<Duration, QueueError> {
        let mut in_force: Option<Duration> = None;
        for name in self.body_bucket_streams().await? {
            let have = self.raise_body_retention(&name, at_least).await?;
            in_force = Some(in_force.map_or(have, |d| d.min(have)));
        }
        Ok(in_force.unwrap_or(at_least))
    }

    /// The backing streams of every large-body bucket: the pools' and the legacy shared one.
    async fn body_bucket_streams(&self) -> Result<Vec<String>, QueueError> {
        use futures::TryStreamExt;
        let prefix = body_bucket_stream();
        let names: Vec<String> = self
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(|e| provision_err("stream names", e))?;
        Ok(names
            .into_iter()
            .filter(|n| *n == prefix || n.starts_with(&format!("{prefix}-")))
            .collect())
    }

    /// Create pool `pool`'s large-body bucket ([`crate::body_bucket`]) when missing, or bring
    /// its replicas to the settings.
    pub async fn ensure_body_bucket(&self, pool: &str) -> Result<(), QueueError> {
        let bucket = crate::body_bucket(pool);
        self.scale_existing(&format!("OBJ_{bucket}")).await?;
        if self.js.get_object_store(&bucket).await.is_err() {
            self.js
                .create_object_store(jetstream::object_store::Config {
                    bucket: bucket.clone(),
                    description: Some(format!("Baton large bodies of pool {pool}")),
                    num_replicas: self.settings.replicas,
                    storage: StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| provision_err(&bucket, e))?;
        }
        Ok(())
    }

    /// Delete the shared large-body bucket of earlier versions ([`crate::BODY_BUCKET`]) once
    /// it holds no body and nothing was written to it for [`LEGACY_BODIES_QUIET`]: by then
    /// the mail accepted before the upgrade was delivered and no ingress of an earlier
    /// version is left to upload into it (one that tried would fail and answer 4xx). Until
    /// then every worker may still read it. Returns whether it was deleted.
    pub async fn retire_legacy_bodies(&self) -> Result<bool, QueueError> {
        let name = body_bucket_stream();
        let Ok(mut stream) = self.js.get_stream(&name).await else {
            return Ok(false);
        };
        let info = stream.info().await.map_err(|e| provision_err(&name, e))?;
        let quiet_since = time::OffsetDateTime::now_utc() - LEGACY_BODIES_QUIET;
        if info.state.last_timestamp > quiet_since {
            return Ok(false);
        }
        let chunks = format!("$O.{}.C.>", crate::BODY_BUCKET);
        let mut subjects = stream
            .info_with_subjects(chunks)
            .await
            .map_err(|e| provision_err(&name, e))?;
        if subjects.next().await.is_some() {
            return Ok(false);
        }
        self.js
            .delete_stream(&name)
            .await
            .map_err(|e| provision_err(&name, e))?;
        tracing::info!(
            bucket = crate::BODY_BUCKET,
            "deleted the shared large-body bucket of earlier versions: it is empty"
        );
        Ok(true)
    }

    async fn raise_body_retention(
        &self,
        name: &str,
        at_least: Duration,
    ) -> Result<Duration, QueueError> {
        let name = name.to_owned();
        let mut s = self
            .js
            .get_stream(&name)
            .await
            .map_err(|e| provision_err(&name, e))?;
        let mut config = s
            .info()
            .await
            .map_err(|e| provision_err(&name, e))?
            .config
            .clone();
        let have = config.max_age;
        if !have.is_zero() && have >= at_least {
            return Ok(have);
        }
        tracing::info!(
            bucket = %name,
            from_secs = have.as_secs(),
            to_secs = at_least.as_secs(),
            "setting the large-body bucket's expiry past the longest message lifetime"
        );
        config.max_age = at_least;
        // JetStream refuses a duplicate window longer than the maximum age.
        if config.duplicate_window > at_least {
            config.duplicate_window = at_least;
        }
        let info = self
            .js
            .update_stream(&config)
            .await
            .map_err(|e| provision_err(&name, e))?;
        if info.config.max_age != at_least {
            return Err(QueueError::Provision {
                what: name,
                detail: format!(
                    "asked for max_age {at_least:?}, the server kept {:?}",
                    info.config.max_age
                ),
            });
        }
        Ok(at_least)
    }

    async fn scale_existing(&self, name: &str) -> Result<(), QueueError> {
        let Ok(mut s) = self.js.get_stream(name).await else {
            return Ok(());
        };
        let mut config = s
            .info()
            .await
            .map_err(|e| provision_err(name, e))?
            .config
            .clone();
        if config.num_replicas != self.settings.replicas {
            tracing::info!(
                stream = name,
                from = config.num_replicas,
                to = self.settings.replicas,
                "scaling bucket to the recorded replicas"
            );
            config.num_replicas = self.settings.replicas;
            self.js
                .update_stream(&config)
                .await
                .map_err(|e| provision_err(name, e))?;
        }
        Ok(())
    }

    /// Pending / ack-pending counts of every lane of a pool that exists.
    pub async fn lane_stats(
        &self,
        pool: &str,
        retry_tiers: u32,
    ) -> Result<Vec<LaneStats>, QueueError> {
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| provision_err("get stream", e))?;
        let mut out = Vec::new();
        let kinds = std::iter::once(LaneKind::New).chain((0..retry_tiers).map(LaneKind::Retry));
        for kind in kinds {
            let name = consumer_name(pool, kind);
            let Ok(mut c) = stream.get_consumer::<consumer::pull::Config>(&name).await else {
                continue;
            };
            let info = c.info().await.map_err(|e| provision_err(&name, e))?;
            out.push(LaneStats {
                lane: kind.label(),
                pending: info.num_pending,
                ack_pending: info.num_ack_pending as u64,
                redelivered: info.num_redelivered as u64,
            });
        }
        Ok(out)
    }

    /// Messages in a pool's dead letters ([`crate::dead`]).
    pub async fn dead_count(&self, pool: &str) -> Result<u64, QueueError> {
        self.subject_count(&crate::dead_subject(pool)).await
    }

    /// Messages stored on exactly `subject`.
    async fn subject_count(&self, subject: &str) -> Result<u64, QueueError> {
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| provision_err("get stream", e))?;
        let mut subjects = stream
            .info_with_subjects(subject)
            .await
            .map_err(|e| provision_err("stream info", e))?;
        let mut count = 0;
        while let Some(entry) = subjects.next().await {
            let (name, n) = entry.map_err(|e| provision_err("stream info", e))?;
            if name == subject {
                count += n as u64;
            }
        }
        Ok(count)
    }

    /// Messages in a pool's held place ([`crate::holds`]).
    pub async fn held_count(&self, pool: &str) -> Result<u64, QueueError> {
        self.subject_count(&crate::held_subject(pool)).await
    }
}
