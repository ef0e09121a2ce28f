//! Least-privilege NATS identities: which subjects each Baton role may publish to and
//! subscribe to, and the nats-server `authorization` block that grants exactly that.
//!
//! Roles (one NATS user each):
//! - **ingress** (`baton-ingress`): publish fresh mail to every pool's `baton.new.<pool>`
//!   (quarantined mail to `baton.quarantine.<pool>`) and upload large bodies into each pool's
//!   own Object Store bucket (`baton-bodies-<pool>`; it reads no body back); read the config
//!   snapshot and the suppression lists, and add suppressions from reports received at a
//!   return path; read the stream settings it verifies; read the limits bucket and write its
//!   inbound entries (`baton-limits`, keys `in.>`: shared budgets and AUTH lockouts). It
//!   cannot consume, acknowledge, delete, publish to a retry lane or write the configuration.
//! - **worker of pool P** (`baton-worker-<P>`): consume and acknowledge P's lanes only
//!   (`P-new`, `P-retry-<i>`), publish P's retry tiers and P's fresh lane (DSNs, delay
//!   notices), read and delete the large bodies in P's bucket (and, until its owner deletes
//!   it once empty, in the shared `baton-bodies` of earlier versions), add suppressions, read
//!   the snapshot; read the limits bucket and write P's outbound entries (keys `out.<P>.>`);
//!   read P's records of moved messages (`baton-moved`, keys `<P>.>`). It reads no queued
//!   message except through its own lanes, and no other pool's large body.
//! - **admin** (`baton-admin`): the operator, `baton config apply` and the `baton
//!   suppression` CLI: provision Baton's streams, buckets (each pool's large-body bucket
//!   included) and lane consumers, write the snapshot and the suppression lists, read
//!   consumer state; and the operations API (`baton admin`, `baton dev`): read queued mail
//!   without consuming it (batched direct gets), delete a stored message (recording the move
//!   in `baton-moved` first), requeue a dead letter to a pool's fresh-mail lane, read large
//!   bodies. It does not consume or acknowledge mail.
//!
//! - **webhooks** (`baton-webhooks`): the EventSink dispatchers: read the snapshot, create,
//!   pull and acknowledge the sinks' consumers on the event stream, write the sinks' delivery
//!   records. No mail, no events, no other bucket.
//!
//! Every role receives its JetStream replies on its own inbox prefix (`_INBOX.<user>`), so no
//! role can read another's replies (a KV read of the snapshot, a fetched message).
//!
//! Pure: subjects and text only. The passwords are not in the block: it references environment
//! variables (`$BATON_NATS_PASSWORD_INGRESS`, ...) that nats-server resolves at start.

use std::fmt::Write as _;

use crate::LaneKind;
use crate::{
    BODY_BUCKET, CONFIG_BUCKET, HOLD_BUCKET, LIMITS_BUCKET, MOVED_BUCKET, PROCESS_BUCKET,
    SINK_STATUS_BUCKET, STREAM, SUPPRESSION_BUCKET, consumer_name,
};

/// A Baton role towards NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The SMTP ingress.
    Ingress,
    /// The delivery workers of one pool, with its number of retry tiers.
    Worker {
        /// The SendingPool.
        pool: String,
        /// Its retry tiers.
        tiers: u32,
    },
    /// The operator, `config apply` and the admin CLIs.
    Admin,
    /// The webhook dispatchers (`baton webhooks`).
    Webhooks,
}

impl Role {
    /// The NATS user name of the role.
    pub fn user(&self) -> String {
        match self {
            Role::Ingress => "baton-ingress".to_owned(),
            Role::Worker { pool, .. } => format!("baton-worker-{pool}"),
            Role::Admin => "baton-admin".to_owned(),
            Role::Webhooks => "baton-webhooks".to_owned(),
        }
    }

    /// The environment variable the generated block reads the role's password from.
    pub fn password_env(&self) -> String {
        let suffix = match self {
            Role::Ingress => "INGRESS".to_owned(),
            Role::Worker { pool, .. } => format!("WORKER_{pool}"),
            Role::Admin => "ADMIN".to_owned(),
            Role::Webhooks => "WEBHOOKS".to_owned(),
        };
        format!(
            "BATON_NATS_PASSWORD_{}",
            suffix.replace('-', "_").to_ascii_uppercase()
        )
    }

