//! Leader election with a `coordination.k8s.io/v1` Lease, hand-rolled (no maintained crate fits
//! kube 5): the holder renews every [`LeaderElector::renew_every`]; another replica takes over
//! only after the lease expired (`renewTime + leaseDurationSeconds`). Writes carry the Lease's
//! `resourceVersion`, so two replicas racing for an expired lease cannot both win (409).
//! [`decide`] is the pure decision.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::context::FIELD_MANAGER;
use crate::error::Result;

/// What a replica should do with the Lease it just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds a live lease: take it (new acquire time, transitions + 1).
    Acquire,
    /// We hold it: renew.
    Renew,
    /// Someone else holds a live lease.
    Standby {
        /// Current holder.
        holder: String,
    },
}

/// Decide from the Lease spec (`None`: no Lease yet) what `me` does at `now`.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == me {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(t) if t + duration > now => Decision::Standby {
            holder: holder.to_owned(),
        },
        _ => Decision::Acquire,
    }
}

/// The Lease spec after `decision` (`None` for standby).
pub fn next_spec(
    current: Option<&LeaseSpec>,
    decision: &Decision,
    me: &str,
    duration: Duration,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let seconds = i32::try_from(duration.as_secs()).unwrap_or(i32::MAX);
    match decision {
        Decision::Standby { .. } => None,
        Decision::Renew => {
            let mut spec = current.cloned().unwrap_or_default();
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(seconds);
            Some(spec)
        }
        Decision::Acquire => Some(LeaseSpec {
            holder_identity: Some(me.to_owned()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                current
                    .and_then(|s| s.lease_transitions)
                    .map_or(0, |t| t + 1),
            ),
            ..LeaseSpec::default()
        }),
    }
}

/// Acquires and renews the Lease; publishes whether this replica leads.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and a standby retries).
    pub renew_every: Duration,
}

impl LeaderElector {
    /// An elector for Lease `namespace/name` as `identity` (15 s lease, renewed every 5 s).
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    /// One round: read the Lease, then create, take over or renew it. Returns whether we lead.
    pub async fn try_once(&self) -> Result<bool> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(spec, &self.identity, now);
        if let Decision::Standby { holder } = &decision {
            tracing::debug!(%holder, "standby: lease held by another replica");
            return Ok(false);
        }
        let Some(next) = next_spec(spec, &decision, &self.identity, self.lease_duration, now)
        else {
            return Ok(false);
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(next),
                };
                self.api.create(&params, &lease).await
            }
            Some(mut lease) => {
                lease.spec = Some(next);
                self.api.replace(&self.name, &params, &lease).await
            }
        };
        match written {
            Ok(_) => {
                if decision == Decision::Acquire {
                    tracing::info!(identity = %self.identity, lease = %self.name, "acquired leadership");
                }
                Ok(true)
            }
            // Another replica wrote first.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Give the lease up (on shutdown) so a standby takes over at once. Best effort.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        let params = PostParams::default();
        if let Err(e) = self.api.replace(&self.name, &params, &lease).await {
            tracing::warn!(error = %e, "cannot release the lease");
        }
    }

    /// Run until `stop`: `leader` follows the outcome of each round. A leader that cannot renew
    /// for a whole lease duration steps down (`false`). `healthy` follows whether rounds reach
    /// the API server. Releases the lease on stop.
    pub async fn run(
        self,
        leader: watch::Sender<bool>,
        healthy: impl Fn(Option<String>),
        stop: CancellationToken,
    ) {
        let mut last_renewed: Option<tokio::time::Instant> = None;
        loop {
            match self.try_once().await {
                Ok(leads) => {
                    healthy(None);
                    if leads {
                        last_renewed = Some(tokio::time::Instant::now());
                    }
                    leader.send_if_modified(|l| std::mem::replace(l, leads) != leads);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    healthy(Some(format!("leader election: {e}")));
                    let expired = last_renewed.is_none_or(|t| t.elapsed() >= self.lease_duration);
                    if expired {
                        leader.send_if_modified(|l| std::mem::replace(l, false));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.renew_every) => {}
                _ = stop.cancelled() => break,
            }
        }
        if *leader.borrow() {
            self.release().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            acquire_time: Some(MicroTime(at(renewed))),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(None, "a", at(100)), Decision::Acquire);
        assert_eq!(
            decide(Some(&held_by("b", 90)), "a", at(100)),
            Decision::Standby { holder: "b".into() }
        );
        // Expired exactly at renew + duration.
        assert_eq!(
            decide(Some(&held_by("b", 85)), "a", at(100)),
            Decision::Acquire
        );
        assert_eq!(
            decide(Some(&held_by("a", 10)), "a", at(100)),
            Decision::Renew
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("b", 99)
        };
        assert_eq!(decide(Some(&released), "a", at(100)), Decision::Acquire);
    }

    #[test]
    fn acquiring_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let old = held_by("b", 50);
        let taken = next_spec(
            Some(&old),
            &Decision::Acquire,
            "a",
            Duration::from_secs(15),
            at(100),
        )
        .unwrap();
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(100))));
        let renewed = next_spec(
            Some(&taken),
            &Decision::Renew,
            "a",
            Duration::from_secs(15),
            at(105),
        )
        .unwrap();
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(100))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(105))));
        let first = next_spec(
            None,
            &Decision::Acquire,
            "a",
            Duration::from_secs(15),
            at(1),
        )
        .unwrap();
        assert_eq!(first.lease_transitions, Some(0));
        assert!(
            next_spec(
                None,
                &Decision::Standby { holder: "b".into() },
                "a",
                Duration::from_secs(15),
                at(1)
            )
            .is_none()
        );
    }
}
