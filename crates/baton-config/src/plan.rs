//! Snapshot planning, the pure part of publishing a configuration that the operator and
//! `baton config apply` share: compile the resources against the snapshot in force, decide
//! whether anything changed (content digest) and the generation, and name the queue lanes the
//! snapshot's pools need. No Kubernetes API, no NATS.

use std::time::Duration;

use baton_proto::v1::{RelayConfig, SendingPool};

use crate::{Compiled, ConfigError, Resources, compile, config_digest};

/// A compiled snapshot and whether it must be published.
#[derive(Clone, Debug)]
pub struct SnapshotPlan {
    /// The snapshot (with its final generation) and the per-object reports.
    pub compiled: Compiled,
    /// True when the content differs from the previous snapshot (or there was none).
    pub publish: bool,
}

/// The lanes one pool needs: `baton.new.<pool>` and one retry lane per tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolLanes {
    /// The SendingPool.
    pub pool: String,
    /// Retry tiers (retry lanes).
    pub retry_tiers: u32,
}

/// Compile `res` against the `previous` snapshot: same content keeps the previous generation
/// and timestamp (nothing to publish); new content gets `previous.generation + 1` (1 at first).
/// Invalid objects (pools left out, domains never ready) are reported in the plan's
/// [`Compiled`]; callers that want all or nothing check [`Compiled::ensure_valid`].
pub fn plan_snapshot(
    res: &Resources,
    previous: Option<&RelayConfig>,
    now_ms: i64,
) -> Result<SnapshotPlan, ConfigError> {
    plan_sealed(res, previous, now_ms, None)
}

/// [`plan_snapshot`] for a snapshot that will be stored: its secrets are sealed with `keyring`
/// ([`baton_seal::seal_config`]) before the digest is taken. Sealing is deterministic, so
/// unchanged resources under the same sealing key keep the generation, and a new sealing key
/// (a rotation) re-seals everything under a new generation. Without a keyring the secrets stay
/// in clear, which the store refuses (`baton_queue::ConfigStore::put`).
pub fn plan_sealed(
    res: &Resources,
    previous: Option<&RelayConfig>,
    now_ms: i64,
    keyring: Option<&baton_seal::Keyring>,
) -> Result<SnapshotPlan, ConfigError> {
    let mut compiled = compile(res, 0, now_ms)?;
    if keyring.is_some() {
        baton_seal::seal_config(&mut compiled.config, keyring)?;
    }
    let digest = config_digest(&compiled.config);
    match previous {
        Some(prev) if config_digest(prev) == digest => {
            compiled.config.generation = prev.generation;
            compiled.config.compiled_at_ms = prev.compiled_at_ms;
            Ok(SnapshotPlan {
                compiled,
                publish: false,
            })
        }
        prev => {
            compiled.config.generation = prev.map(|p| p.generation + 1).unwrap_or(1);
            Ok(SnapshotPlan {
                compiled,
                publish: true,
            })
        }
    }
}

