//! Pure logic of the operations API: what a stored queue message looks like to an operator
//! ([`describe`]), which messages a [`Query`] (a validated `MessageFilter`) selects, and the
//! `qshape` aggregation ([`Shape`]). No I/O: the service feeds it what it read.

use std::collections::HashMap;

use baton_proto::Message as _;
use baton_proto::v1::{
    self, EnvelopeHead, EnvelopeKind, MessageFilter, QueuedMessage, RecipientState, ShapeRow,
    SmtpReply,
};
use baton_queue::dead;
use baton_queue::inspect::{Place, StoredMessage, parse_subject};

/// Upper bounds (minutes) of the age columns, as `qshape` prints them.
pub const AGE_BUCKET_MINUTES: [u32; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// The proto place and tier of a queue place.
pub fn proto_place(place: &Place) -> (v1::Place, u32) {
    match place {
        Place::New => (v1::Place::New, 0),
        Place::Retry(t) => (v1::Place::Retry, *t),
        Place::Dead => (v1::Place::Dead, 0),
        Place::Held => (v1::Place::Held, 0),
        Place::Quarantine => (v1::Place::Quarantine, 0),
    }
}

/// The operator's view of a stored message; `None` for a subject outside the queue's places.
pub fn describe(m: &StoredMessage) -> Option<QueuedMessage> {
    let (pool, place) = parse_subject(&m.subject)?;
    let (place, tier) = proto_place(&place);
    let mut q = QueuedMessage {
        sequence: m.sequence,
        pool,
        place: place as i32,
        tier,
        queued_at_ms: m.stored_at_ms,
        dead_reason: m.header(dead::REASON_HEADER),
        dead_detail: m.header(dead::DETAIL_HEADER),
        dead_deliveries: m.header(dead::DELIVERIES_HEADER).parse().unwrap_or(0),
        ..QueuedMessage::default()
    };
    // The head only: an inline body is skipped, not copied.
    let Ok(e) = EnvelopeHead::decode(m.payload.as_ref()) else {
        q.undecodable = true;
        return Some(q);
    };
    q.queue_id = if e.origin_id.is_empty() {
        e.id.clone()
    } else {
        e.origin_id.clone()
    };
    q.relay_domain = e.relay_domain;
    q.sender = e.reverse_path;
    q.size = e.size;
    q.received_at_ms = e.received_at_ms;
    q.attempts = e.attempt;
    q.next_attempt_ms = e.not_before_ms;
    q.kind = match EnvelopeKind::try_from(e.kind) {
        Ok(EnvelopeKind::Dsn) => "dsn",
        _ => "message",
    }
    .to_owned();
    q.client_address = e.client_address;
    q.authenticated_as = e.authenticated_as;
    q.helo = e.helo;
    q.large_body = !e.object_ref.is_empty();
    q.recipients = e
        .recipients
        .into_iter()
        .map(|r| {
            let last_reply = match &r.last {
                Some(reply) => one_line(reply),
                None => r.last_reply,
            };
            RecipientState {
                state: if last_reply.is_empty() {
                    "queued"
                } else {
                    "deferred"
                }
                .to_owned(),
                address: r.address,
                last_reply,
                last_remote: r.last_remote,
                last: r.last,
            }
        })
        .collect();
    Some(q)
}

/// A place as people name it: `new`, `retry-<tier>`, `held`, `dead`, `quarantine`.
pub fn place_name(place: i32, tier: u32) -> String {
    match v1::Place::try_from(place) {
        Ok(v1::Place::New) => "new".into(),
        Ok(v1::Place::Retry) => format!("retry-{tier}"),
        Ok(v1::Place::Held) => "held".into(),
        Ok(v1::Place::Dead) => "dead".into(),
        Ok(v1::Place::Quarantine) => "quarantine".into(),
        _ => "unknown".into(),
    }
}

/// `451 4.7.1 text more text`: the typed reply's one-line form (as logs and DSNs write it).
pub fn one_line(r: &SmtpReply) -> String {
    baton_core::outcome::reply_from_proto(r).to_string()
}

/// The domain of an address, lower-cased (empty without `@`).
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

/// Why a filter cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// The place number is not a known place.
    #[error("unknown place {0}")]
    Place(i32),
    /// A tier without the retry place.
    #[error("a tier is only meaningful with the retry place")]
    TierWithoutRetry,
    /// A name that cannot be part of a subject.
    #[error("pool {0:?} is not a SendingPool name")]
    Pool(String),
    /// An action needs at least one criterion.
    #[error("give at least one filter (pool, place, relay domain, sender, recipient, age, id)")]
    Empty,
}

