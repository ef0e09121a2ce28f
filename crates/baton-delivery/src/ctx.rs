//! The worker's shared context: everything one message's processing needs (DNS, connection
//! cache, slots, suspensions, metrics, the pool-independent plans), the window place a waiting
//! message gives back, and the bookkeeping that publishes health gauges.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_core::bounce::Classifier;
use baton_core::routing::SuspensionTracker;
use baton_queue::Publisher;
use baton_smtp_client::ClientConfig;
use baton_telemetry::Metrics;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::deliver::Connections;
use crate::now_ms;
use crate::plan::PoolPlan;
use crate::{bounces, resolve, route, slots};

/// Everything one message's processing needs.
pub(crate) struct Ctx {
    pub(crate) dns: Box<dyn resolve::Resolve>,
    pub(crate) health: route::Health,
    /// Idle connections; those of capped sites with their pool-wide leases.
    pub(crate) conns: Connections<baton_smtp_client::Connection, crate::leases::Lease>,
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
    /// The operators' holds: covered recipients go to the held place ([`crate::held`]).
    pub(crate) holds: baton_queue::holds::HoldCache,
    /// Cancelled on shutdown once every lane has stopped pulling (so no pull request of ours
    /// is still open on the server): messages still waiting for their due time are given back.
    pub(crate) release: CancellationToken,
    /// Outbound shaping shared by the pool's workers ([`crate::shaping`]).
    pub(crate) shaper: crate::shaping::Shaper,
}

/// A message's place in its lane's fetch window. Given back while the message waits for a busy
/// destination, so the lane keeps fetching mail for other destinations (no head-of-line
/// blocking behind a slow one); otherwise held until the message is finished.
pub(crate) struct WindowPlace(pub(crate) Mutex<Option<OwnedSemaphorePermit>>);

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

    /// A shared limit was decided by its local fallback (NATS slow or unreachable).
    pub(crate) fn count_limit_fallback(&self, limit: &str) {
        self.metrics
            .limit_fallback
            .with_label_values(&["worker", limit])
            .inc();
    }

    pub(crate) fn suspended_until(&self, dest: &str) -> Option<i64> {
        self.suspensions.lock().suspended_until(dest, now_ms())
    }

    pub(crate) fn record_destination(&self, dest: &str, ok: bool) {
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
    pub(crate) fn publish_suspended(&self) {
        let count = self.suspensions.lock().suspended_count(now_ms());
        self.metrics
            .delivery_suspended_destinations
            .with_label_values(&[&self.pool_name])
            .set(count as i64);
    }

    /// Record a connection result for smarthost `i` and publish its health.
    pub(crate) fn record_upstream(&self, pool: &PoolPlan, i: usize, ok: bool) {
        self.health.record(i, ok);
        self.publish_upstream_health(pool);
    }

    /// Set `baton_delivery_smarthost_up` for every smarthost of the pool: 1 until it is marked
    /// down, 0 from then until a connection to it succeeds again.
    pub(crate) fn publish_upstream_health(&self, pool: &PoolPlan) {
        for (i, s) in pool.upstreams().iter().enumerate() {
            let upstream = s.label();
            self.metrics
                .delivery_smarthost_up
                .with_label_values(&[&pool.name, &upstream])
                .set(i64::from(self.health.is_up(i)));
        }
    }
}
