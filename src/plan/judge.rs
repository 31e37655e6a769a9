//! From gathered facts to a [`Plan`]: how each namespace and index will be carried, the time
//! estimate and the risks. Pure: every rule is unit-tested without a server.
//!
//! How an index is built follows the engine's own code, not a description of it:
//! [`catalog::sync_form`] decides what the destination gets during the sync (unique built
//! non-unique, TTL with `expireAfterSeconds` = [`catalog::TTL_DISABLED`], hashed left out under
//! `excludeHashed*`), the commit restores the rest, and an index the destination refuses stops
//! the index phase (`catalog::build_listed_indexes` returns the error), so a kind the probe saw
//! refused is a blocking risk.

use std::collections::{BTreeMap, BTreeSet};

use bson::{Bson, Document};

use super::gather::{NamespaceFacts, SideFacts};
use super::probe::{special_kind, Measured, ProbeError};
use crate::contract::options::BuildIndexes;
use crate::contract::plan::{
    ClusterSummary, Estimate, IndexBuild, IndexPlan, NamespaceKind, NamespacePlan, Plan, Probe,
    Risk, RiskKind, Severity, Totals,
};
use crate::contract::preflight::ProblemKind;
use crate::contract::write_blocking::Mode;
use crate::mongo::catalog;
use crate::preflight::checks::{self, ClusterVerdict};
use crate::preflight::disk::{self, DiskSpace};
use crate::preflight::Report;

/// The share of the destination's free space above which the plan warns.
pub const DISK_WARN_SHARE: f64 = 0.8;
/// The oplog window below which (as a multiple of the time the sync needs) the plan warns.
pub const OPLOG_WARN_FACTOR: f64 = 2.0;

/// What the sync is asked to do, as far as the plan's judgement goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intent {
    /// `buildIndexes`.
    pub build_indexes: BuildIndexes,
    /// `preExistingDestinationData`.
    pub pre_existing_destination_data: bool,
    /// The write blocking asked for, and whether explicitly (`StartOptions::write_blocking`).
    pub write_blocking: (Mode, bool),
}

/// Everything gathered.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The preflight's verdict (versions, topology, roles, identity, an empty destination).
    pub report: Report,
    /// Beyond the preflight: the source's.
    pub source: SideFacts,
    /// Beyond the preflight: the destination's.
    pub destination: SideFacts,
    /// The source namespaces in scope, or why they could not be listed.
    pub namespaces: Result<Vec<NamespaceFacts>, String>,
    /// The destination's namespaces in scope (judged with pre-existing destination data).
    pub clashes: Vec<String>,
    /// The probe's measurement, or why there is none.
    pub probe: Result<Measured, ProbeError>,
    /// What the sync is asked to do.
    pub intent: Intent,
}

/// How one source index will be built; `None` for the `_id` index and a clustered
/// collection's clustered index, which every collection has. `tried` maps each special index
/// kind the probe tried on the destination to its refusal (`None`: it built one).
pub fn index_plan(
    spec: &Document,
    mode: BuildIndexes,
    tried: &BTreeMap<String, Option<String>>,
) -> Option<IndexPlan> {
    let name = spec.get_str("name").unwrap_or_default().to_string();
    if name == "_id_" || spec.get_bool("clustered").unwrap_or(false) {
        return None;
    }
    let keys = spec
        .get_document("key")
        .map(|k| Bson::Document(k.clone()).into_relaxed_extjson().to_string())
        .unwrap_or_default();
    let plan = |build, note: Option<String>| {
        Some(IndexPlan {
            name: name.clone(),
            keys: keys.clone(),
            build,
            note,
        })
    };
    if mode == BuildIndexes::Never {
        return plan(
            IndexBuild::Skipped,
            Some("not built: buildIndexes is never".into()),
        );
    }
    let kind = special_kind(spec);
    if let Some(why) = kind.and_then(|k| tried.get(k)?.as_ref()) {
        return plan(
            IndexBuild::Unsupported,
            Some(format!(
                "the destination refused a {} index when the plan tried one ({why}); the sync would stop at this index's build",
                kind.unwrap_or_default()
            )),
        );
    }
    let Some(form) = catalog::sync_form(spec, mode) else {
        return plan(
            IndexBuild::Skipped,
            Some("not built: buildIndexes excludes hashed indexes".into()),
        );
    };
    let ttl = spec.get("expireAfterSeconds").map(|v| v.to_string());
    let ttl_note = |s: &str| {
        format!(
            "{s}built with expireAfterSeconds {} (nothing expires) during the sync; expireAfterSeconds {} restored at commit",
            form.get("expireAfterSeconds").map(|v| v.to_string()).unwrap_or_default(),
            ttl.as_deref().unwrap_or_default()
        )
    };
    if spec.get_bool("unique").unwrap_or(false) {
        let mut note = "built non-unique during the sync (changes are applied out of order and could collide for a moment); made unique at commit (prepareUnique, then unique), which fails if the source lets duplicates in".to_string();
        if ttl.is_some() {
            note = format!("{note}; also TTL: {}", ttl_note(""));
        }
        return plan(IndexBuild::UniqueAtCommit, Some(note));
    }
    if ttl.is_some() {
        return plan(IndexBuild::TtlPausedUntilCommit, Some(ttl_note("")));
    }
    if kind == Some("hashed") {
        return plan(IndexBuild::Hashed, None);
    }
    let mut notes = Vec::new();
    let built_in_probe;
    if let Some(k) = kind.filter(|k| tried.contains_key(*k)) {
        built_in_probe = format!("{k}: the destination built one when the plan tried");
        notes.push(built_in_probe.as_str());
    }
    if spec.contains_key("partialFilterExpression") {
        notes.push("partial: its partialFilterExpression is kept");
    }
    if spec.get_bool("sparse").unwrap_or(false) {
        notes.push("sparse");
    }
    if spec.get_bool("hidden").unwrap_or(false) {
        notes.push("hidden: stays hidden on the destination");
    }
    if spec.contains_key("collation") {
        notes.push("its own collation is kept");
    }
    plan(
        IndexBuild::AsDefined,
        (!notes.is_empty()).then(|| notes.join("; ")),
    )
}

