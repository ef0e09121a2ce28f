//! Status building, as pure functions: conditions that keep their `lastTransitionTime` while
//! their status does not change, the SendingPool status (workers, queue, and whether the pool
//! compiles), the RelayDomain status from the compiler's [`DomainReport`], the EventSink status
//! from the compiler's [`SinkReport`] and the dispatcher's delivery record, and which condition
//! changes deserve an Event.

use baton_config::compile::{ConditionType, DomainReport, SinkReport};
use baton_config::crd::{EventSinkStatus, RelayDomainStatus, SendingPoolStatus};
use baton_queue::sinks::SinkState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition to set: type, status, reason, message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// Condition type (`Ready`, ...).
    pub type_: &'static str,
    /// `true` for `"True"`.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human message (never secret material).
    pub message: String,
}

impl Desired {
    fn new(type_: &'static str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Desired {
            type_,
            status,
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// The conditions to write: `desired` in order, each keeping the `lastTransitionTime` of the
/// `previous` condition of the same type when its status did not change, else `now`.
pub fn merge(
    previous: &[Condition],
    desired: &[Desired],
    observed_generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status);
            let since = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_owned(),
                status: status.to_owned(),
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// Whether a condition in this state is bad news (a Warning Event): `Conflict=True`,
/// `Failing=True`, or any other condition `False`.
pub fn is_warning(c: &Condition) -> bool {
    if c.type_ == ConditionType::Conflict.as_str() || c.type_ == SINK_FAILING {
        c.status == "True"
    } else {
        c.status == "False"
    }
}

/// The conditions of `next` whose status or reason differ from `previous` (new ones included):
/// what an Event should announce.
pub fn changed<'a>(previous: &[Condition], next: &'a [Condition]) -> Vec<&'a Condition> {
    next.iter()
        .filter(|n| {
            !previous
                .iter()
                .any(|p| p.type_ == n.type_ && p.status == n.status && p.reason == n.reason)
        })
        .collect()
}

/// The status of a RelayDomain from its compiler report.
pub fn domain_status(
    report: &DomainReport,
    generation: Option<i64>,
    previous: Option<&RelayDomainStatus>,
    now: &Time,
) -> RelayDomainStatus {
    let desired: Vec<Desired> = report
        .conditions
        .iter()
        .map(|c| Desired::new(c.type_.as_str(), c.status, &c.reason, c.message.clone()))
        .collect();
    let old = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    RelayDomainStatus {
        observed_generation: generation,
        conditions: merge(old, &desired, generation, now),
        dns_records: report.dns_records.clone(),
    }
}

/// The EventSink condition that is bad news when `True`: the last POST failed.
pub const SINK_FAILING: &str = "Failing";

