//! The operator as the tests run it: in the test process, as the ServiceAccount
//! `deploy/install.yaml` creates, on the shared control plane with the CRD and the manifests
//! applied, and a test kubelet running its engine pods (shared by `operator_k8s.rs` and
//! `kubectl_plugin.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clustersync::operator::controller::Settings;
use clustersync::operator::crd::ClusterSync;
use clustersync::operator::engine_api::StaticLocator;
use clustersync::operator::leader::LeaseConfig;
use clustersync::operator::RunOptions;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::{oneshot, Mutex};

use super::k8s::ControlPlane;
use super::kubelet_real::{Kubelet, RUNNABLE_IMAGE};

pub const OPERATOR_NS: &str = "clustersync-system";
pub const OPERATOR_SA: &str = "clustersync-operator";
pub const SA_USER: &str = "system:serviceaccount:clustersync-system:clustersync-operator";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,clustersync=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The shared control plane with the CRD and `deploy/install.yaml` applied (once).
pub async fn installed() -> &'static ControlPlane {
    static ONCE: Mutex<bool> = Mutex::const_new(false);
    let cp = tokio::task::spawn_blocking(ControlPlane::shared)
        .await
        .unwrap();
    let mut done = ONCE.lock().await;
    if !*done {
        cp.apply_crd();
        cp.apply(&root().join("deploy/install.yaml"));
        *done = true;
    }
    cp
}

/// An operator running in this process as the manifests' ServiceAccount.
pub struct Operator {
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), clustersync::operator::RunError>>,
    pub telemetry: u16,
}

impl Operator {
    /// An operator watching the test's namespace `lease` names (`lease-<namespace>`): tests
    /// share the control plane, and each operator must act on its own test's syncs only.
    pub fn start(client: Client, locator: &StaticLocator, lease: &str, identity: &str) -> Operator {
        let ns = lease.strip_prefix("lease-").expect("lease-<namespace>");
        Self::start_with(
            client,
            locator,
            lease,
            identity,
            vec![ns.to_string()],
            OPERATOR_NS,
        )
    }

    pub fn start_with(
        client: Client,
        locator: &StaticLocator,
        lease: &str,
        identity: &str,
        namespaces: Vec<String>,
        lease_ns: &str,
    ) -> Operator {
        init_logs();
        let mut settings = Settings::new(RUNNABLE_IMAGE.into(), Arc::new(locator.clone()));
        settings.poll = Duration::from_millis(1000);
        settings.preflight_retry = Duration::from_secs(2);
        settings.preflight_timeout = Duration::from_secs(20);
        settings.operator_namespace = Some(OPERATOR_NS.into());
        let telemetry = super::free_port();
        let mut lease = LeaseConfig::new(lease_ns.into(), lease.into(), identity.into());
        lease.lease_duration = Duration::from_secs(6);
        lease.renew_deadline = Duration::from_secs(4);
        lease.retry_every = Duration::from_secs(1);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(clustersync::operator::run(
            client,
            settings,
            RunOptions {
                namespaces,
                telemetry_bind: Some(([127, 0, 0, 1], telemetry).into()),
                lease: Some(lease),
            },
            async move {
                let _ = rx.await;
            },
        ));
        Operator {
            stop: Some(tx),
            task,
            telemetry,
        }
    }

    /// An operator for the test namespace `ns`, as the ServiceAccount the manifests create.
    pub async fn as_service_account(
        cp: &ControlPlane,
        locator: &StaticLocator,
        ns: &str,
        identity: &str,
    ) -> Operator {
        let sa = cp.service_account_client(OPERATOR_NS, OPERATOR_SA).await;
        Self::start(sa, locator, &format!("lease-{ns}"), identity)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let r = tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the operator stops within 20 s")
            .expect("the operator task does not panic");
        r.expect("the operator stops cleanly");
    }

    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.telemetry))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// A test kubelet serving engine Pods in `ns`, and where it registers their addresses.
pub async fn serve_engines(admin: &Client, ns: &str) -> (StaticLocator, Kubelet) {
    let locator = StaticLocator::default();
    let kubelet = Kubelet::start(admin.clone(), vec![ns.to_string()], locator.clone()).await;
    (locator, kubelet)
}

/// A Secret holding a connection string under `uri`.
pub fn uri_secret(ns: &str, name: &str, uri: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": ns },
        "stringData": { "uri": uri },
    }))
    .unwrap()
}

/// The two Secrets `cluster_sync(.., name, ..)` names.
pub async fn create_uri_secrets(
    secrets: &Api<Secret>,
    name: &str,
    source: &str,
    destination: &str,
) {
    let ns = secrets.namespace().expect("a namespaced Api").to_string();
    for (side, uri) in [("source", source), ("destination", destination)] {
        secrets
            .create(
                &PostParams::default(),
                &uri_secret(&ns, &format!("{name}-{side}"), uri),
            )
            .await
            .unwrap();
    }
}

pub fn cluster_sync(ns: &str, name: &str, mode: &str) -> ClusterSync {
    serde_json::from_value(json!({
        "apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
        "metadata": { "name": name, "namespace": ns },
        "spec": {
            "source": { "name": format!("{name}-source") },
            "destination": { "name": format!("{name}-destination") },
            "mode": mode,
            "engine": { "loadLevel": 2 }
        }
    }))
    .unwrap()
}
