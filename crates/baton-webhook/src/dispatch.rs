//! The dispatcher: one task per EventSink of the snapshot, pulling the sink's consumer
//! (`baton_queue::sinks`) and POSTing each event to the endpoint.
//!
//! - **At least once.** An event is acknowledged only after the endpoint answered `2xx` (or it
//!   was dropped by the sink's backlog or age bound, counted). A dispatcher that stops mid-way
//!   leaves its events unacknowledged; the server offers them again (to another replica once
//!   the pin moved). The `webhook-id` is the event's id, so a receiver can drop a repeat.
//! - **In order per message.** Events are queued per queue id ("lanes"); a lane sends its
//!   next event only after the previous one was accepted, while lanes of other messages go on.
//!   The ingress publishes a message's `accepted` in the background, so a fast worker's first
//!   events can be stored before it: events other than `accepted` wait [`REORDER_WINDOW`]
//!   after they were stored, and an `accepted` joins its lane ahead of them.
//!   The pinned-client consumer gives one replica a sink at a time, which is what makes the
//!   lanes the only order that matters.
//! - **A down endpoint slows only its own sink.** Each sink has its own task, HTTP client and
//!   gate: after a failure the gate closes for a back-off (1 s doubling to 60 s, jittered),
//!   every lane of the sink waits at it, and a success opens it again. Mail never waits for an
//!   event (events are published in the background, `baton_queue::events`).
//! - **Bounded.** At most [`baton_queue::sinks::WINDOW`] events per sink are held, each sent
//!   a progress notice every [`PROGRESS_EVERY`] so the server does not offer it again while
//!   it waits; at most [`MAX_POSTS`] POSTs per sink run at once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, AckKind, Message};
use baton_proto::v1::EventSink;
use baton_queue::ConfigWatch;
use baton_queue::sinks::{self, DISPATCH_GROUP, SinkState, SinkStatusStore};
use futures::StreamExt as _;
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::http::Poster;
use crate::policy::{self, Answer, SinkNetworks};
use crate::sign;

/// Most POSTs one sink has in flight.
pub const MAX_POSTS: usize = 32;
/// How often held events are reported in progress to the server.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How often a sink's delivery record is written when it changed.
pub const STATUS_EVERY: Duration = Duration::from_secs(2);
/// How long after it was stored an event other than a message's `accepted` waits before it is
/// sent (see [`lane`]).
pub const REORDER_WINDOW: Duration = Duration::from_secs(1);
/// How often a sink's backlog is read from its consumer (the gauge).
pub const BACKLOG_EVERY: Duration = Duration::from_secs(10);

/// What the dispatcher reports (metrics).
pub trait Hooks: Send + Sync + 'static {
    /// An event's fate: `delivered`, `failed` (one attempt), `dropped_backlog`, `dropped_age`.
    fn outcome(&self, sink: &str, result: &'static str);
    /// How long one POST took.
    fn post_seconds(&self, sink: &str, seconds: f64);
    /// Events waiting for the sink.
    fn backlog(&self, sink: &str, events: u64);
    /// Sinks this dispatcher serves.
    fn sinks(&self, count: usize);
}

/// Serves every EventSink of the snapshot.
pub struct Dispatcher {
    js: jetstream::Context,
    status: SinkStatusStore,
    hooks: Arc<dyn Hooks>,
    user_agent: String,
    networks: Arc<SinkNetworks>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

struct Running {
    sink: EventSink,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    /// A dispatcher pulling with `js`, recording into `status`, reporting to `hooks`, and
    /// connecting only to addresses `networks` allows.
    pub fn new(
        js: jetstream::Context,
        status: SinkStatusStore,
        hooks: Arc<dyn Hooks>,
        user_agent: &str,
        networks: SinkNetworks,
    ) -> Self {
        Dispatcher {
            js,
            status,
            hooks,
            user_agent: user_agent.to_owned(),
            networks: Arc::new(networks),
        }
    }