/// The status of an EventSink from its compiler report and what the webhook dispatcher recorded
/// (`state`, `None` before its first POST) and the events waiting for it (`backlog`, `None`
/// without a consumer):
///
/// - `Ready`: `True`, reason `Delivering`, when the sink is in the snapshot and its last POST did
///   not fail; `False`, reason `Invalid` (the compiler's error, `<field>: <message>`: the sink
///   is left out of the snapshot), else `EndpointFailing` (the last error);
/// - `Failing`: `True`, reason `EndpointFailing`, when the last POST failed (the error and the
///   failures in a row); else `False`, reason `Delivering`, or `NoEvents` while nothing was
///   ever delivered.
///
/// Counters come from the record (none without one); `lastDeliveredTime` to the second (what
/// the API server keeps, so an unchanged status compares equal once stored).
pub fn sink_status(
    report: &SinkReport,
    state: Option<&SinkState>,
    backlog: Option<u64>,
    generation: Option<i64>,
    previous: Option<&EventSinkStatus>,
    now: &Time,
) -> EventSinkStatus {
    let failing = state.filter(|s| s.failing);
    let error = failing.map(|s| {
        if s.last_error.is_empty() {
            "the last POST failed".to_owned()
        } else {
            s.last_error.clone()
        }
    });
    let ready = match (&report.invalid, &error) {
        (Some(invalid), _) => Desired::new("Ready", false, "Invalid", invalid.detail()),
        (None, Some(error)) => Desired::new("Ready", false, "EndpointFailing", error.clone()),
        (None, None) => Desired::new(
            "Ready",
            true,
            "Delivering",
            "events are sent to the endpoint",
        ),
    };
    let never_delivered = state.is_none_or(|s| s.delivered == 0 && s.last_delivered_ms == 0);
    let failing_condition = match (failing, error) {
        (Some(s), Some(error)) => Desired::new(
            SINK_FAILING,
            true,
            "EndpointFailing",
            format!(
                "{error} ({} failed attempts in a row)",
                s.consecutive_failures
            ),
        ),
        _ if never_delivered => Desired::new(
            SINK_FAILING,
            false,
            "NoEvents",
            "no event was delivered yet",
        ),
        _ => Desired::new(
            SINK_FAILING,
            false,
            "Delivering",
            "the endpoint accepted the last event",
        ),
    };
    let last_delivered_time = state
        .map(|s| s.last_delivered_ms)
        .filter(|ms| *ms > 0)
        .and_then(|ms| k8s_openapi::jiff::Timestamp::from_second(ms.div_euclid(1000)).ok())
        .map(Time);
    let old = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    EventSinkStatus {
        observed_generation: generation,
        conditions: merge(old, &[ready, failing_condition], generation, now),
        last_delivered_time,
        backlog,
        delivered: state.map(|s| s.delivered),
        dropped: state.map(|s| s.dropped),
    }
}

/// What the SendingPool reconcile observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolObservation {
    /// `metadata.generation` of the pool.
    pub generation: Option<i64>,
    /// Desired worker replicas (`None`: autoscaled).
    pub desired_replicas: Option<i32>,
    /// Ready worker pods (from the Deployment status).
    pub ready_workers: i32,
    /// Queue depth, or why the lanes could not be provisioned or read.
    pub queue: Result<i64, String>,
    /// Stream or bucket settings that differ from the recorded queue settings after
    /// provisioning (the pool's mail is not as durable as the settings say).
    pub drift: Vec<String>,
    /// Whether the pool compiles into the config snapshot, or why not (the compiler's error,
    /// without the object name): an invalid pool is left out of the snapshot.
    pub config: Result<(), String>,
    /// Smarthosts (`host:port`) whose credentials may be sent over TLS whose certificate was
    /// not verified (`allowUnverifiedCredentials`).
    pub unverified_credentials: Vec<String>,
}

