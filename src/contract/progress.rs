//! The `GET /api/v1/progress` document, typed: the engine serializes it, the operator (and any
//! client) deserializes it. Field names and the null rules are mongosync's; the fields mongosync
//! does not have (`syncError`, `verification.mismatches`, `verified`) are marked.
//!
//! In IDLE and INITIALIZING every field but `state` and `canCommit` is null; in PAUSED `lag` and
//! `lagTimeSeconds` are null. Optional sections (`ceaStage`, `indexBuilding`, `verification`,
//! `estimatedOplogTimeRemaining`, `warnings`) are absent rather than null when they do not
//! apply, as in mongosync.

use serde::{Deserialize, Serialize};

use super::state::State;

/// `info` while the collections are copied (and their indexes built).
pub const INFO_COLLECTION_COPY: &str = "collection copy";
/// `info` while change events are applied.
pub const INFO_CHANGE_EVENTS: &str = "change event application";
/// `info` while a commit finishes.
pub const INFO_COMMITTING: &str = "waiting for commit to complete";
/// `info` once committed.
pub const INFO_COMMITTED: &str = "commit completed";

/// The whole reply: `{"progress": {...}, "success": true}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressReply {
    /// What the engine reports.
    pub progress: Progress,
    /// Always true for a progress reply.
    #[serde(default)]
    pub success: bool,
}

/// mongosync's `progress` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The engine's state.
    pub state: State,
    /// Not in mongosync (which exits instead): the sync stopped for good, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_error: Option<String>,
    /// Whether `/commit` would be accepted now.
    #[serde(default)]
    pub can_commit: bool,
    /// Not in mongosync: while RUNNING and `canCommit` is false, why (the copy, the index
    /// builds, the lag, the embedded verifier's initial pass), so that a wait is explained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_blocker: Option<String>,
    /// Whether applications may write to the destination.
    #[serde(default)]
    pub can_write: Option<bool>,
    /// What the engine is doing (see the `INFO_*` constants).
    #[serde(default)]
    pub info: Option<String>,
    /// During change event application: draining what the copy left, or steady state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cea_stage: Option<CeaStage>,
    /// How far the destination is behind the source.
    #[serde(default)]
    pub lag: Option<Lag>,
    /// The overall lag, in seconds (mongosync's older field).
    #[serde(default)]
    pub lag_time_seconds: Option<i64>,
    /// Change events applied so far.
    #[serde(default)]
    pub total_events_applied: Option<u64>,
    /// The copy's byte estimates.
    #[serde(default)]
    pub collection_copy: Option<CollectionCopy>,
    /// During change event application, while the lag falls: seconds until it is caught up
    /// at the rate it has been falling.
    #[serde(
        default,
        rename = "estimatedSecondsToCEACatchup",
        skip_serializing_if = "Option::is_none"
    )]
    pub estimated_seconds_to_cea_catchup: Option<i64>,
    /// Not in mongosync: during the collection copy, seconds until it is done at the rate
    /// measured over the last minute; absent until that rate has enough signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds_to_copy_complete: Option<i64>,
    /// Not in mongosync: where each namespace is (see [`Namespaces`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<Namespaces>,
    /// Index builds after the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_building: Option<IndexBuilding>,
    /// Which cluster is the source and which the destination.
    #[serde(default)]
    pub direction_mapping: Option<DirectionMapping>,
    /// The source's round-trip time, when measured.
    #[serde(default)]
    pub source: Option<Ping>,
    /// The destination's round-trip time, when measured.
    #[serde(default)]
    pub destination: Option<Ping>,
    /// The embedded verifier, absent when verification is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// This engine's id.
    #[serde(default, rename = "mongosyncID")]
    pub mongosync_id: Option<String>,
    /// The coordinating engine's id (this one: there is one engine per sync).
    #[serde(default, rename = "coordinatorID")]
    pub coordinator_id: Option<String>,
    /// While RUNNING and before `canWrite`: how long the source's oplog still covers the sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_oplog_time_remaining: Option<String>,
    /// Conditions that do not stop the sync but need attention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Progress {
    /// The IDLE/INITIALIZING form: every field null but `state` and `canCommit`.
    pub fn nulls(state: State, can_commit: bool) -> Progress {
        Progress {
            state,
            sync_error: None,
            can_commit,
            commit_blocker: None,
            can_write: None,
            info: None,
            cea_stage: None,
            lag: None,
            lag_time_seconds: None,
            total_events_applied: None,
            estimated_seconds_to_cea_catchup: None,
            estimated_seconds_to_copy_complete: None,
            namespaces: None,
            collection_copy: None,
            index_building: None,
            direction_mapping: None,
            source: None,
            destination: None,
            verification: None,
            mongosync_id: None,
            coordinator_id: None,
            estimated_oplog_time_remaining: None,
            warnings: Vec::new(),
        }
    }

    /// The overall lag in seconds, when known.
    pub fn overall_lag_seconds(&self) -> Option<i64> {
        self.lag.as_ref().and_then(|l| l.overall_lag_seconds)
    }
}

