//! DKIM private keys: PEM decoding, validation with the signer's crypto library (aws-lc-rs), and
//! derivation of the public key published in DNS.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::crd::DkimAlgorithm;

/// Why a DKIM key cannot be used; becomes the `DkimKeyReady=False` reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KeyProblem {
    /// CamelCase condition reason.
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

fn problem(reason: &'static str, message: impl Into<String>) -> KeyProblem {
    KeyProblem {
        reason,
        message: message.into(),
    }
}

/// Validates a PKCS#8 PEM private key for `algorithm` and returns the public key as published in
/// DNS (RSA: DER SubjectPublicKeyInfo; Ed25519: the raw 32-byte key).
pub(crate) fn public_key_from_pem(
    pem: &str,
    algorithm: DkimAlgorithm,
) -> Result<Vec<u8>, KeyProblem> {
    let der = pkcs8_der(pem)?;
    let rsa = RsaKeyPair::from_pkcs8(&der);
    let ed25519 = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der);
    match (algorithm, rsa, ed25519) {
        (DkimAlgorithm::RsaSha256, Ok(key), _) => Ok(rsa_spki(key.public_key().as_ref())),
        (DkimAlgorithm::Ed25519Sha256, _, Ok(key)) => Ok(key.public_key().as_ref().to_vec()),
        (DkimAlgorithm::RsaSha256, Err(_), Ok(_)) => Err(problem(
            "AlgorithmMismatch",
            "the key is an Ed25519 key but the algorithm is rsa-sha256",
        )),
        (DkimAlgorithm::Ed25519Sha256, Ok(_), Err(_)) => Err(problem(
            "AlgorithmMismatch",
            "the key is an RSA key but the algorithm is ed25519-sha256",
        )),
        (DkimAlgorithm::RsaSha256, Err(e), Err(_)) => Err(problem(
            "InvalidKey",
            format!("not a usable RSA PKCS#8 key (2048 to 8192 bits): {e}"),
        )),
        (DkimAlgorithm::Ed25519Sha256, Err(_), Err(e)) => Err(problem(
            "InvalidKey",
            format!("not a usable Ed25519 PKCS#8 key: {e}"),
        )),
    }
}

/// Decodes the first `-----BEGIN PRIVATE KEY-----` block of `pem`.
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, KeyProblem> {
    let Some(start) = pem.find("-----BEGIN ") else {
        return Err(problem(
            "InvalidKey",
            "private.pem is not PEM (no BEGIN line)",
        ));
    };
    let rest = &pem[start + "-----BEGIN ".len()..];
    let label = rest.split("-----").next().unwrap_or_default();
    if label != "PRIVATE KEY" {
        let hint = match label {
            "RSA PRIVATE KEY" => {
                "; convert the PKCS#1 key with `openssl pkcs8 -topk8 -nocrypt -in key.pem`"
            }
            "ENCRYPTED PRIVATE KEY" => "; the key must not be encrypted",
            _ => "",
        };
        return Err(problem(
            "InvalidKey",
            format!(
                "private.pem holds a {label:?} block, expected an unencrypted PKCS#8 \"PRIVATE KEY\"{hint}"
            ),
        ));
    }
    let body_start = rest.find('\n').map(|i| i + 1).unwrap_or(rest.len());
    let body = &rest[body_start..];
    let Some(end) = body.find("-----END PRIVATE KEY-----") else {
        return Err(problem(
            "InvalidKey",
            "private.pem has no END PRIVATE KEY line",
        ));
    };
    let b64: String = body[..end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64.as_bytes()).map_err(|e| {
        problem(
            "InvalidKey",
            format!("private.pem is not valid base64: {e}"),
        )
    })
}

/// Wraps a PKCS#1 `RSAPublicKey` in a DER SubjectPublicKeyInfo with the rsaEncryption OID.
fn rsa_spki(rsa_public_key: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM_ID: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bit_string = vec![0u8]; // no unused bits
    bit_string.extend_from_slice(rsa_public_key);
    let mut body = RSA_ALGORITHM_ID.to_vec();
    body.extend(der_tlv(0x03, &bit_string));
    der_tlv(0x30, &body)
}

fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der_tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn rejects_non_pkcs8_pem() {
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let err = public_key_from_pem(pkcs1, DkimAlgorithm::RsaSha256).unwrap_err();
        assert_eq!(err.reason, "InvalidKey");
        assert!(err.message.contains("openssl pkcs8"), "{}", err.message);
        let err = public_key_from_pem("hello", DkimAlgorithm::RsaSha256).unwrap_err();
        assert!(err.message.contains("not PEM"));
        let garbage = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = public_key_from_pem(garbage, DkimAlgorithm::Ed25519Sha256).unwrap_err();
        assert_eq!(err.reason, "InvalidKey");
    }
}
