//! Role checks against servers that enforce authentication: users with mongosync's documented
//! role sets pass, and with each role removed in turn the check names that role, the user and
//! the cluster, for every kind of sync, through the library, `clustersync check` and `/start`.
//!
//! The test server has no `clusterManager` built-in role, so a custom role of that name stands
//! in for it (the check reads role names, as it does on MongoDB).

mod common;

use bson::{doc, Document};
use clustersync::contract::preflight::ProblemKind;
use clustersync::preflight::checks::{self, Intent};
use clustersync::preflight::roles::{self, Deployment, Side, SyncKind};
use common::{Engine, Server};
use serde_json::json;

const PW: &str = "R0le-Pa55word";

fn user_name(roles: &[&str]) -> String {
    format!("u_{}", roles.join("_"))
}

/// Every role set the tests need: each documented set, and each set minus one role.
fn role_sets() -> Vec<Vec<&'static str>> {
    let mut sets: Vec<Vec<&'static str>> = Vec::new();
    for kind in [
        SyncKind::Default,
        SyncKind::DualWriteBlocking,
        SyncKind::Reversing,
        SyncKind::MultipleReversals,
    ] {
        for side in [Side::Source, Side::Destination] {
            let full = roles::required(kind, Deployment::SelfManaged, side).roles;
            for drop in std::iter::once(None).chain(full.iter().map(Some)) {
                let set: Vec<&str> = full.iter().copied().filter(|r| Some(r) != drop).collect();
                if !sets.contains(&set) {
                    sets.push(set);
                }
            }
        }
    }
    sets
}

async fn provision(server: &mut Server) {
    let admin = server.client().await.database("admin");
    admin
        .run_command(doc! { "createRole": "clusterManager", "privileges": [], "roles": [] })
        .await
        .expect("createRole clusterManager");
    admin
        .run_command(doc! { "createUser": "root_user", "pwd": PW, "roles": [{ "role": "root", "db": "admin" }] })
        .await
        .unwrap();
    for set in role_sets() {
        let roles: Vec<Document> = set
            .iter()
            .map(|r| doc! { "role": *r, "db": "admin" })
            .collect();
        admin
            .run_command(doc! { "createUser": user_name(&set), "pwd": PW, "roles": roles })
            .await
            .unwrap_or_else(|e| panic!("createUser {set:?}: {e}"));
    }
    let ready = uri_as(server, "root_user");
    server.restart_with_args(&["--auth"], Some(ready)).await;
}

fn uri_as(server: &Server, user: &str) -> String {
    format!(
        "mongodb://{user}:{PW}@127.0.0.1:{}/?directConnection=true&authSource=admin",
        server.port
    )
}

