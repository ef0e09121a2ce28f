//! Cluster-scale fixtures for the fault-injection scenarios (`tests/cluster_*.rs`, issue 7): a
//! 3-node `nats-server` JetStream cluster on loopback whose nodes can be killed with SIGKILL and
//! restarted, a [`Bed`] that runs Baton on it the way production does (stream replicas 3, several
//! ingress processes, several workers of one pool, `dnsmasq` for MX records), a load client
//! that resends on `4xx` and counts every reply per session, and receipt bookkeeping that
//! matches what receivers got to what was accepted (by the unique `Subject` of each message).
//!
//! Health is read, never assumed: the meta leader from each live node's `/jsz` monitoring
//! endpoint, stream replicas from `$JS.API.STREAM.INFO` (leader plus every peer `current`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::delivery::{JSON_LOG, Submission, header};
use crate::harness::{
    Dns, Ingress, Proc, TempDir, Worker, apply_config_with, assert_eventually, free_port, http_get,
    wait_port, write_config,
};
use crate::receiver::ReceivedMessage;
use crate::smtp::Talk;

/// The queue stream's name (as in `baton-queue`).
pub const STREAM: &str = "BATON_QUEUE";

/// `BATON_FULL=1` selects the full (documented) version of a scenario instead of the CI one.
pub fn full() -> bool {
    std::env::var("BATON_FULL").is_ok_and(|v| v == "1")
}

/// One `nats-server` of a [`NatsCluster`].
pub struct NatsNode {
    /// `server_name`, e.g. `n1`.
    pub name: String,
    /// Client port on 127.0.0.1.
    pub client_port: u16,
    /// Monitoring (`/jsz`) port.
    pub monitor_port: u16,
    conf: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
}

impl NatsNode {
    /// `nats://127.0.0.1:<client port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// Whether the process is running (not killed by the test).
    pub fn is_up(&self) -> bool {
        self.proc.is_some()
    }

    fn monitor(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }
}

/// A JetStream cluster of `nats-server` processes on loopback, each with its own config file
/// (`cluster { name, listen, routes }`, `jetstream { store_dir }`) and store; dropped = killed.
pub struct NatsCluster {
    /// The nodes, in start order.
    pub nodes: Vec<NatsNode>,
    dir: TempDir,
}

impl NatsCluster {
    /// Start `n` nodes routed to each other and wait until they elected a meta leader.
    pub async fn start(n: usize) -> anyhow::Result<NatsCluster> {
        let dir = TempDir::new("baton-cluster")?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let routes = ports
            .iter()
            .map(|(_, r, _)| format!("nats-route://127.0.0.1:{r}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::new();
        for (i, (client, route, monitor)) in ports.iter().enumerate() {
            let name = format!("n{}", i + 1);
            let store = dir.0.join(format!("store-{name}"));
            let conf = dir.0.join(format!("{name}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: {name}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{ store_dir: \"{}\" }}\n\
                     cluster {{ name: baton, listen: 127.0.0.1:{route}, routes: [{routes}] }}\n",
                    store.display()
                ),
            )?;
            nodes.push(NatsNode {
                log: dir.0.join(format!("{name}.log")),
                name,
                client_port: *client,
                monitor_port: *monitor,
                conf,
                proc: None,
            });
        }
        let mut c = NatsCluster { nodes, dir };
        for i in 0..n {
            c.spawn(i)?;
        }
        for node in &c.nodes {
            wait_port(
                SocketAddr::from(([127, 0, 0, 1], node.client_port)),
                Duration::from_secs(10),
            )
            .await?;
        }
        c.wait_meta_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &mut self.nodes[i];
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&node.conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&node.log)?)
            .spawn()
            .context("spawning nats-server (Debian package nats-server)")?;
        node.proc = Some(Proc {
            child,
            name: node.name.clone(),
        });
        Ok(())
    }

