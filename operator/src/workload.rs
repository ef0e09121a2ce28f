//! The worker workload of a SendingPool, as pure functions: the desired Deployment, its
//! PodDisruptionBudget and the optional HorizontalPodAutoscaler, each named
//! `baton-worker-<pool>` in the install namespace and owned by the (cluster-scoped) SendingPool.

use std::collections::BTreeMap;

use baton_config::crd::SendingPool;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceFieldSelector, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource as _;

use crate::Settings;
use crate::context::WorkerNatsTls;
use crate::error::{Error, Result};

/// Label carrying the pool name on every worker object.
pub const POOL_LABEL: &str = "baton.dev/pool";
/// `app.kubernetes.io/managed-by` value of every object the operator creates.
pub const MANAGED_BY: &str = "baton-operator";
/// Port of the worker's operations endpoint (/metrics, /healthz, /readyz).
pub const METRICS_PORT: i32 = 9090;
/// UID and GID the worker runs as (the distroless `nonroot` user).
pub const NONROOT_ID: i64 = 65532;

/// Name of the worker Deployment, PDB and HPA of a pool.
pub fn worker_name(pool: &str) -> String {
    format!("baton-worker-{pool}")
}

/// Labels selecting a pool's worker pods (also the Deployment's selector, which is immutable).
pub fn selector_labels(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "baton".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "worker".to_owned(),
        ),
        (POOL_LABEL.to_owned(), pool.to_owned()),
    ])
}

/// Labels of every worker object: the selector labels plus `app.kubernetes.io/managed-by`.
pub fn worker_labels(pool: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(pool);
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        MANAGED_BY.to_owned(),
    );
    labels
}

/// Label selector of the worker objects the operator watches.
pub fn managed_workers_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY},app.kubernetes.io/component=worker")
}

/// Name of a SendingPool (required).
pub fn pool_name(pool: &SendingPool) -> Result<&str> {
    pool.metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or(Error::MissingField {
            kind: "SendingPool",
            field: "metadata.name",
        })
}

/// The controller owner reference to a SendingPool (needs its `uid`). A cluster-scoped owner of
/// namespaced objects is allowed, so garbage collection removes the workload with the pool.
pub fn pool_owner(pool: &SendingPool) -> Result<OwnerReference> {
    pool.controller_owner_ref(&()).ok_or(Error::MissingField {
        kind: "SendingPool",
        field: "metadata.uid",
    })
}

fn meta(pool: &SendingPool, settings: &Settings) -> Result<ObjectMeta> {
    let name = pool_name(pool)?;
    Ok(ObjectMeta {
        name: Some(worker_name(name)),
        namespace: Some(settings.namespace.clone()),
        labels: Some(worker_labels(name)),
        owner_references: Some(vec![pool_owner(pool)?]),
        ..ObjectMeta::default()
    })
}

/// Desired replicas: `None` when an HPA owns the count, else `spec.workers.replicas` (default 1).
pub fn desired_replicas(pool: &SendingPool) -> Option<i32> {
    let workers = &pool.spec.workers;
    match workers.autoscaling {
        Some(_) => None,
        None => Some(workers.replicas.unwrap_or(1)),
    }
}

/// How many workers of `pool` may run at once: the autoscaler's maximum, else
/// `spec.workers.replicas` (default 1). Each worker takes this share of the pool's outbound
/// limits while NATS is unreachable (`baton worker --limit-fallback-divisor`), so that the
/// workers together stay within them.
pub fn fallback_divisor(pool: &SendingPool) -> i32 {
    let workers = &pool.spec.workers;
    match &workers.autoscaling {
        Some(auto) => auto.max_replicas,
        None => workers.replicas.unwrap_or(1),
    }
    .max(1)
}

