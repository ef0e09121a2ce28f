//! `RelayDomain`: a sending domain, who may submit mail as it, and how it is signed.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::SecretRef;
use super::schema::{self, DURATION_PATTERN};
use crate::dns::DnsRecord;

/// Schema pattern of a sending domain: lower-case ASCII host name (A-labels for IDNs).
pub(crate) const DOMAIN_PATTERN: &str =
    r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";
/// Schema pattern of a DKIM selector: one lower-case DNS label.
pub(crate) const SELECTOR_PATTERN: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

/// Desired state of a RelayDomain: the sending domain, the SendingPool that delivers its mail,
/// who may submit mail as it, DKIM signing and inbound limits.
// Several `printcolumn(type_ = ...)` entries trip clippy's duplicated-attribute check.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "baton.dev",
    version = "v1alpha1",
    kind = "RelayDomain",
    plural = "relaydomains",
    singular = "relaydomain",
    shortname = "rd",
    category = "baton",
    namespaced,
    status = "RelayDomainStatus",
    doc = "A sending domain relayed by Baton: allowed senders, submission access, DKIM signing and \
           limits. Namespaced; owned by the application team that sends as the domain.",
    printcolumn(
        name = "Domain",
        type_ = "string",
        json_path = ".spec.domain",
        description = "Sending domain"
    ),
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.pool",
        description = "SendingPool delivering the domain's mail"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether Baton accepts mail for the domain"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[kube(validation = Rule::new("self.metadata.name.size() <= 63").message(
    "metadata.name must be at most 63 characters: it becomes a label value on the DKIM key Secret"
))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(transform = schema::unsigned_bounds)]
#[x_kube(validation = Rule::new(
    "!has(self.allowedSenders) || self.allowedSenders.all(s, s.indexOf('@') > 0 && (s.endsWith('@' + self.domain) || s.endsWith('.' + self.domain)))")
    .message("allowedSenders must be addresses in the domain or its subdomains")
    .field_path(".allowedSenders"))]
#[x_kube(validation = Rule::new(
    "!has(self.postmaster) || (self.postmaster.indexOf('@') > 0 && (self.postmaster.endsWith('@' + self.domain) || self.postmaster.endsWith('.' + self.domain)))")
    .message("postmaster must be an address in the domain or its subdomains")
    .field_path(".postmaster"))]
pub struct RelayDomainSpec {
    /// The sending domain, lower-case ASCII (A-labels for IDNs). Immutable.
    #[schemars(length(min = 1, max = 253), pattern(DOMAIN_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("domain is immutable"))]
    pub domain: String,
    /// Name of the SendingPool that delivers this domain's mail (a DNS subdomain of at most 63
    /// characters, as SendingPool names are).
    #[serde(default = "default_pool")]
    #[schemars(length(min = 1, max = 63), pattern(schema::DNS_SUBDOMAIN_PATTERN))]
    pub pool: String,
    /// Envelope senders allowed to use this domain: `*@example.com`, `app@example.com`,
    /// `*@*.example.com`. Each must be in the domain or one of its subdomains. Empty: any address
    /// in the domain (`*@<domain>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 3, max = 320)))]
    pub allowed_senders: Vec<String>,
    /// Accept messages whose From: header domain does not align with the envelope sender domain
    /// (DMARC alignment is then the sender's responsibility).
    #[serde(default)]
    pub allow_unaligned_from: bool,
    /// Who may submit mail for this domain: client networks and/or SMTP AUTH users.
    #[serde(default)]
    pub submission: SubmissionSpec,
    /// DKIM signing. Omitted: mail is relayed unsigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<DkimSpec>,
    /// Inbound limits.
    #[serde(default)]
    pub limits: DomainLimits,
    /// The domain's suppression list: recipients that hard-bounced are refused (or bounced
    /// without an attempt) until their entry expires. On by default.
    #[serde(default)]
    pub suppression: SuppressionSpec,
    /// The address delivery status notifications about this domain's mail come from, in the
    /// domain or one of its subdomains (they are DKIM-signed with the domain's keys, so they
    /// align). Default: `postmaster@<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 254))]
    pub postmaster: Option<String>,
    /// A return-path domain: the envelope sender of each message is rewritten to a signed VERP
    /// address on it (one per recipient), so bounces and complaints that arrive after a
    /// receiver's `250` come back to Baton (the domain's MX is Baton's ingress) and feed the
    /// suppression list. Omitted: envelope senders are relayed as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_path: Option<ReturnPathSpec>,
    /// Delay notices (DSN `Action: delayed`) to senders whose mail stays deferred, like
    /// Postfix's `delay_warning_time`. On by default (after 4h, then at most every 24h).
    #[serde(default)]
    pub delay_notice: DelayNoticeSpec,
    /// Header policy: header fields removed and added at the end of DATA, before the pool's
    /// content filters, Baton's trace header and DKIM signing. Omitted: headers kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<super::filter::HeaderPolicySpec>,
}

