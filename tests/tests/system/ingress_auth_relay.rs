//! Scenario: who may send, against a real `baton ingress` and `nats-server` — AUTH is never
//! offered or accepted before TLS (538 5.7.11), the submission ports require it (530 5.7.0,
//! "Must issue a STARTTLS command first" before TLS), a wrong password is 535 5.7.8 — logged
//! with client, listener and user name, never the password, and counted per listener — and
//! the right one lets the message through; a client outside
//! the RelayDomain's networks must AUTH on port 25 too (530 5.7.0), and an authorised client
//! may only use the senders its RelayDomain allows, whatever form the address takes
//! (550 5.7.1). Nothing refused is ever queued.

use baton_system_tests::config;
use baton_system_tests::harness::metric;
use baton_system_tests::hostile::{BODY, Env, advertises, expect};
use baton_system_tests::wire::Wire;

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `AUTH PLAIN` initial response for `user`/`pass`.
fn plain(user: &str, pass: &str) -> String {
    b64(&format!("\0{user}\0{pass}"))
}

/// MAIL, RCPT, DATA with [`BODY`]: the message must be accepted.
async fn send_ok(w: &mut Wire, from: &str) -> anyhow::Result<()> {
    expect(&w.cmd(&format!("MAIL FROM:<{from}>")).await?, 250, "2.1.0");
    expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 250, "2.1.5");
    expect(&w.cmd("DATA").await?, 354, "End");
    w.send(BODY.as_bytes()).await?;
    expect(&w.reply().await?, 250, "2.0.0");
    Ok(())
}

/// A submission session over STARTTLS, authenticated as `app`.
async fn authenticated(
    addr: std::net::SocketAddr,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> anyhow::Result<Wire> {
    let (mut w, _) = Wire::connect(addr).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("STARTTLS").await?, 220, "2.0.0");
    let mut w = w.handshake(tls).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    let auth = format!("AUTH PLAIN {}", plain("app", "secret"));
    expect(&w.cmd(&auth).await?, 235, "2.7.0");
    Ok(w)
}

