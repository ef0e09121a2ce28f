//! Scenario: outbound content filtering (issue 19) with the real scanners from Debian — a
//! private `rspamd` and a private `clamd` with a local EICAR signature (`scanners`) — behind
//! real `baton ingress` and `baton worker` processes:
//! - **verdicts**: GTUBE is refused through rspamd and EICAR through clamd with `550 5.7.1` in
//!   the DATA reply, and neither is delivered; a clean message passes with rspamd's headers
//!   (Baton's `X-Spam-Status`, rspamd's milter `X-Spamd-Bar`), the RelayDomain's header policy
//!   applied (internal `X-Internal-*` and `Received:` fields gone, `List-Unsubscribe` added)
//!   and a DKIM signature that dkimpy verifies over the final headers; the verdicts are
//!   counted per filter;
//! - **quarantine** (over the production NATS authorization): a message clamd quarantines is
//!   answered `250`, stored in `baton.quarantine.<pool>` and not delivered — a clean message
//!   sent after it is, and the held-mail sweep run by a hold release leaves it alone — until
//!   `baton queue quarantine release` moves it, then it is delivered exactly once and the
//!   queue is empty;
//! - **failure modes**: a stopped clamd gives `451 4.7.1` under `failureMode: Closed`, a clamd
//!   that never answers the same within the filter's timeout, and under `failureMode: Open`
//!   the message is delivered unscanned (counted as `failed`).

use std::time::Duration;

use baton_system_tests::admin::Admin;
use baton_system_tests::config::direct;
use baton_system_tests::delivery::header;
use baton_system_tests::dkim::{dkimpy_verify, dns_records, key_secret, openssl_key};
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, metric,
    write_config,
};
use baton_system_tests::nats_users::{ingress_and_worker, login, secured_nats, strs};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};
use baton_system_tests::scanners::{self, EICAR, GTUBE};
use baton_system_tests::smtp::{Reply, Talk};

const WAIT: Duration = Duration::from_secs(60);

/// One transaction with `content` (CRLF lines, no leading dots) on a fresh connection; the
/// reply to the end of DATA.
async fn send(
    ingress: std::net::SocketAddr,
    subject: &str,
    extra: &str,
    body: &str,
) -> anyhow::Result<Reply> {
    let (mut t, greeting) = Talk::connect(ingress).await?;
    anyhow::ensure!(greeting.code == 220, "greeting {greeting:?}");
    for (cmd, want) in [
        ("EHLO client.test", 250),
        ("MAIL FROM:<app@example.com>", 250),
        ("RCPT TO:<user@dest.test>", 250),
        ("DATA", 354),
    ] {
        let r = t.cmd(cmd).await?;
        anyhow::ensure!(r.code == want, "{cmd}: {r:?}");
    }
    let content = format!(
        "From: App <app@example.com>\r\nTo: <user@dest.test>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@example.com>\r\nDate: Fri, 04 Dec 2026 16:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n{extra}\r\n{body}\r\n"
    );
    t.send(content.as_bytes()).await?;
    let r = t.cmd(".").await?;
    let _ = t.cmd("QUIT").await;
    Ok(r)
}

