//! The keyring Secret: the keys the operator seals the snapshot's secrets with
//! (`baton_seal`). With `--keyring-secret NAME` the operator reads the Secret `NAME` of the
//! install namespace at every sync (a `key-<n+1>` added to it seals the next snapshot, no
//! restart) and creates it with one random key when it does not exist, so a fresh install
//! never has key material in a rendered manifest or a values file. Ingress pods mount the same
//! Secret (the chart), worker pods get it from their Deployment ([`crate::workload`]). Without
//! the flag the operator uses `--keyring DIR` like every other process.

use std::collections::BTreeMap;

use baton_seal::Keyring;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::workload::MANAGED_BY;

/// Annotation on a keyring Secret the operator created.
pub const KEYRING_ANNOTATION: &str = "baton.dev/keyring";

/// The keyring Secret (`namespace`, `name`) the settings name, if any.
pub fn secret_ref(ctx: &Context) -> Option<(String, String)> {
    ctx.settings
        .keyring_secret
        .as_ref()
        .map(|name| (ctx.settings.namespace.clone(), name.clone()))
}

/// The keyring for this sync: from the keyring Secret among `secrets` (created with one key
/// when missing), else from the settings' directory (`None` without either).
pub async fn load(ctx: &Context, secrets: &[Secret]) -> Result<Option<Keyring>> {
    let Some((ns, name)) = secret_ref(ctx) else {
        return ctx
            .settings
            .keyring
            .load()
            .map_err(|e| Error::Config(e.into()));
    };
    let found = secrets.iter().find(|s| {
        s.metadata.name.as_deref() == Some(name.as_str())
            && s.metadata.namespace.as_deref() == Some(ns.as_str())
    });
    let secret = match found {
        Some(s) => s.clone(),
        None => create(ctx, &ns, &name).await?,
    };
    let data = secret.data.unwrap_or_default();
    let origin = format!("Secret {ns}/{name}");
    Keyring::from_files(
        &origin,
        data.iter().map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
    .map(Some)
    .map_err(|e| Error::Config(e.into()))
}

/// The keyring Secret with one new key (`key-1`).
pub fn new_secret(ns: &str, name: &str) -> Result<Secret> {
    let key = baton_seal::generate_key_text().map_err(|e| Error::Config(e.into()))?;
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            annotations: Some(BTreeMap::from([(
                KEYRING_ANNOTATION.to_owned(),
                "seals the config snapshot's secrets; rotate by adding key-<n+1>, remove the old key once every pod runs the re-sealed snapshot".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            format!("{}1", baton_seal::KEY_FILE_PREFIX),
            ByteString(key.into_bytes()),
        )])),
        ..Secret::default()
    })
}

/// Create the keyring Secret; another replica creating it first is fine (its key is read).
async fn create(ctx: &Context, ns: &str, name: &str) -> Result<Secret> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    match api
        .create(&PostParams::default(), &new_secret(ns, name)?)
        .await
    {
        Ok(s) => {
            tracing::info!(secret = %format!("{ns}/{name}"), "created the keyring Secret with key 1");
            Ok(s)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(api.get(name).await?),
        Err(e) => Err(e.into()),
    }
}