#[tokio::test]
async fn auth_needs_tls_and_the_submission_ports_need_auth() -> anyhow::Result<()> {
    let env = Env::direct("baton-auth", &[]).await?;
    let tls = env.tls()?;

    // Relay port in plaintext: AUTH is neither offered nor accepted, the session goes on.
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    let ehlo = w.cmd("EHLO client.test").await?;
    assert!(!advertises(&ehlo, "AUTH"), "{ehlo:?}");
    let right = plain("app", "secret");
    expect(&w.cmd(&format!("AUTH PLAIN {right}")).await?, 538, "5.7.11");
    expect(&w.cmd("AUTH LOGIN").await?, 538, "5.7.11");
    expect(&w.cmd("NOOP").await?, 250, "2.0.0");
    expect(&w.cmd("STARTTLS").await?, 220, "2.0.0");
    let mut w = w.handshake(tls.clone()).await?;
    let ehlo = w.cmd("EHLO client.test").await?;
    assert!(advertises(&ehlo, "AUTH"), "{ehlo:?}");
    expect(&w.cmd(&format!("AUTH PLAIN {right}")).await?, 235, "2.7.0");
    assert_eq!(env.rejections(538, "5.7.11").await, 2.0);

    // Submission (587): MAIL needs AUTH, before and after STARTTLS.
    let (mut w, _) = Wire::connect(env.ing.submission).await?;
    let ehlo = w.cmd("EHLO client.test").await?;
    assert!(advertises(&ehlo, "STARTTLS") && !advertises(&ehlo, "AUTH"));
    let r = w.cmd("MAIL FROM:<app@example.com>").await?;
    expect(&r, 530, "5.7.0");
    assert!(
        r.text.ends_with("Must issue a STARTTLS command first"),
        "{r:?}"
    );
    expect(&w.cmd(&format!("AUTH PLAIN {right}")).await?, 538, "5.7.11");
    expect(&w.cmd("STARTTLS").await?, 220, "2.0.0");
    let mut w = w.handshake(tls.clone()).await?;
    let ehlo = w.cmd("EHLO client.test").await?;
    assert!(advertises(&ehlo, "AUTH"));
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 530, "5.7.0");
    let wrong = plain("app", "wrong");
    expect(&w.cmd(&format!("AUTH PLAIN {wrong}")).await?, 535, "5.7.8");
    expect(
        &w.cmd(&format!("AUTH PLAIN {}", plain("nobody", "secret")))
            .await?,
        535,
        "5.7.8",
    );
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 530, "5.7.0");
    // Each failure is logged (client, listener, user name as given — never the password)
    // and counted per listener.
    let log = env.log();
    let failures: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SMTP AUTH failed"))
        .collect();
    assert_eq!(failures.len(), 2, "{log}");
    for (line, user) in failures.iter().zip(["app", "nobody"]) {
        for want in ["client=127.0.0.1", "listener=\"submission\"", user] {
            assert!(line.contains(want), "{want} not in {line}");
        }
        assert!(
            !line.contains("wrong") && !line.contains("secret"),
            "{line}"
        );
    }
    let failed = "baton_ingress_auth_total{listener=\"submission\",result=\"failed\"}";
    assert_eq!(metric(env.ing.metrics, failed).await, 2.0);
    // AUTH LOGIN with the right password.
    expect(&w.cmd("AUTH LOGIN").await?, 334, "VXNlcm5hbWU6");
    expect(&w.cmd(&b64("app")).await?, 334, "UGFzc3dvcmQ6");
    expect(&w.cmd(&b64("secret")).await?, 235, "2.7.0");
    send_ok(&mut w, "app@example.com").await?;
    assert_eq!(env.queued().await?, 1);
    assert_eq!(env.stored(1).await?.authenticated_as, "app");

    // Implicit TLS (465) is a submission port too: AUTH first, even from an allowed network.
    let (mut w, _) = Wire::connect_tls(env.ing.smtps, tls).await?;
    assert!(advertises(&w.cmd("EHLO client.test").await?, "AUTH"));
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 530, "5.7.0");
    expect(&w.cmd(&format!("AUTH PLAIN {right}")).await?, 235, "2.7.0");
    send_ok(&mut w, "app@example.com").await?;

    assert_eq!(env.queued().await?, 2);
    assert_eq!(env.rejections(535, "5.7.8").await, 2.0);
    assert_eq!(env.rejections(530, "5.7.0").await, 4.0);
    let ok = |l: &str| format!("baton_ingress_auth_total{{listener=\"{l}\",result=\"ok\"}}");
    assert_eq!(metric(env.ing.metrics, &ok("smtp")).await, 1.0);
    assert_eq!(metric(env.ing.metrics, &ok("submission")).await, 1.0);
    assert_eq!(metric(env.ing.metrics, &ok("smtps")).await, 1.0);
    // Written to a file, not a terminal: no ANSI colour codes.
    assert!(!env.log().contains('\x1b'), "{}", env.log());
    Ok(())
}

#[tokio::test]
async fn clients_outside_the_networks_must_auth_on_port_25() -> anyhow::Result<()> {
    let env = Env::start("baton-authonly", &config::auth_only(2500), &[]).await?;
    let (mut w, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 530, "5.7.0");
    expect(&w.cmd("MAIL FROM:<>").await?, 530, "5.7.0");
    expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 503, "5.5.1");
    expect(&w.cmd("DATA").await?, 503, "5.5.1");
    assert_eq!(env.queued().await?, 0);
    assert_eq!(env.rejections(530, "5.7.0").await, 2.0);
    // The same session, once over TLS and authenticated, may send.
    expect(&w.cmd("STARTTLS").await?, 220, "2.0.0");
    let mut w = w.handshake(env.tls()?).await?;
    assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
    expect(&w.cmd("MAIL FROM:<app@example.com>").await?, 530, "5.7.0");
    let auth = format!("AUTH PLAIN {}", plain("app", "secret"));
    expect(&w.cmd(&auth).await?, 235, "2.7.0");
    send_ok(&mut w, "app@example.com").await?;
    assert_eq!(env.queued().await?, 1);
    Ok(())
}

