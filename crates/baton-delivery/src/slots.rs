//! Connection slots per destination and the messages waiting for them.
//!
//! Each destination (a recipient domain, or a pool's smarthosts) has
//! `maxConnectionsPerDestination` slots. A message that finds them all taken asks
//! [`CongestionPolicy`] whether to wait: if so, it gives back its place in the lane's fetch
//! window while it waits (the `on_wait` hook), so the lane keeps fetching mail for other
//! destinations; if the estimated — or the actual — wait exceeds the policy, the caller defers
//! it (`451 4.4.5`). Slots record how long they were held, which feeds the estimate.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_core::routing::{CongestionPolicy, ServiceTime, SlotWait};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
// Tokio's clock, so the tests can run on paused time.
use tokio::time::Instant;

struct Dest {
    sem: Arc<Semaphore>,
    /// Slots the semaphore was built or resized for.
    cap: usize,
    /// Messages waiting for a slot.
    waiting: usize,
    /// Start of every delivery holding a slot, by slot id.
    busy: HashMap<u64, Instant>,
    service: ServiceTime,
}

/// Slots and wait statistics of every destination this worker delivers to.
#[derive(Default)]
pub(crate) struct Destinations {
    dests: Mutex<HashMap<String, Dest>>,
    next_id: AtomicU64,
}

/// A taken slot: released (and its hold time recorded) on drop.
pub(crate) struct Slot<'a> {
    owner: &'a Destinations,
    dest: String,
    id: u64,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.owner.dests.lock().get_mut(&self.dest) {
            d.busy.remove(&self.id);
            d.service.observe(millis(self.started.elapsed()));
        }
    }
}

/// Result of asking for a slot.
pub(crate) enum Grant<'a> {
    /// A slot is ours.
    Slot(Slot<'a>),
    /// Too long a wait: defer. `waiting` messages were ahead, the wait was about `estimated`.
    Busy { waiting: usize, estimated: Duration },
    /// The worker is shutting down.
    Closed,
}

/// Decrements the waiting count on drop (also when the waiting future is dropped).
struct Waiting<'a> {
    owner: &'a Destinations,
    dest: &'a str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(d) = self.owner.dests.lock().get_mut(self.dest) {
            d.waiting = d.waiting.saturating_sub(1);
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Destinations {
    /// Take one of `cap` slots of `dest`, waiting under `policy` until `shutdown` is
    /// cancelled. `on_wait` runs once if the message is going to wait.
    pub(crate) async fn acquire<'a>(
        &'a self,
        dest: &str,
        cap: usize,
        policy: CongestionPolicy,
        shutdown: &CancellationToken,
        on_wait: impl FnOnce(),
    ) -> Grant<'a> {
        let cap = cap.max(1);
        let sem = {
            let mut m = self.dests.lock();
            let d = m.entry(dest.to_string()).or_insert_with(|| Dest {
                sem: Arc::new(Semaphore::new(cap)),
                cap,
                waiting: 0,
                busy: HashMap::new(),
                service: ServiceTime::default(),
            });
            resize(d, cap);
            if let Ok(permit) = d.sem.clone().try_acquire_owned() {
                return Grant::Slot(self.register(d, dest, permit));
            }
            let youngest = (d.busy.len() >= d.cap)
                .then(|| d.busy.values().max().map(|t| millis(t.elapsed())))
                .flatten();
            let service = d.service.estimate_ms(youngest);
            match policy.decide(d.waiting, d.cap, service) {
                SlotWait::Defer { estimated_ms } => {
                    return Grant::Busy {
                        waiting: d.waiting,
                        estimated: Duration::from_millis(u64::try_from(estimated_ms).unwrap_or(0)),
                    };
                }
                SlotWait::Wait { .. } => {
                    d.waiting += 1;
                    d.sem.clone()
                }
            }
        };
        let waiting = Waiting { owner: self, dest };
        on_wait();
        let got = tokio::select! {
            got = tokio::time::timeout(policy.max_wait(), sem.acquire_owned()) => got,
            _ = shutdown.cancelled() => return Grant::Closed,
        };
        let mut m = self.dests.lock();
        let ahead = m.get(dest).map_or(0, |d| d.waiting.saturating_sub(1));
        let grant = match (got, m.get_mut(dest)) {
            (Ok(Ok(permit)), Some(d)) => Grant::Slot(self.register(d, dest, permit)),
            (Err(_elapsed), _) => Grant::Busy {
                waiting: ahead,
                estimated: policy.max_wait(),
            },
            _ => Grant::Closed,
        };
        drop(m);
        drop(waiting);
        grant
    }

    fn register<'a>(&'a self, d: &mut Dest, dest: &str, permit: OwnedSemaphorePermit) -> Slot<'a> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        d.busy.insert(id, started);
        Slot {
            owner: self,
            dest: dest.to_string(),
            id,
            started,
            _permit: permit,
        }
    }

    /// Forget destinations with nothing in flight and nothing waiting (called periodically),
    /// so the map does not grow with every domain ever delivered to.
    pub(crate) fn reap(&self) {
        self.dests.lock().retain(|_, d| {
            d.waiting > 0 || !d.busy.is_empty() || d.sem.available_permits() < d.cap
        });
    }
}

