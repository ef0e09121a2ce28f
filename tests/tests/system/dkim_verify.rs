//! Scenario: messages relayed end to end (real `baton ingress` and `baton worker`, delivery by
//! MX to a receiver) leave DKIM-signed, and the independent verifier dkimpy accepts every
//! signature against the keys published — as `baton dns-records` prints them — by a real DNS
//! server on loopback: RSA-2048, Ed25519 (with `x=`), and dual signing during a rotation; for
//! 8-bit bodies, long lines, folded headers, dot-leading lines and an empty body. A modified
//! body fails verification, and a `From:` that does not align is refused with `550 5.7.1` —
//! as is any body with a second author outside the domain (two `From:` fields, a list, a
//! group, glued addresses, a `Sender:`), while several aligned authors are signed.

use std::time::Duration;

use baton_system_tests::dkim::{Verdict, dkimpy_verify, dns_records, key_secret, openssl_key};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, free_port, write_config,
};
use baton_system_tests::receiver::{ReceivedMessage, Receiver, ReceiverConfig};

/// The RelayDomains under test: (domain, expected signatures as `(d, s)`, primary first).
const DOMAINS: &[(&str, &[&str])] = &[
    ("example.com", &["rsa2026"]),
    ("example.net", &["ed2026"]),
    ("example.org", &["new", "old"]),
];

fn config(port: u16, rsa: &str, ed: &str) -> String {
    let pool = format!(
        r#"apiVersion: baton.dev/v1alpha1
kind: SendingPool
metadata: {{name: test}}
spec:
  delivery: {{mode: Direct, port: {port}, allowedNetworks: [127.0.0.0/8]}}
  egress: [{{ehloName: out.baton.test, weight: 1}}]
  tls: {{policy: Disabled}}
  retry: {{schedule: [1s], maxAge: 1h}}
"#
    );
    let domain = |name: &str, domain: &str, dkim: &str| {
        format!(
            r#"apiVersion: baton.dev/v1alpha1
kind: RelayDomain
metadata: {{name: {name}, namespace: team-a}}
spec:
  domain: {domain}
  pool: test
  allowedSenders: ["*@{domain}"]
  submission: {{networks: [127.0.0.0/8]}}
  dkim:
{dkim}"#
        )
    };
    let docs = [
        pool,
        domain(
            "rsa",
            "example.com",
            "    selector: rsa2026\n    algorithm: rsa-sha256\n    keySecretRef: {name: dkim-rsa}\n",
        ),
        domain(
            "ed",
            "example.net",
            "    selector: ed2026\n    algorithm: ed25519-sha256\n    keySecretRef: {name: dkim-ed}\n    expireAfter: 7d\n",
        ),
        domain(
            "rotation",
            "example.org",
            "    selector: new\n    algorithm: ed25519-sha256\n    keySecretRef: {name: dkim-ed}\n    additionalKeys:\n    - {selector: old, algorithm: rsa-sha256, keySecretRef: {name: dkim-rsa}}\n",
        ),
        key_secret("team-a", "dkim-rsa", rsa),
        key_secret("team-a", "dkim-ed", ed),
    ];
    docs.join("---\n")
}

/// Message shapes that stress canonicalization, for sender domain `d`.
fn messages(d: &str) -> Vec<(String, Vec<u8>)> {
    let head = |subject: &str, extra: &str| {
        format!(
            "From: App <app@{d}>\r\nTo: user@dest.test\r\nSubject: {subject}\r\n\
             Date: Tue, 03 Mar 2026 14:05:09 +0000\r\nMessage-ID: <{subject}@{d}>\r\n{extra}\r\n"
        )
        .into_bytes()
    };
    let mut eight_bit = head(
        "eightbit",
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n",
    );
    eight_bit.extend_from_slice(
        "Grüße aus Köln — ünïcödé 日本語\r\n\tTabbed  and   spaced \r\n\r\n\r\n".as_bytes(),
    );
    eight_bit.extend_from_slice(b"raw high bytes: \xe9\xe8\xff\r\n");

    let mut long = head("longlines", "");
    long.extend_from_slice(&[b'x'; 998]);
    long.extend_from_slice(b"\r\n");
    for i in 0..200 {
        long.extend_from_slice(format!("{i:04} {}  \r\n", "word ".repeat(190)).as_bytes());
    }

    let mut folded = format!(
        "From: \"App, Team\"\r\n <app@{d}>\r\nTo: a@dest.test,\r\n  b@dest.test,\r\n\tc@dest.test\r\n\
         Subject: a subject folded\r\n  over three\r\n\tlines\r\nMessage-ID:\r\n <folded@{d}>\r\n\
         Date: Tue, 03 Mar 2026 14:05:09 +0000\r\nX-Long: {}\r\n\r\n",
        "y".repeat(200)
    )
    .into_bytes();
    folded.extend_from_slice(b"body\r\n.leading dot\r\n..two dots\r\n.\r\n");

    let empty = head("empty", "");
    // Several authors, all in the domain, with the Sender: RFC 5322 then requires.
    let authors = format!(
        "From: App <app@{d}>, \"Ops, Team\" <ops@{d}>\r\nSender: app@{d}\r\nTo: user@dest.test\r\n\
         Subject: authors\r\nDate: Tue, 03 Mar 2026 14:05:09 +0000\r\nMessage-ID: <authors@{d}>\r\n\r\nx\r\n"
    )
    .into_bytes();
    vec![
        ("eightbit".into(), eight_bit),
        ("longlines".into(), long),
        ("folded".into(), folded),
        ("empty".into(), empty),
        ("authors".into(), authors),
    ]
}

