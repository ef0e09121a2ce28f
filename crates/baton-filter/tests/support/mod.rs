//! Real scanners for the filter tests: a private `rspamd` (normal worker only, no redis, a
//! loopback port), a private `clamd` (a local signature database with the EICAR test
//! signature: ClamAV has no signature download here) and the Python grpcio filter service
//! (`tests/tools/filter_server.py`). Each runs in its own process group in a scratch directory
//! and is stopped (SIGTERM to its group, then waited for) when dropped. Waits are bounded polls
//! on a condition (a ping answered), never fixed sleeps; ports are free ones picked just before
//! the start (a daemon that could not bind is started again on another one).
//!
//! `scripts/setup` installs `rspamd`, `clamav-daemon` and grpcio(-tools); a missing one fails
//! the test with that hint rather than skipping it.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baton_filter::clamd::{ClamdClient, ClamdConfig};
use baton_filter::rspamd::{RspamdClient, RspamdConfig, RspamdPolicy};

/// Where `scripts/setup` installs grpcio and grpcio-tools for the Debian interpreter.
pub const PYTHON_DIR: &str = "/usr/local/lib/baton-python";
/// How long a daemon may take to become ready (rspamd compiles its rules at start: ~10 s on an
/// idle 2-core machine; generous for a loaded CI run).
pub const READY: Duration = Duration::from_secs(180);

/// The EICAR anti-virus test file (not a virus; every scanner detects it by convention).
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// SpamAssassin's GTUBE test string (rspamd rejects it by a built-in rule).
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

/// A message with CRLF line ends.
pub fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: App <app@example.com>\r\nTo: <b@example.org>\r\nSubject: {subject}\r\n\
         Message-ID: <{}@example.com>\r\nDate: Fri, 04 Dec 2026 16:00:00 +0000\r\n\
         X-Internal-Route: cluster-a\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} not found: install {package} (scripts/setup does)"
    );
}

/// A free loopback port (bound and released; the caller starts its server on it at once).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("free port: {e}"))
}

/// A loopback address where nothing listens.
pub fn closed_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls `check` every 50 ms until it is true or `limit` passes; whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A scratch directory, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "baton-filter-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process in its own process group, stopped with SIGTERM to the group when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    fn spawn(mut command: Command, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn spawn_piped(mut command: Command, log: PathBuf) -> Daemon {
        let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        Daemon {
            child: Some(child),
            log,
        }
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// The log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the process group, then wait for the process.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill")
                    .args(["-TERM", "--", &format!("-{}", child.id())])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- rspamd --------------------------------------------------------------------------------

/// A private rspamd: the Debian rules (`/etc/rspamd`), one normal worker on a loopback port,
/// no controller, no redis, DNS pointed at a closed port (no lookups leave the machine), the
/// fuzzy check off, milter headers on for every client, and a test rule `BATON_CONTEXT` that
/// echoes the SMTP context it received as the header `X-Baton-Context`.
pub struct Rspamd {
    pub url: String,
    pub daemon: Daemon,
    dir: Scratch,
}

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

const RSPAMD_LOCAL_LUA: &str = r#"
-- Baton's test rule: echo the SMTP context rspamd received, as a header to add.
rspamd_config:register_symbol({
  name = 'BATON_CONTEXT',
  score = 0.0,
  callback = function(task)
    local from = task:get_from('smtp')
    local rcpts = task:get_recipients('smtp') or {}
    local addrs = {}
    for _, r in ipairs(rcpts) do table.insert(addrs, r.addr) end
    local ip = task:get_from_ip()
    local value = string.format('from=%s rcpt=%s ip=%s user=%s helo=%s host=%s',
      (from and from[1] and from[1].addr) or '-', table.concat(addrs, ','),
      (ip and ip:is_valid() and tostring(ip)) or '-', task:get_user() or '-',
      task:get_helo() or '-', task:get_hostname() or '-')
    task:set_milter_reply({add_headers = {['X-Baton-Context'] = value}})
    return true
  end
})
"#;

