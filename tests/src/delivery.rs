//! Helpers for delivery scenarios: submitting through a real ingress with DSN parameters,
//! reading the worker's per-recipient outcome lines (`status=sent|deferred|bounced|expired`,
//! logged as JSON with `--log-format json`), and parsing DSNs with Python's `email` package.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::harness::assert_eventually;
use crate::smtp::Talk;

/// Worker flags every delivery scenario uses: JSON log lines, so outcomes can be read exactly.
pub const JSON_LOG: &[&str] = &["--log-format", "json"];

/// One per-recipient outcome line of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `sent`, `deferred`, `bounced` or `expired`.
    pub status: String,
    /// Recipient.
    pub to: String,
    /// Queue id of the envelope.
    pub queue_id: String,
    /// Attempt number (1 = first).
    pub attempt: u64,
    /// Whether the envelope was a DSN.
    pub dsn: bool,
    /// Remote reply or local explanation.
    pub reply: String,
    /// Remote host that answered, `host[ip]`.
    pub relay: String,
    /// Bounce class (`baton_core::bounce`) of a recipient not delivered; empty when sent.
    pub class: String,
}

/// Every outcome line in a worker log, in order.
pub fn outcomes(log: &Path) -> Vec<Outcome> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let field = |v: &serde_json::Value, k: &str| {
        v.get(k)
            .map(|f| {
                f.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| f.to_string())
            })
            .unwrap_or_default()
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| field(v, "message").starts_with("status="))
        .map(|v| Outcome {
            status: field(&v, "status"),
            to: field(&v, "to"),
            queue_id: field(&v, "queue_id"),
            attempt: v.get("attempt").and_then(|a| a.as_u64()).unwrap_or(0),
            dsn: v.get("dsn").and_then(|d| d.as_bool()).unwrap_or(false),
            reply: field(&v, "reply"),
            relay: field(&v, "relay"),
            class: field(&v, "class"),
        })
        .collect()
}

/// Outcomes across several worker logs.
pub fn all_outcomes(logs: &[&Path]) -> Vec<Outcome> {
    logs.iter().flat_map(|l| outcomes(l)).collect()
}

/// Wait until the worker logged an outcome `status` for recipient `to`; returns all outcomes
/// for that recipient so far.
pub async fn wait_outcome(
    log: &Path,
    to: &str,
    status: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Outcome>> {
    let what = format!("worker log line status={status} for {to}");
    assert_eventually(timeout, &what, || async {
        outcomes(log)
            .iter()
            .any(|o| o.to == to && o.status == status)
    })
    .await
    .with_context(|| tail(log))?;
    Ok(outcomes(log).into_iter().filter(|o| o.to == to).collect())
}

/// The last 40 lines of a log, for failure messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One message to submit: envelope, DSN parameters and content.
#[derive(Debug, Clone, Default)]
pub struct Submission<'a> {
    /// Reverse path ("" = null sender).
    pub from: &'a str,
    /// MAIL FROM parameters, e.g. `RET=HDRS ENVID=abc`.
    pub mail_params: &'a str,
    /// Recipients with their RCPT parameters, e.g. `("x@dest.test", "NOTIFY=NEVER")`.
    pub rcpts: Vec<(&'a str, &'a str)>,
    /// Subject (also used as a unique marker).
    pub subject: &'a str,
}

impl Submission<'_> {
    /// The content: a few headers (Message-ID derived from the subject) and a short body.
    pub fn content(&self) -> String {
        let to = self.rcpts.first().map(|r| r.0).unwrap_or("x@dest.test");
        let id: String = self
            .subject
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect();
        format!(
            "From: <{}>\r\nTo: <{to}>\r\nSubject: {}\r\nMessage-ID: <{id}@client.test>\r\n\r\nHello from {}.\r\n",
            if self.from.is_empty() {
                "mailer-daemon@example.com"
            } else {
                self.from
            },
            self.subject,
            self.subject
        )
    }
}

/// Submit one message over a fresh connection to the ingress; returns the reply to the end of
/// DATA (250 = queued). Every command before it must succeed.
pub async fn submit(ingress: SocketAddr, m: &Submission<'_>) -> anyhow::Result<u16> {
    let (mut t, greeting) = Talk::connect(ingress).await?;
    if greeting.code != 220 {
        bail!("greeting {greeting:?}");
    }
    let r = send_on(&mut t, m).await?;
    let _ = t.cmd("QUIT").await;
    Ok(r)
}

