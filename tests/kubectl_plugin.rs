//! `kubectl clustersync` end to end: the real control plane (`common::k8s`), the operator
//! running as the manifests' ServiceAccount (`common::operator`), the test kubelet running the
//! engine pods and serving their logs on the Node's kubelet port (`common::kubelet_logs`, so
//! the API server's pods/log works), and two SecantusDB servers as the clusters.
//!
//! The plugin is the built binary behind a symlink named `kubectl-clustersync` on the PATH,
//! run by the cached `kubectl` as `kubectl clustersync …`, with a kubeconfig holding the token
//! of a ServiceAccount bound only to the `clustersync-user` ClusterRole deploy/base ships: a
//! permission the plugin needs and the role lacks fails here. Standard input is not a
//! terminal, as in CI.
//!
//! What this cannot exercise: the interactive confirmation of `commit` on a real terminal (the
//! decision is unit-tested in src/cli/kubectl/render.rs), in-cluster configuration, and a
//! real kubelet's log files (the test kubelet serves the engine process's output).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bson::doc;
use clustersync::operator::crd::ClusterSync;
use common::k8s::ControlPlane;
use common::operator::{cluster_sync, create_uri_secrets, installed, serve_engines, Operator};
use common::Server;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;

/// Where the control plane's API server is and the CA that signed its certificate.
fn server_and_ca(cp: &ControlPlane) -> (String, PathBuf) {
    let env = std::fs::read_to_string(cp.dir.join("env")).unwrap();
    let api = env
        .lines()
        .find_map(|l| l.strip_prefix("K8S_API="))
        .expect("K8S_API in the env file")
        .to_string();
    (api, cp.dir.join("pki/ca.crt"))
}

/// A kubeconfig for ServiceAccount `ns/sa` (a bound token), its context's namespace `ns`: what
/// a user of the plugin holds.
fn user_kubeconfig(cp: &ControlPlane, dir: &Path, ns: &str, sa: &str) -> PathBuf {
    cp.kubectl_ok(&["-n", ns, "create", "serviceaccount", sa]);
    let token = cp.kubectl_ok(&["-n", ns, "create", "token", sa, "--duration", "1h"]);
    let (server, ca) = server_and_ca(cp);
    let path = dir.join(format!("{sa}.kubeconfig"));
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{ "name": "test", "cluster": { "server": server, "certificate-authority": ca } }],
        "users": [{ "name": sa, "user": { "token": token.trim() } }],
        "contexts": [{ "name": sa, "context": { "cluster": "test", "user": sa, "namespace": ns } }],
        "current-context": sa,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    path
}

/// A folder holding only `kubectl-clustersync`, a symlink to the built binary, as a user
/// installs the plugin.
fn plugin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("plugins");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_clustersync"),
        bin.join("kubectl-clustersync"),
    )
    .unwrap();
    bin
}

struct User<'a> {
    cp: &'a ControlPlane,
    plugins: PathBuf,
    kubeconfig: PathBuf,
}

impl User<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let path = format!(
            "{}:{}",
            self.plugins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new(self.cp.bin.join("kubectl"));
        c.arg("clustersync")
            .args(args)
            .env("PATH", path)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null());
        c
    }

    /// `kubectl clustersync ARGS`, with the exit code, stdout and stderr.
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let Output {
            status,
            stdout,
            stderr,
        } = self.command(args).output().expect("kubectl runs");
        let out = (
            status.code().unwrap_or(-1),
            String::from_utf8_lossy(&stdout).into_owned(),
            String::from_utf8_lossy(&stderr).into_owned(),
        );
        eprintln!(
            "$ kubectl clustersync {}   (exit {})\n{}{}",
            args.join(" "),
            out.0,
            out.1,
            out.2
        );
        out
    }

    /// Polls `kubectl clustersync status NAME` until its screen contains every one of `want`.
    fn wait_status(&self, name: &str, want: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self
                .command(&["status", name])
                .output()
                .expect("kubectl runs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && want.iter().all(|w| text.contains(w)) {
                eprintln!("$ kubectl clustersync status {name}\n{text}");
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {want:?} in `kubectl clustersync status {name}`:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

async fn create_sync(admin: &kube::Client, ns: &str, name: &str, source: &str, dest: &str) {
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), ns);
    create_uri_secrets(&secrets, name, source, dest).await;
    Api::<ClusterSync>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &cluster_sync(ns, name, "Idle"))
        .await
        .unwrap();
}

