//! SendingPool `spec.contentFilters` → `baton.v1.ContentFilter`s and RelayDomain `spec.headers`
//! → `baton.v1.HeaderPolicy` (issue 19). Pure: everything the ingress needs is decided here
//! (timeouts in milliseconds, defaults written out), so the data plane never decides a default.

use std::time::Duration;

use baton_proto::v1 as pb;

use crate::crd::{
    ContentFilterSpec, FailureMode, HeaderPolicySpec, RspamdFilterSpec, SendingPoolSpec, Treatment,
};
use crate::units::parse_duration;

/// Shortest filter timeout accepted.
pub const MIN_FILTER_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest filter timeout accepted (the client waits for its DATA reply meanwhile).
pub const MAX_FILTER_TIMEOUT: Duration = Duration::from_secs(300);

/// `(field path, message)` of the first problem.
pub(crate) type FieldError = (String, String);

/// The pool's content filters, in order.
pub(crate) fn compile_filters(
    spec: &SendingPoolSpec,
) -> Result<Vec<pb::ContentFilter>, FieldError> {
    let mut out: Vec<pb::ContentFilter> = Vec::with_capacity(spec.content_filters.len());
    for (i, f) in spec.content_filters.iter().enumerate() {
        let field = |f: &str| format!("spec.contentFilters[{i}].{f}");
        let filter = compile_filter(f).map_err(|(f, m)| (field(&f), m))?;
        if out.iter().any(|o| o.name == filter.name) {
            return Err((field("name"), format!("{:?} is used twice", filter.name)));
        }
        out.push(filter);
    }
    Ok(out)
}

fn compile_filter(f: &ContentFilterSpec) -> Result<pb::ContentFilter, FieldError> {
    let err = |field: &str, m: String| (field.to_owned(), m);
    let label_ok = (1..=63).contains(&f.name.len())
        && f.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !f.name.starts_with('-')
        && !f.name.ends_with('-');
    if !label_ok {
        return Err(err("name", format!("{:?} is not a DNS label", f.name)));
    }
    let timeout = parse_duration(&f.timeout).map_err(|m| err("timeout", m))?;
    if !(MIN_FILTER_TIMEOUT..=MAX_FILTER_TIMEOUT).contains(&timeout) {
        return Err(err(
            "timeout",
            format!("{:?} is not between 100ms and 5m", f.timeout),
        ));
    }
    if f.max_concurrent == 0 {
        return Err(err("maxConcurrent", "must be at least 1".into()));
    }
    let kind = match (&f.rspamd, &f.clamd, &f.grpc) {
        (Some(r), None, None) => pb::content_filter::Kind::Rspamd(
            rspamd(r).map_err(|(f, m)| (format!("rspamd.{f}"), m))?,
        ),
        (None, Some(c), None) => {
            if !valid_host_port(&c.address) {
                return Err(err(
                    "clamd.address",
                    format!("{:?} is not host:port", c.address),
                ));
            }
            pb::content_filter::Kind::Clamd(pb::ClamdFilter {
                address: c.address.clone(),
                quarantine: c.quarantine,
            })
        }
        (None, None, Some(g)) => {
            let e = g.endpoint.trim();
            if !e.starts_with("http://") || e.len() <= "http://".len() || e.contains('@') {
                return Err(err("grpc.endpoint", format!("{e:?} is not an http:// URL")));
            }
            pb::content_filter::Kind::Grpc(pb::GrpcFilter {
                endpoint: e.to_owned(),
            })
        }
        _ => {
            return Err(err(
                "",
                "exactly one of rspamd, clamd or grpc must be set".into(),
            ));
        }
    };
    Ok(pb::ContentFilter {
        name: f.name.clone(),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        max_concurrent: f.max_concurrent,
        failure_mode: match f.failure_mode {
            FailureMode::Closed => pb::FilterFailureMode::Closed,
            FailureMode::Open => pb::FilterFailureMode::Open,
        } as i32,
        kind: Some(kind),
    })
}

fn rspamd(r: &RspamdFilterSpec) -> Result<pb::RspamdFilter, FieldError> {
    let url = r.url.trim();
    let rest = url.strip_prefix("http://").unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') || url.chars().any(char::is_whitespace) {
        return Err(("url".into(), format!("{url:?} is not an http:// URL")));
    }
    let quarantine_score = match r.quarantine_score.as_deref() {
        None => None,
        Some(t) => Some(
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    (
                        "quarantineScore".to_owned(),
                        format!("{t:?} is not a number"),
                    )
                })?,
        ),
    };
    Ok(pb::RspamdFilter {
        url: url.to_owned(),
        settings_id: r.settings_id.clone().unwrap_or_default(),
        on_reject: treatment(r.on_reject),
        on_soft_reject: treatment(r.on_soft_reject),
        on_spam: treatment(r.on_spam),
        on_greylist: treatment(r.on_greylist),
        quarantine_score,
        no_score_headers: !r.score_headers,
        no_milter_headers: !r.milter_headers,
        reject_text: r.reject_text.clone().unwrap_or_default(),
    })
}

