//! A stand-in for the kubelet over the fake API server: for every Deployment it runs the
//! container's command (the `clustersync` binary the image would hold) as a local process,
//! with the Deployment's arguments and its environment resolved from the referenced Secrets,
//! and registers where its API answers. What it changes so that one machine can host it:
//! `--bind 0.0.0.0 --port 27182` become loopback and a free port.
//!
//! Like a kubelet it restarts a container that exits, replaces the pod when the template
//! changes, leaves a pod whose Secrets are missing unstarted (CreateContainerConfigError), and
//! stops the pod when its Deployment is deleted.

use std::collections::HashMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clustersync::operator::credentials::value_of;
use clustersync::operator::engine_api::StaticLocator;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use tempfile::TempDir;

use super::kube_fake::FakeApiServer;
use super::server::free_port;

struct Pod {
    child: Child,
    template: String,
    port: u16,
    /// Container starts so far (1 = never restarted).
    starts: u32,
    dir: TempDir,
    /// A crashed container is restarted only after this (the kubelet's crash backoff).
    restart_after: Option<Instant>,
}

#[derive(Default)]
struct State {
    pods: HashMap<(String, String), Pod>,
    /// Why a Deployment has no running pod, as `kubectl describe pod` would say.
    waiting: HashMap<(String, String), String>,
    /// Every container start, ever, per Deployment.
    total_starts: HashMap<(String, String), u32>,
}

pub struct FakeKubelet {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeKubelet {
    pub fn start(api: FakeApiServer, locator: StaticLocator) -> FakeKubelet {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    sync_once(&api, &locator, &state);
                    std::thread::sleep(Duration::from_millis(150));
                }
                let mut st = state.lock().unwrap();
                for ((ns, name), mut pod) in st.pods.drain() {
                    let _ = pod.child.kill();
                    let _ = pod.child.wait();
                    locator.remove(&ns, &name);
                }
            })
        };
        FakeKubelet {
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Container starts of `name`'s pod over the whole test (restarts and replacements count).
    pub fn starts(&self, ns: &str, name: &str) -> u32 {
        let st = self.state.lock().unwrap();
        st.total_starts
            .get(&(ns.into(), name.into()))
            .copied()
            .unwrap_or(0)
    }

    /// The running process of `name`'s pod.
    pub fn pid(&self, ns: &str, name: &str) -> Option<u32> {
        let st = self.state.lock().unwrap();
        st.pods.get(&(ns.into(), name.into())).map(|p| p.child.id())
    }

    pub fn running(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().pods.keys().cloned().collect()
    }

    pub fn waiting_reason(&self, ns: &str, name: &str) -> Option<String> {
        let st = self.state.lock().unwrap();
        st.waiting.get(&(ns.into(), name.into())).cloned()
    }

    /// SIGKILLs the engine's container; it is restarted after `backoff`, as a kubelet
    /// restarts a crashed container.
    pub fn kill(&self, ns: &str, name: &str, backoff: Duration) {
        let mut st = self.state.lock().unwrap();
        if let Some(p) = st.pods.get_mut(&(ns.into(), name.into())) {
            let _ = p.child.kill();
            let _ = p.child.wait();
            p.restart_after = Some(Instant::now() + backoff);
        }
    }

    /// The engine's output so far.
    pub fn log(&self, ns: &str, name: &str) -> String {
        let st = self.state.lock().unwrap();
        st.pods
            .get(&(ns.into(), name.into()))
            .and_then(|p| std::fs::read_to_string(p.dir.path().join("engine.log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sync_once(api: &FakeApiServer, locator: &StaticLocator, state: &Mutex<State>) {
    let deployments: Vec<Deployment> = api.list_resources(None);
    let mut st = state.lock().unwrap();
    let mut wanted = Vec::new();
    for d in &deployments {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        if d.metadata.deletion_timestamp.is_some() || d.spec.replicas == Some(0) {
            continue;
        }
        let key = (ns.clone(), name.clone());
        wanted.push(key.clone());
        let template = serde_json::to_string(&d.spec.template).unwrap();
        if let Some(pod) = st.pods.get_mut(&key) {
            let exited = matches!(pod.child.try_wait(), Ok(Some(_)));
            if pod.template == template && !exited {
                continue;
            }
            let backing_off = pod.restart_after.is_some_and(|t| Instant::now() < t);
            if pod.template == template && backing_off {
                continue;
            }
            let _ = pod.child.kill();
            let _ = pod.child.wait();
        }
        let previous = st.pods.remove(&key);
        match run_pod(api, &ns, d, &template, previous) {
            Ok(pod) => {
                locator.set(&ns, &name, format!("http://127.0.0.1:{}", pod.port));
                *st.total_starts.entry(key.clone()).or_default() += 1;
                st.waiting.remove(&key);
                st.pods.insert(key, pod);
            }
            Err(why) => {
                locator.remove(&ns, &name);
                st.waiting.insert(key, why);
            }
        }
    }
    let gone: Vec<(String, String)> = st
        .pods
        .keys()
        .filter(|k| !wanted.contains(k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(mut pod) = st.pods.remove(&key) {
            let _ = pod.child.kill();
            let _ = pod.child.wait();
        }
        locator.remove(&key.0, &key.1);
    }
}

fn run_pod(
    api: &FakeApiServer,
    ns: &str,
    d: &Deployment,
    template: &str,
    previous: Option<Pod>,
) -> Result<Pod, String> {
    let spec = d.spec.template.spec.as_ref().ok_or("no pod spec")?;
    let c = spec.containers.first().ok_or("no container")?;
    let mut env = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let r = from
                    .secret_key_ref
                    .as_ref()
                    .ok_or("only secretKeyRef is supported")?;
                let secret: Secret = api.get_resource(ns, &r.name).ok_or_else(|| {
                    format!(
                        "CreateContainerConfigError: secret \"{}\" not found",
                        r.name
                    )
                })?;
                value_of(&secret, &r.key).ok_or_else(|| {
                    format!(
                        "CreateContainerConfigError: couldn't find key {} in Secret {ns}/{}",
                        r.key, r.name
                    )
                })?
            }
            (None, None) => String::new(),
        };
        env.push((e.name.clone(), value));
    }
    // A restarted container keeps its pod: same port, same directory.
    let (port, dir, starts) = match previous {
        Some(p) if p.template == template => (p.port, p.dir, p.starts + 1),
        _ => (
            free_port(),
            tempfile::Builder::new()
                .prefix("clustersync-pod-")
                .tempdir()
                .map_err(|e| e.to_string())?,
            1,
        ),
    };
    let mut args = c.args.clone().unwrap_or_default();
    for i in 0..args.len().saturating_sub(1) {
        match args[i].as_str() {
            "--port" => args[i + 1] = port.to_string(),
            "--bind" => args[i + 1] = "127.0.0.1".into(),
            _ => {}
        }
    }
    let log = File::options()
        .create(true)
        .append(true)
        .open(dir.path().join("engine.log"))
        .map_err(|e| e.to_string())?;
    let child = Command::new(env!("CARGO_BIN_EXE_clustersync"))
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start the engine: {e}"))?;
    Ok(Pod {
        child,
        template: template.to_string(),
        port,
        starts,
        dir,
        restart_after: None,
    })
}
