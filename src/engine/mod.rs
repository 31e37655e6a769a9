//! The sync engine behind `clustersync engine`: a drop-in for mongosync.
//!
//! Kubernetes never appears here; the operator drives the engine through its HTTP API.

pub mod api;
pub mod blocking;
pub mod config;
mod control;
pub mod fence;
pub mod lease;
pub mod metrics;
pub mod rate;
pub mod status;
pub mod store;
pub mod sync;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::doc;
use mongodb::Client;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::contract::errors::ErrorName;
use crate::contract::filter::{Scope, METADATA_DB};
use crate::contract::options::{ClusterLabel, StartOptions};
use crate::contract::state::{DurableState, State, Verb, WrongState};
use crate::engine::store::{MigrationDoc, Store};
use crate::engine::sync::context::Ctx;
use crate::engine::sync::copy::CopyTuning;
use crate::preflight;
use crate::uri::ClusterUri;
use config::EngineConfig;
use status::StatusCell;

/// How often the source's oplog window is read for `estimatedOplogTimeRemaining`.
const OPLOG_REFRESH: Duration = Duration::from_secs(60);

/// How long `/start` waits for each cluster to answer before refusing.
const START_REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// An API call that was refused, with mongosync's response shape in mind.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    WrongState(#[from] WrongState),
    #[error("{0}")]
    InvalidStart(#[from] crate::contract::options::InvalidStart),
    #[error("cannot commit yet: {0}; poll /api/v1/progress until canCommit is true")]
    NotReadyToCommit(String),
    #[error("{0}")]
    DestinationNotEmpty(String),
    #[error("{0}")]
    NamespaceConflict(String),
    #[error("{0}")]
    ClusterUnavailable(String),
    #[error("{0}")]
    UnsupportedTopology(String),
    #[error("this sync was not started with reversible: true, so it cannot be reversed; a new sync in the other direction is needed")]
    NotReversible,
    #[error("{0}")]
    InsufficientPermissions(String),
    #[error("{0}")]
    PreflightFailed(String),
    #[error("{0}")]
    WriteBlockingUnsupported(String),
    #[error("write blocking failed: {0}")]
    WriteBlockingFailed(String),
    /// Another live engine holds the destination's lease.
    #[error("{0}")]
    LeaseHeld(String),
    /// The destination's filesystem lacks room (`skipDiskSpaceCheck: true` starts anyway).
    #[error("{0}")]
    InsufficientDiskSpace(String),
    /// The sync stopped for good (`syncError`): nothing but a new sync can follow.
    #[error("the sync stopped on an error and cannot be paused, resumed or committed: {0}; start a new sync on an emptied destination (drop its user data and the {METADATA_DB} database)")]
    Stopped(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The `error` name in the response body.
    /// The name the API gives this refusal.
    pub fn name(&self) -> ErrorName {
        match self {
            ApiError::WrongState(_) => ErrorName::InvalidState,
            ApiError::InvalidStart(_) => ErrorName::InvalidStartOptions,
            ApiError::NotReadyToCommit(_) => ErrorName::NotReadyToCommit,
            ApiError::DestinationNotEmpty(_) => ErrorName::DestinationNotEmpty,
            ApiError::NamespaceConflict(_) => ErrorName::NamespaceConflict,
            ApiError::ClusterUnavailable(_) => ErrorName::ClusterUnavailable,
            ApiError::UnsupportedTopology(_) => ErrorName::UnsupportedTopology,
            ApiError::NotReversible => ErrorName::NotReversible,
            ApiError::InsufficientPermissions(_) => ErrorName::InsufficientPermissions,
            ApiError::PreflightFailed(_) => ErrorName::PreflightFailed,
            ApiError::WriteBlockingUnsupported(_) => ErrorName::WriteBlockingUnsupported,
            ApiError::WriteBlockingFailed(_) => ErrorName::WriteBlockingFailed,
            ApiError::LeaseHeld(_) => ErrorName::LeaseHeld,
            ApiError::Stopped(_) => ErrorName::InvalidState,
            ApiError::InsufficientDiskSpace(_) => ErrorName::InsufficientDestinationDiskSpace,
            ApiError::Internal(_) => ErrorName::InternalError,
        }
    }

    pub fn http_status(&self) -> u16 {
        self.name().http_status()
    }
}

/// Why the engine refuses to run at all (exits non-zero).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Persisted state that belongs to another sync (exit code 1).
    #[error("{0}")]
    Refused(String),
    /// A setting that cannot work (exit code 2, like a bad flag).
    #[error("{0}")]
    Config(String),
}

