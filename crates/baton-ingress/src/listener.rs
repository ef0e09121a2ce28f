//! Listening: binding every listener, the accept loops with their connection caps (per pod and
//! per client address, refused with a `421` from the catalogue) and `--deny-network` (`554`), implicit TLS and the hand-over
//! of each connection to the session driver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use baton_queue::Publisher;
use baton_queue::suppression::SuppressionCache;
use baton_smtp::{ListenerKind, PeerInfo, Reply, catalogue};
use baton_telemetry::Metrics;
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::shared::{Shared, listener_label};
use crate::{ByteBudget, IngressConfig, IngressError, Snapshot, authlog, conn, driver};

/// A bound, not yet serving ingress.
pub struct Ingress {
    shared: Arc<Shared>,
    listeners: Vec<(ListenerKind, TcpListener)>,
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
            limits: Arc::new(crate::limits::InboundLimits::local(
                crate::limits::Settings::default(),
            )),
            auth_log: authlog::AuthLog::default(),
            snapshot,
            connections: Mutex::new(crate::connections::Connections::default()),
            suppressions: None,
            js: None,
            suppression_store: tokio::sync::OnceCell::new(),
            classifier: baton_core::bounce::Classifier::shipped(),
            refused_budget: crate::refused::Budget::default(),
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

    /// Share budgets and AUTH lockouts through `limits` (before serving). Without it they are
    /// counted in this process alone, with the default settings.
    pub fn with_limits(mut self, limits: crate::limits::InboundLimits) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.limits = Arc::new(limits);
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
        if shared.limits.denies_connection(ip) {
            count(&shared, label, "denied");
            shared
                .metrics
                .deny_refusals
                .with_label_values(&["connect"])
                .inc();
            tracing::info!(client = %ip, reason = "network_denied", "connection refused: --deny-network");
            let reply = catalogue::connection_denied(&shared.config.hostname);
            tokio::spawn(refuse(tcp, reply));
            continue;
        }
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
    let limits = &shared.config.limits;
    shared
        .connections
        .lock()
        .admit(ip, limits.max_connections, limits.max_connections_per_ip)
}

fn release(shared: &Shared, ip: IpAddr) {
    shared.connections.lock().release(ip);
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
