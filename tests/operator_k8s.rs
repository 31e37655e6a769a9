//! The operator on a real Kubernetes control plane: kube-apiserver with RBAC enforced and an
//! audit log, etcd and kube-controller-manager (garbage collection, Deployments,
//! ReplicaSets), built from Go modules by `scripts/k8s.sh`. The operator runs out of cluster
//! as the ServiceAccount `deploy/install.yaml` creates (a bound token from the TokenRequest
//! API), so every missing permission in the manifests fails here. A test kubelet
//! (`common::kubelet_real`) binds the engine Pods to a registered Node and runs the engine
//! binary for each; two real SecantusDB servers are the clusters.
//!
//! What this cannot exercise: a real kubelet and container runtime (images are not pulled,
//! probes are not run, pods share the host's network), a scheduler (the test kubelet binds),
//! and NetworkPolicy enforcement (no CNI).

mod common;

use std::time::{Duration, Instant};

use bson::doc;
use clustersync::operator::crd::{ClusterSync, ClusterSyncStatus};
use clustersync::operator::engine_api::StaticLocator;
use clustersync::operator::leader::LeaseConfig;
use common::k8s::{path_str, ControlPlane};
use common::kubelet_real::{Kubelet, RUNNABLE_IMAGE};
use common::operator::{
    cluster_sync, create_uri_secrets, installed, root, serve_engines, Operator, OPERATOR_NS,
    OPERATOR_SA, SA_USER,
};
use common::Server;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

/// The Secrets and ClusterSyncs of `ns`, as the cluster admin (the user) sees them.
fn apis(admin: &Client, ns: &str) -> (Api<Secret>, Api<ClusterSync>) {
    (
        Api::namespaced(admin.clone(), ns),
        Api::namespaced(admin.clone(), ns),
    )
}

async fn set_mode(api: &Api<ClusterSync>, name: &str, mode: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "mode": mode } })),
    )
    .await
    .expect("patch spec.mode");
}

fn condition<'a>(
    s: &'a ClusterSyncStatus,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().find(|c| c.type_ == t)
}

fn cond_is(s: &ClusterSyncStatus, t: &str, status: &str) -> bool {
    condition(s, t).is_some_and(|c| c.status == status)
}

