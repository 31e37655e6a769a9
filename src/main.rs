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
    /// Compare two clusters (cluster0 the source, cluster1 the destination): every namespace's
    /// documents byte for byte, collection options, indexes and views. Exits 0 when they are
    /// equal, 1 when they differ, 2 on bad usage or a cluster that cannot be reached.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Connection string of the source cluster.
    #[arg(
        long = "cluster0",
        value_name = "URI",
        env = "CLUSTERSYNC_CLUSTER0",
        hide_env_values = true
    )]
    cluster0: String,
    /// Connection string of the destination cluster.
    #[arg(
        long = "cluster1",
        value_name = "URI",
        env = "CLUSTERSYNC_CLUSTER1",
        hide_env_values = true
    )]
    cluster1: String,
    /// Namespaces to compare, as /api/v1/start's includeNamespaces: a JSON array such as
    /// [{"database":"sales","collections":["orders"]}].
    #[arg(long = "include-namespaces", value_name = "JSON")]
    include_namespaces: Option<String>,
    /// Namespaces to leave out, as /api/v1/start's excludeNamespaces (applied after the
    /// include filters).
    #[arg(long = "exclude-namespaces", value_name = "JSON")]
    exclude_namespaces: Option<String>,
    /// Print the report as JSON.
    #[arg(long = "json")]
    json: bool,
    /// Differing _ids listed per namespace.
    #[arg(long = "max-mismatches", value_name = "N", default_value_t = clustersync::verify::DEFAULT_MAX_MISMATCHES)]
    max_mismatches: usize,
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
    /// Watch ClusterSyncs (and their engines) in these namespaces only (comma-separated); all
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
    /// Namespace of a metrics scraper (e.g. Prometheus) that engine NetworkPolicies admit to
    /// the engines' /metrics, besides the operator.
    #[arg(
        long = "metrics-scraper-namespace",
        env = "CLUSTERSYNC_METRICS_SCRAPER_NAMESPACE"
    )]
    metrics_scraper_namespace: Option<String>,
    /// Labels of the scraper's pods (JSON object of strings; {} or unset: every pod in
    /// --metrics-scraper-namespace).
    #[arg(
        long = "metrics-scraper-pod-labels",
        env = "CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS",
        value_name = "JSON"
    )]
    metrics_scraper_pod_labels: Option<String>,
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
        Command::Verify(args) => run_verify(args),
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
    let metrics_scraper = match parse_scraper(
        args.metrics_scraper_namespace.as_deref(),
        args.metrics_scraper_pod_labels.as_deref(),
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
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
        settings.metrics_scraper = metrics_scraper;
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

/// The metrics scraper engine NetworkPolicies admit, from its two settings.
fn parse_scraper(
    namespace: Option<&str>,
    labels: Option<&str>,
) -> Result<Option<clustersync::operator::workload::Scraper>, String> {
    let labels = labels.map(str::trim).filter(|l| !l.is_empty());
    let Some(namespace) = namespace.map(str::trim).filter(|n| !n.is_empty()) else {
        return match labels {
            Some(_) => Err("--metrics-scraper-pod-labels (CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS) needs --metrics-scraper-namespace (CLUSTERSYNC_METRICS_SCRAPER_NAMESPACE): name the scraper's namespace".into()),
            None => Ok(None),
        };
    };
    let pod_labels = match labels {
        None => Default::default(),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            format!("--metrics-scraper-pod-labels (CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS): {e}; give a JSON object of label names to string values, e.g. {{\"app.kubernetes.io/name\":\"prometheus\"}}")
        })?,
    };
    Ok(Some(clustersync::operator::workload::Scraper {
        namespace: namespace.to_string(),
        pod_labels,
    }))
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
        r = server => {
            // Stopped on a signal: let the lease go, so a restarted engine need not wait.
            engine.shutdown().await;
            r.map_err(|e| anyhow::anyhow!("HTTP server failed: {e}"))?
        }
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
        let c0 = clustersync::mongo::build_client("--cluster0", &config.cluster0).await?;
        let c1 = clustersync::mongo::build_client("--cluster1", &config.cluster1).await?;
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

