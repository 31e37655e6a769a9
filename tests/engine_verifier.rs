//! The embedded verifier against real servers: a clean sync verifies equal; documents and an
//! index changed behind the engine's back on the destination are named and hold the commit
//! back, across a SIGKILL, until repaired; a difference introduced just before the commit
//! stops the commit itself.

mod common;

use std::time::Duration;

use bson::{doc, Document};
use common::{metric, state_of, Engine, Server};
use mongodb::IndexModel;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(180);

fn c0c1() -> Value {
    json!({"source": "cluster0", "destination": "cluster1"})
}

/// Two collections of `n` documents each, one with a secondary index.
async fn seed(src: &mongodb::Client, n: i32) {
    let db = src.database("shop");
    for name in ["orders", "items"] {
        let docs: Vec<Document> = (0..n)
            .map(|i| doc! { "_id": i, "n": i, "name": format!("{name}-{i}"), "tags": ["a", "b"] })
            .collect();
        db.collection::<Document>(name)
            .insert_many(docs)
            .await
            .unwrap();
    }
    db.collection::<Document>("orders")
        .create_index(IndexModel::builder().keys(doc! { "n": 1 }).build())
        .await
        .unwrap();
}

fn verification(p: &Value) -> &Value {
    &p["progress"]["verification"]
}