async fn wait_status(
    api: &Api<ClusterSync>,
    kubelet: &Kubelet,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ClusterSyncStatus) -> bool,
) -> ClusterSyncStatus {
    let deadline = Instant::now() + timeout;
    loop {
        let cs = api.get_opt(name).await.expect("get ClusterSync");
        if let Some(st) = cs.as_ref().and_then(|c| c.status.clone()) {
            if pred(&st) {
                return st;
            }
        }
        if Instant::now() > deadline {
            let ns = api.namespace().unwrap_or_default().to_string();
            let cp = ControlPlane::shared();
            let objects =
                cp.kubectl(&["get", "deploy,rs,pods,svc,events", "-n", &ns, "-o", "wide"]);
            panic!(
                "timed out waiting for {what}; status: {}\nobjects:\n{}{}\nengine log (tail):\n{}",
                serde_json::to_string_pretty(&cs.map(|c| c.status)).unwrap(),
                String::from_utf8_lossy(&objects.stdout),
                String::from_utf8_lossy(&objects.stderr),
                tail(&kubelet.log(&ns, &format!("{name}-engine")), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

async fn wait_event(client: &Client, ns: &str, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reasons = event_reasons(client, ns).await;
        if reasons.iter().any(|r| r == reason) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} Event in {reasons:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests the operator's ServiceAccount made in the audit log from `offset` on, leaving
/// out watches (long-lived, not a per-poll cost) and the leader lease (a fixed cost per
/// replica, counted separately).
fn operator_requests(cp: &ControlPlane, offset: u64, ns: &str) -> (Vec<String>, usize) {
    let mut per_sync = Vec::new();
    let mut lease = 0;
    for e in cp.audit_since(offset) {
        if e["user"]["username"] != SA_USER || e["verb"] == "watch" {
            continue;
        }
        let uri = e["requestURI"].as_str().unwrap_or_default().to_string();
        if uri.contains(&format!("/leases/lease-{ns}")) {
            lease += 1;
        } else if uri.contains(&format!("/namespaces/{ns}/")) {
            per_sync.push(format!("{} {}", e["verb"].as_str().unwrap_or("?"), uri));
        }
    }
    (per_sync, lease)
}

/// What the operator cost the API server over `window`: its requests in `ns` (watches and the
/// lease left out), its lease requests, and its reconciles.
async fn budget(
    cp: &ControlPlane,
    operator: &Operator,
    ns: &str,
    window: Duration,
) -> (Vec<String>, usize, f64) {
    let reconciles = || operator.metric("clustersync_operator_reconciles_total");
    let before = reconciles().await.unwrap_or(0.0);
    let offset = cp.audit_len();
    tokio::time::sleep(window).await;
    let (requests, lease) = operator_requests(cp, offset, ns);
    let after = reconciles().await.unwrap_or(0.0);
    (requests, lease, after - before)
}

/// The CRD, the install manifests, the namespaced overlay and every example, applied
/// server-side to a real API server: the structural schema is checked and the CEL rules
/// evaluated (cost included) by the server itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manifests_and_examples_apply_and_the_schema_refuses_what_cannot_work() {
    let cp = installed().await;
    let admin = cp.admin().await;

    // Every example, into its own namespace.
    for ns in ["shop", "billing"] {
        let _ = cp.kubectl(&["create", "namespace", ns]);
    }
    for entry in std::fs::read_dir(root().join("deploy/examples")).unwrap() {
        let path = entry.unwrap().path();
        let out = cp.apply(&path);
        assert!(
            out.contains("serverside-applied"),
            "{}: {out}",
            path.display()
        );
    }

    // The namespaced overlay, rendered into a namespace of its own.
    let ns = cp.namespace(&admin, "nsop").await;
    // Kustomize takes relative paths only: the wrapper lives two levels under the repository.
    let scratch = root().join("target");
    std::fs::create_dir_all(&scratch).unwrap();
    let dir = tempfile::tempdir_in(&scratch).unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\nresources:\n  - ../../deploy/overlays/namespaced\n"
        ),
    )
    .unwrap();
    let rendered = cp.kubectl_ok(&[
        "kustomize",
        "--load-restrictor",
        "LoadRestrictionsNone",
        path_str(dir.path()),
    ]);
    let file = dir.path().join("rendered.yaml");
    // The CRD is cluster-scoped and already applied; the rest goes into `ns`.
    std::fs::write(&file, &rendered).unwrap();
    cp.apply(&file);
    // Its ServiceAccount may manage ClusterSyncs in its namespace, and nowhere else.
    let can = |verb: &str, what: &str, in_ns: &str| {
        let out = cp.kubectl(&[
            "auth",
            "can-i",
            verb,
            what,
            "-n",
            in_ns,
            "--as",
            &format!("system:serviceaccount:{ns}:{OPERATOR_SA}"),
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("patch", "clustersyncs.clustersync.io", &ns));
    assert!(can("create", "deployments.apps", &ns));
    assert!(!can("patch", "clustersyncs.clustersync.io", "default"));
    assert!(!can("get", "secrets", "default"));
    // The cluster-wide operator may read Secrets by name, never list or watch them.
    let cluster_sa = format!("system:serviceaccount:{OPERATOR_NS}:{OPERATOR_SA}");
    for (verb, allowed) in [
        ("get", true),
        ("list", false),
        ("watch", false),
        ("update", false),
    ] {
        let out = cp.kubectl(&[
            "auth",
            "can-i",
            verb,
            "secrets",
            "-n",
            "shop",
            "--as",
            &cluster_sa,
        ]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim() == "yes",
            allowed,
            "{verb} secrets"
        );
    }

    // Names the engine's objects cannot be derived from are refused up front, by the CEL
    // rule, with a message that says what to do.
    let ns = cp.namespace(&admin, "names").await;
    let syncs: Api<ClusterSync> = Api::namespaced(admin.clone(), &ns);
    for bad in ["orders.v2", "2024-move", &"a".repeat(57)] {
        let err = syncs
            .create(&PostParams::default(), &cluster_sync(&ns, bad, "Idle"))
            .await
            .expect_err(bad);
        let text = err.to_string();
        assert!(
            text.contains("at most 56 characters") && text.contains("<name>-engine"),
            "{bad}: {text}"
        );
    }
    syncs
        .create(
            &PostParams::default(),
            &cluster_sync(&ns, &"a".repeat(56), "Idle"),
        )
        .await
        .expect("a 56-character name is fine");

    // Source and destination naming one Secret key: refused.
    let mut same = cluster_sync(&ns, "same", "Idle");
    same.spec.destination = same.spec.source.clone();
    let err = syncs
        .create(&PostParams::default(), &same)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("same Secret key"), "{err}");

    // A verbosity the engine does not know: refused by the schema's enum, naming the choices.
    let mut loud = cluster_sync(&ns, "loud", "Idle");
    loud.spec.engine.verbosity = Some("LOUD".into());
    let err = syncs
        .create(&PostParams::default(), &loud)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.engine.verbosity") && err.contains("\"DEBUG\""),
        "{err}"
    );

    // spec.mode after COMMITTED: refused (the status is set by hand here, as the operator would).
    let mut done = cluster_sync(&ns, "done", "Committed");
    done.spec.reversible = true;
    syncs.create(&PostParams::default(), &done).await.unwrap();
    syncs
        .patch_status(
            "done",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "state": "COMMITTED", "canWrite": true } })),
        )
        .await
        .unwrap();
    let err = syncs
        .patch(
            "done",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "mode": "Running" } })),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("spec.mode cannot change once the sync is COMMITTED"),
        "{err}"
    );
    assert!(!err.to_string().contains("<nil>"), "{err}");
    // Raising reversals by one stays possible; a jump, a decrease, or a reversal of a sync
    // that is not reversible is refused (from the new-user trial: all were accepted).
    let reversals = |name: &'static str, n: u32| {
        let syncs = syncs.clone();
        async move {
            syncs
                .patch(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "reversals": n } })),
                )
                .await
        }
    };
    reversals("done", 1)
        .await
        .expect("reversals may go up by one after the commit");
    let err = reversals("done", 3).await.unwrap_err().to_string();
    assert!(err.contains("spec.reversals goes up by one"), "{err}");
    let err = reversals("done", 0).await.unwrap_err().to_string();
    assert!(err.contains("spec.reversals goes up by one"), "{err}");
    syncs
        .create(&PostParams::default(), &cluster_sync(&ns, "oneway", "Idle"))
        .await
        .unwrap();
    let err = reversals("oneway", 1).await.unwrap_err().to_string();
    assert!(
        err.contains("spec.reversals") && err.contains("reversible: true"),
        "{err}"
    );

    // kubectl explain documents every field of the spec; kubectl get shows Mode and Ready.
    let explain = cp.kubectl_ok(&["explain", "clustersync.spec", "--recursive=false"]);
    for field in [
        "source",
        "destination",
        "mode",
        "reversible",
        "reversals",
        "includeNamespaces",
        "excludeNamespaces",
        "buildIndexes",
        "verification",
        "writeBlocking",
        "engine",
    ] {
        let line = explain
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(&format!("{field}\t")))
            .nth(1)
            .unwrap_or_default();
        assert!(
            !line.trim().is_empty() && !line.contains("<no description>"),
            "kubectl explain clustersync.spec.{field} has no description:\n{explain}"
        );
    }
    let header = cp.kubectl_ok(&["get", "clustersyncs", "-n", &ns]);
    let first = header.lines().next().unwrap_or_default();
    for col in [
        "NAME",
        "MODE",
        "STATE",
        "READY",
        "LAG",
        "COPIED",
        "CANCOMMIT",
        "AGE",
    ] {
        assert!(
            first.contains(col),
            "{col} missing from `kubectl get`: {first}"
        );
    }
}

