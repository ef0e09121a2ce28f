//! What ingress and workers do instead of provisioning: read the settings the owner recorded,
//! check that the queue stream, both buckets and a pool's lane consumers exist, and compare
//! what the server reports with the record. Nothing here creates or changes anything.

use async_nats::jetstream::{
    self, ErrorCode,
    context::{ConsumerInfoErrorKind, GetStreamErrorKind},
};

use crate::settings::{Drift, Observed, StreamSettings, drift};
use crate::{
    BODY_BUCKET, CONFIG_BUCKET, ConfigStore, QueueError, STREAM, consume::LaneKind, consumer_name,
};

/// Backing stream of the config KV bucket.
pub fn config_bucket_stream() -> String {
    format!("KV_{CONFIG_BUCKET}")
}

/// Backing stream of the shared large-body Object Store bucket of earlier versions (a pool's
/// own is `OBJ_baton-bodies-<pool>`).
pub fn body_bucket_stream() -> String {
    format!("OBJ_{BODY_BUCKET}")
}

/// The outcome of one verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The settings the owner recorded.
    pub settings: StreamSettings,
    /// Who recorded them (`operator`, `config-apply`, `dev`).
    pub owner: String,
    /// Every setting that differs from the record (empty when all is as recorded).
    pub drift: Vec<Drift>,
}

/// Read-only checks of the JetStream objects against the recorded settings.
#[derive(Clone)]
pub struct Verifier {
    js: jetstream::Context,
}

fn check_err(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Provision {
        what: what.to_owned(),
        detail: e.to_string(),
    }
}

impl Verifier {
    /// A verifier over a JetStream context.
    pub fn new(js: jetstream::Context) -> Self {
        Verifier { js }
    }

    /// Stream `name`; [`QueueError::NotProvisioned`] when it does not exist.
    async fn stream(&self, name: &str) -> Result<jetstream::stream::Stream, QueueError> {
        self.js.get_stream(name).await.map_err(|e| match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                QueueError::NotProvisioned {
                    what: format!("stream {name}"),
                }
            }
            _ => check_err(name, e),
        })
    }

    /// What the server reports about stream `name`; [`QueueError::NotProvisioned`] when it does
    /// not exist.
    pub async fn observe(&self, name: &str, window: bool) -> Result<Observed, QueueError> {
        let mut s = self.stream(name).await?;
        let c = &s.info().await.map_err(|e| check_err(name, e))?.config;
        Ok(Observed {
            object: name.to_owned(),
            replicas: c.num_replicas,
            storage: c.storage,
            duplicate_window: window.then_some(c.duplicate_window),
        })
    }

    /// The recorded settings, then the queue stream and both buckets compared with them.
    pub async fn verify(&self) -> Result<Verified, QueueError> {
        // The config bucket first: the record lives in it.
        let kv = self.observe(&config_bucket_stream(), false).await?;
        let record = ConfigStore::open(&self.js)
            .await?
            .queue_settings()
            .await?
            .ok_or_else(|| QueueError::NotProvisioned {
                what: format!("the queue settings record in {CONFIG_BUCKET}"),
            })?;
        let settings = StreamSettings::from_record(&record);
        let queue = self.observe(STREAM, true).await?;
        // The shared large-body bucket of earlier versions, while it is kept (each pool's
        // own bucket is checked with its lanes).
        let legacy_bodies = match self.observe(&body_bucket_stream(), false).await {
            Ok(o) => Some(o),
            Err(QueueError::NotProvisioned { .. }) => None,
            Err(e) => return Err(e),
        };
        let mut d: Vec<Drift> = [Some(queue), Some(kv), legacy_bodies]
            .iter()
            .flatten()
            .flat_map(|o| drift(&settings, o))
            .collect();
        d.sort();
        Ok(Verified {
            settings,
            owner: record.owner,
            drift: d,
        })
    }

    /// Check that every lane consumer of `pool` exists (`new` and `retry_tiers` tiers), and
    /// its large-body bucket; [`QueueError::NotProvisioned`] names the first one missing.
    pub async fn verify_lanes(&self, pool: &str, retry_tiers: u32) -> Result<(), QueueError> {
        self.stream(&format!("OBJ_{}", crate::body_bucket(pool)))
            .await?;
        let stream = self.stream(STREAM).await?;
        let kinds = std::iter::once(LaneKind::New).chain((0..retry_tiers).map(LaneKind::Retry));
        for kind in kinds {
            let name = consumer_name(pool, kind);
            if let Err(e) = stream.consumer_info(&name).await {
                let missing = match e.kind() {
                    ConsumerInfoErrorKind::NotFound => true,
                    ConsumerInfoErrorKind::JetStream(j) => {
                        j.error_code() == ErrorCode::CONSUMER_NOT_FOUND
                    }
                    _ => false,
                };
                return Err(if missing {
                    QueueError::NotProvisioned {
                        what: format!("lane consumer {name}"),
                    }
                } else {
                    check_err(&name, e)
                });
            }
        }
        Ok(())
    }
}
