//! NATS users kept in a directory (`baton nats-auth --write DIR`): the production
//! authorization for scenarios, the flags that log a Baton process in as a role, and a client
//! logged in as a role for the test's own publishes.

use std::path::Path;
use std::process::Command;

use crate::harness::baton_bin;

/// Run `baton nats-auth --config CONFIG --write DIR`.
pub fn write_users(config: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = Command::new(baton_bin()?)
        .args(["nats-auth", "--config"])
        .arg(config)
        .arg("--write")
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `--nats-user baton-<role> --nats-password-file DIR/<role>`.
pub fn login(dir: &Path, role: &str) -> Vec<String> {
    vec![
        "--nats-user".into(),
        format!("baton-{role}"),
        "--nats-password-file".into(),
        dir.join(role).display().to_string(),
    ]
}

/// The flags as `&str`s.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A client logged in to `url` as `baton-<role>` (replies on its own inbox prefix).
pub async fn connect_as(url: &str, dir: &Path, role: &str) -> anyhow::Result<async_nats::Client> {
    let user = format!("baton-{role}");
    let password = std::fs::read_to_string(dir.join(role))?.trim().to_owned();
    Ok(
        async_nats::ConnectOptions::with_user_and_password(user.clone(), password)
            .custom_inbox_prefix(format!("_INBOX.{user}"))
            .connect(url)
            .await?,
    )
}

/// A nats-server with the production authorization of the roles `cfg` needs (passwords
/// written under `users`), and `cfg` applied as the admin role with `apply_extra` flags.
pub async fn secured_nats(
    cfg: &Path,
    users: &Path,
    apply_extra: &[&str],
) -> anyhow::Result<crate::harness::Nats> {
    write_users(cfg, users)?;
    let nats =
        crate::harness::Nats::start_with(Some(std::fs::read_to_string(users.join("auth.conf"))?))
            .await?;
    let mut flags = login(users, "admin");
    flags.extend(apply_extra.iter().map(|s| (*s).to_owned()));
    crate::harness::apply_config_with(&nats.url, cfg, &strs(&flags))?;
    Ok(nats)
}

/// An ingress and a worker of pool `pool` (resolving through `dns`), each logged in as its
/// role from `users`.
pub async fn ingress_and_worker(
    nats: &crate::harness::Nats,
    dir: &Path,
    users: &Path,
    pool: &str,
    dns: Option<std::net::SocketAddr>,
) -> anyhow::Result<(crate::harness::Ingress, crate::harness::Worker)> {
    let ingress =
        crate::harness::Ingress::start(nats, dir, &strs(&login(users, "ingress"))).await?;
    let worker = crate::harness::Worker::start(
        nats,
        dir,
        pool,
        dns,
        &strs(&login(users, &format!("worker-{pool}"))),
    )
    .await?;
    Ok((ingress, worker))
}
