//! What every reconciler shares: the Kubernetes client, the settings, the JetStream backend,
//! metrics, the Event recorder and a clock (fixed in tests so status bodies are exact).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use baton_config::compile::SinkReport;
use baton_telemetry::Metrics;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use parking_lot::Mutex;

use crate::queue::QueueBackend;

/// Field manager of every server-side apply and status patch.
pub const FIELD_MANAGER: &str = "baton-operator";

/// Deployment-level settings of the operator (from flags; see `baton operator --help`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Install namespace: worker Deployments, PDBs, HPAs and the Lease live here.
    pub namespace: String,
    /// Image of the worker Deployments (the `baton` image).
    pub worker_image: String,
    /// Service account of the worker pods.
    pub worker_service_account: String,
    /// The name workers announce (`BATON_HOSTNAME`) for pools without their own; `None`: not
    /// set, and such pools' workers stay not ready rather than announce a pod name.
    pub worker_hostname: Option<String>,
    /// NATS URL given to the workers (and used by the operator).
    pub nats_url: String,
    /// How the operator itself connects (the URL above, with its TLS and credentials).
    pub nats: baton_queue::NatsOptions,
    /// TLS towards NATS for the worker pods, when NATS speaks TLS.
    pub worker_nats_tls: Option<WorkerNatsTls>,
    /// The keyring directory the snapshot's secrets are sealed with when there is no
    /// `keyring_secret`, re-read at every sync (a rotated key is used without a restart).
    pub keyring: baton_seal::KeySource,
    /// Secret (install namespace) with the keyring: read (and created with one key when
    /// missing) at every sync by [`crate::keyring`], and mounted into worker pods at
    /// [`Settings::WORKER_KEYRING_MOUNT`] (their `BATON_KEYRING`).
    pub keyring_secret: Option<String>,
    /// Secret (install namespace) with the NATS users of every role ([`crate::nats_auth`]):
    /// the operator logs in as `baton-admin` from it, keeps its users in step with the
    /// SendingPools and gives worker pods their pool's password.
    pub nats_auth_secret: Option<String>,
    /// JetStream stream replicas.
    pub stream_replicas: usize,
    /// How long the event stream keeps events (the operator provisions it).
    pub event_retention: baton_queue::events::EventRetention,
    /// This replica's identity in the Lease (pod name or host name).
    pub identity: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
}

/// How worker pods reach a NATS that speaks TLS: a Secret mounted at
/// [`WorkerNatsTls::MOUNT`] with the CA bundle (`ca.crt`) and, for servers that verify
/// clients, a client certificate (`tls.crt`, `tls.key`) — the layout cert-manager writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerNatsTls {
    /// Secret in the install namespace.
    pub secret: String,
    /// Whether the Secret's `tls.crt`/`tls.key` are presented as a client certificate.
    pub client_cert: bool,
}

impl WorkerNatsTls {
    /// Where the Secret is mounted in worker pods.
    pub const MOUNT: &'static str = "/etc/baton/nats-tls";
}

impl Settings {
    /// Where worker pods get the keyring Secret.
    pub const WORKER_KEYRING_MOUNT: &'static str = "/etc/baton/keyring";

