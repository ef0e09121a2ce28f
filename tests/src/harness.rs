//! Processes for system tests. Every child is killed when its handle drops.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Ports handed out by this test process so far (tests run on parallel threads).
static HANDED_OUT: AtomicU32 = AtomicU32::new(0);

/// A free loopback port (TCP and UDP) for a child process to bind.
///
/// Never the kernel's choice (`bind(:0)`): that comes from the ephemeral range, where any
/// outgoing connection can take the port between this check and the child's bind — a
/// flake CI hit once. Ports come from below the ephemeral range instead, each at most once
/// per process, starting at an offset derived from the pid so that test binaries differ.
pub fn free_port() -> anyhow::Result<u16> {
    const LOW: u32 = 10_000;
    let high = ephemeral_low().clamp(LOW + 1_000, 65_535);
    let span = high - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let Ok(port) = u16::try_from(LOW + (start + n) % span) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free loopback port below {high}")
}

/// First port of the kernel's ephemeral range (Linux default 32768).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Wait until `cond` is true, polling every 50 ms, failing after `timeout` with `what`.
pub async fn assert_eventually<F, Fut>(
    timeout: Duration,
    what: &str,
    mut cond: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + timeout;
    loop {
        if cond().await {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait for a TCP port to accept connections.
pub async fn wait_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    assert_eventually(
        timeout,
        &format!("{addr} to accept connections"),
        || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await
}

/// Fail with an install hint when `bin` is neither on PATH nor in /usr/sbin.
pub fn require(bin: &str, package: &str) -> anyhow::Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
        || Path::new("/usr/sbin").join(bin).is_file();
    if !found {
        bail!("`{bin}` not found: install the Debian package `{package}` (.ci/run does)");
    }
    Ok(())
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Create a fresh directory under the system temp dir.
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let p =
            std::env::temp_dir().join(format!("{prefix}-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed (SIGKILL) on drop.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// Name for messages.
    pub name: String,
}

impl Proc {
    /// Kill with SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait for exit up to `timeout`; returns whether it exited.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child started as the leader of its own process group (`Command::process_group(0)`),
/// killed with its whole group on drop: what `baton dev` starts (its nats-server) goes with it
/// even when the test ends early.
pub struct ProcGroup(pub Proc);

impl Drop for ProcGroup {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.child.id())])
            .status();
        self.0.kill();
    }
}

/// A JetStream-enabled `nats-server` on loopback with its store in a temp dir.
pub struct Nats {
    /// Client URL.
    pub url: String,
    port: u16,
    store: TempDir,
    proc: Option<Proc>,
    /// Extra server configuration (e.g. a `tls { ... }` block); `None`: flags only.
    extra_config: Option<String>,
    /// Environment of the server process (e.g. the passwords an `authorization` block names).
    env: Vec<(String, String)>,
}

impl Nats {
    /// Start a server.
    pub async fn start() -> anyhow::Result<Nats> {
        require("nats-server", "nats-server")?;
        Nats::start_with(None).await
    }

    /// Start a server whose configuration file also holds `extra` (a `tls { ... }` or
    /// `authorization { ... }` block).
    pub async fn start_with(extra: Option<String>) -> anyhow::Result<Nats> {
        Nats::start_with_env(extra, Vec::new()).await
    }

    /// Like [`Nats::start_with`] with `env` in the server's environment.
    pub async fn start_with_env(
        extra: Option<String>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Nats> {
        require("nats-server", "nats-server")?;
        let mut n = Nats {
            port: free_port()?,
            url: String::new(),
            store: TempDir::new("baton-nats")?,
            proc: None,
            extra_config: extra,
            env,
        };
        n.url = format!("nats://127.0.0.1:{}", n.port);
        n.restart().await?;
        Ok(n)
    }

    /// Stop the server (SIGKILL): JetStream becomes unavailable.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// (Re)start the server on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("nats-server");
        if let Some(extra) = &self.extra_config {
            let file = self.store.0.join("server.conf");
            std::fs::write(&file, extra)?;
            cmd.arg("-c").arg(file);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let child = cmd
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning nats-server")?;
        self.proc = Some(Proc {
            child,
            name: "nats-server".into(),
        });
        wait_port(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(10),
        )
        .await
    }

    /// A JetStream context for assertions.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let c = async_nats::connect(&self.url).await?;
        Ok(async_nats::jetstream::new(c))
    }
}

/// `dnsmasq` answering MX and A records on a loopback UDP/TCP port, nothing else.
pub struct Dns {
    /// Address to pass as `--dns-server`.
    pub addr: SocketAddr,
    _proc: Proc,
}

impl Dns {
    /// Serve `mx` records `(domain, host, preference)` and `a` records `(host, ip)`.
    pub async fn start(mx: &[(&str, &str, u16)], a: &[(&str, &str)]) -> anyhow::Result<Dns> {
        Dns::start_local(mx, a, &[]).await
    }

    /// The common case: `dest.test` has one MX, `mx.dest.test` → 127.0.0.1, and the server is
    /// authoritative for `.test`.
    pub async fn dest_test() -> anyhow::Result<Dns> {
        Dns::start_local(
            &[("dest.test", "mx.dest.test", 10)],
            &[("mx.dest.test", "127.0.0.1")],
            &["test"],
        )
        .await
    }

    /// [`Dns::dest_test`] plus `example.com` (the senders' domain) with its MX on 127.0.0.3, where
    /// a test listens for the DSNs bounced to its senders.
    pub async fn dest_and_bounces() -> anyhow::Result<Dns> {
        Dns::start_local(
            &[
                ("dest.test", "mx.dest.test", 10),
                ("example.com", "mx.example.com", 10),
            ],
            &[
                ("mx.dest.test", "127.0.0.1"),
                ("mx.example.com", "127.0.0.3"),
            ],
            &["test", "example.com"],
        )
        .await
    }

    /// Like [`Dns::start`], and answer authoritatively for the `zones` (e.g. `test`): a name
    /// without the asked type gets NODATA and an unknown name NXDOMAIN, instead of REFUSED
    /// (dnsmasq has no upstream). Needed for "no MX → implicit A" (RFC 5321 §5.1).
    pub async fn start_local(
        mx: &[(&str, &str, u16)],
        a: &[(&str, &str)],
        zones: &[&str],
    ) -> anyhow::Result<Dns> {
        Dns::start_records(mx, a, &[], zones).await
    }

    /// Like [`Dns::start_local`], and serve `txt` records `(name, value)`; a value longer than
    /// 255 bytes is split into several character-strings (RFC 1035 §3.3.14).
    pub async fn start_records(
        mx: &[(&str, &str, u16)],
        a: &[(&str, &str)],
        txt: &[(&str, &str)],
        zones: &[&str],
    ) -> anyhow::Result<Dns> {
        require("dnsmasq", "dnsmasq-base")?;
        let port = free_port()?;
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--user=root",
            "--pid-file",
            &format!("--port={port}"),
            "--log-facility=-",
        ]);
        for z in zones {
            cmd.arg(format!("--local=/{z}/"));
        }
        for (d, h, p) in mx {
            cmd.arg(format!("--mx-host={d},{h},{p}"));
        }
        for (h, ip) in a {
            cmd.arg(format!("--host-record={h},{ip}"));
        }
        for (name, value) in txt {
            // No shell in between: dnsmasq would keep quotes literally, so the
            // character-strings are passed bare, separated by commas.
            if value.contains([',', '"', '\\']) {
                anyhow::bail!(
                    "TXT value for {name} must not contain commas, quotes or backslashes"
                );
            }
            cmd.arg(format!(
                "--txt-record={name},{}",
                crate::dkim::txt_strings(value).join(",")
            ));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning dnsmasq")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let proc = Proc {
            child,
            name: "dnsmasq".into(),
        };
        wait_port(addr, Duration::from_secs(10)).await?;
        Ok(Dns { addr, _proc: proc })
    }
}

