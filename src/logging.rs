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
            let appender = tracing_appender::rolling::never(dir, "clustersync.log");
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