/// A validated filter: the subject to read and the checks on each message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    filter: MessageFilter,
    place: v1::Place,
    sender: Sender,
    recipient: Recipient,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Sender {
    Any,
    Address(String),
    Domain(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Recipient {
    Any,
    Address(String),
    Domain(String),
}

impl Query {
    /// Validate `filter`.
    pub fn new(filter: MessageFilter) -> Result<Self, FilterError> {
        let place =
            v1::Place::try_from(filter.place).map_err(|_| FilterError::Place(filter.place))?;
        if filter.tier != 0 && place != v1::Place::Retry {
            return Err(FilterError::TierWithoutRetry);
        }
        let valid_pool = |p: &str| {
            p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !valid_pool(&filter.pool) {
            return Err(FilterError::Pool(filter.pool));
        }
        let s = filter.sender.trim().to_ascii_lowercase();
        let sender = if s.is_empty() {
            Sender::Any
        } else if let Some(d) = s.strip_prefix('@') {
            Sender::Domain(d.to_owned())
        } else {
            Sender::Address(s)
        };
        let r = filter.recipient.trim().to_ascii_lowercase();
        let recipient = if r.is_empty() {
            Recipient::Any
        } else if let Some(d) = r.strip_prefix('@') {
            Recipient::Domain(d.to_owned())
        } else if r.contains('@') {
            Recipient::Address(r)
        } else {
            Recipient::Domain(r)
        };
        Ok(Query {
            filter,
            place,
            sender,
            recipient,
        })
    }

    /// A filter an action may use: at least one criterion.
    pub fn for_action(filter: MessageFilter) -> Result<Self, FilterError> {
        if filter == MessageFilter::default() {
            return Err(FilterError::Empty);
        }
        Self::new(filter)
    }

    /// The same query limited to `place`.
    pub fn in_place(mut self, place: v1::Place) -> Self {
        self.place = place;
        self.filter.place = place as i32;
        if place != v1::Place::Retry {
            self.filter.tier = 0;
        }
        self
    }

    /// Stream sequences asked for explicitly (read one by one instead of scanning).
    pub fn sequences(&self) -> &[u64] {
        &self.filter.sequences
    }

    /// The subject filter to scan: as narrow as pool and place allow.
    pub fn subject(&self) -> String {
        let pool = if self.filter.pool.is_empty() {
            "*"
        } else {
            &self.filter.pool
        };
        match self.place {
            v1::Place::Unspecified => "baton.>".to_owned(),
            v1::Place::New => format!("baton.new.{pool}"),
            v1::Place::Dead => format!("baton.dead.{pool}"),
            v1::Place::Held => format!("baton.held.{pool}"),
            v1::Place::Quarantine => format!("baton.quarantine.{pool}"),
            v1::Place::Retry if self.filter.tier == 0 => format!("baton.retry.{pool}.*"),
            v1::Place::Retry => format!("baton.retry.{pool}.{}", self.filter.tier),
        }
    }

    /// Whether `m` (as [`describe`]d, `now_ms` being now) is selected.
    pub fn matches(&self, m: &QueuedMessage, now_ms: i64) -> bool {
        let f = &self.filter;
        if !f.pool.is_empty() && m.pool != f.pool {
            return false;
        }
        if self.place != v1::Place::Unspecified && m.place != self.place as i32 {
            return false;
        }
        if f.tier != 0 && m.tier != f.tier {
            return false;
        }
        if !f.sequences.is_empty() && !f.sequences.contains(&m.sequence) {
            return false;
        }
        if !f.queue_ids.is_empty() && !f.queue_ids.contains(&m.queue_id) {
            return false;
        }
        if !f.relay_domain.is_empty() {
            let hit = match f.relay_domain.strip_suffix('/') {
                Some(ns) => m.relay_domain.split_once('/').map(|(n, _)| n) == Some(ns),
                None => m.relay_domain == f.relay_domain,
            };
            if !hit {
                return false;
            }
        }
        let sender_hit = match &self.sender {
            Sender::Any => true,
            Sender::Address(a) => m.sender.eq_ignore_ascii_case(a),
            Sender::Domain(d) => domain_of(&m.sender) == *d,
        };
        let recipient_hit = match &self.recipient {
            Recipient::Any => true,
            Recipient::Address(a) => m
                .recipients
                .iter()
                .any(|r| r.address.eq_ignore_ascii_case(a)),
            Recipient::Domain(d) => m.recipients.iter().any(|r| domain_of(&r.address) == *d),
        };
        if !(sender_hit && recipient_hit) {
            return false;
        }
        if f.min_age_seconds > 0 {
            let age_ms = now_ms.saturating_sub(arrival_ms(m));
            if age_ms < (f.min_age_seconds as i64).saturating_mul(1000) {
                return false;
            }
        }
        true
    }
}

/// When a message arrived (at the ingress; for an undecodable one, when it was stored).
pub fn arrival_ms(m: &QueuedMessage) -> i64 {
    if m.received_at_ms > 0 {
        m.received_at_ms
    } else {
        m.queued_at_ms
    }
}

/// The `qshape` aggregation over described messages.
#[derive(Debug)]
pub struct Shape {
    now_ms: i64,
    places: HashMap<(String, i32, u32), ShapeRow>,
    domains: HashMap<(String, i32, u32, String), ShapeRow>,
    scanned: u64,
}

impl Shape {
    /// An empty summary as of `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Shape {
            now_ms,
            places: HashMap::new(),
            domains: HashMap::new(),
            scanned: 0,
        }
    }

    /// Count one message.
    pub fn add(&mut self, m: &QueuedMessage) {
        self.scanned += 1;
        let age_s = (self.now_ms.saturating_sub(arrival_ms(m)) / 1000).max(0) as u64;
        let key = (m.pool.clone(), m.place, m.tier);
        let row = self.places.entry(key).or_insert_with(|| ShapeRow {
            pool: m.pool.clone(),
            place: m.place,
            tier: m.tier,
            ..ShapeRow::default()
        });
        count(row, 1, m.recipients.len() as u64, m.size, age_s);
        let mut per_domain: HashMap<String, u64> = HashMap::new();
        for r in &m.recipients {
            *per_domain.entry(domain_of(&r.address)).or_default() += 1;
        }
        for (domain, recipients) in per_domain {
            let key = (m.pool.clone(), m.place, m.tier, domain.clone());
            let row = self.domains.entry(key).or_insert_with(|| ShapeRow {
                pool: m.pool.clone(),
                place: m.place,
                tier: m.tier,
                domain,
                ..ShapeRow::default()
            });
            count(row, 1, recipients, m.size, age_s);
        }
    }

    /// Messages counted.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// The rows: places in pool, place, tier order; per place its `top` largest domains
    /// (by messages, then name).
    pub fn finish(self, top: usize) -> (Vec<ShapeRow>, Vec<ShapeRow>) {
        let mut places: Vec<ShapeRow> = self.places.into_values().collect();
        places.sort_by(|a, b| (&a.pool, a.place, a.tier).cmp(&(&b.pool, b.place, b.tier)));
        let mut domains: Vec<ShapeRow> = self.domains.into_values().collect();
        domains.sort_by(|a, b| {
            (
                &a.pool,
                a.place,
                a.tier,
                std::cmp::Reverse(a.messages),
                &a.domain,
            )
                .cmp(&(
                    &b.pool,
                    b.place,
                    b.tier,
                    std::cmp::Reverse(b.messages),
                    &b.domain,
                ))
        });
        let mut kept = Vec::new();
        let mut run: Option<(String, i32, u32)> = None;
        let mut in_run = 0;
        for d in domains {
            let key = (d.pool.clone(), d.place, d.tier);
            if run.as_ref() != Some(&key) {
                run = Some(key);
                in_run = 0;
            }
            if in_run < top {
                kept.push(d);
            }
            in_run += 1;
        }
        (places, kept)
    }
}

fn count(row: &mut ShapeRow, messages: u64, recipients: u64, bytes: u64, age_s: u64) {
    if row.age_buckets.is_empty() {
        row.age_buckets = vec![0; AGE_BUCKET_MINUTES.len() + 1];
    }
    row.messages += messages;
    row.recipients += recipients;
    row.bytes += bytes;
    row.oldest_age_seconds = row.oldest_age_seconds.max(age_s);
    let column = AGE_BUCKET_MINUTES
        .iter()
        .position(|&m| age_s < u64::from(m) * 60)
        .unwrap_or(AGE_BUCKET_MINUTES.len());
    row.age_buckets[column] += messages;
}

/// Page tokens: the stream sequence to continue from, in decimal.
pub fn parse_page_token(token: &str) -> Result<u64, String> {
    if token.is_empty() {
        return Ok(1);
    }
    token
        .parse::<u64>()
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| format!("page token {token:?} is not one this API gave"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use baton_proto::v1::Recipient as Rcpt;
    use baton_proto::v1::{Envelope, envelope::Body};
    use bytes::Bytes;

    const NOW: i64 = 1_000_000_000_000;

    fn stored(subject: &str, seq: u64, e: &Envelope) -> StoredMessage {
        StoredMessage {
            sequence: seq,
            subject: subject.into(),
            stored_at_ms: NOW - 1000,
            headers: Default::default(),
            payload: Bytes::from(e.encode_to_vec()),
        }
    }

    fn envelope(id: &str, from: &str, to: &[&str], age_s: i64) -> Envelope {
        Envelope {
            id: id.into(),
            reverse_path: from.into(),
            relay_domain: "shop/main".into(),
            pool: "bulk".into(),
            received_at_ms: NOW - age_s * 1000,
            size: 100,
            recipients: to
                .iter()
                .map(|a| Rcpt {
                    address: (*a).into(),
                    ..Rcpt::default()
                })
                .collect(),
            body: Some(Body::InlineBody(b"x".to_vec().into())),
            ..Envelope::default()
        }
    }

    fn query(f: MessageFilter) -> Query {
        Query::new(f).unwrap()
    }

    #[test]
    fn a_retry_envelope_shows_its_origin_id_and_each_recipients_last_reply() {
        let mut e = envelope("r-2", "app@shop.test", &["a@x.test", "b@y.test"], 60);
        e.origin_id = "q-1".into();
        e.attempt = 2;
        e.recipients[0].last = Some(SmtpReply {
            code: 451,
            status_class: 4,
            status_subject: 7,
            status_detail: 1,
            lines: vec!["greylisted".into()],
        });
        e.recipients[0].last_remote = "mx.x.test".into();
        e.recipients[1].last_reply = "421 try later".into();
        let q = describe(&stored("baton.retry.bulk.2", 7, &e)).unwrap();
        assert_eq!(q.queue_id, "q-1");
        assert_eq!(
            (q.pool.as_str(), q.place, q.tier),
            ("bulk", v1::Place::Retry as i32, 2)
        );
        assert_eq!(q.attempts, 2);
        assert_eq!(q.recipients[0].state, "deferred");
        assert_eq!(q.recipients[0].last_reply, "451 4.7.1 greylisted");
        assert_eq!(q.recipients[0].last_remote, "mx.x.test");
        assert_eq!(q.recipients[1].last_reply, "421 try later");
        assert!(!q.undecodable && !q.large_body);
        e.body = Some(Body::ObjectRef("obj-1".into()));
        assert!(
            describe(&stored("baton.new.bulk", 8, &e))
                .unwrap()
                .large_body
        );
    }

    #[test]
    fn an_undecodable_dead_letter_is_still_listed_with_its_reason() {
        let mut m = stored("baton.dead.bulk", 9, &Envelope::default());
        m.payload = Bytes::from_static(b"\xff\xfe junk");
        m.headers.insert(dead::REASON_HEADER, "undecodable");
        m.headers.insert(dead::DELIVERIES_HEADER, "1");
        let q = describe(&m).unwrap();
        assert!(q.undecodable);
        assert_eq!(
            (q.dead_reason.as_str(), q.dead_deliveries),
            ("undecodable", 1)
        );
        assert_eq!(q.place, v1::Place::Dead as i32);
        assert!(describe(&stored("other.subject", 1, &Envelope::default())).is_none());
    }

    #[test]
    fn subjects_are_as_narrow_as_pool_and_place_allow() {
        let q = |pool: &str, place: v1::Place, tier| {
            query(MessageFilter {
                pool: pool.into(),
                place: place as i32,
                tier,
                ..Default::default()
            })
            .subject()
        };
        assert_eq!(q("", v1::Place::Unspecified, 0), "baton.>");
        assert_eq!(q("bulk", v1::Place::Unspecified, 0), "baton.>");
        assert_eq!(q("bulk", v1::Place::New, 0), "baton.new.bulk");
        assert_eq!(q("", v1::Place::Dead, 0), "baton.dead.*");
        assert_eq!(q("bulk", v1::Place::Held, 0), "baton.held.bulk");
        assert_eq!(q("bulk", v1::Place::Quarantine, 0), "baton.quarantine.bulk");
        assert_eq!(q("bulk", v1::Place::Retry, 0), "baton.retry.bulk.*");
        assert_eq!(q("bulk", v1::Place::Retry, 3), "baton.retry.bulk.3");
    }

    #[test]
    fn bad_filters_are_refused() {
        let bad = |f: MessageFilter| Query::new(f).unwrap_err();
        assert_eq!(
            bad(MessageFilter {
                place: 99,
                ..Default::default()
            }),
            FilterError::Place(99)
        );
        assert_eq!(
            bad(MessageFilter {
                tier: 1,
                ..Default::default()
            }),
            FilterError::TierWithoutRetry
        );
        assert!(matches!(
            bad(MessageFilter {
                pool: "a.>".into(),
                ..Default::default()
            }),
            FilterError::Pool(_)
        ));
        assert_eq!(
            Query::for_action(MessageFilter::default()).unwrap_err(),
            FilterError::Empty
        );
    }

    #[test]
    fn filters_select_by_every_criterion() {
        let e = envelope("q-1", "App@Shop.test", &["a@X.test", "b@y.test"], 600);
        let m = describe(&stored("baton.new.bulk", 3, &e)).unwrap();
        let hit = |f: MessageFilter| query(f).matches(&m, NOW);
        assert!(hit(MessageFilter::default()));
        for (f, want) in [
            (
                MessageFilter {
                    pool: "bulk".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    pool: "other".into(),
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    place: v1::Place::New as i32,
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    place: v1::Place::Dead as i32,
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    relay_domain: "shop/main".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    relay_domain: "shop/".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    relay_domain: "shop/other".into(),
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    relay_domain: "sho/".into(),
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    sender: "app@shop.test".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    sender: "@SHOP.test".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    sender: "@other.test".into(),
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    recipient: "x.test".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    recipient: "@y.test".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    recipient: "A@x.TEST".into(),
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    recipient: "c@x.test".into(),
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    recipient: "z.test".into(),
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    min_age_seconds: 599,
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    min_age_seconds: 601,
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    queue_ids: vec!["q-1".into()],
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    queue_ids: vec!["q-2".into()],
                    ..Default::default()
                },
                false,
            ),
            (
                MessageFilter {
                    sequences: vec![3],
                    ..Default::default()
                },
                true,
            ),
            (
                MessageFilter {
                    sequences: vec![4],
                    ..Default::default()
                },
                false,
            ),
        ] {
            assert_eq!(hit(f.clone()), want, "{f:?}");
        }
    }

    #[test]
    fn the_shape_counts_places_domains_and_ages() {
        let mut shape = Shape::new(NOW);
        let a = envelope(
            "1",
            "s@shop.test",
            &["a@x.test", "b@x.test", "c@y.test"],
            60,
        );
        let b = envelope("2", "s@shop.test", &["d@x.test"], 30 * 60);
        let c = envelope("3", "s@shop.test", &["e@z.test"], 2 * 86_400);
        for (subject, e) in [
            ("baton.new.bulk", &a),
            ("baton.new.bulk", &b),
            ("baton.retry.bulk.1", &c),
        ] {
            shape.add(&describe(&stored(subject, 1, e)).unwrap());
        }
        assert_eq!(shape.scanned(), 3);
        let (places, domains) = shape.finish(1);
        assert_eq!(places.len(), 2);
        let new = &places[0];
        assert_eq!(
            (new.place, new.messages, new.recipients, new.bytes),
            (v1::Place::New as i32, 2, 4, 200)
        );
        assert_eq!(new.oldest_age_seconds, 30 * 60);
        // 1 minute: first column (< 5); 30 minutes: fourth (< 40).
        assert_eq!(new.age_buckets, [1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        let retry = &places[1];
        assert_eq!((retry.place, retry.tier), (v1::Place::Retry as i32, 1));
        assert_eq!(retry.age_buckets[9], 1, "older than 1280 minutes");
        // Top 1 domain per place: x.test (2 messages, 3 recipients) beats y.test.
        assert_eq!(domains.len(), 2);
        assert_eq!(
            (
                domains[0].domain.as_str(),
                domains[0].messages,
                domains[0].recipients
            ),
            ("x.test", 2, 3)
        );
        assert_eq!(domains[1].domain, "z.test");
    }

    #[test]
    fn page_tokens_are_sequences() {
        assert_eq!(parse_page_token(""), Ok(1));
        assert_eq!(parse_page_token("42"), Ok(42));
        assert!(parse_page_token("0").is_err());
        assert!(parse_page_token("x").is_err());
    }
}
