//! The engine's command line and HTTP API against real servers: flags, bad URIs, every API
//! error path, the state machine (pause/resume), filters and destination checks.

mod common;

use std::time::Duration;

use bson::doc;
use common::{state_of, Engine, Server};
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-Pa55";

fn run_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_clustersync"))
        .args(args)
        .output()
        .expect("run clustersync")
}

#[test]
fn version_and_help() {
    for flag in ["--version", "-v"] {
        let out = run_cli(&[flag]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    }
    let out = run_cli(&["engine", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--cluster0",
        "--cluster1",
        "--port",
        "--config",
        "--logPath",
        "--verbosity",
        "--loadLevel",
        "--id",
        "--acceptDisclaimer",
        "--bind",
    ] {
        assert!(help.contains(flag), "help lacks {flag}:\n{help}");
    }
}

#[test]
fn bad_uris_exit_non_zero_naming_the_flag_without_the_password() {
    let good = "mongodb://127.0.0.1:1/?directConnection=true";
    let bad_uris = [
        format!("mongodb://admin:{SECRET}@"),
        format!("mongodb://admin:{SECRET}@h:27017/?w=1"),
        format!("mongodb://admin:{SECRET}@h:27017/?tls=perhaps"),
        format!("postgres://admin:{SECRET}@h:5432"),
        format!("mongodb://admin:{SECRET}@h:27017/?readPreference=secondary"),
        String::new(),
    ];
    for bad in &bad_uris {
        for (flag, args) in [
            (
                "--cluster0",
                vec!["engine", "--cluster0", bad.as_str(), "--cluster1", good],
            ),
            (
                "--cluster1",
                vec!["engine", "--cluster0", good, "--cluster1", bad.as_str()],
            ),
        ] {
            let out = run_cli(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
            assert!(stderr.contains(flag), "{bad}: {stderr}");
            assert!(
                !stderr.contains(SECRET) && !stdout.contains(SECRET),
                "{bad}: password leaked: {stderr}"
            );
        }
    }
    let out = run_cli(&["engine", "--cluster0", good]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--cluster1 is required"));
    let out = run_cli(&[
        "engine",
        "--cluster0",
        good,
        "--cluster1",
        good,
        "--loadLevel",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loadLevel"));
}

async fn two_servers() -> (Server, Server) {
    tokio::join!(Server::start(), Server::start())
}

fn progress(v: &Value) -> &Value {
    &v["progress"]
}

async fn expect_error(engine: &Engine, path: &str, body: &str, status: u16, name: &str) -> Value {
    let (code, v) = engine.post_raw(path, body).await;
    assert_eq!(v["success"], false, "{path} {body}: {v}");
    assert_eq!(v["error"], name, "{path} {body}: {v}");
    assert_eq!(code, status, "{path} {body}: {v}");
    let desc = v["errorDescription"].as_str().unwrap_or_default();
    assert!(desc.len() > 20, "error description too thin: {v}");
    assert!(!desc.contains(SECRET), "{v}");
    // The engine keeps serving after every refusal.
    let p = engine.progress().await;
    assert!(state_of(&p).is_some());
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn api_error_paths_and_config_file() {
    let (a, b) = two_servers().await;
    // Credentials in the URI (the servers run without auth and ignore them unless asked to
    // authenticate, so use authMechanism-free options that the driver accepts without a user).
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("engine.yaml");
    let port = common::free_port();
    std::fs::write(
        &cfg,
        format!(
            "cluster0: \"{}\"\ncluster1: \"{}\"\nport: {port}\nverbosity: INFO\nloadLevel: 2\n",
            a.uri(),
            b.uri()
        ),
    )
    .unwrap();
    let engine = Engine::spawn(&[
        "--config",
        cfg.to_str().unwrap(),
        "--port",
        &port.to_string(),
    ]);
    let idle = engine.wait_ready().await;
    let p = progress(&idle);
    assert_eq!(p["state"], "IDLE");
    assert_eq!(p["canCommit"], false);
    for k in [
        "canWrite",
        "info",
        "lag",
        "lagTimeSeconds",
        "collectionCopy",
        "directionMapping",
        "totalEventsApplied",
    ] {
        assert!(p[k].is_null(), "IDLE must null {k}: {p}");
    }

    // Bodies.
    expect_error(&engine, "start", "", 400, "InvalidRequestBody").await;
    expect_error(&engine, "start", "{\"source\": ", 400, "InvalidRequestBody").await;
    expect_error(&engine, "start", "[]", 400, "InvalidRequestBody").await;
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster0"}"#,
        400,
        "MissingField",
    )
    .await;
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster0","destination":"cluster1","turbo":true}"#,
        400,
        "UnknownField",
    )
    .await;
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster0","destination":"cluster1","reversible":"yes"}"#,
        400,
        "InvalidFieldValue",
    )
    .await;
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster9","destination":"cluster1"}"#,
        400,
        "InvalidFieldValue",
    )
    .await;
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster0","destination":"cluster1","buildIndexes":"later"}"#,
        400,
        "InvalidFieldValue",
    )
    .await;
    // Write blocking asked for explicitly, on a server without setUserWriteBlockMode: refused,
    // naming the cluster, never quietly dropped.
    for mode in ["\"sourceAndDestination\"", "\"destinationOnly\"", "true"] {
        let v = expect_error(
            &engine,
            "start",
            &format!(r#"{{"source":"cluster0","destination":"cluster1","enableUserWriteBlocking":{mode}}}"#),
            409,
            "WriteBlockingUnsupported",
        )
        .await;
        assert!(
            v["errorDescription"]
                .as_str()
                .unwrap()
                .contains("cluster1 does not support setUserWriteBlockMode"),
            "{v}"
        );
    }
    // Options that parse but cannot be honoured.
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster1","destination":"cluster1"}"#,
        400,
        "InvalidStartOptions",
    )
    .await;
    expect_error(&engine, "start", r#"{"source":"cluster0","destination":"cluster1","reversible":true,"buildIndexes":"never"}"#, 400, "InvalidStartOptions").await;
    expect_error(&engine, "start", r#"{"source":"cluster0","destination":"cluster1","includeNamespaces":[{"databaseRegex":{"pattern":"(unclosed"}}]}"#, 400, "InvalidStartOptions").await;
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster0","destination":"cluster1","preExistingDestinationData":true}"#,
        400,
        "InvalidStartOptions",
    )
    .await;
    // Calls that do not fit IDLE.
    for verb in ["pause", "resume", "commit", "reverse"] {
        expect_error(&engine, verb, "{}", 409, "InvalidState").await;
    }
    expect_error(&engine, "pause", "{\"now\":1}", 400, "UnknownField").await;
    expect_error(&engine, "pause", "", 400, "InvalidRequestBody").await;
    // Paths and methods.
    let (code, v) = engine.get("start").await;
    assert_eq!(
        (code, v["error"].as_str()),
        (405, Some("MethodNotAllowed")),
        "{v}"
    );
    let (code, v) = engine.post_raw("progress", "{}").await;
    assert_eq!(
        (code, v["error"].as_str()),
        (405, Some("MethodNotAllowed")),
        "{v}"
    );
    let (code, v) = engine.post_raw("teleport", "{}").await;
    assert_eq!((code, v["error"].as_str()), (404, Some("NotFound")), "{v}");

    // A destination holding user data refuses to start, and nothing is left behind.
    let bc = b.client().await;
    bc.database("mine")
        .collection("keep")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    let v = expect_error(
        &engine,
        "start",
        r#"{"source":"cluster0","destination":"cluster1"}"#,
        409,
        "DestinationNotEmpty",
    )
    .await;
    assert!(
        v["errorDescription"]
            .as_str()
            .unwrap()
            .contains("mine.keep"),
        "{v}"
    );
    assert!(!bc
        .list_database_names()
        .await
        .unwrap()
        .iter()
        .any(|d| d.starts_with("clustersync")));
    assert_eq!(state_of(&engine.progress().await), Some("IDLE"));

    // With preExistingDestinationData and a filter it may, unless namespaces collide.
    let ac = a.client().await;
    ac.database("mine")
        .collection("keep")
        .insert_one(doc! { "y": 2 })
        .await
        .unwrap();
    ac.database("app")
        .collection("users")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    let v = expect_error(&engine, "start", r#"{"source":"cluster0","destination":"cluster1","preExistingDestinationData":true,"excludeNamespaces":[{"database":"other"}]}"#, 409, "NamespaceConflict").await;
    assert!(
        v["errorDescription"]
            .as_str()
            .unwrap()
            .contains("mine.keep"),
        "{v}"
    );
    let (code, v) = engine
        .post("start", json!({"source":"cluster0","destination":"cluster1","preExistingDestinationData":true,"includeNamespaces":[{"database":"app"}]}))
        .await;
    assert_eq!((code, &v["success"]), (200, &json!(true)), "{v}");
    expect_error(
        &engine,
        "start",
        r#"{"source":"cluster0","destination":"cluster1"}"#,
        409,
        "InvalidState",
    )
    .await;
    expect_error(&engine, "resume", "{}", 409, "InvalidState").await;
    expect_error(&engine, "reverse", "{}", 409, "InvalidState").await;
    let p = engine
        .wait_until(
            |p| p["progress"]["canCommit"] == true,
            Duration::from_secs(60),
        )
        .await;
    let p = progress(&p);
    assert_eq!(
        p["directionMapping"]["Source"],
        format!("cluster0: 127.0.0.1:{}", a.port)
    );
    assert_eq!(
        p["directionMapping"]["Destination"],
        format!("cluster1: 127.0.0.1:{}", b.port)
    );
    assert_eq!(p["mongosyncID"], "coordinator");
    let hashed_before = p["verification"]["source"]["hashedDocumentCount"]
        .as_u64()
        .unwrap_or(0);
    assert!(hashed_before > 0, "{p}");

    // Pause: lag goes null, writes wait; resume applies them.
    let (code, v) = engine.post("pause", json!({})).await;
    assert_eq!(code, 200, "{v}");
    let p = engine.wait_state("PAUSED", Duration::from_secs(10)).await;
    assert!(
        p["progress"]["lag"].is_null() && p["progress"]["lagTimeSeconds"].is_null(),
        "{p}"
    );
    assert_eq!(p["progress"]["canCommit"], false);
    expect_error(&engine, "commit", "{}", 409, "InvalidState").await;
    expect_error(&engine, "pause", "{}", 409, "InvalidState").await;
    ac.database("app")
        .collection("users")
        .insert_one(doc! { "_id": 2, "during": "pause" })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let users = bc.database("app").collection::<bson::Document>("users");
    assert!(
        users.find_one(doc! { "_id": 2 }).await.unwrap().is_none(),
        "paused engine applied a write"
    );
    let (code, _) = engine.post("resume", json!({})).await;
    assert_eq!(code, 200);
    // The verifier carries on where it was: its counts and phase do not start over.
    let p = engine
        .wait_until(
            |p| {
                let v = &p["progress"]["verification"]["source"];
                assert_ne!(v["phase"], "initial hashing", "{p}");
                assert!(
                    v["hashedDocumentCount"].as_u64().unwrap_or(0) >= hashed_before,
                    "{p}"
                );
                p["progress"]["canCommit"] == true
            },
            Duration::from_secs(60),
        )
        .await;
    assert!(state_of(&p) == Some("RUNNING"), "{p}");
    let mut applied = false;
    for _ in 0..50 {
        if users.find_one(doc! { "_id": 2 }).await.unwrap().is_some() {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        applied,
        "write made while paused was not applied after resume"
    );

    let (code, v) = engine.post("commit", json!({})).await;
    assert_eq!(code, 200, "{v}");
    let done = engine
        .wait_state("COMMITTED", Duration::from_secs(60))
        .await;
    assert_eq!(done["progress"]["canWrite"], true);
    assert_eq!(done["progress"]["info"], "commit completed");
    expect_error(&engine, "reverse", "{}", 409, "NotReversible").await;
    expect_error(&engine, "commit", "{}", 409, "InvalidState").await;
    // Filtered: only app.* moved; the destination's own data is untouched.
    assert!(bc
        .database("mine")
        .collection::<bson::Document>("keep")
        .find_one(doc! { "x": 1 })
        .await
        .unwrap()
        .is_some());
    assert!(bc
        .database("mine")
        .collection::<bson::Document>("keep")
        .find_one(doc! { "y": 2 })
        .await
        .unwrap()
        .is_none());
    assert_eq!(users.count_documents(doc! {}).await.unwrap(), 2);
    let log = engine.log_contents();
    assert!(!log.contains(SECRET));
}

#[tokio::test(flavor = "multi_thread")]
async fn reverse_direction_filters_and_reverse_endpoint() {
    let (a, b) = two_servers().await;
    // cluster1 is the source here.
    let src = b.client().await;
    for (db, coll) in [
        ("keep", "a"),
        ("keep", "b"),
        ("keep", "tmp_x"),
        ("skip", "a"),
        ("logs_2026", "x"),
        ("logs_2025", "x"),
    ] {
        src.database(db)
            .collection(coll)
            .insert_one(doc! { "_id": 1, "ns": format!("{db}.{coll}") })
            .await
            .unwrap();
    }
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.wait_ready().await;
    let (code, v) = engine
        .post(
            "start",
            json!({
                "source": "cluster1", "destination": "cluster0", "reversible": false,
                "includeNamespaces": [{"database": "keep"}, {"databaseRegex": {"pattern": "^LOGS_", "options": "i"}}],
                "excludeNamespaces": [{"database": "keep", "collectionsRegex": {"pattern": "^tmp_"}}, {"database": "logs_2025"}]
            }),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let p = engine
        .wait_until(
            |p| p["progress"]["canCommit"] == true,
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(
        p["progress"]["directionMapping"]["Source"],
        format!("cluster1: 127.0.0.1:{}", b.port)
    );
    // Live changes in and out of the filter.
    src.database("keep")
        .collection("c")
        .insert_one(doc! { "_id": 9 })
        .await
        .unwrap();
    src.database("keep")
        .collection("tmp_y")
        .insert_one(doc! { "_id": 9 })
        .await
        .unwrap();
    src.database("skip")
        .collection("a")
        .insert_one(doc! { "_id": 9 })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    engine
        .wait_until(
            |p| p["progress"]["canCommit"] == true,
            Duration::from_secs(60),
        )
        .await;
    engine.post("commit", json!({})).await;
    engine
        .wait_state("COMMITTED", Duration::from_secs(60))
        .await;
    let dst = a.client().await;
    let mut got = Vec::new();
    for db in dst.list_database_names().await.unwrap() {
        if [
            "admin",
            "local",
            "config",
            "clustersync_reserved_for_internal_use",
        ]
        .contains(&db.as_str())
        {
            continue;
        }
        for c in dst.database(&db).list_collection_names().await.unwrap() {
            got.push(format!("{db}.{c}"));
        }
    }
    got.sort();
    assert_eq!(got, vec!["keep.a", "keep.b", "keep.c", "logs_2026.x"]);
    // Reverse: refused clearly for a sync started without reversible; it stays COMMITTED.
    let (code, v) = engine.post("reverse", json!({})).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("NotReversible")),
        "{v}"
    );
    assert_eq!(state_of(&engine.progress().await), Some("COMMITTED"));
}

/// `POST /api/v1/preflight` (ours) runs `/start`'s checks and starts nothing: a good pair
/// passes, one cluster named twice is a problem with its kind, and a bad body is refused by
/// the same rules as `/start`'s.
#[tokio::test(flavor = "multi_thread")]
async fn preflight_endpoint_reports_and_starts_nothing() {
    let (a, b) = two_servers().await;
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.wait_ready().await;
    let body = json!({"source":"cluster0","destination":"cluster1"});
    let (code, v) = engine.post("preflight", body.clone()).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        (v["success"].as_bool(), v["passed"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    assert_eq!(v["problems"], json!([]), "{v}");
    let typed: clustersync::contract::preflight::PreflightReply =
        serde_json::from_value(v).expect("the reply parses as the contract's type");
    assert!(typed.passed);
    assert_eq!(
        state_of(&engine.progress().await),
        Some("IDLE"),
        "nothing started"
    );
    expect_error(
        &engine,
        "preflight",
        r#"{"source":"cluster0","destination":"cluster1","x":1}"#,
        400,
        "UnknownField",
    )
    .await;
    expect_error(
        &engine,
        "preflight",
        r#"{"source":"cluster0","destination":"cluster0"}"#,
        400,
        "InvalidStartOptions",
    )
    .await;

    // A destination holding user data: the preflight says what /start would refuse (a new
    // user's finding: it passed while /start refused).
    b.client()
        .await
        .database("precious")
        .collection::<bson::Document>("data")
        .insert_one(bson::doc! { "_id": 1 })
        .await
        .unwrap();
    let (code, v) = engine.post("preflight", body.clone()).await;
    assert_eq!((code, v["passed"].as_bool()), (200, Some(false)), "{v}");
    assert_eq!(v["problems"][0]["kind"], "destinationNotEmpty", "{v}");
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("precious.data")),
        "{v}"
    );
    let (code, v) = engine.post("start", body.clone()).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("DestinationNotEmpty")),
        "{v}"
    );

    // The same server as both clusters.
    let twice = Engine::spawn_between(&a.uri(), &a.uri(), &[]);
    twice.wait_ready().await;
    let (code, v) = twice.post("preflight", body).await;
    assert_eq!((code, v["passed"].as_bool()), (200, Some(false)), "{v}");
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"sameCluster"), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn standalone_source_is_refused() {
    let (a, b) = tokio::join!(Server::start_with_args(&["--standalone"]), Server::start());
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.wait_ready().await;
    let (code, v) = engine
        .post(
            "start",
            json!({"source":"cluster0","destination":"cluster1"}),
        )
        .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("UnsupportedTopology")),
        "{v}"
    );
    assert!(v["errorDescription"]
        .as_str()
        .unwrap()
        .contains("replica set"));
    assert_eq!(state_of(&engine.progress().await), Some("IDLE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_strings_from_the_environment() {
    let (a, b) = two_servers().await;
    let port = common::free_port().to_string();
    let engine = Engine::spawn_with_env(
        &["--port", &port],
        &[
            ("CLUSTERSYNC_CLUSTER0", &a.uri()),
            ("CLUSTERSYNC_CLUSTER1", &b.uri()),
        ],
    );
    let p = engine.wait_ready().await;
    assert_eq!(state_of(&p), Some("IDLE"), "{p}");
    // A flag wins over the environment, and a bad value names the flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_clustersync"))
        .args(["engine", "--cluster0", "mongodb://h:1"])
        .env(
            "CLUSTERSYNC_CLUSTER1",
            format!("mongodb://u:{SECRET}@h:2/?w=1"),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--cluster1") && !err.contains(SECRET), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_token_guards_every_endpoint() {
    let (a, b) = two_servers().await;
    // Beyond loopback without a token: refused at startup.
    let out = run_cli(&[
        "engine",
        "--cluster0",
        &a.uri(),
        "--cluster1",
        &b.uri(),
        "--bind",
        "0.0.0.0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--apiToken"));
    let port = common::free_port().to_string();
    let engine = Engine::spawn_with_env(
        &[
            "--cluster0",
            &a.uri(),
            "--cluster1",
            &b.uri(),
            "--port",
            &port,
        ],
        &[("CLUSTERSYNC_API_TOKEN", "s3cret-t0ken")],
    );
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/progress");
    let mut ok = None;
    for _ in 0..100 {
        if let Ok(r) = http.get(&url).bearer_auth("s3cret-t0ken").send().await {
            ok = Some(r.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ok, Some(200));
    for (auth, want) in [
        (None, 401),
        (Some("wrong"), 401),
        (Some("s3cret-t0ke"), 401),
    ] {
        let mut req = http
            .post(format!("http://127.0.0.1:{port}/api/v1/start"))
            .body("{}");
        if let Some(t) = auth {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "Unauthorized", "{v}");
    }
    // Kubelet probes carry no token: /healthz answers without one, and says nothing more.
    let h = http
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status().as_u16(), 200);
    assert_eq!(
        h.json::<Value>().await.unwrap(),
        serde_json::json!({ "ok": true })
    );
    let p = http.get(&url).send().await.unwrap();
    assert_eq!(p.status().as_u16(), 401, "progress still needs the token");
    assert!(!engine.log_contents().contains("s3cret-t0ken"));
}

/// `--logPath DIR`: JSON lines go to a dated file there (rotated daily), not to stdout.
#[tokio::test(flavor = "multi_thread")]
async fn log_path_writes_json_log_files() {
    let (a, b) = two_servers().await;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::spawn_between(
        &a.uri(),
        &b.uri(),
        &["--logPath", dir.path().to_str().unwrap()],
    );
    engine.wait_ready().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (name, text) = loop {
        let found = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .find(|n| n.starts_with("clustersync.") && n.ends_with(".log"));
        if let Some(n) = found {
            let text = std::fs::read_to_string(dir.path().join(&n)).unwrap();
            if text.contains("waiting for /api/v1/start") {
                break (n, text);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no log file in {dir:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The active file (rotated on SIGUSR1 and daily; see tests/runbook.rs).
    assert_eq!(name, "clustersync.log");
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
    assert!(
        !engine.log_contents().contains("waiting for /api/v1/start"),
        "stdout stays quiet"
    );
}