/// Time a large body is kept past the longest a message can be queued: room for the final
/// attempt, the DSN and the ack when workers were down or the queue was backed up.
pub const BODY_RETENTION_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Retry tiers of a compiled pool: one per schedule entry (the compiler never leaves the
/// schedule empty).
pub fn retry_tiers(pool: &SendingPool) -> u32 {
    u32::try_from(pool.retry_schedule_secs.len()).unwrap_or(u32::MAX)
}

impl SnapshotPlan {
    /// How long the large-body bucket must keep an object: the longest a message of any pool
    /// can stay queued — its `maxAge` plus its longest retry delay (a message is checked for
    /// expiry when it comes due, at most one delay past its age) — plus
    /// [`BODY_RETENTION_GRACE`]. `None` without pools (nothing to decide yet).
    pub fn body_retention(&self) -> Option<Duration> {
        self.compiled
            .config
            .pools
            .iter()
            .map(|p| {
                let longest = p.retry_schedule_secs.iter().copied().max().unwrap_or(0);
                Duration::from_secs(p.max_age_secs.saturating_add(longest))
            })
            .max()
            .map(|d| d.saturating_add(BODY_RETENTION_GRACE))
    }

    /// The lanes every pool of the snapshot needs, in pool order.
    pub fn lanes(&self) -> Vec<PoolLanes> {
        self.compiled
            .config
            .pools
            .iter()
            .map(|p| PoolLanes {
                pool: p.name.clone(),
                retry_tiers: retry_tiers(p),
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::crd::{RelayDomain, RelayDomainSpec, SendingPool, SendingPoolSpec};

    fn res() -> Resources {
        let domain: RelayDomainSpec = serde_json::from_value(serde_json::json!({
            "domain": "example.com", "pool": "default"
        }))
        .unwrap();
        let mut rd = RelayDomain::new("example", domain);
        rd.metadata.namespace = Some("team-a".into());
        Resources {
            pools: vec![SendingPool::new("default", SendingPoolSpec::default())],
            domains: vec![rd],
            ..Resources::default()
        }
    }

    #[test]
    fn sealed_plans_keep_the_generation_until_the_sealing_key_changes() {
        let mut with_secret = res();
        with_secret.domains[0].spec.return_path = serde_json::from_value(serde_json::json!({
            "domain": "bounces.example.com",
            "mxHost": "mx.example.com",
            "keySecretRef": {"name": "verp"}
        }))
        .unwrap();
        with_secret.secrets = vec![k8s_openapi::api::core::v1::Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("verp".into()),
                namespace: Some("team-a".into()),
                ..Default::default()
            },
            string_data: None,
            data: Some(
                [(
                    "key-1".to_string(),
                    k8s_openapi::ByteString(b"0123456789abcdef0123456789abcdef".to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        }];
        let one = baton_seal::Keyring::from_keys([(1, [1u8; 32].as_slice())]).unwrap();
        let two =
            baton_seal::Keyring::from_keys([(1, [1u8; 32].as_slice()), (2, [2u8; 32].as_slice())])
                .unwrap();
        let clear = plan_snapshot(&with_secret, None, 1000).unwrap();
        assert_eq!(baton_seal::clear_secrets(&clear.compiled.config).len(), 1);
        let first = plan_sealed(&with_secret, None, 1000, Some(&one)).unwrap();
        assert!(baton_seal::clear_secrets(&first.compiled.config).is_empty());
        assert_eq!(baton_seal::sealed_key_ids(&first.compiled.config), [1]);
        let same =
            plan_sealed(&with_secret, Some(&first.compiled.config), 2000, Some(&one)).unwrap();
        assert!(!same.publish, "deterministic sealing: nothing to publish");
        let rotated =
            plan_sealed(&with_secret, Some(&first.compiled.config), 3000, Some(&two)).unwrap();
        assert!(rotated.publish);
        assert_eq!(rotated.compiled.config.generation, 2);
        assert_eq!(baton_seal::sealed_key_ids(&rotated.compiled.config), [2]);
    }

    #[test]
    fn generation_moves_only_when_content_changes() {
        let first = plan_snapshot(&res(), None, 1000).unwrap();
        assert!(first.publish);
        assert_eq!(first.compiled.config.generation, 1);
        let same = plan_snapshot(&res(), Some(&first.compiled.config), 2000).unwrap();
        assert!(!same.publish);
        assert_eq!(same.compiled.config.generation, 1);
        assert_eq!(same.compiled.config.compiled_at_ms, 1000);
        let mut changed = res();
        changed.domains[0].spec.allowed_senders = vec!["app@example.com".into()];
        let next = plan_snapshot(&changed, Some(&first.compiled.config), 3000).unwrap();
        assert!(next.publish);
        assert_eq!(next.compiled.config.generation, 2);
        assert_eq!(next.compiled.config.compiled_at_ms, 3000);
        // What the compiler would produce with that generation directly.
        let direct = compile(&changed, 2, 3000).unwrap();
        assert_eq!(direct.config, next.compiled.config);
    }

    /// The default pool's schedule has five tiers: five retry lanes, the same count the
    /// operator's workload and the worker's plan derive.
    #[test]
    fn lanes_follow_the_compiled_schedule() {
        let plan = plan_snapshot(&res(), None, 1000).unwrap();
        assert_eq!(
            plan.lanes(),
            [PoolLanes {
                pool: "default".into(),
                retry_tiers: 5
            }]
        );
        let mut custom = res();
        custom.pools[0].spec.retry.schedule = vec!["1m".into(), "1h".into()];
        custom.pools[0].spec.retry.max_age = "2d".into();
        let plan = plan_snapshot(&custom, None, 1000).unwrap();
        assert_eq!(plan.lanes()[0].retry_tiers, 2);
        // Bodies outlive the longest stay: 2 days + the 1 h delay + the grace.
        assert_eq!(
            plan.body_retention(),
            Some(Duration::from_secs(2 * 86_400 + 3600) + BODY_RETENTION_GRACE)
        );
        let empty = Resources::default();
        assert_eq!(
            plan_snapshot(&empty, None, 0).unwrap().body_retention(),
            None
        );
    }
}
