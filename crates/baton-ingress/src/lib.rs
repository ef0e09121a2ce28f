//! `baton-ingress` owns the SMTP conversation with clients and nothing else: listeners (relay
//! with STARTTLS, submission, implicit TLS), connection caps, TLS, the session driver around
//! the sans-IO `baton_smtp::Session`, the policy adapter over the config snapshot, the memory
//! budget, the failed-AUTH log, `From:` alignment and DKIM signing, and the hand-off to
//! JetStream. It keeps no disk state: `250` is said only after the PubAck, and the pod can be
//! killed at any time.

pub mod authlog;
mod budget;
mod conn;
pub use baton_dkim as dkim;
mod driver;
pub mod handoff;
pub mod intake;
pub mod policy;
pub mod tls;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use baton_queue::suppression::{SuppressionCache, SuppressionStore};
use baton_queue::{ConfigWatch, Publisher};
use baton_smtp::session::SessionConfig;
use baton_smtp::{ListenerKind, PeerInfo, Reply, catalogue};
use baton_telemetry::Metrics;
use parking_lot::Mutex;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use budget::ByteBudget;
pub use policy::Snapshot;

/// Errors that stop an ingress from starting.
#[derive(Debug, Error)]
pub enum IngressError {
    /// A listener address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// TLS material missing or invalid.
    #[error("tls: {0}")]
    Tls(String),
}

impl IngressError {
    /// Bounded metric label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            IngressError::Bind { .. } => "bind",
            IngressError::Tls(_) => "tls",
        }
    }
}

/// Limits of one ingress process.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Concurrent connections per process.
    pub max_connections: usize,
    /// Concurrent connections per client address.
    pub max_connections_per_ip: usize,
    /// Idle time allowed between client inputs (RFC 5321 §4.5.3.2 suggests 5 minutes).
    pub command_timeout: Duration,
    /// Total lifetime of one session.
    pub session_timeout: Duration,
    /// Default maximum message size (a RelayDomain may set its own).
    pub max_message_size: u64,
    /// Recipients per transaction before `452 4.5.3`.
    pub max_recipients: usize,
    /// Error replies before `421` and disconnect.
    pub max_errors: u32,
    /// Errors after which every further error reply is delayed.
    pub soft_error_limit: u32,
    /// The delay.
    pub error_delay: Duration,
    /// Failed AUTH attempts before `421` and disconnect.
    pub max_auth_failures: u32,
    /// Delay of the reply to a session's first failed AUTH; doubles per further failure.
    pub auth_failure_delay: Duration,
    /// Cap of that delay.
    pub auth_failure_delay_max: Duration,
    /// Message bytes all sessions may hold together before `452 4.3.1`.
    pub inflight_bytes: usize,
    /// After SIGTERM: how long transactions in flight may take to finish.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_connections_per_ip: 200,
            command_timeout: Duration::from_secs(300),
            session_timeout: Duration::from_secs(1800),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_errors: 10,
            soft_error_limit: 3,
            error_delay: Duration::from_secs(1),
            max_auth_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            auth_failure_delay_max: Duration::from_secs(8),
            inflight_bytes: 512 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Configuration of one ingress process.
#[derive(Clone, Debug)]
pub struct IngressConfig {
    /// Name in the greeting, EHLO reply and `Received:` headers.
    pub hostname: String,
    /// Listeners to bind.
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    /// Limits.
    pub limits: Limits,
}

/// State shared by all sessions of an ingress.
pub struct Shared {
    config: IngressConfig,
    tls: Option<Arc<rustls::ServerConfig>>,
    publisher: Publisher,
    metrics: Metrics,
    budget: ByteBudget,
    rates: policy::RateLimits,
    auth_log: authlog::AuthLog,
    snapshot: watch::Receiver<Option<Arc<Snapshot>>>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    suppressions: Option<SuppressionCache>,
    /// Where reports to a return path are recorded (opened on first use).
    js: Option<async_nats::jetstream::Context>,
    suppression_store: tokio::sync::OnceCell<SuppressionStore>,
    classifier: baton_core::bounce::Classifier,
}

impl Shared {
    async fn suppression_store(&self) -> Option<&SuppressionStore> {
        let js = self.js.as_ref()?;
        self.suppression_store
            .get_or_try_init(|| SuppressionStore::open(js))
            .await
            .map_err(|e| tracing::warn!(error = %e, "suppression list unavailable"))
            .ok()
    }

    fn session_config(&self, kind: ListenerKind) -> SessionConfig {
        let l = &self.config.limits;
        SessionConfig {
            hostname: self.config.hostname.clone(),
            listener: kind,
            tls_available: self.tls.is_some(),
            max_message_size: l.max_message_size,
            max_recipients: l.max_recipients,
            max_errors: l.max_errors,
            soft_error_limit: l.soft_error_limit,
            error_delay: l.error_delay,
            max_auth_failures: l.max_auth_failures,
            auth_failure_delay: l.auth_failure_delay,
            auth_failure_delay_max: l.auth_failure_delay_max,
        }
    }
}

/// Metric label of a listener.
pub fn listener_label(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Relay => "smtp",
        ListenerKind::Submission => "submission",
        ListenerKind::Smtps => "smtps",
    }
}

/// A bound, not yet serving ingress.
pub struct Ingress {
    shared: Arc<Shared>,
    listeners: Vec<(ListenerKind, TcpListener)>,
}

