//! A TLS smarthost that is not Baton: `tests/tools/tls_smarthost.py`, aiosmtpd (Debian
//! `python3-aiosmtpd`) on Python's ssl module. It serves STARTTLS or implicit TLS, requires
//! AUTH, and records every AUTH attempt (before answering it) and every accepted message, so a
//! test can prove that credentials were never offered to a server that failed verification.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::harness::{Proc, free_port};

/// The Debian interpreter: python3-aiosmtpd lives in its dist-packages.
const PYTHON: &str = "/usr/bin/python3";

/// How the smarthost offers TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsStart {
    /// STARTTLS after EHLO (ports 25/587).
    StartTls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
}

/// One running smarthost.
pub struct TlsSmarthost {
    /// Its loopback port.
    pub port: u16,
    out: PathBuf,
    _proc: Proc,
}

/// A message the smarthost accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Accepted {
    /// Reverse path.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// The login that authenticated the session ("" when none).
    pub login: String,
    /// Whether the session was encrypted.
    pub tls: bool,
    /// The message as received.
    pub content: String,
}

impl TlsSmarthost {
    /// Start it in `dir` with the PEM certificate chain and key, requiring `user`/`password`.
    pub fn start(
        dir: &Path,
        name: &str,
        cert_pem: &str,
        key_pem: &str,
        start: TlsStart,
        user: &str,
        password: &str,
    ) -> anyhow::Result<TlsSmarthost> {
        crate::harness::require(PYTHON, "python3")?;
        let probe = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .status()
            .context("run python3")?;
        if !probe.success() {
            bail!("python3-aiosmtpd is not installed (scripts/setup installs it)");
        }
        let out = dir.join(name);
        std::fs::create_dir_all(&out)?;
        let (cert, key) = (out.join("cert.pem"), out.join("key.pem"));
        std::fs::write(&cert, cert_pem)?;
        std::fs::write(&key, key_pem)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/tls_smarthost.py");
        let port = free_port()?;
        let mut cmd = Command::new(PYTHON);
        cmd.arg(&script)
            .args(["--port", &port.to_string()])
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--user", user, "--password", password])
            .arg("--out")
            .arg(&out);
        if start == TlsStart::Implicit {
            cmd.arg("--implicit");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(out.join("stderr.log"))?)
            .spawn()
            .context("start tls_smarthost.py")?;
        let stdout = child.stdout.take().context("smarthost stdout")?;
        let proc = Proc {
            child,
            name: format!("smarthost {name}"),
        };
        // `ready` is printed once listening; EOF means it died (the log says why).
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if line.trim() != "ready" {
            let log = std::fs::read_to_string(out.join("stderr.log")).unwrap_or_default();
            bail!("smarthost {name} did not start: {log}");
        }
        Ok(TlsSmarthost {
            port,
            out,
            _proc: proc,
        })
    }

    /// Every AUTH attempt so far, `<mechanism> <login> ok|fail`.
    pub fn auth_attempts(&self) -> Vec<String> {
        std::fs::read_to_string(self.out.join("auth.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every message accepted so far, in order.
    pub fn messages(&self) -> anyhow::Result<Vec<Accepted>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.out)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("msg-") && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?))
            .collect()
    }

    /// Wait until at least `n` messages arrived.
    pub async fn wait_messages(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Accepted>> {
        crate::harness::assert_eventually(
            timeout,
            &format!("{n} message(s) at the smarthost"),
            || async { self.messages().map(|m| m.len() >= n).unwrap_or(false) },
        )
        .await?;
        self.messages()
    }
}
