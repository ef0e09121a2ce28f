//! The pieces every subcommand is wired from: connect to NATS, wait for the queue its owner
//! provisioned (or provision it, for `config apply` and `dev`), load config, start the ingress
//! or worker and the operations endpoint, and stop cleanly on SIGTERM/SIGINT. Which pieces a
//! subcommand uses is decided in [`crate::commands`], which this module never calls (nor `dev` or
//! `operator`): the dependency goes one way.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use baton_ingress::{IngressConfig, Limits};
use baton_queue::{ConfigStore, Provisioner, Publisher, StreamSettings};
use baton_smtp::ListenerKind;
use baton_telemetry::{Health, LogHandle, Metrics};
use tokio_util::sync::CancellationToken;

use crate::cli::{ListenArgs, WorkerTuning};

/// A cancellation token cancelled on SIGTERM or SIGINT.
pub(crate) fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

/// The NATS roles (`baton_queue::permissions`) of the pools `paths` define, with the lanes
/// `config apply` provisions for them (`baton nats-auth`, `baton dev`'s own nats-server).
pub(crate) fn nats_roles(
    paths: &[std::path::PathBuf],
) -> anyhow::Result<Vec<baton_queue::permissions::Role>> {
    let res = baton_config::load_paths(paths)?;
    let plan = baton_config::plan::plan_snapshot(&res, None, 0)?;
    plan.compiled.ensure_valid()?;
    let lanes = plan.lanes();
    let pools = lanes.iter().map(|l| (l.pool.as_str(), l.retry_tiers));
    Ok(baton_queue::permissions::roles(pools))
}

/// TXT lookups for domain verification ([`baton_config::verification`]) through the
/// delivery resolver.
pub(crate) struct DnsTxt(pub(crate) baton_delivery::resolve::Dns);

impl baton_config::verification::TxtResolver for DnsTxt {
    fn txt<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<String>, String>> + Send + 'a>>
    {
        Box::pin(async move { self.0.txt(name).await.map_err(|e| format!("{e:?}")) })
    }
}

/// A NATS connection with the JetStream handles every process needs.
pub(crate) struct Nats {
    pub client: async_nats::Client,
    pub js: async_nats::jetstream::Context,
    pub provisioner: Provisioner,
    /// The keyring the config snapshot's secrets are opened with.
    pub keys: baton_seal::KeySource,
}

impl Nats {
    /// Connect; nothing is created or changed (its provisioner only reads queue statistics
    /// until [`Nats::owning`] gives it settings to provision with).
    pub(crate) async fn connect(
        options: &baton_queue::NatsOptions,
        name: &str,
    ) -> anyhow::Result<Nats> {
        let client = baton_queue::connect(options, name).await?;
        let js = async_nats::jetstream::new(client.clone());
        let provisioner = Provisioner::new(js.clone(), StreamSettings::default());
        Ok(Nats {
            client,
            js,
            provisioner,
            keys: baton_seal::KeySource::default(),
        })
    }

    /// This connection opening the snapshot's secrets with the keyring from `keys`.
    pub(crate) fn with_keys(self, keys: baton_seal::KeySource) -> Nats {
        Nats { keys, ..self }
    }

    /// This connection as the owner of the queue settings (`config apply`, `dev`).
    pub(crate) fn owning(
        self,
        settings: StreamSettings,
        retention: baton_queue::events::EventRetention,
    ) -> Nats {
        Nats {
            provisioner: Provisioner::new(self.js.clone(), settings)
                .with_event_retention(retention),
            ..self
        }
    }

    fn publisher(&self, timeout: Duration) -> Publisher {
        Publisher::new(self.js.clone(), timeout)
    }

    /// A publisher that also emits delivery events as `component` (when `on`), counted in
    /// `metrics`.
    pub(crate) fn publisher_with_events(
        &self,
        timeout: Duration,
        component: &str,
        metrics: &Metrics,
        on: bool,
    ) -> Publisher {
        let p = self.publisher(timeout);
        if on {
            p.with_events(events(&self.js, component, metrics))
        } else {
            p
        }
    }
}

