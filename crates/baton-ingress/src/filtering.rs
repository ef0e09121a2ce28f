//! Content filtering at the end of DATA (issue 19): the RelayDomain's header policy, then the
//! pool's content filters (`baton_filter`), before Baton's trace header and DKIM signing, so
//! the signature covers the final form and the client gets the verdict in the DATA reply.
//!
//! - [`Filtering`] is built once per config snapshot (with [`crate::Snapshot`]): each pool's
//!   [`Filter`]s (their connection pools and concurrency bounds) and each RelayDomain's header
//!   policy. A pool whose filters cannot be built (a URL the client refuses) defers all its
//!   mail with `451 4.7.1` rather than letting it pass unscanned.
//! - [`screen`] runs them on one transaction: the header policy is applied, the filters judge
//!   the result, an accepting verdict's header edits are applied (removals, then additions);
//!   a reject is `550 5.7.1`, a temporary failure (or a busy or fail-closed filter) `451
//!   4.7.1`, a quarantine is [`Screened::Quarantine`] (the hand-off stores the message in the
//!   pool's quarantine and answers `250`: the sender is deliberately not told). Every filter
//!   call is counted (`baton_filter_verdicts_total`, `baton_filter_duration_seconds`).
//! - The header edits themselves are pure ([`edit_headers`], [`apply_policy`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use baton_core::headers::split_headers;
use baton_filter::clamd::ClamdConfig;
use baton_filter::grpc::GrpcConfig;
use baton_filter::rspamd::{RspamdConfig, RspamdPolicy, Treatment};
use baton_filter::{FailureMode, Filter, ReportResult, ScanRequest, Settings, Verdict};
use baton_proto::v1::{
    self as pb, ContentFilter, FilterFailureMode, FilterTreatment, HeaderPolicy, RelayConfig,
    content_filter::Kind,
};
use baton_smtp::session::Transaction;
use baton_smtp::{EnhancedStatus, ForwardPath, Reply};
use baton_telemetry::Metrics;

/// Text of the `451 4.7.1` for a pool whose filters could not be set up.
pub const MISCONFIGURED_TEXT: &str = "Content filter unavailable, try again later";

/// Fields neither a header policy nor a filter's edits may remove or add: the authors the
/// ingress checks against the RelayDomain and the signatures it writes (the compiler refuses
/// such a policy; this is the data plane's own guard, and the hand-off checks the authors
/// again after the edits).
pub const PROTECTED: [&str; 3] = ["From", "Sender", "DKIM-Signature"];

