//! Every Baton metric, declared in one place. Names are `baton_*`, in base units, counters end
//! in `_total`. Labels are bounded: listener, pool, relay domain, lane, result, reason, reply
//! code class — never recipient domains, addresses or message ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All collectors of one process (a process registers all of them; unused ones stay at zero).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Connections by listener and outcome (`accepted`, `over_capacity`, `over_per_ip`, `shutting_down`).
    pub ingress_connections: IntCounterVec,
    /// Sessions currently open, by listener.
    pub ingress_sessions_active: IntGaugeVec,
    /// TLS handshakes by listener and result (`ok`, `failed`).
    pub ingress_tls_handshakes: IntCounterVec,
    /// Certificate reloads by result (`ok`, `refused`).
    pub ingress_tls_reloads: IntCounterVec,
    /// AUTH attempts by result (`ok`, `failed`).
    pub ingress_auth: IntCounterVec,
    /// Transactions accepted (250 after PubAck), by relay domain.
    pub ingress_accepted: IntCounterVec,
    /// Replies refusing something, by reason and reply code.
    pub ingress_rejections: IntCounterVec,
    /// Size of accepted messages.
    pub ingress_message_size: Histogram,
    /// Time from the final dot to the PubAck.
    pub ingress_publish_duration: Histogram,
    /// Publishes that failed (answered 451), by error label.
    pub ingress_publish_errors: IntCounterVec,
    /// Bytes of message content currently held by the ingress.
    pub ingress_inflight_bytes: IntGauge,
    /// Delivery attempts (one per envelope per destination), by pool and result (`connected`,
    /// `connect_failed`, `destination_busy`).
    pub delivery_attempts: IntCounterVec,
    /// Addresses direct delivery refused to connect to, by pool and reason (`loopback`,
    /// `private`, `link_local`, ...: `baton_core::destination::AddressClass`).
    pub delivery_refused_addresses: IntCounterVec,
    /// Recipient outcomes by pool, relay domain and outcome (`delivered`, `deferred`, `bounced`, `expired`).
    pub delivery_recipients: IntCounterVec,
    /// Duration of one delivery attempt (connect to final reply).
    pub delivery_duration: HistogramVec,
    /// Time from ingress acceptance to successful delivery.
    pub delivery_accept_to_delivery: HistogramVec,
    /// Open outbound SMTP connections, by pool.
    pub delivery_connections_active: IntGaugeVec,
    /// Destinations currently suspended, by pool.
    pub delivery_suspended_destinations: IntGaugeVec,
    /// Messages waiting for a connection slot of a busy destination, by pool.
    pub delivery_waiting_messages: IntGaugeVec,
    /// Throttling replies (`421`, `45x 4.7.x` rate limits) that made the pool back off a
    /// destination site, by pool.
    pub destination_throttled: IntCounterVec,
    /// Deliveries that waited for, or were deferred by, a pool-wide destination limit, by pool
    /// and reason (`connections`, `rate`, `warmup`, `backoff`).
    pub destination_waits: IntCounterVec,
    /// Limit decisions taken by the local fallback because NATS was slow or unreachable, by
    /// component (`worker`, `ingress`) and limit.
    pub limit_fallback: IntCounterVec,
    /// Commands refused because a cluster-wide inbound budget was spent, by scope (`domain`,
    /// `credential`, `client`), period (`minute`, `hour`, `day`) and unit (`messages`,
    /// `recipients`).
    pub limit_refusals: IntCounterVec,
    /// Refusals by a deny list (`network`, `sender`, `recipient_domain`: a pool's `spec.deny`;
    /// `connect`: the ingress's `--deny-network`).
    pub deny_refusals: IntCounterVec,
    /// AUTH lockouts started (or extended) by a failed attempt, by subject (`user`, `client`).
    pub auth_lockouts: IntCounterVec,
    /// Sending spikes of SMTP credentials detected, by the RelayDomain's action (`alert`,
    /// `throttle`, `hold`).
    pub limit_spikes: IntCounterVec,
    /// DSNs generated, by pool.
    pub delivery_dsn_generated: IntCounterVec,
    /// Failed, deferred and expired recipients by pool, bounce class (`baton_core::bounce`) and
    /// outcome (`bounced`, `deferred`, `expired`).
    pub delivery_bounces: IntCounterVec,
    /// Delay notices (DSN `Action: delayed`) generated, by pool.
    pub delivery_delay_notices: IntCounterVec,
    /// Recipients put on a suppression list, by relay domain and source (`bounce`, `manual`).
    pub suppressions_added: IntCounterVec,
    /// Recipients refused at RCPT because they are suppressed, by relay domain.
    pub ingress_suppressed_recipients: IntCounterVec,
    /// Messages received at a return path, by kind (`dsn`, `complaint`, `other`) and result
    /// (`suppressed`, `matched`, `unmatched`, `refused`).
    pub ingress_reports: IntCounterVec,
    /// Content filter results at the ingress, by filter (its name in the SendingPool) and
    /// verdict (`accept`, `reject`, `tempfail`, `quarantine`, `busy`, `failed`).
    pub filter_verdicts: IntCounterVec,
    /// How long one content filter call took, by filter.
    pub filter_duration: HistogramVec,
    /// Messages the ingress put in quarantine, by pool.
    pub quarantined: IntCounterVec,
    /// Live suppression entries this process knows (from the watched bucket).
    pub suppression_entries: IntGauge,
    /// 1 when an upstream smarthost is considered healthy, by pool and upstream (from config).
    pub delivery_smarthost_up: IntGaugeVec,
    /// Messages received again after a worker died or timed out (JetStream redeliveries seen).
    pub delivery_redeliveries: IntCounterVec,
    /// 1 while a worker of the pool is consuming (its readiness), by pool.
    pub worker_ready: IntGaugeVec,
    /// Messages waiting in a lane, by pool and lane.
    pub queue_pending: IntGaugeVec,
    /// Messages handed to workers and not yet acknowledged, by pool and lane.
    pub queue_ack_pending: IntGaugeVec,
    /// Age of the oldest queued message, by pool.
    pub queue_oldest_age: prometheus::GaugeVec,
    /// Messages in a pool's dead letters, by pool.
    pub queue_dead: IntGaugeVec,
    /// Delivery events by type and result (`stored`, `failed`: not stored, lost).
    pub events: IntCounterVec,
    /// EventSink events by sink (`namespace/name`) and result (`delivered`, `failed`: one
    /// failed POST, `dropped_backlog`, `dropped_age`).
    pub webhook_events: IntCounterVec,
    /// Duration of one EventSink POST, by sink.
    pub webhook_post_duration: HistogramVec,
    /// Events waiting for an EventSink, by sink.
    pub webhook_backlog: IntGaugeVec,
    /// EventSinks this dispatcher serves.
    pub webhook_sinks: IntGauge,
    /// Messages in a pool's held place, by pool.
    pub queue_held: IntGaugeVec,
    /// Envelopes moved to the held place by this worker (a hold covered them), by pool.
    pub held: IntCounterVec,
    /// Holds in force (as this worker sees them).
    pub holds: IntGauge,
    /// Messages moved to the dead letters by this worker, by pool and reason
    /// (`undecodable`, `delivery_limit`).
    pub dead_letters: IntCounterVec,
    /// 1 while a queue stream/bucket setting differs from the recorded settings (or from this
    /// process's `--stream-replicas` expectation, object `expectation`), by object and setting.
    pub queue_settings_drift: IntGaugeVec,
    /// Generation of the RelayConfig snapshot in force.
    pub config_generation: IntGauge,
    /// Config snapshots rejected or failed to load.
    pub config_errors: IntCounter,
    /// Operations NATS refused to this process's identity (permission or authorization
    /// violations).
    pub nats_permission_denials: IntCounter,
    /// Operator reconciles by kind (`SendingPool`, `RelayDomain`, `Snapshot`) and result (`ok`, or an
    /// error's metric label).
    pub operator_reconciles: IntCounterVec,
    /// Duration of one operator reconcile, by kind.
    pub operator_reconcile_duration: HistogramVec,
    /// Generation of the RelayConfig snapshot the operator last published.
    pub operator_snapshot_generation: IntGauge,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c =
        IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    reg.register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    c
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g =
        IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("{name}: {e}"));
    reg.register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    g
}

