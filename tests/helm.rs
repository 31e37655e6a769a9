//! The Helm charts, linted and rendered by a real helm: the one `scripts/k8s.sh bin` provides
//! (built from the Go module pinned in scripts/k8s/helm). Without it these tests fail, saying
//! to run `scripts/k8s.sh build`. Nothing is installed: `helm lint --strict` and
//! `helm template` only, with the default values, with tests/fixtures/helm/values-full.yaml
//! (everything turned on), and with values the chart must refuse.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clustersync::operator::crd::ClusterSync;
use serde::Deserialize;
use serde_json::{json, Value};

const OPERATOR: &str = "charts/clustersync-operator";
const CRDS: &str = "charts/clustersync-crds";
/// The Kubernetes version charts are rendered for (scripts/check_manifests.py validates
/// against the same).
const KUBE_VERSION: &str = "1.33.0";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    root()
        .join("tests/fixtures/helm")
        .join(name)
        .display()
        .to_string()
}

/// The helm binary from `scripts/k8s.sh bin`, found once per test run.
fn helm() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        let out = Command::new(root().join("scripts/k8s.sh"))
            .arg("bin")
            .current_dir(root())
            .output()
            .unwrap_or_else(|e| {
                panic!("helm is missing: run scripts/k8s.sh build (scripts/k8s.sh: {e})")
            });
        let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let helm = PathBuf::from(&dir).join("helm");
        assert!(
            out.status.success() && !dir.is_empty() && helm.is_file(),
            "helm is missing: run scripts/k8s.sh build (it builds helm, with the Kubernetes binaries, from the Go modules pinned in scripts/k8s/). scripts/k8s.sh bin said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        helm
    })
}

