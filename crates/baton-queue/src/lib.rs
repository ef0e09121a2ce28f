//! `baton-queue` owns everything Baton keeps in NATS JetStream: the `BATON_QUEUE` work-queue
//! stream and its per-pool lanes (`baton.new.<pool>`, `baton.retry.<pool>.<tier>`), publishing
//! envelopes with a `Nats-Msg-Id` and awaiting the PubAck, large bodies in the Object Store,
//! pulling and acknowledging queued messages, the `baton-config` KV snapshot, the
//! `baton-suppressions` KV bucket ([`suppression`]), the `baton-holds` KV bucket ([`holds`]),
//! the `BATON_EVENTS` stream ([`events`]), the `baton-moved` KV bucket ([`moved`]),
//! reading the queue without consuming it ([`inspect`]), and reading
//! consumer state for metrics. One owner provisions ([`Provisioner::provision`] records the
//! settings next to the snapshot); everyone else verifies ([`Verifier`]) and reports drift.
//!
//! It is a thin shell: no policy lives here. See `../shared/ARCHITECTURE.md` for why deferred
//! mail is re-published to retry lanes instead of being NAK'd with a delay.

mod config_store;
mod connect;
mod consume;
pub mod dead;
mod error;
pub mod events;
mod holding;
pub mod holds;
pub mod inspect;
pub mod moved;
pub mod permissions;
pub mod processes;
mod provision;
mod publish;
mod settings;
pub mod sinks;
pub mod suppression;
mod verify;

pub use config_store::{ConfigStore, ConfigWatch, KEY_RETRY, SnapshotEvent};
pub use connect::{NatsAuth, NatsOptions, NatsTls, connect, denials, readiness_problem};
pub use consume::{BODY_RETRY, Lane, LaneKind, OnDead, QueuedMessage};
pub use error::QueueError;
pub use holding::Holding;
pub use inspect::Inspector;
pub use provision::{LaneStats, Provisioner};
pub use publish::{PublishReceipt, Publisher};
pub use settings::{Drift, Observed, StreamSettings, drift, expectation_drift};
pub use verify::{Verified, Verifier, body_bucket_stream, config_bucket_stream};

/// Name of the work-queue stream holding all queued mail.
pub const STREAM: &str = "BATON_QUEUE";
/// The shared Object Store bucket of earlier versions for message bodies too large to travel
/// inline. New bodies go to their pool's own bucket ([`body_bucket`]); this one is only read
/// (and emptied) until the mail accepted before is delivered, then deleted by the owner.
pub const BODY_BUCKET: &str = "baton-bodies";

/// Object Store bucket of pool `pool`'s large bodies (`baton-bodies-<pool>`): the ingress
/// writes it, only that pool's workers read and delete (`permissions`).
pub fn body_bucket(pool: &str) -> String {
    format!("{BODY_BUCKET}-{pool}")
}

/// Where a large body is stored: bucket and object name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyRef {
    /// Object Store bucket ([`body_bucket`], or the legacy [`BODY_BUCKET`]).
    pub bucket: String,
    /// Object name.
    pub name: String,
}

impl BodyRef {
    /// The body reference of `envelope`, when its body is in the Object Store.
    pub fn of(envelope: &baton_proto::v1::Envelope) -> Option<BodyRef> {
        match &envelope.body {
            Some(baton_proto::v1::envelope::Body::ObjectRef(name)) => Some(BodyRef {
                bucket: if envelope.object_bucket.is_empty() {
                    BODY_BUCKET.to_owned()
                } else {
                    envelope.object_bucket.clone()
                },
                name: name.clone(),
            }),
            _ => None,
        }
    }

