//! Scenario: a message larger than the inline limit (900 KiB) travels through the JetStream
//! Object Store — the queued envelope holds only a reference — and the worker delivers it
//! byte for byte, over BDAT to a receiver that offers CHUNKING; the body object is deleted once
//! the message is delivered.

use std::time::Duration;

use async_nats::jetstream::object_store::InfoErrorKind;
use baton_proto::Message as _;
use baton_proto::v1::{Envelope, envelope::Body};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};

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
    let receiver = Receiver::start(
        "127.0.0.1:0",
        ReceiverConfig {
            advertise_chunking: true,
            ..Default::default()
        },
    )
    .await?;
    let cfg = smarthost_config(receiver.addr().port());
    apply_config(&nats, &write_config(&dir.0, "c.yaml", &cfg)?)?;
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
    let js = nats.jetstream().await?;
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
    let store = js.get_object_store("baton-bodies").await?;
    let info = store.info(&name).await?;
    assert!(
        info.size > body.len(),
        "object holds body plus trace headers"
    );

    // A worker delivers it byte for byte (after Baton's Received: header) using BDAT.
    let _w = Worker::start(&nats, &dir.0, "big", None, &[]).await?;
    let got = receiver
        .wait_for_messages(1, Duration::from_secs(60))
        .await?;
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
    Ok(())
}
