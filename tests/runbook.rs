//! mongosync's runbooks, run against the engine as written (issue 15's "runbook breakers"):
//! invoked as `mongosync`; its logs (mongosync's file name and keys) rotated by `kill -USR1`
//! mid-copy; a sync that stops for good ends the process non-zero and is reported, not
//! retried, after a restart; every documented option starts the engine and the meaningful
//! ones are honoured. Real test servers and the real binary throughout.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use common::{state_of, Engine, Server};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn seed(src: &mongodb::Client, docs: i32) {
    let pad = "p".repeat(2000);
    let c = src.database("shop").collection::<Document>("orders");
    for chunk in 0..(docs / 1000).max(1) {
        c.insert_many((0..1000.min(docs)).map(|i| doc! { "_id": chunk * 1000 + i, "pad": &pad }))
            .await
            .unwrap();
    }
}

/// A systemd unit's `ExecStart=/usr/local/bin/mongosync --cluster0 … --logPath …` works: the
/// binary invoked as `mongosync` is the engine, and logs as mongosync does (`mongosync.log`;
/// `level`, `time`, `message`, `mongosyncID`, `pid`).
#[tokio::test(flavor = "multi_thread")]
async fn invoked_as_mongosync_it_is_the_engine_and_logs_like_it() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let logs = tempfile::tempdir().unwrap();
    let port = common::free_port().to_string();
    let engine = Engine::spawn_as_mongosync(
        &[
            "--cluster0",
            &a.uri(),
            "--cluster1",
            &b.uri(),
            "--port",
            &port,
            "--logPath",
            logs.path().to_str().unwrap(),
            "--verbosity",
            "INFO",
        ],
        &[],
    );
    let p = engine.wait_ready().await;
    assert_eq!(state_of(&p), Some("IDLE"), "{}", engine.log_tail(20));
    let file = logs.path().join("mongosync.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while lines(&file).is_empty() {
        assert!(Instant::now() < deadline, "no lines in {}", file.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = &lines(&file)[0];
    for key in ["level", "time", "message", "mongosyncID", "pid"] {
        assert!(first.get(key).is_some(), "{key} missing: {first}");
    }
    assert_eq!(first["mongosyncID"], "coordinator");
    assert_eq!(first["pid"], engine.pid());
    assert_eq!(first["level"], "info");
    let out = std::process::Command::new(engine.dir().join("mongosync"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("mongosync "),
        "{out:?}"
    );
    engine.terminate();
    assert!(engine.wait_exit(Duration::from_secs(20)).await.is_some());
}

/// `kill -USR1 <pid>` (mongosync's log rotation, and logrotate's `postrotate`) mid-copy: the
/// engine goes on, the old lines are in a rotated file, new lines in a new `clustersync.log`,
/// and the sync reaches canCommit. Before, the signal killed the engine.
#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_rotates_the_log_mid_copy_and_the_sync_goes_on() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    seed(&src, 20_000).await;
    let logs = tempfile::tempdir().unwrap();
    let engine = Engine::spawn_between(
        &a.uri(),
        &b.uri(),
        &[
            "--logPath",
            logs.path().to_str().unwrap(),
            "--verbosity",
            "DEBUG",
        ],
    );
    engine.wait_ready().await;
    let (code, v) = engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let active = logs.path().join("clustersync.log");
    for round in 0..3 {
        let status = std::process::Command::new("kill")
            .args(["-USR1", &engine.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            engine.is_running(),
            "SIGUSR1 #{round} ended the engine: {}",
            engine.log_tail(20)
        );
        let p = engine.progress().await;
        assert!(state_of(&p).is_some(), "{p}");
    }
    let p = engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    assert_eq!(state_of(&p), Some("RUNNING"));
    let rotated: Vec<String> = std::fs::read_dir(logs.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("clustersync-") && n.ends_with(".log"))
        .collect();
    assert!(!rotated.is_empty(), "no rotated file");
    let now = lines(&active);
    assert!(
        now.iter()
            .any(|l| l.to_string().contains("log rotated on SIGUSR1")),
        "the new file has lines written after the rotation: {now:?}"
    );
    engine.terminate();
    engine.wait_exit(Duration::from_secs(20)).await;
}

/// A sync that stops for good (its resume point rolled off a tiny source oplog while paused)
/// is reported in `syncError`, then the process exits non-zero, as mongosync does, so that a
/// supervisor notices; restarted, the engine reports the persisted reason, stays up and
/// refuses to resume. Before, it kept running in RUNNING forever.
#[tokio::test(flavor = "multi_thread")]
async fn a_sync_that_stops_exits_non_zero_and_is_reported_after_a_restart() {
    let (a, b) = tokio::join!(
        Server::start_with_args(&["--oplog-max-entries", "50"]),
        Server::start()
    );
    let src = a.client().await;
    let coll = src.database("app").collection::<Document>("c");
    coll.insert_one(doc! { "_id": 0 }).await.unwrap();
    let command = common::EngineCommand::between(&a.uri(), &b.uri(), &[]);
    let env = [("CLUSTERSYNC_STOPPED_EXIT_DELAY_MS", "3000")];
    let engine = command.spawn(&env);
    engine.wait_ready().await;
    engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    assert_eq!(engine.post("pause", json!({})).await.0, 200);
    for chunk in 0..25 {
        coll.insert_many((0..100).map(|i| doc! { "_id": 1 + chunk * 100 + i }))
            .await
            .unwrap();
    }
    assert_eq!(engine.post("resume", json!({})).await.0, 200);
    let p = engine
        .wait_until(|p| !p["progress"]["syncError"].is_null(), LONG)
        .await;
    let error = p["progress"]["syncError"].as_str().unwrap().to_string();
    assert!(error.contains("oplog"), "{error}");
    let stopped = Instant::now();
    // Until it exits, the API answers new connections too (a runbook's curl opens one per
    // poll): a new user found it dark for those seconds.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let fresh = reqwest::Client::new()
        .get(engine.url("progress"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .expect("the API answers a new connection while the stopped engine lingers");
    let body: Value = fresh.json().await.unwrap();
    assert_eq!(body["progress"]["syncError"].as_str(), Some(error.as_str()));
    let exit = engine
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the engine exits once the sync stopped");
    assert_eq!(exit.code(), Some(1), "{}", engine.log_tail(10));
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "it reported the stop for a while first"
    );

    // Restarted (a supervisor's job): the reason is reported, nothing is retried.
    let again = command.spawn(&env);
    let p = again
        .wait_until(|p| !p["progress"]["syncError"].is_null(), LONG)
        .await;
    assert_eq!(p["progress"]["syncError"].as_str(), Some(error.as_str()));
    assert_eq!(p["progress"]["canCommit"], false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        again.is_running(),
        "a restored stop does not exit again (no restart loop): {}",
        again.log_tail(10)
    );
    let (code, v) = again.post("pause", json!({})).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    assert!(
        v["errorDescription"]
            .as_str()
            .is_some_and(|d| d.contains("start a new sync")),
        "{v}"
    );
    again.terminate();
    again.wait_exit(Duration::from_secs(20)).await;
}

/// mongosync's documented options start the engine (before: `unknown field`, exit 2);
/// `--metricsLoggingFilepath` writes metrics and `--createIndexesBatchSize` builds the indexes
/// in batches (every index arrives). The YAML keys are covered by `engine::config`'s tests.
#[tokio::test(flavor = "multi_thread")]
async fn documented_options_start_the_engine_and_are_honoured() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dst = b.client().await;
    let items = src.database("shop").collection::<Document>("items");
    items
        .insert_many((0..100).map(|i| doc! { "_id": i, "a": i, "b": i, "c": i, "d": i, "e": i }))
        .await
        .unwrap();
    for k in ["a", "b", "c", "d", "e"] {
        src.database("shop")
            .run_command(doc! { "createIndexes": "items", "indexes": [{ "key": { k: 1 }, "name": format!("{k}_1") }] })
            .await
            .unwrap();
    }
    let metrics = tempfile::tempdir().unwrap();
    let hot = r#"{"db":"shop","collection":"items","ids":[{"_id":1}]}"#;
    let engine = Engine::spawn_with_env(
        &[
            "--cluster0",
            &a.uri(),
            "--cluster1",
            &b.uri(),
            "--port",
            &common::free_port().to_string(),
            "--metricsLoggingFilepath",
            metrics.path().to_str().unwrap(),
            "--hotDocIDs",
            hot,
            "--createIndexesBatchSize",
            "3",
            "--acceptDisclaimer",
            "--disableTelemetry",
            "--enableCappedCollectionHandling",
        ],
        &[("CLUSTERSYNC_METRICS_LOG_SECONDS", "1")],
    );
    engine.wait_ready().await;
    engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let names: Vec<String> = dst
        .database("shop")
        .collection::<Document>("items")
        .list_index_names()
        .await
        .unwrap();
    for k in ["a_1", "b_1", "c_1", "d_1", "e_1"] {
        assert!(names.contains(&k.to_string()), "{names:?}");
    }
    let file = metrics.path().join("clustersync_metrics.log");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        text.contains("# time ") && text.contains("clustersync_engine_state"),
        "{}",
        text.chars().take(300).collect::<String>()
    );
    engine.terminate();
    engine.wait_exit(Duration::from_secs(20)).await;

    // A malformed --hotDocIDs is refused, naming the flag and the form.
    let bad = Engine::spawn_between(&a.uri(), &b.uri(), &["--hotDocIDs", "{\"db\":1}"]);
    let exit = bad.wait_exit(Duration::from_secs(20)).await.expect("exits");
    assert_eq!(exit.code(), Some(2));
    assert!(
        bad.log_contents().contains("--hotDocIDs 1"),
        "{}",
        bad.log_contents()
    );
}

/// A destination that holds mongosync's metadata (a mongosync migration ran there) is refused
/// at `/start`, as mongosync refuses it; a source database named `__mdb_internal…` (Atlas's
/// internal prefix, which mongosync ignores) is not synced.
#[tokio::test(flavor = "multi_thread")]
async fn mongosyncs_metadata_is_refused_and_atlas_internal_databases_are_skipped() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let (src, dst) = (a.client().await, b.client().await);
    src.database("app")
        .collection::<Document>("c")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    src.database("__mdb_internal_atlas")
        .collection::<Document>("x")
        .insert_one(doc! { "_id": 1 })
        .await
        .unwrap();
    dst.database("__mdb_internal_mongosync")
        .collection::<Document>("resumeData")
        .insert_one(doc! { "_id": "coordinator" })
        .await
        .unwrap();
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.wait_ready().await;
    let body = json!({"source": "cluster0", "destination": "cluster1"});
    let (code, v) = engine.post("start", body.clone()).await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("DestinationNotEmpty")),
        "{v}"
    );
    assert!(
        v["errorDescription"]
            .as_str()
            .is_some_and(|d| d.contains("__mdb_internal_mongosync") && d.contains("dropDatabase")),
        "{v}"
    );
    dst.database("__mdb_internal_mongosync")
        .drop()
        .await
        .unwrap();
    let (code, v) = engine.post("start", body).await;
    assert_eq!(code, 200, "{v}");
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let names = dst.list_database_names().await.unwrap();
    assert!(names.contains(&"app".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("__mdb_internal")),
        "an Atlas-internal database was synced: {names:?}"
    );
    engine.terminate();
    engine.wait_exit(Duration::from_secs(20)).await;
}

