//! EventSinks on the NATS side: each sink's durable consumer on `BATON_EVENTS` (its name, its
//! subject filters, which confine it to its namespace), and its delivery record in the
//! `baton-sink-status` KV bucket, written by the dispatcher (`baton webhooks`) and read by the
//! operator for the EventSink's status.
//!
//! A sink's consumer uses the pinned-client priority policy: every dispatcher replica pulls
//! every sink, and the server hands each sink's events to one replica at a time (the pin moves
//! when that replica stops pulling for [`PIN_TIMEOUT`]). One replica per sink is what keeps
//! events in order per message; sinks spread over the replicas.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use baton_core::event::token;
use baton_proto::v1::EventSink;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::QueueError;
use crate::events::EVENT_STREAM;

/// How long a sink's record stays without being written again (a removed sink's is
/// forgotten).
pub const STATUS_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
/// The priority group every dispatcher pulls.
pub const DISPATCH_GROUP: &str = "dispatch";
/// How long a replica keeps a sink's pin without pulling.
pub const PIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an event handed to a dispatcher stays its own without an acknowledgement or a
/// progress report before the server offers it again.
pub const ACK_WAIT: Duration = Duration::from_secs(30);
/// Most events one sink has in flight (handed out, not yet acknowledged); a sink's
/// `maxBacklog` lowers it.
pub const WINDOW: i64 = 1_000;

/// The durable consumer of sink `name` (`namespace/name`): `sink-` and 20 hex digits of its
/// SHA-256 (consumer names allow no `.` or `/`; the sink is named in the consumer's metadata).
pub fn consumer_name(sink: &str) -> String {
    let digest = Sha256::digest(sink.as_bytes());
    format!("sink-{}", &hex::encode(digest)[..20])
}