/// IDLE → RUNNING → PAUSED → RUNNING → COMMITTED with live writes, as the manifests'
/// ServiceAccount, with: a request budget per poll while idle and while copying; a Secret
/// rotated mid-sync (the engine restarts once, a label-only change restarts nothing); the
/// engine's container killed; delete with the finalizer; owner-reference garbage collection.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_runs_to_committed_as_the_operators_service_account() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "life").await;
    let source = Server::start().await;
    let destination = Server::start().await;
    let src = source.client().await;
    let dst = destination.client().await;
    common::seed_full_dataset(&src).await.expect("seed");
    // Enough bytes that the copy spans several polls.
    let filler = "x".repeat(4000);
    for chunk in 0..40 {
        src.database("bulk")
            .collection::<bson::Document>("docs")
            .insert_many((0..1000).map(|i| doc! { "_id": chunk * 1000 + i, "pad": &filler }))
            .await
            .unwrap();
    }

    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let sa = cp.service_account_client(OPERATOR_NS, OPERATOR_SA).await;
    let operator = Operator::start(sa.clone(), &locator, &format!("lease-{ns}"), "replica-a");

    let (secrets, syncs) = apis(&admin, &ns);
    let pp = PostParams::default();
    create_uri_secrets(&secrets, "move", &source.uri(), &destination.uri()).await;
    syncs
        .create(&pp, &cluster_sync(&ns, "move", "Idle"))
        .await
        .unwrap();

    let st = wait_status(
        &syncs,
        &kubelet,
        "move",
        "IDLE and Ready",
        Duration::from_secs(90),
        |s| s.state.as_deref() == Some("IDLE") && cond_is(s, "Ready", "True"),
    )
    .await;
    assert!(cond_is(&st, "RolesVerified", "True"));
    assert_eq!(st.observed_generation, Some(1));
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let dep = deployments.get("move-engine").await.unwrap();
    assert_eq!(
        dep.metadata.owner_references.as_ref().unwrap()[0].kind,
        "ClusterSync"
    );
    assert!(Api::<Service>::namespaced(admin.clone(), &ns)
        .get_opt("move-engine")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        operator.metric("clustersync_operator_leader").await,
        Some(1.0)
    );

    // Request budget while idle: the engine is polled every 3 polls (3 s here); over 12 s,
    // each poll costs at most the two Secret reads and nothing is applied again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (idle, lease, reconciles) = budget(cp, &operator, &ns, Duration::from_secs(12)).await;
    println!(
        "idle, 12 s: {} requests ({lease} lease), {reconciles} reconciles: {idle:#?}",
        idle.len()
    );
    assert!(
        reconciles <= 8.0,
        "{reconciles} reconciles in 12 s while idle: a hot loop"
    );
    assert!(
        idle.len() <= 12,
        "{} requests in 12 s while idle: {idle:#?}",
        idle.len()
    );
    assert!(
        idle.iter()
            .all(|r| r.starts_with("get ") && r.contains("/secrets/")),
        "while idle only the Secrets are read: {idle:#?}"
    );
    // A renewal is a read and a compare-and-swap write, as client-go's, once a second here.
    assert!(
        lease <= 28,
        "{lease} lease requests in 12 s (renewed every second)"
    );

    // Copying: a status patch per poll at most, the Secrets, nothing else.
    set_mode(&syncs, "move", "Running").await;
    wait_status(
        &syncs,
        &kubelet,
        "move",
        "RUNNING",
        Duration::from_secs(60),
        |s| s.state.as_deref() == Some("RUNNING"),
    )
    .await;
    let (copying, _, reconciles) = budget(cp, &operator, &ns, Duration::from_secs(10)).await;
    println!(
        "running, 10 s: {} requests, {reconciles} reconciles: {copying:#?}",
        copying.len()
    );
    assert!(
        reconciles <= 14.0,
        "{reconciles} reconciles in 10 s with a 1 s poll: a hot loop"
    );
    assert!(
        copying.len() <= 45,
        "{} requests in 10 s: {copying:#?}",
        copying.len()
    );
    assert!(
        !copying
            .iter()
            .any(|r| r.contains("/deployments/") || r.contains("/services/")),
        "the unchanged workload is not applied again: {copying:#?}"
    );

    // Live writes during the sync.
    src.database("live")
        .collection::<bson::Document>("orders")
        .insert_many((0..200).map(|i| doc! { "_id": i, "v": i }))
        .await
        .unwrap();

    // A label on a Secret changes nothing; a rotated connection string restarts the engine.
    let starts = kubelet.starts(&ns, "move-engine");
    secrets
        .patch(
            "move-source",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "team": "data" } } })),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        kubelet.starts(&ns, "move-engine"),
        starts,
        "a label restarts nothing"
    );
    let rotated = format!("{}&appName=rotated", source.uri());
    assert!(
        source.uri().contains('?'),
        "the test URI has options: {}",
        source.uri()
    );
    secrets
        .patch(
            "move-source",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "uri": rotated } })),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while kubelet.starts(&ns, "move-engine") == starts {
        assert!(
            Instant::now() < deadline,
            "the rotated Secret restarts the engine"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The engine's container killed: restarted by the kubelet, the sync resumes.
    wait_status(
        &syncs,
        &kubelet,
        "move",
        "RUNNING after the rotation",
        Duration::from_secs(90),
        |s| s.state.as_deref() == Some("RUNNING") && cond_is(s, "EngineAvailable", "True"),
    )
    .await;
    assert!(kubelet.kill(&ns, "move-engine"));
    src.database("live")
        .collection::<bson::Document>("orders")
        .insert_many((200..400).map(|i| doc! { "_id": i, "v": i }))
        .await
        .unwrap();

    set_mode(&syncs, "move", "Paused").await;
    wait_status(
        &syncs,
        &kubelet,
        "move",
        "PAUSED",
        Duration::from_secs(120),
        |s| s.state.as_deref() == Some("PAUSED"),
    )
    .await;
    set_mode(&syncs, "move", "Running").await;
    wait_status(
        &syncs,
        &kubelet,
        "move",
        "caught up",
        Duration::from_secs(240),
        |s| s.state.as_deref() == Some("RUNNING") && s.can_commit,
    )
    .await;
    set_mode(&syncs, "move", "Committed").await;
    let st = wait_status(
        &syncs,
        &kubelet,
        "move",
        "COMMITTED",
        Duration::from_secs(120),
        |s| s.state.as_deref() == Some("COMMITTED") && s.can_write,
    )
    .await;
    assert!(cond_is(&st, "Committed", "True"));
    assert_eq!(
        st.observed_generation,
        Some(5),
        "Idle, Running, Paused, Running, Committed"
    );
    common::assert_clusters_equal(&src, &dst).await;
    for reason in [
        "Started",
        "Paused",
        "Resumed",
        "CommitRequested",
        "StateChanged",
    ] {
        wait_event(&admin, &ns, reason).await;
    }

    // Deleted: the finalizer stops the engine and removes what the operator made.
    syncs
        .delete("move", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while syncs.get_opt("move").await.unwrap().is_some()
        || deployments.get_opt("move-engine").await.unwrap().is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the ClusterSync and its Deployment are removed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(secrets
        .get_opt("move-engine-token")
        .await
        .unwrap()
        .is_none());
    assert!(
        secrets.get_opt("move-source").await.unwrap().is_some(),
        "the user's Secrets stay"
    );
    operator.stop().await;

    // Garbage collection: with no operator running, a ClusterSync whose finalizer is removed
    // by hand still takes its children with it (owner references, kube-controller-manager).
    syncs
        .create(&pp, &cluster_sync(&ns, "orphan", "Idle"))
        .await
        .unwrap();
    create_uri_secrets(&secrets, "orphan", &source.uri(), &destination.uri()).await;
    let operator = Operator::start(sa.clone(), &locator, &format!("lease-{ns}"), "replica-b");
    // (Those servers hold the first sync's committed state, so this engine does not get to
    // IDLE; what matters here is what the operator created.)
    let deadline = Instant::now() + Duration::from_secs(90);
    while deployments
        .get_opt("orphan-engine")
        .await
        .unwrap()
        .is_none()
        || secrets
            .get_opt("orphan-engine-token")
            .await
            .unwrap()
            .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the operator creates orphan's engine"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    operator.stop().await;
    syncs
        .patch(
            "orphan",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "finalizers": null } })),
        )
        .await
        .unwrap();
    syncs
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dep = deployments.get_opt("orphan-engine").await.unwrap();
        let svc = Api::<Service>::namespaced(admin.clone(), &ns)
            .get_opt("orphan-engine")
            .await
            .unwrap();
        let token = secrets.get_opt("orphan-engine-token").await.unwrap();
        if dep.is_none() && svc.is_none() && token.is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "garbage collection removes the Deployment, Service and token Secret (left: {} {} {})",
            dep.is_some(),
            svc.is_some(),
            token.is_some()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    kubelet.shutdown();
}

