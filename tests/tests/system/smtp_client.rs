//! `baton-smtp-client` against the programmable receiver and against Postfix's `smtp-sink`.
//!
//! No sleeps: each test waits on the client's result or on `Receiver::wait_for_messages`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use baton_smtp_client::{
    ClientConfig, ClientError, Connection, Credentials, OutgoingMessage, OutgoingRecipient,
    SendResult, Timeouts, TlsMode,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig, Response, Stage};
use baton_system_tests::tls;

const WAIT: Duration = Duration::from_secs(10);

fn client_config(mode: TlsMode) -> ClientConfig {
    tls::install_crypto_provider();
    ClientConfig {
        tls: mode,
        timeouts: Timeouts::uniform(WAIT),
        ..ClientConfig::new("client.test")
    }
}

fn message<'a>(from: &'a str, to: &[&'a str], body: &'a [u8]) -> OutgoingMessage<'a> {
    OutgoingMessage {
        reverse_path: from,
        recipients: to
            .iter()
            .map(|address| OutgoingRecipient {
                address,
                notify: None,
                orcpt: None,
            })
            .collect(),
        body,
        smtputf8: false,
        eight_bit: false,
        ret: None,
        envid: None,
    }
}

fn script(f: impl Fn(&Stage<'_>) -> Response + Send + Sync + 'static) -> ReceiverConfig {
    ReceiverConfig {
        script: Arc::new(f),
        ..ReceiverConfig::default()
    }
}

fn with_tls(config: ReceiverConfig) -> anyhow::Result<ReceiverConfig> {
    let (server, _) = tls::self_signed_server(&["localhost"])?;
    Ok(ReceiverConfig {
        tls: Some(server),
        ..config
    })
}

async fn connect(receiver: &Receiver, config: &ClientConfig) -> Result<Connection, ClientError> {
    Connection::connect(receiver.addr(), "localhost", config).await
}

/// Connects, sends one message, quits.
async fn send_one(
    receiver: &Receiver,
    config: &ClientConfig,
    msg: &OutgoingMessage<'_>,
) -> anyhow::Result<SendResult> {
    let mut conn = connect(receiver, config).await?;
    let result = conn.send(msg).await?;
    conn.quit().await;
    Ok(result)
}

const BODY: &[u8] = b"Subject: test\r\n\r\nhello\r\n.leading dot\r\n.\r\nend\r\n";

#[tokio::test]
async fn plain_delivery_with_pipelining() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let config = client_config(TlsMode::Opportunistic);
    let mut conn = connect(&receiver, &config).await?;
    ensure!(conn.capabilities().pipelining && !conn.is_tls());
    ensure!(conn.greeting().code == 220 && conn.remote() == receiver.addr());
    let mut msg = message("a@src.test", &["x@dst.test", "y@dst.test"], BODY);
    msg.eight_bit = true;
    let result = conn.send(&msg).await?;
    ensure!(result.delivered(), "{result:?}");
    ensure!(result.rcpt_replies.iter().all(|r| r.code == 250));
    ensure!(conn.messages_sent() == 1);
    conn.quit().await;
    let got = receiver.wait_for_messages(1, WAIT).await?;
    let m = &got[0];
    ensure!(m.from == "a@src.test" && m.to == ["x@dst.test", "y@dst.test"]);
    ensure!(m.body == BODY && !m.tls && !m.chunked && m.ehlo == "client.test");
    ensure!(m.mail_params == "BODY=8BITMIME", "{}", m.mail_params);
    Ok(())
}

#[tokio::test]
async fn ehlo_refused_falls_back_to_helo_lockstep() -> anyhow::Result<()> {
    let config = script(|stage| match stage {
        Stage::Ehlo { .. } => Response::Reply(502, "5.5.1 EHLO not implemented".into()),
        _ => Response::Default,
    });
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let mut conn = connect(&receiver, &client_config(TlsMode::Opportunistic)).await?;
    ensure!(!conn.capabilities().pipelining);
    ensure!(
        conn.send(&message("a@s.test", &["b@d.test"], BODY))
            .await?
            .delivered()
    );
    conn.quit().await;
    ensure!(receiver.wait_for_messages(1, WAIT).await?[0].body == BODY);
    Ok(())
}

