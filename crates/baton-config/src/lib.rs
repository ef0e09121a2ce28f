//! `baton-config` owns Baton's configuration model:
//!
//! - [`crd`]: the `baton.dev/v1alpha1` custom resources ([`crd::SendingPool`],
//!   [`crd::RelayDomain`]) shared by the operator and the data-plane CLI;
//! - [`load`]: the loader for `kubectl apply`-style YAML files (RelayDomain, SendingPool, Secret);
//! - [`mod@compile`]: THE compiler from those resources to the `baton.v1.RelayConfig` snapshot, used
//!   by the operator and by `baton dev` / `baton config apply` alike; an invalid object is left
//!   out and reported ([`InvalidObject`]), it does not fail the whole snapshot;
//! - [`plan`]: snapshot planning (digest, generation, the lanes each pool needs), shared by
//!   the operator and `baton config apply`;
//! - [`dns`]: the DNS records (DKIM, SPF, DMARC) a domain owner should publish;
//! - [`crdgen`]: generation of `manifests/crds/*.yaml`;
//! - [`units`]: human durations and Kubernetes-quantity sizes;
//! - [`config_digest`]: a content hash of a snapshot, to bump the generation only on change.
//!
//! It does not talk to the Kubernetes API or to NATS.

pub mod compile;
pub mod crd;
pub mod crdgen;
pub mod dns;
mod error;
pub mod load;
pub mod plan;
pub mod units;
pub mod verification;

use baton_proto::Message as _;
use baton_proto::v1::RelayConfig;
use sha2::{Digest as _, Sha256};

pub use compile::{Compiled, Resources, compile};
pub use error::{ConfigError, InvalidObject};
pub use load::{load_paths, load_str};

/// A stable hex SHA-256 of a snapshot's content, ignoring `generation` and `compiled_at_ms`:
/// compiling unchanged resources gives the same digest, so callers bump the generation and
/// publish only when it changes. (The compiler's output is deterministic: sorted, no random
/// salts.)
pub fn config_digest(config: &RelayConfig) -> String {
    let mut content = config.clone();
    content.generation = 0;
    content.compiled_at_ms = 0;
    hex::encode(Sha256::digest(content.encode_to_vec()))
}
