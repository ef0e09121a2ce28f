//! The hand-off: turn a finished SMTP transaction into a queued [`Envelope`] — check `From:`
//! alignment, apply the header policy and the content filters ([`crate::filtering`]), add the
//! trace header and submission fix-ups, DKIM-sign on top of them ([`prepare`]) — publish it
//! with its queue id as `Nats-Msg-Id` (to the pool's fresh-mail lane, or its quarantine when a
//! filter said so), and answer only from the PubAck: `250 2.0.0 Ok: queued as <id>` or `451
//! 4.3.0`.

use std::sync::Arc;
use std::time::Instant;

use baton_core::headers;
use baton_core::refusal::Refusal;
use baton_proto::v1::{
    BodyType as PBodyType, DsnEnvelope, DsnRet as PDsnRet, Envelope, EnvelopeKind, Recipient,
    envelope::Body,
};
use baton_queue::{Publisher, new_subject, quarantine_subject};
use baton_smtp::session::Transaction;
use baton_smtp::{BodyType, DsnRet, ForwardPath, ListenerKind, Reply, ReversePath, catalogue};
use baton_telemetry::Metrics;

use crate::policy::{Snapshot, dkim_unavailable, refusal_reply};

/// Facts about the session the message arrived on.
pub struct Arrival<'a> {
    /// Our host name (in `Received:` and generated `Message-ID`s).
    pub hostname: &'a str,
    /// Client address.
    pub client: std::net::IpAddr,
    /// Which listener.
    pub listener: ListenerKind,
    /// Negotiated TLS cipher suite, when TLS is up.
    pub tls_cipher: Option<String>,
    /// Negotiated TLS version (`TLSv1.3`), when TLS is up.
    pub tls_version: Option<&'static str>,
}

/// Baton's own header additions, in order: `Received:`, then on the submission listener a
/// `Message-ID:` and `Date:` when the message lacks them.
pub fn trace_headers(
    tx: &Transaction,
    id: &str,
    arrival: &Arrival<'_>,
    now: time::OffsetDateTime,
) -> Vec<u8> {
    let proto = match (tx.tls, tx.authenticated.is_some()) {
        (true, true) => "ESMTPSA",
        (true, false) => "ESMTPS",
        (false, true) => "ESMTPA",
        (false, false) => "ESMTP",
    };
    let single_rcpt = match tx.recipients.as_slice() {
        [r] => match &r.path {
            ForwardPath::Mailbox(a) => Some(a.to_string()),
            ForwardPath::Postmaster => None,
        },
        _ => None,
    };
    let received = headers::received_header(
        &tx.helo,
        arrival.client,
        arrival.hostname,
        proto,
        id,
        single_rcpt.as_deref(),
        arrival.tls_cipher.as_deref(),
        now,
    );
    let mut out = Vec::with_capacity(received.len() + 160);
    out.extend_from_slice(received.as_bytes());
    if arrival.listener == ListenerKind::Submission {
        let (no_msgid, no_date) = headers::needs_message_id_and_date(&tx.body);
        if no_msgid {
            out.extend_from_slice(
                format!(
                    "Message-ID: {}\r\n",
                    headers::message_id(id, arrival.hostname)
                )
                .as_bytes(),
            );
        }
        if no_date {
            out.extend_from_slice(format!("Date: {}\r\n", headers::rfc5322_date(now)).as_bytes());
        }
    }
    out
}

/// Build the envelope for `tx` under queue id `id` at time `now`, unsigned.
pub fn build_envelope(
    tx: Transaction,
    id: &str,
    arrival: &Arrival<'_>,
    now: time::OffsetDateTime,
) -> Envelope {
    let trace = trace_headers(&tx, id, arrival, now);
    assemble(tx, id, arrival, now, &[], &trace)
}

/// Bodies at least this large are signed on the blocking thread pool.
const SIGN_INLINE_MAX: usize = 256 * 1024;