#[tokio::test]
async fn starttls_opportunistic_upgrades() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", with_tls(ReceiverConfig::default())?).await?;
    let config = client_config(TlsMode::Opportunistic);
    let mut conn = connect(&receiver, &config).await?;
    ensure!(conn.is_tls() && !conn.capabilities().starttls && conn.capabilities().pipelining);
    ensure!(
        conn.send(&message("a@s.test", &["b@d.test"], BODY))
            .await?
            .delivered()
    );
    conn.quit().await;
    let got = receiver.wait_for_messages(1, WAIT).await?;
    ensure!(got[0].tls && got[0].body == BODY);
    Ok(())
}

#[tokio::test]
async fn required_tls_without_starttls_fails() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    match connect(&receiver, &client_config(TlsMode::Required)).await {
        Err(e @ ClientError::TlsRequired) => ensure!(!e.is_permanent()),
        other => bail!("expected TlsRequired, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn required_tls_verifies_certificate_and_name() -> anyhow::Result<()> {
    let (server, roots) = tls::self_signed_server(&["localhost"])?;
    let config = ReceiverConfig {
        tls: Some(server),
        ..ReceiverConfig::default()
    };
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let mut client = client_config(TlsMode::Required);
    client.verify_certificates = true;
    client.root_store = Some(roots);
    let conn = connect(&receiver, &client).await?;
    ensure!(conn.is_tls());
    conn.quit().await;
    let wrong = Connection::connect(receiver.addr(), "mx.other.test.", &client).await;
    ensure!(matches!(wrong, Err(ClientError::Tls(_))), "{wrong:?}");
    // An untrusted certificate fails too.
    client.root_store = Some(tls::self_signed_server(&["localhost"])?.1);
    ensure!(matches!(
        connect(&receiver, &client).await,
        Err(ClientError::Tls(_))
    ));
    Ok(())
}

#[tokio::test]
async fn disabled_never_upgrades() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", with_tls(ReceiverConfig::default())?).await?;
    let config = client_config(TlsMode::Disabled);
    let result = send_one(
        &receiver,
        &config,
        &message("a@s.test", &["b@d.test"], BODY),
    )
    .await?;
    ensure!(result.delivered());
    ensure!(!receiver.wait_for_messages(1, WAIT).await?[0].tls);
    Ok(())
}

#[tokio::test]
async fn plaintext_injected_after_starttls_is_ignored() -> anyhow::Result<()> {
    let config = with_tls(script(|stage| match stage {
        Stage::StartTls => Response::PlaintextInjection(
            "250-receiver.test\r\n250 PIPELINING\r\n554 5.7.0 injected\r\n".into(),
        ),
        _ => Response::Default,
    }))?;
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let mut conn = connect(&receiver, &client_config(TlsMode::Opportunistic)).await?;
    ensure!(conn.is_tls());
    let result = conn.send(&message("a@s.test", &["b@d.test"], BODY)).await?;
    ensure!(
        result.delivered() && result.mail_reply.code == 250,
        "{result:?}"
    );
    conn.quit().await;
    ensure!(receiver.wait_for_messages(1, WAIT).await?[0].tls);
    Ok(())
}

#[tokio::test]
async fn auth_plain_over_tls() -> anyhow::Result<()> {
    let auth = Some(("user".to_owned(), "s3cret".to_owned()));
    let config = with_tls(ReceiverConfig {
        auth,
        ..ReceiverConfig::default()
    })?;
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let mut client = client_config(TlsMode::Opportunistic);
    client.auth = Some(Credentials {
        username: "user".into(),
        password: "s3cret".into(),
    });
    // The receiver's certificate is self-signed: unverified, so the credentials are withheld.
    let unverified = connect(&receiver, &client).await;
    ensure!(
        matches!(unverified, Err(ClientError::AuthUnavailable(_))),
        "{unverified:?}"
    );
    client.allow_auth_unverified = true;
    let result = send_one(
        &receiver,
        &client,
        &message("a@s.test", &["b@d.test"], BODY),
    )
    .await?;
    ensure!(result.delivered());
    let got = receiver.wait_for_messages(1, WAIT).await?;
    ensure!(got[0].authenticated.as_deref() == Some("user") && got[0].tls);

    client.auth = Some(Credentials {
        username: "user".into(),
        password: "wrong".into(),
    });
    match connect(&receiver, &client).await {
        Err(ClientError::Auth(reply)) => ensure!(reply.code == 535),
        other => bail!("expected Auth error, got {other:?}"),
    }
    // Without TLS the credentials are not sent.
    client.tls = TlsMode::Disabled;
    let plain = connect(&receiver, &client).await;
    ensure!(
        matches!(plain, Err(ClientError::AuthUnavailable(_))),
        "{plain:?}"
    );
    Ok(())
}