/// Send one transaction on an open session (EHLO sent if `t` is fresh is the caller's job
/// through [`submit`]; this sends EHLO every time, which also resets the session).
pub async fn send_on(t: &mut Talk, m: &Submission<'_>) -> anyhow::Result<u16> {
    expect(t.cmd("EHLO client.test").await?, 250, "EHLO")?;
    let params = if m.mail_params.is_empty() {
        String::new()
    } else {
        format!(" {}", m.mail_params)
    };
    expect(
        t.cmd(&format!("MAIL FROM:<{}>{params}", m.from)).await?,
        250,
        "MAIL",
    )?;
    for (rcpt, p) in &m.rcpts {
        let p = if p.is_empty() {
            String::new()
        } else {
            format!(" {p}")
        };
        expect(t.cmd(&format!("RCPT TO:<{rcpt}>{p}")).await?, 250, "RCPT")?;
    }
    expect(t.cmd("DATA").await?, 354, "DATA")?;
    t.send(m.content().as_bytes()).await?;
    Ok(t.cmd(".").await?.code)
}

fn expect(r: crate::smtp::Reply, code: u16, what: &str) -> anyhow::Result<()> {
    if r.code != code {
        bail!("{what}: expected {code}, got {r:?}");
    }
    Ok(())
}

/// A header's value (first occurrence, unfolded), case-insensitive name.
pub fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = value.as_mut() {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case(name)
        {
            value = Some(v.trim().to_owned());
        }
    }
    value
}

/// What Python's `email` package makes of a DSN.
#[derive(Debug, Clone, Default)]
pub struct ParsedDsn {
    /// Top-level `Content-Type` (`multipart/report`).
    pub content_type: String,
    /// Its `report-type` parameter.
    pub report_type: String,
    /// Content type of the message, then of each of its top-level parts.
    pub parts: Vec<String>,
    /// Per-message fields of the `message/delivery-status` part.
    pub per_message: BTreeMap<String, String>,
    /// One field map per recipient block.
    pub recipients: Vec<BTreeMap<String, String>>,
    /// Parser defects Python reported (should be none).
    pub defects: Vec<String>,
    /// `Subject`.
    pub subject: String,
}

const PARSE_DSN: &str = r#"
import email, json, sys
m = email.message_from_bytes(sys.stdin.buffer.read())
out = {"content_type": m.get_content_type(), "report_type": m.get_param("report-type") or "",
       "parts": [m.get_content_type()] + ([p.get_content_type() for p in m.get_payload()]
                                          if m.is_multipart() else []),
       "per_message": {}, "recipients": [],
       "defects": [repr(d) for p in m.walk() for d in p.defects], "subject": m.get("Subject", "")}
for p in m.walk():
    if p.get_content_type() == "message/delivery-status":
        blocks = p.get_payload()
        out["per_message"] = {k: str(v) for k, v in blocks[0].items()}
        out["recipients"] = [{k: str(v) for k, v in b.items()} for b in blocks[1:]]
print(json.dumps(out))
"#;

/// Parse a DSN with `python3 -c` and `email.message_from_bytes`.
pub fn parse_dsn(message: &[u8]) -> anyhow::Result<ParsedDsn> {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .args(["-c", PARSE_DSN])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("python3 is needed to parse DSNs")?;
    child.stdin.take().context("stdin")?.write_all(message)?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("python: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let map = |m: &serde_json::Value| -> BTreeMap<String, String> {
        m.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(ParsedDsn {
        content_type: s("content_type"),
        report_type: s("report_type"),
        parts: list("parts"),
        per_message: map(&v["per_message"]),
        recipients: v["recipients"]
            .as_array()
            .map(|a| a.iter().map(map).collect())
            .unwrap_or_default(),
        defects: list("defects"),
        subject: s("subject"),
    })
}

/// Send `n` messages of 2 KiB from `app@example.com` to `to` over `sessions` parallel
/// sessions with Postfix's `smtp-source`; fails unless it exits cleanly (every message got
/// a 2xx).
pub async fn smtp_source(
    ingress: SocketAddr,
    n: usize,
    sessions: usize,
    to: &str,
) -> anyhow::Result<()> {
    let args: Vec<String> = [
        "-c",
        "-l",
        "2048",
        "-m",
        &n.to_string(),
        "-s",
        &sessions.to_string(),
        "-f",
        "app@example.com",
        "-t",
        to,
        &ingress.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("/usr/sbin/smtp-source").args(&args).output()
    })
    .await?
    .context("running /usr/sbin/smtp-source (Debian package postfix)")?;
    if !out.status.success() {
        bail!(
            "smtp-source failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The queue id Baton gave a delivered message, from the `Received:` line it added (`with
/// ESMTP id <id>`).
pub fn queue_id(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let at = text.find("ESMTP id ")? + "ESMTP id ".len();
    Some(
        text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect(),
    )
}
