//! The system-test harness: starts real processes on loopback — `nats-server` with JetStream,
//! `dnsmasq` serving MX records, Baton's own binary as ingress and workers — plus programmable
//! SMTP receivers, and waits on conditions (never on sleeps). Each scenario lives in its own
//! file under `tests/`.

pub mod admin;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod dkim;
pub mod harness;
pub mod hostile;
pub mod nats_users;
pub mod postfix;
pub mod receiver;
pub mod scanners;
pub mod smarthost;
pub mod smtp;
pub mod tls;
pub mod webhooks;
pub mod wire;
