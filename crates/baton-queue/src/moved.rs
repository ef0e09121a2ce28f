//! The `baton-moved` KV bucket: the operations API's record of the stored messages it deleted
//! or moved (retry now, bounce, release, requeue, delete), keyed `<pool>.<stream sequence>`.
//!
//! A worker may hold a retry-lane message for hours, waiting for its due time; meanwhile an
//! operator may move or delete it. Before its attempt the worker asks this bucket whether its
//! copy is still the one to deliver, instead of reading the queue stream: the stream's message
//! API cannot be narrowed to one pool's subjects, while this bucket's keys can — a worker
//! identity of pool P reads only `<P>.>` here (`crate::permissions`) and so cannot read other
//! pools' queued mail.
//!
//! The record is written before the stored message is deleted, so a worker never misses a
//! move. Records expire after [`crate::MOVED_MAX_AGE`].

use async_nats::jetstream;

use crate::{MOVED_BUCKET, QueueError};

/// Key of the record of pool `pool`'s stored message `sequence`.
pub fn key(pool: &str, sequence: u64) -> String {
    format!("{pool}.{sequence}")
}

fn kv_err(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Provision {
        what: format!("{MOVED_BUCKET} {what}"),
        detail: e.to_string(),
    }
}

/// Record that pool `pool`'s stored message `sequence` was moved or deleted by `action`.
pub async fn record(
    js: &jetstream::Context,
    pool: &str,
    sequence: u64,
    action: &str,
) -> Result<(), QueueError> {
    let kv = js
        .get_key_value(MOVED_BUCKET)
        .await
        .map_err(|e| kv_err("open", e))?;
    kv.put(key(pool, sequence), bytes::Bytes::from(action.to_owned()))
        .await
        .map_err(|e| kv_err("put", e))?;
    Ok(())
}

/// Whether pool `pool`'s stored message `sequence` was moved or deleted. Only a record found
/// says yes; a missing bucket or any error says no (a duplicate attempt is better than a lost
/// message).
pub async fn was_moved(js: &jetstream::Context, pool: &str, sequence: u64) -> bool {
    let Ok(kv) = js.get_key_value(MOVED_BUCKET).await else {
        return false;
    };
    matches!(kv.get(key(pool, sequence)).await, Ok(Some(_)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_per_pool() {
        assert_eq!(super::key("bulk", 42), "bulk.42");
    }
}