async fn submit(ing: &Ingress, from: &str, body: &[u8]) -> anyhow::Result<u16> {
    let cfg = baton_smtp_client::ClientConfig::new("client.test");
    let mut c = baton_smtp_client::Connection::connect(ing.smtp, "localhost", &cfg).await?;
    let r = c
        .send(&baton_smtp_client::OutgoingMessage {
            reverse_path: from,
            recipients: vec![baton_smtp_client::OutgoingRecipient {
                address: "user@dest.test",
                notify: None,
                orcpt: None,
            }],
            body,
            smtputf8: false,
            eight_bit: !body.is_ascii(),
            ret: None,
            envid: None,
        })
        .await?;
    c.quit().await;
    r.data_reply
        .as_ref()
        .map(|d| d.code)
        .ok_or_else(|| anyhow::anyhow!("no DATA reply: {r:?}"))
}

fn subject_of(m: &ReceivedMessage) -> String {
    let text = String::from_utf8_lossy(&m.body);
    let at = text.find("\r\nMessage-ID:").unwrap_or(0);
    text[at..]
        .split('<')
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn relayed_mail_verifies_with_dkimpy_against_published_keys() -> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-dkim")?;
    let (rsa, ed) = (openssl_key("rsa")?, openssl_key("ed25519")?);
    let port = free_port()?;
    let cfg_path = write_config(&dir.0, "c.yaml", &config(port, &rsa, &ed))?;

    // Publish exactly what `baton dns-records` tells the platform team to publish.
    let records = dns_records(&cfg_path)?;
    let dkim_records: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r.rtype == "TXT" && r.name.contains("._domainkey."))
        .map(|r| (r.name.as_str(), r.value.as_str()))
        .collect();
    assert_eq!(dkim_records.len(), 4, "{records:?}");
    assert!(
        dkim_records
            .iter()
            .any(|(n, v)| *n == "rsa2026._domainkey.example.com" && v.len() > 255),
        "an RSA-2048 record needs more than one character-string: {records:?}"
    );
    let dns = Dns::start_records(
        &[("dest.test", "mx.dest.test", 10)],
        &[("mx.dest.test", "127.0.0.1")],
        &dkim_records,
        &["test", "com", "net", "org"],
    )
    .await?;

    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let nats = Nats::start().await?;
    apply_config(&nats, &cfg_path)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let _w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &[]).await?;

    // A From: outside the RelayDomain is refused at the end of DATA, nothing is queued.
    let unaligned = b"From: ceo@evil.test\r\nTo: user@dest.test\r\nSubject: x\r\n\r\nx\r\n";
    assert_eq!(submit(&ing, "app@example.com", unaligned).await?, 550);
    // So is every way of slipping a second author past a first-address check (issue 12).
    for from in [
        "From: app@example.com\r\nFrom: boss@bank.example",
        "From: app@example.com, boss@bank.example",
        "From: grp: app@example.com, boss@bank.example;",
        "From: <boss@bank.example> <app@example.com>",
        "From: app@example.com, boss@bank.example\r\nSender: app@example.com",
        "From: app@example.com\r\nSender: boss@bank.example",
    ] {
        let body = format!("{from}\r\nTo: user@dest.test\r\nSubject: x\r\n\r\nx\r\n");
        let code = submit(&ing, "app@example.com", body.as_bytes()).await?;
        assert_eq!(code, 550, "{from}");
    }

    let mut sent = 0;
    for (domain, _) in DOMAINS {
        for (_, body) in messages(domain) {
            let code = submit(&ing, &format!("app@{domain}"), &body).await?;
            assert_eq!(code, 250, "{domain}");
            sent += 1;
        }
    }
    let got = receiver
        .wait_for_messages(sent, Duration::from_secs(60))
        .await?;
    assert_eq!(got.len(), sent, "the refused message was not delivered");

    for m in &got {
        let domain = m
            .from
            .trim_matches(['<', '>'])
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .to_string();
        let selectors = DOMAINS
            .iter()
            .find(|(d, _)| *d == domain)
            .map(|(_, s)| *s)
            .unwrap_or_default();
        let verdicts = dkimpy_verify(&m.body, dns.addr)?;
        let want: Vec<Verdict> = selectors
            .iter()
            .map(|s| Verdict {
                domain: domain.clone(),
                selector: s.to_string(),
                ok: true,
                error: String::new(),
            })
            .collect();
        assert_eq!(
            verdicts,
            want,
            "{} from {domain}:\n{}",
            subject_of(m),
            String::from_utf8_lossy(&m.body)
        );
        if domain == "example.net" {
            assert!(
                String::from_utf8_lossy(&m.body)
                    .replace("\r\n\t", " ")
                    .contains(" x="),
                "expireAfter sets x="
            );
        }

        // One changed body byte breaks every signature.
        let mut tampered = m.body.clone();
        let body_at = tampered
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(tampered.len());
        if body_at < tampered.len() {
            tampered[body_at] ^= 0x01;
        } else {
            tampered.extend_from_slice(b"appended\r\n");
        }
        let verdicts = dkimpy_verify(&tampered, dns.addr)?;
        assert_eq!(verdicts.len(), selectors.len());
        assert!(
            verdicts.iter().all(|v| !v.ok),
            "tampered {} from {domain} must fail: {verdicts:?}",
            subject_of(m)
        );
    }
    Ok(())
}