    /// Every node's client URL, comma-separated (what `--nats` gets).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsNode::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The scratch directory (node configs and logs).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir.0
    }

    /// Index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// SIGKILL node `i` (its store stays for the restart).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill();
        }
    }

    /// Start node `i` again on the same ports and store, and wait until it accepts clients.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)?;
        wait_port(
            SocketAddr::from(([127, 0, 0, 1], self.nodes[i].client_port)),
            Duration::from_secs(10),
        )
        .await
    }

    /// The meta leader, if every live node's `/jsz` names the same one.
    pub async fn meta_leader(&self) -> Option<String> {
        let mut leader: Option<String> = None;
        for node in self.nodes.iter().filter(|n| n.is_up()) {
            let (code, body) = http_get(node.monitor(), "/jsz").await.ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            let l = v["meta_cluster"]["leader"].as_str().unwrap_or_default();
            if code != 200 || l.is_empty() || leader.as_deref().is_some_and(|x| x != l) {
                return None;
            }
            leader = Some(l.to_owned());
        }
        leader
    }

    /// Wait until the live nodes agree on a meta leader.
    pub async fn wait_meta_leader(&self, timeout: Duration) -> anyhow::Result<String> {
        assert_eventually(timeout, "a JetStream meta leader", || async {
            self.meta_leader().await.is_some()
        })
        .await?;
        self.meta_leader().await.context("meta leader lost")
    }

    /// A client connected to any live node (it follows the cluster on reconnect).
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.is_up())
            .map(NatsNode::url)
            .collect();
        Ok(async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(Duration::from_secs(2)))
            .connect(urls)
            .await?)
    }

    /// A JetStream context on [`NatsCluster::client`].
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(self.client().await?))
    }

    /// `stream`'s leader and `(peer, current)` for every other replica, from the stream info.
    pub async fn stream_peers(
        js: &async_nats::jetstream::Context,
        stream: &str,
    ) -> Option<(String, Vec<(String, bool)>)> {
        let mut s = js.get_stream(stream).await.ok()?;
        let info = s.info().await.ok()?;
        let cluster = info.cluster.clone()?;
        let peers = cluster
            .replicas
            .iter()
            .map(|p| (p.name.clone(), p.current && !p.offline))
            .collect();
        Some((cluster.leader.filter(|l| !l.is_empty())?, peers))
    }

    /// Wait until `stream` has a leader and `replicas - 1` other peers, all current.
    pub async fn wait_stream_current(
        &self,
        stream: &str,
        replicas: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let js = self.jetstream().await?;
        let what = format!("stream {stream} with {replicas} current replicas");
        assert_eventually(timeout, &what, || async {
            match NatsCluster::stream_peers(&js, stream).await {
                Some((_, peers)) => {
                    peers.len() + 1 == replicas && peers.iter().all(|(_, current)| *current)
                }
                None => false,
            }
        })
        .await
    }

    /// Messages left in the queue stream (`None` while it cannot answer).
    pub async fn queued(js: &async_nats::jetstream::Context) -> Option<u64> {
        let mut s = js.get_stream(STREAM).await.ok()?;
        s.info().await.ok().map(|i| i.state.messages)
    }
}

/// What a [`Bed`] runs.
#[derive(Debug, Clone)]
pub struct BedSpec {
    /// Scratch dir prefix.
    pub name: String,
    /// Config YAML (see [`crate::config`]), applied before anything starts.
    pub yaml: String,
    /// Ingress processes.
    pub ingresses: usize,
    /// Workers of pool `test`.
    pub workers: usize,
    /// Extra ingress flags.
    pub ingress_flags: Vec<String>,
    /// Extra worker flags (JSON logs are always on).
    pub worker_flags: Vec<String>,
}

impl BedSpec {
    /// `ingresses` ingress processes and `workers` workers on `yaml`, default flags.
    pub fn new(name: &str, yaml: String, ingresses: usize, workers: usize) -> BedSpec {
        BedSpec {
            name: name.into(),
            yaml,
            ingresses,
            workers,
            ingress_flags: Vec::new(),
            worker_flags: Vec::new(),
        }
    }
}

