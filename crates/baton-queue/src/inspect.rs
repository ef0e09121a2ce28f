//! Reading the queue without consuming it: the operations API's view of `BATON_QUEUE`.
//!
//! A work-queue stream allows no second consumer over subjects a lane consumer already
//! filters (server error 10100), so reading goes through the stream's direct-get API
//! (`allow_direct`, provisioned on the queue stream) in batches: one request returns up to
//! [`SCAN_BATCH`] stored messages at or after a sequence whose subject matches a filter, and a
//! final end-of-batch status that says how many more match. Nothing here acknowledges, and a
//! read never changes what workers see. Places are told apart by subject ([`Place`]).

use std::collections::BTreeMap;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;

use crate::{QueueError, STREAM};

/// Messages asked for per direct-get batch.
pub const SCAN_BATCH: usize = 1000;
/// Bytes asked for per batch at most (the server stops a batch earlier when reached).
const SCAN_MAX_BYTES: usize = 16 * 1024 * 1024;
/// How long one batch may take before the read fails.
const BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a stored message waits, from its subject.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Place {
    /// `baton.new.<pool>`.
    New,
    /// `baton.retry.<pool>.<tier>`.
    Retry(u32),
    /// `baton.dead.<pool>`.
    Dead,
    /// `baton.held.<pool>`.
    Held,
    /// `baton.quarantine.<pool>`.
    Quarantine,
}

/// Pool and place of a queue subject; `None` for anything else.
pub fn parse_subject(subject: &str) -> Option<(String, Place)> {
    let mut parts = subject.split('.');
    if parts.next() != Some("baton") {
        return None;
    }
    let kind = parts.next()?;
    let pool = parts.next()?.to_owned();
    let place = match (kind, parts.next()) {
        ("new", None) => Place::New,
        ("dead", None) => Place::Dead,
        ("held", None) => Place::Held,
        ("quarantine", None) => Place::Quarantine,
        ("retry", Some(tier)) => Place::Retry(tier.parse().ok()?),
        _ => return None,
    };
    if parts.next().is_some() || pool.is_empty() {
        return None;
    }
    Some((pool, place))
}

/// One message as stored in the queue stream.
#[derive(Clone, Debug)]
pub struct StoredMessage {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject (its place).
    pub subject: String,
    /// When the stream stored it (Unix milliseconds).
    pub stored_at_ms: i64,
    /// The message's own headers (`Nats-*` bookkeeping included).
    pub headers: HeaderMap,
    /// The payload (an encoded envelope, unless it is an undecodable dead letter).
    pub payload: Bytes,
}

impl StoredMessage {
    /// A header's value, empty when absent.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    }
}

/// One batch of a scan.
#[derive(Debug, Default)]
pub struct Batch {
    /// The messages, in stream order.
    pub messages: Vec<StoredMessage>,
    /// Where the next batch starts (0: nothing more matches).
    pub next: u64,
}

/// Reads and deletes stored queue messages (the admin identity's permissions).
#[derive(Clone)]
pub struct Inspector {
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
}

impl Inspector {
    /// An inspector over `js` (whose client must be the one it was made from).
    pub fn new(client: async_nats::Client, js: async_nats::jetstream::Context) -> Self {
        Inspector { client, js }
    }

    /// Up to `limit` (at most [`SCAN_BATCH`]) messages at or after sequence `from` whose subject
    /// matches `filter` (wildcards allowed).
    pub async fn batch(&self, filter: &str, from: u64, limit: usize) -> Result<Batch, QueueError> {
        self.batch_in(STREAM, filter, from, limit).await
    }

