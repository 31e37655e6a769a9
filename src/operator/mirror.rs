//! The engine's `/progress` mirrored into a ClusterSync's status.

use crate::contract::progress::Progress;

use super::crd::{ClusterSyncStatus, VerificationStatus};

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
}
