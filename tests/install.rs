//! The install paths: `deploy/` (kustomize base, namespaced overlay, rendered install.yaml,
//! examples), the Helm charts' files, the container image's Dockerfile (its Rust against
//! Cargo.toml's rust-version and Cargo.lock), and the GitOps examples: the Argo CD health
//! check and the Flux Kustomizations (the CRD never pruned; the health expressions).
//!
//! Rendering uses `kubectl kustomize`; Kubernetes-schema, CRD-schema, chart-values and Lua
//! checks run in `scripts/check_manifests.py` from the testbed's venv; Flux's CEL health
//! expressions run through `scripts/flux-health` (Go, cel-go as Flux uses it). Here the charts
//! are checked statically (values against their schema, every referenced value present, the
//! CRD identical); `tests/helm.rs` lints and renders them with helm. No container engine
//! works here, so the image is not built: see the README for what that leaves unexercised.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use clustersync::operator::crd::ClusterSync;
use serde::Deserialize;
use serde_json::{json, Value};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every non-empty document of a multi-document YAML text, with whole floats as integers
/// (kustomize writes the CRD's `minimum: 0.0` as `0`; the two mean the same).
fn yaml_docs(text: &str) -> Vec<Value> {
    fn whole(v: &mut Value) {
        match v {
            Value::Number(n) => {
                if let Some(f) = n
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && !n.is_i64() && !n.is_u64())
                {
                    *v = json!(f as i64);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(whole),
            Value::Object(o) => o.values_mut().for_each(whole),
            _ => {}
        }
    }
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .map(|mut v| {
            whole(&mut v);
            v
        })
        .collect()
}

fn read_docs(path: &Path) -> Vec<Value> {
    yaml_docs(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn kustomize(dir: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(root())
        .output()
        .expect("kubectl is on PATH (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `scripts/check_manifests.py ARGS` with the venv's Python; returns (ok, stdout, stderr).
fn check(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/testbed.sh install",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(root().join("scripts/check_manifests.py"))
        .args(args)
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kind_name(d: &Value) -> (String, String) {
    (
        d["kind"].as_str().unwrap_or_default().to_string(),
        d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_string(), name.to_string()))
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

#[test]
fn install_yaml_is_the_rendered_base() {
    let rendered = yaml_docs(&kustomize("deploy/base"));
    let committed = read_docs(&root().join("deploy/install.yaml"));
    assert!(
        rendered == committed,
        "deploy/install.yaml is out of date; regenerate it with scripts/gen_manifests.sh"
    );
    let kinds: BTreeSet<(String, String)> = rendered.iter().map(kind_name).collect();
    for want in [
        ("Namespace", "clustersync-system"),
        ("CustomResourceDefinition", "clustersyncs.clustersync.io"),
        ("ServiceAccount", "clustersync-operator"),
        ("ClusterRole", "clustersync-operator"),
        ("ClusterRoleBinding", "clustersync-operator"),
        ("Role", "clustersync-operator-leader-election"),
        ("Deployment", "clustersync-operator"),
        ("Service", "clustersync-operator-metrics"),
        ("NetworkPolicy", "clustersync-operator"),
    ] {
        assert!(
            kinds.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} missing from {kinds:?}"
        );
    }
    // The CRD installed is the one generated from the Rust types.
    let crd = read_docs(&root().join("crds/clustersync.io_clustersyncs.yaml"));
    assert_eq!(
        find(
            &rendered,
            "CustomResourceDefinition",
            "clustersyncs.clustersync.io"
        ),
        &crd[0]
    );
}

#[test]
fn the_namespaced_overlay_uses_a_role_only() {
    let docs = yaml_docs(&kustomize("deploy/overlays/namespaced"));
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "no cluster-wide RBAC in the namespaced overlay"
    );
    let base = yaml_docs(&kustomize("deploy/base"));
    assert_eq!(
        find(&docs, "Role", "clustersync-operator")["rules"],
        find(&base, "ClusterRole", "clustersync-operator")["rules"],
        "the same permissions, in one namespace"
    );
    let binding = find(&docs, "RoleBinding", "clustersync-operator");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    let env = &find(&docs, "Deployment", "clustersync-operator")["spec"]["template"]["spec"]
        ["containers"][0]["env"];
    let watch = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "CLUSTERSYNC_WATCH_NAMESPACE")
        .expect("the operator is told to watch one namespace");
    assert_eq!(
        watch["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
}

#[test]
fn every_object_and_example_validates_against_the_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let overlay = dir.path().join("namespaced.yaml");
    std::fs::write(&overlay, kustomize("deploy/overlays/namespaced")).unwrap();
    let mut files = vec![
        "deploy/install.yaml".to_string(),
        overlay.display().to_string(),
        "deploy/gitops/argocd-cm-patch.yaml".to_string(),
    ];
    files.extend(examples().iter().map(|p| p.display().to_string()));
    let mut args = vec!["k8s"];
    args.extend(files.iter().map(String::as_str));
    let (ok, _, err) = check(&args, None);
    assert!(ok, "{err}");
    assert!(err.contains("objects valid"), "{err}");

    // The checker does fail: an unknown field and a wrong type are caught.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: \"eighty\"}], bogus: 1}\n",
    )
    .unwrap();
    let (ok, _, err) = check(&["k8s", bad.to_str().unwrap()], None);
    assert!(!ok, "a broken Service passed: {err}");
}

fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "examples: {v:?}");
    v
}

#[test]
fn examples_pass_the_crd_schema_and_the_engines_own_rules() {
    let mut args = vec![
        "cr".to_string(),
        "crds/clustersync.io_clustersyncs.yaml".to_string(),
    ];
    args.extend(examples().iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = check(&args, None);
    assert!(ok, "{err}");

    let mut seen = BTreeSet::new();
    for path in examples() {
        let docs = read_docs(&path);
        let secrets: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Secret").collect();
        for d in docs.iter().filter(|d| d["kind"] == "ClusterSync") {
            let cs: ClusterSync = serde_json::from_value(d.clone()).unwrap();
            clustersync::operator::validate::start_options(&cs.spec)
                .unwrap_or_else(|e| panic!("{}: the engine would refuse it: {e}", path.display()));
            // Each referenced Secret is in the example, with the key, holding a URI the
            // engine accepts.
            for r in [&cs.spec.source, &cs.spec.destination] {
                let s = secrets
                    .iter()
                    .find(|s| s["metadata"]["name"] == r.name.as_str())
                    .unwrap_or_else(|| panic!("{}: no Secret {}", path.display(), r.name));
                let uri = s["stringData"][&r.key].as_str().unwrap();
                clustersync::uri::ClusterUri::parse("example", uri)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            if cs.spec.reversible {
                seen.insert("reversible");
            }
            if !cs.spec.include_namespaces.is_empty() {
                seen.insert("filtered");
            }
            if secrets.iter().any(|s| {
                s["stringData"].as_object().unwrap().values().any(|v| {
                    v.as_str().unwrap().starts_with("mongodb+srv://")
                        && v.as_str().unwrap().contains("tls=true")
                })
            }) {
                seen.insert("atlas");
            }
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["atlas", "filtered", "reversible"]),
        "examples cover Atlas, a filtered and a reversible sync"
    );

    // The schema check does fail on a wrong example.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: clustersync.io/v1alpha1\nkind: ClusterSync\nmetadata: {name: x}\nspec: {source: {name: a}, destination: {name: b}, mode: Sprinting, colour: red}\n",
    )
    .unwrap();
    let (ok, _, err) = check(
        &[
            "cr",
            "crds/clustersync.io_clustersyncs.yaml",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        !ok && err.contains("Sprinting") && err.contains("colour"),
        "{err}"
    );
}

/// Pod specs of every workload: the operator's from the manifests, and the engine's as the
/// operator builds it.
fn pod_specs(docs: &[Value]) -> Vec<(String, Value)> {
    let mut v: Vec<(String, Value)> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            (
                format!("Deployment/{}", d["metadata"]["name"].as_str().unwrap()),
                d["spec"]["template"]["spec"].clone(),
            )
        })
        .collect();
    let cs: ClusterSync = serde_json::from_value(json!({
        "apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
        "metadata": { "name": "x", "namespace": "y", "uid": "u" },
        "spec": { "source": { "name": "a" }, "destination": { "name": "b" } }
    }))
    .unwrap();
    let engine = clustersync::operator::workload::deployment(&cs, "img", "1/1");
    v.push((
        "engine Deployment".into(),
        serde_json::to_value(engine.spec.template.spec).unwrap(),
    ));
    v
}

fn assert_rbac_is_least_privilege(docs: &[Value], source: &str) {
    let allowed_secret_verbs = ["get", "list", "watch", "create", "delete"];
    for d in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" || d["kind"] == "Role")
    {
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        for rule in d["rules"].as_array().unwrap() {
            for field in ["verbs", "resources", "apiGroups"] {
                let items = rule[field].as_array().cloned().unwrap_or_default();
                assert!(
                    !items
                        .iter()
                        .any(|v| v.as_str().unwrap_or_default().contains('*')),
                    "{source}: {name}: wildcard in {field}: {rule}"
                );
            }
            let verbs: Vec<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            for escalating in ["escalate", "bind", "impersonate"] {
                assert!(!verbs.contains(&escalating), "{source}: {name}: {rule}");
            }
            if rule["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r == "secrets")
            {
                // Secrets are read; the only writes are the per-sync API tokens the operator
                // creates and deletes: never update, patch or deletecollection.
                assert!(
                    verbs.iter().all(|v| allowed_secret_verbs.contains(v)),
                    "{source}: {name}: Secrets verbs {verbs:?}"
                );
            }
        }
    }
}

fn assert_pods_are_hardened(pods: &[(String, Value)], source: &str) {
    for (what, pod) in pods {
        let psc = &pod["securityContext"];
        assert_eq!(psc["runAsNonRoot"], true, "{source}: {what}");
        assert_eq!(
            psc["seccompProfile"]["type"], "RuntimeDefault",
            "{source}: {what}"
        );
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{source}: {what}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{source}: {what}");
            assert_eq!(sc["runAsNonRoot"], true, "{source}: {what}");
            assert_eq!(
                sc["capabilities"]["drop"],
                json!(["ALL"]),
                "{source}: {what}"
            );
            assert_ne!(sc["privileged"], true, "{source}: {what}");
            for kind in ["requests", "limits"] {
                for res in ["cpu", "memory"] {
                    assert!(
                        c["resources"][kind][res].is_string(),
                        "{source}: {what}: resources.{kind}.{res} is not set"
                    );
                }
            }
            assert!(c["livenessProbe"].is_object() && c["readinessProbe"].is_object());
        }
    }
}

#[test]
fn rbac_and_pods_are_locked_down() {
    for dir in ["deploy/base", "deploy/overlays/namespaced"] {
        let docs = yaml_docs(&kustomize(dir));
        assert_rbac_is_least_privilege(&docs, dir);
        assert_pods_are_hardened(&pod_specs(&docs), dir);
    }
    // The checks do catch violations.
    let wild = vec![json!({"kind": "ClusterRole", "metadata": {"name": "w"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["update"]}]})];
    assert!(std::panic::catch_unwind(|| assert_rbac_is_least_privilege(&wild, "t")).is_err());
    let star = vec![json!({"kind": "Role", "metadata": {"name": "s"},
        "rules": [{"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}]})];
    assert!(std::panic::catch_unwind(|| assert_rbac_is_least_privilege(&star, "t")).is_err());
}

#[test]
fn argo_cd_health_follows_ready_and_state() {
    let script = root().join("deploy/gitops/argocd-health.lua");
    let lua = std::fs::read_to_string(&script).unwrap();
    let cond = |t: &str, s: &str, reason: &str| json!({"type": t, "status": s, "reason": reason, "message": format!("{t} {reason}")});
    let obj = |generation: i64, status: Value| {
        json!({"apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
               "metadata": {"name": "x", "generation": generation},
               "spec": {"mode": "Running"}, "status": status})
    };
    let ready = cond("Ready", "True", "SyncHealthy");
    let cases = vec![
        (
            json!({"apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync", "metadata": {"name": "x", "generation": 1}}),
            "Progressing",
        ),
        (
            obj(
                2,
                json!({"observedGeneration": 1, "state": "COMMITTED", "conditions": [ready]}),
            ),
            "Progressing",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "MissingRoles")]}),
            ),
            "Degraded",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "SyncStopped")]}),
            ),
            "Degraded",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "EngineNotReady")]}),
            ),
            "Progressing",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "state": "IDLE", "conditions": [ready]}),
            ),
            "Suspended",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "state": "PAUSED", "conditions": [ready]}),
            ),
            "Suspended",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "state": "RUNNING", "conditions": [ready, cond("InSync", "False", "Copying")]}),
            ),
            "Progressing",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "state": "RUNNING", "conditions": [ready, cond("InSync", "True", "CaughtUp")]}),
            ),
            "Healthy",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "state": "COMMITTED", "conditions": [ready.clone(), cond("InSync", "True", "Committed")]}),
            ),
            "Healthy",
        ),
        // Fields the operator has not filled in (yet) are waited for, never a script error.
        (obj(1, json!({})), "Progressing"),
        (obj(1, json!({"observedGeneration": 1})), "Progressing"),
        (
            obj(1, json!({"observedGeneration": 1, "conditions": []})),
            "Progressing",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False"}]}),
            ),
            "Degraded",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True"}]}),
            ),
            "Progressing",
        ),
        (
            obj(
                1,
                json!({"observedGeneration": 1, "state": "RUNNING", "conditions": [ready.clone(), {"type": "InSync", "status": "True"}]}),
            ),
            "Healthy",
        ),
        (
            json!({"apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync", "metadata": {"name": "x"},
                   "status": {"state": "IDLE", "conditions": [ready]}}),
            "Suspended",
        ),
    ];
    let input = Value::Array(cases.iter().map(|(o, _)| o.clone()).collect()).to_string();
    let (ok, out, err) = check(&["lua", script.to_str().unwrap()], Some(&input));
    assert!(ok, "{err}");
    let got: Vec<Value> = serde_json::from_str(&out).unwrap();
    for ((o, want), hs) in cases.iter().zip(&got) {
        assert_eq!(hs["status"], *want, "{o} -> {hs}");
        assert!(
            hs["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{hs}"
        );
    }
    assert!(got[2]["message"].as_str().unwrap().contains("MissingRoles"));

    // The ConfigMap patch carries the same script.
    let cm = read_docs(&root().join("deploy/gitops/argocd-cm-patch.yaml"));
    let embedded = cm[0]["data"]["resource.customizations.health.clustersync.io_ClusterSync"]
        .as_str()
        .unwrap();
    assert_eq!(
        embedded.trim(),
        lua.trim(),
        "argocd-cm-patch.yaml differs from argocd-health.lua; regenerate it with scripts/gen_manifests.sh"
    );
}

