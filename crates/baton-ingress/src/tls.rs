//! Server TLS material: load a certificate chain and key from PEM files (production), or
//! generate a self-signed certificate (`baton dev` only).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::IngressError;

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, IngressError> {
    let cfg =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| IngressError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| IngressError::Tls(e.to_string()))?;
    Ok(Arc::new(cfg))
}

/// Load a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_pem(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, IngressError> {
    let read =
        |p: &Path| std::fs::read(p).map_err(|e| IngressError::Tls(format!("{}: {e}", p.display())));
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| IngressError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(IngressError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| IngressError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| IngressError::Tls(format!("{}: no private key", key.display())))?;
    server_config(certs, key)
}

/// A self-signed certificate for `hostname` (development only).
pub fn self_signed(hostname: &str) -> Result<Arc<ServerConfig>, IngressError> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string(), "localhost".into()])
        .map_err(|e| IngressError::Tls(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    server_config(vec![ck.cert.der().clone()], key)
}