/// The worker Deployment of a pool: the `baton` image running `worker --pool <pool>`.
pub fn desired_deployment(pool: &SendingPool, settings: &Settings) -> Result<Deployment> {
    let name = pool_name(pool)?;
    let workers = &pool.spec.workers;
    Ok(Deployment {
        metadata: meta(pool, settings)?,
        spec: Some(DeploymentSpec {
            replicas: desired_replicas(pool),
            selector: LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(worker_labels(name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(settings.worker_service_account.clone()),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NONROOT_ID),
                        run_as_group: Some(NONROOT_ID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    containers: vec![worker_container(name, settings, pool)],
                    volumes: worker_volumes(settings),
                    node_selector: workers.node_selector.clone(),
                    tolerations: workers.tolerations.clone(),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    }
}

/// The worker container's environment: NATS, pool, metrics, JSON logs, its pod name for logs
/// and — when the operator has one — the fully qualified name it announces.
fn worker_env(name: &str, settings: &Settings) -> Vec<EnvVar> {
    let mut v = vec![
        env("BATON_NATS", &settings.nats_url),
        env("BATON_POOL", name),
        env("BATON_LISTEN_METRICS", &format!("0.0.0.0:{METRICS_PORT}")),
        env("BATON_LOG_FORMAT", "json"),
        EnvVar {
            name: "POD_NAME".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".to_owned(),
                    api_version: None,
                }),
                ..EnvVarSource::default()
            }),
        },
        // One runtime thread per CPU requested (rounded up): a worker on a large node does not
        // start a thread per node CPU for the fraction it was given.
        EnvVar {
            name: "BATON_RUNTIME_THREADS".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: None,
                    divisor: Some(Quantity("1".to_owned())),
                    resource: "requests.cpu".to_owned(),
                }),
                ..EnvVarSource::default()
            }),
        },
    ];
    if let Some(h) = &settings.worker_hostname {
        v.push(env("BATON_HOSTNAME", h));
    }
    match &settings.worker_nats_tls {
        Some(tls) => {
            let file = |f: &str| format!("{}/{f}", WorkerNatsTls::MOUNT);
            v.push(env("BATON_NATS_CA", &file("ca.crt")));
            if tls.client_cert {
                v.push(env("BATON_NATS_CERT", &file("tls.crt")));
                v.push(env("BATON_NATS_KEY", &file("tls.key")));
            }
        }
        None if settings.nats.tls.is_required() => v.push(env("BATON_NATS_TLS", "true")),
        None => {}
    }
    if settings.keyring_secret.is_some() {
        v.push(env("BATON_KEYRING", Settings::WORKER_KEYRING_MOUNT));
    }
    if let Some(secret) = &settings.nats_auth_secret {
        let role = baton_queue::permissions::Role::Worker {
            pool: name.to_owned(),
            tiers: 0,
        };
        v.push(env("BATON_NATS_USER", &role.user()));
        v.push(EnvVar {
            name: "BATON_NATS_PASSWORD".to_owned(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.clone(),
                    key: crate::nats_auth::password_key(&role),
                    optional: None,
                }),
                ..EnvVarSource::default()
            }),
        });
    }
    v
}

/// The Secret volumes of worker pods: NATS TLS and the keyring, when configured (volume name,
/// Secret, mount path).
fn worker_secrets(settings: &Settings) -> Vec<(&'static str, String, &'static str)> {
    let mut v = Vec::new();
    if let Some(tls) = &settings.worker_nats_tls {
        v.push(("nats-tls", tls.secret.clone(), WorkerNatsTls::MOUNT));
    }
    if let Some(secret) = &settings.keyring_secret {
        v.push(("keyring", secret.clone(), Settings::WORKER_KEYRING_MOUNT));
    }
    v
}

