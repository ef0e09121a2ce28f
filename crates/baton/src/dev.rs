//! `baton dev`: everything on one machine. Starts `nats-server -js` from PATH (unless `--nats`
//! is given) with its store under `--data-dir` and the same least-privilege authorization as
//! production (`baton nats-auth`: one NATS user per role, random passwords held in memory and
//! handed to the server through its environment), compiles and applies the config as the
//! admin role, and runs an ingress, one worker per SendingPool and the EventSink dispatcher in
//! this process, each logged in as its own role. The snapshot's secrets are sealed with `--keyring`, else a
//! keyring kept under `--data-dir` (`keyring/key-1`, created on first start). Without TLS files it uses a
//! self-signed certificate kept under `--data-dir` (`tls/dev.crt`), generated on first start.

use std::process::Stdio;
use std::time::Duration;

use std::collections::HashMap;

use anyhow::{Context as _, bail};
use baton_queue::NatsOptions;
use baton_queue::permissions::Role;
use baton_telemetry::LogHandle;
use tokio::process::{Child, Command};

use crate::cli::DevArgs;
use crate::wiring::{self, Nats};

/// Run `baton dev`.
pub(crate) async fn run(args: DevArgs, log: Option<LogHandle>) -> anyhow::Result<()> {
    if args.config.is_empty() {
        bail!("baton dev needs at least one --config file or directory (see manifests/examples/)");
    }
    let stop = wiring::shutdown_signal();
    let mut child: Option<Child> = None;
    let identities = match &args.nats {
        Some(u) => Identities::shared(args.security.options(u)?),
        None => {
            let roles = wiring::nats_roles(&args.config)?;
            let (c, identities) = start_nats(&args.data_dir, args.durable, &roles).await?;
            child = Some(c);
            identities
        }
    };
    let result = run_with(&args, &identities, log, stop).await;
    if let Some(mut c) = child {
        let _ = c.kill().await;
    }
    result
}

/// The keyring: `--keyring`, else `<data-dir>/keyring`, created with one key on first start
/// (mode 0700/0600) and kept, like production's mounted Secret.
fn dev_keyring(args: &DevArgs) -> anyhow::Result<baton_seal::KeySource> {
    if args.keyring.keyring.is_some() {
        return Ok(args.keyring.source());
    }
    let dir = args.data_dir.join("keyring");
    let keyring = baton_seal::ensure_keyring(&dir)
        .with_context(|| format!("dev keyring {}", dir.display()))?;
    tracing::info!(keyring = %dir.display(), ids = ?keyring.ids(), "snapshot secrets sealed with the dev keyring");
    Ok(baton_seal::KeySource::new(Some(dir)))
}

/// How each part of `baton dev` logs in to NATS.
struct Identities {
    admin: NatsOptions,
    ingress: NatsOptions,
    webhooks: NatsOptions,
    workers: HashMap<String, NatsOptions>,
}

impl Identities {
    /// One identity for everything (`--nats`: the user's server and credentials).
    fn shared(options: NatsOptions) -> Identities {
        Identities {
            admin: options.clone(),
            webhooks: options.clone(),
            ingress: options,
            workers: HashMap::new(),
        }
    }

    fn worker(&self, pool: &str) -> &NatsOptions {
        self.workers.get(pool).unwrap_or(&self.ingress)
    }
}