/// Baton on a 3-node cluster with stream replicas 3: ingresses, workers of pool `test`, and
/// `dnsmasq` answering `dest.test MX mx.dest.test` → 127.0.0.1. Fields drop in order, so
/// Baton processes stop before the cluster.
pub struct Bed {
    /// Workers (a killed one is replaced in place by [`Bed::restart_worker`]).
    pub workers: Vec<Worker>,
    /// Ingress processes.
    pub ingresses: Vec<Ingress>,
    /// Logs of every worker that ever ran here (killed ones included).
    pub worker_logs: Vec<PathBuf>,
    /// DNS for MX lookups.
    pub dns: Dns,
    /// The NATS cluster.
    pub cluster: NatsCluster,
    spec: BedSpec,
    dir: TempDir,
}

impl Bed {
    /// Start the cluster, apply the config with `--stream-replicas 3` (the owner provisions
    /// the queue stream, both buckets and the lanes with 3 replicas and records that), wait
    /// until every replica is current, then start the ingresses and workers — with no replica
    /// flags: they only verify what the owner provisioned.
    pub async fn start(spec: BedSpec) -> anyhow::Result<Bed> {
        crate::tls::install_crypto_provider();
        let dir = TempDir::new(&spec.name)?;
        let cluster = NatsCluster::start(3).await?;
        let dns = Dns::dest_test().await?;
        apply_config_with(
            &cluster.urls(),
            &write_config(&dir.0, "c.yaml", &spec.yaml)?,
            &["--stream-replicas", "3"],
        )?;
        for name in [STREAM, "KV_baton-config", "OBJ_baton-bodies-test"] {
            cluster
                .wait_stream_current(name, 3, Duration::from_secs(30))
                .await?;
        }
        let mut bed = Bed {
            workers: Vec::new(),
            ingresses: Vec::new(),
            worker_logs: Vec::new(),
            dns,
            cluster,
            spec,
            dir,
        };
        for _ in 0..bed.spec.ingresses {
            let mut flags = vec!["--publish-timeout", "2s"];
            flags.extend(bed.spec.ingress_flags.iter().map(String::as_str));
            let ing = Ingress::start_url(&bed.cluster.urls(), &bed.dir.0, &flags).await?;
            bed.ingresses.push(ing);
        }
        for _ in 0..bed.spec.workers {
            let w = bed.start_worker().await?;
            bed.workers.push(w);
        }
        Ok(bed)
    }

    /// Start one more worker of pool `test` (not added to [`Bed::workers`]).
    pub async fn start_worker(&mut self) -> anyhow::Result<Worker> {
        let mut flags: Vec<&str> = JSON_LOG.to_vec();
        flags.extend(self.spec.worker_flags.iter().map(String::as_str));
        let w = Worker::start_url(
            &self.cluster.urls(),
            &self.dir.0,
            "test",
            Some(self.dns.addr),
            &flags,
        )
        .await?;
        self.worker_logs.push(w.log.clone());
        Ok(w)
    }

    /// SIGKILL worker `i`, start a replacement and wait until it is ready.
    pub async fn restart_worker(&mut self, i: usize) -> anyhow::Result<()> {
        self.workers[i].proc.kill();
        let w = self.start_worker().await?;
        self.workers[i] = w;
        Ok(())
    }

    /// Relay listeners of every ingress.
    pub fn smtp_addrs(&self) -> Vec<SocketAddr> {
        self.ingresses.iter().map(|i| i.smtp).collect()
    }

    /// Every per-recipient outcome logged by any worker so far.
    pub fn outcomes(&self) -> Vec<crate::delivery::Outcome> {
        let logs: Vec<&std::path::Path> = self.worker_logs.iter().map(PathBuf::as_path).collect();
        crate::delivery::all_outcomes(&logs)
    }

