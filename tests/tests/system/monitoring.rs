//! Scenario: what SREs get is consistent and valid. The alert rules pass `promtool check
//! rules` and their unit tests; every metric named by the rules and the Grafana dashboard is
//! one Baton declares; and after one round of every kind of traffic (`traffic/mod.rs`:
//! accepted, refused by policy and for bad input, TLS ok and failed, AUTH ok and failed,
//! delivered, deferred then delivered, bounced with a DSN) the real `/metrics` output of the
//! ingress and the worker passes `promtool check metrics` and every matching counter, histogram
//! count and gauge has exactly the expected value.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_system_tests::harness::{assert_eventually, http_get};

use crate::traffic;

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

/// The alert names of `manifests/monitoring/baton-rules.yaml`, in file order.
pub(crate) fn alert_names() -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(repo("manifests/monitoring/baton-rules.yaml"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect())
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() -> anyhow::Result<()> {
    let dir = repo("manifests/monitoring");
    let names = alert_names()?;
    assert!(names.len() >= 9, "{names:?}");
    let out = promtool(&["check", "rules", "baton-rules.yaml"], &dir)?;
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{out}"
    );
    let out = promtool(&["test", "rules", "baton-rules.test.yaml"], &dir)?;
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test that expects it to fire.
    let tests = std::fs::read_to_string(dir.join("baton-rules.test.yaml"))?;
    for name in &names {
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "alert {name} has no promtool unit test"
        );
    }
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

/// Sum of the samples of `series` (exact name and labels as rendered, or a bare name for
/// every label set) in a `/metrics` text.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(series).is_some_and(|rest| {
                rest.starts_with(' ') || (!series.contains('{') && rest.starts_with('{'))
            })
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Every `(series, expected value)` pair holds in `text`; the message lists all mismatches.
fn check_values(text: &str, expected: &[(String, f64)]) -> Result<(), String> {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(s, v)| value(text, s) != *v)
        .map(|(s, v)| format!("{s}: expected {v}, got {}", value(text, s)))
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n"))
    }
}

fn series(name: &str, labels: &str, v: f64) -> (String, f64) {
    if labels.is_empty() {
        (name.to_string(), v)
    } else {
        (format!("{name}{{{labels}}}"), v)
    }
}

/// The ingress counters after one round of [`traffic::Env::round`].
fn ingress_expected(syntax: &(u16, String)) -> Vec<(String, f64)> {
    let rd = format!("relay_domain=\"{}\"", traffic::RELAY_DOMAIN);
    let mut e = vec![
        series(
            "baton_ingress_connections_total",
            "listener=\"smtp\",result=\"accepted\"",
            1.0,
        ),
        series(
            "baton_ingress_connections_total",
            "listener=\"submission\",result=\"accepted\"",
            1.0,
        ),
        series(
            "baton_ingress_connections_total",
            "listener=\"smtps\",result=\"accepted\"",
            1.0,
        ),
        series("baton_ingress_connections_total", "", 3.0),
        series(
            "baton_ingress_tls_handshakes_total",
            "listener=\"submission\",result=\"ok\"",
            1.0,
        ),
        series(
            "baton_ingress_tls_handshakes_total",
            "listener=\"smtps\",result=\"failed\"",
            1.0,
        ),
        series("baton_ingress_tls_handshakes_total", "", 2.0),
        series(
            "baton_ingress_auth_total",
            "listener=\"submission\",result=\"ok\"",
            1.0,
        ),
        series(
            "baton_ingress_auth_total",
            "listener=\"submission\",result=\"failed\"",
            1.0,
        ),
        series("baton_ingress_messages_accepted_total", &rd, 3.0),
        series(
            "baton_ingress_rejections_total",
            "code=\"550\",reason=\"5.7.1\"",
            1.0,
        ),
        series(
            "baton_ingress_rejections_total",
            "code=\"550\",reason=\"5.6.0\"",
            1.0,
        ),
        series(
            "baton_ingress_rejections_total",
            "code=\"535\",reason=\"5.7.8\"",
            1.0,
        ),
        series("baton_ingress_rejections_total", "", 4.0),
        series("baton_ingress_message_size_bytes_count", "", 3.0),
        series("baton_ingress_publish_duration_seconds_count", "", 3.0),
        series("baton_ingress_publish_errors_total", "", 0.0),
        series("baton_ingress_sessions_active", "", 0.0),
        series("baton_ingress_inflight_bytes", "", 0.0),
        series("baton_config_generation", "", 1.0),
    ];
    let (code, status) = syntax;
    e.push(series(
        "baton_ingress_rejections_total",
        &format!("code=\"{code}\",reason=\"{status}\""),
        1.0,
    ));
    e
}