fn treatment(t: Option<Treatment>) -> i32 {
    (match t {
        None => pb::FilterTreatment::Default,
        Some(Treatment::Accept) => pb::FilterTreatment::Accept,
        Some(Treatment::Mark) => pb::FilterTreatment::Mark,
        Some(Treatment::Quarantine) => pb::FilterTreatment::Quarantine,
        Some(Treatment::TempFail) => pb::FilterTreatment::Tempfail,
        Some(Treatment::Reject) => pb::FilterTreatment::Reject,
    }) as i32
}

/// `host:port` or `[v6]:port` with a port from 1 to 65535.
fn valid_host_port(text: &str) -> bool {
    let Some((host, port)) = text.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        }
    };
    port_ok && host_ok
}

/// Fields a header policy may neither remove nor add: the authors Baton checks against the
/// RelayDomain (`From`, `Sender`) and its own signatures.
pub const PROTECTED: [&str; 3] = ["From", "Sender", "DKIM-Signature"];

/// A valid header field name: printable ASCII without `:`, 1 to 76 bytes.
pub(crate) fn valid_field_name(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

/// The RelayDomain's header policy; `Err` names the first invalid entry.
pub(crate) fn compile_headers(spec: &HeaderPolicySpec) -> Result<pb::HeaderPolicy, FieldError> {
    for (i, r) in spec.remove.iter().enumerate() {
        let name = r.strip_suffix('*').unwrap_or(r);
        if !valid_field_name(name) || name.contains('*') {
            return Err((
                format!("spec.headers.remove[{i}]"),
                format!("{r:?} is not a header field name (or a name prefix ending in *)"),
            ));
        }
        let is_prefix = r.ends_with('*');
        if let Some(p) = PROTECTED.iter().find(|p| {
            if is_prefix {
                p.len() >= name.len() && p[..name.len()].eq_ignore_ascii_case(name)
            } else {
                p.eq_ignore_ascii_case(name)
            }
        }) {
            return Err((
                format!("spec.headers.remove[{i}]"),
                format!("{r:?} would remove {p}:, which Baton checks or writes itself"),
            ));
        }
    }
    for (i, a) in spec.add.iter().enumerate() {
        if !valid_field_name(&a.name) {
            return Err((
                format!("spec.headers.add[{i}].name"),
                format!("{:?} is not a header field name", a.name),
            ));
        }
        if PROTECTED.iter().any(|p| p.eq_ignore_ascii_case(&a.name))
            || a.name.eq_ignore_ascii_case("Received")
        {
            return Err((
                format!("spec.headers.add[{i}].name"),
                format!("{} fields are checked or written by Baton itself", a.name),
            ));
        }
        if a.value.trim().is_empty() || a.value.chars().any(char::is_control) || a.value.len() > 900
        {
            return Err((
                format!("spec.headers.add[{i}].value"),
                "must be one line of text (no CR, LF or other control characters, at most 900 bytes)"
                    .into(),
            ));
        }
    }
    Ok(pb::HeaderPolicy {
        remove: spec.remove.clone(),
        remove_received: spec.remove_received,
        add: spec
            .add
            .iter()
            .map(|a| pb::HeaderField {
                name: a.name.clone(),
                value: a.value.trim().to_owned(),
            })
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pool(yaml: &str) -> SendingPoolSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn filters_compile_with_their_defaults_written_out() {
        let spec = pool(
            "contentFilters:\n\
             - {name: spam, rspamd: {url: 'http://rspamd:11333', quarantineScore: '12.5', onSpam: Quarantine}}\n\
             - {name: av, clamd: {address: 'clamav:3310'}, timeout: 1500ms, failureMode: Open, maxConcurrent: 4}\n\
             - {name: own, grpc: {endpoint: 'http://filter:50051'}}\n",
        );
        let f = compile_filters(&spec).unwrap();
        assert_eq!(f.len(), 3);
        assert_eq!((f[0].timeout_ms, f[0].max_concurrent), (10_000, 64));
        assert_eq!(f[0].failure_mode, pb::FilterFailureMode::Closed as i32);
        let Some(pb::content_filter::Kind::Rspamd(r)) = &f[0].kind else {
            panic!("rspamd")
        };
        assert_eq!(r.quarantine_score, Some(12.5));
        assert_eq!(r.on_spam, pb::FilterTreatment::Quarantine as i32);
        assert_eq!(r.on_reject, pb::FilterTreatment::Default as i32);
        assert!(!r.no_score_headers && !r.no_milter_headers);
        assert_eq!(
            (f[1].timeout_ms, f[1].max_concurrent, f[1].failure_mode),
            (1500, 4, pb::FilterFailureMode::Open as i32)
        );
        assert!(
            matches!(&f[2].kind, Some(pb::content_filter::Kind::Grpc(g)) if g.endpoint == "http://filter:50051")
        );
    }

    #[test]
    fn invalid_filters_name_their_field() {
        let cases = [
            (
                "[{name: a, rspamd: {url: 'http://r:1'}}, {name: a, clamd: {address: 'c:1'}}]",
                "spec.contentFilters[1].name",
            ),
            (
                "[{name: a, rspamd: {url: 'https://r:1'}}]",
                "spec.contentFilters[0].rspamd.url",
            ),
            (
                "[{name: a, rspamd: {url: 'http://user@r:1'}}]",
                "spec.contentFilters[0].rspamd.url",
            ),
            (
                "[{name: a, clamd: {address: 'clamav'}}]",
                "spec.contentFilters[0].clamd.address",
            ),
            (
                "[{name: a, clamd: {address: 'c:1'}, timeout: 10m}]",
                "spec.contentFilters[0].timeout",
            ),
            (
                "[{name: a, clamd: {address: 'c:1'}, timeout: 10ms}]",
                "spec.contentFilters[0].timeout",
            ),
            (
                "[{name: a, clamd: {address: 'c:1'}, maxConcurrent: 0}]",
                "spec.contentFilters[0].maxConcurrent",
            ),
            ("[{name: a}]", "spec.contentFilters[0]."),
            (
                "[{name: a, clamd: {address: 'c:1'}, grpc: {endpoint: 'http://g:1'}}]",
                "spec.contentFilters[0].",
            ),
            (
                "[{name: a, grpc: {endpoint: 'g:1'}}]",
                "spec.contentFilters[0].grpc.endpoint",
            ),
            (
                "[{name: a, rspamd: {url: 'http://r:1', quarantineScore: lots}}]",
                "spec.contentFilters[0].rspamd.quarantineScore",
            ),
            (
                "[{name: A_B, clamd: {address: 'c:1'}}]",
                "spec.contentFilters[0].name",
            ),
        ];
        for (filters, field) in cases {
            let spec = pool(&format!("contentFilters: {filters}"));
            let (f, m) = compile_filters(&spec).unwrap_err();
            assert_eq!(f, field, "{filters}: {m}");
        }
    }

    #[test]
    fn header_policies_refuse_line_breaks_and_bad_names() {
        let ok: HeaderPolicySpec = serde_yaml::from_str(
            "{remove: [X-Internal-*, X-Mailer], removeReceived: true, add: [{name: List-Unsubscribe, value: '<mailto:u@example.com>'}]}",
        )
        .unwrap();
        let p = compile_headers(&ok).unwrap();
        assert_eq!(p.remove, ["X-Internal-*", "X-Mailer"]);
        assert!(p.remove_received);
        assert_eq!(p.add[0].name, "List-Unsubscribe");
        for (bad, field) in [
            ("{remove: ['X:Y']}", "spec.headers.remove[0]"),
            ("{remove: ['X-*-Y']}", "spec.headers.remove[0]"),
            ("{remove: [dkim-signature]}", "spec.headers.remove[0]"),
            ("{remove: [from]}", "spec.headers.remove[0]"),
            ("{remove: ['Se*']}", "spec.headers.remove[0]"),
            (
                "{add: [{name: From, value: 'ceo@bank.example'}]}",
                "spec.headers.add[0].name",
            ),
            (
                "{add: [{name: 'X A', value: v}]}",
                "spec.headers.add[0].name",
            ),
            (
                "{add: [{name: X-A, value: \"a\\r\\nBcc: x@evil.example\"}]}",
                "spec.headers.add[0].value",
            ),
            (
                "{add: [{name: Received, value: v}]}",
                "spec.headers.add[0].name",
            ),
        ] {
            let spec: HeaderPolicySpec = serde_yaml::from_str(bad).unwrap();
            assert_eq!(compile_headers(&spec).unwrap_err().0, field, "{bad}");
        }
    }
}