/// Runs helm with its configuration, cache and data in a scratch directory (no repositories,
/// plugins or settings of the user's); returns (ok, stdout, stderr).
fn run_helm(args: &[&str]) -> (bool, String, String) {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let out = Command::new(helm())
        .args(args)
        .current_dir(root())
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` of a chart as release "clustersync" in namespace clustersync-system.
fn template(chart: &str, extra: &[&str]) -> Result<Vec<Value>, String> {
    let mut args = vec![
        "template",
        "clustersync",
        chart,
        "--namespace",
        "clustersync-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_helm(&args);
    if ok {
        Ok(yaml_docs(&out))
    } else {
        Err(err)
    }
}

fn lint(chart: &str, extra: &[&str]) {
    let mut args = vec![
        "lint",
        "--strict",
        chart,
        "--namespace",
        "clustersync-system",
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = run_helm(&args);
    assert!(
        ok && out.contains("0 chart(s) failed"),
        "helm {}:\n{out}\n{err}",
        args.join(" ")
    );
}

fn kind_name(d: &Value) -> (String, String, String) {
    (
        d["kind"].as_str().unwrap_or_default().to_string(),
        d["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn all<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = all(docs, kind);
    assert_eq!(found.len(), 1, "one {kind}: {found:?}");
    found[0]
}

/// Every object that is not a custom resource validates against the Kubernetes schemas
/// (scripts/check_manifests.py, from the testbed's venv).
fn assert_valid_kubernetes(docs: &[Value], what: &str) {
    let builtin: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            let api = d["apiVersion"].as_str().unwrap_or_default();
            !api.starts_with("monitoring.coreos.com/") && !api.starts_with("clustersync.io/")
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    let text: Vec<String> = builtin
        .iter()
        .map(|d| serde_json::to_string(d).unwrap())
        .collect();
    std::fs::write(&file, text.join("\n---\n")).unwrap();
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/testbed.sh install",
        python.display()
    );
    let out = Command::new(python)
        .arg(root().join("scripts/check_manifests.py"))
        .arg("k8s")
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {err}");
    assert!(
        err.contains(&format!("{} objects valid", builtin.len())),
        "{what}: {err}"
    );
}

/// The engine Deployment the operator creates for a ClusterSync in `namespace`.
fn engine_deployment(namespace: &str) -> Value {
    let cs: ClusterSync = serde_json::from_value(json!({
        "apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
        "metadata": { "name": "orders", "namespace": namespace, "uid": "u" },
        "spec": { "source": { "name": "a" }, "destination": { "name": "b" } }
    }))
    .unwrap();
    serde_json::to_value(clustersync::operator::workload::deployment(
        &cs, "img", "1/1",
    ))
    .unwrap()
}

/// `labels` (a matchLabels map) is a subset of `of`.
fn selects(selector: &Value, of: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|m| !m.is_empty() && m.iter().all(|(k, v)| of.get(k) == Some(v)))
}

fn env_of(deployment: &Value) -> BTreeMap<String, Value> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

#[test]
fn helm_lints_both_charts_strictly() {
    lint(CRDS, &[]);
    lint(OPERATOR, &[]);
    lint(OPERATOR, &["--values", &fixture("values-full.yaml")]);
    // Cluster scope with everything on (the PDBs then need their namespaces listed).
    lint(
        OPERATOR,
        &[
            "--values",
            &fixture("values-full.yaml"),
            "--set",
            "watch.scope=cluster,engine.podDisruptionBudget.namespaces={shop}",
        ],
    );
}

#[test]
fn the_crd_chart_renders_the_crd_kept_on_uninstall() {
    let docs = template(CRDS, &[]).unwrap();
    assert_eq!(docs.len(), 1, "the CRD only");
    let crd = &docs[0];
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let committed: Vec<Value> = yaml_docs(
        &std::fs::read_to_string(root().join("crds/clustersync.io_clustersyncs.yaml")).unwrap(),
    );
    let mut without = crd.clone();
    without["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert!(
        without == committed[0],
        "helm renders the CRD of crds/ (plus the keep annotation)"
    );
    // The chart takes no values.
    let err = template(CRDS, &["--set", "replicas=2"]).unwrap_err();
    assert!(err.contains("replicas"), "{err}");
}

/// The default values render what deploy/base installs (but the Namespace and the CRD), with a
/// rolling update (leader election is on) and nothing optional.
#[test]
fn the_operator_chart_defaults_render_the_base_install() {
    let docs = template(OPERATOR, &[]).unwrap();
    let kinds: BTreeSet<(String, String)> = docs
        .iter()
        .map(|d| {
            let (k, _, n) = kind_name(d);
            (k, n)
        })
        .collect();
    let base = Command::new("kubectl")
        .args(["kustomize", "deploy/base"])
        .current_dir(root())
        .output()
        .expect("kubectl is on PATH");
    assert!(base.status.success());
    let base: BTreeSet<(String, String)> = yaml_docs(&String::from_utf8_lossy(&base.stdout))
        .iter()
        .filter(|d| d["kind"] != "Namespace" && d["kind"] != "CustomResourceDefinition")
        .map(|d| {
            let (k, _, n) = kind_name(d);
            (k, n)
        })
        .collect();
    assert_eq!(kinds, base, "the chart's objects are deploy/base's");
    for d in &docs {
        let ns = d["metadata"]["namespace"].as_str();
        let cluster_scoped = matches!(
            d["kind"].as_str(),
            Some("ClusterRole") | Some("ClusterRoleBinding")
        );
        assert_eq!(
            ns.is_none(),
            cluster_scoped,
            "namespace of {:?}",
            kind_name(d)
        );
        if !cluster_scoped {
            assert_eq!(ns, Some("clustersync-system"), "{:?}", kind_name(d));
        }
    }
    let deployment = one(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
        "with leader election a new operator pod starts before the old one stops"
    );
    let env = env_of(deployment);
    assert!(
        !env.keys()
            .any(|k| k.starts_with("CLUSTERSYNC_METRICS_SCRAPER")),
        "{env:?}"
    );
    for kind in ["PodDisruptionBudget", "ServiceMonitor", "PodMonitor"] {
        assert!(all(&docs, kind).is_empty(), "{kind} is off by default");
    }
    assert_valid_kubernetes(&docs, "default values");
}

/// tests/fixtures/helm/values-full.yaml: leader election off (Recreate), two watched
/// namespaces, engine PodDisruptionBudgets, a ServiceMonitor, a PodMonitor and the metrics
/// scraper; each optional object selects what the operator really creates.
#[test]
fn the_operator_chart_renders_everything_turned_on() {
    let docs = template(OPERATOR, &["--values", &fixture("values-full.yaml")]).unwrap();
    assert_valid_kubernetes(&docs, "values-full.yaml");
    let watched = ["billing", "shop"];

    // Leader election off: Recreate, no Lease rights, --no-leader-election.
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["metadata"]["name"], "csync");
    assert_eq!(
        deployment["spec"]["strategy"],
        json!({"type": "Recreate"}),
        "without leader election two operator pods must never run at once"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert!(container["args"]
        .as_array()
        .unwrap()
        .contains(&json!("--no-leader-election")));
    assert_eq!(
        container["image"],
        "registry.example.com/platform/clustersync:0.1.0-rc1"
    );
    let env = env_of(deployment);
    assert_eq!(
        env["CLUSTERSYNC_ENGINE_IMAGE"]["value"],
        "registry.example.com/platform/clustersync-engine:0.1.0-rc2"
    );
    assert_eq!(env["CLUSTERSYNC_WATCH_NAMESPACE"]["value"], "shop,billing");
    assert_eq!(
        env["CLUSTERSYNC_METRICS_SCRAPER_NAMESPACE"]["value"],
        "monitoring"
    );
    let scraper: Value = serde_json::from_str(
        env["CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(scraper, json!({"app.kubernetes.io/name": "prometheus"}));
    let defaults: Value = serde_json::from_str(
        env["CLUSTERSYNC_ENGINE_DEFAULTS"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(defaults["priorityClassName"], "sync-critical");
    assert!(
        !all(&docs, "Role")
            .iter()
            .any(|r| r["metadata"]["name"].as_str().unwrap().contains("leader")),
        "no Lease rights without leader election"
    );

    // Namespace scope: a Role and RoleBinding in each watched namespace, nothing cluster-wide.
    assert!(all(&docs, "ClusterRole").is_empty() && all(&docs, "ClusterRoleBinding").is_empty());
    let role_ns: BTreeSet<&str> = all(&docs, "Role")
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(role_ns, BTreeSet::from(watched));

    // One PodDisruptionBudget per watched namespace, selecting the engines the operator
    // creates there (and not the operator).
    let pdbs = all(&docs, "PodDisruptionBudget");
    let pdb_ns: BTreeSet<&str> = pdbs
        .iter()
        .map(|p| p["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(pdb_ns, BTreeSet::from(watched));
    let operator_pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for pdb in &pdbs {
        let ns = pdb["metadata"]["namespace"].as_str().unwrap();
        let engine = engine_deployment(ns);
        let selector = &pdb["spec"]["selector"]["matchLabels"];
        assert!(
            selects(selector, &engine["spec"]["template"]["metadata"]["labels"]),
            "the PDB in {ns} selects engine pods: {selector} vs {}",
            engine["spec"]["template"]["metadata"]["labels"]
        );
        assert!(
            !selector
                .as_object()
                .unwrap()
                .contains_key("app.kubernetes.io/instance"),
            "every engine of the namespace, whatever its ClusterSync: {selector}"
        );
        assert!(!selects(selector, operator_pod_labels));
        assert_eq!(pdb["spec"]["maxUnavailable"], 0);
        assert_eq!(pdb["spec"]["unhealthyPodEvictionPolicy"], "IfHealthyBudget");
    }

    // The ServiceMonitor scrapes the operator through its metrics Service.
    let service = one(&docs, "Service");
    let sm = one(&docs, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(sm["metadata"]["namespace"], "clustersync-system");
    assert_eq!(sm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    assert_eq!(
        sm["spec"]["namespaceSelector"]["matchNames"],
        json!(["clustersync-system"])
    );
    let endpoint = &sm["spec"]["endpoints"][0];
    let port = &service["spec"]["ports"][0];
    assert_eq!(endpoint["port"], port["name"]);
    assert_eq!(port["port"], 9090);
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["interval"], "1m");
    assert_eq!(endpoint["scrapeTimeout"], "20s");
    assert!(selects(&service["spec"]["selector"], operator_pod_labels));

    // The PodMonitor scrapes every engine, on the port and path the engine serves /metrics on.
    let pm = one(&docs, "PodMonitor");
    assert_eq!(pm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pm["metadata"]["labels"]["release"], "kube-prometheus-stack");
    let matched: BTreeSet<&str> = pm["spec"]["namespaceSelector"]["matchNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(matched, BTreeSet::from(watched));
    let engine = engine_deployment("shop");
    let pod = &engine["spec"]["template"];
    assert!(selects(
        &pm["spec"]["selector"]["matchLabels"],
        &pod["metadata"]["labels"]
    ));
    assert!(!selects(
        &pm["spec"]["selector"]["matchLabels"],
        operator_pod_labels
    ));
    let endpoint = &pm["spec"]["podMetricsEndpoints"][0];
    let engine_port = &pod["spec"]["containers"][0]["ports"][0];
    assert_eq!(endpoint["port"], engine_port["name"]);
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"],
        engine_port["containerPort"].to_string()
    );
    assert_eq!(
        endpoint["path"],
        pod["metadata"]["annotations"]["prometheus.io/path"]
    );
    assert_eq!(endpoint["interval"], "30s");
    assert_eq!(endpoint["scrapeTimeout"], "10s");
    assert_eq!(
        endpoint["relabelings"][0]["sourceLabels"],
        json!(["__meta_kubernetes_pod_label_app_kubernetes_io_instance"])
    );

    // With watch.scope cluster the PodMonitor looks everywhere; the PDBs go where listed.
    let docs = template(
        OPERATOR,
        &[
            "--values",
            &fixture("values-full.yaml"),
            "--set",
            "watch.scope=cluster,engine.podDisruptionBudget.namespaces={shop,billing,archive}",
        ],
    )
    .unwrap();
    assert_eq!(
        one(&docs, "PodMonitor")["spec"]["namespaceSelector"],
        json!({"any": true})
    );
    let pdb_ns: BTreeSet<&str> = all(&docs, "PodDisruptionBudget")
        .iter()
        .map(|p| p["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(pdb_ns, BTreeSet::from(["archive", "billing", "shop"]));
    assert_valid_kubernetes(&docs, "values-full.yaml, cluster scope");
}

/// Values the chart must refuse, each with a message naming what is wrong.
#[test]
fn the_operator_chart_refuses_bad_values() {
    // values.schema.json: a value out of its enum, and a misspelt key.
    let err = template(OPERATOR, &["--values", &fixture("values-invalid.yaml")]).unwrap_err();
    assert!(err.contains("unhealthyPodEvictionPolicy"), "{err}");
    let (ok, out, lint_err) = run_helm(&[
        "lint",
        "--strict",
        OPERATOR,
        "--values",
        &fixture("values-invalid.yaml"),
    ]);
    assert!(
        !ok && format!("{out}{lint_err}").contains("unhealthyPodEvictionPolicy"),
        "{out}{lint_err}"
    );
    let err = template(OPERATOR, &["--set", "metrics.serviceMonitor.enabeld=true"]).unwrap_err();
    assert!(err.contains("enabeld"), "{err}");
    let err = template(OPERATOR, &["--set", "engine.podMonitor.interval=soon"]).unwrap_err();
    assert!(err.contains("interval"), "{err}");

    // The templates' own checks.
    for (set, want) in [
        (
            "engine.podDisruptionBudget.enabled=true",
            "engine.podDisruptionBudget.namespaces",
        ),
        (
            "metrics.serviceMonitor.enabled=true,metrics.service.enabled=false",
            "metrics.service.enabled",
        ),
        (
            "leaderElection.enabled=false,replicaCount=2",
            "replicaCount 1",
        ),
    ] {
        let err = template(OPERATOR, &["--set", set]).unwrap_err();
        assert!(err.contains(want), "--set {set}: {err}");
    }
}
