//! What `clustersync plan` finds before a sync moves anything, typed: the CLI prints it, the
//! engine serves it at `POST /api/v1/plan` (ours; mongosync has no such endpoint), and the
//! operator summarizes it into a ClusterSync's `status.plan`. Every field is ours.
//!
//! A plan is read-only for user data. Its probe reads a few megabytes from the source and
//! writes them to a scratch database on the destination, which it drops again (see
//! [`Probe::method`]).

use serde::{Deserialize, Serialize};

/// `POST /api/v1/plan`'s reply: `{"plan": {...}, "success": true}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanReply {
    /// What the plan found.
    pub plan: Plan,
    /// Always true for a plan reply (a plan that finds blocking risks still succeeds).
    #[serde(default)]
    pub success: bool,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Whether the sync looks safe to start: false when any risk is [`Severity::Blocking`].
    pub safe: bool,
    /// The source, as seen.
    pub source: ClusterSummary,
    /// The destination, as seen.
    pub destination: ClusterSummary,
    /// Totals over the namespaces in scope.
    pub totals: Totals,
    /// Every namespace in scope, in name order.
    pub namespaces: Vec<NamespacePlan>,
    /// How long the sync should take, and how that was measured.
    pub estimate: Estimate,
    /// What may go wrong, blocking ones first; each names the problem and what to do.
    pub risks: Vec<Risk>,
    /// Set when the source's namespaces could not be learnt (it could not be examined): why.
    /// `totals`, `namespaces` and `estimate` are then empty and mean nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope_unknown: Option<String>,
}

impl Plan {
    /// The risks that block the sync.
    pub fn blocking(&self) -> impl Iterator<Item = &Risk> {
        self.risks
            .iter()
            .filter(|r| r.severity == Severity::Blocking)
    }
}

/// One cluster, as the plan saw it. No connection string, no user name: hosts only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSummary {
    /// `cluster0` or `cluster1`.
    pub label: String,
    /// Host list, as in the connection string (no credentials).
    pub hosts: String,
    /// The server version, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Source only: seconds between the oldest and the newest oplog entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_window_seconds: Option<u64>,
    /// Source only: whether the oplog has ever dropped an entry (until then its window is
    /// only the replica set's age).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oplog_rolled_over: Option<bool>,
    /// Destination only: free bytes on the filesystem holding its data, when reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    /// Whether the server supports `setUserWriteBlockMode` (the commit's write blocking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_blocking_supported: Option<bool>,
}

/// Sums over the namespaces in scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Databases with at least one namespace in scope.
    pub databases: u64,
    /// Collections (every kind but views).
    pub collections: u64,
    /// Views.
    pub views: u64,
    /// Documents, from the servers' counts.
    pub documents: u64,
    /// Uncompressed data bytes (what the copy moves).
    pub data_bytes: u64,
    /// On-disk bytes of the data.
    pub storage_bytes: u64,
    /// On-disk bytes of the indexes.
    pub index_bytes: u64,
    /// Indexes to build on the destination (`_id` excluded).
    pub indexes: u64,
}

/// What a namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceKind {
    /// An ordinary collection.
    Collection,
    /// A capped collection (copied in natural order; its size caps are kept).
    Capped,
    /// A time series collection.
    Timeseries,
    /// A clustered collection.
    Clustered,
    /// A view (its definition is created; it holds no data).
    View,
}

/// One namespace in scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespacePlan {
    /// `db.collection`.
    pub namespace: String,
    /// What it is.
    pub kind: NamespaceKind,
    /// Documents.
    pub documents: u64,
    /// Uncompressed data bytes.
    pub data_bytes: u64,
    /// On-disk data bytes.
    pub storage_bytes: u64,
    /// On-disk index bytes.
    pub index_bytes: u64,
    /// Its indexes but `_id`, and how each will be built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<IndexPlan>,
    /// Options that need care (a validator, a capped size, a collation, ...), one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Seconds the copy of this namespace should take at the probed rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_copy_seconds: Option<f64>,
}

/// How an index will be built on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum IndexBuild {
    /// Built as defined.
    AsDefined,
    /// Unique: built non-unique during the sync, made unique at commit (as mongosync does).
    UniqueAtCommit,
    /// TTL: built without expiry during the sync (nothing expires on the destination before
    /// the source deletes it), expiry restored at commit.
    TtlPausedUntilCommit,
    /// Hashed: built as defined (where the destination supports it).
    Hashed,
    /// Not supported by the sync or by the destination: the plan says what to do.
    Unsupported,
    /// Not built at all, as asked: `buildIndexes: never`, or a hashed index under
    /// `excludeHashed*`.
    Skipped,
}

/// One index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexPlan {
    /// Its name.
    pub name: String,
    /// Its key pattern, as relaxed extended JSON.
    pub keys: String,
    /// How it will be built.
    pub build: IndexBuild,
    /// Why, when it is not built as defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The time estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    /// Seconds to copy every collection.
    pub copy_seconds: f64,
    /// Seconds to build the indexes after the copy.
    pub index_build_seconds: f64,
    /// Seconds to apply the changes made during the copy, at the source's current write rate
    /// (zero when that rate could not be measured).
    pub catch_up_seconds: f64,
    /// All of it: copy, index builds and catch-up.
    pub total_seconds: f64,
    /// The measurement behind it.
    pub probe: Probe,
}

/// The probe the estimate comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Bytes per second read from the source.
    pub source_read_bytes_per_second: f64,
    /// Bytes per second written to the destination.
    pub destination_write_bytes_per_second: f64,
    /// Bytes of documents per second indexed by one index build on the destination, when
    /// measured (an index built on the probe's scratch copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_build_bytes_per_second: Option<f64>,
    /// Source oplog bytes per second lately (its write rate), when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_oplog_bytes_per_second: Option<f64>,
    /// How it was measured, in one sentence (what was read and written, how much, how long).
    pub method: String,
}

/// How bad a risk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// The sync would fail or lose data: `plan` exits 1.
    Blocking,
    /// Worth acting on; the sync can start.
    Warning,
}

/// What a risk is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RiskKind {
    /// A cluster could not be reached or examined.
    Unreachable,
    /// The source's oplog window against the copy and catch-up time.
    OplogWindow,
    /// The destination's free disk space against the data and indexes.
    DiskSpace,
    /// A connection user lacks roles.
    Roles,
    /// The servers cannot block writes at commit.
    WriteBlocking,
    /// A server version or feature compatibility version.
    Version,
    /// The topology (a standalone source, the same cluster twice).
    Topology,
    /// The destination already holds data in scope.
    DestinationNotEmpty,
    /// A namespace or index the sync cannot carry as is.
    Unsupported,
}

/// One risk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Risk {
    /// What it is about.
    pub kind: RiskKind,
    /// How bad it is.
    pub severity: Severity,
    /// The problem and what to do, in one or two sentences.
    pub message: String,
}
