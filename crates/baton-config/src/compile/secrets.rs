//! Secret material: lookup by namespace/name, basic-auth credentials, salted password hashes.

use std::collections::BTreeMap;

use baton_proto::v1::Credential;
use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest as _, Sha256};

/// Key of the PEM CA bundle in a `caBundleSecretRef` Secret (the cert-manager and
/// service-account convention).
pub const CA_BUNDLE_SECRET_KEY: &str = "ca.crt";

/// Longest CA bundle accepted (the Mozilla root program's bundle is about 220 KiB).
const MAX_CA_BUNDLE: usize = 1024 * 1024;

/// Secret type of SMTP AUTH and smarthost credentials.
pub const BASIC_AUTH_TYPE: &str = "kubernetes.io/basic-auth";

/// Secrets indexed by `(namespace, name)`; a missing namespace means `default`.
pub(crate) struct SecretIndex<'a>(BTreeMap<(String, String), &'a Secret>);

impl<'a> SecretIndex<'a> {
    pub(crate) fn new(secrets: &'a [Secret]) -> Result<Self, crate::ConfigError> {
        let mut map = BTreeMap::new();
        for secret in secrets {
            let ns = super::namespace_of(&secret.metadata).to_owned();
            let name = secret.metadata.name.clone().unwrap_or_default();
            if map.insert((ns.clone(), name.clone()), secret).is_some() {
                return Err(crate::ConfigError::Duplicate {
                    kind: "Secret",
                    name: format!("{ns}/{name}"),
                });
            }
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.0
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }
}

/// The value of `key` in a Secret: `stringData` wins over `data`, as when the API server merges
/// them on write.
pub(crate) fn secret_value<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    if let Some(value) = secret.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(value.as_bytes());
    }
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.as_slice())
}

/// The PEM CA bundle of a `caBundleSecretRef`: the Secret's `ca.crt`, which must hold at least
/// one certificate and nothing that is not one (a private key there is refused: it would then
/// travel in the snapshot). Certificates are public; the bundle is carried as it is.
pub(crate) fn ca_bundle(
    secrets: &SecretIndex<'_>,
    r: &crate::crd::NamespacedSecretRef,
) -> Result<String, String> {
    use rustls_pki_types::pem::{PemObject as _, SectionKind};
    let ns = r.namespace_or_default();
    let secret = secrets
        .get(ns, &r.name)
        .ok_or_else(|| format!("Secret {ns}/{} not found", r.name))?;
    let pem = secret_value(secret, CA_BUNDLE_SECRET_KEY)
        .ok_or_else(|| format!("Secret {ns}/{} has no `{CA_BUNDLE_SECRET_KEY}` key", r.name))?;
    if pem.len() > MAX_CA_BUNDLE {
        return Err(format!(
            "Secret {ns}/{}: `{CA_BUNDLE_SECRET_KEY}` is larger than {MAX_CA_BUNDLE} octets",
            r.name
        ));
    }
    let mut certificates = 0usize;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        match section {
            Ok((SectionKind::Certificate, _)) => certificates += 1,
            Ok((kind, _)) => {
                return Err(format!(
                    "Secret {ns}/{}: `{CA_BUNDLE_SECRET_KEY}` holds a {kind:?} block; only \
                     certificates belong in a CA bundle",
                    r.name
                ));
            }
            Err(e) => {
                return Err(format!(
                    "Secret {ns}/{}: `{CA_BUNDLE_SECRET_KEY}` is not PEM: {e}",
                    r.name
                ));
            }
        }
    }
    if certificates == 0 {
        return Err(format!(
            "Secret {ns}/{}: `{CA_BUNDLE_SECRET_KEY}` holds no PEM certificate",
            r.name
        ));
    }
    String::from_utf8(pem.to_vec()).map_err(|_| {
        format!(
            "Secret {ns}/{}: `{CA_BUNDLE_SECRET_KEY}` is not UTF-8",
            r.name
        )
    })
}

