//! RelayDomain → `baton.v1.RelayDomain` plus its [`DomainReport`].

use std::collections::BTreeMap;

use baton_proto::v1 as pb;
use ipnet::IpNet;

use super::dkim::public_key_from_pem;
use super::secrets::{SecretIndex, basic_auth, hashed_credential, secret_value};
use super::{
    ConditionType, DKIM_KEY_SECRET_KEY, DomainCondition, DomainReport, PoolIndex, namespace_of,
    required_name,
};
use crate::crd::{
    BOUNCE_CLASSES, DkimAlgorithm, RelayDomain, RelayDomainSpec, SecretRef, SuppressionMode,
};
use crate::dns::{DkimPublicKey, dns_records};
use crate::units::{parse_duration, parse_size};
use crate::{ConfigError, InvalidObject};

const KIND: &str = "RelayDomain";

/// A per-domain problem: condition reason and message.
type Problem = (&'static str, String);

/// `namespace/name` of a RelayDomain.
pub(crate) fn key_of(rd: &RelayDomain) -> Result<String, ConfigError> {
    let name = required_name(KIND, &rd.metadata)?;
    Ok(format!("{}/{name}", namespace_of(&rd.metadata)))
}

/// The owner (`namespace/name`) of every claimed domain: the oldest claimant by
/// `metadata.creationTimestamp` (resources without one, as in files, count as newest), ties
/// broken by `namespace/name`. Also rejects two RelayDomains with the same `namespace/name`.
pub(crate) fn domain_owners(
    domains: &[RelayDomain],
) -> Result<BTreeMap<&str, String>, ConfigError> {
    let mut candidates = Vec::with_capacity(domains.len());
    let mut keys = std::collections::BTreeSet::new();
    for rd in domains {
        let key = key_of(rd)?;
        if !keys.insert(key.clone()) {
            return Err(ConfigError::Duplicate {
                kind: KIND,
                name: key,
            });
        }
        let created = rd.metadata.creation_timestamp.as_ref();
        candidates.push((created.is_none(), created, key, rd.spec.domain.as_str()));
    }
    candidates.sort();
    let mut owners = BTreeMap::new();
    for (_, _, key, domain) in candidates {
        owners.entry(domain).or_insert(key);
    }
    Ok(owners)
}

/// Compiles one RelayDomain. Returns no snapshot entry when it lost a conflict to
/// `conflict_with` or its domain name is invalid; any other invalid field gives a never-ready
/// entry (see `validated_entry`). The report of an invalid one carries the [`InvalidObject`].
pub(crate) fn compile_domain(
    rd: &RelayDomain,
    key: &str,
    pools: &PoolIndex<'_>,
    secrets: &SecretIndex<'_>,
    conflict_with: Option<&str>,
    verified: bool,
) -> (Option<pb::RelayDomain>, DomainReport) {
    let spec = &rd.spec;
    let namespace = namespace_of(&rd.metadata);
    let (validated, invalid) = validated_entry(spec, key);
    let expire_secs = validated.as_ref().map(|(_, secs)| *secs).unwrap_or(0);
    let dkim = dkim_keys(spec, namespace, secrets, expire_secs);
    let credentials = credentials(spec, namespace, secrets);
    let return_path = super::return_path::return_path(spec, namespace, secrets);

    let invalid_problem = invalid.as_ref().map(|e| ("Invalid", e.detail()));
    let (pool, pool_problem) = match pools.get(spec.pool.as_str()) {
        Some(Ok(pool))
            if !pool.allowed_namespaces.is_empty()
                && !pool.allowed_namespaces.iter().any(|n| n == namespace) =>
        {
            (
                None,
                Some((
                    "NotAllowed",
                    format!(
                        "SendingPool {:?} does not allow RelayDomains of namespace {namespace} (spec.allowedNamespaces)",
                        spec.pool
                    ),
                )),
            )
        }
        Some(Ok(pool)) => (Some(*pool), None),
        Some(Err(why)) => (
            None,
            Some((
                "PoolInvalid",
                format!("SendingPool {:?} is invalid: {}", spec.pool, why.detail()),
            )),
        ),
        None => (
            None,
            Some((
                "PoolNotFound",
                format!("SendingPool {:?} not found", spec.pool),
            )),
        ),
    };
    // Proof of ownership, when the pool asks for it.
    let challenge = pool
        .filter(|p| p.require_domain_verification)
        .map(|_| crate::verification::challenge(rd));
    let verification_problem = challenge.as_ref().filter(|_| !verified).map(|c| {
        (
            "DomainNotVerified",
            format!(
                "SendingPool {:?} requires proof of domain ownership: publish TXT {} \"{}\"",
                spec.pool, c.name, c.value
            ),
        )
    });
    let conflict_problem = conflict_with.map(|owner| {
        (
            "Conflict",
            format!(
                "domain {} is claimed by older RelayDomain {owner}",
                spec.domain
            ),
        )
    });
    let dkim_problem = dkim.as_ref().err().cloned();
    let credentials_problem = credentials.as_ref().err().cloned();
    let return_path_problem = return_path.as_ref().err().map(|(r, m)| (*r, m.clone()));
    let not_ready = [
        &invalid_problem,
        &conflict_problem,
        &pool_problem,
        &verification_problem,
        &dkim_problem,
        &credentials_problem,
        &return_path_problem,
    ]
    .into_iter()
    .find_map(|p| p.clone());
    let ready = not_ready.is_none();
    let not_ready_reason = not_ready
        .as_ref()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();

    let mut conditions = conditions(
        spec,
        &not_ready,
        &pool_problem,
        &dkim_problem,
        &conflict_problem,
    );
    if let Some(c) = &challenge {
        conditions.push(DomainCondition {
            type_: ConditionType::DomainVerified,
            status: verified,
            reason: if verified {
                "TxtRecordFound"
            } else {
                "TxtRecordMissing"
            }
            .to_owned(),
            message: if verified {
                format!("{} publishes the verification value", c.name)
            } else {
                format!("publish TXT {} \"{}\"", c.name, c.value)
            },
        });
    }
    let (dkim_keys, public_keys) = dkim.unwrap_or_default();
    let dns_records = match (conflict_with, &invalid) {
        (None, None) => {
            let mut records = dns_records(spec, pool, &public_keys);
            records.extend(challenge);
            records
        }
        _ => Vec::new(),
    };
    let entry = match validated {
        Some((mut entry, _)) if conflict_with.is_none() => {
            entry.dkim_keys = dkim_keys;
            entry.credentials = credentials.unwrap_or_default();
            entry.return_path = return_path.ok().flatten();
            entry.ready = ready;
            entry.not_ready_reason = not_ready_reason.clone();
            Some(entry)
        }
        _ => None,
    };
    let report = DomainReport {
        name: key.to_owned(),
        namespace: namespace.to_owned(),
        resource_name: rd.metadata.name.clone().unwrap_or_default(),
        domain: spec.domain.clone(),
        ready,
        invalid,
        not_ready_reason,
        conditions,
        dns_records,
    };
    (entry, report)
}

/// The snapshot entry without DKIM keys, credentials and readiness, the DKIM `expireAfter` in
/// seconds (0: never), and the first field error that makes the RelayDomain invalid.
///
/// An invalid RelayDomain still gets an entry (it is never ready, so its clients are answered
/// `451 4.7.5`, a temporary failure, rather than refused as strangers) built from its valid
/// parts: bad senders and networks are skipped, a bad size or expiry counts as unset. Only a
/// bad domain name leaves no entry, since nothing could match it.
fn validated_entry(
    spec: &RelayDomainSpec,
    key: &str,
) -> (Option<(pb::RelayDomain, u64)>, Option<InvalidObject>) {
    let invalid = |field: &str, message: String| InvalidObject::new(KIND, key, field, message);
    if let Err(m) = check_domain_name(&spec.domain) {
        return (None, Some(invalid("spec.domain", m)));
    }
    let mut first: Option<InvalidObject> = None;
    let mut note = |e: InvalidObject| {
        first.get_or_insert(e);
    };
    if spec.pool.is_empty() {
        note(invalid("spec.pool", "must not be empty".into()));
    }
    let mut allowed_senders = Vec::new();
    for (i, sender) in spec.allowed_senders.iter().enumerate() {
        match check_sender(sender, &spec.domain) {
            Ok(()) => allowed_senders.push(sender.clone()),
            Err(m) => note(invalid(&format!("spec.allowedSenders[{i}]"), m)),
        }
    }
    if allowed_senders.is_empty() {
        allowed_senders.push(format!("*@{}", spec.domain));
    }
    let mut networks = Vec::new();
    for (i, n) in spec.submission.networks.iter().enumerate() {
        match n.trim().parse::<IpNet>() {
            Ok(net) => networks.push(net.to_string()),
            Err(_) => note(invalid(
                &format!("spec.submission.networks[{i}]"),
                format!("{n:?} is not a CIDR"),
            )),
        }
    }
    let max_message_size = match &spec.limits.max_message_size {
        Some(q) => parse_size(&q.0).unwrap_or_else(|m| {
            note(invalid("spec.limits.maxMessageSize", m));
            0
        }),
        None => 0,
    };
    let expire_secs = match spec.dkim.as_ref().and_then(|d| d.expire_after.as_deref()) {
        None => 0,
        Some(text) => parse_duration(text).map_or_else(
            |m| {
                note(invalid("spec.dkim.expireAfter", m));
                0
            },
            |d| d.as_secs(),
        ),
    };
    let mut secs = |field: &str, text: &str| {
        parse_duration(text).map_or_else(
            |m| {
                note(invalid(field, m));
                0
            },
            |d| d.as_secs(),
        )
    };
    let sup = &spec.suppression;
    let suppression = pb::SuppressionPolicy {
        enabled: sup.enabled,
        mode: match sup.mode {
            SuppressionMode::Refuse => pb::SuppressionMode::Refuse,
            SuppressionMode::AcceptAndBounce => pb::SuppressionMode::AcceptAndBounce,
        } as i32,
        expire_after_secs: secs("spec.suppression.expireAfter", &sup.expire_after),
        classes: sup.classes.clone(),
    };
    let delay_notice = spec.delay_notice.enabled.then(|| pb::DelayNotice {
        after_secs: secs("spec.delayNotice.after", &spec.delay_notice.after),
        interval_secs: secs("spec.delayNotice.interval", &spec.delay_notice.interval),
    });
    for class in &sup.classes {
        if !BOUNCE_CLASSES.contains(&class.as_str()) {
            note(invalid(
                "spec.suppression.classes",
                format!(
                    "{class:?} is not a bounce class ({})",
                    BOUNCE_CLASSES.join(", ")
                ),
            ));
        }
    }
    let postmaster = match &spec.postmaster {
        None => format!("postmaster@{}", spec.domain),
        Some(p) => {
            let local_ok = p.split_once('@').is_some_and(|(l, _)| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_graphic() && !b"<>()[]\\,;:\"@".contains(&b))
            });
            match check_sender(p, &spec.domain) {
                Ok(()) if local_ok => p.clone(),
                Ok(()) => {
                    note(invalid(
                        "spec.postmaster",
                        format!("{p:?} is not a plain address (local@domain)"),
                    ));
                    format!("postmaster@{}", spec.domain)
                }
                Err(m) => {
                    note(invalid("spec.postmaster", m));
                    format!("postmaster@{}", spec.domain)
                }
            }
        }
    };
    // An invalid header policy makes the RelayDomain invalid (never ready): its mail waits
    // rather than leaving with the headers it was meant to lose.
    let headers = spec.headers.as_ref().and_then(|h| {
        super::filter::compile_headers(h)
            .map_err(|(field, m)| note(invalid(&field, m)))
            .ok()
    });
    let client_rates =
        super::limits::client_rates(spec.limits.per_client.as_ref(), "spec.limits.perClient")
            .map_err(|(field, m)| note(invalid(&field, m)))
            .ok()
            .flatten();
    let spike = super::limits::spike(spec.limits.spike.as_ref())
        .map_err(|(field, m)| note(invalid(&field, m)))
        .ok()
        .flatten();
    let entry = pb::RelayDomain {
        rates: super::limits::domain_rates(&spec.limits),
        credential_rates: super::limits::rates(spec.limits.per_credential.as_ref()),
        client_rates,
        spike,
        headers,
        name: key.to_owned(),
        domain: spec.domain.clone(),
        pool: spec.pool.clone(),
        allowed_senders,
        networks,
        credentials: Vec::new(),
        dkim_keys: Vec::new(),
        max_message_size,
        messages_per_minute: spec.limits.messages_per_minute,
        ready: false,
        not_ready_reason: String::new(),
        allow_unaligned_from: spec.allow_unaligned_from,
        suppression: Some(suppression),
        delay_notice,
        postmaster,
        return_path: None,
    };
    (Some((entry, expire_secs)), first)
}

