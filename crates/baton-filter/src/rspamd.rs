//! rspamd over its HTTP protocol: `POST /checkv2` with the message as the body and the SMTP
//! context as rspamd's request headers (`From`, one `Rcpt` per recipient, `IP`, `Hostname`,
//! `Helo`, `User`, `Queue-Id`, optionally `Settings-ID`), so rspamd's outbound rules (it treats
//! an authenticated `User` as outbound mail) and rate rules see what the ingress saw.
//!
//! The JSON answer becomes a typed [`RspamdResult`] ([`parse_reply`], pure): action, score,
//! required score, symbol names, `messages.smtp_message` and the `milter` block's header edits.
//! [`RspamdPolicy::verdict`] (pure) maps it to a [`Verdict`] with configurable treatment of each
//! action, an optional quarantine score, and score headers (`X-Spam-Score`, `X-Spam-Status`).
//!
//! Plain HTTP only: rspamd runs next to Baton (a sidecar or an in-cluster Service).

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::Value;

use crate::verdict::{HeaderEdits, Verdict};
use crate::{FilterError, ScanRequest};

/// Most bytes of an rspamd answer read (symbols with options can be long).
const MAX_ANSWER: usize = 1024 * 1024;

/// rspamd's recommended action (`action` in the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RspamdAction {
    /// `no action`.
    NoAction,
    /// `greylist`.
    Greylist,
    /// `add header`.
    AddHeader,
    /// `rewrite subject`.
    RewriteSubject,
    /// `soft reject`.
    SoftReject,
    /// `reject`.
    Reject,
}

impl RspamdAction {
    /// Reads rspamd's action name.
    pub fn parse(s: &str) -> Option<RspamdAction> {
        Some(match s {
            "no action" => RspamdAction::NoAction,
            "greylist" => RspamdAction::Greylist,
            "add header" => RspamdAction::AddHeader,
            "rewrite subject" => RspamdAction::RewriteSubject,
            "soft reject" => RspamdAction::SoftReject,
            "reject" => RspamdAction::Reject,
            _ => return None,
        })
    }

    /// rspamd's name of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            RspamdAction::NoAction => "no action",
            RspamdAction::Greylist => "greylist",
            RspamdAction::AddHeader => "add header",
            RspamdAction::RewriteSubject => "rewrite subject",
            RspamdAction::SoftReject => "soft reject",
            RspamdAction::Reject => "reject",
        }
    }

    /// Whether rspamd considers the message spam (`X-Spam-Status: Yes`).
    pub fn is_spam(self) -> bool {
        !matches!(self, RspamdAction::NoAction | RspamdAction::Greylist)
    }
}

impl fmt::Display for RspamdAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// rspamd's answer to one `/checkv2`.
#[derive(Clone, Debug, PartialEq)]
pub struct RspamdResult {
    /// The recommended action.
    pub action: RspamdAction,
    /// The message's score.
    pub score: f64,
    /// The score of the `reject` action.
    pub required_score: f64,
    /// Names of the symbols that matched, sorted.
    pub symbols: Vec<String>,
    /// `messages.smtp_message`: the text rspamd suggests for the SMTP client.
    pub smtp_message: Option<String>,
    /// The `milter` block's header edits (cleaned; see [`parse_reply`]).
    pub milter: HeaderEdits,
    /// rspamd skipped the checks (settings, a pre-filter such as GTUBE).
    pub skipped: bool,
}

impl RspamdResult {
    /// `action=reject score=15.00/15.00 symbols=GTUBE,…` (logs).
    pub fn detail(&self) -> String {
        const MAX_SYMBOLS: usize = 20;
        let mut symbols = self
            .symbols
            .iter()
            .take(MAX_SYMBOLS)
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        if self.symbols.len() > MAX_SYMBOLS {
            symbols.push_str(",…");
        }
        format!(
            "action={} score={:.2}/{:.2} symbols={symbols}",
            self.action.as_str().replace(' ', "_"),
            self.score,
            self.required_score
        )
    }
}

