//! Checks the test fixtures in tests/common against real SecantusDB servers.
mod common;

use std::time::Duration;

use common::{
    assert_clusters_equal, compare_clusters, copy_cluster_naive, seed_full_dataset,
    try_create_unsupported_indexes, workload_plan, Server, Workload, WorkloadOptions,
};
use mongodb::bson::{doc, Document};

fn has(diffs: &[String], needle: &str) -> bool {
    diffs.iter().any(|d| d.contains(needle))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_compare_restart() {
    let (mut a, b) = tokio::join!(Server::start(), Server::start());
    let ca = a.client().await;
    let cb = b.client().await;
    seed_full_dataset(&ca).await.expect("seed");
    let refused = try_create_unsupported_indexes(&ca)
        .await
        .expect("unsupported indexes");
    for r in &refused {
        println!("server refused index: {r}");
    }

    let same = compare_clusters(&ca, &ca).await.expect("compare A/A");
    assert!(same.is_empty(), "A vs A differs: {same:#?}");

    let diffs = compare_clusters(&ca, &cb).await.expect("compare A/B");
    assert!(has(&diffs, "database seed_a missing in dst"), "{diffs:#?}");
    assert!(
        has(&diffs, "seed_b.capped: collection missing in dst"),
        "{diffs:#?}"
    );
    assert!(
        has(&diffs, "seed_b.view_pipeline: view missing in dst"),
        "{diffs:#?}"
    );

    // A straightforward offline copy must compare equal (options, indexes, raw docs, views).
    copy_cluster_naive(&ca, &cb).await.expect("naive copy");
    assert_clusters_equal(&ca, &cb).await;

    // Data survives a graceful restart and a SIGKILL + restart.
    a.restart().await;
    assert_clusters_equal(&a.client().await, &cb).await;
    a.kill();
    a.restart().await;
    let ca = a.client().await;
    assert_clusters_equal(&ca, &cb).await;

    // The comparison notices every kind of drift.
    let many = cb.database("seed_a").collection::<Document>("many");
    many.update_one(doc! { "_id": 7 }, doc! { "$set": { "n": 7i64 } })
        .await
        .unwrap(); // same value, different type
    many.delete_one(doc! { "_id": 8 }).await.unwrap();
    many.insert_one(doc! { "_id": "extra" }).await.unwrap();
    let types = cb.database("seed_a").collection::<Document>("types");
    types
        .replace_one(
            doc! { "_id": "t_int32" },
            doc! { "w": 1, "v": 42 }, // same fields, other order + one more
        )
        .await
        .unwrap();
    cb.database("seed_a")
        .collection::<Document>("mixed_ids")
        .replace_one(doc! { "_id": 1 }, doc! { "i": 0, "kind": "int32" }) // fields reordered
        .await
        .unwrap();
    cb.database("seed_b")
        .run_command(doc! { "dropIndexes": "indexed", "index": "email_1" })
        .await
        .unwrap();
    cb.database("seed_b")
        .run_command(doc! { "createIndexes": "indexed", "indexes": [ { "key": { "b": -1, "a": 1 }, "name": "a_1_b_-1_c_1_x" } ] })
        .await
        .unwrap();
    cb.database("seed_b")
        .run_command(doc! { "collMod": "validated_warn", "validationAction": "error" })
        .await
        .unwrap();
    cb.database("seed_a")
        .collection::<Document>("empty")
        .drop()
        .await
        .unwrap();
    cb.database("seed_c")
        .collection::<Document>("new")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    let diffs = compare_clusters(&ca, &cb).await.unwrap();
    println!("drift report:\n{}", diffs.join("\n"));
    for needle in [
        "seed_a.many: document _id=Int32(7) differs: field values differ: n: Int32(7) vs Int64(7)",
        "seed_a.many: document _id=Int32(8) missing in dst",
        "seed_a.many: document _id=String(\"extra\") extra in dst",
        "seed_a.types: document _id=String(\"t_int32\") differs",
        "seed_a.mixed_ids: document _id=Int32(1) differs: field order differs",
        "seed_b.indexed: index email_1 missing in dst",
        "seed_b.indexed: index a_1_b_-1_c_1_x extra in dst",
        "seed_b.validated_warn: options differ",
        "seed_a.empty: collection missing in dst",
        "database seed_c extra in dst",
        "seed_c.new: collection extra in dst",
    ] {
        assert!(has(&diffs, needle), "expected {needle:?} in {diffs:#?}");
    }
    assert_eq!(diffs.len(), 11, "{diffs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_runs() {
    let opts = WorkloadOptions::default();
    assert_eq!(
        workload_plan(42, 0, 200, &opts),
        workload_plan(42, 0, 200, &opts),
        "workload choices must depend only on the seed"
    );
    assert_ne!(
        workload_plan(42, 0, 50, &opts),
        workload_plan(43, 0, 50, &opts)
    );
    assert_ne!(
        workload_plan(42, 0, 50, &opts),
        workload_plan(42, 1, 50, &opts)
    );

    let c = Server::start().await;
    let wl = Workload::start(c.uri(), 42);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stats = wl.stop().await;
    println!("workload: {stats}");
    for e in &stats.sample_errors {
        println!("  sample error: {e}");
    }
    assert!(stats.inserts() > 0, "{stats}");
    assert!(stats.updates() > 0, "{stats}");
    assert!(stats.ddl() >= 1, "{stats}");
    assert!(stats.total_ok() > stats.total_errors(), "{stats}");
    let dbs = c.client().await.list_database_names().await.unwrap();
    assert!(dbs.iter().any(|d| d.starts_with("wl_")), "{dbs:?}");
}