/// The keyring every `baton` process of this test run seals and opens the snapshot's secrets
/// with (`BATON_KEYRING`): one directory per test process, created with one key on first use.
pub fn keyring_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("baton-test-keyring-{}", std::process::id()));
        if let Err(e) = baton_seal::ensure_keyring(&dir) {
            panic!("test keyring {}: {e}", dir.display());
        }
        dir
    })
    .clone()
}

/// Path of the `baton` binary built in the same target directory as this test.
pub fn baton_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("BATON_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary location")?;
    let bin = dir.join("baton");
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (`cargo build -p baton`, as the README's test command does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Write YAML config into `dir/name` and return its path.
pub fn write_config(dir: &Path, name: &str, yaml: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, yaml)?;
    Ok(p)
}

/// Run `baton config apply`.
pub fn apply_config(nats: &Nats, path: &Path) -> anyhow::Result<()> {
    apply_config_url(&nats.url, path)
}

/// Run `baton config apply` against `url` (one server, or several separated by commas).
/// `config apply` is the owner of the queue settings outside Kubernetes: it provisions the
/// stream, buckets and lanes that ingress and workers only verify.
pub fn apply_config_url(url: &str, path: &Path) -> anyhow::Result<()> {
    apply_config_with(url, path, &[])
}

/// Like [`apply_config_url`] with extra flags (e.g. `--stream-replicas 3`).
pub fn apply_config_with(url: &str, path: &Path, extra: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(baton_bin()?)
        .env("BATON_KEYRING", keyring_dir())
        .args(["config", "apply", "--nats", url])
        .args(extra)
        .arg(path)
        .output()?;
    if !out.status.success() {
        bail!(
            "baton config apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A running `baton ingress` with its listeners on free loopback ports.
pub struct Ingress {
    /// Relay listener (STARTTLS).
    pub smtp: SocketAddr,
    /// Submission listener.
    pub submission: SocketAddr,
    /// Implicit TLS listener.
    pub smtps: SocketAddr,
    /// Metrics endpoint.
    pub metrics: SocketAddr,
    /// The process.
    pub proc: Proc,
    /// Where its log goes.
    pub log: PathBuf,
}

pub(crate) fn loopback() -> anyhow::Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
}

/// Write a self-signed certificate and key for `localhost` into `dir`.
pub fn write_cert(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])?;
    let (c, k) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&c, ck.cert.pem())?;
    std::fs::write(&k, ck.signing_key.serialize_pem())?;
    Ok((c, k))
}

