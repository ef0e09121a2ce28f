//! Scenario: the generic gRPC content filter (issue 19) through real `baton ingress` and
//! `baton worker` processes, against a real `baton.v1.Filter` service in another language: the
//! Python grpcio server of `crates/baton-filter`'s tests (`scanners::grpc_filter`, its stubs
//! generated at start by grpcio-tools from `proto/baton/v1/filter.proto`), configured as the
//! `grpc` content filter of the SendingPool:
//! - a message the filter **rejects** gets `550 5.7.1` with the filter's (cleaned, one-line)
//!   text in the DATA reply and is neither queued nor delivered;
//! - a message it **tempfails** gets `451 4.7.1` with its text and is not queued;
//! - a message it **accepts** is queued and delivered with the filter's header edits
//!   (`X-Filter-Checked` added — its echo shows the SMTP context and the queue id arrived —
//!   and `X-Internal-Route` removed);
//! - with the filter **stopped**, `failureMode: Closed` answers `451 4.7.1` (within the
//!   filter's 5 s timeout, below the client's 10 s reply timeout), and after the pool is
//!   re-applied with `failureMode: Open` the message is accepted and delivered unscanned; both
//!   are counted as `failed` in `baton_filter_verdicts_total`.

use std::time::Duration;

use baton_system_tests::config::direct;
use baton_system_tests::delivery::header;
use baton_system_tests::harness::{
    Dns, Ingress, Nats, TempDir, Worker, apply_config, assert_eventually, free_port, metric,
    write_config,
};
use baton_system_tests::receiver::{Receiver, ReceiverConfig};
use baton_system_tests::scanners;
use baton_system_tests::smtp::{Reply, Talk};

const WAIT: Duration = Duration::from_secs(60);

/// One transaction on a fresh connection with `extra` header lines and `body`; the reply to
/// the end of DATA.
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

/// The pool `test` with one `grpc` content filter at `endpoint`.
fn config(port: u16, endpoint: &str, mode: &str) -> String {
    direct(port, "[1s]", "1h").replace(
        "  retry: {schedule: [1s], maxAge: 1h}\n",
        &format!(
            "  retry: {{schedule: [1s], maxAge: 1h}}\n  contentFilters:\n\
             \x20 - {{name: policy, grpc: {{endpoint: '{endpoint}'}}, timeout: 5s, failureMode: {mode}}}\n"
        ),
    )
}

fn verdicts(verdict: &str) -> String {
    format!("baton_filter_verdicts_total{{filter=\"policy\",verdict=\"{verdict}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_filter_rejects_tempfails_edits_and_fails_closed_or_open() -> anyhow::Result<()>
{
    let dir = TempDir::new("baton-filter-grpc")?;
    let mut filter = scanners::grpc_filter().await?;
    let endpoint = filter.address.clone();
    let port = free_port()?;
    let receiver = Receiver::start(&format!("127.0.0.1:{port}"), ReceiverConfig::default()).await?;
    let dns = Dns::dest_test().await?;
    let cfg = write_config(&dir.0, "closed.yaml", &config(port, &endpoint, "Closed"))?;
    let nats = Nats::start().await?;
    apply_config(&nats, &cfg)?;
    let ing = Ingress::start(&nats, &dir.0, &[]).await?;
    let _w = Worker::start(&nats, &dir.0, "test", Some(dns.addr), &[]).await?;
    let im = ing.metrics;
    let accepted = |m| async move { metric(m, "baton_ingress_messages_accepted_total").await };

    // Reject: the filter's text, cleaned to one line, in the DATA reply.
    let r = send(
        ing.smtp,
        "rejected",
        "",
        "Hello,\r\nBATON-TEST-REJECT please\r\nBye",
    )
    .await?;
    assert_eq!(
        (r.code, r.text.as_str()),
        (550, "5.7.1 Message refused by policy (marker found)"),
        "{r:?}\n{}",
        filter.logs()
    );
    // Temporary failure: 451 with the filter's text.
    let r = send(ing.smtp, "tempfailed", "", "BATON-TEST-TEMPFAIL").await?;
    assert_eq!(
        (r.code, r.text.as_str()),
        (451, "4.7.1 Policy check pending"),
        "{r:?}"
    );
    assert_eq!(accepted(im).await, 0.0, "neither was queued");

    // Accept with the filter's header edits.
    let r = send(
        ing.smtp,
        "clean",
        "X-Internal-Route: cluster-a\r\n",
        "Lunch tomorrow at noon?",
    )
    .await?;
    assert_eq!(r.code, 250, "{r:?}");
    let queue_id = r.text.rsplit(' ').next().unwrap_or_default().to_owned();
    let got = receiver.wait_for_messages(1, WAIT).await?;
    let m = &got[0];
    let text = String::from_utf8_lossy(&m.body);
    assert_eq!(
        header(&m.body, "Subject").as_deref(),
        Some("clean"),
        "{text}"
    );
    let checked = header(&m.body, "X-Filter-Checked").unwrap_or_default();
    assert!(
        checked.starts_with(&format!(
            "sender=app@example.com rcpts=user@dest.test ip=127.0.0.1 helo=client.test user=- \
             domain=team-a/example-com qid={queue_id} size="
        )),
        "the filter's header, echoing the request: {checked:?}\n{text}"
    );
    assert!(
        header(&m.body, "X-Internal-Route").is_none(),
        "removed by the filter: {text}"
    );
    assert_eq!(accepted(im).await, 1.0);

    for (verdict, want) in [("reject", 1.0), ("tempfail", 1.0), ("accept", 1.0)] {
        assert_eq!(metric(im, &verdicts(verdict)).await, want, "{verdict}");
    }
    assert_eq!(metric(im, &verdicts("failed")).await, 0.0);

    // The filter stops: fail closed.
    filter.stop();
    let r = send(ing.smtp, "closed-stopped", "", "hello").await?;
    assert_eq!(r.code, 451, "{r:?}");
    assert!(r.text.starts_with("4.7.1 "), "{r:?}");
    assert_eq!(metric(im, &verdicts("failed")).await, 1.0);
    assert_eq!(accepted(im).await, 1.0, "not queued");

    // The same pool with failureMode: Open: accepted unscanned, counted.
    let generation = |m| async move { metric(m, "baton_config_generation").await };
    let before = generation(im).await;
    apply_config(
        &nats,
        &write_config(&dir.0, "open.yaml", &config(port, &endpoint, "Open"))?,
    )?;
    assert_eventually(WAIT, "the ingress took the new snapshot", || async move {
        generation(im).await > before
    })
    .await?;
    let r = send(ing.smtp, "open-stopped", "", "hello").await?;
    assert_eq!(r.code, 250, "{r:?}");
    let rc = &receiver;
    assert_eventually(WAIT, "the fail-open message delivered", || async move {
        delivered(rc, "open-stopped") == 1
    })
    .await?;
    assert_eq!(metric(im, &verdicts("failed")).await, 2.0);
    let m = receiver
        .messages()
        .into_iter()
        .find(|m| header(&m.body, "Subject").as_deref() == Some("open-stopped"));
    assert!(
        m.is_some_and(|m| header(&m.body, "X-Filter-Checked").is_none()),
        "delivered unscanned"
    );

    // Nothing refused was delivered meanwhile.
    for subject in ["rejected", "tempfailed", "closed-stopped"] {
        assert_eq!(delivered(&receiver, subject), 0, "{subject}");
    }
    assert_eq!(receiver.messages().len(), 2);
    assert_eq!(accepted(im).await, 2.0);
    Ok(())
}