    /// The subjects the role may publish to and subscribe to, in a deployment without pools.
    pub fn permissions(&self) -> Permissions {
        self.permissions_among(&[])
    }

    /// The subjects the role may publish to and subscribe to in a deployment of `roles`: the
    /// ingress and the admin also get each pool's large-body bucket (`baton-bodies-<pool>`)
    /// of the worker roles among them — the ingress to upload, the admin to create and show.
    pub fn permissions_among(&self, roles: &[Role]) -> Permissions {
        if *self == Role::Webhooks {
            return webhooks_permissions(self);
        }
        let pools: Vec<&str> = roles
            .iter()
            .filter_map(|r| match r {
                Role::Worker { pool, .. } => Some(pool.as_str()),
                _ => None,
            })
            .collect();
        let api = |s: &str| format!("$JS.API.{s}");
        let kv = |bucket: &str| format!("KV_{bucket}");
        let obj = format!("OBJ_{BODY_BUCKET}");
        // Every role publishes delivery events (`crate::events`).
        let mut publish = vec![api("INFO"), "baton.events.>".to_owned()];
        // Stream settings every process verifies, and the snapshot every process reads
        // (direct gets, and the ordered consumer of a watch with its flow control).
        for stream in [
            STREAM.to_owned(),
            kv(CONFIG_BUCKET),
            obj.clone(),
            kv(SUPPRESSION_BUCKET),
            kv(HOLD_BUCKET),
            kv(PROCESS_BUCKET),
            kv(LIMITS_BUCKET),
        ] {
            publish.push(api(&format!("STREAM.INFO.{stream}")));
        }
        let read_bucket = |publish: &mut Vec<String>, stream: &str| {
            publish.extend([
                api(&format!("DIRECT.GET.{stream}")),
                api(&format!("DIRECT.GET.{stream}.>")),
                api(&format!("STREAM.MSG.GET.{stream}")),
                api(&format!("CONSUMER.CREATE.{stream}")),
                api(&format!("CONSUMER.CREATE.{stream}.>")),
                api(&format!("CONSUMER.DELETE.{stream}.>")),
                format!("$JS.FC.{stream}.>"),
            ]);
        };
        read_bucket(&mut publish, &kv(CONFIG_BUCKET));
        read_bucket(&mut publish, &kv(SUPPRESSION_BUCKET));
        match self {
            Role::Ingress => {
                publish.push("baton.new.*".to_owned());
                // Mail a content filter quarantined (`crate::quarantine_subject`).
                publish.push("baton.quarantine.*".to_owned());
                // The Message-ID index of the event stream (`trace <Message-ID>`).
                publish.push("baton.index.msgid.*".to_owned());
                // Its beats in the process registry.
                publish.push(format!("$KV.{PROCESS_BUCKET}.ingress.*"));
                // Inbound budgets and AUTH lockouts shared by every ingress pod.
                read_bucket(&mut publish, &kv(LIMITS_BUCKET));
                publish.push(format!(
                    "$KV.{LIMITS_BUCKET}.{}.>",
                    crate::LIMITS_INBOUND_PREFIX
                ));
                // Reports received at a return path add suppressions.
                publish.push(format!("$KV.{SUPPRESSION_BUCKET}.>"));
                // Large bodies, into their pool's bucket: upload (chunks and the object's
                // meta) and the meta lookup an upload starts with. It reads no body.
                for pool in &pools {
                    let bucket = crate::body_bucket(pool);
                    let stream = format!("OBJ_{bucket}");
                    publish.extend([
                        api(&format!("STREAM.INFO.{stream}")),
                        api(&format!("DIRECT.GET.{stream}.$O.{bucket}.M.>")),
                        format!("$O.{bucket}.C.>"),
                        format!("$O.{bucket}.M.>"),
                    ]);
                }
            }
            Role::Worker { pool, tiers } => {
                publish.push(crate::new_subject(pool));
                publish.push(format!("baton.retry.{pool}.>"));
                // Messages it can never process go to its pool's dead letters; held mail
                // to its held place; the holds it follows.
                publish.push(crate::dead_subject(pool));
                publish.push(crate::held_subject(pool));
                read_bucket(&mut publish, &kv(HOLD_BUCKET));
                publish.push(format!("$KV.{PROCESS_BUCKET}.worker-{pool}.*"));
                // The pool's outbound shaping, shared by its workers.
                read_bucket(&mut publish, &kv(LIMITS_BUCKET));
                publish.push(format!(
                    "$KV.{LIMITS_BUCKET}.{}.>",
                    crate::limits_outbound_prefix(pool)
                ));
                let lanes =
                    |n: u32| std::iter::once(LaneKind::New).chain((0..n).map(LaneKind::Retry));
                for lane in lanes(*tiers) {
                    let consumer = consumer_name(pool, lane);
                    publish.extend([
                        api(&format!("CONSUMER.MSG.NEXT.{STREAM}.{consumer}")),
                        format!("$JS.ACK.{STREAM}.{consumer}.>"),
                    ]);
                }
                // Lane statistics probe every tier a pool may have (the queue gauges).
                for lane in lanes(crate::MAX_LANE_TIERS) {
                    let consumer = consumer_name(pool, lane);
                    publish.push(api(&format!("CONSUMER.INFO.{STREAM}.{consumer}")));
                }
                // Whether a held message was moved by the operations API: only its own
                // pool's records (last-by-subject direct gets name the key in the subject).
                // It never reads the queue stream itself: that message API cannot be
                // narrowed to one pool's subjects.
                let moved = kv(MOVED_BUCKET);
                publish.extend([
                    api(&format!("STREAM.INFO.{moved}")),
                    api(&format!("DIRECT.GET.{moved}.$KV.{MOVED_BUCKET}.{pool}.>")),
                ]);
                // Large bodies in its pool's own bucket: read, and delete once delivered (a
                // delete marker on the meta subject and a purge of the chunks). Other pools'
                // buckets are out of reach.
                let bucket = crate::body_bucket(pool);
                let own = format!("OBJ_{bucket}");
                publish.push(api(&format!("STREAM.INFO.{own}")));
                read_bucket(&mut publish, &own);
                publish.extend([
                    format!("$O.{bucket}.M.>"),
                    api(&format!("STREAM.PURGE.{own}")),
                ]);
                // Transitional: the shared bucket of earlier versions, for mail accepted
                // before the upgrade. Its owner deletes it once empty
                // (`Provisioner::retire_legacy_bodies`) and nobody may create it again, so
                // this grant then refers to nothing.
                read_bucket(&mut publish, &obj);
                publish.extend([
                    format!("$O.{BODY_BUCKET}.M.>"),
                    api(&format!("STREAM.PURGE.{obj}")),
                ]);
                publish.push(format!("$KV.{SUPPRESSION_BUCKET}.>"));
            }
            Role::Admin => {
                // Each pool's large-body bucket: created, kept, shown (the operations API).
                for pool in &pools {
                    let stream = format!("OBJ_{}", crate::body_bucket(pool));
                    publish.extend([
                        api(&format!("STREAM.CREATE.{stream}")),
                        api(&format!("STREAM.UPDATE.{stream}")),
                        api(&format!("STREAM.INFO.{stream}")),
                    ]);
                    read_bucket(&mut publish, &stream);
                }
                // The shared bucket of earlier versions: kept until empty, then deleted;
                // never created again.
                publish.extend([
                    api(&format!("STREAM.UPDATE.{obj}")),
                    api(&format!("STREAM.DELETE.{obj}")),
                ]);
                for stream in [
                    STREAM.to_owned(),
                    kv(CONFIG_BUCKET),
                    kv(SUPPRESSION_BUCKET),
                    kv(HOLD_BUCKET),
                    kv(PROCESS_BUCKET),
                    kv(SINK_STATUS_BUCKET),
                    kv(LIMITS_BUCKET),
                    kv(MOVED_BUCKET),
                    crate::events::EVENT_STREAM.to_owned(),
                ] {
                    publish.extend([
                        api(&format!("STREAM.CREATE.{stream}")),
                        api(&format!("STREAM.UPDATE.{stream}")),
                    ]);
                }
                publish.extend([
                    api("STREAM.NAMES"),
                    api("STREAM.LIST"),
                    api(&format!("CONSUMER.CREATE.{STREAM}.>")),
                    api(&format!("CONSUMER.DURABLE.CREATE.{STREAM}.>")),
                    api(&format!("CONSUMER.INFO.{STREAM}.>")),
                    api(&format!("CONSUMER.DELETE.{STREAM}.>")),
                    api(&format!("CONSUMER.NAMES.{STREAM}")),
                    api(&format!("CONSUMER.LIST.{STREAM}")),
                    format!("$KV.{CONFIG_BUCKET}.>"),
                    format!("$KV.{SUPPRESSION_BUCKET}.>"),
                    format!("$KV.{HOLD_BUCKET}.>"),
                    // Moves it makes, recorded before the stored message is deleted.
                    format!("$KV.{MOVED_BUCKET}.>"),
                    api(&format!("STREAM.INFO.{}", kv(MOVED_BUCKET))),
                    api(&format!("STREAM.PURGE.{}", kv(SUPPRESSION_BUCKET))),
                    // The operations API (`crate::inspect`): read queued mail in batches
                    // without consuming it, delete a stored message, requeue a dead letter
                    // to its pool's fresh-mail lane, and show the start of a large body.
                    api(&format!("DIRECT.GET.{STREAM}")),
                    api(&format!("DIRECT.GET.{}", crate::events::EVENT_STREAM)),
                    // The owner checks the event stream before creating it.
                    api(&format!("STREAM.INFO.{}", crate::events::EVENT_STREAM)),
                    api(&format!("STREAM.MSG.DELETE.{STREAM}")),
                    "baton.new.*".to_owned(),
                ]);
                read_bucket(&mut publish, &obj);
                read_bucket(&mut publish, &kv(HOLD_BUCKET));
                read_bucket(&mut publish, &kv(PROCESS_BUCKET));
                // EventSinks: their backlog and delivery records (status), and the consumer
                // of a removed sink.
                read_bucket(&mut publish, &kv(SINK_STATUS_BUCKET));
                publish.extend([
                    api(&format!("STREAM.INFO.{}", kv(SINK_STATUS_BUCKET))),
                    api(&format!("CONSUMER.INFO.{}.*", crate::events::EVENT_STREAM)),
                    api(&format!(
                        "CONSUMER.DELETE.{}.*",
                        crate::events::EVENT_STREAM
                    )),
                    api(&format!("CONSUMER.NAMES.{}", crate::events::EVENT_STREAM)),
                    api(&format!("CONSUMER.LIST.{}", crate::events::EVENT_STREAM)),
                ]);
            }
            Role::Webhooks => {}
        }
        publish.sort();
        publish.dedup();
        Permissions {
            publish,
            subscribe: vec![format!("{}.>", self.inbox_prefix())],
        }
    }

