//! Verifying that a destination cluster holds what the source holds.
//!
//! For every namespace in scope on either side: existence, type, collection options, view
//! definition and indexes, and the documents, byte for byte, through an order-independent
//! [`Digest`] of each side; where the digests differ, a merge walk in `_id` order names the
//! first differing documents, and [`diff`] says which fields differ in each one that is on both
//! sides (paths and BSON types, never values). Documents stay raw BSON throughout and are
//! streamed, so memory does not grow with the data.
//!
//! This module prints nothing and knows no command line: `clustersync verify` is one user, and
//! the engine's embedded verifier can be another.

pub mod compare;
pub mod definitions;
pub mod diff;
pub mod digest;
pub mod order;
pub mod report;
pub mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mongodb::Client;

use crate::contract::filter::{FilterError, NamespaceFilter, Scope};
use crate::uri::ClusterUri;

pub use compare::verify;
pub use digest::Digest;
pub use report::{Mismatch, MismatchKind, NamespaceKind, NamespaceReport, Report, SideReport};

/// How many differing `_id`s are listed per namespace unless asked otherwise.
pub const DEFAULT_MAX_MISMATCHES: usize = 10;
/// How many collections are compared at once unless asked otherwise.
pub const DEFAULT_CONCURRENCY: usize = 4;

/// One side of the comparison: a client, the label it is reported under (e.g. `cluster0`) and
/// its connection string, kept to scrub its secrets out of every error message.
#[derive(Clone)]
pub struct Cluster {
    label: String,
    uri: ClusterUri,
    client: Client,
}

// By hand: only what is safe to show (a driver client's `Debug` goes into its options).
impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("label", &self.label)
            .field("hosts", &self.hosts())
            .finish()
    }
}

impl Cluster {
    pub fn new(label: impl Into<String>, uri: ClusterUri, client: Client) -> Self {
        Self {
            label: label.into(),
            uri,
            client,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Host list (or SRV name), safe to show.
    pub fn hosts(&self) -> &str {
        self.uri.hosts()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A failed command on this cluster, as an error scrubbed of its connection string.
    pub fn failed(&self, what: impl Into<String>, e: &mongodb::error::Error) -> VerifyError {
        VerifyError::Command {
            label: self.label.clone(),
            hosts: self.hosts().to_string(),
            what: what.into(),
            reason: self.uri.scrub(&crate::mongo::describe(e)),
        }
    }
}

/// What to compare and how much to report.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// `includeNamespaces` / `excludeNamespaces`, exactly as `/api/v1/start` takes them.
    pub include: Vec<NamespaceFilter>,
    pub exclude: Vec<NamespaceFilter>,
    /// The most differing `_id`s listed per namespace.
    pub max_mismatches: usize,
    /// Collections compared at once (each reads both clusters).
    pub concurrency: usize,
    /// The form the destination's indexes are expected in.
    pub index_form: IndexForm,
    /// How documents are compared.
    pub documents: DocumentCheck,
    /// Only these namespaces (`db.collection`), when set; still within the filters.
    pub only: Option<BTreeSet<String>>,
    /// Counters a caller can watch while the comparison runs.
    pub progress: Option<Arc<ScanProgress>>,
    /// Whether each document listed as `differentContent` is read again on both sides to say
    /// what differs in it (see [`diff`]): a lookup by `_id` of the listed documents only.
    pub describe: bool,
    /// Whether indexes are listed and compared. Off for a caller that compares definitions
    /// on its own schedule (the engine's verifier does, every few seconds and at commit):
    /// a documents-only pass then costs no listing per collection unless its documents
    /// differ (the walk reads by the `_id` index).
    pub definitions: bool,
    /// Source digests known without reading the source (the engine's copy hashed what it
    /// read), by namespace: the destination is read first, and the source only when the two
    /// digests differ. The caller vouches that a source document changed since is compared
    /// apart.
    pub source_digests: Option<Arc<BTreeMap<String, digest::Digest>>>,
}

/// How a namespace's documents are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DocumentCheck {
    /// Every document hashed on both sides; the differing ones named.
    #[default]
    Digest,
    /// The servers' collection counts only (`count` without a filter: collection metadata
    /// on `mongod`, no document read), for a caller that compares the documents another way.
    /// After an unclean shutdown `mongod` may report a drifted count until it is validated.
    Count,
    /// Definitions only (existence, type, options, views, indexes).
    Skip,
}

/// Progress of one comparison, per side: what a live report shows.
#[derive(Debug, Default)]
pub struct ScanProgress {
    pub source: SideProgress,
    pub destination: SideProgress,
    /// Namespaces whose source side was a known digest that the destination matched (see
    /// [`VerifyOptions::source_digests`]): the source was not read for them.
    pub source_reads_saved: AtomicU64,
}

#[derive(Debug, Default)]
pub struct SideProgress {
    /// Documents read and hashed.
    pub hashed_documents: AtomicU64,
    /// Namespaces whose documents have been read to the end.
    pub scanned_namespaces: AtomicU64,
}

impl SideProgress {
    pub fn hashed(&self) -> u64 {
        self.hashed_documents.load(Ordering::Relaxed)
    }

    pub fn scanned(&self) -> u64 {
        self.scanned_namespaces.load(Ordering::Relaxed)
    }
}

/// The form the destination's indexes are expected in: a sync builds them in a provisional
/// form until its commit (see [`crate::mongo::catalog::sync_form`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IndexForm {
    /// Exactly the source's indexes: after a commit, or after any other copy.
    #[default]
    Final,
    /// Mid-sync under this `buildIndexes` mode: unique indexes built non-unique, TTL indexes
    /// disabled, hashed ones left out under `excludeHashed*`; `never` compares no index.
    DuringSync(crate::contract::options::BuildIndexes),
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            max_mismatches: DEFAULT_MAX_MISMATCHES,
            concurrency: DEFAULT_CONCURRENCY,
            index_form: IndexForm::Final,
            documents: DocumentCheck::Digest,
            only: None,
            progress: None,
            describe: true,
            definitions: true,
            source_digests: None,
        }
    }
}

impl VerifyOptions {
    /// The namespaces in scope; fails on a filter `/start` would refuse.
    pub fn scope(&self) -> Result<Scope, VerifyError> {
        Ok(Scope::compile(&self.include, &self.exclude)?)
    }
}

/// Why a verification could not be carried out. Messages name the cluster by label and
/// hosts; connection strings and passwords never appear in them.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("invalid namespace filter: {0}")]
    Filter(#[from] FilterError),
    #[error("cannot reach {label} ({hosts}): {reason}; check that the cluster is up and reachable from here and that its connection string names the right hosts and options")]
    Unreachable {
        label: String,
        hosts: String,
        reason: String,
    },
    #[error("cannot log in to {label} ({hosts}): {reason}")]
    Authentication {
        label: String,
        hosts: String,
        reason: String,
    },
    #[error("{label} ({hosts}): {what} failed: {reason}")]
    Command {
        label: String,
        hosts: String,
        what: String,
        reason: String,
    },
}

impl VerifyError {
    /// The label of the cluster at fault, if one is.
    pub fn cluster(&self) -> Option<&str> {
        match self {
            VerifyError::Filter(_) => None,
            VerifyError::Unreachable { label, .. }
            | VerifyError::Authentication { label, .. }
            | VerifyError::Command { label, .. } => Some(label),
        }
    }
}
