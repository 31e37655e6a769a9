//! End-to-end syncs against real servers: the full seed dataset, a live random workload with
//! the engine SIGKILLed during the copy and during change event application, servers going
//! away, restarts and refusals.

mod common;

use std::time::{Duration, Instant};

use bson::{doc, Document};
use clustersync::mongo::catalog;
use common::{assert_clusters_equal, compare_clusters, state_of, Engine, Server, Workload};
use futures::TryStreamExt;
use serde_json::{json, Value};

const META: &str = "clustersync_reserved_for_internal_use";
const LONG: Duration = Duration::from_secs(180);

async fn commit_and_wait(engine: &Engine) -> Value {
    engine.commit_and_wait(LONG).await
}

fn c0c1() -> Value {
    json!({"source": "cluster0", "destination": "cluster1"})
}

async fn partitions(dest: &mongodb::Client) -> Vec<Document> {
    dest.database(META)
        .collection::<Document>("partitions")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap()
}

/// Bulk documents of about 1 KB, enough that a copy at load level 1 takes seconds.
async fn seed_bulk(client: &mongodb::Client, docs: i32) {
    let coll = client.database("bulk").collection::<Document>("docs");
    let pad = "p".repeat(900);
    for start in (0..docs).step_by(5000) {
        let batch: Vec<Document> = (start..(start + 5000).min(docs))
            .map(|i| doc! { "_id": i, "n": i, "pad": &pad, "nested": { "k": i % 7, "arr": [i, i + 1] } })
            .collect();
        coll.insert_many(batch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_dataset_is_copied_exactly_and_committed() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    common::seed_full_dataset(&src).await.expect("seed");
    // A collection of ~6 MB whose `_id`s mix eleven BSON types, so that partitions (1 MB
    // here) have boundaries of different types.
    let mixed = src.database("seed_a").collection::<Document>("mixed_bulk");
    let pad = "m".repeat(2000);
    let ids: Vec<bson::Bson> = (0..3000i64)
        .map(|i| match i % 11 {
            0 => bson::Bson::Int32(i as i32),
            1 => bson::Bson::Int64(i),
            2 => bson::Bson::Double(i as f64 + 0.5),
            3 => bson::Bson::String(format!("s{i:05}")),
            4 => bson::Bson::ObjectId(bson::oid::ObjectId::new()),
            5 => bson::Bson::Document(doc! { "k": i }),
            6 => bson::Bson::Binary(bson::Binary {
                subtype: bson::spec::BinarySubtype::Generic,
                bytes: i.to_be_bytes().to_vec(),
            }),
            7 => bson::Bson::DateTime(bson::DateTime::from_millis(i * 1000)),
            8 => bson::Bson::Decimal128(format!("{i}.25").parse().unwrap()),
            9 => bson::Bson::Timestamp(bson::Timestamp {
                time: i as u32,
                increment: 1,
            }),
            _ => bson::Bson::RegularExpression(bson::Regex {
                pattern: format!("^r{i}"),
                options: "i".into(),
            }),
        })
        .collect();
    mixed
        .insert_many(ids.into_iter().map(|id| doc! { "_id": id, "pad": &pad }))
        .await
        .unwrap();
    let refused = common::try_create_unsupported_indexes(&src).await.unwrap();
    for r in &refused {
        eprintln!("NOT EXERCISED (the test server refuses this index kind): {r}");
    }
    let engine = Engine::spawn_between(
        &a.uri(),
        &b.uri(),
        &[
            "--partitionSizeMB",
            "1",
            "--loadLevel",
            "4",
            "--verbosity",
            "INFO",
        ],
    );
    engine.start_sync(c0c1()).await;
    let p = engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let pr = &p["progress"];
    assert_eq!(pr["info"], "change event application", "{p}");
    let copied = pr["collectionCopy"]["estimatedCopiedBytes"]
        .as_i64()
        .unwrap();
    assert!(copied > 32_000_000, "two ~16 MB documents at least: {p}");
    assert_eq!(
        pr["collectionCopy"]["estimatedTotalBytes"],
        pr["collectionCopy"]["estimatedCopiedBytes"]
    );
    assert!(pr["lag"]["overallLagSeconds"].as_i64().unwrap() <= 30);
    // Large collections were split into several resumable units.
    let dest = b.client().await;
    let parts = partitions(&dest).await;
    let big_parts = parts
        .iter()
        .filter(|p| p.get_str("db") == Ok("seed_a") && p.get_str("coll") == Ok("big"))
        .count();
    assert!(
        big_parts >= 2,
        "seed_a.big should span several partitions: {parts:?}"
    );
    assert!(parts.iter().all(|p| p.get_bool("done") == Ok(true)));
    commit_and_wait(&engine).await;
    assert_clusters_equal(&src, &dest).await;
    assert!(!engine.log_contents().contains("password"));
}

#[tokio::test(flavor = "multi_thread")]
async fn live_workload_with_sigkills_during_copy_and_cea_converges() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    seed_bulk(&src, 40_000).await;
    common::seed_full_dataset(&src).await.expect("seed");
    // CLUSTERSYNC_TEST_SEED replays another workload (the default is what CI runs).
    let seed = std::env::var("CLUSTERSYNC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    let workload = Workload::start(a.uri(), seed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // loadLevel 4: 8 partitions copied at once with 2 writers each, and 8 change-event
    // writers, so the parallel paths are what is killed and checked (CLUSTERSYNC_TEST_LOAD_LEVEL
    // replays another level).
    let level = std::env::var("CLUSTERSYNC_TEST_LOAD_LEVEL").unwrap_or_else(|_| "4".into());
    let args = [
        "--partitionSizeMB",
        "1",
        "--loadLevel",
        level.leak() as &str,
        "--verbosity",
        "DEBUG",
    ];
    let port = common::free_port().to_string();
    let spawn = || {
        let mut all = vec![
            "--cluster0",
            a.uri().leak() as &str,
            "--cluster1",
            b.uri().leak() as &str,
            "--port",
            port.as_str(),
        ];
        all.extend_from_slice(&args);
        Engine::spawn(&all)
    };
    let e1 = spawn();
    e1.start_sync(c0c1()).await;
    let (code, v) = e1.post("commit", json!({})).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("NotReadyToCommit")),
        "{v}"
    );
    assert!(
        v["errorDescription"].as_str().unwrap().contains("copy"),
        "{v}"
    );

    // SIGKILL in the middle of the copy, once some partitions are recorded as done.
    let deadline = Instant::now() + LONG;
    loop {
        let parts = partitions(&dest).await;
        let done = parts
            .iter()
            .filter(|p| p.get_bool("done") == Ok(true))
            .count();
        if done >= 3 && done + 3 < parts.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copy never reached the middle; progress {}",
            e1.progress().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e1.kill();
    keep_log(&e1, "e1");
    drop(e1);
    let parts = partitions(&dest).await;
    let done_before: Vec<(String, i64)> = parts
        .iter()
        .filter(|p| p.get_bool("done") == Ok(true))
        .map(|p| {
            (
                p.get_str("_id").unwrap().to_string(),
                p.get_i64("copiedBytes").unwrap_or_default(),
            )
        })
        .collect();
    let remaining = parts.len() - done_before.len();
    assert!(remaining > 0 && !done_before.is_empty());

    let e2 = spawn();
    let p = e2.wait_ready().await;
    assert_eq!(
        state_of(&p),
        Some("RUNNING"),
        "restart must return to RUNNING: {p}"
    );
    // Only unfinished partitions are copied again; finished ones are untouched.
    e2.wait_until(
        |p| p["progress"]["info"] == "change event application",
        LONG,
    )
    .await;
    let log = e2.log_contents();
    assert!(
        log.contains(&format!("\"partitions\":{remaining}")),
        "restart should copy exactly the {remaining} unfinished partitions; log:\n{}",
        e2.log_tail(40)
    );
    let after = partitions(&dest).await;
    for (id, bytes) in &done_before {
        let p = after
            .iter()
            .find(|p| p.get_str("_id") == Ok(id.as_str()))
            .unwrap();
        assert_eq!(
            p.get_i64("copiedBytes").unwrap_or_default(),
            *bytes,
            "partition {id} was redone"
        );
    }

    // SIGKILL again while change events are being applied under the live workload.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let applied_before = e2.progress().await["progress"]["totalEventsApplied"]
        .as_u64()
        .unwrap_or(0);
    e2.kill();
    keep_log(&e2, "e2");
    drop(e2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let e3 = spawn();
    let p = e3.wait_ready().await;
    assert_eq!(state_of(&p), Some("RUNNING"), "{p}");
    e3.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = workload.stop().await;
    eprintln!("workload: {stats:?}; events applied before the second kill: {applied_before}");
    assert!(
        stats.inserts() > 100 && stats.updates() > 100 && stats.deletes() > 10 && stats.ddl() > 3,
        "workload too small: {stats:?}"
    );
    commit_and_wait(&e3).await;
    keep_log(&e3, "e3");
    assert_clusters_equal(&src, &dest).await;
}

/// A warning about an unreachable cluster or an interrupted sync (the write-blocking note of a
/// server without `setUserWriteBlockMode` is not one).
fn has_fault_warning(p: &Value) -> bool {
    p["progress"]["warnings"].as_array().is_some_and(|w| {
        w.iter()
            .filter_map(Value::as_str)
            .any(|w| w.contains("cannot reach") || w.contains("interrupted"))
    })
}

/// Keeps a killed engine's log next to the test's temp files, for a failure's post-mortem.
fn keep_log(engine: &Engine, name: &str) {
    let path = std::env::temp_dir().join(format!("clustersync-sigkill-test-{name}.log"));
    let _ = std::fs::write(&path, engine.log_contents());
}

#[tokio::test(flavor = "multi_thread")]
async fn clusters_down_at_start_and_mid_sync() {
    let (mut a, mut b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    seed_bulk(&src, 3_000).await;
    // The destination is down when the engine starts: INITIALIZING with a warning, then IDLE.
    b.stop();
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    let p = engine
        .wait_until(
            |p| {
                p["progress"]["warnings"].as_array().is_some_and(|w| {
                    w.iter()
                        .any(|w| w.as_str().unwrap_or("").contains("cluster1"))
                })
            },
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(state_of(&p), Some("INITIALIZING"), "{p}");
    let (code, v) = engine.post("start", c0c1()).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    b.restart().await;
    let p = engine.wait_ready().await;
    assert_eq!(state_of(&p), Some("IDLE"), "{p}");
    // The source goes away between IDLE and /start: refused, nothing recorded, retry works.
    a.stop();
    let (code, v) = engine.post("start", c0c1()).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (503, Some("ClusterUnavailable")),
        "{v}"
    );
    assert!(
        v["errorDescription"].as_str().unwrap().contains("cluster0"),
        "{v}"
    );
    assert_eq!(state_of(&engine.progress().await), Some("IDLE"));
    a.restart().await;
    let src = a.client().await;
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;

    // The destination goes away mid-sync while the source keeps taking writes.
    b.kill();
    let docs = src.database("bulk").collection::<Document>("docs");
    docs.insert_one(doc! { "_id": "while-destination-down" })
        .await
        .unwrap();
    docs.update_many(
        doc! { "_id": { "$lt": 100 } },
        doc! { "$set": { "touched": 1 } },
    )
    .await
    .unwrap();
    engine
        .wait_until(has_fault_warning, Duration::from_secs(60))
        .await;
    assert!(
        engine.is_running(),
        "the engine must survive a lost destination"
    );
    b.restart().await;
    // The source restarts too: the change stream resumes from the persisted token.
    a.restart().await;
    let src = a.client().await;
    let docs = src.database("bulk").collection::<Document>("docs");
    docs.delete_many(doc! { "_id": { "$gte": 2_900 } })
        .await
        .unwrap();
    docs.insert_one(doc! { "_id": "after-source-restart" })
        .await
        .unwrap();
    engine
        .wait_until(
            |p| !has_fault_warning(p) && p["progress"]["canCommit"] == true,
            LONG,
        )
        .await;
    commit_and_wait(&engine).await;
    let dest = b.client().await;
    assert_clusters_equal(&src, &dest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restarts_return_to_the_persisted_state_and_refuse_other_clusters() {
    let (a, b, c) = tokio::join!(Server::start(), Server::start(), Server::start());
    let src = a.client().await;
    seed_bulk(&src, 2_000).await;
    let port = common::free_port().to_string();
    let same = |extra: &[&str]| {
        let mut args = vec![
            "--cluster0".to_string(),
            a.uri(),
            "--cluster1".into(),
            b.uri(),
            "--port".into(),
            port.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let spawn =
        |args: Vec<String>| Engine::spawn(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let e1 = spawn(same(&[]));
    e1.start_sync(c0c1()).await;
    e1.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    e1.post("pause", json!({})).await;
    e1.wait_state("PAUSED", Duration::from_secs(10)).await;
    e1.kill();
    drop(e1);
    src.database("bulk")
        .collection::<Document>("docs")
        .insert_one(doc! { "_id": "while-stopped" })
        .await
        .unwrap();

    // Other clusters, swapped clusters, another --id: refused, non-zero exit, clear message.
    let refusals: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--cluster0".into(),
                b.uri(),
                "--cluster1".into(),
                a.uri(),
                "--port".into(),
                port.clone(),
            ],
            "swapped",
        ),
        (
            vec![
                "--cluster0".into(),
                c.uri(),
                "--cluster1".into(),
                b.uri(),
                "--port".into(),
                port.clone(),
            ],
            "was started with --cluster0",
        ),
        (same(&["--id", "shard7"]), "--id"),
    ];
    for (args, want) in refusals {
        let e = spawn(args);
        let status = e
            .wait_exit(Duration::from_secs(60))
            .await
            .expect("engine should exit");
        assert!(!status.success());
        let log = e.log_contents();
        assert!(log.contains(want), "expected {want:?} in:\n{log}");
    }
    // The metadata survived the refusals untouched.
    let e2 = spawn(same(&[]));
    let p = e2.wait_ready().await;
    assert_eq!(
        state_of(&p),
        Some("PAUSED"),
        "a paused sync stays paused after a restart: {p}"
    );
    e2.post("resume", json!({})).await;
    commit_and_wait(&e2).await;
    e2.kill();
    drop(e2);
    let e3 = spawn(same(&[]));
    let p = e3.wait_ready().await;
    assert_eq!(state_of(&p), Some("COMMITTED"), "{p}");
    assert_eq!(p["progress"]["canWrite"], true);
    let dest = b.client().await;
    assert_clusters_equal(&src, &dest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn build_indexes_modes() {
    let (a, b, c) = tokio::join!(Server::start(), Server::start(), Server::start());
    let src = a.client().await;
    let coll = src.database("app").collection::<Document>("items");
    coll.insert_many(
        (0..500).map(|i| doc! { "_id": i, "sku": format!("s{i}"), "t": bson::DateTime::now() }),
    )
    .await
    .unwrap();
    src.database("app")
        .run_command(doc! { "createIndexes": "items", "indexes": [
            { "key": { "sku": 1 }, "name": "sku_1", "unique": true },
            { "key": { "t": 1 }, "name": "t_1", "expireAfterSeconds": 60 },
        ] })
        .await
        .unwrap();
    let never = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    let before = Engine::spawn_between(&a.uri(), &c.uri(), &[]);
    never
        .start_sync(json!({"source":"cluster0","destination":"cluster1","buildIndexes":"never"}))
        .await;
    before
        .start_sync(
            json!({"source":"cluster0","destination":"cluster1","buildIndexes":"beforeDataCopy"}),
        )
        .await;
    // During the sync the destination's unique index is not unique and its TTL expires nothing.
    before
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let cc = c.client().await;
    let specs: Vec<Document> = cc
        .database("app")
        .collection::<Document>("items")
        .list_indexes()
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|m| bson::to_document(&m).unwrap())
        .collect();
    let sku = specs
        .iter()
        .find(|s| s.get_str("name") == Ok("sku_1"))
        .expect("sku_1 built before commit");
    assert!(!sku.get_bool("unique").unwrap_or(false), "{sku}");
    let ttl = specs
        .iter()
        .find(|s| s.get_str("name") == Ok("t_1"))
        .unwrap();
    assert_eq!(
        ttl.get_i32("expireAfterSeconds").unwrap_or_default(),
        i32::MAX,
        "{ttl}"
    );
    commit_and_wait(&before).await;
    assert_clusters_equal(&src, &cc).await;
    commit_and_wait(&never).await;
    let diffs = compare_clusters(&src, &b.client().await).await.unwrap();
    assert!(
        !diffs.is_empty() && diffs.iter().all(|d| d.contains("index")),
        "only indexes may differ with buildIndexes never: {diffs:?}"
    );
    let names: Vec<String> = b
        .client()
        .await
        .database("app")
        .collection::<Document>("items")
        .list_index_names()
        .await
        .unwrap();
    assert_eq!(names, vec!["_id_".to_string()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn special_collections_and_ddl_during_sync() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    common::seed_full_dataset(&src).await.expect("seed");
    src.database("scratch")
        .collection::<Document>("x")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &["--verbosity", "INFO"]);
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;

    let sb = src.database("seed_b");
    let run = |cmd: Document| {
        let sb = sb.clone();
        async move {
            sb.run_command(cmd.clone())
                .await
                .unwrap_or_else(|e| panic!("{cmd}: {e}"))
        }
    };
    // Time series, capped and clustered collections take writes.
    sb.collection::<Document>("timeseries")
        .insert_many((0..20).map(|i| doc! { "t": bson::DateTime::from_millis(1_700_000_000_000 + i * 60_000), "m": { "sensor": "late" }, "v": i }))
        .await
        .unwrap();
    sb.collection::<Document>("capped")
        .insert_many((0..10).map(|i| doc! { "late": i }))
        .await
        .unwrap();
    sb.collection::<Document>("clustered")
        .insert_one(doc! { "_id": 100_000, "late": true })
        .await
        .unwrap();
    // Validators: the destination takes what the source took.
    sb.collection::<Document>("validated_warn")
        .insert_one(doc! { "_id": "late-invalid", "name": 12 })
        .await
        .unwrap();
    run(doc! { "collMod": "validated_strict", "validationLevel": "moderate" }).await;
    // Views: new, modified, dropped.
    run(
        doc! { "create": "late_view", "viewOn": "indexed", "pipeline": [{ "$match": { "k": 1 } }] },
    )
    .await;
    run(doc! { "collMod": "late_view", "viewOn": "indexed", "pipeline": [{ "$match": { "k": 2 } }] }).await;
    run(doc! { "drop": "view_pipeline" }).await;
    // A new collection with options and indexes, some dropped again.
    run(doc! { "create": "late_coll", "validator": { "n": { "$type": "int" } }, "collation": { "locale": "fr", "strength": 2 } }).await;
    sb.collection::<Document>("late_coll")
        .insert_many((0..50).map(|i| doc! { "_id": i, "n": i, "s": format!("v{i}") }))
        .await
        .unwrap();
    run(doc! { "createIndexes": "late_coll", "indexes": [
        { "key": { "s": 1 }, "name": "s_unique", "unique": true },
        { "key": { "n": 1 }, "name": "n_ttl", "expireAfterSeconds": 3600 },
        { "key": { "s": 1, "n": -1 }, "name": "s_n", "hidden": true },
    ] })
    .await;
    run(doc! { "dropIndexes": "indexed", "index": "nick_1" }).await;
    // Drops of a collection and of a whole database; a rename within a database.
    run(doc! { "drop": "prepost" }).await;
    src.database("scratch").drop().await.unwrap();
    src.database("admin")
        .run_command(
            doc! { "renameCollection": "seed_b.collated", "to": "seed_b.collated_renamed" },
        )
        .await
        .unwrap();
    sb.collection::<Document>("collated_renamed")
        .insert_one(doc! { "_id": "after-rename" })
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_secs(2)).await;
    commit_and_wait(&engine).await;
    let dest = b.client().await;
    assert_clusters_equal(&src, &dest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reversible_round_trip_with_multiple_reversals() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let (ca, cb) = (a.client().await, b.client().await);
    seed_bulk(&ca, 2_000).await;
    let workload = Workload::start_with_options(
        a.uri(),
        7,
        common::WorkloadOptions {
            workers: 1,
            ..Default::default()
        },
    );
    let port = common::free_port().to_string();
    let spawn = || {
        Engine::spawn(&[
            "--cluster0",
            a.uri().leak(),
            "--cluster1",
            b.uri().leak(),
            "--port",
            port.as_str(),
        ])
    };
    let e1 = spawn();
    e1.start_sync(json!({"source": "cluster0", "destination": "cluster1", "reversible": true}))
        .await;
    e1.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = workload.stop().await;
    assert!(stats.total_ok() > 50, "{stats:?}");
    commit_and_wait(&e1).await;
    assert_clusters_equal(&ca, &cb).await;

    // Applications move to cluster1 and write there; then the sync is reversed.
    let moved = cb.database("bulk").collection::<Document>("docs");
    moved
        .insert_one(doc! { "_id": "written-on-cluster1" })
        .await
        .unwrap();
    moved
        .update_many(
            doc! { "_id": { "$lt": 50 } },
            doc! { "$set": { "after_cutover": true } },
        )
        .await
        .unwrap();
    moved
        .delete_many(doc! { "_id": { "$gte": 1_950 } })
        .await
        .unwrap();
    cb.database("bulk")
        .run_command(doc! { "create": "born_on_cluster1" })
        .await
        .unwrap();
    cb.database("bulk")
        .collection::<Document>("born_on_cluster1")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    let (code, v) = e1.post("reverse", json!({})).await;
    assert_eq!(code, 200, "{v}");
    let p = e1.wait_state("RUNNING", Duration::from_secs(30)).await;
    assert_eq!(
        p["progress"]["directionMapping"]["Source"],
        format!("cluster1: 127.0.0.1:{}", b.port),
        "{p}"
    );
    // A restart keeps the reversed direction (the metadata moved to cluster0).
    e1.kill();
    drop(e1);
    let e2 = spawn();
    let p = e2.wait_ready().await;
    assert_eq!(state_of(&p), Some("RUNNING"), "{p}");
    assert_eq!(
        p["progress"]["directionMapping"]["Destination"],
        format!("cluster0: 127.0.0.1:{}", a.port)
    );
    moved
        .insert_one(doc! { "_id": "written-during-reverse-sync" })
        .await
        .unwrap();
    e2.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    commit_and_wait(&e2).await;
    assert_clusters_equal(&cb, &ca).await;
    let back = ca.database("bulk").collection::<Document>("docs");
    for id in ["written-on-cluster1", "written-during-reverse-sync"] {
        assert!(
            back.find_one(doc! { "_id": id }).await.unwrap().is_some(),
            "{id} did not reach cluster0"
        );
    }

    // And once more the other way (multiple reversals).
    back.insert_one(doc! { "_id": "second-reversal" })
        .await
        .unwrap();
    let (code, v) = e2.post("reverse", json!({})).await;
    assert_eq!(code, 200, "{v}");
    let p = e2
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    assert_eq!(
        p["progress"]["directionMapping"]["Source"],
        format!("cluster0: 127.0.0.1:{}", a.port)
    );
    commit_and_wait(&e2).await;
    assert_clusters_equal(&ca, &cb).await;
    assert!(moved
        .find_one(doc! { "_id": "second-reversal" })
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn events_lost_from_the_oplog_stop_the_sync_with_the_reason() {
    // A source whose oplog keeps 50 entries (pruned every 1000 writes).
    let (a, b) = tokio::join!(
        Server::start_with_args(&["--oplog-max-entries", "50"]),
        Server::start()
    );
    let src = a.client().await;
    src.database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 0 })
        .await
        .unwrap();
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let (code, _) = engine.post("pause", json!({})).await;
    assert_eq!(code, 200);
    // While paused, far more changes than the oplog keeps: the resume point rolls off.
    let coll = src.database("app").collection::<Document>("c");
    for chunk in 0..25 {
        coll.insert_many((0..100).map(|i| doc! { "_id": 1 + chunk * 100 + i }))
            .await
            .unwrap();
    }
    let (code, _) = engine.post("resume", json!({})).await;
    assert_eq!(code, 200);
    let p = engine
        .wait_until(
            |p| {
                p["progress"]["warnings"]
                    .to_string()
                    .contains("no longer holds")
            },
            LONG,
        )
        .await;
    let w = p["progress"]["warnings"].to_string();
    assert!(
        w.contains("enlarge the source oplog") && w.contains("from scratch"),
        "{p}"
    );
    assert_eq!(p["progress"]["canCommit"], false);
    // A supervisor (the operator) tells a stopped sync from a warning by `syncError`.
    assert!(
        p["progress"]["syncError"]
            .as_str()
            .is_some_and(|e| e.contains("no longer holds")),
        "{p}"
    );
    let (code, v) = engine.post("commit", json!({})).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("NotReadyToCommit")),
        "{v}"
    );
    assert!(engine.is_running());
}

/// mongosync's `detectRandomId`: a large collection with random `_id`s is planned as one
/// natural-order partition; ascending `_id`s and `detectRandomId: false` keep `_id` ranges.
/// The 20 GiB threshold is lowered for the test through the planner's tuning.
#[tokio::test(flavor = "multi_thread")]
async fn random_ids_are_planned_in_natural_order() {
    use clustersync::engine::store::CopyOrder;
    use clustersync::engine::sync::copy::{self, CopyTuning};
    use clustersync::mongo::catalog;

    let server = Server::start().await;
    let client = server.client().await;
    let db = client.database("plan");
    let uuids: Vec<Document> = (0..2_000)
        .map(|i| doc! { "_id": bson::Binary::from_uuid(bson::Uuid::new()), "n": i, "pad": "x".repeat(200) })
        .collect();
    db.collection::<Document>("uuids")
        .insert_many(uuids)
        .await
        .unwrap();
    let counters: Vec<Document> = (0..2_000i64)
        .map(|i| doc! { "_id": i, "n": i, "pad": "x".repeat(200) })
        .collect();
    db.collection::<Document>("counters")
        .insert_many(counters)
        .await
        .unwrap();

    let tuning = CopyTuning {
        partition_bytes: 100_000,
        random_id_natural_bytes: 200_000,
        ..CopyTuning::for_load_level(4, 64 << 20)
    };
    let spec = |name: &str| {
        let client = client.clone();
        let name = name.to_string();
        async move {
            catalog::find_spec(&client, "plan", &name)
                .await
                .unwrap()
                .expect("collection exists")
        }
    };
    let (parts, _) = copy::plan(&client, &spec("uuids").await, false, true, &tuning, None)
        .await
        .unwrap();
    assert_eq!(parts.len(), 1, "one natural-order partition");
    assert_eq!(parts[0].order, CopyOrder::Natural);

    let (parts, _) = copy::plan(&client, &spec("uuids").await, false, false, &tuning, None)
        .await
        .unwrap();
    assert!(
        parts.len() > 1 && parts.iter().all(|p| p.order == CopyOrder::Id),
        "detectRandomId off: _id ranges"
    );

    let (parts, _) = copy::plan(&client, &spec("counters").await, false, true, &tuning, None)
        .await
        .unwrap();
    assert!(
        parts.len() > 1 && parts.iter().all(|p| p.order == CopyOrder::Id),
        "ascending _ids: _id ranges"
    );
}

/// A view created on the source while the destination holds a collection of that name: the
/// view's create event replaces it. The test server's `listCollections` shows a view being
/// created as a plain collection for a moment; a sync whose catalog listing caught that moment
/// (CI, seed 1 of `differential_no_faults`) created a collection, the create event then found
/// the name taken and left it, and the verifier refused the commit ("a view on the source but
/// a collection on the destination"). The moment cannot be hit on demand, so the collection
/// the listing would have made is put there directly (the destination takes user writes
/// until the commit on this server), and the event is then the same one.
#[tokio::test(flavor = "multi_thread")]
async fn a_create_event_replaces_a_namespace_of_another_kind() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    src.database("shop")
        .collection::<Document>("orders")
        .insert_many((0..20).map(|i| doc! { "_id": i, "r": i % 7 }))
        .await
        .unwrap();
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &["--verbosity", "INFO"]);
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    // What the glitched listing made: an empty collection under the view's name.
    dest.database("shop")
        .run_command(doc! { "create": "recent" })
        .await
        .unwrap();
    src.database("shop")
        .run_command(doc! { "create": "recent", "viewOn": "orders", "pipeline": [{ "$match": { "r": { "$lt": 4 } } }] })
        .await
        .unwrap();
    // And the reverse: a view where the source creates a collection.
    dest.database("shop")
        .run_command(doc! { "create": "archive", "viewOn": "orders", "pipeline": [] })
        .await
        .unwrap();
    src.database("shop")
        .collection::<Document>("archive")
        .insert_one(doc! { "_id": 1, "old": true })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    commit_and_wait(&engine).await;
    assert_clusters_equal(&src, &dest).await;
    assert!(
        engine.log_contents().contains("replacing it"),
        "{}",
        engine.log_tail(30)
    );
}

/// A collection of the `shop` database, as listed.
async fn spec_of(client: &mongodb::Client, name: &str) -> catalog::CollSpec {
    catalog::find_spec(client, "shop", name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("shop.{name} exists"))
}

/// An engine killed while creating a collection whose options it aligns (on this server:
/// created without its validator, then `collMod` for each validation option, in the source's
/// order) leaves the collection without them, and the restarted catalog phase found the name
/// taken and moved on: the commit was refused for a missing validator (CI,
/// `live_workload_with_sigkills_during_copy_and_cea_converges`). The kill cannot be timed
/// between two commands on demand, so what it leaves is made directly: the catalog phase run
/// again must finish the collection, in the source's option order; a create event replayed
/// over a collection that holds documents must at least set the values.
#[tokio::test(flavor = "multi_thread")]
async fn a_collection_left_half_made_is_finished_when_created_again() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    // Validation set after the create, so the source lists it after the collation; on the
    // destination, what the killed engine left: the collection without its validation
    // options, holding `held` (if any) already.
    let half_made = |name: &'static str, validator: Document, held: Option<Document>| {
        let (src, dest) = (src.clone(), dest.clone());
        async move {
            let collation = doc! { "locale": "en", "strength": 2 };
            for (client, with_validator) in [(&src, true), (&dest, false)] {
                let shop = client.database("shop");
                shop.run_command(doc! { "create": name, "collation": collation.clone() })
                    .await
                    .unwrap();
                if with_validator {
                    let mut cmd = doc! { "collMod": name };
                    cmd.extend(validator.clone());
                    shop.run_command(cmd).await.unwrap();
                }
            }
            if let Some(d) = held {
                dest.database("shop")
                    .collection::<Document>(name)
                    .insert_one(d)
                    .await
                    .unwrap();
            }
        }
    };
    let qty = doc! { "validator": { "qty": { "$gte": 0 } } };
    let mut strict = qty.clone();
    strict.extend(doc! { "validationLevel": "strict", "validationAction": "error" });
    half_made("orders", strict, None).await;
    half_made("filled", qty.clone(), Some(doc! { "_id": 1, "qty": 3 })).await;
    let order =
        |spec: &catalog::CollSpec| -> Vec<String> { spec.options.keys().cloned().collect() };
    let source = spec_of(&src, "orders").await;
    catalog::create_for_copy(&dest, &source).await.unwrap();
    let made = spec_of(&dest, "orders").await;
    assert_eq!(
        order(&made),
        order(&source),
        "options in the source's order"
    );
    assert_eq!(
        bson::to_vec(&made.options).unwrap(),
        bson::to_vec(&source.options).unwrap(),
        "options as the source's: {:?} vs {:?}",
        made.options,
        source.options
    );

    // A replayed create event over a collection with documents: kept, values set.
    let source = spec_of(&src, "filled").await;
    catalog::create_as_announced(&dest, &source).await.unwrap();
    let made = spec_of(&dest, "filled").await;
    assert_eq!(
        made.options.get("validator"),
        source.options.get("validator")
    );
    assert_eq!(
        dest.database("shop")
            .collection::<Document>("filled")
            .count_documents(doc! {})
            .await
            .unwrap(),
        1,
        "the documents are kept"
    );

    // The copy's own path over a half-made collection that already holds documents (killed
    // after writing some): kept, values set by collMod.
    half_made("held", qty, Some(doc! { "_id": 7, "qty": 1 })).await;
    let held = dest.database("shop").collection::<Document>("held");
    let source = spec_of(&src, "held").await;
    catalog::create_for_copy(&dest, &source).await.unwrap();
    let made = spec_of(&dest, "held").await;
    assert_eq!(
        made.options.get("validator"),
        source.options.get("validator"),
        "{:?}",
        made.options
    );
    assert_eq!(
        held.find_one(doc! { "_id": 7 }).await.unwrap(),
        Some(doc! { "_id": 7, "qty": 1 }),
        "the documents are kept"
    );
}

/// Issue 17: the copy's ETA, per namespace and overall, against a destination slowed on
/// purpose (every byte the engine sends it passes a 300 KB/s link), in the default
/// configuration (16 MB in three collections: long enough that a third of it is past the
/// copy's start-up). The user's question is "when will the copy be done": the first ETA
/// `/progress` gives once a third of the copy is done must land within 25% of the real finish.
/// Before that it must not guess: no ETA while the measured window is under 10 s.
#[tokio::test(flavor = "multi_thread")]
async fn the_copy_eta_on_a_slowed_destination_lands_within_a_quarter_of_the_finish() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let pad = "e".repeat(1000);
    for (coll, n) in [("big", 12000), ("mid", 3000), ("small", 600)] {
        let docs: Vec<Document> = (0..n)
            .map(|i| doc! { "_id": i, "pad": &pad, "i": i })
            .collect();
        for chunk in docs.chunks(2000) {
            src.database("eta")
                .collection::<Document>(coll)
                .insert_many(chunk.to_vec())
                .await
                .unwrap();
        }
    }
    let proxy =
        common::proxy::ThrottledProxy::start(format!("127.0.0.1:{}", b.port), 300_000).await;
    let engine = Engine::spawn_between(&a.uri(), &common::uri_for_port(proxy.port), &[]);
    engine.wait_ready().await;
    engine.start_sync(c0c1()).await;

    // When `/progress` first showed the copy's size.
    let mut copy_began: Option<Instant> = None;
    // (when, predicted finish, fraction copied then)
    let mut prediction: Option<(Instant, Instant, f64)> = None;
    let mut saw_namespace_eta = false;
    let deadline = Instant::now() + Duration::from_secs(240);
    let finished = loop {
        assert!(
            Instant::now() < deadline,
            "the copy did not finish in 240 s"
        );
        let p = engine.progress().await;
        let now = Instant::now();
        let copy = &p["progress"]["collectionCopy"];
        let copied = copy["estimatedCopiedBytes"].as_f64().unwrap_or(0.0);
        let total = copy["estimatedTotalBytes"].as_f64().unwrap_or(1.0).max(1.0);
        let eta = p["progress"]["estimatedSecondsToCopyComplete"].as_i64();
        let ns = &p["progress"]["namespaces"];
        if std::env::var("ETA_DEBUG").is_ok() {
            eprintln!(
                "{:?} copied {copied} of {total} eta {eta:?} rate {} info {}",
                now, ns["copyBytesPerSecond"], p["progress"]["info"]
            );
        }
        if total > 1.0 && copy_began.is_none() {
            copy_began = Some(now);
        }
        // The copy may have begun up to a poll (0.5 s, and the request's own time) before a
        // poll saw it: a second of slack.
        if let (Some(t), Some(e)) = (copy_began, eta) {
            assert!(
                now.duration_since(t) >= Duration::from_secs(9),
                "an ETA ({e} s) {:?} into the copy: too early to be honest",
                now.duration_since(t)
            );
        }
        if let Some(list) = ns["collections"].as_array() {
            saw_namespace_eta |= list.iter().any(|c| {
                c["phase"] == "copying" && c["estimatedSecondsRemaining"].as_i64().is_some()
            });
            // Sized when the copy was planned: documents of a total, not only a count.
            for c in list.iter().filter(|c| c["namespace"] == "eta.big") {
                assert_eq!(c["totalDocuments"], 12000, "{c}");
            }
        }
        if prediction.is_none() && copied >= total / 3.0 {
            if let Some(e) = eta {
                if std::env::var("ETA_DEBUG").is_ok() {
                    eprintln!("{}", serde_json::to_string_pretty(&p).unwrap());
                }
                prediction = Some((now, now + Duration::from_secs(e as u64), copied / total));
            } else {
                assert!(
                    copied < total * 2.0 / 3.0,
                    "two thirds copied and still no ETA: {p}"
                );
            }
        }
        let counts = &ns["counts"];
        if counts["done"].as_u64() == Some(3)
            || (prediction.is_some() && p["progress"]["info"] != "collection copy")
        {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (at, predicted, fraction) = prediction.expect("an ETA once a third was copied");
    let real = finished.duration_since(at).as_secs_f64();
    let said = predicted.duration_since(at).as_secs_f64();
    eprintln!(
        "ETA at {:.0}% copied: {said:.1} s; the copy finished {real:.1} s later",
        fraction * 100.0
    );
    assert!(
        (said - real).abs() <= 0.25 * real,
        "the ETA said {said:.1} s, the copy took {real:.1} s more"
    );
    assert!(
        saw_namespace_eta,
        "no namespace ever showed an ETA while copying"
    );
    let p = engine.progress().await;
    let ns = &p["progress"]["namespaces"];
    assert_eq!(ns["counts"]["done"], 3, "{ns}");
    let listed: Vec<&str> = ns["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for c in ns["collections"].as_array().unwrap() {
        assert_eq!(c["copiedBytes"], c["totalBytes"], "{c}");
        let want = match c["namespace"].as_str() {
            Some("eta.big") => 12000,
            Some("eta.mid") => 3000,
            _ => 600,
        };
        assert_eq!(c["copiedDocuments"], want, "{c}");
        assert_eq!(c["totalDocuments"], want, "{c}");
    }
    assert_eq!(
        p["progress"]["estimatedSecondsToCopyComplete"],
        Value::Null,
        "no copy ETA once the copy is done"
    );
}