/// Lower-case ASCII host name with at least two labels (the schema's `DOMAIN_PATTERN`).
fn check_domain_name(domain: &str) -> Result<(), String> {
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if domain.len() > 253 || labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(format!(
            "{domain:?} is not a lower-case DNS name (use A-labels for internationalized names)"
        ));
    }
    Ok(())
}

/// Same rule as the schema's CEL: a local part, then `@<domain>` or a subdomain of it.
fn check_sender(sender: &str, domain: &str) -> Result<(), String> {
    let in_domain =
        sender.ends_with(&format!("@{domain}")) || sender.ends_with(&format!(".{domain}"));
    if sender.find('@').is_some_and(|at| at > 0) && in_domain {
        return Ok(());
    }
    Err(format!(
        "{sender:?} is not an address pattern in {domain} or its subdomains (e.g. *@{domain})"
    ))
}

type DkimMaterial = (Vec<pb::DkimKey>, Vec<DkimPublicKey>);

/// The DKIM keys (primary first), each expiring after `expire_secs` (0: never). `Err(problem)`
/// for a missing or unusable key Secret.
fn dkim_keys(
    spec: &RelayDomainSpec,
    namespace: &str,
    secrets: &SecretIndex<'_>,
    expire_secs: u64,
) -> Result<DkimMaterial, Problem> {
    let Some(dkim) = &spec.dkim else {
        return Ok((Vec::new(), Vec::new()));
    };
    let all = std::iter::once((&dkim.selector, dkim.algorithm, &dkim.key_secret_ref)).chain(
        dkim.additional_keys
            .iter()
            .map(|k| (&k.selector, k.algorithm, &k.key_secret_ref)),
    );
    let mut material: DkimMaterial = (Vec::new(), Vec::new());
    for (selector, algorithm, secret_ref) in all {
        let (pem, public_key) = load_key(namespace, secret_ref, algorithm, secrets)?;
        material.0.push(pb::DkimKey {
            selector: selector.clone(),
            algorithm: algorithm.as_str().to_owned(),
            private_key_pem: pem,
            expire_secs,
            // Sealed when the snapshot is planned for storing (`plan::plan_sealed`).
            sealed_private_key: None,
        });
        material.1.push(DkimPublicKey {
            selector: selector.clone(),
            algorithm,
            public_key,
        });
    }
    Ok(material)
}