/// What must hold before the message may be queued, checked at the end of DATA against the
/// snapshot in force: the `From:` header aligns with the envelope sender / RelayDomain (unless
/// the RelayDomain sets `allow_unaligned_from`; otherwise `550 5.7.1`, or `550 5.6.0` without a
/// `From:`), and the message is DKIM-signed with the RelayDomain's keys over `trace` (Baton's
/// header additions) followed by the client's content. Returns the `DKIM-Signature:` header
/// fields to put on top (empty for a RelayDomain without DKIM); an unusable key gives
/// `451 4.7.5`, so nothing is sent unsigned by surprise.
pub fn authenticate(
    snapshot: Option<&Snapshot>,
    tx: &Transaction,
    trace: &[u8],
) -> Result<Vec<u8>, Reply> {
    check_alignment(snapshot, tx)?;
    sign(snapshot, tx, trace)
}

/// The `From:` alignment part of [`authenticate`].
pub fn check_alignment(snapshot: Option<&Snapshot>, tx: &Transaction) -> Result<(), Reply> {
    let Some(s) = snapshot else {
        return Err(catalogue::config_not_loaded());
    };
    let relay = tx.grant.relay_domain.as_str();
    let sender_domain = match &tx.reverse_path {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(a) => a.domain_lowercase(),
    };
    let authors = baton_core::authors::authors(&tx.body);
    s.index
        .check_authors(relay, &sender_domain, &authors)
        .map_err(|r| {
            tracing::info!(
                relay_domain = relay,
                reason = r.reason,
                "message refused: {}",
                r.text
            );
            alignment_reply(&r, s.index.domain(relay).map(|d| d.domain.as_str()))
        })
}

/// The DKIM part of [`authenticate`]: the `DKIM-Signature:` fields over `trace` and the body.
pub fn sign(snapshot: Option<&Snapshot>, tx: &Transaction, trace: &[u8]) -> Result<Vec<u8>, Reply> {
    let Some(s) = snapshot else {
        return Err(catalogue::config_not_loaded());
    };
    let relay = tx.grant.relay_domain.as_str();
    match s.dkim.get(relay) {
        None => Err(refusal_reply(&Refusal::unknown_relay_domain())),
        Some(Err(e)) => Err(dkim_unavailable(&s.index, relay, e)),
        Some(Ok(signer)) => signer
            .sign(&[trace, &tx.body])
            .map_err(|e| dkim_unavailable(&s.index, relay, &e)),
    }
}

fn alignment_reply(r: &Refusal, domain: Option<&str>) -> Reply {
    match (r.reason, domain) {
        (reason @ ("from_unaligned" | "sender_unaligned"), Some(d)) => {
            let field = if reason == "from_unaligned" {
                "From:"
            } else {
                "Sender:"
            };
            Reply::new(
                r.code,
                r.status,
                format!(
                    "{}: the {field} address must be in {d} (or one of its subdomains) or in the MAIL FROM domain",
                    r.text
                ),
            )
        }
        _ => refusal_reply(r),
    }
}

/// A message ready to publish.
#[derive(Debug)]
pub struct Prepared {
    /// The envelope (signed).
    pub envelope: Envelope,
    /// `Some((filter, reason))` when a content filter quarantined it: it goes to the pool's
    /// quarantine instead of its fresh-mail lane.
    pub quarantine: Option<(String, String)>,
}

/// The hand-off up to the publish: check From alignment, apply the header policy and the
/// content filters ([`crate::filtering::screen`]), add Baton's headers, DKIM-sign, and build
/// the envelope. `Err(reply)` is the session's answer; nothing is queued then.
pub async fn prepare(
    mut tx: Transaction,
    id: &str,
    arrival: &Arrival<'_>,
    now: time::OffsetDateTime,
    snapshot: Option<Arc<Snapshot>>,
    metrics: &Metrics,
) -> Result<Prepared, Reply> {
    check_alignment(snapshot.as_deref(), &tx)?;
    let quarantine = match &snapshot {
        Some(s) => {
            match crate::filtering::screen(&s.filtering, &mut tx, id, arrival.client, metrics)
                .await?
            {
                crate::filtering::Screened::Deliver => None,
                crate::filtering::Screened::Quarantine { filter, reason } => Some((filter, reason)),
            }
        }
        None => None,
    };
    // The edits cannot touch the authors (`filtering::PROTECTED`); checked again anyway, on
    // the form that is signed.
    check_alignment(snapshot.as_deref(), &tx)?;
    let trace = trace_headers(&tx, id, arrival, now);
    let (tx, trace, dkim) = if tx.body.len() < SIGN_INLINE_MAX {
        let dkim = sign(snapshot.as_deref(), &tx, &trace);
        (tx, trace, dkim)
    } else {
        tokio::task::spawn_blocking(move || {
            let dkim = sign(snapshot.as_deref(), &tx, &trace);
            (tx, trace, dkim)
        })
        .await
        .map_err(|_| catalogue::local_error())?
    };
    Ok(Prepared {
        envelope: assemble(tx, id, arrival, now, &dkim?, &trace),
        quarantine,
    })
}

