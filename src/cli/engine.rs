//! `clustersync engine`: the sync engine, a drop-in for mongosync (same flags, same HTTP API).
//!
//! The flags are [`EngineArgs`] (mongosync's, in `engine::config`, where they are merged with
//! the `--config` YAML file and validated). This module binds the HTTP API's port, starts the
//! engine behind it and stops on Ctrl-C or SIGTERM.
//!
//! Exit codes: 2 for bad settings (flags, the config file, the log directory, or a startup
//! error the engine classifies as configuration), 1 for any other failure, 0 after a signal.

use std::process::ExitCode;

use crate::engine::config::{EngineArgs, EngineConfig};
use crate::engine::{api, Engine, StartupError};

pub(super) fn run(args: EngineArgs) -> ExitCode {
    let config = match EngineConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let _guard =
        match crate::logging::init(config.verbosity.directive(), config.log_path.as_deref()) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "clustersync", error = %e, "engine stopped");
            eprintln!("error: {e}");
            match e.downcast_ref::<StartupError>() {
                Some(StartupError::Config(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Listens on `--port`, then serves the HTTP API while the engine initializes; returns on a
/// signal, or with the error that stopped the initialization.
async fn serve(config: EngineConfig) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::new(config.bind, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--port {}: cannot listen on {addr}: {e}", config.port))?;
    tracing::info!(
        target: "clustersync",
        version = env!("CARGO_PKG_VERSION"),
        port = config.port,
        cluster0 = config.cluster0.hosts(),
        cluster1 = config.cluster1.hosts(),
        "clustersync engine starting"
    );
    let engine = Engine::new(config).await?;
    let server = axum::serve(listener, api::router(engine.clone()))
        .with_graceful_shutdown(super::shutdown_signal());
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
    tracing::info!(target: "clustersync", "engine stopped");
    Ok(())
}
