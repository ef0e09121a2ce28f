//! The command-line contract. Every flag can also be set by a `BATON_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Baton: a Kubernetes-native, horizontally scaled SMTP relay.
#[derive(Parser, Debug)]
#[command(name = "baton", version, about)]
pub(crate) struct Cli {
    /// Log filter (`info`, `baton_delivery=debug,info`, ...); changeable later at PUT /loglevel.
    #[arg(long, env = "BATON_LOG_LEVEL", default_value = "info", global = true)]
    pub log_level: String,
    /// Log line format.
    #[arg(
        long,
        env = "BATON_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormatArg,
    /// Threads that run the process's tasks; 0 means one per CPU the process may use. Set it
    /// to the CPUs the process is meant to use: more threads than that only wake and park each
    /// other. The chart and the operator set it to the pod's CPU request, rounded up.
    #[arg(
        long,
        env = "BATON_RUNTIME_THREADS",
        default_value_t = 0,
        global = true
    )]
    pub runtime_threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

/// Log format flag values.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LogFormatArg {
    /// Human-readable text.
    Text,
    /// JSON lines.
    Json,
}

impl From<LogFormatArg> for baton_telemetry::LogFormat {
    fn from(v: LogFormatArg) -> Self {
        match v {
            LogFormatArg::Text => baton_telemetry::LogFormat::Text,
            LogFormatArg::Json => baton_telemetry::LogFormat::Json,
        }
    }
}

/// Subcommands.
#[derive(Subcommand, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing flattened clap args buys nothing"
)]
pub(crate) enum Command {
    /// Everything on one machine: nats-server (unless --nats), config, ingress, one worker per pool.
    Dev(DevArgs),
    /// The SMTP ingress (production).
    Ingress(IngressArgs),
    /// A delivery worker for one SendingPool (production).
    Worker(WorkerArgs),
    /// The Kubernetes operator: reconciles SendingPools and RelayDomains, publishes the snapshot.
    Operator(OperatorArgs),
    /// The EventSink dispatcher: sends delivery events to the sinks' HTTPS endpoints as signed
    /// webhooks (production; scale it like workers).
    Webhooks(WebhooksArgs),
    /// Config snapshot commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write the CustomResourceDefinitions to a directory.
    Crds {
        /// Output directory.
        #[arg(long, env = "BATON_CRDS_OUT", default_value = "manifests/crds")]
        out: PathBuf,
    },
    /// List, add and remove suppressed recipients (the RelayDomains' suppression lists).
    Suppression {
        /// NATS URL.
        #[arg(
            long,
            env = "BATON_NATS",
            default_value = "nats://127.0.0.1:4222",
            global = true
        )]
        nats: String,
        #[command(flatten)]
        security: NatsSecurityArgs,
        #[command(subcommand)]
        command: SuppressionCommand,
    },
    /// Print the DNS records (DKIM, SPF, DMARC) each RelayDomain needs.
    DnsRecords {
        /// RelayDomain / SendingPool / Secret YAML files or directories.
        #[arg(
            long = "config",
            env = "BATON_CONFIG",
            value_delimiter = ',',
            required = true
        )]
        config: Vec<PathBuf>,
    },
    /// Serve the operations API (gRPC) over a NATS server, outside Kubernetes.
    Admin(AdminArgs),
    /// Manage the operations API's token file.
    AdminToken {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// See and act on the queue through the operations API: summary, list, show, delete and
    /// dead letters.
    Queue(crate::queue_cli::QueueArgs),
    /// Manage a keyring directory (the keys that seal the config snapshot's secrets).
    Keyring {
        #[command(subcommand)]
        command: KeyringCommand,
    },
    /// Print the nats-server `authorization` block for Baton's roles: one user each for the
    /// ingress, the admin (operator, `config apply`, CLIs) and every SendingPool's workers,
    /// each allowed only what its role needs. Passwords are environment references.
    NatsAuth {
        /// SendingPool YAML files or directories (the pools and their retry tiers).
        #[arg(
            long = "config",
            env = "BATON_CONFIG",
            value_delimiter = ',',
            required = true
        )]
        config: Vec<PathBuf>,
        /// Instead of printing the block with environment references, keep the users in this
        /// directory (created 0700, files 0600), as the operator keeps them in Kubernetes: one
        /// random password file per role (`admin`, `ingress`, `worker-<pool>`, kept across
        /// runs) and `auth.conf`, the block with bcrypt hashes, for nats-server to include.
        /// Run it again when pools change, then reload nats-server.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
}

