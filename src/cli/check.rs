//! `clustersync check`: runs every preflight check without starting a sync: reachability,
//! versions, topology, the connection users' roles, an empty destination, the source's oplog
//! window.
//!
//! The checks are the library's (`crate::preflight`, the ones the engine runs at `/start`), and
//! so is the report's text and JSON (`preflight::report`): this module only reads the flags,
//! connects and prints. The connection strings come from `--cluster0`/`--cluster1` or a YAML
//! file (`--config`, the engine's works), read as the engine reads them.
//!
//! Exits 0 when every check passes, 1 when one fails (an unreachable cluster is a failed check)
//! or the async runtime cannot start, 2 on bad settings: flags, the config file, a connection
//! string that cannot be used.

use std::process::ExitCode;

use super::clusters::{ClusterArgs, Connected, Output};
use crate::engine::StartupError;
use crate::preflight::{self, report, Intent, SyncKind};

#[derive(clap::Args)]
pub(super) struct CheckArgs {
    #[command(flatten)]
    clusters: ClusterArgs,
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

pub(super) fn run(args: CheckArgs) -> ExitCode {
    let config = match args.clusters.config() {
        Ok(c) => c,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let connected = Connected::new(config).await?;
        let kind = SyncKind::of(args.reversible, args.dual_write_blocking);
        let intent = Intent {
            kind,
            pre_existing_destination_data: args.pre_existing_destination_data,
            copy_rate: preflight::checks::DEFAULT_COPY_RATE,
            measure: true,
        };
        let scrub = |t: &str| connected.scrub(t);
        let (source, destination) = connected.sides(args.clusters.source);
        let report = preflight::run(source, destination, intent, &scrub).await;
        connected.close().await;
        Ok::<_, StartupError>(report)
    });
    match result {
        Ok(r) => {
            match args.output {
                Output::Text => out!("{}", report::text(&r)),
                Output::Json => outln!("{}", report::json(&r)),
            }
            if r.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
