//! The crate's error type.

/// Problems baton-core finds in its input. Building a [`crate::policy::PolicyIndex`] never
/// fails: entries that cannot be used are skipped and reported as these errors (see
/// [`crate::policy::PolicyIndex::skipped`]) so the caller can log them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// A `networks` entry of a RelayDomain is neither a CIDR nor an IP address.
    #[error("relay domain {domain}: invalid network {value:?} ignored")]
    InvalidNetwork {
        /// `namespace/name` of the RelayDomain.
        domain: String,
        /// The offending entry.
        value: String,
    },
    /// A credential's salt or password hash is not hex, or the hash is not 32 bytes.
    #[error("relay domain {domain}: credential {username:?} has an invalid salt or hash, ignored")]
    InvalidCredential {
        /// `namespace/name` of the RelayDomain.
        domain: String,
        /// The credential's username.
        username: String,
    },
    /// An `allowed_senders` entry is not of the form `local@domain`, `*@domain` or
    /// `*@*.domain`.
    #[error("relay domain {domain}: invalid allowed sender pattern {pattern:?} ignored")]
    InvalidSenderPattern {
        /// `namespace/name` of the RelayDomain.
        domain: String,
        /// The offending pattern.
        pattern: String,
    },
}

impl CoreError {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CoreError::InvalidNetwork { .. } => "invalid_network",
            CoreError::InvalidCredential { .. } => "invalid_credential",
            CoreError::InvalidSenderPattern { .. } => "invalid_sender_pattern",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_messages() {
        let e = CoreError::InvalidNetwork {
            domain: "a/b".into(),
            value: "x".into(),
        };
        assert_eq!(e.metric_label(), "invalid_network");
        assert!(e.to_string().contains("a/b"));
        let e = CoreError::InvalidCredential {
            domain: "a/b".into(),
            username: "u".into(),
        };
        assert_eq!(e.metric_label(), "invalid_credential");
        let e = CoreError::InvalidSenderPattern {
            domain: "a/b".into(),
            pattern: "p".into(),
        };
        assert_eq!(e.metric_label(), "invalid_sender_pattern");
    }
}
