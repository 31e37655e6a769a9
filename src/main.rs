use std::process::ExitCode;

use clap::{Parser, Subcommand};
use clustersync::engine::config::{EngineArgs, EngineConfig};
use clustersync::engine::{api, Engine, StartupError};

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
    Operator(OperatorArgs),
    /// Print the ClusterSync CustomResourceDefinition (YAML), for `kubectl apply -f -`.
    Crd,
    /// Run every preflight check without starting a sync: reachability, versions, topology,
    /// the connection users' roles, an empty destination, the source's oplog window.
    Check(CheckArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Connection string of the first cluster.
    #[arg(long = "cluster0", value_name = "URI")]
    cluster0: Option<String>,
    /// Connection string of the second cluster.
    #[arg(long = "cluster1", value_name = "URI")]
    cluster1: Option<String>,
    /// YAML file with cluster0 and cluster1 (the engine's --config file works).
    #[arg(long = "config", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Which cluster is the source.
    #[arg(long = "source", value_enum, default_value = "cluster0")]
    source: Label,
    /// Check for a reversible sync (more roles on both sides).
    #[arg(long = "reversible")]
    reversible: bool,
    /// Check for a sync that blocks writes on the source at commit.
    #[arg(long = "dualWriteBlocking")]
    dual_write_blocking: bool,
    /// The destination may already hold other data.
    #[arg(long = "preExistingDestinationData")]
    pre_existing_destination_data: bool,
    /// Report format.
    #[arg(long = "output", value_enum, default_value = "text")]
    output: Output,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Watch ClusterSyncs (and their Secrets) in these namespaces only (comma-separated); all
    /// namespaces if unset.
    #[arg(
        long = "namespace",
        env = "CLUSTERSYNC_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    namespace: Vec<String>,
    /// Image of the engine pods, unless a ClusterSync names its own (spec.engine.image).
    #[arg(long = "engine-image", env = "CLUSTERSYNC_ENGINE_IMAGE", default_value = concat!("ghcr.io/clustersync/clustersync:", env!("CARGO_PKG_VERSION")))]
    engine_image: String,
    /// Engine pod settings (JSON, the fields of a ClusterSync's spec.engine) for syncs that
    /// leave them unset, e.g. {"resources":{...},"nodeSelector":{...},"tolerations":[...]}.
    #[arg(
        long = "engine-defaults",
        env = "CLUSTERSYNC_ENGINE_DEFAULTS",
        value_name = "JSON"
    )]
    engine_defaults: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long = "metrics-bind", default_value = "0.0.0.0:8080")]
    metrics_bind: std::net::SocketAddr,
    /// Seconds between progress reads of a moving sync.
    #[arg(long = "poll-seconds", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    poll_seconds: u64,
    /// Run without leader election (only when exactly one replica runs).
    #[arg(long = "no-leader-election")]
    no_leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long = "lease-name", default_value = "clustersync-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace).
    #[arg(long = "lease-namespace", env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (its pod name).
    #[arg(long = "identity", env = "POD_NAME")]
    identity: Option<String>,
    /// Log level: TRACE, DEBUG, INFO, WARN, ERROR.
    #[arg(long = "verbosity", default_value = "INFO")]
    verbosity: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Label {
    Cluster0,
    Cluster1,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Engine(args) => run_engine(args),
        Command::Check(args) => run_check(args),
        Command::Operator(args) => run_operator(args),
        Command::Crd => {
            print!("{}", clustersync::operator::crd::crd_yaml());
            ExitCode::SUCCESS
        }
    }
}