/// Whether `name` is one of [`PROTECTED`].
pub fn protected(name: &str) -> bool {
    PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// Longest header line Baton writes when folding an added field (RFC 5322 recommends 78).
const FOLD_AT: usize = 78;

/// The filters of one pool.
#[derive(Clone, Debug)]
enum PoolFilters {
    Ready(Arc<[Filter]>),
    /// Why they could not be built (logged once per snapshot).
    Broken(String),
}

/// Each pool's content filters and each RelayDomain's header policy, per snapshot.
#[derive(Clone, Debug, Default)]
pub struct Filtering {
    pools: HashMap<String, PoolFilters>,
    headers: HashMap<String, HeaderPolicy>,
}

impl Filtering {
    /// Builds the filters of every pool that has some (inside a tokio runtime for gRPC
    /// filters; outside one they count as not built) and indexes the header policies.
    pub fn new(config: &RelayConfig) -> Filtering {
        let mut pools = HashMap::new();
        for pool in &config.pools {
            if pool.content_filters.is_empty() {
                continue;
            }
            let built: Result<Vec<Filter>, String> =
                pool.content_filters.iter().map(build_filter).collect();
            let entry = match built {
                Ok(filters) => PoolFilters::Ready(filters.into()),
                Err(why) => {
                    tracing::error!(pool = %pool.name, error = %why, "content filters unusable: the pool's mail is deferred with 451 4.7.1");
                    PoolFilters::Broken(why)
                }
            };
            pools.insert(pool.name.clone(), entry);
        }
        let headers = config
            .domains
            .iter()
            .filter_map(|d| Some((d.name.clone(), d.headers.clone()?)))
            .collect();
        Filtering { pools, headers }
    }

    /// The filters of `pool` (empty: none); `Err` when they could not be built.
    pub fn filters(&self, pool: &str) -> Result<&[Filter], &str> {
        match self.pools.get(pool) {
            None => Ok(&[]),
            Some(PoolFilters::Ready(f)) => Ok(f),
            Some(PoolFilters::Broken(why)) => Err(why),
        }
    }

    /// The header policy of RelayDomain `relay_domain` (`namespace/name`).
    pub fn header_policy(&self, relay_domain: &str) -> Option<&HeaderPolicy> {
        self.headers.get(relay_domain)
    }
}

/// A `baton_filter::Filter` from its snapshot form.
pub fn build_filter(f: &ContentFilter) -> Result<Filter, String> {
    let settings = Settings {
        name: f.name.clone(),
        timeout: Duration::from_millis(f.timeout_ms.max(1)),
        max_concurrent: usize::try_from(f.max_concurrent.max(1)).unwrap_or(1),
        failure_mode: match FilterFailureMode::try_from(f.failure_mode) {
            Ok(FilterFailureMode::Open) => FailureMode::Open,
            _ => FailureMode::Closed,
        },
    };
    let named = |e: baton_filter::FilterError| format!("filter {}: {e}", f.name);
    match &f.kind {
        Some(Kind::Rspamd(r)) => Filter::rspamd(&settings, &rspamd_config(r)).map_err(named),
        Some(Kind::Clamd(c)) => Ok(Filter::clamd(
            &settings,
            ClamdConfig {
                address: c.address.clone(),
                quarantine: c.quarantine,
            },
        )),
        Some(Kind::Grpc(g)) => {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(format!("filter {}: no async runtime", f.name));
            }
            Filter::grpc(
                &settings,
                &GrpcConfig {
                    endpoint: g.endpoint.clone(),
                },
            )
            .map_err(named)
        }
        None => Err(format!("filter {}: no kind", f.name)),
    }
}

fn rspamd_config(r: &pb::RspamdFilter) -> RspamdConfig {
    let defaults = RspamdPolicy::default();
    let treatment = |t: i32, default: Treatment| match FilterTreatment::try_from(t) {
        Ok(FilterTreatment::Accept) => Treatment::Accept,
        Ok(FilterTreatment::Mark) => Treatment::Mark,
        Ok(FilterTreatment::Quarantine) => Treatment::Quarantine,
        Ok(FilterTreatment::Tempfail) => Treatment::TempFail,
        Ok(FilterTreatment::Reject) => Treatment::Reject,
        Ok(FilterTreatment::Default) | Err(_) => default,
    };
    RspamdConfig {
        url: r.url.clone(),
        settings_id: (!r.settings_id.is_empty()).then(|| r.settings_id.clone()),
        policy: RspamdPolicy {
            on_reject: treatment(r.on_reject, defaults.on_reject),
            on_soft_reject: treatment(r.on_soft_reject, defaults.on_soft_reject),
            on_spam: treatment(r.on_spam, defaults.on_spam),
            on_greylist: treatment(r.on_greylist, defaults.on_greylist),
            quarantine_score: r.quarantine_score,
            score_headers: !r.no_score_headers,
            milter_headers: !r.no_milter_headers,
            use_smtp_message: defaults.use_smtp_message,
            reject_text: if r.reject_text.is_empty() {
                defaults.reject_text
            } else {
                r.reject_text.clone()
            },
        },
    }
}

/// What [`screen`] decided for a message that goes on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Screened {
    /// Queue it for delivery.
    Deliver,
    /// Queue it in the pool's quarantine (why: logs and the event, never the client).
    Quarantine {
        /// The filter that decided.
        filter: String,
        /// Its reason.
        reason: String,
    },
}

