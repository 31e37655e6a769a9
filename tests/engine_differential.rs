//! Randomized differential suite, from the user's point of view: seed a source, run
//! `clustersync engine` with the default `/start` options (verifier on) while a seeded
//! workload with every update shape and DDL runs, `/commit`, then the destination must
//! equal the source byte for byte (documents with field order, collection specs,
//! indexes, views), and `clustersync verify` must exit 0. The same runs with faults:
//! SIGKILL of the engine (copy, index build, change application, right after
//! `/commit`), SIGKILL + restart of either server, SIGSTOP/SIGCONT of either server,
//! and a network partition between the engine and either server (network namespace).
//!
//! Replay: `CLUSTERSYNC_SEED=123 cargo test --test engine_differential` (a comma list
//! works too); `CLUSTERSYNC_SEEDS=N` runs N seeds per scenario; `CLUSTERSYNC_SIZE=large`
//! runs longer workloads on more data (the soak script); `CLUSTERSYNC_REPORT=path`
//! appends one JSON line per run.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use common::netns::{CutMode, Netns};
use common::{compare_clusters_exact, state_of, Engine, Server, Shapes, Workload, WorkloadOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Upper bound of every wait (the engine may wait ~15 s for a dead engine's lease).
const BOUND: Duration = Duration::from_secs(300);
/// Engine restarts tolerated in one run before giving up.
const MAX_RESTARTS: u32 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Source,
    Destination,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    EngineKill,
    ServerKill(Side),
    ServerStop(Side),
    Partition(Side),
}

struct Size {
    /// Workload time after `/start`.
    workload: Duration,
    /// Workload time before the engine starts (initial data in wl_1, wl_2).
    pre: Duration,
    /// ~1 KB documents in `bulk.docs`.
    bulk_docs: i32,
}

fn size() -> Size {
    if std::env::var("CLUSTERSYNC_SIZE").as_deref() == Ok("large") {
        Size {
            workload: Duration::from_secs(60),
            pre: Duration::from_secs(8),
            bulk_docs: 30_000,
        }
    } else {
        Size {
            workload: Duration::from_secs(20),
            pre: Duration::from_secs(3),
            bulk_docs: 4_000,
        }
    }
}

/// `CLUSTERSYNC_SEED` (one seed or a comma list), else the first `CLUSTERSYNC_SEEDS`
/// of `defaults` followed by 1000, 1001, …, else `defaults`.
fn seeds(defaults: &[u64]) -> Vec<u64> {
    if let Ok(s) = std::env::var("CLUSTERSYNC_SEED") {
        return s
            .split(',')
            .map(|x| x.trim().parse().expect("CLUSTERSYNC_SEED: integers"))
            .collect();
    }
    if let Ok(n) = std::env::var("CLUSTERSYNC_SEEDS") {
        let n: usize = n.parse().expect("CLUSTERSYNC_SEEDS: an integer");
        return defaults.iter().copied().chain(1000..).take(n).collect();
    }
    defaults.to_vec()
}

/// One run's outcome, printed and appended to `CLUSTERSYNC_REPORT` as JSON.
#[derive(Default)]
struct Report {
    scenario: String,
    seed: u64,
    result: String,
    faults: Vec<String>,
    observations: Vec<String>,
    ops_ok: Value,
    ops_errors: Value,
    sample_errors: Vec<String>,
    secs: f64,
    logs: String,
}

impl Report {
    fn passed(&self) -> bool {
        self.result == "PASS" || self.result.starts_with("SKIP")
    }
    fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario, "seed": self.seed, "result": self.result,
            "faults": self.faults, "observations": self.observations,
            "ops_ok": self.ops_ok, "ops_errors": self.ops_errors,
            "sample_errors": self.sample_errors, "secs": self.secs, "logs": self.logs,
        })
    }
}

