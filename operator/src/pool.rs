//! The SendingPool reconciler: server-side apply of the worker Deployment, PDB and (optional)
//! HPA, the pool's JetStream lanes, and the pool status (ready workers from the Deployment,
//! queue depth from the lane consumers, conditions). Requeued every 30 s to refresh the depth.
//!
//! The status also says whether the pool compiles (`Valid`): the pool and its smarthost
//! credentials Secrets go through `baton_config::compile`, the code the snapshot sync runs, so
//! `Valid=False` (reason `Invalid`, the compiler's message) is exactly when the sync leaves the
//! pool out of the snapshot (a change of a credentials Secret alone shows here at the next
//! resync). The workload and lanes are still applied for an invalid pool, so mail already queued
//! is kept; its workers report not ready while the pool is missing from the snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_config::crd::{API_VERSION, SendingPool};
use baton_config::{Resources, compile};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;

use crate::conditions::{PoolObservation, pool_status};
use crate::context::{Context, FIELD_MANAGER};
use crate::error::Result;
use crate::snapshot::{pool_secret_refs, read_secrets};
use crate::workload::{
    MANAGED_BY, desired_deployment, desired_hpa, desired_pdb, desired_replicas, pool_name,
    retry_tiers, worker_name,
};

/// How often a healthy pool is reconciled again (queue depth, ready workers).
pub const RESYNC: Duration = Duration::from_secs(30);

/// Reconcile one SendingPool (counted in `baton_operator_reconciles_total{kind="SendingPool"}`).
pub async fn reconcile(pool: Arc<SendingPool>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let r = apply(&pool, &ctx).await;
    ctx.observe("SendingPool", started, &r);
    r
}

async fn apply(pool: &SendingPool, ctx: &Context) -> Result<Action> {
    let name = pool_name(pool)?;
    let (config, unverified_credentials) = compiles(ctx, pool, name).await?;
    let ns = ctx.settings.namespace.as_str();
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    let object = worker_name(name);

    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
    let deployment = desired_deployment(pool, &ctx.settings)?;
    let applied = deployments
        .patch(&object, &ssa, &Patch::Apply(&deployment))
        .await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    pdbs.patch(
        &object,
        &ssa,
        &Patch::Apply(&desired_pdb(pool, &ctx.settings)?),
    )
    .await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(ctx.client.clone(), ns);
    match desired_hpa(pool, &ctx.settings)? {
        Some(hpa) => {
            hpas.patch(&object, &ssa, &Patch::Apply(&hpa)).await?;
        }
        None => delete_stale_hpa(&hpas, &object).await?,
    }

    let tiers = retry_tiers(pool);
    let (queue, drift) = match ctx.queue.ensure_pool(name, tiers).await {
        Ok(drift) => (ctx.queue.queue_depth(name, tiers).await, drift),
        Err(e) => (Err(e), Vec::new()),
    };
    let ready_workers = applied
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let observation = PoolObservation {
        generation: pool.metadata.generation,
        desired_replicas: desired_replicas(pool),
        ready_workers,
        queue: queue.as_ref().map(|d| *d).map_err(|e| e.to_string()),
        drift,
        config,
        unverified_credentials,
    };
    write_status(ctx, pool, name, &observation).await?;
    // A JetStream failure is in the status; still report it as a failed reconcile (backoff).
    queue?;
    Ok(Action::requeue(RESYNC))
}

/// Whether the pool compiles into the snapshot (reading the smarthost credentials and CA
/// bundle Secrets it references), or the compiler's reason without the object name; and the
/// smarthosts allowed to receive credentials over unverified TLS.
async fn compiles(
    ctx: &Context,
    pool: &SendingPool,
    name: &str,
) -> Result<(std::result::Result<(), String>, Vec<String>)> {
    let secrets = read_secrets(ctx, &pool_secret_refs(pool)).await?;
    let res = Resources {
        pools: vec![pool.clone()],
        secrets,
        ..Resources::default()
    };
    let compiled = compile(&res, 0, 0)?;
    let report = compiled.pool(name);
    let valid = match report.and_then(|p| p.invalid.as_ref()) {
        Some(invalid) => Err(invalid.detail()),
        None => Ok(()),
    };
    let unverified = report
        .map(|p| p.unverified_credentials.clone())
        .unwrap_or_default();
    Ok((valid, unverified))
}

/// Delete the pool's HPA when autoscaling was turned off (only one the operator made).
async fn delete_stale_hpa(hpas: &Api<HorizontalPodAutoscaler>, name: &str) -> Result<()> {
    let Some(existing) = hpas.get_metadata_opt(name).await? else {
        return Ok(());
    };
    let ours = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("app.kubernetes.io/managed-by"))
        .is_some_and(|v| v == MANAGED_BY);
    if ours {
        hpas.delete(name, &DeleteParams::default()).await?;
        tracing::info!(hpa = name, "deleted HPA: autoscaling is off");
    }
    Ok(())
}

async fn write_status(
    ctx: &Context,
    pool: &SendingPool,
    name: &str,
    observation: &PoolObservation,
) -> Result<()> {
    let status = pool_status(observation, pool.status.as_ref(), &ctx.now());
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "SendingPool",
        "status": status,
    });
    Api::<SendingPool>::all(ctx.client.clone())
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?;
    let previous = pool.status.as_ref().map(|s| s.conditions.as_slice());
    ctx.announce(
        pool,
        previous.unwrap_or(&[]),
        &status.conditions,
        "Reconcile",
    )
    .await;
    Ok(())
}