    /// Make `envelope` reference this body instead of carrying one.
    pub fn attach(&self, envelope: &mut baton_proto::v1::Envelope) {
        envelope.body = Some(baton_proto::v1::envelope::Body::ObjectRef(
            self.name.clone(),
        ));
        envelope.object_bucket = if self.bucket == BODY_BUCKET {
            String::new()
        } else {
            self.bucket.clone()
        };
    }
}
/// KV bucket holding the compiled `RelayConfig` snapshot.
pub const CONFIG_BUCKET: &str = "baton-config";
/// KV bucket holding the relay domains' suppression lists (`baton_core::suppression`).
pub const SUPPRESSION_BUCKET: &str = "baton-suppressions";
/// KV bucket where ingress and worker processes say what they run ([`processes`]).
pub const PROCESS_BUCKET: &str = "baton-processes";
/// KV bucket holding the operators' holds (`baton_core::hold`, [`holds`]).
pub const HOLD_BUCKET: &str = "baton-holds";
/// KV bucket of the operations API's moves ([`moved`]): which stored messages it deleted or
/// moved, so a worker holding one stops without reading the queue stream.
pub const MOVED_BUCKET: &str = "baton-moved";
/// How long a move is remembered: longer than any message waits in one retry tier.
pub const MOVED_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// KV bucket of the EventSinks' delivery records ([`sinks`]).
pub const SINK_STATUS_BUCKET: &str = "baton-sink-status";
/// KV bucket of the cluster-wide limits (`baton_limits`): inbound budgets and AUTH lockouts
/// (keys under [`LIMITS_INBOUND_PREFIX`]), and each pool's outbound shaping (keys under
/// [`limits_outbound_prefix`]). Entries expire after [`LIMITS_MAX_AGE`].
pub const LIMITS_BUCKET: &str = "baton-limits";
/// How long a limits entry lives: past the longest window (a day) with margin.
pub const LIMITS_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(26 * 3600);
/// Key prefix of the ingress's entries in [`LIMITS_BUCKET`].
pub const LIMITS_INBOUND_PREFIX: &str = "in";
/// Key prefix of pool `pool`'s outbound entries in [`LIMITS_BUCKET`] (`out.<pool>`).
pub fn limits_outbound_prefix(pool: &str) -> String {
    format!("out.{pool}")
}
/// Key of the snapshot inside [`CONFIG_BUCKET`].
pub const CONFIG_KEY: &str = "relay-config";
/// Key of the recorded [`StreamSettings`] (`baton.v1.QueueSettings`) inside [`CONFIG_BUCKET`].
pub const QUEUE_SETTINGS_KEY: &str = "queue-settings";
/// Retry tiers the lane statistics probe (the most a pool can have, `baton_config`'s
/// `MAX_RETRY_TIERS`).
pub const MAX_LANE_TIERS: u32 = 16;
/// Bodies larger than this go to the Object Store (JetStream's default max_payload is 1 MiB and
/// the envelope needs room for its own fields).
pub const INLINE_BODY_LIMIT: usize = 900 * 1024;

/// Subject of the fresh-mail lane of a pool.
pub fn new_subject(pool: &str) -> String {
    format!("baton.new.{pool}")
}

/// Subject of a pool's dead letters ([`dead`]).
pub fn dead_subject(pool: &str) -> String {
    format!("baton.dead.{pool}")
}

/// Subject of a pool's held mail ([`holds`]).
pub fn held_subject(pool: &str) -> String {
    format!("baton.held.{pool}")
}

/// Subject of a pool's quarantine: mail a content filter quarantined at the ingress. No
/// consumer reads it (workers never deliver from it, the held-mail sweep never looks at it);
/// the operations API lists, releases (to `baton.new.<pool>`) and deletes it.
pub fn quarantine_subject(pool: &str) -> String {
    format!("baton.quarantine.{pool}")
}

/// Subject of one retry tier of a pool.
pub fn retry_subject(pool: &str, tier: u32) -> String {
    format!("baton.retry.{pool}.{tier}")
}

/// Durable consumer name of a lane. Pool names are Kubernetes names (DNS labels), which are
/// valid consumer names.
pub fn consumer_name(pool: &str, kind: LaneKind) -> String {
    match kind {
        LaneKind::New => format!("{pool}-new"),
        LaneKind::Retry(tier) => format!("{pool}-retry-{tier}"),
    }
}

/// Whether the client currently has a live connection to the server.
pub fn is_connected(client: &async_nats::Client) -> bool {
    matches!(
        client.connection_state(),
        async_nats::connection::State::Connected
    )
}
