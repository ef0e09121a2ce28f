//! Real content scanners for the filtering scenarios (issue 19), as `crates/baton-filter`'s
//! own tests run them: a private `rspamd` (Debian's rules, one normal worker on a loopback
//! port, no redis, DNS pointed at a closed port, milter headers on for local clients too) and
//! a private `clamd` (a local signature database holding only the EICAR test signature: ClamAV
//! has no signature download here, so this is how its own tests load one). Each runs in its
//! own process group in a scratch directory and is stopped with its group when dropped.
//! Readiness is a bounded poll on a ping (rspamd `GET /ping`, clamd `zPING`), never a sleep.
//! [`grpc_filter`] runs the Python grpcio `baton.v1.Filter` service of `crates/baton-filter`'s
//! tests the same way (ready when it prints its port).

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::harness::{Proc, ProcGroup, TempDir, free_port, http_get};

/// How long a scanner may take to become ready (rspamd compiles its rules at start).
pub const READY: Duration = Duration::from_secs(180);

/// The EICAR anti-virus test file (not a virus; every scanner detects it by convention).
pub const EICAR: &str = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// SpamAssassin's GTUBE test string (rspamd rejects it by a built-in rule).
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

const RSPAMD_CONF: &str = r#"
.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }
}
logging {
    type = "console";
    level = "notice";
}
worker "normal" {
    bind_socket = "127.0.0.1:@PORT@";
    count = 1;
    .include "$CONFDIR/worker-normal.inc"
}
"#;

const RSPAMD_MILTER: &str = r#"
use = ["x-spamd-bar", "x-rspamd-queue-id"];
skip_local = false;
skip_authenticated = false;
"#;

/// A running scanner.
pub struct Scanner {
    /// rspamd: `http://127.0.0.1:<port>`; clamd: `127.0.0.1:<port>`.
    pub address: String,
    proc: Option<ProcGroup>,
    /// Its scratch directory (logs).
    pub dir: TempDir,
}

impl Scanner {
    /// Stops it (SIGTERM to its group, then SIGKILL): its port is closed afterwards.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{}", p.0.child.id())])
                .stderr(Stdio::null())
                .status();
            if p.0.terminate(Duration::from_secs(10)) {
                // Exited and reaped: nothing left for the group kill on drop.
                std::mem::forget(p);
            }
        }
    }

    /// The logs so far.
    pub fn logs(&self) -> String {
        std::fs::read_dir(&self.dir.0)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn spawn(mut command: Command, log: &Path, name: &str) -> anyhow::Result<ProcGroup> {
    let out = std::fs::File::create(log)?;
    command
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0);
    let child = command
        .spawn()
        .with_context(|| format!("spawn {command:?}"))?;
    Ok(ProcGroup(Proc {
        child,
        name: name.into(),
    }))
}

async fn ready(mut probe: impl AsyncFnMut() -> bool, proc: &mut ProcGroup) -> bool {
    let until = tokio::time::Instant::now() + READY;
    loop {
        if matches!(proc.0.child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if probe().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a private rspamd (see the module doc).
pub async fn rspamd() -> anyhow::Result<Scanner> {
    if !Path::new("/usr/bin/rspamd").exists() {
        bail!("/usr/bin/rspamd not found: install the Debian package rspamd (scripts/setup does)");
    }
    let dir = TempDir::new("baton-rspamd")?;
    let d = dir.0.clone();
    for sub in ["local.d", "db", "run"] {
        std::fs::create_dir_all(d.join(sub))?;
    }
    std::fs::write(d.join("local.d/milter_headers.conf"), RSPAMD_MILTER)?;
    std::fs::write(d.join("local.d/fuzzy_check.conf"), "enabled = false;\n")?;
    for attempt in 0..3 {
        let port = free_port()?;
        std::fs::write(
            d.join("rspamd.conf"),
            RSPAMD_CONF.replace("@PORT@", &port.to_string()),
        )?;
        let var = |k: &str, v: &Path| format!("{k}={}", v.display());
        let mut command = Command::new("/usr/bin/rspamd");
        command
            .args(["-f", "-i", "-c"])
            .arg(d.join("rspamd.conf"))
            .args(["--var", "CONFDIR=/etc/rspamd"])
            .args(["--var", &var("LOCAL_CONFDIR", &d)])
            .args(["--var", &var("DBDIR", &d.join("db"))])
            .args(["--var", &var("RUNDIR", &d.join("run"))])
            .args(["--var", &var("LOGDIR", &d)]);
        let mut proc = spawn(command, &d.join(format!("rspamd-{attempt}.log")), "rspamd")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if ready(
            async || http_get(addr, "/ping").await.is_ok_and(|(c, _)| c == 200),
            &mut proc,
        )
        .await
        {
            return Ok(Scanner {
                address: format!("http://127.0.0.1:{port}"),
                proc: Some(proc),
                dir,
            });
        }
    }
    let logs = Scanner {
        address: String::new(),
        proc: None,
        dir,
    }
    .logs();
    bail!("rspamd did not become ready:\n{logs}")
}

/// `zPING` answered `PONG` by the clamd at `addr`.
pub async fn clamd_ping(addr: &str) -> bool {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"zPING\0").await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), exchange).await,
        Ok(Ok(b)) if b.starts_with(b"PONG")
    )
}

