//! `clustersync verify`: compares two clusters (cluster0 the source, cluster1 the destination):
//! every namespace's documents byte for byte, collection options, indexes and views.
//!
//! The comparison is the library's (`crate::verify`, which prints nothing and knows no command
//! line); this module reads the flags, connects, and prints the report: as JSON (`--json`) or
//! as the table `Report::text` draws.
//!
//! On a terminal, stderr shows one updating line of how far each side's scan has come; piped,
//! nothing but the report and errors is written.
//!
//! Exits 0 when the clusters are equal, 1 when they differ, 2 on bad usage (a connection string,
//! a namespace filter), a cluster that cannot be reached, or an async runtime that cannot start:
//! 1 always means a difference was found.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::progress::Progress;

use crate::uri::ClusterUri;
use crate::verify::{self, Cluster, ScanProgress, VerifyOptions};

#[derive(clap::Args)]
pub(super) struct VerifyArgs {
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
    #[arg(long = "max-mismatches", value_name = "N", default_value_t = verify::DEFAULT_MAX_MISMATCHES)]
    max_mismatches: usize,
}

pub(super) fn run(args: VerifyArgs) -> ExitCode {
    let filters = super::clusters::namespace_filters;
    let usage = |e: String| {
        errln!("error: {e}");
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
    // Counters the progress line reads while the comparison runs.
    let scan = Arc::new(ScanProgress::default());
    let options = VerifyOptions {
        include,
        exclude,
        max_mismatches: args.max_mismatches,
        progress: Some(scan.clone()),
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
    let Some(runtime) = super::runtime() else {
        return ExitCode::from(2);
    };
    let result = runtime.block_on(async {
        let c0 = crate::mongo::build_client("--cluster0", &uri0)
            .await
            .map_err(|e| e.to_string())?;
        let c1 = crate::mongo::build_client("--cluster1", &uri1)
            .await
            .map_err(|e| e.to_string())?;
        let source = Cluster::new("cluster0", uri0.clone(), c0);
        let destination = Cluster::new("cluster1", uri1.clone(), c1);
        let progress = Progress::on_terminal();
        let ticker = async {
            loop {
                progress.show(&format!(
                    "verifying: cluster0 {} documents hashed, {} namespaces done; cluster1 {} documents hashed, {} namespaces done",
                    scan.source.hashed(),
                    scan.source.scanned(),
                    scan.destination.hashed(),
                    scan.destination.scanned()
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let compared = tokio::select! {
            r = verify::verify(&source, &destination, &options) => r,
            _ = ticker => unreachable!("the progress ticker never ends"),
        };
        progress.clear();
        // Closed while the runtime runs: a client dropped as it stops leaves the driver's
        // session cleanup to a task that can panic on the user's terminal.
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(
                source.client().clone().shutdown().immediate(true),
                destination.client().clone().shutdown().immediate(true)
            )
        })
        .await;
        compared
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
            Ok(j) => outln!("{j}"),
            Err(e) => return usage(format!("cannot write the report as JSON: {e}")),
        }
    } else {
        out!("{}", report.text(uri0.hosts(), uri1.hosts()));
    }
    if report.is_equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
