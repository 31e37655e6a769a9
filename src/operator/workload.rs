//! The engine's workload for one ClusterSync, built without touching the API (the
//! validate/build split of Stackable's operators): a one-replica Deployment and its Service.
//!
//! Connection strings reach the engine only through `secretKeyRef` environment variables
//! (never arguments, so never in the process list); the pod runs as non-root with a
//! read-only root filesystem, no capabilities and the runtime's seccomp profile.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;

use super::crd::ClusterSync;

pub const API_PORT: i32 = 27182;
pub const ENV_CLUSTER0: &str = "CLUSTERSYNC_CLUSTER0";
pub const ENV_CLUSTER1: &str = "CLUSTERSYNC_CLUSTER1";
pub const ENV_API_TOKEN: &str = "CLUSTERSYNC_API_TOKEN";
pub const TOKEN_KEY: &str = "token";
/// The label naming the ClusterSync an engine object belongs to.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Selects every object the operator creates (and only those).
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=clustersync-operator";

/// The per-sync Secret holding the engine API's token.
pub fn token_secret_name(cs: &ClusterSync) -> String {
    format!("{}-token", engine_name(cs))
}

/// A new token Secret (created once; the controller never rotates it under a running engine).
pub fn token_secret(cs: &ClusterSync) -> k8s_openapi::api::core::v1::Secret {
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let mut m = meta(cs);
    m.name = Some(token_secret_name(cs));
    k8s_openapi::api::core::v1::Secret {
        metadata: m,
        // `data`, not `stringData`: what is written is what a later read returns.
        data: Some(BTreeMap::from([(
            TOKEN_KEY.to_string(),
            k8s_openapi::ByteString(token.into_bytes()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Name shared by the engine's Deployment and Service.
/// The engine's Deployment and Service: `<name>-engine`, which a Service needs to be a
/// DNS-1035 label. The CRD refuses other names at admission; one that predates that rule
/// gets a sanitized, shortened name with a hash of the original, so two such names never
/// collide and a Service can always be made.
pub fn engine_name(cs: &ClusterSync) -> String {
    let name = cs.metadata.name.as_deref().unwrap_or("clustersync");
    if is_dns_label(name) && name.len() <= 56 && name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        return format!("{name}-engine");
    }
    format!("{}-{}-engine", sanitized(name, 40), short_hash(name))
}

/// A label value for `name`: itself when it is one, else a sanitized form with a hash.
fn label_value(name: &str) -> String {
    let ok = name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        name.to_string()
    } else {
        format!("{}-{}", sanitized(name, 40), short_hash(name))
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Lowercase letters, digits and single dashes, starting with a letter, at most `max` long.
fn sanitized(name: &str, max: usize) -> String {
    let mut out = String::from("cs");
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
        if out.len() >= max {
            break;
        }
    }
    out.trim_end_matches('-').to_string()
}

fn short_hash(name: &str) -> String {
    format!("{:08x}", xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as u32)
}

pub fn labels(cs: &ClusterSync) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "clustersync-engine".to_string(),
        ),
        (
            INSTANCE_LABEL.to_string(),
            label_value(cs.metadata.name.as_deref().unwrap_or_default()),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "clustersync-operator".to_string(),
        ),
    ])
}

fn owner(cs: &ClusterSync) -> Option<OwnerReference> {
    cs.controller_owner_ref(&())
}

fn meta(cs: &ClusterSync) -> ObjectMeta {
    ObjectMeta {
        name: Some(engine_name(cs)),
        namespace: cs.metadata.namespace.clone(),
        labels: Some(labels(cs)),
        owner_references: owner(cs).map(|o| vec![o]),
        ..Default::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_string(),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Pod template annotation carrying the version of the Secrets the engine's environment was
/// read from: a changed Secret changes the template, so the pod is replaced and the engine
/// starts with the new connection string (a running engine resumes where it was).
pub const CREDENTIALS_VERSION: &str = "clustersync.io/credentials-version";

/// What an engine gets when its ClusterSync names no resources: enough for `loadLevel` 3 on
/// a mid-sized deployment; memory is bounded by the engine's batch and read-ahead sizes, not
/// by the data.
pub fn default_engine_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_string());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), q("500m")),
            ("memory".to_string(), q("512Mi")),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_string(), q("2")),
            ("memory".to_string(), q("2Gi")),
        ])),
        ..Default::default()
    }
}

