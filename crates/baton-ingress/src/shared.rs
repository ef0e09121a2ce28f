//! The state every session of an ingress shares (settings, TLS, publisher, metrics, memory
//! budget, the cluster-wide limits, the failed-AUTH log, the indexed config snapshot, per-address
//! connection counts, suppression lists) and the snapshot indexer that feeds it.

use std::sync::Arc;

use baton_queue::suppression::{SuppressionCache, SuppressionStore};
use baton_queue::{ConfigWatch, Publisher};
use baton_smtp::ListenerKind;
use baton_smtp::session::SessionConfig;
use baton_telemetry::Metrics;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::{ByteBudget, IngressConfig, Snapshot, authlog};

/// State shared by all sessions of an ingress.
pub struct Shared {
    pub(crate) config: IngressConfig,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) publisher: Publisher,
    pub(crate) metrics: Metrics,
    pub(crate) budget: ByteBudget,
    /// Cluster-wide budgets, the AUTH lockout and the connect deny list.
    pub(crate) limits: Arc<crate::limits::InboundLimits>,
    pub(crate) auth_log: authlog::AuthLog,
    pub(crate) snapshot: watch::Receiver<Option<Arc<Snapshot>>>,
    pub(crate) connections: Mutex<crate::connections::Connections>,
    pub(crate) suppressions: Option<SuppressionCache>,
    /// Where reports to a return path are recorded (opened on first use).
    pub(crate) js: Option<async_nats::jetstream::Context>,
    pub(crate) suppression_store: tokio::sync::OnceCell<SuppressionStore>,
    pub(crate) classifier: baton_core::bounce::Classifier,
    /// The per-second budget of `refused` events.
    pub(crate) refused_budget: crate::refused::Budget,
}

impl Shared {
    pub(crate) async fn suppression_store(&self) -> Option<&SuppressionStore> {
        let js = self.js.as_ref()?;
        self.suppression_store
            .get_or_try_init(|| SuppressionStore::open(js))
            .await
            .map_err(|e| tracing::warn!(error = %e, "suppression list unavailable"))
            .ok()
    }

    pub(crate) fn session_config(&self, kind: ListenerKind) -> SessionConfig {
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
            admission: true,
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