/// Where a run keeps its engine logs (kept after the run for post-mortems).
fn run_dir(scenario: &str, seed: u64) -> PathBuf {
    let d = std::env::temp_dir()
        .join("clustersync-differential")
        .join(format!("{scenario}-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The engine under supervision: restarted with the same flags when it is killed or
/// exits by itself (an exit is recorded as an observation).
struct Supervisor {
    args: Vec<String>,
    engine: Option<Engine>,
    generation: u32,
    dir: PathBuf,
    started: Instant,
    observations: Vec<String>,
    faults: Vec<String>,
}

impl Supervisor {
    fn new(args: Vec<String>, dir: PathBuf) -> Supervisor {
        let mut s = Supervisor {
            args,
            engine: None,
            generation: 0,
            dir,
            started: Instant::now(),
            observations: vec![],
            faults: vec![],
        };
        s.spawn();
        s
    }

    fn t(&self) -> String {
        format!("t={:.1}s", self.started.elapsed().as_secs_f64())
    }

    fn spawn(&mut self) {
        self.generation += 1;
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.engine = Some(Engine::spawn(&args));
    }

    fn e(&self) -> &Engine {
        self.engine.as_ref().unwrap()
    }

    fn save_log(&self) {
        if let Some(e) = &self.engine {
            let _ = std::fs::copy(
                e.log_path(),
                self.dir.join(format!("engine.{}.log", self.generation)),
            );
        }
    }

    /// SIGKILL the engine and start it again with the same flags.
    fn kill_and_restart(&mut self, point: &str) {
        let t = self.t();
        self.e().kill();
        self.save_log();
        self.faults.push(format!("{t} SIGKILL engine ({point})"));
        self.restart();
    }

    fn restart(&mut self) {
        assert!(
            self.generation <= MAX_RESTARTS,
            "engine restarted {MAX_RESTARTS} times; logs in {}",
            self.dir.display()
        );
        self.engine = None;
        self.spawn();
    }

    /// The progress, restarting the engine if it exited; `None` if it does not answer.
    async fn progress(&mut self) -> Option<Value> {
        if let Some(status) = self.e().try_exit_status() {
            let t = self.t();
            let tail = self.e().log_tail(8);
            self.save_log();
            self.observations.push(format!(
                "{t} engine exited by itself ({status}); restarted. log tail: {tail}"
            ));
            self.restart();
            return None;
        }
        self.e().try_progress().await.ok()
    }

    /// Poll until `pred` holds (restarting the engine as needed), at most `timeout`.
    async fn wait_for<F: Fn(&Value) -> bool>(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: F,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(p) = self.progress().await {
                if pred(&p) {
                    return Ok(p);
                }
                if let Some(err) = p["progress"]["syncError"].as_str() {
                    self.save_log();
                    return Err(format!(
                        "engine stopped with syncError while waiting for {what} (state {:?}): {err}",
                        state_of(&p)
                    ));
                }
                last = Some(p);
            }
            if Instant::now() > deadline {
                self.save_log();
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what}; last progress: {}; engine log tail:\n{}",
                    last.map(|v| v.to_string()).unwrap_or_default(),
                    self.e().log_tail(30)
                ));
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// POST `path` unless the engine is down; `None` on a transport error.
    async fn try_post(&self, path: &str, body: Value) -> Option<(u16, Value)> {
        let e = self.e();
        let resp = reqwest::Client::new()
            .post(e.url(path))
            .timeout(Duration::from_secs(30))
            .json(&body)
            .send()
            .await
            .ok()?;
        let code = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        Some((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

fn info_of(p: &Value) -> &str {
    p["progress"]["info"].as_str().unwrap_or("")
}

/// ~1 KB documents, enough for a copy that takes a little while.
async fn seed_bulk(client: &mongodb::Client, n: i32, seed: u64) {
    let coll = client.database("bulk").collection::<Document>("docs");
    let pad = "p".repeat(900);
    for start in (0..n).step_by(2000) {
        let batch: Vec<Document> = (start..(start + 2000).min(n))
            .map(|i| doc! { "_id": i, "seed": seed as i64, "pad": &pad, "nested": { "k": i % 7, "arr": [i, i + 1] } })
            .collect();
        coll.insert_many(batch).await.unwrap();
    }
}

fn full_options() -> WorkloadOptions {
    WorkloadOptions {
        shapes: Shapes::Full,
        ..Default::default()
    }
}

async fn sleep_until(t0: Instant, at: Duration) {
    let now = t0.elapsed();
    if at > now {
        tokio::time::sleep(at - now).await;
    }
}

/// One seeded run of `scenario`; never panics on an engine failure (the report says).
async fn run_one(scenario: &'static str, fault: Fault, seed: u64) -> Report {
    let started = Instant::now();
    let dir = run_dir(scenario, seed);
    let mut report = Report {
        scenario: scenario.into(),
        seed,
        logs: dir.display().to_string(),
        ..Default::default()
    };
    let task = tokio::spawn(run_inner(fault, seed, dir));
    match task.await {
        Ok(inner) => {
            report.result = inner.result;
            report.faults = inner.faults;
            report.observations = inner.observations;
            report.ops_ok = inner.ops_ok;
            report.ops_errors = inner.ops_errors;
            report.sample_errors = inner.sample_errors;
        }
        Err(e) => {
            let msg = match e.try_into_panic() {
                Ok(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            report.result = format!("FAIL (panic): {msg}");
        }
    }
    report.secs = started.elapsed().as_secs_f64();
    report
}

async fn run_inner(fault: Fault, seed: u64, dir: PathBuf) -> Report {
    let mut report = Report::default();
    let size = size();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xD1FF_5EED);

    // Servers (in a network namespace for partitions; fsync'd for SIGKILLs).
    let extra: &[&str] = match fault {
        Fault::ServerKill(_) => &["--sync-on-commit"],
        _ => &[],
    };
    let mut netns = None;
    let (mut src, mut dst) = match fault {
        Fault::Partition(side) => {
            let ns = match Netns::create() {
                Ok(ns) => ns,
                Err(why) => {
                    report.result = format!("SKIP: network partition not possible here: {why}");
                    eprintln!("{}", report.result);
                    return report;
                }
            };
            let pair = if side == Side::Source {
                let a = Server::start_in_netns(&ns.name, &ns.ns_ip, extra).await;
                (a, Server::start_with_args(extra).await)
            } else {
                let b = Server::start_in_netns(&ns.name, &ns.ns_ip, extra).await;
                (Server::start_with_args(extra).await, b)
            };
            netns = Some(ns);
            pair
        }
        _ => tokio::join!(
            Server::start_with_args(extra),
            Server::start_with_args(extra)
        ),
    };
    let sc = src.client().await;
    common::seed_full_dataset(&sc)
        .await
        .expect("seed_full_dataset");
    seed_bulk(&sc, size.bulk_docs, seed).await;
    // Where the source's history starts, for a failure's account of a differing document.
    let history_from = source_time(&sc).await;
    // A SIGKILL of the test server can undo DDL it finished seconds before (a rename was seen
    // undone by crash recovery, with an fsync and a 2 s wait before the kill, while its change
    // event stayed), so the source-crash scenario writes documents only; every other
    // scenario runs DDL. (mongod's catalog is durable with the DDL's oplog entry.)
    let options = || {
        if matches!(fault, Fault::ServerKill(Side::Source)) {
            WorkloadOptions {
                ddl: false,
                ..full_options()
            }
        } else {
            full_options()
        }
    };
    let pre = Workload::start_with_options(src.uri(), seed ^ 0x5EED, options());
    tokio::time::sleep(size.pre).await;
    let pre_stats = pre.stop().await;

    // The engine, default /start options.
    let port = common::free_port().to_string();
    let args: Vec<String> = [
        "--cluster0",
        &src.uri(),
        "--cluster1",
        &dst.uri(),
        "--port",
        &port,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut sup = Supervisor::new(args, dir.clone());
    let workload = Workload::start_with_options(src.uri(), seed, options());
    let t0 = Instant::now();
    let result: Result<(), String> = async {
        sup.wait_for("engine ready", BOUND, |p| {
            state_of(p).is_some_and(|s| s != "INITIALIZING")
        })
        .await?;
        let (code, v) = sup
            .try_post(
                "start",
                json!({"source": "cluster0", "destination": "cluster1"}),
            )
            .await
            .ok_or("POST /start: no answer")?;
        if code != 200 {
            return Err(format!("/start refused: {code} {v}"));
        }

        // Faults during copy and change application.
        match fault {
            Fault::None => {}
            Fault::EngineKill => {
                let delay = Duration::from_millis(rng.random_range(0..1500));
                tokio::time::sleep(delay).await;
                let p = sup.progress().await.unwrap_or_default();
                if info_of(&p) == "collection copy" && p["progress"].get("indexBuilding").is_none()
                {
                    sup.kill_and_restart("planning/copy");
                } else {
                    sup.observations
                        .push(format!("copy phase over before the kill point: {p}"));
                }
                let r = sup
                    .wait_for("index build or change application", BOUND, |p| {
                        info_of(p) == "change event application"
                            || p["progress"].get("indexBuilding").is_some()
                    })
                    .await?;
                if info_of(&r) != "change event application" {
                    sup.kill_and_restart("index build");
                } else {
                    sup.observations
                        .push("index build not observed (missed the window)".into());
                }
                sup.wait_for("change event application", BOUND, |p| {
                    info_of(p) == "change event application"
                })
                .await?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..4000))).await;
                sup.kill_and_restart("change event application");
            }
            Fault::ServerKill(side) => {
                let at = Duration::from_millis(rng.random_range(1000..12_000));
                let down = Duration::from_millis(rng.random_range(300..3000));
                sleep_until(t0, at).await;
                // No source DDL in flight at the crash (see Workload::hold_ddl); document writes
                // go on through it.
                let ddl_held = if side == Side::Source {
                    let held = workload.hold_ddl().await;
                    Some(held)
                } else {
                    None
                };
                let s = if side == Side::Source {
                    &mut src
                } else {
                    &mut dst
                };
                s.kill();
                sup.faults.push(format!(
                    "{} SIGKILL {side:?} server, down {down:?}",
                    sup.t()
                ));
                tokio::time::sleep(down).await;
                s.restart().await;
                drop(ddl_held);
                sup.faults
                    .push(format!("{} {side:?} server restarted", sup.t()));
            }
            Fault::ServerStop(side) => {
                let at = Duration::from_millis(rng.random_range(1000..8000));
                let pause = Duration::from_millis(rng.random_range(10_000..20_000));
                sleep_until(t0, at).await;
                let s = if side == Side::Source { &src } else { &dst };
                s.sigstop();
                sup.faults
                    .push(format!("{} SIGSTOP {side:?} server for {pause:?}", sup.t()));
                tokio::time::sleep(pause).await;
                s.sigcont();
                sup.faults
                    .push(format!("{} SIGCONT {side:?} server", sup.t()));
            }
            Fault::Partition(side) => {
                let at = Duration::from_millis(rng.random_range(1000..8000));
                let cut = Duration::from_millis(rng.random_range(4000..12_000));
                let mode =
                    [CutMode::PeerDown, CutMode::HostDown, CutMode::Loss][rng.random_range(0..3)];
                sleep_until(t0, at).await;
                let ns = netns.as_mut().unwrap();
                let used = ns.cut(mode)?;
                sup.faults.push(format!(
                    "{} partition of the {side:?} server ({used:?}) for {cut:?}",
                    sup.t()
                ));
                tokio::time::sleep(cut).await;
                ns.heal()?;
                sup.faults.push(format!("{} partition healed", sup.t()));
            }
        }
        sleep_until(t0, size.workload).await;
        Ok(())
    }
    .await;
    let stats = workload.stop().await;
    report.ops_ok = json!(stats.ok);
    report.ops_errors = json!(stats.errors);
    report.sample_errors = stats.sample_errors.clone();
    report.observations.push(format!(
        "initial workload: {} ok, {} errors",
        pre_stats.total_ok(),
        pre_stats.total_errors()
    ));

    let result = match result {
        Ok(()) => commit(&mut sup, fault, &mut rng).await,
        Err(e) => Err(e),
    };
    sup.save_log();
    report.faults = std::mem::take(&mut sup.faults);
    report.observations.append(&mut sup.observations);
    let mut failures = Vec::new();
    let committed = result.is_ok();
    if let Err(e) = result {
        failures.push(e);
    }

    // The destination must equal the source (the truth) byte for byte (compared even
    // when the commit failed: the differences are the finding).
    let dc = dst.client().await;
    let compared = tokio::time::timeout(BOUND, compare_clusters_exact(&sc, &dc))
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "comparing the clusters did not finish within {BOUND:?} (a server does not answer)"
            ))
        });
    match compared {
        Ok(d) if d.is_empty() => {}
        Ok(d) => {
            let history = match history_from {
                Some(from) => source_history(&sc, from, &d).await,
                None => String::new(),
            };
            failures.push(format!(
                "{} differences {}:\n{}{history}",
                d.len(),
                if committed {
                    "after COMMITTED"
                } else {
                    "(not committed)"
                },
                d.iter()
                    .take(15)
                    .map(|x| format!("  - {x}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ))
        }
        Err(e) => failures.push(format!("compare failed: {e:#}")),
    }
    let (s_uri, d_uri) = (src.uri(), dst.uri());
    let out = tokio::task::spawn_blocking(move || {
        // `timeout`: bounded even when a server hangs.
        std::process::Command::new("timeout")
            .arg(BOUND.as_secs().to_string())
            .arg(env!("CARGO_BIN_EXE_clustersync"))
            .args(["verify", "--cluster0", &s_uri, "--cluster1", &d_uri])
            .env_remove("CLUSTERSYNC_CLUSTER0")
            .env_remove("CLUSTERSYNC_CLUSTER1")
            .output()
    })
    .await
    .unwrap();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            failures.push(format!(
                "clustersync verify exited {}: {}{}",
                o.status,
                text.chars().take(1500).collect::<String>(),
                String::from_utf8_lossy(&o.stderr)
                    .chars()
                    .take(500)
                    .collect::<String>()
            ))
        }
        Err(e) => failures.push(format!("cannot run clustersync verify: {e}")),
    }
    report.result = if failures.is_empty() {
        "PASS".into()
    } else {
        format!("FAIL: {}", failures.join("\n"))
    };
    drop(sup);
    drop((src, dst));
    drop(netns);
    report
}

/// The source's current cluster time.
async fn source_time(c: &mongodb::Client) -> Option<bson::Timestamp> {
    let r = c
        .database("admin")
        .run_command(doc! { "ping": 1 })
        .await
        .ok()?;
    r.get_timestamp("operationTime").ok().or_else(|| {
        r.get_document("$clusterTime")
            .ok()?
            .get_timestamp("clusterTime")
            .ok()
    })
}

/// For the first documents the comparison names (`<ns>: document _id=<id> …`), what the
/// source's change stream says happened to them, with the DDL of their namespace: whether a
/// write the destination lacks was ever streamed tells an engine bug from a source whose data
/// and change stream disagree (the test server's, after a crash or a race with DDL).
async fn source_history(c: &mongodb::Client, from: bson::Timestamp, diffs: &[String]) -> String {
    // (namespace, document `_id` as printed; empty for an index difference: DDL only).
    let wanted: Vec<(String, String)> = diffs
        .iter()
        .filter_map(|d| {
            if let Some((ns, rest)) = d.split_once(": document _id=") {
                let id = rest
                    .rsplit_once(" missing in")
                    .or_else(|| rest.rsplit_once(" extra in"))
                    .or_else(|| rest.split_once(" differs"))?
                    .0;
                return Some((ns.to_string(), id.to_string()));
            }
            let (ns, rest) = d.split_once(": index ")?;
            // Unique and TTL definitions differ until the commit restores them: not a finding.
            (rest.contains(" extra in") || rest.contains(" missing in"))
                .then(|| (ns.to_string(), String::new()))
        })
        .take(3)
        .collect();
    if wanted.is_empty() {
        return String::new();
    }
    let mut lines: Vec<String> = Vec::new();
    let read = async {
        let mut stream = c
            .watch()
            .start_at_operation_time(from)
            .show_expanded_events(true)
            .max_await_time(Duration::from_millis(500))
            .await?;
        for _ in 0..200_000 {
            let Some(ev) = stream.next_if_any().await? else {
                break;
            };
            let ns = ev
                .ns
                .as_ref()
                .map(|n| format!("{}.{}", n.db, n.coll.clone().unwrap_or_default()))
                .unwrap_or_default();
            let to = ev
                .to
                .as_ref()
                .map(|n| format!("{}.{}", n.db, n.coll.clone().unwrap_or_default()));
            let id = ev
                .document_key
                .as_ref()
                .and_then(|k| k.get("_id"))
                .map(|v| format!("{v:?}"));
            let op = format!("{:?}", ev.operation_type);
            let ts = ev
                .cluster_time
                .map(|t| format!("{}.{}", t.time, t.increment))
                .unwrap_or_default();
            for (wns, wid) in &wanted {
                let same_doc = !wid.is_empty() && id.as_deref() == Some(wid.as_str()) && &ns == wns;
                // Every DDL of the database: renames bring other collections' past along.
                let db_of = |n: &str| n.split_once('.').map(|(d, _)| d.to_string());
                let ddl = id.is_none() && db_of(&ns) == db_of(wns);
                if same_doc || ddl {
                    lines.push(format!(
                        "    {ts} {op} {ns}{} {}",
                        to.as_deref()
                            .map(|t| format!(" -> {t}"))
                            .unwrap_or_default(),
                        id.as_deref().unwrap_or("")
                    ));
                    break;
                }
            }
        }
        Ok::<_, mongodb::error::Error>(())
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), read).await;
    let why = match outcome {
        Ok(Ok(())) => String::new(),
        Ok(Err(e)) => format!(" (reading stopped: {e})"),
        Err(_) => " (reading stopped after 60 s)".into(),
    };
    format!(
        "\nthe source's change stream for {:?}{why}:\n{}",
        wanted,
        lines.join("\n")
    )
}

/// canCommit → `/commit` (SIGKILL right after it for [`Fault::EngineKill`]) → COMMITTED.
async fn commit(sup: &mut Supervisor, fault: Fault, rng: &mut StdRng) -> Result<(), String> {
    let deadline = Instant::now() + BOUND;
    let mut posted = false;
    let mut killed_after_commit = false;
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "not COMMITTED within {BOUND:?}; engine log tail:\n{}",
                sup.e().log_tail(30)
            ));
        }
        let p = sup
            .wait_for("canCommit or COMMITTED", BOUND, |p| {
                p["progress"]["canCommit"] == true
                    || matches!(state_of(p), Some("COMMITTING" | "COMMITTED"))
            })
            .await?;
        match state_of(&p) {
            Some("COMMITTED") => break,
            Some("COMMITTING") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            _ => {}
        }
        if posted {
            sup.observations.push(format!(
                "{} /commit posted again (state {:?} after a restart)",
                sup.t(),
                state_of(&p)
            ));
        }
        match sup.try_post("commit", json!({})).await {
            Some((200, _)) => posted = true,
            Some((code, v)) => {
                sup.observations
                    .push(format!("{} /commit answered {code}: {v}", sup.t()));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            None => continue,
        }
        if fault == Fault::EngineKill && !killed_after_commit {
            killed_after_commit = true;
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
            sup.kill_and_restart("right after /commit");
        }
        sup.wait_for("COMMITTED", BOUND, |p| {
            matches!(state_of(p), Some("COMMITTED"))
                || (state_of(p) == Some("RUNNING") && p["progress"]["canCommit"] == true)
        })
        .await?;
    }
    let p = sup.progress().await.unwrap_or_default();
    if p["progress"]["canWrite"] != true {
        return Err(format!("COMMITTED but canWrite is not true: {p}"));
    }
    Ok(())
}

