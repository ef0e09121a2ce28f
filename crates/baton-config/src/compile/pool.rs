//! SendingPool → `baton.v1.SendingPool`.

use std::net::IpAddr;

use baton_proto::v1 as pb;

use super::secrets::{SecretIndex, basic_auth, ca_bundle};
use crate::InvalidObject;
use crate::crd::{
    AddressLiterals, DeliveryMode, EgressSpec, MAX_RETRY_TIERS, SendingPool, SendingPoolSpec,
    SmarthostSpec, TlsPolicy,
};
use crate::units::parse_duration;

const KIND: &str = "SendingPool";

/// Compiles one pool; `name` is its (validated, non-empty) `metadata.name`.
pub(crate) fn compile_pool(
    pool: &SendingPool,
    name: &str,
    secrets: &SecretIndex<'_>,
) -> Result<pb::SendingPool, InvalidObject> {
    let spec = &pool.spec;
    let invalid = |field: &str, message: String| InvalidObject::new(KIND, name, field, message);
    let delivery = &spec.delivery;
    if delivery.mode == DeliveryMode::Smarthost && delivery.smarthosts.is_empty() {
        return Err(invalid(
            "spec.delivery.smarthosts",
            "at least one smarthost is required when mode is Smarthost".into(),
        ));
    }
    if delivery.port == 0 {
        return Err(invalid(
            "spec.delivery.port",
            "must be between 1 and 65535".into(),
        ));
    }
    let smarthosts = delivery
        .smarthosts
        .iter()
        .enumerate()
        .map(|(i, s)| compile_smarthost(s, name, i, secrets))
        .collect::<Result<Vec<_>, _>>()?;
    let ca_bundle_pem = match &spec.tls.ca_bundle_secret_ref {
        None => String::new(),
        Some(r) => {
            ca_bundle(secrets, r).map_err(|why| invalid("spec.tls.caBundleSecretRef", why))?
        }
    };
    let egress = spec
        .egress
        .iter()
        .enumerate()
        .map(|(i, e)| compile_egress(e, name, i))
        .collect::<Result<Vec<_>, _>>()?;
    let limits = &spec.limits;
    if limits.max_connections_per_destination == 0 {
        return Err(invalid(
            "spec.limits.maxConnectionsPerDestination",
            "must be at least 1".into(),
        ));
    }
    if limits.max_messages_per_connection == 0 {
        return Err(invalid(
            "spec.limits.maxMessagesPerConnection",
            "must be at least 1".into(),
        ));
    }
    let (retry_schedule_secs, max_age_secs) = compile_retry(spec, name)?;
    let allowed_networks = delivery
        .allowed_networks
        .iter()
        .enumerate()
        .map(|(i, n)| allowed_network(n, name, i))
        .collect::<Result<Vec<_>, _>>()?;
    let ehlo_name = match spec.ehlo_name.as_deref().map(str::trim) {
        None | Some("") => String::new(),
        Some(n) if baton_core::names::is_fqdn(n) => n.trim_end_matches('.').to_ascii_lowercase(),
        Some(n) => {
            return Err(invalid(
                "spec.ehloName",
                format!("{n:?} is not a fully qualified domain name"),
            ));
        }
    };
    let content_filters = super::filter::compile_filters(spec)
        .map_err(|(field, message)| invalid(&field, message))?;
    let problem = |(field, message): super::limits::Problem| invalid(&field, message);
    let inbound_limits = super::limits::inbound(spec.inbound_limits.as_ref()).map_err(problem)?;
    let deny = super::limits::deny(spec.deny.as_ref()).map_err(problem)?;
    let destinations =
        super::limits::destinations(limits.destinations.as_ref()).map_err(problem)?;
    let throttle = super::limits::throttle(&limits.throttle).map_err(problem)?;
    Ok(pb::SendingPool {
        inbound_limits,
        deny,
        destinations,
        throttle: Some(throttle),
        content_filters,
        name: name.to_owned(),
        ehlo_name,
        mode: delivery_mode(delivery.mode),
        port: u32::from(delivery.port),
        smarthosts,
        egress,
        tls_policy: tls_policy(spec.tls.policy),
        ca_bundle_pem,
        max_connections_per_destination: limits.max_connections_per_destination,
        max_messages_per_connection: limits.max_messages_per_connection,
        retry_schedule_secs,
        max_age_secs,
        workers: workers(spec, name)?,
        allow_address_literals: delivery.address_literals == AddressLiterals::Allow,
        allowed_networks,
    })
}

