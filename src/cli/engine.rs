//! `clustersync engine`: the sync engine, a drop-in for mongosync (same flags, same HTTP API).
//!
//! The flags are [`EngineArgs`] (mongosync's, in `engine::config`, where they are merged with
//! the `--config` YAML file and validated). This module binds the HTTP API's port, starts the
//! engine behind it and stops on Ctrl-C or SIGTERM.
//!
//! Exit codes: 2 for bad settings (flags, the config file, the log directory, or a startup
//! error the engine classifies as configuration), 1 for any other failure, including a sync
//! that stopped for good (the engine exits 10 s after `/progress` first reports `syncError`;
//! restarted, it reports the persisted reason and starts nothing), 0 after a signal.

use std::process::ExitCode;

use std::sync::Arc;

use crate::engine::config::{EngineArgs, EngineConfig};
use crate::engine::{api, Engine, StartupError};
use crate::logging::{LogFormat, LogSettings, Logs};

/// Runs the engine; `as_mongosync` when the binary was invoked as `mongosync` (its logs then
/// default to mongosync's shape).
pub(super) fn run(args: EngineArgs, as_mongosync: bool) -> ExitCode {
    let config = match EngineConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = config.log_format.unwrap_or(if as_mongosync {
        LogFormat::Mongosync
    } else {
        LogFormat::Clustersync
    });
    let logs = match crate::logging::init(LogSettings {
        level: config.verbosity.directive(),
        dir: config.log_path.as_deref(),
        format,
        engine_id: config.engine_id(),
    }) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(serve(config, logs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(target: "clustersync", error = %e, "engine stopped");
            errln!("error: {e}");
            match e.downcast_ref::<StartupError>() {
                Some(StartupError::Config(_)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Listens on `--port`, then serves the HTTP API while the engine initializes; returns on a
/// signal, or with the error that stopped the initialization.
async fn serve(config: EngineConfig, logs: Arc<Logs>) -> anyhow::Result<()> {
    // First, before anything slow: SIGUSR1's default action ends the process.
    rotate_on_sigusr1(logs)?;
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
    let metrics_dir = config.metrics_log_dir.clone();
    // Served from the first moment (a probe, a runbook polling /progress), while the engine
    // is built: resolving an SRV name can take a while.
    let app = Arc::new(std::sync::OnceLock::new());
    let server = api::serve(
        listener,
        api::starting(app.clone()),
        super::shutdown_signal(),
    );
    tokio::pin!(server);
    let engine = tokio::select! {
        r = &mut server => {
            // A signal before the engine was built: nothing to release.
            return r.map_err(|e| anyhow::anyhow!("HTTP server failed: {e}"));
        }
        e = Engine::new(config) => e?,
    };
    let _ = app.set(api::router(engine.clone()));
    if let Some(dir) = metrics_dir {
        write_metrics_logs(dir, engine.status())?;
    }
    let init = engine.initialize();
    let status = engine.status();
    tokio::select! {
        r = &mut server => {
            // Stopped on a signal: let the lease go, so a restarted engine need not wait.
            engine.shutdown().await;
            r.map_err(|e| anyhow::anyhow!("HTTP server failed: {e}"))?
        }
        r = async { init.await?; std::future::pending::<Result<(), StartupError>>().await } => {
            r?;
        }
        // Stopped for good: like mongosync, the process exits non-zero so that a supervisor
        // notices, after `/progress` has reported `syncError` for a while (a poller sees why).
        // The wait is part of this branch's future, so the API keeps being served meanwhile
        // (a branch's body runs with the other branches no longer polled). The reason is
        // persisted: restarted, the engine reports it.
        why = async {
            status.stopped().await;
            let why = status.lock().fatal.clone().unwrap_or_default();
            let linger = stopped_exit_delay();
            tracing::error!(target: "clustersync", error = %why, exit_in_s = linger.as_secs_f64(), "the sync stopped; the engine exits");
            tokio::time::sleep(linger).await;
            why
        } => {
            engine.shutdown().await;
            anyhow::bail!("the sync stopped: {why}");
        }
    }
    tracing::info!(target: "clustersync", "engine stopped");
    Ok(())
}

/// `--metricsLoggingFilepath`: a snapshot of `/metrics` (Prometheus text, headed by a `#
/// time` line) appended to `<dir>/clustersync_metrics.log` every minute
/// (`CLUSTERSYNC_METRICS_LOG_SECONDS` sets the period); at 100 MiB the file is renamed
/// `.1` (the previous `.1` dropped), so the metrics of a long migration keep a bounded size.
fn write_metrics_logs(
    dir: std::path::PathBuf,
    status: Arc<crate::engine::status::StatusCell>,
) -> anyhow::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(&dir).map_err(|e| {
        anyhow::anyhow!(
            "--metricsLoggingFilepath {}: cannot create the directory: {e}",
            dir.display()
        )
    })?;
    let period = std::env::var("CLUSTERSYNC_METRICS_LOG_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_secs)
        .unwrap_or(std::time::Duration::from_secs(60));
    let registry = crate::engine::metrics::registry(status);
    let path = dir.join("clustersync_metrics.log");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let text = crate::engine::metrics::render(&registry);
            let now = bson::DateTime::now()
                .try_to_rfc3339_string()
                .unwrap_or_default();
            if std::fs::metadata(&path).is_ok_and(|m| m.len() > 100 << 20) {
                let _ = std::fs::rename(&path, path.with_extension("log.1"));
            }
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| write!(f, "# time {now}\n{text}"));
            if let Err(e) = written {
                tracing::warn!(target: "clustersync", error = %e, file = %path.display(), "cannot write the metrics log");
            }
        }
    });
    Ok(())
}

/// How long a stopped engine keeps answering before it exits (default 10 s;
/// `CLUSTERSYNC_STOPPED_EXIT_DELAY_MS` sets it).
fn stopped_exit_delay() -> std::time::Duration {
    std::env::var("CLUSTERSYNC_STOPPED_EXIT_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(std::time::Duration::from_millis)
        .unwrap_or(std::time::Duration::from_secs(10))
}

/// mongosync's log rotation: `kill -USR1` (or logrotate's `postrotate`) rotates the log file
/// and the engine goes on; without `--logPath` there is nothing to rotate and it is ignored.
fn rotate_on_sigusr1(logs: Arc<Logs>) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = signal(SignalKind::user_defined1())
            .map_err(|e| anyhow::anyhow!("cannot handle SIGUSR1 (log rotation): {e}"))?;
        tokio::spawn(async move {
            while usr1.recv().await.is_some() {
                match logs.rotate() {
                    Ok(()) => match logs.path() {
                        Some(p) => {
                            tracing::info!(target: "clustersync", file = %p.display(), "log rotated on SIGUSR1")
                        }
                        None => {
                            tracing::info!(target: "clustersync", "SIGUSR1: logging to standard output, nothing to rotate")
                        }
                    },
                    Err(e) => {
                        tracing::error!(target: "clustersync", error = %e, "SIGUSR1: the log could not be rotated; still writing the current file")
                    }
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(logs);
    Ok(())
}
