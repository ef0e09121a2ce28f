//! CRD manifest generation: `manifests/crds/*.yaml` is written from the types in [`crate::crd`]
//! and checked for staleness by the `crds_are_fresh` test
//! (`BATON_REGENERATE=1 cargo test -p baton-config crds_are_fresh` rewrites it).

use std::io;
use std::path::Path;

use kube::CustomResourceExt as _;

use crate::crd::{EventSink, RelayDomain, SendingPool};

const HEADER: &str = "# Generated from crates/baton-config/src/crd by baton_config::crdgen; do not edit.\n\
# Regenerate: BATON_REGENERATE=1 cargo test -p baton-config crds_are_fresh\n";

/// Every CRD manifest as `(file name, YAML)`, in a stable order (sorted by file name).
pub fn crd_files() -> Vec<(&'static str, String)> {
    vec![
        ("eventsinks.baton.dev.yaml", to_yaml(&EventSink::crd())),
        ("relaydomains.baton.dev.yaml", to_yaml(&RelayDomain::crd())),
        ("sendingpools.baton.dev.yaml", to_yaml(&SendingPool::crd())),
    ]
}

/// Every CRD as one multi-document YAML stream, in the order of [`crd_files`].
pub fn crd_yaml() -> String {
    let mut out = String::from(HEADER);
    for (_, yaml) in crd_files() {
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    out
}

/// Writes each CRD to `dir/<plural>.baton.dev.yaml`, creating `dir` if needed.
pub fn write_crds(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, yaml) in crd_files() {
        std::fs::write(dir.join(name), file_contents(&yaml))?;
    }
    Ok(())
}

/// The exact contents of a CRD file: the generated-file header, then the YAML.
pub fn file_contents(yaml: &str) -> String {
    format!("{HEADER}{yaml}")
}

fn to_yaml<T: serde::Serialize>(crd: &T) -> String {
    // Serializing a CustomResourceDefinition (plain data, string keys) cannot fail.
    serde_yaml::to_string(crd).unwrap_or_else(|e| format!("# serialization failed: {e}\n"))
}
