//! The `baton-config` KV bucket: writing the compiled snapshot and watching it.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use baton_proto::{
    Message as _,
    v1::{QueueSettings, RelayConfig},
};
use futures::StreamExt;
use tokio::sync::watch;

use crate::{CONFIG_BUCKET, CONFIG_KEY, QUEUE_SETTINGS_KEY, QueueError};

/// Receiver of the current snapshot; `None` until one was loaded.
pub type ConfigWatch = watch::Receiver<Option<Arc<RelayConfig>>>;

/// Reads, writes and watches the RelayConfig snapshot.
#[derive(Clone)]
pub struct ConfigStore {
    kv: kv::Store,
}

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::ConfigStore(e.to_string())
}

/// How long a read waits out a bucket that cannot answer yet.
const READ_PATIENCE: Duration = Duration::from_secs(15);

/// Whether a failed read is worth repeating: a just-created replicated bucket whose replicas
/// do not serve direct gets yet answers "no responders" for a moment, a leader election times
/// out a request.
fn transient(e: &kv::EntryError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    e.kind() == kv::EntryErrorKind::TimedOut
        || text.contains("no responders")
        || text.contains("timed out")
}

impl ConfigStore {
    /// Open the bucket (it must exist: see [`crate::Provisioner::ensure_buckets`]).
    pub async fn open(js: &jetstream::Context) -> Result<Self, QueueError> {
        let kv = js.get_key_value(CONFIG_BUCKET).await.map_err(err)?;
        Ok(ConfigStore { kv })
    }

    /// Read `key`, repeating a transient failure every 250 ms for up to [`READ_PATIENCE`].
    async fn read(&self, key: &str) -> Result<Option<bytes::Bytes>, QueueError> {
        let deadline = tokio::time::Instant::now() + READ_PATIENCE;
        loop {
            match self.kv.get(key).await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                    tracing::info!(key, error = %e, "config bucket read failed, retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(err(e)),
            }
        }
    }

    /// The queue settings the owner recorded, if any.
    pub async fn queue_settings(&self) -> Result<Option<QueueSettings>, QueueError> {
        match self.read(QUEUE_SETTINGS_KEY).await? {
            Some(bytes) => QueueSettings::decode(bytes.as_ref())
                .map(Some)
                .map_err(|e| QueueError::Decode(e.to_string())),
            None => Ok(None),
        }
    }

    /// Record the queue settings (only the owner does this).
    pub async fn put_queue_settings(&self, settings: &QueueSettings) -> Result<u64, QueueError> {
        self.kv
            .put(QUEUE_SETTINGS_KEY, settings.encode_to_vec().into())
            .await
            .map_err(err)
    }

    /// The current snapshot, if any.
    pub async fn get(&self) -> Result<Option<RelayConfig>, QueueError> {
        match self.read(CONFIG_KEY).await? {
            Some(bytes) => RelayConfig::decode(bytes.as_ref())
                .map(Some)
                .map_err(|e| QueueError::Decode(e.to_string())),
            None => Ok(None),
        }
    }

    /// Store a snapshot; returns the KV revision.
    pub async fn put(&self, config: &RelayConfig) -> Result<u64, QueueError> {
        self.kv
            .put(CONFIG_KEY, config.encode_to_vec().into())
            .await
            .map_err(err)
    }

    /// Watch the snapshot: the returned receiver holds the latest decoded config and changes
    /// whenever a new one is written. A snapshot that does not decode is logged and skipped
    /// (the previous one stays in force) and `on_rejected` is called, so the caller can count
    /// it (`baton_config_errors_total`). The watch task ends when all receivers are dropped.
    pub async fn watch(
        &self,
        on_rejected: impl Fn() + Send + 'static,
    ) -> Result<ConfigWatch, QueueError> {
        let mut updates = self.kv.watch_with_history(CONFIG_KEY).await.map_err(err)?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            while let Some(entry) = updates.next().await {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "config watch error");
                        continue;
                    }
                };
                if entry.operation != kv::Operation::Put {
                    continue;
                }
                match RelayConfig::decode(entry.value.as_ref()) {
                    Ok(cfg) => {
                        tracing::info!(generation = cfg.generation, "config snapshot loaded");
                        if tx.send(Some(Arc::new(cfg))).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "undecodable config snapshot ignored");
                        on_rejected();
                    }
                }
            }
        });
        Ok(rx)
    }
}