/// The smarthosts (`host:port`) of `spec` that may receive credentials over TLS whose
/// certificate was not verified: credentials configured, `allowUnverifiedCredentials` set and
/// `tls` not `Verify`.
pub(crate) fn unverified_credentials(spec: &SendingPoolSpec) -> Vec<String> {
    spec.delivery
        .smarthosts
        .iter()
        .filter(|s| {
            s.credentials_secret_ref.is_some()
                && s.allow_unverified_credentials
                && s.tls != TlsPolicy::Verify
        })
        .map(|s| format!("{}:{}", s.host.trim().trim_end_matches('.'), s.port))
        .collect()
}

fn compile_smarthost(
    s: &SmarthostSpec,
    pool: &str,
    i: usize,
    secrets: &SecretIndex<'_>,
) -> Result<pb::Smarthost, InvalidObject> {
    let invalid = |f: &str, message: String| {
        InvalidObject::new(
            KIND,
            pool,
            format!("spec.delivery.smarthosts[{i}].{f}"),
            message,
        )
    };
    if s.host.trim().is_empty() {
        return Err(invalid("host", "must not be empty".into()));
    }
    if s.port == 0 {
        return Err(invalid("port", "must be between 1 and 65535".into()));
    }
    if s.weight == 0 {
        return Err(invalid("weight", "must be at least 1".into()));
    }
    let (username, password) = match &s.credentials_secret_ref {
        None => (String::new(), String::new()),
        Some(r) => {
            let ns = r.namespace_or_default();
            let secret = secrets.get(ns, &r.name).ok_or_else(|| {
                invalid(
                    "credentialsSecretRef",
                    format!("Secret {ns}/{} not found", r.name),
                )
            })?;
            let (user, password) = basic_auth(secret).map_err(|why| {
                invalid(
                    "credentialsSecretRef",
                    format!("Secret {ns}/{} {why}", r.name),
                )
            })?;
            let password = String::from_utf8(password).map_err(|_| {
                invalid(
                    "credentialsSecretRef",
                    format!("Secret {ns}/{}: `password` is not UTF-8", r.name),
                )
            })?;
            (user, password)
        }
    };
    if s.implicit_tls && !matches!(s.tls, TlsPolicy::Required | TlsPolicy::Verify) {
        return Err(invalid(
            "implicitTls",
            format!("needs tls Required or Verify, not {:?}", s.tls),
        ));
    }
    let ca_bundle_pem = match &s.ca_bundle_secret_ref {
        None => String::new(),
        Some(r) => ca_bundle(secrets, r).map_err(|why| invalid("caBundleSecretRef", why))?,
    };
    Ok(pb::Smarthost {
        host: s.host.trim().trim_end_matches('.').to_owned(),
        port: u32::from(s.port),
        weight: s.weight,
        tls: tls_policy(s.tls),
        username,
        password,
        implicit_tls: s.implicit_tls,
        ca_bundle_pem,
        allow_unverified_credentials: s.allow_unverified_credentials,
        // Sealed when the snapshot is planned for storing (`plan::plan_sealed`).
        sealed_password: None,
    })
}