/// `baton keyring ...`
#[derive(Subcommand, Debug)]
pub(crate) enum KeyringCommand {
    /// Add a new key to a keyring directory (created, mode 0700, when missing): the file
    /// `key-<highest id + 1>` (mode 0600) with 32 random bytes in base64. The next `config
    /// apply` seals with it; keep the old key until every process has the new snapshot.
    Add {
        /// The keyring directory.
        #[arg(long, env = "BATON_KEYRING")]
        keyring: PathBuf,
    },
    /// List the key ids of a keyring directory and which one seals (never the keys).
    List {
        /// The keyring directory.
        #[arg(long, env = "BATON_KEYRING")]
        keyring: PathBuf,
    },
}

/// `baton suppression ...`
#[derive(Subcommand, Debug)]
pub(crate) enum SuppressionCommand {
    /// Suppressed recipients (live ones; `--all` includes expired entries).
    List {
        /// Only this RelayDomain (`namespace/name`).
        #[arg(long)]
        relay_domain: Option<String>,
        /// Include expired entries.
        #[arg(long)]
        all: bool,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Suppress a recipient for a RelayDomain. Permanent unless `--expire-after` is given.
    Add {
        /// The RelayDomain (`namespace/name`).
        #[arg(long)]
        relay_domain: String,
        /// The recipient address.
        address: String,
        /// Lifetime (`30d`, `12h`); omitted: permanent.
        #[arg(long, value_parser = humantime::parse_duration)]
        expire_after: Option<Duration>,
        /// Why (kept with the entry).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Remove a recipient from a RelayDomain's list (mail to it is accepted again).
    Remove {
        /// The RelayDomain (`namespace/name`).
        #[arg(long)]
        relay_domain: String,
        /// The recipient address.
        address: String,
    },
    /// Delete every expired entry from the bucket.
    PurgeExpired,
}

/// Output of listing commands.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
}

/// `baton config ...`
#[derive(Subcommand, Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing flattened clap args buys nothing"
)]
pub(crate) enum ConfigCommand {
    /// Compile YAML (RelayDomain, SendingPool, Secret) into the `baton-config` KV snapshot.
    /// Nothing is written (non-zero exit) when any object is invalid.
    Apply {
        /// NATS URL.
        #[arg(long, env = "BATON_NATS", default_value = "nats://127.0.0.1:4222")]
        nats: String,
        #[command(flatten)]
        security: NatsSecurityArgs,
        #[command(flatten)]
        keyring: KeyringArgs,
        /// Replicas of the queue stream and both buckets (3 on a production NATS cluster).
        /// `config apply` is the owner of the queue settings outside Kubernetes: it provisions
        /// the stream, buckets and every pool's lanes and records the settings for ingress and
        /// workers. Without the flag, what is already recorded is kept (1 when nothing is).
        #[arg(long, env = "BATON_STREAM_REPLICAS")]
        stream_replicas: Option<usize>,
        /// DNS server (ip:port) for domain verification lookups instead of /etc/resolv.conf.
        #[arg(long, env = "BATON_DNS_SERVER")]
        dns_server: Option<SocketAddr>,
        #[command(flatten)]
        retention: EventRetentionArgs,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Compile and validate without writing anything; prints a summary. Exits non-zero when any
    /// object is invalid, naming each one.
    Check {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

/// Listener and limit flags shared by `dev` and `ingress`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub limits: InboundLimitArgs,
    /// Relay listener with STARTTLS (port 25 in the cluster).
    #[arg(long, env = "BATON_LISTEN_SMTP")]
    pub listen_smtp: Option<SocketAddr>,
    /// Submission listener, AUTH required after STARTTLS (port 587).
    #[arg(long, env = "BATON_LISTEN_SUBMISSION")]
    pub listen_submission: Option<SocketAddr>,
    /// Implicit-TLS submission listener (port 465).
    #[arg(long, env = "BATON_LISTEN_SMTPS")]
    pub listen_smtps: Option<SocketAddr>,
    /// /metrics, /healthz, /readyz, /loglevel.
    #[arg(long, env = "BATON_LISTEN_METRICS")]
    pub listen_metrics: Option<SocketAddr>,
    /// PEM certificate chain for STARTTLS and implicit TLS.
    #[arg(long, env = "BATON_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, env = "BATON_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How often the certificate and key files are checked for a renewal (new sessions get a
    /// renewed certificate without a restart; one that does not load is refused and counted).
    #[arg(long, env = "BATON_TLS_RELOAD_EVERY", value_parser = humantime::parse_duration, default_value = "5s")]
    pub tls_reload_every: Duration,
    /// Host name in the greeting and `Received:` headers (default: the machine's host name).
    #[arg(long, env = "BATON_HOSTNAME")]
    pub hostname: Option<String>,
    /// Concurrent connections per process.
    #[arg(long, env = "BATON_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Concurrent connections per client address.
    #[arg(long, env = "BATON_MAX_CONNECTIONS_PER_IP", default_value_t = 200)]
    pub max_connections_per_ip: usize,
    /// Idle time allowed between client commands.
    #[arg(long, env = "BATON_COMMAND_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5m")]
    pub command_timeout: Duration,
    /// Maximum lifetime of one SMTP session.
    #[arg(long, env = "BATON_SESSION_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30m")]
    pub session_timeout: Duration,
    /// Maximum message size in bytes (advertised in EHLO; a RelayDomain can only lower it).
    #[arg(long, env = "BATON_MAX_MESSAGE_SIZE", default_value_t = 25 * 1024 * 1024)]
    pub max_message_size: u64,
    /// Message bytes all sessions may hold at once before answering 452 4.3.1.
    #[arg(long, env = "BATON_INFLIGHT_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub inflight_bytes: usize,
    /// Delay added to error replies after the third error in a session.
    #[arg(long, env = "BATON_ERROR_DELAY", value_parser = humantime::parse_duration, default_value = "1s")]
    pub error_delay: Duration,
    /// Delay of the reply to a session's first failed AUTH; it doubles with each further
    /// failure in the session, up to 8 s (`0s` disables it).
    #[arg(long, env = "BATON_AUTH_FAILURE_DELAY", value_parser = humantime::parse_duration, default_value = "1s")]
    pub auth_failure_delay: Duration,
    /// How long to wait for JetStream's PubAck before answering 451.
    #[arg(long, env = "BATON_PUBLISH_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub publish_timeout: Duration,
    /// After SIGTERM, how long transactions in flight may take to finish.
    #[arg(long, env = "BATON_SHUTDOWN_GRACE", value_parser = humantime::parse_duration, default_value = "30s")]
    pub shutdown_grace: Duration,
    /// `baton dev`: replicas it provisions the queue with (default: what is recorded, else 1).
    /// `baton ingress`: deprecated and changes nothing — the queue's settings are recorded by
    /// `baton config apply` or the operator; when given, a different recorded value is
    /// reported as drift (`baton_queue_settings_drift{object="expectation"}`, `/readyz`).
    #[arg(long, env = "BATON_STREAM_REPLICAS")]
    pub stream_replicas: Option<usize>,
}

/// The ingress's cluster-wide limits (budgets and lockouts shared through the `baton-limits`
/// KV bucket) and its connect deny list.
#[derive(Args, Debug, Clone)]
pub(crate) struct InboundLimitArgs {
    /// Number of ingress pods assumed when NATS is unreachable: each pod then allows
    /// `ceil(limit / divisor)` per window of every shared budget on its own (never unlimited,
    /// never a wait) until NATS answers again.
    #[arg(long, env = "BATON_LIMIT_FALLBACK_DIVISOR", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit_fallback_divisor: u32,
    /// Client network (CIDR or address) refused at connect with `554 5.7.1`; repeatable
    /// (comma-separated in the environment variable).
    #[arg(long = "deny-network", value_name = "CIDR", env = "BATON_DENY_NETWORKS", value_delimiter = ',', value_parser = parse_network)]
    pub deny_networks: Vec<ipnet::IpNet>,
    /// Failed AUTH attempts of one user name, or from one client address, within
    /// `--auth-lockout-window` that lock it out across every ingress pod (AUTH `454 4.7.0`; a
    /// locked client also `421 4.7.0` at connect). 0 turns the lockout off.
    #[arg(long, env = "BATON_AUTH_LOCKOUT_FAILURES", default_value_t = 10)]
    pub auth_lockout_failures: u32,
    /// The fixed window failed AUTH attempts are counted in.
    #[arg(long, env = "BATON_AUTH_LOCKOUT_WINDOW", value_parser = humantime::parse_duration, default_value = "15m")]
    pub auth_lockout_window: Duration,
    /// How long a lockout lasts from the failure that caused it.
    #[arg(long, env = "BATON_AUTH_LOCKOUT_DURATION", value_parser = humantime::parse_duration, default_value = "15m")]
    pub auth_lockout_duration: Duration,
}

fn parse_network(text: &str) -> Result<ipnet::IpNet, String> {
    baton_ingress::deny::parse_network(text)
        .ok_or_else(|| format!("{text:?} is not a CIDR network or an IP address"))
}

/// `baton ingress`
#[derive(Args, Debug)]
pub(crate) struct IngressArgs {
    /// NATS URL.
    #[arg(long, env = "BATON_NATS")]
    pub nats: String,
    #[command(flatten)]
    pub security: NatsSecurityArgs,
    #[command(flatten)]
    pub keyring: KeyringArgs,
    #[command(flatten)]
    pub listen: ListenArgs,
}

/// `baton worker`'s tuning: the delivery tuning it shares with `dev`, and the fallback of the
/// pool's shared outbound limits (`baton dev` takes that from its ingress flag
/// `--limit-fallback-divisor`: one flag, one process).
#[derive(Args, Debug, Clone)]
pub(crate) struct WorkerTuning {
    #[command(flatten)]
    pub delivery: DeliveryTuning,
    /// Number of the pool's workers assumed when NATS (the `baton-limits` bucket) is slow or
    /// unreachable: each worker then allows `ceil(limit / divisor)` messages per minute and
    /// `max(1, maxConnections / divisor)` connections per destination site on its own (never
    /// unlimited, never a wait) until NATS answers again. Set it to the pool's worker replicas
    /// (with autoscaling, the maximum); 1 lets every worker use the whole pool's limits.
    #[arg(long, env = "BATON_LIMIT_FALLBACK_DIVISOR", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit_fallback_divisor: u32,
}

/// Delivery tuning shared by `dev` and `worker`.
#[derive(Args, Debug, Clone)]
pub(crate) struct DeliveryTuning {
    /// DNS server (ip:port) for MX lookups instead of /etc/resolv.conf.
    #[arg(long, env = "BATON_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,
    /// Concurrent delivery attempts per worker.
    #[arg(long, env = "BATON_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// Messages a worker holds from the fresh lane at once.
    #[arg(long, env = "BATON_FETCH_WINDOW", default_value_t = 256)]
    pub fetch_window: usize,
    /// Idle outbound connections are closed after this long.
    #[arg(long, env = "BATON_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub idle_timeout: Duration,
    /// Connect timeout for outbound SMTP.
    #[arg(long, env = "BATON_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub connect_timeout: Duration,
    /// Bounce rules (YAML, the format of Baton's shipped rules) tried before the shipped ones.
    #[arg(long, env = "BATON_BOUNCE_RULES")]
    pub bounce_rules: Option<PathBuf>,
}

/// `baton worker`
#[derive(Args, Debug)]
pub(crate) struct WorkerArgs {
    /// NATS URL.
    #[arg(long, env = "BATON_NATS")]
    pub nats: String,
    #[command(flatten)]
    pub security: NatsSecurityArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// SendingPool to serve.
    #[arg(long, env = "BATON_POOL")]
    pub pool: String,
    /// /metrics, /healthz, /readyz, /loglevel.
    #[arg(long, env = "BATON_LISTEN_METRICS")]
    pub listen_metrics: Option<SocketAddr>,
    /// Our host name (EHLO default, DSN Reporting-MTA).
    #[arg(long, env = "BATON_HOSTNAME")]
    pub hostname: Option<String>,
    /// Deprecated and changes nothing: the queue's settings are recorded by `baton config
    /// apply` or the operator. When given, a different recorded value is reported as drift
    /// (`baton_queue_settings_drift{object="expectation"}`, `/readyz`).
    #[arg(long, env = "BATON_STREAM_REPLICAS")]
    pub stream_replicas: Option<usize>,
    #[command(flatten)]
    pub tuning: WorkerTuning,
}

/// How long the event stream keeps delivery events (set by the owner: `config apply`, `dev`,
/// the operator).
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct EventRetentionArgs {
    /// Events older than this are discarded (trace and late sinks see no further back).
    #[arg(long, env = "BATON_EVENTS_MAX_AGE", value_parser = humantime::parse_duration, default_value = "7d")]
    pub events_max_age: std::time::Duration,
    /// Beyond this size (bytes, or with a unit: 512Mi, 10Gi) the oldest events are discarded.
    #[arg(long, env = "BATON_EVENTS_MAX_BYTES", value_parser = parse_bytes, default_value = "1Gi")]
    pub events_max_bytes: i64,
}

impl EventRetentionArgs {
    pub(crate) fn retention(self) -> baton_queue::events::EventRetention {
        baton_queue::events::EventRetention {
            max_age: self.events_max_age,
            max_bytes: self.events_max_bytes,
        }
    }
}

fn parse_bytes(text: &str) -> Result<i64, String> {
    let n = baton_config::units::parse_size(text)?;
    if n == 0 {
        return Err("must be more than 0".into());
    }
    i64::try_from(n).map_err(|_| "too large".to_owned())
}

/// `baton webhooks`
#[derive(Args, Debug)]
pub(crate) struct WebhooksArgs {
    /// NATS URL.
    #[arg(long, env = "BATON_NATS")]
    pub nats: String,
    #[command(flatten)]
    pub security: NatsSecurityArgs,
    /// The snapshot keyring (the sinks' signing keys are sealed in the snapshot).
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// /metrics, /healthz, /readyz, /loglevel.
    #[arg(long, env = "BATON_LISTEN_METRICS")]
    pub listen_metrics: Option<SocketAddr>,
    /// Networks sinks may reach even though they are denied (repeatable, or comma-separated):
    /// by default loopback, link-local (cloud metadata), unspecified, multicast and broadcast
    /// addresses are refused.
    #[arg(
        long = "sink-allow-network",
        env = "BATON_SINK_ALLOW_NETWORKS",
        value_delimiter = ','
    )]
    pub sink_allow: Vec<ipnet::IpNet>,
    /// Further networks sinks may not reach, e.g. the cluster's pod and Service ranges
    /// (repeatable, or comma-separated).
    #[arg(
        long = "sink-deny-network",
        env = "BATON_SINK_DENY_NETWORKS",
        value_delimiter = ','
    )]
    pub sink_deny: Vec<ipnet::IpNet>,
}

