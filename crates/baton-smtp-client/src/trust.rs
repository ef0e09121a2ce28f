//! Trust anchors for verified TLS: the system's roots (loaded once per process) and PEM CA
//! bundles (a private CA from a Secret).
//!
//! The system roots come from `rustls-native-certs`: the platform store (`/etc/ssl/certs` on
//! Debian and in Baton's image), overridable with `SSL_CERT_FILE` / `SSL_CERT_DIR`. A compiled-in
//! Mozilla list (`webpki-roots`) was the alternative; the platform store is what Postfix and
//! every other MTA on the host trust, and the operator of the image can change it.

use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use thiserror::Error;

/// Why trust anchors could not be had.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TrustError {
    /// The platform store held no usable certificate.
    #[error("no system trust anchors could be loaded ({0})")]
    NoSystemRoots(String),
    /// A CA bundle is not PEM or holds no usable certificate.
    #[error("CA bundle: {0}")]
    Bundle(String),
}

static SYSTEM: OnceLock<Result<Arc<RootCertStore>, TrustError>> = OnceLock::new();

/// The platform's trust anchors, loaded on first use and kept for the life of the process.
pub fn system_roots() -> Result<Arc<RootCertStore>, TrustError> {
    SYSTEM.get_or_init(load_system).clone()
}

fn load_system() -> Result<Arc<RootCertStore>, TrustError> {
    let loaded = rustls_native_certs::load_native_certs();
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let why = if errors.is_empty() {
            "the store is empty".to_owned()
        } else {
            errors.join("; ")
        };
        return Err(TrustError::NoSystemRoots(why));
    }
    if !errors.is_empty() {
        tracing::warn!(errors = %errors.join("; "), added, "some system trust anchors could not be read");
    }
    tracing::debug!(added, "loaded the system trust anchors");
    Ok(Arc::new(roots))
}

/// The trust anchors of a PEM bundle: every `CERTIFICATE` block (other blocks are skipped); at
/// least one must be a usable trust anchor.
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TrustError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrustError::Bundle(format!("not PEM: {e}")))?;
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TrustError::Bundle(format!(
            "no usable certificate ({ignored} unusable)"
        )));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        assert!(matches!(roots_from_pem(b""), Err(TrustError::Bundle(_))));
        assert!(matches!(
            roots_from_pem(
                b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"
            ),
            Err(TrustError::Bundle(_))
        ));
        // Valid base64 but not a certificate: parsed as a block, refused as an anchor.
        assert!(matches!(
            roots_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(TrustError::Bundle(_))
        ));
    }
}
