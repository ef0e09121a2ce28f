//! End-to-end against a real Kubernetes cluster. `#[ignore]`d, so a plain `cargo test` reports
//! it as *ignored* (never as passed); run it with
//! `cargo test -p baton-system-tests --test system e2e_kubernetes:: -- --ignored`, which fails
//! with a clear message when `KUBECONFIG` is not set. It installs `charts/baton` with helm (image from `BATON_E2E_IMAGE`),
//! applies `manifests/examples/`, waits on conditions with `kubectl wait` (never sleeps), sends
//! one mail through the ingress Service (via `kubectl port-forward`) and sees it delivered to an
//! in-cluster SMTP sink (Mailpit, read back through the API server's service proxy), DKIM-signed
//! with the key the operator generated, and counted by the pool's worker.
//!
//! Environment:
//! - `KUBECONFIG` (required to run), `BATON_E2E_IMAGE` (required then: `repo:tag` or
//!   `repo@sha256:...`, pullable by the cluster, e.g. loaded with `kind load docker-image`).
//! - `BATON_E2E_NAMESPACE` (default `baton-e2e`), `BATON_E2E_NATS_URL` (use an existing NATS
//!   instead of the chart's NATS dependency, which `helm dependency build` then fetches),
//!   `BATON_E2E_SINK_IMAGE` (default `axllent/mailpit:latest`), `BATON_E2E_KEEP=1` (leave
//!   everything installed), `BATON_E2E_HELM_ARGS` (extra `helm install` arguments).
//!
//! Needs `kubectl` ≥ 1.31 (`kubectl wait --for=create`) and helm (scripts/install-helm).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use baton_system_tests::harness::{TempDir, assert_eventually, write_cert};
use baton_system_tests::smtp::{Reply, Talk};

const RELEASE: &str = "baton-e2e";
const POOL: &str = "e2e";
const DOMAIN: &str = "e2e.baton.test";
const SINK: &str = "e2e-sink";
const WAIT: &str = "--timeout=300s";

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: set KUBECONFIG and BATON_E2E_IMAGE, run with --ignored"]
async fn chart_installs_and_a_mail_is_delivered_through_the_ingress_service() -> anyhow::Result<()>
{
    std::env::var_os("KUBECONFIG").context(
        "KUBECONFIG is not set: this test installs the Helm chart into a real cluster; set \
         KUBECONFIG and BATON_E2E_IMAGE (see the file header)",
    )?;
    let image = std::env::var("BATON_E2E_IMAGE")
        .context("KUBECONFIG is set but BATON_E2E_IMAGE is not: the image to install (repo:tag)")?;
    let cluster = Cluster::new()?;
    let result = run(&cluster, &image).await;
    if result.is_err() {
        cluster.diagnostics();
    }
    result
}

async fn run(k: &Cluster, image: &str) -> anyhow::Result<()> {
    k.preflight()?;
    let dir = TempDir::new("baton-e2e")?;
    install(k, image, &dir.0)?;
    examples_reconcile(k)?;
    deploy_e2e_pool(k)?;
    deliver_one(k).await
}

/// Namespaces, the ingress TLS Secret, the sink, the chart; waits for the operator.
fn install(k: &Cluster, image: &str, dir: &Path) -> anyhow::Result<()> {
    for ns in [k.ns.as_str(), "team-a", "baton-system"] {
        k.ensure_namespace(ns)?;
    }
    let (cert, key) = write_cert(dir)?;
    let (cert, key) = (path(&cert)?, path(&key)?);
    k.apply_stdout(&[
        "create",
        "secret",
        "tls",
        "baton-e2e-tls",
        "--cert",
        cert,
        "--key",
        key,
    ])?;
    k.apply(&sink_manifest())?;
    helm_install(k, image, dir)?;
    k.wait(&k.ns, "deploy/baton-e2e-operator", "condition=Available")?;
    k.wait(&k.ns, &format!("deploy/{SINK}"), "condition=Available")
}