/// Follow a changed `maxConnectionsPerDestination`: add permits, or forget free ones (busy
/// ones are forgotten on later calls, as they come back).
fn resize(d: &mut Dest, cap: usize) {
    if cap > d.cap {
        d.sem.add_permits(cap - d.cap);
        d.cap = cap;
    } else if cap < d.cap {
        let forgotten = d.sem.forget_permits(d.cap - cap);
        d.cap -= forgotten;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(ms: i64) -> CongestionPolicy {
        CongestionPolicy { max_wait_ms: ms }
    }

    /// A shutdown token that is never cancelled.
    fn open() -> CancellationToken {
        CancellationToken::new()
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_a_wait_at_once() {
        let d = Arc::new(Destinations::default());
        let held = d.acquire("x", 1, policy(60_000), &open(), || {}).await;
        let stop = CancellationToken::new();
        let (d2, stop2) = (d.clone(), stop.clone());
        let waiter = tokio::spawn(async move {
            let started = Instant::now();
            let closed = matches!(
                d2.acquire("x", 1, policy(60_000), &stop2, || {}).await,
                Grant::Closed
            );
            (closed, started.elapsed())
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.cancel();
        let (closed, waited) = waiter.await.unwrap();
        assert!(closed);
        assert!(waited < Duration::from_secs(2), "{waited:?}");
        assert_eq!(d.dests.lock()["x"].waiting, 0);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn free_slots_are_granted_without_waiting() {
        let d = Destinations::default();
        let mut waited = false;
        let a = d
            .acquire("x", 2, policy(10_000), &open(), || waited = true)
            .await;
        assert!(matches!(a, Grant::Slot(_)));
        assert!(!waited);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_destination_defers_and_a_waiter_times_out() {
        let d = Destinations::default();
        let held = d.acquire("x", 1, policy(10_000), &open(), || {}).await;
        assert!(matches!(held, Grant::Slot(_)));
        // Nothing known yet: the second message waits, and gives up after the policy's wait.
        let mut waited = false;
        let second = d
            .acquire("x", 1, policy(10_000), &open(), || waited = true)
            .await;
        assert!(waited);
        assert!(matches!(second, Grant::Busy { waiting: 0, .. }));
        // The only slot has been busy for over 10 s now: a newcomer is deferred at once.
        tokio::time::advance(Duration::from_secs(1)).await;
        let mut waited = false;
        let third = d
            .acquire("x", 1, policy(10_000), &open(), || waited = true)
            .await;
        assert!(!waited);
        assert!(matches!(third, Grant::Busy { .. }));
        drop(held);
        // Released: granted again, and the 10 s hold time became the service estimate.
        assert!(matches!(
            d.acquire("x", 1, policy(10_000), &open(), || {}).await,
            Grant::Slot(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_slot_when_it_is_released() {
        let d = Arc::new(Destinations::default());
        let Grant::Slot(held) = d.acquire("x", 1, policy(10_000), &open(), || {}).await else {
            panic!("first slot");
        };
        let d2 = d.clone();
        let waiter = tokio::spawn(async move {
            matches!(
                d2.acquire("x", 1, policy(10_000), &open(), || {}).await,
                Grant::Slot(_)
            )
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(held);
        assert!(waiter.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_destinations_are_reaped_and_busy_ones_kept() {
        let d = Destinations::default();
        let held = d.acquire("busy", 1, policy(10_000), &open(), || {}).await;
        drop(d.acquire("idle", 1, policy(10_000), &open(), || {}).await);
        d.reap();
        let names: Vec<String> = d.dests.lock().keys().cloned().collect();
        assert_eq!(names, vec!["busy".to_string()]);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lower_cap_takes_effect_as_slots_come_back() {
        let d = Destinations::default();
        let a = d.acquire("x", 2, policy(10_000), &open(), || {}).await;
        let b = d.acquire("x", 2, policy(10_000), &open(), || {}).await;
        drop(a);
        // Cap now 1: the free permit is forgotten, so the next one must wait (and time out).
        let c = d.acquire("x", 1, policy(10_000), &open(), || {}).await;
        assert!(matches!(c, Grant::Busy { .. }));
        drop(b);
        assert!(matches!(
            d.acquire("x", 1, policy(10_000), &open(), || {}).await,
            Grant::Slot(_)
        ));
    }
}
