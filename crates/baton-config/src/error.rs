//! [`ConfigError`]: everything that makes a set of resources unusable as a whole.

use std::path::PathBuf;

/// An error that makes the input unusable as a whole. Problems confined to one RelayDomain
/// (missing pool, missing or invalid DKIM key, conflicting claim) are not errors: they are
/// reported as conditions in [`crate::compile::DomainReport`].
///
/// `Display` is one line naming the file/document or the resource and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A YAML document could not be parsed, or did not match the schema of its kind (unknown
    /// field, wrong type, unknown enum value, ...).
    #[error("{origin}: document {index}{}: {message}", kind_suffix(kind))]
    Parse {
        /// File name (or other origin label) of the YAML stream.
        origin: String,
        /// Zero-based index of the document in the stream.
        index: usize,
        /// `kind` of the document, when known.
        kind: Option<String>,
        /// What was wrong, as reported by the YAML parser / deserializer.
        message: String,
    },
    /// A document has a `kind` (or `apiVersion`) this loader does not accept.
    #[error(
        "{origin}: document {index}: unsupported kind {kind:?} (apiVersion {api_version:?}); expected RelayDomain or SendingPool (baton.dev/v1alpha1) or Secret (v1)"
    )]
    UnsupportedKind {
        /// File name (or other origin label) of the YAML stream.
        origin: String,
        /// Zero-based index of the document in the stream.
        index: usize,
        /// The document's `kind` (empty when missing).
        kind: String,
        /// The document's `apiVersion` (empty when missing).
        api_version: String,
    },
    /// Two resources of the same kind share a name (and namespace).
    #[error("duplicate {kind} {name:?}")]
    Duplicate {
        /// Resource kind.
        kind: &'static str,
        /// `name` or `namespace/name`.
        name: String,
    },
    /// A field holds a value the compiler cannot use (bad CIDR, bad duration, zero weight,
    /// Smarthost mode without smarthosts, missing smarthost credentials Secret, ...).
    #[error("{kind} {name}: {field}: {message}")]
    Invalid {
        /// Resource kind.
        kind: &'static str,
        /// `name` or `namespace/name` of the resource.
        name: String,
        /// Path of the offending field (`spec.retry.schedule[2]`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// A bounded label for metrics (`io`, `parse`, `unsupported_kind`, `duplicate`, `invalid`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Parse { .. } => "parse",
            Self::UnsupportedKind { .. } => "unsupported_kind",
            Self::Duplicate { .. } => "duplicate",
            Self::Invalid { .. } => "invalid",
        }
    }

    pub(crate) fn invalid(
        kind: &'static str,
        name: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            kind,
            name: name.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn kind_suffix(kind: &Option<String>) -> String {
    kind.as_ref().map(|k| format!(" ({k})")).unwrap_or_default()
}