/// `baton dev`
#[derive(Args, Debug)]
pub(crate) struct DevArgs {
    /// RelayDomain / SendingPool / Secret YAML files or directories (repeatable).
    #[arg(long = "config", env = "BATON_CONFIG", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Use this NATS server instead of starting `nats-server -js` from PATH.
    #[arg(long, env = "BATON_NATS")]
    pub nats: Option<String>,
    /// TLS and credentials for `--nats` (the nats-server `baton dev` starts needs none).
    #[command(flatten)]
    pub security: NatsSecurityArgs,
    /// Where the started nats-server keeps its store (and, without --keyring, the keyring
    /// `baton dev` creates: `<data-dir>/keyring`).
    #[arg(long, env = "BATON_DATA_DIR", default_value = ".dev")]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// Start nats-server with `sync_interval: always` (fsync every stored message), so a
    /// single server survives a power loss with what it answered `250` (needs nats-server ≥ 2.10;
    /// measured cost in README "Operations").
    #[arg(long, env = "BATON_DURABLE")]
    pub durable: bool,
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub tuning: DeliveryTuning,
    #[command(flatten)]
    pub admin: AdminListenArgs,
    #[command(flatten)]
    pub retention: EventRetentionArgs,
}

/// The operations API's listener (`baton admin`, `baton dev`).
#[derive(Args, Debug, Clone)]
pub(crate) struct AdminListenArgs {
    /// Operations API listener (gRPC `baton.v1.Admin`, health, reflection). `baton dev`
    /// serves it on 127.0.0.1:50051 when not given. A non-loopback address needs TLS.
    #[arg(long, env = "BATON_LISTEN_ADMIN")]
    pub listen_admin: Option<SocketAddr>,
    /// Token file of the operations API: one line per token with its SHA-256, permission
    /// (`viewer`, `admin`), namespaces (`*` or `ns1,ns2`) and name; re-read when it changes.
    /// `baton admin-token add` writes it. `baton dev` keeps one under `--data-dir`.
    #[arg(long, env = "BATON_ADMIN_TOKENS")]
    pub admin_tokens: Option<PathBuf>,
    /// PEM certificate chain of the operations API (TLS).
    #[arg(long, env = "BATON_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of `--admin-tls-cert`.
    #[arg(long, env = "BATON_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub admin_tls_key: Option<PathBuf>,
}

