//! Spike detection per SMTP credential (a RelayDomain's `spec.limits.spike`): each message of
//! an authenticated user counts in the credential's hourly count, shared by every ingress pod
//! in the `baton-limits` bucket (`in.spike.h<hour>.<hash>`, a compare-and-set increment); the
//! baseline is the mean hourly count of the previous 24 hours, read once per credential and
//! hour. A spike is at least `minimum_per_hour` messages this hour and more than `factor` times
//! the baseline.
//!
//! The message that crosses the threshold is counted (`baton_limit_spikes_total{action}`),
//! logged and published as a `credential_spike` event ([`report`], [`emit`]; the operator turns
//! it into a Kubernetes Event on the RelayDomain) once — exact across pods: one increment
//! returns the crossing value. Then by action:
//! `Alert` lets mail flow; `Throttle` refuses the credential's further messages this hour with
//! `450 4.7.1`; `Hold` accepts them into the pool's quarantine (released with `baton queue
//! release`).
//!
//! Detection is not a limit: when NATS is slow or unreachable (a bounded wait) the message is
//! not counted and nothing is refused (counted in `baton_limit_fallback_total{limit="spike"}`).
//! The compare-and-set increment is a thin adapter over [`baton_limits::Kv`] (the crate's own
//! helper is private).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use baton_core::event::CredentialSpike;
use baton_limits::window::{Period, scope_hash, window_index, window_key};
use baton_limits::{Kv, KvError, Options, read_modify_write, timed};
use baton_proto::v1 as pb;
use bytes::Bytes;
use parking_lot::Mutex;

/// Namespace of the credentials' hourly counts.
pub const NS_SPIKE: &str = "in.spike";

/// Hours in the baseline.
pub const BASELINE_HOURS: i64 = 24;

/// Most baselines cached (one per credential and hour).
const MAX_CACHED: usize = 100_000;

/// Compare-and-set attempts of one increment.
const CAS_ATTEMPTS: u32 = 16;

/// What a counted message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Below the threshold (or not counted).
    Normal,
    /// This message crossed the threshold (reported once).
    Crossed(Crossing),
    /// Beyond the threshold after it was crossed.
    Beyond(pb::SpikeAction),
}

/// The crossing of a threshold: the policy's action, this hour's count and the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Crossing {
    /// What the policy does about the spike.
    pub action: pb::SpikeAction,
    /// The credential's messages this hour, this one included.
    pub count: u64,
    /// The smallest spiking count this hour.
    pub threshold: u64,
}

/// The policy's threshold for a baseline: the smallest spiking count.
pub fn threshold(policy: &pb::SpikePolicy, baseline_sum: u64) -> u64 {
    // count > factor × (sum / 24)  ⇔  24 × count > factor × sum.
    let factor = u64::from(policy.factor.max(1));
    let above = (factor.saturating_mul(baseline_sum)) / BASELINE_HOURS as u64 + 1;
    above.max(u64::from(policy.minimum_per_hour.max(1)))
}

/// Classify this hour's `count` (after the increment) against `threshold`.
pub fn classify(action: pb::SpikeAction, count: u64, threshold: u64) -> Verdict {
    match count.cmp(&threshold) {
        std::cmp::Ordering::Less => Verdict::Normal,
        std::cmp::Ordering::Equal => Verdict::Crossed(Crossing {
            action,
            count,
            threshold,
        }),
        std::cmp::Ordering::Greater => Verdict::Beyond(action),
    }
}

/// The name of a spike action (metric label, log field, event `action`).
pub fn action_label(action: pb::SpikeAction) -> &'static str {
    match action {
        pb::SpikeAction::Alert => "alert",
        pb::SpikeAction::Throttle => "throttle",
        pb::SpikeAction::Hold => "hold",
    }
}

/// What is reported about `crossing`: RelayDomain `relay_domain` (`namespace/name`), the
/// authenticated `user` (as the client gave it; never a password) and `policy`'s settings.
pub fn report(
    relay_domain: &str,
    user: &str,
    crossing: &Crossing,
    policy: &pb::SpikePolicy,
) -> CredentialSpike {
    CredentialSpike {
        relay_domain: relay_domain.to_owned(),
        credential: user.to_owned(),
        count: crossing.count,
        threshold: crossing.threshold,
        action: action_label(crossing.action).to_owned(),
        factor: policy.factor,
        minimum_per_hour: policy.minimum_per_hour,
    }
}

