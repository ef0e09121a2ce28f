//! Scenario: a message larger than the inline limit (900 KiB) travels through the JetStream
//! Object Store — the queued envelope holds only a reference — and the worker delivers it
//! byte for byte, over BDAT to a receiver that offers CHUNKING. The first attempt is deferred
//! (`451` at the end of the body): the retry references the same object, nothing is uploaded
//! again, and the object is deleted once the message is delivered. `baton config apply` gives
//! the bucket an expiry past the pool's longest message lifetime; a second scenario shows an
//! orphaned object (no envelope references it) expiring with that retention.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::object_store::InfoErrorKind;
use baton_proto::Message as _;
use baton_proto::v1::{Envelope, envelope::Body};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};

fn smarthost_config(port: u16) -> String {
    format!(
        r#"apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {{name: big}}
spec:
  delivery:
    mode: Smarthost
    smarthosts: [{{host: 127.0.0.1, port: {port}, weight: 1, tls: Disabled}}]
  tls: {{policy: Disabled}}
  retry: {{schedule: [1s], maxAge: 1h}}
---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {{name: example-com, namespace: default}}
spec:
  domain: example.com
  pool: big
  submission: {{networks: [127.0.0.0/8]}}
"#
    )
}

#[tokio::test]
async fn a_large_body_goes_through_the_object_store_and_arrives_intact() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-large")?;
    let nats = Nats::start().await?;
    let deferred = Arc::new(AtomicBool::new(false));
    let d = deferred.clone();
    let script = Arc::new(move |s: &Stage<'_>| match s {
        Stage::DataEnd { .. } if !d.swap(true, Ordering::SeqCst) => {
            Response::Reply(451, "4.3.0 try again later".into())
        }
        _ => Response::Default,
    });
    let receiver = Receiver::start(
        "127.0.0.1:0",
        ReceiverConfig {
            advertise_chunking: true,
            script,
            ..Default::default()
        },
    )
    .await?;
    let cfg = smarthost_config(receiver.addr().port());
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;

    // The bucket expires objects past the pool's longest lifetime: maxAge 1h + the 1 s delay
    // + a week of grace (baton_config::plan::BODY_RETENTION_GRACE).
    let js = nats.jetstream().await?;
    let bodies = js
        .get_stream("OBJ_baton-bodies-big")
        .await?
        .info()
        .await?
        .config
        .clone();
    assert_eq!(
        bodies.max_age,
        Duration::from_secs(3600 + 1 + 7 * 86_400),
        "large-body bucket retention"
    );
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;

    // 2.5 MiB of distinct CRLF lines, some starting with a dot.
    let mut body = b"Subject: big\r\nFrom: app@example.com\r\n\r\n".to_vec();
    for i in 0..60_000 {
        if i % 97 == 0 {
            body.extend_from_slice(b".");
        }
        body.extend_from_slice(
            format!("line {i:06} abcdefghijklmnopqrstuvwxyz0123456789\r\n").as_bytes(),
        );
    }
    assert!(body.len() > 2 * 1024 * 1024);
    let cfg = baton_smtp_client::ClientConfig::new("client.test");
    let mut c = baton_smtp_client::Connection::connect(ing.smtp, "localhost", &cfg).await?;
    let r = c
        .send(&baton_smtp_client::OutgoingMessage {
            reverse_path: "app@example.com",
            recipients: vec![baton_smtp_client::OutgoingRecipient {
                address: "x@dest.test",
                notify: None,
                orcpt: None,
            }],
            body: &body,
            smtputf8: false,
            eight_bit: false,
            ret: None,
            envid: None,
        })
        .await?;
    assert_eq!(r.data_reply.as_ref().map(|d| d.code), Some(250), "{r:?}");

    // The queued envelope references an object instead of carrying the body.
    let msg = js
        .get_stream("BATON_QUEUE")
        .await?
        .get_raw_message(1)
        .await?;
    assert!(
        msg.payload.len() < 64 * 1024,
        "envelope is small: {} bytes",
        msg.payload.len()
    );
    let env = Envelope::decode(msg.payload.as_ref())?;
    let Some(Body::ObjectRef(name)) = env.body.clone() else {
        anyhow::bail!("body should be an object reference")
    };
    assert_eq!(name, env.id);
    // In the pool's own bucket, which only its workers may read.
    assert_eq!(env.object_bucket, "baton-bodies-big");
    let store = js.get_object_store("baton-bodies-big").await?;
    let info = store.info(&name).await?;
    assert!(
        info.size > body.len(),
        "object holds body plus trace headers"
    );

    // Every message the upload wrote to the bucket's stream (chunks and metadata).
    let uploaded = js
        .get_stream("OBJ_baton-bodies-big")
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    assert!(uploaded > 2, "a chunked upload: {uploaded}");

    // A worker delivers it byte for byte (after Baton's Received: header) using BDAT, on the
    // retry after the first attempt was deferred.
    let _w = Worker::start(&nats, &dir.0, "big", None, &[]).await?;
    let got = receiver
        .wait_for_messages(1, Duration::from_secs(60))
        .await?;
    assert!(
        deferred.load(Ordering::SeqCst),
        "the first attempt was deferred"
    );
    assert_eq!(got.len(), 1, "delivered once, on the retry");
    let m = &got[0];
    assert!(m.chunked, "BDAT used");
    assert!(m.body.starts_with(b"Received: from "));
    assert!(
        m.body.ends_with(&body),
        "content intact after the trace header"
    );

    // Once delivered, the body object is removed (nothing else references it).
    // One bounded request per poll (the object's last metadata entry). Listing the bucket
    // instead could wait forever inside a poll, where `assert_eventually` cannot time it out.
    assert_eventually(Duration::from_secs(20), "body object deleted", || {
        let store = store.clone();
        let name = name.clone();
        async move {
            match store.info(&name).await {
                Ok(info) => info.deleted,
                Err(e) => e.kind() == InfoErrorKind::NotFound,
            }
        }
    })
    .await?;
    // The retry did not upload the body again: besides the first upload, the bucket's stream
    // only got the deletion's metadata entry.
    let after = js
        .get_stream("OBJ_baton-bodies-big")
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    assert!(
        after <= uploaded + 1,
        "no second upload: {uploaded} messages for the upload, {after} in the end"
    );
    Ok(())
}