/// Applies `tx`'s RelayDomain header policy and runs its pool's filters (see the module doc),
/// editing `tx.body` in place. `Err` is the DATA reply of a refused message.
pub async fn screen(
    filtering: &Filtering,
    tx: &mut Transaction,
    id: &str,
    client: IpAddr,
    metrics: &Metrics,
) -> Result<Screened, Reply> {
    let relay_domain = tx.grant.relay_domain.as_str();
    if let Some(policy) = filtering.header_policy(relay_domain)
        && let Some(edited) = apply_policy(&tx.body, policy)
    {
        tx.body = edited;
    }
    let filters = filtering.filters(&tx.grant.pool).map_err(|why| {
        tracing::warn!(queue_id = id, pool = %tx.grant.pool, error = why, "content filters unusable, message deferred");
        Reply::with_status(451, EnhancedStatus::new(4, 7, 1), MISCONFIGURED_TEXT)
    })?;
    if filters.is_empty() {
        return Ok(Screened::Deliver);
    }
    let request = ScanRequest {
        sender: crate::handoff::sender_text(&tx.reverse_path),
        recipients: tx
            .recipients
            .iter()
            .map(|r| match &r.path {
                ForwardPath::Mailbox(a) => a.to_string(),
                ForwardPath::Postmaster => "postmaster".to_owned(),
            })
            .collect(),
        client_ip: Some(client),
        client_hostname: None,
        helo: (!tx.helo.is_empty()).then(|| tx.helo.clone()),
        user: tx.authenticated.clone(),
        relay_domain: relay_domain.to_owned(),
        queue_id: id.to_owned(),
        message: std::mem::take(&mut tx.body).into(),
    };
    let decision = baton_filter::run(filters, &request).await;
    // The request was the only holder: the body comes back without a copy.
    tx.body = Vec::from(request.message);
    for report in &decision.reports {
        let label = report.label();
        metrics
            .filter_verdicts
            .with_label_values(&[&report.filter, label])
            .inc();
        if !matches!(report.result, ReportResult::Busy) {
            metrics
                .filter_duration
                .with_label_values(&[&report.filter])
                .observe(report.elapsed.as_secs_f64());
        }
        match &report.result {
            ReportResult::Answered { detail, .. } => tracing::debug!(
                queue_id = id, filter = %report.filter, verdict = label, detail = %detail,
                elapsed_ms = report.elapsed.as_millis() as u64, "content filter answered"
            ),
            ReportResult::Busy => tracing::warn!(
                queue_id = id, filter = %report.filter, "content filter busy, message deferred"
            ),
            ReportResult::Failed { error, mode } => tracing::warn!(
                queue_id = id, filter = %report.filter, error = %error,
                failure_mode = if *mode == FailureMode::Open { "open" } else { "closed" },
                "content filter failed"
            ),
        }
    }
    let decided_by = decision
        .decided_by()
        .map(|r| r.filter.to_string())
        .unwrap_or_default();
    match decision.verdict {
        Verdict::Accept {
            add_headers,
            remove_headers,
        } => {
            if !add_headers.is_empty() || !remove_headers.is_empty() {
                let add: Vec<(String, String)> = add_headers
                    .into_iter()
                    .filter(|(name, _)| !protected(name))
                    .collect();
                tx.body = edit_headers(
                    &tx.body,
                    |name| {
                        !protected(name)
                            && remove_headers.iter().any(|r| r.eq_ignore_ascii_case(name))
                    },
                    &add,
                );
            }
            Ok(Screened::Deliver)
        }
        Verdict::Quarantine { reason } => Ok(Screened::Quarantine {
            filter: decided_by,
            reason,
        }),
        refused => {
            let reply = refused.reply().unwrap_or_else(|| {
                Reply::with_status(451, EnhancedStatus::new(4, 7, 1), MISCONFIGURED_TEXT)
            });
            tracing::info!(
                queue_id = id, relay_domain, filter = %decided_by,
                verdict = refused.kind().as_str(), code = reply.code,
                "message refused by content filter"
            );
            Err(reply)
        }
    }
}

