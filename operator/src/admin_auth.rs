//! Who may use the operations API in Kubernetes: the caller's bearer token (a ServiceAccount
//! or user token) is checked with a TokenReview, and what it may do with SubjectAccessReviews
//! against RBAC rules on the virtual resource `queues` of API group `baton.dev`:
//! - `get` allows the reads (status, summary, list, show, holds), `update` the writes
//!   (requeue, delete, hold, release, retry now, bounce);
//! - allowed cluster-wide: the caller sees every namespace's mail;
//! - otherwise the caller sees the mail of the RelayDomain namespaces where `get` (or
//!   `update`) is allowed, and may write only if `update` is allowed in all of them.
//!
//! The chart ships ClusterRoles `baton-queue-viewer` (get, list) and `baton-queue-admin` (get,
//! list, update, delete); a RoleBinding limits one to a namespace. Decisions are cached per
//! token for [`CACHE_FOR`] (a revoked binding takes effect within that time).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use baton_admin::{AuthError, Authenticator, Caller, Permission};
use baton_config::crd::RelayDomain;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use sha2::{Digest as _, Sha256};

/// API group of the virtual resource RBAC rules name.
pub const GROUP: &str = "baton.dev";
/// The virtual resource: the mail queue.
pub const RESOURCE: &str = "queues";
/// How long a decision is kept per token.
pub const CACHE_FOR: Duration = Duration::from_secs(30);
/// Most tokens cached at once (the cache is emptied when full).
const CACHE_MAX: usize = 1024;

type Decision = Result<Caller, String>;

/// TokenReview + SubjectAccessReview authentication.
pub struct KubeAuth {
    client: Client,
    cache: parking_lot::Mutex<HashMap<[u8; 32], (Instant, Decision)>>,
}

impl KubeAuth {
    /// Check tokens against the cluster `client` talks to (the operator's ServiceAccount needs
    /// `create` on `tokenreviews` and `subjectaccessreviews`).
    pub fn new(client: Client) -> Self {
        KubeAuth {
            client,
            cache: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    async fn allowed(
        &self,
        user: &UserInfo,
        verb: &str,
        namespace: Option<&str>,
    ) -> Result<bool, AuthError> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups.clone(),
                uid: user.uid.clone(),
                extra: user.extra.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.into()),
                    resource: Some(RESOURCE.into()),
                    verb: Some(verb.into()),
                    namespace: namespace.map(str::to_owned),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("SubjectAccessReview: {e}")))?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }

    async fn decide(&self, token: &str) -> Result<Decision, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => return Err(AuthError::Unknown),
        };
        let name = user.username.clone().unwrap_or_default();
        let read = self.allowed(&user, "get", None).await?;
        let write = self.allowed(&user, "update", None).await?;
        if read || write {
            return Ok(Ok(Caller {
                name,
                permission: if write {
                    Permission::Admin
                } else {
                    Permission::Viewer
                },
                namespaces: Vec::new(),
            }));
        }
        let domains = Api::<RelayDomain>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| AuthError::Unavailable(format!("listing RelayDomains: {e}")))?;
        let namespaces: BTreeSet<String> = domains
            .items
            .iter()
            .filter_map(|d| d.metadata.namespace.clone())
            .collect();
        let mut readable = Vec::new();
        let mut writable_everywhere = true;
        for ns in namespaces {
            let read = self.allowed(&user, "get", Some(&ns)).await?;
            let write = self.allowed(&user, "update", Some(&ns)).await?;
            if read || write {
                writable_everywhere &= write;
                readable.push(ns);
            }
        }
        if readable.is_empty() {
            return Ok(Err(format!(
                "{name} may not get {RESOURCE}.{GROUP} in any namespace with a RelayDomain (bind the ClusterRole baton-queue-viewer or baton-queue-admin)"
            )));
        }
        Ok(Ok(Caller {
            name,
            permission: if writable_everywhere {
                Permission::Admin
            } else {
                Permission::Viewer
            },
            namespaces: readable,
        }))
    }
}

#[tonic::async_trait]
impl Authenticator for KubeAuth {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((at, decision)) = self.cache.lock().get(&key)
            && at.elapsed() < CACHE_FOR
        {
            return decision.clone().map_err(AuthError::Forbidden);
        }
        // Unknown tokens and failed checks are not cached: an outage must not stick.
        let decision = self.decide(token).await?;
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (Instant::now(), decision.clone()));
        decision.map_err(AuthError::Forbidden)
    }
}

/// What the operator needs to serve the operations API: Kubernetes authentication, and its
/// NATS options logged in as the admin role (from the NATS authorization Secret once it
/// exists, when the operator manages one).
pub async fn api_backend(
    settings: &crate::Settings,
) -> crate::Result<(baton_queue::NatsOptions, KubeAuth)> {
    let client = Client::try_default().await?;
    let mut nats = settings.nats.clone();
    if let Some(secret) = &settings.nats_auth_secret {
        let password = loop {
            match crate::nats_auth::existing_admin_password(&client, &settings.namespace, secret)
                .await?
            {
                Some(p) => break p,
                None => {
                    tracing::info!(
                        secret,
                        "operations API waits for the NATS authorization Secret"
                    );
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        };
        nats.auth = baton_queue::NatsAuth::UserPassword {
            user: baton_queue::permissions::Role::Admin.user(),
            password,
        };
    }
    Ok((nats, KubeAuth::new(client)))
}

/// The bearer token of the current kubeconfig user (`kubectl baton`): its `token`, or the
/// contents of its `tokenFile`. Users authenticated by client certificates or exec/OIDC
/// plugins have none to give; they pass `--token-file`.
pub async fn kubeconfig_token() -> std::result::Result<String, String> {
    use secrecy::ExposeSecret as _;
    let config = kube::Config::infer()
        .await
        .map_err(|e| format!("reading the kubeconfig: {e}"))?;
    let auth = &config.auth_info;
    if let Some(token) = &auth.token {
        return Ok(token.expose_secret().trim().to_owned());
    }
    if let Some(file) = &auth.token_file {
        return std::fs::read_to_string(file)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("the kubeconfig's tokenFile {file}: {e}"));
    }
    Err("the kubeconfig user has no bearer token (client certificate or exec plugin): pass --token-file with a ServiceAccount token (`kubectl create token ...`)".into())
}
