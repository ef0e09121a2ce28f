//! The `baton.v1.Admin` service: each call checks the caller's permission, reads the queue
//! through [`Inspector`] and applies the pure [`crate::view`] logic. Writes (requeue, delete)
//! are logged with the caller's name, one line per message.
//!
//! A requeue publishes the dead letter's payload unchanged to its pool's fresh-mail lane with
//! the deterministic `Nats-Msg-Id` `requeue-<sequence>`, awaits the PubAck, and only then
//! deletes the dead letter: a crash in between leaves the dead letter in place (a second
//! requeue inside the duplicate window is stored once), never a loss.

use std::time::Instant;

use baton_core::hold::{Hold, Target};
use baton_proto::Message as _;
use baton_proto::v1::{
    self, ActionResponse, DeleteMessagesRequest, GetMessageRequest, GetMessageResponse,
    GetStatusRequest, GetStatusResponse, HoldEntry, HoldRequest, HoldResponse, HoldTarget,
    ListHoldsRequest, ListHoldsResponse, ListMessagesRequest, ListMessagesResponse, MessageFilter,
    MessagePart, QueueSummaryRequest, QueueSummaryResponse, QueuedMessage,
    ReleaseQuarantinedRequest, ReleaseRequest, RequeueDeadRequest, admin_server::Admin,
    envelope::Body,
};
use baton_proto::v1::{
    BounceRequest, GetTraceRequest, GetTraceResponse, RetryNowRequest, TraceEvent,
};
use baton_queue::holds::HoldStore;
use baton_queue::inspect::StoredMessage;
use baton_queue::{ConfigStore, Inspector, Publisher, STREAM};
use bytes::Bytes;
use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Authenticator, Caller, Permission};
use crate::server::Bearer;
use crate::view::{self, Query, Shape};

/// Most messages one list page returns.
pub const MAX_PAGE: usize = 1000;
/// Most messages an action's answer lists (all matched are acted on).
pub const MAX_LISTED: usize = 1000;
/// Most body bytes `GetMessage` returns per part.
pub const MAX_BODY: usize = 1024 * 1024;
/// After a hold is removed, how long workers get to see it (their KV watch) before held mail
/// is moved back; mail a slower worker holds once more is released by the next sweep.
pub const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The Admin service over one NATS connection (the admin identity).
#[derive(Clone)]
pub struct AdminService {
    auth: std::sync::Arc<dyn Authenticator>,
    inspector: Inspector,
    publisher: Publisher,
    js: async_nats::jetstream::Context,
    role: &'static str,
}

/// Whether a scan goes on after a message.
enum Flow {
    Next,
    Stop,
}

impl AdminService {
    /// The queue ids a Message-ID was sent with (its index records in the event stream), as
    /// far as the caller may see them.
    async fn queue_ids_of_message_id(
        &self,
        message_id: &str,
        c: &Caller,
    ) -> Result<Vec<String>, Status> {
        let subject = baton_core::event::message_id_subject(message_id);
        let batch = self
            .inspector
            .batch_in(baton_queue::events::EVENT_STREAM, &subject, 1, 64)
            .await
            .map_err(unavailable)?;
        let mut ids = Vec::new();
        for m in batch.messages {
            let json: serde_json::Value = serde_json::from_slice(&m.payload).unwrap_or_default();
            let (Some(qid), rd) = (
                json["queueId"].as_str(),
                json["relayDomain"].as_str().unwrap_or_default(),
            ) else {
                continue;
            };
            if c.sees(rd) && !ids.iter().any(|i| i == qid) {
                ids.push(qid.to_owned());
            }
        }
        Ok(ids)
    }

