//! The `baton-processes` KV bucket: every ingress and worker process says, every
//! [`BEAT_EVERY`], what it is and which config generation it runs (one key per role and
//! instance). Entries expire [`FORGET_AFTER`] after the last beat (the bucket's max age), so a
//! stopped process disappears by itself. The operations API lists them (`GetStatus`).

use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{PROCESS_BUCKET, QueueError};

/// How often a process beats.
pub const BEAT_EVERY: Duration = Duration::from_secs(15);
/// How long an entry lives after its last beat (the bucket's max age).
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// One process as it describes itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// `ingress` or `worker`.
    pub role: String,
    /// The worker's pool (empty for the ingress).
    #[serde(default)]
    pub pool: String,
    /// Pod or host name.
    pub instance: String,
    /// Baton version.
    pub version: String,
    /// Config generation in force (0: none loaded).
    pub generation: u64,
    /// Whether it reports ready.
    pub ready: bool,
    /// When it beat (Unix ms).
    pub at_ms: i64,
}

impl Beat {
    /// Its key: `<role>[-<pool>].<instance>`, with characters KV keys do not allow replaced.
    pub fn key(&self) -> String {
        let role = if self.pool.is_empty() {
            self.role.clone()
        } else {
            format!("{}-{}", self.role, self.pool)
        };
        format!("{}.{}", safe(&role), safe(&self.instance))
    }
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Processes(e.to_string())
}

/// Writes and lists beats.
#[derive(Clone)]
pub struct Processes {
    kv: kv::Store,
}

impl Processes {
    /// Open the bucket (it must have been provisioned).
    pub async fn open(js: &jetstream::Context) -> Result<Self, QueueError> {
        match js.get_key_value(PROCESS_BUCKET).await {
            Ok(kv) => Ok(Processes { kv }),
            Err(e) => Err(QueueError::NotProvisioned {
                what: format!("KV bucket {PROCESS_BUCKET} ({e})"),
            }),
        }
    }

    /// Record one beat.
    pub async fn beat(&self, beat: &Beat) -> Result<(), QueueError> {
        let value = serde_json::to_vec(beat).map_err(err)?;
        self.kv.put(beat.key(), value.into()).await.map_err(err)?;
        Ok(())
    }

    /// Every process that beat within [`FORGET_AFTER`], by key.
    pub async fn list(&self) -> Result<Vec<Beat>, QueueError> {
        let mut keys = self.kv.keys().await.map_err(err)?;
        let mut out = Vec::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(err)?;
            if let Some(b) = self
                .kv
                .get(&k)
                .await
                .map_err(err)?
                .and_then(|v| serde_json::from_slice::<Beat>(&v).ok())
            {
                out.push(b);
            }
        }
        out.sort_by_key(Beat::key);
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_role_pool_and_instance_in_kv_safe_characters() {
        let mut b = Beat {
            role: "worker".into(),
            pool: "bulk".into(),
            instance: "baton-worker-bulk-7f9c.node:1".into(),
            version: "0.1.0".into(),
            generation: 3,
            ready: true,
            at_ms: 1,
        };
        assert_eq!(b.key(), "worker-bulk.baton-worker-bulk-7f9c_node_1");
        b.pool.clear();
        b.role = "ingress".into();
        assert_eq!(b.key(), "ingress.baton-worker-bulk-7f9c_node_1");
        let json = serde_json::to_vec(&b).unwrap();
        assert_eq!(serde_json::from_slice::<Beat>(&json).unwrap(), b);
    }
}