fn compile_egress(e: &EgressSpec, pool: &str, i: usize) -> Result<pb::Egress, InvalidObject> {
    let invalid = |field: &str, message: String| InvalidObject::new(KIND, pool, field, message);
    let field = |f: &str| format!("spec.egress[{i}].{f}");
    if e.ehlo_name.trim().is_empty() {
        return Err(invalid(&field("ehloName"), "must not be empty".into()));
    }
    if e.weight == 0 {
        return Err(invalid(&field("weight"), "must be at least 1".into()));
    }
    let source_address = match e.source_address.as_deref() {
        None | Some("") => String::new(),
        Some(addr) => addr
            .parse::<IpAddr>()
            .map_err(|_| {
                invalid(
                    &field("sourceAddress"),
                    format!("{addr:?} is not an IP address"),
                )
            })?
            .to_string(),
    };
    let warmup = super::limits::warmup(e.warmup.as_ref(), &format!("spec.egress[{i}]"))
        .map_err(|(f, m)| invalid(&f, m))?;
    Ok(pb::Egress {
        ehlo_name: e.ehlo_name.clone(),
        source_address,
        weight: e.weight,
        warmup,
    })
}

/// One `allowedNetworks` entry: a CIDR or a single address, normalised (`127.0.0.0/8`).
fn allowed_network(text: &str, pool: &str, i: usize) -> Result<String, InvalidObject> {
    let t = text.trim();
    let net = t
        .parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| t.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
        .ok_or_else(|| {
            InvalidObject::new(
                KIND,
                pool,
                format!("spec.delivery.allowedNetworks[{i}]"),
                format!("{text:?} is not a CIDR or an IP address"),
            )
        })?;
    Ok(net.trunc().to_string())
}

fn compile_retry(spec: &SendingPoolSpec, name: &str) -> Result<(Vec<u64>, u64), InvalidObject> {
    let retry = &spec.retry;
    let secs = |field: String, text: &str| -> Result<u64, InvalidObject> {
        let d =
            parse_duration(text).map_err(|m| InvalidObject::new(KIND, name, field.clone(), m))?;
        if d.as_secs() == 0 {
            return Err(InvalidObject::new(
                KIND,
                name,
                field,
                format!("{text:?} is shorter than 1s"),
            ));
        }
        Ok(d.as_secs())
    };
    if retry.schedule.len() > MAX_RETRY_TIERS {
        return Err(InvalidObject::new(
            KIND,
            name,
            "spec.retry.schedule",
            format!("at most {MAX_RETRY_TIERS} delays"),
        ));
    }
    if retry.schedule.is_empty() {
        return Err(InvalidObject::new(
            KIND,
            name,
            "spec.retry.schedule",
            "must list at least one delay",
        ));
    }
    let schedule = retry
        .schedule
        .iter()
        .enumerate()
        .map(|(i, text)| secs(format!("spec.retry.schedule[{i}]"), text))
        .collect::<Result<Vec<_>, _>>()?;
    let max_age = secs("spec.retry.maxAge".into(), &retry.max_age)?;
    Ok((schedule, max_age))
}

/// Desired replicas: `workers.replicas`, else `autoscaling.minReplicas`, else 1.
fn workers(spec: &SendingPoolSpec, name: &str) -> Result<u32, InvalidObject> {
    let w = &spec.workers;
    if let Some(a) = &w.autoscaling
        && (a.min_replicas < 1 || a.max_replicas < a.min_replicas)
    {
        return Err(InvalidObject::new(
            KIND,
            name,
            "spec.workers.autoscaling",
            "need 1 <= minReplicas <= maxReplicas",
        ));
    }
    let replicas = w
        .replicas
        .or(w.autoscaling.as_ref().map(|a| a.min_replicas))
        .unwrap_or(1);
    u32::try_from(replicas).map_err(|_| {
        InvalidObject::new(KIND, name, "spec.workers.replicas", "must not be negative")
    })
}

fn tls_policy(policy: TlsPolicy) -> i32 {
    let policy = match policy {
        TlsPolicy::Opportunistic => pb::TlsPolicy::Opportunistic,
        TlsPolicy::Required => pb::TlsPolicy::Required,
        TlsPolicy::Disabled => pb::TlsPolicy::Disabled,
        TlsPolicy::Verify => pb::TlsPolicy::Verify,
    };
    policy as i32
}

fn delivery_mode(mode: DeliveryMode) -> i32 {
    let mode = match mode {
        DeliveryMode::Direct => pb::DeliveryMode::Direct,
        DeliveryMode::Smarthost => pb::DeliveryMode::Smarthost,
    };
    mode as i32
}