/// As the owner (`owner`: `config-apply`, `dev`): compile YAML, provision the queue with
/// `nats`'s settings (stream, buckets, the lanes of every pool) and record them, then store the
/// snapshot, its secrets sealed with the keyring from `keys`, bumping the generation only when
/// content changed (or the sealing key did). Fails, provisioning and storing
/// nothing, when any object is invalid ([`baton_config::ConfigError::InvalidObjects`]).
pub(crate) async fn apply_config(
    nats: &Nats,
    paths: &[std::path::PathBuf],
    owner: &str,
    dns_server: Option<SocketAddr>,
    keys: &baton_seal::KeySource,
) -> anyhow::Result<u64> {
    let keyring = keys.load()?;
    let mut res = baton_config::load_paths(paths)?;
    // Domains whose pool requires proof of ownership: look their records up first.
    if !res.verification_challenges().is_empty() {
        let dns = DnsTxt(baton_delivery::resolve::Dns::new(dns_server)?);
        res.verified_domains = baton_config::verification::verified_domains(&res, &dns).await;
    }
    // Validate before touching anything.
    let checked = baton_config::plan::plan_snapshot(&res, None, 0)?;
    checked.compiled.ensure_valid()?;
    let pools: Vec<(String, u32)> = checked
        .lanes()
        .into_iter()
        .map(|l| (l.pool, l.retry_tiers))
        .collect();
    let drift = nats.provisioner.provision(owner, &pools).await?;
    crate::queue::log_owner_drift(&drift);
    if let Some(retention) = checked.body_retention() {
        nats.provisioner.ensure_body_retention(retention).await?;
    }
    let store = ConfigStore::open(&nats.js).await?;
    let previous = store.get().await?;
    let now_ms = baton_core::clock::now_ms();
    // The operator's code path: same digest rule, same generation bump. Unlike the operator,
    // nothing is stored while any object is invalid: the error names each one.
    let plan = baton_config::plan::plan_sealed(&res, previous.as_ref(), now_ms, keyring.as_ref())?;
    plan.compiled.ensure_valid()?;
    let compiled = plan.compiled;
    let generation = compiled.config.generation;
    if !plan.publish {
        return Ok(generation);
    }
    for d in compiled.domains.iter().filter(|d| !d.ready) {
        tracing::warn!(relay_domain = %d.name, reason = %d.not_ready_reason, "RelayDomain not ready");
    }
    store.put(&compiled.config).await?;
    // The consumers of EventSinks that are gone (their position and backlog with them).
    let sinks: Vec<String> = compiled
        .config
        .sinks
        .iter()
        .map(|s| s.name.clone())
        .collect();
    baton_queue::sinks::remove_stale(&nats.js, &sinks).await?;
    Ok(generation)
}

/// Listener set from flags; `dev` fills in loopback defaults.
pub(crate) fn default_listeners(l: &ListenArgs, dev: bool) -> Vec<(ListenerKind, SocketAddr)> {
    let pick =
        |v: Option<SocketAddr>, dev_default: &str, prod_default: &str| -> Option<SocketAddr> {
            v.or_else(|| (if dev { dev_default } else { prod_default }).parse().ok())
        };
    [
        (
            ListenerKind::Relay,
            pick(l.listen_smtp, "127.0.0.1:2525", "0.0.0.0:25"),
        ),
        (
            ListenerKind::Submission,
            pick(l.listen_submission, "127.0.0.1:2587", "0.0.0.0:587"),
        ),
        (
            ListenerKind::Smtps,
            pick(l.listen_smtps, "127.0.0.1:2465", "0.0.0.0:465"),
        ),
    ]
    .into_iter()
    .filter_map(|(k, a)| a.map(|a| (k, a)))
    .collect()
}

fn hostname(flag: &Option<String>) -> String {
    flag.clone()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "baton.localdomain".into())
}

