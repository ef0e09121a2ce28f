//! `baton queue ...`: the operations API's command-line client. Human tables by default,
//! `-o json` / `-o yaml` for scripts; an error is one line and a non-zero exit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use baton_proto::v1::{
    ActionResponse, DeleteMessagesRequest, GetMessageRequest, GetStatusRequest, HoldRequest,
    HoldTarget, ListHoldsRequest, ListMessagesRequest, MessageFilter, Place, QueueSummaryRequest,
    QueuedMessage, ReleaseQuarantinedRequest, ReleaseRequest, RequeueDeadRequest, ShapeRow,
};
use baton_proto::v1::{BounceRequest, GetTraceRequest, RetryNowRequest};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

/// `baton queue`
#[derive(Args, Debug)]
pub(crate) struct QueueArgs {
    /// Operations API address (`host:port` or a URI; `https://` or `--ca-file` for TLS).
    #[arg(
        long,
        env = "BATON_ADMIN",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub admin: String,
    /// File holding the bearer token. Default: as `kubectl baton` (or with `--kubeconfig-token`)
    /// the current kubeconfig user's token, else `.dev/admin-token` (`baton dev`'s) if present.
    #[arg(long, env = "BATON_ADMIN_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// Present the current kubeconfig user's bearer token (the default as `kubectl baton`).
    #[arg(long, global = true)]
    pub kubeconfig_token: bool,
    /// PEM CA bundle the API's certificate must chain to (connects with TLS).
    #[arg(long, env = "BATON_ADMIN_CA", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Name the API's certificate must carry, when it differs from the address (e.g.
    /// `baton-admin.baton-system.svc` through `kubectl port-forward`).
    #[arg(long, env = "BATON_ADMIN_TLS_SERVER_NAME", global = true)]
    pub tls_server_name: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: QueueCommand,
}

