//! A real control plane for the tests: etcd, kube-apiserver (RBAC enforced, audit log) and
//! kube-controller-manager, built from Go modules and started by `scripts/k8s.sh`, one per
//! test binary, stopped when the test binary exits. Tests share it and keep apart by
//! namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

pub struct ControlPlane {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// Folder holding kubectl, helm and the servers.
    pub bin: PathBuf,
    pub audit_log: PathBuf,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static SHARED: OnceLock<ControlPlane> = OnceLock::new();

impl ControlPlane {
    /// The test binary's control plane, started on first use.
    pub fn shared() -> &'static ControlPlane {
        SHARED.get_or_init(|| Self::start_new("shared"))
    }

    /// A control plane of its own (for tests that stop or starve the API server).
    pub fn start_new(name: &str) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!(
            "clustersync-k8s-{}-{name}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let out = Command::new(root().join("scripts/k8s.sh"))
            .arg("start")
            .arg(&dir)
            .arg("--owner")
            .arg(std::process::id().to_string())
            .output()
            .expect("scripts/k8s.sh runs");
        assert!(
            out.status.success(),
            "could not start the test control plane (scripts/k8s.sh start; run `scripts/k8s.sh build` first if Go is missing):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.join("env")).expect("k8s.sh wrote its env file");
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing from {}", dir.join("env").display()))
                .to_string()
        };
        ControlPlane {
            kubeconfig: PathBuf::from(get("KUBECONFIG")),
            bin: PathBuf::from(get("K8S_BIN")),
            audit_log: PathBuf::from(get("K8S_AUDIT_LOG")),
            dir,
        }
    }

    /// Stops this control plane (a shared one stops with the test binary).
    pub fn stop(&self) {
        let _ = Command::new(root().join("scripts/k8s.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }

    /// The kube-apiserver's process id.
    pub fn apiserver_pid(&self) -> i32 {
        let pids = std::fs::read_to_string(self.dir.join("pids")).unwrap_or_default();
        pids.lines()
            .find_map(|l| l.strip_prefix("kube-apiserver "))
            .and_then(|p| p.trim().parse().ok())
            .expect("kube-apiserver's pid")
    }

    pub async fn config(&self) -> Config {
        let kc = Kubeconfig::read_from(&self.kubeconfig).expect("admin kubeconfig");
        Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("a client config")
    }

    /// A cluster-admin client.
    pub async fn admin(&self) -> Client {
        Client::try_from(self.config().await).expect("a client")
    }

    /// A client authenticated as ServiceAccount `ns/name` (a bound token from the TokenRequest
    /// API), so RBAC applies to it as to a pod running as that ServiceAccount.
    pub async fn service_account_client(&self, ns: &str, name: &str) -> Client {
        let out = self.kubectl(&["-n", ns, "create", "token", name, "--duration", "2h"]);
        assert!(
            out.status.success(),
            "kubectl create token {ns}/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut config = self.config().await;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Client::try_from(config).expect("a client")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and panics with its output unless it succeeds.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn helm(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("helm"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .current_dir(root())
            .output()
            .expect("helm runs")
    }

    /// A new namespace with a unique name starting with `prefix`.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> String {
        let name = format!("{prefix}-{}", rand_suffix());
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({ "metadata": { "name": name } })).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
        name
    }

    /// `kubectl apply --server-side` of a file or folder, as the tests' field manager; returns
    /// kubectl's output.
    pub fn apply(&self, path: &Path) -> String {
        self.kubectl_ok(&[
            "apply",
            "--server-side",
            "--field-manager",
            "clustersync-tests",
            "--force-conflicts",
            "-f",
            path_str(path),
        ])
    }

    /// Runs helm and panics with its output unless it succeeds.
    pub fn helm_ok(&self, args: &[&str]) -> String {
        let out = self.helm(args);
        assert!(
            out.status.success(),
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Applies the CRD from `crds/` (server-side), and waits until it is served.
    pub fn apply_crd(&self) {
        self.apply(&root().join("crds/clustersync.io_clustersyncs.yaml"));
        // `kubectl wait` fails at once ("accessor error: <nil>") on a CRD whose status has no
        // conditions yet, as happens in the moment after a create: asked again, it waits.
        let args = [
            "wait",
            "--for",
            "condition=Established",
            "--timeout",
            "60s",
            "crd/clustersyncs.clustersync.io",
        ];
        for _ in 0..20 {
            let out = self.kubectl(&args);
            if out.status.success() {
                return;
            }
            if !String::from_utf8_lossy(&out.stderr).contains("accessor error") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        self.kubectl_ok(&args);
    }

    /// Audit log entries (one JSON object a line) from `offset` bytes on.
    pub fn audit_since(&self, offset: u64) -> Vec<serde_json::Value> {
        let text = std::fs::read(&self.audit_log).unwrap_or_default();
        let from = (offset as usize).min(text.len());
        String::from_utf8_lossy(&text[from..])
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn audit_len(&self) -> u64 {
        std::fs::metadata(&self.audit_log)
            .map(|m| m.len())
            .unwrap_or(0)
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn rand_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..6)
        .map(|_| (b'a' + rng.random_range(0..26u8)) as char)
        .collect()
}