#[test]
fn charts_values_schema_and_crd() {
    let op = "charts/clustersync-operator";
    let (ok, _, err) = check(&["values", op], None);
    assert!(ok, "{err}");
    let (ok, _, err) = check(&["values", op, r#"{"bogus": 1}"#], None);
    assert!(!ok, "an unknown top-level value is rejected: {err}");
    let (ok, _, err) = check(&["values", op, r#"{"watch": {"scope": "galaxy"}}"#], None);
    assert!(!ok, "a bad enum is rejected: {err}");
    let (ok, _, err) = check(&["values", "charts/clustersync-crds"], None);
    assert!(ok, "{err}");

    // Every value a template reads exists in values.yaml.
    let values: Value = serde_norway::from_str(
        &std::fs::read_to_string(root().join(op).join("values.yaml")).unwrap(),
    )
    .unwrap();
    let re = regex::Regex::new(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let mut refs = BTreeSet::new();
    for entry in std::fs::read_dir(root().join(op).join("templates")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for c in re.captures_iter(&text) {
            refs.insert((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                c[1].to_string(),
            ));
        }
    }
    assert!(refs.len() > 10, "templates read values: {refs:?}");
    for (file, path) in &refs {
        let mut v = &values;
        for key in path.trim_start_matches('.').split('.') {
            v = v.get(key).unwrap_or_else(|| {
                panic!("{file} reads .Values{path}, which values.yaml does not define")
            });
        }
    }

    // The CRD chart carries crds/ exactly, kept on uninstall.
    let crd_chart = read_docs(
        &root().join("charts/clustersync-crds/templates/clustersync.io_clustersyncs.yaml"),
    );
    assert_eq!(
        crd_chart[0]["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstalling the chart must not delete the CRD (and every ClusterSync with it)"
    );
    let mut without = crd_chart[0].clone();
    without["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    let crd = read_docs(&root().join("crds/clustersync.io_clustersyncs.yaml"));
    assert_eq!(
        without, crd[0],
        "charts/clustersync-crds differs from crds/; regenerate it with scripts/gen_manifests.sh"
    );

    // The chart's RBAC, as written, has no wildcards and writes Secrets no more than deploy/.
    for entry in std::fs::read_dir(root().join(op).join("templates")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("kind: ClusterRole") || text.contains("kind: Role") {
            assert!(
                !text.contains("\"*\"") && !text.contains("'*'") && !text.contains("- *"),
                "{}",
                path.display()
            );
            for verb in ["update", "patch", "deletecollection"] {
                let secrets_rule = text
                    .split("- apiGroups")
                    .filter(|r| r.contains("secrets"))
                    .any(|r| r.contains(&format!("\"{verb}\"")));
                assert!(!secrets_rule, "{}: Secrets {verb}", path.display());
            }
        }
    }
}

#[test]
fn the_image_is_one_non_root_binary() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let last = dockerfile.rsplit("\nFROM ").next().unwrap();
    assert!(
        last.contains("distroless") && last.contains(":nonroot"),
        "{last}"
    );
    assert!(last.contains("USER 65532"), "non-root: {last}");
    assert!(last.contains("ENTRYPOINT [\"/clustersync\"]"), "{last}");
    assert!(dockerfile.contains("--locked"), "built from Cargo.lock");
    // mongosync's runbooks call `mongosync`: the image has that entry, a symlink to the same
    // binary (tests/runbook.rs runs the binary under that name).
    assert!(
        dockerfile.contains("ln -s clustersync /out/mongosync")
            && last.contains("COPY --from=build /out/ /"),
        "{dockerfile}"
    );
    // The same UID the pods run as.
    let docs = read_docs(&root().join("deploy/install.yaml"));
    let pod = &find(&docs, "Deployment", "clustersync-operator")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let image = pod["containers"][0]["image"].as_str().unwrap();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "the manifests name this version's image: {image}"
    );
}

#[test]
fn the_operator_refuses_engine_defaults_it_cannot_use() {
    for (given, want) in [
        (r#"{"nodeSelecter": {}}"#, "unknown field \"nodeSelecter\""),
        (r#"{"loadLevel": "high"}"#, "invalid type"),
        ("[1]", "not a JSON object"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clustersync"))
            .args(["operator", "--engine-defaults", given])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{given}: {err}");
        assert!(
            err.contains(want) && err.contains("spec.engine"),
            "{given}: {err}"
        );
    }
}

/// The chart's metrics-scraper values reach the operator as these settings; bad ones are
/// refused before anything starts.
#[test]
fn the_operator_refuses_a_scraper_it_cannot_admit() {
    for (args, want) in [
        (
            vec!["--metrics-scraper-pod-labels", r#"{"app":"prometheus"}"#],
            "needs --metrics-scraper-namespace",
        ),
        (
            vec![
                "--metrics-scraper-namespace",
                "monitoring",
                "--metrics-scraper-pod-labels",
                r#"{"app": 1}"#,
            ],
            "JSON object of label names to string values",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_clustersync"))
            .arg("operator")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// Every series the Grafana dashboard queries is one the engine or the operator exports, so a
/// renamed metric cannot leave a panel silently empty.
#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    let path = root().join("deploy/grafana/clustersync-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("the dashboard is JSON");
    let status = clustersync::engine::status::StatusCell::new();
    // Lag exists once change events are applied.
    status.applied_through(bson::Timestamp {
        time: 1,
        increment: 1,
    });
    // The verifier's series exist while verification is on (the default).
    status.lock().verification = Some(Default::default());
    let engine =
        clustersync::engine::metrics::render(&clustersync::engine::metrics::registry(status));
    // Label families appear once they have a sample.
    let om = clustersync::operator::telemetry::Metrics::new();
    om.error("Example");
    om.engine_call("start", true);
    om.sync_seen(
        "shop/orders",
        Some(clustersync::operator::telemetry::SyncSeen {
            state: "RUNNING".into(),
            not_ready: Some("MissingRoles".into()),
        }),
    );
    let operator = om.encode();
    // A `# TYPE name kind` line names a family; samples add _total, _bucket, _sum or _count.
    let mut exported = BTreeSet::new();
    for line in engine.lines().chain(operator.lines()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap_or(""));
            match kind {
                "counter" => {
                    exported.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        exported.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    exported.insert(name.to_string());
                }
            }
        }
    }
    let re = regex::Regex::new(r"clustersync_[a-z_]+").unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "a dashboard worth the name");
    let mut queried = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has a query", p["title"]);
        for t in targets {
            for m in re.find_iter(t["expr"].as_str().unwrap()) {
                queried.insert(m.as_str().to_string());
            }
        }
    }
    let missing: Vec<_> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
    for must in [
        "clustersync_engine_lag_seconds",
        "clustersync_engine_copied_bytes_total",
        "clustersync_engine_events_applied_total",
        "clustersync_operator_reconciles_total",
    ] {
        assert!(queried.contains(must), "the dashboard shows {must}");
    }
}

/// A version such as `1.89` or `1.89.0` as (major, minor, patch).
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.trim().split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("not a version: {v:?}"))
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// The highest `rust-version` among the packages `cargo build` compiles for clustersync on
/// this host (normal dependencies, and their build dependencies), from Cargo.lock, with the
/// packages that declare it.
fn dependencies_rust_version() -> ((u64, u64, u64), Vec<String>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    let host = String::from_utf8_lossy(&rustc.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc -vV names the host");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .args(["--filter-platform", &host])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata --locked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages: std::collections::HashMap<&str, &Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: std::collections::HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root_id = meta["resolve"]["root"].as_str().unwrap();
    let mut built = BTreeSet::new();
    let mut todo = vec![root_id];
    while let Some(id) = todo.pop() {
        if !built.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            // The package's own dev-dependencies are not in the image; a dependency's build
            // dependencies are compiled to run its build script.
            let built_for =
                |k: &Value| k["kind"].is_null() || (id != root_id && k["kind"] == "build");
            if dep["dep_kinds"].as_array().unwrap().iter().any(built_for) {
                todo.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    assert!(built.len() > 100, "the dependency graph: {built:?}");
    let mut max = (0, 0, 0);
    let mut by = Vec::new();
    for id in built.iter().filter(|id| **id != root_id) {
        let p = packages[id];
        if let Some(rv) = p["rust_version"].as_str() {
            let v = version(rv);
            let name = format!(
                "{} {} (rust-version {rv})",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            );
            if v > max {
                max = v;
                by.clear();
            }
            if v == max {
                by.push(name);
            }
        }
    }
    (max, by)
}

/// `cargo build --locked` refuses a toolchain older than any locked dependency's
/// `rust-version`, so the image's builder must be at least Cargo.toml's `rust-version`, which
/// must be at least the highest `rust-version` in Cargo.lock's dependency graph.
#[test]
fn the_builder_image_and_rust_version_satisfy_cargo_lock() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let re = regex::Regex::new(r"(?m)^FROM\s+\S*\brust:([0-9]+\.[0-9]+(?:\.[0-9]+)?)\S*").unwrap();
    let tags: Vec<&str> = re
        .captures_iter(&dockerfile)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert_eq!(
        tags.len(),
        1,
        "one builder stage FROM rust:<version>[-variant]: {tags:?}"
    );
    let builder = version(tags[0]);

    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let rv = regex::Regex::new(r#"(?m)^rust-version\s*=\s*"([^"]+)""#)
        .unwrap()
        .captures(&manifest)
        .expect("Cargo.toml declares rust-version")[1]
        .to_string();
    let declared = version(&rv);

    let (needed, by) = dependencies_rust_version();
    assert!(
        declared >= needed,
        "Cargo.toml says rust-version {rv}, but the locked dependencies need {needed:?}: {by:?}"
    );
    assert!(
        builder >= declared,
        "the Dockerfile builds with rust:{}, older than Cargo.toml's rust-version {rv}",
        tags[0]
    );
}

/// The path from `from` (a directory) to `to`, both absolute: kustomize refuses absolute
/// paths to other kustomizations.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut p = PathBuf::new();
    for _ in common..from.len() {
        p.push("..");
    }
    for c in &to[common..] {
        p.push(c);
    }
    p
}

fn flux_kustomizations() -> Vec<Value> {
    let docs = read_docs(&root().join("deploy/gitops/flux-kustomization.yaml"));
    let ks: Vec<Value> = docs
        .into_iter()
        .filter(|d| d["kind"] == "Kustomization")
        .collect();
    assert!(
        ks.len() >= 2,
        "the operator's and the syncs' Kustomizations"
    );
    for k in &ks {
        assert_eq!(k["apiVersion"], "kustomize.toolkit.fluxcd.io/v1", "{k}");
    }
    ks
}

/// Deleting a Flux Kustomization that prunes deletes everything it applied: with the CRD,
/// every ClusterSync in the cluster. The Flux example applies deploy/base with the CRD patched
/// `kustomize.toolkit.fluxcd.io/prune: disabled`; rendered as Flux renders it (kustomize, with
/// the Kustomization's patches), the CRD carries it and nothing else changes.
#[test]
fn flux_never_prunes_the_crd() {
    let mut checked = 0;
    for k in flux_kustomizations() {
        let spec = &k["spec"];
        let name = k["metadata"]["name"].as_str().unwrap();
        assert!(spec["prune"].is_boolean(), "{name}: spec.prune is required");
        assert!(
            matches!(
                spec["deletionPolicy"].as_str(),
                None | Some("MirrorPrune") | Some("Orphan")
            ),
            "{name}: deletionPolicy {}",
            spec["deletionPolicy"]
        );
        // Only the paths of this repository can be rendered here.
        if spec["sourceRef"]["name"] != "clustersync" {
            continue;
        }
        let path = spec["path"].as_str().unwrap().trim_start_matches("./");
        let plain = yaml_docs(&kustomize(path));
        if !plain
            .iter()
            .any(|d| d["kind"] == "CustomResourceDefinition")
        {
            continue;
        }
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let kustomization = json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [relative(dir.path(), &root().join(path))],
            "patches": spec["patches"].clone(),
        });
        std::fs::write(
            dir.path().join("kustomization.yaml"),
            serde_json::to_string(&kustomization).unwrap(),
        )
        .unwrap();
        let out = Command::new("kubectl")
            .arg("kustomize")
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let patched = yaml_docs(&String::from_utf8(out.stdout).unwrap());
        assert_eq!(patched.len(), plain.len(), "{name}");
        for (p, d) in patched.iter().zip(&plain) {
            if d["kind"] == "CustomResourceDefinition" {
                let protected = |m: &Value| {
                    m["annotations"]["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
                        || m["labels"]["kustomize.toolkit.fluxcd.io/prune"] == "disabled"
                };
                assert!(
                    protected(&p["metadata"]),
                    "{name} (prune: {}) would delete CRD {} and every ClusterSync with it when the Kustomization is deleted or the CRD leaves {path}",
                    spec["prune"],
                    d["metadata"]["name"]
                );
                let mut without = p.clone();
                let annotations = without["metadata"]["annotations"].as_object_mut().unwrap();
                annotations.remove("kustomize.toolkit.fluxcd.io/prune");
                if annotations.is_empty() {
                    without["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("annotations");
                }
                assert_eq!(
                    &without, d,
                    "{name}: the patch changes the CRD only by the annotation"
                );
                checked += 1;
            } else {
                assert_eq!(p, d, "{name}: the patch touches the CRD only");
            }
        }
    }
    assert_eq!(checked, 1, "the operator's Kustomization applies the CRD");
}

/// Runs the Kustomizations' ClusterSync health expressions through scripts/flux-health, which
/// evaluates them as kustomize-controller does (cel-go, Flux's CEL environment and order).
fn flux_health(exprs: &Value, objects: &[Value]) -> Vec<Value> {
    let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flux-health");
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(".")
        .current_dir(root().join("scripts/flux-health"))
        .output()
        .unwrap_or_else(|e| {
            panic!("go is needed to build scripts/flux-health (as for scripts/k8s.sh): {e}")
        });
    assert!(
        build.status.success(),
        "go build scripts/flux-health: {}",
        String::from_utf8_lossy(&build.stderr)
    );
    use std::io::Write;
    let mut child = Command::new(&bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            json!({"exprs": exprs, "objects": objects})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "flux-health: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Flux judges ClusterSyncs by the example's healthCheckExprs: a status that is partly or
/// not yet filled in is waited for, never an error or a failure (Flux cannot name an absent
/// top-level `status` in CEL: Unknown, which it polls until the timeout); a copy that takes
/// hours is healthy; failures someone must fix fail.
#[test]
fn flux_health_checks_tolerate_absent_fields_and_a_long_copy() {
    let ks = flux_kustomizations();
    let syncs = ks
        .iter()
        .find(|k| k["spec"]["healthCheckExprs"].is_array())
        .expect("a Kustomization judges ClusterSyncs with healthCheckExprs");
    let spec = &syncs["spec"];
    let exprs = spec["healthCheckExprs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "ClusterSync")
        .expect("an expression for ClusterSync");
    assert_eq!(exprs["apiVersion"], "clustersync.io/v1alpha1");
    assert!(
        spec["wait"] == true
            || spec["healthChecks"]
                .as_array()
                .is_some_and(|h| h.iter().any(|c| c["kind"] == "ClusterSync")),
        "the expressions are used: wait, or ClusterSyncs in healthChecks"
    );
    // The timeout bounds starting an engine, not the copy: minutes.
    let timeout = spec["timeout"].as_str().expect("an explicit timeout");
    let minutes: u64 = timeout
        .strip_suffix('m')
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("timeout in minutes: {timeout}"));
    assert!((5..=30).contains(&minutes), "timeout {timeout}");

    let cond = |t: &str, s: &str, reason: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": format!("{t} {reason}"),
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    };
    let ready = cond("Ready", "True", "SyncHealthy");
    let obj = |generation: i64, status: Option<Value>| {
        let mut o = json!({"apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
               "metadata": {"name": "orders", "namespace": "shop", "generation": generation},
               "spec": {"source": {"name": "a"}, "destination": {"name": "b"}, "mode": "Running"}});
        if let Some(s) = status {
            o["status"] = s;
        }
        o
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("no status yet", obj(1, None), "Unknown"),
        ("an empty status", obj(1, Some(json!({}))), "InProgress"),
        (
            "no conditions yet",
            obj(1, Some(json!({"observedGeneration": 1}))),
            "InProgress",
        ),
        (
            "conditions without Ready",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "conditions": [cond("CredentialsResolved", "True", "SecretsFound")]}),
                ),
            ),
            "InProgress",
        ),
        (
            "a spec not acted on yet",
            obj(
                2,
                Some(
                    json!({"observedGeneration": 1, "state": "RUNNING", "conditions": [ready.clone()]}),
                ),
            ),
            "InProgress",
        ),
        (
            "roles not checked yet",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "Pending")]}),
                ),
            ),
            "InProgress",
        ),
        (
            "the engine starting",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "EngineNotReady")]}),
                ),
            ),
            "InProgress",
        ),
        (
            "a Ready condition without status or reason",
            obj(
                1,
                Some(json!({"observedGeneration": 1, "conditions": [{"type": "Ready"}]})),
            ),
            "InProgress",
        ),
        (
            "missing roles",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "conditions": [cond("Ready", "False", "MissingRoles")]}),
                ),
            ),
            "Failed",
        ),
        (
            "a stopped sync",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "state": "RUNNING", "conditions": [cond("Ready", "False", "SyncStopped")]}),
                ),
            ),
            "Failed",
        ),
        (
            "Ready=False without a reason",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "False"}]}),
                ),
            ),
            "Failed",
        ),
        (
            "hours into the copy",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "state": "RUNNING", "copiedPercent": "37%",
                "conditions": [ready.clone(), cond("InSync", "False", "Copying")]}),
                ),
            ),
            "Current",
        ),
        (
            "ready, nothing else reported",
            obj(
                1,
                Some(json!({"observedGeneration": 1, "conditions": [ready.clone()]})),
            ),
            "Current",
        ),
        (
            "idle as asked",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "state": "IDLE", "conditions": [ready.clone()]}),
                ),
            ),
            "Current",
        ),
        (
            "caught up",
            obj(
                1,
                Some(
                    json!({"observedGeneration": 1, "state": "RUNNING", "lagSeconds": 1,
                "conditions": [ready.clone(), cond("InSync", "True", "CaughtUp")]}),
                ),
            ),
            "Current",
        ),
        (
            "committed",
            obj(
                1,
                Some(json!({"observedGeneration": 1, "state": "COMMITTED",
                "conditions": [ready.clone(), cond("InSync", "True", "Committed")]})),
            ),
            "Current",
        ),
    ];
    let objects: Vec<Value> = cases.iter().map(|(_, o, _)| o.clone()).collect();
    let got = flux_health(exprs, &objects);
    assert_eq!(got.len(), cases.len());
    let mut wrong = Vec::new();
    for ((what, _, want), r) in cases.iter().zip(&got) {
        // Errors only where Flux cannot avoid them (no `status` to name).
        if r["status"] != *want || (*what != "no status yet" && !r["error"].is_null()) {
            wrong.push(format!("{what}: want {want}, got {r}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
