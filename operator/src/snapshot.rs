//! The snapshot sync: list every SendingPool, RelayDomain and EventSink, read the Secrets they
//! reference, compile them with `baton_config::compile` (the same code `baton config apply`
//! runs), publish the `RelayConfig` to the KV bucket only when its content digest changed
//! (generation + 1), remove the event consumers of EventSinks no longer in it, and write every
//! RelayDomain's status (conditions, DNS records) and every EventSink's status from the
//! compiler's reports.
//!
//! One sync covers all RelayDomains, so a change to one (a new conflicting claim, a pool that
//! appears) updates the status of the others too. The pure part, [`plan_snapshot`], lives in
//! `baton_config::plan` (`baton config apply` runs it too).
//!
//! One invalid object never blocks the others: the compiler leaves an invalid SendingPool or
//! EventSink out of the snapshot and publishes the rest. The RelayDomain's status says why
//! (`Ready=False`, reason `Invalid`; a domain on an invalid pool: `PoolFound=False`, reason
//! `PoolInvalid`, with the pool's error); a SendingPool's status (`Valid=False`, reason
//! `Invalid`) is written by its reconciler ([`crate::pool`]) from the same compiler. Only input
//! unusable as a whole (unnamed or duplicate objects, which the API server never returns) fails
//! the sync.
//!
//! An EventSink's status joins the compiler's verdict (`Ready=False`, reason `Invalid`: left out
//! of the snapshot) with what the webhook dispatcher records about its endpoint (`Failing`, the
//! last error, counters, backlog; [`crate::conditions::sink_status`]). Besides each sync,
//! [`refresh_sink_statuses`] rewrites it from the last sync's reports as the record changes
//! (the runtime calls it every [`crate::runtime::SINK_STATUS_EVERY`]).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use baton_config::compile::DEFAULT_NAMESPACE;
use baton_config::compile::SinkReport;
use baton_config::crd::{EventSink, RelayDomain, SendingPool};
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

/// The Secrets (`namespace`, `name`) an EventSink references, all in its own namespace: the
/// signing secret and the optional CA bundle.
pub fn sink_secret_refs(sink: &EventSink) -> BTreeSet<(String, String)> {
    let ns = namespace_of(&sink.metadata);
    [
        Some(&sink.spec.secret_ref),
        sink.spec.ca_bundle_secret_ref.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|r| (ns.to_owned(), r.name.clone()))
    .collect()
}

