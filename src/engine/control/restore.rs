//! Restoring a sync at start-up: INITIALIZING connects to both clusters (retrying while
//! either is down), finds a sync persisted on the destination, takes its lease and resumes it,
//! or becomes IDLE; and a clean shutdown.

use super::source_blocked_warning;
#[allow(unused_imports)]
use crate::engine::*;

impl Engine {
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
                    s.indexes = doc.index_building;
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
                // `collectionCopy` counts what earlier processes copied too.
                match Store::new(self.client(doc.options.destination))
                    .copied_bytes()
                    .await
                {
                    Ok(bytes) => self
                        .status
                        .counters
                        .copied_bytes
                        .store(bytes, std::sync::atomic::Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %self.scrub(&crate::mongo::describe(&e)), "could not read the bytes copied before the restart")
                    }
                }
                if doc.sync_error.is_some()
                    && doc.final_verification.is_some()
                    && doc.state == DurableState::Committing
                {
                    // Stopped by the final verification: a restart is how the user asks for
                    // it again once the destination is repaired (or, with
                    // --disableVerification, to commit without it). The job goes back to
                    // the commit, which compares again.
                    tracing::warn!("the commit was stopped by differences the final verification found; verifying again (the destination may have been repaired since)");
                    if let Err(e) = Store::new(self.client(doc.options.destination))
                        .clear_final_verification_stop()
                        .await
                    {
                        let why = self.scrub(&crate::mongo::describe(&e));
                        tracing::error!(error = %why, "could not clear the stopped commit; restart the engine again");
                        self.status.lock().fatal = doc.sync_error.clone();
                        return Ok(());
                    }
                } else if let Some(error) = &doc.sync_error {
                    // Stopped for good before the restart: reported, not tried again (its
                    // write blocking was released when it stopped).
                    tracing::error!(error = %error, "the persisted sync stopped for good; reporting it, starting nothing");
                    let mut s = self.status.lock();
                    s.fatal = Some(error.clone());
                    if let Some(f) = &doc.final_verification {
                        let v = s.verification.get_or_insert_with(Default::default);
                        v.mismatch_count = f.mismatch_count.max(0) as u64;
                        v.mismatches = f.mismatches.clone();
                    }
                    drop(s);
                    return Ok(());
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
                    match self.spawn_job(&doc.options) {
                        Ok(job) => *control = Some(job),
                        Err(e) => {
                            return Err(StartupError::Refused(format!(
                                "the sync persisted on the destination has options this engine refuses ({e}); start a new sync"
                            )))
                        }
                    }
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
}

enum InitError {
    Unreachable(ClusterLabel, String),
    Refused(String),
}
