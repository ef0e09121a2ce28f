//! Delivery events: what happened to a message, as CloudEvents 1.0 (structured JSON mode)
//! published to the `BATON_EVENTS` stream (`baton_queue::events`). This module owns the event
//! types and their names, the subject an event is stored under and the JSON it is stored as.
//!
//! Subjects are `baton.events.<namespace>.<relaydomain>.<queue id>.<type>`, so consumers and
//! permissions can be scoped per tenant, and one message's timeline is one subject filter
//! (`baton.events.*.*.<queue id>.*`). Event ids are deterministic per fact (a worker that
//! redelivers after a crash publishes the same id, stored once); the CloudEvents `type` is
//! `dev.baton.message.<type>.v1` and `subject` is the queue id. `data` is a flat JSON object
//! documented per type in the README.
//!
//! Not every event is about a queued message: `refused` names a refusal and `credential_spike`
//! ([`CredentialSpike`]) a credential's sending spike, each under a queue id of its own. The
//! spike's `data` is typed here so that the ingress that publishes it and the operator that
//! turns it into a Kubernetes Event read one schema.

use serde_json::{Map, Value, json};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The ingress queued the message (after the PubAck) and answered `250`.
    Accepted,
    /// A recipient was delivered (the remote `250`).
    Delivered,
    /// A recipient got a temporary failure and waits for a retry.
    Deferred,
    /// A recipient failed for good.
    Bounced,
    /// A recipient was still undelivered at the pool's maximum age.
    Expired,
    /// A delivery status notification about the message was queued for its sender.
    DsnQueued,
    /// Recipients were moved to the held place by a hold.
    Held,
    /// An operator released held mail.
    Released,
    /// An operator requeued a dead letter.
    Requeued,
    /// An operator asked to retry now.
    Retried,
    /// An operator bounced the message.
    OperatorBounced,
    /// An operator deleted the message.
    Deleted,
    /// The ingress refused a transaction of a known RelayDomain (a recipient, or the message
    /// at the end of DATA); the event's queue id is an id of the refusal, nothing was queued.
    Refused,
    /// A content filter quarantined the message at the ingress: it is stored in its pool's
    /// quarantine, not delivered until an operator releases it.
    Quarantined,
    /// An SMTP credential's hourly count crossed its RelayDomain's spike threshold
    /// (`spec.limits.spike`); published once per crossing by the ingress whose message crossed
    /// it. The event's queue id names the crossing (see [`CredentialSpike`]).
    CredentialSpike,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 15] = [
        EventType::Accepted,
        EventType::Delivered,
        EventType::Deferred,
        EventType::Bounced,
        EventType::Expired,
        EventType::DsnQueued,
        EventType::Held,
        EventType::Released,
        EventType::Requeued,
        EventType::Retried,
        EventType::OperatorBounced,
        EventType::Deleted,
        EventType::Refused,
        EventType::Quarantined,
        EventType::CredentialSpike,
    ];

    /// The short name (the subject's last token; a bounded metric label).
    pub fn name(self) -> &'static str {
        match self {
            EventType::Accepted => "accepted",
            EventType::Delivered => "delivered",
            EventType::Deferred => "deferred",
            EventType::Bounced => "bounced",
            EventType::Expired => "expired",
            EventType::DsnQueued => "dsn_queued",
            EventType::Held => "held",
            EventType::Released => "released",
            EventType::Requeued => "requeued",
            EventType::Retried => "retried",
            EventType::OperatorBounced => "operator_bounced",
            EventType::Deleted => "deleted",
            EventType::Refused => "refused",
            EventType::Quarantined => "quarantined",
            EventType::CredentialSpike => "credential_spike",
        }
    }

    /// The CloudEvents `type`: `dev.baton.message.<name>.v1`.
    pub fn cloud_type(self) -> String {
        format!("dev.baton.message.{}.v1", self.name())
    }

    /// The type of a delivery outcome's `metric_label` (`delivered`, `deferred`, `bounced`,
    /// `expired`).
    pub fn of_outcome(label: &str) -> Option<EventType> {
        match label {
            "delivered" => Some(EventType::Delivered),
            "deferred" => Some(EventType::Deferred),
            "bounced" => Some(EventType::Bounced),
            "expired" => Some(EventType::Expired),
            _ => None,
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The queue id of the message (`250 ... queued as <id>`).
    pub queue_id: String,
    /// Its RelayDomain, `namespace/name` (empty when unknown).
    pub relay_domain: String,
    /// When (Unix ms).
    pub time_ms: i64,
    /// What makes this fact unique for this message (e.g. the attempt and recipient): with
    /// the queue id and type it forms the event id.
    pub discriminator: String,
    /// The type's fields.
    pub data: Map<String, Value>,
}

/// A subject token from free text: characters other than ASCII letters, digits, `-` and `_`
/// become `_`; empty becomes `_`.
pub fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() { "_".to_owned() } else { t }
}