/// While an SRV name resolves (slowly, or never), the engine already answers `/healthz` and
/// reports INITIALIZING, then gives up with a message naming the record, within the deadline.
/// Before, it bound its port and answered nothing.
#[tokio::test(flavor = "multi_thread")]
async fn health_is_served_from_the_first_moment_while_an_srv_name_resolves() {
    let port = common::free_port().to_string();
    let engine = Engine::spawn_with_env(
        &[
            "--cluster0",
            "mongodb+srv://u:s3cretpw@nonexistent.invalid/",
            "--cluster1",
            "mongodb://127.0.0.1:1/?directConnection=true",
            "--port",
            &port,
        ],
        &[("CLUSTERSYNC_SRV_RESOLVE_SECONDS", "8")],
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let health = loop {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            break r.status().as_u16();
        }
        assert!(
            Instant::now() < deadline,
            "no /healthz: {}",
            engine.log_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(health, 200);
    let p = engine.progress().await;
    assert_eq!(state_of(&p), Some("INITIALIZING"), "{p}");
    let (code, v) = engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    assert_eq!(
        (code, v["error"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    let exit = engine
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("gives up within the deadline");
    assert_eq!(exit.code(), Some(2), "{}", engine.log_tail(10));
    let log = engine.log_contents();
    assert!(log.contains("_mongodb._tcp.nonexistent.invalid"), "{log}");
    assert!(!log.contains("s3cretpw"), "{log}");
}

/// The numbers a dashboard graphs survive a restart: after `kill -9` in change event
/// application and a restart with the same command, `collectionCopy` still shows what was
/// copied (it read 0 of 0 until the commit before), `indexBuilding` counts collections, and
/// lag reaches 0 at COMMITTED.
#[tokio::test(flavor = "multi_thread")]
async fn progress_numbers_survive_a_restart() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    seed(&src, 5_000).await;
    for coll in ["x", "y"] {
        src.database("shop")
            .run_command(
                doc! { "createIndexes": coll, "indexes": [{ "key": { "k": 1 }, "name": "k_1" }] },
            )
            .await
            .unwrap();
    }
    let command = common::EngineCommand::between(&a.uri(), &b.uri(), &[]);
    let engine = command.spawn(&[]);
    engine.wait_ready().await;
    engine
        .post(
            "start",
            json!({"source": "cluster0", "destination": "cluster1"}),
        )
        .await;
    let p = engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let copied = p["progress"]["collectionCopy"]["estimatedCopiedBytes"]
        .as_i64()
        .unwrap();
    assert!(copied > 5_000 * 2_000, "{p}");
    let ib = &p["progress"]["indexBuilding"];
    assert!(
        ib["collectionsTotal"].as_i64().is_some_and(|n| n >= 3)
            && ib["collectionsFinished"] == ib["collectionsTotal"],
        "{p}"
    );
    engine.kill();

    let again = command.spawn(&[]);
    let p = again
        .wait_until(|p| state_of(p) == Some("RUNNING"), LONG)
        .await;
    assert_eq!(
        p["progress"]["collectionCopy"]["estimatedCopiedBytes"].as_i64(),
        Some(copied),
        "{p}"
    );
    assert_eq!(
        p["progress"]["collectionCopy"]["estimatedTotalBytes"].as_i64(),
        Some(copied),
        "{p}"
    );
    again
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    assert_eq!(again.post("commit", json!({})).await.0, 200);
    let p = again
        .wait_until(|p| state_of(p) == Some("COMMITTED"), LONG)
        .await;
    assert_eq!(p["progress"]["lag"]["overallLagSeconds"], 0, "{p}");
    again.terminate();
    again.wait_exit(Duration::from_secs(20)).await;
}

/// `kill -9` mid-copy, then the same command again (a systemd restart): the new engine takes
/// over the dead one's lease at once (same machine, its process gone) instead of waiting out
/// the lease, carries on the unfinished partition from its checkpoint instead of from its
/// first document, and the destination ends equal. Before, the restart waited 15 s and
/// copied the partition again from the start.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_engine_restarts_at_once_and_resumes_its_partition() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    seed(&src, 40_000).await;
    let dst = b.client().await;
    // One partition copied by one writer: it is in flight for several checkpoints.
    let command = common::EngineCommand::between(
        &a.uri(),
        &b.uri(),
        &["--loadLevel", "1", "--partitionSizeMB", "4096"],
    );
    // Checkpoints every 100 ms: on a quiet machine the copy takes about 2 s, the default
    // interval.
    let engine = command.spawn(&[("CLUSTERSYNC_COPY_CHECKPOINT_MS", "100")]);
    engine
        .start_sync(json!({"source": "cluster0", "destination": "cluster1"}))
        .await;
    // Wait for a checkpoint of the partition, as recorded on the destination.
    let partitions = dst
        .database("clustersync_reserved_for_internal_use")
        .collection::<Document>("partitions");
    let deadline = Instant::now() + LONG;
    let checkpointed = loop {
        let p = partitions
            .find_one(doc! { "coll": "orders", "done": false, "resumeFrom": { "$exists": true } })
            .await
            .unwrap();
        if let Some(p) = p {
            break p;
        }
        let done = partitions
            .find_one(doc! { "coll": "orders", "done": true })
            .await
            .unwrap();
        assert!(
            done.is_none(),
            "the partition finished before any checkpoint: {}",
            engine.log_tail(30)
        );
        assert!(Instant::now() < deadline, "{}", engine.log_tail(30));
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    engine.kill();
    let before = checkpointed.get_i64("copiedDocs").unwrap();
    assert!(before > 0 && before < 40_000, "{checkpointed}");

    let restarted = Instant::now();
    let again = command.spawn(&[]);
    again
        .wait_until(|p| state_of(p) == Some("RUNNING"), LONG)
        .await;
    let log = again.log_contents();
    assert!(
        log.contains("exited without releasing it"),
        "the dead engine's lease was not taken over at once: {}",
        again.log_tail(30)
    );
    assert!(
        restarted.elapsed() < Duration::from_secs(12),
        "RUNNING only after {:?}",
        restarted.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let resumed = loop {
        let log = again.log_contents();
        if let Some(l) = log
            .lines()
            .find(|l| l.contains("resuming the partition from its checkpoint"))
        {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no resume: {}",
            again.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        resumed.contains(&format!("already_copied_docs={before}"))
            || resumed.contains(&format!("\"already_copied_docs\":{before}")),
        "{resumed}"
    );
    again
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    // The partition's record counts every document once, across both engines.
    let done = partitions
        .find_one(doc! { "coll": "orders", "done": true })
        .await
        .unwrap()
        .expect("partition finished");
    assert_eq!(done.get_i64("copiedDocs").unwrap(), 40_000, "{done}");
    assert_eq!(again.post("commit", json!({})).await.0, 200);
    again
        .wait_until(|p| state_of(p) == Some("COMMITTED"), LONG)
        .await;
    common::compare::assert_clusters_equal(&src, &dst).await;
    again.terminate();
    again.wait_exit(Duration::from_secs(20)).await;
}
