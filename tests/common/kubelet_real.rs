//! A test kubelet for a real API server: it registers a Node, binds the operator's engine Pods
//! to it (there is no scheduler), runs each Pod's container as a local process of the
//! `clustersync` binary the image would hold, with the Pod's arguments and its environment
//! resolved from Secrets as a kubelet does, and writes the Pod's status back.
//!
//! What it changes so that one machine hosts every pod: `--bind 0.0.0.0 --port 27182` become
//! loopback and a free port, registered in a [`StaticLocator`] under the engine's Deployment
//! name. What it imitates: an image other than [`RUNNABLE_IMAGE`] cannot be pulled
//! (ImagePullBackOff); a container that exits is restarted with a backoff
//! (CrashLoopBackOff after the second exit); a Secret that is missing leaves the container
//! unstarted (CreateContainerConfigError); a Pod being deleted is stopped and then removed.
//! What it serves: the containers' logs on the Node's kubelet port
//! (`common::kubelet_logs`), so that `kubectl logs` and the pods/log subresource work.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use clustersync::operator::credentials::value_of;
use clustersync::operator::engine_api::StaticLocator;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tempfile::TempDir;

use super::server::free_port;

/// The only image this kubelet can "pull".
pub const RUNNABLE_IMAGE: &str = "ghcr.io/clustersync/clustersync:test";
pub const NODE: &str = "test-node";

struct Running {
    child: Child,
    port: u16,
    dir: TempDir,
    restarts: i32,
    /// Exited and waiting out the backoff until then.
    backoff_until: Option<Instant>,
}

/// Every kubelet of this process, for the log endpoint (which serves them all).
static KUBELETS: Mutex<Vec<Weak<Mutex<State>>>> = Mutex::new(Vec::new());

/// The log file of pod `ns/name`, if a kubelet of this process runs it.
fn log_file(ns: &str, name: &str) -> Option<PathBuf> {
    let all = KUBELETS.lock().unwrap();
    all.iter().filter_map(Weak::upgrade).find_map(|st| {
        let st = st.lock().unwrap();
        st.pods
            .get(&(ns.to_string(), name.to_string()))
            .map(|r| r.dir.path().join("engine.log"))
    })
}

#[derive(Default)]
struct State {
    /// By (namespace, pod name).
    pods: HashMap<(String, String), Running>,
    starts: HashMap<(String, String), u32>,
}

pub struct Kubelet {
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    /// Starts serving pods in `namespaces` (labelled as the operator's).
    pub async fn start(client: Client, namespaces: Vec<String>, locator: StaticLocator) -> Kubelet {
        let state = Arc::new(Mutex::new(State::default()));
        {
            let mut all = KUBELETS.lock().unwrap();
            all.retain(|w| w.strong_count() > 0);
            all.push(Arc::downgrade(&state));
        }
        register_node(&client, super::kubelet_logs::port(log_file)).await;
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                loop {
                    for ns in &namespaces {
                        if let Err(e) = sync_once(&client, ns, &locator, &state).await {
                            eprintln!("test kubelet: {e}");
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            })
        };
        Kubelet { state, task }
    }

    /// Container starts of the engine of Deployment `deployment` over the whole test.
    pub fn starts(&self, ns: &str, deployment: &str) -> u32 {
        let st = self.state.lock().unwrap();
        st.starts
            .iter()
            .filter(|((n, pod), _)| n == ns && deployment_of_name(pod) == deployment)
            .map(|(_, c)| *c)
            .sum()
    }

    /// SIGKILLs the engine container of `deployment`'s pod (the kubelet restarts it).
    pub fn kill(&self, ns: &str, deployment: &str) -> bool {
        let mut st = self.state.lock().unwrap();
        let mut killed = false;
        for ((n, pod), r) in st.pods.iter_mut() {
            if n == ns && deployment_of_name(pod) == deployment {
                let _ = r.child.kill();
                killed = true;
            }
        }
        killed
    }

