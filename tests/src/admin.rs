//! The operations API in scenarios: a `baton admin` process on a free loopback port, tokens
//! made with `baton admin-token add`, the `baton queue` CLI, and the independent Python grpcio
//! client (`tests/tools/grpc_reflection_client.py`, server reflection, no .proto file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::harness::{Proc, baton_bin, loopback, wait_port};

/// Where `scripts/setup` installs grpcio for the Debian interpreter.
const PYTHON_DIR: &str = "/usr/local/lib/baton-python";

/// A running `baton admin`.
pub struct Admin {
    /// The API's address.
    pub addr: SocketAddr,
    /// Its token file.
    pub tokens: PathBuf,
    /// The process.
    pub proc: Proc,
    /// Its log.
    pub log: PathBuf,
}

impl Admin {
    /// Start `baton admin` against `url` with a token file under `dir` and extra flags (NATS
    /// login), and wait until it listens.
    pub async fn start(url: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<Admin> {
        let addr = loopback()?;
        let tokens = dir.join("admin-tokens");
        if !tokens.exists() {
            std::fs::write(&tokens, "# tokens\n")?;
        }
        let log = dir.join(format!("admin-{}.log", addr.port()));
        let child = Command::new(baton_bin()?)
            .args(["admin", "--nats", url, "--listen-admin", &addr.to_string()])
            .arg("--admin-tokens")
            .arg(&tokens)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let proc = Proc {
            child,
            name: "admin".into(),
        };
        wait_port(addr, Duration::from_secs(20))
            .await
            .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
        Ok(Admin {
            addr,
            tokens,
            proc,
            log,
        })
    }

    /// A new token (`viewer` or `admin`, limited to `namespaces` when given), written to a
    /// file under `dir`; returns that file.
    pub fn token(
        &self,
        dir: &Path,
        name: &str,
        permission: &str,
        namespaces: &[&str],
    ) -> anyhow::Result<PathBuf> {
        let out = dir.join(format!("token-{name}"));
        let mut cmd = Command::new(baton_bin()?);
        cmd.args([
            "admin-token",
            "add",
            "--name",
            name,
            "--permission",
            permission,
        ])
        .arg("--tokens")
        .arg(&self.tokens)
        .arg("--out")
        .arg(&out);
        for ns in namespaces {
            cmd.args(["--namespace", ns]);
        }
        let o = cmd.output()?;
        if !o.status.success() {
            bail!("admin-token add: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(out)
    }

    /// Run `baton queue --admin ADDR --token-file TOKEN ARGS...`.
    pub fn queue(&self, token: &Path, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(baton_bin()?)
            .args(["queue", "--admin", &self.addr.to_string()])
            .arg("--token-file")
            .arg(token)
            .args(args)
            .output()?)
    }

    /// `baton queue ... -o json ARGS...`, which must succeed, parsed.
    pub fn queue_json(&self, token: &Path, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let o = self.queue(token, &all)?;
        if !o.status.success() {
            bail!(
                "baton queue {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }

    /// Call `method` with `request` (JSON) from Python grpcio through server reflection;
    /// returns the answer as JSON.
    pub fn python_call(
        &self,
        token: &Path,
        method: &str,
        request: &str,
    ) -> anyhow::Result<serde_json::Value> {
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/grpc_reflection_client.py");
        let o = Command::new("/usr/bin/python3")
            .env("PYTHONPATH", PYTHON_DIR)
            .arg(tool)
            .arg(self.addr.to_string())
            .arg(token)
            .args([method, request])
            .output()
            .context("run /usr/bin/python3 (scripts/setup installs grpcio)")?;
        if !o.status.success() {
            bail!(
                "python grpcio client: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }
}