/// `-o` values.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `baton queue ...`
#[derive(Subcommand, Debug)]
pub(crate) enum QueueCommand {
    /// The API's view of itself: version, NATS and queue health, stored config generation,
    /// and who you are to it.
    Status,
    /// Counts, recipients, bytes and ages per pool and place, and the largest destination
    /// domains (Postfix's `qshape`).
    Summary {
        #[command(flatten)]
        filter: FilterArgs,
        /// Destination domains shown per pool and place.
        #[arg(long, default_value_t = 10)]
        top: u32,
    },
    /// Queued messages, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Messages per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue from the token a previous page printed.
        #[arg(long)]
        page_token: Option<String>,
        /// Every page, not only the first.
        #[arg(long)]
        all: bool,
    },
    /// One message (every queued part: retries per domain, DSNs, dead letters).
    Show {
        /// Queue id (`250 ... queued as <id>`) or stream sequence.
        id: String,
        /// Also print the first BYTES bytes of the body.
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        body: u32,
    },
    /// Delete queued messages (silently: no DSN). Lists what it would delete unless `--yes`.
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
    /// Dead letters: messages that reached their delivery limit or do not decode.
    Dead {
        #[command(subcommand)]
        command: DeadCommand,
    },
    /// Quarantined mail: messages a content filter quarantined at the ingress. Never
    /// delivered unless released.
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Hold mail: workers move what the hold covers to the held place instead of trying it.
    Hold {
        #[command(flatten)]
        target: HoldTargetArgs,
        /// Why (shown by `baton queue holds`).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Remove a hold and deliver the mail it held (once).
    Release {
        #[command(flatten)]
        target: HoldTargetArgs,
    },
    /// The holds in force.
    Holds,
    /// The timeline of one message: every delivery event, oldest first.
    Trace {
        /// Queue id (`250 ... queued as <id>`), or the message's Message-ID (every message sent
        /// with it).
        id: String,
    },
    /// Deliver now what waits in a retry tier (moved to the fresh-mail lane, due at once).
    Retry {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Fail the selected messages with a reason: a DSN to each sender, then they leave the
    /// queue.
    Bounce {
        #[command(flatten)]
        filter: FilterArgs,
        /// Why (in the DSN: `550 5.0.0 bounced by the operator: <reason>`).
        #[arg(long, required = true)]
        reason: String,
    },
}

/// What a hold applies to (exactly one).
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub(crate) struct HoldTargetArgs {
    /// A whole SendingPool.
    #[arg(long)]
    pub pool: Option<String>,
    /// A RelayDomain (`namespace/name`).
    #[arg(long)]
    pub relay_domain: Option<String>,
    /// Every recipient at this domain.
    #[arg(long)]
    pub domain: Option<String>,
    /// One message, by queue id.
    #[arg(long)]
    pub message: Option<String>,
}

impl HoldTargetArgs {
    fn target(&self) -> HoldTarget {
        let (kind, value) = match (&self.pool, &self.relay_domain, &self.domain, &self.message) {
            (Some(v), ..) => ("pool", v.clone()),
            (_, Some(v), ..) => ("relay-domain", v.clone()),
            (_, _, Some(v), _) => ("domain", v.clone()),
            (.., Some(v)) => ("message", v.clone()),
            // clap requires one of them.
            _ => ("", String::new()),
        };
        HoldTarget {
            kind: kind.to_owned(),
            value,
        }
    }
}

/// `baton queue quarantine ...`
#[derive(Subcommand, Debug)]
pub(crate) enum QuarantineCommand {
    /// Quarantined messages, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// One quarantined message.
    Show {
        /// Queue id or stream sequence.
        id: String,
        /// Also print the first BYTES bytes of the body.
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        body: u32,
    },
    /// Release quarantined messages: they move to their pool's fresh-mail lane and are
    /// delivered (once).
    Release {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete quarantined messages (no DSN). Lists what it would delete unless `--yes`.
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

/// `baton queue dead ...`
#[derive(Subcommand, Debug)]
pub(crate) enum DeadCommand {
    /// Dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// One dead letter.
    Show {
        /// Queue id or stream sequence.
        id: String,
        /// Also print the first BYTES bytes of the body.
        #[arg(long, value_name = "BYTES", default_value_t = 0)]
        body: u32,
    },
    /// Move dead letters back to their pool's fresh-mail lane (delivered again from scratch).
    Requeue {
        #[command(flatten)]
        filter: FilterArgs,
    },
    /// Delete dead letters. Lists what it would delete unless `--yes`.
    Delete {
        #[command(flatten)]
        filter: FilterArgs,
        /// Really delete.
        #[arg(long)]
        yes: bool,
    },
}

/// Which messages (all given criteria must match).
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct FilterArgs {
    /// Queue ids or stream sequences.
    pub ids: Vec<String>,
    /// SendingPool.
    #[arg(long)]
    pub pool: Option<String>,
    /// Place: `new`, `retry`, `dead`, `held` or `quarantine`.
    #[arg(long, value_enum)]
    pub place: Option<PlaceArg>,
    /// Retry tier (with `--place retry`).
    #[arg(long)]
    pub tier: Option<u32>,
    /// RelayDomain `namespace/name`, or `namespace/` for all of a namespace.
    #[arg(long)]
    pub relay_domain: Option<String>,
    /// Envelope sender, or `@domain`.
    #[arg(long)]
    pub sender: Option<String>,
    /// Recipient address, or a domain.
    #[arg(long)]
    pub recipient: Option<String>,
    /// Only messages queued at least this long ago (`30m`, `2h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub older_than: Option<Duration>,
}

/// `--place` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum PlaceArg {
    /// The fresh-mail lane.
    New,
    /// The retry tiers.
    Retry,
    /// The dead letters.
    Dead,
    /// Held mail.
    Held,
    /// Quarantined mail.
    Quarantine,
}

impl FilterArgs {
    /// [`FilterArgs::filter`] narrowed to one place (the `dead` and `quarantine` commands).
    fn in_place(&self, place: Place) -> MessageFilter {
        MessageFilter {
            place: place as i32,
            ..self.filter()
        }
    }

    fn filter(&self) -> MessageFilter {
        let (sequences, queue_ids): (Vec<&String>, Vec<&String>) =
            self.ids.iter().partition(|i| i.parse::<u64>().is_ok());
        MessageFilter {
            pool: self.pool.clone().unwrap_or_default(),
            place: match self.place {
                None => Place::Unspecified,
                Some(PlaceArg::New) => Place::New,
                Some(PlaceArg::Retry) => Place::Retry,
                Some(PlaceArg::Dead) => Place::Dead,
                Some(PlaceArg::Held) => Place::Held,
                Some(PlaceArg::Quarantine) => Place::Quarantine,
            } as i32,
            tier: self.tier.unwrap_or(0),
            relay_domain: self.relay_domain.clone().unwrap_or_default(),
            sender: self.sender.clone().unwrap_or_default(),
            recipient: self.recipient.clone().unwrap_or_default(),
            min_age_seconds: self.older_than.map(|d| d.as_secs()).unwrap_or(0),
            queue_ids: queue_ids.into_iter().cloned().collect(),
            sequences: sequences
                .into_iter()
                .filter_map(|s| s.parse().ok())
                .collect(),
        }
    }
}

/// A gRPC error as one line.
fn status(e: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let what = match e.code() {
        Code::Unauthenticated => "unauthorised",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid request",
        Code::Unavailable => "unavailable",
        _ => "failed",
    };
    anyhow::anyhow!("{what}: {}", e.message())
}

/// Whether this binary runs as the kubectl plugin `kubectl-baton` (`kubectl baton queue ...`).
fn as_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .is_some_and(|n| n == "kubectl-baton")
}

/// Run `baton queue ...`.
pub(crate) async fn run(args: QueueArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(p) => baton_admin::client::read_token(p)?,
        None if args.kubeconfig_token || as_kubectl_plugin() => {
            baton_operator::admin_auth::kubeconfig_token()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
        }
        None => {
            let dev = PathBuf::from(".dev/admin-token");
            if !dev.exists() {
                bail!(
                    "give --token-file (or BATON_ADMIN_TOKEN_FILE), or --kubeconfig-token: the API needs a bearer token"
                );
            }
            baton_admin::client::read_token(&dev)?
        }
    };
    let mut api = baton_admin::client::connect(
        &args.admin,
        &token,
        args.ca_file.as_deref(),
        args.tls_server_name.as_deref(),
    )
    .await
    .context("operations API")?;
    let out = args.output;
    match args.command {
        QueueCommand::Status => {
            let s = api
                .get_status(GetStatusRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let v = json!({
                "role": s.role, "version": s.version, "ready": s.ready,
                "configGeneration": s.config_generation,
                "natsServerVersion": s.nats_server_version,
                "queue": {"messages": s.queue_messages, "bytes": s.queue_bytes,
                          "replicas": s.queue_replicas, "leader": s.queue_leader},
                "caller": {"name": s.caller, "permission": s.caller_permission,
                           "namespaces": s.caller_namespaces},
                "processes": s.processes.iter().map(|p| json!({
                    "role": p.role, "pool": p.pool, "instance": p.instance,
                    "version": p.version, "configGeneration": p.config_generation,
                    "ready": p.ready, "reportedAtMs": p.reported_at_ms,
                })).collect::<Vec<_>>(),
            });
            if out == Output::Table {
                println!(
                    "{} {} ready={} config generation {} nats-server {}\nqueue: {} messages, {} bytes, {} replicas, leader {}\nyou: {} ({}{})",
                    s.role,
                    s.version,
                    s.ready,
                    s.config_generation,
                    s.nats_server_version,
                    s.queue_messages,
                    s.queue_bytes,
                    s.queue_replicas,
                    s.queue_leader,
                    s.caller,
                    s.caller_permission,
                    if s.caller_namespaces.is_empty() {
                        String::new()
                    } else {
                        format!(", namespaces {}", s.caller_namespaces.join(","))
                    }
                );
                let now = baton_core::clock::now_ms();
                let rows: Vec<Vec<String>> = s
                    .processes
                    .iter()
                    .map(|p| {
                        vec![
                            p.role.clone(),
                            blank(&p.pool).to_owned(),
                            p.instance.clone(),
                            p.version.clone(),
                            p.config_generation.to_string(),
                            p.ready.to_string(),
                            age(now, p.reported_at_ms),
                        ]
                    })
                    .collect();
                println!();
                print_rows(
                    &[
                        "ROLE",
                        "POOL",
                        "INSTANCE",
                        "VERSION",
                        "GENERATION",
                        "READY",
                        "REPORTED",
                    ],
                    &rows,
                );
            } else {
                emit(out, &v)?;
            }
        }
        QueueCommand::Summary { filter, top } => {
            let s = api
                .get_queue_summary(QueueSummaryRequest {
                    filter: Some(filter.filter()),
                    top_domains: top,
                })
                .await
                .map_err(status)?
                .into_inner();
            if out == Output::Table {
                print_shape(&s.age_bucket_minutes, &s.places, &s.domains);
                eprintln!("({} messages read in {} ms)", s.scanned, s.elapsed_ms);
            } else {
                emit(
                    out,
                    &json!({
                        "ageBucketMinutes": s.age_bucket_minutes,
                        "places": s.places.iter().map(shape_json).collect::<Vec<_>>(),
                        "domains": s.domains.iter().map(shape_json).collect::<Vec<_>>(),
                        "scanned": s.scanned, "elapsedMs": s.elapsed_ms,
                    }),
                )?;
            }
        }
        QueueCommand::List {
            filter,
            limit,
            page_token,
            all,
        } => list(&mut api, filter.filter(), limit, page_token, all, out).await?,
        QueueCommand::Show { id, body } => show(&mut api, id, body, out, false).await?,
        QueueCommand::Delete { filter, yes } => delete(&mut api, filter.filter(), yes, out).await?,
        QueueCommand::Hold { target, reason } => {
            let h = api
                .hold(HoldRequest {
                    target: Some(target.target()),
                    reason,
                })
                .await
                .map_err(status)?
                .into_inner();
            let t = h.hold.and_then(|h| h.target).unwrap_or_default();
            if out == Output::Table {
                println!("holding {} {}", t.kind, t.value);
            } else {
                emit(out, &json!({"held": {"kind": t.kind, "value": t.value}}))?;
            }
        }
        QueueCommand::Release { target } => {
            let r = api
                .release(ReleaseRequest {
                    target: Some(target.target()),
                })
                .await
                .map_err(status)?
                .into_inner();
            report(&r, "released", out)?;
        }
        QueueCommand::Retry { filter } => {
            let r = api
                .retry_now(RetryNowRequest {
                    filter: Some(filter.filter()),
                })
                .await
                .map_err(status)?
                .into_inner();
            report(&r, "moved to the fresh-mail lane", out)?;
        }
        QueueCommand::Bounce { filter, reason } => {
            let r = api
                .bounce(BounceRequest {
                    filter: Some(filter.filter()),
                    reason,
                })
                .await
                .map_err(status)?
                .into_inner();
            report(&r, "bounced", out)?;
        }
        QueueCommand::Trace { id } => {
            let t = api
                .get_trace(GetTraceRequest { queue_id: id })
                .await
                .map_err(status)?
                .into_inner();
            let events: Vec<Value> = t
                .events
                .iter()
                .map(|e| serde_json::from_str(&e.cloud_event).unwrap_or(Value::Null))
                .collect();
            if out == Output::Table {
                let rows: Vec<Vec<String>> = t
                    .events
                    .iter()
                    .zip(&events)
                    .map(|(e, v)| {
                        let d = &v["data"];
                        let field = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
                        let who = [field("recipient"), field("by"), field("hold")]
                            .into_iter()
                            .find(|s| !s.is_empty())
                            .unwrap_or_default();
                        let what = [field("reply"), field("reason"), field("dsnId")]
                            .into_iter()
                            .find(|s| !s.is_empty())
                            .unwrap_or_default();
                        vec![
                            time_ms(e.time_ms),
                            e.r#type.clone(),
                            blank(&who).to_owned(),
                            blank(&field("remote")).to_owned(),
                            blank(&what).chars().take(80).collect(),
                        ]
                    })
                    .collect();
                print_rows(&["TIME", "EVENT", "WHO", "REMOTE", "DETAIL"], &rows);
            } else {
                emit(out, &json!({ "events": events }))?;
            }
        }
        QueueCommand::Holds => {
            let r = api
                .list_holds(ListHoldsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let now = baton_core::clock::now_ms();
            if out == Output::Table {
                let rows: Vec<Vec<String>> = r
                    .holds
                    .iter()
                    .map(|h| {
                        let t = h.target.clone().unwrap_or_default();
                        vec![
                            t.kind,
                            t.value,
                            h.by.clone(),
                            age(now, h.created_ms),
                            blank(&h.reason).to_owned(),
                        ]
                    })
                    .collect();
                print_rows(&["KIND", "TARGET", "BY", "AGE", "REASON"], &rows);
            } else {
                let v: Vec<Value> = r
                    .holds
                    .iter()
                    .map(|h| {
                        let t = h.target.clone().unwrap_or_default();
                        json!({"kind": t.kind, "value": t.value, "by": h.by,
                               "reason": h.reason, "createdMs": h.created_ms})
                    })
                    .collect();
                emit(out, &json!({ "holds": v }))?;
            }
        }
        QueueCommand::Dead { command } => match command {
            DeadCommand::List { filter } => {
                list(
                    &mut api,
                    filter.in_place(Place::Dead),
                    1000,
                    None,
                    true,
                    out,
                )
                .await?
            }
            DeadCommand::Show { id, body } => show(&mut api, id, body, out, true).await?,
            DeadCommand::Requeue { filter } => {
                let r = api
                    .requeue_dead(RequeueDeadRequest {
                        filter: Some(filter.filter()),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                report(&r, "requeued", out)?;
            }
            DeadCommand::Delete { filter, yes } => {
                delete(&mut api, filter.in_place(Place::Dead), yes, out).await?
            }
        },
        QueueCommand::Quarantine { command } => match command {
            QuarantineCommand::List { filter } => {
                list(
                    &mut api,
                    filter.in_place(Place::Quarantine),
                    1000,
                    None,
                    true,
                    out,
                )
                .await?
            }
            QuarantineCommand::Show { id, body } => show(&mut api, id, body, out, false).await?,
            QuarantineCommand::Release { filter } => {
                let r = api
                    .release_quarantined(ReleaseQuarantinedRequest {
                        filter: Some(filter.filter()),
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                report(&r, "released", out)?;
            }
            QuarantineCommand::Delete { filter, yes } => {
                delete(&mut api, filter.in_place(Place::Quarantine), yes, out).await?
            }
        },
    }
    Ok(())
}

async fn list(
    api: &mut baton_admin::client::Client,
    filter: MessageFilter,
    limit: u32,
    mut token: Option<String>,
    all: bool,
    out: Output,
) -> anyhow::Result<()> {
    let mut messages = Vec::new();
    let next = loop {
        let page = api
            .list_messages(ListMessagesRequest {
                filter: Some(filter.clone()),
                page_size: limit,
                page_token: token.take().unwrap_or_default(),
            })
            .await
            .map_err(status)?
            .into_inner();
        messages.extend(page.messages);
        if !all || page.next_page_token.is_empty() {
            break page.next_page_token;
        }
        token = Some(page.next_page_token);
    };
    if out == Output::Table {
        print_messages(&messages);
        if !next.is_empty() {
            eprintln!("more: --page-token {next}");
        }
    } else {
        emit(
            out,
            &json!({
                "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
                "nextPageToken": next,
            }),
        )?;
    }
    Ok(())
}

async fn show(
    api: &mut baton_admin::client::Client,
    id: String,
    body: u32,
    out: Output,
    dead_only: bool,
) -> anyhow::Result<()> {
    let r = api
        .get_message(GetMessageRequest {
            id: id.clone(),
            body_bytes: body,
        })
        .await
        .map_err(status)?
        .into_inner();
    let parts: Vec<_> = r
        .parts
        .into_iter()
        .filter(|p| {
            !dead_only
                || p.message
                    .as_ref()
                    .is_some_and(|m| m.place == Place::Dead as i32)
        })
        .collect();
    if parts.is_empty() {
        bail!("not found: no dead letter {id}");
    }
    if out != Output::Table {
        let v: Vec<Value> = parts
            .iter()
            .map(|p| {
                let mut m = p.message.as_ref().map(message_json).unwrap_or(Value::Null);
                if body > 0 {
                    m["body"] = json!(String::from_utf8_lossy(&p.body));
                    m["bodyTruncated"] = json!(p.body_truncated);
                }
                m
            })
            .collect();
        return emit(out, &json!({ "parts": v }));
    }
    for p in parts {
        let Some(m) = p.message else { continue };
        println!(
            "{} (sequence {}) {} {}",
            if m.queue_id.is_empty() {
                "-"
            } else {
                &m.queue_id
            },
            m.sequence,
            m.pool,
            place_label(&m)
        );
        if m.undecodable {
            println!("  undecodable payload");
        } else {
            println!("  relay domain  {}", m.relay_domain);
            println!("  sender        <{}>", m.sender);
            println!(
                "  kind          {}  size {}  attempts {}",
                m.kind, m.size, m.attempts
            );
            println!("  received      {}", time_ms(m.received_at_ms));
            if m.next_attempt_ms > 0 {
                println!("  next attempt  {}", time_ms(m.next_attempt_ms));
            }
            println!(
                "  client        {} helo {} auth {}",
                m.client_address,
                m.helo,
                blank(&m.authenticated_as)
            );
            for r in &m.recipients {
                println!(
                    "  rcpt          <{}> {}{}",
                    r.address,
                    r.state,
                    if r.last_reply.is_empty() {
                        String::new()
                    } else {
                        format!(": {} (from {})", r.last_reply, blank(&r.last_remote))
                    }
                );
            }
        }
        if !m.dead_reason.is_empty() {
            println!(
                "  dead          {} after {} deliveries: {}",
                m.dead_reason,
                m.dead_deliveries,
                blank(&m.dead_detail)
            );
        }
        if body > 0 {
            println!(
                "--- body{} ---",
                if p.body_truncated { " (truncated)" } else { "" }
            );
            println!("{}", String::from_utf8_lossy(&p.body));
        }
    }
    Ok(())
}

async fn delete(
    api: &mut baton_admin::client::Client,
    filter: MessageFilter,
    yes: bool,
    out: Output,
) -> anyhow::Result<()> {
    let r = api
        .delete_messages(DeleteMessagesRequest {
            filter: Some(filter),
            confirm: yes,
        })
        .await
        .map_err(status)?
        .into_inner();
    if !r.executed {
        report(&r, "would delete", out)?;
        bail!(
            "refusing to delete {} message(s) without --yes (listed above)",
            r.matched
        );
    }
    report(&r, "deleted", out)
}

fn report(r: &ActionResponse, verb: &str, out: Output) -> anyhow::Result<()> {
    if out == Output::Table {
        print_messages(&r.messages);
        println!("{verb} {} message(s)", r.matched);
        Ok(())
    } else {
        emit(
            out,
            &json!({
                "executed": r.executed, "matched": r.matched,
                "messages": r.messages.iter().map(message_json).collect::<Vec<_>>(),
            }),
        )
    }
}

fn emit(out: Output, v: &Value) -> anyhow::Result<()> {
    match out {
        Output::Yaml => print!("{}", serde_yaml::to_string(v)?),
        _ => println!("{}", serde_json::to_string_pretty(v)?),
    }
    Ok(())
}

fn place_name(place: i32) -> &'static str {
    match Place::try_from(place) {
        Ok(Place::New) => "new",
        Ok(Place::Retry) => "retry",
        Ok(Place::Dead) => "dead",
        Ok(Place::Held) => "held",
        Ok(Place::Quarantine) => "quarantine",
        _ => "?",
    }
}

fn place_label(m: &QueuedMessage) -> String {
    if m.place == Place::Retry as i32 {
        format!("retry-{}", m.tier)
    } else {
        place_name(m.place).to_owned()
    }
}

fn message_json(m: &QueuedMessage) -> Value {
    json!({
        "queueId": m.queue_id, "sequence": m.sequence, "pool": m.pool,
        "place": place_name(m.place), "tier": m.tier, "relayDomain": m.relay_domain,
        "sender": m.sender, "size": m.size, "kind": m.kind, "attempts": m.attempts,
        "receivedAtMs": m.received_at_ms, "queuedAtMs": m.queued_at_ms,
        "nextAttemptMs": m.next_attempt_ms,
        "clientAddress": m.client_address, "authenticatedAs": m.authenticated_as, "helo": m.helo,
        "largeBody": m.large_body, "undecodable": m.undecodable,
        "dead": if m.dead_reason.is_empty() { Value::Null } else {
            json!({"reason": m.dead_reason, "detail": m.dead_detail, "deliveries": m.dead_deliveries})
        },
        "recipients": m.recipients.iter().map(|r| json!({
            "address": r.address, "state": r.state,
            "lastReply": r.last_reply, "lastRemote": r.last_remote,
        })).collect::<Vec<_>>(),
    })
}

fn shape_json(r: &ShapeRow) -> Value {
    json!({
        "pool": r.pool, "place": place_name(r.place), "tier": r.tier, "domain": r.domain,
        "messages": r.messages, "recipients": r.recipients, "bytes": r.bytes,
        "oldestAgeSeconds": r.oldest_age_seconds, "ageBuckets": r.age_buckets,
    })
}

fn blank(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn time_ms(ms: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)),
    )
    .to_string()
}

fn age(now_ms: i64, then_ms: i64) -> String {
    let s = Duration::from_secs(u64::try_from((now_ms - then_ms) / 1000).unwrap_or(0));
    humantime::format_duration(s)
        .to_string()
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn print_messages(messages: &[QueuedMessage]) {
    let now = baton_core::clock::now_ms();
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|m| {
            let rcpts = m
                .recipients
                .iter()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>();
            let last = m
                .recipients
                .iter()
                .find(|r| !r.last_reply.is_empty())
                .map(|r| r.last_reply.chars().take(60).collect())
                .unwrap_or_else(|| m.dead_reason.clone());
            vec![
                m.sequence.to_string(),
                blank(&m.queue_id).to_owned(),
                m.pool.clone(),
                place_label(m),
                age(now, baton_admin::view::arrival_ms(m)),
                m.size.to_string(),
                format!("<{}>", m.sender),
                match rcpts.len() {
                    0 => "-".to_owned(),
                    1 => rcpts[0].to_owned(),
                    n => format!("{} (+{})", rcpts[0], n - 1),
                },
                blank(&last).to_owned(),
            ]
        })
        .collect();
    print_rows(
        &[
            "SEQ",
            "QUEUE ID",
            "POOL",
            "PLACE",
            "AGE",
            "SIZE",
            "SENDER",
            "RECIPIENTS",
            "LAST",
        ],
        &rows,
    );
}

fn print_shape(bounds: &[u32], places: &[ShapeRow], domains: &[ShapeRow]) {
    let mut head: Vec<String> = [
        "POOL", "PLACE", "DOMAIN", "MSGS", "RCPTS", "BYTES", "OLDEST",
    ]
    .map(String::from)
    .to_vec();
    head.extend(bounds.iter().map(|m| format!("<{m}m")));
    head.push(format!("{}m+", bounds.last().copied().unwrap_or(0)));
    let row = |r: &ShapeRow| {
        let mut v = vec![
            r.pool.clone(),
            if r.place == Place::Retry as i32 {
                format!("retry-{}", r.tier)
            } else {
                place_name(r.place).to_owned()
            },
            if r.domain.is_empty() {
                "(all)".to_owned()
            } else {
                r.domain.clone()
            },
            r.messages.to_string(),
            r.recipients.to_string(),
            r.bytes.to_string(),
            humantime::format_duration(Duration::from_secs(r.oldest_age_seconds)).to_string(),
        ];
        v.extend(r.age_buckets.iter().map(u64::to_string));
        v
    };
    let mut rows = Vec::new();
    for p in places {
        rows.push(row(p));
        rows.extend(
            domains
                .iter()
                .filter(|d| d.pool == p.pool && d.place == p.place && d.tier == p.tier)
                .map(row),
        );
    }
    let head: Vec<&str> = head.iter().map(String::as_str).collect();
    print_rows(&head, &rows);
}

fn print_rows(head: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
