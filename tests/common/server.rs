//! A throwaway SecantusDB server (MongoDB-wire-compatible stand-in for mongod).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::Client;
use tempfile::TempDir;

/// How long `start`/`restart` wait for the server to answer `ping`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Path of the `secantusd-py` launcher: `$SECANTUSD`, else `<repo>/.venv/bin/secantusd-py`.
pub fn secantusd_path() -> PathBuf {
    let path = match std::env::var_os("SECANTUSD") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/secantusd-py"),
    };
    if !path.exists() {
        panic!(
            "SecantusDB server binary not found at {}: run `scripts/testbed.sh install` \
             (or set SECANTUSD to the secantusd-py path)",
            path.display()
        );
    }
    path
}

/// A free TCP port on 127.0.0.1 (as free as the kernel says it is right now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// `mongodb://127.0.0.1:PORT/?directConnection=true`
pub fn uri_for_port(port: u16) -> String {
    format!("mongodb://127.0.0.1:{port}/?directConnection=true")
}

/// Send SIGTERM to `pid` (std only offers SIGKILL).
pub(crate) fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `kill -SIG pid`.
pub(crate) fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Last `n` lines of a file (empty string if unreadable).
pub(crate) fn tail_file(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One SecantusDB server with its storage in a private temp dir, so it can be
/// killed and restarted with its data. Dropping it kills the process.
pub struct Server {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
    /// How many times the process was (re)started; each start gets its own log file.
    generation: u32,
    /// URI used to wait for `ping` after a (re)start; `None` = [`Server::uri`].
    ready_uri: Option<String>,
    /// Address the server listens on (default 127.0.0.1).
    host: String,
    /// Network namespace the server runs in (`ip netns exec NS …`), if any.
    netns: Option<String>,
}

impl Server {
    /// Start a fresh server on a free loopback port and wait until it answers `ping`.
    pub async fn start() -> Server {
        Self::start_with_args(&[]).await
    }

    /// Like [`Server::start`], with extra `secantusd-py` flags (e.g. `--auth`).
    /// The flags are reused on `restart`.
    pub async fn start_with_args(extra: &[&str]) -> Server {
        Self::start_full("127.0.0.1", None, extra).await
    }

    /// Start a server inside network namespace `netns`, listening on `host` (an address
    /// of that namespace reachable from here), with extra flags; `restart` keeps both.
    pub async fn start_in_netns(netns: &str, host: &str, extra: &[&str]) -> Server {
        Self::start_full(host, Some(netns.to_string()), extra).await
    }

    async fn start_full(host: &str, netns: Option<String>, extra: &[&str]) -> Server {
        // A port grabbed by someone else between free_port() and bind: retry.
        let mut last_err = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("secantus-")
                .tempdir()
                .expect("create temp dir for server");
            std::fs::write(dir.path().join("extra_args"), extra.join("\n")).unwrap();
            let mut server = Server {
                port: free_port(),
                dir,
                child: None,
                generation: 0,
                ready_uri: None,
                host: host.to_string(),
                netns: netns.clone(),
            };
            match server.launch_and_wait().await {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("SecantusDB server failed to start 3 times: {last_err}");
    }

    pub fn uri(&self) -> String {
        format!(
            "mongodb://{}:{}/?directConnection=true",
            self.host, self.port
        )
    }

    /// SIGSTOP the server process (it keeps its sockets but answers nothing).
    pub fn sigstop(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, "STOP");
        }
    }

    /// SIGCONT after [`Server::sigstop`].
    pub fn sigcont(&self) {
        if let Some(pid) = self.pid() {
            send_signal(pid, "CONT");
        }
    }

    /// A new driver client connected directly to this server
    /// (server selection timeout 10 s so a dead server fails fast).
    pub async fn client(&self) -> Client {
        client_for(&self.uri()).await
    }

    /// The storage directory passed as `--storage-path`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The log file of the current (or last) process.
    pub fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("server.{}.log", self.generation))
    }

    /// Contents of the current log file.
    pub fn log_contents(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL the server (no shutdown; data written so far stays on disk).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Graceful stop: SIGTERM, wait up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            sigterm(child.id());
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop (gracefully) if running, then start again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop();
        // The port may linger briefly; retry a few times.
        let mut last_err = String::new();
        for _ in 0..5 {
            match self.launch_and_wait().await {
                Ok(()) => return,
                Err(e) => {
                    last_err = e;
                    self.kill();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        panic!(
            "SecantusDB server on port {} failed to restart: {last_err}",
            self.port
        );
    }

    /// Stop (gracefully), then start again on the same port and storage with `extra`
    /// flags instead of the previous ones (kept for later restarts), e.g. to turn on
    /// `--auth` or TLS once users exist. Readiness is checked by pinging through
    /// `ready_uri` (e.g. a `tls=true&tlsCAFile=…` URI), or [`Server::uri`] when `None`.
    pub async fn restart_with_args(&mut self, extra: &[&str], ready_uri: Option<String>) {
        self.stop();
        std::fs::write(self.dir.path().join("extra_args"), extra.join("\n")).unwrap();
        self.ready_uri = ready_uri;
        self.restart().await;
    }

    fn extra_args(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("extra_args"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    async fn launch_and_wait(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "server already running");
        self.generation += 1;
        let log_path = self.log_path();
        let log = File::create(&log_path).map_err(|e| format!("create log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(secantusd_path());
                c
            }
            None => Command::new(secantusd_path()),
        };
        let child = cmd
            .arg("--host")
            .arg(&self.host)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--storage-path")
            .arg(self.data_dir())
            .args(self.extra_args())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn secantusd-py: {e}"))?;
        self.child = Some(child);

        let ready_uri = self.ready_uri.clone().unwrap_or_else(|| self.uri());
        let client = client_for(&ready_uri).await;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !self.is_running() {
                return Err(format!(
                    "server on port {} exited during startup; log tail:\n{}",
                    self.port,
                    tail_file(&log_path, 20)
                ));
            }
            let ping = tokio::time::timeout(
                Duration::from_secs(2),
                client.database("admin").run_command(doc! {"ping": 1}),
            )
            .await;
            if let Ok(Ok(_)) = ping {
                // The answer must come from this server, not another test's that took the same
                // port (two tests handed one free port each start a server on it: the loser's
                // ping reached the winner while it was still starting, and the two tests then
                // shared one server; engine_fencing failed so).
                let own = self.child.as_ref().map(|c| c.id() as i64);
                let status = client
                    .database("admin")
                    .run_command(doc! {"serverStatus": 1})
                    .await;
                let theirs = status.ok().and_then(|s| match s.get("pid") {
                    Some(bson::Bson::Int32(p)) => Some(*p as i64),
                    Some(bson::Bson::Int64(p)) => Some(*p),
                    _ => None,
                });
                if let (Some(own), Some(theirs)) = (own, theirs) {
                    if own != theirs {
                        return Err(format!(
                            "port {} is served by another process (pid {theirs}), not this server (pid {own})",
                            self.port
                        ));
                    }
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "server on port {} did not answer ping within {:?}; log tail:\n{}",
                    self.port,
                    START_TIMEOUT,
                    tail_file(&log_path, 20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A driver client for `uri` with a 10 s server-selection timeout.
pub async fn client_for(uri: &str) -> Client {
    let mut opts = ClientOptions::parse(uri)
        .await
        .unwrap_or_else(|e| panic!("bad mongodb uri {uri}: {e}"));
    opts.server_selection_timeout = Some(Duration::from_secs(10));
    opts.connect_timeout = Some(Duration::from_secs(5));
    Client::with_options(opts).unwrap_or_else(|e| panic!("client for {uri}: {e}"))
}
