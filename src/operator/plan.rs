//! The engine's plan (`POST /api/v1/plan`), summarized into `status.plan` while a ClusterSync
//! is Idle: a user reads what the sync will move, how long it should take and what may go
//! wrong with `kubectl get -o yaml`, `kubectl describe` or `kubectl clustersync plan` before
//! setting `spec.mode: Running`. Pure: the controller asks the engine and writes the status.

use std::time::Duration;

use crate::contract::plan::{Plan, Severity};
use crate::contract::progress::{human_bytes, short_duration};

use super::crd::PlanStatus;

/// A plan is made again after this long while the sync stays Idle: the source's data, its
/// oplog window and the destination's free space move on.
pub const REFRESH: Duration = Duration::from_secs(15 * 60);

/// At most this many namespaces are named in `status.plan.largestNamespaces`.
pub const LARGEST: usize = 10;

/// Whether a plan should be made now: the sync is Idle (spec and engine), and there is none
/// for this generation, or it is older than [`REFRESH`].
pub fn wanted(
    idle: bool,
    current: Option<&PlanStatus>,
    generation: Option<i64>,
    age: Option<Duration>,
) -> bool {
    if !idle {
        return false;
    }
    match current {
        None => true,
        Some(p) => p.for_generation != generation || age.is_none_or(|a| a >= REFRESH),
    }
}

/// The status summary of `plan`, made for `generation` at `planned_at` (RFC 3339).
pub fn summarize(plan: &Plan, generation: Option<i64>, planned_at: String) -> PlanStatus {
    let e = &plan.estimate;
    let secs = |s: f64| s.max(0.0).ceil() as i64;
    let mut largest: Vec<_> = plan.namespaces.iter().collect();
    largest.sort_by(|a, b| {
        b.data_bytes
            .cmp(&a.data_bytes)
            .then(a.namespace.cmp(&b.namespace))
    });
    PlanStatus {
        safe: plan.safe,
        databases: plan.totals.databases as i64,
        collections: plan.totals.collections as i64,
        views: plan.totals.views as i64,
        documents: plan.totals.documents as i64,
        data_bytes: plan.totals.data_bytes as i64,
        index_bytes: plan.totals.index_bytes as i64,
        indexes: plan.totals.indexes as i64,
        estimated_seconds: secs(e.total_seconds),
        estimate: Some(match &plan.scope_unknown {
            Some(why) => format!("unknown: {why}"),
            None => format!(
                "{} (copy {}, indexes {}, catch-up {})",
                short_duration(secs(e.total_seconds)),
                short_duration(secs(e.copy_seconds)),
                short_duration(secs(e.index_build_seconds)),
                short_duration(secs(e.catch_up_seconds)),
            ),
        }),
        probe: Some(e.probe.method.clone()),
        risks: plan
            .risks
            .iter()
            .map(|r| {
                let level = match r.severity {
                    Severity::Blocking => "blocking",
                    Severity::Warning => "warning",
                };
                format!("{level}: {}", r.message)
            })
            .collect(),
        largest_namespaces: largest
            .into_iter()
            .take(LARGEST)
            .map(|n| {
                format!(
                    "{}: {} documents, {}",
                    n.namespace,
                    n.documents,
                    human_bytes(n.data_bytes as i64)
                )
            })
            .collect(),
        for_generation: generation,
        planned_at: Some(planned_at),
    }
}

