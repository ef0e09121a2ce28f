//! [`ConfigError`]: everything that makes a set of resources unusable as a whole, and
//! [`InvalidObject`]: why one SendingPool is left out of the snapshot, or one RelayDomain is
//! never ready.

use std::path::PathBuf;

/// An error that makes the input unusable as a whole. Problems confined to one object are not
/// errors of [`crate::compile()`]: an invalid SendingPool is left out of the snapshot, an invalid
/// RelayDomain stays in it but is never ready, and either is reported as an [`InvalidObject`] in [`crate::compile::PoolReport`] or
/// [`crate::compile::DomainReport`]; other RelayDomain problems (missing pool, missing or invalid
/// DKIM key, conflicting claim) are conditions in the [`crate::compile::DomainReport`].
/// [`crate::Compiled::ensure_valid`] turns invalid objects back into an error
/// ([`ConfigError::InvalidObjects`]) for callers that want all or nothing (the CLI).
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
    /// A resource that cannot even be told apart from the others: `metadata.name` is missing.
    /// (Invalid fields of a named resource are [`InvalidObject`]s, not errors of `compile`.)
    #[error(transparent)]
    Invalid(InvalidObject),
    /// Some objects are invalid (left out of the snapshot, or never ready); returned by
    /// [`crate::Compiled::ensure_valid`] (SendingPools by name first, then RelayDomains by
    /// `namespace/name`).
    #[error("{} invalid object(s): {}", .0.len(), join(.0))]
    InvalidObjects(Vec<InvalidObject>),
    /// The snapshot's secrets could not be sealed (no usable keyring).
    #[error("sealing the snapshot's secrets: {0}")]
    Seal(#[from] baton_seal::SealError),
}

/// A field of one SendingPool or RelayDomain holds a value the compiler cannot use (bad CIDR, bad
/// duration, zero weight, Smarthost mode without smarthosts, missing smarthost credentials
/// Secret, ...). A SendingPool is then left out of the snapshot, a RelayDomain is kept but never
/// ready (its clients get `451 4.7.5`); everything else still compiles.
///
/// `Display` is one line: `<kind> <name>: <field>: <message>`. Messages never carry secret
/// material (Secret values are never quoted, only Secret names).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {field}: {message}")]
pub struct InvalidObject {
    /// Resource kind (`SendingPool`, `RelayDomain`).
    pub kind: &'static str,
    /// `name` (SendingPool) or `namespace/name` (RelayDomain) of the resource.
    pub name: String,
    /// Path of the offending field (`spec.retry.schedule[2]`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidObject {
    pub(crate) fn new(
        kind: &'static str,
        name: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// `<field>: <message>`, without the object: for the object's own status condition.
    pub fn detail(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

impl ConfigError {
    /// A bounded label for metrics (`io`, `parse`, `unsupported_kind`, `duplicate`, `invalid`,
    /// `invalid_objects`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Parse { .. } => "parse",
            Self::UnsupportedKind { .. } => "unsupported_kind",
            Self::Duplicate { .. } => "duplicate",
            Self::Invalid(_) => "invalid",
            Self::InvalidObjects(_) => "invalid_objects",
            Self::Seal(_) => "seal",
        }
    }
}

impl From<InvalidObject> for ConfigError {
    fn from(e: InvalidObject) -> Self {
        Self::Invalid(e)
    }
}

fn kind_suffix(kind: &Option<String>) -> String {
    kind.as_ref().map(|k| format!(" ({k})")).unwrap_or_default()
}

fn join(errors: &[InvalidObject]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