    /// Like [`Inspector::batch`] in stream `stream` (e.g. the event stream).
    pub async fn batch_in(
        &self,
        stream: &str,
        filter: &str,
        from: u64,
        limit: usize,
    ) -> Result<Batch, QueueError> {
        let request = serde_json::json!({
            "seq": from.max(1),
            "next_by_subj": filter,
            "batch": limit.clamp(1, SCAN_BATCH),
            "max_bytes": SCAN_MAX_BYTES,
        });
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| inspect_err("subscribe", e))?;
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{stream}"),
                inbox,
                Bytes::from(request.to_string()),
            )
            .await
            .map_err(|e| inspect_err("direct get", e))?;
        let mut batch = Batch::default();
        let collect = async {
            while let Some(m) = replies.next().await {
                match m.status.map(|s| s.as_u16()) {
                    None => batch.messages.push(stored(m)?),
                    // End of batch: how many more match after the last one sent.
                    Some(204) => {
                        let pending: u64 = header_num(m.headers.as_ref(), "Nats-Num-Pending");
                        let last: u64 = header_num(m.headers.as_ref(), "Nats-Last-Sequence");
                        batch.next = if pending > 0 { last + 1 } else { 0 };
                        return Ok(());
                    }
                    // Nothing matches at or after `from`.
                    Some(404) => return Ok(()),
                    Some(code) => {
                        return Err(QueueError::Inspect(format!(
                            "direct get answered {code} {}",
                            m.description.unwrap_or_default()
                        )));
                    }
                }
            }
            Err(QueueError::Inspect(
                "direct get: subscription closed".into(),
            ))
        };
        match tokio::time::timeout(BATCH_TIMEOUT, collect).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(QueueError::Inspect(format!(
                    "direct get: no end of batch within {BATCH_TIMEOUT:?}"
                )));
            }
        }
        Ok(batch)
    }

    /// The message at `sequence`, if it is still stored.
    pub async fn get(&self, sequence: u64) -> Result<Option<StoredMessage>, QueueError> {
        let b = self.batch("baton.>", sequence, 1).await?;
        Ok(b.messages.into_iter().find(|m| m.sequence == sequence))
    }

    /// Delete pool `pool`'s message at `sequence` (false: it was no longer stored), because
    /// of `action` (`delete`, `retry-now`, ...). The move is recorded first ([`crate::moved`]),
    /// so a worker holding the message while it waits for its due time stops; if recording
    /// fails nothing is deleted.
    pub async fn delete(
        &self,
        pool: &str,
        sequence: u64,
        action: &str,
    ) -> Result<bool, QueueError> {
        crate::moved::record(&self.js, pool, sequence, action).await?;
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| inspect_err("get stream", e))?;
        match stream.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(e) if e.to_string().contains("no message found") => Ok(false),
            Err(e) => Err(inspect_err("delete", e)),
        }
    }

    /// Stored messages per subject matching `filter`, from the server's own index (no read).
    pub async fn subject_counts(&self, filter: &str) -> Result<BTreeMap<String, u64>, QueueError> {
        let stream = self
            .js
            .get_stream(STREAM)
            .await
            .map_err(|e| inspect_err("get stream", e))?;
        let mut subjects = stream
            .info_with_subjects(filter)
            .await
            .map_err(|e| inspect_err("stream info", e))?;
        let mut out = BTreeMap::new();
        while let Some(entry) = subjects.next().await {
            let (name, n) = entry.map_err(|e| inspect_err("stream info", e))?;
            out.insert(name, n as u64);
        }
        Ok(out)
    }

    /// The first `limit` bytes of a large body in the object store (and whether there is more).
    pub async fn body_prefix(
        &self,
        at: &crate::BodyRef,
        limit: usize,
    ) -> Result<(Bytes, bool), QueueError> {
        use tokio::io::AsyncReadExt;
        let store = self
            .js
            .get_object_store(&at.bucket)
            .await
            .map_err(|e| QueueError::ObjectStore(e.to_string()))?;
        let obj = store
            .get(&at.name)
            .await
            .map_err(|e| QueueError::ObjectStore(e.to_string()))?;
        let mut out = Vec::with_capacity(limit.min(64 * 1024));
        let read = obj
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| QueueError::ObjectStore(e.to_string()))?;
        let truncated = read > limit;
        out.truncate(limit);
        Ok((Bytes::from(out), truncated))
    }
}

fn stored(m: async_nats::Message) -> Result<StoredMessage, QueueError> {
    let headers = m.headers.unwrap_or_default();
    let sequence = header_num(Some(&headers), "Nats-Sequence");
    if sequence == 0 {
        return Err(QueueError::Inspect(
            "direct get: a message without Nats-Sequence".into(),
        ));
    }
    let subject = headers
        .get("Nats-Subject")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    let stored_at_ms = headers
        .get("Nats-Time-Stamp")
        .and_then(|v| {
            time::OffsetDateTime::parse(v.as_str(), &time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0);
    Ok(StoredMessage {
        sequence,
        subject,
        stored_at_ms,
        headers,
        payload: m.payload,
    })
}

fn header_num(headers: Option<&HeaderMap>, name: &str) -> u64 {
    headers
        .and_then(|h| h.get(name))
        .and_then(|v| v.as_str().trim().parse().ok())
        .unwrap_or(0)
}

fn inspect_err(what: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Inspect(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_their_pool_and_place() {
        assert_eq!(
            parse_subject("baton.new.bulk"),
            Some(("bulk".into(), Place::New))
        );
        assert_eq!(
            parse_subject("baton.retry.bulk.3"),
            Some(("bulk".into(), Place::Retry(3)))
        );
        assert_eq!(
            parse_subject("baton.dead.bulk"),
            Some(("bulk".into(), Place::Dead))
        );
        assert_eq!(
            parse_subject("baton.held.bulk"),
            Some(("bulk".into(), Place::Held))
        );
        assert_eq!(
            parse_subject("baton.quarantine.bulk"),
            Some(("bulk".into(), Place::Quarantine))
        );
        for other in [
            "baton.new",
            "baton.new.bulk.x",
            "baton.retry.bulk",
            "baton.retry.bulk.x",
            "baton.dead.bulk.1",
            "other.new.bulk",
            "baton.held.bulk.1",
            "baton.later.bulk",
        ] {
            assert_eq!(parse_subject(other), None, "{other}");
        }
    }
}