/// The examples are accepted by the CRDs' schema and CEL rules, and reconciled.
fn examples_reconcile(k: &Cluster) -> anyhow::Result<()> {
    let examples = repo().join("manifests/examples");
    for f in [
        "sending-pool-direct.yaml",
        "sending-pool-smarthost.yaml",
        "relay-domain.yaml",
    ] {
        // No --namespace: the examples name their own (team-a, baton-system).
        command("kubectl", &["apply", "-f", path(&examples.join(f))?])?;
    }
    for cond in ["Ready", "DkimKeyReady", "PoolFound"] {
        k.wait(
            "team-a",
            "relaydomain/example-com",
            &format!("condition={cond}"),
        )?;
    }
    let jsonpath = "jsonpath={.status.dnsRecords}";
    let records = k.kubectl_in(
        "team-a",
        &["get", "relaydomain/example-com", "-o", jsonpath],
    )?;
    ensure!(
        records.contains("_domainkey"),
        "no DKIM record in status: {records}"
    );
    Ok(())
}

/// A pool relaying to the in-cluster sink, and a domain whose DKIM key the operator generates.
fn deploy_e2e_pool(k: &Cluster) -> anyhow::Result<()> {
    k.apply(&e2e_resources(&k.ns))?;
    k.wait(&k.ns, &format!("relaydomain/{POOL}"), "condition=Ready")?;
    k.kubectl(&["get", "secret", "e2e-dkim", "-o", "name"])
        .context("the operator did not generate the DKIM key Secret")?;
    let worker = format!("deploy/baton-worker-{POOL}");
    k.wait(&k.ns, &worker, "create")?;
    k.wait(&k.ns, &worker, "condition=Available")?;
    k.wait(&k.ns, "deploy/baton-e2e-ingress", "condition=Available")
}

/// One mail through the ingress Service: accepted, in the sink, DKIM-signed, counted.
async fn deliver_one(k: &Cluster) -> anyhow::Result<()> {
    let token = format!("e2e-{}", std::process::id());
    let forward = PortForward::start(&k.ns, &format!("svc/{RELEASE}"), 25)?;
    send_until_accepted(forward.addr, &token).await?;
    let id = wait_delivered(k, &token).await?;
    let headers = k.raw(&format!(
        "{}/api/v1/message/{id}/headers",
        sink_proxy(&k.ns)
    ))?;
    ensure!(
        headers.to_ascii_lowercase().contains("\"dkim-signature\"")
            && headers.contains(&format!("d={DOMAIN}")),
        "delivered mail is not DKIM-signed for {DOMAIN}: {headers}"
    );
    let delivered = worker_metric(
        k,
        "baton_delivery_recipients_total",
        "outcome=\"delivered\"",
    )?;
    ensure!(
        delivered >= 1.0,
        "worker counted {delivered} delivered recipients"
    );
    eprintln!("e2e_kubernetes: mail {token} delivered (sink id {id}), DKIM-signed, counted");
    Ok(())
}