/// Bounce classes (see README "Bounces"), as written in `spec.suppression.classes`.
pub const BOUNCE_CLASSES: [&str; 9] = [
    "invalid_recipient",
    "mailbox_full",
    "policy",
    "reputation",
    "tls_auth_required",
    "dns_failure",
    "transient",
    "message_too_large",
    "other",
];

/// The suppression list of a RelayDomain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuppressionSpec {
    /// Whether permanent failures add recipients and suppressed recipients are refused.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `Refuse`: mail to a suppressed recipient gets `550 5.1.1` at RCPT. `AcceptAndBounce`:
    /// it is accepted and failed without a delivery attempt, with a DSN to the sender.
    #[serde(default)]
    pub mode: SuppressionMode,
    /// How long an entry added by a bounce lasts (`30d`, `12h`, ...; `0s`: permanent).
    #[serde(default = "default_suppression_expiry")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub expire_after: String,
    /// Bounce classes whose permanent (5xx) failures add the recipient: `invalid_recipient`,
    /// `mailbox_full`, `policy`, `reputation`, `tls_auth_required`, `dns_failure`, `transient`,
    /// `message_too_large`, `other`.
    #[serde(default = "default_suppression_classes")]
    #[schemars(length(max = 9), inner(length(min = 1, max = 32)))]
    #[x_kube(validation = Rule::new("self.all(c, c in ['invalid_recipient', 'mailbox_full', 'policy', 'reputation', 'tls_auth_required', 'dns_failure', 'transient', 'message_too_large', 'other'])").message("classes must be bounce classes (invalid_recipient, mailbox_full, policy, reputation, tls_auth_required, dns_failure, transient, message_too_large, other)"))]
    pub classes: Vec<String>,
}

impl Default for SuppressionSpec {
    fn default() -> Self {
        SuppressionSpec {
            enabled: true,
            mode: SuppressionMode::default(),
            expire_after: default_suppression_expiry(),
            classes: default_suppression_classes(),
        }
    }
}

/// What happens to mail for a suppressed recipient.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SuppressionMode {
    /// Refused at RCPT with `550 5.1.1`.
    #[default]
    Refuse,
    /// Accepted, then failed without an attempt; the sender gets a DSN.
    AcceptAndBounce,
}

/// The return path of a RelayDomain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReturnPathSpec {
    /// The return-path domain, lower-case ASCII, e.g. `bounces.example.com` (a subdomain of the
    /// sending domain keeps SPF and DMARC aligned).
    #[schemars(length(min = 1, max = 253), pattern(DOMAIN_PATTERN))]
    pub domain: String,
    /// The host name of Baton's ingress as the internet reaches it: the MX record
    /// `baton dns-records` prints for the return-path domain.
    #[schemars(length(min = 1, max = 253), pattern(DOMAIN_PATTERN))]
    pub mx_host: String,
    /// Secret in the RelayDomain's namespace with the VERP signing keys under `key-0` …
    /// `key-31` (at least 32 random bytes each; the highest signs, all verify, so a new key is
    /// added with the next number and the old one removed once its mail has expired).
    pub key_secret_ref: SecretRef,
}

/// Delay notices of a RelayDomain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelayNoticeSpec {
    /// Whether delay notices are sent at all (they go only to recipients whose NOTIFY asks for
    /// DELAY, which the default NOTIFY does).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long mail must have been deferred before the first notice (`4h`).
    #[serde(default = "default_delay_after")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub after: String,
    /// At most one notice per message per this interval (`24h`).
    #[serde(default = "default_delay_interval")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub interval: String,
}

impl Default for DelayNoticeSpec {
    fn default() -> Self {
        DelayNoticeSpec {
            enabled: true,
            after: default_delay_after(),
            interval: default_delay_interval(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_suppression_expiry() -> String {
    "30d".to_owned()
}

fn default_suppression_classes() -> Vec<String> {
    vec!["invalid_recipient".to_owned()]
}

fn default_delay_after() -> String {
    "4h".to_owned()
}

fn default_delay_interval() -> String {
    "24h".to_owned()
}

/// Who may submit mail for a RelayDomain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubmissionSpec {
    /// Client networks (IPv4 or IPv6 CIDR of any prefix length, e.g. `10.0.0.0/8`, `fd00::/8`,
    /// `::1/128`) that may submit without AUTH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 49)))]
    #[x_kube(validation = Rule::new("self.all(n, isCIDR(n))").message("networks must be CIDRs"))]
    pub networks: Vec<String>,
    /// SMTP AUTH users that may submit, one Secret per user.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub credentials: Vec<SmtpCredentialRef>,
}

/// An SMTP AUTH user of a RelayDomain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpCredentialRef {
    /// Secret of type `kubernetes.io/basic-auth` (keys `username`, `password`) in the
    /// RelayDomain's namespace. Only a salted hash of the password reaches the data plane.
    pub secret_ref: SecretRef,
}

/// DKIM signing of a RelayDomain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new(
    "!has(self.additionalKeys) || self.additionalKeys.all(k, k.selector != self.selector)")
    .message("additionalKeys must not reuse the primary selector")
    .field_path(".additionalKeys"))]