/// Turn raw config snapshots into indexed ones as they arrive.
pub fn index_snapshots(
    mut raw: ConfigWatch,
    metrics: Metrics,
) -> watch::Receiver<Option<Arc<Snapshot>>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        loop {
            let cfg = raw.borrow_and_update().clone();
            if let Some(cfg) = cfg {
                metrics.config_generation.set(cfg.generation as i64);
                if tx.send(Some(Arc::new(Snapshot::new(cfg)))).is_err() {
                    return;
                }
            }
            if raw.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

impl Ingress {
    /// Bind every listener (so a bad address fails before anything runs).
    pub async fn bind(
        config: IngressConfig,
        tls: Option<Arc<rustls::ServerConfig>>,
        publisher: Publisher,
        snapshot: watch::Receiver<Option<Arc<Snapshot>>>,
        metrics: Metrics,
    ) -> Result<Ingress, IngressError> {
        if tls.is_none()
            && config
                .listeners
                .iter()
                .any(|(k, _)| *k == ListenerKind::Smtps)
        {
            return Err(IngressError::Tls(
                "the implicit-TLS listener needs a certificate".into(),
            ));
        }
        let mut listeners = Vec::new();
        for (kind, addr) in &config.listeners {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| IngressError::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push((*kind, l));
        }
        let shared = Arc::new(Shared {
            budget: ByteBudget::new(config.limits.inflight_bytes),
            config,
            tls,
            publisher,
            metrics,
            rates: policy::RateLimits::default(),
            auth_log: authlog::AuthLog::default(),
            snapshot,
            per_ip: Mutex::new(HashMap::new()),
            suppressions: None,
            js: None,
            suppression_store: tokio::sync::OnceCell::new(),
            classifier: baton_core::bounce::Classifier::shipped(),
        });
        Ok(Ingress { shared, listeners })
    }

    /// Consult the relay domains' suppression lists at RCPT, and record reports that come
    /// back to a return path in them through `js` (before serving).
    pub fn with_suppressions(
        mut self,
        cache: SuppressionCache,
        js: async_nats::jetstream::Context,
    ) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.suppressions = Some(cache);
            shared.js = Some(js);
        }
        self
    }

    /// Addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(k, l)| l.local_addr().ok().map(|a| (*k, a)))
            .collect()
    }

    /// Serve until `stop` is cancelled; then answer new connections `421`, let transactions
    /// in flight finish within the grace period, and return.
    pub async fn serve(self, stop: CancellationToken) {
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        let mut accept_tasks = Vec::new();
        for (kind, listener) in self.listeners {
            let shared = self.shared.clone();
            let (stop, hard, tracker2) = (stop.clone(), hard_stop.clone(), tracker.clone());
            accept_tasks.push(tokio::spawn(async move {
                accept_loop(listener, kind, shared, stop, hard, tracker2).await;
            }));
        }
        stop.cancelled().await;
        tracker.close();
        let grace = self.shared.config.limits.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("shutdown grace period over; closing remaining sessions");
            hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        hard_stop.cancel();
        for t in accept_tasks {
            t.abort();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: ListenerKind,
    shared: Arc<Shared>,
    stop: CancellationToken,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
) {
    let label = listener_label(kind);
    loop {
        let (tcp, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = hard_stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        if stop.is_cancelled() {
            count(&shared, label, "shutting_down");
            let reply = catalogue::shutting_down(&shared.config.hostname);
            tokio::spawn(refuse(tcp, reply));
            continue;
        }
        let ip = addr.ip();
        match admit(&shared, ip) {
            Err(reason) => {
                count(&shared, label, reason);
                let reply = catalogue::too_many_connections(&shared.config.hostname);
                tokio::spawn(refuse(tcp, reply));
                continue;
            }
            Ok(()) => count(&shared, label, "accepted"),
        }
        let (shared2, stop2, hard2) = (shared.clone(), stop.clone(), hard_stop.clone());
        tracker.spawn(async move {
            let conn = if kind == ListenerKind::Smtps {
                tls_accept(tcp, &shared2, label).await
            } else {
                Some(conn::Conn::Plain(tcp))
            };
            if let Some(conn) = conn {
                let peer = PeerInfo {
                    addr: ip,
                    tls: kind == ListenerKind::Smtps,
                };
                driver::run(conn, peer, kind, shared2.clone(), stop2, hard2).await;
            }
            release(&shared2, ip);
        });
    }
}

fn count(shared: &Shared, label: &str, result: &str) {
    shared
        .metrics
        .ingress_connections
        .with_label_values(&[label, result])
        .inc();
}

fn admit(shared: &Shared, ip: IpAddr) -> Result<(), &'static str> {
    let mut map = shared.per_ip.lock();
    let total: usize = map.values().sum();
    if total >= shared.config.limits.max_connections {
        return Err("over_capacity");
    }
    let n = map.entry(ip).or_insert(0);
    if *n >= shared.config.limits.max_connections_per_ip {
        return Err("over_per_ip");
    }
    *n += 1;
    Ok(())
}

fn release(shared: &Shared, ip: IpAddr) {
    let mut map = shared.per_ip.lock();
    if let Some(n) = map.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

async fn refuse(mut tcp: TcpStream, reply: Reply) {
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = tcp.write_all(&reply.to_bytes()).await;
        let _ = tcp.shutdown().await;
    })
    .await;
}

/// TLS handshake (implicit TLS or after STARTTLS), counted by result.
pub(crate) async fn tls_accept(tcp: TcpStream, shared: &Shared, label: &str) -> Option<conn::Conn> {
    let tls = shared.tls.clone()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    match tokio::time::timeout(shared.config.limits.command_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => {
            shared
                .metrics
                .ingress_tls_handshakes
                .with_label_values(&[label, "ok"])
                .inc();
            Some(conn::Conn::Tls(Box::new(s)))
        }
        _ => {
            shared
                .metrics
                .ingress_tls_handshakes
                .with_label_values(&[label, "failed"])
                .inc();
            None
        }
    }
}
