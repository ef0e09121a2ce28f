//! `EventSink`: where a namespace's delivery events are sent as signed webhooks.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema::{self, DURATION_PATTERN};

/// Event type names an EventSink may select (`baton_core::event::EventType::name`).
pub const EVENT_TYPES: [&str; 15] = [
    "accepted",
    "delivered",
    "deferred",
    "bounced",
    "expired",
    "dsn_queued",
    "held",
    "released",
    "requeued",
    "retried",
    "operator_bounced",
    "deleted",
    "refused",
    "quarantined",
    "credential_spike",
];

/// Desired state of an EventSink: an HTTPS endpoint that receives the delivery events of this
/// namespace's RelayDomains as CloudEvents (structured JSON), each POST signed per the Standard
/// Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
// Several `printcolumn(type_ = ...)` entries trip clippy's duplicated-attribute check.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "EventSink",
    plural = "eventsinks",
    singular = "eventsink",
    shortname = "sink",
    category = "baton",
    namespaced,
    status = "EventSinkStatus",
    doc = "Delivery events of this namespace's RelayDomains sent to an HTTPS endpoint as signed \
           webhooks (Standard Webhooks, CloudEvents JSON). Namespaced: a sink only ever receives \
           its own namespace's events.",
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".spec.url",
        description = "Endpoint"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether events are being delivered"
    ),
    printcolumn(
        name = "Backlog",
        type_ = "integer",
        json_path = ".status.backlog",
        description = "Events waiting to be sent"
    ),
    printcolumn(
        name = "Last delivered",
        type_ = "date",
        json_path = ".status.lastDeliveredTime"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = schema::unsigned_bounds)]
pub struct EventSinkSpec {
    /// The endpoint: an `https://` URL. Each event is one POST of
    /// `application/cloudevents+json`.
    #[schemars(
        length(min = 9, max = 2048),
        pattern(r"^https://[^\s/?#@]+(/[^\s]*)?$")
    )]
    pub url: String,
    /// The Secret (in this namespace) holding the signing secret under the key `secret`: a
    /// Standard Webhooks secret `whsec_<base64 of 24 to 64 random bytes>`.
    pub secret_ref: super::SecretRef,
    /// Event types to send (`accepted`, `delivered`, `deferred`, `bounced`, `expired`,
    /// `dsn_queued`, `held`, `released`, `requeued`, `retried`, `operator_bounced`, `deleted`,
    /// `refused`, `quarantined`, `credential_spike`).
    /// Empty: every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 15), inner(length(min = 1, max = 32)))]
    #[x_kube(validation = Rule::new("self.all(t, t in ['accepted', 'delivered', 'deferred', 'bounced', 'expired', 'dsn_queued', 'held', 'released', 'requeued', 'retried', 'operator_bounced', 'deleted', 'refused', 'quarantined', 'credential_spike'])").message("unknown event type"))]
    pub types: Vec<String>,
    /// RelayDomains (names in this namespace) whose events are sent. Empty: every RelayDomain of
    /// the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 63), pattern(schema::DNS_SUBDOMAIN_PATTERN))
    )]
    pub relay_domains: Vec<String>,
    /// A Secret (in this namespace) whose `ca.crt` holds the PEM CA certificates the
    /// endpoint's certificate must chain to. Omitted: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_secret_ref: Option<super::SecretRef>,
    /// How long one POST may take before it counts as failed and is retried.
    #[serde(default = "default_timeout")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: String,
    /// Most events waiting for this sink. While the endpoint is down the dispatcher holds at
    /// most this many (and retries them) and the rest wait in the event stream; when they come
    /// up, those with more than this many behind them are dropped (counted in
    /// `baton_webhook_events_total{result="dropped_backlog"}`), so a long outage does not
    /// replay days of history.
    #[serde(default = "default_max_backlog")]
    #[schemars(range(min = 1, max = 10_000_000))]
    pub max_backlog: u64,
    /// Events older than this are dropped instead of sent. `0s`: no age limit (the event
    /// stream's retention still applies).
    #[serde(default = "default_max_event_age")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub max_event_age: String,
}

fn default_timeout() -> String {
    "10s".to_owned()
}

fn default_max_backlog() -> u64 {
    100_000
}

fn default_max_event_age() -> String {
    "24h".to_owned()
}

/// Observed state of an EventSink.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = schema::unsigned_bounds)]
pub struct EventSinkStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the sink is valid and in the snapshot) and `Failing` (the last POST failed,
    /// with the error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When an event was last accepted by the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_time: Option<Time>,
    /// Events waiting to be sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Events accepted by the endpoint since the dispatcher's record began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u64>,
    /// Events dropped (backlog or age limit) since the dispatcher's record began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

#[cfg(test)]
mod tests {
    /// Every event type Baton publishes can be selected, and nothing else: the list, the
    /// CRD's validation rule and its length bound follow `baton_core::event::EventType::ALL`.
    #[test]
    fn the_selectable_types_are_the_published_ones() {
        let published: Vec<&str> = baton_core::event::EventType::ALL
            .iter()
            .map(|t| t.name())
            .collect();
        assert_eq!(super::EVENT_TYPES.to_vec(), published);
        let source = include_str!("sink.rs");
        let rule = format!(
            "t in [{}]",
            published
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        assert!(source.contains(&rule), "the CEL rule lists {rule}");
        assert!(source.contains(&format!("length(max = {})", published.len())));
    }
}
