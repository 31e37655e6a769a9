//! The engine's `/progress` mirrored into a ClusterSync's status.

use serde_json::Value;

use super::crd::{ClusterSyncStatus, VerificationStatus};

/// Copies what `/progress` reports into `status`, leaving the controller's own fields
/// (conditions, workload names, observed generation) alone.
pub fn apply_progress(status: &mut ClusterSyncStatus, progress: &Value) {
    let p = progress.get("progress").unwrap_or(progress);
    status.state = p["state"].as_str().map(String::from);
    status.can_commit = p["canCommit"].as_bool().unwrap_or(false);
    status.can_write = p["canWrite"].as_bool().unwrap_or(false);
    status.info = p["info"].as_str().map(String::from);
    status.lag_seconds = p["lag"]["overallLagSeconds"].as_i64();
    let copied = p["collectionCopy"]["estimatedCopiedBytes"].as_i64();
    let total = p["collectionCopy"]["estimatedTotalBytes"].as_i64();
    status.copied_bytes = copied;
    status.total_bytes = total;
    status.copied_percent = match (copied, total) {
        (Some(c), Some(t)) if t > 0 => {
            Some(format!("{}%", (c.saturating_mul(100) / t).clamp(0, 100)))
        }
        _ => None,
    };
    let v = &p["verification"];
    status.verification = v.is_object().then(|| VerificationStatus {
        phase: v["source"]["phase"].as_str().map(String::from),
        scanned_collections: v["source"]["scannedCollectionCount"].as_i64().unwrap_or(0),
        total_collections: v["source"]["totalCollectionCount"].as_i64().unwrap_or(0),
        mismatch_count: v["mismatchCount"].as_i64().unwrap_or(0),
        mismatches: v["mismatches"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        verified: v["verified"].as_bool().unwrap_or(false),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn running_progress_fills_the_printer_columns() {
        let mut s = ClusterSyncStatus::default();
        apply_progress(
            &mut s,
            &json!({"progress": {"state": "RUNNING", "canCommit": false, "canWrite": false, "info": "collection copy",
                "lag": null, "collectionCopy": {"estimatedTotalBytes": 2000, "estimatedCopiedBytes": 500}}, "success": true}),
        );
        assert_eq!(s.state.as_deref(), Some("RUNNING"));
        assert_eq!(s.copied_percent.as_deref(), Some("25%"));
        assert_eq!(s.lag_seconds, None);
        apply_progress(
            &mut s,
            &json!({"progress": {"state": "RUNNING", "canCommit": true, "canWrite": false, "info": "change event application",
                "lag": {"overallLagSeconds": 3}, "collectionCopy": {"estimatedTotalBytes": 2000, "estimatedCopiedBytes": 2000}}}),
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
            &json!({"progress": {"state": "RUNNING", "verification": {
                "source": {"phase": "stream hashing", "scannedCollectionCount": 4, "totalCollectionCount": 4},
                "destination": {"phase": "stream hashing"},
                "mismatchCount": 1, "mismatches": ["a.b: _id 1 missing on destination"]}}}),
        );
        let v = s.verification.clone().unwrap();
        assert_eq!(v.phase.as_deref(), Some("stream hashing"));
        assert_eq!((v.scanned_collections, v.total_collections), (4, 4));
        assert_eq!(v.mismatch_count, 1);
        assert_eq!(v.mismatches, ["a.b: _id 1 missing on destination"]);
        assert!(!v.verified);
        apply_progress(&mut s, &json!({"progress": {"state": "RUNNING"}}));
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
            &json!({"progress": {"state": "IDLE", "canCommit": false, "canWrite": null, "lag": null, "collectionCopy": null}}),
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