    /// The engine's output so far.
    pub fn log(&self, ns: &str, deployment: &str) -> String {
        let st = self.state.lock().unwrap();
        st.pods
            .iter()
            .filter(|((n, pod), _)| n == ns && deployment_of_name(pod) == deployment)
            .filter_map(|(_, r)| std::fs::read_to_string(r.dir.path().join("engine.log")).ok())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every container (as a node going away would).
    pub fn shutdown(self) {
        self.task.abort();
        let mut st = self.state.lock().unwrap();
        for (_, mut r) in st.pods.drain() {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut st) = self.state.lock() {
            for (_, mut r) in st.pods.drain() {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
        }
    }
}

/// `move-engine-5d9f8c7b6-x2x4z` → `move-engine` (pod name = ReplicaSet name + 5 characters,
/// ReplicaSet name = Deployment name + template hash).
fn deployment_of_name(pod: &str) -> &str {
    let rs = pod.rsplit_once('-').map(|(a, _)| a).unwrap_or(pod);
    rs.rsplit_once('-').map(|(a, _)| a).unwrap_or(rs)
}

async fn register_node(client: &Client, kubelet_port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": { "name": NODE, "labels": { "kubernetes.io/hostname": NODE, "pool": "sync" } },
    }))
    .unwrap();
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("cannot register the test node: {e}"),
    }
    let status = json!({ "status": {
        "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady",
                         "message": "test kubelet", "lastHeartbeatTime": now(), "lastTransitionTime": now() }],
        "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }],
        "capacity": { "cpu": "64", "memory": "256Gi", "pods": "110" },
        "allocatable": { "cpu": "64", "memory": "256Gi", "pods": "110" },
        // Where the API server sends pods/log (and exec, port-forward: not served).
        "daemonEndpoints": { "kubeletEndpoint": { "Port": kubelet_port } },
    }});
    nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("the test node's status");
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap()
        .to_string()
}