/// Delivery events (`BATON_EVENTS`): on by default.
#[derive(Args, Debug, Clone, Copy)]
pub(crate) struct EventArgs {
    /// Publish delivery events (accepted, delivered, deferred, ...) to the `BATON_EVENTS`
    /// stream (`--events=false` to turn them off).
    #[arg(long = "events", env = "BATON_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub events: bool,
}

/// `baton admin`
#[derive(Args, Debug)]
pub(crate) struct AdminArgs {
    /// NATS URL.
    #[arg(long, env = "BATON_NATS", default_value = "nats://127.0.0.1:4222")]
    pub nats: String,
    #[command(flatten)]
    pub security: NatsSecurityArgs,
    #[command(flatten)]
    pub listen: AdminListenArgs,
}

/// `baton admin-token ...`
#[derive(Subcommand, Debug)]
pub(crate) enum AdminTokenCommand {
    /// Create a token: its line (the SHA-256, never the token) is appended to the token file
    /// (created 0600) and the token is printed once, or written to `--out` (0600).
    Add {
        /// The token file the API reads (`--admin-tokens`).
        #[arg(long, env = "BATON_ADMIN_TOKENS")]
        tokens: PathBuf,
        /// Name of the token's holder, shown in the API's logs.
        #[arg(long)]
        name: String,
        /// `viewer` (status, summary, list, show) or `admin` (also requeue and delete).
        #[arg(long, value_enum, default_value_t = TokenPermission::Viewer)]
        permission: TokenPermission,
        /// Limit the token to the mail of these namespaces (repeatable; default: all).
        #[arg(long = "namespace")]
        namespaces: Vec<String>,
        /// Write the token to this file (0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// `--permission` values.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub(crate) enum TokenPermission {
    /// Read only.
    Viewer,
    /// Read and write.
    Admin,
}

/// `baton operator`
#[derive(Args, Debug)]
pub(crate) struct OperatorArgs {
    /// NATS URL (also given to the worker Deployments).
    #[arg(long, env = "BATON_NATS")]
    pub nats: String,
    #[command(flatten)]
    pub retention: EventRetentionArgs,
    #[command(flatten)]
    pub admin: AdminListenArgs,
    #[command(flatten)]
    pub security: NatsSecurityArgs,
    /// A keyring directory to seal the snapshot's secrets with, when there is no
    /// --keyring-secret (re-read at every sync).
    #[command(flatten)]
    pub keyring: KeyringArgs,
    /// Secret (install namespace) holding the keyring: read at every sync (created with one
    /// random key when missing) and mounted into worker pods at `/etc/baton/keyring` (their
    /// `BATON_KEYRING`). The chart sets it; ingress pods mount the same Secret.
    #[arg(long, env = "BATON_KEYRING_SECRET")]
    pub keyring_secret: Option<String>,
    /// Secret (install namespace) the operator keeps the NATS users in: a password per role
    /// (`admin`, `ingress`, `worker-<pool>`) and `auth.conf`, the nats-server authorization
    /// block with bcrypt hashes, rewritten when SendingPools come and go. The operator logs in
    /// as `baton-admin` from it (instead of --nats-user/--nats-creds) and gives each pool's
    /// worker pods their password. Chart: `natsAuth`.
    #[arg(long, env = "BATON_NATS_AUTH_SECRET")]
    pub nats_auth_secret: Option<String>,
    /// /metrics, /healthz, /readyz, /loglevel.
    #[arg(long, env = "BATON_LISTEN_METRICS")]
    pub listen_metrics: Option<SocketAddr>,
    /// Install namespace (worker Deployments, PDBs, HPAs, the Lease); defaults to $POD_NAMESPACE.
    #[arg(long, env = "BATON_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image of the worker Deployments (the `baton` image).
    #[arg(long, env = "BATON_WORKER_IMAGE")]
    pub worker_image: String,
    /// Service account of the worker pods.
    #[arg(
        long,
        env = "BATON_WORKER_SERVICE_ACCOUNT",
        default_value = "baton-worker"
    )]
    pub worker_service_account: String,
    /// The fully qualified name workers announce in EHLO and DSNs for pools without egress
    /// identities or `spec.ehloName` (set as their `BATON_HOSTNAME`). Without it such pools'
    /// workers are not ready: they never announce their pod name.
    #[arg(long, env = "BATON_WORKER_HOSTNAME")]
    pub worker_hostname: Option<String>,
    /// Secret (install namespace) mounted into worker pods for TLS to NATS: `ca.crt` is the CA
    /// bundle the server must chain to; with `--worker-nats-client-cert`, `tls.crt`/`tls.key`
    /// are the client certificate (cert-manager's layout).
    #[arg(long, env = "BATON_WORKER_NATS_TLS_SECRET")]
    pub worker_nats_tls_secret: Option<String>,
    /// DNS server (ip:port) for domain verification lookups instead of /etc/resolv.conf.
    #[arg(long, env = "BATON_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,
    /// Workers present the `tls.crt`/`tls.key` of `--worker-nats-tls-secret` to NATS.
    #[arg(
        long,
        env = "BATON_WORKER_NATS_CLIENT_CERT",
        requires = "worker_nats_tls_secret"
    )]
    pub worker_nats_client_cert: bool,
    /// Replicas of the queue stream and buckets (3 on a production NATS cluster). The operator
    /// is the owner of the queue settings in Kubernetes: it provisions with them and records
    /// them for ingress and workers, which only verify.
    #[arg(long, env = "BATON_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Reconcile only while holding the Lease (`--leader-election=false` to turn off).
    #[arg(
        long,
        env = "BATON_LEADER_ELECTION",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,
    /// Name of the leader-election Lease in the install namespace.
    #[arg(long, env = "BATON_LEASE_NAME", default_value = "baton-operator")]
    pub lease_name: String,
}