/// Counts DATA (and first BDAT) commands that reached the script.
fn counting(
    rcpt: impl Fn(&str) -> Response + Send + Sync + 'static,
) -> (ReceiverConfig, Arc<AtomicU64>) {
    let datas = Arc::new(AtomicU64::new(0));
    let seen = datas.clone();
    let config = script(move |stage| match stage {
        Stage::Rcpt { to } => rcpt(to),
        Stage::Data { .. } => {
            seen.fetch_add(1, Ordering::SeqCst);
            Response::Default
        }
        _ => Response::Default,
    });
    (config, datas)
}

#[tokio::test]
async fn one_recipient_refused_others_delivered() -> anyhow::Result<()> {
    let (config, datas) = counting(|to| match to.starts_with("bad") {
        true => Response::Reply(550, "5.1.1 No such user".into()),
        false => Response::Default,
    });
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let msg = message("a@s.test", &["x@d.test", "bad@d.test", "y@d.test"], BODY);
    let result = send_one(&receiver, &client_config(TlsMode::Disabled), &msg).await?;
    let codes: Vec<u16> = result.rcpt_replies.iter().map(|r| r.code).collect();
    ensure!(codes == [250, 550, 250], "{codes:?}");
    ensure!(
        result.rcpt_replies[1]
            .status
            .map(|s| s.to_string())
            .as_deref()
            == Some("5.1.1")
    );
    ensure!(result.rcpt_replies[1].to_string() == "550 5.1.1 No such user");
    ensure!(result.delivered());
    let got = receiver.wait_for_messages(1, WAIT).await?;
    ensure!(got.len() == 1 && got[0].to == ["x@d.test", "y@d.test"]);
    ensure!(datas.load(Ordering::SeqCst) == 1);
    Ok(())
}

async fn all_refused_then_reuse(pipelining: bool, chunking: bool) -> anyhow::Result<()> {
    let (config, datas) = counting(|to| match to.starts_with("bad") {
        true => Response::Reply(550, "5.1.1 No such user".into()),
        false => Response::Default,
    });
    let config = ReceiverConfig {
        advertise_pipelining: pipelining,
        advertise_chunking: chunking,
        ..config
    };
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let mut conn = connect(&receiver, &client_config(TlsMode::Disabled)).await?;
    let refused = conn
        .send(&message("a@s.test", &["bad1@d.test", "bad2@d.test"], BODY))
        .await?;
    ensure!(
        refused.data_reply.is_none() && !refused.delivered(),
        "{refused:?}"
    );
    ensure!(refused.rcpt_replies.len() == 2 && refused.rcpt_replies.iter().all(|r| r.code == 550));
    ensure!(datas.load(Ordering::SeqCst) == 0 && receiver.messages().is_empty());
    // The connection is still usable: the client resets the half-open transaction.
    let ok = conn
        .send(&message("a@s.test", &["good@d.test"], BODY))
        .await?;
    ensure!(ok.delivered(), "{ok:?}");
    ensure!(conn.messages_sent() == 1);
    conn.quit().await;
    ensure!(receiver.wait_for_messages(1, WAIT).await?[0].to == ["good@d.test"]);
    Ok(())
}

#[tokio::test]
async fn all_recipients_refused_sends_no_data_pipelined() -> anyhow::Result<()> {
    all_refused_then_reuse(true, false).await
}

#[tokio::test]
async fn all_recipients_refused_sends_no_data_lockstep() -> anyhow::Result<()> {
    all_refused_then_reuse(false, false).await
}

#[tokio::test]
async fn all_recipients_refused_delivers_nothing_over_bdat() -> anyhow::Result<()> {
    all_refused_then_reuse(true, true).await
}