fn option_json(v: &Bson) -> String {
    v.clone().into_relaxed_extjson().to_string()
}

/// The options of a namespace that need care, one sentence each; what the engine does with
/// them follows `CollSpec::create_command` (every option copied as is) and the copy (which
/// bypasses document validation).
pub fn notes(n: &NamespaceFacts) -> Vec<String> {
    let o = &n.options;
    let mut out = Vec::new();
    match n.kind {
        NamespaceKind::Capped => out.push(format!(
            "capped (size {} bytes{}): created capped with the same caps; the copy keeps the source's natural order",
            o.get("size").map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
            o.get("max").map(|v| format!(", max {v} documents")).unwrap_or_default()
        )),
        NamespaceKind::Timeseries => out.push(format!(
            "time series ({}): created with the same options; its measurements are copied as the source returns them",
            o.get_document("timeseries")
                .map(|t| t.iter().map(|(k, v)| format!("{k} {}", option_json(v))).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        )),
        NamespaceKind::Clustered => out.push(format!(
            "clustered on {}: created clustered; the clustered index is not built separately",
            o.get_document("clusteredIndex")
                .ok()
                .and_then(|c| c.get("key"))
                .map(option_json)
                .unwrap_or_else(|| "_id".into())
        )),
        NamespaceKind::View => out.push(format!(
            "view on {} with pipeline {}: created as a view; it holds no data",
            o.get_str("viewOn").unwrap_or("?"),
            o.get("pipeline").map(option_json).unwrap_or_else(|| "[]".into())
        )),
        NamespaceKind::Collection => {}
    }
    if let Some(v) = o.get("validator") {
        out.push(format!(
            "validator {} (validationLevel {}, validationAction {}): the copy bypasses validation, so source documents that break it are copied too",
            option_json(v),
            o.get_str("validationLevel").unwrap_or("strict"),
            o.get_str("validationAction").unwrap_or("error")
        ));
    }
    if let Ok(c) = o.get_document("collation") {
        out.push(format!(
            "default collation {}: created with it; its indexes and views compare strings by it",
            option_json(&Bson::Document(c.clone()))
        ));
    }
    if let Some(v) = o.get("expireAfterSeconds") {
        out.push(format!(
            "expireAfterSeconds {v} on the collection: created as is, so the destination expires documents on its own during the sync"
        ));
    }
    if o.contains_key("changeStreamPreAndPostImages") {
        out.push("changeStreamPreAndPostImages: kept".into());
    }
    out
}

/// Bytes as a person reads them (as the disk check words them).
pub fn human_bytes(n: f64) -> String {
    disk::human_bytes(n.max(0.0) as u64)
}

/// Seconds as a person reads them.
pub fn human_seconds(s: f64) -> String {
    let s = s.max(0.0);
    if s < 1.0 {
        format!("{s:.2} s")
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 2.0 * 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn rate(bytes: u64, seconds: f64) -> Option<f64> {
    (bytes > 0).then(|| bytes as f64 / seconds.max(1e-3))
}

fn risk(kind: RiskKind, severity: Severity, message: String) -> Risk {
    Risk {
        kind,
        severity,
        message,
    }
}

fn summary(v: &ClusterVerdict, side: &SideFacts, source: bool) -> ClusterSummary {
    let f = &v.facts;
    ClusterSummary {
        label: f.label.clone(),
        hosts: f.hosts.clone(),
        version: f.version.clone(),
        oplog_window_seconds: source.then(|| f.oplog.map(|w| w.span_secs())).flatten(),
        oplog_rolled_over: source.then(|| f.oplog.map(|w| w.rolled_over)).flatten(),
        free_bytes: match (side.fs_total, side.fs_used) {
            (Some(t), Some(u)) if !source => Some(t.saturating_sub(u)),
            _ => None,
        },
        write_blocking_supported: side.write_blocking,
    }
}

/// The plan. Pure.
pub fn judge(facts: Facts) -> Plan {
    let Facts {
        report,
        source,
        destination,
        namespaces,
        clashes,
        probe,
        intent,
    } = facts;
    let mut risks = Vec::new();
    // The preflight's problems, as risks.
    for p in &report.problems {
        let kind = match p.kind {
            ProblemKind::Unreachable => RiskKind::Unreachable,
            ProblemKind::Version => RiskKind::Version,
            ProblemKind::Roles => RiskKind::Roles,
            ProblemKind::Topology | ProblemKind::SameCluster => RiskKind::Topology,
            ProblemKind::DestinationNotEmpty => RiskKind::DestinationNotEmpty,
            ProblemKind::InsufficientDiskSpace => RiskKind::DiskSpace,
        };
        risks.push(risk(kind, Severity::Blocking, p.message.clone()));
    }
    if intent.pre_existing_destination_data && !clashes.is_empty() {
        risks.push(risk(
            RiskKind::DestinationNotEmpty,
            Severity::Blocking,
            format!(
                "the destination already holds namespaces in scope ({}); drop them there, or leave them out with excludeNamespaces",
                clashes.join(", ")
            ),
        ));
    }
    let source_unreachable = report.source.facts.unreachable.is_some();
    let (specs, scope_unknown) = match namespaces {
        Ok(n) => (n, None),
        // The preflight's risk already says why the source could not be examined.
        Err(why) if source_unreachable => (vec![], Some(why)),
        Err(why) => {
            risks.push(risk(
                RiskKind::Unreachable,
                Severity::Blocking,
                format!("the source's namespaces could not be listed: {why}; check that the source is reachable and the user may list collections and read collStats"),
            ));
            (vec![], Some(why))
        }
    };
    let tried: BTreeMap<String, Option<String>> = probe
        .as_ref()
        .map(|m| {
            m.kinds
                .iter()
                .map(|k| (k.kind.clone(), k.refused.clone()))
                .collect()
        })
        .unwrap_or_default();

    // Rates.
    let measured = probe.as_ref().ok();
    let read_rate = measured.and_then(|m| rate(m.read_bytes, m.read_seconds));
    let write_rate = measured.and_then(|m| rate(m.written_bytes, m.write_seconds));
    let copy_rate = match (read_rate, write_rate) {
        (Some(r), Some(w)) => Some(r.min(w)),
        _ => None,
    };
    let assumed = checks::DEFAULT_COPY_RATE as f64;
    let effective_copy_rate = copy_rate.unwrap_or(assumed);
    let index_rate = measured
        .and_then(|m| m.index.as_ref())
        .and_then(|i| rate(i.bytes, i.seconds));
    let effective_index_rate = index_rate.unwrap_or(effective_copy_rate);

    // Namespaces.
    let mut totals = Totals::default();
    let mut databases = BTreeSet::new();
    let mut plans = Vec::new();
    let mut index_seconds = 0.0;
    for n in &specs {
        databases.insert(n.db.clone());
        let indexes: Vec<IndexPlan> = if n.kind == NamespaceKind::View {
            vec![]
        } else {
            n.indexes
                .iter()
                .filter_map(|s| index_plan(s, intent.build_indexes, &tried))
                .collect()
        };
        if n.kind == NamespaceKind::View {
            totals.views += 1;
        } else {
            totals.collections += 1;
        }
        totals.documents += n.documents;
        totals.data_bytes += n.data_bytes;
        totals.storage_bytes += n.storage_bytes;
        totals.index_bytes += n.index_bytes;
        totals.indexes += indexes.len() as u64;
        let built = indexes
            .iter()
            .filter(|i| !matches!(i.build, IndexBuild::Skipped | IndexBuild::Unsupported))
            .count();
        index_seconds += built as f64 * n.data_bytes as f64 / effective_index_rate;
        let unsupported: Vec<&IndexPlan> = indexes
            .iter()
            .filter(|i| i.build == IndexBuild::Unsupported)
            .collect();
        if !unsupported.is_empty() {
            risks.push(risk(
                RiskKind::Unsupported,
                Severity::Blocking,
                format!(
                    "{}: the destination cannot build {} ({}); drop {} on the source, leave {} out with excludeNamespaces, or sync to a destination that supports {}",
                    n.ns(),
                    unsupported.iter().map(|i| format!("{} {}", i.name, i.keys)).collect::<Vec<_>>().join(", "),
                    unsupported.iter().filter_map(|i| i.note.as_deref()).next().unwrap_or_default(),
                    if unsupported.len() == 1 { "it" } else { "them" },
                    n.ns(),
                    if unsupported.len() == 1 { "it" } else { "them" },
                ),
            ));
        }
        plans.push(NamespacePlan {
            namespace: n.ns(),
            kind: n.kind,
            documents: n.documents,
            data_bytes: n.data_bytes,
            storage_bytes: n.storage_bytes,
            index_bytes: n.index_bytes,
            indexes,
            notes: notes(n),
            estimated_copy_seconds: (n.kind != NamespaceKind::View)
                .then(|| n.data_bytes as f64 / effective_copy_rate),
        });
    }
    totals.databases = databases.len() as u64;

    // The estimate.
    let copy_seconds = totals.data_bytes as f64 / effective_copy_rate;
    let oplog_rate = source.oplog_rate.map(|r| r.bytes_per_second());
    let apply_rate = write_rate.unwrap_or(effective_copy_rate);
    let busy = copy_seconds + index_seconds;
    let catch_up_seconds = match oplog_rate {
        // Changes made while copying are applied at the destination's write rate, and more
        // come in meanwhile: busy * r / (w - r).
        Some(r) if r > 0.0 && r < apply_rate => busy * r / (apply_rate - r),
        Some(r) if r > 0.0 => {
            risks.push(risk(
                RiskKind::OplogWindow,
                Severity::Warning,
                format!(
                    "the source's oplog grew at {}/s lately, as fast as the destination took the probe's writes ({}/s): the sync may never catch up; sync at a quieter time, or give the destination more write capacity",
                    human_bytes(r),
                    human_bytes(apply_rate)
                ),
            ));
            busy
        }
        _ => 0.0,
    };
    let total_seconds = busy + catch_up_seconds;

    // The oplog window.
    if let Some(w) = report.source.facts.oplog {
        let span = w.span_secs() as f64;
        let resize = oplog_rate
            .map(|r| {
                let mb = ((r * total_seconds * OPLOG_WARN_FACTOR) / 1e6)
                    .ceil()
                    .max(990.0);
                format!(
                    " (e.g. db.adminCommand({{replSetResizeOplog: 1, size: {mb:.0}}}), size in MB)"
                )
            })
            .unwrap_or_default();
        if w.rolled_over && span < total_seconds {
            risks.push(risk(
                RiskKind::OplogWindow,
                Severity::Blocking,
                format!(
                    "the source's oplog has rolled over and covers only {} while the sync needs about {} (copy {}, index builds {}, catch-up {}): changes would roll off before they are applied and the sync would fail; enlarge the source's oplog with replSetResizeOplog{resize} first, or narrow the sync with includeNamespaces",
                    human_seconds(span),
                    human_seconds(total_seconds),
                    human_seconds(copy_seconds),
                    human_seconds(index_seconds),
                    human_seconds(catch_up_seconds)
                ),
            ));
        } else if w.rolled_over && span < total_seconds * OPLOG_WARN_FACTOR {
            risks.push(risk(
                RiskKind::OplogWindow,
                Severity::Warning,
                format!(
                    "the source's oplog covers {}, less than twice the {} the sync needs: a slower copy or a burst of writes would outrun it; enlarge it with replSetResizeOplog{resize}",
                    human_seconds(span),
                    human_seconds(total_seconds)
                ),
            ));
        }
    }

    // Disk space, as /start judges it.
    let on_disk = totals.storage_bytes + totals.index_bytes;
    if on_disk > 0 && report.destination.facts.unreachable.is_none() {
        match disk::judge(on_disk, destination.fs_total, destination.fs_used) {
            DiskSpace::Short { needed, free } => risks.push(risk(
                RiskKind::DiskSpace,
                Severity::Blocking,
                disk::shortage_message(needed, free),
            )),
            DiskSpace::Enough { needed, free } if needed as f64 > DISK_WARN_SHARE * free as f64 => {
                risks.push(risk(
                    RiskKind::DiskSpace,
                    Severity::Warning,
                    format!(
                        "the sync needs about {} of the {} free on the destination's filesystem (more than {:.0}%): free space there, or narrow the sync with includeNamespaces",
                        human_bytes(needed as f64),
                        human_bytes(free as f64),
                        DISK_WARN_SHARE * 100.0
                    ),
                ))
            }
            DiskSpace::Enough { .. } => {}
            DiskSpace::Unknown(why) => risks.push(risk(
                RiskKind::DiskSpace,
                Severity::Warning,
                format!(
                    "{why}, so its free space cannot be checked (nor will /start check it); make sure its filesystem has at least {} free ({} of data and indexes on the source's disk, times {})",
                    human_bytes((on_disk as f64 * disk::MARGIN).ceil()),
                    human_bytes(on_disk as f64),
                    disk::MARGIN
                ),
            )),
        }
    }

    // Write blocking.
    let (mode, explicit) = intent.write_blocking;
    let needed: Vec<(&ClusterVerdict, &SideFacts)> = [
        (mode.blocks_source(), &report.source, &source),
        (mode.blocks_destination(), &report.destination, &destination),
    ]
    .into_iter()
    .filter(|(needed, v, _)| *needed && v.facts.unreachable.is_none())
    .map(|(_, v, s)| (v, s))
    .collect();
    let lacking: Vec<String> = needed
        .iter()
        .filter(|(_, s)| s.write_blocking == Some(false))
        .map(|(v, _)| format!("{} ({})", v.facts.label, v.facts.hosts))
        .collect();
    if !lacking.is_empty() {
        let who = lacking.join(" and ");
        let does = if lacking.len() == 1 { "does" } else { "do" };
        risks.push(if explicit {
            risk(
                RiskKind::WriteBlocking,
                Severity::Blocking,
                format!(
                    "{who} {does} not support setUserWriteBlockMode, and enableUserWriteBlocking {} was asked for: /start will refuse; start with enableUserWriteBlocking \"none\" and stop application writes yourself",
                    mode.as_str()
                ),
            )
        } else {
            risk(
                RiskKind::WriteBlocking,
                Severity::Warning,
                format!(
                    "{who} {does} not support setUserWriteBlockMode, so the sync will run without write blocking: nothing stops applications writing to the source after /commit or to the destination before canWrite; stop writes to the source yourself before /commit, and keep them off the destination until canWrite"
                ),
            )
        });
    }

    // The probe.
    let method = match &scope_unknown {
        Some(why) => format!("Nothing was measured: {why}"),
        None => method(
            &probe,
            totals.data_bytes,
            copy_rate,
            index_rate,
            source.oplog_rate,
        ),
    };
    match &probe {
        // Nothing to measure where nothing is known.
        Err(ProbeError::Skipped(_)) if scope_unknown.is_some() => {}
        // A cluster that could not be examined is a risk of its own already.
        Err(e @ ProbeError::Skipped(_)) => risks.push(risk(
            RiskKind::Unreachable,
            Severity::Warning,
            format!(
                "the probe could not measure: {e}; the estimate assumes {}/s",
                human_bytes(assumed)
            ),
        )),
        // The copy reads and writes as the probe does: it would fail the same way.
        Err(e) => risks.push(risk(
            RiskKind::Unreachable,
            Severity::Blocking,
            format!("{e}; the sync's copy reads and writes the same way and would fail too: fix this first (the estimate assumes {}/s)", human_bytes(assumed)),
        )),
        Ok(m) => {
            if let Some(why) = &m.cleanup_failed {
                risks.push(risk(
                    RiskKind::Unreachable,
                    Severity::Warning,
                    format!(
                        "the probe's scratch database {} could not be dropped ({why}); drop it by hand: db.getSiblingDB(\"{}\").dropDatabase()",
                        m.scratch_db, m.scratch_db
                    ),
                ));
            }
        }
    }
    risks.sort_by_key(|r| r.severity);

    Plan {
        safe: !risks.iter().any(|r| r.severity == Severity::Blocking),
        source: summary(&report.source, &source, true),
        destination: summary(&report.destination, &destination, false),
        totals,
        namespaces: plans,
        estimate: Estimate {
            copy_seconds,
            index_build_seconds: index_seconds,
            catch_up_seconds,
            total_seconds,
            probe: Probe {
                source_read_bytes_per_second: read_rate.unwrap_or(0.0),
                destination_write_bytes_per_second: write_rate.unwrap_or(0.0),
                index_build_bytes_per_second: index_rate,
                source_oplog_bytes_per_second: oplog_rate,
                method,
            },
        },
        risks,
        scope_unknown,
    }
}

/// The probe's one sentence: what was read and written, how much, how long, and how the
/// estimate follows from it.
fn method(
    probe: &Result<Measured, ProbeError>,
    data_bytes: u64,
    copy_rate: Option<f64>,
    index_rate: Option<f64>,
    oplog: Option<super::gather::OplogRate>,
) -> String {
    let copy = match (probe, copy_rate) {
        (Ok(m), Some(rate)) => format!(
            "Read {} ({} documents) from {} in {} ({}/s) and wrote them to the scratch database {} on the destination with w:majority in {} ({}/s){}, then dropped it; copy time = {} of data / {}/s, the slower of the two",
            human_bytes(m.read_bytes as f64),
            m.documents,
            m.read_from.join(", "),
            human_seconds(m.read_seconds),
            human_bytes(m.read_bytes as f64 / m.read_seconds.max(1e-3)),
            m.scratch_db,
            human_seconds(m.write_seconds),
            human_bytes(m.written_bytes as f64 / m.write_seconds.max(1e-3)),
            if m.written_documents < m.documents {
                format!(" ({} of them before the time bound)", m.written_documents)
            } else {
                String::new()
            },
            human_bytes(data_bytes as f64),
            human_bytes(rate)
        ),
        _ if data_bytes == 0 => "The source holds no documents in scope, so nothing was read or written and the copy takes no time".to_string(),
        (Err(e), _) => format!(
            "No measurement ({e}); copy time = {} of data / an assumed {}/s",
            human_bytes(data_bytes as f64),
            human_bytes(checks::DEFAULT_COPY_RATE as f64)
        ),
        (Ok(_), None) => format!(
            "The probe read nothing it could time; copy time = {} of data / an assumed {}/s",
            human_bytes(data_bytes as f64),
            human_bytes(checks::DEFAULT_COPY_RATE as f64)
        ),
    };
    let index = match (probe.as_ref().ok().and_then(|m| m.index.as_ref()), index_rate) {
        (Some(i), Some(r)) => format!(
            "; index builds: each index over its collection's data at {}/s, measured by building {} over the {} copied in {}",
            human_bytes(r),
            i.keys,
            human_bytes(i.bytes as f64),
            human_seconds(i.seconds)
        ),
        _ => "; index builds: no index was timed, so each index is assumed to take as long as copying its collection".to_string(),
    };
    let catch_up = match oplog {
        Some(o) => format!(
            "; catch-up: the source's newest {} oplog entries ({} over {} s) give its write rate, applied at the destination's write rate",
            o.entries,
            human_bytes(o.bytes as f64),
            o.span_secs.max(1)
        ),
        None => "; catch-up: the source's oplog could not be read, so none is counted".to_string(),
    };
    format!("{copy}{index}{catch_up}.")
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;
    use crate::plan::gather::OplogRate;
    use crate::plan::probe::{IndexTiming, KindTrial};
    use crate::preflight::checks::{ClusterFacts, OplogWindow};
    use crate::preflight::roles::{SyncKind, UserRoles};

    use crate::preflight::checks::tests::facts as cluster;

    fn report(source: ClusterFacts, destination: ClusterFacts) -> Report {
        checks::judge(
            source,
            destination,
            checks::Intent {
                kind: SyncKind::Default,
                pre_existing_destination_data: false,
                copy_rate: checks::DEFAULT_COPY_RATE,
                measure: true,
            },
        )
    }

    fn ns(name: &str, kind: NamespaceKind, data: u64, indexes: Vec<Document>) -> NamespaceFacts {
        NamespaceFacts {
            db: "app".into(),
            name: name.into(),
            kind,
            options: doc! {},
            documents: data / 100,
            data_bytes: data,
            storage_bytes: data / 2,
            index_bytes: data / 10,
            indexes,
        }
    }

    /// 10 MB read in 1 s, written in 2 s; an index over 10 MB built in 0.5 s.
    fn measured() -> Measured {
        Measured {
            read_from: vec!["app.big".into()],
            documents: 100_000,
            read_bytes: 10_000_000,
            read_seconds: 1.0,
            written_documents: 100_000,
            written_bytes: 10_000_000,
            write_seconds: 2.0,
            index: Some(IndexTiming {
                keys: "{\"a\":1}".into(),
                seconds: 0.5,
                bytes: 10_000_000,
            }),
            kinds: vec![],
            scratch_db: "__clustersync_plan_probe_x".into(),
            cleanup_failed: None,
        }
    }

    fn facts(namespaces: Vec<NamespaceFacts>) -> Facts {
        Facts {
            report: report(cluster("cluster0", "a:1"), cluster("cluster1", "b:1")),
            source: SideFacts {
                write_blocking: Some(true),
                ..Default::default()
            },
            destination: SideFacts {
                write_blocking: Some(true),
                fs_total: Some(1 << 40),
                fs_used: Some(0),
                oplog_rate: None,
            },
            namespaces: Ok(namespaces),
            clashes: vec![],
            probe: Ok(measured()),
            intent: Intent {
                build_indexes: BuildIndexes::AfterDataCopy,
                pre_existing_destination_data: false,
                write_blocking: (Mode::SourceAndDestination, false),
            },
        }
    }

    fn idx(key: Document, extra: Document) -> Document {
        let mut d = doc! { "v": 2, "key": key.clone(), "name": key.keys().cloned().collect::<Vec<_>>().join("_") };
        d.extend(extra);
        d
    }

    #[test]
    fn each_index_is_built_as_the_engine_builds_it() {
        let none = BTreeMap::new();
        let b = |spec: Document, mode| index_plan(&spec, mode, &none).map(|p| p.build);
        let m = BuildIndexes::AfterDataCopy;
        assert_eq!(b(doc! { "key": { "_id": 1 }, "name": "_id_" }, m), None);
        assert_eq!(
            b(idx(doc! { "a": 1 }, doc! { "unique": true }), m),
            Some(IndexBuild::UniqueAtCommit)
        );
        assert_eq!(
            b(idx(doc! { "t": 1 }, doc! { "expireAfterSeconds": 60 }), m),
            Some(IndexBuild::TtlPausedUntilCommit)
        );
        assert_eq!(
            b(idx(doc! { "h": "hashed" }, doc! {}), m),
            Some(IndexBuild::Hashed)
        );
        assert_eq!(
            b(
                idx(doc! { "h": "hashed" }, doc! {}),
                BuildIndexes::ExcludeHashed
            ),
            Some(IndexBuild::Skipped)
        );
        assert_eq!(
            b(idx(doc! { "a": 1 }, doc! {}), BuildIndexes::Never),
            Some(IndexBuild::Skipped)
        );
        let p = index_plan(
            &idx(
                doc! { "a": 1, "b": -1 },
                doc! { "partialFilterExpression": { "a": { "$gt": 1 } } },
            ),
            m,
            &none,
        )
        .unwrap();
        assert_eq!(p.build, IndexBuild::AsDefined);
        assert_eq!(p.keys, r#"{"a":1,"b":-1}"#);
        assert!(p.note.unwrap().contains("partial"));
        let ttl = index_plan(
            &idx(doc! { "t": 1 }, doc! { "expireAfterSeconds": 60 }),
            m,
            &none,
        )
        .unwrap();
        assert!(
            ttl.note.as_deref().unwrap().contains("2147483647")
                && ttl
                    .note
                    .as_deref()
                    .unwrap()
                    .contains("expireAfterSeconds 60 restored"),
            "{ttl:?}"
        );
        let tried = BTreeMap::from([
            ("text".to_string(), Some("no text here".to_string())),
            ("2dsphere".to_string(), None),
        ]);
        let t = index_plan(&idx(doc! { "body": "text" }, doc! {}), m, &tried).unwrap();
        assert_eq!(t.build, IndexBuild::Unsupported);
        let geo = index_plan(&idx(doc! { "loc": "2dsphere" }, doc! {}), m, &tried).unwrap();
        assert_eq!(geo.build, IndexBuild::AsDefined);
        assert!(geo.note.unwrap().contains("the destination built one"));
        assert!(t.note.unwrap().contains("no text here"));
    }

    #[test]
    fn the_estimate_follows_the_slower_rate_and_an_empty_source_takes_no_time() {
        let plan = judge(facts(vec![ns(
            "big",
            NamespaceKind::Collection,
            100_000_000,
            vec![idx(doc! { "a": 1 }, doc! {})],
        )]));
        // 100 MB at min(10, 5) MB/s.
        assert!((plan.estimate.copy_seconds - 20.0).abs() < 1e-6, "{plan:?}");
        // One index over 100 MB at 20 MB/s.
        assert!((plan.estimate.index_build_seconds - 5.0).abs() < 1e-6);
        assert_eq!(plan.estimate.catch_up_seconds, 0.0);
        assert!(plan.estimate.probe.method.contains("w:majority"));
        assert!(plan.safe, "{:?}", plan.risks);

        let mut empty = facts(vec![]);
        empty.probe = Ok(Measured::default());
        let plan = judge(empty);
        assert_eq!(plan.estimate.total_seconds, 0.0);
        assert!(plan.estimate.total_seconds.is_finite());
        assert!(plan.estimate.probe.method.contains("no documents"));
        assert!(plan.safe);
        assert_eq!(plan.totals, Totals::default());
    }

    #[test]
    fn catch_up_follows_the_oplog_rate() {
        let mut f = facts(vec![ns(
            "big",
            NamespaceKind::Collection,
            100_000_000,
            vec![],
        )]);
        // 1 MB/s of oplog against 5 MB/s of writes: 20 s * 1 / (5 - 1).
        f.source.oplog_rate = Some(OplogRate {
            entries: 1000,
            bytes: 10_000_000,
            span_secs: 10,
        });
        let plan = judge(f.clone());
        assert!((plan.estimate.catch_up_seconds - 5.0).abs() < 1e-6);
        f.source.oplog_rate.as_mut().unwrap().bytes = 100_000_000;
        let plan = judge(f);
        assert!(plan
            .risks
            .iter()
            .any(|r| r.kind == RiskKind::OplogWindow && r.message.contains("never catch up")));
    }

    #[test]
    fn a_rolled_over_oplog_shorter_than_the_sync_blocks() {
        let mut f = facts(vec![ns(
            "big",
            NamespaceKind::Collection,
            100_000_000,
            vec![],
        )]);
        let mut s = cluster("cluster0", "a:1");
        s.oplog = Some(OplogWindow {
            first_secs: 1000,
            last_secs: 1010,
            rolled_over: true,
        });
        f.report = report(s.clone(), cluster("cluster1", "b:1"));
        let plan = judge(f.clone());
        assert!(!plan.safe);
        let r = plan.blocking().next().unwrap();
        assert_eq!(r.kind, RiskKind::OplogWindow);
        assert!(r.message.contains("replSetResizeOplog"), "{}", r.message);
        // Between once and twice the time needed: a warning.
        s.oplog.as_mut().unwrap().last_secs = 1030;
        f.report = report(s.clone(), cluster("cluster1", "b:1"));
        let plan = judge(f.clone());
        assert!(plan.safe);
        assert_eq!(plan.risks[0].kind, RiskKind::OplogWindow);
        assert_eq!(plan.risks[0].severity, Severity::Warning);
        // Not rolled over: its span is only the set's age.
        s.oplog = Some(OplogWindow {
            first_secs: 1000,
            last_secs: 1001,
            rolled_over: false,
        });
        f.report = report(s, cluster("cluster1", "b:1"));
        assert!(judge(f).risks.is_empty());
    }

    #[test]
    fn disk_space_short_close_and_unknown() {
        // 50 MB of data and 10 MB of indexes on disk: 75 MB needed with the margin.
        let mut f = facts(vec![ns(
            "big",
            NamespaceKind::Collection,
            100_000_000,
            vec![],
        )]);
        f.destination.fs_total = Some(100_000_000);
        f.destination.fs_used = Some(50_000_000);
        let plan = judge(f.clone());
        assert!(!plan.safe);
        assert_eq!(plan.risks[0].kind, RiskKind::DiskSpace);
        assert!(plan.risks[0]
            .message
            .contains("free space on the destination"));
        assert_eq!(plan.destination.free_bytes, Some(50_000_000));
        f.destination.fs_used = Some(10_000_000);
        let plan = judge(f.clone());
        assert!(plan.safe);
        assert_eq!(plan.risks[0].severity, Severity::Warning);
        assert!(plan.risks[0].message.contains("80%"));
        f.destination.fs_total = None;
        let plan = judge(f);
        assert!(plan.safe);
        assert!(
            plan.risks[0].message.contains("fsTotalSize"),
            "{:?}",
            plan.risks
        );
    }

    #[test]
    fn write_blocking_roles_unsupported_kinds_and_preflight_problems() {
        let mut f = facts(vec![ns(
            "docs",
            NamespaceKind::Collection,
            1000,
            vec![idx(doc! { "body": "text" }, doc! {})],
        )]);
        f.destination.write_blocking = Some(false);
        if let Ok(m) = f.probe.as_mut() {
            m.kinds.push(KindTrial {
                kind: "text".into(),
                refused: Some("text indexes are not supported".into()),
            });
        }
        let mut d = cluster("cluster1", "b:1");
        d.user = Some(UserRoles {
            user: Some("syncer".into()),
            user_db: Some("admin".into()),
            roles: vec!["read".into()],
            actions: vec![],
        });
        f.report = report(cluster("cluster0", "a:1"), d);
        let plan = judge(f.clone());
        let kinds: Vec<(RiskKind, Severity)> =
            plan.risks.iter().map(|r| (r.kind, r.severity)).collect();
        assert!(
            kinds.contains(&(RiskKind::Roles, Severity::Blocking)),
            "{kinds:?}"
        );
        assert!(kinds.contains(&(RiskKind::Unsupported, Severity::Blocking)));
        assert!(kinds.contains(&(RiskKind::WriteBlocking, Severity::Warning)));
        assert!(plan
            .risks
            .iter()
            .any(|r| r.message.contains("grantRolesToUser(\"syncer\"")));
        assert_eq!(plan.namespaces[0].indexes[0].build, IndexBuild::Unsupported);
        // Asked for explicitly, write blocking the destination lacks blocks.
        f.intent.write_blocking = (Mode::DestinationOnly, true);
        let plan = judge(f);
        assert!(plan
            .blocking()
            .any(|r| r.kind == RiskKind::WriteBlocking && r.message.contains("\"none\"")));
    }

    #[test]
    fn notes_name_the_options_that_need_care() {
        let mut c = ns("capped", NamespaceKind::Capped, 10, vec![]);
        c.options = doc! { "capped": true, "size": 4096, "max": 10, "validator": { "a": { "$type": "int" } }, "collation": { "locale": "fr" } };
        let n = notes(&c).join("\n");
        for want in [
            "size 4096",
            "max 10",
            "validator",
            "bypasses",
            "\"locale\":\"fr\"",
        ] {
            assert!(n.contains(want), "{want} in {n}");
        }
        let mut v = ns("v", NamespaceKind::View, 0, vec![]);
        v.options = doc! { "viewOn": "capped", "pipeline": [{ "$match": { "a": 1 } }] };
        assert!(notes(&v)[0].contains("view on capped with pipeline [{\"$match\""));
    }
}