fn delivered(r: &Receiver, subject: &str) -> usize {
    r.messages()
        .iter()
        .filter(|m| header(&m.body, "Subject").as_deref() == Some(subject))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanners_refuse_spam_and_viruses_and_clean_mail_leaves_edited_and_signed()
-> anyhow::Result<()> {
    baton_system_tests::tls::install_crypto_provider();
    let dir = TempDir::new("baton-filter")?;
    let (rspamd, clamd) = (scanners::rspamd().await?, scanners::clamd().await?);
    let ed = openssl_key("ed25519")?;
    let port = free_port()?;
    let cfg = direct(port, "[1s]", "1h")
        .replace(
            "  retry: {schedule: [1s], maxAge: 1h}\n",
            &format!(
                "  retry: {{schedule: [1s], maxAge: 1h}}\n  contentFilters:\n\
                 \x20 - {{name: spam, rspamd: {{url: '{}'}}, timeout: 60s}}\n\
                 \x20 - {{name: av, clamd: {{address: '{}'}}, timeout: 60s}}\n",
                rspamd.address, clamd.address
            ),
        )
        .replace(
            "  allowedSenders: [\"*@example.com\"]\n",
            "  allowedSenders: [\"*@example.com\"]\n  dkim: {selector: ed2026, algorithm: ed25519-sha256, keySecretRef: {name: dkim-ed}}\n\
             \x20 headers:\n\
             \x20   remove: [X-Internal-*]\n\
             \x20   removeReceived: true\n\
             \x20   add: [{name: List-Unsubscribe, value: '<mailto:unsubscribe@example.com>'}]\n",
        );
    let cfg = format!("{cfg}---\n{}", key_secret("team-a", "dkim-ed", &ed));
    let cfg_path = write_config(&dir.0, "c.yaml", &cfg)?;
    let records = dns_records(&cfg_path)?;
    let dkim: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r.rtype == "TXT" && r.name.contains("._domainkey."))
        .map(|r| (r.name.as_str(), r.value.as_str()))
        .collect();
    let dns = Dns::start_records(
        &[("dest.test", "mx.dest.test", 10)],
        &[("mx.dest.test", "127.0.0.1")],
        &dkim,
        &["test", "com"],
    )
    .await?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let nats = Nats::start().await?;
    apply_config(&nats, &cfg_path)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let _w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &[]).await?;

    let r = send(ing.smtp, "gtube", "", &format!("Hello,\r\n{GTUBE}\r\nBye")).await?;
    assert_eq!(
        (r.code, r.text.as_str()),
        (550, "5.7.1 Gtube pattern"),
        "{r:?}"
    );
    let r = send(ing.smtp, "eicar", "", EICAR).await?;
    assert_eq!(r.code, 550, "{r:?}\n{}", clamd.logs());
    assert!(r.text.starts_with("5.7.1 "), "{r:?}");
    assert!(
        !r.text.contains("Baton.Test"),
        "no signature name to the client: {r:?}"
    );

    let internal = "Received: from app-7d9c.inner.corp (10.1.2.3) by gw.inner.corp\r\n\tfor <user@dest.test>; Fri, 4 Dec 2026 16:00:00 +0000\r\n\
                    X-Internal-Route: cluster-a\r\nX-Internal-Ticket: 42\r\n";
    let r = send(ing.smtp, "clean", internal, "Lunch tomorrow at noon?").await?;
    assert_eq!(r.code, 250, "{r:?}");
    let got = receiver.wait_for_messages(1, WAIT).await?;
    let m = &got[0];
    let text = String::from_utf8_lossy(&m.body);
    assert_eq!(
        header(&m.body, "Subject").as_deref(),
        Some("clean"),
        "{text}"
    );
    assert!(
        !text.contains("X-Internal-") && !text.contains("inner.corp"),
        "{text}"
    );
    assert_eq!(
        header(&m.body, "List-Unsubscribe").as_deref(),
        Some("<mailto:unsubscribe@example.com>")
    );
    assert!(
        header(&m.body, "X-Spam-Status").is_some_and(|v| v.starts_with("No, score=")),
        "{text}"
    );
    assert!(
        header(&m.body, "X-Spamd-Bar").is_some(),
        "rspamd's milter header: {text}"
    );
    let verdicts = dkimpy_verify(&m.body, dns.addr)?;
    assert!(
        verdicts.len() == 1 && verdicts[0].ok,
        "{verdicts:?}\n{text}"
    );
    // RFC 8058: the List-Unsubscribe the header policy added is covered by the signature.
    let signed_names = header(&m.body, "DKIM-Signature")
        .and_then(|v| {
            let v: String = v.split_whitespace().collect();
            v.split("h=")
                .nth(1)
                .and_then(|h| h.split(';').next())
                .map(str::to_ascii_lowercase)
        })
        .unwrap_or_default();
    assert!(
        signed_names.split(':').any(|n| n == "list-unsubscribe"),
        "h= {signed_names}"
    );

    let im = ing.metrics;
    for (series, want) in [
        (
            "baton_filter_verdicts_total{filter=\"spam\",verdict=\"reject\"}",
            1.0,
        ),
        (
            "baton_filter_verdicts_total{filter=\"spam\",verdict=\"accept\"}",
            2.0,
        ),
        (
            "baton_filter_verdicts_total{filter=\"av\",verdict=\"reject\"}",
            1.0,
        ),
        (
            "baton_filter_verdicts_total{filter=\"av\",verdict=\"accept\"}",
            1.0,
        ),
        ("baton_filter_duration_seconds_count{filter=\"spam\"}", 3.0),
    ] {
        assert_eq!(metric(im, series).await, want, "{series}");
    }
    // Nothing refused was delivered meanwhile.
    assert_eq!(
        (delivered(&receiver, "gtube"), delivered(&receiver, "eicar")),
        (0, 0)
    );
    assert_eq!(receiver.messages().len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantined_mail_waits_until_released_then_is_delivered_once() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-quarantine")?;
    let users = dir.0.join("users");
    let clamd = scanners::clamd().await?;
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_test().await?;
    let cfg = direct(port, "[1s]", "1h").replace(
        "  retry: {schedule: [1s], maxAge: 1h}\n",
        &format!(
            "  retry: {{schedule: [1s], maxAge: 1h}}\n  contentFilters:\n\
             \x20 - {{name: av, clamd: {{address: '{}', quarantine: true}}, timeout: 60s}}\n",
            clamd.address
        ),
    );
    let cfg = write_config(&dir.0, "c.yaml", &cfg)?;
    let nats = secured_nats(&cfg, &users, &[]).await?;
    let (ing, _w) = ingress_and_worker(&nats, &dir.0, &users, "test", Some(dns.addr)).await?;
    let api = Admin::start(&nats.url, &dir.0, &strs(&login(&users, "admin"))).await?;
    let ops = api.token(&dir.0, "ops", "admin", &[])?;

    let r = send(ing.smtp, "infected", "", EICAR).await?;
    assert_eq!(r.code, 250, "the sender is not told: {r:?}");
    let queue_id = r.text.rsplit(' ').next().unwrap_or_default().to_owned();
    // A clean message sent afterwards is delivered: the worker runs, and skips the quarantine.
    let r = send(ing.smtp, "clean-after", "", "hello").await?;
    assert_eq!(r.code, 250, "{r:?}");
    let clean_id = r.text.rsplit(' ').next().unwrap_or_default().to_owned();
    let rc = &receiver;
    assert_eventually(WAIT, "the clean message delivered", || async move {
        delivered(rc, "clean-after") == 1
    })
    .await?;
    assert_eq!(delivered(&receiver, "infected"), 0);
    let q = api.queue_json(&ops, &["quarantine", "list"])?;
    let listed = q["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(listed.len(), 1, "{q}");
    assert_eq!(listed[0]["queueId"], queue_id.as_str(), "{q}");
    assert_eq!(listed[0]["place"], "quarantine", "{q}");
    let all = api.queue_json(&ops, &["list", "--place", "quarantine"])?;
    assert_eq!(all["messages"].as_array().map(Vec::len), Some(1), "{all}");
    assert_eq!(
        metric(ing.metrics, "baton_quarantined_total{pool=\"test\"}").await,
        1.0
    );
    assert_eq!(
        metric(
            ing.metrics,
            "baton_filter_verdicts_total{filter=\"av\",verdict=\"quarantine\"}"
        )
        .await,
        1.0
    );

    // A hold release runs the held-mail sweep at once: the quarantine is not its business.
    api.queue_json(&ops, &["hold", "--message", &clean_id, "--reason", "t"])?;
    api.queue_json(&ops, &["release", "--message", &clean_id])?;
    let q = api.queue_json(&ops, &["quarantine", "list"])?;
    assert_eq!(q["messages"].as_array().map(Vec::len), Some(1), "{q}");
    assert_eq!(delivered(&receiver, "infected"), 0);

    let released = api.queue_json(&ops, &["quarantine", "release", &queue_id])?;
    assert_eq!(released["matched"], 1, "{released}");
    assert_eventually(WAIT, "the released message delivered", || async move {
        delivered(rc, "infected") == 1
    })
    .await?;
    let (a, t) = (&api, &ops);
    assert_eventually(WAIT, "the queue is empty", || async move {
        a.queue_json(t, &["list"])
            .is_ok_and(|v| v["messages"].as_array().is_none_or(Vec::is_empty))
    })
    .await?;
    assert_eq!(delivered(&receiver, "infected"), 1, "exactly once");
    let q = api.queue_json(&ops, &["quarantine", "list"])?;
    assert_eq!(
        q["messages"].as_array().map(Vec::len).unwrap_or(0),
        0,
        "{q}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_or_silent_scanner_fails_closed_or_open() -> anyhow::Result<()> {
    let dir = TempDir::new("baton-filter-fail")?;
    let mut clamd = scanners::clamd().await?;
    let stopped = clamd.address.clone();
    clamd.stop();
    assert!(!scanners::clamd_ping(&stopped).await, "clamd stopped");
    // A "clamd" that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let silent_addr = silent.local_addr()?.to_string();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });

    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_test().await?;
    let config = |address: &str, mode: &str| {
        direct(port, "[1s]", "1h").replace(
            "  retry: {schedule: [1s], maxAge: 1h}\n",
            &format!(
                "  retry: {{schedule: [1s], maxAge: 1h}}\n  contentFilters:\n\
                 \x20 - {{name: av, clamd: {{address: '{address}'}}, timeout: 2s, failureMode: {mode}}}\n"
            ),
        )
    };
    let cfg = write_config(&dir.0, "closed.yaml", &config(&stopped, "Closed"))?;
    let nats = Nats::start().await?;
    apply_config(&nats, &cfg)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let _w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &[]).await?;

    let r = send(ing.smtp, "closed-stopped", "", "hello").await?;
    assert_eq!(r.code, 451, "{r:?}");
    assert!(r.text.starts_with("4.7.1 "), "{r:?}");

    let generation = |m| async move { metric(m, "baton_config_generation").await };
    let im = ing.metrics;
    let applied = |path: std::path::PathBuf, before: f64| {
        let nats = &nats;
        async move {
            apply_config(nats, &path)?;
            assert_eventually(WAIT, "the ingress took the new snapshot", || async move {
                generation(im).await > before
            })
            .await
        }
    };
    let g = generation(im).await;
    applied(
        write_config(&dir.0, "silent.yaml", &config(&silent_addr, "Closed"))?,
        g,
    )
    .await?;
    let r = send(ing.smtp, "closed-silent", "", "hello").await?;
    assert_eq!(r.code, 451, "answered within the 2s timeout: {r:?}");

    let g = generation(im).await;
    applied(
        write_config(&dir.0, "open.yaml", &config(&stopped, "Open"))?,
        g,
    )
    .await?;
    let r = send(ing.smtp, "open-stopped", "", "hello").await?;
    assert_eq!(r.code, 250, "{r:?}");
    let rc = &receiver;
    assert_eventually(WAIT, "the fail-open message delivered", || async move {
        delivered(rc, "open-stopped") == 1
    })
    .await?;
    assert_eq!(
        (
            delivered(&receiver, "closed-stopped"),
            delivered(&receiver, "closed-silent")
        ),
        (0, 0)
    );
    assert_eq!(
        metric(
            im,
            "baton_filter_verdicts_total{filter=\"av\",verdict=\"failed\"}"
        )
        .await,
        3.0
    );
    hold.abort();
    Ok(())
}
