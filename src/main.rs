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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Engine(args) => run_engine(args),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
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