/// Idle → resume → pause → resume → commit, each seen in `status`; commit refused while it
/// cannot be made and without --yes off a terminal; the engine's logs through pods/log; a
/// user without the role told which permission is missing; a missing name; bad usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_drives_a_sync_with_kubectl_clustersync() {
    let cp = installed().await;
    let admin = cp.admin().await;
    let ns = cp.namespace(&admin, "kubectl").await;
    let a = Server::start().await;
    let b = Server::start().await;
    a.client()
        .await
        .database("shop")
        .collection::<bson::Document>("orders")
        .insert_many((0..300).map(|i| doc! { "_id": i, "total": i * 10 }))
        .await
        .unwrap();
    let (locator, kubelet) = serve_engines(&admin, &ns).await;
    let operator = Operator::as_service_account(cp, &locator, &ns, "replica-a").await;
    create_sync(&admin, &ns, "move", &a.uri(), &b.uri()).await;

    let scratch = tempfile::tempdir().unwrap();
    cp.kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "alice-clustersync",
        "--clusterrole",
        "clustersync-user",
        &format!("--serviceaccount={ns}:alice"),
    ]);
    let plugins = plugin_dir(scratch.path());
    let alice = User {
        cp,
        plugins: plugins.clone(),
        kubeconfig: user_kubeconfig(cp, scratch.path(), &ns, "alice"),
    };
    let mallory = User {
        cp,
        plugins,
        kubeconfig: user_kubeconfig(cp, scratch.path(), &ns, "mallory"),
    };
    let long = Duration::from_secs(120);

    // Idle: the screen, the plan (or plainly none yet), and a commit that cannot be made.
    let screen = alice.wait_status("move", &["State: IDLE", "Conditions"], long);
    for want in [
        &format!("ClusterSync move (namespace {ns})"),
        "Mode:         Idle (spec)",
        "Can commit:   no",
        "Engine:       Deployment move-engine",
        "Plan",
    ] {
        assert!(screen.contains(want), "{want:?} missing from:\n{screen}");
    }
    // The operator asks the engine for a plan while Idle and writes it to the status: what the
    // user reads before starting. Until it has, the plugin says plainly there is none.
    let deadline = Instant::now() + long;
    let plan = loop {
        let (code, out, _) = alice.run(&["plan", "move"]);
        if !out.contains("No plan yet") {
            break (code, out);
        }
        assert_eq!(code, 1, "no plan is not a go-ahead");
        assert!(
            Instant::now() < deadline,
            "no plan in status within {long:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (code, out) = plan;
    eprintln!("kubectl clustersync plan move:\n{out}");
    // The test servers cannot block writes (no setUserWriteBlockMode) nor report their free
    // disk space: warnings, not blocking risks. Nothing else stands in the way.
    assert_eq!(code, 0, "{out}");
    for want in [
        "Plan for clustersync move",
        "SAFE to start",
        "1 databases, 1 collections, 0 views, 300 documents",
        "Estimate:",
        "Measured by:",
        "warning: ",
        "shop.orders: 300 documents",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let described = cp.kubectl_ok(&["-n", &ns, "describe", "clustersync", "move"]);
    assert!(
        described.contains("PlanSafe") && described.contains("NoBlockingRisk"),
        "{described}"
    );
    let columns = cp.kubectl_ok(&["-n", &ns, "get", "clustersync", "move"]);
    assert!(
        columns.lines().next().unwrap_or("").contains("ETA"),
        "{columns}"
    );
    let screen = alice.wait_status("move", &["State: IDLE", "Plan ("], long);
    assert!(
        screen.contains("safe: 1 collections in 1 databases"),
        "{screen}"
    );
    let (code, _, err) = alice.run(&["commit", "move", "--yes"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(
            "refusing to commit clustersync move: it cannot commit yet: the engine is IDLE"
        ),
        "{err}"
    );

    // Resume: RUNNING; a commit before the engine can is refused with the blocker, and once it
    // can, refused without --yes off a terminal.
    let (code, out, _) = alice.run(&["resume", "move"]);
    assert_eq!(code, 0);
    assert!(out.contains("spec.mode Idle -> Running"), "{out}");
    assert!(
        out.contains(&format!("kubectl clustersync status move -n {ns}")),
        "{out}"
    );
    alice.wait_status("move", &["State: RUNNING"], long);
    let deadline = Instant::now() + long;
    let mut saw_blocker = false;
    loop {
        let (code, _, err) = alice.run(&["commit", "move"]);
        assert_eq!(code, 1, "never committed without --yes off a terminal");
        if err.contains("pass --yes to commit") {
            break;
        }
        assert!(err.contains("it cannot commit yet: "), "{err}");
        saw_blocker |= !err.contains("has not reported canCommit");
        assert!(Instant::now() < deadline, "never committable: {err}");
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("a RUNNING commit blocker was named: {saw_blocker}");
    // The engine's per-namespace progress reaches the status through the operator: the one
    // collection is copied.
    alice.wait_status(
        "move",
        &[
            "Can commit:   yes",
            "Lag:",
            "Namespaces:   0 waiting, 0 copying, 0 building indexes, 1 done, 0 re-copying",
        ],
        long,
    );

    // Pause and resume.
    let (code, out, _) = alice.run(&["pause", "move"]);
    assert_eq!(code, 0);
    assert!(out.contains("spec.mode Running -> Paused"), "{out}");
    alice.wait_status("move", &["State: PAUSED"], long);
    let (code, out, _) = alice.run(&["pause", "move"]);
    assert_eq!(code, 0);
    assert!(out.contains("already has spec.mode Paused"), "{out}");
    assert_eq!(alice.run(&["resume", "move"]).0, 0);
    alice.wait_status("move", &["State: RUNNING", "Can commit:   yes"], long);

    // The engine's logs through the API server's pods/log, then followed.
    let (code, out, err) = alice.run(&["logs", "move", "--tail", "3"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines.is_empty() && lines.len() <= 3, "{out}");
    let engine_log = kubelet.log(&ns, "move-engine");
    for l in &lines {
        assert!(engine_log.contains(l), "{l:?} is not the engine's output");
    }
    let mut follow = alice
        .command(&["logs", "move", "--follow", "--tail", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let stdout = follow.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        r.read_line(&mut first).map(|_| first)
    });
    let started = Instant::now();
    while !reader.is_finished() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        matches!(follow.try_wait(), Ok(None)),
        "--follow keeps streaming"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    let first = reader.join().unwrap().unwrap();
    assert!(
        !first.trim().is_empty() && engine_log.contains(first.trim()),
        "{first:?}"
    );

    // Commit, and after it the mode is frozen.
    let (code, out, err) = alice.run(&["commit", "move", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("spec.mode Running -> Committed"), "{out}");
    alice.wait_status("move", &["State: COMMITTED", "Can write:    yes"], long);
    let (code, _, err) = alice.run(&["pause", "move"]);
    assert_eq!(code, 1);
    assert!(err.contains("its mode cannot change any more"), "{err}");
    let (code, out, _) = alice.run(&["commit", "move", "--yes"]);
    assert_eq!(code, 0);
    assert!(out.contains("already COMMITTED"), "{out}");

    // No role, no such object, bad usage; and the subcommand without the symlink.
    let (code, _, err) = mallory.run(&["status", "move"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!(
            "forbidden: you may not get clustersyncs.clustersync.io in namespace {ns}"
        )) && err.contains("clustersync-user"),
        "{err}"
    );
    let (code, _, err) = alice.run(&["status", "nosuch"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("clustersync nosuch not found in namespace {ns}")),
        "{err}"
    );
    assert_eq!(alice.run(&["status"]).0, 2, "a missing NAME is bad usage");
    let direct = Command::new(env!("CARGO_BIN_EXE_clustersync"))
        .args(["kubectl", "status", "move", "-n", &ns, "--kubeconfig"])
        .arg(&alice.kubeconfig)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(direct.status.success());
    assert!(String::from_utf8_lossy(&direct.stdout).contains("State: COMMITTED"));

    // The plugin read no Secret (it may not: the role grants none) and wrote nothing but
    // spec.mode.
    let alice_user = format!("system:serviceaccount:{ns}:alice");
    let touched: Vec<String> = cp
        .audit_since(0)
        .into_iter()
        .filter(|e| e["user"]["username"] == alice_user.as_str())
        .map(|e| {
            format!(
                "{} {}",
                e["verb"].as_str().unwrap_or("?"),
                e["objectRef"]["resource"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert!(
        !touched.iter().any(|t| t.ends_with(" secrets")),
        "{touched:?}"
    );
    assert!(
        touched.iter().any(|t| t == "get pods") || touched.iter().any(|t| t == "list pods"),
        "{touched:?}"
    );
    operator.stop().await;
    kubelet.shutdown();
}
