//! The sync engine behind `clustersync engine`: a drop-in for mongosync.
//!
//! Kubernetes never appears here; the operator drives the engine through its HTTP API.

pub mod api;
pub mod blocking;
pub mod cea;
pub mod config;
pub mod context;
pub mod copy;
pub mod fence;
pub mod job;
pub mod lease;
pub mod metadata;
pub mod metrics;
pub mod status;
pub mod verifier;

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
use crate::preflight;
use crate::uri::ClusterUri;
use config::EngineConfig;
use context::Ctx;
use copy::CopyTuning;
use metadata::{MigrationDoc, Store};
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
        let tuning = CopyTuning::for_load_level(config.load_level, config.partition_bytes);
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
                    status.lock().fatal = Some(why.to_string());
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
    ) -> blocking::Controller<'_> {
        blocking::Controller {
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

    /// INITIALIZING: connects to both clusters (retrying with backoff while either is down),
    /// then either restores a persisted sync or becomes IDLE.
    #[tracing::instrument(skip_all)]
    pub async fn initialize(self: &Arc<Self>) -> Result<(), StartupError> {
        let mut attempt = 0u32;
        let found = loop {
            match self.find_persisted().await {
                Ok(None) => break None,
                Ok(Some(doc)) => match self.take_lease(&doc).await {
                    Ok(()) => break Some(doc),
                    Err(InitError::Refused(msg)) => return Err(StartupError::Refused(msg)),
                    Err(InitError::Unreachable(label, msg)) => {
                        tracing::warn!(
                            "cannot take the lease on {} ({}): {msg}; retrying",
                            label.as_str(),
                            self.uri(label).hosts()
                        );
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Err(InitError::Refused(msg)) => return Err(StartupError::Refused(msg)),
                Err(InitError::Unreachable(label, msg)) => {
                    attempt += 1;
                    let msg = format!(
                        "cannot reach {} ({}): {}; retrying",
                        label.as_str(),
                        self.uri(label).hosts(),
                        msg
                    );
                    tracing::warn!("{msg}");
                    self.status.warn(&format!("reach-{}", label.as_str()), msg);
                    tokio::time::sleep(Duration::from_millis(
                        (250u64 << attempt.min(5)).min(5_000),
                    ))
                    .await;
                }
            }
        };
        self.status.clear_warning("reach-cluster0");
        self.status.clear_warning("reach-cluster1");
        self.spawn_monitor();
        let mut control = self.control.lock().await;
        match found {
            None => {
                self.status.lock().state = State::Idle;
                tracing::info!("ready; waiting for /api/v1/start");
            }
            Some(doc) => {
                let state: State = doc.state.into();
                tracing::info!(state = state.as_str(), phase = ?doc.phase, migration = %doc.migration_id, "resuming persisted sync");
                {
                    let mut s = self.status.lock();
                    s.state = state;
                    s.phase = Some(doc.phase);
                    s.options = Some(doc.options.clone());
                    s.can_write = doc.can_write;
                    s.commit_ts = doc.commit_ts;
                    s.copy_finished_ts = doc.copy_finished_ts;
                    s.total_bytes = doc.estimated_total_bytes;
                    s.write_blocking = doc.write_blocking;
                    if let Some(note) = &doc.write_blocking_note {
                        s.warnings.insert("write-blocking".into(), note.clone());
                    }
                    if doc.write_blocking.blocks_source()
                        && matches!(
                            doc.state,
                            DurableState::Committing | DurableState::Committed
                        )
                    {
                        s.warnings.insert(
                            "source-blocked".into(),
                            source_blocked_warning(
                                doc.options.source,
                                self.uri(doc.options.source).hosts(),
                            ),
                        );
                    }
                }
                if doc.state != DurableState::Committed {
                    // Re-assert the blocks this state implies; a failure is reported, and the
                    // sync goes on (its data is safe either way).
                    let committing = doc.state == DurableState::Committing;
                    if let Err(e) = self
                        .blocking(&doc.options, doc.write_blocking)
                        .on_restart(committing, doc.can_write)
                        .await
                    {
                        tracing::warn!(error = %e, "could not restore write blocking");
                        self.status.warn(
                            "write-blocking",
                            format!("could not restore write blocking after the restart: {e}"),
                        );
                    }
                }
                if let Some(a) = doc.applied_ts {
                    self.status.applied_through(a);
                }
                if matches!(doc.state, DurableState::Running | DurableState::Committing)
                    || (doc.state == DurableState::Committed
                        && doc.phase != crate::contract::state::Phase::Done)
                {
                    *control = Some(self.spawn_job(&doc.options));
                }
            }
        }
        Ok(())
    }

    /// Takes the destination's lease before anything is written for a persisted sync. A lease
    /// that its holder keeps renewing refuses the start; one nobody renews (its engine was
    /// killed) is waited out and taken over.
    async fn take_lease(&self, doc: &MigrationDoc) -> Result<(), InitError> {
        let label = doc.options.destination;
        let client = self.client(label);
        let unreachable = |e: mongodb::error::Error| {
            InitError::Unreachable(label, self.scrub(&crate::mongo::describe(&e)))
        };
        let acquired = self
            .lease
            .acquire(client, |holder, within| {
                let msg = format!(
                    "the destination's lease is held by another engine (host {}, pid {}, port {}); waiting up to {} s to see whether it is still renewed: if it is, this engine refuses to start, otherwise it takes over",
                    holder.hostname,
                    holder.pid,
                    holder.port,
                    within.as_secs_f64().ceil() as u64
                );
                tracing::warn!("{msg}");
                self.status.warn("lease", msg);
            })
            .await
            .map_err(unreachable)?;
        self.status.clear_warning("lease");
        match acquired {
            lease::Acquired::Held(holder) => Err(InitError::Refused(holder.refusal())),
            lease::Acquired::Yes => {
                Store::new(client)
                    .claim(&self.lease.me.token)
                    .await
                    .map_err(unreachable)?;
                tracing::info!(
                    lease_ms = self.lease.timing.duration.as_millis() as u64,
                    "holding the destination's lease"
                );
                Ok(())
            }
        }
    }

    /// Clean shutdown: the job stops and the lease is let go, so that an engine started next
    /// need not wait for it to expire.
    pub async fn shutdown(&self) {
        let mut control = self.control.lock().await;
        Self::stop_job(&mut control).await;
        self.lease.release().await;
    }

    async fn find_persisted(&self) -> Result<Option<MigrationDoc>, InitError> {
        let mut found = Vec::new();
        for label in [ClusterLabel::Cluster0, ClusterLabel::Cluster1] {
            let client = self.client(label);
            client
                .database("admin")
                .run_command(doc! { "ping": 1 })
                .await
                .map_err(|e| {
                    InitError::Unreachable(label, self.scrub(&crate::mongo::describe(&e)))
                })?;
            let store = Store::new(client);
            let doc = store.load().await.map_err(|e| {
                InitError::Unreachable(label, self.scrub(&crate::mongo::describe(&e)))
            })?;
            if let Some(doc) = doc {
                found.push((label, doc));
            }
        }
        // Both hold one after a crash in the middle of a reversal: the later generation is
        // the sync's current direction.
        found.sort_by_key(|(_, d)| d.generation);
        let Some((label, doc)) = found.pop() else {
            return Ok(None);
        };
        if let Some((other, older)) = found.pop() {
            if older.generation == doc.generation || older.migration_id != doc.migration_id {
                return Err(InitError::Refused(format!(
                    "both clusters hold clustersync metadata (database {METADATA_DB}), on {} and {}; drop it from the cluster that is not this sync's destination and start again",
                    other.as_str(), label.as_str()
                )));
            }
        }
        if doc.options.destination != label {
            return Err(InitError::Refused(format!(
                "{} holds clustersync metadata that names {} as the destination: --cluster0 and --cluster1 appear to be swapped; start with the same arguments as before",
                label.as_str(), doc.options.destination.as_str()
            )));
        }
        let hosts = self.hosts();
        if !crate::uri::same_hosts(&doc.cluster0_hosts, hosts[0])
            || !crate::uri::same_hosts(&doc.cluster1_hosts, hosts[1])
        {
            return Err(InitError::Refused(format!(
                "this sync was started with --cluster0 {} and --cluster1 {}, but the engine now has --cluster0 {} and --cluster1 {}; restart with the original clusters, or drop the database {METADATA_DB} on the destination to start over",
                doc.cluster0_hosts, doc.cluster1_hosts, hosts[0], hosts[1]
            )));
        }
        if doc.engine_id != self.config.engine_id() {
            return Err(InitError::Refused(format!(
                "this sync was started with --id {:?}, but the engine now has --id {:?}; restart with the original --id",
                doc.engine_id, self.config.engine_id()
            )));
        }
        Ok(Some(doc))
    }

    fn ctx(&self, options: &StartOptions) -> Ctx {
        let scope = Scope::compile(&options.include_namespaces, &options.exclude_namespaces)
            .unwrap_or_default();
        let destination = self.client(options.destination).clone();
        Ctx {
            source: self.client(options.source).clone(),
            store: Store::fenced(&destination, &self.lease.me.token),
            fence: self.lease.fence.clone(),
            destination,
            scope: Arc::new(scope),
            options: options.clone(),
            status: self.status.clone(),
            tuning: self.tuning,
            blocker: self.blocker.clone(),
            write_blocking: self.status.lock().write_blocking,
            verifier: (options.verification_enabled() && !self.config.disable_verification).then(
                || {
                    let cluster = |label: ClusterLabel| {
                        crate::verify::Cluster::new(
                            label.as_str(),
                            self.uri(label).clone(),
                            self.client(label).clone(),
                        )
                    };
                    Arc::new(context::Clusters {
                        source: cluster(options.source),
                        destination: cluster(options.destination),
                    })
                },
            ),
        }
    }

    fn spawn_job(self: &Arc<Self>, options: &StartOptions) -> JoinHandle<()> {
        let ctx = self.ctx(options);
        // Before the job runs, so that no `/progress` between here and the verifier's first
        // report shows `canCommit` true for a sync whose verifier has not started yet.
        if ctx.verifier.is_some() {
            self.status
                .lock()
                .verification
                .get_or_insert_with(Default::default);
        }
        let me = self.clone();
        tokio::spawn(async move { job::supervise(ctx, move |t| me.scrub(t)).await })
    }

    /// Pings both clusters every few seconds for `/progress` latencies, and refreshes the
    /// source's latest time for lag.
    fn spawn_monitor(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut oplog_checked: Option<Instant> = None;
            loop {
                let Some(engine) = me.upgrade() else { return };
                for label in [ClusterLabel::Cluster0, ClusterLabel::Cluster1] {
                    let started = Instant::now();
                    let r = engine
                        .client(label)
                        .database("admin")
                        .run_command(doc! { "ping": 1 })
                        .await;
                    let key = format!("reach-{}", label.as_str());
                    match r {
                        Ok(_) => {
                            engine.status.lock().ping_ms[label.index()] =
                                Some(started.elapsed().as_millis() as i64);
                            engine.status.clear_warning(&key);
                        }
                        Err(e) => {
                            engine.status.lock().ping_ms[label.index()] = Some(-1);
                            engine.status.warn(
                                &key,
                                format!(
                                    "cannot reach {} ({}): {}; retrying",
                                    label.as_str(),
                                    engine.uri(label).hosts(),
                                    engine.scrub(&crate::mongo::describe(&e))
                                ),
                            );
                        }
                    }
                }
                let source = engine.status.lock().options.as_ref().map(|o| o.source);
                if let Some(src) = source {
                    if let Ok(ts) = crate::mongo::cluster_time(engine.client(src)).await {
                        engine.status.saw_source_time(ts);
                    }
                    // The oplog's start moves slowly and reading it can cost the server a scan:
                    // once a minute is plenty (mongosync refreshes it every five).
                    if oplog_checked.is_none_or(|t| t.elapsed() >= OPLOG_REFRESH) {
                        oplog_checked = Some(Instant::now());
                        if let Some(first) =
                            preflight::checks::oplog_first_secs(engine.client(src)).await
                        {
                            engine.status.lock().oplog_first_secs = Some(first);
                        }
                    }
                }
                drop(engine);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    /// `POST /api/v1/preflight`: the checks `/start` would run for `options`, reported, with
    /// nothing started or written. Allowed in every state.
    pub async fn check(
        &self,
        options: StartOptions,
    ) -> Result<crate::contract::preflight::PreflightReply, ApiError> {
        options.validate()?;
        let report = self.examine(&options, preflight::kind_for(&options)).await;
        Ok(report.to_reply())
    }

    /// The preflight for `options`' direction, reported.
    async fn examine(
        &self,
        options: &StartOptions,
        kind: preflight::SyncKind,
    ) -> preflight::Report {
        let scrub = |t: &str| self.scrub(t);
        let side =
            |label: ClusterLabel| (self.client(label), label.as_str(), self.uri(label).hosts());
        preflight::run(
            side(options.source),
            side(options.destination),
            preflight::Intent {
                kind,
                // The destination's content is judged by the caller, with the namespace filter.
                pre_existing_destination_data: true,
                copy_rate: preflight::checks::DEFAULT_COPY_RATE,
                measure: false,
            },
            &scrub,
        )
        .await
    }

    /// Runs the preflight for `options`' direction; missing roles refuse the call at once.
    async fn preflight(
        &self,
        options: &StartOptions,
        kind: preflight::SyncKind,
    ) -> Result<preflight::Report, ApiError> {
        let report = self.examine(options, kind).await;
        let roles: Vec<String> = report
            .problems_of(crate::contract::preflight::ProblemKind::Roles)
            .map(|p| p.message.clone())
            .collect();
        if roles.is_empty() {
            Ok(report)
        } else {
            Err(ApiError::InsufficientPermissions(roles.join("; ")))
        }
    }

    fn current_state(&self) -> State {
        self.status.lock().state
    }

    #[tracing::instrument(skip_all)]
    pub async fn start(self: &Arc<Self>, options: StartOptions) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Start.check(self.current_state())?;
        options.validate()?;
        let source = self.client(options.source);
        let destination = self.client(options.destination);
        let scope = Scope::compile(&options.include_namespaces, &options.exclude_namespaces)
            .map_err(|e| crate::contract::options::InvalidStart::Filter(e.to_string()))?;
        let unavailable = |label: ClusterLabel, e: mongodb::error::Error| {
            ApiError::ClusterUnavailable(format!(
                "cannot reach {} ({}): {}; check that it is up and reachable, then call /start again",
                label.as_str(),
                self.uri(label).hosts(),
                self.scrub(&crate::mongo::describe(&e))
            ))
        };
        // Both clusters must answer promptly: /start answers within seconds, not after the
        // driver's full server-selection wait.
        let mut hellos = Vec::with_capacity(2);
        for label in [options.source, options.destination] {
            let admin = self.client(label).database("admin");
            match tokio::time::timeout(START_REACH_TIMEOUT, admin.run_command(doc! { "hello": 1 })).await {
                Ok(Ok(reply)) => hellos.push(reply),
                Ok(Err(e)) => return Err(unavailable(label, e)),
                Err(_) => {
                    return Err(ApiError::ClusterUnavailable(format!(
                        "{} ({}) did not answer within {} s; check that it is up and reachable, then call /start again",
                        label.as_str(),
                        self.uri(label).hosts(),
                        START_REACH_TIMEOUT.as_secs()
                    )))
                }
            }
        }
        // The source must offer change streams.
        let hello = &hellos[0];
        if hello.get_str("setName").is_err() && hello.get_str("msg") != Ok("isdbgrid") {
            return Err(ApiError::UnsupportedTopology(format!(
                "the source ({}) is a standalone server, which has no change streams; convert it to a replica set (a single-node one is enough) and call /start again",
                self.uri(options.source).hosts()
            )));
        }
        // Write blocking: the request must be honoured or refused, never quietly dropped; the
        // default is used where the servers allow it and reported where they do not.
        let (mut mode, explicit) = options.write_blocking();
        let mut blocking_note = None;
        match self.blocking(&options, mode).probe().await {
            Ok(()) => {}
            Err(blocking::BlockError::Unsupported { cluster }) if !explicit => {
                let note = format!(
                    "write blocking is not in force: {cluster} does not support setUserWriteBlockMode, so neither cluster's application writes are blocked; stop writes to the source yourself before /commit, and do not write to the destination before canWrite"
                );
                tracing::warn!("{note}");
                blocking_note = Some(note);
                mode = crate::contract::write_blocking::Mode::None;
            }
            Err(e @ blocking::BlockError::Unsupported { .. }) => {
                return Err(ApiError::WriteBlockingUnsupported(format!(
                    "{e}; start without enableUserWriteBlocking, or with \"none\""
                )))
            }
            Err(e) => return Err(ApiError::WriteBlockingFailed(e.to_string())),
        }
        // Roles, versions and identity: everything else the preflight knows.
        let kind = if options.reversible {
            preflight::SyncKind::Reversing
        } else if mode.blocks_source() {
            preflight::SyncKind::DualWriteBlocking
        } else {
            preflight::SyncKind::Default
        };
        let report = self.preflight(&options, kind).await?;
        if !report.passed() {
            let all: Vec<String> = report.problems.iter().map(|p| p.message.clone()).collect();
            return Err(ApiError::PreflightFailed(all.join("; ")));
        }
        // The lease comes before anything is written: a destination another live engine
        // drives is refused, naming it.
        let me = self.lease.me.token.clone();
        let acquired = self
            .lease
            .acquire(destination, |holder, within| {
                tracing::warn!(
                    hostname = %holder.hostname,
                    pid = holder.pid,
                    port = holder.port,
                    wait_s = within.as_secs_f64().ceil() as u64,
                    "the destination's lease is held by another engine; watching whether it is still renewed"
                );
            })
            .await;
        match acquired {
            Ok(lease::Acquired::Yes) => {}
            Ok(lease::Acquired::Held(holder)) => return Err(ApiError::LeaseHeld(holder.refusal())),
            Err(e) => return Err(unavailable(options.destination, e)),
        }
        let result: Result<(), ApiError> = async {
            let store = Store::new(destination);
            if Store::exists(destination)
                .await
                .map_err(|e| unavailable(options.destination, e))?
            {
                match store.load().await.map_err(|e| unavailable(options.destination, e))? {
                    // Left by a /start that failed half-way: nothing in it is worth keeping, but
                    // for the lease just taken.
                    None => {
                        let db = destination.database(METADATA_DB);
                        let names = db
                            .list_collection_names()
                            .await
                            .map_err(|e| unavailable(options.destination, e))?;
                        for name in names.iter().filter(|n| *n != lease::LEASE_COLLECTION) {
                            db.collection::<bson::Document>(name)
                                .drop()
                                .await
                                .map_err(|e| unavailable(options.destination, e))?;
                        }
                    }
                    Some(_) => {
                        return Err(ApiError::DestinationNotEmpty(format!(
                            "the destination already holds another sync's metadata (database {METADATA_DB}); drop it to start over"
                        )))
                    }
                }
            }
            let existing = crate::mongo::catalog::user_namespaces(destination)
                .await
                .map_err(|e| unavailable(options.destination, e))?;
            if !existing.is_empty() {
                if !options.pre_existing_destination_data {
                    let shown: Vec<_> = existing.iter().take(5).cloned().collect();
                    return Err(ApiError::DestinationNotEmpty(format!(
                        "the destination ({}) already holds user data ({}{}); empty it, or set preExistingDestinationData: true with a namespace filter that keeps the synced namespaces apart",
                        self.uri(options.destination).hosts(),
                        shown.join(", "),
                        if existing.len() > 5 { format!(" and {} more", existing.len() - 5) } else { String::new() }
                    )));
                }
                let source_ns = crate::mongo::catalog::list_all(source, &scope)
                    .await
                    .map_err(|e| unavailable(options.source, e))?;
                let clashes: Vec<_> = source_ns
                    .iter()
                    .map(|s| s.ns())
                    .filter(|ns| existing.contains(ns))
                    .take(5)
                    .collect();
                if !clashes.is_empty() {
                    return Err(ApiError::NamespaceConflict(format!(
                        "namespaces to sync already exist on the destination: {}; exclude them with excludeNamespaces or drop them from the destination",
                        clashes.join(", ")
                    )));
                }
            }
            // Open the change stream before anything is read, and keep its starting point: the
            // opening's resume token, or, from a server that gives none, the time read just before
            // (opening "now" rather than at a time spares servers that scan their oplog to find
            // a start time).
            let start_ts = crate::mongo::cluster_time(source)
                .await
                .map_err(|e| unavailable(options.source, e))?;
            let stream = source
                .watch()
                .show_expanded_events(true)
                .await
                .map_err(|e| unavailable(options.source, e))?;
            let token = stream.resume_token();
            drop(stream);
            let mut doc = Store::new_migration_doc(
                self.config.engine_id(),
                self.hosts(),
                options.clone(),
                start_ts,
                token,
            );
            doc.write_blocking = mode;
            doc.write_blocking_note = blocking_note.clone();
            doc.lease_token = Some(me.clone());
            let ctl = self.blocking(&options, mode);
            ctl.on_start()
                .await
                .map_err(|e| ApiError::WriteBlockingFailed(e.to_string()))?;
            if let Err(e) = store.create(&doc).await {
                // Nothing was recorded: nothing may stay blocked either.
                if let Err(release) = ctl.release_all().await {
                    tracing::error!(error = %release, "could not release write blocking after a failed /start");
                }
                return Err(unavailable(options.destination, e));
            }
            tracing::info!(
                migration = %doc.migration_id,
                source = %self.uri(options.source).hosts(),
                destination = %self.uri(options.destination).hosts(),
                "sync started"
            );
            {
                let mut s = self.status.lock();
                s.state = State::Running;
                s.phase = Some(crate::contract::state::Phase::Catalog);
                s.options = Some(options.clone());
                s.fatal = None;
                s.write_blocking = mode;
                if let Some(note) = blocking_note {
                    s.warnings.insert("write-blocking".into(), note);
                }
            }
            *control = Some(self.spawn_job(&options));
            Ok(())
        }
        .await;
        if result.is_err() {
            // Nothing was started: the next /start, here or elsewhere, need not wait, and a
            // refused /start leaves nothing behind on the destination.
            self.lease.release().await;
            if let Err(e) = drop_if_only_lease(destination).await {
                tracing::debug!(error = %self.scrub(&crate::mongo::describe(&e)), "could not drop the metadata database left by a refused /start");
            }
        }
        result
    }

    async fn stop_job(control: &mut Option<JoinHandle<()>>) {
        if let Some(job) = control.take() {
            job.abort();
            let _ = job.await;
        }
    }

    fn persisted_store(&self) -> Result<Store, ApiError> {
        let dest = self
            .status
            .lock()
            .options
            .as_ref()
            .map(|o| o.destination)
            .ok_or_else(|| ApiError::Internal("no sync options in memory".into()))?;
        Ok(Store::fenced(self.client(dest), &self.lease.me.token))
    }

    fn store_error(&self, e: mongodb::error::Error) -> ApiError {
        ApiError::ClusterUnavailable(format!(
            "could not record the change on the destination: {}; try again",
            self.scrub(&crate::mongo::describe(&e))
        ))
    }

    #[tracing::instrument(skip_all)]
    pub async fn pause(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Pause.check(self.current_state())?;
        let store = self.persisted_store()?;
        Self::stop_job(&mut control).await;
        if let Err(e) = store.set_state(DurableState::Paused).await {
            // Not recorded: keep running so memory and the destination agree.
            let options = self
                .status
                .lock()
                .options
                .clone()
                .expect("running sync has options");
            *control = Some(self.spawn_job(&options));
            return Err(self.store_error(e));
        }
        self.status.lock().state = State::Paused;
        tracing::info!("sync paused");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn resume(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Resume.check(self.current_state())?;
        let store = self.persisted_store()?;
        store
            .set_state(DurableState::Running)
            .await
            .map_err(|e| self.store_error(e))?;
        let options = {
            let mut s = self.status.lock();
            s.state = State::Running;
            s.options.clone().expect("paused sync has options")
        };
        *control = Some(self.spawn_job(&options));
        tracing::info!("sync resumed");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn commit(self: &Arc<Self>) -> Result<(), ApiError> {
        let _control = self.control.lock().await;
        Verb::Commit.check(self.current_state())?;
        if let Some(why) = self.status.snapshot().commit_blocker() {
            return Err(ApiError::NotReadyToCommit(why));
        }
        let (options, mode) = {
            let s = self.status.lock();
            (
                s.options.clone().expect("running sync has options"),
                s.write_blocking,
            )
        };
        // Dual blocking: the source stops taking application writes before the commit point is
        // read, so nothing written after it is lost.
        self.blocking(&options, mode)
            .on_commit()
            .await
            .map_err(|e| ApiError::WriteBlockingFailed(e.to_string()))?;
        if mode.blocks_source() {
            self.status.warn(
                "source-blocked",
                source_blocked_warning(options.source, self.uri(options.source).hosts()),
            );
        }
        let commit_ts = crate::mongo::cluster_time(self.client(options.source))
            .await
            .map_err(|e| {
                ApiError::ClusterUnavailable(format!(
                    "cannot read the source's latest time: {}; try again",
                    self.scrub(&crate::mongo::describe(&e))
                ))
            })?;
        let store = self.persisted_store()?;
        store
            .set(doc! { "state": bson::to_bson(&DurableState::Committing).expect("enum"), "commitTs": commit_ts })
            .await
            .map_err(|e| self.store_error(e))?;
        {
            let mut s = self.status.lock();
            s.state = State::Committing;
            s.commit_ts = Some(commit_ts);
        }
        tracing::info!(commit_ts = ?commit_ts, "commit requested");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn reverse(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Reverse.check(self.current_state())?;
        let reversible = self
            .status
            .lock()
            .options
            .as_ref()
            .is_some_and(|o| o.reversible);
        if !reversible {
            return Err(ApiError::NotReversible);
        }
        let (old_options, mode, note) = {
            let s = self.status.lock();
            (
                s.options.clone().expect("committed sync has options"),
                s.write_blocking,
                s.warnings.get("write-blocking").cloned(),
            )
        };
        let old_store = Store::new(self.client(old_options.destination));
        let old = old_store
            .load()
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| {
                ApiError::Internal("the migration document is missing from the destination".into())
            })?;
        let from = old.can_write_ts.ok_or_else(|| {
            ApiError::Internal(
                "the commit recorded no canWrite time; this sync cannot be reversed".into(),
            )
        })?;
        let mut options = old_options.clone();
        options.source = old_options.destination;
        options.destination = old_options.source;
        // Both clusters now play both parts: the multiple-reversals roles on each.
        self.preflight(&options, preflight::SyncKind::MultipleReversals)
            .await?;
        // The lease moves with the metadata: the new destination is taken before anything is
        // written to it.
        if let Err(why) = self.lease.move_to(self.client(options.destination)).await {
            return Err(ApiError::LeaseHeld(self.scrub(&why)));
        }
        self.status.lock().state = State::Reversing;
        let result = self.write_reversal(&old, &options, mode, from).await;
        if let Err(e) = result {
            // The metadata stays where it was, and so does the lease.
            if let Err(why) = self
                .lease
                .move_to(self.client(old_options.destination))
                .await
            {
                tracing::warn!(error = %self.scrub(&why), "could not move the lease back after a failed reversal");
            }
            self.status.lock().state = State::Committed;
            return Err(e);
        }
        {
            let mut s = self.status.lock();
            s.state = State::Running;
            s.phase = Some(crate::contract::state::Phase::ChangeEvents);
            s.options = Some(options.clone());
            s.warnings.remove("source-blocked");
            if let Some(n) = note {
                s.warnings.insert("write-blocking".into(), n);
            }
        }
        self.status.restart_from(from);
        *control = Some(self.spawn_job(&options));
        tracing::info!(
            source = %self.uri(options.source).hosts(),
            destination = %self.uri(options.destination).hosts(),
            generation = old.generation + 1,
            "sync reversed"
        );
        Ok(())
    }

    /// REVERSING: the migration's metadata moves to the new destination (the old source),
    /// which stays write-blocked while it receives the new source's changes since `canWrite`.
    async fn write_reversal(
        &self,
        old: &MigrationDoc,
        options: &StartOptions,
        mode: crate::contract::write_blocking::Mode,
        from: bson::Timestamp,
    ) -> Result<(), ApiError> {
        let new_store = Store::new(self.client(options.destination));
        let old_store = Store::new(self.client(options.source));
        let mut doc = old.clone();
        doc.options = options.clone();
        doc.generation = old.generation + 1;
        doc.state = DurableState::Running;
        doc.phase = crate::contract::state::Phase::ChangeEvents;
        doc.start_ts = from;
        doc.resume_token = None;
        doc.applied_ts = Some(from);
        doc.copy_finished_ts = Some(from);
        doc.commit_ts = None;
        doc.can_write = false;
        doc.can_write_ts = None;
        doc.lease_token = Some(self.lease.me.token.clone());
        let parts = old_store
            .partitions()
            .await
            .map_err(|e| self.store_error(e))?;
        self.blocking(options, mode)
            .on_start()
            .await
            .map_err(|e| ApiError::WriteBlockingFailed(e.to_string()))?;
        new_store
            .replace_partitions(&parts)
            .await
            .map_err(|e| self.store_error(e))?;
        new_store
            .replace(&doc)
            .await
            .map_err(|e| self.store_error(e))?;
        // The old direction's metadata goes last: until then a restart finds both and keeps
        // the newer generation.
        self.client(options.source)
            .database(METADATA_DB)
            .drop()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(())
    }
}

/// Drops the metadata database when all it holds is an empty lease collection (a refused
/// `/start` created it), so that a refusal leaves the destination as it was.
async fn drop_if_only_lease(destination: &Client) -> mongodb::error::Result<()> {
    let db = destination.database(METADATA_DB);
    let names = db.list_collection_names().await?;
    if names.iter().any(|n| n != lease::LEASE_COLLECTION) {
        return Ok(());
    }
    let leases = db
        .collection::<bson::Document>(lease::LEASE_COLLECTION)
        .count_documents(doc! {})
        .await?;
    if leases == 0 {
        db.drop().await?;
    }
    Ok(())
}

fn source_blocked_warning(source: ClusterLabel, hosts: &str) -> String {
    format!(
        "clustersync has blocked user writes on the source cluster ({}: {hosts}) for the commit; it stays blocked after COMMITTED so that applications move to the destination",
        source.as_str()
    )
}

enum InitError {
    Unreachable(ClusterLabel, String),
    Refused(String),
}
