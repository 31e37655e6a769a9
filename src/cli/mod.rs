//! The `clustersync` command line: the top-level clap types and one module per subcommand, with
//! its flags, the function that runs it and the text renderer it uses (`verify`'s table; `check`
//! prints the library's `preflight::report`).
//!
//! `src/main.rs` only calls [`main`]; everything the binary does starts here. The subcommands:
//! - `engine` (`engine.rs`): the sync engine, a drop-in for mongosync (same flags, same HTTP
//!   API).
//! - `operator` (`operator.rs`): the Kubernetes operator, which reconciles ClusterSync resources
//!   into engines it runs and drives.
//! - `crd` (`crd.rs`): prints the ClusterSync CustomResourceDefinition.
//! - `check` (`check.rs`): every preflight check, without starting a sync.
//! - `plan` (`plan.rs`): what a sync would carry, how long it should take, what may go wrong.
//! - `verify` (`verify.rs`): compares two clusters.
//! - `kubectl` (`kubectl/`): the kubectl plugin (`kubectl clustersync status|plan|pause|resume|
//!   commit|logs NAME`), also run when the binary is invoked as `kubectl-clustersync`.
//!
//! Exit codes: 0 on success, 2 on bad usage (a flag, a config file, a connection string), 1 on
//! any other failure (a check that did not pass, clusters that differ, an engine or operator
//! that stopped on an error); `verify` also exits 2 when a cluster cannot be reached. Each
//! subcommand's module says which of its outcomes is which.
//!
//! Events logged here name the target `clustersync` (`target: "clustersync"`), the crate root's
//! module path, which is what they named while this code was the binary's `main.rs`: the JSON
//! log lines keep their `target` field.

/// `println!` that never panics: output piped into a reader that stopped reading (`| head`)
/// loses the rest of the text, not the process (std's macros panic on a closed pipe).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `eprintln!` that never panics (see [`outln!`]).
macro_rules! errln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

/// `print!` that never panics (see [`outln!`]).
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

mod check;
mod clusters;
mod crd;
mod engine;
mod kubectl;
mod operator;
mod plan;
mod progress;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::engine::config::EngineArgs;

/// MongoDB cluster-to-cluster sync.
#[derive(Parser)]
#[command(
    name = "clustersync",
    version,
    disable_version_flag = true,
    propagate_version = true
)]
struct Cli {
    /// Print the version.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version, global = true)]
    version: Option<bool>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync engine: a drop-in for mongosync (same flags, same HTTP API).
    Engine(EngineArgs),
    /// Run the Kubernetes operator: reconcile ClusterSync resources into engines it runs and drives.
    Operator(operator::OperatorArgs),
    /// Print the ClusterSync CustomResourceDefinition (YAML), for `kubectl apply -f -`.
    Crd,
    /// Run every preflight check without starting a sync: reachability, versions, topology,
    /// the connection users' roles, an empty destination, the source's oplog window.
    Check(check::CheckArgs),
    /// Plan a sync without starting it: every namespace in scope and how its indexes will be
    /// built, the time it should take (from a short measured probe), and the risks, each with
    /// what to do. Exits 0 when nothing blocks the sync, 1 when something does, 2 on bad usage.
    Plan(plan::PlanArgs),
    /// Compare two clusters (cluster0 the source, cluster1 the destination): every namespace's
    /// documents byte for byte, collection options, indexes and views. Exits 0 when they are
    /// equal, 1 when they differ, 2 on bad usage or a cluster that cannot be reached.
    Verify(verify::VerifyArgs),
    /// The kubectl plugin (`kubectl clustersync …` once the binary is on the PATH as
    /// `kubectl-clustersync`): status, plan, pause, resume, commit and logs of a ClusterSync,
    /// through the API server with your own kubeconfig.
    Kubectl(kubectl::KubectlArgs),
}

/// Invoked as `mongosync` (a symlink, or the image's `mongosync` entry), the binary is the
/// engine with mongosync's command line, so that systemd units, scripts and Ansible roles
/// written for mongosync run unchanged.
#[derive(Parser)]
#[command(name = "mongosync", version, disable_version_flag = true)]
struct MongosyncCli {
    /// Print the version.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(flatten)]
    args: EngineArgs,
}

/// Whether the program was invoked under a name starting with `mongosync`.
fn invoked_as_mongosync(argv0: Option<std::ffi::OsString>) -> bool {
    argv0
        .as_deref()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("mongosync"))
}

/// The `clustersync` binary: parses the command line and runs the subcommand it names.
pub fn main() -> ExitCode {
    let argv0 = std::env::args_os().next();
    if kubectl::invoked_as_plugin(argv0.as_deref()) {
        return kubectl::run(kubectl::PluginCli::parse().args);
    }
    if invoked_as_mongosync(argv0) {
        return engine::run(MongosyncCli::parse().args, true);
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Engine(args) => engine::run(args, false),
        Command::Check(args) => check::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Operator(args) => operator::run(args),
        Command::Crd => crd::run(),
        Command::Kubectl(args) => kubectl::run(args),
    }
}

/// The multi-threaded runtime both commands run on; says why when it cannot start.
fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Resolves on Ctrl-C or, on Unix, SIGTERM: when the engine and the operator stop gracefully.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.ok();
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks (duplicate flags, bad defaults, conflicting settings), on
    /// every subcommand.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn invoked_as_mongosync_it_takes_mongosyncs_command_line() {
        use std::ffi::OsString;
        for (argv0, yes) in [
            ("mongosync", true),
            ("/usr/local/bin/mongosync", true),
            ("./mongosync-1.20", true),
            ("clustersync", false),
            ("/opt/bin/clustersync", false),
        ] {
            assert_eq!(
                invoked_as_mongosync(Some(OsString::from(argv0))),
                yes,
                "{argv0}"
            );
        }
        assert!(!invoked_as_mongosync(None));
        MongosyncCli::command().debug_assert();
        let m = MongosyncCli::try_parse_from([
            "mongosync",
            "--cluster0",
            "mongodb://a:1",
            "--cluster1",
            "mongodb://b:2",
            "--logPath",
            "/var/log/mongosync",
            "--verbosity",
            "WARN",
        ])
        .unwrap();
        assert_eq!(m.args.cluster0.as_deref(), Some("mongodb://a:1"));
    }

    #[test]
    fn every_subcommand_is_named_as_before() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd.get_subcommands().map(|s| s.get_name()).collect();
        assert_eq!(
            names,
            ["engine", "operator", "crd", "check", "plan", "verify", "kubectl"]
        );
        assert_eq!(cmd.get_name(), "clustersync");
    }
}