/// `ceaStage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CeaStage {
    /// Applying the events that arrived during the copy.
    #[serde(rename = "collection copy drain")]
    CollectionCopyDrain,
    /// Caught up with the copy; applying new events as they come.
    #[serde(rename = "steady state")]
    SteadyState,
}

/// `lag`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lag {
    /// Seconds between the source's latest write and the newest change applied.
    #[serde(default)]
    pub overall_lag_seconds: Option<i64>,
    /// The same for document changes, once one was applied.
    #[serde(default)]
    pub crud_lag_seconds: Option<i64>,
    /// The same for DDL, once one was applied.
    #[serde(default)]
    pub ddl_lag_seconds: Option<i64>,
}

/// `collectionCopy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionCopy {
    /// Bytes the copy expects to copy in all.
    pub estimated_total_bytes: i64,
    /// Bytes copied so far.
    pub estimated_copied_bytes: i64,
}

impl CollectionCopy {
    /// "NN%", when the total is known.
    pub fn percent(&self) -> Option<String> {
        (self.estimated_total_bytes > 0).then(|| {
            format!(
                "{}%",
                (self.estimated_copied_bytes.saturating_mul(100) / self.estimated_total_bytes)
                    .clamp(0, 100)
            )
        })
    }
}

/// Not in mongosync: `namespaces`, the copy per namespace. `collections` lists at most
/// [`Namespaces::LISTED`] namespaces, those with the most left to do first (copying, then
/// waiting, building indexes, re-copying; done ones only while there is room); `counts` covers
/// them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespaces {
    /// How many namespaces are in each phase.
    pub counts: PhaseCounts,
    /// The copy's rate over the last minute, in bytes per second, once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_bytes_per_second: Option<f64>,
    /// The namespaces, most left to do first.
    #[serde(default)]
    pub collections: Vec<NamespaceProgress>,
    /// Namespaces left out of `collections`.
    #[serde(default)]
    pub omitted: u64,
}

impl Namespaces {
    /// At most this many namespaces are listed.
    pub const LISTED: usize = 100;
}

/// How many namespaces are in each phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseCounts {
    /// Not started.
    pub waiting: u64,
    /// Being copied.
    pub copying: u64,
    /// Copied; indexes being built.
    pub building_indexes: u64,
    /// Copied (and indexed).
    pub done: u64,
    /// Being copied again whole, because a DDL change overtook the copy.
    pub recopying: u64,
}

/// Where one namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespacePhase {
    /// Being copied.
    Copying,
    /// Being copied again whole.
    Recopying,
    /// Not started.
    Waiting,
    /// Copied; indexes being built.
    BuildingIndexes,
    /// Done.
    Done,
}

impl NamespacePhase {
    /// The phase in words.
    pub fn as_str(self) -> &'static str {
        match self {
            NamespacePhase::Copying => "copying",
            NamespacePhase::Recopying => "re-copying",
            NamespacePhase::Waiting => "waiting",
            NamespacePhase::BuildingIndexes => "building indexes",
            NamespacePhase::Done => "done",
        }
    }
}

/// One namespace's copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceProgress {
    /// `db.collection`.
    pub namespace: String,
    /// Where it is.
    pub phase: NamespacePhase,
    /// Documents copied.
    pub copied_documents: i64,
    /// Documents to copy, as estimated when the copy was planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_documents: Option<i64>,
    /// Bytes copied.
    pub copied_bytes: i64,
    /// Bytes to copy, as estimated when the copy was planned.
    pub total_bytes: i64,
    /// Its copy rate since it started, once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_second: Option<f64>,
    /// Seconds until it is copied, at that rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds_remaining: Option<i64>,
}

/// `indexBuilding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexBuilding {
    /// Indexes built on the destination.
    pub indexes_built: u64,
    /// Indexes to build in all.
    pub total_indexes_to_build: u64,
    /// Collections whose indexes are all built.
    #[serde(default)]
    pub collections_finished: u64,
    /// Collections with indexes to build.
    #[serde(default)]
    pub collections_total: u64,
}

/// `directionMapping`: `"cluster0: host:port"` for each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectionMapping {
    /// The source, as `clusterN: hosts`.
    #[serde(rename = "Source")]
    pub source: String,
    /// The destination, as `clusterN: hosts`.
    #[serde(rename = "Destination")]
    pub destination: String,
}

/// `source` / `destination`: `{}` until a round trip of at least 1 ms was measured (`-1`: the
/// cluster did not answer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ping {
    /// The latest round trip, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_latency_ms: Option<i64>,
}

/// `verification`: the embedded verifier on each side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// The verifier on the source.
    pub source: VerifierSide,
    /// The verifier on the destination.
    pub destination: VerifierSide,
    /// Not in mongosync (which fails the migration instead): how many differences were found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mismatch_count: Option<u64>,
    /// Not in mongosync: the first differences, described.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<String>,
    /// Not in mongosync: true once the verifier passed at commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verified: bool,
}