/// Run `scenario` for its seeds; print every report; fail with all failing seeds.
async fn scenario(name: &'static str, fault: Fault, defaults: &[u64]) {
    let mut failed = Vec::new();
    for seed in seeds(defaults) {
        eprintln!("=== {name} seed {seed}: starting");
        let r = run_one(name, fault, seed).await;
        eprintln!(
            "=== {name} seed {seed}: {} in {:.0}s\n    faults: {:?}\n    observations: {:?}\n    ops ok: {}\n    ops errors: {}\n    sample errors: {:?}\n    logs: {}",
            r.result, r.secs, r.faults, r.observations, r.ops_ok, r.ops_errors,
            r.sample_errors.iter().take(5).collect::<Vec<_>>(), r.logs
        );
        if let Ok(path) = std::env::var("CLUSTERSYNC_REPORT") {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{}", r.to_json());
            }
        }
        if !r.passed() {
            failed.push(format!(
                "seed {seed} (replay: CLUSTERSYNC_SEED={seed} cargo test --test engine_differential {name}): {}",
                r.result
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: {} failing seed(s):\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn differential_no_faults() {
    scenario("differential_no_faults", Fault::None, &[1, 2, 3]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_engine_sigkill() {
    scenario("fault_engine_sigkill", Fault::EngineKill, &[11]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_source_sigkill() {
    scenario(
        "fault_source_sigkill",
        Fault::ServerKill(Side::Source),
        &[21],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_destination_sigkill() {
    scenario(
        "fault_destination_sigkill",
        Fault::ServerKill(Side::Destination),
        &[22],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_source_sigstop() {
    scenario(
        "fault_source_sigstop",
        Fault::ServerStop(Side::Source),
        &[31],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_destination_sigstop() {
    scenario(
        "fault_destination_sigstop",
        Fault::ServerStop(Side::Destination),
        &[32],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_source_partition() {
    scenario(
        "fault_source_partition",
        Fault::Partition(Side::Source),
        &[41],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn fault_destination_partition() {
    scenario(
        "fault_destination_partition",
        Fault::Partition(Side::Destination),
        &[42],
    )
    .await;
}