#[x_kube(validation = Rule::new(
    "!has(self.additionalKeys) || self.additionalKeys.all(k, self.additionalKeys.exists_one(j, j.selector == k.selector))")
    .message("additionalKeys selectors must be unique")
    .field_path(".additionalKeys"))]
pub struct DkimSpec {
    /// Selector of the signing key: the DNS label in `<selector>._domainkey.<domain>`.
    #[schemars(length(min = 1, max = 63), pattern(SELECTOR_PATTERN))]
    pub selector: String,
    /// Signing algorithm: `rsa-sha256` or `ed25519-sha256`.
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// Secret holding the private key as PKCS#8 PEM under `private.pem`, in the RelayDomain's
    /// namespace. The operator generates it when absent.
    pub key_secret_ref: SecretRef,
    /// Extra keys signed with in addition to the primary one (dual signing during a rotation).
    /// At most 8; each selector differs from the primary one and from the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub additional_keys: Vec<DkimKeySpec>,
    /// Signature lifetime (`7d`, `36h`, `1h30m`: numbers with units `s`, `m`, `h`, `d`, `w`, ...);
    /// sets the `x=` tag. Omitted: signatures do not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32), pattern(DURATION_PATTERN))]
    pub expire_after: Option<String>,
}

/// An additional DKIM key (for dual signing during a key rotation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DkimKeySpec {
    /// Selector of the key: the DNS label in `<selector>._domainkey.<domain>`.
    #[schemars(length(min = 1, max = 63), pattern(SELECTOR_PATTERN))]
    pub selector: String,
    /// Signing algorithm: `rsa-sha256` or `ed25519-sha256`.
    #[serde(default)]
    pub algorithm: DkimAlgorithm,
    /// Secret holding the private key as PKCS#8 PEM under `private.pem`, in the RelayDomain's
    /// namespace.
    pub key_secret_ref: SecretRef,
}

/// DKIM signing algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DkimAlgorithm {
    /// RSA with SHA-256 (RFC 6376); 2048-bit keys or larger.
    #[default]
    #[serde(rename = "rsa-sha256")]
    RsaSha256,
    /// Ed25519 with SHA-256 (RFC 8463).
    #[serde(rename = "ed25519-sha256")]
    Ed25519Sha256,
}

impl DkimAlgorithm {
    /// The algorithm name as written in the resource and in the snapshot (`rsa-sha256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RsaSha256 => "rsa-sha256",
            Self::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The `k=` tag value of the DKIM DNS record (`rsa` or `ed25519`).
    pub fn key_type(self) -> &'static str {
        match self {
            Self::RsaSha256 => "rsa",
            Self::Ed25519Sha256 => "ed25519",
        }
    }
}

/// Inbound limits of a RelayDomain.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainLimits {
    /// Largest message accepted, as a non-negative quantity (`25Mi`, `10M`, `1048576`; suffixes
    /// `Ki` ... `Ei`, `k` ... `E` or an exponent `1e6`). Unset: the ingress limit
    /// (`--max-message-size`, 25 MiB by default), which is also the ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::size_quantity_schema")]
    pub max_message_size: Option<Quantity>,
    /// Messages accepted per minute for the whole RelayDomain, counted across every ingress
    /// pod (before issue 18: per pod). 0: unlimited (or the pool's `inboundLimits`).
    #[serde(default)]
    pub messages_per_minute: u32,
    /// Messages per hour for the whole RelayDomain, across every ingress pod. 0: unlimited.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_hour: u32,
    /// Messages per day (UTC) for the whole RelayDomain, across every ingress pod.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub messages_per_day: u32,
    /// Recipients per minute for the whole RelayDomain (`452 4.5.3` at RCPT TO).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recipients_per_minute: u32,
    /// Recipients per hour for the whole RelayDomain.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recipients_per_hour: u32,
    /// Recipients per day (UTC) for the whole RelayDomain.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recipients_per_day: u32,
    /// Budgets of each SMTP credential of this RelayDomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_credential: Option<super::limits::RateSpec>,
    /// Budgets of each client network sending as this RelayDomain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<super::limits::ClientRateSpec>,
    /// Spike detection per SMTP credential. Omitted: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spike: Option<super::limits::SpikeSpec>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Observed state of a RelayDomain, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RelayDomainStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `DkimKeyReady`, `PoolFound` and `Conflict`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// DNS records to publish for the domain: DKIM public keys, an SPF suggestion and a starting
    /// DMARC policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_records: Vec<DnsRecord>,
}

fn default_pool() -> String {
    "default".to_owned()
}