    /// Serve the sinks of each snapshot `config` puts in force until `stop`: a new sink
    /// starts, a changed one restarts with its new settings (its consumer keeps its place), a
    /// removed one stops.
    pub async fn run(self, mut config: ConfigWatch, stop: CancellationToken) {
        let mut running: HashMap<String, Running> = HashMap::new();
        loop {
            let current = config.borrow_and_update().clone();
            if let Some(cfg) = current {
                let wanted: HashMap<&str, &EventSink> =
                    cfg.sinks.iter().map(|s| (s.name.as_str(), s)).collect();
                running.retain(|name, r| {
                    let keep = wanted.get(name.as_str()).is_some_and(|s| **s == r.sink);
                    if !keep {
                        tracing::info!(sink = %name, "event sink stopped");
                        r.cancel.cancel();
                    }
                    keep
                });
                for (name, sink) in wanted {
                    if running.contains_key(name) {
                        continue;
                    }
                    tracing::info!(sink = %name, host = %host_of(&sink.url), "event sink started");
                    let cancel = stop.child_token();
                    let ctx = Arc::new(SinkCtx::new(
                        sink.clone(),
                        self.js.clone(),
                        self.status.clone(),
                        self.hooks.clone(),
                    ));
                    let task = tokio::spawn(run_sink(
                        ctx,
                        self.user_agent.clone(),
                        self.networks.clone(),
                        cancel.clone(),
                    ));
                    running.insert(
                        name.to_owned(),
                        Running {
                            sink: sink.clone(),
                            cancel,
                            task,
                        },
                    );
                }
                self.hooks.sinks(running.len());
            }
            tokio::select! {
                changed = config.changed() => if changed.is_err() { break },
                _ = stop.cancelled() => break,
            }
        }
        for (_, r) in running {
            r.cancel.cancel();
            let _ = r.task.await;
        }
    }
}

/// The host of a URL, for logs (never the path or query: they may carry a token).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// After failures the sink waits until `until`; `failures` counts rounds, not POSTs.
#[derive(Default)]
struct Gate {
    until: Option<Instant>,
    failures: u32,
}

/// One message's events waiting their turn.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Arc<Message>>,
    /// The head is being sent (it stays first whatever arrives).
    sending: bool,
}

/// One sink's shared state.
struct SinkCtx {
    sink: EventSink,
    js: jetstream::Context,
    status: SinkStatusStore,
    hooks: Arc<dyn Hooks>,
    state: Mutex<SinkState>,
    gate: Mutex<Gate>,
    /// Events per queue id, waiting their turn.
    lanes: Mutex<HashMap<String, Lane>>,
    posts: Semaphore,
}

impl SinkCtx {
    fn new(
        sink: EventSink,
        js: jetstream::Context,
        status: SinkStatusStore,
        hooks: Arc<dyn Hooks>,
    ) -> Self {
        let state = SinkState {
            sink: sink.name.clone(),
            ..SinkState::default()
        };
        SinkCtx {
            sink,
            js,
            status,
            hooks,
            state: Mutex::new(state),
            gate: Mutex::new(Gate::default()),
            lanes: Mutex::new(HashMap::new()),
            posts: Semaphore::new(MAX_POSTS),
        }
    }

    fn failed(&self, error: &str) {
        let mut s = self.state.lock();
        s.failing = true;
        s.last_error = error.to_owned();
        s.last_error_ms = now_ms();
        s.consecutive_failures += 1;
    }
}

async fn run_sink(
    ctx: Arc<SinkCtx>,
    user_agent: String,
    networks: Arc<SinkNetworks>,
    cancel: CancellationToken,
) {
    serve_sink(&ctx, user_agent, networks, &cancel).await;
    release(&ctx).await;
}