fn load_key(
    namespace: &str,
    secret_ref: &SecretRef,
    algorithm: DkimAlgorithm,
    secrets: &SecretIndex<'_>,
) -> Result<(String, Vec<u8>), Problem> {
    let name = format!("{namespace}/{}", secret_ref.name);
    let secret = secrets.get(namespace, &secret_ref.name).ok_or_else(|| {
        (
            "SecretNotFound",
            format!("DKIM key Secret {name} not found"),
        )
    })?;
    let pem = secret_value(secret, DKIM_KEY_SECRET_KEY).ok_or_else(|| {
        (
            "KeyMissing",
            format!("DKIM key Secret {name} has no `{DKIM_KEY_SECRET_KEY}` key"),
        )
    })?;
    let pem = std::str::from_utf8(pem).map_err(|_| {
        (
            "InvalidKey",
            format!("DKIM key Secret {name}: {DKIM_KEY_SECRET_KEY} is not UTF-8"),
        )
    })?;
    let public = public_key_from_pem(pem, algorithm)
        .map_err(|p| (p.reason, format!("DKIM key Secret {name}: {}", p.message)))?;
    Ok((pem.to_owned(), public))
}

/// SMTP AUTH credentials, hashed. `Err(problem)` for a missing or unusable Secret or a username
/// listed twice.
fn credentials(
    spec: &RelayDomainSpec,
    namespace: &str,
    secrets: &SecretIndex<'_>,
) -> Result<Vec<pb::Credential>, Problem> {
    let mut out: Vec<pb::Credential> = Vec::new();
    for cred in &spec.submission.credentials {
        let name = format!("{namespace}/{}", cred.secret_ref.name);
        let secret = secrets
            .get(namespace, &cred.secret_ref.name)
            .ok_or_else(|| {
                (
                    "CredentialsSecretNotFound",
                    format!("credentials Secret {name} not found"),
                )
            })?;
        let (username, password) = basic_auth(secret).map_err(|why| {
            (
                "InvalidCredentialsSecret",
                format!("credentials Secret {name} {why}"),
            )
        })?;
        if out.iter().any(|c| c.username == username) {
            return Err((
                "DuplicateUsername",
                format!("username {username:?} of credentials Secret {name} is listed twice"),
            ));
        }
        out.push(hashed_credential(secret, &username, &password));
    }
    Ok(out)
}

