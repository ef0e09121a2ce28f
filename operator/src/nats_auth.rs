//! NATS authorization that follows the SendingPools: with `--nats-auth-secret NAME` the
//! operator keeps the Secret `NAME` of the install namespace holding
//! - one random password per role (`admin`, `ingress`, `webhooks`, `worker-<pool>`): the
//!   operator logs in with `admin`, the ingress and webhook dispatcher pods read `ingress` and
//!   `webhooks` (chart) and each pool's worker pods their own `worker-<pool>`
//!   ([`crate::workload`]), all through `secretKeyRef`;
//! - `auth.conf`: the nats-server `authorization` block of `baton nats-auth`
//!   (`baton_queue::permissions`) with each role's password as a bcrypt hash, which the NATS
//!   servers include (the chart mounts only this key into them; their config reloader sends
//!   the reload when the file changes);
//! - `bcrypt.json`: per user the hash and the SHA-256 of the password it was made from, so an
//!   unchanged password keeps its hash and the file only changes when a role does.
//!
//! A new SendingPool gets its worker user at the next sync, a deleted one loses it. The
//! Secret is written only when its content changes. [`render`] is the pure part.

use std::collections::BTreeMap;

use aws_lc_rs::rand::SecureRandom as _;
use base64::Engine as _;
use baton_queue::permissions::Role;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::workload::MANAGED_BY;

/// The Secret key nats-server includes.
pub const AUTH_CONF_KEY: &str = "auth.conf";
/// The Secret key with the hashes and what they were made from.
pub const HASHES_KEY: &str = "bcrypt.json";
/// bcrypt cost of the hashes nats-server checks logins against (each login costs one
/// verification; Baton's processes log in once and stay connected).
pub const BCRYPT_COST: u32 = 11;