/// The envelope with body `dkim ++ trace ++ tx.body`, built in the client's body buffer: the
/// content moves up once, in place when the buffer has room (it grew by doubling), instead of
/// being copied into a new allocation.
fn assemble(
    mut tx: Transaction,
    id: &str,
    arrival: &Arrival<'_>,
    now: time::OffsetDateTime,
    dkim: &[u8],
    trace: &[u8],
) -> Envelope {
    let mut body = std::mem::take(&mut tx.body);
    body.splice(0..0, dkim.iter().chain(trace).copied());

    let recipients = tx
        .recipients
        .iter()
        .map(|r| {
            let address = match &r.path {
                ForwardPath::Mailbox(a) => a.to_string(),
                ForwardPath::Postmaster => "postmaster".to_string(),
            };
            let n = r.params.notify.unwrap_or_default();
            Recipient {
                address,
                notify_never: n.never,
                notify_success: n.success,
                notify_failure: n.failure,
                notify_delay: n.delay,
                orcpt: r.params.orcpt.clone().unwrap_or_default(),
                ..Recipient::default()
            }
        })
        .collect();
    let reverse_path = sender_text(&tx.reverse_path);
    let body_type = match tx.params.body {
        Some(BodyType::SevenBit) => PBodyType::BodyType7bit,
        Some(BodyType::EightBitMime) => PBodyType::BodyType8bitmime,
        None => PBodyType::Unspecified,
    };
    let ret = match tx.params.ret {
        Some(DsnRet::Full) => PDsnRet::Full,
        Some(DsnRet::Headers) => PDsnRet::Hdrs,
        None => PDsnRet::Unspecified,
    };
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    Envelope {
        id: id.to_string(),
        reverse_path,
        recipients,
        relay_domain: tx.grant.relay_domain.clone(),
        pool: tx.grant.pool.clone(),
        client_address: arrival.client.to_string(),
        authenticated_as: tx.authenticated.clone().unwrap_or_default(),
        received_at_ms: now_ms,
        attempt: 0,
        not_before_ms: 0,
        size: body.len() as u64,
        body: Some(Body::InlineBody(body.into())),
        dsn: Some(DsnEnvelope {
            ret: ret as i32,
            envid: tx.params.envid.clone().unwrap_or_default(),
        }),
        smtputf8: tx.params.smtputf8,
        body_type: body_type as i32,
        helo: tx.helo.clone(),
        kind: EnvelopeKind::Message as i32,
        retry_tier: 0,
        origin_id: id.to_string(),
        last_delay_notice_ms: 0,
        operator_bounce: String::new(),
        object_bucket: String::new(),
    }
}

/// What the accepted event tells about the message itself, read from its header block (which
/// starts with Baton's own `DKIM-Signature:` fields): the `Message-ID` and the DKIM signatures
/// (`domain`, `selector`).
fn header_facts(envelope: &Envelope) -> (Option<String>, Vec<serde_json::Value>) {
    use baton_core::headers::{field_values, split_headers, tag_value};
    let Some(Body::InlineBody(body)) = &envelope.body else {
        return (None, Vec::new());
    };
    // The header block only, and not more of it than a header block can sensibly be.
    let (headers, _) = split_headers(&body[..body.len().min(256 * 1024)]);
    let message_id = field_values(headers, "Message-ID").into_iter().next();
    let dkim = field_values(headers, "DKIM-Signature")
        .iter()
        .map(|sig| {
            serde_json::json!({
                "domain": tag_value(sig, "d").unwrap_or_default(),
                "selector": tag_value(sig, "s").unwrap_or_default(),
            })
        })
        .collect();
    (message_id, dkim)
}