fn worker_volumes(settings: &Settings) -> Option<Vec<Volume>> {
    let v: Vec<Volume> = worker_secrets(settings)
        .into_iter()
        .map(|(name, secret, _)| Volume {
            name: name.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

fn worker_mounts(settings: &Settings) -> Option<Vec<VolumeMount>> {
    let v: Vec<VolumeMount> = worker_secrets(settings)
        .into_iter()
        .map(|(name, _, path)| VolumeMount {
            name: name.to_owned(),
            mount_path: path.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        })
        .collect();
    (!v.is_empty()).then_some(v)
}

fn worker_container(name: &str, settings: &Settings, pool: &SendingPool) -> Container {
    Container {
        name: "worker".to_owned(),
        image: Some(settings.worker_image.clone()),
        args: Some(vec!["worker".into(), "--pool".into(), name.to_owned()]),
        env: Some({
            let mut env = worker_env(name, settings);
            env.push(self::env(
                "BATON_LIMIT_FALLBACK_DIVISOR",
                &fallback_divisor(pool).to_string(),
            ));
            env
        }),
        volume_mounts: worker_mounts(settings),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: METRICS_PORT,
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: pool.spec.workers.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The PodDisruptionBudget of a pool's workers: at most one voluntary eviction at a time.
pub fn desired_pdb(pool: &SendingPool, settings: &Settings) -> Result<PodDisruptionBudget> {
    let name = pool_name(pool)?;
    Ok(PodDisruptionBudget {
        metadata: meta(pool, settings)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

/// The HPA of a pool when `spec.workers.autoscaling` is set (CPU utilization target).
pub fn desired_hpa(
    pool: &SendingPool,
    settings: &Settings,
) -> Result<Option<HorizontalPodAutoscaler>> {
    let name = pool_name(pool)?;
    let Some(auto) = &pool.spec.workers.autoscaling else {
        return Ok(None);
    };
    Ok(Some(HorizontalPodAutoscaler {
        metadata: meta(pool, settings)?,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: worker_name(name),
            },
            min_replicas: Some(auto.min_replicas),
            max_replicas: auto.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(auto.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        status: None,
    }))
}

/// Retry tiers (lane consumers besides `new`) of a pool: the schedule's, as the compiler and
/// [`baton_config::plan::SnapshotPlan::lanes`] count them.
pub fn retry_tiers(pool: &SendingPool) -> u32 {
    pool.spec.retry_tiers()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use baton_config::crd::{AutoscalingSpec, SendingPoolSpec};

    fn pool(spec: SendingPoolSpec) -> SendingPool {
        let mut p = SendingPool::new("bulk", spec);
        p.metadata.uid = Some("uid-1".into());
        p
    }

    #[test]
    fn deployment_runs_the_worker_with_the_contracted_shape() {
        let s = Settings::for_tests();
        let mut spec = SendingPoolSpec::default();
        spec.workers.replicas = Some(3);
        spec.workers.node_selector = Some(BTreeMap::from([("mail".into(), "yes".into())]));
        let d = desired_deployment(&pool(spec), &s).unwrap();
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["kind"], "Deployment");
        assert_eq!(v["metadata"]["name"], "baton-worker-bulk");
        assert_eq!(v["metadata"]["namespace"], "baton-system");
        assert_eq!(v["metadata"]["labels"]["baton.dev/pool"], "bulk");
        assert_eq!(
            v["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "baton-operator"
        );
        let owner = &v["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "SendingPool");
        assert_eq!(owner["apiVersion"], "baton.dev/v1alpha1");
        assert_eq!(owner["uid"], "uid-1");
        assert_eq!(owner["controller"], true);
        assert_eq!(v["spec"]["replicas"], 3);
        let pod = &v["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "baton-worker");
        assert_eq!(pod["nodeSelector"]["mail"], "yes");
        let c = &pod["containers"][0];
        assert_eq!(c["image"], "baton:test");
        assert_eq!(c["args"], serde_json::json!(["worker", "--pool", "bulk"]));
        let env: BTreeMap<String, serde_json::Value> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap().to_owned(), e.clone()))
            .collect();
        assert_eq!(env["BATON_NATS"]["value"], "nats://nats:4222");
        assert_eq!(env["BATON_POOL"]["value"], "bulk");
        assert_eq!(env["BATON_LISTEN_METRICS"]["value"], "0.0.0.0:9090");
        assert_eq!(env["BATON_LOG_FORMAT"]["value"], "json");
        // Three replicas: each worker takes a third of the pool's limits without NATS.
        assert_eq!(env["BATON_LIMIT_FALLBACK_DIVISOR"]["value"], "3");
        assert_eq!(
            env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        let threads = &env["BATON_RUNTIME_THREADS"]["valueFrom"]["resourceFieldRef"];
        assert_eq!(threads["resource"], "requests.cpu");
        assert_eq!(threads["divisor"], "1");
        assert!(
            !env.contains_key("BATON_HOSTNAME"),
            "no name unless configured"
        );
        let mut named = s.clone();
        named.worker_hostname = Some("relay.example.com".into());
        let v = serde_json::to_value(
            desired_deployment(&pool(SendingPoolSpec::default()), &named).unwrap(),
        )
        .unwrap();
        let env = &v["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            env.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "BATON_HOSTNAME" && e["value"] == "relay.example.com"),
            "{env}"
        );
        assert_eq!(c["ports"][0]["name"], "metrics");
        assert_eq!(c["ports"][0]["containerPort"], 9090);
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert_eq!(
            v["spec"]["selector"]["matchLabels"],
            serde_json::json!({"app.kubernetes.io/component": "worker",
                "app.kubernetes.io/name": "baton", "baton.dev/pool": "bulk"})
        );
    }

    /// TLS to NATS: the Secret is mounted read-only and the worker is pointed at its files;
    /// without a Secret nothing is mounted, and `--nats-tls` alone is passed on.
    #[test]
    fn workers_get_the_nats_tls_secret() {
        let env_of = |s: &Settings| {
            let v = serde_json::to_value(
                desired_deployment(&pool(SendingPoolSpec::default()), s).unwrap(),
            )
            .unwrap();
            let pod = v["spec"]["template"]["spec"].clone();
            let env: BTreeMap<String, String> = pod["containers"][0]["env"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_owned(),
                        e["value"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            (pod, env)
        };
        let (pod, env) = env_of(&Settings::for_tests());
        assert!(pod["volumes"].is_null() && pod["containers"][0]["volumeMounts"].is_null());
        assert!(!env.keys().any(|k| k.starts_with("BATON_NATS_")), "{env:?}");

        let mut s = Settings::for_tests();
        s.worker_nats_tls = Some(WorkerNatsTls {
            secret: "baton-nats-client".into(),
            client_cert: true,
        });
        let (pod, env) = env_of(&s);
        assert_eq!(
            pod["volumes"][0]["secret"]["secretName"],
            "baton-nats-client"
        );
        let mount = &pod["containers"][0]["volumeMounts"][0];
        assert_eq!(
            (mount["mountPath"].as_str(), mount["readOnly"].as_bool()),
            (Some("/etc/baton/nats-tls"), Some(true))
        );
        assert_eq!(env["BATON_NATS_CA"], "/etc/baton/nats-tls/ca.crt");
        assert_eq!(env["BATON_NATS_CERT"], "/etc/baton/nats-tls/tls.crt");
        assert_eq!(env["BATON_NATS_KEY"], "/etc/baton/nats-tls/tls.key");

        s.keyring_secret = Some("baton-keyring".into());
        let (pod, env) = env_of(&s);
        assert_eq!(pod["volumes"][1]["secret"]["secretName"], "baton-keyring");
        let mount = &pod["containers"][0]["volumeMounts"][1];
        assert_eq!(
            (mount["mountPath"].as_str(), mount["readOnly"].as_bool()),
            (Some("/etc/baton/keyring"), Some(true))
        );
        assert_eq!(env["BATON_KEYRING"], "/etc/baton/keyring");

        s.worker_nats_tls = None;
        s.keyring_secret = None;
        s.nats.tls.required = true;
        let (_, env) = env_of(&s);
        assert_eq!(env["BATON_NATS_TLS"], "true");
        assert!(!env.contains_key("BATON_KEYRING"));

        // With operator-managed NATS users: the pool's user, its password from the Secret.
        s.nats_auth_secret = Some("baton-nats-auth".into());
        let (pod, env) = env_of(&s);
        assert_eq!(env["BATON_NATS_USER"], "baton-worker-bulk");
        let password = pod["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "BATON_NATS_PASSWORD")
            .unwrap();
        assert_eq!(
            password["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "baton-nats-auth", "key": "worker-bulk"})
        );
    }

    #[test]
    fn autoscaling_leaves_replicas_to_the_hpa() {
        let s = Settings::for_tests();
        let mut spec = SendingPoolSpec::default();
        spec.workers.replicas = Some(3);
        spec.workers.autoscaling = Some(AutoscalingSpec {
            min_replicas: 2,
            max_replicas: 9,
            target_cpu_utilization_percentage: 70,
        });
        let p = pool(spec);
        let d = serde_json::to_value(desired_deployment(&p, &s).unwrap()).unwrap();
        assert!(d["spec"].get("replicas").is_none(), "{d}");
        assert_eq!(fallback_divisor(&p), 9, "the autoscaler's maximum");
        let hpa = serde_json::to_value(desired_hpa(&p, &s).unwrap().unwrap()).unwrap();
        assert_eq!(hpa["apiVersion"], "autoscaling/v2");
        assert_eq!(hpa["spec"]["minReplicas"], 2);
        assert_eq!(hpa["spec"]["maxReplicas"], 9);
        assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "baton-worker-bulk");
        assert_eq!(
            hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            70
        );
        let without = pool(SendingPoolSpec::default());
        assert!(desired_hpa(&without, &s).unwrap().is_none());
        assert_eq!(desired_replicas(&without), Some(1));
        assert_eq!(fallback_divisor(&without), 1);
    }

    #[test]
    fn pdb_allows_one_unavailable_and_a_pool_without_uid_is_refused() {
        let s = Settings::for_tests();
        let pdb =
            serde_json::to_value(desired_pdb(&pool(Default::default()), &s).unwrap()).unwrap();
        assert_eq!(pdb["apiVersion"], "policy/v1");
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        let no_uid = SendingPool::new("x", SendingPoolSpec::default());
        assert!(matches!(
            desired_pdb(&no_uid, &s),
            Err(Error::MissingField { .. })
        ));
        assert_eq!(retry_tiers(&no_uid), 5);
    }
}
