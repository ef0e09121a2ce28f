//! Status building, as pure functions: conditions that keep their `lastTransitionTime` while
//! their status does not change, the SendingPool status (workers, queue, and whether the pool
//! compiles), the RelayDomain status from the compiler's [`DomainReport`], and which condition
//! changes deserve an Event.

use baton_config::compile::{ConditionType, DomainReport};
use baton_config::crd::{RelayDomainStatus, SendingPoolStatus};
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

/// Whether a condition in this state is bad news (a Warning Event): `Conflict=True`, or any
/// other condition `False`.
pub fn is_warning(c: &Condition) -> bool {
    if c.type_ == ConditionType::Conflict.as_str() {
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
}