    /// The inbox prefix the role's replies arrive on.
    pub fn inbox_prefix(&self) -> String {
        inbox_prefix(&self.user())
    }
}

/// The webhook dispatchers: read the snapshot (the sinks), create and pull the sinks'
/// consumers on the event stream and acknowledge their events, write the sinks' delivery
/// records and their own beats. They publish no mail and no events, and read no queued mail.
fn webhooks_permissions(role: &Role) -> Permissions {
    let api = |s: &str| format!("$JS.API.{s}");
    let events = crate::events::EVENT_STREAM;
    let config = format!("KV_{CONFIG_BUCKET}");
    let mut publish = vec![
        api("INFO"),
        api(&format!("STREAM.INFO.{config}")),
        api(&format!("DIRECT.GET.{config}")),
        api(&format!("DIRECT.GET.{config}.>")),
        api(&format!("STREAM.MSG.GET.{config}")),
        api(&format!("CONSUMER.CREATE.{config}")),
        api(&format!("CONSUMER.CREATE.{config}.>")),
        api(&format!("CONSUMER.DELETE.{config}.>")),
        format!("$JS.FC.{config}.>"),
        api(&format!("STREAM.INFO.{events}")),
        // NATS wildcards match whole tokens only, so these cannot be narrowed to `sink-*`
        // names: a dispatcher may create any consumer of the event stream (it serves every
        // tenant's sinks anyway), never one of the mail stream.
        api(&format!("CONSUMER.CREATE.{events}.*")),
        api(&format!("CONSUMER.CREATE.{events}.*.>")),
        api(&format!("CONSUMER.INFO.{events}.*")),
        api(&format!("CONSUMER.MSG.NEXT.{events}.*")),
        // A stopping dispatcher hands its sinks over at once.
        api(&format!("CONSUMER.UNPIN.{events}.*")),
        format!("$JS.ACK.{events}.>"),
        // Its records: written, and read back when a sink (re)starts.
        api(&format!("STREAM.INFO.KV_{SINK_STATUS_BUCKET}")),
        api(&format!("DIRECT.GET.KV_{SINK_STATUS_BUCKET}")),
        api(&format!("DIRECT.GET.KV_{SINK_STATUS_BUCKET}.>")),
        format!("$KV.{SINK_STATUS_BUCKET}.>"),
        api(&format!("STREAM.INFO.KV_{PROCESS_BUCKET}")),
        format!("$KV.{PROCESS_BUCKET}.webhooks.*"),
    ];
    publish.sort();
    Permissions {
        publish,
        subscribe: vec![format!("{}.>", role.inbox_prefix())],
    }
}

