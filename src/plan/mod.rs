//! `clustersync plan`: what a sync between two clusters would carry, how long it should take
//! and what may go wrong, before anything starts. Read-only for user data: its one write is a
//! short probe into a scratch database on the destination, dropped again ([`probe`]).
//!
//! [`gather`] talks to the servers, [`probe`] measures, [`judge`] turns the facts into the
//! contract's [`Plan`] without a server. The CLI prints it (`clustersync plan`), the engine
//! serves it (`POST /api/v1/plan`), from the same [`run`]. The checks shared with `/start`
//! (versions, topology, roles, an empty destination, disk space) are the preflight's, so a
//! plan and a `/start` never disagree on them.

pub mod gather;
pub mod judge;
pub mod probe;

use mongodb::Client;

use crate::contract::filter::Scope;
use crate::contract::options::{InvalidStart, StartOptions};
use crate::contract::plan::{NamespaceKind, Plan};
use crate::mongo::catalog;
use crate::preflight::{self, checks, SyncKind};

/// Collections the probe reads from at most, largest first.
pub const PROBE_COLLECTIONS: usize = 4;

/// One cluster: its client, the label it is reported under, its hosts (never the connection
/// string).
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The client.
    pub client: &'a Client,
    /// `cluster0` or `cluster1`.
    pub label: &'a str,
    /// The hosts, safe to show.
    pub hosts: &'a str,
}

/// What to plan.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// The namespaces in scope.
    pub scope: Scope,
    /// The roles the sync needs follow from it.
    pub kind: SyncKind,
    /// The rest of what the judgement needs.
    pub intent: judge::Intent,
    /// The probe's scratch database: known before the run, so that a caller that abandons it
    /// can drop it ([`probe::drop_scratch`]).
    pub scratch_db: String,
    /// How much the probe may read.
    pub budget: probe::Budget,
}

impl PlanOptions {
    /// The plan of a sync `/start` would run with `options` (validated as `/start` does).
    pub fn from_start(options: &StartOptions) -> Result<Self, InvalidStart> {
        let scope = options.validate()?;
        Ok(Self {
            scope,
            kind: preflight::kind_for(options),
            intent: judge::Intent {
                build_indexes: options.build_indexes,
                pre_existing_destination_data: options.pre_existing_destination_data,
                write_blocking: options.write_blocking(),
            },
            scratch_db: probe::scratch_name(),
            budget: probe::Budget::default(),
        })
    }
}

/// Plans a sync from `source` to `destination`. Never fails: what cannot be learnt becomes a
/// risk. `scrub` takes connection strings out of server messages; `progress` hears a short
/// line now and then (the CLI shows it on a terminal).
#[tracing::instrument(skip_all, fields(source = source.label, destination = destination.label))]
pub async fn run(
    source: Side<'_>,
    destination: Side<'_>,
    options: &PlanOptions,
    scrub: &(dyn Fn(&str) -> String + Sync),
    progress: &(dyn Fn(&str) + Sync),
) -> Plan {
    progress("examining the clusters");
    let (s, d) = tokio::join!(
        checks::gather(source.client, source.label, source.hosts, scrub, true),
        checks::gather(
            destination.client,
            destination.label,
            destination.hosts,
            scrub,
            true
        ),
    );
    let report = checks::judge(
        s,
        d,
        checks::Intent {
            kind: options.kind,
            pre_existing_destination_data: options.intent.pre_existing_destination_data,
            copy_rate: checks::DEFAULT_COPY_RATE,
            measure: true,
        },
    );
    let source_seen = report.source.facts.unreachable.is_none();
    let destination_seen = report.destination.facts.unreachable.is_none();
    let describe = |e: mongodb::error::Error| scrub(&crate::mongo::describe(&e));
    let (source_facts, destination_facts, namespaces, clashes) = tokio::join!(
        async {
            if source_seen {
                gather::side(source.client, true).await
            } else {
                gather::SideFacts::default()
            }
        },
        async {
            if destination_seen {
                gather::side(destination.client, false).await
            } else {
                gather::SideFacts::default()
            }
        },
        async {
            if source_seen {
                gather::namespaces(source.client, &options.scope, progress)
                    .await
                    .map_err(describe)
            } else {
                Err("the source could not be examined (see the risks)".to_string())
            }
        },
        async {
            if destination_seen && options.intent.pre_existing_destination_data {
                gather::clashes(destination.client, &options.scope)
                    .await
                    .unwrap_or_default()
            } else {
                vec![]
            }
        },
    );
    // The probe writes to the destination: never when the destination is the source.
    let same_cluster = report
        .problems_of(crate::contract::preflight::ProblemKind::SameCluster)
        .next()
        .is_some();
    let probe = match (&namespaces, source_seen && destination_seen) {
        _ if same_cluster => Err(probe::ProbeError::Skipped(
            "source and destination are the same cluster, and the probe writes to the destination"
                .into(),
        )),
        (Ok(n), true) => {
            let targets = probe_targets(n, options.intent.build_indexes);
            probe::run(
                source.client,
                destination.client,
                &targets,
                &options.scratch_db,
                options.budget,
                scrub,
                progress,
            )
            .await
        }
        (Err(why), _) => Err(probe::ProbeError::Skipped(why.clone())),
        _ => Err(probe::ProbeError::Skipped(
            "a cluster could not be examined".into(),
        )),
    };
    judge::judge(judge::Facts {
        report,
        source: source_facts,
        destination: destination_facts,
        namespaces,
        clashes,
        probe,
        intent: options.intent,
    })
}

/// What the probe reads (the largest collections holding documents, each with the sync form
/// of an ordinary index of its to time) and which special index kinds it tries (one index of
/// each kind the namespaces in scope use, in the form the sync would build it).
pub fn probe_targets(
    namespaces: &[gather::NamespaceFacts],
    mode: crate::contract::options::BuildIndexes,
) -> probe::Targets {
    let mut by_size: Vec<&gather::NamespaceFacts> = namespaces
        .iter()
        .filter(|n| n.kind != NamespaceKind::View && n.documents > 0)
        .collect();
    by_size.sort_by_key(|n| std::cmp::Reverse(n.data_bytes));
    let candidates = by_size
        .iter()
        .take(PROBE_COLLECTIONS)
        .map(|n| probe::Candidate {
            db: n.db.clone(),
            name: n.name.clone(),
            index: n
                .indexes
                .iter()
                .filter(|s| probe::special_kind(s).is_none())
                .find_map(|s| catalog::sync_form(s, mode)),
        })
        .collect();
    let mut kinds: Vec<(String, bson::Document)> = Vec::new();
    for n in namespaces.iter().filter(|n| n.kind != NamespaceKind::View) {
        for spec in &n.indexes {
            if let (Some(kind), Some(form)) =
                (probe::special_kind(spec), catalog::sync_form(spec, mode))
            {
                if !kinds.iter().any(|(k, _)| k == kind) {
                    kinds.push((kind.to_string(), form));
                }
            }
        }
    }
    probe::Targets { candidates, kinds }
}