/// A reverse path as the envelope, events and logs write it: the address, or empty for `<>`.
pub(crate) fn sender_text(reverse_path: &ReversePath) -> String {
    match reverse_path {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(a) => a.to_string(),
    }
}

/// The `accepted` delivery event of a queued envelope.
fn accepted_event(
    envelope: &Envelope,
    sequence: u64,
    arrival: &Arrival<'_>,
    message_id: Option<&str>,
    dkim: Vec<serde_json::Value>,
) -> baton_core::event::Event {
    use baton_core::event::{Event, EventType};
    let recipients: Vec<&str> = envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    Event::new(
        EventType::Accepted,
        &envelope.id,
        &envelope.relay_domain,
        envelope.received_at_ms,
        "0",
    )
    .with("pool", envelope.pool.as_str())
    .with("sender", envelope.reverse_path.as_str())
    .with("recipients", recipients)
    .with("size", envelope.size)
    .with("clientAddress", envelope.client_address.as_str())
    .with("authenticatedAs", envelope.authenticated_as.as_str())
    .with("helo", envelope.helo.as_str())
    .with("listener", crate::shared::listener_label(arrival.listener))
    .with("tlsVersion", arrival.tls_version.unwrap_or_default())
    .with(
        "tlsCipher",
        arrival.tls_cipher.as_deref().unwrap_or_default(),
    )
    .with("messageId", message_id.unwrap_or_default())
    .with("dkim", dkim)
    .with("streamSequence", sequence)
}

/// The `quarantined` delivery event of a message stored in its pool's quarantine.
fn quarantined_event(
    envelope: &Envelope,
    sequence: u64,
    filter: &str,
    reason: &str,
) -> baton_core::event::Event {
    use baton_core::event::{Event, EventType};
    Event::new(
        EventType::Quarantined,
        &envelope.id,
        &envelope.relay_domain,
        baton_core::clock::now_ms(),
        "0",
    )
    .with("pool", envelope.pool.as_str())
    .with("sender", envelope.reverse_path.as_str())
    .with("filter", filter)
    .with("reason", reason)
    .with("streamSequence", sequence)
}

