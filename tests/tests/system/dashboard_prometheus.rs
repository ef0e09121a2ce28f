//! Scenario: the Grafana dashboard and the alert rules work against a real Prometheus.
//! `/usr/bin/prometheus` (own config, TSDB in a temp dir, free loopback port, 1 s scrape and
//! rule evaluation) scrapes one ingress and one worker while `traffic/mod.rs` drives a round of
//! every kind of traffic. Once Prometheus has scraped the final counters (polled through its
//! API, no sleeps), every panel query of `manifests/monitoring/grafana-dashboard.json` (Grafana
//! variables substituted: `$pool`/`$relay_domain` → `.*`, `$__rate_interval` → `1m`) is
//! evaluated through `/api/v1/query`: each must be accepted, and each whose traffic happened
//! must return samples. The template variables' `label_values` queries must find values, and
//! the rules of `baton-rules.yaml`, loaded by the same Prometheus, must evaluate without error.
//!
//! With `BATON_RENDER_DASHBOARD=<png>` (what `scripts/render-dashboard` sets) the test keeps
//! driving rounds for `BATON_RENDER_SECONDS` (default 180) and then has that script render every
//! panel from `query_range` results into the PNG.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use baton_system_tests::harness::{Proc, assert_eventually, free_port, http_get};
use serde_json::Value;

use crate::traffic;

