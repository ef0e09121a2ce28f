//! `spec.returnPath` → `baton.v1.ReturnPath`: the domain and the VERP signing keys from the
//! referenced Secret (`key-0` … `key-31`, each at least 32 bytes).

use baton_proto::v1 as pb;

use super::secrets::{SecretIndex, secret_value};
use crate::crd::RelayDomainSpec;

/// Condition reason when the return path cannot be used.
pub(crate) const REASON: &str = "ReturnPathInvalid";

/// The compiled return path, `Ok(None)` when none is configured, or the problem.
pub(crate) fn return_path(
    spec: &RelayDomainSpec,
    namespace: &str,
    secrets: &SecretIndex<'_>,
) -> Result<Option<pb::ReturnPath>, (&'static str, String)> {
    let Some(rp) = &spec.return_path else {
        return Ok(None);
    };
    let name = &rp.key_secret_ref.name;
    let secret = secrets.get(namespace, name).ok_or_else(|| {
        (
            REASON,
            format!("return-path key Secret {namespace}/{name} not found"),
        )
    })?;
    let mut keys = Vec::new();
    for id in 0..=baton_core::verp::MAX_KEY_ID {
        let key = format!("key-{id}");
        if let Some(v) = secret_value(secret, &key) {
            if v.len() < baton_core::verp::MIN_KEY_LEN {
                return Err((
                    REASON,
                    format!(
                        "return-path key Secret {namespace}/{name}: {key} has {} bytes, at least {} are needed",
                        v.len(),
                        baton_core::verp::MIN_KEY_LEN
                    ),
                ));
            }
            keys.push(pb::VerpKey {
                id,
                secret: v.to_vec(),
                // Sealed when the snapshot is planned for storing (`plan::plan_sealed`).
                sealed_secret: None,
            });
        }
    }
    if keys.is_empty() {
        return Err((
            REASON,
            format!("return-path key Secret {namespace}/{name} has no key-0 … key-31"),
        ));
    }
    keys.sort_by_key(|k| std::cmp::Reverse(k.id));
    Ok(Some(pb::ReturnPath {
        domain: rp.domain.clone(),
        keys,
    }))
}