async fn run_with(
    args: &DevArgs,
    identities: &Identities,
    log: Option<LogHandle>,
    stop: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let admin = Nats::connect(&identities.admin, "baton-dev-admin").await?;
    // `baton dev` owns the queue settings, like `config apply`.
    let settings = crate::queue::owner_settings(&admin.js, args.listen.stream_replicas).await?;
    let admin = admin.owning(settings, args.retention.retention());
    let keys = dev_keyring(args)?;
    let generation =
        wiring::apply_config(&admin, &args.config, "dev", args.tuning.dns_server, &keys).await?;
    let nats = Nats::connect(&identities.ingress, "baton-dev")
        .await?
        .with_keys(keys.clone());
    tracing::info!(generation, "config applied");
    let res = baton_config::load_paths(&args.config)?;
    let pools: Vec<String> = res
        .pools
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    // Given files are watched for renewals like in production; the generated one never changes.
    let mut reloading = None;
    let tls = match (&args.listen.tls_cert, &args.listen.tls_key) {
        (Some(c), Some(k)) => {
            let cert = baton_ingress::tls::ReloadingCert::load(c, k)?;
            let tls = cert.server_config()?;
            reloading = Some(cert);
            tls
        }
        _ => {
            let dir = args.data_dir.join("tls");
            let (tls, cert) =
                baton_ingress::tls::dev_certificate(&dir, args.listen.hostname.as_deref())?;
            let cert = std::fs::canonicalize(&cert).unwrap_or(cert);
            tracing::info!(
                certificate = %cert.display(),
                "dev TLS certificate for localhost, 127.0.0.1 and ::1, kept across restarts; \
                 trust it in clients (msmtp --tls-trust-file, nodemailer tls.ca, swaks --tls-ca-path)"
            );
            tls
        }
    };
    let (metrics, health) = wiring::ops(
        args.listen
            .listen_metrics
            .or_else(|| "127.0.0.1:9090".parse().ok()),
        log,
        &nats,
        &stop,
    )
    .await?;
    if let Some(cert) = reloading {
        tokio::spawn(cert.watch(args.listen.tls_reload_every, metrics.clone(), stop.clone()));
    }
    // Provisioned above; this keeps checking for drift and sets the `queue` condition.
    let queue = crate::queue::watch_queue(
        admin.js.clone(),
        None,
        metrics.clone(),
        health.clone(),
        stop.clone(),
    );
    if !crate::queue::provisioned(queue, &stop).await {
        return Ok(());
    }
    // The operations API, as the admin identity, with a token file of its own.
    let (tokens, token) = match &args.admin.admin_tokens {
        Some(t) => (t.clone(), None),
        None => {
            let (tokens, token) = crate::admin_api::dev_tokens(&args.data_dir)?;
            (tokens, Some(token))
        }
    };
    // Served on the default port unless told otherwise; a second `baton dev` on the machine
    // (or anything else on that port) only loses the API, with a warning.
    let (listen, explicit) = match args.admin.listen_admin {
        Some(a) => (a, true),
        None => (
            crate::admin_api::DEV_LISTEN
                .parse()
                .context("--listen-admin")?,
            false,
        ),
    };
    match crate::admin_api::start(&args.admin, listen, &tokens, &admin, "dev", stop.clone()).await {
        Ok(api) => {
            if let Some(token) = token {
                tracing::info!(
                    admin = %api, token_file = %token.display(),
                    "operations API: try `baton queue --admin {api} --token-file {} summary`",
                    token.display()
                );
            }
        }
        Err(e) if !explicit => {
            tracing::warn!(error = %format!("{e:#}"), "operations API not served (give --listen-admin for another address)");
        }
        Err(e) => return Err(e),
    }
    let mut tasks = tokio::task::JoinSet::new();
    // One process runs the ingress and the workers: `--limit-fallback-divisor` is the one
    // setting for both.
    let tuning = crate::cli::WorkerTuning {
        delivery: args.tuning.clone(),
        limit_fallback_divisor: args.listen.limits.limit_fallback_divisor,
    };
    for pool in pools {
        let config = wiring::worker_config(&pool, &args.listen.hostname, &tuning, false)?;
        let (n, m, h, s) = (
            Nats::connect(identities.worker(&pool), "baton-dev-worker")
                .await?
                .with_keys(keys.clone()),
            metrics.clone(),
            health.clone(),
            stop.clone(),
        );
        let events = args.listen.events;
        tasks.spawn(async move { wiring::run_worker(&n, config, events, m, h, s).await });
    }
    // The EventSink dispatcher, as its own identity.
    {
        let n = Nats::connect(&identities.webhooks, "baton-dev-webhooks")
            .await?
            .with_keys(keys.clone());
        let (m, h, s) = (metrics.clone(), health.clone(), stop.clone());
        // A developer's receiver runs on this machine: loopback sinks are allowed.
        let loopback = ["127.0.0.0/8", "::1/128"]
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        let networks = baton_webhook::policy::SinkNetworks::new(loopback, Vec::new());
        tasks.spawn(async move { wiring::run_webhooks(&n, networks, m, h, s).await });
    }
    let listeners = wiring::default_listeners(&args.listen, true);
    let ingress = wiring::run_ingress(
        &nats,
        &args.listen,
        Some(tls),
        listeners,
        metrics,
        health,
        stop.clone(),
    );
    let r = ingress.await;
    stop.cancel();
    while let Some(t) = tasks.join_next().await {
        if let Ok(Err(e)) = t {
            tracing::error!(error = %e, "worker ended with an error");
        }
    }
    r
}

/// Start `nats-server -js` on a free loopback port with its store under `data_dir`;
/// `durable`: with `sync_interval: always` (a config file, since there is no flag for it).
async fn start_nats(
    data_dir: &std::path::Path,
    durable: bool,
    roles: &[Role],
) -> anyhow::Result<(Child, Identities)> {
    let store = data_dir.join("nats");
    std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut cmd = Command::new("nats-server");
    cmd.args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(&store);
    // The production authorization, with fresh passwords that only this process and the
    // server (through its environment) ever hold: the file names no secret.
    let mut conf_text = baton_queue::permissions::authorization_block(roles);
    if durable {
        conf_text.push_str("jetstream { sync_interval: always }\n");
    }
    let conf = data_dir.join("nats.conf");
    std::fs::write(&conf, conf_text).with_context(|| format!("writing {}", conf.display()))?;
    cmd.arg("-c").arg(&conf);
    let url = format!("nats://127.0.0.1:{port}");
    let mut identities = Identities::shared(NatsOptions::new(&url));
    for role in roles {
        let password = hex::encode(rand::random::<[u8; 24]>());
        cmd.env(role.password_env(), &password);
        let options = NatsOptions {
            auth: baton_queue::NatsAuth::UserPassword {
                user: role.user(),
                password,
            },
            ..NatsOptions::new(&url)
        };
        match role {
            Role::Admin => identities.admin = options,
            Role::Ingress => identities.ingress = options,
            Role::Webhooks => identities.webhooks = options,
            Role::Worker { pool, .. } => {
                identities.workers.insert(pool.clone(), options);
            }
        }
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting nats-server (install it: apt-get install nats-server)")?;
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "nats-server exited ({status}){}",
                if durable {
                    ": --durable needs nats-server >= 2.10 (sync_interval)"
                } else {
                    ""
                }
            );
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            tracing::info!(
                %url,
                store = %store.display(),
                config = %conf.display(),
                "nats-server started with one NATS user per role (baton nats-auth)"
            );
            return Ok((child, identities));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nats-server did not start listening on port {port}")
}