/// `helm install` of the chart (a copy, so `helm dependency build` leaves the tree alone).
fn helm_install(k: &Cluster, image: &str, dir: &Path) -> anyhow::Result<()> {
    let chart = dir.join("baton");
    copy_dir(&repo().join("charts/baton"), &chart)?;
    let (repository, tag_or_digest) = split_image(image)?;
    let mut args: Vec<String> = vec![
        "upgrade".into(),
        "--install".into(),
        RELEASE.into(),
        path(&chart)?.into(),
        "--namespace".into(),
        k.ns.clone(),
        "--set".into(),
        format!("image.repository={repository}"),
        "--set".into(),
        tag_or_digest,
        "--set".into(),
        "ingress.replicas=1".into(),
        "--set".into(),
        "ingress.hostname=baton-e2e.local".into(),
        "--set".into(),
        "ingress.tls.secretName=baton-e2e-tls".into(),
        "--set".into(),
        "crds.keep=false".into(),
        "--set".into(),
        "logging.format=text".into(),
    ];
    match std::env::var("BATON_E2E_NATS_URL") {
        Ok(url) => args.extend(
            ["nats.enabled=false", &format!("externalNats.url={url}")]
                .iter()
                .flat_map(|s| ["--set".to_string(), s.to_string()]),
        ),
        Err(_) => {
            helm(&["dependency", "build", path(&chart)?])?;
            // One NATS server is plenty for a test cluster.
            args.extend(
                [
                    "nats.config.cluster.enabled=false",
                    "jetstream.streamReplicas=1",
                    "nats.config.jetstream.fileStore.pvc.size=1Gi",
                ]
                .iter()
                .flat_map(|s| ["--set".to_string(), s.to_string()]),
            );
        }
    }
    if let Ok(extra) = std::env::var("BATON_E2E_HELM_ARGS") {
        args.extend(extra.split_whitespace().map(String::from));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    helm(&refs)?;
    Ok(())
}

/// Send one message through the forwarded ingress port until it is answered `250` (the
/// operator's snapshot with the e2e domain may reach the ingress a moment after it is Ready).
async fn send_until_accepted(addr: SocketAddr, token: &str) -> anyhow::Result<()> {
    let last: Arc<Mutex<String>> = Arc::default();
    let seen = last.clone();
    let result = assert_eventually(
        Duration::from_secs(120),
        "the ingress to answer 250 to the e2e message",
        || {
            let seen = seen.clone();
            async move {
                let outcome = send_once(addr, token).await;
                let accepted = matches!(&outcome, Ok(r) if r.code == 250);
                if let Ok(mut s) = seen.lock() {
                    *s = format!("{outcome:?}");
                }
                accepted
            }
        },
    )
    .await;
    let last = last.lock().map(|s| s.clone()).unwrap_or_default();
    result.with_context(|| format!("last attempt: {last}"))
}

/// One SMTP transaction; returns the first reply that is not the expected one, or the reply
/// to the final dot.
async fn send_once(addr: SocketAddr, token: &str) -> anyhow::Result<Reply> {
    let (mut t, greeting) = Talk::connect(addr).await?;
    ensure!(greeting.code == 220, "greeting {greeting:?}");
    for (line, want) in [
        ("EHLO e2e.client".to_string(), 250),
        (format!("MAIL FROM:<app@{DOMAIN}>"), 250),
        ("RCPT TO:<someone@sink.e2e.test>".to_string(), 250),
        ("DATA".to_string(), 354),
    ] {
        let r = t.cmd(&line).await?;
        if r.code != want {
            return Ok(r);
        }
    }
    let msg = format!(
        "From: app@{DOMAIN}\r\nTo: someone@sink.e2e.test\r\nSubject: baton e2e {token}\r\n\
         Message-ID: <{token}@{DOMAIN}>\r\n\r\nDelivered by Baton in Kubernetes.\r\n.\r\n"
    );
    t.send(msg.as_bytes()).await?;
    let r = t.reply().await?;
    let _ = t.cmd("QUIT").await;
    Ok(r)
}

/// Wait until the sink holds the message with `token` in its subject; returns its sink id.
async fn wait_delivered(k: &Cluster, token: &str) -> anyhow::Result<String> {
    let url = format!("{}/api/v1/messages", sink_proxy(&k.ns));
    let found: Arc<Mutex<Option<String>>> = Arc::default();
    let slot = found.clone();
    assert_eventually(
        Duration::from_secs(180),
        "the sink to receive the e2e message",
        || {
            let slot = slot.clone();
            let id = k
                .raw(&url)
                .ok()
                .and_then(|body| sink_message_id(&body, token));
            async move {
                let hit = id.is_some();
                if let (Some(id), Ok(mut s)) = (id, slot.lock()) {
                    *s = Some(id);
                }
                hit
            }
        },
    )
    .await?;
    let id = found.lock().ok().and_then(|s| s.clone());
    id.context("message id")
}

/// The Mailpit id of the message whose subject contains `token`.
fn sink_message_id(body: &str, token: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["messages"].as_array()?.iter().find_map(|m| {
        let subject = m["Subject"].as_str()?;
        subject
            .contains(token)
            .then(|| m["ID"].as_str().map(String::from))?
    })
}

/// Sum of `metric` series containing `label` over the pool's worker pods.
fn worker_metric(k: &Cluster, metric: &str, label: &str) -> anyhow::Result<f64> {
    let pods = k.kubectl(&[
        "get",
        "pods",
        "-l",
        &format!("baton.dev/pool={POOL}"),
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ])?;
    let mut total = 0.0;
    for pod in pods.split_whitespace() {
        let text = k.raw(&format!(
            "/api/v1/namespaces/{}/pods/{pod}:9090/proxy/metrics",
            k.ns
        ))?;
        total += text
            .lines()
            .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(label))
            .filter(|l| l.contains(&format!("pool=\"{POOL}\"")))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>();
    }
    Ok(total)
}

fn sink_proxy(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/services/{SINK}:http/proxy")
}

