//! The Baton operator crate: the only component that will talk to the Kubernetes API.
//!
//! Today it holds no reconciler yet (issue #4): the CRD types, the YAML loader, the compiler
//! to the `RelayConfig` snapshot and CRD generation live in `baton-config`, re-exported here so
//! the operator and the data-plane CLI share one definition. `baton config apply` writes the
//! snapshot the operator will write.

pub use baton_config::{compile, crd, crdgen};