/// The PlanSafe condition: status, reason and message.
pub fn condition(plan: &Plan) -> (bool, &'static str, String) {
    let blocking: Vec<&str> = plan.blocking().map(|r| r.message.as_str()).collect();
    if blocking.is_empty() {
        let warnings = plan.risks.len();
        (
            true,
            "NoBlockingRisk",
            format!(
                "the plan found nothing that blocks the sync ({} warning{}); estimated {} to become committable",
                warnings,
                if warnings == 1 { "" } else { "s" },
                short_duration(plan.estimate.total_seconds.max(0.0).ceil() as i64)
            ),
        )
    } else {
        (false, "BlockingRisk", blocking.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::plan::*;

    fn plan(risks: Vec<Risk>) -> Plan {
        let ns = |name: &str, bytes: u64| NamespacePlan {
            namespace: name.into(),
            kind: NamespaceKind::Collection,
            documents: bytes / 100,
            data_bytes: bytes,
            storage_bytes: bytes / 2,
            index_bytes: 0,
            indexes: vec![],
            notes: vec![],
            estimated_copy_seconds: None,
        };
        Plan {
            safe: !risks.iter().any(|r| r.severity == Severity::Blocking),
            source: ClusterSummary::default(),
            destination: ClusterSummary::default(),
            totals: Totals {
                databases: 1,
                collections: 12,
                documents: 3,
                data_bytes: 3 << 20,
                ..Totals::default()
            },
            namespaces: (0..12)
                .map(|i| ns(&format!("app.c{i:02}"), (i + 1) * 1000))
                .collect(),
            estimate: Estimate {
                copy_seconds: 540.2,
                index_build_seconds: 120.0,
                catch_up_seconds: 60.0,
                total_seconds: 720.2,
                probe: Probe {
                    source_read_bytes_per_second: 1e6,
                    destination_write_bytes_per_second: 5e5,
                    index_build_bytes_per_second: None,
                    source_oplog_bytes_per_second: None,
                    method: "read 4 MiB".into(),
                },
            },
            risks,
            scope_unknown: None,
        }
    }

    #[test]
    fn a_plan_is_made_while_idle_once_per_generation_and_refreshed() {
        let p = PlanStatus {
            for_generation: Some(3),
            ..PlanStatus::default()
        };
        let fresh = Some(Duration::from_secs(60));
        assert!(wanted(true, None, Some(3), None));
        assert!(!wanted(false, None, Some(3), None), "only while Idle");
        assert!(!wanted(true, Some(&p), Some(3), fresh));
        assert!(wanted(true, Some(&p), Some(4), fresh), "the spec changed");
        assert!(wanted(true, Some(&p), Some(3), Some(REFRESH)), "stale");
        assert!(
            wanted(true, Some(&p), Some(3), None),
            "made by another operator process: its age is not known here"
        );
    }

    #[test]
    fn the_summary_names_the_estimate_the_risks_and_the_largest_namespaces() {
        let p = plan(vec![
            Risk {
                kind: RiskKind::OplogWindow,
                severity: Severity::Blocking,
                message: "the oplog is too short; enlarge it".into(),
            },
            Risk {
                kind: RiskKind::WriteBlocking,
                severity: Severity::Warning,
                message: "no write blocking".into(),
            },
        ]);
        let s = summarize(&p, Some(2), "2026-12-03T00:00:00Z".into());
        assert!(!s.safe);
        assert_eq!(s.estimated_seconds, 721);
        assert_eq!(
            s.estimate.as_deref(),
            Some("12m1s (copy 9m1s, indexes 2m, catch-up 1m)")
        );
        assert_eq!(
            s.risks,
            [
                "blocking: the oplog is too short; enlarge it",
                "warning: no write blocking"
            ]
        );
        assert_eq!(s.largest_namespaces.len(), LARGEST);
        assert!(s.largest_namespaces[0].starts_with("app.c11: 120 documents, 11.7 KiB"));
        assert_eq!(s.for_generation, Some(2));
        let (ok, reason, message) = condition(&p);
        assert!(!ok);
        assert_eq!(reason, "BlockingRisk");
        assert!(message.contains("enlarge it") && !message.contains("write blocking"));
        let (ok, _, message) = condition(&plan(vec![]));
        assert!(ok);
        assert!(
            message.contains("0 warnings") && message.contains("12m1s"),
            "{message}"
        );
    }
}
