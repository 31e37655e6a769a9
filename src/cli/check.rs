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

use crate::engine::config::{EngineArgs, EngineConfig};
use crate::engine::StartupError;
use crate::preflight::{self, report, Intent, SyncKind};

#[derive(clap::Args)]
pub(super) struct CheckArgs {
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

// No doc comments on these enums' variants: clap would print them beside the possible values
// in `--help`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Label {
    Cluster0,
    Cluster1,
}

pub(super) fn run(args: CheckArgs) -> ExitCode {
    let config = match EngineConfig::from_args(EngineArgs {
        cluster0: args.cluster0,
        cluster1: args.cluster1,
        config: args.config,
        ..Default::default()
    }) {
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
        let c0 = crate::mongo::build_client("--cluster0", &config.cluster0).await?;
        let c1 = crate::mongo::build_client("--cluster1", &config.cluster1).await?;
        let kind = SyncKind::of(args.reversible, args.dual_write_blocking);
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
        Ok::<_, StartupError>(preflight::run(source, destination, intent, &scrub).await)
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