    /// Wait until every subject in `accepted` is among `received()` and the queue stream is
    /// empty (WorkQueue retention: every message acknowledged, so late duplicates are in).
    pub async fn wait_drained<F>(
        &self,
        accepted: &BTreeSet<String>,
        received: F,
        timeout: Duration,
    ) -> anyhow::Result<()>
    where
        F: Fn() -> Vec<ReceivedMessage>,
    {
        let js = self.cluster.jetstream().await?;
        let res = assert_eventually(
            timeout,
            "every accepted message delivered and the queue empty",
            || {
                let got = subject_counts(&received());
                let all = accepted.iter().all(|s| got.contains_key(s));
                let js = js.clone();
                async move { all && NatsCluster::queued(&js).await == Some(0) }
            },
        )
        .await;
        if let Err(e) = res {
            let got = subject_counts(&received());
            let missing: Vec<&String> = accepted.iter().filter(|s| !got.contains_key(*s)).collect();
            let queued = NatsCluster::queued(&js).await;
            bail!(
                "{e}: {} missing {:?}, {queued:?} still queued; {}",
                missing.len(),
                &missing[..missing.len().min(20)],
                consumer_report(&js).await
            );
        }
        Ok(())
    }
}

/// One line per lane consumer of the queue stream (pending, ack pending, redelivered, floors),
/// for failure messages.
pub async fn consumer_report(js: &async_nats::jetstream::Context) -> String {
    use futures::StreamExt as _;
    let Ok(mut stream) = js.get_stream(STREAM).await else {
        return "stream unavailable".into();
    };
    let state = stream.info().await.map(|i| i.state.clone()).ok();
    let mut out = format!("stream state {state:?}");
    let mut names = stream.consumer_names();
    while let Some(Ok(name)) = names.next().await {
        let Ok(mut c) = stream
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&name)
            .await
        else {
            continue;
        };
        if let Ok(i) = c.info().await {
            out.push_str(&format!(
                "; {name}: pending {} ack_pending {} redelivered {} waiting {} delivered {} \
                 ack_floor {} leader {:?}",
                i.num_pending,
                i.num_ack_pending,
                i.num_redelivered,
                i.num_waiting,
                i.delivered.stream_sequence,
                i.ack_floor.stream_sequence,
                i.cluster.as_ref().and_then(|c| c.leader.clone())
            ));
        }
    }
    out
}

/// How many times each `Subject` was received.
pub fn subject_counts(messages: &[ReceivedMessage]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for msg in messages {
        *m.entry(header(&msg.body, "Subject").unwrap_or_default())
            .or_insert(0) += 1;
    }
    m
}

/// Deliveries beyond the first of each subject.
pub fn duplicates(counts: &BTreeMap<String, usize>) -> usize {
    counts.values().map(|n| n.saturating_sub(1)).sum()
}

/// What one client session saw.
#[derive(Debug, Default, Clone)]
pub struct ClientTally {
    /// Count per reply code that ended an attempt (250, 451, 421, ...), greetings included.
    pub replies: BTreeMap<u16, usize>,
    /// Attempts that ended without a reply (connection refused, closed, timed out).
    pub io_errors: usize,
    /// Subjects answered 250.
    pub accepted: Vec<String>,
    /// Subjects given up on after the last attempt.
    pub abandoned: Vec<String>,
}

/// A load: `count` messages with subjects `<prefix>-<i>` to `to`, spread over `sessions`
/// sessions; each session rotates through `targets` and resends a message on any `4xx` or
/// connection trouble, up to `max_attempts` times.
#[derive(Debug, Clone)]
pub struct Load {
    /// Subject prefix.
    pub prefix: String,
    /// Messages.
    pub count: usize,
    /// Parallel sessions.
    pub sessions: usize,
    /// Ingress relay listeners.
    pub targets: Vec<SocketAddr>,
    /// Attempts per message.
    pub max_attempts: usize,
    /// Recipient (`{i}` is replaced by the message number).
    pub to: String,
}

