//! The snapshot sync: list every SendingPool and RelayDomain, read the Secrets they reference,
//! compile them with `baton_config::compile` (the same code `baton config apply` runs), publish
//! the `RelayConfig` to the KV bucket only when its content digest changed (generation + 1), and
//! write every RelayDomain's status (conditions, DNS records) from the compiler's reports.
//!
//! One sync covers all RelayDomains, so a change to one (a new conflicting claim, a pool that
//! appears) updates the status of the others too. The pure part, [`plan_snapshot`], lives in
//! `baton_config::plan` (`baton config apply` runs it too).
//!
//! One invalid object never blocks the others: the compiler leaves an invalid SendingPool or
//! RelayDomain out of the snapshot and publishes the rest. The RelayDomain's status says why
//! (`Ready=False`, reason `Invalid`; a domain on an invalid pool: `PoolFound=False`, reason
//! `PoolInvalid`, with the pool's error); a SendingPool's status (`Valid=False`, reason
//! `Invalid`) is written by its reconciler ([`crate::pool`]) from the same compiler. Only input
//! unusable as a whole (unnamed or duplicate objects, which the API server never returns) fails
//! the sync.

use std::collections::BTreeSet;

use baton_config::compile::DEFAULT_NAMESPACE;
use baton_config::crd::{RelayDomain, SendingPool};
use baton_config::{Compiled, Resources};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::conditions;
use crate::context::{Context, FIELD_MANAGER};
use crate::dkim::key_refs;
use crate::error::Result;

pub use baton_config::plan::{SnapshotPlan as Plan, plan_snapshot};

/// `metadata.namespace`, or `default` like the compiler (namespaced objects from the API server
/// always have one).
pub(crate) fn namespace_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &str {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => DEFAULT_NAMESPACE,
    }
}

/// The smarthost credentials Secrets (`namespace`, `name`) a pool references.
pub fn pool_secret_refs(pool: &SendingPool) -> BTreeSet<(String, String)> {
    let smarthosts = pool.spec.delivery.smarthosts.iter();
    smarthosts
        .flat_map(|sh| [&sh.credentials_secret_ref, &sh.ca_bundle_secret_ref])
        .chain([&pool.spec.tls.ca_bundle_secret_ref])
        .filter_map(Option::as_ref)
        .map(|r| (r.namespace_or_default().to_owned(), r.name.clone()))
        .collect()
}

/// Every Secret (`namespace`, `name`) the pools and domains reference.
pub fn referenced_secrets(
    pools: &[SendingPool],
    domains: &[RelayDomain],
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for pool in pools {
        out.extend(pool_secret_refs(pool));
    }
    for rd in domains {
        let ns = namespace_of(&rd.metadata).to_owned();
        for key in key_refs(rd) {
            out.insert((ns.clone(), key.secret));
        }
        for c in &rd.spec.submission.credentials {
            out.insert((ns.clone(), c.secret_ref.name.clone()));
        }
        if let Some(rp) = &rd.spec.return_path {
            out.insert((ns.clone(), rp.key_secret_ref.name.clone()));
        }
    }
    out
}

/// Read the referenced Secrets that exist.
pub(crate) async fn read_secrets(
    ctx: &Context,
    refs: &BTreeSet<(String, String)>,
) -> Result<Vec<Secret>> {
    let mut secrets = Vec::with_capacity(refs.len());
    for (ns, name) in refs {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        if let Some(s) = api.get_opt(name).await? {
            secrets.push(s);
        }
    }
    Ok(secrets)
}

