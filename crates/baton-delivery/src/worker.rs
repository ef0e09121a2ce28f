//! The worker's life: settings, waiting for a snapshot with the pool and for its lanes,
//! planning the pool once per snapshot generation, one fetch loop per lane, and an orderly
//! shutdown (lanes stop fetching, waiting messages are given back, in-flight ones finish).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_nats::jetstream;
use baton_core::bounce::Classifier;
use baton_core::routing::SuspensionTracker;
use baton_queue::suppression::SuppressionCache;
use baton_queue::{ConfigWatch, Lane, LaneKind, Publisher, QueueError, Verifier};
use baton_smtp_client::ClientConfig;
use baton_telemetry::{Health as Readiness, Metrics};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::ctx::{Ctx, WindowPlace};
use crate::deliver::Connections;
use crate::plan::{PlanError, PoolPlan};
use crate::{DeliveryError, bounces, process, resolve, route, slots};

/// Settings of one worker process.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The SendingPool this worker serves.
    pub pool: String,
    /// Our name (EHLO default, DSN Reporting-MTA).
    pub hostname: String,
    /// Concurrent delivery attempts.
    pub concurrency: usize,
    /// Messages held from the fresh lane at once.
    pub fetch_window: usize,
    /// DNS server to use instead of the system resolver.
    pub dns_server: Option<SocketAddr>,
    /// How long an idle outbound connection is kept for reuse.
    pub idle_timeout: Duration,
    /// Interval of progress acks while a message is being worked on.
    pub progress_every: Duration,
    /// SMTP client timeouts etc. (EHLO name and TLS are set per delivery).
    pub client: ClientConfig,
    /// Bounce classification (the shipped rules, after the operator's `--bounce-rules`).
    pub classifier: Classifier,
    /// Refuse to deliver for a pool that would announce `hostname` when it is not a fully
    /// qualified domain name (`baton worker`: a pod name must never go on the wire; `baton dev`
    /// runs on a developer's machine and does not ask).
    pub require_fqdn: bool,
    /// Workers assumed to share the pool's outbound limits while NATS (the `baton-limits`
    /// bucket) is slow or unreachable: each worker then allows `ceil(limit / divisor)`
    /// messages per minute and `max(1, cap / divisor)` connections per site on its own
    /// (`--limit-fallback-divisor`; 0 is taken as 1).
    pub limit_fallback_divisor: u32,
}

/// The JetStream handles a worker uses.
pub struct Queue {
    /// JetStream context.
    pub js: jetstream::Context,
    /// Checks that the pool's lanes exist (the owner provisions them; a worker never does).
    pub verifier: Verifier,
    /// Follow-up publishing.
    pub publisher: Publisher,
    /// The suppression lists (a followed copy; entries are written through the bucket).
    pub suppressions: SuppressionCache,
    /// The operators' holds (a followed copy).
    pub holds: baton_queue::holds::HoldCache,
    /// The `baton-limits` KV bucket for the pool's shared outbound limits (`None`: it could
    /// not be opened; each worker then enforces the limits alone, in memory).
    pub limits: Option<jetstream::kv::Store>,
    /// The messages this worker holds (the queue-age gauge).
    pub holding: baton_queue::Holding,
}