/// The sink stops here (a shutdown, a changed or removed sink): its held events are handed
/// back at once (a negative acknowledgement, so the server offers them again without waiting
/// for [`sinks::ACK_WAIT`]) and its pin is released, so another replica (or this process's
/// next task for the sink) takes over without waiting for [`sinks::PIN_TIMEOUT`]. Best effort:
/// what fails here only takes those timeouts.
async fn release(ctx: &SinkCtx) {
    let held: Vec<Arc<Message>> = ctx
        .lanes
        .lock()
        .drain()
        .flat_map(|(_, l)| l.queue.into_iter())
        .collect();
    for msg in held {
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
    let consumer = sinks::consumer_name(&ctx.sink.name);
    if let Ok(stream) = ctx.js.get_stream(baton_queue::events::EVENT_STREAM).await
        && let Err(e) = stream.unpin_consumer(&consumer, DISPATCH_GROUP).await
    {
        tracing::debug!(sink = %ctx.sink.name, error = %e, "pin not released");
    }
}

async fn serve_sink(
    ctx: &Arc<SinkCtx>,
    user_agent: String,
    networks: Arc<SinkNetworks>,
    cancel: &CancellationToken,
) {
    let cancel = cancel.clone();
    let name = ctx.sink.name.clone();
    // The previous record, so counters continue across restarts.
    if let Ok(Some(previous)) = ctx.status.get(&name).await {
        let mut s = ctx.state.lock();
        s.delivered = previous.delivered;
        s.dropped = previous.dropped;
        s.last_delivered_ms = previous.last_delivered_ms;
    }
    tokio::spawn(keep_records(ctx.clone(), cancel.clone()));
    let timeout = Duration::from_millis(ctx.sink.timeout_ms.max(1));
    let poster = match Poster::new(
        &ctx.sink.url,
        &ctx.sink.ca_bundle_pem,
        timeout,
        &user_agent,
        networks,
    ) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::error!(sink = %name, error = %e, "event sink unusable");
            ctx.failed(&e.to_string());
            cancel.cancelled().await;
            return;
        }
    };
    let mut attempt = 0u32;
    loop {
        let consumer = match sinks::ensure_consumer(&ctx.js, &ctx.sink).await {
            Ok(c) => c,
            Err(e) => {
                attempt += 1;
                tracing::warn!(sink = %name, error = %e, "event sink consumer not ready");
                if sleep_or_cancel(policy::backoff(attempt, rand::random()), &cancel).await {
                    return;
                }
                continue;
            }
        };
        let messages = consumer
            .stream()
            .group(DISPATCH_GROUP)
            .expires(Duration::from_secs(5))
            .heartbeat(Duration::from_secs(2))
            .max_messages_per_batch(256)
            .messages()
            .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                attempt += 1;
                tracing::warn!(sink = %name, error = %e, "event sink pull failed");
                if sleep_or_cancel(policy::backoff(attempt, rand::random()), &cancel).await {
                    return;
                }
                continue;
            }
        };
        attempt = 0;
        loop {
            let next = tokio::select! {
                m = messages.next() => m,
                _ = cancel.cancelled() => return,
            };
            match next {
                Some(Ok(msg)) => route(ctx, &poster, msg, &cancel).await,
                Some(Err(e)) => {
                    use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                    match e.kind() {
                        // Keep the pull stream (a new one starts on standby, behind the pin).
                        K::MissingHeartbeat | K::Pull | K::NoResponders | K::Other => {
                            tracing::debug!(sink = %name, error = %e, "event sink pull error");
                        }
                        _ => {
                            tracing::warn!(sink = %name, error = %e, "event sink pull ended");
                            break;
                        }
                    }
                }
                None => break,
            }
        }
        if sleep_or_cancel(Duration::from_secs(1), &cancel).await {
            return;
        }
    }
}

/// Sleep `d` unless cancelled first; true when cancelled.
async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = cancel.cancelled() => true,
    }
}

/// Drop the event or queue it behind its message's earlier events.
async fn route(ctx: &Arc<SinkCtx>, poster: &Arc<Poster>, msg: Message, cancel: &CancellationToken) {
    let (pending, published_ms) = match msg.info() {
        Ok(info) => (
            info.pending,
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        ),
        Err(_) => (0, 0),
    };
    let age_ms = if published_ms > 0 {
        now_ms() - published_ms
    } else {
        0
    };
    if let Some(reason) = policy::drop_reason(
        pending,
        ctx.sink.max_backlog,
        age_ms,
        ctx.sink.max_event_age_ms,
    ) {
        drop_event(ctx, &msg, reason).await;
        return;
    }
    // `baton.events.<namespace>.<relaydomain>.<queue id>.<type>`
    let key = msg.subject.split('.').nth(4).unwrap_or_default().to_owned();
    let msg = Arc::new(msg);
    let start = {
        let mut lanes = ctx.lanes.lock();
        match lanes.get_mut(&key) {
            Some(lane) => {
                // A message's `accepted` goes before its other events not yet sent (the
                // ingress publishes it in the background: a fast worker's first events can be
                // stored before it). A head already on its way stays first.
                let kinds: Vec<bool> = lane.queue.iter().map(|m| is_accepted(m)).collect();
                let at = policy::lane_position(&kinds, lane.sending, is_accepted(&msg));
                lane.queue.insert(at, msg);
                false
            }
            None => {
                lanes.insert(
                    key.clone(),
                    Lane {
                        queue: VecDeque::from([msg]),
                        sending: false,
                    },
                );
                true
            }
        }
    };
    if start {
        tokio::spawn(lane(ctx.clone(), poster.clone(), key, cancel.clone()));
    }
}