impl Event {
    /// A new event with empty data.
    pub fn new(
        kind: EventType,
        queue_id: &str,
        relay_domain: &str,
        time_ms: i64,
        discriminator: impl Into<String>,
    ) -> Self {
        Event {
            kind,
            queue_id: queue_id.to_owned(),
            relay_domain: relay_domain.to_owned(),
            time_ms,
            discriminator: discriminator.into(),
            data: Map::new(),
        }
    }

    /// Add a data field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.data.insert(key.to_owned(), value.into());
        self
    }

    /// The namespace and name of its RelayDomain as subject tokens.
    pub fn tenant(&self) -> (String, String) {
        match self.relay_domain.split_once('/') {
            Some((ns, name)) => (token(ns), token(name)),
            None => ("_".into(), token(&self.relay_domain)),
        }
    }

    /// `baton.events.<namespace>.<relaydomain>.<queue id>.<type>`.
    pub fn subject(&self) -> String {
        let (ns, name) = self.tenant();
        format!(
            "baton.events.{ns}.{name}.{}.{}",
            token(&self.queue_id),
            self.kind.name()
        )
    }

    /// The CloudEvents `id`, deterministic: `<queue id>.<type>.<discriminator>`.
    pub fn id(&self) -> String {
        format!(
            "{}.{}.{}",
            self.queue_id,
            self.kind.name(),
            self.discriminator
        )
    }

    /// The CloudEvents 1.0 JSON (structured mode); `source` names the emitting process
    /// (`baton/<component>/<instance>`). Serialized straight from the event (no intermediate
    /// JSON tree: this runs for every recipient outcome).
    pub fn to_json(&self, source: &str) -> Vec<u8> {
        let time =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.time_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
        let cloud = CloudEvent {
            specversion: "1.0",
            id: self.id(),
            source,
            kind: self.kind.cloud_type(),
            subject: &self.queue_id,
            time,
            datacontenttype: "application/json",
            data: Data(self),
        };
        serde_json::to_vec(&cloud).unwrap_or_default()
    }
}

/// The CloudEvents envelope, as serialized.
#[derive(serde::Serialize)]
struct CloudEvent<'a> {
    specversion: &'static str,
    id: String,
    source: &'a str,
    #[serde(rename = "type")]
    kind: String,
    subject: &'a str,
    time: String,
    datacontenttype: &'static str,
    data: Data<'a>,
}

/// An event's `data`: its fields, then `queueId` and `relayDomain`.
struct Data<'a>(&'a Event);

impl serde::Serialize for Data<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let e = self.0;
        let extra = ["queueId", "relayDomain"];
        let own = e.data.iter().filter(|(k, _)| !extra.contains(&k.as_str()));
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in own {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("queueId", &e.queue_id)?;
        map.serialize_entry("relayDomain", &e.relay_domain)?;
        map.end()
    }
}

