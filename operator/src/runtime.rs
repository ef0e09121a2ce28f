//! Running the operator: leader election, then (while leading) the SendingPool and RelayDomain
//! controllers, the snapshot sync loop, the EventSink status refresh and the credential spike
//! Events ([`crate::spikes`], read from the event stream from where it was when leading
//! began); readiness follows NATS and the Lease round-trips.
//!
//! Watches:
//! - SendingPool (cluster-scoped) and the worker Deployments, mapped back to their pool by the
//!   `baton.dev/pool` label (kube's owner-reference mapping would look the cluster-scoped owner
//!   up in the child's namespace and miss it);
//! - RelayDomain and the DKIM key Secrets the operator generated (metadata only), so a deleted
//!   key Secret is generated again;
//! - for the sync loop: metadata of RelayDomains, SendingPools and EventSinks (a new
//!   `generation` or a deletion) and of the Secrets the last snapshot referenced (any change:
//!   rotation), plus a periodic resync. Triggers coalesce in a one-slot channel.
//!
//! The EventSinks' statuses follow their endpoints (failures, backlog, counters the webhook
//! dispatcher records in NATS) through a refresh every [`SINK_STATUS_EVERY`], without a watch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_config::crd::{EventSink, RelayDomain, SendingPool};
use baton_telemetry::Health;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_objects};
use kube::{Resource, ResourceExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::leader::LeaderElector;
use crate::workload::{MANAGED_BY, POOL_LABEL, managed_workers_selector};
use crate::{domain, pool, snapshot};

/// How often the snapshot is recompiled without any trigger.
pub const PERIODIC_SYNC: Duration = Duration::from_secs(300);
/// Wait after a failed sync before retrying.
pub const SYNC_RETRY: Duration = Duration::from_secs(10);
/// Time between syncs while a RelayDomain waits for its domain verification record.
pub const VERIFICATION_SYNC: Duration = Duration::from_secs(60);
/// How often the EventSinks' statuses are refreshed from the dispatcher's records.
pub const SINK_STATUS_EVERY: Duration = Duration::from_secs(15);

/// Whether a RelayDomain of the plan is not ready only for lack of its verification record.
fn awaits_verification(plan: &baton_config::plan::SnapshotPlan) -> bool {
    use baton_config::compile::ConditionType;
    plan.compiled.domains.iter().any(|d| {
        d.condition(ConditionType::DomainVerified)
            .is_some_and(|c| !c.status)
    })
}

fn error_policy<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}

/// Run the controllers, the sync loop, the EventSink status refresh and the credential spike
/// Events until `stop`.
pub async fn run_controllers(ctx: Arc<Context>, stop: CancellationToken) {
    let client = ctx.client.clone();
    let ns = ctx.settings.namespace.clone();
    let pools = Controller::new(
        Api::<SendingPool>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Deployment>::namespaced(client.clone(), &ns),
        watcher::Config::default().labels(&managed_workers_selector()),
        |d: Deployment| {
            d.labels()
                .get(POOL_LABEL)
                .map(|p| ObjectRef::<SendingPool>::new(p))
        },
    )
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(pool::reconcile, error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));

    let domains = Controller::new(
        Api::<RelayDomain>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<PartialObjectMeta<Secret>>::all(client.clone()),
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}")),
    )
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(domain::reconcile, error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));

    let sync = sync_loop(ctx.clone(), stop.clone());
    let spikes = crate::spikes::run(ctx.clone(), stop.clone());
    let sink_status = sink_status_loop(ctx, stop);
    tokio::join!(pools, domains, sync, sink_status, spikes);
}

/// Refresh the EventSinks' statuses every [`SINK_STATUS_EVERY`] until `stop` (counted in
/// `baton_operator_reconciles_total{kind="EventSinkStatus"}`).
async fn sink_status_loop(ctx: Arc<Context>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SINK_STATUS_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let started = Instant::now();
        let r = snapshot::refresh_sink_statuses(&ctx).await;
        ctx.observe("EventSinkStatus", started, &r);
        if let Err(e) = r {
            tracing::warn!(error = %e, "EventSink status refresh failed");
        }
    }
}