/// Publish (to the pool's quarantine when `quarantine` says which filter and why) and turn
/// the outcome into the session's answer. A quarantined message gets the same `250` as any
/// other once stored: the sender is deliberately not told.
pub async fn publish(
    publisher: &Publisher,
    metrics: &Metrics,
    envelope: &Envelope,
    arrival: &Arrival<'_>,
    quarantine: Option<&(String, String)>,
) -> Result<String, Reply> {
    let started = Instant::now();
    let subject = match quarantine {
        None => new_subject(&envelope.pool),
        Some(_) => quarantine_subject(&envelope.pool),
    };
    match publisher.publish(&subject, &envelope.id, envelope).await {
        Ok(receipt) => {
            metrics
                .ingress_publish_duration
                .observe(started.elapsed().as_secs_f64());
            metrics
                .ingress_accepted
                .with_label_values(&[&envelope.relay_domain])
                .inc();
            metrics.ingress_message_size.observe(envelope.size as f64);
            tracing::info!(
                queue_id = %envelope.id,
                relay_domain = %envelope.relay_domain,
                pool = %envelope.pool,
                from = %envelope.reverse_path,
                nrcpt = envelope.recipients.len(),
                size = envelope.size,
                stream_seq = receipt.sequence,
                duplicate = receipt.duplicate,
                "queued"
            );
            if let Some((filter, reason)) = quarantine {
                metrics
                    .quarantined
                    .with_label_values(&[&envelope.pool])
                    .inc();
                tracing::warn!(
                    queue_id = %envelope.id,
                    relay_domain = %envelope.relay_domain,
                    pool = %envelope.pool,
                    filter = %filter,
                    reason = %reason,
                    "quarantined: not delivered until released (baton queue quarantine release)"
                );
            }
            if publisher.emits_events() {
                let (message_id, dkim) = header_facts(envelope);
                if let Some(m) = &message_id {
                    publisher.index_message_id(m, &envelope.id, &envelope.relay_domain);
                }
                // Published once, after the message's one PubAck: no Nats-Msg-Id needed.
                publisher.emit_once(accepted_event(
                    envelope,
                    receipt.sequence,
                    arrival,
                    message_id.as_deref(),
                    dkim,
                ));
                if let Some((filter, reason)) = quarantine {
                    publisher.emit(quarantined_event(
                        envelope,
                        receipt.sequence,
                        filter,
                        reason,
                    ));
                }
            }
            Ok(envelope.id.clone())
        }
        Err(e) => {
            metrics
                .ingress_publish_errors
                .with_label_values(&[e.metric_label()])
                .inc();
            tracing::warn!(queue_id = %envelope.id, error = %e, "publish failed, answering 451");
            Err(catalogue::queue_unavailable())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use baton_proto::v1::RelayConfig;
    use baton_smtp::session::{Grant, Recipient as SmtpRecipient};
    use baton_smtp::{Address, MailParams, RcptParams};
    use mail_auth::DkimResult;

    use crate::dkim::tests::{ED25519_PEM, RSA_PEM, domain, key, verify};

    fn snapshot(d: baton_proto::v1::RelayDomain) -> Arc<Snapshot> {
        let cfg = RelayConfig {
            domains: vec![d],
            ..Default::default()
        };
        Arc::new(Snapshot::new(Arc::new(cfg)))
    }

    fn tx(sender: &str, body: &[u8]) -> Transaction {
        Transaction {
            helo: "client.test".into(),
            reverse_path: if sender.is_empty() {
                ReversePath::Null
            } else {
                ReversePath::Mailbox(Address::parse(sender).unwrap())
            },
            params: MailParams::default(),
            recipients: vec![SmtpRecipient {
                path: ForwardPath::Mailbox(Address::parse("x@dest.test").unwrap()),
                params: RcptParams::default(),
            }],
            grant: Grant {
                relay_domain: "team-a/example-com".into(),
                pool: "test".into(),
                max_message_size: 0,
                inbound: false,
                admit: true,
            },
            authenticated: Some("app".into()),
            tls: true,
            body: body.to_vec(),
        }
    }

    fn arrival() -> Arrival<'static> {
        Arrival {
            hostname: "baton.test",
            client: "127.0.0.1".parse().unwrap(),
            listener: ListenerKind::Submission,
            tls_cipher: None,
            tls_version: None,
        }
    }

    async fn run(s: &Arc<Snapshot>, sender: &str, body: &[u8]) -> Result<Vec<u8>, Reply> {
        let now = baton_core::clock::now();
        let env = prepare(
            tx(sender, body),
            "Q1",
            &arrival(),
            now,
            Some(s.clone()),
            &Metrics::new(),
        )
        .await?
        .envelope;
        match env.body {
            Some(Body::InlineBody(b)) => Ok(b.to_vec()),
            other => panic!("inline body expected: {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_accepted_event_names_tls_listener_message_id_and_dkim() {
        let s = snapshot(domain(vec![key("s1", "ed25519-sha256", ED25519_PEM, 0)]));
        let body = b"From: <app@example.com>\r\nMessage-ID: <m1@client.test>\r\n\r\nhi\r\n";
        let now = baton_core::clock::now();
        let a = Arrival {
            tls_cipher: Some("TLS_AES_128_GCM_SHA256".into()),
            tls_version: Some("TLSv1.3"),
            ..arrival()
        };
        let env = prepare(
            tx("app@example.com", body),
            "Q1",
            &a,
            now,
            Some(s),
            &Metrics::new(),
        )
        .await
        .unwrap()
        .envelope;
        let (message_id, dkim) = header_facts(&env);
        assert_eq!(message_id.as_deref(), Some("<m1@client.test>"));
        let e = accepted_event(&env, 42, &a, message_id.as_deref(), dkim);
        assert_eq!(e.data["listener"], "submission");
        assert_eq!(e.data["tlsVersion"], "TLSv1.3");
        assert_eq!(e.data["tlsCipher"], "TLS_AES_128_GCM_SHA256");
        assert_eq!(e.data["messageId"], "<m1@client.test>");
        assert_eq!(e.data["authenticatedAs"], "app");
        assert_eq!(e.data["streamSequence"], 42);
        assert_eq!(
            e.data["dkim"],
            serde_json::json!([{"domain": "example.com", "selector": "s1"}])
        );
        // Without a Message-ID (the relay listener adds none) the field is empty.
        let env = prepare(
            tx("app@example.com", b"From: <app@example.com>\r\n\r\nhi\r\n"),
            "Q2",
            &Arrival {
                listener: ListenerKind::Relay,
                ..arrival()
            },
            now,
            Some(snapshot(domain(Vec::new()))),
            &Metrics::new(),
        )
        .await
        .unwrap()
        .envelope;
        assert_eq!(header_facts(&env).0, None);
    }

    #[tokio::test]
    async fn signs_after_baton_headers_and_covers_added_message_id_and_date() {
        let k = key("rsa1", "rsa-sha256", RSA_PEM, 0);
        let s = snapshot(domain(vec![k.clone()]));
        let body = b"From: app@example.com\r\nTo: x@dest.test\r\nSubject: hi\r\n\r\nbody\r\n";
        let out = run(&s, "app@example.com", body).await.unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("DKIM-Signature: "), "{text}");
        let received = text.find("\r\nReceived: from client.test").unwrap();
        assert!(text.find("\r\nMessage-ID: <").unwrap() > received);
        assert!(text.find("\r\nDate: ").unwrap() > received);
        assert!(out.ends_with(body));
        assert_eq!(
            verify(&out, std::slice::from_ref(&k)).await,
            vec![DkimResult::Pass]
        );
        // Message-ID and Date added by Baton are signed, our Received: is not.
        let changed_date = text.replace("\r\nDate: ", "\r\nDate:  Mon,");
        assert!(matches!(
            verify(changed_date.as_bytes(), std::slice::from_ref(&k)).await[..],
            [DkimResult::Fail(_)]
        ));
        let changed_received = text.replace("Received: from client.test", "Received: from other");
        assert_eq!(
            verify(changed_received.as_bytes(), &[k]).await,
            vec![DkimResult::Pass]
        );
    }

    #[tokio::test]
    async fn the_header_policy_applies_before_signing_and_the_signature_covers_it() {
        let k = key("ed1", "ed25519-sha256", ED25519_PEM, 0);
        let mut d = domain(vec![k.clone()]);
        d.headers = Some(baton_proto::v1::HeaderPolicy {
            remove: vec!["X-Internal-*".into()],
            remove_received: true,
            add: vec![baton_proto::v1::HeaderField {
                name: "List-Unsubscribe".into(),
                value: "<mailto:u@example.com>".into(),
            }],
        });
        let s = snapshot(d);
        let body = b"Received: from inner.corp by relay.corp\r\nFrom: app@example.com\r\nX-Internal-Ticket: 42\r\nSubject: s\r\n\r\nhi\r\n";
        let out = run(&s, "app@example.com", body).await.unwrap();
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(
            !text.contains("X-Internal-Ticket") && !text.contains("inner.corp"),
            "{text}"
        );
        assert!(
            text.contains("\r\nList-Unsubscribe: <mailto:u@example.com>\r\n\r\nhi"),
            "{text}"
        );
        assert!(
            text.contains("Received: from client.test"),
            "Baton's own Received stays"
        );
        assert_eq!(verify(&out, &[k]).await, vec![DkimResult::Pass]);
    }

    #[tokio::test]
    async fn large_bodies_are_signed_off_the_runtime_and_verify() {
        let k = key("ed1", "ed25519-sha256", ED25519_PEM, 0);
        let s = snapshot(domain(vec![k.clone()]));
        let mut body = b"From: app@example.com\r\nSubject: big\r\n\r\n".to_vec();
        while body.len() <= SIGN_INLINE_MAX {
            body.extend_from_slice(b"0123456789 abcdefghijklmnopqrstuvwxyz \xe2\x82\xac\r\n");
        }
        let out = run(&s, "app@example.com", &body).await.unwrap();
        assert_eq!(verify(&out, &[k]).await, vec![DkimResult::Pass]);
    }

    #[tokio::test]
    async fn from_must_align_unless_the_domain_allows_otherwise() {
        let k = key("ed1", "ed25519-sha256", ED25519_PEM, 0);
        let s = snapshot(domain(vec![k.clone()]));
        let msg = |from: &str| format!("From: {from}\r\nSubject: x\r\n\r\nx\r\n").into_bytes();
        // Aligned: the RelayDomain itself, a subdomain of it, the null sender with an aligned From.
        for (sender, from) in [
            ("app@example.com", "App <app@example.com>"),
            ("app@example.com", "news@mail.Example.COM"),
            ("", "mailer-daemon@example.com"),
        ] {
            let out = run(&s, sender, &msg(from)).await.unwrap();
            assert_eq!(
                verify(&out, std::slice::from_ref(&k)).await,
                vec![DkimResult::Pass]
            );
        }
        // Unaligned: refused with 550 5.7.1 and a clear text; nothing is built.
        for from in [
            "ceo@evil.test",
            "a@notexample.com",
            "\"x@example.com\" <a@evil.test>",
        ] {
            let r = run(&s, "app@example.com", &msg(from)).await.unwrap_err();
            assert_eq!(
                (r.code, r.to_string().contains("5.7.1")),
                (550, true),
                "{r:?}"
            );
            let text = r.to_string();
            assert!(
                text.contains("is not aligned with the sender domain")
                    && text.contains("must be in example.com"),
                "{text}"
            );
        }
        // The four bypasses: every author mailbox counts, so each is refused.
        for (body, status) in [
            (
                "From: app@example.com\r\nFrom: boss@bank.example\r\n",
                "5.6.0",
            ),
            ("From: app@example.com, boss@bank.example\r\n", "5.6.0"),
            (
                "From: grp: app@example.com, boss@bank.example;\r\n",
                "5.6.0",
            ),
            ("From: <boss@bank.example> <app@example.com>\r\n", "5.6.0"),
            (
                "From: app@example.com, boss@bank.example\r\nSender: app@example.com\r\n",
                "5.7.1",
            ),
            (
                "From: app@example.com\r\nSender: boss@bank.example\r\n",
                "5.7.1",
            ),
        ] {
            let body = format!("{body}Subject: x\r\n\r\nx\r\n");
            let r = run(&s, "app@example.com", body.as_bytes())
                .await
                .unwrap_err();
            assert_eq!(r.code, 550, "{body:?}: {r:?}");
            assert!(r.to_string().contains(status), "{body:?}: {r:?}");
        }
        // No From: at all.
        let r = run(&s, "app@example.com", b"Subject: x\r\n\r\nx\r\n")
            .await
            .unwrap_err();
        assert_eq!(r.code, 550);
        assert!(r.to_string().contains("5.6.0"), "{r:?}");
        // allow_unaligned_from: accepted and still signed by example.com.
        let mut d = domain(vec![k.clone()]);
        d.allow_unaligned_from = true;
        let out = run(&snapshot(d), "app@example.com", &msg("ceo@evil.test"))
            .await
            .unwrap();
        assert_eq!(verify(&out, &[k]).await, vec![DkimResult::Pass]);
    }

    #[tokio::test]
    async fn unusable_key_or_missing_config_defers() {
        let s = snapshot(domain(vec![key("k1", "rsa-sha256", "garbage", 0)]));
        let body = b"From: app@example.com\r\n\r\nx\r\n";
        let r = run(&s, "app@example.com", body).await.unwrap_err();
        assert_eq!(r.code, 451);
        let text = r.to_string();
        assert!(
            text.contains("4.7.5") && text.contains("example.com: DKIM key k1"),
            "{text}"
        );
        assert_eq!(s.check_signing("team-a/example-com").unwrap_err(), r);
        let now = baton_core::clock::now();
        let r = prepare(
            tx("app@example.com", body),
            "Q1",
            &arrival(),
            now,
            None,
            &Metrics::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(r.code, 451);
        // A RelayDomain without DKIM: relayed unsigned.
        let out = run(&snapshot(domain(vec![])), "app@example.com", body)
            .await
            .unwrap();
        assert!(out.starts_with(b"Received: "));
    }
}