/// The subject of a Message-ID's index record in the event stream:
/// `baton.index.msgid.<32 hex digits of the SHA-256 of the Message-ID>` (angle brackets and
/// surrounding space removed; case kept, as the local part is case-sensitive). The record's
/// payload is [`message_id_record`]; `trace <Message-ID>` reads the records under this subject
/// and traces each queue id.
pub fn message_id_subject(message_id: &str) -> String {
    use sha2::Digest as _;
    let id = message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    let digest = sha2::Sha256::digest(id.as_bytes());
    format!("baton.index.msgid.{}", &hex::encode(digest)[..32])
}

/// The payload of a Message-ID index record: `{"queueId", "relayDomain", "messageId"}`.
pub fn message_id_record(message_id: &str, queue_id: &str, relay_domain: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "queueId": queue_id,
        "relayDomain": relay_domain,
        "messageId": message_id,
    }))
    .unwrap_or_default()
}

/// The subject filter of one message's events.
pub fn trace_filter(queue_id: &str) -> String {
    format!("baton.events.*.*.{}.*", token(queue_id))
}

/// The subject filter of every event of type `kind`, of every tenant and queue id.
pub fn type_filter(kind: EventType) -> String {
    format!("baton.events.*.*.*.{}", kind.name())
}

/// The `data` of a `credential_spike` event: which credential of which RelayDomain crossed its
/// spike threshold, with what count, and what the RelayDomain's policy does about it. The user
/// name is the AUTH identity as the client gave it (user names are not secrets; no password or
/// other credential material is ever part of it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialSpike {
    /// The RelayDomain, `namespace/name`.
    pub relay_domain: String,
    /// The SMTP user name (AUTH) whose messages spiked.
    pub credential: String,
    /// The credential's messages this UTC hour, counting the one that crossed.
    pub count: u64,
    /// The smallest count that is a spike this hour (`minimumPerHour`, or more than `factor`
    /// times the mean of the previous 24 hours).
    pub threshold: u64,
    /// The policy's action: `alert`, `throttle` or `hold` (a reader should accept others).
    pub action: String,
    /// The policy's factor over the baseline.
    #[serde(default)]
    pub factor: u32,
    /// The policy's minimum messages per hour.
    #[serde(default)]
    pub minimum_per_hour: u32,
}

impl CredentialSpike {
    /// The `credential_spike` event under queue id `queue_id` (an id of the crossing: no
    /// message is queued under it) at `time_ms`.
    pub fn event(&self, queue_id: &str, time_ms: i64) -> Event {
        Event::new(
            EventType::CredentialSpike,
            queue_id,
            &self.relay_domain,
            time_ms,
            "0",
        )
        .with("credential", self.credential.as_str())
        .with("count", self.count)
        .with("threshold", self.threshold)
        .with("action", self.action.as_str())
        .with("factor", self.factor)
        .with("minimumPerHour", self.minimum_per_hour)
    }

