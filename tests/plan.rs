//! `clustersync plan`, from a user's point of view: the real binary (and the engine's
//! `POST /api/v1/plan`) against real SecantusDB servers.
//!
//! What the test server cannot show, and how each case copes:
//! - It has no text and no hashed indexes (it refuses to create them: see
//!   `common::try_create_unsupported_indexes`), so no source here can hold an index a
//!   destination lacks; the special kinds it does have (2dsphere, 2d, wildcard) are tried on the
//!   destination by the probe and reported as built as defined. The refused-kind path is
//!   unit-tested in `plan::judge`.
//! - Its `dbStats` reports no `fsTotalSize`/`fsUsedSize` (for any database), and on a full
//!   filesystem it accepts writes into its cache and then panics in WiredTiger instead of
//!   refusing them: a nearly full destination cannot be told through it. The plan says so (a
//!   DiskSpace warning naming the statistics and the space needed), which is asserted here;
//!   the Short (blocking) and 80% (warning) verdicts are unit-tested in `plan::judge`.
//! - It has no `setUserWriteBlockMode`: every plan here carries the WriteBlocking warning.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bson::{doc, Document};
use clustersync::contract::filter::PLAN_PROBE_DB_PREFIX;
use clustersync::contract::plan::{IndexBuild, NamespaceKind, Plan, RiskKind, Severity};
use common::{Engine, Server};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_clustersync"))
}

/// Runs `clustersync plan <args>` with stdout and stderr piped (so not terminals).
async fn plan_cmd(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        bin()
            .arg("plan")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .expect("run clustersync plan")
    })
    .await
    .unwrap()
}