/// The engine's Deployment: one replica, replaced (never two engines at once).
/// `credentials_version` identifies the Secrets' current contents.
pub fn deployment(cs: &ClusterSync, default_image: &str, credentials_version: &str) -> Deployment {
    let spec = &cs.spec;
    let mut args = vec![
        "engine".to_string(),
        "--port".into(),
        API_PORT.to_string(),
        "--bind".into(),
        "0.0.0.0".into(),
        "--acceptDisclaimer".into(),
    ];
    if let Some(l) = spec.engine.load_level {
        args.extend(["--loadLevel".into(), l.to_string()]);
    }
    if let Some(v) = &spec.engine.verbosity {
        args.extend(["--verbosity".into(), v.clone()]);
    }
    let probe = |initial: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::Int(API_PORT),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        failure_threshold: Some(6),
        ..Default::default()
    };
    let container = Container {
        name: "engine".into(),
        image: Some(
            spec.engine
                .image
                .clone()
                .unwrap_or_else(|| default_image.to_string()),
        ),
        args: Some(args),
        env: Some(vec![
            // cluster0 is the spec's source, cluster1 its destination; /reverse swaps roles
            // inside the engine, not here.
            secret_env(ENV_CLUSTER0, &spec.source.name, &spec.source.key),
            secret_env(ENV_CLUSTER1, &spec.destination.name, &spec.destination.key),
            secret_env(ENV_API_TOKEN, &token_secret_name(cs), TOKEN_KEY),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("api".into()),
            container_port: API_PORT,
            ..Default::default()
        }]),
        readiness_probe: Some(probe(2)),
        liveness_probe: Some(probe(30)),
        resources: Some(
            spec.engine
                .resources
                .clone()
                .unwrap_or_else(default_engine_resources),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    Deployment {
        metadata: meta(cs),
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(labels(cs)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cs)),
                    // The conventional scrape annotations: /metrics needs no API token.
                    annotations: Some(BTreeMap::from([
                        (
                            CREDENTIALS_VERSION.to_string(),
                            credentials_version.to_string(),
                        ),
                        ("prometheus.io/scrape".to_string(), "true".to_string()),
                        ("prometheus.io/port".to_string(), API_PORT.to_string()),
                        ("prometheus.io/path".to_string(), "/metrics".to_string()),
                    ])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    node_selector: (!spec.engine.node_selector.is_empty())
                        .then(|| spec.engine.node_selector.clone()),
                    tolerations: (!spec.engine.tolerations.is_empty())
                        .then(|| spec.engine.tolerations.clone()),
                    affinity: spec.engine.affinity.clone(),
                    priority_class_name: spec.engine.priority_class_name.clone(),
                    automount_service_account_token: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Labels of the operator's own pods (the only ones let through to engines).
pub const OPERATOR_NAME_LABEL: (&str, &str) = ("app.kubernetes.io/name", "clustersync-operator");

/// Lets only the operator's pods (in `operator_namespace`) reach the engine's API; the engine's
/// own connections out, to the clusters, stay open.
/// Who may scrape the engines' `/metrics` besides the operator (e.g. Prometheus): pods with
/// these labels (all pods when empty) in this namespace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Scraper {
    pub namespace: String,
    pub pod_labels: BTreeMap<String, String>,
}

pub fn network_policy(
    cs: &ClusterSync,
    operator_namespace: &str,
    scraper: Option<&Scraper>,
) -> NetworkPolicy {
    let in_namespace = |ns: &str, pods: BTreeMap<String, String>| NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".to_string(),
                ns.to_string(),
            )])),
            ..Default::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(pods),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut from = vec![in_namespace(
        operator_namespace,
        BTreeMap::from([(
            OPERATOR_NAME_LABEL.0.to_string(),
            OPERATOR_NAME_LABEL.1.to_string(),
        )]),
    )];
    if let Some(s) = scraper {
        from.push(in_namespace(&s.namespace, s.pod_labels.clone()));
    }
    NetworkPolicy {
        metadata: meta(cs),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels(cs)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(API_PORT)),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            }]),
            ..Default::default()
        }),
    }
}

