//! Relay policy: who may relay what, evaluated against one compiled
//! [`RelayConfig`] snapshot.
//!
//! A [`PolicyIndex`] is built once per snapshot (CIDRs, credential hashes and sender patterns
//! are pre-parsed) and then answers the ingress's questions: does this AUTH succeed
//! ([`PolicyIndex::authenticate`]), may this client send as this envelope sender
//! ([`PolicyIndex::authorize_sender`]), is every author mailbox (`From:`, `Sender:`) aligned
//! ([`PolicyIndex::check_authors`]).

mod pattern;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;

use baton_proto::v1::{RelayConfig, RelayDomain, SendingPool};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::authors::{AuthorError, Authors};
use crate::destination::parse_network;
use crate::error::CoreError;
use crate::refusal::Refusal;
use pattern::{SenderPattern, is_within, normalize_domain};

/// What an authorised MAIL FROM is granted: the RelayDomain that accepted it and how its mail
/// is handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderGrant {
    /// `namespace/name` of the RelayDomain.
    pub relay_domain: String,
    /// SendingPool that delivers the mail.
    pub pool: String,
    /// Largest message accepted, bytes (0 = the listener default).
    pub max_message_size: u64,
}

/// A credential with its salt and hash decoded.
struct Credential {
    username: String,
    verifier: Verifier,
}

/// How a credential's password is checked.
enum Verifier {
    /// argon2id (the compiler's output): the parsed PHC string's parts, kept as the string.
    Argon2id(String),
    /// Legacy snapshots: salted SHA-256.
    Sha256 { salt: Vec<u8>, hash: [u8; 32] },
}

impl Verifier {
    /// The verifier of a snapshot credential: its argon2id PHC string, else the legacy salted
    /// SHA-256; `None` when neither is well formed.
    fn of(c: &baton_proto::v1::Credential) -> Option<Verifier> {
        if !c.argon2id.is_empty() && argon2::password_hash::PasswordHash::new(&c.argon2id).is_ok() {
            return Some(Verifier::Argon2id(c.argon2id.clone()));
        }
        let salt = hex::decode(&c.salt).ok()?;
        let hash = hex::decode(&c.password_sha256).ok()?;
        let hash = <[u8; 32]>::try_from(hash).ok()?;
        Some(Verifier::Sha256 { salt, hash })
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            Verifier::Argon2id(phc) => argon2_verify(phc, password),
            Verifier::Sha256 { salt, hash } => {
                constant_time_eq(&salted_sha256(salt, password), hash)
            }
        }
    }
}

/// Whether `password` matches a snapshot credential (argon2id, or the legacy salted SHA-256
/// compared in constant time). A malformed verifier never matches.
pub fn verify_credential(credential: &baton_proto::v1::Credential, password: &str) -> bool {
    Verifier::of(credential).is_some_and(|v| v.verify(password))
}

/// argon2id check of `password` against a PHC string (the parameters are the string's).
fn argon2_verify(phc: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier as _};
    PasswordHash::new(phc).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A verifier no password matches, with the compiler's parameters: checked for unknown user
/// names so that the time an AUTH takes does not say whether the user exists.
const DUMMY_ARGON2ID: &str = "$argon2id$v=19$m=19456,t=2,p=1$YmF0b24tZHVtbXktc2FsdA$Fj6wFtBaLk+jv2iRJkxuUjuFlTTBfpkvlX3YQ2N5RXk";

/// One RelayDomain with its pre-parsed fields.
struct DomainEntry {
    config: RelayDomain,
    /// The sending domain, normalised (empty when unusable: then it never matches).
    domain: String,
    networks: Vec<IpNet>,
    patterns: Vec<SenderPattern>,
    credentials: Vec<Credential>,
}

impl DomainEntry {
    fn parse(config: &RelayDomain, skipped: &mut Vec<CoreError>) -> Self {
        let name = &config.name;
        let networks = config
            .networks
            .iter()
            .filter_map(|n| {
                let parsed = parse_network(n);
                if parsed.is_none() {
                    skipped.push(CoreError::InvalidNetwork {
                        domain: name.clone(),
                        value: n.clone(),
                    });
                }
                parsed
            })
            .collect();
        let patterns = config
            .allowed_senders
            .iter()
            .filter_map(|p| {
                let parsed = SenderPattern::parse(p);
                if parsed.is_none() {
                    skipped.push(CoreError::InvalidSenderPattern {
                        domain: name.clone(),
                        pattern: p.clone(),
                    });
                }
                parsed
            })
            .collect();
        let credentials = config
            .credentials
            .iter()
            .filter_map(|c| match Verifier::of(c) {
                Some(verifier) if !c.username.is_empty() => Some(Credential {
                    username: c.username.clone(),
                    verifier,
                }),
                _ => {
                    skipped.push(CoreError::InvalidCredential {
                        domain: name.clone(),
                        username: c.username.clone(),
                    });
                    None
                }
            })
            .collect();
        DomainEntry {
            config: config.clone(),
            domain: normalize_domain(&config.domain).unwrap_or_default(),
            networks,
            patterns,
            credentials,
        }
    }

