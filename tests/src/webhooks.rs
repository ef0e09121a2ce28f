//! EventSink fixtures: the independent webhook receiver (`tools/webhook_receiver.py`, which
//! verifies signatures with the `standardwebhooks` reference library and parses CloudEvents
//! with the `cloudevents` SDK) over HTTPS with a test CA, and `baton webhooks` processes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::Value;

use crate::harness::{Proc, baton_bin, free_port, keyring_dir, wait_port, wait_ready};

/// Where `scripts/setup` installs the Python packages the independent clients use.
pub const PYTHON_DIR: &str = "/usr/local/lib/baton-python";

/// A Standard Webhooks secret (`whsec_` + base64 of 32 bytes derived from `seed`).
pub fn secret(seed: u8) -> String {
    let key: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(7).wrapping_add(seed))
        .collect();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// The running receiver.
pub struct Receiver {
    /// `https://127.0.0.1:<port>`.
    pub base: String,
    /// PEM of the CA its certificate chains to.
    pub ca_pem: String,
    out: PathBuf,
    down: PathBuf,
    _proc: Proc,
}

impl Receiver {
    /// Start the receiver with endpoints `(path, secret)`, files under `dir`.
    pub async fn start(dir: &Path, sinks: &[(&str, &str)]) -> anyhow::Result<Receiver> {
        let ca = crate::tls::TestCa::new()?;
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"])?;
        let (cert_path, key_path) = (dir.join("hook.crt"), dir.join("hook.key"));
        std::fs::write(&cert_path, cert)?;
        std::fs::write(&key_path, key)?;
        let port = free_port()?;
        let out = dir.join("webhooks.jsonl");
        let down = dir.join("webhooks.down");
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/webhook_receiver.py");
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.env("PYTHONPATH", PYTHON_DIR)
            .arg(tool)
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(&cert_path)
            .arg("--key")
            .arg(&key_path)
            .arg("--out")
            .arg(&out)
            .arg("--down")
            .arg(&down);
        for (path, secret) in sinks {
            cmd.args(["--sink", &format!("{path}={secret}")]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("webhook-receiver.log"))?)
            .spawn()
            .context("run /usr/bin/python3 (scripts/setup installs standardwebhooks)")?;
        let proc = Proc {
            child,
            name: "webhook receiver".into(),
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_port(addr, Duration::from_secs(20))
            .await
            .with_context(|| {
                std::fs::read_to_string(dir.join("webhook-receiver.log")).unwrap_or_default()
            })?;
        Ok(Receiver {
            base: format!("https://127.0.0.1:{port}"),
            ca_pem: ca.pem(),
            out,
            down,
            _proc: proc,
        })
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The verified events received at `path`, in arrival order.
    pub fn events(&self, path: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == path && r["verified"] == true && r["cloudevent"] == true)
            .collect()
    }

    /// Answer `503` to every request to `path` (`Some`), or serve again (`None`).
    pub fn set_down(&self, path: Option<&str>) -> anyhow::Result<()> {
        match path {
            Some(p) => std::fs::write(&self.down, p)?,
            None if self.down.exists() => std::fs::remove_file(&self.down)?,
            None => {}
        }
        Ok(())
    }
}

/// The EventSink and its Secrets: `name` in `namespace`, to `url`, verified against `ca_pem`,
/// with `extra` spec entries (e.g. `types: [delivered]`).
pub fn sink_yaml(
    namespace: &str,
    name: &str,
    url: &str,
    secret: &str,
    ca_pem: &str,
    extra: &str,
) -> String {
    let ca: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!(", {extra}")
    };
    format!(
        "---\napiVersion: baton.dev/v1alpha1\nkind: EventSink\n\
         metadata: {{name: {name}, namespace: {namespace}}}\n\
         spec: {{url: '{url}', secretRef: {{name: {name}-secret}}, \
         caBundleSecretRef: {{name: {name}-ca}}{extra}}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-secret, namespace: {namespace}}}\n\
         stringData: {{secret: '{secret}'}}\n\
         ---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}-ca, namespace: {namespace}}}\n\
         stringData:\n  ca.crt: |\n{ca}"
    )
}

/// A running `baton webhooks`.
pub struct Webhooks {
    /// Metrics endpoint.
    pub metrics: SocketAddr,
    /// The process.
    pub proc: Proc,
    /// Log file.
    pub log: PathBuf,
}

impl Webhooks {
    /// Start a dispatcher against `url` with `extra` flags (credentials) and wait until ready.
    pub async fn start(url: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<Webhooks> {
        let port = free_port()?;
        let metrics: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = dir.join(format!("webhooks-{port}.log"));
        let child = Command::new(baton_bin()?)
            .env("BATON_KEYRING", keyring_dir())
            .args(["webhooks", "--nats", url])
            .args(["--listen-metrics", &metrics.to_string()])
            // The receivers listen on loopback, which sinks may not reach by default.
            .args(["--sink-allow-network", "127.0.0.0/8"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        let w = Webhooks {
            metrics,
            proc: Proc {
                child,
                name: "webhooks".into(),
            },
            log,
        };
        wait_ready(w.metrics, "webhooks", &w.log).await?;
        Ok(w)
    }
}