/// The Service the controller reaches the engine's API through.
pub fn service(cs: &ClusterSync) -> Service {
    Service {
        metadata: meta(cs),
        spec: Some(ServiceSpec {
            selector: Some(labels(cs)),
            ports: Some(vec![ServicePort {
                name: Some("api".into()),
                port: API_PORT,
                target_port: Some(IntOrString::Int(API_PORT)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::ClusterSyncSpec;

    fn cs() -> ClusterSync {
        let spec: ClusterSyncSpec = serde_json::from_value(serde_json::json!({
            "source": { "name": "old-db", "key": "connection" },
            "destination": { "name": "new-db" },
            "mode": "Running",
            "engine": { "loadLevel": 4, "verbosity": "INFO", "priorityClassName": "batch",
                        "nodeSelector": { "pool": "sync" } }
        }))
        .unwrap();
        let mut cs = ClusterSync::new("move-orders", spec);
        cs.metadata.namespace = Some("shop".into());
        cs.metadata.uid = Some("uid-1".into());
        cs
    }

    #[test]
    fn deployment_is_hardened_and_keeps_secrets_out_of_the_spec() {
        let d = deployment(&cs(), "clustersync:test", "7/9");
        assert_eq!(d.metadata.name.as_deref(), Some("move-orders-engine"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("shop"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ClusterSync", Some(true))
        );
        let spec = d.spec;
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        assert_eq!(
            spec.template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()[CREDENTIALS_VERSION],
            "7/9"
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.priority_class_name.as_deref(), Some("batch"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "sync");
        assert_eq!(
            pod.security_context.unwrap().seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("clustersync:test"));
        let args = c.args.clone().unwrap().join(" ");
        assert!(
            args.starts_with("engine")
                && args.contains("--loadLevel 4")
                && args.contains("--verbosity INFO"),
            "{args}"
        );
        assert!(
            !args.contains("mongodb"),
            "no connection string in arguments"
        );
        let env = c.env.clone().unwrap();
        let from = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .unwrap()
                .value_from
                .clone()
                .unwrap()
                .secret_key_ref
                .unwrap()
        };
        assert_eq!(
            (from(ENV_CLUSTER0).name, from(ENV_CLUSTER0).key),
            ("old-db".to_string(), "connection".to_string())
        );
        assert_eq!(
            (from(ENV_CLUSTER1).name, from(ENV_CLUSTER1).key),
            ("new-db".to_string(), "uri".to_string())
        );
        assert!(
            env.iter().all(|e| e.value.is_none()),
            "values only through secretKeyRef"
        );
        let r = c.resources.clone().unwrap();
        assert!(
            r.requests.unwrap().contains_key("memory") && r.limits.unwrap().contains_key("memory"),
            "requests and limits by default"
        );
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.unwrap().drop.unwrap(),
            vec!["ALL".to_string()]
        );
        assert_eq!(
            c.readiness_probe
                .clone()
                .unwrap()
                .http_get
                .unwrap()
                .path
                .as_deref(),
            Some("/healthz")
        );
    }

    #[test]
    fn the_api_token_comes_from_its_own_secret() {
        let c = cs();
        let s = token_secret(&c);
        assert_eq!(s.metadata.name.as_deref(), Some("move-orders-engine-token"));
        assert_eq!(s.data.as_ref().unwrap()[TOKEN_KEY].0.len(), 64);
        assert_ne!(token_secret(&c).data, s.data, "tokens are random");
        let d = deployment(&c, "img", "1/2");
        let env = d.spec.template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap();
        let t = env.iter().find(|e| e.name == ENV_API_TOKEN).unwrap();
        assert_eq!(
            t.value_from.clone().unwrap().secret_key_ref.unwrap().name,
            "move-orders-engine-token"
        );
    }

    #[test]
    fn only_the_operator_reaches_the_engine() {
        let c = cs();
        let p = network_policy(&c, "clustersync-system", None).spec.unwrap();
        assert_eq!(p.pod_selector.unwrap().match_labels.unwrap(), labels(&c));
        assert_eq!(p.policy_types.unwrap(), vec!["Ingress".to_string()]);
        let rule = &p.ingress.unwrap()[0];
        let from = &rule.from.as_ref().unwrap()[0];
        assert_eq!(
            from.namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "clustersync-system"
        );
        assert_eq!(
            from.pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["app.kubernetes.io/name"],
            "clustersync-operator"
        );
        assert_eq!(
            rule.ports.as_ref().unwrap()[0].port,
            Some(IntOrString::Int(API_PORT))
        );
        assert_eq!(rule.from.as_ref().unwrap().len(), 1, "nobody else");

        // With a scraper configured, its pods are admitted too, and only to the same port.
        let scraper = Scraper {
            namespace: "monitoring".into(),
            pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "prometheus".into())]),
        };
        let p = network_policy(&c, "clustersync-system", Some(&scraper))
            .spec
            .unwrap();
        let rule = &p.ingress.as_ref().unwrap()[0];
        let peers = rule.from.as_ref().unwrap();
        assert_eq!(peers.len(), 2);
        let ns = peers[1].namespace_selector.as_ref().unwrap();
        assert_eq!(
            ns.match_labels.as_ref().unwrap()["kubernetes.io/metadata.name"],
            "monitoring"
        );
        let pods = peers[1].pod_selector.as_ref().unwrap();
        assert_eq!(
            pods.match_labels.as_ref().unwrap()["app.kubernetes.io/name"],
            "prometheus"
        );
        assert_eq!(rule.ports.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn child_names_are_valid_for_any_clustersync_name() {
        let valid = |s: &str| is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase());
        let mut seen = std::collections::HashSet::new();
        for name in [
            "orders",
            "orders.v2",
            "orders-v2",
            "2024-move",
            "Orders",
            &"a".repeat(57),
            &"a".repeat(253),
            &format!("{}.b", "a".repeat(100)),
            "x..y",
        ] {
            let mut c = cs();
            c.metadata.name = Some(name.to_string());
            let engine = engine_name(&c);
            assert!(valid(&engine), "{name:?} gave {engine:?}");
            assert!(valid(&token_secret_name(&c)) || token_secret_name(&c).len() <= 253);
            assert!(
                seen.insert(engine.clone()),
                "{name:?} collides as {engine:?}"
            );
            let instance = &labels(&c)["app.kubernetes.io/instance"];
            assert!(instance.len() <= 63, "{name:?}: label {instance:?}");
        }
        let mut c = cs();
        c.metadata.name = Some("orders".into());
        assert_eq!(
            engine_name(&c),
            "orders-engine",
            "valid names keep their children's names"
        );
    }

    #[test]
    fn service_selects_the_engine() {
        let c = cs();
        let s = service(&c);
        assert_eq!(s.spec.unwrap().selector.unwrap(), labels(&c));
    }
}