/// A pod that cannot run and an object the API server refuses are conditions with a reason
/// and Warning Events, never a silent stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_failures_are_conditions_and_warning_events() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "fail").await;
    let source = Server::start().await;
    let destination = Server::start().await;
    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let operator = Operator::as_service_account(cp, &locator, &ns, "replica-a").await;
    let (secrets, syncs) = apis(&admin, &ns);
    let pp = PostParams::default();
    create_uri_secrets(&secrets, "pull", &source.uri(), &destination.uri()).await;
    let mut cs = cluster_sync(&ns, "pull", "Running");
    cs.spec.engine.image = Some("registry.invalid/clustersync:nope".into());
    syncs.create(&pp, &cs).await.unwrap();
    let st = wait_status(
        &syncs,
        &kubelet,
        "pull",
        "ImagePullBackOff",
        Duration::from_secs(60),
        |s| condition(s, "EngineAvailable").is_some_and(|c| c.reason == "ImagePullBackOff"),
    )
    .await;
    let c = condition(&st, "EngineAvailable").unwrap();
    assert!(
        c.message.contains("registry.invalid/clustersync:nope"),
        "{}",
        c.message
    );
    assert!(cond_is(&st, "Ready", "False"));
    assert_eq!(condition(&st, "Ready").unwrap().reason, "ImagePullBackOff");
    wait_event(&admin, &ns, "ImagePullBackOff").await;

    // Fixed image: the engine runs and the condition clears.
    syncs
        .patch(
            "pull",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "engine": { "image": RUNNABLE_IMAGE } } })),
        )
        .await
        .unwrap();
    wait_status(
        &syncs,
        &kubelet,
        "pull",
        "the engine available",
        Duration::from_secs(90),
        |s| cond_is(s, "EngineAvailable", "True"),
    )
    .await;
    operator.stop().await;
    kubelet.shutdown();
}

