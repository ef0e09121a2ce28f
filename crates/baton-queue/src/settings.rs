//! The queue settings one owner decides (replicas, storage, duplicate window, consumer limits),
//! their recorded form ([`QueueSettings`] under `queue-settings` in the `baton-config` bucket),
//! and the pure comparison of what a server reports against them ([`drift`]). No I/O here.
//!
//! Why one owner: when every process "ensured" the stream with its own flag, one worker started
//! without `--stream-replicas` silently scaled a 3-replica queue down to a single copy.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::stream::StorageType;
use baton_proto::v1::{QueueSettings, QueueStorage};

/// Stream, consumer and bucket settings, decided by the owner (operator, `baton config apply`,
/// `baton dev`) and verified by everyone else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream and bucket replicas: 1 for a single server, 3 in production clusters.
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is stored once.
    pub duplicate_window: Duration,
    /// How long a lane consumer waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Deliveries before JetStream stops redelivering a message that keeps crashing workers.
    pub max_deliver: i64,
    /// Unacknowledged messages a fresh-mail lane hands out across all workers.
    pub max_ack_pending: i64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            ack_wait: Duration::from_secs(60),
            max_deliver: 50,
            max_ack_pending: 10_000,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl StreamSettings {
    /// The recorded form; `owner` says who decided (`operator`, `config-apply`, `dev`).
    pub fn to_record(&self, owner: &str) -> QueueSettings {
        QueueSettings {
            replicas: u32::try_from(self.replicas).unwrap_or(u32::MAX),
            storage: QueueStorage::File as i32,
            duplicate_window_ms: millis(self.duplicate_window),
            ack_wait_ms: millis(self.ack_wait),
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            owner: owner.to_owned(),
        }
    }

    /// Settings from their recorded form; zero fields (an older or partial record) take the
    /// defaults.
    pub fn from_record(r: &QueueSettings) -> Self {
        let d = StreamSettings::default();
        let or = |ms: u64, default: Duration| {
            if ms == 0 {
                default
            } else {
                Duration::from_millis(ms)
            }
        };
        StreamSettings {
            replicas: if r.replicas == 0 {
                d.replicas
            } else {
                r.replicas as usize
            },
            duplicate_window: or(r.duplicate_window_ms, d.duplicate_window),
            ack_wait: or(r.ack_wait_ms, d.ack_wait),
            max_deliver: if r.max_deliver == 0 {
                d.max_deliver
            } else {
                r.max_deliver
            },
            max_ack_pending: if r.max_ack_pending == 0 {
                d.max_ack_pending
            } else {
                r.max_ack_pending
            },
        }
    }

    /// The settings an owner provisions with: an explicit `--stream-replicas` wins, else what
    /// is already recorded (so running `baton config apply` again without the flag never scales
    /// a 3-replica queue down), else the defaults (1 replica).
    pub fn resolve(flag_replicas: Option<usize>, recorded: Option<&StreamSettings>) -> Self {
        let mut s = recorded.cloned().unwrap_or_default();
        if let Some(r) = flag_replicas {
            s.replicas = r;
        }
        s
    }
}

/// What the server reports about one stream (the queue or a bucket's backing stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// Stream name (`BATON_QUEUE`, `KV_baton-config`, `OBJ_baton-bodies`).
    pub object: String,
    /// `num_replicas` as configured.
    pub replicas: usize,
    /// File or memory.
    pub storage: StorageType,
    /// The duplicate window, for the queue stream (`None` for buckets: not compared).
    pub duplicate_window: Option<Duration>,
}

/// [`Drift::object`] of a process flag that contradicts the recorded settings.
pub(crate) const EXPECTATION: &str = "expectation";

/// One setting of one object that differs from the recorded settings (or from a process's own
/// `--stream-replicas` expectation).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Drift {
    /// The stream or bucket (`BATON_QUEUE`, `KV_baton-config`, `OBJ_baton-bodies`), or
    /// `expectation` for a process flag that contradicts the recorded settings.
    pub object: String,
    /// `replicas`, `storage` or `duplicate_window` (a bounded metric label).
    pub setting: &'static str,
    /// The recorded (or expected) value.
    pub want: String,
    /// What the server (or the record) says.
    pub have: String,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object == EXPECTATION {
            return write!(
                f,
                "--stream-replicas {} contradicts the recorded {} {} (nothing changed)",
                self.want, self.setting, self.have
            );
        }
        write!(
            f,
            "{} {} is {} but the recorded settings say {}",
            self.object, self.setting, self.have, self.want
        )
    }
}