/// Keep a readiness condition in step with the NATS connection.
/// Readiness of the NATS connection: connected, and no operation refused to this process's
/// identity (a refusal means the identity does not match the role — no retry fixes that, so
/// the process stays not ready until it is restarted with the right credentials), and the
/// refusals counted in `baton_nats_permission_denials_total`.
fn watch_nats(
    client: async_nats::Client,
    metrics: Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut counted = 0;
        while !stop.is_cancelled() {
            let (denied, _) = baton_queue::denials();
            metrics
                .nats_permission_denials
                .inc_by(denied.saturating_sub(counted));
            counted = denied;
            let up = baton_queue::is_connected(&client);
            health.set(
                "nats",
                baton_queue::readiness_problem(up, "this process's identity"),
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

/// Metrics, readiness (NATS connection + config snapshot) and the operations endpoint.
pub(crate) async fn ops(
    addr: Option<SocketAddr>,
    log: Option<LogHandle>,
    nats: &Nats,
    stop: &CancellationToken,
) -> anyhow::Result<(Metrics, Arc<Health>)> {
    let metrics = Metrics::new();
    let health = Health::new(&["nats", "queue", "config"]);
    if let Some(addr) = addr {
        let bound = baton_telemetry::http::spawn(addr, metrics.clone(), health.clone(), log)
            .await
            .with_context(|| format!("binding metrics listener {addr}"))?;
        tracing::info!(%bound, "operations endpoint listening");
    }
    watch_nats(
        nats.client.clone(),
        metrics.clone(),
        health.clone(),
        stop.clone(),
    );
    Ok((metrics, health))
}

/// Open and watch the config snapshot, retrying (every 2 s) while it cannot be read — NATS
/// unreachable, or this identity not allowed to read it — with the reason in `/readyz`
/// (`config`) instead of exiting into a restart loop. Sealed secrets are opened with the
/// connection's keyring ([`Nats::with_keys`]). `None` when stopped first.
async fn watch_config(
    nats: &Nats,
    metrics: &Metrics,
    health: &Arc<Health>,
    stop: &CancellationToken,
) -> Option<baton_queue::ConfigWatch> {
    loop {
        let opened = async {
            ConfigStore::open(&nats.js)
                .await?
                .watch(nats.keys.clone(), report_snapshots(metrics, health))
                .await
        };
        match opened.await {
            Ok(watch) => return Some(watch),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the config snapshot; retrying");
                health.set("config", Some(format!("config snapshot: {e}")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return None,
        }
    }
}

/// A snapshot that is not used (does not decode, or its secrets do not open with this
/// process's keyring) is counted in `baton_config_errors_total` and named in `/readyz` as a
/// `config-rejected` warning (the previous snapshot stays in force, so readiness is unchanged)
/// until a snapshot is loaded again.
fn report_snapshots(
    metrics: &Metrics,
    health: &Arc<Health>,
) -> impl Fn(baton_queue::SnapshotEvent<'_>) + Send + 'static {
    let errors = metrics.config_errors.clone();
    let health = health.clone();
    move |event| match event {
        baton_queue::SnapshotEvent::Loaded { .. } => health.note("config-rejected", None),
        baton_queue::SnapshotEvent::Rejected { reason, .. } => {
            errors.inc();
            health.note("config-rejected", Some(reason.to_string()));
        }
    }
}

/// Run an ingress until `stop`.
pub(crate) async fn run_ingress(
    nats: &Nats,
    l: &ListenArgs,
    tls: Option<Arc<rustls::ServerConfig>>,
    listeners: Vec<(ListenerKind, SocketAddr)>,
    metrics: Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(raw) = watch_config(nats, &metrics, &health, &stop).await else {
        return Ok(());
    };
    let snapshots = baton_ingress::index_snapshots(raw, metrics.clone());
    spawn_beats(nats, "ingress", "", &metrics, &health, &stop);
    {
        let mut s = snapshots.clone();
        let h = health.clone();
        tokio::spawn(async move {
            loop {
                let loaded = s.borrow_and_update().is_some();
                h.set(
                    "config",
                    (!loaded).then(|| "no config snapshot yet".to_string()),
                );
                if s.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let config = IngressConfig {
        hostname: hostname(&l.hostname),
        listeners,
        limits: Limits {
            max_connections: l.max_connections,
            max_connections_per_ip: l.max_connections_per_ip,
            command_timeout: l.command_timeout,
            session_timeout: l.session_timeout,
            max_message_size: l.max_message_size,
            inflight_bytes: l.inflight_bytes,
            error_delay: l.error_delay,
            auth_failure_delay: l.auth_failure_delay,
            shutdown_grace: l.shutdown_grace,
            ..Limits::default()
        },
    };
    let ingress = baton_ingress::Ingress::bind(
        config,
        tls,
        nats.publisher_with_events(l.publish_timeout, "ingress", &metrics, l.events.events),
        snapshots,
        metrics.clone(),
    )
    .await?
    .with_suppressions(suppressions(nats, &metrics), nats.js.clone())
    .with_limits(inbound_limits(nats, &l.limits).await);
    for (kind, addr) in ingress.local_addrs() {
        tracing::info!(listener = baton_ingress::listener_label(kind), %addr, "SMTP listening");
    }
    ingress.serve(stop).await;
    Ok(())
}

/// The ingress's cluster-wide limits over the `baton-limits` bucket (provisioned by the owner).
/// The bucket is opened now to report a problem early; if it cannot be, every KV call tries
/// again, and until then each limit decides locally (`--limit-fallback-divisor`).
async fn inbound_limits(
    nats: &Nats,
    a: &crate::cli::InboundLimitArgs,
) -> baton_ingress::limits::InboundLimits {
    let bucket = baton_ingress::limits::LazyBucket::new(nats.js.clone());
    match tokio::time::timeout(Duration::from_secs(5), bucket.open()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(
            bucket = baton_queue::LIMITS_BUCKET,
            error = %e,
            "cannot open the limits bucket yet; shared budgets and lockouts are enforced per pod until it opens"
        ),
        Err(_) => tracing::warn!(
            bucket = baton_queue::LIMITS_BUCKET,
            "opening the limits bucket timed out; shared budgets and lockouts are enforced per pod until it opens"
        ),
    }
    let settings = baton_ingress::limits::Settings {
        fallback_divisor: a.limit_fallback_divisor,
        lockout: baton_ingress::limits::LockoutPolicy {
            failures: a.auth_lockout_failures,
            window: a.auth_lockout_window,
            duration: a.auth_lockout_duration,
        },
        deny_networks: a.deny_networks.clone(),
        ..baton_ingress::limits::Settings::default()
    };
    baton_ingress::limits::InboundLimits::new(std::sync::Arc::new(bucket), settings)
}

/// The suppression lists, followed in the background; the entry count goes to
/// `baton_suppression_entries`.
pub(crate) fn suppressions(
    nats: &Nats,
    metrics: &Metrics,
) -> baton_queue::suppression::SuppressionCache {
    let gauge = metrics.suppression_entries.clone();
    baton_queue::suppression::SuppressionCache::follow(nats.js.clone(), move |n| {
        gauge.set(n as i64)
    })
}

/// Worker settings from flags; `require_fqdn`: see [`baton_delivery::WorkerConfig::require_fqdn`].
pub(crate) fn worker_config(
    pool: &str,
    host: &Option<String>,
    t: &WorkerTuning,
    require_fqdn: bool,
) -> anyhow::Result<baton_delivery::WorkerConfig> {
    let classifier = match &t.delivery.bounce_rules {
        None => baton_core::bounce::Classifier::shipped(),
        Some(path) => {
            let yaml = std::fs::read_to_string(path)
                .with_context(|| format!("reading bounce rules {}", path.display()))?;
            baton_core::bounce::Classifier::with_rules(&yaml)
                .with_context(|| format!("bounce rules {}", path.display()))?
        }
    };
    let name = hostname(host);
    let mut client = baton_smtp_client::ClientConfig::new(&name);
    client.timeouts.connect = t.delivery.connect_timeout;
    Ok(baton_delivery::WorkerConfig {
        pool: pool.to_string(),
        hostname: name,
        concurrency: t.delivery.concurrency,
        fetch_window: t.delivery.fetch_window,
        dns_server: t.delivery.dns_server,
        idle_timeout: t.delivery.idle_timeout,
        progress_every: Duration::from_secs(15),
        client,
        classifier,
        require_fqdn,
        limit_fallback_divisor: t.limit_fallback_divisor,
    })
}

/// Run one worker until `stop`.
pub(crate) async fn run_worker(
    nats: &Nats,
    config: baton_delivery::WorkerConfig,
    events: crate::cli::EventArgs,
    metrics: Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let Some(snapshots) = watch_config(nats, &metrics, &health, &stop).await else {
        return Ok(());
    };
    spawn_beats(nats, "worker", &config.pool, &metrics, &health, &stop);
    let holding = baton_queue::Holding::new();
    spawn_queue_stats(
        nats.provisioner.clone(),
        holding.clone(),
        config.pool.clone(),
        metrics.clone(),
        health.clone(),
        stop.clone(),
    );
    let queue = baton_delivery::Queue {
        js: nats.js.clone(),
        verifier: baton_queue::Verifier::new(nats.js.clone()),
        publisher: nats.publisher_with_events(
            Duration::from_secs(10),
            "worker",
            &metrics,
            events.events,
        ),
        suppressions: suppressions(nats, &metrics),
        holds: {
            let gauge = metrics.holds.clone();
            baton_queue::holds::HoldCache::follow(nats.js.clone(), move |n| gauge.set(n as i64))
        },
        limits: limits_bucket(nats, &config.pool).await,
        holding,
    };
    baton_delivery::run(config, queue, snapshots, metrics, health, stop).await?;
    Ok(())
}

/// The `baton-limits` KV bucket for the pool's shared outbound limits (provisioned by the
/// owner). `None` when it cannot be opened: the worker then enforces them alone, in memory.
async fn limits_bucket(nats: &Nats, pool: &str) -> Option<async_nats::jetstream::kv::Store> {
    match nats.js.get_key_value(baton_queue::LIMITS_BUCKET).await {
        Ok(store) => Some(store),
        Err(e) => {
            tracing::warn!(
                pool,
                bucket = baton_queue::LIMITS_BUCKET,
                error = %e,
                "cannot open the limits bucket; destination limits are enforced per worker only"
            );
            None
        }
    }
}

// The lane statistics (and the workers' NATS permissions) cover every tier a pool may have.
const _: () = assert!(baton_queue::MAX_LANE_TIERS as usize == baton_config::crd::MAX_RETRY_TIERS);

/// Every few seconds, read the pool's lane consumers and publish queue depth and age
/// (`baton_queue_*`), like Postfix's `qshape` as gauges.
fn spawn_queue_stats(
    provisioner: Provisioner,
    holding: baton_queue::Holding,
    pool: String,
    metrics: Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            metrics
                .worker_ready
                .with_label_values(&[&pool])
                .set(i64::from(health.is_ready()));
            if let Ok(lanes) = provisioner
                .lane_stats(&pool, baton_queue::MAX_LANE_TIERS)
                .await
            {
                for l in lanes {
                    metrics
                        .queue_pending
                        .with_label_values(&[&pool, &l.lane])
                        .set(l.pending as i64);
                    metrics
                        .queue_ack_pending
                        .with_label_values(&[&pool, &l.lane])
                        .set(l.ack_pending as i64);
                }
            }
            if let Ok(dead) = provisioner.dead_count(&pool).await {
                metrics
                    .queue_dead
                    .with_label_values(&[&pool])
                    .set(i64::try_from(dead).unwrap_or(i64::MAX));
            }
            if let Ok(held) = provisioner.held_count(&pool).await {
                metrics
                    .queue_held
                    .with_label_values(&[&pool])
                    .set(i64::try_from(held).unwrap_or(i64::MAX));
            }
            // The oldest message this worker holds: lanes are first in, first out and the
            // workers hold each lane's head, so the maximum over a pool's workers is the
            // pool's oldest queued message (`baton_queue::Holding`).
            let now = i128::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            )
            .unwrap_or(i128::MAX);
            let secs = holding
                .oldest_age(now)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            metrics
                .queue_oldest_age
                .with_label_values(&[&pool])
                .set(secs);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// Every `BEAT_EVERY`, record in the process registry what this process is and which config
/// generation it runs (`baton_queue::processes`; the operations API's status lists them).
fn spawn_beats(
    nats: &Nats,
    role: &'static str,
    pool: &str,
    metrics: &Metrics,
    health: &Arc<Health>,
    stop: &CancellationToken,
) {
    use baton_queue::processes::{BEAT_EVERY, Beat, Processes};
    let instance = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| hostname(&None));
    let (js, pool, metrics, health, stop) = (
        nats.js.clone(),
        pool.to_owned(),
        metrics.clone(),
        health.clone(),
        stop.clone(),
    );
    tokio::spawn(async move {
        let mut registry = None;
        while !stop.is_cancelled() {
            if registry.is_none() {
                registry = Processes::open(&js).await.ok();
            }
            if let Some(r) = &registry {
                let beat = Beat {
                    role: role.to_owned(),
                    pool: pool.clone(),
                    instance: instance.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                    generation: u64::try_from(metrics.config_generation.get()).unwrap_or(0),
                    ready: health.is_ready(),
                    at_ms: baton_core::clock::now_ms(),
                };
                if let Err(e) = r.beat(&beat).await {
                    tracing::debug!(error = %e, "process registry beat failed; trying again");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(BEAT_EVERY) => {}
                _ = stop.cancelled() => return,
            }
        }
    });
}

/// The delivery events of `component` on this host (`baton/<component>/<instance>`), each
/// result counted in `baton_events_total{type,result}`.
pub(crate) fn events(
    js: &async_nats::jetstream::Context,
    component: &str,
    metrics: &Metrics,
) -> baton_queue::events::Events {
    let instance = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| hostname(&None));
    let counter = metrics.events.clone();
    baton_queue::events::Events::new(
        js.clone(),
        &format!("baton/{component}/{instance}"),
        Arc::new(move |kind, stored| {
            counter
                .with_label_values(&[kind, if stored { "stored" } else { "failed" }])
                .inc();
        }),
    )
}

/// The EventSink dispatcher (`baton webhooks`, and inside `baton dev`): once the sinks'
/// record bucket opens (`queue` ready) and a snapshot is loaded (`config` ready), serve the
/// snapshot's sinks until `stop`.
pub(crate) async fn run_webhooks(
    nats: &Nats,
    networks: baton_webhook::policy::SinkNetworks,
    metrics: Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let status = loop {
        match baton_queue::sinks::SinkStatusStore::open(&nats.js).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "EventSink records not reachable; retrying");
                health.set("queue", Some(format!("{e}")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return Ok(()),
        }
    };
    health.set("queue", None);
    let Some(snapshots) = watch_config(nats, &metrics, &health, &stop).await else {
        return Ok(());
    };
    // Ready once a snapshot is in force; the generation is what the registry reports.
    let (mut watch, h, m) = (snapshots.clone(), health.clone(), metrics.clone());
    tokio::spawn(async move {
        loop {
            if let Some(c) = watch.borrow_and_update().clone() {
                h.set("config", None);
                m.config_generation
                    .set(i64::try_from(c.generation).unwrap_or(i64::MAX));
            }
            if watch.changed().await.is_err() {
                return;
            }
        }
    });
    spawn_beats(nats, "webhooks", "", &metrics, &health, &stop);
    let dispatcher = baton_webhook::Dispatcher::new(
        nats.js.clone(),
        status,
        Arc::new(WebhookMetrics(metrics)),
        &format!("Baton/{}", env!("CARGO_PKG_VERSION")),
        networks,
    );
    dispatcher.run(snapshots, stop).await;
    Ok(())
}

/// The dispatcher's reports as `baton_webhook_*` metrics.
struct WebhookMetrics(Metrics);

impl baton_webhook::Hooks for WebhookMetrics {
    fn outcome(&self, sink: &str, result: &'static str) {
        self.0
            .webhook_events
            .with_label_values(&[sink, result])
            .inc();
    }

    fn post_seconds(&self, sink: &str, seconds: f64) {
        self.0
            .webhook_post_duration
            .with_label_values(&[sink])
            .observe(seconds);
    }

    fn backlog(&self, sink: &str, events: u64) {
        self.0
            .webhook_backlog
            .with_label_values(&[sink])
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    fn sinks(&self, count: usize) {
        self.0
            .webhook_sinks
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