/// One side of `verification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifierSide {
    /// Documents the verifier expects to hash.
    #[serde(default)]
    pub estimated_document_count: u64,
    /// Documents hashed so far.
    #[serde(default)]
    pub hashed_document_count: u64,
    /// How far the verifier's change stream is behind, in seconds.
    #[serde(default)]
    pub lag_time_seconds: i64,
    /// Collections to scan.
    #[serde(default)]
    pub total_collection_count: u64,
    /// Collections scanned.
    #[serde(default)]
    pub scanned_collection_count: u64,
    /// What the verifier is doing.
    #[serde(default)]
    pub phase: VerifierPhase,
}

/// mongosync's `verification.*.phase`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VerifierPhase {
    /// During the copy: the verifier starts with change event application.
    #[default]
    #[serde(rename = "not started")]
    NotStarted,
    /// Hashing every collection once.
    #[serde(rename = "initial hashing")]
    InitialHashing,
    /// Following both clusters' changes.
    #[serde(rename = "stream hashing")]
    StreamHashing,
}

impl VerifierPhase {
    /// The phase as mongosync names it.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifierPhase::NotStarted => "not started",
            VerifierPhase::InitialHashing => "initial hashing",
            VerifierPhase::StreamHashing => "stream hashing",
        }
    }
}

/// `250` → `4m10s`, `3700` → `1h1m`, `90000` → `1d1h`: the two largest units, as kubectl's
/// AGE column writes them (the ETA printer column, the plugin, the plan's summary).
pub fn short_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s == 0 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

/// `1536` → `1.5 KiB`: binary units, as `kubectl top` and the engine's logs write them.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n.max(0) as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{} B", n.max(0))
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_bytes_in_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(45), "45s");
        assert_eq!(short_duration(250), "4m10s");
        assert_eq!(short_duration(240), "4m");
        assert_eq!(short_duration(3700), "1h1m");
        assert_eq!(short_duration(7200), "2h");
        assert_eq!(short_duration(90_000), "1d1h");
        assert_eq!(short_duration(3 * 86_400 + 4 * 3600 + 5), "3d4h");
        assert_eq!(short_duration(-5), "0s");
    }

    #[test]
    fn idle_is_all_nulls_but_state_and_can_commit() {
        let v = serde_json::to_value(ProgressReply {
            progress: Progress::nulls(State::Idle, false),
            success: true,
        })
        .unwrap();
        let p = v["progress"].as_object().unwrap();
        assert_eq!(p["state"], "IDLE");
        assert_eq!(p["canCommit"], false);
        for k in [
            "canWrite",
            "info",
            "lag",
            "lagTimeSeconds",
            "totalEventsApplied",
            "collectionCopy",
            "directionMapping",
            "mongosyncID",
            "coordinatorID",
            "source",
            "destination",
        ] {
            assert_eq!(p.get(k), Some(&serde_json::Value::Null), "{k}");
        }
        for absent in [
            "syncError",
            "ceaStage",
            "indexBuilding",
            "verification",
            "warnings",
        ] {
            assert!(!p.contains_key(absent), "{absent}");
        }
    }

    #[test]
    fn a_running_reply_round_trips_and_reads_as_mongosync_writes_it() {
        let text = json!({"progress": {
            "state": "RUNNING", "canCommit": false, "canWrite": false, "info": "change event application",
            "ceaStage": "steady state",
            "lag": {"overallLagSeconds": 3, "crudLagSeconds": 3, "ddlLagSeconds": null},
            "lagTimeSeconds": 3, "totalEventsApplied": 12,
            "collectionCopy": {"estimatedTotalBytes": 200, "estimatedCopiedBytes": 50},
            "directionMapping": {"Source": "cluster0: a:1", "Destination": "cluster1: b:2"},
            "source": {"pingLatencyMs": 2}, "destination": {},
            "verification": {
                "source": {"estimatedDocumentCount": 1, "hashedDocumentCount": 1, "lagTimeSeconds": 0,
                           "totalCollectionCount": 4, "scannedCollectionCount": 4, "phase": "stream hashing"},
                "destination": {"phase": "stream hashing"}},
            "mongosyncID": "e", "coordinatorID": "e", "someFieldOfALaterVersion": 1},
            "success": true});
        let r: ProgressReply = serde_json::from_value(text).unwrap();
        let p = &r.progress;
        assert_eq!(p.state, State::Running);
        assert_eq!(p.overall_lag_seconds(), Some(3));
        assert_eq!(p.cea_stage, Some(CeaStage::SteadyState));
        assert_eq!(p.collection_copy.unwrap().percent().as_deref(), Some("25%"));
        assert_eq!(p.destination, Some(Ping::default()));
        let v = p.verification.as_ref().unwrap();
        assert_eq!(v.source.phase, VerifierPhase::StreamHashing);
        assert_eq!(v.destination.scanned_collection_count, 0);
        let again: ProgressReply =
            serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
