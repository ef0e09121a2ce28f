//! rustls client configuration for STARTTLS and implicit TLS: verifying (Required or implicit,
//! with `verify_certificates`: Postfix's `secure`) or not (opportunistic, like Postfix's `may`,
//! or Required without verification, Postfix's `encrypt`).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use crate::{ClientConfig, ClientError, TlsMode};

/// Whether a handshake under `config` verifies the certificate chain and name.
pub(crate) fn verifies(config: &ClientConfig) -> bool {
    (config.tls == TlsMode::Required || config.implicit_tls) && config.verify_certificates
}

/// Builds the rustls config for one connection, always on the aws-lc-rs provider (the one crypto provider in the binary).
pub(crate) fn rustls_config(
    config: &ClientConfig,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let tls = if verifies(config) {
        let roots = config.root_store.clone().ok_or_else(|| {
            ClientError::Tls("certificate verification requested without a root store".into())
        })?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        builder.with_webpki_verifier(verifier).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(Arc::new(tls))
}

/// The name for SNI and verification: an MX host name loses its trailing dot.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, ClientError> {
    let name = name.strip_suffix('.').unwrap_or(name);
    ServerName::try_from(name.to_owned())
        .map_err(|e| ClientError::Tls(format!("invalid server name {name:?}: {e}")))
}

/// Accepts any certificate but still checks the handshake signatures, so the session is
/// encrypted (protects against passive observers, not against an active attacker).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
