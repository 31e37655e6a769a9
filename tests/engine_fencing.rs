//! Fencing: at most one engine drives a destination. A second engine with the same flags
//! refuses while the first is alive, takes over once a killed one's lease expires, an engine
//! whose lease is taken stops writing, and a cleanly stopped engine lets its lease go.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use common::{assert_clusters_equal, state_of, Engine, Server};
use serde_json::{json, Value};

const META: &str = "clustersync_reserved_for_internal_use";
const LONG: Duration = Duration::from_secs(180);
/// A short lease, so that a takeover is quick (renewed every 400 ms).
const SHORT_LEASE: (&str, &str) = ("CLUSTERSYNC_LEASE_MS", "2000");

fn spawn(a: &Server, b: &Server, port: &str, env: &[(&str, &str)]) -> Engine {
    let (c0, c1) = (a.uri(), b.uri());
    Engine::spawn_with_env(
        &[
            "--cluster0",
            &c0,
            "--cluster1",
            &c1,
            "--port",
            port,
            "--partitionSizeMB",
            "1",
        ],
        env,
    )
}

async fn start_sync(engine: &Engine) {
    engine
        .start_sync(json!({"source": "cluster0", "destination": "cluster1"}))
        .await;
}

async fn seed(client: &mongodb::Client, docs: i32) {
    let coll = client.database("fence").collection::<Document>("bulk");
    let pad = "f".repeat(500);
    for start in (0..docs).step_by(2000) {
        let batch: Vec<Document> = (start..(start + 2000).min(docs))
            .map(|i| doc! { "_id": i, "n": i, "pad": &pad })
            .collect();
        coll.insert_many(batch).await.unwrap();
    }
}

