//! The Baton operator: the only component that talks to the Kubernetes API.
//!
//! - [`pool`]: SendingPool → worker Deployment, PDB, optional HPA (server-side apply, field
//!   manager `baton-operator`), the pool's JetStream lanes, and its status (conditions `Ready`,
//!   `QueueReady`, `WorkersReady`, `Valid`);
//! - [`domain`]: RelayDomain → DKIM key Secrets generated when absent (owned by the domain);
//! - [`snapshot`]: every RelayDomain, SendingPool, EventSink and referenced Secret → one
//!   `RelayConfig` snapshot in the `baton-config` KV bucket (published only when its content
//!   changed; an invalid object never blocks the others), the event consumers of deleted
//!   EventSinks removed, every RelayDomain's status (conditions `Ready`, `PoolFound`,
//!   `DkimKeyReady`, `Conflict`, DNS records) and every EventSink's status (conditions `Ready`,
//!   `Failing`, backlog and delivery counters from the webhook dispatcher's record, refreshed
//!   every 15 s);
//! - [`spikes`]: the ingress's `credential_spike` events (read from `BATON_EVENTS` with direct
//!   gets) → a Warning Event `CredentialSpike` on the RelayDomain;
//! - [`admin_auth`]: who may use the operations API (TokenReview, SubjectAccessReview);
//! - [`leader`]: Lease-based leader election; [`runtime`]: watches, controllers, readiness;
//! - pure logic in [`workload`], [`conditions`], [`dkim`] and [`leader::decide`], unit-tested;
//!   JetStream behind [`queue::QueueBackend`] so the reconcilers are tested against a scripted
//!   API server without NATS.
//!
//! No finalizers: everything the operator creates in Kubernetes carries an owner reference
//! (worker objects → SendingPool, key Secrets → RelayDomain) and is garbage-collected; deleting
//! a RelayDomain, SendingPool or EventSink triggers a sync that drops it from the snapshot. A
//! deleted pool's JetStream lanes are kept on purpose: queued mail survives until the pool is
//! re-created. A deleted EventSink's consumer is removed with its backlog (events are
//! notifications, not mail).
//!
//! The CRD types, the compiler and CRD generation live in `baton-config` and are re-exported.

pub mod admin_auth;
pub mod conditions;
pub mod context;
pub mod dkim;
pub mod domain;
mod error;
pub mod keyring;
pub mod leader;
pub mod nats_auth;
pub mod pool;
pub mod queue;
pub mod runtime;
pub mod snapshot;
pub mod spikes;
pub mod workload;

pub use baton_config::{compile, crd, crdgen};
pub use context::{Context, FIELD_MANAGER, Settings};
pub use error::{Error, Result};