impl Ingress {
    /// Start an ingress against `nats` with extra flags, and wait until it is ready.
    pub async fn start(nats: &Nats, dir: &Path, extra: &[&str]) -> anyhow::Result<Ingress> {
        Ingress::start_url(&nats.url, dir, extra).await
    }

    /// Like [`Ingress::start`] against `url` (one server, or several separated by commas).
    pub async fn start_url(url: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<Ingress> {
        let ing = Ingress::spawn_url(url, dir, extra)?;
        if let Err(e) = ing.wait_ready(Duration::from_secs(20)).await {
            let mut ing = ing;
            let status = ing.proc.child.try_wait();
            return Err(e.context(format!("ingress exit status: {status:?}")));
        }
        Ok(ing)
    }

    /// Start an ingress against `url` without waiting for it to be ready.
    pub fn spawn_url(url: &str, dir: &Path, extra: &[&str]) -> anyhow::Result<Ingress> {
        let (cert, key) = write_cert(dir)?;
        let (smtp, submission, smtps, metrics) =
            (loopback()?, loopback()?, loopback()?, loopback()?);
        let log = dir.join(format!("ingress-{}.log", smtp.port()));
        let child = Command::new(baton_bin()?)
            .env("BATON_KEYRING", keyring_dir())
            .args(["ingress", "--nats", url, "--hostname", "baton.test"])
            .args([
                "--listen-smtp",
                &smtp.to_string(),
                "--listen-submission",
                &submission.to_string(),
            ])
            .args([
                "--listen-smtps",
                &smtps.to_string(),
                "--listen-metrics",
                &metrics.to_string(),
            ])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Ingress {
            smtp,
            submission,
            smtps,
            metrics,
            proc: Proc {
                child,
                name: "ingress".into(),
            },
            log,
        })
    }

