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
