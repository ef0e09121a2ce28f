//! `baton-ingress` owns the SMTP conversation with clients and nothing else: listeners (relay
//! with STARTTLS, submission, implicit TLS), connection caps, TLS, the session driver around
//! the sans-IO `baton_smtp::Session`, the policy adapter over the config snapshot, the memory
//! budget, the failed-AUTH log, `From:` alignment and DKIM signing, and the hand-off to
//! JetStream. It keeps no disk state: `250` is said only after the PubAck, and the pod can be
//! killed at any time.
//!
//! The map: [`listener`] binds and accepts; `driver` runs one session; [`policy`] answers the
//! session's questions from the indexed snapshot; [`limits`] admits MAIL, RCPT and AUTH against
//! the cluster-wide budgets and lockouts, [`deny`] holds the pools' deny lists; [`filtering`] applies the header policy and
//! the content filters at the end of DATA; [`handoff`] prepares and publishes a message;
//! [`intake`] consumes reports at a return path; [`shared`] is the state sessions share,
//! [`config`] the settings and [`error`] the errors.

pub mod authcache;
pub mod authlog;
mod budget;
pub mod config;
mod conn;
pub mod connections;
pub mod deny;
pub use baton_dkim as dkim;
mod driver;
pub mod error;
pub mod filtering;
pub mod handoff;
pub mod intake;
pub mod limits;
pub mod listener;
pub mod policy;
pub mod refused;
pub mod shared;
pub mod spike;
pub mod tls;

pub use budget::ByteBudget;
pub use config::{IngressConfig, Limits};
pub use error::IngressError;
pub use listener::Ingress;
pub(crate) use listener::tls_accept;
pub use policy::Snapshot;
pub use shared::{Shared, index_snapshots, listener_label};
