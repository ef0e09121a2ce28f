//! Server TLS: load a certificate chain and key from PEM files (production), or generate a
//! self-signed certificate (`baton dev` only), and name negotiated cipher suites the IANA way.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ServerConfig};

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

/// The names `baton dev`'s certificate is valid for: `localhost`, `127.0.0.1` and `::1` (what
/// local clients connect to), plus `hostname` when it is another name.
pub fn dev_names(hostname: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
    if let Some(h) = hostname.map(str::trim).filter(|h| !h.is_empty())
        && !names.iter().any(|n| n.eq_ignore_ascii_case(h))
    {
        names.push(h.to_string());
    }
    names
}

/// `baton dev`'s self-signed certificate, kept in `dir` as `dev.crt` / `dev.key` so that a
/// client trusts it once (`msmtp --tls-trust-file`, nodemailer `ca`) and keeps trusting it
/// across restarts: loaded when both files exist, otherwise generated for [`dev_names`] and
/// written (the key readable by its owner only). Returns the server config and the
/// certificate's path.
pub fn dev_certificate(
    dir: &Path,
    hostname: Option<&str>,
) -> Result<(Arc<ServerConfig>, std::path::PathBuf), IngressError> {
    let (cert, key) = (dir.join("dev.crt"), dir.join("dev.key"));
    if !(cert.exists() && key.exists()) {
        let io = |p: &Path, e: std::io::Error| IngressError::Tls(format!("{}: {e}", p.display()));
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let ck = rcgen::generate_simple_self_signed(dev_names(hostname))
            .map_err(|e| IngressError::Tls(e.to_string()))?;
        write_private(&key, ck.signing_key.serialize_pem().as_bytes()).map_err(|e| io(&key, e))?;
        std::fs::write(&cert, ck.cert.pem()).map_err(|e| io(&cert, e))?;
    }
    Ok((load_pem(&cert, &key)?, cert))
}

/// Create `path` with mode 0600 (replacing an older file) and write `bytes`.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The IANA name of a cipher suite, as `Received:` and logs show it. rustls calls the TLS 1.3
/// suites `TLS13_…`, the IANA registry (and OpenSSL, Postfix, testssl.sh) `TLS_…`; TLS 1.2
/// suites have the IANA name in rustls already. An unnamed suite shows its code point.
pub fn iana_cipher_name(suite: CipherSuite) -> String {
    let name = match u16::from(suite) {
        0x1301 => Some("TLS_AES_128_GCM_SHA256"),
        0x1302 => Some("TLS_AES_256_GCM_SHA384"),
        0x1303 => Some("TLS_CHACHA20_POLY1305_SHA256"),
        0x1304 => Some("TLS_AES_128_CCM_SHA256"),
        0x1305 => Some("TLS_AES_128_CCM_8_SHA256"),
        _ => suite.as_str(),
    };
    name.map_or_else(|| format!("0x{:04X}", u16::from(suite)), str::to_string)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dev_names_cover_local_clients() {
        assert_eq!(dev_names(None), ["localhost", "127.0.0.1", "::1"]);
        assert_eq!(
            dev_names(Some("LOCALHOST")),
            ["localhost", "127.0.0.1", "::1"]
        );
        assert_eq!(dev_names(Some(" ")).len(), 3);
        assert_eq!(
            dev_names(Some("mx.dev.test")),
            ["localhost", "127.0.0.1", "::1", "mx.dev.test"]
        );
    }

    #[test]
    fn dev_certificate_is_kept_across_starts() {
        let dir = std::env::temp_dir().join(format!("baton-devcert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (_, path) = dev_certificate(&dir.join("tls"), None).unwrap();
        let first = std::fs::read(&path).unwrap();
        let (_, again) = dev_certificate(&dir.join("tls"), Some("other.test")).unwrap();
        assert_eq!(path, again);
        assert_eq!(std::fs::read(&again).unwrap(), first);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.join("tls/dev.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cipher_names_are_iana() {
        let name = |n: u16| iana_cipher_name(CipherSuite::from(n));
        assert_eq!(name(0x1301), "TLS_AES_128_GCM_SHA256");
        assert_eq!(name(0x1302), "TLS_AES_256_GCM_SHA384");
        assert_eq!(name(0x1303), "TLS_CHACHA20_POLY1305_SHA256");
        assert_eq!(name(0xc030), "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384");
        assert_eq!(
            name(0xcca9),
            "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        );
        assert_eq!(name(0x5a5a), "0x5A5A");
        // Every suite the server can negotiate has a name without rustls's TLS13_ prefix.
        for s in rustls::crypto::ring::default_provider().cipher_suites {
            let n = iana_cipher_name(s.suite());
            assert!(n.starts_with("TLS_") && !n.starts_with("TLS13_"), "{n}");
        }
    }
}
