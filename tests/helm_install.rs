//! Helm for real: both charts installed into a real control plane (its own, so that the CRD
//! belongs to the Helm release), an upgrade with non-default values, and uninstalls that
//! leave the CRD and the users' ClusterSyncs in place. `tests/helm.rs` covers `helm lint`
//! and `helm template`. Before the CRD chart is installed, an operator started early stays alive
//! and unready instead of crash-looping, and becomes ready once the CRD is there.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clustersync::operator::controller::Settings;
use clustersync::operator::crd::ClusterSync;
use clustersync::operator::engine_api::StaticLocator;
use clustersync::operator::RunOptions;
use common::k8s::ControlPlane;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_charts_install_upgrade_and_uninstall_leaving_the_crd_and_syncs() {
    let cp = tokio::task::spawn_blocking(ControlPlane::shared)
        .await
        .unwrap();
    let admin = cp.admin().await;

    // An operator installed before its CRD (as a GitOps tool may apply them in any order).
    let telemetry = common::free_port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let early = tokio::spawn(clustersync::operator::run(
        admin.clone(),
        Settings::new(
            "ghcr.io/clustersync/clustersync:test".into(),
            Arc::new(StaticLocator::default()),
        ),
        RunOptions {
            namespaces: vec![],
            telemetry_bind: Some(([127, 0, 0, 1], telemetry).into()),
            lease: None,
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let probe = |path: &'static str| async move {
        match reqwest::get(format!("http://127.0.0.1:{telemetry}{path}")).await {
            Ok(r) => Some(r.status().as_u16()),
            Err(_) => None,
        }
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while probe("/healthz").await != Some(200) {
        assert!(Instant::now() < deadline, "the early operator is alive");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        probe("/readyz").await,
        Some(503),
        "not ready without its CRD"
    );
    assert!(!early.is_finished(), "still running, not crash-looping");

    cp.helm_ok(&[
        "install",
        "clustersync-crds",
        "charts/clustersync-crds",
        "--wait",
    ]);
    cp.kubectl_ok(&[
        "wait",
        "--for",
        "condition=Established",
        "--timeout",
        "60s",
        "crd/clustersyncs.clustersync.io",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while probe("/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "ready once the CRD is installed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), early)
        .await
        .expect("the early operator stops within 20 s")
        .expect("no panic")
        .expect("it stops cleanly");
    cp.helm_ok(&[
        "install",
        "clustersync-operator",
        "charts/clustersync-operator",
        "--namespace",
        "clustersync-system",
        "--create-namespace",
    ]);
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "clustersync-system");
    let dep = deployments
        .get("clustersync-operator")
        .await
        .expect("the operator's Deployment");
    assert_eq!(dep.spec.replicas, Some(1));
    assert!(Api::<ClusterRole>::all(admin.clone())
        .get_opt("clustersync-operator")
        .await
        .unwrap()
        .is_some());
    // The chart's ServiceAccount may do what the operator needs (checked by the API server's
    // authorizer, not by reading the templates).
    let sa = "system:serviceaccount:clustersync-system:clustersync-operator";
    for (verb, what, allowed) in [
        ("patch", "clustersyncs.clustersync.io/status", true),
        ("create", "deployments.apps", true),
        ("watch", "pods", true),
        ("get", "secrets", true),
        ("list", "secrets", false),
        ("delete", "namespaces", false),
    ] {
        let out = cp.kubectl(&["auth", "can-i", verb, what, "-n", "apps", "--as", sa]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim() == "yes",
            allowed,
            "{verb} {what}"
        );
    }

    // A user's ClusterSync.
    let _ = cp.kubectl(&["create", "namespace", "apps"]);
    let syncs: Api<ClusterSync> = Api::namespaced(admin.clone(), "apps");
    let cs: ClusterSync = serde_json::from_value(json!({
        "apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
        "metadata": { "name": "orders", "namespace": "apps" },
        "spec": { "source": { "name": "a" }, "destination": { "name": "b" } }
    }))
    .unwrap();
    syncs.create(&PostParams::default(), &cs).await.unwrap();

    // Upgrade with non-default values: two replicas with leader election.
    cp.helm_ok(&[
        "upgrade",
        "clustersync-operator",
        "charts/clustersync-operator",
        "--namespace",
        "clustersync-system",
        "--set",
        "replicaCount=2",
        "--set",
        "pollSeconds=20",
    ]);
    let dep = deployments.get("clustersync-operator").await.unwrap();
    assert_eq!(dep.spec.replicas, Some(2));
    let history = cp.helm_ok(&[
        "history",
        "clustersync-operator",
        "-n",
        "clustersync-system",
    ]);
    assert!(history.lines().count() >= 3, "two revisions: {history}");

    // Uninstalling the operator removes it; uninstalling the CRD chart keeps the CRD, and so
    // every ClusterSync.
    cp.helm_ok(&[
        "uninstall",
        "clustersync-operator",
        "-n",
        "clustersync-system",
        "--wait",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while deployments
        .get_opt("clustersync-operator")
        .await
        .unwrap()
        .is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the operator's Deployment is removed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = cp.helm_ok(&["uninstall", "clustersync-crds"]);
    assert!(
        out.contains("kept due to the resource policy") || out.contains("uninstalled"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        Api::<CustomResourceDefinition>::all(admin.clone())
            .get_opt("clustersyncs.clustersync.io")
            .await
            .unwrap()
            .is_some(),
        "helm uninstall keeps the CRD"
    );
    assert!(
        syncs.get_opt("orders").await.unwrap().is_some(),
        "and with it the users' ClusterSyncs"
    );
}