#[tokio::test]
async fn authorised_clients_may_not_use_senders_outside_their_domain() -> anyhow::Result<()> {
    let env = Env::direct("baton-senders", &[]).await?;
    let tls = env.tls()?;
    let senders = [
        "x@evil.test",
        "x@example.com.evil.test",
        "x@evilexample.com",
        "\"x@example.com\"@evil.test",
        "\"x@evil\"@evil.test",
        "x%evil.test@evil.test",
        "x%example.com@evil.test",
        "@example.com:x@evil.test",
        "x@[127.0.0.1]",
    ];
    // By network (port 25) and by AUTH (587), a fresh session per sender (the error cap).
    for sender in senders {
        let (mut relay, _) = Wire::connect(env.ing.smtp).await?;
        assert_eq!(relay.cmd("EHLO client.test").await?.code, 250);
        let mut sub = authenticated(env.ing.submission, tls.clone()).await?;
        for w in [&mut relay, &mut sub] {
            let r = w.cmd(&format!("MAIL FROM:<{sender}>")).await?;
            assert!(
                r.code == 550 && r.text.starts_with("5.7.1 "),
                "{sender}: {r:?}"
            );
            // No transaction was opened, and the session goes on.
            expect(&w.cmd("RCPT TO:<x@dest.test>").await?, 503, "5.5.1");
            expect(&w.cmd("NOOP").await?, 250, "2.0.0");
        }
    }
    // The allowed sender (in any case) is accepted on both.
    let (mut relay, _) = Wire::connect(env.ing.smtp).await?;
    assert_eq!(relay.cmd("EHLO client.test").await?.code, 250);
    send_ok(&mut relay, "App@EXAMPLE.com").await?;
    let mut sub = authenticated(env.ing.submission, tls).await?;
    send_ok(&mut sub, "app@example.com").await?;
    assert_eq!(env.queued().await?, 2, "only the two allowed messages");
    assert_eq!(
        env.rejections(550, "5.7.1").await,
        2.0 * senders.len() as f64
    );
    Ok(())
}

/// A credential speaks only for the RelayDomain whose Secret it came from. Team B's
/// RelayDomain (`other.example`) has a user `app` too, with its own password: AUTH with team
/// B's password succeeds, and then sending as team A's `example.com` is refused (550 5.7.1)
/// while `other.example` is accepted; team A's password still sends as `example.com`.
#[tokio::test]
async fn a_credential_authorises_only_the_relay_domain_it_belongs_to() -> anyhow::Result<()> {
    let team_b = "---
apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {name: other, namespace: team-b}
spec:
  domain: other.example
  pool: test
  allowedSenders: [\"*@other.example\"]
  submission:
    networks: [10.98.0.0/16]
    credentials: [{secretRef: {name: b-smtp}}]
---
apiVersion: v1
kind: Secret
metadata: {name: b-smtp, namespace: team-b}
type: kubernetes.io/basic-auth
stringData: {username: app, password: team-b-secret}
";
    let yaml = format!("{}{team_b}", config::auth_only(2500));
    let env = Env::start("baton-cred-scope", &yaml, &[]).await?;
    let session = |pass: &'static str| {
        let tls = env.tls();
        let addr = env.ing.submission;
        async move {
            let (mut w, _) = Wire::connect(addr).await?;
            assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
            expect(&w.cmd("STARTTLS").await?, 220, "2.0.0");
            let mut w = w.handshake(tls?).await?;
            assert_eq!(w.cmd("EHLO client.test").await?.code, 250);
            expect(
                &w.cmd(&format!("AUTH PLAIN {}", plain("app", pass))).await?,
                235,
                "2.7.0",
            );
            anyhow::Ok(w)
        }
    };
    let mut b = session("team-b-secret").await?;
    let r = b.cmd("MAIL FROM:<app@example.com>").await?;
    assert!(r.code == 550 && r.text.starts_with("5.7.1 "), "{r:?}");
    expect(&b.cmd("MAIL FROM:<app@other.example>").await?, 250, "2.1.0");
    expect(&b.cmd("RCPT TO:<x@dest.test>").await?, 250, "2.1.5");
    expect(&b.cmd("DATA").await?, 354, "End");
    b.send(BODY.replace("example.com", "other.example").as_bytes())
        .await?;
    expect(&b.reply().await?, 250, "2.0.0");
    let mut a = session("secret").await?;
    send_ok(&mut a, "app@example.com").await?;
    let r = a.cmd("MAIL FROM:<app@other.example>").await?;
    assert!(r.code == 550 && r.text.starts_with("5.7.1 "), "{r:?}");
    assert_eq!(env.queued().await?, 2);
    Ok(())
}
