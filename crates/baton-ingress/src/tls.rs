//! Server TLS: load a certificate chain and key from PEM files (production) and reload them when
//! the files change ([`ReloadingCert`]: cert-manager renewals, a rotated Secret — new sessions
//! get the new certificate, sessions in progress keep theirs, nothing restarts), or generate a
//! self-signed certificate (`baton dev` only), and name negotiated cipher suites the IANA way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use baton_telemetry::Metrics;
use parking_lot::{Mutex, RwLock};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::IngressError;

/// How often the certificate files are compared with the ones in force.
pub const RELOAD_EVERY: Duration = Duration::from_secs(5);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and key from PEM files, served to every new TLS session and re-read when
/// the files' contents change. A renewal that does not load (unreadable, no certificate, no key,
/// a key that does not match the certificate) is refused: the certificate in force stays, and
/// the failure is logged and counted once per change of the files.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents last tried (in force, or refused), so an unchanged file is not
    /// reloaded and a refused one is not reported again.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

/// What one [`ReloadingCert::reload_if_changed`] did.
#[derive(Debug)]
pub enum Reload {
    /// The files are the ones already tried.
    Unchanged,
    /// New files, now served to new sessions.
    Reloaded,
    /// New files that do not load; the previous certificate stays.
    Refused(IngressError),
}

fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert: &Path,
    key: &Path,
) -> Result<CertifiedKey, IngressError> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| IngressError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(IngressError::Tls(format!(
            "{}: no certificate",
            cert.display()
        )));
    }
    let private = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| IngressError::Tls(format!("{}: {e}", key.display())))?
        .ok_or_else(|| IngressError::Tls(format!("{}: no private key", key.display())))?;
    CertifiedKey::from_der(certs, private, &provider())
        .map_err(|e| IngressError::Tls(format!("{} / {}: {e}", cert.display(), key.display())))
}

fn read(p: &Path) -> Result<Vec<u8>, IngressError> {
    std::fs::read(p).map_err(|e| IngressError::Tls(format!("{}: {e}", p.display())))
}

impl ReloadingCert {
    /// Load the files now (a failure here stops the ingress from starting).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, IngressError> {
        let (cert_pem, key_pem) = (read(cert)?, read(key)?);
        let ck = certified_key(&cert_pem, &key_pem, cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert_path: cert.to_path_buf(),
            key_path: key.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            seen: Mutex::new((cert_pem, key_pem)),
        }))
    }

    /// A server config that asks this resolver for the certificate of every handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, IngressError> {
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| IngressError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        Ok(Arc::new(cfg))
    }

    /// Compare the files with the ones last tried; load them when they changed. Both files are
    /// read first, so a renewal that replaces them one after the other is taken once both are
    /// there (a key that does not match yet is refused, then taken on the next change).
    pub fn reload_if_changed(&self) -> Reload {
        let (cert_pem, key_pem) = match (read(&self.cert_path), read(&self.key_path)) {
            (Ok(c), Ok(k)) => (c, k),
            (Err(e), _) | (_, Err(e)) => {
                // A file missing for a moment (a Secret being swapped) is not a change.
                tracing::debug!(error = %e, "certificate files not readable; keeping the one in force");
                return Reload::Unchanged;
            }
        };
        {
            let mut seen = self.seen.lock();
            if seen.0 == cert_pem && seen.1 == key_pem {
                return Reload::Unchanged;
            }
            *seen = (cert_pem.clone(), key_pem.clone());
        }
        match certified_key(&cert_pem, &key_pem, &self.cert_path, &self.key_path) {
            Ok(ck) => {
                *self.current.write() = Arc::new(ck);
                Reload::Reloaded
            }
            Err(e) => Reload::Refused(e),
        }
    }

    /// Check the files every `every` until `stop`, logging and counting each reload
    /// (`baton_ingress_tls_reloads_total{result="ok"|"refused"}`).
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        metrics: Metrics,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            match outcome {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Reloaded) => {
                    metrics.ingress_tls_reloads.with_label_values(&["ok"]).inc();
                    tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded; new sessions get it");
                }
                Ok(Reload::Refused(e)) => {
                    metrics
                        .ingress_tls_reloads
                        .with_label_values(&["refused"])
                        .inc();
                    tracing::error!(error = %e, "new TLS certificate files refused; keeping the certificate in force");
                }
                Err(e) => tracing::warn!(error = %e, "certificate reload task failed"),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// Load a PEM certificate chain and private key (PKCS#8, PKCS#1 or SEC1) once, without
/// watching the files (see [`ReloadingCert`] for that).
pub fn load_pem(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, IngressError> {
    ReloadingCert::load(cert, key)?.server_config()
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

    fn write_pair(dir: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
        let ck = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn served(r: &ReloadingCert) -> Vec<u8> {
        r.current.read().cert[0].to_vec()
    }

    /// New files are taken, a renewal that does not load is refused (the certificate in force
    /// stays) and reported once, and files that did not change are not reloaded.
    #[test]
    fn certificate_files_reload_when_they_change() {
        let dir = std::env::temp_dir().join(format!("baton-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = write_pair(&dir, &["a.test"]);
        let r = ReloadingCert::load(&cert, &key).unwrap();
        let first = served(&r);
        assert!(matches!(r.reload_if_changed(), Reload::Unchanged));
        write_pair(&dir, &["b.test"]);
        assert!(matches!(r.reload_if_changed(), Reload::Reloaded));
        let second = served(&r);
        assert_ne!(first, second);
        // A key from another pair does not match the certificate: refused, once.
        let other = rcgen::generate_simple_self_signed(vec!["c.test".to_string()]).unwrap();
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        assert!(matches!(r.reload_if_changed(), Reload::Refused(_)));
        assert!(matches!(r.reload_if_changed(), Reload::Unchanged));
        assert_eq!(served(&r), second);
        // A file missing for a moment is not a change.
        std::fs::remove_file(&cert).unwrap();
        assert!(matches!(r.reload_if_changed(), Reload::Unchanged));
        assert!(r.server_config().is_ok());
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
        for s in rustls::crypto::aws_lc_rs::default_provider().cipher_suites {
            let n = iana_cipher_name(s.suite());
            assert!(n.starts_with("TLS_") && !n.starts_with("TLS13_"), "{n}");
        }
    }
}
