//! The engine's `/progress` mirrored into a ClusterSync's status.

use crate::contract::progress::{short_duration, CollectionCopy, NamespacePhase, Progress};

use super::crd::{ClusterSyncStatus, CollectionStatus, NamespaceCounts, VerificationStatus};

/// At most this many namespaces are kept in `status.slowestCollections`: the status is read on
/// every `kubectl get`, and is no place for thousands of rows.
pub const SLOWEST: usize = 10;

/// Copies what `/progress` reports into `status`, leaving the controller's own fields
/// (conditions, workload names, observed generation) alone.
pub fn apply_progress(status: &mut ClusterSyncStatus, p: &Progress) {
    status.state = Some(p.state.as_str().to_string());
    status.can_commit = p.can_commit;
    status.can_write = p.can_write.unwrap_or(false);
    status.info = p.info.clone();
    status.commit_blocker = p.commit_blocker.clone();
    status.lag_seconds = p.overall_lag_seconds();
    status.copied_bytes = p.collection_copy.map(|c| c.estimated_copied_bytes);
    status.total_bytes = p.collection_copy.map(|c| c.estimated_total_bytes);
    status.copied_percent = p.collection_copy.and_then(|c| c.percent());
    // The ETA of the stage the sync is in: the copy while it runs, then catching up.
    status.eta_seconds = p
        .estimated_seconds_to_copy_complete
        .or(p.estimated_seconds_to_cea_catchup);
    status.eta = status.eta_seconds.map(short_duration);
    status.namespace_counts = p.namespaces.as_ref().map(|n| NamespaceCounts {
        waiting: n.counts.waiting as i64,
        copying: n.counts.copying as i64,
        building_indexes: n.counts.building_indexes as i64,
        done: n.counts.done as i64,
        recopying: n.counts.recopying as i64,
    });
    // The engine lists the namespaces with the most left to do first; those done are of no
    // interest once the copy is over.
    status.slowest_collections = p
        .namespaces
        .iter()
        .flat_map(|n| &n.collections)
        .filter(|c| c.phase != NamespacePhase::Done)
        .take(SLOWEST)
        .map(|c| CollectionStatus {
            namespace: c.namespace.clone(),
            phase: c.phase.as_str().to_string(),
            copied_bytes: c.copied_bytes,
            total_bytes: c.total_bytes,
            copied_percent: CollectionCopy {
                estimated_total_bytes: c.total_bytes,
                estimated_copied_bytes: c.copied_bytes,
            }
            .percent(),
            eta_seconds: c.estimated_seconds_remaining,
        })
        .collect();
    status.verification = p.verification.as_ref().map(|v| VerificationStatus {
        phase: Some(v.source.phase.as_str().to_string()),
        scanned_collections: v.source.scanned_collection_count as i64,
        total_collections: v.source.total_collection_count as i64,
        mismatch_count: v.mismatch_count.unwrap_or(0) as i64,
        mismatches: v.mismatches.clone(),
        verified: v.verified,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::progress::ProgressReply;
    use serde_json::json;

    /// A reply as the engine sends it, through the contract's parser.
    fn parsed(v: serde_json::Value) -> Progress {
        serde_json::from_value::<ProgressReply>(v).unwrap().progress
    }

    #[test]
    fn running_progress_fills_the_printer_columns() {
        let mut s = ClusterSyncStatus::default();
        apply_progress(
            &mut s,
            &parsed(
                json!({"progress": {"state": "RUNNING", "canCommit": false, "canWrite": false, "info": "collection copy",
                "lag": null, "collectionCopy": {"estimatedTotalBytes": 2000, "estimatedCopiedBytes": 500}}, "success": true}),
            ),
        );
        assert_eq!(s.state.as_deref(), Some("RUNNING"));
        assert_eq!(s.copied_percent.as_deref(), Some("25%"));
        assert_eq!(s.lag_seconds, None);
        apply_progress(
            &mut s,
            &parsed(
                json!({"progress": {"state": "RUNNING", "canCommit": true, "canWrite": false, "info": "change event application",
                "lag": {"overallLagSeconds": 3}, "collectionCopy": {"estimatedTotalBytes": 2000, "estimatedCopiedBytes": 2000}}}),
            ),
        );
        assert!(s.can_commit);
        assert_eq!(
            (s.lag_seconds, s.copied_percent.as_deref()),
            (Some(3), Some("100%"))
        );
    }

    #[test]
    fn verification_is_mirrored_and_vanishes_when_off() {
        let mut s = ClusterSyncStatus::default();
        apply_progress(
            &mut s,
            &parsed(json!({"progress": {"state": "RUNNING", "verification": {
                "source": {"phase": "stream hashing", "scannedCollectionCount": 4, "totalCollectionCount": 4},
                "destination": {"phase": "stream hashing"},
                "mismatchCount": 1, "mismatches": ["a.b: _id 1 missing on destination"]}}})),
        );
        let v = s.verification.clone().unwrap();
        assert_eq!(v.phase.as_deref(), Some("stream hashing"));
        assert_eq!((v.scanned_collections, v.total_collections), (4, 4));
        assert_eq!(v.mismatch_count, 1);
        assert_eq!(v.mismatches, ["a.b: _id 1 missing on destination"]);
        assert!(!v.verified);
        apply_progress(&mut s, &parsed(json!({"progress": {"state": "RUNNING"}})));
        assert_eq!(s.verification, None);
    }

    #[test]
    fn idle_progress_clears_the_numbers() {
        let mut s = ClusterSyncStatus {
            copied_percent: Some("10%".into()),
            lag_seconds: Some(4),
            ..Default::default()
        };
        s.observed_generation = Some(7);
        apply_progress(
            &mut s,
            &parsed(
                json!({"progress": {"state": "IDLE", "canCommit": false, "canWrite": null, "lag": null, "collectionCopy": null}}),
            ),
        );
        assert_eq!(s.state.as_deref(), Some("IDLE"));
        assert_eq!((s.lag_seconds, s.copied_percent.clone()), (None, None));
        assert_eq!(
            s.observed_generation,
            Some(7),
            "the controller's own fields stay"
        );
    }

    #[test]
    fn the_eta_and_the_slowest_collections_are_mirrored() {
        let mut s = ClusterSyncStatus::default();
        let mut listed: Vec<serde_json::Value> = (0..15)
            .map(|i| json!({"namespace": format!("app.c{i:02}"), "phase": "copying", "copiedDocuments": 1,
                "copiedBytes": 100, "totalBytes": 400, "estimatedSecondsRemaining": 100 - i}))
            .collect();
        listed.push(
            json!({"namespace": "app.done", "phase": "done", "copiedDocuments": 4,
            "copiedBytes": 400, "totalBytes": 400}),
        );
        apply_progress(
            &mut s,
            &parsed(
                json!({"progress": {"state": "RUNNING", "canCommit": false, "info": "collection copy",
                "collectionCopy": {"estimatedTotalBytes": 6400, "estimatedCopiedBytes": 1900},
                "estimatedSecondsToCopyComplete": 250,
                "namespaces": {"counts": {"waiting": 0, "copying": 15, "buildingIndexes": 0, "done": 1, "recopying": 0},
                    "copyBytesPerSecond": 20.0, "collections": listed, "omitted": 0}}}),
            ),
        );
        assert_eq!(s.eta_seconds, Some(250));
        assert_eq!(s.eta.as_deref(), Some("4m10s"));
        assert_eq!(s.namespace_counts.as_ref().unwrap().copying, 15);
        assert_eq!(s.slowest_collections.len(), SLOWEST);
        assert_eq!(s.slowest_collections[0].namespace, "app.c00");
        assert_eq!(
            s.slowest_collections[0].copied_percent.as_deref(),
            Some("25%")
        );
        assert!(s.slowest_collections.iter().all(|c| c.phase == "copying"));
        // Catching up: the catch-up estimate; the copy's namespaces are all done.
        apply_progress(
            &mut s,
            &parsed(
                json!({"progress": {"state": "RUNNING", "canCommit": false, "info": "change event application",
                "estimatedSecondsToCEACatchup": 42,
                "namespaces": {"counts": {"waiting": 0, "copying": 0, "buildingIndexes": 0, "done": 16, "recopying": 0},
                    "collections": [], "omitted": 0}}}),
            ),
        );
        assert_eq!(s.eta.as_deref(), Some("42s"));
        assert!(s.slowest_collections.is_empty());
    }
}
