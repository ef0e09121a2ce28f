//! Content filtering fields (issue 19): a SendingPool's `spec.contentFilters` (the scanners —
//! rspamd, ClamAV clamd, a `baton.v1.Filter` gRPC service — every message of the pool's
//! RelayDomains passes at the end of DATA) and a RelayDomain's `spec.headers` (which header
//! fields leave the cluster).
//!
//! Filters live on the cluster-scoped SendingPool because they are infrastructure owned by the
//! platform team: a tenant can neither turn them off nor point the ingress at an address of its
//! choosing. Header policy is the tenant's own business and lives on its RelayDomain.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{DNS_LABEL_PATTERN, DURATION_PATTERN};

/// A header field name as written in a policy: printable ASCII without `:` or spaces.
pub(crate) const HEADER_NAME_PATTERN: &str = "^[!-9;-~]{1,76}$";
/// A field name to remove: a name, or a name prefix followed by `*` (`X-Internal-*`).
pub(crate) const HEADER_REMOVE_PATTERN: &str = "^[!-)+-9;-~]{1,75}[*]?$";
/// rspamd's base URL: plain HTTP (rspamd runs next to Baton) without user info.
pub(crate) const RSPAMD_URL_PATTERN: &str = "^http://[^/@\\s]+(/[^\\s]*)?$";
/// A gRPC filter endpoint.
pub(crate) const GRPC_ENDPOINT_PATTERN: &str = "^http://[^/@\\s]+/?$";
/// clamd's `host:port` (`[v6]:port` for an IPv6 address).
pub(crate) const CLAMD_ADDRESS_PATTERN: &str = "^([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}$";

/// One content filter of a pool: exactly one of `rspamd`, `clamd`, `grpc`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("(has(self.rspamd) ? 1 : 0) + (has(self.clamd) ? 1 : 0) + (has(self.grpc) ? 1 : 0) == 1")
    .message("exactly one of rspamd, clamd or grpc must be set"))]
pub struct ContentFilterSpec {
    /// Name of the filter, unique within the pool (logs, metric labels).
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL_PATTERN))]
    pub name: String,
    /// rspamd over its HTTP protocol (`/checkv2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rspamd: Option<RspamdFilterSpec>,
    /// ClamAV's `clamd` over TCP (`INSTREAM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamd: Option<ClamdFilterSpec>,
    /// A service implementing `baton.v1.Filter` (`proto/baton/v1/filter.proto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcFilterSpec>,
    /// Bound of one call, connecting included (`10s`, `1500ms`; from 100ms to 5m).
    #[serde(default = "default_timeout")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub timeout: String,
    /// What a failed or timed-out call means: `Closed` (default) answers `451 4.7.1` so the
    /// client retries later; `Open` accepts the message unscanned (counted in
    /// `baton_filter_verdicts_total{verdict="failed"}`).
    #[serde(default)]
    pub failure_mode: FailureMode,
    /// Calls in flight per ingress process at most; one more is answered `451 4.7.1` at once.
    #[serde(default = "default_max_concurrent")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrent: u32,
}

/// What a failed filter means for the message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureMode {
    /// `451 4.7.1`: nothing passes unscanned.
    #[default]
    Closed,
    /// Accept unscanned (counted).
    Open,
}

/// What Baton does for an rspamd action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Treatment {
    /// Accept (rspamd's headers still added).
    Accept,
    /// Accept with `X-Spam: Yes`.
    Mark,
    /// Accept into the pool's quarantine (the client gets `250`).
    Quarantine,
    /// `451 4.7.1`.
    TempFail,
    /// `550 5.7.1`.
    Reject,
}

/// rspamd over HTTP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RspamdFilterSpec {
    /// Base URL of rspamd's normal or proxy worker: `http://rspamd.mail.svc:11333`.
    #[schemars(length(min = 8, max = 512), pattern(RSPAMD_URL_PATTERN))]
    pub url: String,
    /// rspamd `Settings-ID` to scan with (e.g. an outbound settings profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128), pattern("^[A-Za-z0-9_.-]+$"))]
    pub settings_id: Option<String>,
    /// For the `reject` action (default `Reject`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reject: Option<Treatment>,
    /// For `soft reject` (default `TempFail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_soft_reject: Option<Treatment>,
    /// For `add header` and `rewrite subject` (default `Mark`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_spam: Option<Treatment>,
    /// For `greylist` (default `Accept`: greylisting is an inbound tactic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_greylist: Option<Treatment>,
    /// Quarantine a message its action accepted whose score is at least this (a decimal
    /// string, `"8"`, `"12.5"`). Omitted: never by score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16), pattern("^-?[0-9]+([.][0-9]+)?$"))]
    pub quarantine_score: Option<String>,
    /// Add `X-Spam-Score` and `X-Spam-Status` to accepted mail (default true).
    #[serde(default = "yes")]
    pub score_headers: bool,
    /// Apply the header edits of rspamd's `milter` block (default true).
    #[serde(default = "yes")]
    pub milter_headers: bool,
    /// Text of a reject when rspamd gives none (default `Spam message rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200), pattern("^[ -~]+$"))]
    pub reject_text: Option<String>,
}

/// ClamAV `clamd`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClamdFilterSpec {
    /// `host:port` of clamd's `TCPSocket`: `clamav.mail.svc:3310`.
    #[schemars(length(min = 3, max = 260), pattern(CLAMD_ADDRESS_PATTERN))]
    pub address: String,
    /// Quarantine infected mail instead of rejecting it (`550 5.7.1`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quarantine: bool,
}

/// A `baton.v1.Filter` gRPC service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcFilterSpec {
    /// `http://host:port` (plain HTTP/2: the service runs next to Baton).
    #[schemars(length(min = 8, max = 512), pattern(GRPC_ENDPOINT_PATTERN))]
    pub endpoint: String,
}

/// A RelayDomain's header policy: removals first, then additions, applied at the end of DATA
/// before the content filters and DKIM signing (so the signature covers the final form).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderPolicySpec {
    /// Field names to remove (every instance, case-insensitive); a trailing `*` makes it a
    /// prefix: `X-Internal-*`. `From`, `Sender` (checked against the RelayDomain) and
    /// `DKIM-Signature` cannot be removed; Baton's own `Received` is added afterwards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 76), pattern(HEADER_REMOVE_PATTERN))
    )]
    pub remove: Vec<String>,
    /// Remove every `Received:` field the message arrived with: the hops inside the company
    /// before Baton. Baton's own `Received:` is still added.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_received: bool,
    /// Fields appended to the header block, in order (e.g. `List-Unsubscribe` for bulk mail);
    /// not `From`, `Sender`, `DKIM-Signature` or `Received`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub add: Vec<HeaderFieldSpec>,
}

/// One header field to add.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderFieldSpec {
    /// Field name (printable ASCII, no `:`).
    #[schemars(length(min = 1, max = 76), pattern(HEADER_NAME_PATTERN))]
    pub name: String,
    /// Value: one line of printable text (no CR/LF or other control characters).
    #[schemars(length(min = 1, max = 900), pattern("^[^\\x00-\\x1f\\x7f]+$"))]
    pub value: String,
}

fn default_timeout() -> String {
    "10s".to_owned()
}
fn default_max_concurrent() -> u32 {
    64
}
fn yes() -> bool {
    true
}