impl Load {
    /// `count` messages to `user@dest.test` over `sessions` sessions, 120 attempts each
    /// (about two minutes of resending).
    pub fn new(prefix: &str, count: usize, sessions: usize, targets: Vec<SocketAddr>) -> Load {
        Load {
            prefix: prefix.into(),
            count,
            sessions,
            targets,
            max_attempts: 120,
            to: "user@dest.test".into(),
        }
    }

    /// Subject of message `i`.
    pub fn subject(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }

    /// Run every session to completion; one tally per session.
    pub async fn run(&self) -> anyhow::Result<Vec<ClientTally>> {
        let tasks: Vec<_> = (0..self.sessions)
            .map(|s| {
                let load = self.clone();
                tokio::spawn(async move { load.session(s).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await?);
        }
        Ok(out)
    }

    async fn session(&self, s: usize) -> ClientTally {
        let mut tally = ClientTally::default();
        let mut conn: Option<Talk> = None;
        let mut turn = s;
        for i in (s..self.count).step_by(self.sessions.max(1)) {
            let subject = self.subject(i);
            let to = self.to.replace("{i}", &i.to_string());
            let m = Submission {
                from: "app@example.com",
                rcpts: vec![(to.as_str(), "")],
                subject: &subject,
                ..Default::default()
            };
            let mut done = false;
            for attempt in 0..self.max_attempts {
                let outcome = match conn.as_mut() {
                    Some(t) => transaction(t, &m).await,
                    None => {
                        let target = self.targets[turn % self.targets.len()];
                        match Talk::connect(target).await {
                            Ok((t, g)) if g.code == 220 => {
                                let t = conn.insert(t);
                                transaction(t, &m).await
                            }
                            Ok((_, g)) => Ok(g.code),
                            Err(e) => Err(e),
                        }
                    }
                };
                match outcome {
                    Ok(code) => *tally.replies.entry(code).or_insert(0) += 1,
                    Err(_) => tally.io_errors += 1,
                }
                if matches!(outcome, Ok(250)) {
                    tally.accepted.push(subject.clone());
                    done = true;
                    break;
                }
                // Anything else: drop the session, resend through the next ingress after a
                // pause doubling from 100 ms to 1 s (an MTA's queue, minus the minutes).
                conn = None;
                turn += 1;
                let pause = 100u64 << attempt.min(4);
                tokio::time::sleep(Duration::from_millis(pause.min(1000))).await;
            }
            if !done {
                tally.abandoned.push(subject);
            }
        }
        if let Some(mut t) = conn {
            let _ = t.cmd("QUIT").await;
        }
        tally
    }
}

/// One transaction on an open session: the code of the first reply that is not the expected
/// one, or of the reply to the end of data.
pub async fn transaction(t: &mut Talk, m: &Submission<'_>) -> anyhow::Result<u16> {
    let mut steps = vec![
        ("EHLO client.test".to_string(), 250),
        (format!("MAIL FROM:<{}>", m.from), 250),
    ];
    steps.extend(m.rcpts.iter().map(|(r, _)| (format!("RCPT TO:<{r}>"), 250)));
    steps.push(("DATA".into(), 354));
    for (cmd, want) in steps {
        let r = t.cmd(&cmd).await?;
        if r.code != want {
            return Ok(r.code);
        }
    }
    t.send(m.content().as_bytes()).await?;
    Ok(t.cmd(".").await?.code)
}

/// Sum of the tallies: (replies per code, I/O errors, accepted subjects, abandoned subjects).
pub fn merge(tallies: &[ClientTally]) -> (BTreeMap<u16, usize>, usize, BTreeSet<String>, usize) {
    let mut replies = BTreeMap::new();
    let mut accepted = BTreeSet::new();
    let (mut io, mut abandoned) = (0, 0);
    for t in tallies {
        for (c, n) in &t.replies {
            *replies.entry(*c).or_insert(0) += n;
        }
        io += t.io_errors;
        abandoned += t.abandoned.len();
        accepted.extend(t.accepted.iter().cloned());
    }
    (replies, io, accepted, abandoned)
}