/// The worker's counters and gauges once round 0 is fully delivered and the queue drained.
fn worker_expected() -> Vec<(String, f64)> {
    let p = format!("pool=\"{}\"", traffic::POOL);
    let out = |o: &str| {
        format!(
            "outcome=\"{o}\",pool=\"{}\",relay_domain=\"{}\"",
            traffic::POOL,
            traffic::RELAY_DOMAIN
        )
    };
    vec![
        // ok@, defer@ on its retry, and the DSN to app@example.com.
        series("baton_delivery_recipients_total", &out("delivered"), 3.0),
        series("baton_delivery_recipients_total", &out("deferred"), 1.0),
        series("baton_delivery_recipients_total", &out("bounced"), 1.0),
        series("baton_delivery_recipients_total", &out("expired"), 0.0),
        // One attempt per envelope and destination: ok, defer twice, bad, the DSN.
        series(
            "baton_delivery_attempts_total",
            &format!("{p},result=\"connected\""),
            5.0,
        ),
        series("baton_delivery_attempts_total", "", 5.0),
        series("baton_delivery_duration_seconds_count", &p, 5.0),
        series("baton_delivery_accept_to_delivery_seconds_count", &p, 3.0),
        series("baton_delivery_dsn_generated_total", &p, 1.0),
        // bad@ bounced (550 5.1.1) and suppressed; defer@ deferred once (451 4.3.0).
        series(
            "baton_delivery_bounces_total",
            &format!("class=\"invalid_recipient\",outcome=\"bounced\",{p}"),
            1.0,
        ),
        series(
            "baton_delivery_bounces_total",
            &format!("class=\"transient\",outcome=\"deferred\",{p}"),
            1.0,
        ),
        series("baton_delivery_bounces_total", "", 2.0),
        series(
            "baton_suppressions_added_total",
            &format!(
                "relay_domain=\"{}\",source=\"bounce\"",
                traffic::RELAY_DOMAIN
            ),
            1.0,
        ),
        series("baton_delivery_delay_notices_total", "", 0.0),
        series("baton_delivery_connections_active", &p, 0.0),
        series("baton_delivery_suspended_destinations", &p, 0.0),
        series("baton_delivery_redeliveries_total", "", 0.0),
        series("baton_worker_ready", &p, 1.0),
        // `baton config apply` stored generation 1; the worker reports the snapshot in force.
        series("baton_config_generation", "", 1.0),
        series(
            "baton_queue_pending_messages",
            &format!("lane=\"new\",{p}"),
            0.0,
        ),
        series("baton_queue_pending_messages", "", 0.0),
        series("baton_queue_ack_pending_messages", "", 0.0),
    ]
}

/// Wait until every expected value holds at `addr`'s `/metrics`; the error lists the mismatches.
async fn wait_values(
    addr: std::net::SocketAddr,
    expected: &[(String, f64)],
    timeout: Duration,
) -> anyhow::Result<()> {
    let scrape = || async move {
        http_get(addr, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let done = assert_eventually(timeout, "metric values", || async {
        check_values(&scrape().await, expected).is_ok()
    })
    .await;
    if let Err(e) = done {
        let mismatches = check_values(&scrape().await, expected)
            .err()
            .unwrap_or_default();
        anyhow::bail!("{e}:\n{mismatches}");
    }
    Ok(())
}

#[tokio::test]
async fn every_kind_of_traffic_moves_its_metrics_exactly() -> anyhow::Result<()> {
    let env = traffic::Env::start("baton-mon").await?;
    let round = env.round(0).await?;
    let r = &round.refusals;
    assert_eq!(r[0], (550, "5.7.1".to_string()), "policy: {r:?}");
    assert!(r[1].0 >= 500 && r[1].0 < 600, "syntax: {r:?}");
    assert_eq!(r[2], (550, "5.6.0".to_string()), "bare LF: {r:?}");
    assert_eq!(r[3], (535, "5.7.8".to_string()), "wrong password: {r:?}");
    env.wait_round_delivered(0).await?;
    assert_eq!(env.receiver.messages().len(), 2, "ok@ and defer@");
    assert_eq!(env.bounces.messages().len(), 1, "one DSN");

    let expected = ingress_expected(&r[1]);
    let m = env.ing.metrics;
    wait_values(m, &expected, Duration::from_secs(10)).await?;
    let text = check_metrics(m).await?;
    check_values(&text, &expected).map_err(anyhow::Error::msg)?;
    assert!(value(&text, "baton_ingress_message_size_bytes_sum") > 0.0);

    // Queue gauges are refreshed every 5 s; the rest must already be final.
    let expected = worker_expected();
    let w = env.worker.metrics;
    wait_values(w, &expected, Duration::from_secs(20)).await?;
    let text = check_metrics(w).await?;
    check_values(&text, &expected).map_err(anyhow::Error::msg)?;
    assert!(
        text.contains("baton_queue_oldest_message_age_seconds{pool=\"test\"}"),
        "oldest age gauge"
    );
    Ok(())
}
