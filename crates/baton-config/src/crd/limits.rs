//! Cluster-wide limits in the CRDs (issue 18): inbound budgets shared by every ingress pod
//! (RelayDomain `spec.limits`, SendingPool `spec.inboundLimits`), deny lists (SendingPool
//! `spec.deny`), outbound shaping shared by every worker of a pool (SendingPool
//! `spec.limits.destinations`, `spec.limits.throttle`) and IP warm-up (SendingPool
//! `spec.egress[].warmup`).
//!
//! Counting is done by `baton-limits` in the JetStream KV bucket `baton-limits`; its accuracy
//! and its behaviour when NATS is unreachable are documented there and in `docs/limits.md`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::DURATION_PATTERN;

/// `YYYY-MM-DD`.
const DATE_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$";

/// Budgets per fixed UTC window (minute, hour, day), counted across every ingress pod. 0: no
/// limit. Messages count at MAIL FROM (`450 4.7.1`), recipients at RCPT TO (`452 4.5.3`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateSpec {
    /// Messages per minute.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_minute: u32,
    /// Messages per hour.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_hour: u32,
    /// Messages per day (UTC).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_day: u32,
    /// Recipients per minute.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recipients_per_minute: u32,
    /// Recipients per hour.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recipients_per_hour: u32,
    /// Recipients per day (UTC).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recipients_per_day: u32,
}

/// Budgets per client address, counted across every ingress pod; IPv4 clients are grouped by
/// `ipv4PrefixLength`, IPv6 clients by `ipv6PrefixLength`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientRateSpec {
    /// Messages per minute.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_minute: u32,
    /// Messages per hour.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_hour: u32,
    /// Messages per day (UTC).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_day: u32,
    /// IPv4 prefix length that makes one client (32: each address). Default 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 32))]
    pub ipv4_prefix_length: Option<u8>,
    /// IPv6 prefix length that makes one client. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 128))]
    pub ipv6_prefix_length: Option<u8>,
}

/// What happens when an SMTP credential's sending rate jumps far above its recent baseline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SpikeAction {
    /// Counted, logged, an event and an alert; mail flows.
    #[default]
    Alert,
    /// As Alert, and further messages of the credential this hour get `450 4.7.1`.
    Throttle,
    /// As Alert, and further messages of the credential this hour are accepted into the
    /// pool's quarantine (released with `baton queue quarantine release`).
    Hold,
}

/// Spike detection per SMTP credential: this hour's messages against the mean hourly count of
/// the previous 24 hours.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpikeSpec {
    /// What to do with a spike.
    #[serde(default)]
    pub action: SpikeAction,
    /// A spike is this many times the baseline (default 10).
    #[serde(default = "default_spike_factor")]
    #[schemars(range(min = 2, max = 1000))]
    pub factor: u32,
    /// Never a spike below this many messages in the hour (default 100), so a quiet credential
    /// may send a burst.
    #[serde(default = "default_spike_minimum")]
    #[schemars(range(min = 1))]
    pub minimum_per_hour: u32,
}

/// Deny lists of a SendingPool, applied to every RelayDomain of the pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DenySpec {
    /// Client networks (CIDR, or a single address) whose mail is refused at MAIL FROM with
    /// `550 5.7.1`. (Networks refused at connect, `554 5.7.1`, are the ingress's
    /// `--deny-network`.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 49)))]
    pub client_networks: Vec<String>,
    /// Envelope senders refused at MAIL FROM with `550 5.7.1`: `user@example.com`,
    /// `*@example.com`, `*@*.example.com`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 3, max = 320)))]
    pub senders: Vec<String>,
    /// Recipient domains the pool never sends to, refused at RCPT TO with `550 5.7.1`:
    /// `example.net` (that domain) or `*.example.net` (its subdomains).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 255)))]
    pub recipient_domains: Vec<String>,
}

/// Outbound shaping shared by every worker of the pool, per destination site (the registrable
/// domain of the MX host, so that every domain one provider hosts shares one budget; the
/// smarthost in Smarthost mode).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationLimitsSpec {
    /// Concurrent connections to one site across all the pool's workers. 0: only the
    /// per-worker `maxConnectionsPerDestination`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_connections: u32,
    /// Messages per minute to one site across all the pool's workers. 0: no limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_minute: u32,
    /// Other limits for some sites or recipient domains (first match wins).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub overrides: Vec<DestinationOverrideSpec>,
}

/// Limits of one provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationOverrideSpec {
    /// A site (`google.com`, the registrable domain of its MX hosts) or a recipient domain
    /// (`example.org`); `*.example.org` matches its subdomains.
    #[schemars(length(min = 1, max = 255))]
    pub destination: String,
    /// Concurrent connections across the pool. 0: the pool's `maxConnections`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_connections: u32,
    /// Messages per minute across the pool. 0: the pool's `messagesPerMinute`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_minute: u32,
}

/// How long a destination that answered `421` or a rate-limit reply (`4.7.x` with "rate",
/// "too many", "throttl"...) is left alone by every worker of the pool. The deferred mail does
/// not count a failed attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThrottleSpec {
    /// First back-off (`1m`), doubled for each further throttling reply, with ±20 % jitter.
    #[serde(default = "default_throttle_initial")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub backoff: String,
    /// Longest back-off (`15m`).
    #[serde(default = "default_throttle_max")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub max_backoff: String,
}

impl Default for ThrottleSpec {
    fn default() -> Self {
        Self {
            backoff: default_throttle_initial(),
            max_backoff: default_throttle_max(),
        }
    }
}

/// An IP warm-up schedule: the identity sends at most `dailyLimits[d]` messages on day `d`
/// after `start` (UTC days; the first entry before `start`), then without limit. Mail beyond the
/// day's budget goes through the pool's other identities, or waits when every one is spent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupSpec {
    /// First day of the schedule, `YYYY-MM-DD` (UTC).
    #[schemars(length(min = 10, max = 10), pattern(DATE_PATTERN))]
    pub start: String,
    /// Messages per day, one entry per day (at most 366), each at least 1.
    #[schemars(length(min = 1, max = 366), inner(range(min = 1)))]
    pub daily_limits: Vec<u32>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
fn default_spike_factor() -> u32 {
    10
}
fn default_spike_minimum() -> u32 {
    100
}
fn default_throttle_initial() -> String {
    "1m".to_owned()
}
fn default_throttle_max() -> String {
    "15m".to_owned()
}