fn histogram(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    reg.register(Box::new(h.clone()))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    h
}

const LATENCY: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Build and register every collector. Names are static, so registration cannot fail
    /// except by a programming error caught by the unit test below.
    #[allow(clippy::too_many_lines)]
    pub fn new() -> Self {
        let r = Registry::new();
        let size_buckets = prometheus::exponential_buckets(1024.0, 4.0, 10)
            .unwrap_or_else(|e| panic!("buckets: {e}"));
        let age_buckets = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            14400.0, 86400.0,
        ];
        let m = Metrics {
            ingress_connections: counter(
                &r,
                "baton_ingress_connections_total",
                "SMTP connections by listener and outcome.",
                &["listener", "result"],
            ),
            ingress_sessions_active: gauge(
                &r,
                "baton_ingress_sessions_active",
                "SMTP sessions currently open.",
                &["listener"],
            ),
            ingress_tls_handshakes: counter(
                &r,
                "baton_ingress_tls_handshakes_total",
                "Inbound TLS handshakes by result.",
                &["listener", "result"],
            ),
            ingress_tls_reloads: counter(
                &r,
                "baton_ingress_tls_reloads_total",
                "Reloads of the TLS certificate files by result (ok, refused).",
                &["result"],
            ),
            ingress_auth: counter(
                &r,
                "baton_ingress_auth_total",
                "SMTP AUTH attempts by listener and result.",
                &["listener", "result"],
            ),
            ingress_accepted: counter(
                &r,
                "baton_ingress_messages_accepted_total",
                "Transactions answered 250 after the PubAck.",
                &["relay_domain"],
            ),
            ingress_rejections: counter(
                &r,
                "baton_ingress_rejections_total",
                "Refusals by reason and reply code.",
                &["reason", "code"],
            ),
            ingress_message_size: histogram(
                &r,
                "baton_ingress_message_size_bytes",
                "Size of accepted messages.",
                &[],
                size_buckets,
            )
            .with_label_values::<&str>(&[]),
            ingress_publish_duration: histogram(
                &r,
                "baton_ingress_publish_duration_seconds",
                "Final dot to PubAck.",
                &[],
                LATENCY.to_vec(),
            )
            .with_label_values::<&str>(&[]),
            ingress_publish_errors: counter(
                &r,
                "baton_ingress_publish_errors_total",
                "Publishes that failed and were answered 451.",
                &["error"],
            ),
            ingress_inflight_bytes: gauge(
                &r,
                "baton_ingress_inflight_bytes",
                "Message bytes held by the ingress.",
                &[],
            )
            .with_label_values::<&str>(&[]),
            delivery_attempts: counter(
                &r,
                "baton_delivery_attempts_total",
                "Delivery attempts by pool and result.",
                &["pool", "result"],
            ),
            delivery_refused_addresses: counter(
                &r,
                "baton_delivery_refused_addresses_total",
                "Destination addresses direct delivery refused to connect to, by pool and reason.",
                &["pool", "reason"],
            ),
            delivery_recipients: counter(
                &r,
                "baton_delivery_recipients_total",
                "Recipient outcomes.",
                &["pool", "relay_domain", "outcome"],
            ),
            delivery_duration: histogram(
                &r,
                "baton_delivery_duration_seconds",
                "Duration of one delivery attempt.",
                &["pool"],
                LATENCY.to_vec(),
            ),
            delivery_accept_to_delivery: histogram(
                &r,
                "baton_delivery_accept_to_delivery_seconds",
                "Ingress acceptance to delivery.",
                &["pool"],
                age_buckets,
            ),
            delivery_connections_active: gauge(
                &r,
                "baton_delivery_connections_active",
                "Open outbound SMTP connections.",
                &["pool"],
            ),
            delivery_suspended_destinations: gauge(
                &r,
                "baton_delivery_suspended_destinations",
                "Destinations currently suspended.",
                &["pool"],
            ),
            delivery_waiting_messages: gauge(
                &r,
                "baton_delivery_waiting_messages",
                "Messages waiting for a connection slot of a busy destination.",
                &["pool"],
            ),
            destination_throttled: counter(
                &r,
                "baton_destination_throttled_total",
                "Throttling replies that made the pool back off a destination site.",
                &["pool"],
            ),
            destination_waits: counter(
                &r,
                "baton_destination_waits_total",
                "Deliveries that waited for or were deferred by a pool-wide destination limit.",
                &["pool", "reason"],
            ),
            limit_fallback: counter(
                &r,
                "baton_limit_fallback_total",
                "Limit decisions taken locally because NATS was slow or unreachable.",
                &["component", "limit"],
            ),
            limit_refusals: counter(
                &r,
                "baton_limit_refusals_total",
                "Commands refused because a cluster-wide inbound budget was spent.",
                &["scope", "period", "unit"],
            ),
            deny_refusals: counter(
                &r,
                "baton_deny_refusals_total",
                "Connections, senders and recipients refused by a deny list.",
                &["list"],
            ),
            auth_lockouts: counter(
                &r,
                "baton_auth_lockouts_total",
                "AUTH lockouts started by a failed attempt, by subject.",
                &["subject"],
            ),
            limit_spikes: counter(
                &r,
                "baton_limit_spikes_total",
                "Sending spikes of SMTP credentials detected, by action.",
                &["action"],
            ),
            delivery_dsn_generated: counter(
                &r,
                "baton_delivery_dsn_generated_total",
                "Delivery status notifications generated.",
                &["pool"],
            ),
            delivery_bounces: counter(
                &r,
                "baton_delivery_bounces_total",
                "Failed, deferred and expired recipients by bounce class.",
                &["pool", "class", "outcome"],
            ),
            delivery_delay_notices: counter(
                &r,
                "baton_delivery_delay_notices_total",
                "Delay notices (DSN Action: delayed) generated.",
                &["pool"],
            ),
            suppressions_added: counter(
                &r,
                "baton_suppressions_added_total",
                "Recipients put on a suppression list.",
                &["relay_domain", "source"],
            ),
            ingress_suppressed_recipients: counter(
                &r,
                "baton_ingress_suppressed_recipients_total",
                "Recipients refused at RCPT because they are suppressed.",
                &["relay_domain"],
            ),
            ingress_reports: counter(
                &r,
                "baton_ingress_reports_total",
                "Messages received at a return path, by kind and result.",
                &["kind", "result"],
            ),
            filter_verdicts: counter(
                &r,
                "baton_filter_verdicts_total",
                "Content filter results at the ingress, by filter and verdict.",
                &["filter", "verdict"],
            ),
            filter_duration: histogram(
                &r,
                "baton_filter_duration_seconds",
                "Duration of one content filter call.",
                &["filter"],
                LATENCY.to_vec(),
            ),
            quarantined: counter(
                &r,
                "baton_quarantined_total",
                "Messages put in quarantine by a content filter, by pool.",
                &["pool"],
            ),
            suppression_entries: gauge(
                &r,
                "baton_suppression_entries",
                "Live suppression entries this process knows.",
                &[],
            )
            .with_label_values::<&str>(&[]),
            delivery_smarthost_up: gauge(
                &r,
                "baton_delivery_smarthost_up",
                "1 when the smarthost is considered healthy.",
                &["pool", "upstream"],
            ),
            delivery_redeliveries: counter(
                &r,
                "baton_delivery_redeliveries_total",
                "Queued messages seen again after a worker failed to ack.",
                &["pool"],
            ),
            worker_ready: gauge(
                &r,
                "baton_worker_ready",
                "1 while this worker is ready and consuming its pool.",
                &["pool"],
            ),
            queue_pending: gauge(
                &r,
                "baton_queue_pending_messages",
                "Messages waiting in a lane.",
                &["pool", "lane"],
            ),
            queue_ack_pending: gauge(
                &r,
                "baton_queue_ack_pending_messages",
                "Messages handed out and not yet acknowledged.",
                &["pool", "lane"],
            ),
            queue_oldest_age: {
                let g = prometheus::GaugeVec::new(
                    Opts::new(
                        "baton_queue_oldest_message_age_seconds",
                        "Age of the oldest queued message.",
                    ),
                    &["pool"],
                )
                .unwrap_or_else(|e| panic!("{e}"));
                r.register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                g
            },
            queue_dead: gauge(
                &r,
                "baton_queue_dead_messages",
                "Messages in the pool's dead letters (baton.dead.<pool>).",
                &["pool"],
            ),
            events: counter(
                &r,
                "baton_events_total",
                "Delivery events published to BATON_EVENTS, by type and result (stored, failed: lost).",
                &["type", "result"],
            ),
            webhook_events: counter(
                &r,
                "baton_webhook_events_total",
                "EventSink events by sink and result (delivered; failed: one failed POST, retried; dropped_backlog, dropped_age).",
                &["sink", "result"],
            ),
            webhook_post_duration: histogram(
                &r,
                "baton_webhook_post_duration_seconds",
                "Duration of one EventSink POST (answered or failed), by sink.",
                &["sink"],
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0],
            ),
            webhook_backlog: gauge(
                &r,
                "baton_webhook_backlog",
                "Events waiting for an EventSink (not yet sent, or sent and not yet accepted), by sink.",
                &["sink"],
            ),
            webhook_sinks: {
                let g = IntGauge::new(
                    "baton_webhook_sinks",
                    "EventSinks this dispatcher serves.",
                )
                .unwrap_or_else(|e| panic!("{e}"));
                r.register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                g
            },
            queue_held: gauge(
                &r,
                "baton_queue_held_messages",
                "Messages in the pool's held place (baton.held.<pool>), waiting for a release.",
                &["pool"],
            ),
            held: counter(
                &r,
                "baton_held_total",
                "Envelopes moved to the held place because a hold covered them.",
                &["pool"],
            ),
            holds: {
                let g = IntGauge::new("baton_holds", "Holds in force, as this process sees them.")
                    .unwrap_or_else(|e| panic!("{e}"));
                r.register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("{e}"));
                g
            },
            dead_letters: counter(
                &r,
                "baton_dead_letters_total",
                "Queued messages moved to the dead letters.",
                &["pool", "reason"],
            ),
            queue_settings_drift: gauge(
                &r,
                "baton_queue_settings_drift",
                "1 while a JetStream stream or bucket setting differs from the recorded queue settings.",
                &["object", "setting"],
            ),
            config_generation: gauge(
                &r,
                "baton_config_generation",
                "Generation of the RelayConfig snapshot in force.",
                &[],
            )
            .with_label_values::<&str>(&[]),
            config_errors: counter(
                &r,
                "baton_config_errors_total",
                "Config snapshots that could not be used.",
                &[],
            )
            .with_label_values::<&str>(&[]),
            nats_permission_denials: counter(
                &r,
                "baton_nats_permission_denials_total",
                "Operations NATS refused to this process's identity (permission or authorization violations).",
                &[],
            )
            .with_label_values::<&str>(&[]),
            operator_reconciles: counter(
                &r,
                "baton_operator_reconciles_total",
                "Operator reconciles by kind and result.",
                &["kind", "result"],
            ),
            operator_reconcile_duration: histogram(
                &r,
                "baton_operator_reconcile_duration_seconds",
                "Duration of one operator reconcile.",
                &["kind"],
                LATENCY.to_vec(),
            ),
            operator_snapshot_generation: gauge(
                &r,
                "baton_operator_snapshot_generation",
                "Generation of the RelayConfig snapshot the operator last published.",
                &[],
            )
            .with_label_values::<&str>(&[]),
            registry: r,
        };
        let info = gauge(
            &m.registry,
            "baton_build_info",
            "Build information.",
            &["version"],
        );
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The underlying registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_metrics_register_and_render_with_baton_prefix() {
        let m = Metrics::new();
        m.ingress_rejections
            .with_label_values(&["too_many_recipients", "452"])
            .inc();
        m.delivery_recipients
            .with_label_values(&["default", "team-a/example", "delivered"])
            .inc();
        let text = m.render();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("baton_"), "{line}");
        }
        assert!(text.contains(
            "baton_ingress_rejections_total{code=\"452\",reason=\"too_many_recipients\"} 1"
        ));
        assert!(text.contains("baton_build_info"));
    }
}
