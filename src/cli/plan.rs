//! `clustersync plan`: what a sync would carry, how long it should take and what may go wrong,
//! before anything starts. Read-only for user data: the library's probe writes a few megabytes
//! to a scratch database on the destination and drops it again (also on Ctrl-C or SIGTERM,
//! here).
//!
//! The plan is the library's (`crate::plan`, the one the engine serves at `/api/v1/plan`); the
//! options are `/start`'s, validated as `/start` validates them, so a plan's scope is the
//! sync's. This module reads the flags, connects, shows progress on a terminal and prints the
//! plan: as text (one screen) or as the contract's JSON (`--output json`).
//!
//! Exits 0 when no risk blocks the sync, 1 when one does (an unreachable cluster is one) or the
//! async runtime cannot start, 2 on bad usage: flags, the config file, a namespace filter, a
//! connection string that cannot be used; 130 when interrupted.

use std::fmt::Write as _;
use std::process::ExitCode;

use super::clusters::{namespace_filters, ClusterArgs, Connected, Output};
use super::progress::Progress;
use crate::contract::options::StartOptions;
use crate::contract::plan::{IndexBuild, NamespaceKind, Plan, RiskKind, Severity};
use crate::plan::judge::{human_bytes, human_seconds};
use crate::plan::{self, PlanOptions, Side};

/// Namespaces listed in the text report; the rest are counted.
const SHOWN: usize = 30;

#[derive(clap::Args)]
pub(super) struct PlanArgs {
    #[command(flatten)]
    clusters: ClusterArgs,
    /// Namespaces to sync, as /api/v1/start's includeNamespaces: a JSON array such as
    /// [{"database":"sales","collections":["orders"]}].
    #[arg(long = "include-namespaces", value_name = "JSON")]
    include_namespaces: Option<String>,
    /// Namespaces to leave out, as /api/v1/start's excludeNamespaces.
    #[arg(long = "exclude-namespaces", value_name = "JSON")]
    exclude_namespaces: Option<String>,
    /// Plan a reversible sync (more roles on both sides, write blocking on both).
    #[arg(long = "reversible")]
    reversible: bool,
    /// Report format.
    #[arg(long = "output", value_enum, default_value = "text")]
    output: Output,
}

/// The `/start` options the flags describe.
fn start_options(args: &PlanArgs) -> Result<StartOptions, String> {
    let include = namespace_filters("--include-namespaces", args.include_namespaces.as_deref())?;
    let exclude = namespace_filters("--exclude-namespaces", args.exclude_namespaces.as_deref())?;
    let source = args.clusters.source.cluster();
    serde_json::from_value(serde_json::json!({
        "source": source,
        "destination": source.other(),
        "includeNamespaces": include,
        "excludeNamespaces": exclude,
        "reversible": args.reversible,
    }))
    .map_err(|e| format!("cannot make the sync's options: {e}"))
}