async fn sync_once(
    client: &Client,
    ns: &str,
    locator: &StaticLocator,
    state: &Mutex<State>,
) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=clustersync-operator"))
        .await?;
    let mut seen = Vec::new();
    for pod in list.items {
        let name = pod.name_any();
        let key = (ns.to_string(), name.clone());
        let deployment = deployment_of_name(&name).to_string();
        if pod.metadata.deletion_timestamp.is_some() {
            let gone = state.lock().unwrap().pods.remove(&key);
            if let Some(mut r) = gone {
                let _ = r.child.kill();
                let _ = r.child.wait();
            }
            locator.remove(ns, &deployment);
            let _ = pods
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            continue;
        }
        seen.push(key.clone());
        let spec = pod.spec.clone().unwrap_or_default();
        if spec.node_name.is_none() {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": { "name": name, "namespace": ns },
                "target": { "apiVersion": "v1", "kind": "Node", "name": NODE }
            });
            pods.create_subresource::<serde_json::Value, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await?;
        }
        let container = spec.containers.first().cloned().unwrap_or_default();
        let image = container.image.clone().unwrap_or_default();
        if image != RUNNABLE_IMAGE {
            let msg = format!(
                "Back-off pulling image \"{image}\": the test kubelet runs only {RUNNABLE_IMAGE}"
            );
            report(
                &pods,
                &pod,
                &container.name,
                waiting("ImagePullBackOff", &msg),
                0,
            )
            .await?;
            continue;
        }
        // Exited containers restart after a backoff, as a kubelet's do.
        let (exited, restarts, backing_off) = {
            let mut st = state.lock().unwrap();
            match st.pods.get_mut(&key) {
                Some(r) => {
                    let exited = matches!(r.child.try_wait(), Ok(Some(_)));
                    if exited && r.backoff_until.is_none() {
                        r.restarts += 1;
                        r.backoff_until = Some(Instant::now() + Duration::from_secs(2));
                    }
                    let backing_off = r.backoff_until.is_some_and(|t| Instant::now() < t);
                    (exited, r.restarts, backing_off)
                }
                None => (true, 0, false),
            }
        };
        if !exited {
            continue;
        }
        if backing_off {
            locator.remove(ns, &deployment);
            let reason = if restarts >= 2 {
                "CrashLoopBackOff"
            } else {
                "Error"
            };
            report(
                &pods,
                &pod,
                &container.name,
                waiting(reason, "back-off restarting the failed container"),
                restarts,
            )
            .await?;
            continue;
        }
        let env = match resolve_env(client, ns, &container).await {
            Ok(env) => env,
            Err(why) => {
                report(
                    &pods,
                    &pod,
                    &container.name,
                    waiting("CreateContainerConfigError", &why),
                    restarts,
                )
                .await?;
                continue;
            }
        };
        let previous = state.lock().unwrap().pods.remove(&key);
        let (port, dir) = match previous {
            Some(p) => (p.port, p.dir),
            None => (
                free_port(),
                tempfile::Builder::new()
                    .prefix("clustersync-pod-")
                    .tempdir()
                    .unwrap(),
            ),
        };
        let mut args = container.args.clone().unwrap_or_default();
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
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_clustersync"))
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the engine binary starts");
        locator.set(ns, &deployment, format!("http://127.0.0.1:{port}"));
        {
            let mut st = state.lock().unwrap();
            *st.starts.entry(key.clone()).or_default() += 1;
            st.pods.insert(
                key,
                Running {
                    child,
                    port,
                    dir,
                    restarts,
                    backoff_until: None,
                },
            );
        }
        let running = json!({ "running": { "startedAt": now() } });
        report(&pods, &pod, &container.name, running, restarts).await?;
    }
    // Pods deleted outright: stop their containers.
    let mut st = state.lock().unwrap();
    let gone: Vec<_> = st
        .pods
        .keys()
        .filter(|k| k.0 == ns && !seen.contains(k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(mut r) = st.pods.remove(&key) {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        locator.remove(ns, deployment_of_name(&key.1));
    }
    Ok(())
}

fn waiting(reason: &str, message: &str) -> serde_json::Value {
    json!({ "waiting": { "reason": reason, "message": message } })
}

async fn report(
    pods: &Api<Pod>,
    pod: &Pod,
    container: &str,
    state: serde_json::Value,
    restarts: i32,
) -> Result<(), kube::Error> {
    // Unchanged status is not written again (a kubelet writes on change only).
    let current = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first());
    if let Some(c) = current {
        let same_waiting = state["waiting"]["reason"].as_str().is_some()
            && c.state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == state["waiting"]["reason"].as_str();
        if same_waiting && c.restart_count == restarts {
            return Ok(());
        }
    }
    let name = pod.name_any();
    let name = name.as_str();
    let running = state.get("running").is_some();
    let ready = if running { "True" } else { "False" };
    let status = json!({ "status": {
        "phase": if running { "Running" } else { "Pending" },
        "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
        "conditions": [
            { "type": "PodScheduled", "status": "True", "lastTransitionTime": now() },
            { "type": "Ready", "status": ready, "lastTransitionTime": now() },
            { "type": "ContainersReady", "status": ready, "lastTransitionTime": now() },
        ],
        "containerStatuses": [{
            "name": container, "image": RUNNABLE_IMAGE, "imageID": "", "ready": running,
            "restartCount": restarts, "state": state,
        }],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map(|_| ())
}

async fn resolve_env(
    client: &Client,
    ns: &str,
    c: &k8s_openapi::api::core::v1::Container,
) -> Result<Vec<(String, String)>, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut env = Vec::new();
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let r = from
                    .secret_key_ref
                    .as_ref()
                    .ok_or("only secretKeyRef is supported")?;
                let secret = secrets
                    .get_opt(&r.name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("secret \"{}\" not found", r.name))?;
                value_of(&secret, &r.key).ok_or_else(|| {
                    format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)
                })?
            }
            (None, None) => String::new(),
        };
        env.push((e.name.clone(), value));
    }
    Ok(env)
}