impl From<crate::mongo::UnusableUri> for StartupError {
    fn from(e: crate::mongo::UnusableUri) -> Self {
        StartupError::Config(e.0)
    }
}

pub struct Engine {
    config: EngineConfig,
    clients: [Client; 2],
    status: Arc<StatusCell>,
    /// Serializes state-changing API calls; holds the running job.
    control: Mutex<Option<JoinHandle<()>>>,
    tuning: CopyTuning,
    blocker: Arc<dyn blocking::Blocker>,
    /// This process's lease on the sync's destination: held while it drives a sync.
    lease: Arc<lease::Lease>,
}

impl Engine {
    /// Builds the engine and its clients. Nothing is contacted yet: SRV lookups and
    /// connections happen in [`Engine::initialize`], which retries while a cluster is down.
    pub async fn new(config: EngineConfig) -> Result<Arc<Self>, StartupError> {
        Self::with_blocker(config, None).await
    }

    /// Like [`Engine::new`], with the `setUserWriteBlockMode` sender replaced (tests use a
    /// recording one where a server lacks the command).
    pub async fn with_blocker(
        config: EngineConfig,
        blocker: Option<Arc<dyn blocking::Blocker>>,
    ) -> Result<Arc<Self>, StartupError> {
        let clients = [
            crate::mongo::build_client("--cluster0", &config.cluster0).await?,
            crate::mongo::build_client("--cluster1", &config.cluster1).await?,
        ];
        let tuning = CopyTuning {
            index_batch: config.create_indexes_batch,
            ..CopyTuning::for_load_level(config.load_level, config.partition_bytes)
        };
        let scrubber = {
            let (c0, c1) = (config.cluster0.clone(), config.cluster1.clone());
            Arc::new(move |t: &str| c1.scrub(&c0.scrub(t)))
                as Arc<dyn Fn(&str) -> String + Send + Sync>
        };
        let blocker = blocker.unwrap_or_else(|| {
            Arc::new(blocking::ServerBlocker {
                clients: clients.clone(),
                scrub: scrubber,
            })
        });
        let status = StatusCell::new();
        let lease = {
            let status = status.clone();
            lease::Lease::new(
                lease::Identity::for_this_process(config.port),
                lease::Timing::from_env(),
                // Reported at once, whether or not a job is running to notice it.
                Box::new(move |why: &str| {
                    status.fail(why);
                }),
                {
                    let (c0, c1) = (config.cluster0.clone(), config.cluster1.clone());
                    Box::new(move |t: &str| c1.scrub(&c0.scrub(t)))
                },
            )
        };
        Ok(Arc::new(Self {
            blocker,
            config,
            clients,
            status,
            control: Mutex::new(None),
            tuning,
            lease,
        }))
    }

    /// The status `/progress` and `/metrics` are rendered from.
    pub fn status(&self) -> Arc<StatusCell> {
        self.status.clone()
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    fn uri(&self, label: ClusterLabel) -> &ClusterUri {
        match label {
            ClusterLabel::Cluster0 => &self.config.cluster0,
            ClusterLabel::Cluster1 => &self.config.cluster1,
        }
    }

    fn hosts(&self) -> [&str; 2] {
        [self.config.cluster0.hosts(), self.config.cluster1.hosts()]
    }

    /// Removes both connection strings' secrets from a message.
    pub fn scrub(&self, text: &str) -> String {
        self.config
            .cluster1
            .scrub(&self.config.cluster0.scrub(text))
    }

    fn client(&self, label: ClusterLabel) -> &Client {
        &self.clients[label.index()]
    }

    fn blocking(
        &self,
        options: &StartOptions,
        mode: crate::contract::write_blocking::Mode,
    ) -> blocking::Sequence<'_> {
        blocking::Sequence {
            blocker: self.blocker.as_ref(),
            mode,
            source: options.source,
            destination: options.destination,
        }
    }

    /// The `/progress` reply.
    pub fn progress(&self) -> crate::contract::progress::ProgressReply {
        status::progress_reply(
            &self.status.snapshot(),
            &self.status.counters,
            self.hosts(),
            self.config.engine_id(),
        )
    }

    fn current_state(&self) -> State {
        self.status.lock().state
    }

    /// A sync that stopped for good takes no more verbs.
    fn refuse_if_stopped(&self) -> Result<(), ApiError> {
        match &self.status.lock().fatal {
            Some(f) => Err(ApiError::Stopped(f.clone())),
            None => Ok(()),
        }
    }
}