/// Mailpit: SMTP on 1025, HTTP API on 8025.
fn sink_manifest() -> String {
    let image = std::env::var("BATON_E2E_SINK_IMAGE")
        .unwrap_or_else(|_| "docker.io/axllent/mailpit:latest".into());
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {SINK}, labels: {{app: {SINK}}}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {SINK}}}}}
  template:
    metadata: {{labels: {{app: {SINK}}}}}
    spec:
      containers:
        - name: mailpit
          image: {image}
          ports: [{{name: smtp, containerPort: 1025}}, {{name: http, containerPort: 8025}}]
          readinessProbe: {{tcpSocket: {{port: smtp}}, periodSeconds: 2}}
---
apiVersion: v1
kind: Service
metadata: {{name: {SINK}}}
spec:
  selector: {{app: {SINK}}}
  ports: [{{name: smtp, port: 1025, targetPort: smtp}}, {{name: http, port: 8025, targetPort: http}}]
"#
    )
}

/// The e2e pool (smarthost = the sink) and a RelayDomain open to the port-forward's loopback
/// clients, with a DKIM key Secret the operator must generate.
fn e2e_resources(ns: &str) -> String {
    format!(
        r#"apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {{name: {POOL}}}
spec:
  workers: {{replicas: 1}}
  delivery:
    mode: Smarthost
    smarthosts: [{{host: {SINK}.{ns}.svc.cluster.local, port: 1025, weight: 1, tls: Disabled}}]
  tls: {{policy: Disabled}}
  retry: {{schedule: [10s, 30s], maxAge: 10m}}
---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {{name: {POOL}, namespace: {ns}}}
spec:
  domain: {DOMAIN}
  pool: {POOL}
  allowedSenders: ["*@{DOMAIN}"]
  submission: {{networks: [127.0.0.0/8, "::1/128"]}}
  dkim: {{selector: e2e, algorithm: rsa-sha256, keySecretRef: {{name: e2e-dkim}}}}
"#
    )
}

/// The cluster under test: the release namespace and the namespaces this run created.
struct Cluster {
    ns: String,
    created: Mutex<Vec<String>>,
    keep: bool,
}

impl Cluster {
    fn new() -> anyhow::Result<Cluster> {
        Ok(Cluster {
            ns: std::env::var("BATON_E2E_NAMESPACE").unwrap_or_else(|_| "baton-e2e".into()),
            created: Mutex::default(),
            keep: std::env::var_os("BATON_E2E_KEEP").is_some(),
        })
    }

    fn preflight(&self) -> anyhow::Result<()> {
        let v = command("kubectl", &["version", "-o", "json"])
            .context("kubectl cannot reach the cluster named by KUBECONFIG")?;
        ensure!(v.contains("serverVersion"), "no server version: {v}");
        helm(&["version", "--short"]).context("helm not found: run scripts/install-helm")?;
        Ok(())
    }

    fn ensure_namespace(&self, ns: &str) -> anyhow::Result<()> {
        if command("kubectl", &["get", "namespace", ns, "-o", "name"]).is_err() {
            command("kubectl", &["create", "namespace", ns])?;
            if let Ok(mut c) = self.created.lock() {
                c.push(ns.to_string());
            }
        }
        Ok(())
    }

