//! DKIM key Secrets: generation of a private key (RSA-2048 with the `rsa` crate, since ring cannot
//! generate RSA keys; Ed25519 with ring) as PKCS#8 PEM, and the Secret that holds it, owned by its
//! RelayDomain. The key never leaves this module except inside the Secret body.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use baton_config::compile::DKIM_KEY_SECRET_KEY;
use baton_config::crd::{DkimAlgorithm, RelayDomain};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource as _;

use crate::error::{Error, Result};
use crate::workload::MANAGED_BY;

/// RSA modulus size of generated keys.
pub const RSA_BITS: usize = 2048;
/// Annotation naming the selector a generated key Secret was made for.
pub const SELECTOR_ANNOTATION: &str = "baton.dev/dkim-selector";
/// Annotation naming the algorithm of a generated key Secret.
pub const ALGORITHM_ANNOTATION: &str = "baton.dev/dkim-algorithm";
/// Label naming the RelayDomain a generated key Secret belongs to.
pub const RELAY_DOMAIN_LABEL: &str = "baton.dev/relay-domain";

/// A DKIM key the operator must make sure exists: selector, algorithm, Secret name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    /// DKIM selector.
    pub selector: String,
    /// Signing algorithm.
    pub algorithm: DkimAlgorithm,
    /// Name of the Secret in the RelayDomain's namespace.
    pub secret: String,
}

/// Every key a RelayDomain references (primary first, then the additional keys).
pub fn key_refs(rd: &RelayDomain) -> Vec<KeyRef> {
    let Some(dkim) = &rd.spec.dkim else {
        return Vec::new();
    };
    std::iter::once(KeyRef {
        selector: dkim.selector.clone(),
        algorithm: dkim.algorithm,
        secret: dkim.key_secret_ref.name.clone(),
    })
    .chain(dkim.additional_keys.iter().map(|k| KeyRef {
        selector: k.selector.clone(),
        algorithm: k.algorithm,
        secret: k.key_secret_ref.name.clone(),
    }))
    .collect()
}

/// A new private key for `algorithm`, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
pub fn generate_pem(algorithm: DkimAlgorithm) -> Result<String> {
    let keygen = |e: &dyn std::fmt::Display| Error::KeyGeneration(e.to_string());
    match algorithm {
        DkimAlgorithm::RsaSha256 => {
            use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|e| keygen(&e))?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| keygen(&e))?;
            Ok(pem.as_str().to_owned())
        }
        DkimAlgorithm::Ed25519Sha256 => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let der = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|e| keygen(&e))?;
            Ok(pem_encode("PRIVATE KEY", der.as_ref()))
        }
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The Secret holding a generated key for `key`, owned by `rd` (deleted with it).
pub fn key_secret(rd: &RelayDomain, key: &KeyRef, pem: String) -> Result<Secret> {
    let owner = rd.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: "RelayDomain",
        field: "metadata.uid",
    })?;
    let name = rd.metadata.name.clone().ok_or(Error::MissingField {
        kind: "RelayDomain",
        field: "metadata.name",
    })?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(key.secret.clone()),
            namespace: rd.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "baton".to_owned()),
                (
                    "app.kubernetes.io/managed-by".to_owned(),
                    MANAGED_BY.to_owned(),
                ),
                (RELAY_DOMAIN_LABEL.to_owned(), name),
            ])),
            annotations: Some(BTreeMap::from([
                (SELECTOR_ANNOTATION.to_owned(), key.selector.clone()),
                (
                    ALGORITHM_ANNOTATION.to_owned(),
                    key.algorithm.as_str().to_owned(),
                ),
            ])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            DKIM_KEY_SECRET_KEY.to_owned(),
            ByteString(pem.into_bytes()),
        )])),
        ..Secret::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, RsaKeyPair};

    fn der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(body).unwrap()
    }

    #[test]
    fn generated_keys_are_pkcs8_pem_that_aws_lc_accepts() {
        let ed = generate_pem(DkimAlgorithm::Ed25519Sha256).unwrap();
        assert!(ed.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der(&ed)).is_ok());
        let rsa = generate_pem(DkimAlgorithm::RsaSha256).unwrap();
        assert!(rsa.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let key = RsaKeyPair::from_pkcs8(&der(&rsa)).unwrap();
        assert_eq!(key.public_modulus_len() * 8, RSA_BITS);
    }
}
