//! Scenario: what SREs get is consistent and valid. The alert rules pass `promtool check
//! rules` and their unit tests; every metric named by the rules and the Grafana dashboard is
//! one Baton declares; and real `/metrics` output scraped from a running ingress and worker,
//! after accepted, refused and delivered traffic, passes `promtool check metrics` and shows
//! the counters moving.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, http_get, metric, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};
use baton_system_tests::smtp::Talk;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// Metric names declared in baton-telemetry (the one place they are declared).
fn declared() -> anyhow::Result<BTreeSet<String>> {
    let src = std::fs::read_to_string(repo("crates/baton-telemetry/src/metrics.rs"))?;
    Ok(src
        .split('"')
        .filter(|s| {
            s.starts_with("baton_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(str::to_string)
        .collect())
}

/// `baton_*` identifiers used in a text (PromQL expressions).
fn used(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("baton_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            out.insert(text[start..end].to_string());
        }
        i = end;
    }
    out
}

fn base_name(m: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| m.strip_suffix(s))
        .unwrap_or(m)
}

fn promtool(args: &[&str], dir: &PathBuf) -> anyhow::Result<String> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(out.status.success(), "promtool {args:?} failed:\n{text}");
    Ok(text)
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() -> anyhow::Result<()> {
    let dir = repo("manifests/monitoring");
    let out = promtool(&["check", "rules", "baton-rules.yaml"], &dir)?;
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
    let out = promtool(&["test", "rules", "baton-rules.test.yaml"], &dir)?;
    assert!(out.contains("SUCCESS"), "{out}");
    Ok(())
}

#[test]
fn dashboard_and_rules_only_name_declared_metrics() -> anyhow::Result<()> {
    let declared = declared()?;
    assert!(declared.len() > 20, "{declared:?}");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo(
        "manifests/monitoring/grafana-dashboard.json",
    ))?)?;
    let mut exprs = String::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push_str(t["expr"].as_str().unwrap_or_default());
            exprs.push('\n');
        }
    }
    exprs.push_str(&std::fs::read_to_string(repo(
        "manifests/monitoring/baton-rules.yaml",
    ))?);
    let names = used(&exprs);
    assert!(names.len() >= 15, "dashboard and rules use {names:?}");
    for n in &names {
        assert!(
            declared.contains(base_name(n)),
            "{n} is queried but Baton does not export it"
        );
    }
    Ok(())
}

fn config(port: u16) -> String {
    format!(
        r#"apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {{name: mon}}
spec:
  delivery:
    mode: Smarthost
    smarthosts: [{{host: 127.0.0.1, port: {port}, weight: 1, tls: Disabled}}]
  retry: {{schedule: [1s], maxAge: 1h}}
---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {{name: example-com, namespace: default}}
spec:
  domain: example.com
  pool: mon
  submission: {{networks: [127.0.0.0/8]}}
"#
    )
}

async fn check_metrics(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    let (code, body) = http_get(addr, "/metrics").await?;
    anyhow::ensure!(code == 200, "/metrics answered {code}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin.write_all(body.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics:\n{text}"
    );
    Ok(body)
}

#[tokio::test]
async fn scraped_metrics_are_valid_and_move_with_traffic() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-mon")?;
    let nats = Nats::start().await?;
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &config(receiver.addr().port()))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let worker = Worker::start(&nats, &dir.0, "mon", None, &[]).await?;

    let (mut t, _) = Talk::connect(ing.smtp).await?;
    t.cmd("EHLO mon.test").await?;
    assert_eq!(t.cmd("MAIL FROM:<intruder@evil.test>").await?.code, 550);
    assert_eq!(t.cmd("MAIL FROM:<app@example.com>").await?.code, 250);
    assert_eq!(t.cmd("RCPT TO:<x@dest.test>").await?.code, 250);
    assert_eq!(t.cmd("DATA").await?.code, 354);
    assert_eq!(
        t.cmd("From: app@example.com\r\nSubject: m\r\n\r\nhi\r\n.")
            .await?
            .code,
        250
    );
    receiver
        .wait_for_messages(1, Duration::from_secs(30))
        .await?;

    let ingress_text = check_metrics(ing.metrics).await?;
    assert!(
        ingress_text.contains(
            "baton_ingress_messages_accepted_total{relay_domain=\"default/example-com\"} 1"
        ),
        "{ingress_text}"
    );
    assert!(
        metric(
            ing.metrics,
            "baton_ingress_rejections_total{code=\"550\",reason=\"5.7.1\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            ing.metrics,
            "baton_ingress_connections_total{listener=\"smtp\",result=\"accepted\"}"
        )
        .await
            >= 1.0
    );
    assert_eq!(
        metric(ing.metrics, "baton_ingress_publish_duration_seconds_count").await,
        1.0
    );
    let w = worker.metrics;
    assert_eventually(Duration::from_secs(10), "delivered counter", || async move {
        metric(w, "baton_delivery_recipients_total{outcome=\"delivered\",pool=\"mon\",relay_domain=\"default/example-com\"}").await == 1.0
    })
    .await?;
    assert_eventually(
        Duration::from_secs(15),
        "queue gauges and worker readiness",
        || async move {
            let text = http_get(w, "/metrics")
                .await
                .map(|(_, b)| b)
                .unwrap_or_default();
            text.contains("baton_queue_pending_messages{lane=\"new\",pool=\"mon\"} 0")
                && text.contains("baton_worker_ready{pool=\"mon\"} 1")
        },
    )
    .await?;
    check_metrics(worker.metrics).await?;
    Ok(())
}