    /// Wait for `/readyz` to answer 200.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let m = self.metrics;
        assert_eventually(timeout, "ingress /readyz", || async move {
            http_get(m, "/readyz")
                .await
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
        })
        .await
        .with_context(|| std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

/// A running `baton worker`.
pub struct Worker {
    /// Metrics endpoint.
    pub metrics: SocketAddr,
    /// The process.
    pub proc: Proc,
    /// Log file.
    pub log: PathBuf,
}

impl Worker {
    /// Start a worker for `pool`, resolving MX through `dns`.
    pub async fn start(
        nats: &Nats,
        dir: &Path,
        pool: &str,
        dns: Option<SocketAddr>,
        extra: &[&str],
    ) -> anyhow::Result<Worker> {
        Worker::start_url(&nats.url, dir, pool, dns, extra).await
    }

    /// Like [`Worker::start`] against `url` (one server, or several separated by commas).
    pub async fn start_url(
        url: &str,
        dir: &Path,
        pool: &str,
        dns: Option<SocketAddr>,
        extra: &[&str],
    ) -> anyhow::Result<Worker> {
        let w = Worker::spawn_url(url, dir, pool, dns, extra)?;
        wait_ready(w.metrics, "worker", &w.log).await?;
        Ok(w)
    }

    /// Start a worker without waiting for it to be ready.
    pub fn spawn_url(
        url: &str,
        dir: &Path,
        pool: &str,
        dns: Option<SocketAddr>,
        extra: &[&str],
    ) -> anyhow::Result<Worker> {
        let metrics = loopback()?;
        let log = dir.join(format!("worker-{}.log", metrics.port()));
        let mut cmd = Command::new(baton_bin()?);
        cmd.env("BATON_KEYRING", keyring_dir());
        cmd.args(["worker", "--nats", url, "--pool", pool]);
        // A fully qualified name unless the scenario gives its own.
        if !extra.contains(&"--hostname") {
            cmd.args(["--hostname", "worker.baton.test"]);
        }
        cmd.args(["--listen-metrics", &metrics.to_string()]);
        if let Some(d) = dns {
            cmd.args(["--dns-server", &d.to_string()]);
        }
        let child = cmd
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()?;
        Ok(Worker {
            metrics,
            proc: Proc {
                child,
                name: "worker".into(),
            },
            log,
        })
    }
}

/// Wait (20 s at most) until the process `what` serving `/readyz` on `metrics` is ready; the
/// error carries its log.
pub async fn wait_ready(metrics: SocketAddr, what: &str, log: &Path) -> anyhow::Result<()> {
    assert_eventually(
        Duration::from_secs(20),
        &format!("{what} /readyz"),
        || async move {
            http_get(metrics, "/readyz")
                .await
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
        },
    )
    .await
    .with_context(|| std::fs::read_to_string(log).unwrap_or_default())
}

/// Minimal HTTP/1.0 GET returning (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Bounded: callers poll inside `assert_eventually`, which cannot time out a poll that
    // never returns (a stopped or wedged process keeps the connection open).
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .with_context(|| format!("GET {path} from {addr}: no answer within 10 s"))??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Value of a metric line (exact name with labels as rendered), 0 when absent.
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let Ok((_, body)) = http_get(addr, "/metrics").await else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