/// Which metadata events trigger a sync: a new or deleted object, a changed `generation`, the end
/// of a (re)list. `relevant` filters objects (referenced Secrets); `by_version` compares
/// `resourceVersion` instead of `generation` (Secrets have no generation).
fn triggers<K, F>(
    stream: impl Stream<Item = Result<Event<PartialObjectMeta<K>>, watcher::Error>> + Send + 'static,
    tx: mpsc::Sender<()>,
    by_version: bool,
    relevant: F,
) -> impl std::future::Future<Output = ()> + Send
where
    K: Resource + Send + 'static,
    F: Fn(&PartialObjectMeta<K>) -> bool + Send + 'static,
{
    let mut seen: HashMap<String, String> = HashMap::new();
    stream.for_each(move |event| {
        let fire = match event {
            Ok(Event::Apply(obj) | Event::InitApply(obj)) => {
                let uid = obj.metadata.uid.clone().unwrap_or_default();
                let version = if by_version {
                    obj.metadata.resource_version.clone().unwrap_or_default()
                } else {
                    obj.metadata.generation.unwrap_or_default().to_string()
                };
                let changed = seen.insert(uid, version.clone()).as_ref() != Some(&version);
                changed && relevant(&obj)
            }
            Ok(Event::Delete(obj)) => {
                seen.remove(&obj.metadata.uid.clone().unwrap_or_default());
                relevant(&obj)
            }
            Ok(Event::InitDone) => true,
            Ok(Event::Init) => false,
            Err(e) => {
                tracing::warn!(error = %e, "watch error");
                false
            }
        };
        if fire {
            let _ = tx.try_send(());
        }
        futures::future::ready(())
    })
}

/// Recompile and publish the snapshot whenever something it depends on changed.
async fn sync_loop(ctx: Arc<Context>, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let client = ctx.client.clone();
    let wc = watcher::Config::default;
    let domains = watch_objects(
        Api::<PartialObjectMeta<RelayDomain>>::all(client.clone()),
        wc(),
    )
    .default_backoff();
    let pools = watch_objects(
        Api::<PartialObjectMeta<SendingPool>>::all(client.clone()),
        wc(),
    )
    .default_backoff();
    let sinks = watch_objects(
        Api::<PartialObjectMeta<EventSink>>::all(client.clone()),
        wc(),
    )
    .default_backoff();
    let secrets =
        watch_objects(Api::<PartialObjectMeta<Secret>>::all(client), wc()).default_backoff();
    let refs = ctx.clone();
    let watchers = async {
        tokio::join!(
            triggers(domains, tx.clone(), false, |_| true),
            triggers(pools, tx.clone(), false, |_| true),
            triggers(sinks, tx.clone(), false, |_| true),
            triggers(secrets, tx.clone(), true, move |s| {
                refs.references_secret(
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default(),
                )
            }),
        );
    };
    let syncing = async {
        let mut next = PERIODIC_SYNC;
        loop {
            tokio::select! {
                _ = rx.recv() => {}
                _ = tokio::time::sleep(next) => {}
                _ = stop.cancelled() => return,
            }
            let started = Instant::now();
            let r = snapshot::sync(&ctx).await;
            ctx.observe("Snapshot", started, &r);
            // A domain waiting for its verification record is looked up again sooner.
            next = match &r {
                Ok(plan) if awaits_verification(plan) => VERIFICATION_SYNC,
                _ => PERIODIC_SYNC,
            };
            if let Err(e) = r {
                tracing::error!(error = %e, "snapshot sync failed");
                tokio::select! {
                    _ = tokio::time::sleep(SYNC_RETRY) => {}
                    _ = stop.cancelled() => return,
                }
                let _ = tx.try_send(());
            }
        }
    };
    tokio::select! {
        _ = watchers => {}
        _ = syncing => {}
    }
}