/// Two operator replicas: exactly one leads at any time; the leader killed mid-sync, the
/// other takes over and the sync goes on with the same engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_one_leader_and_a_takeover() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "ha").await;
    let source = Server::start().await;
    let destination = Server::start().await;
    let src = source.client().await;
    src.database("app")
        .collection::<bson::Document>("items")
        .insert_many((0..2000).map(|i| doc! { "_id": i, "n": i }))
        .await
        .unwrap();
    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let lease = format!("lease-{ns}");
    let a = Operator::start(
        cp.service_account_client(OPERATOR_NS, OPERATOR_SA).await,
        &locator,
        &lease,
        "replica-a",
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = Operator::start(
        cp.service_account_client(OPERATOR_NS, OPERATOR_SA).await,
        &locator,
        &lease,
        "replica-b",
    );

    let (secrets, syncs) = apis(&admin, &ns);
    let pp = PostParams::default();
    create_uri_secrets(&secrets, "ha", &source.uri(), &destination.uri()).await;
    syncs
        .create(&pp, &cluster_sync(&ns, "ha", "Running"))
        .await
        .unwrap();
    wait_status(
        &syncs,
        &kubelet,
        "ha",
        "RUNNING",
        Duration::from_secs(90),
        |s| s.state.as_deref() == Some("RUNNING"),
    )
    .await;
    let leaders = (
        a.metric("clustersync_operator_leader").await,
        b.metric("clustersync_operator_leader").await,
    );
    assert_eq!(leaders, (Some(1.0), Some(0.0)), "a leads, b stands by");

    // a dies without releasing (its task is dropped, as a SIGKILL would end it): b takes over
    // once the lease runs out, and never while a could still act.
    a.task.abort();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while b.metric("clustersync_operator_leader").await != Some(1.0) {
        assert!(Instant::now() < deadline, "b takes over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        killed.elapsed() >= Duration::from_secs(4),
        "not before a's lease could have run out"
    );
    set_mode(&syncs, "ha", "Committed").await;
    wait_status(
        &syncs,
        &kubelet,
        "ha",
        "COMMITTED by b",
        Duration::from_secs(120),
        |s| s.state.as_deref() == Some("COMMITTED"),
    )
    .await;
    assert_eq!(
        kubelet.starts(&ns, "ha-engine"),
        1,
        "the same engine throughout"
    );
    b.stop().await;
    kubelet.shutdown();
}

/// A leader whose lease requests hang (its link to the API server stalls while the other
/// replica's works) steps down by its renew deadline, before the standby can take over once
/// the lease has run out: at no moment do both lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_requests_hang_steps_down_before_anyone_takes_over() {
    use clustersync::operator::leader::Leadership;
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "lease").await;
    let config = cp.config().await;
    let upstream = format!(
        "{}:{}",
        config.cluster_url.host().unwrap(),
        config.cluster_url.port_u16().unwrap()
    );
    let proxy = common::proxy::FreezableProxy::start(upstream).await;
    let mut through_proxy = config.clone();
    through_proxy.cluster_url = format!("https://127.0.0.1:{}", proxy.port).parse().unwrap();
    let a_client = Client::try_from(through_proxy).unwrap();
    let cfg = |id: &str| {
        let mut c = LeaseConfig::new(ns.clone(), "lock".into(), id.into());
        c.lease_duration = Duration::from_secs(6);
        c.renew_deadline = Duration::from_secs(4);
        c.retry_every = Duration::from_secs(1);
        c
    };
    let a = Leadership::new(a_client, cfg("a")).unwrap();
    let b = Leadership::new(admin.clone(), cfg("b")).unwrap();
    a.acquire().await;
    let keep = tokio::spawn(async move { (a.keep().await, Instant::now()) });
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !keep.is_finished(),
        "a keeps the lease while its link works"
    );

    proxy.freeze(true);
    let frozen = Instant::now();
    let standby = tokio::spawn(async move {
        b.acquire().await;
        Instant::now()
    });
    let (lost, a_stopped) = tokio::time::timeout(Duration::from_secs(20), keep)
        .await
        .expect("a gives up within its renew deadline, however long its requests hang")
        .unwrap();
    println!("a stepped down after {:?}: {lost}", a_stopped - frozen);
    assert!(
        a_stopped - frozen <= Duration::from_secs(5) + Duration::from_millis(500),
        "a stepped down {:?} after its link froze; its renew deadline is 4 s",
        a_stopped - frozen
    );
    let b_leads = tokio::time::timeout(Duration::from_secs(30), standby)
        .await
        .expect("b takes over")
        .unwrap();
    println!("b took over {:?} after the freeze", b_leads - frozen);
    assert!(
        a_stopped < b_leads,
        "two leaders: b took over {:?} after the freeze, a stepped down only after {:?}",
        b_leads - frozen,
        a_stopped - frozen
    );
    proxy.freeze(false);
}

/// An operator whose RBAC lacks a permission it needs (here: Services) says so in the
/// ClusterSync's status and in a Warning Event, naming what to grant, instead of stalling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_permission_is_a_condition_and_a_warning_event() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "rbac").await;
    // deploy/base/clusterrole.yaml's rules without Services, in this namespace only.
    let role = std::fs::read_to_string(root().join("deploy/base/clusterrole.yaml")).unwrap();
    let mut role: serde_json::Value = serde_norway::from_str(&role).unwrap();
    role["kind"] = json!("Role");
    role["metadata"] = json!({ "name": "limited", "namespace": ns });
    let rules = role["rules"].as_array_mut().unwrap();
    rules.retain(|r| r["resources"] != json!(["services"]));
    rules.push(json!({ "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"] }));
    let objects = json!({ "apiVersion": "v1", "kind": "List", "items": [
        { "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "limited", "namespace": ns } },
        role,
        { "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
          "metadata": { "name": "limited", "namespace": ns },
          "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "limited" },
          "subjects": [{ "kind": "ServiceAccount", "name": "limited", "namespace": ns }] },
    ]});
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_string(&objects).unwrap()).unwrap();
    cp.apply(file.path());

    let source = Server::start().await;
    let destination = Server::start().await;
    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let limited = cp.service_account_client(&ns, "limited").await;
    let operator = Operator::start_with(
        limited,
        &locator,
        "limited-operator",
        "replica-a",
        vec![ns.clone()],
        &ns,
    );
    let (secrets, syncs) = apis(&admin, &ns);
    let pp = PostParams::default();
    create_uri_secrets(&secrets, "denied", &source.uri(), &destination.uri()).await;
    syncs
        .create(&pp, &cluster_sync(&ns, "denied", "Idle"))
        .await
        .unwrap();
    let st = wait_status(
        &syncs,
        &kubelet,
        "denied",
        "EngineAvailable Forbidden",
        Duration::from_secs(60),
        |s| condition(s, "EngineAvailable").is_some_and(|c| c.reason == "Forbidden"),
    )
    .await;
    let c = condition(&st, "EngineAvailable").unwrap();
    assert!(
        c.message.contains("services") && c.message.contains("clusterrole.yaml"),
        "{}",
        c.message
    );
    assert_eq!(condition(&st, "Ready").unwrap().reason, "Forbidden");
    wait_event(&admin, &ns, "Forbidden").await;
    operator.stop().await;
    kubelet.shutdown();
}

