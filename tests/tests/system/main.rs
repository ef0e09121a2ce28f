//! The system tests: one test binary (one link on a 2-core machine instead of one per
//! scenario), one module per scenario. Each module starts real processes through
//! `baton_system_tests::harness` and waits on conditions, never on sleeps.
//!
//! Run one scenario: `cargo test -p baton-system-tests --test system <module>::`.

mod admin_api;
mod admin_hold_release;
mod admin_retry_bounce;
mod cluster_durability;
mod cluster_ingress_sigterm;
mod cluster_nats_kill9;
mod cluster_receiver_flaps;
mod cluster_scale_out;
mod cluster_worker_kill9;
mod config_rejected;
mod content_filter;
mod content_filter_grpc;
mod dashboard_prometheus;
mod dead_letters;
mod delivery_address_policy;
mod delivery_bounce;
mod delivery_delay_notice;
mod delivery_dsn_next_hop;
mod delivery_dsn_signed;
mod delivery_ehlo_name;
mod delivery_expiry;
mod delivery_kill9;
mod delivery_mx_fallback;
mod delivery_retry;
mod delivery_shutdown;
mod delivery_slow_destination;
mod delivery_smarthost;
mod delivery_verified_tls;
mod dev_authorization;
mod dev_certificate;
mod dkim_verify;
mod domain_verification;
mod e2e_kubernetes;
mod events_trace;
mod ingress_auth_relay;
mod ingress_limits;
mod ingress_queue;
mod ingress_shutdown;
mod ingress_smuggling;
mod ingress_tenant_isolation;
mod ingress_tls_reload;
mod large_body;
mod limits_inbound;
mod limits_outbound;
mod monitoring;
mod nats_auth_files;
mod nats_permissions;
mod nats_tls;
mod queue_not_provisioned;
mod return_path;
mod secrets_at_rest;
mod shared_limits_kv;
mod smtp_client;
mod suppression_lists;
mod traffic;
mod webhooks;