/// `body` with the RelayDomain's header policy applied; `None` when nothing changes.
pub fn apply_policy(body: &[u8], policy: &HeaderPolicy) -> Option<Vec<u8>> {
    if policy.remove.is_empty() && !policy.remove_received && policy.add.is_empty() {
        return None;
    }
    let add: Vec<(String, String)> = policy
        .add
        .iter()
        .filter(|f| !protected(&f.name))
        .map(|f| (f.name.clone(), f.value.clone()))
        .collect();
    Some(edit_headers(
        body,
        |name| {
            !protected(name)
                && ((policy.remove_received && name.eq_ignore_ascii_case("Received"))
                    || policy.remove.iter().any(|r| name_matches(r, name)))
        },
        &add,
    ))
}

/// Whether field `name` matches a policy entry: the same name (case-insensitive), or for an
/// entry ending in `*`, a name starting with the rest.
pub fn name_matches(entry: &str, name: &str) -> bool {
    match entry.strip_suffix('*') {
        Some(prefix) => {
            name.len() >= prefix.len()
                && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        None => entry.eq_ignore_ascii_case(name),
    }
}

/// `body` with every header field whose name `remove` selects taken out (with its
/// continuation lines) and `add` appended to the header block, each folded at whitespace to
/// lines of about 78 characters. The body after the header block is unchanged.
pub fn edit_headers(
    body: &[u8],
    remove: impl Fn(&str) -> bool,
    add: &[(String, String)],
) -> Vec<u8> {
    let (headers, rest) = split_headers(body);
    let mut out = Vec::with_capacity(body.len() + add.len() * 80);
    let mut keep = true;
    let mut pos = 0;
    while pos < headers.len() {
        let end = headers[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(headers.len(), |i| pos + i + 1);
        let line = &headers[pos..end];
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            keep = match line.iter().position(|&b| b == b':') {
                Some(colon) => !remove(&String::from_utf8_lossy(line[..colon].trim_ascii_end())),
                None => true,
            };
        }
        if keep {
            out.extend_from_slice(line);
        }
        pos = end;
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in add {
        out.extend_from_slice(fold(name, value).as_bytes());
    }
    if headers.len() < body.len() {
        // The separator line as it was, then the body.
        out.extend_from_slice(&body[headers.len()..body.len() - rest.len()]);
        out.extend_from_slice(rest);
    }
    out
}

/// `Name: value\r\n`, folded at spaces so lines stay near [`FOLD_AT`] characters (a single
/// word longer than that stays on its own line).
pub fn fold(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    for word in value.split(' ').filter(|w| !w.is_empty()) {
        if line_len + 1 + word.len() > FOLD_AT && line_len > name.len() + 1 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(word);
        line_len += 1 + word.len();
    }
    out.push_str("\r\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from a by b\r\n\tfor <x@example.com>\r\nFrom: a@example.com\r\nX-Internal-Trace: 1\r\n  continued\r\nX-Mailer: m\r\nSubject: hi\r\n\r\nbody\r\nX-Internal-Trace: body line kept\r\n";

    fn policy(remove: &[&str], received: bool, add: &[(&str, &str)]) -> HeaderPolicy {
        HeaderPolicy {
            remove: remove.iter().map(|s| (*s).to_owned()).collect(),
            remove_received: received,
            add: add
                .iter()
                .map(|(n, v)| pb::HeaderField {
                    name: (*n).to_owned(),
                    value: (*v).to_owned(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_policy_removes_fields_with_their_continuations_then_adds() {
        let p = policy(
            &["x-internal-*", "X-Mailer"],
            true,
            &[("List-Unsubscribe", "<mailto:u@example.com>")],
        );
        let out = apply_policy(MSG, &p).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: a@example.com\r\nSubject: hi\r\nList-Unsubscribe: <mailto:u@example.com>\r\n\r\nbody\r\nX-Internal-Trace: body line kept\r\n"
        );
        assert_eq!(apply_policy(MSG, &policy(&[], false, &[])), None);
    }

    #[test]
    fn authors_and_signatures_are_never_edited() {
        let p = policy(
            &["*", "F*", "sender", "DKIM-Signature"],
            false,
            &[
                ("From", "ceo@bank.example"),
                ("sender", "x@bank.example"),
                ("X-Ok", "1"),
            ],
        );
        let body = b"From: a@example.com\r\nSender: a@example.com\r\nDKIM-Signature: v=1\r\nX-Gone: 1\r\n\r\nb\r\n";
        let out = String::from_utf8(apply_policy(body, &p).unwrap()).unwrap();
        assert_eq!(
            out,
            "From: a@example.com\r\nSender: a@example.com\r\nDKIM-Signature: v=1\r\nX-Ok: 1\r\n\r\nb\r\n"
        );
    }

    #[test]
    fn prefixes_and_names_match_case_insensitively() {
        assert!(name_matches("X-Internal-*", "x-internal-trace"));
        assert!(name_matches("X-Internal-*", "X-Internal-"));
        assert!(!name_matches("X-Internal-*", "X-Intern"));
        assert!(name_matches("x-mailer", "X-Mailer"));
        assert!(!name_matches("X-Mailer", "X-Mailer-Version"));
    }

    #[test]
    fn messages_without_a_body_or_a_final_line_break_keep_their_shape() {
        let out = edit_headers(
            b"Subject: a\r\nX-A: 1",
            |n| n == "X-A",
            &[("X-B".into(), "2".into())],
        );
        assert_eq!(out, b"Subject: a\r\nX-B: 2\r\n");
        let out = edit_headers(
            b"\r\nbody only\r\n",
            |_| false,
            &[("X-B".into(), "2".into())],
        );
        assert_eq!(out, b"X-B: 2\r\n\r\nbody only\r\n");
    }

    #[test]
    fn long_added_values_are_folded() {
        let value = "word ".repeat(40);
        let folded = fold("X-Spamd-Result", value.trim());
        assert!(folded.ends_with("\r\n"));
        for line in folded.trim_end().split("\r\n") {
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
        assert!(
            folded
                .split("\r\n")
                .skip(1)
                .filter(|l| !l.is_empty())
                .all(|l| l.starts_with(' '))
        );
        let unfolded: String = folded.replace("\r\n", "");
        assert_eq!(unfolded, format!("X-Spamd-Result: {}", value.trim()));
    }

    #[test]
    fn filters_are_built_per_snapshot_and_a_bad_one_marks_its_pool() {
        let good = ContentFilter {
            name: "av".into(),
            timeout_ms: 1000,
            max_concurrent: 2,
            failure_mode: FilterFailureMode::Open as i32,
            kind: Some(Kind::Clamd(pb::ClamdFilter {
                address: "127.0.0.1:3310".into(),
                quarantine: false,
            })),
        };
        let bad = ContentFilter {
            name: "spam".into(),
            kind: Some(Kind::Rspamd(pb::RspamdFilter {
                url: "ftp://nowhere".into(),
                ..Default::default()
            })),
            ..good.clone()
        };
        let config = RelayConfig {
            pools: vec![
                pb::SendingPool {
                    name: "a".into(),
                    content_filters: vec![good.clone()],
                    ..Default::default()
                },
                pb::SendingPool {
                    name: "b".into(),
                    content_filters: vec![good, bad],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let f = Filtering::new(&config);
        let a = f.filters("a").unwrap();
        assert_eq!(
            (a.len(), a[0].name(), a[0].failure_mode()),
            (1, "av", FailureMode::Open)
        );
        assert!(f.filters("b").unwrap_err().contains("spam"));
        assert!(f.filters("none").unwrap().is_empty());
    }

    #[test]
    fn rspamd_treatments_default_to_the_crate_policy() {
        let c = rspamd_config(&pb::RspamdFilter {
            url: "http://r:1".into(),
            on_spam: FilterTreatment::Quarantine as i32,
            quarantine_score: Some(9.0),
            no_score_headers: true,
            ..Default::default()
        });
        let d = RspamdPolicy::default();
        assert_eq!(c.policy.on_spam, Treatment::Quarantine);
        assert_eq!(
            (
                c.policy.on_reject,
                c.policy.on_soft_reject,
                c.policy.on_greylist
            ),
            (d.on_reject, d.on_soft_reject, d.on_greylist)
        );
        assert_eq!(c.policy.quarantine_score, Some(9.0));
        assert!(!c.policy.score_headers && c.policy.milter_headers);
        assert_eq!(c.policy.reject_text, d.reject_text);
        assert_eq!(c.settings_id, None);
    }
}