fn args(cluster0: &str, cluster1: &str, extra: &[&str]) -> Vec<String> {
    let mut v = vec![
        "--cluster0".to_string(),
        cluster0.to_string(),
        "--cluster1".to_string(),
        cluster1.to_string(),
    ];
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Parses `--output json`, saying what was printed when it does not parse.
fn parse(out: &Output) -> Plan {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not a plan ({e}); stdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

async fn scratch_dbs(client: &mongodb::Client) -> Vec<String> {
    client
        .list_database_names()
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.starts_with(PLAN_PROBE_DB_PREFIX))
        .collect()
}

/// Every collection kind the test server has, with indexes of each kind the sync treats
/// apart. Small, so that the server's scanning `collStats` stays quick.
async fn seed_kinds(client: &mongodb::Client) {
    let db = client.database("shop");
    let orders = db.collection::<Document>("orders");
    orders
        .insert_many((0..400).map(|i| {
            doc! {
                "_id": i, "sku": format!("s{i}"), "qty": i % 7, "customer": i % 13,
                "at": bson::DateTime::now(), "pad": "x".repeat(200),
                "loc": { "type": "Point", "coordinates": [i as f64 / 10.0, 1.0] },
            }
        }))
        .await
        .unwrap();
    db.run_command(doc! { "createIndexes": "orders", "indexes": [
        { "key": { "sku": 1 }, "name": "sku_unique", "unique": true },
        { "key": { "at": 1 }, "name": "at_ttl", "expireAfterSeconds": 3600 },
        { "key": { "qty": 1 }, "name": "qty_partial", "partialFilterExpression": { "qty": { "$gt": 3 } } },
        { "key": { "customer": 1, "at": -1 }, "name": "customer_at" },
        { "key": { "loc": "2dsphere" }, "name": "loc_geo" },
    ] })
    .await
    .unwrap();
    db.run_command(doc! { "create": "events", "capped": true, "size": 65536, "max": 50 })
        .await
        .unwrap();
    db.collection::<Document>("events")
        .insert_many((0..20).map(|i| doc! { "n": i }))
        .await
        .unwrap();
    db.run_command(doc! { "create": "metrics", "timeseries": { "timeField": "t", "metaField": "m", "granularity": "seconds" } })
        .await
        .unwrap();
    db.collection::<Document>("metrics")
        .insert_many((0..30).map(|i| doc! { "t": bson::DateTime::now(), "m": i % 3, "v": i }))
        .await
        .unwrap();
    db.run_command(
        doc! { "create": "sessions", "clusteredIndex": { "key": { "_id": 1 }, "unique": true } },
    )
    .await
    .unwrap();
    db.collection::<Document>("sessions")
        .insert_many((0..10).map(|i| doc! { "_id": i }))
        .await
        .unwrap();
    db.run_command(doc! { "create": "checked", "validator": { "qty": { "$type": "int" } }, "validationAction": "error" })
        .await
        .unwrap();
    db.collection::<Document>("checked")
        .insert_one(doc! { "qty": 1 })
        .await
        .unwrap();
    db.run_command(doc! { "create": "names", "collation": { "locale": "fr", "strength": 2 } })
        .await
        .unwrap();
    db.collection::<Document>("names")
        .insert_one(doc! { "n": "é" })
        .await
        .unwrap();
    db.run_command(doc! { "create": "big_orders", "viewOn": "orders", "pipeline": [{ "$match": { "qty": { "$gt": 5 } } }] })
        .await
        .unwrap();
    // Out of scope in the filtered run.
    client
        .database("other")
        .collection::<Document>("c")
        .insert_one(doc! { "a": 1 })
        .await
        .unwrap();
}

/// A source with every collection kind the test server supports and an empty destination: the
/// plan names each namespace's kind, counts and each index's build, in JSON and in text, exits
/// 0, shows no progress when piped, leaves no scratch database behind; the engine's
/// `POST /api/v1/plan` (through the operator's typed client) answers the same namespaces.
#[tokio::test(flavor = "multi_thread")]
async fn plan_names_every_kind_and_how_each_index_is_built() {
    let (source, destination) = tokio::join!(Server::start(), Server::start());
    seed_kinds(&source.client().await).await;
    let dest = destination.client().await;
    let filter = r#"[{"database":"shop"}]"#;

    let t = Instant::now();
    let out = plan_cmd(args(
        &source.uri(),
        &destination.uri(),
        &["--include-namespaces", filter, "--output", "json"],
    ))
    .await;
    eprintln!("plan --output json took {:?}", t.elapsed());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        !stderr.contains('\r'),
        "a progress line on a pipe: {stderr:?}"
    );
    let plan = parse(&out);
    assert!(plan.safe, "{:#?}", plan.risks);
    let ns = |name: &str| {
        plan.namespaces
            .iter()
            .find(|n| n.namespace == name)
            .unwrap_or_else(|| panic!("{name} missing from {:#?}", plan.namespaces))
    };
    for (name, kind, docs) in [
        ("shop.orders", NamespaceKind::Collection, 400),
        ("shop.events", NamespaceKind::Capped, 20),
        ("shop.metrics", NamespaceKind::Timeseries, 30),
        ("shop.sessions", NamespaceKind::Clustered, 10),
        ("shop.checked", NamespaceKind::Collection, 1),
        ("shop.names", NamespaceKind::Collection, 1),
        ("shop.big_orders", NamespaceKind::View, 0),
    ] {
        assert_eq!((ns(name).kind, ns(name).documents), (kind, docs), "{name}");
    }
    assert_eq!(plan.namespaces.len(), 7, "other.c is out of scope");
    assert_eq!((plan.totals.collections, plan.totals.views), (6, 1));
    assert_eq!(plan.totals.documents, 400 + 20 + 30 + 10 + 1 + 1);
    assert!(ns("shop.orders").data_bytes > 400 * 200);
    // In the server's listing order (by name here), so compared as a set.
    let builds: std::collections::BTreeMap<&str, (IndexBuild, &str)> = ns("shop.orders")
        .indexes
        .iter()
        .map(|i| (i.name.as_str(), (i.build, i.keys.as_str())))
        .collect();
    assert_eq!(
        builds,
        std::collections::BTreeMap::from([
            ("sku_unique", (IndexBuild::UniqueAtCommit, r#"{"sku":1}"#)),
            ("at_ttl", (IndexBuild::TtlPausedUntilCommit, r#"{"at":1}"#)),
            ("qty_partial", (IndexBuild::AsDefined, r#"{"qty":1}"#)),
            (
                "customer_at",
                (IndexBuild::AsDefined, r#"{"customer":1,"at":-1}"#)
            ),
            ("loc_geo", (IndexBuild::AsDefined, r#"{"loc":"2dsphere"}"#)),
        ])
    );
    let geo = ns("shop.orders")
        .indexes
        .iter()
        .find(|i| i.name == "loc_geo")
        .unwrap();
    assert!(
        geo.note
            .as_deref()
            .is_some_and(|n| n.contains("2dsphere: the destination built one")),
        "the probe tried the 2dsphere kind on the destination: {geo:?}"
    );
    assert!(
        ns("shop.sessions").indexes.is_empty(),
        "the clustered index is no index to build"
    );
    let notes = |name: &str| ns(name).notes.join(" | ");
    assert!(notes("shop.events").contains("size 65536") && notes("shop.events").contains("max 50"));
    assert!(notes("shop.metrics").contains("timeField \"t\""));
    assert!(notes("shop.sessions").contains("clustered"));
    assert!(notes("shop.checked").contains("validator"));
    assert!(notes("shop.names").contains("\"locale\":\"fr\""));
    assert!(notes("shop.big_orders").contains("view on orders"));
    // The estimate comes from a measurement, and says what it was.
    let p = &plan.estimate.probe;
    assert!(
        p.source_read_bytes_per_second > 0.0 && p.destination_write_bytes_per_second > 0.0,
        "{p:?}"
    );
    assert!(
        p.method.contains("shop.orders") && p.method.contains("w:majority"),
        "{}",
        p.method
    );
    assert!(plan.estimate.copy_seconds > 0.0 && plan.estimate.total_seconds.is_finite());
    // What the test server lacks is said, as warnings.
    let warned = |kind: RiskKind, words: &str| {
        plan.risks
            .iter()
            .any(|r| r.kind == kind && r.severity == Severity::Warning && r.message.contains(words))
    };
    assert!(
        warned(RiskKind::DiskSpace, "fsTotalSize"),
        "{:#?}",
        plan.risks
    );
    assert!(warned(RiskKind::WriteBlocking, "setUserWriteBlockMode"));
    assert!(
        scratch_dbs(&dest).await.is_empty(),
        "the probe left its scratch database"
    );

    // The text report names the same.
    let out = plan_cmd(args(
        &source.uri(),
        &destination.uri(),
        &["--include-namespaces", filter],
    ))
    .await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}{}", text(&out.stderr));
    for want in [
        "shop.orders",
        "shop.big_orders",
        "capped",
        "time series",
        "clustered",
        "view",
        "sku_unique",
        "unique at commit",
        "TTL paused until commit",
        "Estimate:",
        "method: Read",
        "disk space:",
        "Safe to start: yes",
    ] {
        assert!(report.contains(want), "{want} missing from:\n{report}");
    }
    assert!(!report.contains("other.c"));
    assert!(scratch_dbs(&dest).await.is_empty());

    // On a terminal (under script(1)) plan and verify show one updating progress line; piped,
    // verify shows none either.
    let on_tty = |cmd: String| async move {
        tokio::task::spawn_blocking(move || {
            Command::new("script")
                .args(["-qec", &cmd, "/dev/null"])
                .stdin(Stdio::null())
                .output()
                .expect("run script(1)")
        })
        .await
        .unwrap()
    };
    let exe = env!("CARGO_BIN_EXE_clustersync");
    let shown = on_tty(format!(
        "{exe} plan --cluster0 '{}' --cluster1 '{}' --include-namespaces '{filter}' >/dev/null",
        source.uri(),
        destination.uri()
    ))
    .await;
    let tty = text(&shown.stdout);
    // The first line is always drawn (later ones at most every 100 ms), and the line is
    // cleared at the end.
    assert!(
        tty.contains("\rexamining the clusters") && tty.trim_end().ends_with("\r\u{1b}[K"),
        "no progress line on a terminal, or not cleared: {tty:?}"
    );
    let shown = on_tty(format!(
        "{exe} verify --cluster0 '{}' --cluster1 '{}' >/dev/null",
        source.uri(),
        destination.uri()
    ))
    .await;
    assert!(
        text(&shown.stdout).contains("\rverifying: "),
        "{:?}",
        text(&shown.stdout)
    );
    let piped = tokio::task::spawn_blocking({
        let (a, b) = (source.uri(), destination.uri());
        move || {
            bin()
                .args(["verify", "--cluster0", &a, "--cluster1", &b])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(piped.status.code(), Some(1), "the clusters differ");
    assert!(!text(&piped.stderr).contains('\r'));

    // The engine's endpoint, through the operator's typed client, in the engine's IDLE state.
    let engine = Engine::spawn_between(&source.uri(), &destination.uri(), &[]);
    engine.wait_ready().await;
    let api = clustersync::operator::engine_api::EngineApi::new(
        reqwest::Client::builder()
            .timeout(Duration::from_secs(150))
            .build()
            .unwrap(),
        format!("http://127.0.0.1:{}", engine.port),
        String::new(),
    );
    let options = serde_json::from_value(serde_json::json!({
        "source": "cluster0", "destination": "cluster1",
        "includeNamespaces": [{ "database": "shop" }],
    }))
    .unwrap();
    let served = api.plan(&options).await.expect("POST /api/v1/plan");
    let names = |p: &Plan| {
        p.namespaces
            .iter()
            .map(|n| (n.namespace.clone(), n.kind, n.documents, n.indexes.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&served), names(&plan));
    assert!(served.safe, "{:#?}", served.risks);
    assert!(scratch_dbs(&dest).await.is_empty());
    // While a sync runs (its destination then holds the data, which the plan says), the plan
    // answers too, and its probe's scratch database is not synced.
    engine
        .start_sync(serde_json::json!({
            "source": "cluster0", "destination": "cluster1",
            "includeNamespaces": [{ "database": "shop" }],
        }))
        .await;
    engine.wait_state("RUNNING", Duration::from_secs(60)).await;
    // RUNNING can come before the first collection is created on the destination.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dest
        .list_database_names()
        .await
        .unwrap()
        .contains(&"shop".to_string())
    {
        assert!(Instant::now() < deadline, "the sync created nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let running = api
        .plan(&options)
        .await
        .expect("POST /api/v1/plan while RUNNING");
    assert_eq!(names(&running), names(&plan));
    assert!(
        running
            .blocking()
            .any(|r| r.kind == RiskKind::DestinationNotEmpty),
        "{:#?}",
        running.risks
    );
    assert!(scratch_dbs(&dest).await.is_empty());
    // A body /start would refuse is refused the same way.
    let (code, v) = engine
        .post(
            "plan",
            serde_json::json!({"source": "cluster0", "destination": "cluster0"}),
        )
        .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (400, Some("InvalidStartOptions")),
        "{v}"
    );
}

/// A source whose oplog has rolled over and spans less time than the copy of its data: the
/// plan blocks (exit 1) on the oplog window and says to enlarge it. Then a plan interrupted
/// while its probe writes still drops its scratch database.
#[tokio::test(flavor = "multi_thread")]
async fn a_short_rolled_over_oplog_blocks_and_an_interrupted_probe_cleans_up() {
    // The test server prunes its oplog to about this many entries.
    let (source, destination) = tokio::join!(
        Server::start_with_args(&["--oplog-max-entries", "200"]),
        Server::start()
    );
    let src = source.client().await;
    let coll = src.database("load").collection::<Document>("docs");
    // About 8 MB, written in a burst: the oplog then spans a second or two at most, and the
    // copy of 8 MB at the test server's measured rates takes longer.
    for batch in 0..8 {
        coll.insert_many(
            (0..1000).map(|i| doc! { "_id": batch * 1000 + i, "pad": "y".repeat(1000) }),
        )
        .await
        .unwrap();
    }
    let oldest = src
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! { "$natural": 1 })
        .await
        .unwrap()
        .unwrap();
    assert!(
        oldest
            .get_document("o")
            .ok()
            .and_then(|o| o.get_str("msg").ok())
            != Some("initiating set"),
        "the oplog has not rolled over: {oldest}"
    );
    let out = plan_cmd(args(
        &source.uri(),
        &destination.uri(),
        &["--output", "json"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let plan = parse(&out);
    assert_eq!(plan.source.oplog_rolled_over, Some(true));
    let oplog = plan
        .blocking()
        .find(|r| r.kind == RiskKind::OplogWindow)
        .unwrap_or_else(|| panic!("no blocking oplog risk: {:#?}", plan));
    assert!(
        oplog.message.contains("replSetResizeOplog") && oplog.message.contains("rolled over"),
        "{}",
        oplog.message
    );
    assert!(!plan.safe);
    assert!(plan.estimate.total_seconds > plan.source.oplog_window_seconds.unwrap() as f64);

    // Interrupted while the probe writes: the scratch database goes all the same.
    let dest = destination.client().await;
    let mut child = bin()
        .arg("plan")
        .args(args(&source.uri(), &destination.uri(), &[]))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while scratch_dbs(&dest).await.is_empty() {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "the probe's scratch database never appeared"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("scratch database was dropped"));
    assert!(
        scratch_dbs(&dest).await.is_empty(),
        "the interrupted probe left its scratch database"
    );
}

const PW: &str = "Pl4n-Secr3t-pw";

/// A source that enforces authentication, with a user lacking the sync's roles: the plan
/// blocks on Roles, naming the grant command; the password given in the connection string
/// appears nowhere in the output.
#[tokio::test(flavor = "multi_thread")]
async fn missing_roles_block_and_passwords_never_show() {
    let (mut source, destination) = tokio::join!(Server::start(), Server::start());
    let root = source.client().await;
    let admin = root.database("admin");
    admin
        .run_command(doc! { "createUser": "root_user", "pwd": PW, "roles": [{ "role": "root", "db": "admin" }] })
        .await
        .unwrap();
    admin
        .run_command(doc! { "createUser": "reader", "pwd": PW, "roles": [{ "role": "readAnyDatabase", "db": "admin" }] })
        .await
        .unwrap();
    root.database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "a": 1 })
        .await
        .unwrap();
    let port = source.port;
    let uri = move |user: &str| {
        format!("mongodb://{user}:{PW}@127.0.0.1:{port}/?directConnection=true&authSource=admin")
    };
    source
        .restart_with_args(&["--auth"], Some(uri("root_user")))
        .await;
    for output in ["text", "json"] {
        let out = plan_cmd(args(
            &uri("reader"),
            &destination.uri(),
            &["--output", output],
        ))
        .await;
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
        assert!(
            !stdout.contains(PW) && !stderr.contains(PW),
            "the password shows:\n{stdout}\n{stderr}"
        );
        assert!(!stdout.contains("reader:"), "a user:password pair shows");
        if output == "json" {
            let plan = parse(&out);
            let roles = plan
                .blocking()
                .find(|r| r.kind == RiskKind::Roles)
                .unwrap_or_else(|| panic!("no roles risk: {:#?}", plan.risks));
            assert!(
                roles.message.contains("grantRolesToUser(\"reader\""),
                "{}",
                roles.message
            );
            assert_eq!(plan.source.hosts, format!("127.0.0.1:{}", source.port));
        } else {
            assert!(stdout.contains("BLOCKING roles:"), "{stdout}");
            assert!(stdout.contains("Safe to start: NO"), "{stdout}");
        }
    }
    // A wrong password: the cluster is unreachable for the plan (a blocking risk), and the
    // password given still shows nowhere.
    let wrong = uri("reader").replace(PW, "Wr0ng-Pa55");
    let out = plan_cmd(args(&wrong, &destination.uri(), &[])).await;
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("Wr0ng-Pa55"), "{all}");
    assert!(all.contains("BLOCKING unreachable"), "{all}");
}

/// Bad usage exits 2 with a message naming the problem, before any cluster is contacted.
#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_2_with_a_clear_message() {
    let good = "mongodb://127.0.0.1:1/?directConnection=true";
    for (extra, want) in [
        (
            args(good, good, &["--include-namespaces", "not json"]),
            "--include-namespaces",
        ),
        (
            args(
                good,
                good,
                &["--exclude-namespaces", r#"[{"collections":["a"]}]"#],
            ),
            "needs \"database\"",
        ),
        (
            args(
                good,
                good,
                &[
                    "--reversible",
                    "--include-namespaces",
                    r#"[{"database":"a"}]"#,
                ],
            ),
            "reversible",
        ),
        (args("mongodb://u:Leak3d-pw@", good, &[]), "--cluster0"),
        (vec!["--cluster0".into(), good.into()], "cluster1"),
        (args(good, good, &["--output", "yaml"]), "yaml"),
    ] {
        let out = plan_cmd(extra.clone()).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(want),
            "{extra:?}: {want} missing from {stderr}"
        );
        assert!(!stderr.contains("Leak3d-pw"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

/// Found by a new user's trial: planned with the same cluster on both sides, the plan said so
/// (a blocking risk) but still wrote its probe into that cluster, the source, whose oplog then
/// held thousands of the probe's entries (and every later plan's catch-up estimate grew). And
/// a source that cannot be examined gave zero totals ("the source holds no documents"), read
/// as facts. Neither may happen; no panic may reach the terminal either (a client dropped as
/// the runtime stopped used to print one now and then).
#[tokio::test(flavor = "multi_thread")]
async fn the_same_cluster_twice_is_not_probed_and_an_unknown_source_is_not_empty() {
    let server = Server::start().await;
    let client = server.client().await;
    client
        .database("shop")
        .collection::<Document>("orders")
        .insert_many((0..2000).map(|i| doc! { "_id": i, "pad": "x".repeat(200) }))
        .await
        .unwrap();
    let probe_entries = || async {
        client
            .database("local")
            .collection::<Document>("oplog.rs")
            .count_documents(doc! { "ns": { "$regex": format!("^{PLAN_PROBE_DB_PREFIX}") } })
            .await
            .unwrap()
    };
    let before = probe_entries().await;
    let out = plan_cmd(args(&server.uri(), &server.uri(), &["--output", "json"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let plan = parse(&out);
    assert!(
        plan.blocking().any(|r| r.message.contains("same cluster")),
        "{:?}",
        plan.risks
    );
    assert_eq!(
        probe_entries().await,
        before,
        "the probe wrote into the cluster it was told is the source"
    );
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );

    let gone = "mongodb://127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=1000";
    for output in ["json", "text"] {
        let out = plan_cmd(args(gone, &server.uri(), &["--output", output])).await;
        assert_eq!(out.status.code(), Some(1));
        let stdout = text(&out.stdout);
        assert!(
            !text(&out.stderr).contains("panicked"),
            "{}",
            text(&out.stderr)
        );
        if output == "json" {
            let plan = parse(&out);
            assert!(plan.scope_unknown.is_some(), "{stdout}");
            assert!(
                !plan.estimate.probe.method.contains("holds no documents"),
                "{stdout}"
            );
        } else {
            assert!(stdout.contains("In scope: unknown"), "{stdout}");
            assert!(stdout.contains("Estimate: unknown"), "{stdout}");
        }
    }
}