fn run_engine(args: EngineArgs) -> ExitCode {
    let config = match EngineConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _guard = match clustersync::logging::init(
        config.verbosity.directive(),
        config.log_path.as_deref(),
    ) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "engine stopped");
            eprintln!("error: {e}");
            match e.downcast_ref::<StartupError>() {
                Some(StartupError::Config(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn run_operator(args: OperatorArgs) -> ExitCode {
    use clustersync::operator::{controller::Settings, engine_api::ServiceDns, leader, RunOptions};
    let level = args.verbosity.to_ascii_lowercase();
    if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
        eprintln!(
            "error: --verbosity {}: use TRACE, DEBUG, INFO, WARN or ERROR",
            args.verbosity
        );
        return ExitCode::from(2);
    }
    let engine_defaults: clustersync::operator::crd::EngineSpec = match args
        .engine_defaults
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => Default::default(),
        Some(json) => match parse_engine_defaults(json) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: --engine-defaults (CLUSTERSYNC_ENGINE_DEFAULTS): {e}; give a JSON object with the fields of a ClusterSync's spec.engine (resources, nodeSelector, tolerations, affinity, priorityClassName, loadLevel, verbosity)");
                return ExitCode::from(2);
            }
        },
    };
    if let Err(e) = clustersync::logging::init(&level, None) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Kubernetes API (in-cluster service account or kubeconfig): {e}"
            )
        })?;
        let lease = if args.no_leader_election {
            None
        } else {
            let namespace = args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let identity = args.identity.clone().unwrap_or_else(|| {
                format!("clustersync-operator-{}", uuid::Uuid::new_v4().simple())
            });
            Some(leader::LeaseConfig::new(
                namespace,
                args.lease_name.clone(),
                identity,
            ))
        };
        let mut settings =
            Settings::new(args.engine_image.clone(), std::sync::Arc::new(ServiceDns));
        settings.poll = std::time::Duration::from_secs(args.poll_seconds);
        settings.engine_defaults = engine_defaults;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            namespaces = %if args.namespace.is_empty() { "(all)".to_string() } else { args.namespace.join(",") },
            engine_image = %args.engine_image,
            "clustersync operator starting"
        );
        clustersync::operator::run(
            client,
            settings,
            RunOptions {
                namespaces: args
                    .namespace
                    .iter()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
                telemetry_bind: Some(args.metrics_bind),
                lease,
            },
            shutdown_signal(),
        )
        .await?;
        Ok::<(), anyhow::Error>(())
    });
    match result {
        Ok(()) => {
            tracing::info!("operator stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Engine defaults as the operator takes them: a misspelt field is an error, not ignored.
fn parse_engine_defaults(json: &str) -> Result<clustersync::operator::crd::EngineSpec, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let schema = schemars::schema_for!(clustersync::operator::crd::EngineSpec);
    let known: Vec<String> = schema
        .as_value()
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let given = value.as_object().ok_or("not a JSON object")?;
    if let Some(unknown) = given.keys().find(|k| !known.contains(k)) {
        return Err(format!("unknown field {unknown:?}"));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

async fn serve(config: EngineConfig) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--port {}: cannot listen on {addr}: {e}", config.port))?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        port = config.port,
        cluster0 = config.cluster0.hosts(),
        cluster1 = config.cluster1.hosts(),
        "clustersync engine starting"
    );
    let engine = Engine::new(config).await?;
    let server = axum::serve(listener, api::router(engine.clone()))
        .with_graceful_shutdown(shutdown_signal());
    let init = engine.initialize();
    tokio::select! {
        r = server => r.map_err(|e| anyhow::anyhow!("HTTP server failed: {e}"))?,
        r = async { init.await?; std::future::pending::<Result<(), StartupError>>().await } => {
            r?;
        }
    }
    tracing::info!("engine stopped");
    Ok(())
}

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

fn run_check(args: CheckArgs) -> ExitCode {
    use clustersync::preflight::{self, report, Intent, SyncKind};
    let config = match EngineConfig::from_args(EngineArgs {
        cluster0: args.cluster0,
        cluster1: args.cluster1,
        config: args.config,
        ..Default::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let c0 = clustersync::engine::build_client("--cluster0", &config.cluster0).await?;
        let c1 = clustersync::engine::build_client("--cluster1", &config.cluster1).await?;
        let kind = if args.reversible {
            SyncKind::Reversing
        } else if args.dual_write_blocking {
            SyncKind::DualWriteBlocking
        } else {
            SyncKind::Default
        };
        let intent = Intent {
            kind,
            pre_existing_destination_data: args.pre_existing_destination_data,
            copy_rate: preflight::checks::DEFAULT_COPY_RATE,
            measure: true,
        };
        let scrub = |t: &str| config.cluster1.scrub(&config.cluster0.scrub(t));
        let a = (&c0, "cluster0", config.cluster0.hosts());
        let b = (&c1, "cluster1", config.cluster1.hosts());
        let (source, destination) = if args.source == Label::Cluster0 {
            (a, b)
        } else {
            (b, a)
        };
        Ok::<_, clustersync::engine::StartupError>(
            preflight::run(source, destination, intent, &scrub).await,
        )
    });
    match result {
        Ok(r) => {
            match args.output {
                Output::Text => print!("{}", report::text(&r)),
                Output::Json => println!("{}", report::json(&r)),
            }
            if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
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
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}