/// Run the operator until `stop`: with `leader_election`, reconcile only while holding the Lease
/// and return [`Error::Leadership`] when it is lost (the process should exit and restart as a
/// standby); readiness conditions `nats` and `kubernetes` follow the JetStream connection and
/// the Lease round-trips.
pub async fn run(
    ctx: Arc<Context>,
    leader_election: bool,
    health: Arc<Health>,
    stop: CancellationToken,
) -> Result<()> {
    spawn_nats_health(ctx.clone(), health.clone(), stop.clone());
    if !leader_election {
        health.set("kubernetes", None);
        run_controllers(ctx, stop).await;
        return Ok(());
    }
    let (tx, mut rx) = watch::channel(false);
    let elector = LeaderElector::new(
        ctx.client.clone(),
        &ctx.settings.namespace,
        &ctx.settings.lease_name,
        &ctx.settings.identity,
    );
    let h = health.clone();
    let election = tokio::spawn(elector.run(
        tx,
        move |failing| h.set("kubernetes", failing),
        stop.clone(),
    ));
    let outcome = async {
        // Standby until we lead.
        while !*rx.borrow_and_update() {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return Ok(()) },
                _ = stop.cancelled() => return Ok(()),
            }
        }
        tracing::info!("leading: starting controllers");
        let controllers = stop.child_token();
        let running = run_controllers(ctx.clone(), controllers.clone());
        tokio::pin!(running);
        loop {
            tokio::select! {
                _ = &mut running => return Ok(()),
                changed = rx.changed() => {
                    if changed.is_err() || !*rx.borrow() {
                        controllers.cancel();
                        running.await;
                        return Err(Error::Leadership("lost the lease".into()));
                    }
                }
            }
        }
    }
    .await;
    if !stop.is_cancelled() && outcome.is_err() {
        // Let the elector stop renewing: it sees the token of the process.
        tracing::error!("leadership lost; stopping");
    }
    stop.cancel();
    let _ = election.await;
    outcome
}

/// NATS readiness: connected, and no operation refused to the operator's identity (counted in
/// `baton_nats_permission_denials_total`; a refusal keeps it not ready, as in every process).
fn spawn_nats_health(ctx: Arc<Context>, health: Arc<Health>, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut counted = 0;
        while !stop.is_cancelled() {
            let (denied, _) = baton_queue::denials();
            ctx.metrics
                .nats_permission_denials
                .inc_by(denied.saturating_sub(counted));
            counted = denied;
            let up = ctx.queue.is_connected();
            health.set(
                "nats",
                baton_queue::readiness_problem(up, "the operator's identity"),
            );
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Connect to Kubernetes (in-cluster config or `KUBECONFIG`) and NATS, then [`run`]. This is
/// all `baton operator` does besides flags, logging and the operations endpoint.
pub async fn start(
    mut settings: crate::Settings,
    leader_election: bool,
    metrics: baton_telemetry::Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
    dns: Option<Arc<dyn baton_config::verification::TxtResolver>>,
) -> Result<()> {
    let client = kube::Client::try_default().await?;
    tracing::info!(
        namespace = %settings.namespace,
        identity = %settings.identity,
        leader_election,
        "connected to Kubernetes; connecting to NATS"
    );
    if let Some(secret) = &settings.nats_auth_secret {
        // Its own login comes from the Secret it keeps (created now on a fresh install; the
        // NATS servers load it within their reload interval, meanwhile the login is refused
        // and retried).
        let password =
            crate::nats_auth::admin_password(&client, &settings.namespace, secret).await?;
        settings.nats.auth = baton_queue::NatsAuth::UserPassword {
            user: baton_queue::permissions::Role::Admin.user(),
            password,
        };
    }
    let queue = crate::queue::NatsQueue::connect_with(
        &settings.nats,
        settings.stream_replicas,
        settings.event_retention,
    )
    .await?;
    let ctx = Context::with_dns(
        client,
        settings,
        Arc::new(queue),
        metrics,
        crate::context::system_clock(),
        dns,
    );
    run(ctx, leader_election, health, stop).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use baton_config::Resources;
    use baton_config::crd::{RelayDomain, RelayDomainSpec, SendingPool, SendingPoolSpec};

    /// Syncs come sooner only while a domain waits for its verification record.
    #[test]
    fn a_pending_verification_shortens_the_sync_period() {
        let pool = SendingPool::new(
            "verified",
            SendingPoolSpec {
                require_domain_verification: true,
                ..SendingPoolSpec::default()
            },
        );
        let spec: RelayDomainSpec = serde_json::from_value(
            serde_json::json!({"domain": "example.com", "pool": "verified"}),
        )
        .unwrap();
        let mut rd = RelayDomain::new("ex", spec);
        rd.metadata.namespace = Some("team-a".into());
        let mut res = Resources {
            pools: vec![pool],
            domains: vec![rd],
            ..Resources::default()
        };
        let plan = |res: &Resources| baton_config::plan::plan_snapshot(res, None, 0).unwrap();
        assert!(awaits_verification(&plan(&res)));
        res.verified_domains.insert("team-a/ex".into());
        assert!(!awaits_verification(&plan(&res)));
        res.pools[0].spec.require_domain_verification = false;
        res.verified_domains.clear();
        assert!(!awaits_verification(&plan(&res)));
    }
}