    /// The events of one queue id the caller may see, oldest first.
    async fn events_of(&self, id: &str, c: &Caller) -> Result<Vec<TraceEvent>, Status> {
        let filter = baton_core::event::trace_filter(id);
        let mut events = Vec::new();
        let mut next = 1;
        loop {
            let batch = self
                .inspector
                .batch_in(
                    baton_queue::events::EVENT_STREAM,
                    &filter,
                    next,
                    baton_queue::inspect::SCAN_BATCH,
                )
                .await
                .map_err(unavailable)?;
            for m in batch.messages {
                let json: serde_json::Value =
                    serde_json::from_slice(&m.payload).unwrap_or_default();
                let relay_domain = json["data"]["relayDomain"].as_str().unwrap_or_default();
                if !c.sees(relay_domain) {
                    continue;
                }
                events.push(TraceEvent {
                    sequence: m.sequence,
                    r#type: m.subject.rsplit('.').next().unwrap_or_default().to_owned(),
                    time_ms: m.stored_at_ms,
                    cloud_event: String::from_utf8_lossy(&m.payload).into_owned(),
                });
            }
            if batch.next == 0 {
                break;
            }
            next = batch.next;
        }
        Ok(events)
    }

    /// A service reading and writing through `js` (made from `client`), checking callers with
    /// `auth`; `role` is what `GetStatus` reports (`admin`, `dev`, `operator`).
    pub fn new(
        client: async_nats::Client,
        js: async_nats::jetstream::Context,
        auth: std::sync::Arc<dyn Authenticator>,
        role: &'static str,
    ) -> Self {
        AdminService {
            auth,
            inspector: Inspector::new(client, js.clone()),
            publisher: Publisher::new(js.clone(), std::time::Duration::from_secs(10)).with_events(
                baton_queue::events::Events::new(
                    js.clone(),
                    &format!("baton/api/{role}"),
                    std::sync::Arc::new(|kind, stored| {
                        if !stored {
                            tracing::warn!(event = kind, "operations API: event not stored");
                        }
                    }),
                ),
            ),
            js,
            role,
        }
    }

    /// Visit the messages `query` selects that `caller` sees, from sequence `from` in stream
    /// order, until `visit` says stop. Returns the sequence to resume from when stopped.
    async fn scan(
        &self,
        query: &Query,
        caller: &Caller,
        from: u64,
        mut visit: impl FnMut(StoredMessage, QueuedMessage) -> Flow,
    ) -> Result<Option<u64>, Status> {
        let now = now_ms();
        let select = |stored: &StoredMessage| {
            view::describe(stored).filter(|q| caller.sees(&q.relay_domain) && query.matches(q, now))
        };
        if !query.sequences().is_empty() {
            let mut sequences = query.sequences().to_vec();
            sequences.sort_unstable();
            sequences.dedup();
            for seq in sequences.into_iter().filter(|&s| s >= from) {
                if let Some(m) = self.inspector.get(seq).await.map_err(unavailable)?
                    && let Some(q) = select(&m)
                    && let Flow::Stop = visit(m, q)
                {
                    return Ok(Some(seq));
                }
            }
            return Ok(None);
        }
        let subject = query.subject();
        let mut next = from;
        loop {
            let batch = self
                .inspector
                .batch(&subject, next, baton_queue::inspect::SCAN_BATCH)
                .await
                .map_err(unavailable)?;
            for m in batch.messages {
                let seq = m.sequence;
                if let Some(q) = select(&m)
                    && let Flow::Stop = visit(m, q)
                {
                    return Ok(Some(seq));
                }
            }
            if batch.next == 0 {
                return Ok(None);
            }
            next = batch.next;
        }
    }

    /// Every selected message the caller sees (stored and described).
    async fn collect(
        &self,
        query: &Query,
        caller: &Caller,
    ) -> Result<Vec<(StoredMessage, QueuedMessage)>, Status> {
        let mut out = Vec::new();
        self.scan(query, caller, 1, |s, q| {
            out.push((s, q));
            Flow::Next
        })
        .await?;
        Ok(out)
    }