    /// The client is authorised by address, or by an AUTH that this RelayDomain's own
    /// credential verified (its name is in the scope [`PolicyIndex::authenticate`] returned):
    /// the same user name with another RelayDomain's password does not speak for this one.
    fn authorises(&self, client: IpAddr, auth: Option<Auth<'_>>) -> bool {
        self.networks.iter().any(|n| n.contains(&client))
            || auth.is_some_and(|a| {
                a.domains().any(|d| d == self.config.name)
                    && self.credentials.iter().any(|c| c.username == a.username)
            })
    }

    /// `local@domain` (domain normalised) may be used as envelope sender through this
    /// RelayDomain: it matches a pattern and lies within the RelayDomain's own domain.
    fn allows(&self, local: &str, domain: &str) -> bool {
        is_within(domain, &self.domain) && self.patterns.iter().any(|p| p.matches(local, domain))
    }

    fn grant(&self) -> Result<SenderGrant, Refusal> {
        if !self.config.ready {
            return Err(Refusal::domain_not_ready(
                &self.config.domain,
                &self.config.not_ready_reason,
            ));
        }
        Ok(SenderGrant {
            relay_domain: self.config.name.clone(),
            pool: self.config.pool.clone(),
            max_message_size: self.config.max_message_size,
        })
    }
}

/// A CIDR, or a bare address meaning a single host.
/// Byte-wise comparison whose running time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn salted_sha256(salt: &[u8], password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(password.as_bytes());
    h.finalize().into()
}

/// Separates RelayDomain names in an AUTH scope (names never contain a newline).
const SCOPE_SEPARATOR: &str = "\n";

/// A verified SMTP AUTH: the user name and the scope [`PolicyIndex::authenticate`] returned
/// for it (which RelayDomains' credentials verified it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Auth<'a> {
    /// The user name.
    pub username: &'a str,
    /// The scope token.
    pub scope: &'a str,
}

impl<'a> Auth<'a> {
    /// The RelayDomain names (`namespace/name`) the AUTH speaks for.
    pub fn domains(&self) -> impl Iterator<Item = &'a str> {
        self.scope.split(SCOPE_SEPARATOR).filter(|d| !d.is_empty())
    }
}

/// The policy view of one [`RelayConfig`] snapshot. Cheap to query, immutable; build a new
/// one when the snapshot changes.
pub struct PolicyIndex {
    /// Sorted by RelayDomain name, so every choice below is deterministic.
    domains: Vec<DomainEntry>,
    by_name: HashMap<String, usize>,
    pools: HashMap<String, SendingPool>,
    skipped: Vec<CoreError>,
}