async fn drop_event(ctx: &SinkCtx, msg: &Message, reason: policy::Drop) {
    if let Err(e) = msg.ack().await {
        tracing::debug!(sink = %ctx.sink.name, error = %e, "ack of a dropped event failed");
    }
    ctx.state.lock().dropped += 1;
    ctx.hooks.outcome(&ctx.sink.name, reason.label());
}

/// Whether an event is a message's `accepted` (the last subject token).
fn is_accepted(msg: &Message) -> bool {
    msg.subject.rsplit('.').next() == Some("accepted")
}

/// When the event was stored (Unix ms; 0 when unknown).
fn stored_ms(msg: &Message) -> i64 {
    msg.info().map_or(0, |i| {
        i64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    })
}

/// Send one message's events in order, one at a time; ends when its queue is empty. An event
/// that is not a message's `accepted` waits until [`REORDER_WINDOW`] after it was stored, so
/// an `accepted` stored just after it still goes first.
async fn lane(ctx: Arc<SinkCtx>, poster: Arc<Poster>, key: String, cancel: CancellationToken) {
    loop {
        let msg = {
            let mut lanes = ctx.lanes.lock();
            match lanes.get(&key).and_then(|l| l.queue.front().cloned()) {
                Some(m) => m,
                None => {
                    lanes.remove(&key);
                    return;
                }
            }
        };
        if !is_accepted(&msg) {
            let stored = stored_ms(&msg);
            let wait = stored
                .saturating_add(i64::try_from(REORDER_WINDOW.as_millis()).unwrap_or(0))
                .saturating_sub(now_ms());
            if stored > 0 && wait > 0 {
                let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
                if sleep_or_cancel(wait.min(REORDER_WINDOW), &cancel).await {
                    return;
                }
                // An `accepted` may have been put first meanwhile.
                continue;
            }
        }
        {
            let mut lanes = ctx.lanes.lock();
            let Some(lane) = lanes.get_mut(&key) else {
                return;
            };
            if !lane.queue.front().is_some_and(|m| Arc::ptr_eq(m, &msg)) {
                continue;
            }
            lane.sending = true;
        }
        if !deliver(&ctx, &poster, &msg, &cancel).await {
            // Cancelled: unacknowledged, the server offers it again.
            return;
        }
        if let Some(lane) = ctx.lanes.lock().get_mut(&key) {
            lane.queue.pop_front();
            lane.sending = false;
        }
    }
}

/// The `webhook-id` of an event: its CloudEvent `id`, which is also its `Nats-Msg-Id` when it
/// has one (events published exactly once, like `accepted`, have none: the id is then read from
/// the payload). `None` when neither is there.
fn webhook_id(msg_id: Option<&str>, payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    match msg_id {
        Some(id) => Some(id.to_owned()),
        None => serde_json::from_slice::<Id>(payload).ok().map(|e| e.id),
    }
}