#[derive(Deserialize)]
struct RawAnswer {
    action: Option<String>,
    score: Option<f64>,
    required_score: Option<f64>,
    #[serde(default)]
    is_skipped: bool,
    #[serde(default)]
    symbols: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    messages: Option<Value>,
    #[serde(default)]
    milter: Option<RawMilter>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct RawMilter {
    #[serde(default)]
    add_headers: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    remove_headers: Option<serde_json::Map<String, Value>>,
}

/// Reads a `/checkv2` JSON answer. The `milter` block's `add_headers` values may be a string,
/// `{"value": …, "order": n}` or a list of either (each becomes one added field, in `order`);
/// a JSON object has no order, so fields are added by `order`, then by name;
/// `remove_headers` maps a name to which instance to remove (`0` every one, `n` the n-th) —
/// Baton removes every instance either way. Invalid names are dropped, values unfolded.
pub fn parse_reply(body: &[u8]) -> Result<RspamdResult, FilterError> {
    let raw: RawAnswer = serde_json::from_slice(body).map_err(|e| {
        FilterError::Protocol(format!("rspamd answer is not the JSON expected: {e}"))
    })?;
    if let Some(error) = raw.error {
        return Err(FilterError::Scanner(format!("rspamd: {error}")));
    }
    let action_name = raw
        .action
        .ok_or_else(|| FilterError::Protocol("rspamd answer without an action".into()))?;
    let action = RspamdAction::parse(&action_name)
        .ok_or_else(|| FilterError::Protocol(format!("unknown rspamd action {action_name:?}")))?;
    let mut symbols: Vec<String> = raw
        .symbols
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    symbols.sort();
    let smtp_message = raw
        .messages
        .as_ref()
        .and_then(|m| m.get("smtp_message"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut milter = HeaderEdits::default();
    if let Some(m) = raw.milter {
        for (name, _) in m.remove_headers.into_iter().flatten() {
            milter.push_remove(&name);
        }
        let mut added: Vec<(i64, usize, String, String)> = Vec::new();
        for (name, value) in m.add_headers.into_iter().flatten() {
            let items = match value {
                Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                let (text, order) = match &item {
                    Value::String(s) => (Some(s.as_str()), 0),
                    Value::Object(o) => (
                        o.get("value").and_then(Value::as_str),
                        o.get("order").and_then(Value::as_i64).unwrap_or(0),
                    ),
                    _ => (None, 0),
                };
                if let Some(text) = text {
                    let seq = added.len();
                    added.push((order, seq, name.clone(), text.to_owned()));
                }
            }
        }
        added.sort_by_key(|(order, seq, _, _)| (*order, *seq));
        for (_, _, name, value) in added {
            milter.push_add(&name, &value);
        }
    }
    Ok(RspamdResult {
        action,
        score: raw.score.unwrap_or(0.0),
        required_score: raw.required_score.unwrap_or(0.0),
        symbols,
        smtp_message,
        milter,
        skipped: raw.is_skipped,
    })
}

/// What Baton does for an rspamd action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// Accept (rspamd's milter headers and the score headers still apply).
    Accept,
    /// Accept marked as spam: `X-Spam: Yes` added (a client-supplied `X-Spam` removed).
    Mark,
    /// Accept into quarantine.
    Quarantine,
    /// `451 4.7.1` with rspamd's SMTP message (or Baton's text).
    TempFail,
    /// `550 5.7.1` with rspamd's SMTP message (or the policy's reject text).
    Reject,
}

/// How rspamd's answer becomes a verdict. The defaults follow rspamd's own meaning of its
/// actions, except `greylist`, which an outbound relay accepts (greylisting is an inbound
/// tactic against the relay's own clients' retries).
#[derive(Clone, Debug, PartialEq)]
pub struct RspamdPolicy {
    /// For `reject` (default [`Treatment::Reject`]).
    pub on_reject: Treatment,
    /// For `soft reject` (default [`Treatment::TempFail`]).
    pub on_soft_reject: Treatment,
    /// For `add header` and `rewrite subject` (default [`Treatment::Mark`]; Baton does not
    /// rewrite the subject of outgoing mail).
    pub on_spam: Treatment,
    /// For `greylist` (default [`Treatment::Accept`]).
    pub on_greylist: Treatment,
    /// Quarantine a message accepted by its action whose score is at least this.
    pub quarantine_score: Option<f64>,
    /// Add `X-Spam-Score` and `X-Spam-Status` (client-supplied ones removed) to accepted mail
    /// (default true).
    pub score_headers: bool,
    /// Apply the `milter` block's header edits to accepted mail (default true).
    pub milter_headers: bool,
    /// Tell the client rspamd's `smtp_message` when there is one (default true).
    pub use_smtp_message: bool,
    /// Text of a reject without rspamd's message (default `Spam message rejected`).
    pub reject_text: String,
}

impl Default for RspamdPolicy {
    fn default() -> RspamdPolicy {
        RspamdPolicy {
            on_reject: Treatment::Reject,
            on_soft_reject: Treatment::TempFail,
            on_spam: Treatment::Mark,
            on_greylist: Treatment::Accept,
            quarantine_score: None,
            score_headers: true,
            milter_headers: true,
            use_smtp_message: true,
            reject_text: "Spam message rejected".into(),
        }
    }
}

impl RspamdPolicy {
    /// The verdict for rspamd's answer.
    pub fn verdict(&self, result: &RspamdResult) -> Verdict {
        let treatment = match result.action {
            RspamdAction::NoAction => Treatment::Accept,
            RspamdAction::Greylist => self.on_greylist,
            RspamdAction::AddHeader | RspamdAction::RewriteSubject => self.on_spam,
            RspamdAction::SoftReject => self.on_soft_reject,
            RspamdAction::Reject => self.on_reject,
        };
        let message = result
            .smtp_message
            .as_deref()
            .filter(|_| self.use_smtp_message)
            .unwrap_or("");
        match treatment {
            Treatment::Reject => {
                let text = if message.trim().is_empty() {
                    self.reject_text.as_str()
                } else {
                    message
                };
                return Verdict::reject(text);
            }
            Treatment::TempFail => return Verdict::tempfail(message),
            Treatment::Quarantine => {
                return Verdict::Quarantine {
                    reason: format!("rspamd {}", result.detail()),
                };
            }
            Treatment::Accept | Treatment::Mark => {}
        }
        if let Some(threshold) = self.quarantine_score
            && result.score >= threshold
        {
            return Verdict::Quarantine {
                reason: format!("rspamd score at least {threshold:.2}: {}", result.detail()),
            };
        }
        let mut edits = HeaderEdits::default();
        if self.milter_headers {
            edits.extend(result.milter.clone());
        }
        if self.score_headers {
            edits.push_remove("X-Spam-Score");
            edits.push_remove("X-Spam-Status");
            edits.push_add("X-Spam-Score", &format!("{:.2}", result.score));
            edits.push_add(
                "X-Spam-Status",
                &format!(
                    "{}, score={:.2} required={:.2}",
                    if result.action.is_spam() { "Yes" } else { "No" },
                    result.score,
                    result.required_score
                ),
            );
        }
        if treatment == Treatment::Mark {
            edits.push_remove("X-Spam");
            edits.push_add("X-Spam", "Yes");
        }
        Verdict::accept_with(edits)
    }
}

/// Where and how to reach rspamd.
#[derive(Clone, Debug, PartialEq)]
pub struct RspamdConfig {
    /// Base URL of rspamd's normal (or proxy) worker, `http://host:port`.
    pub url: String,
    /// rspamd's `Settings-ID` (e.g. an outbound settings profile).
    pub settings_id: Option<String>,
    /// How answers become verdicts.
    pub policy: RspamdPolicy,
}

/// A client of one rspamd (connections kept alive and reused).
#[derive(Clone)]
pub struct RspamdClient {
    client: Client<HttpConnector, Full<Bytes>>,
    check: http::Uri,
    ping: http::Uri,
    settings_id: Option<String>,
    policy: RspamdPolicy,
}

impl fmt::Debug for RspamdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RspamdClient")
            .field("check", &self.check)
            .finish()
    }
}