/// The inbox prefix of NATS user `user` (`_INBOX.<user>`): what a Baton process connecting as
/// `user` asks its replies on, and the only thing its permissions let it subscribe to.
pub fn inbox_prefix(user: &str) -> String {
    format!("_INBOX.{user}")
}

/// What one role may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to.
    pub publish: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
}

/// The roles of a deployment with these pools (name, retry tiers): admin, ingress, the webhook
/// dispatchers and one worker role per pool.
pub fn roles<'a>(pools: impl IntoIterator<Item = (&'a str, u32)>) -> Vec<Role> {
    let mut roles = vec![Role::Admin, Role::Ingress, Role::Webhooks];
    roles.extend(pools.into_iter().map(|(pool, tiers)| Role::Worker {
        pool: pool.to_owned(),
        tiers,
    }));
    roles
}

/// The nats-server `authorization { users = [...] }` block for `roles`. Passwords are
/// environment references (`$BATON_NATS_PASSWORD_INGRESS`); nats-server reads them at start.
pub fn authorization_block(roles: &[Role]) -> String {
    authorization_block_with(
        roles,
        "# Generated by `baton nats-auth`; regenerate when SendingPools are added or their\n\
         # retry schedules change. Set the password variables in nats-server's environment.\n",
        |role| format!("${}", role.password_env()),
    )
}

