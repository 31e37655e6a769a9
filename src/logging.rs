//! JSON-lines logs, one object per line, as mongosync writes them.

use std::path::Path;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` applies to clustersync's own events; other crates
/// log warnings and above unless `RUST_LOG` says otherwise.
pub fn init(
    level: &str,
    log_dir: Option<&Path>,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(format!("warn,clustersync={level}")),
    };
    let builder = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_target(true);
    match log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!(
                    "--logPath {}: cannot create the directory: {e}",
                    dir.display()
                )
            })?;
            // A new file each day (clustersync.YYYY-MM-DD.log), the last week kept, so a
            // migration of weeks cannot fill the disk with logs.
            let appender = tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("clustersync")
                .filename_suffix("log")
                .max_log_files(7)
                .build(dir)
                .map_err(|e| {
                    anyhow::anyhow!("--logPath {}: cannot open the log file: {e}", dir.display())
                })?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            builder.with_writer(writer).init();
            Ok(Some(guard))
        }
        None => {
            builder.with_writer(std::io::stdout).init();
            Ok(None)
        }
    }
}