/// `mode` and `reversals` drive a reversible sync through pause, commit and one reversal on a
/// real API server: the writes made on the destination after the cut-over come back to the
/// original source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_commit_and_reverse_through_the_spec() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "rev").await;
    let a = Server::start().await;
    let b = Server::start().await;
    let (ca, cb) = (a.client().await, b.client().await);
    let docs = ca.database("app").collection::<bson::Document>("items");
    docs.insert_many((0..500).map(|i| doc! { "_id": i, "n": i }))
        .await
        .unwrap();
    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let operator = Operator::as_service_account(cp, &locator, &ns, "replica-a").await;
    let (secrets, syncs) = apis(&admin, &ns);
    let pp = PostParams::default();
    create_uri_secrets(&secrets, "rev", &a.uri(), &b.uri()).await;
    let mut cs = cluster_sync(&ns, "rev", "Running");
    cs.spec.reversible = true;
    syncs.create(&pp, &cs).await.unwrap();
    let long = Duration::from_secs(120);
    wait_status(&syncs, &kubelet, "rev", "caught up", long, |s| s.can_commit).await;
    set_mode(&syncs, "rev", "Paused").await;
    wait_status(&syncs, &kubelet, "rev", "PAUSED", long, |s| {
        s.state.as_deref() == Some("PAUSED")
    })
    .await;
    docs.insert_one(doc! { "_id": "while-paused" })
        .await
        .unwrap();
    // Committed from PAUSED: resumed first, then committed once caught up.
    set_mode(&syncs, "rev", "Committed").await;
    wait_status(&syncs, &kubelet, "rev", "COMMITTED", long, |s| {
        s.state.as_deref() == Some("COMMITTED") && s.can_write
    })
    .await;
    common::assert_clusters_equal(&ca, &cb).await;

    cb.database("app")
        .collection::<bson::Document>("items")
        .insert_one(doc! { "_id": "written-on-b" })
        .await
        .unwrap();
    syncs
        .patch(
            "rev",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "reversals": 1 } })),
        )
        .await
        .unwrap();
    let st = wait_status(
        &syncs,
        &kubelet,
        "rev",
        "reversed and committed",
        long,
        |s| s.reversals_done == 1 && s.state.as_deref() == Some("COMMITTED") && s.can_write,
    )
    .await;
    assert!(cond_is(&st, "Ready", "True"), "{:?}", st.conditions);
    wait_event(&admin, &ns, "Reversed").await;
    let back = ca
        .database("app")
        .collection::<bson::Document>("items")
        .find_one(doc! { "_id": "written-on-b" })
        .await
        .unwrap();
    assert!(back.is_some(), "the reversal brought b's writes back to a");
    common::assert_clusters_equal(&ca, &cb).await;
    operator.stop().await;
    kubelet.shutdown();
}

const PW: &str = "0perator-Pa55word";

/// A server with `--auth`: `sync_user` holds `roles`, `full_user` holds `full`, and the test
/// server's missing built-in `clusterManager` is created as a custom role of that name.
async fn auth_server(roles: &[&str], full: &[&str]) -> Server {
    let mut server = Server::start().await;
    let admin = server.client().await.database("admin");
    admin
        .run_command(doc! { "createRole": "clusterManager", "privileges": [], "roles": [] })
        .await
        .unwrap();
    admin
        .run_command(doc! { "createUser": "root_user", "pwd": PW, "roles": [{ "role": "root", "db": "admin" }] })
        .await
        .unwrap();
    for (user, roles) in [("sync_user", roles), ("full_user", full)] {
        let roles: Vec<bson::Document> = roles
            .iter()
            .map(|r| doc! { "role": *r, "db": "admin" })
            .collect();
        admin
            .run_command(doc! { "createUser": user, "pwd": PW, "roles": roles })
            .await
            .unwrap();
    }
    let ready = auth_uri(&server, "root_user");
    server.restart_with_args(&["--auth"], Some(ready)).await;
    server
}

fn auth_uri(server: &Server, user: &str) -> String {
    format!(
        "mongodb://{user}:{PW}@127.0.0.1:{}/?directConnection=true&authSource=admin",
        server.port
    )
}

async fn set_uri(secrets: &Api<Secret>, name: &str, uri: &str) {
    secrets
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": { "uri": uri } })),
        )
        .await
        .unwrap();
}

