//! `baton-delivery` owns the delivery worker: pulling from a SendingPool's lanes (fresh mail
//! and retry tiers), routing (MX or smarthosts), the outbound connection cache and limits
//! (a message waiting for a busy destination frees its place in the fetch window; one that
//! would wait longer than the first retry delay is deferred),
//! per-recipient outcomes, retries, expiry and DSNs. Workers are identical and stateless: any
//! number may join or die; a message leaves the queue only after its follow-ups are durable.

mod bounces;
mod deliver;
mod notice;
pub mod plan;
mod process;
pub mod resolve;
pub mod route;
mod slots;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream;
use baton_core::bounce::Classifier;
use baton_core::routing::SuspensionTracker;
use baton_queue::suppression::SuppressionCache;
use baton_queue::{ConfigWatch, Lane, LaneKind, Publisher, QueueError, Verifier};
use baton_smtp_client::ClientConfig;
use baton_telemetry::{Health as Readiness, Metrics};
use parking_lot::Mutex;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use deliver::Connections;
pub use plan::{PlanError, PoolPlan};

/// Errors that stop a worker.
#[derive(Debug, Error)]
pub enum DeliveryError {
    /// Resolver could not be set up.
    #[error("dns: {0}")]
    Dns(String),
    /// JetStream trouble that prevents consuming.
    #[error(transparent)]
    Queue(#[from] baton_queue::QueueError),
}

impl DeliveryError {
    /// Bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DeliveryError::Dns(_) => "dns",
            DeliveryError::Queue(e) => e.metric_label(),
        }
    }
}

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
}

/// Everything one message's processing needs.
pub(crate) struct Ctx {
    pub(crate) dns: resolve::Dns,
    pub(crate) health: route::Health,
    pub(crate) conns: Connections,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: Metrics,
    pub(crate) client: ClientConfig,
    pub(crate) progress_every: Duration,
    pub(crate) delivery_slots: Semaphore,
    /// Connection slots per destination and the messages waiting for them.
    pub(crate) dests: slots::Destinations,
    /// Messages waiting for a busy destination.
    pub(crate) waiting: AtomicUsize,
    /// At most this many waiting messages give back their place in the fetch window.
    pub(crate) max_waiting: usize,
    pub(crate) suspensions: Mutex<SuspensionTracker>,
    pub(crate) pool_name: String,
    pub(crate) classifier: Classifier,
    pub(crate) bounces: bounces::Bounces,
    /// Cancelled on shutdown once every lane has stopped pulling (so no pull request of ours
    /// is still open on the server): messages still waiting for their due time are given back.
    pub(crate) release: CancellationToken,
}

pub(crate) use baton_core::clock::now_ms;

/// A message's place in its lane's fetch window. Given back while the message waits for a busy
/// destination, so the lane keeps fetching mail for other destinations (no head-of-line
/// blocking behind a slow one); otherwise held until the message is finished.
pub(crate) struct WindowPlace(Mutex<Option<OwnedSemaphorePermit>>);

impl WindowPlace {
    fn give_back(&self) {
        self.0.lock().take();
    }
}

impl Ctx {
    /// A message starts waiting for a busy destination: give its window place back, unless
    /// `max_waiting` messages already wait (then the lane feels the back-pressure).
    pub(crate) fn begin_wait(&self, place: &WindowPlace) {
        let n = self.waiting.fetch_add(1, Ordering::Relaxed) + 1;
        if n <= self.max_waiting {
            place.give_back();
        }
        self.publish_waiting();
    }

    /// Whether `max_waiting` messages already wait: newcomers keep their window place and
    /// may only wait briefly ([`baton_core::routing::CongestionPolicy::crowded`]).
    pub(crate) fn crowded(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) >= self.max_waiting
    }

    /// The wait that [`Ctx::begin_wait`] started is over.
    pub(crate) fn end_wait(&self) {
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        self.publish_waiting();
    }

    fn publish_waiting(&self) {
        self.metrics
            .delivery_waiting_messages
            .with_label_values(&[&self.pool_name])
            .set(self.waiting.load(Ordering::Relaxed) as i64);
    }

    fn suspended_until(&self, dest: &str) -> Option<i64> {
        self.suspensions.lock().suspended_until(dest, now_ms())
    }

    fn record_destination(&self, dest: &str, ok: bool) {
        {
            let mut s = self.suspensions.lock();
            if ok {
                s.record_success(dest);
            } else {
                s.record_failure(dest, now_ms());
            }
        }
        self.publish_suspended();
    }

    /// Set `baton_delivery_suspended_destinations`; also called once a second, so suspensions
    /// that ran out leave the gauge without waiting for the next attempt.
    fn publish_suspended(&self) {
        let count = self.suspensions.lock().suspended_count(now_ms());
        self.metrics
            .delivery_suspended_destinations
            .with_label_values(&[&self.pool_name])
            .set(count as i64);
    }

    /// Record a connection result for smarthost `i` and publish its health.
    fn record_upstream(&self, pool: &PoolPlan, i: usize, ok: bool) {
        self.health.record(i, ok);
        self.publish_upstream_health(pool);
    }

    /// Set `baton_delivery_smarthost_up` for every smarthost of the pool: 1 until it is marked
    /// down, 0 from then until a connection to it succeeds again.
    fn publish_upstream_health(&self, pool: &PoolPlan) {
        for (i, s) in pool.upstreams().iter().enumerate() {
            let upstream = s.label();
            self.metrics
                .delivery_smarthost_up
                .with_label_values(&[&pool.name, &upstream])
                .set(i64::from(self.health.is_up(i)));
        }
    }
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
    let ctx = Arc::new(Ctx {
        dns: resolve::Dns::new(config.dns_server)?,
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
        release: CancellationToken::new(),
    });
    // Our own token, so that a closed snapshot watch shuts the lanes down too.
    let stop = stop.child_token();
    let current: Arc<Mutex<Option<Arc<PoolPlan>>>> = Arc::default();
    // The pool's plan for generation `planned`: decided once per snapshot, never per message.
    let mut pool_plan: Option<Result<Arc<PoolPlan>, PlanError>> = None;
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
                            .map(|p| PoolPlan::compile(p).map(Arc::new));
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
            Some(Err(e)) => {
                // Not delivered with guessed settings: not ready until a snapshot fixes it.
                tracing::error!(error = %e, "the pool in the config snapshot cannot be planned");
                ready.set("config", Some(e.to_string()));
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
                *current.lock() = Some(pool.clone());
                ctx.publish_upstream_health(&pool);
                let kinds = std::iter::once(LaneKind::New).chain((0..tiers).map(LaneKind::Retry));
                for kind in kinds {
                    if running.insert(kind) {
                        let lane =
                            Lane::bind(&queue.js, ctx.publisher.clone(), &pool.name, kind).await?;
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
    Ok(())
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