    async fn body(&self, stored: &StoredMessage, limit: usize) -> Result<(Bytes, bool), Status> {
        let Ok(e) = v1::Envelope::decode(stored.payload.clone()) else {
            let n = stored.payload.len().min(limit);
            return Ok((stored.payload.slice(..n), stored.payload.len() > n));
        };
        let at_store = baton_queue::BodyRef::of(&e);
        match e.body {
            Some(Body::InlineBody(b)) => {
                let truncated = b.len() > limit;
                Ok((b.slice(..b.len().min(limit)), truncated))
            }
            Some(Body::ObjectRef(name)) => match at_store {
                Some(at) => self
                    .inspector
                    .body_prefix(&at, limit)
                    .await
                    .map_err(|e| Status::unavailable(format!("large body {name}: {e}"))),
                None => Ok((Bytes::new(), false)),
            },
            None => Ok((Bytes::new(), false)),
        }
    }
}

impl AdminService {
    async fn holds(&self) -> Result<HoldStore, Status> {
        HoldStore::open(&self.js).await.map_err(unavailable)
    }

    /// Move the held mail `caller` sees that no hold covers any more back to its pool's
    /// fresh-mail lane (publish with `Nats-Msg-Id` `release-<sequence>`, then delete), and
    /// return it. The API runs this after every release and every [`crate::server`] sweep
    /// interval, so mail held by a worker that had not yet seen a release is freed too.
    pub async fn release_unheld(&self, caller: &Caller) -> Result<Vec<QueuedMessage>, Status> {
        let holds = self.holds().await?.list().await.map_err(unavailable)?;
        let q = Query::new(MessageFilter::default())
            .map_err(|e| Status::internal(e.to_string()))?
            .in_place(v1::Place::Held);
        let found = self.collect(&q, caller).await?;
        let mut moved = Vec::new();
        for (stored, m) in found {
            let rcpts: Vec<&str> = m.recipients.iter().map(|r| r.address.as_str()).collect();
            if matches!(
                holds.verdict(&m.pool, &m.relay_domain, &m.queue_id, &rcpts),
                baton_core::hold::Verdict::All(_)
            ) {
                continue;
            }
            self.move_one(caller, "release", &m, stored.payload, None)
                .await?;
            moved.push(m);
        }
        Ok(moved)
    }
}

impl AdminService {
    /// Moves every message of `place` that `filter` selects back to its pool's fresh-mail
    /// lane (`action` names it in ids, logs and events): dead-letter requeue and quarantine
    /// release.
    async fn back_to_fresh(
        &self,
        c: &Caller,
        filter: Option<v1::MessageFilter>,
        place: v1::Place,
        action: &str,
    ) -> Result<Response<ActionResponse>, Status> {
        let q = query(filter, true)?.in_place(place);
        let found = self.collect(&q, c).await?;
        let matched = found.len() as u64;
        let mut done = Vec::new();
        for (stored, m) in found {
            self.move_one(c, action, &m, stored.payload, None).await?;
            if done.len() < MAX_LISTED {
                done.push(m);
            }
        }
        Ok(Response::new(ActionResponse {
            executed: true,
            messages: done,
            matched,
        }))
    }

    /// Move one stored message to its pool's fresh-mail lane as `payload`: publish with
    /// `Nats-Msg-Id` `<action>-<sequence>` (a repeat is stored once), await the PubAck, then
    /// delete the original; log it with the caller and emit the action's event (`reason`: an
    /// operator bounce's). `action` is `release`, `release-quarantine`, `requeue`, `retry-now`
    /// or `bounce`.
    async fn move_one(
        &self,
        caller: &Caller,
        action: &str,
        m: &QueuedMessage,
        payload: Bytes,
        reason: Option<&str>,
    ) -> Result<(), Status> {
        use baton_core::event::EventType;
        let subject = baton_queue::new_subject(&m.pool);
        self.publisher
            .publish_raw(&subject, &format!("{action}-{}", m.sequence), payload)
            .await
            .map_err(unavailable)?;
        self.inspector
            .delete(&m.pool, m.sequence, action)
            .await
            .map_err(unavailable)?;
        let what = match action {
            "release" => "held mail released",
            "requeue" => "dead letter requeued",
            "release-quarantine" => "quarantined mail released",
            _ => "moved",
        };
        tracing::info!(
            caller = %caller.name, action, sequence = m.sequence,
            queue_id = %m.queue_id, pool = %m.pool, relay_domain = %m.relay_domain,
            "operations API: {what} to {subject}"
        );
        let kind = match action {
            "release" | "release-quarantine" => EventType::Released,
            "bounce" => EventType::OperatorBounced,
            "retry-now" => EventType::Retried,
            _ => EventType::Requeued,
        };
        let mut event = action_event(kind, caller, m);
        if let Some(r) = reason {
            event = event.with("reason", r);
        }
        self.publisher.emit(event);
        Ok(())
    }