fn storage_name(s: StorageType) -> &'static str {
    match s {
        StorageType::File => "file",
        StorageType::Memory => "memory",
    }
}

/// Every setting of `have` that differs from `want` (empty when it matches). Storage must be
/// file: memory storage does not survive a restart.
pub fn drift(want: &StreamSettings, have: &Observed) -> Vec<Drift> {
    let mut out = Vec::new();
    if have.replicas != want.replicas {
        out.push(Drift {
            object: have.object.clone(),
            setting: "replicas",
            want: want.replicas.to_string(),
            have: have.replicas.to_string(),
        });
    }
    if have.storage != StorageType::File {
        out.push(Drift {
            object: have.object.clone(),
            setting: "storage",
            want: storage_name(StorageType::File).into(),
            have: storage_name(have.storage).into(),
        });
    }
    if let Some(w) = have
        .duplicate_window
        .filter(|w| *w != want.duplicate_window)
    {
        out.push(Drift {
            object: have.object.clone(),
            setting: "duplicate_window",
            want: format!("{:?}", want.duplicate_window),
            have: format!("{w:?}"),
        });
    }
    out
}

/// A process's `--stream-replicas` (now only an expectation: it changes nothing) that
/// contradicts the recorded settings.
pub fn expectation_drift(expected: Option<usize>, recorded: &StreamSettings) -> Option<Drift> {
    let e = expected.filter(|e| *e != recorded.replicas)?;
    Some(Drift {
        object: EXPECTATION.into(),
        setting: "replicas",
        want: e.to_string(),
        have: recorded.replicas.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn observed(replicas: usize, storage: StorageType, window: Option<u64>) -> Observed {
        Observed {
            object: "BATON_QUEUE".into(),
            replicas,
            storage,
            duplicate_window: window.map(Duration::from_secs),
        }
    }

    fn three() -> StreamSettings {
        StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        }
    }

    #[test]
    fn a_matching_stream_has_no_drift() {
        assert_eq!(
            drift(&three(), &observed(3, StorageType::File, Some(120))),
            []
        );
        // Buckets: the duplicate window is not compared.
        assert_eq!(drift(&three(), &observed(3, StorageType::File, None)), []);
    }

    #[test]
    fn replicas_storage_and_window_are_each_reported() {
        let d = drift(&three(), &observed(1, StorageType::Memory, Some(60)));
        let settings: Vec<_> = d.iter().map(|d| d.setting).collect();
        assert_eq!(settings, ["replicas", "storage", "duplicate_window"]);
        assert_eq!((d[0].want.as_str(), d[0].have.as_str()), ("3", "1"));
        assert_eq!((d[1].want.as_str(), d[1].have.as_str()), ("file", "memory"));
        assert_eq!(
            d[0].to_string(),
            "BATON_QUEUE replicas is 1 but the recorded settings say 3"
        );
    }

    #[test]
    fn an_expectation_only_drifts_when_given_and_different() {
        assert_eq!(expectation_drift(None, &three()), None);
        assert_eq!(expectation_drift(Some(3), &three()), None);
        let d = expectation_drift(Some(1), &three()).unwrap();
        assert_eq!(
            (
                d.object.as_str(),
                d.setting,
                d.want.as_str(),
                d.have.as_str()
            ),
            ("expectation", "replicas", "1", "3")
        );
        assert_eq!(
            d.to_string(),
            "--stream-replicas 1 contradicts the recorded replicas 3 (nothing changed)"
        );
    }

    #[test]
    fn the_owner_keeps_recorded_replicas_unless_told_otherwise() {
        let recorded = three();
        assert_eq!(StreamSettings::resolve(None, Some(&recorded)).replicas, 3);
        assert_eq!(
            StreamSettings::resolve(Some(5), Some(&recorded)).replicas,
            5
        );
        assert_eq!(
            StreamSettings::resolve(None, None),
            StreamSettings::default()
        );
        assert_eq!(StreamSettings::resolve(Some(3), None).replicas, 3);
    }

    #[test]
    fn the_record_round_trips_and_zero_fields_take_defaults() {
        let s = StreamSettings {
            replicas: 3,
            duplicate_window: Duration::from_secs(300),
            ack_wait: Duration::from_secs(30),
            max_deliver: 7,
            max_ack_pending: 99,
        };
        let r = s.to_record("dev");
        assert_eq!(r.owner, "dev");
        assert_eq!(r.storage, QueueStorage::File as i32);
        assert_eq!(StreamSettings::from_record(&r), s);
        assert_eq!(
            StreamSettings::from_record(&QueueSettings::default()),
            StreamSettings::default()
        );
    }
}
