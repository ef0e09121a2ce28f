//! TLS fixtures for system tests: self-signed certificates (rcgen) and rustls configs on the
//! ring provider.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::RootCertStore;
use rustls::crypto::aws_lc_rs as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Installs ring as the process-wide rustls provider; a no-op when one is already installed.
pub fn install_crypto_provider() {
    let _ = provider::default_provider().install_default();
}

/// A fresh self-signed certificate for `names` (DNS names or IP addresses) and its key.
///
/// Panics if rcgen rejects a name: that is a bug in the calling test.
#[allow(
    clippy::expect_used,
    reason = "test fixture; an invalid name is a test bug"
)]
pub fn self_signed(names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified =
        rcgen::generate_simple_self_signed(names).expect("rcgen: generate self-signed cert");
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    (
        vec![certified.cert.der().clone()],
        PrivateKeyDer::Pkcs8(key),
    )
}

/// A server config presenting `certs`/`key`, no client authentication.
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .context("rustls protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("rustls server certificate")?;
    Ok(Arc::new(config))
}

/// A self-signed server config for `names` plus the root store that trusts it.
pub fn self_signed_server(
    names: &[&str],
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<RootCertStore>)> {
    let (certs, key) = self_signed(names);
    let roots = root_store(&certs)?;
    Ok((server_config(certs, key)?, roots))
}

/// A root store trusting exactly `certs`.
pub fn root_store(certs: &[CertificateDer<'static>]) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert.clone()).context("add root certificate")?;
    }
    Ok(Arc::new(roots))
}

/// A private certificate authority for tests: issues server certificates that verify against
/// [`TestCa::pem`] (and against nothing else).
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    /// A fresh CA ("Baton test CA").
    pub fn new() -> anyhow::Result<TestCa> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Baton test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        Ok(TestCa { issuer })
    }

    /// The CA certificate, PEM (what goes into a `ca.crt`).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA: PEM
    /// certificate and PEM PKCS#8 key.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<(String, String)> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = rcgen::CertificateParams::new(names)?;
        let key = rcgen::KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// A fresh self-signed certificate for `names` and its key, both PEM (for servers that read
/// files).
#[allow(
    clippy::expect_used,
    reason = "test fixture; an invalid name is a test bug"
)]
pub fn self_signed_pem(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let certified =
        rcgen::generate_simple_self_signed(names).expect("rcgen: generate self-signed cert");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}
