//! `baton`: the one binary. Each subcommand is a thin wiring of library crates:
//! `ingress` and `worker` are the production processes, `dev` runs everything on one machine,
//! `config apply` compiles Kubernetes-style YAML into the KV snapshot, `crds` writes the CRDs.

mod admin_api;
mod cli;
mod commands;
mod dev;
mod nats_users;
mod operator;
mod queue;
mod queue_cli;
mod suppression_cli;
mod wiring;

use clap::Parser;

fn main() -> std::process::ExitCode {
    // One crypto provider for every TLS stack in the process (rustls, kube, async-nats, tonic):
    // aws-lc-rs, chosen because it signs RSA (DKIM) at OpenSSL's pace, about twice ring's.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = cli::Cli::parse();
    let _log = baton_telemetry::init_logging(&cli.log_level, cli.log_format.into());
    let rt = match runtime(cli.runtime_threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(commands::dispatch(cli, _log)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("baton: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The process's Tokio runtime: `threads` worker threads, or one per CPU the process may use
/// (or `TOKIO_WORKER_THREADS`) when 0.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all();
    if threads > 0 {
        b.worker_threads(threads);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    #[test]
    fn runtime_threads_are_the_setting() -> std::io::Result<()> {
        assert_eq!(super::runtime(1)?.metrics().num_workers(), 1);
        assert_eq!(super::runtime(3)?.metrics().num_workers(), 3);
        assert!(super::runtime(0)?.metrics().num_workers() >= 1);
        Ok(())
    }
}