/// A missing Secret is named in a condition and the sync proceeds once it appears; a bad
/// connection string is named without its password; a user without the roles gives
/// RolesVerified=False naming them, and nothing starts until the Secret names a user who has
/// them. Run as the manifests' ServiceAccount, with the test kubelet resolving the Secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_and_roles_gate_the_start() {
    use clustersync::preflight::roles::{required, Deployment as Kind, Side, SyncKind};
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "gate").await;
    let source_roles = required(SyncKind::Default, Kind::SelfManaged, Side::Source).roles;
    let source = auth_server(&source_roles, &source_roles).await;
    let dest_roles = required(SyncKind::Default, Kind::SelfManaged, Side::Destination).roles;
    let withheld = *dest_roles
        .iter()
        .find(|r| **r == "restore")
        .unwrap_or(&dest_roles[0]);
    let granted: Vec<&str> = dest_roles
        .iter()
        .copied()
        .filter(|r| *r != withheld)
        .collect();
    let destination = auth_server(&granted, &dest_roles).await;

    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let operator = Operator::as_service_account(cp, &locator, &ns, "replica-a").await;
    let (secrets, syncs) = apis(&admin, &ns);
    let pp = PostParams::default();

    // No Secrets yet.
    syncs
        .create(&pp, &cluster_sync(&ns, "gated", "Running"))
        .await
        .unwrap();
    let st = wait_status(
        &syncs,
        &kubelet,
        "gated",
        "CredentialsResolved=False",
        Duration::from_secs(30),
        |s| cond_is(s, "CredentialsResolved", "False"),
    )
    .await;
    let c = condition(&st, "CredentialsResolved").unwrap();
    assert_eq!(c.reason, "SecretNotFound");
    assert!(
        c.message.contains(&format!("{ns}/gated-source")) && c.message.contains("\"uri\""),
        "{}",
        c.message
    );
    assert!(cond_is(&st, "Ready", "False"));
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    assert!(
        deployments.get_opt("gated-engine").await.unwrap().is_none(),
        "no engine without credentials"
    );
    wait_event(&admin, &ns, "SecretNotFound").await;

    // The Secrets appear, the destination's with a connection string the engine refuses.
    let bad = format!(
        "{}&readPreference=secondary",
        auth_uri(&destination, "sync_user")
    );
    create_uri_secrets(&secrets, "gated", &auth_uri(&source, "sync_user"), &bad).await;
    let st = wait_status(
        &syncs,
        &kubelet,
        "gated",
        "InvalidConnectionString",
        Duration::from_secs(20),
        |s| {
            condition(s, "CredentialsResolved")
                .is_some_and(|c| c.reason == "InvalidConnectionString")
        },
    )
    .await;
    let msg = &condition(&st, "CredentialsResolved").unwrap().message;
    assert!(
        msg.contains("gated-destination") && msg.contains("readPreference"),
        "{msg}"
    );
    assert!(!msg.contains(PW), "the password stays out of status: {msg}");

    // Fixed: the engine runs, but the destination's user lacks a role.
    set_uri(
        &secrets,
        "gated-destination",
        &auth_uri(&destination, "sync_user"),
    )
    .await;
    let st = wait_status(
        &syncs,
        &kubelet,
        "gated",
        "RolesVerified=False",
        Duration::from_secs(90),
        |s| cond_is(s, "CredentialsResolved", "True") && cond_is(s, "RolesVerified", "False"),
    )
    .await;
    let roles = condition(&st, "RolesVerified").unwrap();
    assert_eq!(roles.reason, "MissingRoles");
    assert!(
        roles.message.contains(withheld)
            && roles.message.contains("sync_user")
            && roles.message.contains("grantRolesToUser"),
        "{}",
        roles.message
    );
    assert!(!roles.message.contains(PW));
    let ready = condition(&st, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "MissingRoles")
    );
    wait_event(&admin, &ns, "MissingRoles").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = syncs.get("gated").await.unwrap().status.unwrap();
    assert_eq!(
        st.state.as_deref(),
        Some("IDLE"),
        "nothing starts without the roles"
    );

    // The Secret now names a user with every role: the engine's pod is replaced so that it
    // connects as that user, the preflight passes and the sync starts. (Granting the role to
    // the same user would do on MongoDB, which refreshes the privileges of open connections;
    // the test server keeps those a connection authenticated with.)
    let starts = kubelet.starts(&ns, "gated-engine");
    assert!(starts >= 1, "the engine ran, idle");
    set_uri(
        &secrets,
        "gated-destination",
        &auth_uri(&destination, "full_user"),
    )
    .await;
    let st = wait_status(
        &syncs,
        &kubelet,
        "gated",
        "RUNNING as the user with the roles",
        Duration::from_secs(90),
        |s| s.state.as_deref() == Some("RUNNING"),
    )
    .await;
    assert!(
        kubelet.starts(&ns, "gated-engine") > starts,
        "the pod was replaced for the new Secret"
    );
    assert!(cond_is(&st, "RolesVerified", "True"));
    assert!(
        !kubelet.log(&ns, "gated-engine").contains(PW),
        "the engine's log has no password"
    );
    for e in Api::<Event>::namespaced(admin.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
    {
        let note = e.note.unwrap_or_default();
        assert!(!note.contains(PW), "an Event carries the password: {note}");
    }
    operator.stop().await;
    kubelet.shutdown();
}

