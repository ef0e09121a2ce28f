//! What a worker does with bounce classes and suppression lists: the per-relay-domain plans
//! of the snapshot in force (suppression policy, delay notices, DSN postmaster and DKIM keys,
//! decided once per snapshot), failing recipients that are on their
//! domain's suppression list without an attempt, and putting recipients that failed
//! permanently with a suppressing class on the list (before the message is acked, so a crash
//! repeats the put and never loses it).

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream;
use baton_core::suppression::{self, Policy};
use baton_core::verp::VerpKeys;
use baton_dkim::DomainSigner;
use baton_proto::v1::{DelayNotice, Envelope, EnvelopeKind, RelayConfig};
use baton_queue::suppression::{SuppressionCache, SuppressionStore};
use parking_lot::RwLock;
use tokio::sync::OnceCell;

use crate::{Ctx, now_ms};
use baton_core::outcome::{Disposition, RecipientOutcome};
use baton_smtp::catalogue;

/// Per relay domain settings the worker needs, from one snapshot.
#[derive(Clone)]
pub(crate) struct DomainPlan {
    pub(crate) suppression: Policy,
    pub(crate) delay_notice: Option<DelayNotice>,
    /// The `From:` of DSNs about the domain's mail.
    pub(crate) postmaster: String,
    /// The domain's DKIM keys, to sign those DSNs (none: unsigned; a key that does not parse
    /// is the ingress's to report, which defers the domain's mail).
    pub(crate) dkim: Option<Arc<DomainSigner>>,
    /// The return-path domain and its VERP keys (none: senders are kept).
    pub(crate) return_path: Option<(String, VerpKeys)>,
}

impl DomainPlan {
    /// The envelope sender for `recipient` of `env`: a signed VERP address on the return-path
    /// domain, or `None` to keep the original (no return path, a DSN, the null sender).
    pub(crate) fn verp_sender(&self, env: &Envelope, recipient: &str) -> Option<String> {
        let (domain, keys) = self.return_path.as_ref()?;
        if env.reverse_path.is_empty() || env.kind == EnvelopeKind::Dsn as i32 {
            return None;
        }
        let id = if env.origin_id.is_empty() {
            &env.id
        } else {
            &env.origin_id
        };
        keys.local_part(id, recipient)
            .map(|lp| format!("{lp}@{domain}"))
    }
}

/// Suppression lists and the per-domain plans.
pub(crate) struct Bounces {
    js: jetstream::Context,
    store: OnceCell<SuppressionStore>,
    cache: SuppressionCache,
    plans: RwLock<Arc<HashMap<String, Arc<DomainPlan>>>>,
}

impl Bounces {
    pub(crate) fn new(js: jetstream::Context, cache: SuppressionCache) -> Bounces {
        Bounces {
            js,
            store: OnceCell::new(),
            cache,
            plans: RwLock::default(),
        }
    }

    /// Decide the plans of a new snapshot.
    pub(crate) fn set_config(&self, config: &RelayConfig) {
        let plans = config
            .domains
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    Arc::new(DomainPlan {
                        suppression: Policy::of(d),
                        delay_notice: d.delay_notice,
                        postmaster: d.postmaster.clone(),
                        dkim: DomainSigner::new(d)
                            .ok()
                            .filter(|s| !s.is_empty())
                            .map(Arc::new),
                        return_path: d.return_path.as_ref().map(|rp| {
                            (
                                rp.domain.clone(),
                                VerpKeys::new(rp.keys.iter().map(|k| (k.id, k.secret.clone()))),
                            )
                        }),
                    }),
                )
            })
            .collect();
        *self.plans.write() = Arc::new(plans);
    }

    pub(crate) fn plan(&self, relay_domain: &str) -> Option<Arc<DomainPlan>> {
        self.plans.read().get(relay_domain).cloned()
    }

    /// The fate of a recipient on its domain's suppression list (whatever the mode: mail
    /// accepted before the entry was added is not sent either), `None` otherwise.
    pub(crate) fn suppressed(&self, env: &Envelope, address: &str) -> Option<RecipientOutcome> {
        if env.kind == EnvelopeKind::Dsn as i32 {
            return None;
        }
        let plan = self.plan(&env.relay_domain)?;
        if !plan.suppression.enabled {
            return None;
        }
        let entry = self.cache.lookup(&env.relay_domain, address, now_ms())?;
        let reply = catalogue::suppressed(suppression::refusal_text(&entry));
        Some(RecipientOutcome::failed(reply, ""))
    }

    async fn store(&self) -> Option<&SuppressionStore> {
        self.store
            .get_or_try_init(|| SuppressionStore::open(&self.js))
            .await
            .map_err(|e| tracing::warn!(error = %e, "suppression list unavailable"))
            .ok()
    }
}

/// Put every recipient that failed permanently with a suppressing class on its domain's list.
pub(crate) async fn record_suppressions(ctx: &Ctx, env: &Envelope, outcomes: &[RecipientOutcome]) {
    if env.kind == EnvelopeKind::Dsn as i32 {
        return;
    }
    let Some(plan) = ctx.bounces.plan(&env.relay_domain) else {
        return;
    };
    for (r, outcome) in env.recipients.iter().zip(outcomes) {
        if outcome.disposition != Disposition::Failed {
            continue;
        }
        // Already on the list (e.g. failed here without an attempt because of it).
        if ctx
            .bounces
            .cache
            .lookup(&env.relay_domain, &r.address, now_ms())
            .is_some()
        {
            continue;
        }
        let class = ctx.classifier.classify_reply(&outcome.reply);
        if !plan.suppression.adds(class) {
            continue;
        }
        let entry = plan.suppression.entry_for_bounce(
            &env.relay_domain,
            &r.address,
            class,
            &outcome.reply.to_string(),
            &env.id,
            now_ms(),
        );
        let Some(store) = ctx.bounces.store().await else {
            return;
        };
        match store.put(&entry).await {
            Ok(_) => {
                ctx.metrics
                    .suppressions_added
                    .with_label_values(&[&env.relay_domain, "bounce"])
                    .inc();
                tracing::info!(
                    queue_id = %env.id,
                    relay_domain = %env.relay_domain,
                    to = %r.address,
                    class = class.as_str(),
                    expires_ms = entry.expires_ms,
                    "recipient added to the suppression list"
                );
            }
            Err(e) => {
                tracing::warn!(queue_id = %env.id, error = %e, "could not add a recipient to the suppression list");
            }
        }
    }
}
