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

    /// Store a snapshot; returns the KV revision. A snapshot holding a secret in clear is
    /// refused ([`QueueError::ClearSecrets`]): every writer seals first
    /// ([`baton_seal::seal_config`]), so no secret is ever at rest in clear in JetStream.
    pub async fn put(&self, config: &RelayConfig) -> Result<u64, QueueError> {
        let clear = baton_seal::clear_secrets(config);
        if !clear.is_empty() {
            return Err(QueueError::ClearSecrets(clear));
        }
        self.kv
            .put(CONFIG_KEY, config.encode_to_vec().into())
            .await
            .map_err(err)
    }

    /// Watch the snapshot: the returned receiver holds the latest usable config, its secrets
    /// opened with the keyring from `keys` ([`baton_seal::unseal_config`]), and changes
    /// whenever a new one is written. A snapshot that does not decode, or whose secrets do not
    /// open, is logged and reported to `report` ([`SnapshotEvent::Rejected`]); the previous one
    /// stays in force. One whose secrets do not open (a rotation whose new key file has not
    /// reached this pod, a keyring mount still empty) is retried every [`KEY_RETRY`],
    /// re-reading the keyring directory, until it opens or a newer snapshot replaces it. Every snapshot put in
    /// force is reported as [`SnapshotEvent::Loaded`]. The watch task ends when all receivers
    /// are dropped.
    pub async fn watch(
        &self,
        keys: baton_seal::KeySource,
        report: impl Fn(SnapshotEvent<'_>) + Send + 'static,
    ) -> Result<ConfigWatch, QueueError> {
        let mut updates = self.kv.watch_with_history(CONFIG_KEY).await.map_err(err)?;
        let (tx, rx) = watch::channel(None);
        let mut keyring = match keys.load() {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "keyring not loaded; sealed snapshots cannot be used");
                None
            }
        };
        tokio::spawn(async move {
            // A snapshot waiting for a key this process does not have yet.
            let mut waiting: Option<RelayConfig> = None;
            loop {
                let config = tokio::select! {
                    entry = updates.next() => {
                        let Some(entry) = entry else { break };
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
                            // A newer snapshot supersedes one still waiting for its key: that
                            // one must never be put in force after it.
                            Ok(cfg) => {
                                waiting = None;
                                cfg
                            }
                            Err(e) => {
                                let reason = format!("undecodable config snapshot: {e}");
                                tracing::error!(error = %e, "undecodable config snapshot ignored");
                                report(SnapshotEvent::Rejected { generation: None, reason: &reason });
                                continue;
                            }
                        }
                    }
                    _ = tokio::time::sleep(KEY_RETRY), if waiting.is_some() => {
                        match keys.load() {
                            Ok(k) => keyring = k,
                            Err(e) => tracing::warn!(error = %e, "keyring not reloaded"),
                        }
                        match waiting.take() {
                            Some(cfg) => cfg,
                            None => continue,
                        }
                    }
                };
                let generation = config.generation;
                let mut opened = config.clone();
                let mut result = baton_seal::unseal_config(&mut opened, keyring.as_ref());
                if matches!(&result, Err(e) if e.is_unknown_key()) {
                    // The new key may just have arrived: read the directory again first.
                    if let Ok(k) = keys.load() {
                        keyring = k;
                        opened = config.clone();
                        result = baton_seal::unseal_config(&mut opened, keyring.as_ref());
                    }
                }
                match result {
                    Ok(_) => {
                        tracing::info!(generation, "config snapshot loaded");
                        report(SnapshotEvent::Loaded { generation });
                        if tx.send(Some(Arc::new(opened))).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let reason = format!(
                            "config snapshot generation {generation} not used, the previous one stays in force: {e}"
                        );
                        tracing::error!(generation, error = %e, "config snapshot secrets do not open; keeping the previous snapshot");
                        report(SnapshotEvent::Rejected {
                            generation: Some(generation),
                            reason: &reason,
                        });
                        // Every such fault is the keyring's (a key not mounted yet, a mount
                        // still empty, material being replaced): try again with it re-read.
                        waiting = Some(config);
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// How often a snapshot sealed with a key this process lacks is tried again.
pub const KEY_RETRY: Duration = Duration::from_secs(10);

/// What became of a snapshot the watch saw.
#[derive(Clone, Copy, Debug)]
pub enum SnapshotEvent<'a> {
    /// Put in force.
    Loaded {
        /// Its generation.
        generation: u64,
    },
    /// Not used: the previous snapshot stays in force.
    Rejected {
        /// Its generation, when it decoded.
        generation: Option<u64>,
        /// Why, for logs and `/readyz` (never secret material).
        reason: &'a str,
    },
}