/// A sync that stops for good inside the engine (its resume point rolled off a tiny source
/// oplog while paused) is Ready=False with the engine's reason, as an Event too, and
/// `mode: Committed` does not commit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_that_stops_in_the_engine_is_reported() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "lost").await;
    let (a, b) = tokio::join!(
        Server::start_with_args(&["--oplog-max-entries", "50"]),
        Server::start()
    );
    let src = a.client().await;
    let coll = src.database("app").collection::<bson::Document>("c");
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();

    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let operator = Operator::as_service_account(cp, &locator, &ns, "replica-a").await;
    let (secrets, syncs) = apis(&admin, &ns);
    create_uri_secrets(&secrets, "lost", &a.uri(), &b.uri()).await;
    syncs
        .create(
            &PostParams::default(),
            &cluster_sync(&ns, "lost", "Running"),
        )
        .await
        .unwrap();
    let long = Duration::from_secs(90);
    wait_status(&syncs, &kubelet, "lost", "caught up", long, |s| {
        s.can_commit
    })
    .await;
    set_mode(&syncs, "lost", "Paused").await;
    wait_status(&syncs, &kubelet, "lost", "PAUSED", long, |s| {
        s.state.as_deref() == Some("PAUSED")
    })
    .await;
    for chunk in 0..25 {
        coll.insert_many((0..100).map(|i| doc! { "_id": 1 + chunk * 100 + i }))
            .await
            .unwrap();
    }
    set_mode(&syncs, "lost", "Running").await;
    let st = wait_status(
        &syncs,
        &kubelet,
        "lost",
        "Ready=False, SyncStopped",
        long,
        |s| condition(s, "Ready").is_some_and(|c| c.reason == "SyncStopped"),
    )
    .await;
    let ready = condition(&st, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("oplog"), "{}", ready.message);
    wait_event(&admin, &ns, "SyncStopped").await;
    set_mode(&syncs, "lost", "Committed").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let st = syncs.get("lost").await.unwrap().status.unwrap();
    assert_eq!(st.state.as_deref(), Some("RUNNING"), "not committed");
    assert!(!st.can_commit);
    assert!(
        !event_reasons(&admin, &ns)
            .await
            .contains(&"CommitRequested".to_string()),
        "no /commit was sent"
    );
    operator.stop().await;
    kubelet.shutdown();
}

/// Scoped to a list of namespaces, the operator manages ClusterSyncs there and leaves every
/// other namespace alone: the API server's audit log shows it never even read there, though
/// its ServiceAccount may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_only_the_namespaces_it_is_given() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let mine = cp.namespace(&admin, "scope-a").await;
    let also = cp.namespace(&admin, "scope-b").await;
    let other = cp.namespace(&admin, "scope-c").await;
    let offset = cp.audit_len();
    let locator = StaticLocator::default();
    let sa = cp.service_account_client(OPERATOR_NS, OPERATOR_SA).await;
    let operator = Operator::start_with(
        sa,
        &locator,
        &format!("lease-{mine}"),
        "replica-a",
        vec![mine.clone(), also.clone()],
        OPERATOR_NS,
    );
    for ns in [&mine, &also, &other] {
        Api::<ClusterSync>::namespaced(admin.clone(), ns)
            .create(&PostParams::default(), &cluster_sync(ns, "scoped", "Idle"))
            .await
            .unwrap();
    }
    for ns in [&mine, &also] {
        let api = Api::<ClusterSync>::namespaced(admin.clone(), ns);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let cs = api.get("scoped").await.unwrap();
            if cs
                .status
                .as_ref()
                .is_some_and(|s| cond_is(s, "CredentialsResolved", "False"))
            {
                assert!(cs.metadata.finalizers.is_some());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the ClusterSync in {ns} is reconciled"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outside = Api::<ClusterSync>::namespaced(admin.clone(), &other)
        .get("scoped")
        .await
        .unwrap();
    assert!(
        outside.status.is_none() && outside.metadata.finalizers.is_none(),
        "a namespace it does not watch is left alone"
    );
    let there: Vec<String> = cp
        .audit_since(offset)
        .into_iter()
        .filter(|e| e["user"]["username"] == SA_USER)
        .filter_map(|e| e["requestURI"].as_str().map(str::to_string))
        .filter(|uri| uri.contains(&format!("/namespaces/{other}/")))
        .collect();
    assert!(
        there.is_empty(),
        "the operator read a namespace it was not given: {there:#?}"
    );
    operator.stop().await;
}

/// A spec that cannot work, though the schema lets it through (a reversible sync that never
/// builds indexes), is reported with no engine; reconciling paused by annotation is reported
/// and nothing else is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_that_cannot_work_and_a_paused_reconcile_are_reported() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "spec").await;
    let locator = StaticLocator::default();
    let operator = Operator::as_service_account(cp, &locator, &ns, "replica-a").await;
    let syncs: Api<ClusterSync> = Api::namespaced(admin.clone(), &ns);
    let mut cs = cluster_sync(&ns, "bad", "Running");
    cs.spec.reversible = true;
    cs.spec.build_indexes = Some(clustersync::contract::options::BuildIndexes::Never);
    syncs.create(&PostParams::default(), &cs).await.unwrap();
    let mut held = cluster_sync(&ns, "held", "Running");
    held.metadata.annotations =
        Some([("clustersync.io/reconcile".to_string(), "false".to_string())].into());
    syncs.create(&PostParams::default(), &held).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = |cs: &ClusterSync| {
        cs.status
            .as_ref()
            .and_then(|s| condition(s, "Ready"))
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let (bad, held) = loop {
        let (bad, held) = (
            syncs.get("bad").await.unwrap(),
            syncs.get("held").await.unwrap(),
        );
        if reason(&bad).is_some() && reason(&held).is_some() {
            break (bad, held);
        }
        assert!(Instant::now() < deadline, "both are reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (status, why, message) = reason(&bad).unwrap();
    assert_eq!((status.as_str(), why.as_str()), ("False", "InvalidSpec"));
    assert!(message.contains("never"), "{message}");
    wait_event(&admin, &ns, "InvalidSpec").await;
    let (status, why, _) = reason(&held).unwrap();
    assert_eq!(
        (status.as_str(), why.as_str()),
        ("False", "ReconcilePaused")
    );
    assert!(
        condition(held.status.as_ref().unwrap(), "CredentialsResolved").is_none(),
        "nothing was looked at"
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    for name in ["bad-engine", "held-engine"] {
        assert!(deployments.get_opt(name).await.unwrap().is_none(), "{name}");
    }
    operator.stop().await;
}
