//! The engine's write-blocking calls, end to end: a real engine (in process) syncing between
//! real servers, with `setUserWriteBlockMode` answered by a recording stand-in because the test
//! server lacks the command. Checks the order mongosync uses: destination blocked at /start,
//! source blocked at /commit before the commit point, destination released before canWrite,
//! source left blocked; and everything released when a sync stops on an error.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::doc;
use clustersync::contract::options::{ClusterLabel, StartOptions};
use clustersync::engine::blocking::{BlockError, Blocker};
use clustersync::engine::config::{EngineArgs, EngineConfig};
use clustersync::engine::Engine;
use common::Server;
use futures::future::BoxFuture;
use serde_json::Value;

#[derive(Default)]
struct Recorder {
    log: Mutex<Vec<(ClusterLabel, bool, String)>>,
    engine: Mutex<Option<std::sync::Weak<Engine>>>,
}

impl Blocker for Recorder {
    fn set(&self, cluster: ClusterLabel, blocked: bool) -> BoxFuture<'_, Result<(), BlockError>> {
        // Record the state the engine was in when it sent the command.
        let state = self
            .engine
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|w| w.upgrade())
            .map(|e| {
                let p = serde_json::to_value(e.progress()).unwrap();
                format!(
                    "{}/canWrite={}",
                    p["progress"]["state"].as_str().unwrap_or("?"),
                    p["progress"]["canWrite"]
                )
            })
            .unwrap_or_default();
        self.log.lock().unwrap().push((cluster, blocked, state));
        Box::pin(async { Ok(()) })
    }
}

async fn engine_between(a: &Server, b: &Server, recorder: Arc<Recorder>) -> Arc<Engine> {
    let config = EngineConfig::from_args(EngineArgs {
        cluster0: Some(a.uri()),
        cluster1: Some(b.uri()),
        ..Default::default()
    })
    .unwrap();
    let engine = Engine::with_blocker(config, Some(recorder.clone()))
        .await
        .unwrap();
    *recorder.engine.lock().unwrap() = Some(Arc::downgrade(&engine));
    engine.initialize().await.unwrap();
    engine
}

async fn wait(engine: &Engine, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let p = serde_json::to_value(engine.progress()).unwrap();
        if pred(&p["progress"]) {
            return p;
        }
        assert!(Instant::now() < deadline, "timed out: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn options(json: &str) -> StartOptions {
    serde_json::from_str(json).unwrap()
}

use ClusterLabel::{Cluster0 as C0, Cluster1 as C1};

#[tokio::test(flavor = "multi_thread")]
async fn dual_blocking_sequence_through_a_whole_sync() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    a.client()
        .await
        .database("app")
        .collection("c")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let engine = engine_between(&a, &b, recorder.clone()).await;
    engine
        .start(options(r#"{"source":"cluster0","destination":"cluster1"}"#))
        .await
        .unwrap();
    wait(&engine, |p| p["canCommit"] == true).await;
    engine.commit().await.unwrap();
    let done = wait(&engine, |p| p["state"] == "COMMITTED").await;
    let warnings = done["progress"]["warnings"].to_string();
    assert!(
        warnings.contains("blocked user writes on the source cluster (cluster0"),
        "{done}"
    );
    let log: Vec<(ClusterLabel, bool)> = recorder
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(c, b, _)| (*c, *b))
        .collect();
    assert_eq!(
        log,
        vec![
            (C1, false), // probe: destination accepts the command
            (C0, false), // probe: source accepts it
            (C1, true),  // /start: destination blocked
            (C0, true),  // /commit: source blocked
            (C1, false), // released before canWrite
        ]
    );
    let states: Vec<String> = recorder
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(_, _, s)| s.clone())
        .collect();
    assert!(states[2].starts_with("IDLE"), "{states:?}");
    assert!(
        states[3].starts_with("RUNNING"),
        "the source is blocked before COMMITTING: {states:?}"
    );
    assert_eq!(states[4], "COMMITTING/canWrite=false", "{states:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_that_stops_on_an_error_releases_every_block() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let ac = a.client().await;
    ac.database("keep")
        .collection("c")
        .insert_one(doc! { "x": 1 })
        .await
        .unwrap();
    let recorder = Arc::new(Recorder::default());
    let engine = engine_between(&a, &b, recorder.clone()).await;
    // A filter makes the default destination-only; renaming a filtered collection out of the
    // filter is fatal, as in mongosync.
    engine
        .start(options(r#"{"source":"cluster0","destination":"cluster1","includeNamespaces":[{"database":"keep","collections":["c"]}]}"#))
        .await
        .unwrap();
    wait(&engine, |p| p["canCommit"] == true).await;
    ac.database("admin")
        .run_command(doc! { "renameCollection": "keep.c", "to": "keep.elsewhere" })
        .await
        .unwrap();
    let stopped = wait(&engine, |p| {
        p["warnings"]
            .to_string()
            .contains("renamed out of the filter")
            || p["warnings"].to_string().contains("excludes")
    })
    .await;
    let log: Vec<(ClusterLabel, bool)> = recorder
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|(c, b, _)| (*c, *b))
        .collect();
    assert_eq!(log, vec![(C1, false), (C1, true), (C1, false)], "{stopped}");
    assert_eq!(stopped["progress"]["canCommit"], false);
}
