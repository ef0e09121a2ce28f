//! Serving the operations API from `baton admin` and `baton dev`, and `baton admin-token add`.
//! The API itself is `baton_admin`; this is where its listener, token file and TLS come from
//! the flags.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use baton_admin::{AdminService, Authenticator, Permission, TlsFiles, TokenFile};
use tokio_util::sync::CancellationToken;

use crate::cli::{AdminListenArgs, AdminTokenCommand, TokenPermission};
use crate::wiring::Nats;

/// Where `baton dev` serves the API when `--listen-admin` is not given.
pub(crate) const DEV_LISTEN: &str = "127.0.0.1:50051";

/// Bind the API's listener and serve it until `stop` (in the background), checking callers
/// against the token file `tokens` (`--admin-tokens`, or `baton dev`'s own).
pub(crate) async fn start(
    args: &AdminListenArgs,
    listen: std::net::SocketAddr,
    tokens: &Path,
    nats: &Nats,
    role: &'static str,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let tokens: Arc<dyn Authenticator> = Arc::new(
        TokenFile::open(tokens).context("the operations API's token file (--admin-tokens)")?,
    );
    serve(
        args,
        listen,
        tokens,
        nats.client.clone(),
        nats.js.clone(),
        role,
        stop,
    )
    .await
}

/// Serve the API on `listen` with callers checked by `auth`, over the admin NATS identity's
/// `client` and `js` (the operator passes Kubernetes authentication).
pub(crate) async fn serve(
    args: &AdminListenArgs,
    listen: std::net::SocketAddr,
    auth: Arc<dyn Authenticator>,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    role: &'static str,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let tls = match (&args.admin_tls_cert, &args.admin_tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    if tls.is_none() && !listen.ip().is_loopback() {
        bail!(
            "the operations API on {listen} would send tokens in clear: give --admin-tls-cert and --admin-tls-key, or listen on a loopback address"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the operations API on {listen}"))?;
    let addr = listener.local_addr()?;
    let service = AdminService::new(client.clone(), js, auth, role);
    tracing::info!(%addr, tls = tls.is_some(), "operations API listening");
    tokio::spawn(async move {
        if let Err(e) = baton_admin::serve(listener, service, tls, client, stop).await {
            tracing::error!(error = %e, "operations API stopped");
        }
    });
    Ok(addr)
}

/// `baton dev`'s token file and admin token under `data_dir`: created with one admin token
/// (`admin-token`, 0600) on first start and kept, so `baton queue` works without flags.
pub(crate) fn dev_tokens(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let tokens = data_dir.join("admin-tokens");
    let token = data_dir.join("admin-token");
    if !tokens.exists() || !token.exists() {
        let (secret, line) = baton_admin::auth::new_token(Permission::Admin, &[], "dev");
        write_private(&token, &format!("{secret}\n"), false)?;
        write_private(&tokens, &format!("{line}\n"), false)?;
    }
    Ok((tokens, token))
}

/// Write (or append to) a file readable by its owner only.
fn write_private(path: &Path, text: &str, append: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `baton admin-token ...`
pub(crate) fn token_command(command: AdminTokenCommand) -> anyhow::Result<()> {
    match command {
        AdminTokenCommand::Add {
            tokens,
            name,
            permission,
            namespaces,
            out,
        } => {
            if name.is_empty() || name.contains(char::is_whitespace) {
                bail!("--name must be one word (it is shown in the API's logs)");
            }
            let permission = match permission {
                TokenPermission::Viewer => Permission::Viewer,
                TokenPermission::Admin => Permission::Admin,
            };
            let (secret, line) = baton_admin::auth::new_token(permission, &namespaces, &name);
            // Check the file still parses with the new line before keeping it.
            let existing = std::fs::read_to_string(&tokens).unwrap_or_default();
            let mut text = existing.clone();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&line);
            text.push('\n');
            baton_admin::auth::Tokens::parse(&tokens, &text)?;
            write_private(&tokens, &text[existing.len()..], true)?;
            match out {
                Some(path) => {
                    write_private(&path, &format!("{secret}\n"), false)?;
                    eprintln!(
                        "token {name} ({}) added to {}; written to {}",
                        permission.label(),
                        tokens.display(),
                        path.display()
                    );
                }
                None => {
                    eprintln!(
                        "token {name} ({}) added to {}; it is shown once:",
                        permission.label(),
                        tokens.display()
                    );
                    println!("{secret}");
                }
            }
            Ok(())
        }
    }
}