pub(super) fn run(args: PlanArgs) -> ExitCode {
    let usage = |e: String| {
        errln!("error: {e}");
        ExitCode::from(2)
    };
    let config = match args.clusters.config() {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let options = match start_options(&args).and_then(|o| {
        PlanOptions::from_start(&o).map_err(|e| format!("these options cannot be synced: {e}"))
    }) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    let progress = Progress::on_terminal();
    let result = runtime.block_on(async {
        let connected = match Connected::new(config).await {
            Ok(c) => c,
            Err(e) => return Err(usage(e.to_string())),
        };
        let scrub = |t: &str| connected.scrub(t);
        let (s, d) = connected.sides(args.clusters.source);
        let show = |line: &str| progress.show(line);
        let outcome = tokio::select! {
            plan = plan::run(
                Side { client: s.0, label: s.1, hosts: s.2 },
                Side { client: d.0, label: d.1, hosts: d.2 },
                &options,
                &scrub,
                &show,
            ) => Ok(plan),
            _ = super::shutdown_signal() => {
                progress.clear();
                // The probe may have been writing: its scratch database goes.
                let dropped = tokio::time::timeout(
                    plan::probe::ABANDONED_CLEANUP + std::time::Duration::from_secs(5),
                    plan::probe::drop_abandoned_scratch(d.0, &options.scratch_db),
                )
                .await;
                match dropped {
                    Ok(Ok(())) => errln!("interrupted; the probe's scratch database was dropped"),
                    _ => errln!(
                        "interrupted; the probe's scratch database {} could not be dropped: drop it by hand",
                        options.scratch_db
                    ),
                }
                Err(ExitCode::from(130))
            }
        };
        connected.close().await;
        outcome
    });
    progress.clear();
    let plan = match result {
        Ok(p) => p,
        Err(code) => return code,
    };
    match args.output {
        Output::Text => out!("{}", text(&plan)),
        Output::Json => match serde_json::to_string_pretty(&plan) {
            Ok(j) => outln!("{j}"),
            Err(e) => return usage(format!("cannot write the plan as JSON: {e}")),
        },
    }
    if plan.safe {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `1 view`, `2 views`, `3 indexes`.
fn count(n: u64, word: &str) -> String {
    match (n, word) {
        (1, _) => format!("1 {word}"),
        (_, "index") => format!("{n} indexes"),
        _ => format!("{n} {word}s"),
    }
}

fn kind_name(k: NamespaceKind) -> &'static str {
    match k {
        NamespaceKind::Collection => "collection",
        NamespaceKind::Capped => "capped",
        NamespaceKind::Timeseries => "time series",
        NamespaceKind::Clustered => "clustered",
        NamespaceKind::View => "view",
    }
}

fn build_name(b: IndexBuild) -> &'static str {
    match b {
        IndexBuild::AsDefined => "as defined",
        IndexBuild::UniqueAtCommit => "unique at commit",
        IndexBuild::TtlPausedUntilCommit => "TTL paused until commit",
        IndexBuild::Hashed => "hashed",
        IndexBuild::Unsupported => "UNSUPPORTED",
        IndexBuild::Skipped => "not built",
    }
}

fn risk_name(k: RiskKind) -> &'static str {
    match k {
        RiskKind::Unreachable => "unreachable",
        RiskKind::OplogWindow => "oplog window",
        RiskKind::DiskSpace => "disk space",
        RiskKind::Roles => "roles",
        RiskKind::WriteBlocking => "write blocking",
        RiskKind::Version => "version",
        RiskKind::Topology => "topology",
        RiskKind::DestinationNotEmpty => "destination not empty",
        RiskKind::Unsupported => "unsupported",
    }
}