#[tokio::test]
async fn greeting_421_is_transient() -> anyhow::Result<()> {
    let config = script(|stage| match stage {
        Stage::Connect { .. } => Response::Reply(421, "4.3.2 Too busy".into()),
        _ => Response::Default,
    });
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    match connect(&receiver, &client_config(TlsMode::Opportunistic)).await {
        Err(e @ ClientError::Greeting(_)) => {
            ensure!(!e.is_permanent() && e.metric_label() == "greeting");
            ensure!(e.to_string().contains("421 4.3.2 Too busy"), "{e}");
        }
        other => bail!("expected Greeting error, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn data_stage_451_is_reported() -> anyhow::Result<()> {
    for at_end in [true, false] {
        let config = script(move |stage| match stage {
            Stage::DataEnd { .. } if at_end => Response::Reply(451, "4.3.0 Try later".into()),
            Stage::Data { .. } if !at_end => Response::Reply(451, "4.3.0 Try later".into()),
            _ => Response::Default,
        });
        let receiver = Receiver::start("127.0.0.1:0", config).await?;
        let mut conn = connect(&receiver, &client_config(TlsMode::Disabled)).await?;
        let result = conn.send(&message("a@s.test", &["b@d.test"], BODY)).await?;
        let data = result.data_reply.clone().context("data reply")?;
        ensure!(
            data.code == 451 && data.is_transient() && !result.delivered(),
            "{result:?}"
        );
        ensure!(result.rcpt_replies[0].code == 250);
        // The session stays usable for the next attempt.
        conn.reset().await?;
        ensure!(conn.messages_sent() == 0);
        conn.quit().await;
        ensure!(receiver.messages().is_empty());
    }
    Ok(())
}

#[tokio::test]
async fn connection_dropped_mid_data_is_an_error() -> anyhow::Result<()> {
    for chunking in [false, true] {
        let config = ReceiverConfig {
            advertise_chunking: chunking,
            ..script(|stage| match stage {
                Stage::DataEnd { .. } => Response::Drop,
                _ => Response::Default,
            })
        };
        let receiver = Receiver::start("127.0.0.1:0", config).await?;
        let mut conn = connect(&receiver, &client_config(TlsMode::Disabled)).await?;
        let result = conn.send(&message("a@s.test", &["b@d.test"], BODY)).await;
        match result {
            Err(ClientError::ConnectionClosed { stage: "data_term" } | ClientError::Io(_)) => {}
            other => bail!("expected a connection error, got {other:?}"),
        }
        ensure!(!conn.is_usable());
        let again = conn.send(&message("a@s.test", &["b@d.test"], BODY)).await;
        ensure!(matches!(again, Err(ClientError::Unusable)));
    }
    Ok(())
}

#[tokio::test]
async fn stalled_server_times_out() -> anyhow::Result<()> {
    let config = script(|stage| match stage {
        Stage::Mail { .. } => Response::Stall(Duration::from_secs(30)),
        _ => Response::Default,
    });
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let mut client = client_config(TlsMode::Disabled);
    client.timeouts.mail = Duration::from_millis(200);
    let mut conn = connect(&receiver, &client).await?;
    let result = conn.send(&message("a@s.test", &["b@d.test"], BODY)).await;
    ensure!(
        matches!(result, Err(ClientError::Timeout { stage: "mail" })),
        "{result:?}"
    );
    Ok(())
}

/// Bodies that stress framing: leading dots, lone dots, no final CRLF, bare LF, empty, and
/// one larger than a BDAT chunk.
fn tricky_bodies() -> Vec<(Vec<u8>, Vec<u8>)> {
    let big: Vec<u8> = (0..40_000)
        .flat_map(|i| format!(".line {i} with some padding to make it longer\r\n").into_bytes())
        .collect();
    vec![
        (BODY.to_vec(), BODY.to_vec()),
        (
            b"..two\r\n.\r\n...\r\n. \r\n".to_vec(),
            b"..two\r\n.\r\n...\r\n. \r\n".to_vec(),
        ),
        (b"no final crlf".to_vec(), b"no final crlf\r\n".to_vec()),
        (
            b"bare\nlf\n.dot\n".to_vec(),
            b"bare\r\nlf\r\n.dot\r\n".to_vec(),
        ),
        (Vec::new(), Vec::new()),
        (big.clone(), big),
    ]
}

#[tokio::test]
async fn bdat_and_data_deliver_identical_bytes() -> anyhow::Result<()> {
    let data = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let bdat = ReceiverConfig {
        advertise_chunking: true,
        ..ReceiverConfig::default()
    };
    let bdat = Receiver::start("127.0.0.1:0", bdat).await?;
    let config = client_config(TlsMode::Disabled);
    let bodies = tricky_bodies();
    ensure!(
        bodies
            .iter()
            .any(|(b, _)| b.len() > baton_smtp_client::MAX_CHUNK)
    );
    for receiver in [&data, &bdat] {
        let mut conn = connect(receiver, &config).await?;
        for (body, _) in &bodies {
            let result = conn.send(&message("a@s.test", &["b@d.test"], body)).await?;
            ensure!(result.delivered(), "{result:?}");
        }
        conn.quit().await;
    }
    let via_data = data.wait_for_messages(bodies.len(), WAIT).await?;
    let via_bdat = bdat.wait_for_messages(bodies.len(), WAIT).await?;
    for (i, (_, expected)) in bodies.iter().enumerate() {
        ensure!(!via_data[i].chunked && via_bdat[i].chunked);
        ensure!(&via_data[i].body == expected, "DATA body {i} differs");
        ensure!(&via_bdat[i].body == expected, "BDAT body {i} differs");
    }
    Ok(())
}

#[tokio::test]
async fn smtputf8_requires_server_support() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let mut conn = connect(&receiver, &client_config(TlsMode::Disabled)).await?;
    let mut msg = message("a@s.test", &["b@d.test"], BODY);
    msg.smtputf8 = true;
    match conn.send(&msg).await {
        Err(e @ ClientError::Smtputf8NotSupported) => ensure!(e.is_permanent()),
        other => bail!("expected Smtputf8NotSupported, got {other:?}"),
    }
    // Nothing was sent, the connection is still good; a UTF-8 address implies SMTPUTF8.
    ensure!(conn.is_usable());
    let utf8 = message("a@s.test", &["jörg@d.test"], BODY);
    ensure!(matches!(
        conn.send(&utf8).await,
        Err(ClientError::Smtputf8NotSupported)
    ));
    conn.quit().await;

    let config = ReceiverConfig {
        advertise_smtputf8: true,
        ..ReceiverConfig::default()
    };
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    ensure!(
        send_one(&receiver, &client_config(TlsMode::Disabled), &utf8)
            .await?
            .delivered()
    );
    let got = receiver.wait_for_messages(1, WAIT).await?;
    ensure!(got[0].to == ["jörg@d.test"] && got[0].mail_params.contains("SMTPUTF8"));
    Ok(())
}

#[tokio::test]
async fn size_limit_enforced_before_sending() -> anyhow::Result<()> {
    let config = ReceiverConfig {
        advertise_size: Some(100),
        ..ReceiverConfig::default()
    };
    let receiver = Receiver::start("127.0.0.1:0", config).await?;
    let mut conn = connect(&receiver, &client_config(TlsMode::Disabled)).await?;
    ensure!(conn.capabilities().size == Some(100));
    let big = vec![b'x'; 200];
    match conn.send(&message("a@s.test", &["b@d.test"], &big)).await {
        Err(e @ ClientError::MessageTooLarge { limit: 100, .. }) => ensure!(e.is_permanent()),
        other => bail!("expected MessageTooLarge, got {other:?}"),
    }
    let result = conn.send(&message("a@s.test", &["b@d.test"], BODY)).await?;
    ensure!(result.delivered());
    conn.quit().await;
    let got = receiver.wait_for_messages(1, WAIT).await?;
    ensure!(got.len() == 1 && got[0].mail_params == format!("SIZE={}", BODY.len()));
    Ok(())
}

#[tokio::test]
async fn dsn_parameters_are_sent_when_offered() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let mut msg = message("a@s.test", &["b@d.test"], BODY);
    msg.ret = Some(baton_smtp_client::DsnRet::Headers);
    msg.envid = Some("QQ314159");
    msg.recipients[0].notify = Some(baton_smtp_client::Notify {
        success: true,
        failure: true,
        ..Default::default()
    });
    msg.recipients[0].orcpt = Some("rfc822;b@d.test");
    ensure!(
        send_one(&receiver, &client_config(TlsMode::Disabled), &msg)
            .await?
            .delivered()
    );
    let got = receiver.wait_for_messages(1, WAIT).await?;
    ensure!(
        got[0].mail_params == "RET=HDRS ENVID=QQ314159",
        "{}",
        got[0].mail_params
    );
    Ok(())
}