/// The block for `roles` with each user's `password` value rendered by `password` (an
/// environment reference, or a quoted bcrypt hash that nats-server checks passwords against)
/// and `header` comment lines after the first.
pub fn authorization_block_with(
    roles: &[Role],
    header: &str,
    password: impl Fn(&Role) -> String,
) -> String {
    let quote = |s: &str| format!("{s:?}");
    let list = |v: &[String]| v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
    let mut out = format!(
        "# Baton's NATS users, one per role, each allowed only what its role needs.\n\
         {header}authorization {{\n  users = [\n",
    );
    for role in roles {
        let p = role.permissions_among(roles);
        let _ = write!(
            out,
            "    {{\n      user: {}\n      password: {}\n      permissions: {{\n        \
             publish: {{ allow: [{}] }}\n        subscribe: {{ allow: [{}] }}\n      }}\n    }}\n",
            quote(&role.user()),
            password(role),
            list(&p.publish),
            list(&p.subscribe),
        );
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(pool: &str, tiers: u32) -> Role {
        Role::Worker {
            pool: pool.to_owned(),
            tiers,
        }
    }

    /// In a deployment with pools `bulk` (2 retry tiers) and `other` (1).
    fn may_publish(role: &Role, subject: &str) -> bool {
        role.permissions_among(&roles([("bulk", 2), ("other", 1)]))
            .publish
            .iter()
            .any(|pattern| matches(pattern, subject))
    }

    /// NATS subject matching: `*` is one token, `>` the rest (at least one token).
    fn matches(pattern: &str, subject: &str) -> bool {
        let (mut p, mut s) = (pattern.split('.'), subject.split('.'));
        loop {
            match (p.next(), s.next()) {
                (Some(">"), Some(_)) => return true,
                (Some("*"), Some(_)) => {}
                (Some(a), Some(b)) if a == b => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    #[test]
    fn the_ingress_only_publishes_fresh_mail() {
        let ingress = Role::Ingress;
        assert!(may_publish(&ingress, "baton.new.bulk"));
        assert!(may_publish(&ingress, "baton.quarantine.bulk"), "quarantine");
        assert!(may_publish(&ingress, "$O.baton-bodies-bulk.C.abc"));
        assert!(may_publish(&ingress, "$O.baton-bodies-other.M.abc"));
        assert!(
            !may_publish(&ingress, "$O.baton-bodies.C.abc"),
            "not the shared bucket of earlier versions"
        );
        assert!(
            may_publish(&ingress, "$KV.baton-suppressions.abc.def"),
            "return-path reports"
        );
        assert!(
            !may_publish(&ingress, "baton.retry.bulk.0"),
            "no retry lane"
        );
        assert!(!may_publish(
            &ingress,
            "$JS.API.CONSUMER.MSG.NEXT.BATON_QUEUE.bulk-new"
        ));
        assert!(!may_publish(
            &ingress,
            "$JS.ACK.BATON_QUEUE.bulk-new.1.1.1.1.1.1"
        ));
        assert!(
            !may_publish(&ingress, "$KV.baton-config.relay-config"),
            "no config write"
        );
        assert!(
            !may_publish(&ingress, "$JS.API.STREAM.MSG.GET.BATON_QUEUE"),
            "no mail read"
        );
        assert!(!may_publish(&ingress, "$JS.API.STREAM.DELETE.BATON_QUEUE"));
        assert!(may_publish(
            &ingress,
            "$JS.API.DIRECT.GET.KV_baton-config.$KV.baton-config.relay-config"
        ));
    }

    #[test]
    fn a_worker_only_touches_its_own_pool() {
        let w = worker("bulk", 2);
        assert!(may_publish(
            &w,
            "$JS.API.CONSUMER.MSG.NEXT.BATON_QUEUE.bulk-new"
        ));
        assert!(may_publish(
            &w,
            "$JS.API.CONSUMER.MSG.NEXT.BATON_QUEUE.bulk-retry-1"
        ));
        assert!(!may_publish(
            &w,
            "$JS.API.CONSUMER.MSG.NEXT.BATON_QUEUE.bulk-retry-2"
        ));
        assert!(!may_publish(
            &w,
            "$JS.API.CONSUMER.MSG.NEXT.BATON_QUEUE.other-new"
        ));
        assert!(may_publish(&w, "$JS.ACK.BATON_QUEUE.bulk-new.1.2.3.4.5.6"));
        assert!(!may_publish(
            &w,
            "$JS.ACK.BATON_QUEUE.other-new.1.2.3.4.5.6"
        ));
        assert!(may_publish(&w, "baton.retry.bulk.1"));
        assert!(!may_publish(&w, "baton.retry.other.0"));
        assert!(may_publish(&w, "baton.new.bulk"), "its DSNs");
        assert!(!may_publish(&w, "baton.new.other"));
        assert!(may_publish(&w, "baton.dead.bulk"), "its dead letters");
        assert!(may_publish(&w, "baton.held.bulk"), "its held mail");
        assert!(
            may_publish(&w, "$KV.baton-processes.worker-bulk.pod-1"),
            "its beats"
        );
        assert!(!may_publish(&w, "$KV.baton-processes.worker-other.pod-1"));
        assert!(!may_publish(&w, "$KV.baton-processes.ingress.pod-1"));
        assert!(!may_publish(&w, "baton.held.other"));
        assert!(
            !may_publish(&w, "baton.quarantine.bulk"),
            "never touches the quarantine"
        );
        assert!(
            !may_publish(&w, "$KV.baton-holds.pool.bulk"),
            "reads holds only"
        );
        assert!(may_publish(
            &w,
            "$JS.API.DIRECT.GET.KV_baton-holds.$KV.baton-holds.pool.bulk"
        ));
        assert!(!may_publish(&w, "baton.dead.other"));
        assert!(!may_publish(&w, "$KV.baton-config.relay-config"));
        assert!(
            !may_publish(&w, "$JS.API.CONSUMER.CREATE.BATON_QUEUE.x"),
            "no new consumers"
        );
        // It reads no stored message of the queue stream outside its lanes: neither by
        // sequence nor by subject, its own pool's included.
        for read in [
            "$JS.API.STREAM.MSG.GET.BATON_QUEUE",
            "$JS.API.DIRECT.GET.BATON_QUEUE",
            "$JS.API.DIRECT.GET.BATON_QUEUE.baton.new.other",
            "$JS.API.DIRECT.GET.BATON_QUEUE.baton.new.bulk",
        ] {
            assert!(!may_publish(&w, read), "{read}");
        }
        // Its own pool's records of moved messages, nobody else's, read only.
        assert!(may_publish(
            &w,
            "$JS.API.DIRECT.GET.KV_baton-moved.$KV.baton-moved.bulk.42"
        ));
        assert!(!may_publish(
            &w,
            "$JS.API.DIRECT.GET.KV_baton-moved.$KV.baton-moved.other.42"
        ));
        assert!(!may_publish(&w, "$JS.API.DIRECT.GET.KV_baton-moved"));
        assert!(!may_publish(&w, "$KV.baton-moved.bulk.42"));
    }

    #[test]
    fn large_bodies_stay_within_their_pool() {
        // The ingress uploads into any pool's bucket but reads no body back.
        let ingress = Role::Ingress;
        for read in [
            "$JS.API.CONSUMER.CREATE.OBJ_baton-bodies-bulk.x.$O.baton-bodies-bulk.C.y",
            "$JS.API.STREAM.MSG.GET.OBJ_baton-bodies-bulk",
            "$JS.API.DIRECT.GET.OBJ_baton-bodies-bulk",
        ] {
            assert!(!may_publish(&ingress, read), "{read}");
        }
        assert!(may_publish(
            &ingress,
            "$JS.API.DIRECT.GET.OBJ_baton-bodies-bulk.$O.baton-bodies-bulk.M.abc"
        ));
        // A worker reads and deletes its own pool's bodies, never another pool's.
        let w = worker("bulk", 2);
        assert!(may_publish(
            &w,
            "$JS.API.CONSUMER.CREATE.OBJ_baton-bodies-bulk.x.$O.baton-bodies-bulk.C.y"
        ));
        assert!(may_publish(&w, "$O.baton-bodies-bulk.M.abc"));
        assert!(may_publish(
            &w,
            "$JS.API.STREAM.PURGE.OBJ_baton-bodies-bulk"
        ));
        for other in [
            "$JS.API.CONSUMER.CREATE.OBJ_baton-bodies-other.x.$O.baton-bodies-other.C.y",
            "$JS.API.DIRECT.GET.OBJ_baton-bodies-other",
            "$JS.API.DIRECT.GET.OBJ_baton-bodies-other.$O.baton-bodies-other.M.abc",
            "$JS.API.STREAM.MSG.GET.OBJ_baton-bodies-other",
            "$JS.API.STREAM.PURGE.OBJ_baton-bodies-other",
            "$O.baton-bodies-other.M.abc",
            "$O.baton-bodies-other.C.abc",
        ] {
            assert!(!may_publish(&w, other), "{other}");
        }
        // The admin creates every pool's bucket; nobody creates the shared one again.
        assert!(may_publish(
            &Role::Admin,
            "$JS.API.STREAM.CREATE.OBJ_baton-bodies-other"
        ));
        assert!(may_publish(
            &Role::Admin,
            "$JS.API.STREAM.DELETE.OBJ_baton-bodies"
        ));
        for role in roles([("bulk", 2), ("other", 1)]) {
            assert!(
                !may_publish(&role, "$JS.API.STREAM.CREATE.OBJ_baton-bodies"),
                "{role:?}"
            );
        }
    }

    #[test]
    fn admin_provisions_but_does_not_consume_mail() {
        let a = Role::Admin;
        assert!(may_publish(&a, "$JS.API.STREAM.CREATE.BATON_QUEUE"));
        assert!(may_publish(
            &a,
            "$JS.API.CONSUMER.DURABLE.CREATE.BATON_QUEUE.bulk-new"
        ));
        assert!(may_publish(&a, "$KV.baton-config.relay-config"));
        assert!(!may_publish(
            &a,
            "$JS.API.CONSUMER.MSG.NEXT.BATON_QUEUE.bulk-new"
        ));
        assert!(!may_publish(&a, "$JS.API.STREAM.MSG.GET.BATON_QUEUE"));
        assert!(may_publish(&a, "$KV.baton-moved.bulk.42"), "records moves");
        // The operations API reads in batches, deletes and requeues to a fresh-mail lane.
        assert!(may_publish(&a, "$JS.API.DIRECT.GET.BATON_QUEUE"));
        assert!(may_publish(&a, "$JS.API.STREAM.MSG.DELETE.BATON_QUEUE"));
        assert!(may_publish(&a, "baton.new.bulk"));
        assert!(!may_publish(&a, "baton.retry.bulk.0"));
        assert!(!may_publish(&a, "baton.dead.bulk"));
        assert!(
            may_publish(&a, "$KV.baton-holds.domain.example.com"),
            "places holds"
        );
        assert!(!may_publish(&a, "$JS.API.STREAM.CREATE.SOMETHING_ELSE"));
    }

    #[test]
    fn webhook_dispatchers_only_pull_sinks_and_write_their_records() {
        let w = Role::Webhooks;
        for allowed in [
            "$JS.API.CONSUMER.CREATE.BATON_EVENTS.sink-0123456789abcdef0123",
            "$JS.API.CONSUMER.CREATE.BATON_EVENTS.sink-0123.baton.events.team-a.>",
            "$JS.API.CONSUMER.MSG.NEXT.BATON_EVENTS.sink-0123",
            "$JS.API.CONSUMER.UNPIN.BATON_EVENTS.sink-0123",
            "$JS.ACK.BATON_EVENTS.sink-0123.1.2.3.4.5.6",
            "$KV.baton-sink-status.sink-0123",
            "$JS.API.DIRECT.GET.KV_baton-sink-status.$KV.baton-sink-status.sink-0123",
            "$KV.baton-processes.webhooks.pod-1",
            "$JS.API.DIRECT.GET.KV_baton-config.$KV.baton-config.relay-config",
        ] {
            assert!(may_publish(&w, allowed), "{allowed}");
        }
        for denied in [
            "baton.new.bulk",
            "baton.events.team-a.shop.X.delivered",
            "$JS.API.CONSUMER.MSG.NEXT.BATON_QUEUE.bulk-new",
            "$JS.API.CONSUMER.CREATE.BATON_QUEUE.sink-0123",
            "$JS.API.DIRECT.GET.BATON_QUEUE",
            "$JS.API.DIRECT.GET.BATON_EVENTS",
            "$KV.baton-config.relay-config",
            "$KV.baton-processes.worker-bulk.pod-1",
            "$JS.API.DIRECT.GET.KV_baton-suppressions",
            "$JS.API.STREAM.CREATE.BATON_EVENTS",
        ] {
            assert!(!may_publish(&w, denied), "{denied}");
        }
        assert!(roles([]).contains(&Role::Webhooks));
        assert!(authorization_block(&roles([])).contains("\"baton-webhooks\""));
    }

    #[test]
    fn each_role_reads_replies_on_its_own_inbox_only() {
        assert_eq!(
            Role::Ingress.permissions().subscribe,
            ["_INBOX.baton-ingress.>"]
        );
        assert_eq!(
            worker("bulk", 1).permissions().subscribe,
            ["_INBOX.baton-worker-bulk.>"]
        );
    }

    #[test]
    fn the_block_names_every_role_with_an_environment_password() {
        let block = authorization_block(&roles([("bulk", 2), ("tx-mail", 1)]));
        for (user, env) in [
            ("baton-admin", "$BATON_NATS_PASSWORD_ADMIN"),
            ("baton-ingress", "$BATON_NATS_PASSWORD_INGRESS"),
            ("baton-worker-bulk", "$BATON_NATS_PASSWORD_WORKER_BULK"),
            (
                "baton-worker-tx-mail",
                "$BATON_NATS_PASSWORD_WORKER_TX_MAIL",
            ),
        ] {
            assert!(block.contains(&format!("user: \"{user}\"")), "{block}");
            assert!(block.contains(&format!("password: {env}\n")), "{block}");
        }
        assert!(block.starts_with("# Baton's NATS users") && block.ends_with("  ]\n}\n"));
    }
}