impl RspamdClient {
    /// A client for `config` (`http://` URLs only); `connect_timeout` bounds connecting.
    pub fn new(config: &RspamdConfig, connect_timeout: Duration) -> Result<Self, FilterError> {
        let base: http::Uri = config
            .url
            .parse()
            .map_err(|e| FilterError::Config(format!("rspamd url {:?}: {e}", config.url)))?;
        if base.scheme_str() != Some("http") || base.host().is_none() {
            return Err(FilterError::Config(format!(
                "rspamd url {:?}: not an http:// URL",
                config.url
            )));
        }
        let prefix = base.path().trim_end_matches('/').to_owned();
        let uri = |path: &str| -> Result<http::Uri, FilterError> {
            let mut parts = base.clone().into_parts();
            parts.path_and_query = Some(
                format!("{prefix}{path}")
                    .parse()
                    .map_err(|e| FilterError::Config(format!("rspamd url: {e}")))?,
            );
            http::Uri::from_parts(parts)
                .map_err(|e| FilterError::Config(format!("rspamd url: {e}")))
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(RspamdClient {
            client,
            check: uri("/checkv2")?,
            ping: uri("/ping")?,
            settings_id: config.settings_id.clone(),
            policy: config.policy.clone(),
        })
    }

    /// The policy answers are mapped with.
    pub fn policy(&self) -> &RspamdPolicy {
        &self.policy
    }

    /// Asks rspamd about one message (unbounded: the caller's [`crate::Gate`] bounds it).
    pub async fn scan(&self, request: &ScanRequest) -> Result<RspamdResult, FilterError> {
        let mut builder = http::Request::post(self.check.clone())
            .header(http::header::USER_AGENT, "baton-filter")
            .header(http::header::CONTENT_TYPE, "message/rfc822");
        let from = if request.sender.is_empty() {
            "<>"
        } else {
            request.sender.as_str()
        };
        let mut context: Vec<(&str, String)> = vec![("From", from.to_owned())];
        for rcpt in &request.recipients {
            context.push(("Rcpt", rcpt.clone()));
        }
        if let Some(ip) = request.client_ip {
            context.push(("IP", ip.to_string()));
        }
        let optional = [
            ("Hostname", request.client_hostname.as_deref()),
            ("Helo", request.helo.as_deref()),
            ("User", request.user.as_deref()),
            ("Queue-Id", Some(request.queue_id.as_str())),
            ("Settings-ID", self.settings_id.as_deref()),
        ];
        for (name, value) in optional {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                context.push((name, value.to_owned()));
            }
        }
        for (name, value) in context {
            match http::HeaderValue::from_str(&value) {
                Ok(v) => builder = builder.header(name, v),
                // A value HTTP cannot carry (control characters) is left out, not sent broken.
                Err(_) => tracing::debug!(header = name, "rspamd: context value left out"),
            }
        }
        let http_request = builder
            .body(Full::new(request.message.clone()))
            .map_err(|e| FilterError::Http(e.to_string()))?;
        let response = self.client.request(http_request).await.map_err(|e| {
            if e.is_connect() {
                FilterError::Connect {
                    address: self
                        .check
                        .authority()
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    source: std::io::Error::other(e),
                }
            } else {
                FilterError::Http(e.to_string())
            }
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| FilterError::Http(format!("reading the answer: {e}")))?
            .to_bytes();
        if status != http::StatusCode::OK {
            let error = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default();
            return Err(FilterError::Http(format!("status {status} {error}")));
        }
        parse_reply(&body)
    }

    /// Scans and maps the answer with the policy: `(verdict, detail for logs)`.
    pub async fn check(&self, request: &ScanRequest) -> Result<(Verdict, String), FilterError> {
        let result = self.scan(request).await?;
        Ok((self.policy.verdict(&result), result.detail()))
    }

    /// `GET /ping` answered `pong` (readiness).
    pub async fn ping(&self) -> Result<(), FilterError> {
        let request = http::Request::get(self.ping.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|e| FilterError::Http(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| FilterError::Http(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 1024)
            .collect()
            .await
            .map_err(|e| FilterError::Http(e.to_string()))?
            .to_bytes();
        if status == http::StatusCode::OK && body.trim_ascii().starts_with(b"pong") {
            Ok(())
        } else {
            Err(FilterError::Protocol(format!("ping: status {status}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VerdictKind;

    const GTUBE: &str = r#"{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},"message-id":"1@example.com","time_real":0.079413}"#;
    const CLEAN: &str = r#"{"is_skipped":false,"score":-0.100000,"required_score":15.0,"action":"no action","symbols":{"MIME_GOOD":{"name":"MIME_GOOD","score":-0.1},"ARC_NA":{"name":"ARC_NA","score":0.0}},"messages":{},"milter":{"add_headers":{"X-Spamd-Bar":{"value":"/","order":0},"X-Rspamd-Queue-Id":"Q1","Multi":[{"value":"b","order":2},{"value":"a","order":1}],"Bad Name":"x"},"remove_headers":{"X-Spam":0,"X-Spamd-Bar":1}}}"#;

    fn parse(s: &str) -> RspamdResult {
        parse_reply(s.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn reads_a_reject_answer() {
        let r = parse(GTUBE);
        assert_eq!(r.action, RspamdAction::Reject);
        assert_eq!(r.score, 15.0);
        assert_eq!(r.symbols, ["GTUBE"]);
        assert_eq!(r.smtp_message.as_deref(), Some("Gtube pattern"));
        assert!(r.skipped && r.milter.is_empty());
        assert_eq!(r.detail(), "action=reject score=15.00/15.00 symbols=GTUBE");
    }

    #[test]
    fn reads_the_milter_block_in_every_form() {
        let r = parse(CLEAN);
        assert_eq!(r.action, RspamdAction::NoAction);
        assert_eq!(r.symbols, ["ARC_NA", "MIME_GOOD"]);
        assert_eq!(r.smtp_message, None);
        assert_eq!(r.milter.remove, ["X-Spam", "X-Spamd-Bar"]);
        let added: Vec<(&str, &str)> = r
            .milter
            .add
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            added,
            [
                ("X-Rspamd-Queue-Id", "Q1"),
                ("X-Spamd-Bar", "/"),
                ("Multi", "a"),
                ("Multi", "b")
            ]
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for bad in [
            "not json",
            "{}",
            r#"{"action":"explode","score":1}"#,
            r#"{"action":7}"#,
        ] {
            assert!(
                matches!(parse_reply(bad.as_bytes()), Err(FilterError::Protocol(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_reply(br#"{"error":"bad request"}"#),
            Err(FilterError::Scanner(_))
        ));
    }

    fn with_action(action: RspamdAction, score: f64, message: Option<&str>) -> RspamdResult {
        RspamdResult {
            action,
            score,
            required_score: 15.0,
            symbols: vec!["S".into()],
            smtp_message: message.map(str::to_owned),
            milter: HeaderEdits::default(),
            skipped: false,
        }
    }

    #[test]
    fn default_policy_maps_every_action() {
        let p = RspamdPolicy::default();
        assert_eq!(
            p.verdict(&with_action(
                RspamdAction::Reject,
                20.0,
                Some("Gtube pattern")
            )),
            Verdict::reject("Gtube pattern")
        );
        assert_eq!(
            p.verdict(&with_action(RspamdAction::Reject, 20.0, None)),
            Verdict::reject("Spam message rejected")
        );
        assert_eq!(
            p.verdict(&with_action(
                RspamdAction::SoftReject,
                9.0,
                Some("Try again later")
            )),
            Verdict::tempfail("Try again later")
        );
        let marked = p.verdict(&with_action(RspamdAction::AddHeader, 7.0, None));
        let Verdict::Accept {
            add_headers,
            remove_headers,
        } = marked
        else {
            panic!("{marked:?}")
        };
        assert_eq!(
            add_headers,
            [
                ("X-Spam-Score".to_owned(), "7.00".to_owned()),
                (
                    "X-Spam-Status".to_owned(),
                    "Yes, score=7.00 required=15.00".to_owned()
                ),
                ("X-Spam".to_owned(), "Yes".to_owned())
            ]
        );
        assert_eq!(remove_headers, ["X-Spam-Score", "X-Spam-Status", "X-Spam"]);
        let rewrite = p.verdict(&with_action(RspamdAction::RewriteSubject, 8.0, None));
        assert!(
            matches!(&rewrite, Verdict::Accept { add_headers, .. } if add_headers.iter().any(|(n, v)| n == "X-Spam" && v == "Yes"))
        );
        let grey = p.verdict(&with_action(
            RspamdAction::Greylist,
            4.0,
            Some("Try again later"),
        ));
        assert!(
            matches!(&grey, Verdict::Accept { add_headers, .. } if add_headers.iter().any(|(n, v)| n == "X-Spam-Status" && v.starts_with("No,")))
        );
        let clean = p.verdict(&parse(CLEAN));
        let Verdict::Accept {
            add_headers,
            remove_headers,
        } = clean
        else {
            panic!("{clean:?}")
        };
        assert_eq!(add_headers.len(), 6, "4 milter + 2 score headers");
        assert_eq!(
            remove_headers,
            ["X-Spam", "X-Spamd-Bar", "X-Spam-Score", "X-Spam-Status"]
        );
    }

    #[test]
    fn configurable_treatments_and_quarantine_score() {
        let p = RspamdPolicy {
            on_reject: Treatment::Quarantine,
            on_greylist: Treatment::TempFail,
            quarantine_score: Some(6.0),
            score_headers: false,
            milter_headers: false,
            use_smtp_message: false,
            ..RspamdPolicy::default()
        };
        assert_eq!(
            p.verdict(&with_action(RspamdAction::Reject, 20.0, Some("x")))
                .kind(),
            VerdictKind::Quarantine
        );
        assert_eq!(
            p.verdict(&with_action(RspamdAction::Greylist, 1.0, Some("internal")),),
            Verdict::tempfail("")
        );
        assert_eq!(
            p.verdict(&with_action(RspamdAction::AddHeader, 6.0, None))
                .kind(),
            VerdictKind::Quarantine
        );
        assert_eq!(
            p.verdict(&with_action(RspamdAction::NoAction, 5.9, None)),
            Verdict::accept()
        );
        assert_eq!(
            p.verdict(&parse(CLEAN)),
            Verdict::accept(),
            "milter headers off"
        );
    }

    #[test]
    fn only_http_urls() {
        let config = |url: &str| RspamdConfig {
            url: url.into(),
            settings_id: None,
            policy: RspamdPolicy::default(),
        };
        assert!(
            RspamdClient::new(&config("http://127.0.0.1:11333"), Duration::from_secs(1)).is_ok()
        );
        for bad in ["https://rspamd:11333", "rspamd:11333", "not a url"] {
            assert!(
                matches!(
                    RspamdClient::new(&config(bad), Duration::from_secs(1)),
                    Err(FilterError::Config(_))
                ),
                "{bad}"
            );
        }
        let c = RspamdClient::new(&config("http://h:1/prefix/"), Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.check.to_string(), "http://h:1/prefix/checkv2");
    }
}