#[tokio::test]
async fn connection_reuse_with_reset() -> anyhow::Result<()> {
    let receiver = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let mut conn = connect(&receiver, &client_config(TlsMode::Disabled)).await?;
    ensure!(
        conn.send(&message("a@s.test", &["one@d.test"], BODY))
            .await?
            .delivered()
    );
    conn.reset().await?;
    ensure!(
        conn.send(&message("b@s.test", &["two@d.test"], BODY))
            .await?
            .delivered()
    );
    ensure!(conn.messages_sent() == 2);
    conn.quit().await;
    let got = receiver.wait_for_messages(2, WAIT).await?;
    ensure!(
        got[0].to == ["one@d.test"] && got[1].to == ["two@d.test"] && got[1].from == "b@s.test"
    );
    ensure!(receiver.connections() == 1);
    Ok(())
}

/// Reads exactly `want.len()` bytes (bounded by [`WAIT`]) and checks they are `want`.
async fn expect_bytes(s: &mut tokio::net::TcpStream, want: &[u8]) -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let mut got = vec![0; want.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .context(
            "the client stopped sending before the whole transaction was in: it waited for a reply",
        )??;
    ensure!(
        got == want,
        "got {:?}, want {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(want)
    );
    Ok(())
}

/// RFC 3030 4.2: with PIPELINING and CHUNKING the client sends MAIL, RCPT, `BDAT <n> LAST` and
/// the content without waiting for any reply. The server here answers nothing until it holds
/// the whole transaction, so a client that waited (for MAIL's or RCPT's reply) would stall
/// and the test fail. A transaction whose recipients are all refused has its chunk refused
/// too, and the next one opens with RSET on the same connection.
#[tokio::test]
async fn bdat_is_pipelined_with_the_envelope() -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let bdat = |rset: &str, to: &str| {
        let mut t = format!(
            "{rset}MAIL FROM:<a@s.test>\r\nRCPT TO:<{to}>\r\nBDAT {} LAST\r\n",
            BODY.len()
        )
        .into_bytes();
        t.extend_from_slice(BODY);
        t
    };
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.write_all(b"220 strict.test ESMTP\r\n").await?;
        expect_bytes(&mut s, b"EHLO client.test\r\n").await?;
        s.write_all(b"250-strict.test\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
            .await?;
        expect_bytes(&mut s, &bdat("", "one@d.test")).await?;
        s.write_all(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued\r\n")
            .await?;
        expect_bytes(&mut s, &bdat("", "bad@d.test")).await?;
        s.write_all(b"250 2.1.0 Ok\r\n550 5.1.1 No such user\r\n554 5.5.1 No valid recipients\r\n")
            .await?;
        expect_bytes(&mut s, &bdat("RSET\r\n", "two@d.test")).await?;
        s.write_all(b"250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued\r\n")
            .await?;
        expect_bytes(&mut s, b"QUIT\r\n").await?;
        s.write_all(b"221 2.0.0 Bye\r\n").await?;
        anyhow::Ok(())
    });
    let mut conn =
        Connection::connect(addr, "localhost", &client_config(TlsMode::Disabled)).await?;
    let one = conn
        .send(&message("a@s.test", &["one@d.test"], BODY))
        .await?;
    ensure!(one.delivered(), "{one:?}");
    let refused = conn
        .send(&message("a@s.test", &["bad@d.test"], BODY))
        .await?;
    ensure!(
        !refused.delivered() && refused.data_reply.is_none(),
        "{refused:?}"
    );
    ensure!(refused.rcpt_replies[0].to_string() == "550 5.1.1 No such user");
    let two = conn
        .send(&message("a@s.test", &["two@d.test"], BODY))
        .await?;
    ensure!(two.delivered(), "{two:?}");
    ensure!(conn.messages_sent() == 2);
    conn.quit().await;
    server.await??;
    Ok(())
}

