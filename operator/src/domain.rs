//! The RelayDomain reconciler: makes sure every DKIM key Secret the domain references exists,
//! generating a key (owned by the RelayDomain) when one is absent. Existing Secrets are never
//! read or overwritten here (metadata only). The domain's status is written by the snapshot sync
//! ([`crate::snapshot`]), which sees all domains at once.

use std::sync::Arc;
use std::time::Instant;

use baton_config::crd::RelayDomain;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};

use crate::context::{Context, FIELD_MANAGER};
use crate::dkim::{KeyRef, generate_pem, key_refs, key_secret};
use crate::error::{Error, Result};
use crate::snapshot::namespace_of;

/// Reconcile one RelayDomain (counted in `baton_operator_reconciles_total{kind="RelayDomain"}`).
pub async fn reconcile(rd: Arc<RelayDomain>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let r = ensure_keys(&rd, &ctx).await;
    ctx.observe("RelayDomain", started, &r);
    r.map(|()| Action::await_change())
}

async fn ensure_keys(rd: &RelayDomain, ctx: &Context) -> Result<()> {
    let ns = namespace_of(&rd.metadata);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    for key in key_refs(rd) {
        if secrets.get_metadata_opt(&key.secret).await?.is_some() {
            continue;
        }
        create_key(ctx, rd, &secrets, &key).await?;
    }
    Ok(())
}

async fn create_key(
    ctx: &Context,
    rd: &RelayDomain,
    secrets: &Api<Secret>,
    key: &KeyRef,
) -> Result<()> {
    let algorithm = key.algorithm;
    // RSA key generation takes a while: keep it off the async workers.
    let pem = tokio::task::spawn_blocking(move || generate_pem(algorithm))
        .await
        .map_err(|e| Error::KeyGeneration(e.to_string()))??;
    let secret = key_secret(rd, key, pem)?;
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    };
    match secrets.create(&params, &secret).await {
        Ok(_) => {}
        // Created concurrently (another reconcile, or the user): theirs stands.
        Err(kube::Error::Api(status)) if status.code == 409 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(
        secret = %key.secret,
        selector = %key.selector,
        algorithm = algorithm.as_str(),
        "generated DKIM key Secret"
    );
    let note = format!(
        "generated {} key for selector {} in Secret {}; publish the DNS record from status.dnsRecords",
        algorithm.as_str(),
        key.selector,
        key.secret
    );
    ctx.event(
        rd,
        Event {
            type_: EventType::Normal,
            reason: "DkimKeyGenerated".to_owned(),
            note: Some(note),
            action: "GenerateKey".to_owned(),
            secondary: None,
        },
    )
    .await;
    Ok(())
}
