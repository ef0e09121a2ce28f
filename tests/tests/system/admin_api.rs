//! Scenario: the operations API (issue 14) over the production NATS authorization — every
//! process, `baton admin` included, logs in as its own role from `baton nats-auth --write`:
//! - a poison message (its large body is missing) reaches its delivery limit and is shown in
//!   the dead letters by `baton queue dead list`, with why, while other mail flows;
//! - a viewer token cannot requeue it (`permission denied`, non-zero exit, still dead);
//! - a token limited to another namespace does not see it, and requeueing through it acts on
//!   nothing;
//! - `dead delete` without `--yes` lists it and refuses;
//! - an independent client (Python grpcio) learns the schema by server reflection, checks the
//!   health service and reads the summary;
//! - once the cause is gone (the body is stored), `dead requeue` delivers it exactly once and
//!   the queue is empty.

use std::time::Duration;

use baton_proto::Message as _;
use baton_proto::v1::{Envelope, QueueSettings, Recipient, envelope::Body};
use baton_system_tests::admin::Admin;
use baton_system_tests::config::direct;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Dns, TempDir, apply_config_with, assert_eventually, baton_bin, write_config,
};
use baton_system_tests::nats_users::{connect_as, ingress_and_worker, login, secured_nats, strs};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const BODY: &str = "From: <app@example.com>\r\nTo: <a@dest.test>\r\nSubject: requeued-poison\r\n\r\nback from the dead\r\n";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn dead_letters(api: &Admin, token: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let v = api.queue_json(token, &["dead", "list"])?;
    Ok(v["messages"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn operators_see_and_act_on_dead_letters_through_the_api() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-admin-api")?;
    let users = dir.0.join("users");
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let dns = Dns::dest_test().await?;
    let cfg = write_config(
        &dir.0,
        "c.yaml",
        &direct(receiver.addr().port(), "[1s]", "1h"),
    )?;
    let nats = secured_nats(&cfg, &users, &[]).await?;
    let admin_login = login(&users, "admin");
    // A small delivery limit, recorded the way an owner records its settings.
    let admin_js = async_nats::jetstream::new(connect_as(&nats.url, &users, "admin").await?);
    let kv = admin_js.get_key_value("baton-config").await?;
    let raw = kv
        .get("queue-settings")
        .await?
        .ok_or_else(|| anyhow::anyhow!("no queue settings recorded"))?;
    let mut settings = QueueSettings::decode(raw.as_ref())?;
    settings.max_deliver = 3;
    kv.put("queue-settings", settings.encode_to_vec().into())
        .await?;
    apply_config_with(&nats.url, &cfg, &strs(&admin_login))?;

    let (ing, _w) = ingress_and_worker(&nats, &dir.0, &users, "test", Some(dns.addr)).await?;
    let api = Admin::start(&nats.url, &dir.0, &strs(&admin_login)).await?;
    let ops = api.token(&dir.0, "ops", "admin", &[])?;
    let viewer = api.token(&dir.0, "viewer", "viewer", &[])?;
    let team_b = api.token(&dir.0, "team-b", "admin", &["team-b"])?;

    // The poison: its body is not in the object store (yet).
    let poison = Envelope {
        id: "poison-1".into(),
        pool: "test".into(),
        relay_domain: "team-a/example-com".into(),
        reverse_path: "app@example.com".into(),
        recipients: vec![Recipient {
            address: "a@dest.test".into(),
            ..Recipient::default()
        }],
        received_at_ms: now_ms(),
        size: BODY.len() as u64,
        body: Some(Body::ObjectRef("poison-body".into())),
        object_bucket: "baton-bodies-test".into(),
        ..Envelope::default()
    };
    admin_js
        .publish("baton.new.test", poison.encode_to_vec().into())
        .await?
        .await?;
    let m = Submission {
        from: "app@example.com",
        rcpts: vec![("a@dest.test", "")],
        subject: "flows-meanwhile",
        ..Default::default()
    };
    assert_eq!(submit(ing.smtp, &m).await?, 250);

    let (a, t) = (&api, &ops);
    assert_eventually(WAIT, "the poison in the dead letters", || async move {
        dead_letters(a, t).is_ok_and(|d| d.len() == 1)
    })
    .await?;
    let dead = dead_letters(&api, &ops)?;
    let letter = &dead[0];
    assert_eq!(letter["queueId"], "poison-1", "{letter}");
    assert_eq!(letter["relayDomain"], "team-a/example-com");
    assert_eq!(letter["place"], "dead");
    assert_eq!(letter["dead"]["reason"], "delivery_limit", "{letter}");
    assert_eq!(letter["dead"]["deliveries"], 3);
    let seq = letter["sequence"].to_string();
    let r = &receiver;
    let delivered = |subject: &'static str| {
        r.messages()
            .iter()
            .filter(|m| String::from_utf8_lossy(&m.body).contains(subject))
            .count()
    };
    assert_eventually(WAIT, "other mail delivered", || async move {
        delivered("flows-meanwhile") == 1
    })
    .await?;

    // Read-only and other-namespace callers.
    let o = api.queue(&viewer, &["dead", "requeue", &seq])?;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(
        dead_letters(&api, &team_b)?.is_empty(),
        "another namespace's mail"
    );
    let none = api.queue_json(&team_b, &["dead", "requeue", &seq])?;
    assert_eq!(none["matched"], 0, "{none}");
    assert_eq!(dead_letters(&api, &ops)?.len(), 1);

    // Delete without confirmation: listed, refused, kept.
    let o = api.queue(&ops, &["dead", "delete", &seq])?;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("refusing to delete 1 message(s) without --yes")
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("poison-1"));
    assert_eq!(dead_letters(&api, &ops)?.len(), 1);

    // Every process says which config generation it runs.
    assert_eventually(WAIT, "ingress and worker in the status", || async move {
        a.queue_json(t, &["status"]).is_ok_and(|s| {
            let procs = s["processes"].as_array().cloned().unwrap_or_default();
            let runs = |role: &str, pool: &str| {
                procs.iter().any(|p| {
                    p["role"] == role
                        && p["pool"] == pool
                        && p["configGeneration"].as_u64().is_some_and(|g| g >= 1)
                })
            };
            runs("ingress", "") && runs("worker", "test")
        })
    })
    .await?;

    // As the kubectl plugin, the kubeconfig user's token is presented.
    let kubeconfig = dir.0.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: k, cluster: {{server: \"https://127.0.0.1:1\"}}}}]\n\
             users: [{{name: u, user: {{token: {}}}}}]\n\
             contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n",
            std::fs::read_to_string(&viewer)?.trim()
        ),
    )?;
    let plugin = dir.0.join("kubectl-baton");
    std::os::unix::fs::symlink(baton_bin()?, &plugin)?;
    let o = std::process::Command::new(&plugin)
        .env("KUBECONFIG", &kubeconfig)
        .args([
            "queue",
            "--admin",
            &api.addr.to_string(),
            "-o",
            "json",
            "status",
        ])
        .output()?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let status: Value = serde_json::from_slice(&o.stdout)?;
    assert_eq!(status["caller"]["name"], "viewer", "{status}");
    assert_eq!(status["caller"]["permission"], "viewer");

    // The independent client: reflection, health, one call.
    let summary = api.python_call(
        &ops,
        "GetQueueSummary",
        r#"{"filter": {"place": "PLACE_DEAD"}}"#,
    )?;
    let places = summary["places"].as_array().cloned().unwrap_or_default();
    assert_eq!(places.len(), 1, "{summary}");
    assert_eq!(places[0]["pool"], "test");
    assert_eq!(places[0]["place"], "PLACE_DEAD");
    assert_eq!(
        places[0]["messages"], "1",
        "uint64 in proto JSON: {summary}"
    );
    let domains = summary["domains"].as_array().cloned().unwrap_or_default();
    assert_eq!(domains[0]["domain"], "dest.test", "{summary}");

    // The cause goes away; requeue delivers it once.
    let ingress_js = async_nats::jetstream::new(connect_as(&nats.url, &users, "ingress").await?);
    let bodies = ingress_js.get_object_store("baton-bodies-test").await?;
    bodies.put("poison-body", &mut BODY.as_bytes()).await?;
    let done = api.queue_json(&ops, &["dead", "requeue", &seq])?;
    assert_eq!(done["matched"], 1, "{done}");
    assert_eq!(done["executed"], true);
    assert_eventually(WAIT, "the requeued poison delivered", || async move {
        delivered("requeued-poison") == 1
    })
    .await?;
    assert!(dead_letters(&api, &ops)?.is_empty());
    assert_eventually(WAIT, "an empty queue", || async move {
        a.queue_json(t, &["summary"])
            .is_ok_and(|s| s["scanned"] == 0)
    })
    .await?;
    assert_eq!(delivered("requeued-poison"), 1, "delivered exactly once");
    let log = std::fs::read_to_string(&api.log)?;
    assert!(
        log.contains("dead letter requeued") && log.contains("caller=ops"),
        "writes are logged with the caller: {log}"
    );
    Ok(())
}