/// Every Secret (`namespace`, `name`) the pools, domains and sinks reference.
pub fn referenced_secrets(
    pools: &[SendingPool],
    domains: &[RelayDomain],
    sinks: &[EventSink],
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
    for sink in sinks {
        out.extend(sink_secret_refs(sink));
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

/// One full sync. Returns the plan it acted on, or the first error; a failed status write (or
/// removal of stale sink consumers) is reported after every other status was written.
pub async fn sync(ctx: &Context) -> Result<Plan> {
    let pools = Api::<SendingPool>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let domains = Api::<RelayDomain>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let sinks = list_sinks(ctx).await?;
    let mut refs = referenced_secrets(&pools, &domains, &sinks);
    // The keyring Secret is read with the others, and its changes trigger a sync too.
    refs.extend(crate::keyring::secret_ref(ctx));
    let secrets = read_secrets(ctx, &refs).await?;
    let keyring = crate::keyring::load(ctx, &secrets).await?;
    *ctx.referenced.lock() = refs;
    let mut res = Resources {
        pools,
        domains,
        sinks,
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
    *ctx.sink_reports.lock() = plan
        .compiled
        .sinks
        .iter()
        .map(|r| (r.clone(), sink_generation(&res.sinks, &r.name)))
        .collect();
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
            sinks = config.sinks.len(),
            left_out = plan.compiled.invalid().count(),
            "published RelayConfig snapshot"
        );
        for invalid in plan.compiled.invalid() {
            tracing::warn!(error = %invalid, "invalid object: pool or sink left out of the snapshot, domain never ready");
        }
        ctx.prune_sinks.store(true, Ordering::SeqCst);
    }
    ctx.metrics
        .operator_snapshot_generation
        .set(i64::try_from(config.generation).unwrap_or(i64::MAX));
    // A status write that fails (the object was just deleted, a rejected patch) does not hold
    // up the others; the first error fails the sync, which is retried.
    let mut failed = None;
    // The consumers of sinks the stored snapshot no longer has (deleted, or invalid now): their
    // backlog goes with them. Retried at the next sync until it succeeds.
    if ctx.prune_sinks.load(Ordering::SeqCst) {
        let keep: Vec<String> = config.sinks.iter().map(|s| s.name.clone()).collect();
        match ctx.queue.remove_stale_sinks(keep).await {
            Ok(removed) => {
                ctx.prune_sinks.store(false, Ordering::SeqCst);
                if !removed.is_empty() {
                    tracing::info!(
                        ?removed,
                        "removed the event consumers of deleted EventSinks"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove the event consumers of deleted EventSinks");
                failed = Some(e.into());
            }
        }
    }
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
    for sink in &res.sinks {
        let report = plan.compiled.sinks.iter().find(|r| is_report_of(r, sink));
        if let Some(report) = report
            && let Err(e) = write_sink_status(ctx, sink, report, "Compile").await
        {
            warn_sink_status(sink, &e);
            failed.get_or_insert(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(plan),
    }
}

/// Every EventSink; none while the EventSink CRD is not installed (an upgrade that has not
/// applied it yet), which must not stop the snapshot.
async fn list_sinks(ctx: &Context) -> Result<Vec<EventSink>> {
    match Api::<EventSink>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => Ok(list.items),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::warn!("the EventSink CRD is not installed: no event sinks");
            Ok(Vec::new())
        }
        Err(e) => Err(e.into()),
    }
}

/// `metadata.generation` of the sink `key` (`namespace/name`) among `sinks`.
fn sink_generation(sinks: &[EventSink], key: &str) -> Option<i64> {
    sinks
        .iter()
        .find(|s| sink_key(s).as_deref() == Some(key))
        .and_then(|s| s.metadata.generation)
}

/// `namespace/name` of an EventSink, as the compiler names it.
fn sink_key(sink: &EventSink) -> Option<String> {
    let name = sink.metadata.name.as_deref()?;
    Some(format!("{}/{name}", namespace_of(&sink.metadata)))
}

fn is_report_of(report: &SinkReport, sink: &EventSink) -> bool {
    sink_key(sink).is_some_and(|k| k == report.name)
}

fn warn_sink_status(sink: &EventSink, e: &crate::Error) {
    tracing::warn!(
        event_sink = sink.metadata.name.as_deref().unwrap_or_default(),
        namespace = namespace_of(&sink.metadata),
        error = %e,
        "cannot write EventSink status"
    );
}

/// Rewrite every EventSink's status from the last sync's compiler reports and the dispatcher's
/// current record (failures, counters, backlog), where it changed. A sink the last sync did not
/// compile (new, or changed since: its `generation` differs) is left to the next sync, which a
/// new generation triggers. Returns the first error after trying every sink.
pub async fn refresh_sink_statuses(ctx: &Context) -> Result<()> {
    let reports = ctx.sink_reports.lock().clone();
    if reports.is_empty() {
        return Ok(());
    }
    let sinks = list_sinks(ctx).await?;
    let mut failed = None;
    for sink in &sinks {
        let compiled = reports.iter().find(|(r, generation)| {
            is_report_of(r, sink) && *generation == sink.metadata.generation
        });
        let Some((report, _)) = compiled else {
            continue;
        };
        if let Err(e) = write_sink_status(ctx, sink, report, "Deliver").await {
            warn_sink_status(sink, &e);
            failed.get_or_insert(e);
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Patch an EventSink's status when it differs from what its report and the dispatcher's record
/// say, with an Event for every condition that changed (`action`: what found it).
async fn write_sink_status(
    ctx: &Context,
    sink: &EventSink,
    report: &SinkReport,
    action: &str,
) -> Result<()> {
    let ns = namespace_of(&sink.metadata);
    let Some(name) = sink.metadata.name.as_deref() else {
        return Ok(());
    };
    let (state, backlog) = ctx.queue.sink_state(&report.name).await?;
    let now = ctx.now();
    let status = conditions::sink_status(
        report,
        state.as_ref(),
        backlog,
        sink.metadata.generation,
        sink.status.as_ref(),
        &now,
    );
    if sink.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let body = serde_json::json!({
        "apiVersion": baton_config::crd::API_VERSION,
        "kind": "EventSink",
        "status": status,
    });
    let api: Api<EventSink> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    let previous = sink.status.as_ref().map(|s| s.conditions.as_slice());
    ctx.announce(sink, previous.unwrap_or(&[]), &status.conditions, action)
        .await;
    tracing::debug!(event_sink = %report.name, valid = report.invalid.is_none(), "EventSink status updated");
    Ok(())
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
        let refs: Vec<_> = referenced_secrets(&r.pools, &r.domains, &r.sinks)
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

    #[test]
    fn referenced_secrets_cover_sinks_in_their_own_namespace() {
        let spec = |v: serde_json::Value| -> baton_config::crd::EventSinkSpec {
            serde_json::from_value(v).unwrap()
        };
        let mut signed = EventSink::new(
            "hooks",
            spec(serde_json::json!({
                "url": "https://hooks.example/baton", "secretRef": {"name": "hook-secret"},
                "caBundleSecretRef": {"name": "hook-ca"}
            })),
        );
        signed.metadata.namespace = Some("team-b".into());
        let plain = EventSink::new(
            "plain",
            spec(serde_json::json!({
                "url": "https://other.example", "secretRef": {"name": "plain-secret"}
            })),
        );
        let key = |refs: BTreeSet<(String, String)>| -> Vec<String> {
            refs.into_iter()
                .map(|(ns, n)| format!("{ns}/{n}"))
                .collect()
        };
        assert_eq!(
            key(sink_secret_refs(&signed)),
            ["team-b/hook-ca", "team-b/hook-secret"]
        );
        let mut r = res();
        r.sinks = vec![signed, plain];
        // The domain references no Secret; the sinks' Secrets are in their namespace, the
        // namespace-less sink's in `default` like the compiler's.
        assert_eq!(
            key(referenced_secrets(&r.pools, &r.domains, &r.sinks)),
            [
                "default/plain-secret",
                "team-b/hook-ca",
                "team-b/hook-secret"
            ]
        );
    }
}
