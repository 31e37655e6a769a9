//! `kubectl clustersync`: the kubectl plugin, the same binary invoked as `kubectl-clustersync`
//! (a symlink or copy of that name on the PATH), or `clustersync kubectl …` without one.
//!
//! It talks only to the API server, as the user (their kubeconfig, context and namespace, or
//! the pod's in-cluster account), so the user's RBAC decides what it may do; the ClusterRole
//! `clustersync-user` (deploy/base/user-clusterrole.yaml) grants exactly what it needs. It
//! never reads a Secret and never connects to the engine: everything it shows is what the
//! operator mirrored into the ClusterSync's status and Events.
//!
//! Exit codes: 0 done, 1 refused or failed (a commit that cannot be made, a plan that is not
//! safe or not there yet, an API error), 2 bad usage (clap's own code). The pure part (what
//! is printed and decided) is in `render.rs`; this file fetches and patches.

mod render;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use futures::{AsyncBufReadExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use crate::operator::crd::{ClusterSync, Mode};
use crate::operator::workload;
use render::CommitDecision;

/// Invoked as `kubectl-clustersync` (so `kubectl clustersync …` runs it), the binary is the
/// kubectl plugin.
#[derive(Parser)]
#[command(name = "kubectl-clustersync", version, disable_version_flag = true)]
pub struct PluginCli {
    #[command(flatten)]
    pub args: KubectlArgs,
}

/// The plugin's command line, shared by `kubectl clustersync` and `clustersync kubectl`.
#[derive(Args)]
pub struct KubectlArgs {
    /// The namespace of the ClusterSync (default: the context's namespace).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: KubectlCommand,
}

#[derive(Subcommand)]
enum KubectlCommand {
    /// One screen: mode, state, commit readiness, lag, copy progress and ETA, the slowest
    /// collections, the verifier, the conditions and the recent Events.
    Status { name: String },
    /// The plan the operator made while spec.mode is Idle; exits 1 when it is not safe or not
    /// made yet.
    Plan { name: String },
    /// Pause the sync (spec.mode Paused).
    Pause { name: String },
    /// Start or resume the sync (spec.mode Running).
    Resume { name: String },
    /// Cut over (spec.mode Committed); refused while status.canCommit is false.
    Commit {
        name: String,
        /// Do not ask for confirmation (required when standard input is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// The engine pod's logs, through the API server.
    Logs {
        name: String,
        /// Keep streaming new lines.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<i64>,
    },
}

/// Whether the program was invoked under a name starting with `kubectl-clustersync` (kubectl
/// runs plugins by their file name).
pub fn invoked_as_plugin(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("kubectl-clustersync"))
}

/// Runs the plugin; the exit code is the command's.
pub fn run(args: KubectlArgs) -> ExitCode {
    let Some(rt) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(run_async(args)) {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An API request that failed, with what it tried (for a 403, the verb and the resource the
/// user needs).
struct Failed {
    verb: &'static str,
    resource: &'static str,
    ns: String,
    name: Option<String>,
    error: kube::Error,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            kube::Error::Api(s) if s.code == 403 => write!(
                f,
                "forbidden: you may not {} {} in namespace {}; ask an administrator to bind the ClusterRole clustersync-user to you in that namespace (the API server said: {})",
                self.verb, self.resource, self.ns, s.message
            ),
            kube::Error::Api(s) if s.code == 401 => write!(
                f,
                "the API server did not accept your credentials ({}); check your kubeconfig",
                s.message
            ),
            kube::Error::Api(s) if s.code == 404 && self.resource == "clustersyncs.clustersync.io" => {
                write!(
                    f,
                    "clustersync {} not found in namespace {}",
                    self.name.as_deref().unwrap_or("?"),
                    self.ns
                )
            }
            kube::Error::Api(s) => write!(
                f,
                "{} {} in namespace {}: {} ({})",
                self.verb, self.resource, self.ns, s.message, s.code
            ),
            other => write!(f, "cannot {} {}: {other}", self.verb, self.resource),
        }
    }
}

fn failed(
    verb: &'static str,
    resource: &'static str,
    ns: &str,
    name: Option<&str>,
) -> impl FnOnce(kube::Error) -> Failed {
    let (ns, name) = (ns.to_string(), name.map(str::to_string));
    move |error| Failed {
        verb,
        resource,
        ns,
        name,
        error,
    }
}

const CLUSTERSYNCS: &str = "clustersyncs.clustersync.io";

/// The user's client config: `--kubeconfig` (with `--context`), else the kubeconfig kubectl
/// would read ($KUBECONFIG, ~/.kube/config), else the pod's in-cluster account.
async fn config(args: &KubectlArgs) -> Result<Config, String> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    if let Some(path) = &args.kubeconfig {
        let kc = Kubeconfig::read_from(path)
            .map_err(|e| format!("cannot read kubeconfig {}: {e}", path.display()))?;
        return Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| format!("kubeconfig {}: {e}", path.display()));
    }
    if args.context.is_some() {
        return Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig: {e}"));
    }
    Config::infer()
        .await
        .map_err(|e| format!("no kubeconfig and not in a cluster: {e}"))
}