fn conditions(
    spec: &RelayDomainSpec,
    not_ready: &Option<Problem>,
    pool: &Option<Problem>,
    dkim: &Option<Problem>,
    conflict: &Option<Problem>,
) -> Vec<DomainCondition> {
    let cond = |type_, status, reason: &str, message: String| DomainCondition {
        type_,
        status,
        reason: reason.to_owned(),
        message,
    };
    let ready = match not_ready {
        Some((reason, message)) => cond(ConditionType::Ready, false, reason, message.clone()),
        None => cond(
            ConditionType::Ready,
            true,
            "Compiled",
            format!("relaying through SendingPool {:?}", spec.pool),
        ),
    };
    let pool = match pool {
        Some((reason, message)) => cond(ConditionType::PoolFound, false, reason, message.clone()),
        None => cond(
            ConditionType::PoolFound,
            true,
            "PoolFound",
            format!("SendingPool {:?} exists", spec.pool),
        ),
    };
    let dkim = match (dkim, &spec.dkim) {
        (Some((reason, message)), _) => {
            cond(ConditionType::DkimKeyReady, false, reason, message.clone())
        }
        (None, Some(_)) => cond(
            ConditionType::DkimKeyReady,
            true,
            "KeyLoaded",
            "DKIM keys loaded".into(),
        ),
        (None, None) => cond(
            ConditionType::DkimKeyReady,
            true,
            "NotConfigured",
            "DKIM not configured; mail is relayed unsigned".into(),
        ),
    };
    let conflict = match conflict {
        Some((_, message)) => cond(
            ConditionType::Conflict,
            true,
            "DomainClaimed",
            message.clone(),
        ),
        None => cond(
            ConditionType::Conflict,
            false,
            "NoConflict",
            format!("no older RelayDomain claims {}", spec.domain),
        ),
    };
    vec![ready, pool, dkim, conflict]
}