/// The plan on one screen: clusters, totals, the namespaces (largest first), the indexes and
/// options that need care, the estimate with its method, the risks with what to do.
pub(super) fn text(plan: &Plan) -> String {
    let mut o = String::new();
    let yes_no = |b: Option<bool>| match b {
        Some(true) => "supported",
        Some(false) => "not supported",
        None => "unknown",
    };
    let s = &plan.source;
    let d = &plan.destination;
    let _ = writeln!(
        o,
        "Plan: {} ({}) -> {} ({})",
        s.label, s.hosts, d.label, d.hosts
    );
    let _ = writeln!(
        o,
        "  source       MongoDB {}, oplog window {}, write blocking {}",
        s.version.as_deref().unwrap_or("?"),
        match (s.oplog_window_seconds, s.oplog_rolled_over) {
            (Some(w), Some(true)) => format!("{} (rolled over)", human_seconds(w as f64)),
            (Some(w), _) => format!("{} (not rolled over yet)", human_seconds(w as f64)),
            _ => "unknown".into(),
        },
        yes_no(s.write_blocking_supported)
    );
    let _ = writeln!(
        o,
        "  destination  MongoDB {}, free disk {}, write blocking {}",
        d.version.as_deref().unwrap_or("?"),
        d.free_bytes
            .map(|b| human_bytes(b as f64))
            .unwrap_or_else(|| "not reported".into()),
        yes_no(d.write_blocking_supported)
    );
    let t = &plan.totals;
    if let Some(why) = &plan.scope_unknown {
        let _ = writeln!(o, "\nIn scope: unknown: {why}");
        let _ = writeln!(o, "\nEstimate: unknown");
        risks_section(&mut o, plan);
        return o;
    }
    let _ = writeln!(
        o,
        "\nIn scope: {}, {}, {}, {}, {} of data ({} on disk, {} of indexes), {} to build",
        count(t.databases, "database"),
        count(t.collections, "collection"),
        count(t.views, "view"),
        count(t.documents, "document"),
        human_bytes(t.data_bytes as f64),
        human_bytes(t.storage_bytes as f64),
        human_bytes(t.index_bytes as f64),
        count(t.indexes, "index")
    );
    if !plan.namespaces.is_empty() {
        let mut largest: Vec<_> = plan.namespaces.iter().collect();
        largest.sort_by(|a, b| {
            b.data_bytes
                .cmp(&a.data_bytes)
                .then(a.namespace.cmp(&b.namespace))
        });
        let width = largest
            .iter()
            .take(SHOWN)
            .map(|n| n.namespace.len())
            .max()
            .unwrap_or(9)
            .max(9);
        let _ = writeln!(
            o,
            "\n{:<width$}  {:<11}  {:>10}  {:>9}  {:>9}  {:>9}  {:>7}  {:>8}",
            "NAMESPACE", "KIND", "DOCUMENTS", "DATA", "STORAGE", "IDX SIZE", "INDEXES", "COPY"
        );
        for n in largest.iter().take(SHOWN) {
            let _ = writeln!(
                o,
                "{:<width$}  {:<11}  {:>10}  {:>9}  {:>9}  {:>9}  {:>7}  {:>8}",
                n.namespace,
                kind_name(n.kind),
                n.documents,
                human_bytes(n.data_bytes as f64),
                human_bytes(n.storage_bytes as f64),
                human_bytes(n.index_bytes as f64),
                n.indexes.len(),
                n.estimated_copy_seconds
                    .map(human_seconds)
                    .unwrap_or_else(|| "-".into())
            );
        }
        if largest.len() > SHOWN {
            let _ = writeln!(
                o,
                "... and {} more namespaces (all of them in --output json)",
                largest.len() - SHOWN
            );
        }
    }
    let care: Vec<String> = plan
        .namespaces
        .iter()
        .flat_map(|n| {
            n.indexes
                .iter()
                .filter(|i| i.build != IndexBuild::AsDefined || i.note.is_some())
                .map(move |i| {
                    format!(
                        "  {}  {} {}: {}{}",
                        n.namespace,
                        i.name,
                        i.keys,
                        build_name(i.build),
                        i.note
                            .as_deref()
                            .map(|n| format!(" ({n})"))
                            .unwrap_or_default()
                    )
                })
        })
        .collect();
    if !care.is_empty() {
        let _ = writeln!(o, "\nIndexes that need care:");
        for line in &care {
            let _ = writeln!(o, "{line}");
        }
    }
    let notes: Vec<String> = plan
        .namespaces
        .iter()
        .flat_map(|n| {
            n.notes
                .iter()
                .map(move |t| format!("  {}  {t}", n.namespace))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(o, "\nOptions that need care:");
        for line in &notes {
            let _ = writeln!(o, "{line}");
        }
    }
    let e = &plan.estimate;
    let _ = writeln!(
        o,
        "\nEstimate: about {} in all: copy {}, index builds {}, catch-up {}",
        human_seconds(e.total_seconds),
        human_seconds(e.copy_seconds),
        human_seconds(e.index_build_seconds),
        human_seconds(e.catch_up_seconds)
    );
    let _ = writeln!(
        o,
        "  source read {}/s, destination write {}/s{}{}",
        human_bytes(e.probe.source_read_bytes_per_second),
        human_bytes(e.probe.destination_write_bytes_per_second),
        e.probe
            .index_build_bytes_per_second
            .map(|r| format!(", index build {}/s", human_bytes(r)))
            .unwrap_or_default(),
        e.probe
            .source_oplog_bytes_per_second
            .map(|r| format!(", source oplog {}/s", human_bytes(r)))
            .unwrap_or_default()
    );
    let _ = writeln!(o, "  method: {}", e.probe.method);
    risks_section(&mut o, plan);
    o
}

/// The risks, and the verdict.
fn risks_section(o: &mut String, plan: &Plan) {
    if plan.risks.is_empty() {
        let _ = writeln!(o, "\nRisks: none found");
    } else {
        let _ = writeln!(o, "\nRisks:");
        for r in &plan.risks {
            let _ = writeln!(
                o,
                "  {:<8} {}: {}",
                match r.severity {
                    Severity::Blocking => "BLOCKING",
                    Severity::Warning => "warning",
                },
                risk_name(r.kind),
                r.message
            );
        }
    }
    let blocking = plan.blocking().count();
    let _ = writeln!(
        o,
        "\n{}",
        if blocking == 0 {
            "Safe to start: yes (no blocking risk)".to_string()
        } else {
            format!(
                "Safe to start: NO ({blocking} blocking risk{})",
                if blocking == 1 { "" } else { "s" }
            )
        }
    );
}