/// Run a worker until `stop` is cancelled. Waits for a config snapshot that contains the pool,
/// waits until the pool's lanes exist (provisioned by `baton config apply`, `baton dev` or the
/// operator; readiness says which one is missing), then consumes the fresh lane and every retry
/// tier.
pub async fn run(
    config: WorkerConfig,
    queue: Queue,
    mut snapshots: ConfigWatch,
    metrics: Metrics,
    ready: Arc<Readiness>,
    stop: CancellationToken,
) -> Result<(), DeliveryError> {
    let client = queue.js.client();
    let ctx = Arc::new(Ctx {
        dns: Box::new(resolve::Dns::new(config.dns_server)?),
        health: route::Health::default(),
        conns: Connections::new(config.idle_timeout),
        publisher: queue.publisher,
        metrics,
        client: config.client.clone(),
        progress_every: config.progress_every,
        delivery_slots: Semaphore::new(config.concurrency.max(1)),
        dests: slots::Destinations::default(),
        waiting: AtomicUsize::new(0),
        max_waiting: config.fetch_window.max(1).saturating_mul(4),
        suspensions: Mutex::new(SuspensionTracker::default()),
        pool_name: config.pool.clone(),
        classifier: config.classifier.clone(),
        bounces: bounces::Bounces::new(queue.js.clone(), queue.suppressions.clone()),
        holds: queue.holds.clone(),
        release: CancellationToken::new(),
        shaper: crate::shaping::Shaper::new(
            match queue.limits {
                Some(store) => Arc::new(store),
                None => Arc::new(baton_limits::MemoryKv::new()),
            },
            &config.pool,
            &format!("{}-{:016x}", config.hostname, rand::random::<u64>()),
            config.limit_fallback_divisor,
        ),
    });
    // Our own token, so that a closed snapshot watch shuts the lanes down too.
    let stop = stop.child_token();
    let current: Arc<Mutex<Option<Arc<PoolPlan>>>> = Arc::default();
    // The pool's plan for generation `planned`: decided once per snapshot, never per message.
    // `Err` says why the worker does not deliver for it.
    let mut pool_plan: Option<Result<Arc<PoolPlan>, String>> = None;
    // Lane loops and message tasks are tracked apart: messages are released only after
    // every lane loop has finished its last fetch.
    let lanes = TaskTracker::new();
    let tracker = TaskTracker::new();
    let mut running: HashSet<LaneKind> = HashSet::new();
    let mut planned: Option<u64> = None;
    let reaper = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ctx.conns.reap();
                ctx.dests.reap();
                ctx.publish_suspended();
            }
        })
    };
    loop {
        let plan = {
            let snapshot = snapshots.borrow_and_update();
            match snapshot.as_ref() {
                None => None,
                Some(c) => {
                    ctx.metrics.config_generation.set(c.generation as i64);
                    // Decided once per snapshot (this loop also wakes every second while the
                    // pool's lanes are not provisioned).
                    if planned != Some(c.generation) {
                        ctx.bounces.set_config(c);
                        planned = Some(c.generation);
                        pool_plan = c
                            .pools
                            .iter()
                            .find(|p| p.name == config.pool)
                            .map(|p| plan_for(p, &config));
                    }
                    pool_plan.clone()
                }
            }
        };
        match plan {
            None => ready.set(
                "config",
                Some(format!("pool {} not in config snapshot", config.pool)),
            ),
            Some(Err(why)) => {
                // Not delivered with guessed settings or a pod name: not ready until a
                // snapshot fixes it.
                tracing::error!(reason = %why, "not delivering for the pool of this snapshot");
                ready.set("config", Some(why));
            }
            Some(Ok(pool)) => {
                let tiers = pool.retry_tiers();
                match queue.verifier.verify_lanes(&pool.name, tiers).await {
                    Ok(()) => {}
                    Err(e @ QueueError::NotProvisioned { .. }) => {
                        ready.set("config", Some(e.to_string()));
                        tracing::debug!(error = %e, "waiting for the pool's lanes");
                        // Checked again in a second, or at once when the snapshot changes.
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            r = snapshots.changed() => if r.is_err() { break } else { continue },
                            _ = stop.cancelled() => break,
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
                let previous = current.lock().replace(pool.clone());
                if previous.is_some_and(|p| p.route_identity() != pool.route_identity()) {
                    // Failures measured on other routes say nothing about these.
                    ctx.suspensions.lock().clear();
                    ctx.health.reset();
                    ctx.publish_suspended();
                    tracing::info!(
                        routes = %pool.route_identity(),
                        "the pool's routes changed: destination suspensions and smarthost health reset"
                    );
                }
                ctx.publish_upstream_health(&pool);
                let kinds = std::iter::once(LaneKind::New).chain((0..tiers).map(LaneKind::Retry));
                for kind in kinds {
                    if running.insert(kind) {
                        let dead = ctx.metrics.dead_letters.clone();
                        let name = pool.name.clone();
                        let lane = Lane::bind(&queue.js, ctx.publisher.clone(), &pool.name, kind)
                            .await?
                            .holding(queue.holding.clone())
                            .on_dead(Arc::new(move |reason| {
                                dead.with_label_values(&[&name, reason.label()]).inc()
                            }));
                        let window = match kind {
                            LaneKind::New => config.fetch_window,
                            LaneKind::Retry(_) => 32,
                        };
                        lanes.spawn(lane_loop(
                            lane,
                            window,
                            ctx.clone(),
                            current.clone(),
                            stop.clone(),
                            tracker.clone(),
                        ));
                    }
                }
                ready.set("config", None);
            }
        }
        tokio::select! {
            r = snapshots.changed() => if r.is_err() { break },
            _ = stop.cancelled() => break,
        }
    }
    stop.cancel();
    lanes.close();
    lanes.wait().await;
    ctx.release.cancel();
    tracker.close();
    tracker.wait().await;
    reaper.abort();
    // Acks are sent without waiting for a confirmation: push the last ones out before exiting
    // (bounded; what does not make it is redelivered after ack_wait).
    if tokio::time::timeout(std::time::Duration::from_secs(5), client.flush())
        .await
        .map_or(true, |r| r.is_err())
    {
        tracing::warn!(
            "could not flush the last acknowledgements; those messages are redelivered after ack_wait"
        );
    }
    Ok(())
}

/// The pool's plan for this worker, decided once per snapshot generation: `Err` when the pool
/// cannot be planned ([`PlanError`]) or, with [`WorkerConfig::require_fqdn`], would make the
/// worker announce a name that is not fully qualified ([`PoolPlan::unnamed`]).
fn plan_for(
    pool: &baton_proto::v1::SendingPool,
    config: &WorkerConfig,
) -> Result<Arc<PoolPlan>, String> {
    let plan = PoolPlan::compile(pool).map_err(|e: PlanError| e.to_string())?;
    match plan.unnamed(&config.hostname) {
        Some(why) if config.require_fqdn => Err(why),
        _ => Ok(Arc::new(plan)),
    }
}

/// Pull from one lane and process messages concurrently, holding at most `window` at a time.
async fn lane_loop(
    lane: Lane,
    window: usize,
    ctx: Arc<Ctx>,
    pool: Arc<Mutex<Option<Arc<PoolPlan>>>>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let in_hand = Arc::new(Semaphore::new(window.max(1)));
    while !stop.is_cancelled() {
        let free = in_hand.available_permits();
        if free == 0 {
            // Wait until at least one message in hand is finished.
            tokio::select! {
                p = in_hand.clone().acquire_owned() => drop(p),
                _ = stop.cancelled() => break,
            }
            continue;
        }
        // A fetch in flight is not abandoned on stop: its pull request would stay open on the
        // server and swallow messages released meanwhile. It ends within its 2 s expiry.
        let batch = lane.fetch(free, Duration::from_secs(2)).await;
        if stop.is_cancelled() {
            for m in batch.unwrap_or_default() {
                if let Err(e) = m.release().await {
                    tracing::warn!(error = %e, "could not give back a message on shutdown; it is redelivered after ack_wait");
                }
            }
            break;
        }
        let msgs = match batch {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(lane = %lane.kind().label(), error = %e, "fetch failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for m in msgs {
            let Ok(permit) = in_hand.clone().acquire_owned().await else {
                return;
            };
            let Some(p) = pool.lock().clone() else {
                return;
            };
            let ctx = ctx.clone();
            let span = tracing::info_span!("delivery", queue_id = %m.envelope.id, pool = %p.name, attempt = m.envelope.attempt + 1);
            tracker.spawn(
                async move {
                    let place = WindowPlace(Mutex::new(Some(permit)));
                    process::process(&ctx, &p, m, &place).await;
                }
                .instrument(span),
            );
        }
    }
}