/// An object no envelope references (a failed delete, a publish that failed after the upload)
/// expires with the bucket's retention instead of staying forever; the retention is only ever
/// raised.
#[tokio::test]
async fn an_orphaned_body_expires_with_the_bucket_retention() -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let js = nats.jetstream().await?;
    let provisioner =
        baton_queue::Provisioner::new(js.clone(), baton_queue::StreamSettings::default());
    provisioner.ensure_buckets().await?;
    provisioner.ensure_body_bucket("test").await?;
    let retention = Duration::from_secs(2);
    assert_eq!(
        provisioner.ensure_body_retention(retention).await?,
        retention
    );
    // Never shortened.
    assert_eq!(
        provisioner
            .ensure_body_retention(Duration::from_secs(1))
            .await?,
        retention
    );
    let store = js.get_object_store("baton-bodies-test").await?;
    let mut body: &[u8] = b"orphaned body";
    store.put("orphan", &mut body).await?;
    assert!(!store.info("orphan").await?.deleted);
    assert_eventually(Duration::from_secs(30), "orphaned body expired", || {
        let store = store.clone();
        async move {
            match store.info("orphan").await {
                Ok(info) => info.deleted,
                Err(e) => e.kind() == InfoErrorKind::NotFound,
            }
        }
    })
    .await?;
    Ok(())
}

/// An upgrade: mail accepted by an earlier version has its body in the shared bucket
/// `baton-bodies`. The pool's worker still delivers it and deletes the body; the owner deletes
/// that bucket only once it holds no body (and nothing was written to it for an hour), and
/// never creates it again.
#[tokio::test]
async fn mail_from_before_per_pool_buckets_is_delivered_then_the_shared_bucket_retired()
-> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-large-legacy")?;
    let nats = Nats::start().await?;
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let cfg = smarthost_config(receiver.addr().port());
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;
    let js = nats.jetstream().await?;
    assert!(
        js.get_stream("OBJ_baton-bodies").await.is_err(),
        "a new installation has no shared bucket"
    );

    // What an earlier version left: the shared bucket, a body in it, an envelope naming it
    // without a bucket.
    let legacy = js
        .create_object_store(async_nats::jetstream::object_store::Config {
            bucket: "baton-bodies".into(),
            ..Default::default()
        })
        .await?;
    let body = format!(
        "Subject: from before\r\nFrom: app@example.com\r\n\r\n{}",
        "legacy body line of the earlier version 0123456789\r\n".repeat(20_000)
    );
    legacy.put("legacy-1", &mut body.as_bytes()).await?;
    let envelope = Envelope {
        id: "legacy-1".into(),
        pool: "big".into(),
        relay_domain: "default/example-com".into(),
        reverse_path: "app@example.com".into(),
        recipients: vec![baton_proto::v1::Recipient {
            address: "old@example.net".into(),
            ..Default::default()
        }],
        received_at_ms: i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis(),
        )?,
        size: body.len() as u64,
        body: Some(Body::ObjectRef("legacy-1".into())),
        ..Envelope::default()
    };
    js.publish("baton.new.big", envelope.encode_to_vec().into())
        .await?
        .await?;
    let provisioner =
        baton_queue::Provisioner::new(js.clone(), baton_queue::StreamSettings::default());
    assert!(
        !provisioner.retire_legacy_bodies().await?,
        "kept while it holds a body"
    );

    let _w = Worker::start(&nats, &dir.0, "big", None, &[]).await?;
    let got = receiver
        .wait_for_messages(1, Duration::from_secs(60))
        .await?;
    assert!(
        got[0].body.ends_with(body.as_bytes()),
        "delivered intact: {} bytes, starts {:?}",
        got[0].body.len(),
        String::from_utf8_lossy(&got[0].body[..got[0].body.len().min(300)])
    );
    assert_eventually(Duration::from_secs(20), "legacy body deleted", || {
        let legacy = legacy.clone();
        async move {
            match legacy.info("legacy-1").await {
                Ok(info) => info.deleted,
                Err(e) => e.kind() == InfoErrorKind::NotFound,
            }
        }
    })
    .await?;
    // Empty, but written a moment ago (an ingress of the earlier version may still run
    // during a rolling upgrade): kept.
    assert!(!provisioner.retire_legacy_bodies().await?);
    assert!(js.get_stream("OBJ_baton-bodies").await.is_ok());

    // An empty shared bucket nothing wrote to: deleted, and provisioning does not bring it
    // back.
    js.delete_stream("OBJ_baton-bodies").await?;
    js.create_object_store(async_nats::jetstream::object_store::Config {
        bucket: "baton-bodies".into(),
        ..Default::default()
    })
    .await?;
    assert!(provisioner.retire_legacy_bodies().await?);
    assert!(js.get_stream("OBJ_baton-bodies").await.is_err());
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;
    assert!(js.get_stream("OBJ_baton-bodies").await.is_err());
    assert!(js.get_stream("OBJ_baton-bodies-big").await.is_ok());
    Ok(())
}