    /// Move `found` to their pools' fresh-mail lanes with `change` applied to each envelope:
    /// publish with `Nats-Msg-Id` `<action>-<sequence>`, await the PubAck, then delete the
    /// original; log each with the caller. Undecodable payloads are skipped.
    async fn move_to_new(
        &self,
        caller: &Caller,
        action: &str,
        found: Vec<(StoredMessage, QueuedMessage)>,
        change: impl Fn(&mut v1::Envelope),
    ) -> Result<ActionResponse, Status> {
        let mut moved = Vec::new();
        let mut matched = 0;
        for (stored, m) in found {
            let Ok(mut env) = v1::Envelope::decode(stored.payload.as_ref()) else {
                continue;
            };
            matched += 1;
            change(&mut env);
            let reason = (!env.operator_bounce.is_empty()).then_some(env.operator_bounce.as_str());
            self.move_one(caller, action, &m, Bytes::from(env.encode_to_vec()), reason)
                .await?;
            if moved.len() < MAX_LISTED {
                moved.push(m);
            }
        }
        Ok(ActionResponse {
            executed: true,
            messages: moved,
            matched,
        })
    }
}

/// The delivery event of an operator's action on a stored message.
fn action_event(
    kind: baton_core::event::EventType,
    caller: &Caller,
    m: &QueuedMessage,
) -> baton_core::event::Event {
    baton_core::event::Event::new(
        kind,
        &m.queue_id,
        &m.relay_domain,
        now_ms(),
        m.sequence.to_string(),
    )
    .with("by", caller.name.as_str())
    .with("pool", m.pool.as_str())
    .with("sequence", m.sequence)
    .with("place", crate::view::place_name(m.place, m.tier))
}

/// A validated hold target that `caller` may act on: a RelayDomain of its namespaces, or
/// anything when it is not limited to namespaces.
fn target(t: Option<HoldTarget>, caller: &Caller) -> Result<Target, Status> {
    let t = t.unwrap_or_default();
    let target =
        Target::parse(&t.kind, &t.value).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let allowed = match &target {
        Target::RelayDomain(rd) => caller.sees(rd),
        _ => caller.unscoped(),
    };
    if !allowed {
        return Err(Status::permission_denied(format!(
            "{} is limited to namespaces {}: it may hold only their RelayDomains",
            caller.name,
            caller.namespaces.join(",")
        )));
    }
    Ok(target)
}