    /// `kubectl -n <release ns> ARGS`.
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.kubectl_in(&self.ns, args)
    }

    /// `kubectl wait --for=FOR TARGET` in `ns`, bounded by [`WAIT`].
    fn wait(&self, ns: &str, target: &str, what: &str) -> anyhow::Result<()> {
        self.kubectl_in(ns, &["wait", &format!("--for={what}"), target, WAIT])?;
        Ok(())
    }

    fn kubectl_in(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["--namespace", ns];
        all.extend_from_slice(args);
        command("kubectl", &all)
    }

    /// `kubectl get --raw PATH` (API server proxy to Services and pods).
    fn raw(&self, path: &str) -> anyhow::Result<String> {
        command("kubectl", &["get", "--raw", path])
    }

    /// Apply YAML in the release namespace.
    fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let mut child = Command::new("kubectl")
            .args(["--namespace", &self.ns, "apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(yaml.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Apply the object a `kubectl create ... --dry-run` prints (idempotent create).
    fn apply_stdout(&self, create: &[&str]) -> anyhow::Result<()> {
        let mut args = create.to_vec();
        args.extend_from_slice(&["--dry-run=client", "-o", "yaml"]);
        let yaml = self.kubectl(&args)?;
        self.apply(&yaml)
    }

    /// What a person would look at when the test fails.
    fn diagnostics(&self) {
        let ns = self.ns.as_str();
        for args in [
            vec!["get", "pods,deploy,svc", "-n", ns, "-o", "wide"],
            vec!["get", "relaydomains,sendingpools", "-A", "-o", "yaml"],
            vec!["get", "events", "-n", ns, "--sort-by=.lastTimestamp"],
            vec!["logs", "-n", ns, "deploy/baton-e2e-operator", "--tail=100"],
            vec!["logs", "-n", ns, "deploy/baton-e2e-ingress", "--tail=100"],
            vec!["logs", "-n", ns, "deploy/baton-worker-e2e", "--tail=100"],
        ] {
            let out = Command::new("kubectl").args(&args).output();
            if let Ok(o) = out {
                eprintln!(
                    "--- kubectl {}\n{}{}",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "BATON_E2E_KEEP set: leaving release {RELEASE} in {}",
                self.ns
            );
            return;
        }
        let examples = repo().join("manifests/examples");
        let _ = self.kubectl(&[
            "delete",
            &format!("relaydomain/{POOL}"),
            &format!("deploy/{SINK}"),
            &format!("svc/{SINK}"),
            "secret/baton-e2e-tls",
            "--ignore-not-found",
        ]);
        let _ = command(
            "kubectl",
            &["delete", "sendingpool", POOL, "--ignore-not-found"],
        );
        if let Some(dir) = examples.to_str() {
            let _ = command("kubectl", &["delete", "-f", dir, "--ignore-not-found"]);
        }
        let _ = helm(&["uninstall", RELEASE, "--namespace", &self.ns]);
        let created = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        for ns in created {
            let _ = command("kubectl", &["delete", "namespace", &ns, "--wait=false"]);
        }
    }
}

/// `kubectl port-forward` to a local ephemeral port, stopped on drop.
struct PortForward {
    addr: SocketAddr,
    child: Child,
}

impl PortForward {
    fn start(ns: &str, target: &str, port: u16) -> anyhow::Result<PortForward> {
        let mut child = Command::new("kubectl")
            .args(["--namespace", ns, "port-forward", target])
            .arg(format!(":{port}"))
            .args(["--address", "127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("port-forward stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads "Forwarding from 127.0.0.1:PORT -> ..." and keeps draining afterwards.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                    let port = rest.split_whitespace().next().and_then(|p| p.parse().ok());
                    let _ = tx.send(port);
                }
            }
        });
        let local: Option<u16> = rx
            .recv_timeout(Duration::from_secs(60))
            .context("kubectl port-forward did not report its local port")?;
        let local = local.context("unparseable port-forward output")?;
        Ok(PortForward {
            addr: SocketAddr::from(([127, 0, 0, 1], local)),
            child,
        })
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(bin: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .args(args)
        .output()
        .with_context(|| format!("running {bin}"))?;
    if !out.status.success() {
        bail!(
            "{bin} {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn helm(args: &[&str]) -> anyhow::Result<String> {
    command("helm", args)
}

/// `repo:tag` or `repo@sha256:...` → (repository, the matching `--set` value).
fn split_image(image: &str) -> anyhow::Result<(String, String)> {
    if let Some((repo, digest)) = image.split_once('@') {
        return Ok((repo.into(), format!("image.digest={digest}")));
    }
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) => Ok((
            image[..slash + i].into(),
            format!("image.tag={}", &image[slash + i + 1..]),
        )),
        None => bail!("BATON_E2E_IMAGE {image:?} has no tag or digest"),
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

#[test]
fn image_references_split_into_repository_and_tag_or_digest() {
    let s = |i| split_image(i).ok();
    assert_eq!(
        s("registry:5000/team/baton:0.1.0"),
        Some(("registry:5000/team/baton".into(), "image.tag=0.1.0".into()))
    );
    assert_eq!(
        s("baton@sha256:abc"),
        Some(("baton".into(), "image.digest=sha256:abc".into()))
    );
    assert_eq!(s("registry:5000/baton"), None);
}

#[test]
fn the_sink_message_is_found_by_subject_token() {
    let body = r#"{"total":2,"messages":[{"ID":"a","Subject":"other"},{"ID":"b","Subject":"baton e2e e2e-7"}]}"#;
    assert_eq!(sink_message_id(body, "e2e-7").as_deref(), Some("b"));
    assert_eq!(sink_message_id(body, "e2e-8"), None);
}
