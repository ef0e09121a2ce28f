//! Integration tests of baton-config: loader, compiler, DNS records, examples, CRD manifests and
//! what the CRDs admit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admission;
mod apiserver;
mod compiler;
mod crds;
mod dns;
mod examples;
mod isolation;
mod load;

use std::path::PathBuf;

use baton_config::compile::{Compiled, ConditionType, DomainReport};
use baton_config::{ConfigError, Resources, compile, load_str};

/// `crates/baton-config/tests/fixtures/<name>`, read to a string.
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The repository's `manifests/` directory.
/// `manifests/` of the repository.
pub fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../manifests")
}

/// Loads YAML documents or panics.
pub fn load(yaml: &str) -> Resources {
    load_str(yaml, "test.yaml").unwrap_or_else(|e| panic!("load: {e}"))
}

/// Loads and compiles YAML or panics.
pub fn compile_yaml(yaml: &str) -> Compiled {
    compile(&load(yaml), 1, 1_700_000_000_000).unwrap_or_else(|e| panic!("compile: {e}"))
}

/// The error compiling YAML must give.
pub fn compile_err(yaml: &str) -> ConfigError {
    match compile(&load(yaml), 1, 0) {
        Ok(_) => panic!("compile should fail"),
        Err(e) => e,
    }
}

/// A DKIM key Secret `name` in `namespace` holding `pem` under `private.pem`.
pub fn dkim_secret(namespace: &str, name: &str, pem: &str) -> String {
    let indented: String = pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\n\
         stringData:\n  private.pem: |\n{indented}"
    )
}

/// The report of the RelayDomain `name`.
pub fn report<'c>(compiled: &'c Compiled, name: &str) -> &'c DomainReport {
    compiled
        .domains
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no report for {name}"))
}

/// `(status, reason)` of a condition.
pub fn cond(report: &DomainReport, type_: ConditionType) -> (&'static str, &str) {
    let c = report
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_:?} condition"));
    (c.status_str(), c.reason.as_str())
}

/// A minimal SendingPool `default`.
pub const POOL: &str =
    "---\napiVersion: baton.dev/v1alpha1\nkind: SendingPool\nmetadata: {name: default}\nspec: {}\n";
