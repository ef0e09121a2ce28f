//! The `baton-holds` KV bucket: the operators' holds (`baton_core::hold`), one key per
//! target. The operations API writes it ([`HoldStore`]); every worker follows it
//! ([`HoldCache`]) and moves the recipients a hold covers to its pool's held place
//! (`baton.held.<pool>`, [`crate::held_subject`]) instead of trying them.
//!
//! A worker's cache may lag a change by the watch's latency (milliseconds): a message taken
//! just after a release can still be held once. The API releases again what no hold covers
//! (periodically, and after every release), so nothing stays held without a hold.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use baton_core::hold::{Hold, Holds, Target};
use futures::StreamExt;
use parking_lot::RwLock;

use crate::{HOLD_BUCKET, QueueError};

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Holds(e.to_string())
}

/// Reads and writes holds.
#[derive(Clone)]
pub struct HoldStore {
    kv: kv::Store,
}

impl HoldStore {
    /// Open the bucket (it must have been provisioned).
    pub async fn open(js: &jetstream::Context) -> Result<Self, QueueError> {
        match js.get_key_value(HOLD_BUCKET).await {
            Ok(kv) => Ok(HoldStore { kv }),
            Err(e) => Err(QueueError::NotProvisioned {
                what: format!("KV bucket {HOLD_BUCKET} ({e})"),
            }),
        }
    }

    /// Place (or replace) a hold.
    pub async fn put(&self, hold: &Hold) -> Result<u64, QueueError> {
        self.kv
            .put(hold.target.key(), hold.encode().into())
            .await
            .map_err(err)
    }

    /// Remove the hold on `target`; false when there was none.
    pub async fn remove(&self, target: &Target) -> Result<bool, QueueError> {
        let key = target.key();
        if self.kv.get(&key).await.map_err(err)?.is_none() {
            return Ok(false);
        }
        self.kv.delete(&key).await.map_err(err)?;
        Ok(true)
    }

    /// Every hold in force.
    pub async fn list(&self) -> Result<Holds, QueueError> {
        let mut keys = self.kv.keys().await.map_err(err)?;
        let mut holds = Holds::default();
        while let Some(k) = keys.next().await {
            let k = k.map_err(err)?;
            if let Some(h) = self
                .kv
                .get(&k)
                .await
                .map_err(err)?
                .and_then(|b| Hold::decode(&b))
            {
                holds.insert(h);
            }
        }
        Ok(holds)
    }
}

/// The holds in force as a worker sees them, kept current by a KV watch (restarted on error).
#[derive(Clone, Default)]
pub struct HoldCache {
    holds: Arc<RwLock<Holds>>,
}

impl HoldCache {
    /// Follow the bucket in the background; `on_change` gets the number of holds after each
    /// change.
    pub fn follow(
        js: jetstream::Context,
        on_change: impl Fn(usize) + Send + Sync + 'static,
    ) -> HoldCache {
        let cache = HoldCache::default();
        let holds = cache.holds.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = follow_once(&js, &holds, &on_change).await {
                    tracing::debug!(error = %e, "hold watch ended; restarting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        cache
    }

    /// The holds now.
    pub fn current(&self) -> Holds {
        self.holds.read().clone()
    }

    /// What the holds say about one envelope (see [`Holds::verdict`]).
    pub fn verdict(
        &self,
        pool: &str,
        relay_domain: &str,
        queue_id: &str,
        recipients: &[&str],
    ) -> baton_core::hold::Verdict {
        self.holds
            .read()
            .verdict(pool, relay_domain, queue_id, recipients)
    }
}

async fn follow_once(
    js: &jetstream::Context,
    holds: &RwLock<Holds>,
    on_change: &(impl Fn(usize) + Send + Sync),
) -> Result<(), QueueError> {
    let kv = js.get_key_value(HOLD_BUCKET).await.map_err(err)?;
    let mut watch = kv.watch_all().await.map_err(err)?;
    while let Some(update) = watch.next().await {
        let update = update.map_err(err)?;
        let n = {
            let mut map = holds.write();
            match update.operation {
                kv::Operation::Put => match Hold::decode(&update.value) {
                    Some(h) if h.target.key() == update.key => map.insert(h),
                    _ => tracing::warn!(key = %update.key, "undecodable hold ignored"),
                },
                kv::Operation::Delete | kv::Operation::Purge => map.remove(&update.key),
            }
            map.list().count()
        };
        on_change(n);
    }
    Ok(())
}
