//! Drive the `clustersync engine` binary and its mongosync-style HTTP API.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::server::{sigterm, tail_file};

pub use super::server::free_port;

/// Port mongosync listens on when `--port` is not given.
pub const DEFAULT_PORT: u16 = 27182;

/// The `progress.state` (mongosync layout) or top-level `state` of a progress reply.
pub fn state_of(progress: &Value) -> Option<&str> {
    progress
        .pointer("/progress/state")
        .or_else(|| progress.get("state"))
        .and_then(Value::as_str)
}

/// A running `clustersync engine …` process. Dropping it SIGKILLs the process
/// (if the test is panicking, its temp dir with `engine.log` is kept and its path printed).
/// All methods take `&self`.
pub struct Engine {
    pub port: u16,
    child: Mutex<Child>,
    pid: u32,
    dir: TempDir,
    http: reqwest::Client,
}

impl Engine {
    /// Run `clustersync engine <args…>`; the HTTP port is taken from `--port P` /
    /// `--port=P` in `args` (else 27182). Output goes to a log file.
    pub fn spawn(args: &[&str]) -> Engine {
        Self::spawn_with_env(args, &[])
    }

    /// [`Engine::spawn`] with extra environment variables.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Engine {
        Self::launch(false, args, env)
    }

    /// The binary invoked as `mongosync` (through a symlink of that name, as a runbook's
    /// systemd unit or the image's `/mongosync` would), with mongosync's command line: no
    /// subcommand.
    pub fn spawn_as_mongosync(args: &[&str], env: &[(&str, &str)]) -> Engine {
        Self::launch(true, args, env)
    }

    fn launch(as_mongosync: bool, args: &[&str], env: &[(&str, &str)]) -> Engine {
        let port = port_from_args(args).unwrap_or(DEFAULT_PORT);
        let dir = tempfile::Builder::new()
            .prefix("clustersync-engine-")
            .tempdir()
            .expect("create engine temp dir");
        let log_path = dir.path().join("engine.log");
        let log = File::create(&log_path).expect("create engine log");
        let log_err = log.try_clone().expect("clone log handle");
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_clustersync"));
        let mut command = if as_mongosync {
            let link = dir.path().join("mongosync");
            std::os::unix::fs::symlink(&exe, &link).expect("symlink mongosync");
            Command::new(link)
        } else {
            let mut c = Command::new(exe);
            c.arg("engine");
            c
        };
        let child = command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .expect("spawn clustersync engine");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        Engine {
            port,
            pid: child.id(),
            child: Mutex::new(child),
            dir,
            http,
        }
    }

    /// Spawn an engine syncing `cluster0` → `cluster1` on a fresh free port, with
    /// `extra` appended to `--cluster0 … --cluster1 … --port …`.
    pub fn spawn_between(cluster0: &str, cluster1: &str, extra: &[&str]) -> Engine {
        EngineCommand::between(cluster0, cluster1, extra).spawn(&[])
    }

    /// The engine's temp dir (also usable for extra files such as configs).
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("engine.log")
    }

    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log_path(), n)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `None` while running, `Some(status)` once exited (or killed).
    pub fn try_exit_status(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap().try_wait().ok().flatten()
    }

    pub fn is_running(&self) -> bool {
        self.try_exit_status().is_none()
    }

    /// SIGKILL (and reap).
    pub fn kill(&self) {
        let mut c = self.child.lock().unwrap();
        let _ = c.kill();
        let _ = c.wait();
    }

    /// SIGTERM (graceful shutdown request); does not wait.
    pub fn terminate(&self) {
        if self.is_running() {
            sigterm(self.pid);
        }
    }

    /// Wait up to `timeout` for the process to exit.
    pub async fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit_status() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT` + path; paths not starting with `/api/` get `/api/v1/` prefixed.
    pub fn url(&self, path: &str) -> String {
        let p = if path.starts_with("/api/") {
            path.to_string()
        } else {
            format!("/api/v1/{}", path.trim_start_matches('/'))
        };
        format!("http://127.0.0.1:{}{}", self.port, p)
    }

    async fn into_parts(resp: reqwest::Response) -> (u16, Value) {
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// The engine's `/metrics` text (served without the API token, like `/healthz`).
    pub async fn metrics(&self) -> String {
        let resp = reqwest::get(format!("http://127.0.0.1:{}/metrics", self.port))
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// GET /api/v1/progress, or the transport error.
    pub async fn try_progress(&self) -> Result<Value, String> {
        let (status, body) = self.try_get("progress").await?;
        if status == 200 {
            Ok(body)
        } else {
            Err(format!("progress: HTTP {status}: {body}"))
        }
    }

    /// GET /api/v1/progress (panics with the log tail if it fails).
    pub async fn progress(&self) -> Value {
        match self.try_progress().await {
            Ok(v) => v,
            Err(e) => panic!("{e}\n--- engine log tail ---\n{}", self.log_tail(40)),
        }
    }

    /// GET `path` → (status, JSON body or the raw text as a JSON string).
    pub async fn try_get(&self, path: &str) -> Result<(u16, Value), String> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        Ok(Self::into_parts(resp).await)
    }

    /// GET `path` (panics on transport error).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        match self.try_get(path).await {
            Ok(r) => r,
            Err(e) => panic!("{e}\n--- engine log tail ---\n{}", self.log_tail(40)),
        }
    }

    /// Waits until the engine serves, then `/start`s a sync with `body`; panics if refused.
    pub async fn start_sync(&self, body: Value) {
        self.wait_ready().await;
        let (code, v) = self.post("start", body).await;
        assert_eq!(code, 200, "start refused: {v}");
    }

    /// POST a JSON body to `path` (e.g. "start", "commit", "pause", "resume", "reverse").
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string()).await
    }

    /// POST a raw (possibly malformed) body with `Content-Type: application/json`.
    pub async fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        match resp {
            Ok(r) => Self::into_parts(r).await,
            Err(e) => panic!(
                "POST {path}: {e}\n--- engine log tail ---\n{}",
                self.log_tail(40)
            ),
        }
    }

    /// Poll /progress every 200 ms until `pred` holds; returns that progress.
    /// Panics on timeout (with the last progress and log tail) or if the engine exits.
    pub async fn wait_until<F>(&self, pred: F, timeout: Duration) -> Value
    where
        F: Fn(&Value) -> bool,
    {
        let deadline = Instant::now() + timeout;
        let mut last: Result<Value, String> = Err("no reply yet".into());
        loop {
            if let Some(status) = self.try_exit_status() {
                panic!(
                    "engine exited ({status}) while waiting; last progress: {}\n--- engine log tail ---\n{}",
                    show(&last),
                    self.log_tail(60)
                );
            }
            last = self.try_progress().await;
            if let Ok(v) = &last {
                if pred(v) {
                    return v.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting on engine progress; last progress: {}\n--- engine log tail ---\n{}",
                    show(&last),
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait (60 s) until /progress answers with a state other than INITIALIZING.
    pub async fn wait_ready(&self) -> Value {
        self.wait_until(
            |p| state_of(p).is_some_and(|s| s != "INITIALIZING"),
            Duration::from_secs(60),
        )
        .await
    }

    /// Wait until the progress state equals `state`.
    pub async fn wait_state(&self, state: &str, timeout: Duration) -> Value {
        self.wait_until(|p| state_of(p) == Some(state), timeout)
            .await
    }

    /// Waits for `canCommit`, commits, and waits for COMMITTED with `canWrite` (each wait up to
    /// `timeout`); returns the last `/progress`.
    pub async fn commit_and_wait(&self, timeout: Duration) -> Value {
        self.wait_until(|p| p["progress"]["canCommit"] == true, timeout)
            .await;
        let (code, v) = self.post("commit", serde_json::json!({})).await;
        assert_eq!(code, 200, "commit refused: {v}");
        let p = self.wait_state("COMMITTED", timeout).await;
        assert_eq!(p["progress"]["canWrite"], true, "{p}");
        p
    }
}

fn show(v: &Result<Value, String>) -> String {
    match v {
        Ok(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
        Err(e) => e.clone(),
    }
}

fn port_from_args(args: &[&str]) -> Option<u16> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == "--port" {
            return it.next().and_then(|p| p.parse().ok());
        }
        if let Some(p) = a.strip_prefix("--port=") {
            return p.parse().ok();
        }
    }
    None
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!("engine log kept at {}", self.log_path().display());
        }
    }
}

/// The value of the sample `name` (with its labels) in a Prometheus text exposition.
#[allow(dead_code)]
/// One engine command line (`--cluster0 … --cluster1 … --port <free port>` and extra flags),
/// kept so that a restart runs the same command, as a supervisor would.
pub struct EngineCommand {
    args: Vec<String>,
}

impl EngineCommand {
    pub fn between(cluster0: &str, cluster1: &str, extra: &[&str]) -> Self {
        let port = free_port().to_string();
        let mut args: Vec<String> = [
            "--cluster0",
            cluster0,
            "--cluster1",
            cluster1,
            "--port",
            &port,
        ]
        .map(str::to_string)
        .into();
        args.extend(extra.iter().map(|a| a.to_string()));
        Self { args }
    }

    /// Starts the engine with this command and extra environment variables.
    pub fn spawn(&self, env: &[(&str, &str)]) -> Engine {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        Engine::spawn_with_env(&args, env)
    }
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}
