//! The `baton-suppressions` KV bucket: reading and writing suppression entries
//! ([`SuppressionStore`]: the worker adds, the CLI lists/adds/removes), and a watched in-memory
//! copy ([`SuppressionCache`]) that every ingress pod and worker consults without a round trip.
//! The entry format and all decisions are `baton_core::suppression`'s.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use baton_core::suppression::{Entry, key, key_prefix};
use futures::StreamExt;
use parking_lot::RwLock;

use crate::{QueueError, SUPPRESSION_BUCKET};

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Suppressions(e.to_string())
}

/// Reads and writes suppression entries.
#[derive(Clone)]
pub struct SuppressionStore {
    kv: kv::Store,
}

impl SuppressionStore {
    /// Open the bucket (the owner creates it: [`crate::Provisioner::ensure_buckets`]).
    pub async fn open(js: &jetstream::Context) -> Result<Self, QueueError> {
        match js.get_key_value(SUPPRESSION_BUCKET).await {
            Ok(kv) => Ok(SuppressionStore { kv }),
            Err(e) => Err(QueueError::NotProvisioned {
                what: format!("KV bucket {SUPPRESSION_BUCKET} ({e})"),
            }),
        }
    }

    /// Add or replace an entry; returns the KV revision.
    pub async fn put(&self, entry: &Entry) -> Result<u64, QueueError> {
        self.kv
            .put(entry.key(), entry.encode().into())
            .await
            .map_err(err)
    }

    /// The entry for a recipient of a relay domain (expired ones included).
    pub async fn get(
        &self,
        relay_domain: &str,
        address: &str,
    ) -> Result<Option<Entry>, QueueError> {
        let bytes = self.kv.get(key(relay_domain, address)).await.map_err(err)?;
        Ok(bytes.and_then(|b| Entry::decode(&b)))
    }

    /// Remove an entry; returns whether there was one.
    pub async fn remove(&self, relay_domain: &str, address: &str) -> Result<bool, QueueError> {
        if self.get(relay_domain, address).await?.is_none() {
            return Ok(false);
        }
        self.kv
            .delete(key(relay_domain, address))
            .await
            .map_err(err)?;
        Ok(true)
    }

    /// Every entry (of one relay domain, when given), expired ones included, sorted by relay
    /// domain and address.
    pub async fn list(&self, relay_domain: Option<&str>) -> Result<Vec<Entry>, QueueError> {
        let prefix = relay_domain.map(key_prefix);
        let mut keys = self.kv.keys().await.map_err(err)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(err)?;
            if prefix.as_ref().is_some_and(|p| !k.starts_with(p.as_str())) {
                continue;
            }
            if let Some(e) = self
                .kv
                .get(&k)
                .await
                .map_err(err)?
                .and_then(|b| Entry::decode(&b))
            {
                out.push(e);
            }
        }
        out.sort_by(|a, b| (&a.relay_domain, &a.address).cmp(&(&b.relay_domain, &b.address)));
        Ok(out)
    }

    /// Delete every entry that expired before `now_ms`; returns how many.
    pub async fn purge_expired(&self, now_ms: i64) -> Result<usize, QueueError> {
        let mut n = 0;
        for e in self.list(None).await? {
            if !e.is_live(now_ms) {
                self.kv.delete(e.key()).await.map_err(err)?;
                n += 1;
            }
        }
        Ok(n)
    }
}

/// A watched copy of the whole bucket. Lookups never touch the network; the copy follows the
/// bucket within moments of a change (and re-synchronises after a disconnect: the watch
/// delivers the last value, or delete marker, of every key again).
#[derive(Clone, Default)]
pub struct SuppressionCache {
    entries: Arc<RwLock<HashMap<String, Entry>>>,
}

impl SuppressionCache {
    /// Start following the bucket of `js` in a background task (until the process ends). While
    /// the bucket does not exist yet, or after an error, it retries every second. `on_change`
    /// gets the number of entries after each change (for a gauge).
    pub fn follow(
        js: jetstream::Context,
        on_change: impl Fn(usize) + Send + Sync + 'static,
    ) -> SuppressionCache {
        let cache = SuppressionCache::default();
        let entries = cache.entries.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = follow_once(&js, &entries, &on_change).await {
                    tracing::debug!(error = %e, "suppression list watch ended; restarting");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        cache
    }

    /// The live entry for a recipient of a relay domain, if any.
    pub fn lookup(&self, relay_domain: &str, address: &str, now_ms: i64) -> Option<Entry> {
        self.entries
            .read()
            .get(&key(relay_domain, address))
            .filter(|e| e.is_live(now_ms))
            .cloned()
    }

    /// Entries known (live or not).
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether no entry is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

async fn follow_once(
    js: &jetstream::Context,
    entries: &RwLock<HashMap<String, Entry>>,
    on_change: &(impl Fn(usize) + Send + Sync),
) -> Result<(), QueueError> {
    let kv = js.get_key_value(SUPPRESSION_BUCKET).await.map_err(err)?;
    let mut watch = kv.watch_all().await.map_err(err)?;
    while let Some(update) = watch.next().await {
        let update = update.map_err(err)?;
        let n = {
            let mut map = entries.write();
            match update.operation {
                kv::Operation::Put => match Entry::decode(&update.value) {
                    Some(e) => {
                        map.insert(update.key.clone(), e);
                    }
                    None => {
                        tracing::warn!(key = %update.key, "undecodable suppression entry ignored");
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    map.remove(&update.key);
                }
            }
            map.len()
        };
        on_change(n);
    }
    Ok(())
}
