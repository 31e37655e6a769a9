//! `POST /api/v1/preflight` (ours; mongosync has no such endpoint): the checks `/start` runs,
//! run by the engine for a supervisor such as the operator, which thereby never connects to
//! the clusters itself. The body is the `/start` body; nothing is started or written.

use serde::{Deserialize, Serialize};

/// Why a sync cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProblemKind {
    /// A cluster cannot be examined (down, wrong password, TLS).
    Unreachable,
    /// A server version or feature compatibility version the sync does not support.
    Version,
    /// A connection user lacks roles the sync needs.
    Roles,
    /// A topology the sync does not support.
    Topology,
    /// Source and destination are the same cluster.
    SameCluster,
    /// The destination holds data (or another sync's metadata), or a namespace to sync.
    DestinationNotEmpty,
    /// The destination's filesystem lacks room for the data to sync.
    InsufficientDiskSpace,
}

/// One thing that stops the sync, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightProblem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// What is wrong and how to fix it (no secrets).
    pub message: String,
}

/// The reply of `POST /api/v1/preflight`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightReply {
    /// True: the checks ran (whatever they found).
    #[serde(default)]
    pub success: bool,
    /// True when nothing stops the sync.
    pub passed: bool,
    /// What stops it.
    #[serde(default)]
    pub problems: Vec<PreflightProblem>,
    /// Risks that do not stop it.
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl PreflightReply {
    /// The messages of the problems of `kind`, joined.
    pub fn messages_of(&self, kind: ProblemKind) -> String {
        self.problems
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }
}