/// The keyring that seals (operator, `config apply`, `dev`) and opens (ingress, workers) the
/// secrets of the config snapshot: a directory of `key-<id>` files, each the base64 of 32
/// random bytes (`openssl rand -base64 32`, or `baton keyring add`); the highest id seals.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct KeyringArgs {
    /// Keyring directory (a mounted Secret in Kubernetes). Re-read when a snapshot needs a key
    /// it does not have yet, so a rotated key is picked up without a restart.
    #[arg(long, env = "BATON_KEYRING")]
    pub keyring: Option<PathBuf>,
}

impl KeyringArgs {
    /// The key source these flags name.
    pub(crate) fn source(&self) -> baton_seal::KeySource {
        baton_seal::KeySource::new(self.keyring.clone())
    }
}

/// TLS and credentials towards NATS, shared by every command that connects. Secrets are read
/// from files or the environment, never from the command line: the password from
/// `--nats-password-file` or `BATON_NATS_PASSWORD`, the nkey seed from `--nats-nkey-file`.
#[derive(Args, Debug, Clone, Default)]
pub(crate) struct NatsSecurityArgs {
    /// PEM CA bundle the NATS server's certificate must chain to (demands TLS).
    #[arg(long, env = "BATON_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// PEM client certificate, for NATS servers that verify clients (`verify: true`).
    #[arg(long, env = "BATON_NATS_CERT", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    /// PEM key of `--nats-cert`.
    #[arg(long, env = "BATON_NATS_KEY", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// Demand TLS even without `--nats-ca` (the server is then verified against the system
    /// roots). `tls://` URLs demand it too.
    #[arg(long, env = "BATON_NATS_TLS")]
    pub nats_tls: bool,
    /// NATS `.creds` file (user JWT and nkey seed, decentralised auth).
    #[arg(long, env = "BATON_NATS_CREDS", conflicts_with_all = ["nats_user", "nats_nkey_file"])]
    pub nats_creds: Option<PathBuf>,
    /// NATS user name; the password comes from `--nats-password-file` or `BATON_NATS_PASSWORD`.
    #[arg(long, env = "BATON_NATS_USER", conflicts_with = "nats_nkey_file")]
    pub nats_user: Option<String>,
    /// File holding the NATS password of `--nats-user` (trailing newline ignored).
    #[arg(long, env = "BATON_NATS_PASSWORD_FILE", requires = "nats_user")]
    pub nats_password_file: Option<PathBuf>,
    /// File holding an nkey seed (`SU...`).
    #[arg(long, env = "BATON_NATS_NKEY_FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// Prefix of this process's reply subjects; default `_INBOX.<--nats-user>` (what the
    /// permissions of `baton nats-auth` allow), else `_INBOX`.
    #[arg(long, env = "BATON_NATS_INBOX_PREFIX")]
    pub nats_inbox_prefix: Option<String>,
}