    /// Settings with the documented defaults for everything but the namespace, image and NATS.
    pub fn new(namespace: &str, worker_image: &str, nats_url: &str) -> Self {
        Settings {
            namespace: namespace.to_owned(),
            worker_image: worker_image.to_owned(),
            worker_service_account: "baton-worker".to_owned(),
            worker_hostname: None,
            nats_url: nats_url.to_owned(),
            nats: baton_queue::NatsOptions::new(nats_url),
            worker_nats_tls: None,
            keyring: baton_seal::KeySource::default(),
            keyring_secret: None,
            nats_auth_secret: None,
            stream_replicas: 1,
            event_retention: baton_queue::events::EventRetention::default(),
            identity: "baton-operator".to_owned(),
            lease_name: "baton-operator".to_owned(),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Settings::new("baton-system", "baton:test", "nats://nats:4222")
    }
}

/// The time source of status conditions.
pub type Clock = Arc<dyn Fn() -> Time + Send + Sync>;

/// The real clock.
pub fn system_clock() -> Clock {
    Arc::new(|| Time(k8s_openapi::jiff::Timestamp::now()))
}

/// Shared by all reconcilers.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Operator settings.
    pub settings: Settings,
    /// JetStream.
    pub queue: Arc<dyn QueueBackend>,
    /// Metrics registry of the process.
    pub metrics: Metrics,
    /// Event recorder.
    pub recorder: Recorder,
    /// Clock for condition transition times.
    pub clock: Clock,
    /// Secrets (`namespace`, `name`) the last snapshot referenced: changes to them trigger a sync.
    pub(crate) referenced: Mutex<BTreeSet<(String, String)>>,
    /// The compiler's report on every EventSink at the last sync, with the `metadata.generation`
    /// it compiled: what the periodic sink status refresh writes `Ready` from.
    pub(crate) sink_reports: Mutex<Vec<(SinkReport, Option<i64>)>>,
    /// Whether the consumers of deleted EventSinks may remain: set when a snapshot is published
    /// (and at start), cleared once `remove_stale_sinks` succeeded.
    pub(crate) prune_sinks: AtomicBool,
    /// Looks up domain verification records (`None`: no domain that needs one is verified).
    pub dns: Option<Arc<dyn baton_config::verification::TxtResolver>>,
}

impl Context {
    /// A context; Events are reported as controller `baton-operator`, instance `identity`.
    pub fn new(
        client: Client,
        settings: Settings,
        queue: Arc<dyn QueueBackend>,
        metrics: Metrics,
        clock: Clock,
    ) -> Arc<Self> {
        Context::with_dns(client, settings, queue, metrics, clock, None)
    }

    /// [`Context::new`] with a resolver for domain verification records.
    pub fn with_dns(
        client: Client,
        settings: Settings,
        queue: Arc<dyn QueueBackend>,
        metrics: Metrics,
        clock: Clock,
        dns: Option<Arc<dyn baton_config::verification::TxtResolver>>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.to_owned(),
                instance: Some(settings.identity.clone()),
            },
        );
        Arc::new(Context {
            client,
            settings,
            queue,
            metrics,
            recorder,
            clock,
            referenced: Mutex::new(BTreeSet::new()),
            sink_reports: Mutex::new(Vec::new()),
            prune_sinks: AtomicBool::new(true),
            dns,
        })
    }

    /// Now, per the context's clock.
    pub fn now(&self) -> Time {
        (self.clock)()
    }

    /// Publish an Event about `obj`; failures are logged, never fatal. Notes must not carry
    /// secret material.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, event: Event) {
        let reference = obj.object_ref(&());
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, reason = %event.reason, "cannot publish Event");
        }
    }

    /// Publish an Event for every condition of `next` that changed from `previous` and is worth
    /// announcing: problems (Warning) and becoming Ready (Normal). A reason already announced in
    /// this batch (`Ready` mirrors the failing condition's reason) is not repeated.
    pub async fn announce<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        previous: &[Condition],
        next: &[Condition],
        action: &str,
    ) {
        let mut announced: Vec<&str> = Vec::new();
        for c in crate::conditions::changed(previous, next) {
            let warning = crate::conditions::is_warning(c);
            if (!warning && c.type_ != "Ready") || announced.contains(&c.reason.as_str()) {
                continue;
            }
            announced.push(&c.reason);
            let event = Event {
                type_: if warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                reason: c.reason.clone(),
                note: Some(format!("{}={}: {}", c.type_, c.status, c.message)),
                action: action.to_owned(),
                secondary: None,
            };
            self.event(obj, event).await;
        }
    }

    /// Whether a Secret is referenced by the last compiled snapshot.
    pub fn references_secret(&self, namespace: &str, name: &str) -> bool {
        self.referenced
            .lock()
            .contains(&(namespace.to_owned(), name.to_owned()))
    }

    /// Count and time one reconcile of `kind`.
    pub fn observe<T>(&self, kind: &str, started: std::time::Instant, r: &crate::Result<T>) {
        let result = match r {
            Ok(_) => "ok",
            Err(e) => e.metric_label(),
        };
        self.metrics
            .operator_reconciles
            .with_label_values(&[kind, result])
            .inc();
        self.metrics
            .operator_reconcile_duration
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
    }
}
