//! Scenario: a message answered `250` is in JetStream with the right envelope, for three real
//! clients (swaks, Python smtplib, Baton's own Rust client); with JetStream down the ingress
//! answers `451` and never `250`, and accepts again once it is back.

use std::process::Command;
use std::time::Duration;

use baton_proto::Message as _;
use baton_proto::v1::{Envelope, envelope::Body};
use baton_system_tests::harness::{
    Ingress, Nats, TempDir, apply_config, assert_eventually, write_config,
};
use baton_system_tests::{config, smtp::Talk};

async fn stored(nats: &Nats, seq: u64) -> anyhow::Result<Envelope> {
    let js = nats.jetstream().await?;
    let stream = js.get_stream("BATON_QUEUE").await?;
    let msg = stream.get_raw_message(seq).await?;
    assert_eq!(msg.subject.as_str(), "baton.new.test");
    Ok(Envelope::decode(msg.payload.as_ref())?)
}

fn body(e: &Envelope) -> String {
    match &e.body {
        Some(Body::InlineBody(b)) => String::from_utf8_lossy(b).into_owned(),
        _ => String::new(),
    }
}

#[tokio::test]
async fn accepted_messages_are_queued_with_their_envelope() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-accept")?;
    let nats = Nats::start().await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &config::direct(2500, "[1s]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;

    // 1. swaks (this swaks has no DSN options; DSN parameters are sent by Python below).
    let out = Command::new("swaks")
        .args([
            "--server",
            &ing.smtp.to_string(),
            "--from",
            "app@example.com",
        ])
        .args([
            "--to",
            "a@dest.test,b@dest.test",
            "--header",
            "Subject: via swaks",
        ])
        .args(["--body", "hello from swaks"])
        .output()?;
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        transcript.contains("250 2.0.0 Ok: queued as"),
        "{transcript}"
    );
    let e = stored(&nats, 1).await?;
    assert_eq!(e.reverse_path, "app@example.com");
    let rcpts: Vec<&str> = e.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(rcpts, ["a@dest.test", "b@dest.test"]);
    assert_eq!(e.relay_domain, "team-a/example-com");
    assert_eq!(e.pool, "test");
    assert_eq!(e.client_address, "127.0.0.1");
    let b = body(&e);
    assert!(b.starts_with("Received: from "), "{b}");
    assert!(b.contains(&e.id), "{b}");
    assert!(b.contains("hello from swaks"));
    assert!(transcript.contains(&e.id), "queue id in the 250 reply");

    // 2. Python smtplib over STARTTLS on the relay port, with DSN parameters.
    let script = format!(
        "import smtplib,ssl\nctx=ssl.create_default_context();ctx.check_hostname=False;ctx.verify_mode=ssl.CERT_NONE\n\
         s=smtplib.SMTP('127.0.0.1',{});s.starttls(context=ctx);s.ehlo('py.client')\n\
         r=s.sendmail('app@example.com',['c@dest.test'],'From: app@example.com\\r\\nSubject: py\\r\\n\\r\\nfrom python\\r\\n',\
         mail_options=['RET=HDRS','ENVID=env+2B42'],rcpt_options=['NOTIFY=FAILURE,DELAY','ORCPT=rfc822;c@dest.test'])\n\
         s.quit();print('OK',r)\n",
        ing.smtp.port()
    );
    let out = Command::new("python3").args(["-c", &script]).output()?;
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(so.starts_with("OK {}"), "stdout {so} stderr {se}");
    let e = stored(&nats, 2).await?;
    assert_eq!(e.helo, "py.client");
    assert!(
        body(&e).contains("with ESMTPS"),
        "TLS recorded in Received: {}",
        body(&e)
    );
    let dsn = e.dsn.clone().unwrap_or_default();
    assert_eq!(dsn.envid, "env+42", "ENVID xtext-decoded");
    assert_eq!(dsn.ret, baton_proto::v1::DsnRet::Hdrs as i32);
    let r = &e.recipients[0];
    assert!(r.notify_failure && r.notify_delay && !r.notify_success && !r.notify_never);
    assert_eq!(r.orcpt, "rfc822;c@dest.test");

    // 3. Baton's own client with SMTP AUTH on the submission port (Message-ID/Date added).
    // It sends credentials only to a verified server: it trusts the ingress's certificate.
    let mut cfg = baton_smtp_client::ClientConfig::new("rust.client");
    cfg.tls = baton_smtp_client::TlsMode::Required;
    cfg.verify_certificates = true;
    let roots = baton_smtp_client::roots_from_pem(&std::fs::read(dir.0.join("tls.crt"))?)?;
    cfg.root_store = Some(std::sync::Arc::new(roots));
    cfg.auth = Some(baton_smtp_client::Credentials {
        username: "app".into(),
        password: "secret".into(),
    });
    let mut c = baton_smtp_client::Connection::connect(ing.submission, "localhost", &cfg).await?;
    let r = c
        .send(&baton_smtp_client::OutgoingMessage {
            reverse_path: "app@example.com",
            recipients: vec![baton_smtp_client::OutgoingRecipient {
                address: "d@dest.test",
                notify: None,
                orcpt: None,
            }],
            body: b"From: app@example.com\r\nSubject: rust\r\n\r\nbody\r\n",
            smtputf8: false,
            eight_bit: false,
            ret: None,
            envid: None,
        })
        .await?;
    assert_eq!(r.data_reply.map(|d| d.code), Some(250));
    let e = stored(&nats, 3).await?;
    assert_eq!(e.authenticated_as, "app");
    let b = body(&e);
    assert!(
        b.contains("\r\nMessage-ID: <") && b.contains("\r\nDate: "),
        "{b}"
    );
    Ok(())
}

#[tokio::test]
async fn jetstream_down_means_451_and_back_means_250() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-451")?;
    let mut nats = Nats::start().await?;
    apply_config(
        &nats,
        &write_config(&dir.0, "c.yaml", &config::direct(2500, "[1s]", "1h"))?,
    )?;
    let ing = Ingress::start(&nats, &dir.0, &["--publish-timeout", "1s"]).await?;
    let send = |addr| async move {
        let (mut t, _) = Talk::connect(addr).await?;
        t.cmd("EHLO client.test").await?;
        t.cmd("MAIL FROM:<app@example.com>").await?;
        t.cmd("RCPT TO:<x@dest.test>").await?;
        t.cmd("DATA").await?;
        let r = t
            .cmd("From: app@example.com\r\nSubject: t\r\n\r\nbody\r\n.")
            .await?;
        anyhow::Ok(r)
    };
    assert_eq!(send(ing.smtp).await?.code, 250);
    nats.stop();
    let r = send(ing.smtp).await?;
    assert_eq!(r.code, 451, "{r:?}");
    assert!(r.text.starts_with("4.3.0"), "{r:?}");
    nats.restart().await?;
    assert_eventually(
        Duration::from_secs(30),
        "250 after JetStream is back",
        || async { send(ing.smtp).await.map(|r| r.code == 250).unwrap_or(false) },
    )
    .await?;
    // Only the accepted messages are in the stream: the 451 one was not half-queued.
    let js = nats.jetstream().await?;
    let mut s = js.get_stream("BATON_QUEUE").await?;
    let n = s.info().await?.state.messages;
    assert_eq!(n, 2, "exactly the two messages answered 250 are queued");
    Ok(())
}