    /// The spike a stored CloudEvent (JSON) reports; `None` for another type or a document
    /// that does not parse.
    pub fn from_cloud_event(json: &[u8]) -> Option<CredentialSpike> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            #[serde(rename = "type")]
            kind: String,
            data: CredentialSpike,
        }
        let e: Envelope = serde_json::from_slice(json).ok()?;
        (e.kind == EventType::CredentialSpike.cloud_type()).then_some(e.data)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_a_cloudevent_under_its_tenant_subject() {
        let e = Event::new(
            EventType::Deferred,
            "1M90AJ69WSKAJAKRV3",
            "shop/example.com",
            1_796_381_153_596,
            "a1.r0",
        )
        .with("recipient", "a@x.test")
        .with("attempt", 1);
        assert_eq!(
            e.subject(),
            "baton.events.shop.example_com.1M90AJ69WSKAJAKRV3.deferred"
        );
        assert_eq!(e.id(), "1M90AJ69WSKAJAKRV3.deferred.a1.r0");
        let v: Value = serde_json::from_slice(&e.to_json("baton/worker/pod-1")).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "dev.baton.message.deferred.v1");
        assert_eq!(v["source"], "baton/worker/pod-1");
        assert_eq!(v["subject"], "1M90AJ69WSKAJAKRV3");
        assert_eq!(v["time"], "2026-12-04T10:45:53.596Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"]["recipient"], "a@x.test");
        assert_eq!(v["data"]["relayDomain"], "shop/example.com");
        assert_eq!(v["data"]["attempt"], 1);
    }

    #[test]
    fn subjects_stay_valid_for_any_input_and_trace_filters_match_them() {
        let e = Event::new(EventType::Accepted, "a.b c>*", "", 0, "x");
        assert_eq!(e.subject(), "baton.events._._.a_b_c__.accepted");
        assert_eq!(trace_filter("a.b c>*"), "baton.events.*.*.a_b_c__.*");
        let names: std::collections::HashSet<_> = EventType::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), EventType::ALL.len(), "names are distinct");
        for t in EventType::ALL {
            assert_eq!(token(t.name()), t.name(), "a name is one subject token");
        }
        assert_eq!(EventType::of_outcome("bounced"), Some(EventType::Bounced));
        assert_eq!(EventType::of_outcome("sent"), None);
    }

    #[test]
    fn a_credential_spike_round_trips_through_its_cloudevent() {
        let spike = CredentialSpike {
            relay_domain: "team-a/example.com".into(),
            credential: "App".into(),
            count: 241,
            threshold: 241,
            action: "throttle".into(),
            factor: 10,
            minimum_per_hour: 100,
        };
        let e = spike.event("1M90AJ69WSKAJAKRV3", 1_796_381_153_596);
        assert_eq!(
            e.subject(),
            "baton.events.team-a.example_com.1M90AJ69WSKAJAKRV3.credential_spike"
        );
        assert_eq!(e.id(), "1M90AJ69WSKAJAKRV3.credential_spike.0");
        let json = e.to_json("baton/ingress/pod-1");
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["type"], "dev.baton.message.credential_spike.v1");
        assert_eq!(v["subject"], "1M90AJ69WSKAJAKRV3");
        assert_eq!(
            v["data"],
            json!({"credential": "App", "count": 241, "threshold": 241, "action": "throttle",
                "factor": 10, "minimumPerHour": 100, "queueId": "1M90AJ69WSKAJAKRV3",
                "relayDomain": "team-a/example.com"})
        );
        assert_eq!(CredentialSpike::from_cloud_event(&json), Some(spike));
        // Only a spike is read as one; other documents are not.
        let other = Event::new(EventType::Accepted, "Q", "a/b", 0, "0").to_json("x");
        assert_eq!(CredentialSpike::from_cloud_event(&other), None);
        assert_eq!(CredentialSpike::from_cloud_event(b"not json"), None);
        // The filter takes spikes of every tenant and nothing else.
        assert_eq!(
            type_filter(EventType::CredentialSpike),
            "baton.events.*.*.*.credential_spike"
        );
    }

    #[test]
    fn a_message_id_indexes_under_one_subject_however_it_is_written() {
        let a = message_id_subject("<abc.123@example.com>");
        assert_eq!(a, message_id_subject(" abc.123@example.com "));
        assert_ne!(a, message_id_subject("<ABC.123@example.com>"));
        let tail = a.strip_prefix("baton.index.msgid.").unwrap();
        assert_eq!(tail.len(), 32);
        assert!(tail.chars().all(|c| c.is_ascii_hexdigit()));
        let v: Value = serde_json::from_slice(&message_id_record("<m@x>", "Q1", "ns/rd")).unwrap();
        assert_eq!(v["queueId"], "Q1");
        assert_eq!(v["messageId"], "<m@x>");
    }
}
