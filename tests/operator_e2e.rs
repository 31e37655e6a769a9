//! The operator against the in-memory API server, for what the real control plane
//! (`tests/operator_k8s.rs`) does not do on demand: a CRD that answers 404 until installed,
//! and the role preflight against authenticated test servers. The real `kube_runtime::Controller`
//! (via `operator::run`) runs against the in-memory API server, a stand-in kubelet running the engine binary the Deployment
//! names, and two real SecantusDB servers.
//!
//! What this cannot exercise: a real API server's admission (the CRD's CEL rules, schema
//! defaulting, stringData → data), owner-reference garbage collection (the finalizer deletes
//! explicitly, so none is needed), real pod networking, probes and image pulls.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::doc;
use clustersync::operator::controller::Settings;
use clustersync::operator::crd::{ClusterSync, ClusterSyncStatus};
use clustersync::operator::engine_api::StaticLocator;
use clustersync::operator::leader::LeaseConfig;
use clustersync::operator::RunOptions;
use common::kube_fake::FakeApiServer;
use common::kubelet::FakeKubelet;
use common::Server;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::oneshot;

const NS: &str = "shop";

/// A running operator (in this process) and how to stop it.
struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), clustersync::operator::RunError>>,
    telemetry: u16,
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,clustersync=info".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Operator {
    fn start(client: kube::Client, locator: &StaticLocator, identity: &str) -> Operator {
        Self::start_in(client, locator, identity, vec![])
    }

    /// An operator that watches `namespaces` only (all when empty).
    fn start_in(
        client: kube::Client,
        locator: &StaticLocator,
        identity: &str,
        namespaces: Vec<String>,
    ) -> Operator {
        init_logs();
        let mut settings = Settings::new(
            "ghcr.io/clustersync/clustersync:test".into(),
            Arc::new(locator.clone()),
        );
        settings.poll = Duration::from_millis(700);
        settings.preflight_retry = Duration::from_secs(2);
        settings.preflight_timeout = Duration::from_secs(20);
        settings.operator_namespace = Some("clustersync-system".into());
        settings.engine_defaults = serde_json::from_value(json!({
            "loadLevel": 1, "priorityClassName": "migrations", "nodeSelector": { "pool": "sync" }
        }))
        .unwrap();
        let telemetry = common::free_port();
        let mut lease = LeaseConfig::new(
            "clustersync-system".into(),
            "clustersync-operator".into(),
            identity.into(),
        );
        lease.lease_duration = Duration::from_secs(4);
        lease.renew_deadline = Duration::from_secs(3);
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

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let r = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the operator stops within 20 s")
            .expect("the operator task does not panic");
        r.expect("the operator stops cleanly");
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::get(format!("http://127.0.0.1:{}{path}", self.telemetry))
            .await
            .expect("telemetry answers");
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn uri_secret(name: &str, uri: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": name, "namespace": NS },
        // `data`, as the API server stores it (it turns stringData into data).
        "data": { "uri": k8s_openapi::ByteString(uri.as_bytes().to_vec()) },
    }))
    .unwrap()
}

