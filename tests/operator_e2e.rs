//! The operator end to end: the real `kube_runtime::Controller` (via `operator::run`) against
//! the in-memory API server, a stand-in kubelet running the engine binary the Deployment
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
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
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

/// IDLE → RUNNING (with copy progress in status) → operator restarted mid-sync (no second
/// engine) → engine container killed mid-sync (resumes) → COMMITTED, data equal → deleted,
/// everything the operator created removed, the data left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sync_runs_from_idle_to_committed_and_is_cleaned_up() {
    let source = Server::start().await;
    let destination = Server::start().await;
    let src = source.client().await;
    let dst = destination.client().await;
    common::seed_full_dataset(&src).await.expect("seed");
    // Enough bytes that the copy takes a few of the controller's polls.
    let filler = "x".repeat(2000);
    for chunk in 0..20 {
        src.database("bulk")
            .collection::<bson::Document>("docs")
            .insert_many((0..1000).map(|i| doc! { "_id": chunk * 1000 + i, "pad": &filler }))
            .await
            .unwrap();
    }

    let (fake, client) = FakeApiServer::new();
    let locator = StaticLocator::default();
    let kubelet = FakeKubelet::start(fake.clone(), locator.clone());
    let operator = Operator::start(client.clone(), &locator, "replica-a");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let syncs: Api<ClusterSync> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    secrets
        .create(&pp, &uri_secret("move-source", &source.uri()))
        .await
        .unwrap();
    secrets
        .create(&pp, &uri_secret("move-destination", &destination.uri()))
        .await
        .unwrap();
    syncs
        .create(&pp, &cluster_sync("move", "Idle"))
        .await
        .unwrap();

    // IDLE: engine running, credentials and roles checked, nothing started.
    let st = wait_status(
        &fake,
        &kubelet,
        "move",
        "IDLE and Ready",
        Duration::from_secs(60),
        |s| s.state.as_deref() == Some("IDLE") && cond_is(s, "Ready", "True"),
    )
    .await;
    assert!(cond_is(&st, "CredentialsResolved", "True"));
    assert!(cond_is(&st, "RolesVerified", "True"));
    assert!(cond_is(&st, "EngineAvailable", "True"));
    assert_eq!(condition(&st, "InSync").unwrap().reason, "NotStarted");
    assert_eq!(st.engine_workload.as_deref(), Some("move-engine"));
    assert_eq!(st.observed_generation, Some(1));
    let cs = fake.get_resource::<ClusterSync>(NS, "move").unwrap();
    assert!(cs
        .metadata
        .finalizers
        .unwrap_or_default()
        .contains(&"clustersync.io/engine-cleanup".to_string()));
    assert_eq!(
        serde_json::to_value(&cs.spec).unwrap(),
        serde_json::to_value(cluster_sync("move", "Idle").spec).unwrap(),
        "the controller never writes the spec"
    );
    let dep = fake
        .get_resource::<Deployment>(NS, "move-engine")
        .expect("engine Deployment");
    let pod = dep.spec.template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("ghcr.io/clustersync/clustersync:test")
    );
    // Engine settings the ClusterSync leaves unset come from the operator's defaults.
    assert_eq!(pod.priority_class_name.as_deref(), Some("migrations"));
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "sync");
    let args = pod.containers[0].args.clone().unwrap().join(" ");
    assert!(
        args.contains("--loadLevel 2"),
        "the ClusterSync's own loadLevel wins: {args}"
    );
    assert!(fake.get_resource::<Service>(NS, "move-engine").is_some());
    assert!(fake
        .get_resource::<NetworkPolicy>(NS, "move-engine")
        .is_some());
    assert!(fake
        .get_resource::<Secret>(NS, "move-engine-token")
        .is_some());
    assert_eq!(kubelet.starts(NS, "move-engine"), 1);
    assert!(
        common::compare::user_databases(&dst)
            .await
            .unwrap()
            .is_empty(),
        "Idle copies nothing"
    );

    // The telemetry endpoints answer.
    assert_eq!(operator.get("/healthz").await.0, 200);
    assert_eq!(operator.get("/readyz").await.0, 200);
    let (_, metrics) = operator.get("/metrics").await;
    assert!(
        metrics.contains("clustersync_operator_syncs{state=\"IDLE\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("clustersync_operator_leader 1"),
        "{metrics}"
    );

    // RUNNING: copy progress shows in status while the engine copies.
    set_mode(&syncs, "move", "Running").await;
    let st = wait_status(
        &fake,
        &kubelet,
        "move",
        "RUNNING with copy progress",
        Duration::from_secs(60),
        |s| {
            s.state.as_deref() == Some("RUNNING")
                && s.total_bytes.unwrap_or(0) > 0
                && s.copied_percent.is_some()
        },
    )
    .await;
    println!(
        "first progress seen: {:?} of {:?} bytes ({:?}), InSync {:?}",
        st.copied_bytes,
        st.total_bytes,
        st.copied_percent,
        condition(&st, "InSync").map(|c| &c.reason)
    );
    wait_event(&fake, "Started").await;

    // Writes during the sync.
    src.database("live")
        .collection::<bson::Document>("orders")
        .insert_many((0..200).map(|i| doc! { "_id": i, "v": i }))
        .await
        .unwrap();

    // The operator restarted mid-sync: the same engine goes on, nothing is started twice.
    let pid = kubelet.pid(NS, "move-engine");
    let rv = fake
        .get_resource::<Deployment>(NS, "move-engine")
        .unwrap()
        .metadata
        .resource_version;
    operator.stop().await;
    let operator = Operator::start(client.clone(), &locator, "replica-b");
    let st = wait_status(
        &fake,
        &kubelet,
        "move",
        "caught up after the operator restart",
        Duration::from_secs(120),
        |s| s.state.as_deref() == Some("RUNNING") && s.can_commit && cond_is(s, "InSync", "True"),
    )
    .await;
    assert_eq!(kubelet.starts(NS, "move-engine"), 1, "no second engine");
    assert_eq!(
        kubelet.pid(NS, "move-engine"),
        pid,
        "the same engine process"
    );
    assert_eq!(
        fake.get_resource::<Deployment>(NS, "move-engine")
            .unwrap()
            .metadata
            .resource_version,
        rv,
        "re-applying the same Deployment changed nothing"
    );
    assert!(st.lag_seconds.is_some());
    assert_eq!(st.copied_percent.as_deref(), Some("100%"));

    // The engine's container killed mid-sync: restarted, it resumes from the destination.
    kubelet.kill(NS, "move-engine", Duration::from_secs(3));
    src.database("live")
        .collection::<bson::Document>("orders")
        .insert_many((200..400).map(|i| doc! { "_id": i, "v": i }))
        .await
        .unwrap();
    // While it is down, status says so.
    let st = wait_status(
        &fake,
        &kubelet,
        "move",
        "EngineAvailable=False",
        Duration::from_secs(10),
        |s| cond_is(s, "EngineAvailable", "False"),
    )
    .await;
    let down = condition(&st, "EngineAvailable").unwrap();
    assert_eq!(down.reason, "EngineNotReady");
    assert!(down.message.contains("move-engine"), "{}", down.message);
    assert!(cond_is(&st, "Ready", "False"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while kubelet.starts(NS, "move-engine") < 2 {
        assert!(Instant::now() < deadline, "the kubelet restarts the engine");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = wait_status(
        &fake,
        &kubelet,
        "move",
        "RUNNING and caught up after the engine restart",
        Duration::from_secs(120),
        |s| {
            s.state.as_deref() == Some("RUNNING")
                && s.can_commit
                && cond_is(s, "EngineAvailable", "True")
        },
    )
    .await;

    // A document changed behind the engine's back on the destination: Verified turns False
    // with the document named, a Warning Event says so, and the commit is held back; once it
    // is repaired, Verified is True again.
    assert!(cond_is(&st, "Verified", "True"), "{:?}", st.conditions);
    let tampered = dst.database("bulk").collection::<bson::Document>("docs");
    tampered
        .update_one(doc! { "_id": 7 }, doc! { "$set": { "pad": "tampered" } })
        .await
        .unwrap();
    let st = wait_status(
        &fake,
        &kubelet,
        "move",
        "Verified=False (Mismatch)",
        Duration::from_secs(120),
        |s| condition(s, "Verified").is_some_and(|c| c.reason == "Mismatch"),
    )
    .await;
    let msg = &condition(&st, "Verified").unwrap().message;
    assert!(msg.contains("bulk.docs: _id 7 different content"), "{msg}");
    assert!(!st.can_commit, "the verifier holds the commit back");
    wait_event(&fake, "VerificationMismatch").await;
    let original = src
        .database("bulk")
        .collection::<bson::Document>("docs")
        .find_one(doc! { "_id": 7 })
        .await
        .unwrap()
        .unwrap();
    tampered
        .replace_one(doc! { "_id": 7 }, original)
        .await
        .unwrap();
    wait_status(
        &fake,
        &kubelet,
        "move",
        "Verified=True again after the repair",
        Duration::from_secs(120),
        |s| s.can_commit && cond_is(s, "Verified", "True"),
    )
    .await;

    // COMMITTED.
    set_mode(&syncs, "move", "Committed").await;
    let st = wait_status(
        &fake,
        &kubelet,
        "move",
        "COMMITTED",
        Duration::from_secs(120),
        |s| {
            s.state.as_deref() == Some("COMMITTED")
                && s.can_write
                && cond_is(s, "Committed", "True")
        },
    )
    .await;
    assert!(cond_is(&st, "Ready", "True"), "{:?}", st.conditions);
    // The embedded verifier (on by default) compared both clusters at commit.
    assert!(cond_is(&st, "Verified", "True"), "{:?}", st.conditions);
    assert!(
        st.verification
            .as_ref()
            .is_some_and(|v| v.verified && v.mismatch_count == 0),
        "{:?}",
        st.verification
    );
    wait_event(&fake, "Verified").await;
    common::assert_clusters_equal(&src, &dst).await;
    assert!(
        st.total_bytes.unwrap_or(0) > 1_000_000 && st.copied_bytes == st.total_bytes,
        "the copy's size is in status: {:?} of {:?}",
        st.copied_bytes,
        st.total_bytes
    );

    // Every status the controller wrote, from the API server's watch history: the copy's
    // progress was visible while it ran.
    let history: Vec<(String, Option<String>)> = fake
        .events()
        .iter()
        .filter(|e| e.plural == "clustersyncs")
        .filter_map(|e| {
            let s = &e.object["status"];
            Some((
                s["state"].as_str()?.to_string(),
                s["copiedPercent"].as_str().map(String::from),
            ))
        })
        .collect();
    history
        .iter()
        .for_each(|h| println!("status history: {h:?}"));
    // As `kubectl get clustersync` prints the printer columns (for the README).
    println!(
        "{:<8}{:<12}{:<6}{:<9}CANCOMMIT",
        "NAME", "STATE", "LAG", "COPIED"
    );
    for e in fake.events().iter().filter(|e| e.plural == "clustersyncs") {
        let s = &e.object["status"];
        if let Some(state) = s["state"].as_str() {
            println!(
                "{:<8}{:<12}{:<6}{:<9}{}",
                "move",
                state,
                s["lagSeconds"]
                    .as_i64()
                    .map(|l| l.to_string())
                    .unwrap_or_default(),
                s["copiedPercent"].as_str().unwrap_or(""),
                s["canCommit"].as_bool().unwrap_or(false)
            );
        }
    }
    assert!(
        history.iter().any(|(state, pct)| state == "RUNNING"
            && pct.as_deref().is_some_and(|p| p != "100%" && p != "0%")),
        "copy progress below 100% was shown while RUNNING: {history:?}"
    );
    for want in ["Started", "CommitRequested", "StateChanged"] {
        wait_event(&fake, want).await;
    }
    let (_, metrics) = operator.get("/metrics").await;
    assert!(
        metrics.contains("clustersync_operator_syncs{state=\"COMMITTED\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("clustersync_operator_engine_calls_total{verb=\"commit\",outcome=\"ok\"} 1"),
        "{metrics}"
    );

    // Connection strings never reach status or Events.
    let status_text = serde_json::to_string(&st).unwrap();
    let events_text = serde_json::to_string(&fake.list_resources::<Event>(Some(NS))).unwrap();
    for text in [&status_text, &events_text] {
        assert!(
            !text.contains("mongodb://"),
            "a connection string leaked: {text}"
        );
    }

    // Deleted: the engine stops, what the operator created goes, the data stays.
    syncs
        .delete("move", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.get_resource::<ClusterSync>(NS, "move").is_some() {
        assert!(Instant::now() < deadline, "the finalizer is removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fake.get_resource::<Deployment>(NS, "move-engine").is_none());
    assert!(fake.get_resource::<Service>(NS, "move-engine").is_none());
    assert!(fake
        .get_resource::<NetworkPolicy>(NS, "move-engine")
        .is_none());
    assert!(fake
        .get_resource::<Secret>(NS, "move-engine-token")
        .is_none());
    assert!(
        fake.get_resource::<Secret>(NS, "move-source").is_some(),
        "the user's Secrets stay"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !kubelet.running().is_empty() {
        assert!(Instant::now() < deadline, "the engine process stops");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::assert_clusters_equal(&src, &dst).await;
    wait_event(&fake, "EngineRemoved").await;
    operator.stop().await;
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

/// Two replicas: only one holds the Lease; the other takes over when it is released, or when
/// the holder stops renewing for a whole lease duration.
/// `mode` and `reversals` drive the engine through pause, resume, commit and a reversal: the
/// writes made on the destination after the cut-over come back to the original source.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_resume_commit_and_reverse_through_the_spec() {
    let a = Server::start().await;
    let b = Server::start().await;
    let (ca, cb) = (a.client().await, b.client().await);
    let docs = ca.database("app").collection::<bson::Document>("items");
    docs.insert_many((0..500).map(|i| doc! { "_id": i, "n": i }))
        .await
        .unwrap();

    let (fake, client) = FakeApiServer::new();
    let locator = StaticLocator::default();
    let kubelet = FakeKubelet::start(fake.clone(), locator.clone());
    let operator = Operator::start(client.clone(), &locator, "replica-a");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let syncs: Api<ClusterSync> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    secrets
        .create(&pp, &uri_secret("rev-source", &a.uri()))
        .await
        .unwrap();
    secrets
        .create(&pp, &uri_secret("rev-destination", &b.uri()))
        .await
        .unwrap();
    let mut cs = cluster_sync("rev", "Running");
    cs.spec.reversible = true;
    syncs.create(&pp, &cs).await.unwrap();
    let long = Duration::from_secs(90);
    wait_status(&fake, &kubelet, "rev", "caught up", long, |s| s.can_commit).await;

    set_mode(&syncs, "rev", "Paused").await;
    wait_status(&fake, &kubelet, "rev", "PAUSED", long, |s| {
        s.state.as_deref() == Some("PAUSED")
            && condition(s, "InSync").is_some_and(|c| c.reason == "Paused")
    })
    .await;
    docs.insert_one(doc! { "_id": "while-paused" })
        .await
        .unwrap();
    // Committed from PAUSED: resumed first, then committed once caught up.
    set_mode(&syncs, "rev", "Committed").await;
    wait_status(&fake, &kubelet, "rev", "COMMITTED", long, |s| {
        s.state.as_deref() == Some("COMMITTED") && s.can_write
    })
    .await;
    wait_event(&fake, "Resumed").await;
    common::assert_clusters_equal(&ca, &cb).await;

    // Applications write to the new cluster; then the user asks for one reversal.
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
    // mode is still Committed, so the reversed sync is committed too.
    let st = wait_status(
        &fake,
        &kubelet,
        "rev",
        "reversed and committed",
        long,
        |s| s.reversals_done == 1 && s.state.as_deref() == Some("COMMITTED") && s.can_write,
    )
    .await;
    assert!(cond_is(&st, "Ready", "True"), "{:?}", st.conditions);
    wait_event(&fake, "Reversed").await;
    let back = ca
        .database("app")
        .collection::<bson::Document>("items")
        .find_one(doc! { "_id": "written-on-b" })
        .await
        .unwrap();
    assert!(back.is_some(), "the reversal brought b's writes back to a");
    common::assert_clusters_equal(&ca, &cb).await;
    // No second reversal without a second request.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let st = fake
        .get_resource::<ClusterSync>(NS, "rev")
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        (st.reversals_done, st.state.as_deref()),
        (1, Some("COMMITTED"))
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