/// The Secret key holding a role's password: `admin`, `ingress`, `webhooks` or
/// `worker-<pool>`.
pub fn password_key(role: &Role) -> String {
    match role {
        Role::Admin => "admin".to_owned(),
        Role::Ingress => "ingress".to_owned(),
        Role::Worker { pool, .. } => format!("worker-{pool}"),
        Role::Webhooks => "webhooks".to_owned(),
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Hashed {
    sha256: String,
    bcrypt: String,
}

fn sha256_hex(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// A new password: 24 random bytes, base64url (no character a shell or a config quotes).
pub fn new_password() -> Result<String> {
    let mut bytes = [0u8; 24];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::KeyGeneration("system random source".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The Secret's data for `roles`, from its current `data`: existing passwords are kept, missing
/// ones made with `new_password`, passwords of roles that no longer exist dropped; a hash is
/// kept while its password is unchanged, else made with `cost`. Deterministic for the same
/// input (no write when nothing changed).
pub fn render(
    roles: &[Role],
    current: &BTreeMap<String, Vec<u8>>,
    cost: u32,
    mut new_password: impl FnMut() -> Result<String>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let previous: BTreeMap<String, Hashed> = current
        .get(HASHES_KEY)
        .and_then(|raw| serde_json::from_slice(raw).ok())
        .unwrap_or_default();
    let mut data = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for role in roles {
        let key = password_key(role);
        let password = match current
            .get(&key)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
        {
            Some(p) if !p.is_empty() => p.to_owned(),
            _ => new_password()?,
        };
        let sha256 = sha256_hex(&password);
        let hashed = match previous.get(&role.user()) {
            Some(h) if h.sha256 == sha256 => h.clone(),
            _ => Hashed {
                bcrypt: bcrypt::hash_with_result(&password, cost)
                    .map_err(|e| Error::KeyGeneration(format!("bcrypt: {e}")))?
                    .format_for_version(bcrypt::Version::TwoA),
                sha256,
            },
        };
        hashes.insert(role.user(), hashed);
        data.insert(key, password.into_bytes());
    }
    let conf = baton_queue::permissions::authorization_block_with(
        roles,
        "# Written by Baton from the SendingPools (`baton operator --nats-auth-secret`, or\n\
         # `baton nats-auth --write`); rewritten at every change, do not edit. Passwords are\n\
         # bcrypt hashes.\n",
        |role| {
            let hash = hashes
                .get(&role.user())
                .map(|h| h.bcrypt.as_str())
                .unwrap_or_default();
            format!("{hash:?}")
        },
    );
    data.insert(AUTH_CONF_KEY.to_owned(), conf.into_bytes());
    let json = serde_json::to_vec_pretty(&hashes)
        .map_err(|e| Error::KeyGeneration(format!("bcrypt.json: {e}")))?;
    data.insert(HASHES_KEY.to_owned(), json);
    Ok(data)
}

fn data_of(secret: Option<&Secret>) -> BTreeMap<String, Vec<u8>> {
    secret
        .and_then(|s| s.data.as_ref())
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

fn secret(
    ns: &str,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
    resource_version: Option<String>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ns.to_owned()),
            resource_version,
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    }
}

/// Bring the Secret in step with `roles` (created when missing, replaced when its content
/// differs); returns the data in force. bcrypt runs off the async workers.
pub async fn sync_roles(
    client: &kube::Client,
    ns: &str,
    name: &str,
    roles: Vec<Role>,
) -> Result<BTreeMap<String, Vec<u8>>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let existing = api.get_opt(name).await?;
    let current = data_of(existing.as_ref());
    let next = tokio::task::spawn_blocking(move || {
        render(&roles, &current, BCRYPT_COST, new_password).map(|d| (d, current))
    })
    .await
    .map_err(|e| Error::KeyGeneration(format!("bcrypt task: {e}")))??;
    let (next, current) = next;
    match existing {
        None => {
            api.create(
                &PostParams::default(),
                &secret(ns, name, next.clone(), None),
            )
            .await?;
            tracing::info!(secret = %format!("{ns}/{name}"), "created the NATS authorization Secret");
        }
        Some(s) if current != next => {
            let version = s.metadata.resource_version.clone();
            api.replace(
                name,
                &PostParams::default(),
                &secret(ns, name, next.clone(), version),
            )
            .await?;
            tracing::info!(secret = %format!("{ns}/{name}"), "updated the NATS authorization Secret");
        }
        Some(_) => {}
    }
    Ok(next)
}

/// The operator's own login, before it connects to NATS: the `admin` password of the Secret,
/// which is created (admin and ingress users) when it does not exist. An existing Secret is
/// never rewritten here (its worker users stay until the first sync knows the pools).
pub async fn admin_password(client: &kube::Client, ns: &str, name: &str) -> Result<String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let data = match api.get_opt(name).await? {
        Some(s) => data_of(Some(&s)),
        None => {
            sync_roles(
                client,
                ns,
                name,
                vec![Role::Admin, Role::Ingress, Role::Webhooks],
            )
            .await?
        }
    };
    data.get(&password_key(&Role::Admin))
        .and_then(|v| String::from_utf8(v.clone()).ok())
        .filter(|p| !p.is_empty())
        .ok_or(Error::MissingField {
            kind: "NATS authorization Secret",
            field: "admin",
        })
}

/// The admin password from the Secret `name` once it exists (the leader creates it); never
/// creates it.
pub async fn existing_admin_password(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<String>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    Ok(api.get_opt(name).await?.and_then(|s| {
        data_of(Some(&s))
            .get(&password_key(&Role::Admin))
            .and_then(|v| String::from_utf8(v.clone()).ok())
            .filter(|p| !p.is_empty())
    }))
}

/// Sync the Secret with the roles of the compiled pools, when the operator manages it.
pub async fn sync(ctx: &Context, pools: &[(String, u32)]) -> Result<()> {
    let Some(name) = &ctx.settings.nats_auth_secret else {
        return Ok(());
    };
    let roles = baton_queue::permissions::roles(pools.iter().map(|(p, t)| (p.as_str(), *t)));
    sync_roles(&ctx.client, &ctx.settings.namespace, name, roles).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn worker(pool: &str) -> Role {
        Role::Worker {
            pool: pool.into(),
            tiers: 2,
        }
    }

    fn counter() -> impl FnMut() -> Result<String> {
        let mut n = 0;
        move || {
            n += 1;
            Ok(format!("pw-{n}"))
        }
    }

    #[test]
    fn passwords_are_made_once_and_hashes_kept_while_unchanged() {
        let roles = vec![Role::Admin, Role::Ingress, worker("bulk")];
        let first = render(&roles, &BTreeMap::new(), 4, counter()).unwrap();
        assert_eq!(first["admin"], b"pw-1");
        assert_eq!(first["ingress"], b"pw-2");
        assert_eq!(first["worker-bulk"], b"pw-3");
        let conf = String::from_utf8(first[AUTH_CONF_KEY].clone()).unwrap();
        assert!(conf.contains("user: \"baton-worker-bulk\""), "{conf}");
        assert!(conf.contains("password: \"$2a$04$"), "{conf}");
        assert!(
            !conf.contains("pw-"),
            "no clear password in auth.conf: {conf}"
        );
        let hashes: BTreeMap<String, Hashed> = serde_json::from_slice(&first[HASHES_KEY]).unwrap();
        assert!(bcrypt::verify("pw-3", &hashes["baton-worker-bulk"].bcrypt).unwrap());

        // Same roles: nothing changes (no new password, no new salt).
        let again = render(&roles, &first, 4, || panic!("no new password")).unwrap();
        assert_eq!(again, first);

        // A new pool gets a user; a deleted one loses it; the others keep theirs.
        let roles = vec![Role::Admin, Role::Ingress, worker("tx")];
        let next = render(&roles, &first, 4, || Ok("pw-new".into())).unwrap();
        assert_eq!(next["worker-tx"], b"pw-new");
        assert!(!next.contains_key("worker-bulk"));
        assert_eq!(next["admin"], first["admin"]);
        let conf = String::from_utf8(next[AUTH_CONF_KEY].clone()).unwrap();
        assert!(conf.contains("baton-worker-tx") && !conf.contains("baton-worker-bulk"));

        // A password changed by hand gets a new hash.
        let mut edited = next.clone();
        edited.insert("ingress".into(), b"chosen".to_vec());
        let after = render(&roles, &edited, 4, || panic!("kept")).unwrap();
        let hashes: BTreeMap<String, Hashed> = serde_json::from_slice(&after[HASHES_KEY]).unwrap();
        assert!(bcrypt::verify("chosen", &hashes["baton-ingress"].bcrypt).unwrap());
    }

    #[test]
    fn new_passwords_differ_and_need_no_quoting() {
        let (a, b) = (new_password().unwrap(), new_password().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