impl Rspamd {
    pub async fn start() -> Rspamd {
        require("/usr/bin/rspamd", "the Debian package rspamd");
        let dir = Scratch::new("rspamd");
        let d = dir.path();
        for sub in ["local.d", "db", "run"] {
            std::fs::create_dir_all(d.join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        let write = |name: &str, text: &str| {
            std::fs::write(d.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
        };
        write("local.d/milter_headers.conf", RSPAMD_MILTER);
        write("local.d/fuzzy_check.conf", "enabled = false;\n");
        write("rspamd.local.lua", RSPAMD_LOCAL_LUA);
        let mut last_log = String::new();
        for attempt in 0..3 {
            let port = free_port();
            write(
                "rspamd.conf",
                &RSPAMD_CONF.replace("@PORT@", &port.to_string()),
            );
            let var = |k: &str, v: &Path| format!("{k}={}", v.display());
            let mut command = Command::new("/usr/bin/rspamd");
            command
                .args(["-f", "-i", "-c"])
                .arg(d.join("rspamd.conf"))
                .args(["--var", "CONFDIR=/etc/rspamd"])
                .args(["--var", &var("LOCAL_CONFDIR", d)])
                .args(["--var", &var("DBDIR", &d.join("db"))])
                .args(["--var", &var("RUNDIR", &d.join("run"))])
                .args(["--var", &var("LOGDIR", d)]);
            let mut daemon = Daemon::spawn(command, d.join(format!("rspamd-{attempt}.log")));
            let url = format!("http://127.0.0.1:{port}");
            let client = RspamdClient::new(
                &RspamdConfig {
                    url: url.clone(),
                    settings_id: None,
                    policy: RspamdPolicy::default(),
                },
                Duration::from_secs(2),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let mut gone = false;
            let ready = eventually(READY, || {
                gone = gone || daemon.exited();
                let client = client.clone();
                let gone = gone;
                async move { gone || client.ping().await.is_ok() }
            })
            .await;
            if ready && !daemon.exited() && client.ping().await.is_ok() {
                return Rspamd { url, daemon, dir };
            }
            last_log = daemon.log_text();
            daemon.stop();
        }
        panic!("rspamd did not become ready:\n{last_log}");
    }

    pub fn config(&self, policy: RspamdPolicy) -> RspamdConfig {
        RspamdConfig {
            url: self.url.clone(),
            settings_id: None,
            policy,
        }
    }

    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

// ---- clamd ---------------------------------------------------------------------------------

/// A private clamd: `Foreground yes`, a loopback `TCPSocket`, a 1 MiB `StreamMaxLength`, and
/// a database directory holding only `baton-test.ndb`: the EICAR signature (hex of the EICAR
/// string at any offset of any file type), the way ClamAV's own tests load a local database.
pub struct Clamd {
    pub address: String,
    pub daemon: Daemon,
    dir: Scratch,
}

impl Clamd {
    pub async fn start() -> Clamd {
        require("/usr/sbin/clamd", "the Debian package clamav-daemon");
        let dir = Scratch::new("clamd");
        let d = dir.path();
        let db = d.join("db");
        std::fs::create_dir_all(&db).unwrap_or_else(|e| panic!("{e}"));
        let hex: String = EICAR.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(
            db.join("baton-test.ndb"),
            format!("Baton.Test.EICAR:0:*:{hex}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut last_log = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let conf = d.join("clamd.conf");
            let user = if is_root() { "User root\n" } else { "" };
            std::fs::write(
                &conf,
                format!(
                    "Foreground yes\nDatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\n\
                     LogFile {}\nPidFile {}\nStreamMaxLength 1M\nMaxThreads 4\n{user}",
                    db.display(),
                    d.join(format!("clamd-{attempt}.scan.log")).display(),
                    d.join("clamd.pid").display(),
                ),
            )
            .unwrap_or_else(|e| panic!("{e}"));
            let mut command = Command::new("/usr/sbin/clamd");
            command.arg("-c").arg(&conf);
            let mut daemon = Daemon::spawn(command, d.join(format!("clamd-{attempt}.log")));
            let address = format!("127.0.0.1:{port}");
            let client = ClamdClient::new(ClamdConfig {
                address: address.clone(),
                quarantine: false,
            });
            let mut gone = false;
            let ready = eventually(READY, || {
                gone = gone || daemon.exited();
                let client = client.clone();
                let gone = gone;
                async move { gone || client.ping().await.is_ok() }
            })
            .await;
            if ready && !daemon.exited() && client.ping().await.is_ok() {
                return Clamd {
                    address,
                    daemon,
                    dir,
                };
            }
            last_log = daemon.log_text();
            daemon.stop();
        }
        panic!("clamd did not become ready:\n{last_log}");
    }

    pub fn stop(&mut self) {
        self.daemon.stop();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

// ---- the Python gRPC filter ----------------------------------------------------------------

/// `tests/tools/filter_server.py` under /usr/bin/python3 with grpcio: compiles
/// `proto/baton/v1/filter.proto` with grpcio-tools, listens on a loopback port it lets the
/// kernel choose (port 0) and prints.
pub struct PyFilter {
    pub endpoint: String,
    pub daemon: Daemon,
    dir: Scratch,
}

impl PyFilter {
    pub async fn start() -> PyFilter {
        require("/usr/bin/python3", "python3");
        let dir = Scratch::new("pyfilter");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut command = Command::new("/usr/bin/python3");
        command
            .env("PYTHONPATH", PYTHON_DIR)
            .env("PYTHONUNBUFFERED", "1")
            .arg(root.join("tests/tools/filter_server.py"))
            .arg("--proto-root")
            .arg(root.join("../../proto"))
            .arg("--out")
            .arg(dir.path());
        let mut daemon = Daemon::spawn_piped(command, dir.path().join("server.log"));
        let stdout = daemon
            .child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .unwrap_or_else(|| panic!("no stdout"));
        // The first line is `PORT <n>` once it listens (or nothing if it fails: EOF).
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
        let Some(port) = port else {
            let log = daemon.log_text();
            daemon.stop();
            panic!(
                "filter_server.py did not start (scripts/setup installs grpcio and grpcio-tools \
                 into {PYTHON_DIR}):\n{log}"
            );
        };
        PyFilter {
            endpoint: format!("http://127.0.0.1:{port}"),
            daemon,
            dir,
        }
    }
}

// ---- fake scanners -------------------------------------------------------------------------

/// A listener that accepts connections and never answers (holds them open): calls to it can
/// only end by their timeout. `accepted` counts the connections it took.
pub struct Silent {
    pub address: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Silent {
    pub async fn start() -> Silent {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Silent {
            address,
            accepted,
            task,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---- requests and settings -----------------------------------------------------------------

/// A request with a full SMTP context (two recipients, an authenticated user).
pub fn request(message: Vec<u8>) -> baton_filter::ScanRequest {
    baton_filter::ScanRequest {
        sender: "app@example.com".into(),
        recipients: vec!["b@example.org".into(), "c@example.org".into()],
        client_ip: Some(std::net::IpAddr::from([192, 0, 2, 10])),
        client_hostname: Some("app.example.com".into()),
        helo: Some("app.cluster.local".into()),
        user: Some("app-user".into()),
        relay_domain: "mail/example-com".into(),
        queue_id: "QTEST0001".into(),
        message: message.into(),
    }
}

/// Filter settings.
pub fn settings(
    name: &str,
    timeout: Duration,
    max_concurrent: usize,
    failure_mode: baton_filter::FailureMode,
) -> baton_filter::Settings {
    baton_filter::Settings {
        name: name.into(),
        timeout,
        max_concurrent,
        failure_mode,
    }
}

/// The reply line of a decision (`None` when the message goes on).
pub fn reply_line(decision: &baton_filter::Decision) -> Option<String> {
    decision.verdict.reply().map(|r| r.to_string())
}

/// The value of the first added header `name`.
pub fn added<'a>(verdict: &'a baton_filter::Verdict, name: &str) -> Option<&'a str> {
    match verdict {
        baton_filter::Verdict::Accept { add_headers, .. } => add_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str()),
        _ => None,
    }
}

/// The removed header names of an accepting verdict.
pub fn removed(verdict: &baton_filter::Verdict) -> Vec<String> {
    match verdict {
        baton_filter::Verdict::Accept { remove_headers, .. } => remove_headers.clone(),
        _ => Vec::new(),
    }
}