/// The same against a real Postfix `smtpd` (which offers PIPELINING and CHUNKING): over one
/// connection a message, one whose only recipient Postfix refuses, and a message whose lines
/// start with dots; Postfix relays the two it accepted to the programmable receiver, content
/// intact.
#[tokio::test]
async fn pipelined_bdat_to_postfix() -> anyhow::Result<()> {
    use baton_system_tests::harness::{TempDir, free_port};
    use baton_system_tests::postfix::Postfix;
    let dir = TempDir::new("baton-bdat-postfix")?;
    let next = Receiver::start("127.0.0.1:0", ReceiverConfig::default()).await?;
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let refused = dir.0.join("refused-recipients");
    std::fs::write(&refused, "bad@d.test 550 5.1.1 No such user\n")?;
    let postfix = Postfix::start(
        &dir.0,
        addr,
        &[
            "relay_domains = d.test".into(),
            format!(
                "transport_maps = inline:{{d.test=smtp:[127.0.0.1]:{}}}",
                next.addr().port()
            ),
            "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination".into(),
            format!(
                "smtpd_recipient_restrictions = check_recipient_access texthash:{}",
                refused.display()
            ),
        ],
    )?;
    let deadline = Instant::now() + WAIT;
    let mut conn = loop {
        match Connection::connect(addr, "localhost", &client_config(TlsMode::Disabled)).await {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                bail!("Postfix did not answer: {e}\n{}", postfix.log_text())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let caps = conn.capabilities();
    ensure!(caps.pipelining && caps.chunking, "{caps:?}");
    let dots: &[u8] = b"Subject: dots\r\n\r\n.one\r\n..two\r\n.\r\nend\r\n";
    let one = conn
        .send(&message("a@s.test", &["one@d.test"], BODY))
        .await?;
    ensure!(one.delivered(), "{one:?}\n{}", postfix.log_text());
    let refused = conn
        .send(&message("a@s.test", &["bad@d.test"], BODY))
        .await?;
    ensure!(
        !refused.delivered() && refused.rcpt_replies[0].code == 550,
        "{refused:?}"
    );
    let two = conn
        .send(&message("a@s.test", &["two@d.test"], dots))
        .await?;
    ensure!(two.delivered(), "{two:?}\n{}", postfix.log_text());
    conn.quit().await;
    let got = next
        .wait_for_messages(2, Duration::from_secs(60))
        .await
        .with_context(|| postfix.log_text())?;
    let body_of = |to: &str| {
        got.iter()
            .find(|m| m.to == [to])
            .map(|m| m.body.clone())
            .unwrap_or_default()
    };
    // Postfix adds header fields (Received:, and Date: and Message-ID: for a local client);
    // the message text after the header block is what was sent, byte for byte.
    let text = |m: &[u8]| {
        m.windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| m[i..].to_vec())
            .unwrap_or_default()
    };
    for (to, sent) in [("one@d.test", BODY), ("two@d.test", dots)] {
        let got = body_of(to);
        ensure!(
            !text(sent).is_empty() && text(&got) == text(sent),
            "{to}: {}",
            String::from_utf8_lossy(&got)
        );
    }
    ensure!(got.iter().all(|m| m.to != ["bad@d.test"]));
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Postfix smtp-sink

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

/// A running `smtp-sink` dumping each transaction into its own file; killed on drop.
struct SmtpSink {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl SmtpSink {
    async fn start(extra: &[&str]) -> anyhow::Result<SmtpSink> {
        ensure!(
            std::path::Path::new(SMTP_SINK).exists(),
            "{SMTP_SINK} not found: install the Debian package `postfix` (it ships smtp-sink)"
        );
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let dir =
            std::env::temp_dir().join(format!("baton-smtp-sink-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new(SMTP_SINK);
        if is_root() {
            // smtp-sink refuses to run as root without -u; nobody must be able to write dumps.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
            cmd.args(["-u", "nobody"]);
        }
        cmd.args(extra)
            .arg("-d")
            .arg(dir.join("msg."))
            .arg(addr.to_string())
            .arg("100")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = cmd.spawn().with_context(|| format!("spawn {SMTP_SINK}"))?;
        let mut sink = SmtpSink { child, addr, dir };
        sink.wait_listening().await?;
        Ok(sink)
    }

    /// Polls until the port accepts connections (the process gives no readiness signal).
    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let mut err = String::new();
                if let Some(mut stderr) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                }
                bail!("smtp-sink exited with {status}: {err}");
            }
            ensure!(
                Instant::now() < deadline,
                "smtp-sink did not listen on {}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Contents of every dump file written so far.
    fn dumps(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            out.push(std::fs::read_to_string(entry?.path())?);
        }
        Ok(out)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
}

async fn sink_connect(sink: &SmtpSink, config: &ClientConfig) -> Result<Connection, ClientError> {
    Connection::connect(sink.addr, "smtp-sink", config).await
}

#[tokio::test]
async fn smtp_sink_pipelined_delivery_and_reuse() -> anyhow::Result<()> {
    let sink = SmtpSink::start(&[]).await?;
    let mut conn = sink_connect(&sink, &client_config(TlsMode::Opportunistic)).await?;
    let caps = conn.capabilities().clone();
    ensure!(caps.pipelining && caps.dsn && caps.enhanced_status_codes && !caps.starttls);
    let mut msg = message("a@src.test", &["x@dst.test", "y@dst.test"], BODY);
    msg.ret = Some(baton_smtp_client::DsnRet::Headers);
    for _ in 0..3 {
        let result = conn.send(&msg).await?;
        ensure!(result.delivered(), "{result:?}");
        // Reused as a pooled connection is: the next transaction opens with RSET, pipelined
        // with its envelope.
        conn.mark_reused();
    }
    ensure!(conn.messages_sent() == 3);
    conn.quit().await;
    let dumps = sink.dumps()?;
    ensure!(dumps.len() == 3, "{} dumps", dumps.len());
    // smtp-sink stores lines with LF and undoes dot-stuffing.
    let body_lf = String::from_utf8_lossy(BODY).replace("\r\n", "\n");
    for dump in dumps {
        ensure!(
            dump.contains("X-Mail-Args: <a@src.test> RET=HDRS\n"),
            "{dump}"
        );
        ensure!(dump.contains("X-Rcpt-Args: <x@dst.test>\nX-Rcpt-Args: <y@dst.test>\n"));
        ensure!(dump.contains("X-Helo-Args: client.test\n"));
        ensure!(dump.ends_with(&format!("{body_lf}\n")), "{dump}");
    }
    Ok(())
}

#[tokio::test]
async fn smtp_sink_refused_recipients_lockstep() -> anyhow::Result<()> {
    // -f RCPT: every RCPT gets 500 5.3.0; it also turns PIPELINING off.
    let sink = SmtpSink::start(&["-f", "RCPT"]).await?;
    let mut conn = sink_connect(&sink, &client_config(TlsMode::Opportunistic)).await?;
    ensure!(!conn.capabilities().pipelining);
    let result = conn
        .send(&message("a@s.test", &["x@d.test", "y@d.test"], BODY))
        .await?;
    ensure!(result.data_reply.is_none() && result.rcpt_replies.iter().all(|r| r.is_permanent()));
    conn.quit().await;
    ensure!(
        sink.dumps()?.iter().all(|d| !d.contains("leading dot")),
        "no content expected"
    );
    Ok(())
}

#[tokio::test]
async fn smtp_sink_soft_reject_and_disconnect() -> anyhow::Result<()> {
    let sink = SmtpSink::start(&["-r", "."]).await?;
    let result = {
        let mut conn = sink_connect(&sink, &client_config(TlsMode::Opportunistic)).await?;
        conn.send(&message("a@s.test", &["x@d.test"], BODY)).await?
    };
    ensure!(!result.delivered());
    let data = result.data_reply.context("data reply")?;
    ensure!(data.is_transient(), "{data}");
    drop(sink);

    let sink = SmtpSink::start(&["-q", "."]).await?;
    let mut conn = sink_connect(&sink, &client_config(TlsMode::Opportunistic)).await?;
    let result = conn.send(&message("a@s.test", &["x@d.test"], BODY)).await;
    ensure!(
        result.is_err(),
        "a dropped connection must not count as delivered: {result:?}"
    );
    drop(sink);

    let sink = SmtpSink::start(&["-Q", "CONNECT"]).await?;
    match sink_connect(&sink, &client_config(TlsMode::Opportunistic)).await {
        Err(e @ ClientError::Greeting(_)) => ensure!(!e.is_permanent()),
        other => bail!("expected 421 greeting, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn smtp_sink_without_starttls_fails_required() -> anyhow::Result<()> {
    let sink = SmtpSink::start(&[]).await?;
    let result = sink_connect(&sink, &client_config(TlsMode::Required)).await;
    ensure!(
        matches!(result, Err(ClientError::TlsRequired)),
        "{result:?}"
    );
    Ok(())
}

/// A server that takes one message and closes the connection, as one whose idle timeout
/// expired while the connection waited in a pool.
async fn one_message_server() -> anyhow::Result<SocketAddr> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = socket.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 one.test ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            let _ = w.write_all(b"250 2.0.0 queued\r\n").await;
                            return;
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-one.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go ahead\r\n"
                        }
                        "QUIT" => b"221 2.0.0 bye\r\n",
                        _ => b"250 2.0.0 ok\r\n",
                    };
                    let _ = w.write_all(reply).await;
                }
            });
        }
    });
    Ok(addr)
}

/// A pooled connection the server has closed meanwhile: the transaction's opening RSET fails,
/// reported as `StaleConnection` (nothing of the message reached the server), and the
/// connection is unusable; a new one delivers.
#[tokio::test]
async fn a_reused_connection_the_server_closed_is_stale() -> anyhow::Result<()> {
    let addr = one_message_server().await?;
    let config = client_config(TlsMode::Disabled);
    let msg = message("a@s.test", &["b@d.test"], BODY);
    let mut conn = Connection::connect(addr, "one.test", &config).await?;
    ensure!(conn.capabilities().pipelining);
    ensure!(conn.send(&msg).await?.delivered());
    conn.mark_reused();
    match conn.send(&msg).await {
        Err(e @ ClientError::StaleConnection(_)) => ensure!(e.is_stale()),
        other => bail!("expected StaleConnection, got {other:?}"),
    }
    ensure!(matches!(conn.send(&msg).await, Err(ClientError::Unusable)));
    let mut fresh = Connection::connect(addr, "one.test", &config).await?;
    ensure!(fresh.send(&msg).await?.delivered());
    Ok(())
}