async fn client_as(server: &Server, user: &str) -> mongodb::Client {
    common::client_for(&uri_as(server, user)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn role_checks_for_every_sync_kind() {
    let (mut a, mut b) = tokio::join!(Server::start(), Server::start());
    tokio::join!(provision(&mut a), provision(&mut b));
    // Without credentials the server refuses everything: the check says so, naming the cluster.
    let anonymous = common::client_for(&a.uri()).await;
    let facts = checks::gather(
        &anonymous,
        "cluster0",
        &format!("127.0.0.1:{}", a.port),
        &|s| s.to_string(),
        true,
    )
    .await;
    assert!(
        facts
            .unreachable
            .as_deref()
            .is_some_and(|w| w.contains("Unauthorized") || w.contains("auth")),
        "{facts:?}"
    );

    let root_b = client_as(&b, "root_user").await;
    let root_a = client_as(&a, "root_user").await;
    let mut checked = 0;
    for kind in [
        SyncKind::Default,
        SyncKind::DualWriteBlocking,
        SyncKind::Reversing,
        SyncKind::MultipleReversals,
    ] {
        for side in [Side::Source, Side::Destination] {
            let full = roles::required(kind, Deployment::SelfManaged, side).roles;
            for drop in std::iter::once(None).chain(full.iter().copied().map(Some)) {
                let set: Vec<&str> = full.iter().copied().filter(|r| Some(*r) != drop).collect();
                let user = user_name(&set);
                // The user under test on its side, root on the other.
                let (src, dst) = match side {
                    Side::Source => (client_as(&a, &user).await, root_b.clone()),
                    Side::Destination => (root_a.clone(), client_as(&b, &user).await),
                };
                let intent = Intent {
                    kind,
                    pre_existing_destination_data: true,
                    copy_rate: checks::DEFAULT_COPY_RATE,
                    measure: false,
                };
                let report = clustersync::preflight::run(
                    (&src, "cluster0", &format!("127.0.0.1:{}", a.port)),
                    (&dst, "cluster1", &format!("127.0.0.1:{}", b.port)),
                    intent,
                    &|s| s.to_string(),
                )
                .await;
                let role_problems: Vec<String> = report
                    .problems_of(ProblemKind::Roles)
                    .map(|p| p.message.clone())
                    .collect();
                match drop {
                    None => assert!(
                        role_problems.is_empty(),
                        "{kind} {side} with {set:?}: {role_problems:?}"
                    ),
                    Some(missing) => {
                        assert_eq!(
                            role_problems.len(),
                            1,
                            "{kind} {side} without {missing}: {role_problems:?}"
                        );
                        let msg = &role_problems[0];
                        let cluster = if side == Side::Source {
                            "cluster0"
                        } else {
                            "cluster1"
                        };
                        for want in [missing, user.as_str(), cluster, "grantRolesToUser"] {
                            assert!(
                                msg.contains(want),
                                "{kind} {side} without {missing}: {want:?} not in {msg}"
                            );
                        }
                        let verdict = if side == Side::Source {
                            &report.source
                        } else {
                            &report.destination
                        };
                        assert_eq!(verdict.missing_roles, vec![missing]);
                        assert!(!msg.contains(PW));
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 30, "{checked}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_command_and_start_name_missing_roles() {
    let (mut a, mut b) = tokio::join!(Server::start(), Server::start());
    tokio::join!(provision(&mut a), provision(&mut b));
    client_as(&a, "root_user")
        .await
        .database("app")
        .collection::<Document>("users")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    let weak_dst = ["clusterMonitor", "readWriteAnyDatabase", "restore"];
    let run = |args: &[String]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_clustersync"))
            .arg("check")
            .args(args)
            .output()
            .unwrap()
    };
    // Passing pair.
    let ok = run(&[
        "--cluster0".into(),
        uri_as(&a, "root_user"),
        "--cluster1".into(),
        uri_as(&b, "root_user"),
    ]);
    let text = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{text}");
    assert!(
        text.contains("RESULT: ready to sync") && text.contains("root_user@admin"),
        "{text}"
    );
    // Failing pair: the destination user lacks clusterManager.
    let args = vec![
        "--cluster0".into(),
        uri_as(&a, "root_user"),
        "--cluster1".into(),
        uri_as(&b, &user_name(&weak_dst)),
    ];
    let bad = run(&args);
    let text = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(
        text.contains("missing      clusterManager") && text.contains("grantRolesToUser"),
        "{text}"
    );
    assert!(!text.contains(PW));
    let mut json_args = args.clone();
    json_args.extend(["--output".to_string(), "json".to_string()]);
    let j = run(&json_args);
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("json");
    assert_eq!(v["passed"], false);
    assert_eq!(v["destination"]["missingRoles"], json!(["clusterManager"]));
    assert_eq!(v["problems"][0]["kind"], "roles");
    // The same check guards /start.
    let engine = Engine::spawn_between(
        &uri_as(&a, "root_user"),
        &uri_as(&b, &user_name(&weak_dst)),
        &[],
    );
    engine.wait_ready().await;
    let (code, v) = engine
        .post(
            "start",
            json!({"source":"cluster0","destination":"cluster1","enableUserWriteBlocking":"none"}),
        )
        .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (403, Some("InsufficientPermissions")),
        "{v}"
    );
    let d = v["errorDescription"].as_str().unwrap();
    assert!(
        d.contains("cluster1") && d.contains("clusterManager") && d.contains(&user_name(&weak_dst)),
        "{d}"
    );
    assert!(!d.contains(PW) && !engine.log_contents().contains(PW));
    assert_eq!(common::state_of(&engine.progress().await), Some("IDLE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn same_cluster_is_refused_by_check_and_start() {
    let a = Server::start().await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clustersync"))
        .args([
            "check",
            "--cluster0",
            &a.uri(),
            "--cluster1",
            &a.uri(),
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["kind"] == "sameCluster"),
        "{v}"
    );
    // The same server under another spelling of its address is still the same cluster.
    let other_spelling = format!("mongodb://localhost:{}/?directConnection=true", a.port);
    let engine = Engine::spawn_between(&a.uri(), &other_spelling, &[]);
    engine.wait_ready().await;
    let (code, v) = engine
        .post(
            "start",
            json!({"source":"cluster0","destination":"cluster1","enableUserWriteBlocking":"none"}),
        )
        .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("PreflightFailed")),
        "{v}"
    );
    assert!(
        v["errorDescription"]
            .as_str()
            .unwrap()
            .contains("same cluster"),
        "{v}"
    );
}
