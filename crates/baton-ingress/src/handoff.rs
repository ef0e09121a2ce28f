//! The hand-off: turn a finished SMTP transaction into a queued [`Envelope`] (trace header,
//! submission fix-ups), publish it with its queue id as `Nats-Msg-Id`, and answer only from
//! the PubAck: `250 2.0.0 Ok: queued as <id>` or `451 4.3.0`.

use std::time::Instant;

use baton_core::headers;
use baton_proto::v1::{
    BodyType as PBodyType, DsnEnvelope, DsnRet as PDsnRet, Envelope, EnvelopeKind, Recipient,
    envelope::Body,
};
use baton_queue::{Publisher, new_subject};
use baton_smtp::session::Transaction;
use baton_smtp::{BodyType, DsnRet, ForwardPath, ListenerKind, Reply, ReversePath};
use baton_telemetry::Metrics;

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
}

/// Build the envelope for `tx` under queue id `id` at time `now`.
pub fn build_envelope(
    tx: Transaction,
    id: &str,
    arrival: &Arrival<'_>,
    now: time::OffsetDateTime,
) -> Envelope {
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
    let mut body = Vec::with_capacity(tx.body.len() + received.len() + 160);
    body.extend_from_slice(received.as_bytes());
    if arrival.listener == ListenerKind::Submission {
        let (no_msgid, no_date) = headers::needs_message_id_and_date(&tx.body);
        if no_msgid {
            body.extend_from_slice(
                format!(
                    "Message-ID: {}\r\n",
                    headers::message_id(id, arrival.hostname)
                )
                .as_bytes(),
            );
        }
        if no_date {
            body.extend_from_slice(format!("Date: {}\r\n", headers::rfc5322_date(now)).as_bytes());
        }
    }
    body.extend_from_slice(&tx.body);

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
                last_reply: String::new(),
                last_remote: String::new(),
            }
        })
        .collect();
    let reverse_path = match &tx.reverse_path {
        ReversePath::Null => String::new(),
        ReversePath::Mailbox(a) => a.to_string(),
    };
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
        body: Some(Body::InlineBody(body)),
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
    }
}

/// Publish and turn the outcome into the session's answer.
pub async fn publish(
    publisher: &Publisher,
    metrics: &Metrics,
    envelope: &Envelope,
) -> Result<String, Reply> {
    let started = Instant::now();
    let subject = new_subject(&envelope.pool);
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
            Ok(envelope.id.clone())
        }
        Err(e) => {
            metrics
                .ingress_publish_errors
                .with_label_values(&[e.metric_label()])
                .inc();
            tracing::warn!(queue_id = %envelope.id, error = %e, "publish failed, answering 451");
            Err(Reply::new(
                451,
                "4.3.0",
                "Queue temporarily unavailable, message not accepted; try again later",
            ))
        }
    }
}
