//! The command table: which pieces of [`crate::wiring`] each subcommand runs, and the small
//! one-shot commands (`config check`, `crds`, `dns-records`) in full. `dev` and `operator`
//! have modules of their own; nothing calls back into this one (no module cycle).

use anyhow::{Context as _, bail};
use baton_telemetry::LogHandle;

use crate::cli::{Cli, Command, ConfigCommand, KeyringCommand};
use crate::wiring;

/// Run the chosen subcommand.
pub(crate) async fn dispatch(cli: Cli, log: Option<LogHandle>) -> anyhow::Result<()> {
    match cli.command {
        Command::Dev(args) => crate::dev::run(args, log).await,
        Command::Ingress(args) => {
            let stop = wiring::shutdown_signal();
            let cert = match (&args.listen.tls_cert, &args.listen.tls_key) {
                (Some(c), Some(k)) => baton_ingress::tls::ReloadingCert::load(c, k)?,
                _ => bail!(
                    "the ingress needs --tls-cert and --tls-key (only `baton dev` may run with a generated certificate)"
                ),
            };
            let tls = cert.server_config()?;
            let nats = wiring::Nats::connect(&args.security.options(&args.nats)?, "baton-ingress")
                .await?
                .with_keys(args.keyring.source());
            let (metrics, health) =
                wiring::ops(args.listen.listen_metrics, log, &nats, &stop).await?;
            tokio::spawn(cert.watch(args.listen.tls_reload_every, metrics.clone(), stop.clone()));
            let queue = crate::queue::watch_queue(
                nats.js.clone(),
                args.listen.stream_replicas,
                metrics.clone(),
                health.clone(),
                stop.clone(),
            );
            if !crate::queue::provisioned(queue, &stop).await {
                return Ok(());
            }
            wiring::run_ingress(
                &nats,
                &args.listen,
                Some(tls),
                wiring::default_listeners(&args.listen, false),
                metrics,
                health,
                stop,
            )
            .await
        }
        Command::Worker(args) => {
            let stop = wiring::shutdown_signal();
            let nats = wiring::Nats::connect(&args.security.options(&args.nats)?, "baton-worker")
                .await?
                .with_keys(args.keyring.source());
            let (metrics, health) = wiring::ops(args.listen_metrics, log, &nats, &stop).await?;
            let queue = crate::queue::watch_queue(
                nats.js.clone(),
                args.stream_replicas,
                metrics.clone(),
                health.clone(),
                stop.clone(),
            );
            if !crate::queue::provisioned(queue, &stop).await {
                return Ok(());
            }
            let config = wiring::worker_config(&args.pool, &args.hostname, &args.tuning, true)?;
            wiring::run_worker(&nats, config, args.events, metrics, health, stop).await
        }
        Command::Operator(args) => crate::operator::run(args, log).await,
        Command::Webhooks(args) => {
            let stop = wiring::shutdown_signal();
            let nats = wiring::Nats::connect(&args.security.options(&args.nats)?, "baton-webhooks")
                .await?
                .with_keys(args.keyring.source());
            let (metrics, health) = wiring::ops(args.listen_metrics, log, &nats, &stop).await?;
            let networks =
                baton_webhook::policy::SinkNetworks::new(args.sink_allow, args.sink_deny);
            wiring::run_webhooks(&nats, networks, metrics, health, stop).await
        }
        Command::Config {
            command:
                ConfigCommand::Apply {
                    nats,
                    security,
                    keyring,
                    stream_replicas,
                    dns_server,
                    retention,
                    paths,
                },
        } => {
            // The owner outside Kubernetes: provisions the stream, buckets and the pools' lanes
            // with the resolved settings and records them for every other process.
            let nats = wiring::Nats::connect(&security.options(&nats)?, "baton-config").await?;
            let settings = crate::queue::owner_settings(&nats.js, stream_replicas).await?;
            let nats = nats.owning(settings, retention.retention());
            let generation =
                wiring::apply_config(&nats, &paths, "config-apply", dns_server, &keyring.source())
                    .await?;
            println!(
                "applied RelayConfig generation {generation} (queue replicas {})",
                nats.provisioner.settings().replicas
            );
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { paths },
        } => {
            let res = baton_config::load_paths(&paths)?;
            let compiled = baton_config::compile(&res, 1, 0)?;
            print_report(&compiled);
            // The operator would publish the rest; a human checking wants to know.
            compiled.ensure_valid()?;
            Ok(())
        }
        Command::Crds { out } => {
            baton_config::crdgen::write_crds(&out)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote CRDs to {}", out.display());
            Ok(())
        }
        Command::Suppression {
            nats,
            security,
            command,
        } => crate::suppression_cli::run(&security.options(&nats)?, command).await,
        Command::Admin(args) => {
            let stop = wiring::shutdown_signal();
            let Some(tokens) = &args.listen.admin_tokens else {
                bail!("baton admin needs --admin-tokens (create one with `baton admin-token add`)");
            };
            let listen = args
                .listen
                .listen_admin
                .or_else(|| crate::admin_api::DEV_LISTEN.parse().ok())
                .context("--listen-admin")?;
            let nats =
                wiring::Nats::connect(&args.security.options(&args.nats)?, "baton-admin-api")
                    .await?;
            crate::admin_api::start(&args.listen, listen, tokens, &nats, "admin", stop.clone())
                .await?;
            stop.cancelled().await;
            Ok(())
        }
        Command::AdminToken { command } => crate::admin_api::token_command(command),
        Command::Queue(args) => crate::queue_cli::run(args).await,
        Command::Keyring { command } => match command {
            KeyringCommand::Add { keyring } => {
                let id = baton_seal::add_key(&keyring)?;
                println!(
                    "added key {id} to {}: it seals from the next config apply; keep the older keys until every process runs the re-sealed snapshot",
                    keyring.display()
                );
                Ok(())
            }
            KeyringCommand::List { keyring } => {
                let k = baton_seal::Keyring::load_dir(&keyring)?;
                for id in k.ids() {
                    let role = if id == k.sealing_id() {
                        "seals and opens"
                    } else {
                        "opens"
                    };
                    println!("key-{id}\t{role}");
                }
                Ok(())
            }
        },
        Command::NatsAuth { config, write } => {
            let roles = wiring::nats_roles(&config)?;
            match write {
                None => print!("{}", baton_queue::permissions::authorization_block(&roles)),
                Some(dir) => {
                    crate::nats_users::write(&dir, &roles)?;
                    let shown = std::fs::canonicalize(&dir).unwrap_or(dir);
                    println!(
                        "wrote {}: include auth.conf in nats.conf and reload nats-server; each role logs in with --nats-user baton-<role> --nats-password-file {}/<role> (admin, ingress, worker-<pool>)",
                        shown.display(),
                        shown.display()
                    );
                }
            }
            Ok(())
        }
        Command::DnsRecords { config } => {
            let res = baton_config::load_paths(&config)?;
            let compiled = baton_config::compile(&res, 1, 0)?;
            compiled.ensure_valid()?;
            for d in &compiled.domains {
                println!("; {} ({})", d.domain, d.name);
                for r in &d.dns_records {
                    if r.rtype == "TXT" {
                        println!("{}\tIN\t{}\t\"{}\"", r.name, r.rtype, r.value);
                    } else {
                        println!("{}\tIN\t{}\t{}", r.name, r.rtype, r.value);
                    }
                }
            }
            Ok(())
        }
    }
}

fn print_report(compiled: &baton_config::Compiled) {
    for d in &compiled.domains {
        let state = match (&d.invalid, d.ready) {
            (Some(invalid), _) => format!("INVALID: {}", invalid.detail()),
            (None, true) => "ready".to_string(),
            (None, false) => format!("NOT READY: {}", d.not_ready_reason),
        };
        println!("RelayDomain {} ({}): {state}", d.name, d.domain);
    }
    for report in &compiled.pools {
        match (
            &report.invalid,
            compiled.config.pools.iter().find(|p| p.name == report.name),
        ) {
            (Some(invalid), _) => {
                println!("SendingPool {}: INVALID: {}", report.name, invalid.detail())
            }
            (None, Some(p)) => println!(
                "SendingPool {}: {} smarthost(s), {} egress identities",
                p.name,
                p.smarthosts.len(),
                p.egress.len()
            ),
            (None, None) => {}
        }
    }
}