async fn run_async(args: KubectlArgs) -> Result<ExitCode, String> {
    let config = config(&args).await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| format!("cannot make a client: {e}"))?;
    let syncs: Api<ClusterSync> = Api::namespaced(client.clone(), &ns);
    let get = |name: String| {
        let syncs = syncs.clone();
        let ns = ns.clone();
        async move {
            syncs
                .get(&name)
                .await
                .map_err(failed("get", CLUSTERSYNCS, &ns, Some(&name)))
        }
    };
    let code = match args.command {
        KubectlCommand::Status { name } => {
            let cs = get(name.clone()).await.map_err(|e| e.to_string())?;
            let events = events_about(&client, &ns, &cs)
                .await
                .map_err(|e| e.to_string())?;
            out!(
                "{}",
                render::status_screen(&cs, &events, k8s_openapi::jiff::Timestamp::now())
            );
            ExitCode::SUCCESS
        }
        KubectlCommand::Plan { name } => {
            let cs = get(name).await.map_err(|e| e.to_string())?;
            let (text, safe) = render::plan_report(&cs);
            out!("{text}");
            if safe == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        KubectlCommand::Pause { name } => {
            set_mode(&syncs, &ns, get(name).await, Mode::Paused).await?
        }
        KubectlCommand::Resume { name } => {
            set_mode(&syncs, &ns, get(name).await, Mode::Running).await?
        }
        KubectlCommand::Commit { name, yes } => {
            let cs = get(name.clone()).await.map_err(|e| e.to_string())?;
            let terminal = std::io::stdin().is_terminal();
            match render::decide_commit(&cs, yes, terminal) {
                CommitDecision::Nothing(why) => {
                    outln!("{why}");
                    ExitCode::SUCCESS
                }
                CommitDecision::Refuse(why) => {
                    errln!("{why}");
                    ExitCode::FAILURE
                }
                CommitDecision::Confirm if !confirm(&name, &ns) => {
                    errln!("not committed");
                    ExitCode::FAILURE
                }
                CommitDecision::Confirm | CommitDecision::Commit => {
                    patch_mode(&syncs, &ns, &name, Mode::Committed).await?;
                    outln!(
                        "{}",
                        render::after_mode_change(&name, &ns, cs.spec.mode, Mode::Committed)
                    );
                    ExitCode::SUCCESS
                }
            }
        }
        KubectlCommand::Logs { name, follow, tail } => {
            let cs = get(name.clone()).await.map_err(|e| e.to_string())?;
            logs(&client, &ns, &cs, follow, tail).await?
        }
    };
    Ok(code)
}

/// Asks on the terminal; only `y` or `yes` commits.
fn confirm(name: &str, ns: &str) -> bool {
    out!(
        "Commit clustersync {name} in namespace {ns}? The source stops being synced and the destination goes live. [y/N] "
    );
    let mut answer = String::new();
    if std::io::stdin().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

async fn set_mode(
    syncs: &Api<ClusterSync>,
    ns: &str,
    cs: Result<ClusterSync, Failed>,
    to: Mode,
) -> Result<ExitCode, String> {
    let cs = cs.map_err(|e| e.to_string())?;
    let name = cs.metadata.name.clone().unwrap_or_default();
    match render::decide_mode(&cs, to) {
        Err(why) => {
            errln!("{why}");
            Ok(ExitCode::FAILURE)
        }
        Ok(None) => {
            outln!(
                "clustersync {name} already has spec.mode {to:?}; watch it with: kubectl clustersync status {name} -n {ns}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(Some(to)) => {
            patch_mode(syncs, ns, &name, to).await?;
            outln!("{}", render::after_mode_change(&name, ns, cs.spec.mode, to));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A merge patch of spec.mode alone: it changes nothing else the user or GitOps owns.
async fn patch_mode(
    syncs: &Api<ClusterSync>,
    ns: &str,
    name: &str,
    to: Mode,
) -> Result<(), String> {
    syncs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "mode": to } })),
        )
        .await
        .map(|_| ())
        .map_err(|e| failed("patch", CLUSTERSYNCS, ns, Some(name))(e).to_string())
}