/// POST one event until the endpoint accepts it (true), it ages out (true, dropped) or the
/// sink stops (false).
async fn deliver(
    ctx: &SinkCtx,
    poster: &Poster,
    msg: &Message,
    cancel: &CancellationToken,
) -> bool {
    let id = webhook_id(
        msg.headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str()),
        &msg.payload,
    )
    .unwrap_or_else(|| match msg.info() {
        Ok(i) => format!("{}.{}", i.stream, i.stream_sequence),
        Err(_) => msg.subject.to_string(),
    });
    loop {
        // Wait at the gate while the sink backs off.
        loop {
            let until = ctx.gate.lock().until;
            match until {
                Some(t) if t > Instant::now() => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t.into()) => {}
                        _ = cancel.cancelled() => return false,
                    }
                }
                _ => break,
            }
        }
        let Ok(_permit) = ctx.posts.acquire().await else {
            return false;
        };
        let timestamp = now_ms() / 1000;
        let headers = [
            (sign::ID_HEADER, id.clone()),
            (sign::TIMESTAMP_HEADER, timestamp.to_string()),
            (
                sign::SIGNATURE_HEADER,
                sign::signature(&ctx.sink.secret, &id, timestamp, &msg.payload),
            ),
        ];
        let started = Instant::now();
        let answer = tokio::select! {
            a = poster.post(&headers, msg.payload.clone()) => a,
            _ = cancel.cancelled() => return false,
        };
        ctx.hooks
            .post_seconds(&ctx.sink.name, started.elapsed().as_secs_f64());
        match answer {
            Answer::Accepted => {
                if let Err(e) = msg.ack().await {
                    // Offered again later: a repeat the receiver can recognise by its id.
                    tracing::debug!(sink = %ctx.sink.name, error = %e, "ack failed");
                }
                {
                    let mut s = ctx.state.lock();
                    s.delivered += 1;
                    s.failing = false;
                    s.consecutive_failures = 0;
                    s.last_delivered_ms = now_ms();
                }
                *ctx.gate.lock() = Gate::default();
                ctx.hooks.outcome(&ctx.sink.name, "delivered");
                return true;
            }
            Answer::Failed(error) => {
                ctx.hooks.outcome(&ctx.sink.name, "failed");
                ctx.failed(&error);
                {
                    let mut gate = ctx.gate.lock();
                    // One round of failures (POSTs that started while the gate was open)
                    // closes it once.
                    if gate.until.is_none_or(|t| t <= started) {
                        gate.failures = gate.failures.saturating_add(1);
                        let wait = policy::backoff(gate.failures, rand::random());
                        gate.until = Some(Instant::now() + wait);
                        tracing::warn!(
                            sink = %ctx.sink.name, host = %host_of(&ctx.sink.url), %error,
                            retry_in = ?wait, "event sink endpoint failed"
                        );
                    }
                }
                let published_ms = msg.info().map_or(0, |i| {
                    i64::try_from(i.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
                });
                if published_ms > 0
                    && policy::drop_reason(
                        0,
                        u64::MAX,
                        now_ms() - published_ms,
                        ctx.sink.max_event_age_ms,
                    )
                    .is_some()
                {
                    drop_event(ctx, msg, policy::Drop::Age).await;
                    return true;
                }
            }
        }
    }
}

/// Write the sink's record when it changed, report its backlog, and tell the server that held
/// events are still being worked on; until the sink stops.
async fn keep_records(ctx: Arc<SinkCtx>, cancel: CancellationToken) {
    let mut written: Option<SinkState> = None;
    let mut last_progress = Instant::now();
    let mut last_backlog: Option<Instant> = None;
    loop {
        let state = ctx.state.lock().clone();
        if written.as_ref() != Some(&state) {
            match ctx.status.put(&state).await {
                Ok(()) => written = Some(state),
                Err(e) => {
                    tracing::debug!(sink = %ctx.sink.name, error = %e, "sink record not written")
                }
            }
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            let held: Vec<Arc<Message>> = ctx
                .lanes
                .lock()
                .values()
                .flat_map(|l| l.queue.iter().cloned())
                .collect();
            for msg in held {
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        }
        if last_backlog.is_none_or(|t| t.elapsed() >= BACKLOG_EVERY) {
            last_backlog = Some(Instant::now());
            if let Ok(Some(n)) = sinks::backlog(&ctx.js, &ctx.sink.name).await {
                ctx.hooks.backlog(&ctx.sink.name, n);
            }
        }
        if sleep_or_cancel(STATUS_EVERY, &cancel).await {
            // The last word: what happened up to the stop.
            let state = ctx.state.lock().clone();
            if written.as_ref() != Some(&state) {
                let _ = ctx.status.put(&state).await;
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_name_the_host_only() {
        assert_eq!(
            host_of("https://h.example:8443/p?token=x"),
            "h.example:8443"
        );
        assert_eq!(host_of("https://h.example?token=x"), "h.example");
        assert_eq!(host_of("h.example/p"), "h.example");
    }

    #[test]
    fn the_webhook_id_is_the_cloudevent_id() {
        let event = br#"{"specversion":"1.0","id":"Q1.accepted.0","type":"t","data":{}}"#;
        assert_eq!(webhook_id(None, event).as_deref(), Some("Q1.accepted.0"));
        assert_eq!(
            webhook_id(Some("Q1.1.a@b.delivered"), event).as_deref(),
            Some("Q1.1.a@b.delivered")
        );
        assert_eq!(webhook_id(None, b"not json"), None);
        assert_eq!(webhook_id(None, br#"{"type":"t"}"#), None);
    }
}