/// Username and password of a basic-auth Secret. A Secret without `type` (common in files) is
/// accepted; any other type than `kubernetes.io/basic-auth` is refused.
pub(crate) fn basic_auth(secret: &Secret) -> Result<(String, Vec<u8>), String> {
    if let Some(t) = secret.type_.as_deref()
        && t != BASIC_AUTH_TYPE
    {
        return Err(format!("has type {t:?}, expected {BASIC_AUTH_TYPE:?}"));
    }
    let username = secret_value(secret, "username").ok_or("has no `username` key")?;
    let username = std::str::from_utf8(username)
        .map_err(|_| "`username` is not UTF-8".to_owned())?
        .trim();
    if username.is_empty() {
        return Err("`username` is empty".to_owned());
    }
    let password = secret_value(secret, "password").ok_or("has no `password` key")?;
    if password.is_empty() {
        return Err("`password` is empty".to_owned());
    }
    Ok((username.to_owned(), password.to_vec()))
}

/// A hashed SMTP AUTH credential for `username`/`password` read from `secret`.
///
/// The salt is 16 bytes derived with SHA-256 from the Secret's identity (its `uid`, or
/// `namespace/name` when it has none, as in files) and the username, not drawn at random: the
/// same Secret then compiles to the same snapshot, so [`crate::config_digest`] only changes when
/// content does. Each credential still has its own salt; recreating the Secret changes it.
pub(crate) fn hashed_credential(secret: &Secret, username: &str, password: &[u8]) -> Credential {
    let identity = match secret.metadata.uid.as_deref() {
        Some(uid) if !uid.is_empty() => format!("uid:{uid}"),
        _ => format!(
            "name:{}/{}",
            super::namespace_of(&secret.metadata),
            secret.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    let mut h = Sha256::new();
    h.update(b"baton.dev/credential-salt/v1\0");
    h.update(identity.as_bytes());
    h.update(b"\0");
    h.update(username.as_bytes());
    let salt = &h.finalize()[..16];
    match argon2id_phc(salt, password) {
        Some(phc) => Credential {
            username: username.to_owned(),
            argon2id: phc,
            ..Credential::default()
        },
        // Only if the argon2 parameters below were rejected (they are constants): the legacy
        // verifier still works, and a test pins that it is not what is produced.
        None => Credential {
            username: username.to_owned(),
            salt: hex::encode(salt),
            password_sha256: hex::encode(password_hash(salt, password)),
            argon2id: String::new(),
        },
    }
}

/// argon2id memory cost (KiB), iterations and lanes of the SMTP AUTH verifiers: RFC 9106's
/// second recommended option scaled to OWASP's minimum (19 MiB, 2 passes, 1 lane). Verifying one
/// costs tens of milliseconds of CPU (see docs/benchmarks.md); the ingress caches successes.
pub const ARGON2_M_KIB: u32 = 19 * 1024;
/// argon2id passes.
pub const ARGON2_T: u32 = 2;
/// argon2id lanes.
pub const ARGON2_P: u32 = 1;

/// Verifiers already computed by this process, keyed by SHA-256(salt || password): the
/// operator compiles the same Secrets at every sync and must not pay argon2 each time. In
/// memory only; bounded (cleared when full).
static PHC_MEMO: std::sync::LazyLock<
    parking_lot::Mutex<std::collections::HashMap<[u8; 32], String>>,
> = std::sync::LazyLock::new(Default::default);
const PHC_MEMO_MAX: usize = 4096;

/// The argon2id PHC string of `password` with `salt` (deterministic for a given salt, so a
/// snapshot only changes when a password does).
fn argon2id_phc(salt: &[u8], password: &[u8]) -> Option<String> {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let key = password_hash(salt, password);
    if let Some(phc) = PHC_MEMO.lock().get(&key) {
        return Some(phc.clone());
    }
    let params = argon2::Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, Some(32)).ok()?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(salt).ok()?;
    let phc = argon.hash_password(password, &salt).ok()?.to_string();
    let mut memo = PHC_MEMO.lock();
    if memo.len() >= PHC_MEMO_MAX {
        memo.clear();
    }
    memo.insert(key, phc.clone());
    Some(phc)
}

fn password_hash(salt: &[u8], password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password);
    h.finalize().into()
}

/// Whether `password` matches a compiled [`Credential`]: the data plane's check
/// ([`baton_core::policy::verify_credential`]; a password that is not UTF-8 never matches).
pub fn verify_password(credential: &Credential, password: &[u8]) -> bool {
    std::str::from_utf8(password)
        .is_ok_and(|p| baton_core::policy::verify_credential(credential, p))
}
