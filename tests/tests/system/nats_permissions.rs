//! Scenario: least-privilege NATS identities (issue 13.1). nats-server runs with the
//! `authorization` block `baton nats-auth` prints for a config with two pools (`test`, `other`);
//! every Baton process connects as its role. Mail flows end to end (a small message, and a
//! large one through the Object Store), and each identity used outside its role is refused by
//! the server: no anonymous client; the ingress may not consume a lane, write the snapshot or
//! publish to a retry lane; the worker of `test` may not consume or publish to `other`'s
//! lanes; the webhook dispatcher may not publish mail or events, bind a lane or write the
//! snapshot. A worker started for `other` with `test`'s identity counts the refusal
//! (`baton_nats_permission_denials_total`) and reports not ready, without exiting.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use baton_system_tests::config::smarthost;
use baton_system_tests::delivery::{Submission, submit};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config_with, assert_eventually, baton_bin, http_get,
    keyring_dir, metric, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

const WAIT: Duration = Duration::from_secs(30);
const ROLES: [(&str, &str); 5] = [
    ("baton-admin", "BATON_NATS_PASSWORD_ADMIN"),
    ("baton-ingress", "BATON_NATS_PASSWORD_INGRESS"),
    ("baton-webhooks", "BATON_NATS_PASSWORD_WEBHOOKS"),
    ("baton-worker-test", "BATON_NATS_PASSWORD_WORKER_TEST"),
    ("baton-worker-other", "BATON_NATS_PASSWORD_WORKER_OTHER"),
];

/// The second pool, delivering nowhere in particular (its lanes only need to exist).
const OTHER_POOL: &str = "---\napiVersion: baton.dev/v1alpha1\nkind: SendingPool\n\
    metadata: {name: other}\nspec:\n  egress: [{ehloName: out.baton.test, weight: 1}]\n\
    \x20 retry: {schedule: [1m], maxAge: 1h}\n";

fn password(user: &str) -> String {
    format!("pw-{user}-0123456789")
}

/// `--nats-user U --nats-password-file F` for `user`.
fn login(dir: &Path, user: &str) -> anyhow::Result<Vec<String>> {
    let file = dir.join(format!("{user}.pw"));
    std::fs::write(&file, format!("{}\n", password(user)))?;
    Ok(vec![
        "--nats-user".into(),
        user.into(),
        "--nats-password-file".into(),
        file.display().to_string(),
    ])
}

/// A test client logged in as `user`, replies on its role's inbox, short request timeout.
async fn client(nats: &Nats, user: &str) -> anyhow::Result<jetstream::Context> {
    let c = async_nats::ConnectOptions::with_user_and_password(user.into(), password(user))
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(&nats.url)
        .await?;
    Ok(jetstream::new(c))
}