/// Starts a private clamd (see the module doc).
pub async fn clamd() -> anyhow::Result<Scanner> {
    if !Path::new("/usr/sbin/clamd").exists() {
        bail!(
            "/usr/sbin/clamd not found: install the Debian package clamav-daemon (scripts/setup does)"
        );
    }
    let dir = TempDir::new("baton-clamd")?;
    let d = dir.0.clone();
    let db = d.join("db");
    std::fs::create_dir_all(&db)?;
    let hex: String = EICAR.bytes().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        db.join("baton-test.ndb"),
        format!("Baton.Test.EICAR:0:*:{hex}\n"),
    )?;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    for attempt in 0..3 {
        let port = free_port()?;
        let conf = d.join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "Foreground yes\nDatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n\
                 LogFile {}\nPidFile {}\nStreamMaxLength 1M\nMaxThreads 4\n{}",
                db.display(),
                d.join(format!("clamd-{attempt}.scan.log")).display(),
                d.join("clamd.pid").display(),
                if root { "User root\n" } else { "" },
            ),
        )?;
        let mut command = Command::new("/usr/sbin/clamd");
        command.arg("-c").arg(&conf);
        let mut proc = spawn(command, &d.join(format!("clamd-{attempt}.log")), "clamd")?;
        let address = format!("127.0.0.1:{port}");
        let a = address.clone();
        if ready(async || clamd_ping(&a).await, &mut proc).await {
            return Ok(Scanner {
                address,
                proc: Some(proc),
                dir,
            });
        }
    }
    let logs = Scanner {
        address: String::new(),
        proc: None,
        dir,
    }
    .logs();
    bail!("clamd did not become ready:\n{logs}")
}

/// Where `scripts/setup` installs grpcio and grpcio-tools for the Debian interpreter.
pub const PYTHON_DIR: &str = "/usr/local/lib/baton-python";

/// Starts the Python `baton.v1.Filter` service that `crates/baton-filter`'s own tests run
/// (`crates/baton-filter/tests/tools/filter_server.py`, grpcio): it compiles
/// `proto/baton/v1/filter.proto` with grpcio-tools into its scratch directory at start, binds a
/// loopback port itself (port 0: no window between choosing the port and binding it) and prints
/// `PORT <n>` once it serves; readiness is that line (bounded by [`READY`]). Its verdicts are
/// chosen by markers in the message (`BATON-TEST-REJECT`, `BATON-TEST-TEMPFAIL`,
/// `BATON-TEST-QUARANTINE`, …); anything else is accepted with `X-Filter-Checked` (an echo of
/// the request's context) added and `X-Internal-Route` removed. The address is
/// `http://127.0.0.1:<port>`; [`Scanner::stop`] stops it (its port is closed afterwards).
pub async fn grpc_filter() -> anyhow::Result<Scanner> {
    use std::io::BufRead as _;
    if !Path::new("/usr/bin/python3").exists() {
        bail!("/usr/bin/python3 not found: install python3 (scripts/setup does)");
    }
    let dir = TempDir::new("baton-grpc-filter")?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new("/usr/bin/python3");
    command
        .env("PYTHONPATH", PYTHON_DIR)
        .env("PYTHONUNBUFFERED", "1")
        .arg(root.join("crates/baton-filter/tests/tools/filter_server.py"))
        .arg("--proto-root")
        .arg(root.join("proto"))
        .arg("--out")
        .arg(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.0.join("filter.log"))?)
        .process_group(0);
    let child = command
        .spawn()
        .with_context(|| format!("spawn {command:?}"))?;
    let mut proc = ProcGroup(Proc {
        child,
        name: "filter_server.py".into(),
    });
    let stdout = proc.0.child.stdout.take().context("no stdout")?;
    // The first line is `PORT <n>` once it serves (EOF if it fails to start).
    let line = tokio::time::timeout(
        READY,
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            line
        }),
    )
    .await;
    let port = match line {
        Ok(Ok(line)) => line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse::<u16>().ok()),
        _ => None,
    };
    let mut scanner = Scanner {
        address: String::new(),
        proc: Some(proc),
        dir,
    };
    let Some(port) = port else {
        scanner.stop();
        bail!(
            "filter_server.py did not start (scripts/setup installs grpcio and grpcio-tools into \
             {PYTHON_DIR}):\n{}",
            scanner.logs()
        );
    };
    scanner.address = format!("http://127.0.0.1:{port}");
    Ok(scanner)
}