fn mismatch_text(p: &Value) -> String {
    verification(p)["mismatches"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn clean_sync_verifies_equal_with_live_writes() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    seed(&src, 3_000).await;
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.start_sync(c0c1()).await;
    // During the copy the verifier has not started (as mongosync 1.22+).
    let p = engine
        .wait_until(|p| !verification(p).is_null(), LONG)
        .await;
    for side in ["source", "destination"] {
        let v = &verification(&p)[side];
        for key in [
            "estimatedDocumentCount",
            "hashedDocumentCount",
            "lagTimeSeconds",
            "totalCollectionCount",
            "scannedCollectionCount",
            "phase",
        ] {
            assert!(!v[key].is_null(), "{side}.{key} missing: {p}");
        }
    }
    // Live writes while the verifier follows both sides.
    let orders = src.database("shop").collection::<Document>("orders");
    engine
        .wait_until(
            |p| p["progress"]["info"] == "change event application",
            LONG,
        )
        .await;
    for i in 0..200 {
        orders
            .update_one(doc! { "_id": i }, doc! { "$set": { "n": -i } })
            .await
            .unwrap();
    }
    orders
        .delete_many(doc! { "_id": { "$gte": 2_900 } })
        .await
        .unwrap();
    orders
        .insert_one(doc! { "_id": "late", "n": 1 })
        .await
        .unwrap();
    let p = engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let v = verification(&p);
    for side in ["source", "destination"] {
        assert_eq!(v[side]["phase"], "stream hashing", "{p}");
        assert_eq!(
            v[side]["scannedCollectionCount"], v[side]["totalCollectionCount"],
            "{p}"
        );
        assert_eq!(v[side]["totalCollectionCount"], 2, "{p}");
        assert!(
            v[side]["hashedDocumentCount"].as_u64().unwrap() >= 5_000,
            "{side} hashed too few documents: {p}"
        );
    }
    assert!(v["mismatches"].is_null(), "no difference expected: {p}");
    // The same figures on /metrics.
    let metrics = engine.metrics().await;
    let sample = |name: &str| metric(&metrics, name);
    assert!(sample("clustersync_engine_verifier_hashed_documents{side=\"source\"}") >= 5_000.0);
    assert_eq!(sample("clustersync_engine_verifier_initial_pass_done"), 1.0);
    assert_eq!(sample("clustersync_engine_verifier_mismatches"), 0.0);
    let (code, body) = engine.post("commit", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let p = engine.wait_state("COMMITTED", LONG).await;
    assert_eq!(verification(&p)["verified"], true, "{p}");
    let log = engine.log_contents();
    assert!(log.contains("final verification finished"), "{log}");
    // `items` was not written after the copy read it: its first comparison used the digest
    // the copy took, and read only the destination.
    assert!(
        initial_pass_fields(&log)
            .iter()
            .any(|f| f["source_from_copy"].as_u64() >= Some(1)),
        "{log}"
    );
}

/// The fields of each "verifier initial pass finished" line of an engine's JSON log.
fn initial_pass_fields(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "verifier initial pass finished")
        .map(|v| v["fields"].clone())
        .collect()
}

/// The copy's digest of what it read stands for the source in the first comparison, so the
/// destination must prove equal to it: a destination document changed while the copy runs
/// (before the verifier watches the destination) is still found, and source documents
/// changed after the copy read them still end equal.
#[tokio::test(flavor = "multi_thread")]
async fn changes_on_either_side_during_the_copy_are_caught_by_the_first_comparison() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dst = b.client().await;
    seed(&src, 30_000).await;
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.start_sync(c0c1()).await;
    let on = |c: &mongodb::Client, coll: &str| c.database("shop").collection::<Document>(coll);
    // As soon as the copy has written them: one destination document changed behind the
    // engine's back, and source documents the copy has read changed.
    let deadline = std::time::Instant::now() + LONG;
    let written = |coll: &'static str, id: i32| {
        let dst = dst.clone();
        async move {
            while on(&dst, coll)
                .find_one(doc! { "_id": id })
                .await
                .unwrap()
                .is_none()
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the copy never wrote {coll} {id}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    written("items", 5).await;
    on(&dst, "items")
        .update_one(doc! { "_id": 5 }, doc! { "$set": { "name": "tampered" } })
        .await
        .unwrap();
    written("orders", 100).await;
    on(&src, "orders")
        .update_many(
            doc! { "_id": { "$lt": 100 } },
            doc! { "$set": { "changed": true } },
        )
        .await
        .unwrap();
    let p = engine.progress().await;
    assert_eq!(
        p["progress"]["info"], "collection copy",
        "the copy finished before the writes; this test needs a longer copy: {p}"
    );
    let p = engine
        .wait_until(
            |p| mismatch_text(p).contains("shop.items: _id 5 different content (fields: name)"),
            LONG,
        )
        .await;
    assert_eq!(p["progress"]["canCommit"], false, "{p}");
    assert_eq!(
        verification(&p)["mismatchCount"],
        1,
        "only the tampered one: {p}"
    );
    // Repaired, the sync verifies equal and commits.
    let original = on(&src, "items")
        .find_one(doc! { "_id": 5 })
        .await
        .unwrap()
        .unwrap();
    on(&dst, "items")
        .replace_one(doc! { "_id": 5 }, original)
        .await
        .unwrap();
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let p = engine.commit_and_wait(LONG).await;
    assert_eq!(verification(&p)["verified"], true, "{p}");
    let diffs = common::compare::compare_clusters_exact(&src, &dst)
        .await
        .unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn destination_tampering_is_named_blocks_commit_survives_sigkill_and_heals() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dst = b.client().await;
    seed(&src, 1_000).await;
    let port = common::free_port().to_string();
    let args = |uri_a: &str, uri_b: &str| {
        vec![
            "--cluster0".to_string(),
            uri_a.to_string(),
            "--cluster1".into(),
            uri_b.to_string(),
            "--port".into(),
            port.clone(),
        ]
    };
    let argv = args(&a.uri(), &b.uri());
    let spawn = || Engine::spawn(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    let engine = spawn();
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;

    // Behind the engine's back, on the destination: one document changed, one deleted, one
    // added, one index dropped.
    let orders = dst.database("shop").collection::<Document>("orders");
    let items = dst.database("shop").collection::<Document>("items");
    orders
        .update_one(doc! { "_id": 17 }, doc! { "$set": { "name": "tampered" } })
        .await
        .unwrap();
    items.delete_one(doc! { "_id": 23 }).await.unwrap();
    items
        .insert_one(doc! { "_id": 5_000_000, "name": "intruder" })
        .await
        .unwrap();
    orders.drop_index("n_1").await.unwrap();

    let all_named = |p: &Value| {
        let t = mismatch_text(p);
        t.contains("shop.orders: _id 17 different content (fields: name)")
            && t.contains("shop.items: _id 23 missing on destination")
            && t.contains("shop.items: _id 5000000 extra on destination")
            && t.contains("shop.orders: index `n_1`")
    };
    let p = engine.wait_until(all_named, LONG).await;
    assert_eq!(p["progress"]["canCommit"], false, "{p}");
    let log = engine.log_contents();
    assert!(
        log.contains("confirmed a difference")
            && log.contains("shop.orders: _id 17 different content (fields: name)"),
        "the log names the differing field: {log}"
    );
    assert!(!log.contains("tampered"), "no value is logged");
    assert_eq!(verification(&p)["mismatchCount"], 4, "{p}");
    let (code, body) = engine.post("commit", json!({})).await;
    assert_ne!(
        code, 200,
        "a commit must be refused while differences stand: {body}"
    );
    let refusal = body.to_string();
    assert!(
        refusal.contains("_id 17") && refusal.contains("embedded verifier"),
        "the refusal names what differs: {refusal}"
    );

    // SIGKILL: the differences are on disk, and the verifier resumes instead of starting
    // over.
    engine.kill();
    drop(engine);
    let engine = spawn();
    let p = engine.wait_until(all_named, LONG).await;
    assert_eq!(state_of(&p), Some("RUNNING"), "{p}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !engine
        .log_contents()
        .contains("verifier initial pass finished")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = engine.log_contents();
    assert!(
        log.contains("\"resumed\":true"),
        "the verifier resumes from its saved streams: {log}"
    );
    assert!(
        log.contains("verifier initial pass finished\",\"collections\":0"),
        "no collection compared again after the restart: {log}"
    );

    // Repaired: the differences heal and the commit goes through.
    let original = src
        .database("shop")
        .collection::<Document>("orders")
        .find_one(doc! { "_id": 17 })
        .await
        .unwrap()
        .unwrap();
    orders
        .replace_one(doc! { "_id": 17 }, original)
        .await
        .unwrap();
    let deleted = src
        .database("shop")
        .collection::<Document>("items")
        .find_one(doc! { "_id": 23 })
        .await
        .unwrap()
        .unwrap();
    items.insert_one(deleted).await.unwrap();
    items.delete_one(doc! { "_id": 5_000_000 }).await.unwrap();
    orders
        .create_index(IndexModel::builder().keys(doc! { "n": 1 }).build())
        .await
        .unwrap();
    let p = engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    assert!(verification(&p)["mismatches"].is_null(), "{p}");
    let (code, body) = engine.post("commit", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let p = engine.wait_state("COMMITTED", LONG).await;
    assert_eq!(verification(&p)["verified"], true, "{p}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_difference_made_just_before_commit_stops_the_commit() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dst = b.client().await;
    seed(&src, 500).await;
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    // Changed on the destination, and committed at once, before the verifier could confirm
    // the difference twice: the final comparison at commit must find it.
    dst.database("shop")
        .collection::<Document>("items")
        .update_one(
            doc! { "_id": 42 },
            doc! { "$set": { "name": "late tamper" } },
        )
        .await
        .unwrap();
    let (code, body) = engine.post("commit", json!({})).await;
    let p = if code == 200 {
        engine
            .wait_until(|p| !p["progress"]["syncError"].is_null(), LONG)
            .await
    } else {
        // The verifier was quicker than the request: it refused the commit instead.
        assert!(body.to_string().contains("_id 42"), "{body}");
        engine.progress().await
    };
    let text = if code == 200 {
        p["progress"]["syncError"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        body.to_string()
    };
    assert!(
        text.contains("shop.items: _id 42 different content (fields: name)"),
        "the difference is named, with the field that differs: {text}"
    );
    assert!(!text.contains("late tamper"), "no value is shown: {text}");
    assert_eq!(p["progress"]["canWrite"], false, "{p}");
    assert_ne!(state_of(&p), Some("COMMITTED"), "{p}");
    for secret in ["mongodb://", "password"] {
        assert!(!text.contains(secret), "{text}");
    }
}

/// Without write blocking (this server has no `setUserWriteBlockMode`), the application keeps
/// writing to the source after `/commit`: those writes never reach the destination. The final
/// comparison finds them, says that is the cause (not "something changed the destination"),
/// shows the difference in `/progress` and the metric, and a restarted engine still reports
/// it. Before, the commit could complete without them, or the stop blamed the destination and
/// a restart showed no differences.
#[tokio::test(flavor = "multi_thread")]
async fn source_writes_after_the_commit_point_are_found_and_named() {
    const LONG: Duration = Duration::from_secs(60);
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    seed(&src, 500).await;
    let command = common::EngineCommand::between(&a.uri(), &b.uri(), &[]);
    let engine = command.spawn(&[("CLUSTERSYNC_STOPPED_EXIT_DELAY_MS", "60000")]);
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    // The application does not stop writing: one document, over and over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let items = src.database("shop").collection::<Document>("items");
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = items
                    .update_one(doc! { "_id": 7 }, doc! { "$inc": { "late": 1 } })
                    .await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = engine.post("commit", json!({})).await;
    assert_eq!(code, 200, "{body}");
    let deadline = std::time::Instant::now() + LONG;
    let p = loop {
        let p = engine.progress().await;
        if !p["progress"]["syncError"].is_null() || state_of(&p) == Some("COMMITTED") {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the commit neither completed nor stopped: {p}\n{}",
            engine.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap();
    let err = p["progress"]["syncError"].as_str().unwrap();
    assert!(err.contains("shop.items: _id 7"), "{err}");
    assert!(
        err.contains("changed on the source after the commit point"),
        "the cause is named: {err}"
    );
    assert!(
        !err.contains("Something other than the sync changed the destination"),
        "{err}"
    );
    assert_eq!(verification(&p)["mismatchCount"], 1, "{p}");
    assert_eq!(p["progress"]["canWrite"], false, "{p}");
    let metrics = engine.metrics().await;
    assert_eq!(
        metric(&metrics, "clustersync_engine_verifier_mismatches"),
        1.0
    );
    engine.kill();

    // A restart verifies again (the message's remedy): the destination still lacks the
    // write, so the commit stops again, naming the same document.
    let linger = [("CLUSTERSYNC_STOPPED_EXIT_DELAY_MS", "60000")];
    let again = command.spawn(&linger);
    let p = again
        .wait_until(|p| !p["progress"]["syncError"].is_null(), LONG)
        .await;
    assert_eq!(verification(&p)["mismatchCount"], 1, "{p}");
    assert!(
        verification(&p)["mismatches"][0]
            .as_str()
            .is_some_and(|m| m.contains("_id 7")),
        "{p}"
    );
    again.kill();
    // Repaired by hand (the source's document written to the destination), a restart
    // verifies again and the commit completes.
    let dst = b.client().await;
    let doc7 = src
        .database("shop")
        .collection::<Document>("items")
        .find_one(doc! { "_id": 7 })
        .await
        .unwrap()
        .unwrap();
    dst.database("shop")
        .collection::<Document>("items")
        .replace_one(doc! { "_id": 7 }, doc7)
        .await
        .unwrap();
    let third = command.spawn(&linger);
    let p = third.wait_state("COMMITTED", LONG).await;
    assert_eq!(verification(&p)["verified"], true, "{p}");
    third.kill();
}

/// The test server creates a collection, empty, for an update that matches nothing in a
/// missing one, with no change event (mongod creates none). The sync cannot hear of it, and the
/// commit creates such collections before its final comparison; the verifier during the sync
/// confirmed "collection missing on the destination" and held canCommit false for good (the
/// differential suite, `fault_engine_sigkill` seed 11, timed out so). An empty source
/// collection missing on the destination now holds nothing back; the commit makes it.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_collection_made_without_a_change_event_does_not_hold_the_commit() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    seed(&src, 200).await;
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let ghost = src.database("shop").collection::<Document>("ghost");
    ghost
        .update_one(doc! { "_id": 1 }, doc! { "$set": { "a": 1 } })
        .await
        .unwrap();
    let names = src.database("shop").list_collection_names().await.unwrap();
    assert!(
        names.contains(&"ghost".to_string()),
        "the test server no longer makes a collection for an update that matches nothing; this test then checks nothing: {names:?}"
    );
    // Two definition checks at least (one every 5 s or more) confirm a difference.
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    while std::time::Instant::now() < deadline {
        let p = engine.progress().await;
        assert!(
            verification(&p)["mismatchCount"].as_u64().unwrap_or(0) == 0,
            "an empty collection the source made without an event held the commit: {p}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let p = engine.commit_and_wait(LONG).await;
    assert_eq!(verification(&p)["verified"], true, "{p}");
    let dst = b.client().await;
    let names = dst.database("shop").list_collection_names().await.unwrap();
    assert!(names.contains(&"ghost".to_string()), "{names:?}");
}

/// A new user's run: writes to thousands of different documents while the sync follows,
/// then quiet. Every changed document is queued for a comparison of its own, and on a server
/// that finds a document-valued `_id` by reading the whole collection, saving a queue of
/// thousands took minutes per checkpoint: the verifier's lag froze and `canCommit` never
/// came. It must come, and the commit must verify equal.
#[tokio::test(flavor = "multi_thread")]
async fn after_writes_to_thousands_of_documents_the_sync_becomes_committable() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dst = b.client().await;
    seed(&src, 6_000).await;
    let engine = Engine::spawn_between(&a.uri(), &b.uri(), &[]);
    engine.start_sync(c0c1()).await;
    engine
        .wait_until(
            |p| p["progress"]["info"] == "change event application",
            LONG,
        )
        .await;
    for round in 0..2 {
        for coll in ["orders", "items"] {
            src.database("shop")
                .collection::<Document>(coll)
                .update_many(doc! {}, doc! { "$set": { "round": round } })
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let p = engine.commit_and_wait(LONG).await;
    assert_eq!(verification(&p)["verified"], true, "{p}");
    let diffs = common::compare::compare_clusters_exact(&src, &dst)
        .await
        .unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
}