/// The status of a SendingPool: `QueueReady` (stream and lanes provisioned as the recorded
/// settings say; reason `SettingsDrift` when a stream or bucket differs from them), `WorkersReady`
/// (at least one worker ready, or none wanted), `Valid` (the spec compiles into the config
/// snapshot; reason `Invalid` otherwise), `Ready` (all three; else the reason of the first
/// failing one, `Valid` first) and the warning `CredentialsProtected` (`False`, reason
/// `UnverifiedCredentialsAllowed`, when a smarthost's credentials may be sent over TLS whose
/// certificate was not verified; it does not affect `Ready`).
pub fn pool_status(
    obs: &PoolObservation,
    previous: Option<&SendingPoolStatus>,
    now: &Time,
) -> SendingPoolStatus {
    let queue = match &obs.queue {
        Ok(_) if !obs.drift.is_empty() => Desired::new(
            "QueueReady",
            false,
            "SettingsDrift",
            format!("queue settings drift: {}", obs.drift.join("; ")),
        ),
        Ok(_) => Desired::new(
            "QueueReady",
            true,
            "LanesProvisioned",
            "stream and lane consumers provisioned",
        ),
        Err(e) => Desired::new("QueueReady", false, "ProvisioningFailed", e.clone()),
    };
    let wanted = obs.desired_replicas.unwrap_or(1);
    let workers = if wanted == 0 {
        Desired::new("WorkersReady", true, "ScaledToZero", "no workers requested")
    } else if obs.ready_workers > 0 {
        Desired::new(
            "WorkersReady",
            true,
            "WorkersAvailable",
            format!("{} worker(s) ready", obs.ready_workers),
        )
    } else {
        Desired::new(
            "WorkersReady",
            false,
            "NoWorkerReady",
            "no worker pod is ready yet",
        )
    };
    let valid = match &obs.config {
        Ok(()) => Desired::new(
            "Valid",
            true,
            "Compiled",
            "the pool compiles into the config snapshot",
        ),
        Err(e) => Desired::new(
            "Valid",
            false,
            "Invalid",
            format!("left out of the config snapshot: {e}"),
        ),
    };
    let ready = match [&valid, &queue, &workers].into_iter().find(|d| !d.status) {
        None => Desired::new("Ready", true, "Ready", "the pool delivers mail"),
        Some(failing) => Desired::new("Ready", false, &failing.reason, failing.message.clone()),
    };
    let credentials = if obs.unverified_credentials.is_empty() {
        Desired::new(
            "CredentialsProtected",
            true,
            "VerifiedTlsOnly",
            "smarthost credentials are only sent after the certificate verified",
        )
    } else {
        Desired::new(
            "CredentialsProtected",
            false,
            "UnverifiedCredentialsAllowed",
            format!(
                "allowUnverifiedCredentials: credentials may be sent over TLS whose certificate \
                 was not verified to {}",
                obs.unverified_credentials.join(", ")
            ),
        )
    };
    let old = previous.map(|s| s.conditions.as_slice()).unwrap_or(&[]);
    SendingPoolStatus {
        ready_workers: Some(obs.ready_workers),
        queue_depth: obs.queue.as_ref().ok().copied(),
        observed_generation: obs.generation,
        conditions: merge(
            old,
            &[ready, queue, workers, valid, credentials],
            obs.generation,
            now,
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn t(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_is_kept_while_status_holds() {
        let first = merge(
            &[],
            &[Desired::new("Ready", true, "Ok", "m")],
            Some(1),
            &t(10),
        );
        assert_eq!(first[0].last_transition_time, t(10));
        let same = merge(
            &first,
            &[Desired::new("Ready", true, "Other", "m2")],
            Some(2),
            &t(20),
        );
        assert_eq!(same[0].last_transition_time, t(10));
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::new("Ready", false, "No", "m")],
            Some(2),
            &t(30),
        );
        assert_eq!(flipped[0].last_transition_time, t(30));
        assert_eq!(changed(&same, &flipped).len(), 1);
        assert!(changed(&first, &first).is_empty());
        assert!(is_warning(&flipped[0]));
    }

    #[test]
    fn pool_status_reports_workers_queue_and_ready() {
        let obs = PoolObservation {
            generation: Some(4),
            desired_replicas: Some(2),
            ready_workers: 0,
            queue: Ok(7),
            drift: Vec::new(),
            config: Ok(()),
            unverified_credentials: Vec::new(),
        };
        let s = pool_status(&obs, None, &t(1));
        assert_eq!(s.queue_depth, Some(7));
        assert_eq!(s.ready_workers, Some(0));
        assert_eq!(s.observed_generation, Some(4));
        let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            [
                "Ready",
                "QueueReady",
                "WorkersReady",
                "Valid",
                "CredentialsProtected"
            ]
        );
        assert_eq!(s.conditions[3].status, "True");
        assert_eq!(s.conditions[4].status, "True");
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "NoWorkerReady");
        let up = pool_status(
            &PoolObservation {
                ready_workers: 2,
                ..obs.clone()
            },
            Some(&s),
            &t(2),
        );
        assert_eq!(up.conditions[0].status, "True");
        assert_eq!(up.conditions[1].last_transition_time, t(1));
        let broken = pool_status(
            &PoolObservation {
                queue: Err("no JetStream".into()),
                ..obs
            },
            Some(&up),
            &t(3),
        );
        assert_eq!(broken.queue_depth, None);
        assert_eq!(broken.conditions[0].reason, "ProvisioningFailed");
        assert_eq!(broken.conditions[0].message, "no JetStream");
    }

    #[test]
    fn queue_settings_drift_makes_the_pool_not_ready() {
        let obs = PoolObservation {
            generation: Some(1),
            desired_replicas: Some(1),
            ready_workers: 1,
            queue: Ok(3),
            drift: vec![
                "KV_baton-config storage is memory but the recorded settings say file".into(),
            ],
            config: Ok(()),
            unverified_credentials: Vec::new(),
        };
        let s = pool_status(&obs, None, &t(1));
        let summary: Vec<_> = s
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            &summary[..2],
            [
                ("Ready", "False", "SettingsDrift"),
                ("QueueReady", "False", "SettingsDrift"),
            ]
        );
        assert_eq!(
            s.conditions[1].message,
            "queue settings drift: KV_baton-config storage is memory but the recorded settings say file"
        );
        // The depth is still reported.
        assert_eq!(s.queue_depth, Some(3));
    }

    #[test]
    fn an_invalid_pool_is_not_ready_whatever_its_workers_and_queue() {
        let obs = PoolObservation {
            generation: Some(5),
            desired_replicas: Some(1),
            ready_workers: 1,
            queue: Ok(0),
            drift: Vec::new(),
            config: Ok(()),
            unverified_credentials: Vec::new(),
        };
        let up = pool_status(&obs, None, &t(1));
        assert_eq!(up.conditions[0].status, "True");
        let invalid = pool_status(
            &PoolObservation {
                config: Err("spec.retry.maxAge: \"0s\" is shorter than 1s".into()),
                ..obs
            },
            Some(&up),
            &t(2),
        );
        let message =
            "left out of the config snapshot: spec.retry.maxAge: \"0s\" is shorter than 1s";
        let summary: Vec<_> = invalid
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("Ready", "False", "Invalid"),
                ("QueueReady", "True", "LanesProvisioned"),
                ("WorkersReady", "True", "WorkersAvailable"),
                ("Valid", "False", "Invalid"),
                ("CredentialsProtected", "True", "VerifiedTlsOnly"),
            ]
        );
        assert_eq!(invalid.conditions[0].message, message);
        assert_eq!(invalid.conditions[3].message, message);
        assert_eq!(invalid.conditions[3].last_transition_time, t(2));
        assert_eq!(invalid.conditions[1].last_transition_time, t(1));
        // Both change; `Context::announce` sends one Warning Event (Valid repeats Ready's reason).
        let changed: Vec<_> = changed(&up.conditions, &invalid.conditions)
            .into_iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(changed, ["Ready", "Valid"]);
    }

    /// Credentials allowed over unverified TLS are a warning that names the smarthosts and
    /// leaves the pool ready.
    #[test]
    fn unverified_credentials_are_a_warning_not_a_failure() {
        let obs = PoolObservation {
            generation: Some(1),
            desired_replicas: Some(1),
            ready_workers: 1,
            queue: Ok(0),
            drift: Vec::new(),
            config: Ok(()),
            unverified_credentials: vec!["relay.example:587".into()],
        };
        let s = pool_status(&obs, None, &t(1));
        assert_eq!(s.conditions[0].status, "True", "still ready");
        let c = &s.conditions[4];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            (
                "CredentialsProtected",
                "False",
                "UnverifiedCredentialsAllowed"
            )
        );
        assert!(c.message.contains("relay.example:587"), "{}", c.message);
        assert!(is_warning(c));
    }

    fn sink_report(invalid: Option<&str>) -> SinkReport {
        SinkReport {
            name: "team-a/hooks".into(),
            namespace: "team-a".into(),
            resource_name: "hooks".into(),
            invalid: invalid.map(|m| baton_config::InvalidObject {
                kind: "EventSink",
                name: "team-a/hooks".into(),
                field: "spec.secretRef".into(),
                message: m.into(),
            }),
        }
    }

    fn record(delivered: u64, failing: bool) -> SinkState {
        SinkState {
            sink: "team-a/hooks".into(),
            delivered,
            dropped: 2,
            failing,
            last_error: if failing {
                "503 Service Unavailable".into()
            } else {
                String::new()
            },
            last_error_ms: if failing { 1_700_000_100_000 } else { 0 },
            last_delivered_ms: if delivered > 0 { 1_700_000_050_999 } else { 0 },
            consecutive_failures: if failing { 4 } else { 0 },
        }
    }

    /// `(type, status, reason, message)` of every condition.
    fn summary(s: &EventSinkStatus) -> Vec<(&str, &str, &str, &str)> {
        s.conditions
            .iter()
            .map(|c| {
                (
                    c.type_.as_str(),
                    c.status.as_str(),
                    c.reason.as_str(),
                    c.message.as_str(),
                )
            })
            .collect()
    }

    #[test]
    fn a_valid_sink_without_a_record_is_ready_with_no_events() {
        let s = sink_status(&sink_report(None), None, None, Some(3), None, &t(10));
        assert_eq!(
            summary(&s),
            [
                (
                    "Ready",
                    "True",
                    "Delivering",
                    "events are sent to the endpoint"
                ),
                ("Failing", "False", "NoEvents", "no event was delivered yet"),
            ]
        );
        assert_eq!(s.observed_generation, Some(3));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert!(s.conditions.iter().all(|c| c.last_transition_time == t(10)));
        assert_eq!(
            (s.last_delivered_time, s.backlog, s.delivered, s.dropped),
            (None, None, None, None)
        );
        // A record with nothing delivered yet, and a consumer with nothing waiting: still idle.
        let idle = sink_status(
            &sink_report(None),
            Some(&record(0, false)),
            Some(0),
            Some(3),
            None,
            &t(10),
        );
        assert_eq!(idle.conditions[1].reason, "NoEvents");
        assert_eq!(
            (
                idle.last_delivered_time,
                idle.backlog,
                idle.delivered,
                idle.dropped
            ),
            (None, Some(0), Some(0), Some(2))
        );
        assert!(!s.conditions.iter().any(is_warning));
    }

    #[test]
    fn a_delivering_sink_reports_its_counters_and_last_delivery() {
        let s = sink_status(
            &sink_report(None),
            Some(&record(41, false)),
            Some(5),
            Some(1),
            None,
            &t(10),
        );
        assert_eq!(
            summary(&s),
            [
                (
                    "Ready",
                    "True",
                    "Delivering",
                    "events are sent to the endpoint"
                ),
                (
                    "Failing",
                    "False",
                    "Delivering",
                    "the endpoint accepted the last event"
                ),
            ]
        );
        // To the second, as the API server stores it.
        assert_eq!(s.last_delivered_time, Some(t(1_700_000_050)));
        assert_eq!(
            (s.backlog, s.delivered, s.dropped),
            (Some(5), Some(41), Some(2))
        );
        // Round trip through JSON (the API server): the same status, so no patch next time.
        let stored: EventSinkStatus =
            serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap();
        assert_eq!(stored, s);
    }

    #[test]
    fn a_failing_endpoint_makes_the_sink_not_ready_with_the_error() {
        let s = sink_status(
            &sink_report(None),
            Some(&record(41, true)),
            Some(900),
            Some(1),
            None,
            &t(10),
        );
        assert_eq!(
            summary(&s),
            [
                (
                    "Ready",
                    "False",
                    "EndpointFailing",
                    "503 Service Unavailable"
                ),
                (
                    "Failing",
                    "True",
                    "EndpointFailing",
                    "503 Service Unavailable (4 failed attempts in a row)"
                ),
            ]
        );
        assert_eq!((s.backlog, s.delivered), (Some(900), Some(41)));
        assert!(s.conditions.iter().all(is_warning));
        // A failure without a message still says so.
        let mut quiet = record(0, true);
        quiet.last_error.clear();
        let s = sink_status(
            &sink_report(None),
            Some(&quiet),
            None,
            Some(1),
            None,
            &t(10),
        );
        assert_eq!(s.conditions[0].message, "the last POST failed");
        assert_eq!(
            s.conditions[1].message,
            "the last POST failed (4 failed attempts in a row)"
        );
    }

    #[test]
    fn an_invalid_sink_is_not_ready_whatever_its_record() {
        let missing = "Secret team-a/hooks not found";
        let s = sink_status(
            &sink_report(Some(missing)),
            None,
            None,
            Some(2),
            None,
            &t(10),
        );
        assert_eq!(
            summary(&s),
            [
                (
                    "Ready",
                    "False",
                    "Invalid",
                    "spec.secretRef: Secret team-a/hooks not found"
                ),
                ("Failing", "False", "NoEvents", "no event was delivered yet"),
            ]
        );
        // Invalid wins over a failing endpoint for Ready; Failing still tells the last POST.
        let s = sink_status(
            &sink_report(Some(missing)),
            Some(&record(3, true)),
            None,
            Some(2),
            None,
            &t(10),
        );
        assert_eq!(
            (
                s.conditions[0].reason.as_str(),
                s.conditions[1].status.as_str()
            ),
            ("Invalid", "True")
        );
    }

    #[test]
    fn sink_transition_times_are_kept_until_the_status_flips() {
        let report = sink_report(None);
        let up = sink_status(
            &report,
            Some(&record(1, false)),
            Some(0),
            Some(1),
            None,
            &t(10),
        );
        // Still delivering, more delivered, new generation: times kept, nothing to announce.
        let still = sink_status(
            &report,
            Some(&record(9, false)),
            Some(3),
            Some(2),
            Some(&up),
            &t(20),
        );
        assert!(
            still
                .conditions
                .iter()
                .all(|c| c.last_transition_time == t(10))
        );
        assert!(changed(&up.conditions, &still.conditions).is_empty());
        // Failing: both flip at `now`.
        let down = sink_status(
            &report,
            Some(&record(9, true)),
            Some(50),
            Some(2),
            Some(&still),
            &t(30),
        );
        assert!(
            down.conditions
                .iter()
                .all(|c| c.last_transition_time == t(30))
        );
        let announced: Vec<_> = changed(&still.conditions, &down.conditions)
            .into_iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(announced, ["Ready", "Failing"]);
        // Failing again with one more attempt: the message changes, the times do not.
        let mut again = record(9, true);
        again.consecutive_failures = 5;
        let later = sink_status(
            &report,
            Some(&again),
            Some(60),
            Some(2),
            Some(&down),
            &t(40),
        );
        assert!(
            later
                .conditions
                .iter()
                .all(|c| c.last_transition_time == t(30))
        );
        assert_ne!(later, down);
        // Recovered: both flip back at `now`.
        let back = sink_status(
            &report,
            Some(&record(10, false)),
            Some(0),
            Some(2),
            Some(&later),
            &t(50),
        );
        assert!(
            back.conditions
                .iter()
                .all(|c| c.last_transition_time == t(50))
        );
        assert_eq!(back.conditions[0].status, "True");
        // Becoming invalid flips Ready only.
        let invalid = sink_status(
            &sink_report(Some("x")),
            Some(&record(10, false)),
            None,
            Some(3),
            Some(&back),
            &t(60),
        );
        assert_eq!(invalid.conditions[0].last_transition_time, t(60));
        assert_eq!(invalid.conditions[1].last_transition_time, t(50));
    }
}