impl PolicyIndex {
    /// Index a snapshot. Never fails: unusable entries (invalid CIDR, credential or sender
    /// pattern — the compiler validates them upstream) are skipped and listed in
    /// [`PolicyIndex::skipped`].
    pub fn new(config: &RelayConfig) -> Self {
        let mut skipped = Vec::new();
        let mut domains: Vec<DomainEntry> = config
            .domains
            .iter()
            .map(|d| DomainEntry::parse(d, &mut skipped))
            .collect();
        domains.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        let by_name = domains
            .iter()
            .enumerate()
            .map(|(i, d)| (d.config.name.clone(), i))
            .collect();
        let pools = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), p.clone()))
            .collect();
        PolicyIndex {
            domains,
            by_name,
            pools,
            skipped,
        }
    }

    /// Entries ignored while indexing, for logging.
    pub fn skipped(&self) -> &[CoreError] {
        &self.skipped
    }

    /// Verify SMTP AUTH credentials. `Some(scope)` when at least one RelayDomain has a
    /// credential with this username whose verifier (argon2id; salted SHA-256 in legacy
    /// snapshots) matches: the scope names exactly those RelayDomains (the session keeps it
    /// and passes it back as [`Auth::scope`]), so a credential only ever authorises the
    /// RelayDomain whose Secret it came from. An unknown username is checked against a dummy
    /// argon2id verifier so timing does not reveal it. CPU-heavy by design (tens of
    /// milliseconds): the ingress caches successes and runs it off the async workers.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<String> {
        let mut matched: Vec<&str> = Vec::new();
        let mut tried = false;
        for d in &self.domains {
            for cred in d.credentials.iter().filter(|c| c.username == username) {
                tried = true;
                if cred.verifier.verify(password) && !matched.contains(&d.config.name.as_str()) {
                    matched.push(&d.config.name);
                }
            }
        }
        if !tried {
            std::hint::black_box(argon2_verify(DUMMY_ARGON2ID, password));
        }
        (!matched.is_empty()).then(|| matched.join(SCOPE_SEPARATOR))
    }

    /// Decide whether a client may send MAIL FROM `sender` (`(local, domain)`, `None` for the
    /// null reverse-path `<>`).
    ///
    /// - On the submission listener an unauthenticated client is refused with `530 5.7.0`
    ///   (client networks do not authorise there).
    /// - A RelayDomain authorises the client when the client address is in its `networks` or
    ///   `authenticated` was verified by one of its own credentials. None: `530 5.7.0` when not
    ///   authenticated, `550 5.7.1 Relay access denied` when authenticated.
    /// - The sender must match an `allowed_senders` pattern of an authorising RelayDomain
    ///   *and* be within that RelayDomain's own domain (domain case-insensitive, local part
    ///   exact; address literals and trailing dots never match). Otherwise `550 5.7.1`.
    ///   Among several matches, ready RelayDomains win, then the most specific `domain`,
    ///   then the name order.
    /// - The null sender is granted by the first *ready* authorising RelayDomain by name.
    /// - When the chosen RelayDomain is not ready: `451 4.7.5 <domain>: <reason>`.
    pub fn authorize_sender(
        &self,
        client: IpAddr,
        authenticated: Option<Auth<'_>>,
        sender: Option<(&str, &str)>,
        submission_listener: bool,
    ) -> Result<SenderGrant, Refusal> {
        if submission_listener && authenticated.is_none() {
            return Err(Refusal::auth_required());
        }
        let client = client.to_canonical();
        let candidates: Vec<&DomainEntry> = self
            .domains
            .iter()
            .filter(|d| d.authorises(client, authenticated))
            .collect();
        if candidates.is_empty() {
            return Err(match authenticated {
                Some(_) => Refusal::client_not_authorised(),
                None => Refusal::auth_required(),
            });
        }
        let chosen = match sender {
            None => candidates
                .iter()
                .find(|d| d.config.ready)
                .or(candidates.first()),
            Some((local, domain)) => {
                let refuse = || Refusal::sender_not_allowed(&format!("{local}@{domain}"));
                let domain = normalize_domain(domain).ok_or_else(refuse)?;
                let mut matching: Vec<&&DomainEntry> = candidates
                    .iter()
                    .filter(|d| d.allows(local, &domain))
                    .collect();
                // Stable sort: equal keys keep the name order.
                matching.sort_by_key(|d| (!d.config.ready, Reverse(d.domain.len())));
                Some(*matching.first().ok_or_else(refuse)?)
            }
        };
        match chosen {
            Some(d) => d.grant(),
            None => Err(Refusal::auth_required()),
        }
    }

    /// Check the message's author fields against the envelope sender (DMARC-style relaxed
    /// alignment), for every mailbox a receiver could display as the author: each `From:`
    /// mailbox and the `Sender:` mailbox when present (see [`crate::authors`]).
    ///
    /// A mailbox is aligned when its domain equals `sender_domain` or is the RelayDomain's
    /// domain or a subdomain of it; the first unaligned one gives `550 5.7.1`. Alignment is
    /// skipped when the RelayDomain sets `allow_unaligned_from`, the structure never is:
    /// malformed author fields (`Err`: no `From:`, several, a mailbox that is not a plain
    /// address, several mailboxes without `Sender:`) are `550 5.6.0` — RFC 5322 requires
    /// them and DKIM signs them. For the null sender pass `sender_domain = ""`. An unknown
    /// RelayDomain (config swapped mid-transaction) gives `451 4.3.0`.
    pub fn check_authors(
        &self,
        relay_domain: &str,
        sender_domain: &str,
        authors: &Result<Authors, AuthorError>,
    ) -> Result<(), Refusal> {
        let entry = self
            .entry(relay_domain)
            .ok_or_else(Refusal::unknown_relay_domain)?;
        let authors = authors.as_ref().map_err(Refusal::authors_malformed)?;
        if entry.config.allow_unaligned_from {
            return Ok(());
        }
        let sender = normalize_domain(sender_domain);
        let aligned = |domain: &str| {
            normalize_domain(domain)
                .is_some_and(|f| sender.as_ref() == Some(&f) || is_within(&f, &entry.domain))
        };
        if let Some(m) = authors.from.iter().find(|m| !aligned(&m.domain)) {
            return Err(Refusal::from_unaligned(&m.domain));
        }
        match &authors.sender {
            Some(m) if !aligned(&m.domain) => Err(Refusal::sender_unaligned(&m.domain)),
            _ => Ok(()),
        }
    }

    fn entry(&self, name: &str) -> Option<&DomainEntry> {
        self.by_name.get(name).and_then(|&i| self.domains.get(i))
    }

    /// A RelayDomain by `namespace/name`.
    pub fn domain(&self, name: &str) -> Option<&RelayDomain> {
        self.entry(name).map(|d| &d.config)
    }

    /// A SendingPool by name.
    pub fn pool(&self, name: &str) -> Option<&SendingPool> {
        self.pools.get(name)
    }

    /// All RelayDomains, sorted by name.
    pub fn domains(&self) -> impl Iterator<Item = &RelayDomain> {
        self.domains.iter().map(|d| &d.config)
    }
}