/// One full sync. Returns the plan it acted on, or the first error; a failed status write is
/// reported after every other RelayDomain's status was written.
pub async fn sync(ctx: &Context) -> Result<Plan> {
    let pools = Api::<SendingPool>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let domains = Api::<RelayDomain>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let mut refs = referenced_secrets(&pools, &domains);
    // The keyring Secret is read with the others, and its changes trigger a sync too.
    refs.extend(crate::keyring::secret_ref(ctx));
    let secrets = read_secrets(ctx, &refs).await?;
    let keyring = crate::keyring::load(ctx, &secrets).await?;
    *ctx.referenced.lock() = refs;
    let mut res = Resources {
        pools,
        domains,
        secrets,
        ..Resources::default()
    };
    if let Some(dns) = &ctx.dns {
        res.verified_domains =
            baton_config::verification::verified_domains(&res, dns.as_ref()).await;
    }
    let previous = ctx.queue.current_snapshot().await?;
    let now = ctx.now();
    // The keyring is read at every sync: a new `key-<n>` re-seals without a restart.
    let plan = baton_config::plan::plan_sealed(
        &res,
        previous.as_ref(),
        now.0.as_millisecond(),
        keyring.as_ref(),
    )?;
    let config = &plan.compiled.config;
    // Every compiled pool's workers have a NATS user before the snapshot names the pool.
    let pools: Vec<(String, u32)> = plan
        .lanes()
        .into_iter()
        .map(|l| (l.pool, l.retry_tiers))
        .collect();
    crate::nats_auth::sync(ctx, &pools).await?;
    // Bodies outlive every message that can reference them, before a pool with a longer
    // maxAge goes live (idempotent; the expiry is only ever raised).
    if let Some(retention) = plan.body_retention() {
        ctx.queue.ensure_body_retention(retention).await?;
    }
    if plan.publish {
        let revision = ctx.queue.put_snapshot(config).await?;
        tracing::info!(
            generation = config.generation,
            revision,
            domains = config.domains.len(),
            pools = config.pools.len(),
            left_out = plan.compiled.invalid().count(),
            "published RelayConfig snapshot"
        );
        for invalid in plan.compiled.invalid() {
            tracing::warn!(error = %invalid, "invalid object: pool left out of the snapshot, domain never ready");
        }
    }
    ctx.metrics
        .operator_snapshot_generation
        .set(i64::try_from(config.generation).unwrap_or(i64::MAX));
    // A status write that fails (the object was just deleted, a rejected patch) does not hold
    // up the others; the first error fails the sync, which is retried.
    let mut failed = None;
    for rd in &res.domains {
        if let Err(e) = write_domain_status(ctx, rd, &plan.compiled).await {
            tracing::warn!(
                relay_domain = rd.metadata.name.as_deref().unwrap_or_default(),
                namespace = namespace_of(&rd.metadata),
                error = %e,
                "cannot write RelayDomain status"
            );
            failed.get_or_insert(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(plan),
    }
}

/// Patch a RelayDomain's status when it differs from what the report says, with an Event for
/// every condition that changed.
async fn write_domain_status(ctx: &Context, rd: &RelayDomain, compiled: &Compiled) -> Result<()> {
    let ns = namespace_of(&rd.metadata);
    let Some(name) = rd.metadata.name.as_deref() else {
        return Ok(());
    };
    let key = format!("{ns}/{name}");
    let Some(report) = compiled.domains.iter().find(|r| r.name == key) else {
        return Ok(());
    };
    let now = ctx.now();
    let status =
        conditions::domain_status(report, rd.metadata.generation, rd.status.as_ref(), &now);
    if rd.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": baton_config::crd::API_VERSION,
        "kind": "RelayDomain",
        "status": status,
    });
    let api: Api<RelayDomain> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    let previous = rd.status.as_ref().map(|s| s.conditions.as_slice());
    ctx.announce(rd, previous.unwrap_or(&[]), &status.conditions, "Compile")
        .await;
    tracing::info!(relay_domain = %key, ready = report.ready, "RelayDomain status updated");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use baton_config::crd::{RelayDomainSpec, SendingPoolSpec};

    fn res() -> Resources {
        let domain: RelayDomainSpec = serde_json::from_value(serde_json::json!({
            "domain": "example.com", "pool": "default"
        }))
        .unwrap();
        let mut rd = RelayDomain::new("example", domain);
        rd.metadata.namespace = Some("team-a".into());
        Resources {
            pools: vec![SendingPool::new("default", SendingPoolSpec::default())],
            domains: vec![rd],
            ..Resources::default()
        }
    }

    #[test]
    fn referenced_secrets_cover_dkim_credentials_and_smarthosts() {
        let mut r = res();
        r.domains[0].spec = serde_json::from_value(serde_json::json!({
            "domain": "example.com",
            "submission": {"credentials": [{"secretRef": {"name": "app"}}]},
            "dkim": {"selector": "s1", "keySecretRef": {"name": "dkim1"},
                     "additionalKeys": [{"selector": "s2", "keySecretRef": {"name": "dkim2"}}]}
        }))
        .unwrap();
        r.pools[0].spec = serde_json::from_value(serde_json::json!({
            "delivery": {"mode": "Smarthost", "smarthosts": [
                {"host": "up", "credentialsSecretRef": {"name": "upstream"}}]}
        }))
        .unwrap();
        let refs: Vec<_> = referenced_secrets(&r.pools, &r.domains)
            .into_iter()
            .map(|(ns, n)| format!("{ns}/{n}"))
            .collect();
        assert_eq!(
            refs,
            [
                "baton-system/upstream",
                "team-a/app",
                "team-a/dkim1",
                "team-a/dkim2"
            ]
        );
    }
}