/// The events.k8s.io/v1 Events regarding `cs`, selected by the API server on the object's
/// name and kind (`render::recent_events` keeps the ones of this very object).
async fn events_about(client: &Client, ns: &str, cs: &ClusterSync) -> Result<Vec<Event>, Failed> {
    let name = cs.metadata.name.clone().unwrap_or_default();
    let lp =
        ListParams::default().fields(&format!("regarding.kind=ClusterSync,regarding.name={name}"));
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
        .map(|l| l.items)
        .map_err(failed("list", "events.events.k8s.io", ns, None))
}

/// Prints (or follows) the engine container's log, read through the API server's pods/log.
async fn logs(
    client: &Client,
    ns: &str,
    cs: &ClusterSync,
    follow: bool,
    tail: Option<i64>,
) -> Result<ExitCode, String> {
    let name = cs.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = workload::labels(cs)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| failed("list", "pods", ns, None)(e).to_string())?;
    let Some(pod) = render::pick_engine_pod(&list.items) else {
        errln!(
            "clustersync {name} has no engine pod in namespace {ns} (Deployment {}); see kubectl clustersync status {name} -n {ns}",
            cs.status
                .as_ref()
                .and_then(|s| s.engine_workload.clone())
                .unwrap_or_else(|| workload::engine_name(cs))
        );
        return Ok(ExitCode::FAILURE);
    };
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    // A pod that has not started has no log: the API server answers with nothing, which would
    // read as an engine that wrote nothing.
    if let Some(why) = render::no_log_yet(pod) {
        errln!(
            "error: the engine pod {pod_name} of clustersync {name} has no log yet: {why}; see kubectl clustersync status {name} -n {ns}"
        );
        return Ok(ExitCode::FAILURE);
    }
    let lp = LogParams {
        container: Some("engine".into()),
        follow,
        tail_lines: tail,
        ..Default::default()
    };
    let read_failed = |e| failed("get", "pods/log", ns, None)(e).to_string();
    if !follow {
        let text = pods.logs(&pod_name, &lp).await.map_err(read_failed)?;
        out!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = pods
        .log_stream(&pod_name, &lp)
        .await
        .map_err(read_failed)?
        .lines();
    while let Some(line) = lines
        .try_next()
        .await
        .map_err(|e| format!("reading the log of pod {pod_name}: {e}"))?
    {
        outln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn invoked_as_kubectl_clustersync_it_is_the_plugin() {
        use std::ffi::OsStr;
        for (argv0, yes) in [
            ("kubectl-clustersync", true),
            ("/usr/local/bin/kubectl-clustersync", true),
            ("kubectl-clustersync.exe", true),
            ("clustersync", false),
            ("kubectl", false),
        ] {
            assert_eq!(invoked_as_plugin(Some(OsStr::new(argv0))), yes, "{argv0}");
        }
        assert!(!invoked_as_plugin(None));
        PluginCli::command().debug_assert();
        let p = PluginCli::try_parse_from([
            "kubectl-clustersync",
            "commit",
            "move",
            "-n",
            "app",
            "--yes",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(p.args.namespace.as_deref(), Some("app"));
        assert_eq!(p.args.context.as_deref(), Some("prod"));
        assert!(matches!(
            p.args.command,
            KubectlCommand::Commit { yes: true, .. }
        ));
        // A missing NAME is bad usage (exit 2).
        let e = PluginCli::try_parse_from(["kubectl-clustersync", "status"])
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2);
    }

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure(message, "Forbidden").with_code(code),
        ))
    }

    /// A refusal names what to ask for; a missing ClusterSync is named as such, not as a 404.
    #[test]
    fn api_errors_say_what_is_missing() {
        let forbidden = failed("list", "pods", "shop", None)(api_error(403, "no"));
        let text = forbidden.to_string();
        assert!(
            text.starts_with("forbidden: you may not list pods in namespace shop;")
                && text.contains("ClusterRole clustersync-user"),
            "{text}"
        );
        let missing = failed("get", CLUSTERSYNCS, "shop", Some("orders"))(api_error(404, "x"));
        assert_eq!(
            missing.to_string(),
            "clustersync orders not found in namespace shop"
        );
        let other = failed("patch", CLUSTERSYNCS, "shop", Some("orders"))(api_error(422, "frozen"));
        assert!(other.to_string().contains("frozen (422)"), "{other}");
    }
}