/// Panel queries allowed to return nothing here, with the reason: this run has no publish
/// failure, no redelivery, no smarthost pool and no operator.
const EMPTY_HERE: &[(&str, &str)] = &[
    ("baton_ingress_publish_errors_total", "no publish failed"),
    ("baton_delivery_redeliveries_total", "no worker died"),
    (
        "baton_delivery_smarthost_up",
        "the pool delivers direct to MX",
    ),
    ("baton_operator_", "no operator runs in this test"),
    ("baton_filter_", "the test pool has no content filters"),
    (
        "baton_quarantined_total",
        "the test pool has no content filters",
    ),
    (
        "baton_limit_refusals_total",
        "the traffic stays within every limit",
    ),
    ("baton_auth_lockouts_total", "no AUTH lockout happens"),
    (
        "baton_limit_fallback_total",
        "NATS answers every limit in time",
    ),
    (
        "baton_destination_throttled_total",
        "the test pool has no destination limits",
    ),
    ("baton_deny_refusals_total", "no client or sender is denied"),
    (
        "baton_destination_waits_total",
        "the test pool has no destination limits",
    ),
    (
        "baton_webhook_",
        "no EventSink dispatcher runs in this test",
    ),
    (
        "baton_ingress_suppressed_recipients_total",
        "no client writes to a suppressed recipient",
    ),
    (
        "baton_ingress_reports_total",
        "no RelayDomain has a return path",
    ),
    (
        "baton_delivery_delay_notices_total",
        "nothing stays deferred for hours",
    ),
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// A running Prometheus, killed on drop.
struct Prometheus {
    addr: SocketAddr,
    _proc: Proc,
    log: PathBuf,
}

impl Prometheus {
    /// Start Prometheus scraping `targets` (`(job, address)`) every second, with the Baton
    /// alert rules loaded, and wait until it is ready.
    async fn start(dir: &Path, targets: &[(&str, SocketAddr)]) -> anyhow::Result<Prometheus> {
        let rules = repo("manifests/monitoring/baton-rules.yaml").canonicalize()?;
        let mut cfg = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [\"{}\"]\nscrape_configs:\n",
            rules.display()
        );
        for (job, addr) in targets {
            cfg.push_str(&format!(
                "  - job_name: {job}\n    static_configs: [{{targets: [\"{addr}\"]}}]\n"
            ));
        }
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, cfg)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`)")?;
        let p = Prometheus {
            addr,
            _proc: Proc {
                child,
                name: "prometheus".into(),
            },
            log,
        };
        assert_eventually(Duration::from_secs(30), "prometheus /-/ready", || async {
            http_get(addr, "/-/ready")
                .await
                .map(|(c, _)| c == 200)
                .unwrap_or(false)
        })
        .await
        .with_context(|| std::fs::read_to_string(&p.log).unwrap_or_default())?;
        Ok(p)
    }

    /// GET an API path; the parsed JSON body (`status` is checked by the caller).
    async fn api(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let (code, body) = http_get(self.addr, path_and_query).await?;
        let json: Value = serde_json::from_str(&body)
            .with_context(|| format!("{path_and_query}: HTTP {code}: {body}"))?;
        Ok(json)
    }

    /// Evaluate an instant query: `Ok(result array)` or the API's error.
    async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let json = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await?;
        anyhow::ensure!(json["status"] == "success", "{expr}: {json}");
        Ok(json["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The single value of a scalar-like instant query (`sum(...)`), 0 when empty.
    async fn value(&self, expr: &str) -> f64 {
        let Ok(result) = self.query(expr).await else {
            return 0.0;
        };
        result
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// Percent-encode a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Grafana variables replaced the way Grafana would with "All" selected and a 1 s scrape.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$pool", ".*")
        .replace("$relay_domain", ".*")
}

/// `(panel title, expr)` for every target of every panel.
fn dashboard_queries() -> anyhow::Result<(Value, Vec<(String, String)>)> {
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(repo(
        "manifests/monitoring/grafana-dashboard.json",
    ))?)?;
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default().to_string();
            out.push((title, t["expr"].as_str().unwrap_or_default().to_string()));
        }
    }
    Ok((dash, out))
}

/// Every panel query parses; those for traffic that happened return samples (waiting for the
/// rate windows to hold two scrapes).
async fn check_panels(prom: &Prometheus) -> anyhow::Result<usize> {
    let (_, queries) = dashboard_queries()?;
    anyhow::ensure!(queries.len() >= 20, "{} panel queries", queries.len());
    let mut non_empty = 0;
    for (title, expr) in &queries {
        let q = substitute(expr);
        prom.query(&q)
            .await
            .with_context(|| format!("panel {title:?}"))?;
        if EMPTY_HERE.iter().any(|(m, _)| expr.contains(m)) {
            continue;
        }
        let what = format!("samples for panel {title:?}: {q}");
        assert_eventually(Duration::from_secs(30), &what, || async {
            prom.query(&q).await.is_ok_and(|r| !r.is_empty())
        })
        .await?;
        non_empty += 1;
    }
    Ok(non_empty)
}

/// The `label_values(metric, label)` template variables find values.
async fn check_variables(prom: &Prometheus, dash: &Value) -> anyhow::Result<()> {
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let Some(q) = v["query"]
            .as_str()
            .and_then(|q| q.strip_prefix("label_values("))
        else {
            continue;
        };
        let (metric, label) = q
            .trim_end_matches(')')
            .split_once(',')
            .context("label_values(metric, label)")?;
        let path = format!(
            "/api/v1/label/{}/values?match[]={}",
            label.trim(),
            encode(metric.trim())
        );
        let json = prom.api(&path).await?;
        let values = json["data"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(!values.is_empty(), "variable {}: {json}", v["name"]);
    }
    Ok(())
}

/// The alert rules were loaded and evaluated without error.
async fn check_rules(prom: &Prometheus) -> anyhow::Result<()> {
    let want = crate::monitoring::alert_names()?.len();
    let what = format!("{want} rules evaluated ok");
    assert_eventually(Duration::from_secs(20), &what, || async {
        let Ok(json) = prom.api("/api/v1/rules").await else {
            return false;
        };
        let rules: Vec<&Value> = json["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules.len() == want && rules.iter().all(|r| r["health"] == "ok")
    })
    .await
    .with_context(|| format!("{:?}", std::fs::read_to_string(&prom.log)))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Keep the traffic going, then render every panel with `scripts/render-dashboard --plot`.
async fn render(
    env: &traffic::Env,
    prom: &Prometheus,
    out: &str,
    start: u64,
) -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("BATON_RENDER_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut k = 1;
    while Instant::now() < until {
        env.round(k).await?;
        env.burst(k, 15 * (k % 5)).await?;
        env.wait_round_delivered(k).await?;
        k += 1;
    }
    let mut by_status = std::collections::BTreeMap::new();
    for o in baton_system_tests::delivery::outcomes(&env.worker.log) {
        *by_status.entry((o.status, o.attempt)).or_insert(0u64) += 1;
    }
    eprintln!("{k} rounds; worker outcomes by (status, attempt): {by_status:?}");
    let status = Command::new(repo("scripts/render-dashboard"))
        .arg("--plot")
        .arg(format!("http://{}", prom.addr))
        .arg(start.to_string())
        .arg(unix_now().to_string())
        .arg(out)
        .status()?;
    anyhow::ensure!(status.success(), "render-dashboard --plot failed");
    Ok(())
}

#[tokio::test]
async fn dashboard_queries_work_against_a_real_prometheus() -> anyhow::Result<()> {
    let env = traffic::Env::start("baton-dash").await?;
    let prom = Prometheus::start(
        &env.dir.0,
        &[
            ("baton-ingress", env.ing.metrics),
            ("baton-worker", env.worker.metrics),
        ],
    )
    .await?;
    let start = unix_now();
    env.round(0).await?;
    env.wait_round_delivered(0).await?;

    // Prometheus has scraped the final counters of the round.
    let scraped = [
        ("sum(baton_ingress_messages_accepted_total)", 3.0),
        ("sum(baton_ingress_rejections_total)", 4.0),
        (
            "sum(baton_delivery_recipients_total{outcome=\"delivered\"})",
            3.0,
        ),
        ("sum(baton_delivery_dsn_generated_total)", 1.0),
    ];
    for (expr, want) in scraped {
        let what = format!("prometheus scraped {expr} == {want}");
        assert_eventually(Duration::from_secs(30), &what, || async {
            prom.value(expr).await == want
        })
        .await?;
    }

    let non_empty = check_panels(&prom).await?;
    assert!(
        non_empty >= 20,
        "{non_empty} panel queries returned samples"
    );
    let (dash, _) = dashboard_queries()?;
    check_variables(&prom, &dash).await?;
    check_rules(&prom).await?;

    if let Ok(out) = std::env::var("BATON_RENDER_DASHBOARD") {
        render(&env, &prom, &out, start).await?;
    }
    Ok(())
}