/// Inserts and updates documents in `fence.live` until stopped; returns how many it inserted.
struct Writer {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(client: mongodb::Client) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicI64::new(0));
        let (s, c) = (stop.clone(), count.clone());
        let task = tokio::spawn(async move {
            let coll = client.database("fence").collection::<Document>("live");
            let mut i = 0i64;
            while !s.load(Ordering::Relaxed) {
                if coll.insert_one(doc! { "_id": i, "v": 0 }).await.is_ok() {
                    c.store(i + 1, Ordering::Relaxed);
                }
                if i > 0 {
                    let _ = coll
                        .update_one(doc! { "_id": i / 2 }, doc! { "$inc": { "v": 1 } })
                        .await;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        Writer { stop, count, task }
    }

    async fn stop(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.count.load(Ordering::Relaxed)
    }
}

async fn lease_doc(dest: &mongodb::Client) -> Option<Document> {
    dest.database(META)
        .collection::<Document>("lease")
        .find_one(doc! {})
        .await
        .unwrap()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

fn sync_error(p: &Value) -> Option<String> {
    p["progress"]["syncError"]
        .as_str()
        .or_else(|| p["syncError"].as_str())
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_engine_refuses_while_the_first_is_alive() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    seed(&src, 5_000).await;
    let writer = Writer::start(src.clone());
    let port_a = common::free_port().to_string();
    let e1 = spawn(&a, &b, &port_a, &[SHORT_LEASE]);
    start_sync(&e1).await;
    e1.wait_until(
        |p| p["progress"]["info"] == "change event application",
        LONG,
    )
    .await;
    let before = lease_doc(&dest)
        .await
        .expect("the first engine holds a lease");
    let token = before.get_str("token").unwrap().to_string();
    assert_eq!(before.get_i64("pid").unwrap(), e1.pid() as i64, "{before}");
    for field in ["hostname", "port", "acquiredAt", "renewedAt"] {
        assert!(before.contains_key(field), "{field} missing: {before}");
    }
    assert!(
        !before.to_string().contains("mongodb://"),
        "no connection string in the lease: {before}"
    );

    // Same flags, another port.
    let port_b = common::free_port().to_string();
    let e2 = spawn(&a, &b, &port_b, &[SHORT_LEASE]);
    let status = e2
        .wait_exit(Duration::from_secs(60))
        .await
        .expect("the second engine must exit");
    assert_eq!(status.code(), Some(1), "{}", e2.log_tail(20));
    let log = e2.log_contents();
    assert!(
        log.contains(&format!("pid {}", e1.pid()))
            && log.contains(&format!("port {port_a}"))
            && log.contains(&format!("host {}", hostname()))
            && log.contains("another clustersync engine is driving this sync"),
        "the refusal must name the holder: {log}"
    );
    assert!(
        !log.contains("resuming persisted sync") && !log.contains("mongodb://"),
        "{log}"
    );
    // Nothing of the second engine's reached the destination: the lease and the migration
    // document still name the first, which goes on undisturbed.
    let after = lease_doc(&dest).await.unwrap();
    assert_eq!(after.get_str("token").unwrap(), token);
    let migration = dest
        .database(META)
        .collection::<Document>("migration")
        .find_one(doc! {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(migration.get_str("leaseToken").unwrap(), token);
    let p = e1.progress().await;
    assert_eq!(state_of(&p), Some("RUNNING"), "{p}");
    assert!(sync_error(&p).is_none(), "{p}");
    e1.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    writer.stop().await;
    let (code, v) = e1.post("commit", json!({})).await;
    assert_eq!(code, 200, "{v}");
    e1.wait_state("COMMITTED", LONG).await;
    assert_clusters_equal(&src, &dest).await;

    // After COMMITTED the first engine still holds the lease: a third still refuses.
    let e3 = spawn(&a, &b, &common::free_port().to_string(), &[SHORT_LEASE]);
    let status = e3.wait_exit(Duration::from_secs(60)).await.expect("exits");
    assert_eq!(status.code(), Some(1), "{}", e3.log_tail(20));
    assert!(e3.log_contents().contains(&format!("pid {}", e1.pid())));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_engines_successor_takes_over_once_the_lease_expires() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    seed(&src, 20_000).await;
    let writer = Writer::start(src.clone());
    let port = common::free_port().to_string();
    let e1 = spawn(&a, &b, &port, &[SHORT_LEASE]);
    start_sync(&e1).await;
    // Mid-sync: some documents copied.
    let deadline = Instant::now() + LONG;
    while dest
        .database("fence")
        .collection::<Document>("bulk")
        .estimated_document_count()
        .await
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the copy never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    e1.kill();
    let killed = Instant::now();
    drop(e1);
    // As if the killed engine had run on another machine: a successor on the same machine
    // sees the holder's process gone and takes over at once (tests/runbook.rs); one elsewhere
    // cannot tell, and waits for the lease to expire.
    dest.database(META)
        .collection::<Document>("lease")
        .update_one(
            doc! {},
            doc! { "$set": { "pidSpace": "another-machine/pid:[1]" } },
        )
        .await
        .unwrap();

    let e2 = spawn(&a, &b, &port, &[SHORT_LEASE]);
    let p = e2.wait_ready().await;
    assert_eq!(state_of(&p), Some("RUNNING"), "{p}");
    let waited = killed.elapsed();
    assert!(
        e2.log_contents().contains("waiting up to"),
        "the successor says what it waits for: {}",
        e2.log_tail(30)
    );
    assert!(waited < Duration::from_secs(30), "waited {waited:?}");
    let held = lease_doc(&dest).await.unwrap();
    assert_eq!(held.get_i64("pid").unwrap(), e2.pid() as i64, "{held}");
    e2.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let inserted = writer.stop().await;
    assert!(inserted > 50, "too few live writes: {inserted}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    e2.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let (code, v) = e2.post("commit", json!({})).await;
    assert_eq!(code, 200, "{v}");
    e2.wait_state("COMMITTED", LONG).await;
    assert_clusters_equal(&src, &dest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_whose_lease_is_taken_stops_writing() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    seed(&src, 2_000).await;
    let port = common::free_port().to_string();
    let e1 = spawn(&a, &b, &port, &[SHORT_LEASE]);
    start_sync(&e1).await;
    e1.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    // Changes flow before the theft.
    let live = src.database("fence").collection::<Document>("live");
    live.insert_one(doc! { "_id": "before" }).await.unwrap();
    let dlive = dest.database("fence").collection::<Document>("live");
    let deadline = Instant::now() + Duration::from_secs(30);
    while dlive
        .find_one(doc! { "_id": "before" })
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "changes never reached the destination"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another holder takes the lease behind the engine's back.
    dest.database(META)
        .collection::<Document>("lease")
        .update_one(
            doc! {},
            doc! { "$set": { "token": "thief", "hostname": "elsewhere", "pid": 4242i64, "port": 1i64, "renewals": 0i64 } },
        )
        .await
        .unwrap();
    let stolen = Instant::now();
    let p = e1
        .wait_until(|p| sync_error(p).is_some(), Duration::from_secs(10))
        .await;
    // Renewed every 400 ms: noticed at the next renewal (plus a poll of /progress).
    assert!(
        stolen.elapsed() < Duration::from_secs(3),
        "{:?}",
        stolen.elapsed()
    );
    let err = sync_error(&p).unwrap();
    assert!(
        err.contains("lost its lease") && err.contains("pid 4242"),
        "{err}"
    );
    assert!(
        p["progress"]["warnings"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w.as_str() == Some(err.as_str()))),
        "{p}"
    );
    assert_eq!(p["progress"]["canCommit"], false, "{p}");

    // Nothing written to the source from now on reaches the destination.
    for i in 0..50 {
        live.insert_one(doc! { "_id": format!("after-{i}") })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leaked = dlive
        .count_documents(doc! { "_id": { "$regex": "^after-" } })
        .await
        .unwrap();
    assert_eq!(
        leaked, 0,
        "writes reached the destination after the lease was lost"
    );
    assert!(
        e1.log_contents().contains("lease lost"),
        "{}",
        e1.log_tail(30)
    );
    // The thief's lease is untouched, and the engine's commit is refused.
    assert_eq!(
        lease_doc(&dest).await.unwrap().get_str("token").unwrap(),
        "thief"
    );
    let (code, _) = e1.post("commit", json!({})).await;
    assert_ne!(code, 200);
    // It reported the loss in /progress, then exits non-zero (a supervisor notices).
    let exit = e1
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("an engine that lost its lease exits");
    assert_eq!(exit.code(), Some(1), "{}", e1.log_tail(10));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cleanly_stopped_engine_is_resumed_without_waiting() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    seed(&src, 2_000).await;
    let writer = Writer::start(src.clone());
    let port = common::free_port().to_string();
    // The default 15 s lease: a restart that had to wait for it would show.
    let e1 = spawn(&a, &b, &port, &[]);
    start_sync(&e1).await;
    e1.wait_until(
        |p| p["progress"]["info"] == "change event application",
        LONG,
    )
    .await;
    assert!(lease_doc(&dest).await.is_some());
    e1.terminate();
    let status = e1
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("SIGTERM stops the engine");
    assert!(status.success(), "{status}: {}", e1.log_tail(20));
    assert!(
        lease_doc(&dest).await.is_none(),
        "a clean shutdown releases the lease"
    );
    drop(e1);

    let restarted = Instant::now();
    let e2 = spawn(&a, &b, &port, &[]);
    let p = e2.wait_ready().await;
    assert_eq!(state_of(&p), Some("RUNNING"), "{p}");
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "resumed after {:?}",
        restarted.elapsed()
    );
    assert!(!e2.log_contents().contains("waiting up to"));
    e2.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    writer.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    e2.wait_until(|p| p["progress"]["canCommit"] == true, LONG)
        .await;
    let (code, v) = e2.post("commit", json!({})).await;
    assert_eq!(code, 200, "{v}");
    e2.wait_state("COMMITTED", LONG).await;
    assert_clusters_equal(&src, &dest).await;
}