fn hold_entry(h: &Hold) -> HoldEntry {
    HoldEntry {
        target: Some(HoldTarget {
            kind: h.target.kind().to_owned(),
            value: h.target.value().to_owned(),
        }),
        reason: h.reason.clone(),
        by: h.by.clone(),
        created_ms: h.created_ms,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn unavailable(e: baton_queue::QueueError) -> Status {
    Status::unavailable(format!("queue: {e}"))
}

fn query(filter: Option<MessageFilter>, action: bool) -> Result<Query, Status> {
    let filter = filter.unwrap_or_default();
    let q = if action {
        Query::for_action(filter)
    } else {
        Query::new(filter)
    };
    q.map_err(|e| Status::invalid_argument(e.to_string()))
}

impl AdminService {
    /// The caller of `req` (its bearer token, put there by [`crate::server`], authenticated),
    /// if it has `need`.
    async fn caller<T>(
        &self,
        req: &Request<T>,
        need: Permission,
        what: &str,
    ) -> Result<Caller, Status> {
        let Bearer(token) = req
            .extensions()
            .get::<Bearer>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no bearer token"))?;
        let c = match self.auth.authenticate(&token).await {
            Ok(c) => c,
            Err(AuthError::Unknown) => {
                tracing::warn!("operations API: unknown token refused");
                return Err(Status::unauthenticated("unknown token"));
            }
            Err(AuthError::Forbidden(why)) => {
                tracing::warn!(%why, "operations API: caller without any permission refused");
                return Err(Status::permission_denied(why));
            }
            Err(e @ AuthError::Unavailable(_)) => return Err(Status::unavailable(e.to_string())),
        };
        if c.permission < need {
            return Err(Status::permission_denied(format!(
                "{} has the {} permission; {what} needs {}",
                c.name,
                c.permission.label(),
                need.label()
            )));
        }
        Ok(c)
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn get_status(
        &self,
        req: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let c = self.caller(&req, Permission::Viewer, "status").await?;
        let mut out = GetStatusResponse {
            role: self.role.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            nats_server_version: self.js.client().server_info().version,
            caller: c.name.clone(),
            caller_permission: c.permission.label().to_owned(),
            caller_namespaces: c.namespaces.clone(),
            ..GetStatusResponse::default()
        };
        if let Ok(mut stream) = self.js.get_stream(STREAM).await
            && let Ok(info) = stream.info().await
        {
            out.queue_messages = info.state.messages;
            out.queue_bytes = info.state.bytes;
            out.queue_replicas = info.config.num_replicas as u32;
            out.queue_leader = info
                .cluster
                .as_ref()
                .map(|c| c.leader.is_some())
                .unwrap_or(true);
            out.ready = baton_queue::is_connected(&self.js.client());
        }
        if let Ok(registry) = baton_queue::processes::Processes::open(&self.js).await
            && let Ok(beats) = registry.list().await
        {
            out.processes = beats
                .into_iter()
                .map(|b| v1::ProcessStatus {
                    role: b.role,
                    pool: b.pool,
                    instance: b.instance,
                    version: b.version,
                    config_generation: b.generation,
                    ready: b.ready,
                    reported_at_ms: b.at_ms,
                })
                .collect();
        }
        if let Ok(store) = ConfigStore::open(&self.js).await
            && let Ok(Some(config)) = store.get().await
        {
            out.config_generation = config.generation;
        }
        Ok(Response::new(out))
    }

    async fn get_queue_summary(
        &self,
        req: Request<QueueSummaryRequest>,
    ) -> Result<Response<QueueSummaryResponse>, Status> {
        let c = self.caller(&req, Permission::Viewer, "the summary").await?;
        let r = req.into_inner();
        let q = query(r.filter, false)?;
        let top = match r.top_domains {
            0 => 20,
            n => n.min(1000) as usize,
        };
        let started = Instant::now();
        let mut shape = Shape::new(now_ms());
        self.scan(&q, &c, 1, |_, m| {
            shape.add(&m);
            Flow::Next
        })
        .await?;
        let scanned = shape.scanned();
        let (places, domains) = shape.finish(top);
        Ok(Response::new(QueueSummaryResponse {
            places,
            domains,
            age_bucket_minutes: view::AGE_BUCKET_MINUTES.to_vec(),
            scanned,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }))
    }

    async fn list_messages(
        &self,
        req: Request<ListMessagesRequest>,
    ) -> Result<Response<ListMessagesResponse>, Status> {
        let c = self.caller(&req, Permission::Viewer, "listing").await?;
        let r = req.into_inner();
        let q = query(r.filter, false)?;
        let from = view::parse_page_token(&r.page_token).map_err(Status::invalid_argument)?;
        let size = match r.page_size {
            0 => 100,
            n => (n as usize).min(MAX_PAGE),
        };
        let mut messages = Vec::new();
        let resume = self
            .scan(&q, &c, from, |_, m| {
                if messages.len() == size {
                    return Flow::Stop;
                }
                messages.push(m);
                Flow::Next
            })
            .await?;
        Ok(Response::new(ListMessagesResponse {
            messages,
            next_page_token: resume.map(|s| s.to_string()).unwrap_or_default(),
        }))
    }

    async fn get_message(
        &self,
        req: Request<GetMessageRequest>,
    ) -> Result<Response<GetMessageResponse>, Status> {
        let c = self
            .caller(&req, Permission::Viewer, "showing a message")
            .await?;
        let r = req.into_inner();
        let id = r.id.trim().to_owned();
        if id.is_empty() {
            return Err(Status::invalid_argument(
                "give a queue id or a stream sequence",
            ));
        }
        let filter = match id.parse::<u64>() {
            Ok(seq) => MessageFilter {
                sequences: vec![seq],
                ..MessageFilter::default()
            },
            Err(_) => MessageFilter {
                queue_ids: vec![id.clone()],
                ..MessageFilter::default()
            },
        };
        let found = self.collect(&query(Some(filter), false)?, &c).await?;
        if found.is_empty() {
            return Err(Status::not_found(format!("no queued message {id}")));
        }
        let limit = (r.body_bytes as usize).min(MAX_BODY);
        let mut parts = Vec::new();
        for (stored, message) in found {
            let (body, body_truncated) = if limit > 0 {
                self.body(&stored, limit).await?
            } else {
                (Bytes::new(), false)
            };
            parts.push(MessagePart {
                message: Some(message),
                body: body.to_vec(),
                body_truncated,
            });
        }
        Ok(Response::new(GetMessageResponse { parts }))
    }

    async fn requeue_dead(
        &self,
        req: Request<RequeueDeadRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let c = self.caller(&req, Permission::Admin, "requeue").await?;
        self.back_to_fresh(&c, req.into_inner().filter, v1::Place::Dead, "requeue")
            .await
    }

    async fn release_quarantined(
        &self,
        req: Request<ReleaseQuarantinedRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let c = self.caller(&req, Permission::Admin, "release").await?;
        self.back_to_fresh(
            &c,
            req.into_inner().filter,
            v1::Place::Quarantine,
            "release-quarantine",
        )
        .await
    }

    async fn delete_messages(
        &self,
        req: Request<DeleteMessagesRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let c = self.caller(&req, Permission::Admin, "delete").await?;
        let r = req.into_inner();
        let q = query(r.filter, true)?;
        let found = self.collect(&q, &c).await?;
        let matched = found.len() as u64;
        let mut listed = Vec::new();
        for (_, m) in found {
            if r.confirm {
                let deleted = self
                    .inspector
                    .delete(&m.pool, m.sequence, "delete")
                    .await
                    .map_err(unavailable)?;
                tracing::info!(
                    caller = %c.name, action = "delete", sequence = m.sequence, deleted,
                    queue_id = %m.queue_id, pool = %m.pool, relay_domain = %m.relay_domain,
                    "operations API: queued message deleted"
                );
                if deleted {
                    self.publisher.emit(action_event(
                        baton_core::event::EventType::Deleted,
                        &c,
                        &m,
                    ));
                }
            }
            if listed.len() < MAX_LISTED {
                listed.push(m);
            }
        }
        if !r.confirm {
            tracing::info!(caller = %c.name, action = "delete", matched, "operations API: delete without confirmation, nothing deleted");
        }
        Ok(Response::new(ActionResponse {
            executed: r.confirm,
            messages: listed,
            matched,
        }))
    }

    async fn hold(&self, req: Request<HoldRequest>) -> Result<Response<HoldResponse>, Status> {
        let c = self.caller(&req, Permission::Admin, "hold").await?;
        let r = req.into_inner();
        let hold = Hold {
            target: target(r.target, &c)?,
            reason: r
                .reason
                .chars()
                .filter(|ch| !ch.is_control())
                .take(500)
                .collect(),
            by: c.name.clone(),
            created_ms: now_ms(),
        };
        self.holds().await?.put(&hold).await.map_err(unavailable)?;
        tracing::info!(
            caller = %c.name, action = "hold", hold = %hold.target.describe(), reason = %hold.reason,
            "operations API: hold placed"
        );
        Ok(Response::new(HoldResponse {
            hold: Some(hold_entry(&hold)),
        }))
    }

    async fn release(
        &self,
        req: Request<ReleaseRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let c = self.caller(&req, Permission::Admin, "release").await?;
        let t = target(req.into_inner().target, &c)?;
        let was_held = self.holds().await?.remove(&t).await.map_err(unavailable)?;
        if !was_held {
            return Err(Status::not_found(format!("no hold on {}", t.describe())));
        }
        tracing::info!(caller = %c.name, action = "release", hold = %t.describe(), "operations API: hold removed");
        tokio::time::sleep(RELEASE_GRACE).await;
        let moved = self.release_unheld(&c).await?;
        Ok(Response::new(ActionResponse {
            executed: true,
            matched: moved.len() as u64,
            messages: moved.into_iter().take(MAX_LISTED).collect(),
        }))
    }

    async fn list_holds(
        &self,
        req: Request<ListHoldsRequest>,
    ) -> Result<Response<ListHoldsResponse>, Status> {
        let c = self
            .caller(&req, Permission::Viewer, "listing holds")
            .await?;
        let holds = self.holds().await?.list().await.map_err(unavailable)?;
        Ok(Response::new(ListHoldsResponse {
            holds: holds
                .list()
                .filter(|h| match &h.target {
                    Target::RelayDomain(rd) => c.sees(rd),
                    _ => true,
                })
                .map(hold_entry)
                .collect(),
        }))
    }

    async fn retry_now(
        &self,
        req: Request<RetryNowRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let c = self.caller(&req, Permission::Admin, "retry now").await?;
        let q = query(req.into_inner().filter, true)?.in_place(v1::Place::Retry);
        let found = self.collect(&q, &c).await?;
        let r = self
            .move_to_new(&c, "retry-now", found, |e| e.not_before_ms = 0)
            .await?;
        Ok(Response::new(r))
    }

    async fn bounce(
        &self,
        req: Request<BounceRequest>,
    ) -> Result<Response<ActionResponse>, Status> {
        let c = self.caller(&req, Permission::Admin, "bounce").await?;
        let r = req.into_inner();
        let reason: String = r
            .reason
            .trim()
            .chars()
            .filter(|ch| !ch.is_control())
            .take(200)
            .collect();
        if reason.is_empty() {
            return Err(Status::invalid_argument(
                "a bounce needs a reason (it goes into the DSN)",
            ));
        }
        let q = query(r.filter, true)?;
        let found = self.collect(&q, &c).await?;
        let r = self
            .move_to_new(&c, "bounce", found, |e| {
                e.operator_bounce = reason.clone();
                e.not_before_ms = 0;
            })
            .await?;
        Ok(Response::new(r))
    }

    async fn get_trace(
        &self,
        req: Request<GetTraceRequest>,
    ) -> Result<Response<GetTraceResponse>, Status> {
        let c = self.caller(&req, Permission::Viewer, "a trace").await?;
        let id = req.into_inner().queue_id.trim().to_owned();
        if id.is_empty() {
            return Err(Status::invalid_argument("give a queue id or a Message-ID"));
        }
        // A Message-ID (it has an `@`; queue ids never do): its index records name the queue
        // ids of every message sent with it.
        let queue_ids = if id.contains('@') {
            self.queue_ids_of_message_id(&id, &c).await?
        } else {
            vec![id.clone()]
        };
        // Per message: its `accepted` first (the ingress publishes it in the background, so
        // a fast worker's first events can be stored before it), then in stream order;
        // messages in the order they were first seen.
        let mut timelines = Vec::new();
        for qid in &queue_ids {
            let mut t = self.events_of(qid, &c).await?;
            t.sort_by_key(|e| (e.r#type != "accepted", e.sequence));
            if !t.is_empty() {
                timelines.push(t);
            }
        }
        timelines.sort_by_key(|t| t.iter().map(|e| e.sequence).min());
        let events: Vec<TraceEvent> = timelines.into_iter().flatten().collect();
        if events.is_empty() {
            return Err(Status::not_found(format!("no events of {id}")));
        }
        Ok(Response::new(GetTraceResponse { events }))
    }
}