fn run_verify(args: VerifyArgs) -> ExitCode {
    use clustersync::contract::filter::NamespaceFilter;
    use clustersync::uri::ClusterUri;
    use clustersync::verify::{self, Cluster, VerifyOptions};

    let filters = |flag: &str, json: Option<&str>| -> Result<Vec<NamespaceFilter>, String> {
        let Some(json) = json.map(str::trim).filter(|j| !j.is_empty()) else {
            return Ok(Vec::new());
        };
        serde_json::from_str(json).map_err(|e| {
            format!("{flag}: {e}; give a JSON array of filters as /api/v1/start takes them, e.g. [{{\"database\":\"sales\",\"collections\":[\"orders\"]}}]")
        })
    };
    let usage = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    };
    let include = match filters("--include-namespaces", args.include_namespaces.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let exclude = match filters("--exclude-namespaces", args.exclude_namespaces.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    let options = VerifyOptions {
        include,
        exclude,
        max_mismatches: args.max_mismatches,
        ..Default::default()
    };
    if let Err(e) = options.scope() {
        return usage(e.to_string());
    }
    let (uri0, uri1) = match (
        ClusterUri::parse("--cluster0", &args.cluster0),
        ClusterUri::parse("--cluster1", &args.cluster1),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return usage(e.to_string()),
    };
    let Some(runtime) = runtime() else {
        return ExitCode::from(2);
    };
    let result = runtime.block_on(async {
        let c0 = clustersync::mongo::build_client("--cluster0", &uri0)
            .await
            .map_err(|e| e.to_string())?;
        let c1 = clustersync::mongo::build_client("--cluster1", &uri1)
            .await
            .map_err(|e| e.to_string())?;
        let source = Cluster::new("cluster0", uri0.clone(), c0);
        let destination = Cluster::new("cluster1", uri1.clone(), c1);
        verify::verify(&source, &destination, &options)
            .await
            .map_err(|e| match e.cluster() {
                Some(label) => format!(
                    "{e}\n(the {label} connection string comes from --{label} or CLUSTERSYNC_{})",
                    label.to_ascii_uppercase()
                ),
                None => e.to_string(),
            })
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => return usage(format!("cannot write the report as JSON: {e}")),
        }
    } else {
        print!("{}", verify_text(&report, uri0.hosts(), uri1.hosts()));
    }
    if report.is_equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The report as a table: one row per namespace, each difference under its row.
fn verify_text(report: &clustersync::verify::Report, hosts0: &str, hosts1: &str) -> String {
    use std::fmt::Write;
    let mut out = format!(
        "clustersync verify: cluster0 (source) {hosts0} vs cluster1 (destination) {hosts1}\n\n"
    );
    let docs = |s: &Option<clustersync::verify::SideReport>| match s {
        Some(s) => s.count.map_or("-".to_string(), |c| c.to_string()),
        None => "absent".to_string(),
    };
    let kind = |n: &clustersync::verify::NamespaceReport| match (
        n.source.as_ref().map(|s| s.kind),
        n.destination.as_ref().map(|s| s.kind),
    ) {
        (Some(a), Some(b)) if a != b => format!("{a}/{b}"),
        (Some(a), _) | (None, Some(a)) => a.to_string(),
        (None, None) => "-".to_string(),
    };
    let width = report
        .namespaces
        .iter()
        .map(|n| n.namespace.chars().count())
        .max()
        .unwrap_or(0)
        .clamp("NAMESPACE".len(), 60);
    let _ = writeln!(
        out,
        "{:<width$}  {:<10}  {:>11}  {:>16}  RESULT",
        "NAMESPACE", "TYPE", "SOURCE DOCS", "DESTINATION DOCS"
    );
    for n in &report.namespaces {
        let _ = writeln!(
            out,
            "{:<width$}  {:<10}  {:>11}  {:>16}  {}",
            n.namespace,
            kind(n),
            docs(&n.source),
            docs(&n.destination),
            if n.equal { "EQUAL" } else { "DIFFERENT" }
        );
        for d in &n.metadata_differences {
            let _ = writeln!(out, "    - {d}");
        }
        for m in &n.mismatches {
            let _ = writeln!(out, "    - _id {}: {}", m.id_relaxed(), m.verdict());
        }
        if n.more_mismatches {
            let _ = writeln!(
                out,
                "    - more documents differ (the first {} are listed; see --max-mismatches)",
                n.mismatches.len()
            );
        }
    }
    if report.namespaces.is_empty() {
        out.push_str("(no namespace in scope on either cluster)\n");
    }
    let total = report.namespaces.len();
    let different = report.different().count();
    if different == 0 {
        let _ = writeln!(out, "\nRESULT: EQUAL ({total} namespaces compared)");
    } else {
        let _ = writeln!(
            out,
            "\nRESULT: DIFFERENT ({different} of {total} namespaces differ)"
        );
    }
    out
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
