//! `baton operator`: flags → [`baton_operator::Settings`], the operations endpoint (readiness:
//! NATS connected and Lease round-trips working), then the operator until SIGTERM. Losing the
//! leader Lease exits non-zero so the pod restarts as a standby.

use anyhow::{Context as _, bail};
use baton_operator::Settings;
use baton_telemetry::{Health, LogHandle, Metrics};

use crate::cli::OperatorArgs;
use crate::wiring::shutdown_signal;

/// This replica's identity in the Lease: `$POD_NAME`, else the host name.
fn identity() -> String {
    std::env::var("POD_NAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("baton-operator-{}", std::process::id()))
}

fn settings(args: &OperatorArgs) -> anyhow::Result<Settings> {
    let namespace = match args
        .namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
    {
        Some(ns) if !ns.is_empty() => ns,
        _ => bail!("set --namespace (BATON_NAMESPACE) or POD_NAMESPACE to the install namespace"),
    };
    let mut s = Settings::new(&namespace, &args.worker_image, &args.nats);
    s.worker_service_account = args.worker_service_account.clone();
    s.worker_hostname = match args.worker_hostname.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(h) if baton_core::names::is_fqdn(h) => Some(h.trim_end_matches('.').to_owned()),
        Some(h) => bail!("--worker-hostname {h:?} is not a fully qualified domain name"),
    };
    s.nats = args.security.options(&args.nats)?;
    s.worker_nats_tls = args
        .worker_nats_tls_secret
        .as_ref()
        .filter(|n| !n.is_empty())
        .map(|secret| baton_operator::context::WorkerNatsTls {
            secret: secret.clone(),
            client_cert: args.worker_nats_client_cert,
        });
    s.keyring = args.keyring.source();
    s.keyring_secret = args.keyring_secret.clone().filter(|n| !n.is_empty());
    s.nats_auth_secret = args.nats_auth_secret.clone().filter(|n| !n.is_empty());
    s.stream_replicas = args.stream_replicas;
    s.event_retention = args.retention.retention();
    s.identity = identity();
    s.lease_name = args.lease_name.clone();
    Ok(s)
}

/// Run the operator until SIGTERM/SIGINT.
pub(crate) async fn run(args: OperatorArgs, log: Option<LogHandle>) -> anyhow::Result<()> {
    let settings = settings(&args)?;
    let stop = shutdown_signal();
    let metrics = Metrics::new();
    let health = Health::new(&["nats", "kubernetes"]);
    if let Some(addr) = args.listen_metrics {
        let bound = baton_telemetry::http::spawn(addr, metrics.clone(), health.clone(), log)
            .await
            .with_context(|| format!("binding metrics listener {addr}"))?;
        tracing::info!(%bound, "operations endpoint listening");
    }
    // Domain verification records are looked up through the cluster's resolver.
    let dns: Option<std::sync::Arc<dyn baton_config::verification::TxtResolver>> =
        match baton_delivery::resolve::Dns::new(args.dns_server) {
            Ok(dns) => Some(std::sync::Arc::new(crate::wiring::DnsTxt(dns))),
            Err(e) => {
                tracing::warn!(error = %e, "no resolver: domains that need verification stay not ready");
                None
            }
        };
    if let Some(listen) = args.admin.listen_admin {
        spawn_api(&args, listen, &settings, stop.clone());
    }
    baton_operator::runtime::start(settings, args.leader_election, metrics, health, stop, dns)
        .await?;
    Ok(())
}

/// Serve the operations API from this replica (every replica, leader or not): callers are
/// checked with TokenReview/SubjectAccessReview (or `--admin-tokens` when given), the queue is
/// read as the admin NATS role. Started in the background: the NATS login may wait for the
/// authorization Secret the leader creates on a fresh install.
fn spawn_api(
    args: &OperatorArgs,
    listen: std::net::SocketAddr,
    settings: &Settings,
    stop: tokio_util::sync::CancellationToken,
) {
    let (admin, tokens, settings) = (
        args.admin.clone(),
        args.admin.admin_tokens.clone(),
        settings.clone(),
    );
    tokio::spawn(async move {
        let started = async {
            let (nats, kube_auth) = baton_operator::admin_auth::api_backend(&settings).await?;
            let auth: std::sync::Arc<dyn baton_admin::Authenticator> = match &tokens {
                Some(t) => std::sync::Arc::new(baton_admin::TokenFile::open(t)?),
                None => std::sync::Arc::new(kube_auth),
            };
            let nats = crate::wiring::Nats::connect(&nats, "baton-operator-api").await?;
            crate::admin_api::serve(
                &admin,
                listen,
                auth,
                nats.client.clone(),
                nats.js.clone(),
                "operator",
                stop,
            )
            .await?;
            anyhow::Ok(())
        };
        if let Err(e) = started.await {
            tracing::error!(error = %format!("{e:#}"), "operations API not served");
        }
    });
}