/// Publish `spike` as a `credential_spike` event (in the background, when events are on)
/// under a new queue id naming the crossing.
pub(crate) fn emit(shared: &crate::Shared, spike: &CredentialSpike) {
    if !shared.publisher.emits_events() {
        return;
    }
    let now_ms = baton_core::clock::now_ms();
    let id = baton_core::ids::new_queue_id(now_ms, &mut rand::rng());
    shared.publisher.emit(spike.event(&id, now_ms));
}

/// The shared hourly counts.
pub struct Spikes {
    kv: Arc<dyn Kv>,
    timeout: Duration,
    /// Baseline sums per (credential hash, hour index).
    baselines: Mutex<HashMap<(String, i64), u64>>,
}

impl std::fmt::Debug for Spikes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spikes")
            .field("cached", &self.baselines.lock().len())
            .finish()
    }
}

fn parse(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl Spikes {
    /// Counts over `kv`, each round trip bounded by `timeout`.
    pub fn new(kv: Arc<dyn Kv>, timeout: Duration) -> Spikes {
        Spikes {
            kv,
            timeout,
            baselines: Mutex::new(HashMap::new()),
        }
    }

    /// Count one message of credential `scope` at `now_ms`; `Err` when the KV did not answer
    /// (nothing decided).
    pub async fn count(
        &self,
        policy: &pb::SpikePolicy,
        scope: &str,
        now_ms: i64,
    ) -> Result<Verdict, KvError> {
        let hash = scope_hash(scope);
        let hour = window_index(Period::Hour, now_ms);
        let count = self
            .increment(&window_key(NS_SPIKE, Period::Hour, hour, &hash))
            .await?;
        let sum = self.baseline(&hash, hour).await?;
        let action = pb::SpikeAction::try_from(policy.action).unwrap_or(pb::SpikeAction::Alert);
        Ok(classify(action, count, threshold(policy, sum)))
    }

    async fn increment(&self, key: &str) -> Result<u64, KvError> {
        let opts = Options {
            timeout: self.timeout,
            cas_attempts: CAS_ATTEMPTS,
            ..Options::default()
        };
        read_modify_write(self.kv.as_ref(), &opts, key, |current| {
            let n = current.map_or(0, parse).saturating_add(1);
            Ok((Some(Bytes::from(n.to_string())), n))
        })
        .await
    }

    /// Sum of the previous 24 hourly counts of `hash` (cached for the hour).
    async fn baseline(&self, hash: &str, hour: i64) -> Result<u64, KvError> {
        let cache_key = (hash.to_string(), hour);
        if let Some(sum) = self.baselines.lock().get(&cache_key) {
            return Ok(*sum);
        }
        let keys: Vec<String> = (1..=BASELINE_HOURS)
            .map(|h| window_key(NS_SPIKE, Period::Hour, hour - h, hash))
            .collect();
        let reads = keys.iter().map(|k| timed(self.timeout, self.kv.entry(k)));
        let mut sum = 0u64;
        for r in futures::future::join_all(reads).await {
            if let Some((v, _)) = r? {
                sum = sum.saturating_add(parse(&v));
            }
        }
        let mut cache = self.baselines.lock();
        if cache.len() >= MAX_CACHED {
            cache.retain(|(_, h), _| *h == hour);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(cache_key, sum);
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use baton_limits::MemoryKv;

    fn policy(action: pb::SpikeAction, factor: u32, minimum: u32) -> pb::SpikePolicy {
        pb::SpikePolicy {
            action: action as i32,
            factor,
            minimum_per_hour: minimum,
        }
    }

    #[test]
    fn thresholds() {
        let p = policy(pb::SpikeAction::Alert, 10, 100);
        // A quiet credential may send a burst of up to the minimum.
        assert_eq!(threshold(&p, 0), 100);
        // Baseline 24/h (sum 576): more than 240 in the hour.
        assert_eq!(threshold(&p, 576), 241);
        assert_eq!(classify(pb::SpikeAction::Alert, 240, 241), Verdict::Normal);
        assert_eq!(
            classify(pb::SpikeAction::Throttle, 241, 241),
            Verdict::Crossed(Crossing {
                action: pb::SpikeAction::Throttle,
                count: 241,
                threshold: 241
            })
        );
        assert_eq!(
            classify(pb::SpikeAction::Hold, 300, 241),
            Verdict::Beyond(pb::SpikeAction::Hold)
        );
    }

    #[tokio::test]
    async fn counts_against_the_previous_day() {
        let kv = Arc::new(MemoryKv::new());
        let hash = scope_hash("ns/d\u{0}alice");
        let now = 1_796_415_302_123;
        let hour = window_index(Period::Hour, now);
        // 2 messages in each of the previous 24 hours: baseline 2/h.
        for h in 1..=BASELINE_HOURS {
            kv.put(
                &window_key(NS_SPIKE, Period::Hour, hour - h, &hash),
                Bytes::from_static(b"2"),
            );
        }
        // Older hours do not count.
        kv.put(
            &window_key(NS_SPIKE, Period::Hour, hour - 25, &hash),
            Bytes::from_static(b"1000"),
        );
        let spikes = Spikes::new(kv.clone(), Duration::from_secs(1));
        let p = policy(pb::SpikeAction::Throttle, 3, 5);
        // More than 3 × 2 = 6: the 7th crosses.
        let mut verdicts = Vec::new();
        for _ in 0..8 {
            verdicts.push(spikes.count(&p, "ns/d\u{0}alice", now).await.unwrap());
        }
        assert!(verdicts[..6].iter().all(|v| *v == Verdict::Normal));
        assert_eq!(
            verdicts[6],
            Verdict::Crossed(Crossing {
                action: pb::SpikeAction::Throttle,
                count: 7,
                threshold: 7
            })
        );
        assert_eq!(verdicts[7], Verdict::Beyond(pb::SpikeAction::Throttle));
        let key = window_key(NS_SPIKE, Period::Hour, hour, &hash);
        assert!(key.starts_with("in.spike.h"));
        assert_eq!(kv.value(&key).unwrap(), Bytes::from_static(b"8"));
    }

    #[test]
    fn a_crossing_is_reported_with_the_credential_count_threshold_and_action() {
        let p = policy(pb::SpikeAction::Hold, 10, 100);
        let Verdict::Crossed(crossing) = classify(pb::SpikeAction::Hold, 241, 241) else {
            panic!("not a crossing");
        };
        let spike = report("team-a/example-com", "App", &crossing, &p);
        assert_eq!(
            spike,
            CredentialSpike {
                relay_domain: "team-a/example-com".into(),
                credential: "App".into(),
                count: 241,
                threshold: 241,
                action: "hold".into(),
                factor: 10,
                minimum_per_hour: 100,
            }
        );
        let e = spike.event("Q1", 0);
        assert_eq!(e.kind, baton_core::event::EventType::CredentialSpike);
        assert_eq!(e.relay_domain, "team-a/example-com");
        assert_eq!(e.data["credential"], "App");
        assert_eq!(e.data["count"], 241);
        assert_eq!(e.data["threshold"], 241);
        assert_eq!(e.data["action"], "hold");
        assert_eq!(
            e.subject(),
            "baton.events.team-a.example-com.Q1.credential_spike"
        );
        for (a, l) in [
            (pb::SpikeAction::Alert, "alert"),
            (pb::SpikeAction::Throttle, "throttle"),
            (pb::SpikeAction::Hold, "hold"),
        ] {
            assert_eq!(action_label(a), l);
        }
    }

    #[tokio::test]
    async fn a_dead_kv_decides_nothing() {
        let kv = Arc::new(MemoryKv::new());
        kv.set_mode(baton_limits::MemoryMode::Fail);
        let spikes = Spikes::new(kv, Duration::from_millis(50));
        let p = policy(pb::SpikeAction::Throttle, 3, 1);
        assert!(spikes.count(&p, "x", 0).await.is_err());
    }
}