#[tokio::test]
async fn every_role_gets_only_what_it_needs() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-nats-perm")?;
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let cfg = format!(
        "{}{OTHER_POOL}",
        smarthost(&[("127.0.0.1", receiver.addr().port(), 1)], "[1s]", "1h")
    );
    let path = write_config(&dir.0, "c.yaml", &cfg)?;
    let out = std::process::Command::new(baton_bin()?)
        .env("BATON_KEYRING", keyring_dir())
        .args(["nats-auth", "--config"])
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let block = String::from_utf8(out.stdout)?;
    for (user, env) in ROLES {
        assert!(block.contains(user) && block.contains(env), "{block}");
    }
    let env = ROLES
        .iter()
        .map(|(user, env)| ((*env).to_owned(), password(user)))
        .collect();
    let nats = Nats::start_with_env(Some(block), env).await?;

    let as_args = |user: &str| -> anyhow::Result<Vec<String>> { login(&dir.0, user) };
    let admin = as_args("baton-admin")?;
    let admin: Vec<&str> = admin.iter().map(String::as_str).collect();
    apply_config_with(&nats.url, &path, &admin)?;
    let ingress = as_args("baton-ingress")?;
    let ingress: Vec<&str> = ingress.iter().map(String::as_str).collect();
    let ing = Ingress::start(&nats, &dir.0, &ingress).await?;
    let worker = as_args("baton-worker-test")?;
    let worker: Vec<&str> = worker.iter().map(String::as_str).collect();
    let w = Worker::start(&nats, &dir.0, "test", None, &worker).await?;

    // Mail flows: a small message and one through the Object Store.
    let small = Submission {
        from: "app@example.com",
        mail_params: "",
        rcpts: vec![("x@dest.test", "")],
        subject: "perm-small",
    };
    assert_eq!(submit(ing.smtp, &small).await?, 250);
    let big_body = format!(
        "Subject: perm-large\r\nFrom: app@example.com\r\n\r\n{}",
        "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuv\r\n".repeat(20_000)
    );
    let cfg = baton_smtp_client::ClientConfig::new("client.test");
    let mut c = baton_smtp_client::Connection::connect(ing.smtp, "localhost", &cfg).await?;
    let r = c
        .send(&baton_smtp_client::OutgoingMessage {
            reverse_path: "app@example.com",
            recipients: vec![baton_smtp_client::OutgoingRecipient {
                address: "y@dest.test",
                notify: None,
                orcpt: None,
            }],
            body: big_body.as_bytes(),
            smtputf8: false,
            eight_bit: false,
            ret: None,
            envid: None,
        })
        .await?;
    assert_eq!(r.data_reply.as_ref().map(|d| d.code), Some(250), "{r:?}");
    c.quit().await;
    let got = receiver.wait_for_messages(2, WAIT).await?;
    assert_eq!(got.len(), 2);
    assert!(
        got.iter().any(|m| m.body.len() > 1_000_000),
        "the large body arrived"
    );
    assert_eq!(
        metric(w.metrics, "baton_nats_permission_denials_total").await,
        0.0
    );
    assert_eq!(
        metric(ing.metrics, "baton_nats_permission_denials_total").await,
        0.0
    );

    // No anonymous client.
    let anonymous = async_nats::ConnectOptions::new().connect(&nats.url).await;
    assert!(anonymous.is_err(), "an anonymous client connected");

    // The ingress: reads the stream, but cannot consume, write the snapshot or retry.
    let js = client(&nats, "baton-ingress").await?;
    let stream = js.get_stream("BATON_QUEUE").await?;
    assert!(
        stream
            .get_consumer::<jetstream::consumer::pull::Config>("test-new")
            .await
            .is_err(),
        "the ingress bound a lane consumer"
    );
    let kv = js.get_key_value("baton-config").await?;
    assert!(
        kv.put("relay-config", "forged".into()).await.is_err(),
        "the ingress wrote the snapshot"
    );
    assert!(
        publish_acked(&js, "baton.retry.test.0").await.is_err(),
        "the ingress published to a retry lane"
    );
    assert!(
        publish_acked(&js, "baton.new.test").await.is_ok(),
        "its own job"
    );
    assert!(
        publish_acked(&js, "baton.quarantine.test").await.is_ok(),
        "what a content filter quarantined"
    );
    // Reports received at a return path add suppressions.
    let suppressions = js.get_key_value("baton-suppressions").await?;
    assert!(
        suppressions.put("perm-test", "{}".into()).await.is_ok(),
        "the ingress cannot record a suppression"
    );

    // The worker of `test`: its lanes, not `other`'s.
    let js = client(&nats, "baton-worker-test").await?;
    let stream = js.get_stream("BATON_QUEUE").await?;
    assert!(
        stream
            .get_consumer::<jetstream::consumer::pull::Config>("test-new")
            .await
            .is_ok(),
        "the worker of test cannot see its own lane"
    );
    assert!(
        stream
            .get_consumer::<jetstream::consumer::pull::Config>("other-new")
            .await
            .is_err(),
        "the worker of test bound other's lane"
    );
    assert!(
        publish_acked(&js, "baton.retry.other.0").await.is_err(),
        "the worker of test published to other's retry lane"
    );
    assert!(
        publish_acked(&js, "baton.quarantine.test").await.is_err(),
        "the worker touched the quarantine"
    );
    assert!(
        stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("test-quarantine".into()),
                filter_subject: "baton.quarantine.test".into(),
                ..Default::default()
            })
            .await
            .is_err(),
        "the worker made itself a consumer of the quarantine"
    );

    // Nor read queued mail outside its lanes: no stored message by sequence or subject
    // (its own pool's included; `other`'s mail waits unconsumed, there is no worker for it).
    publish_acked(&client(&nats, "baton-ingress").await?, "baton.new.other").await?;
    let other_seq = stream
        .get_last_raw_message_by_subject("baton.new.other")
        .await
        .map(|m| m.sequence);
    assert!(other_seq.is_err(), "the worker read other's queued mail");
    assert!(
        stream.get_raw_message(1).await.is_err(),
        "the worker read a queued message by sequence"
    );
    assert!(
        stream.direct_get(1).await.is_err(),
        "the worker read a queued message with a direct get"
    );
    assert!(
        stream
            .get_first_raw_message_by_subject("baton.new.test", 1)
            .await
            .is_err(),
        "the worker read its own pool's queue outside its lanes"
    );
    // Nor another pool's large bodies: not listed, read, deleted or purged.
    // (Uploaded as the ingress does.)
    let ingress_js = client(&nats, "baton-ingress").await?;
    let other_bodies = ingress_js.get_object_store("baton-bodies-other").await?;
    other_bodies
        .put("other-secret", &mut &b"another pool's large body"[..])
        .await?;
    assert!(
        js.get_object_store("baton-bodies-other").await.is_err(),
        "the worker of test opened other's body bucket"
    );
    let other_stream = js.get_stream("OBJ_baton-bodies-other").await;
    assert!(
        other_stream.is_err(),
        "the worker of test saw other's body bucket"
    );
    assert!(
        publish_acked(&js, "$O.baton-bodies-other.M.b3RoZXItc2VjcmV0")
            .await
            .is_err(),
        "the worker of test wrote other's body metadata"
    );
    let admin_js = client(&nats, "baton-admin").await?;
    let kept = admin_js.get_object_store("baton-bodies-other").await?;
    assert!(
        !kept.info("other-secret").await?.deleted,
        "other's body is still there"
    );
    // Its own pool's bucket it can read.
    assert!(js.get_object_store("baton-bodies-test").await.is_ok());

    // The webhook dispatchers: no mail in, no mail out, no events forged, no snapshot written.
    let js = client(&nats, "baton-webhooks").await?;
    assert!(
        publish_acked(&js, "baton.new.test").await.is_err(),
        "the dispatcher published mail"
    );
    assert!(
        publish_acked(&js, "baton.events.team-a.example-com.X.delivered")
            .await
            .is_err(),
        "the dispatcher forged an event"
    );
    let stream = js.get_stream("BATON_QUEUE").await;
    assert!(
        match stream {
            Ok(s) => s
                .get_consumer::<jetstream::consumer::pull::Config>("test-new")
                .await
                .is_err(),
            Err(_) => true,
        },
        "the dispatcher bound a mail lane"
    );
    let kv = js.get_key_value("baton-config").await?;
    assert!(
        kv.put("relay-config", "forged".into()).await.is_err(),
        "the dispatcher wrote the snapshot"
    );

    // A worker for `other` with `test`'s identity: refused, counted, not ready, still running.
    let mut wrong = Worker::spawn_url(&nats.url, &dir.0, "other", None, &worker)?;
    let m = wrong.metrics;
    assert_eventually(WAIT, "the refusal is counted", || async move {
        metric(m, "baton_nats_permission_denials_total").await >= 1.0
    })
    .await?;
    let (code, body) = http_get(m, "/readyz").await?;
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("NATS refused"), "{body}");
    assert!(wrong.proc.child.try_wait()?.is_none(), "the worker exited");
    let log = std::fs::read_to_string(&wrong.log)?;
    assert!(
        log.contains("Permissions Violation"),
        "a clear log line: {log}"
    );
    Ok(())
}

/// Publish one message and wait for its JetStream acknowledgement.
async fn publish_acked(js: &jetstream::Context, subject: &str) -> anyhow::Result<()> {
    js.publish(subject.to_owned(), "x".into()).await?.await?;
    Ok(())
}
