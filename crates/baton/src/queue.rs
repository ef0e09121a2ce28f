//! Who provisions the JetStream queue and who only checks it. `baton config apply` and
//! `baton dev` are owners (like the operator): they resolve the settings
//! ([`owner_settings`]), provision and record them. `baton ingress` and `baton worker` never
//! create or change anything: [`watch_queue`] keeps them not ready until the queue exists, then
//! verifies it every few seconds and reports drift (log, `baton_queue_settings_drift`, a
//! `/readyz` note) without correcting it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use baton_queue::{
    ConfigStore, Drift, QueueError, StreamSettings, Verified, Verifier, expectation_drift,
};
use baton_telemetry::{Health, Metrics};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often a verified queue is checked again for drift.
const RECHECK: Duration = Duration::from_secs(5);
/// How often a queue that is not provisioned yet is looked for.
const WAIT: Duration = Duration::from_secs(1);

/// The settings an owner provisions with: `--stream-replicas` when given, else what is
/// recorded, else the defaults. Reading the record fails only when NATS does not answer
/// (never treated as "nothing recorded", which could scale a 3-replica queue down).
pub(crate) async fn owner_settings(
    js: &async_nats::jetstream::Context,
    flag_replicas: Option<usize>,
) -> anyhow::Result<StreamSettings> {
    let recorded = match Verifier::new(js.clone())
        .observe(&baton_queue::config_bucket_stream(), false)
        .await
    {
        Ok(_) => ConfigStore::open(js)
            .await?
            .queue_settings()
            .await?
            .map(|r| StreamSettings::from_record(&r)),
        Err(QueueError::NotProvisioned { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    if let (Some(r), Some(f)) = (&recorded, flag_replicas)
        && r.replicas != f
    {
        tracing::warn!(
            recorded = r.replicas,
            requested = f,
            "changing the queue's replicas"
        );
    }
    Ok(StreamSettings::resolve(flag_replicas, recorded.as_ref()))
}

/// Log what an owner's provisioning could not bring to the settings.
pub(crate) fn log_owner_drift(drift: &[Drift]) {
    for d in drift {
        tracing::warn!(object = %d.object, setting = d.setting, want = %d.want, have = %d.have, "queue settings drift: {d}");
    }
}

/// Verify the queue in the background. The returned receiver turns `true` once the stream,
/// buckets and recorded settings exist; until then the `queue` readiness condition says what is
/// missing. `expect` is a `--stream-replicas` given to an ingress or worker: it changes nothing
/// and is only compared with the record.
pub(crate) fn watch_queue(
    js: async_nats::jetstream::Context,
    expect: Option<usize>,
    metrics: Metrics,
    health: Arc<Health>,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    if expect.is_some() {
        tracing::warn!(
            "--stream-replicas is deprecated on ingress and workers: it changes nothing, the queue's settings are recorded by `baton config apply` or the operator; it is only compared with them"
        );
    }
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let verifier = Verifier::new(js);
        let mut reported: BTreeSet<(String, &'static str)> = BTreeSet::new();
        let mut last_error = String::new();
        while !stop.is_cancelled() {
            let wait = match verifier.verify().await {
                Ok(v) => {
                    health.set("queue", None);
                    last_error.clear();
                    report(&v, expect, &metrics, &health, &mut reported);
                    let _ = tx.send(true);
                    RECHECK
                }
                Err(e) => {
                    let text = e.to_string();
                    if text != last_error {
                        tracing::warn!(error = %text, "queue not usable");
                        last_error = text.clone();
                    }
                    health.set("queue", Some(text));
                    WAIT
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.cancelled() => {}
            }
        }
    });
    rx
}

/// Wait until [`watch_queue`] saw the queue provisioned; `false` when stopped first.
pub(crate) async fn provisioned(mut rx: watch::Receiver<bool>, stop: &CancellationToken) -> bool {
    tokio::select! {
        r = rx.wait_for(|p| *p) => r.is_ok(),
        _ = stop.cancelled() => false,
    }
}

/// Gauges, a `/readyz` note and a log line when the set of drifting settings changes.
fn report(
    v: &Verified,
    expect: Option<usize>,
    metrics: &Metrics,
    health: &Health,
    reported: &mut BTreeSet<(String, &'static str)>,
) {
    let mut all = v.drift.clone();
    all.extend(expectation_drift(expect, &v.settings));
    let now: BTreeSet<(String, &'static str)> =
        all.iter().map(|d| (d.object.clone(), d.setting)).collect();
    for (object, setting) in reported.difference(&now) {
        metrics
            .queue_settings_drift
            .with_label_values(&[object.as_str(), setting])
            .set(0);
        tracing::info!(%object, setting, "queue settings drift resolved");
    }
    for d in &all {
        metrics
            .queue_settings_drift
            .with_label_values(&[&d.object, d.setting])
            .set(1);
        if !reported.contains(&(d.object.clone(), d.setting)) {
            tracing::warn!(object = %d.object, setting = d.setting, want = %d.want, have = %d.have, owner = %v.owner, "queue settings drift (reported, not changed): {d}");
        }
    }
    let note = (!all.is_empty()).then(|| {
        let items: Vec<String> = all.iter().map(ToString::to_string).collect();
        format!("queue settings drift: {}", items.join("; "))
    });
    health.note("queue", note);
    *reported = now;
}