fn cluster_sync(name: &str, mode: &str) -> ClusterSync {
    serde_json::from_value(json!({
        "apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
        "metadata": { "name": name, "namespace": NS },
        "spec": {
            "source": { "name": format!("{name}-source") },
            "destination": { "name": format!("{name}-destination") },
            "mode": mode,
            "engine": { "loadLevel": 2 }
        }
    }))
    .unwrap()
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

/// Waits until the ClusterSync's status satisfies `pred`; on timeout, panics with the status
/// and the engine's log.
async fn wait_status(
    fake: &FakeApiServer,
    kubelet: &FakeKubelet,
    name: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&ClusterSyncStatus) -> bool,
) -> ClusterSyncStatus {
    let found = fake
        .wait_for::<ClusterSync, _>(NS, name, timeout, |cs| {
            cs.status.as_ref().is_some_and(&pred)
        })
        .await;
    match found {
        Some(cs) => cs.status.unwrap(),
        None => {
            let now = fake.get_resource::<ClusterSync>(NS, name);
            panic!(
                "timed out waiting for {what}; status: {}\nengine log (tail):\n{}",
                serde_json::to_string_pretty(&now.map(|c| c.status)).unwrap(),
                tail(&kubelet.log(NS, &format!("{name}-engine")), 40)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits for an Event with `reason` (Events are recorded just after the status they explain).
async fn wait_event(fake: &FakeApiServer, reason: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !event_reasons(fake).iter().any(|r| r == reason) {
        assert!(
            Instant::now() < deadline,
            "no {reason} Event in {:?}",
            event_reasons(fake)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn event_reasons(fake: &FakeApiServer) -> Vec<String> {
    fake.list_resources::<Event>(Some(NS))
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

const PW: &str = "0perator-Pa55word";

/// A `--auth` server with `root_user`, `sync_user` holding `roles` and `full_user` holding
/// `full` (plus the custom role that stands in for `clusterManager`, which the test server
/// lacks).
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
    let roles: Vec<bson::Document> = roles
        .iter()
        .map(|r| doc! { "role": *r, "db": "admin" })
        .collect();
    admin
        .run_command(doc! { "createUser": "sync_user", "pwd": PW, "roles": roles })
        .await
        .unwrap();
    let full: Vec<bson::Document> = full
        .iter()
        .map(|r| doc! { "role": *r, "db": "admin" })
        .collect();
    admin
        .run_command(doc! { "createUser": "full_user", "pwd": PW, "roles": full })
        .await
        .unwrap();
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

/// A missing Secret is named in a condition and the sync proceeds once it appears (the Secret
/// watch, not a timer, brings it); a bad connection string is named without its password; a
/// user without the roles gives RolesVerified=False naming them, and nothing starts until
/// they are granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credentials_and_roles_gate_the_start() {
    use clustersync::preflight::roles::{required, Deployment as Kind, Side, SyncKind};
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

    let (fake, client) = FakeApiServer::new();
    let locator = StaticLocator::default();
    let kubelet = FakeKubelet::start(fake.clone(), locator.clone());
    let operator = Operator::start(client.clone(), &locator, "replica-a");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let syncs: Api<ClusterSync> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();

    // No Secrets yet.
    syncs
        .create(&pp, &cluster_sync("gated", "Running"))
        .await
        .unwrap();
    let st = wait_status(
        &fake,
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
        c.message.contains("shop/gated-source") && c.message.contains("\"uri\""),
        "{}",
        c.message
    );
    assert!(cond_is(&st, "Ready", "False"));
    assert!(
        fake.get_resource::<Deployment>(NS, "gated-engine")
            .is_none(),
        "no engine without credentials"
    );
    wait_event(&fake, "SecretNotFound").await;

    // The Secrets appear, the destination's with a connection string the engine refuses.
    secrets
        .create(
            &pp,
            &uri_secret("gated-source", &auth_uri(&source, "sync_user")),
        )
        .await
        .unwrap();
    let bad = format!(
        "{}&readPreference=secondary",
        auth_uri(&destination, "sync_user")
    );
    secrets
        .create(&pp, &uri_secret("gated-destination", &bad))
        .await
        .unwrap();
    let st = wait_status(
        &fake,
        &kubelet,
        "gated",
        "InvalidConnectionString",
        Duration::from_secs(10),
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
    secrets
        .replace(
            "gated-destination",
            &pp,
            &uri_secret("gated-destination", &auth_uri(&destination, "sync_user")),
        )
        .await
        .unwrap();
    let st = wait_status(
        &fake,
        &kubelet,
        "gated",
        "RolesVerified=False",
        Duration::from_secs(60),
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
    assert!(
        kubelet.pid(NS, "gated-engine").is_some(),
        "the engine runs, idle"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = fake
        .get_resource::<ClusterSync>(NS, "gated")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        st.state.as_deref(),
        Some("IDLE"),
        "nothing starts without the roles"
    );

    // The Secret now names a user with every role: the engine's pod is replaced so that it
    // connects as that user, the preflight passes and the sync starts. (Granting the role to
    // the same user would do on MongoDB, which refreshes the privileges of open connections;
    // the test server keeps those a connection authenticated with.)
    assert_eq!(kubelet.starts(NS, "gated-engine"), 1);
    secrets
        .replace(
            "gated-destination",
            &pp,
            &uri_secret("gated-destination", &auth_uri(&destination, "full_user")),
        )
        .await
        .unwrap();
    let st = wait_status(
        &fake,
        &kubelet,
        "gated",
        "RUNNING as the user with the roles",
        Duration::from_secs(60),
        |s| s.state.as_deref() == Some("RUNNING"),
    )
    .await;
    assert_eq!(
        kubelet.starts(NS, "gated-engine"),
        2,
        "the pod was replaced once, for the new Secret"
    );
    assert!(cond_is(&st, "RolesVerified", "True"));
    assert!(
        kubelet.log(NS, "gated-engine").find(PW).is_none(),
        "the engine's log has no password"
    );
    operator.stop().await;
}

/// Installed before its CRD, the operator stays alive and unready instead of crash-looping,
/// and starts once the CRD is there; a spec that cannot work is reported, with no engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_its_crd_and_reports_a_spec_that_cannot_work() {
    let (fake, client) = FakeApiServer::new();
    let prefix = "apis/clustersync.io/v1alpha1";
    fake.set_missing(prefix, "clustersyncs", true);
    let locator = StaticLocator::default();
    let operator = Operator::start(client.clone(), &locator, "replica-a");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(operator.get("/healthz").await.0, 200, "alive");
    let (code, body) = operator.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(!operator.task.is_finished(), "still running");

    fake.set_missing(prefix, "clustersyncs", false);
    let deadline = Instant::now() + Duration::from_secs(15);
    while operator.get("/readyz").await.0 != 200 {
        assert!(Instant::now() < deadline, "ready once the CRD is installed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let syncs: Api<ClusterSync> = Api::namespaced(client.clone(), NS);
    let mut cs = cluster_sync("bad", "Running");
    cs.spec.reversible = true;
    cs.spec.build_indexes = Some(clustersync::engine::options::BuildIndexes::Never);
    syncs.create(&PostParams::default(), &cs).await.unwrap();
    let st = fake
        .wait_for::<ClusterSync, _>(NS, "bad", Duration::from_secs(20), |c| {
            c.status
                .as_ref()
                .is_some_and(|s| condition(s, "Ready").is_some_and(|r| r.reason == "InvalidSpec"))
        })
        .await
        .expect("Ready=False, InvalidSpec")
        .status
        .unwrap();
    let ready = condition(&st, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(ready.message.contains("never"), "{}", ready.message);
    wait_event(&fake, "InvalidSpec").await;
    assert!(fake.get_resource::<Deployment>(NS, "bad-engine").is_none());

    // Reconciling can be paused by annotation: reported, nothing else done.
    let mut held = cluster_sync("held", "Running");
    held.metadata.annotations =
        Some([("clustersync.io/reconcile".to_string(), "false".to_string())].into());
    syncs.create(&PostParams::default(), &held).await.unwrap();
    let st = fake
        .wait_for::<ClusterSync, _>(NS, "held", Duration::from_secs(20), |c| {
            c.status.as_ref().is_some_and(|s| {
                condition(s, "Ready").is_some_and(|r| r.reason == "ReconcilePaused")
            })
        })
        .await
        .expect("Ready=False, ReconcilePaused")
        .status
        .unwrap();
    assert!(
        condition(&st, "CredentialsResolved").is_none(),
        "nothing was looked at"
    );
    assert!(fake.get_resource::<Deployment>(NS, "held-engine").is_none());
    operator.stop().await;
}

/// A sync that stops for good inside the engine (here: its resume point rolled off a tiny
/// source oplog while paused) is Ready=False with the engine's reason, as an Event too, and
/// `mode: Committed` does not commit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_that_stops_in_the_engine_is_reported() {
    let (a, b) = tokio::join!(
        Server::start_with_args(&["--oplog-max-entries", "50"]),
        Server::start()
    );
    let src = a.client().await;
    let coll = src.database("app").collection::<bson::Document>("c");
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();

    let (fake, client) = FakeApiServer::new();
    let locator = StaticLocator::default();
    let kubelet = FakeKubelet::start(fake.clone(), locator.clone());
    let operator = Operator::start(client.clone(), &locator, "replica-a");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let syncs: Api<ClusterSync> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    secrets
        .create(&pp, &uri_secret("lost-source", &a.uri()))
        .await
        .unwrap();
    secrets
        .create(&pp, &uri_secret("lost-destination", &b.uri()))
        .await
        .unwrap();
    syncs
        .create(&pp, &cluster_sync("lost", "Running"))
        .await
        .unwrap();
    let long = Duration::from_secs(60);
    wait_status(&fake, &kubelet, "lost", "caught up", long, |s| s.can_commit).await;
    set_mode(&syncs, "lost", "Paused").await;
    wait_status(&fake, &kubelet, "lost", "PAUSED", long, |s| {
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
        &fake,
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
    wait_event(&fake, "SyncStopped").await;
    set_mode(&syncs, "lost", "Committed").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = fake
        .get_resource::<ClusterSync>(NS, "lost")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state.as_deref(), Some("RUNNING"), "not committed");
    assert!(!st.can_commit);
    assert!(
        !event_reasons(&fake).contains(&"CommitRequested".to_string()),
        "no /commit was sent"
    );
    operator.stop().await;
}

/// Scoped to a list of namespaces, the operator manages ClusterSyncs there and leaves every
/// other namespace alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_only_the_namespaces_it_is_given() {
    let (fake, client) = FakeApiServer::new();
    let locator = StaticLocator::default();
    let operator = Operator::start_in(
        client.clone(),
        &locator,
        "replica-a",
        vec![NS.to_string(), "billing".to_string()],
    );
    for ns in [NS, "billing", "elsewhere"] {
        let mut cs = cluster_sync("scoped", "Idle");
        cs.metadata.namespace = Some(ns.to_string());
        Api::<ClusterSync>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &cs)
            .await
            .unwrap();
    }
    for ns in [NS, "billing"] {
        let st = fake
            .wait_for::<ClusterSync, _>(ns, "scoped", Duration::from_secs(20), |c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| cond_is(s, "CredentialsResolved", "False"))
            })
            .await
            .unwrap_or_else(|| panic!("the ClusterSync in {ns} is reconciled"));
        assert!(st.metadata.finalizers.is_some());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outside = fake
        .get_resource::<ClusterSync>("elsewhere", "scoped")
        .unwrap();
    assert!(
        outside.status.is_none() && outside.metadata.finalizers.is_none(),
        "a namespace it does not watch is left alone"
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| r.contains("/namespaces/elsewhere/") && !r.starts_with("POST")),
        "the operator did not even read there (the only request is the test's own create)"
    );
    operator.stop().await;
}