/// The subjects a sink's consumer takes: only its namespace's events
/// (`baton.events.<namespace>.…`), narrowed to its RelayDomains and types when it names any.
pub fn filters(sink: &EventSink) -> Vec<String> {
    let ns = token(&sink.namespace);
    if sink.relay_domains.is_empty() && sink.types.is_empty() {
        return vec![format!("baton.events.{ns}.>")];
    }
    let all = ["*".to_owned()];
    let domains: Vec<String> = sink.relay_domains.iter().map(|d| token(d)).collect();
    let types: Vec<String> = sink.types.iter().map(|t| token(t)).collect();
    let domains = if domains.is_empty() {
        &all[..]
    } else {
        &domains
    };
    let types = if types.is_empty() { &all[..] } else { &types };
    let mut out = Vec::with_capacity(domains.len() * types.len());
    for d in domains {
        for t in types {
            out.push(format!("baton.events.{ns}.{d}.*.{t}"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The consumer configuration of a sink.
pub fn consumer_config(sink: &EventSink) -> consumer::pull::Config {
    let filters = filters(sink);
    let (filter_subject, filter_subjects) = if filters.len() == 1 {
        (filters[0].clone(), Vec::new())
    } else {
        (String::new(), filters)
    };
    consumer::pull::Config {
        durable_name: Some(consumer_name(&sink.name)),
        description: Some(format!("Baton EventSink {}", sink.name)),
        deliver_policy: consumer::DeliverPolicy::New,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        // The sink's backlog bound also bounds what a dispatcher holds: while the endpoint is
        // down, at most `maxBacklog` events wait in memory and the rest in the stream, where
        // the oldest beyond the bound are dropped as they come up.
        max_ack_pending: i64::try_from(sink.max_backlog)
            .unwrap_or(WINDOW)
            .clamp(1, WINDOW),
        filter_subject,
        filter_subjects,
        priority_policy: consumer::PriorityPolicy::PinnedClient,
        priority_groups: vec![DISPATCH_GROUP.to_owned()],
        priority_timeout: PIN_TIMEOUT,
        metadata: [("baton.dev/sink".to_owned(), sink.name.clone())].into(),
        ..Default::default()
    }
}

fn sink_err(e: impl std::fmt::Display) -> QueueError {
    QueueError::Sinks(e.to_string())
}

/// Create the sink's consumer, or bring an existing one's filters and limits to the sink
/// (its position is kept). A new consumer starts with the events published from now on.
pub async fn ensure_consumer(
    js: &jetstream::Context,
    sink: &EventSink,
) -> Result<consumer::PullConsumer, QueueError> {
    let stream = js.get_stream(EVENT_STREAM).await.map_err(sink_err)?;
    stream
        .create_consumer(consumer_config(sink))
        .await
        .map_err(sink_err)
}

/// Delete the consumers of sinks that are no longer configured (`sink-*` consumers whose name
/// is not one of `keep`'s). The owner calls this after it stored the snapshot without them.
/// Returns the deleted consumers' names. Untouched: consumers not named `sink-*`.
pub async fn remove_stale(
    js: &jetstream::Context,
    keep: &[String],
) -> Result<Vec<String>, QueueError> {
    use futures::TryStreamExt as _;
    let Ok(stream) = js.get_stream(EVENT_STREAM).await else {
        return Ok(Vec::new());
    };
    let wanted: std::collections::HashSet<String> = keep.iter().map(|k| consumer_name(k)).collect();
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(sink_err)?;
    let mut removed = Vec::new();
    for name in names {
        if name.starts_with("sink-") && !wanted.contains(&name) {
            stream.delete_consumer(&name).await.map_err(sink_err)?;
            tracing::info!(consumer = %name, "removed the consumer of a deleted event sink");
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Events waiting for the sink: not yet handed out, plus handed out and not acknowledged.
pub async fn backlog(js: &jetstream::Context, sink: &str) -> Result<Option<u64>, QueueError> {
    let stream = js.get_stream(EVENT_STREAM).await.map_err(sink_err)?;
    match stream.consumer_info(consumer_name(sink)).await {
        Ok(info) => Ok(Some(info.num_pending.saturating_add(
            u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX),
        ))),
        Err(e) if e.to_string().contains("not found") => Ok(None),
        Err(e) => Err(sink_err(e)),
    }
}

/// What the dispatcher records about one sink.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SinkState {
    /// `namespace/name` of the sink.
    pub sink: String,
    /// Events the endpoint accepted (since the record began).
    pub delivered: u64,
    /// Events dropped by the backlog or age bound.
    pub dropped: u64,
    /// Whether the last POST failed.
    pub failing: bool,
    /// The last POST's failure (status line or transport error), without secrets.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// When the last POST failed (Unix ms; 0: never).
    pub last_error_ms: i64,
    /// When the endpoint last accepted an event (Unix ms; 0: never).
    pub last_delivered_ms: i64,
    /// Failed POSTs in a row.
    pub consecutive_failures: u64,
}

/// The `baton-sink-status` bucket.
#[derive(Clone)]
pub struct SinkStatusStore {
    kv: kv::Store,
}

impl std::fmt::Debug for SinkStatusStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkStatusStore")
    }
}

impl SinkStatusStore {
    /// Open the bucket (the owner creates it: [`crate::Provisioner::ensure_buckets`]).
    pub async fn open(js: &jetstream::Context) -> Result<Self, QueueError> {
        let kv = js
            .get_key_value(crate::SINK_STATUS_BUCKET)
            .await
            .map_err(sink_err)?;
        Ok(SinkStatusStore { kv })
    }

    /// Record a sink's state.
    pub async fn put(&self, state: &SinkState) -> Result<(), QueueError> {
        let body = serde_json::to_vec(state).map_err(sink_err)?;
        self.kv
            .put(consumer_name(&state.sink), body.into())
            .await
            .map_err(sink_err)?;
        Ok(())
    }

    /// A sink's recorded state.
    pub async fn get(&self, sink: &str) -> Result<Option<SinkState>, QueueError> {
        match self.kv.get(consumer_name(sink)).await.map_err(sink_err)? {
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(sink_err),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sink(ns: &str, domains: &[&str], types: &[&str]) -> EventSink {
        EventSink {
            name: format!("{ns}/hooks"),
            namespace: ns.into(),
            relay_domains: domains.iter().map(|s| (*s).into()).collect(),
            types: types.iter().map(|s| (*s).into()).collect(),
            ..EventSink::default()
        }
    }

    #[test]
    fn a_sink_only_ever_filters_its_own_namespace() {
        assert_eq!(
            filters(&sink("team-a", &[], &[])),
            ["baton.events.team-a.>"]
        );
        assert_eq!(
            filters(&sink("team-a", &["shop"], &[])),
            ["baton.events.team-a.shop.*.*"]
        );
        assert_eq!(
            filters(&sink("team-a", &["a.b", "c"], &["delivered", "bounced"])),
            [
                "baton.events.team-a.a_b.*.bounced",
                "baton.events.team-a.a_b.*.delivered",
                "baton.events.team-a.c.*.bounced",
                "baton.events.team-a.c.*.delivered",
            ]
        );
        // Wildcards or separators in a name cannot widen the filter.
        for f in filters(&sink("x.>", &["*"], &[">"])) {
            assert!(f.starts_with("baton.events.x__."), "{f}");
            assert_eq!(f.split('.').count(), 6, "{f}");
        }
        let c = consumer_config(&sink("team-a", &[], &[]));
        assert_eq!(c.filter_subject, "baton.events.team-a.>");
        assert_eq!(c.max_ack_pending, 1, "max_backlog 0 still holds one");
        let mut big = sink("team-a", &[], &[]);
        big.max_backlog = 100_000;
        assert_eq!(consumer_config(&big).max_ack_pending, WINDOW);
        big.max_backlog = 5;
        assert_eq!(consumer_config(&big).max_ack_pending, 5);
        assert!(c.filter_subjects.is_empty());
        let c = consumer_config(&sink("team-a", &[], &["delivered", "bounced"]));
        assert_eq!(c.filter_subject, "");
        assert_eq!(c.filter_subjects.len(), 2);
    }

    #[test]
    fn consumer_names_are_valid_and_distinct() {
        let a = consumer_name("team-a/hooks");
        assert!(a.starts_with("sink-") && a.len() == 25, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_ne!(a, consumer_name("team-b/hooks"));
        assert_eq!(a, consumer_name("team-a/hooks"));
    }
}
