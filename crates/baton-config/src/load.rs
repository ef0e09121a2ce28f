//! The YAML loader for `kubectl apply`-style files: multi-document streams of `RelayDomain`,
//! `SendingPool` (`baton.dev/v1alpha1`) and `Secret` (`v1`) documents. Any other kind is an
//! error naming the file and the document index; unknown fields are rejected with the field named.
//!
//! Namespaced documents without `metadata.namespace` get `default`, as `kubectl apply` would.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::Deserialize as _;

use crate::ConfigError;
use crate::compile::{DEFAULT_NAMESPACE, Resources};
use crate::crd::{API_VERSION, EventSink, RelayDomain, SendingPool};

/// Loads every path: a file is read whatever its name; a directory contributes its `*.yaml` and
/// `*.yml` files (not recursive), in name order.
pub fn load_paths(paths: &[PathBuf]) -> Result<Resources, ConfigError> {
    let mut out = Resources::default();
    for path in paths {
        let io_err = |source| ConfigError::Io {
            path: path.clone(),
            source,
        };
        if path.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io_err)? {
                let file = entry.map_err(io_err)?.path();
                let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
                if yaml && file.is_file() {
                    files.push(file);
                }
            }
            files.sort();
            for file in files {
                out.extend(load_file(&file)?);
            }
        } else {
            out.extend(load_file(path)?);
        }
    }
    Ok(out)
}

fn load_file(path: &Path) -> Result<Resources, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    load_str(&text, &path.display().to_string())
}

/// Loads a multi-document YAML stream; `origin` names it in errors (usually the file path).
/// Empty documents are skipped.
pub fn load_str(yaml: &str, origin: &str) -> Result<Resources, ConfigError> {
    let parse_err = |index: usize, kind: Option<&str>, e: serde_yaml::Error| ConfigError::Parse {
        origin: origin.to_owned(),
        index,
        kind: kind.map(str::to_owned),
        message: e.to_string(),
    };
    // First pass: find each document's kind. Second pass: deserialize each document straight
    // from the stream, so errors carry the field path and the line in the file.
    let mut kinds = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| parse_err(index, None, e))?;
        kinds.push(document_kind(&value, origin, index)?);
    }
    let mut out = Resources::default();
    for (index, (doc, kind)) in serde_yaml::Deserializer::from_str(yaml)
        .zip(kinds)
        .enumerate()
    {
        match kind {
            DocKind::Empty => {}
            DocKind::SendingPool => out.pools.push(
                SendingPool::deserialize(doc)
                    .map_err(|e| parse_err(index, Some("SendingPool"), e))?,
            ),
            DocKind::RelayDomain => {
                let mut rd = RelayDomain::deserialize(doc)
                    .map_err(|e| parse_err(index, Some("RelayDomain"), e))?;
                rd.metadata
                    .namespace
                    .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
                out.domains.push(rd);
            }
            DocKind::EventSink => {
                let mut sink = EventSink::deserialize(doc)
                    .map_err(|e| parse_err(index, Some("EventSink"), e))?;
                sink.metadata
                    .namespace
                    .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
                out.sinks.push(sink);
            }
            DocKind::Secret => {
                let mut secret =
                    Secret::deserialize(doc).map_err(|e| parse_err(index, Some("Secret"), e))?;
                secret
                    .metadata
                    .namespace
                    .get_or_insert_with(|| DEFAULT_NAMESPACE.to_owned());
                out.secrets.push(secret);
            }
        }
    }
    Ok(out)
}

enum DocKind {
    Empty,
    SendingPool,
    RelayDomain,
    EventSink,
    Secret,
}

fn document_kind(
    value: &serde_yaml::Value,
    origin: &str,
    index: usize,
) -> Result<DocKind, ConfigError> {
    if value.is_null() {
        return Ok(DocKind::Empty);
    }
    let field = |name: &str| {
        value
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    match (api_version.as_str(), kind.as_str()) {
        (API_VERSION, "SendingPool") => Ok(DocKind::SendingPool),
        (API_VERSION, "RelayDomain") => Ok(DocKind::RelayDomain),
        (API_VERSION, "EventSink") => Ok(DocKind::EventSink),
        ("v1", "Secret") => Ok(DocKind::Secret),
        _ => Err(ConfigError::UnsupportedKind {
            origin: origin.to_owned(),
            index,
            kind,
            api_version,
        }),
    }
}
