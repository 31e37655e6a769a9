mod common;
use std::time::Duration;
use common::{assert_clusters_equal, Engine, Server, Workload};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn workload_no_kills() {
    let (a, b) = tokio::join!(Server::start(), Server::start());
    let src = a.client().await;
    let dest = b.client().await;
    let workload = Workload::start(a.uri(), 42);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = Engine::spawn_between(&a.uri(), &b.uri(), &["--verbosity", "DEBUG"]);
    e.wait_ready().await;
    e.post("start", json!({"source":"cluster0","destination":"cluster1"})).await;
    e.wait_until(|p| p["progress"]["canCommit"] == true, Duration::from_secs(100)).await;
    tokio::time::sleep(Duration::from_secs(std::env::var("WL_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8))).await;
    let stats = workload.stop().await;
    eprintln!("{stats:?}");
    e.wait_until(|p| p["progress"]["canCommit"] == true, Duration::from_secs(100)).await;
    e.post("commit", json!({})).await;
    e.wait_state("COMMITTED", Duration::from_secs(100)).await;
    std::fs::copy(e.log_path(), "/tmp/wl_engine.log").unwrap();
    assert_clusters_equal(&src, &dest).await;
}