/// Environment variable holding the NATS password when `--nats-password-file` is not given.
pub(crate) const NATS_PASSWORD_ENV: &str = "BATON_NATS_PASSWORD";

impl NatsSecurityArgs {
    /// The connect options for `url`.
    pub(crate) fn options(&self, url: &str) -> anyhow::Result<baton_queue::NatsOptions> {
        use anyhow::Context as _;
        use baton_queue::{NatsAuth, NatsOptions, NatsTls};
        let read = |path: &PathBuf, what: &str| {
            std::fs::read_to_string(path)
                .with_context(|| format!("reading the NATS {what} file {}", path.display()))
                .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
        };
        let auth = match (&self.nats_creds, &self.nats_user, &self.nats_nkey_file) {
            (Some(creds), _, _) => NatsAuth::CredsFile(creds.clone()),
            (None, Some(user), _) => {
                let password = match &self.nats_password_file {
                    Some(path) => read(path, "password")?,
                    None => std::env::var(NATS_PASSWORD_ENV).with_context(|| {
                        format!(
                            "--nats-user {user} needs --nats-password-file or {NATS_PASSWORD_ENV}"
                        )
                    })?,
                };
                NatsAuth::UserPassword {
                    user: user.clone(),
                    password,
                }
            }
            (None, None, Some(path)) => NatsAuth::Nkey(read(path, "nkey seed")?),
            (None, None, None) => NatsAuth::None,
        };
        Ok(NatsOptions {
            inbox_prefix: self.nats_inbox_prefix.clone(),
            url: url.to_owned(),
            tls: NatsTls {
                ca: self.nats_ca.clone(),
                client_cert: self.nats_cert.clone().zip(self.nats_key.clone()),
                required: self.nats_tls,
            },
            auth,
        })
    }
}
