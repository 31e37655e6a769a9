//! The embedded verifier: checks, while the sync runs and again at commit, that the
//! destination holds what the source holds, and holds the commit back when it does not.
//!
//! It follows the migration-verifier's design rather than mongosync's in-memory one, so that
//! its memory stays bounded and it resumes after a restart:
//!
//! - **Streams.** When change event application starts, it opens a change stream on each
//!   side. Every document either side changes from then on is queued, on disk, for a
//!   comparison by `_id`.
//! - **Initial pass.** Every collection is compared once on both sides (count and digest of
//!   every document's raw BSON, then a merge walk where they differ, see [`crate::verify`]).
//!   The documents it finds different are queued too.
//! - **Rechecks.** A queued document is compared once the change applier has applied the source
//!   up to the time it was queued. One that still differs when compared again after the
//!   applier passed the previous comparison, the source document unchanged in between, is a
//!   confirmed difference: `canCommit` stays false and `/progress` names it.
//! - **Definitions.** Every few seconds, collection options, views and indexes are compared
//!   (indexes in the form the sync builds them); a difference seen twice, the applier having
//!   passed the first sighting, is confirmed.
//! - **Commit.** Once the applier has applied everything up to the commit point, the streams
//!   are read up to it, every queued document is compared, and definitions and counts are
//!   compared once more. Any difference stops the commit before the destination is released
//!   for writes, naming the namespaces and `_id`s.
//!
//! Not compared: the documents of capped collections (a capped collection drops documents
//! without a change event, so the two sides' contents legitimately differ); their definitions
//! are.

pub mod queue;
pub mod recheck;
pub mod store;
pub mod stream;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{Bson, Timestamp};

use crate::contract::progress::VerifierPhase;
use crate::engine::status::VerificationStatus;
use crate::engine::store::PartitionDoc;
use crate::engine::sync::context::{Clusters, Ctx, JobError};
use crate::mongo;
use crate::mongo::catalog::{self, CollKind, CollSpec};
use crate::verify::digest::Digest;
use crate::verify::{self, DocumentCheck, IndexForm, ScanProgress, VerifyOptions};
use queue::Queue;
use store::{Queued, Recheck, Side, VerifierState, VerifierStore};
use stream::SideStream;

/// The most differing documents the initial pass of one collection queues. More than that
/// in one pass means the collection is being rewritten as it is read: it is compared again.
const INITIAL_MAX_MISMATCHES: usize = 10_000;
/// How many times a collection is compared again in the initial pass before its differences
/// are left to the rechecks.
const INITIAL_ATTEMPTS: u32 = 3;
/// Collections compared per initial-pass round: a round lists both clusters and records its
/// collections as compared, so small collections go many to a round (2,000 collections of 10
/// documents took 63 rounds of 8 and spent most of the pass listing), and large ones few,
/// so a restart redoes little.
const INITIAL_CHUNK_COLLECTIONS: usize = 256;
const INITIAL_CHUNK_DOCUMENTS: u64 = 100_000;
/// A round whose collections hold fewer documents than this on average compares
/// [`SMALL_CONCURRENCY`] of them at once.
const SMALL_COLLECTION_DOCS: u64 = 1_000;
const SMALL_CONCURRENCY: usize = 16;
const STREAM_BATCH: usize = 1000;
const RECHECK_BATCH: usize = 1000;
/// Rechecks run while the applier's lag is at most this.
const RECHECK_LAG_SECS: i64 = 5;
const DEFINITIONS_EVERY: Duration = Duration::from_secs(5);
/// How often the queue and the streams' positions are saved: a restart replays at most this
/// much of both streams.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
const PUBLISH_EVERY: Duration = Duration::from_secs(2);
const IDLE_PAUSE: Duration = Duration::from_millis(300);
/// The shortest time between two reads of the streams, unless a read came back full.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// Differences named in `/progress` and in the commit's error.
const SHOWN: usize = 10;

pub struct Verifier<'a> {
    ctx: &'a Ctx,
    clusters: &'a Clusters,
    store: VerifierStore,
    state: VerifierState,
    /// Behind a mutex only to make the verifier `Sync` (a change stream is not): it is
    /// reached through `&mut self`, never locked.
    streams: std::sync::Mutex<[SideStream; 2]>,
    /// Where each stream stands (the side's time), and how far behind its side it is.
    positions: [Option<Timestamp>; 2],
    /// When each stream was last read, and its lag then.
    read_at: [Option<(Instant, i64)>; 2],
    /// Each stream's resume token after the last read, saved at checkpoints.
    tokens: [Option<mongodb::change_stream::event::ResumeToken>; 2],
    /// Shared with the initial pass, which runs alongside; never held across an await.
    queue: Arc<std::sync::Mutex<Queue>>,
    progress: Arc<ScanProgress>,
    /// Namespaces scanned before this process started, per the persisted state.
    scanned_before: usize,
    /// Documents compared again, per side.
    rechecked: [u64; 2],
    /// Documents hashed by earlier verifiers of this process (before a pause): the counts
    /// carry on instead of starting again from zero.
    hashed_before: [u64; 2],
    definitions: Definitions,
    /// Source documents changed after the commit point (as `ns`, `_id` in relaxed extended
    /// JSON): writes the sync does not carry, so a difference on one of them is the
    /// application's, not a lost write.
    after_commit: BTreeSet<(String, String)>,
}

/// The definition differences of the last check, and which are confirmed.
#[derive(Default)]
struct Definitions {
    last: Option<(Timestamp, BTreeSet<String>)>,
    confirmed: BTreeSet<String>,
}

impl<'a> Verifier<'a> {
    /// The verifier for this sync, resumed from its persisted state (or started anew for a
    /// new run); `None` when verification is off.
    pub async fn open(ctx: &'a Ctx) -> Result<Option<Verifier<'a>>, JobError> {
        let Some(clusters) = ctx.verifier.as_deref() else {
            return Ok(None);
        };
        let run = ctx
            .store
            .load()
            .await?
            .ok_or_else(|| {
                JobError::fatal("the migration document disappeared from the destination")
            })?
            .start_ts;
        let store = VerifierStore::new(&ctx.destination);
        let state = match store.load().await? {
            Some(s) if s.run == run => s,
            _ => Self::fresh_state(ctx, &store, run, StreamsFrom::CopyStart).await?,
        };
        let streams = match Self::open_streams(ctx, &state).await {
            Ok(s) => s,
            Err(e) if stream::history_lost(&e) => {
                tracing::warn!("the verifier's change streams cannot resume (the oplog moved on); verification starts over");
                // The job retries, and opens the verifier again from the fresh state.
                Self::fresh_state(ctx, &store, run, StreamsFrom::Now).await?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let scanned_before = state.scanned.len();
        let queue = Queue::from_saved(store.load_queue().await?);
        tracing::info!(
            scanned = scanned_before,
            resumed = state.source.token.is_some(),
            "embedded verifier started"
        );
        Ok(Some(Verifier {
            ctx,
            clusters,
            store,
            state,
            streams: std::sync::Mutex::new(streams),
            positions: [None, None],
            read_at: [None, None],
            tokens: [None, None],
            queue: Arc::new(std::sync::Mutex::new(queue)),
            progress: Arc::new(ScanProgress::default()),
            scanned_before,
            rechecked: [0, 0],
            hashed_before: ctx.status.lock().verification.as_ref().map_or([0, 0], |v| {
                [v.source.hashed_documents, v.destination.hashed_documents]
            }),
            definitions: Definitions::default(),
            after_commit: BTreeSet::new(),
        }))
    }

    async fn fresh_state(
        ctx: &Ctx,
        store: &VerifierStore,
        run: Timestamp,
        from: StreamsFrom,
    ) -> Result<VerifierState, JobError> {
        let (s, d) = tokio::try_join!(
            mongo::cluster_time(&ctx.source),
            mongo::cluster_time(&ctx.destination)
        )?;
        let s = match from {
            StreamsFrom::CopyStart => run,
            StreamsFrom::Now => s,
        };
        let state = VerifierState::new(run, s, d);
        store.reset(&state).await?;
        ctx.status.lock().verification = Some(VerificationStatus::default());
        Ok(state)
    }

    async fn open_streams(
        ctx: &Ctx,
        state: &VerifierState,
    ) -> mongodb::error::Result<[SideStream; 2]> {
        let (s, d) = tokio::try_join!(
            SideStream::open(&ctx.source, &state.source),
            SideStream::open(&ctx.destination, &state.destination)
        )?;
        Ok([s, d])
    }

    fn options(&self, documents: DocumentCheck) -> VerifyOptions {
        VerifyOptions {
            include: self.ctx.options.include_namespaces.clone(),
            exclude: self.ctx.options.exclude_namespaces.clone(),
            max_mismatches: INITIAL_MAX_MISMATCHES,
            concurrency: verify::DEFAULT_CONCURRENCY,
            index_form: IndexForm::DuringSync(self.ctx.options.build_indexes),
            documents,
            only: None,
            progress: Some(self.progress.clone()),
            // The documents found differing are queued, and their rechecks say what differs.
            describe: false,
            definitions: true,
            source_digests: None,
        }
    }

    /// Runs alongside change event application until it is dropped (at the commit point, or
    /// on a pause); returns only on an error.
    pub async fn background(&mut self) -> Result<Infallible, JobError> {
        // After a pause in this process the initial pass is already done: the phase does not
        // go back (the pass finds nothing left to compare).
        let done = self
            .ctx
            .status
            .lock()
            .verification
            .as_ref()
            .is_some_and(|v| v.initial_done);
        if !done {
            self.set_phase(VerifierPhase::InitialHashing);
        }
        let (initial, follow) = self.split();
        let initial = async {
            initial.run().await?;
            futures::future::pending::<Result<Infallible, JobError>>().await
        };
        tokio::try_join!(initial, follow.run()).map(|(never, _)| never)
    }

    fn split(&mut self) -> (InitialPass<'_>, Follow<'_, 'a>) {
        // Definitions are compared apart (`check_definitions`, and at commit): the pass lists
        // no indexes for collections whose documents are equal.
        let options = VerifyOptions {
            definitions: false,
            ..self.options(DocumentCheck::Digest)
        };
        (
            InitialPass {
                ctx: self.ctx,
                clusters: self.clusters,
                store: self.store.clone(),
                queue: self.queue.clone(),
                scanned: self.state.scanned.iter().cloned().collect(),
                options,
                wait_for_applier: true,
                source_since_copy: self.state.source_since_copy(),
            },
            Follow { v: self },
        )
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Saves the queue, then where both streams stand: everything read before the saved
    /// positions is in the saved queue or was found equal.
    async fn checkpoint(&mut self) -> Result<(), JobError> {
        let (save, delete) = self.queue().take_changes();
        self.store.remove(&delete).await?;
        self.store.update(&save).await?;
        self.store
            .save_tokens(self.tokens[0].as_ref(), self.tokens[1].as_ref())
            .await?;
        Ok(())
    }

    fn set_phase(&self, phase: VerifierPhase) {
        let mut s = self.ctx.status.lock();
        let v = s.verification.get_or_insert_with(Default::default);
        v.source.phase = phase;
        v.destination.phase = phase;
        v.initial_done = phase == VerifierPhase::StreamHashing;
    }

    /// The final comparison, once everything up to the commit point has been applied: a
    /// difference stops the commit.
    #[tracing::instrument(name = "final_verification", skip_all)]
    pub async fn final_check(mut self) -> Result<(), JobError> {
        let started = Instant::now();
        let commit = self.ctx.status.lock().commit_ts;
        // The streams up to the commit point on the source, and to now on the destination.
        let dest_now = mongo::cluster_time(&self.ctx.destination).await?;
        // (By position, not by an idle stream: without write blocking an application may
        // still be writing, and what it writes after the commit point is not the sync's.)
        loop {
            self.read_streams().await?;
            let source_done = commit.is_none_or(|c| self.positions[0].is_some_and(|p| p >= c));
            let dest_done = self.positions[1].is_some_and(|p| p >= dest_now);
            if source_done && dest_done {
                break;
            }
        }
        // Collections the initial pass did not reach yet (a commit during the initial pass
        // is refused, but a restart may have come in between).
        let (initial, _) = self.split();
        InitialPass {
            wait_for_applier: false,
            ..initial
        }
        .run()
        .await?;
        self.set_phase(VerifierPhase::StreamHashing);
        // Without write blocking the application may have written to the source after the
        // commit point: those documents are compared too (the applier stopped at the commit
        // point, so a change there is missing on the destination).
        self.drain_source_after_commit(commit, true).await?;
        // Every queued document, until each is equal or a confirmed difference. Two
        // comparisons confirm one that is not equal; a source document that keeps changing
        // (writes not stopped) gets a few more, then counts as different.
        let queued = self.queue().len();
        let max_rounds = 4 * queued.div_ceil(RECHECK_BATCH) + 4;
        for _ in 0..max_rounds {
            let batch = self.queue().unconfirmed(RECHECK_BATCH);
            if batch.is_empty() {
                break;
            }
            self.recheck(batch).await?;
            // A confirmed difference shows in `/progress` (and the metric) at once, not when
            // the whole comparison ends.
            self.publish();
        }
        // Confirmed ones once more: a difference may have healed since.
        let (confirmed, _) = self.queue().confirmed(RECHECK_BATCH);
        if !confirmed.is_empty() {
            self.recheck(confirmed).await?;
        }
        self.checkpoint().await?;
        // One snapshot of the differing documents serves the count, the list and the
        // attribution to late source writes below.
        let (all, count) = self.queue().differing(usize::MAX);
        let mut differences: Vec<String> = all.iter().take(SHOWN).map(recheck::describe).collect();
        let mut total = count;
        // Definitions, and the servers' counts (every document the sync wrote was compared
        // above; a count catches one it never wrote).
        let defs = self.compare_definitions(DocumentCheck::Count).await?;
        total += defs.len() as u64;
        differences.extend(defs);
        differences.truncate(SHOWN);
        // Counters first: `publish` shows confirmed differences only, and the final count
        // also holds documents that kept changing until the rounds ran out.
        self.publish();
        {
            let mut s = self.ctx.status.lock();
            let v = s.verification.get_or_insert_with(Default::default);
            v.mismatches = differences.clone();
            v.mismatch_count = total;
            v.verified = total == 0;
        }
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            differences = total,
            "final verification finished"
        );
        if total > 0 {
            // Writes the application made to the source after the commit point differ by
            // design: they are told apart from lost ones, as mongosync does ("source cluster
            // was modified after final verification began").
            // Only noted: what the source changed since is not compared now.
            self.drain_source_after_commit(commit, false).await?;
            let late = all
                .iter()
                .filter(|r| self.after_commit.contains(&late_key(&r.key.ns, &r.key.id)))
                .count() as u64;
            if let Err(e) = self
                .ctx
                .store
                .set(bson::doc! { "finalVerification": { "mismatchCount": total as i64, "mismatches": &differences } })
                .await
            {
                tracing::warn!(error = %crate::mongo::describe(&e), "could not record the final verification's differences");
            }
            let more = total.saturating_sub(differences.len() as u64);
            let more = if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            };
            let cause = if late > 0 {
                let mode = self.ctx.status.lock().write_blocking;
                format!(
                    "{late} of them are in documents the application changed on the source after the commit point ({} source document(s) changed after it in all): writes to the source were not blocked at /commit (effective enableUserWriteBlocking: {}), and a write after the commit point never reaches the destination. Stop the application's writes to the source before calling /commit. The destination now lacks those writes: restart the migration from scratch, or copy those documents to the destination yourself and restart the engine to verify again",
                    self.after_commit.len(),
                    mode.as_str()
                )
            } else {
                "Something other than the sync changed the destination, or a write was lost. `clustersync verify` lists every difference; repair the destination and restart the engine to verify again, or restart the migration from scratch".into()
            };
            // The cause before the list: log lines are cut at a length, and the list is long.
            return Err(JobError::fatal(format!(
                "the embedded verifier found {total} difference(s) between the source and the destination at commit, so the commit is stopped and the destination stays closed to writes. {cause} (restarting with --disableVerification commits without verifying). The differences: {}{more}",
                differences.join("; ")
            )));
        }
        Ok(())
    }

    /// Reads the source's stream to now, queueing what changed and noting the documents changed
    /// after the commit point.
    async fn drain_source_after_commit(
        &mut self,
        commit: Option<Timestamp>,
        compare: bool,
    ) -> Result<(), JobError> {
        if commit.is_none() {
            return Ok(());
        }
        // Bounded: a source still being written to never goes idle.
        for _ in 0..64 {
            let changes = {
                let streams = self.streams.get_mut().unwrap_or_else(|p| p.into_inner());
                streams[0].read(&self.ctx.scope, STREAM_BATCH).await?
            };
            // Compared like any other change: one that left the document as the destination
            // has it is no difference.
            if compare {
                self.queue().add(&queued(&changes.documents, None, true));
            }
            self.note_after_commit(commit, &changes.documents);
            if changes.idle {
                break;
            }
        }
        Ok(())
    }

    fn note_after_commit(&mut self, commit: Option<Timestamp>, docs: &[(String, Bson, Timestamp)]) {
        let Some(c) = commit else { return };
        for (ns, id, ts) in docs {
            if *ts > c {
                self.after_commit.insert(late_key(ns, id));
            }
        }
    }

    /// Reads each side's stream once and queues what changed.
    async fn read_streams(&mut self) -> Result<StreamsRead, JobError> {
        let mut read = StreamsRead {
            idle: true,
            full: false,
        };
        for (i, side) in [Side::Source, Side::Destination].into_iter().enumerate() {
            // A destination change is compared once the applier has passed the source's time
            // of reading it.
            let source_probe = match side {
                Side::Source => None,
                Side::Destination => Some(mongo::cluster_time(&self.ctx.source).await?),
            };
            if self.queue().is_full() {
                // Back-pressure: the rechecks drain the queue as the applier moves on.
                read.idle = false;
                continue;
            }
            let streams = self.streams.get_mut().unwrap_or_else(|p| p.into_inner());
            let changes = match streams[i].read(&self.ctx.scope, STREAM_BATCH).await {
                Ok(c) => c,
                Err(e) if stream::history_lost(&e) => {
                    tracing::warn!(
                        side = side.field(),
                        "the verifier's change stream fell off the oplog; verification starts over"
                    );
                    // The job retries, and opens the verifier again from the fresh state.
                    Self::fresh_state(self.ctx, &self.store, self.state.run, StreamsFrom::Now)
                        .await?;
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            self.queue().add(&queued(
                &changes.documents,
                source_probe,
                side == Side::Source,
            ));
            if side == Side::Source {
                let commit = self.ctx.status.lock().commit_ts;
                self.note_after_commit(commit, &changes.documents);
            }
            if changes.token.is_some() {
                self.tokens[i] = changes.token.clone();
            }
            let (position, lag) = if changes.idle {
                (changes.probe, 0)
            } else {
                let last = changes.last.unwrap_or(changes.probe);
                (last, changes.probe.time as i64 - last.time as i64)
            };
            self.positions[i] = Some(self.positions[i].map_or(position, |p| p.max(position)));
            {
                let mut s = self.ctx.status.lock();
                let v = s.verification.get_or_insert_with(Default::default);
                let side = if i == 0 {
                    &mut v.source
                } else {
                    &mut v.destination
                };
                side.lag_secs = Some(lag.max(0));
                self.read_at[i] = Some((Instant::now(), lag.max(0)));
            }
            if changes.ddl {
                // A definition changed: the last definition check proves nothing now.
                self.definitions.last = None;
            }
            read.idle &= changes.idle;
            read.full |= changes.events >= STREAM_BATCH;
        }
        Ok(read)
    }

    /// While the streams are not read, their lag grows with the time since the last read
    /// (the applier is behind, so there are changes waiting).
    fn age_lag(&self) {
        let mut s = self.ctx.status.lock();
        let v = s.verification.get_or_insert_with(Default::default);
        for (i, side) in [&mut v.source, &mut v.destination].into_iter().enumerate() {
            if let Some((at, lag)) = self.read_at[i] {
                side.lag_secs = Some(lag + at.elapsed().as_secs() as i64);
            }
        }
    }

    /// Compares `entries` again and records the outcome.
    async fn recheck(&mut self, entries: Vec<Recheck>) -> Result<(), JobError> {
        let probe = mongo::cluster_time(&self.ctx.source).await?;
        let out = recheck::compare(self.clusters, entries, probe).await?;
        const LOGGED: usize = 10;
        for d in out.newly_confirmed.iter().take(LOGGED) {
            tracing::warn!(difference = %d, "the embedded verifier confirmed a difference between the source and the destination");
        }
        if out.newly_confirmed.len() > LOGGED {
            tracing::warn!(
                more = out.newly_confirmed.len() - LOGGED,
                "the embedded verifier confirmed more differences (see /progress)"
            );
        }
        self.queue().compared(&out.equal, out.different);
        self.rechecked[0] += out.read[0];
        self.rechecked[1] += out.read[1];
        Ok(())
    }

    /// Definition differences now (with `documents`: counts too, or not), one sentence each.
    async fn compare_definitions(&self, documents: DocumentCheck) -> Result<Vec<String>, JobError> {
        let mut options = self.options(documents);
        options.progress = None;
        if documents == DocumentCheck::Count {
            // Capped collections legitimately hold different documents: definitions only.
            let (src, dst) = tokio::try_join!(
                catalog::list_all(&self.ctx.source, &self.ctx.scope),
                catalog::list_all(&self.ctx.destination, &self.ctx.scope)
            )?;
            let (mut capped, mut others) = (BTreeSet::new(), BTreeSet::new());
            for spec in src.iter().chain(&dst) {
                let set = if spec.is_capped() {
                    &mut capped
                } else {
                    &mut others
                };
                set.insert(spec.ns());
            }
            others.retain(|ns| !capped.contains(ns));
            let mut defs = self
                .compare_definitions_of(&options, DocumentCheck::Skip, Some(capped), false)
                .await?;
            defs.extend(
                self.compare_definitions_of(&options, DocumentCheck::Count, Some(others), false)
                    .await?,
            );
            return Ok(defs);
        }
        // During the sync (the commit compares with counts, above).
        self.compare_definitions_of(&options, documents, None, true)
            .await
    }

    /// With `excuse_unannounced`, an empty source collection missing on the destination is
    /// no difference: some servers make one, for an update that matches nothing in a missing
    /// collection, without a change event (mongod makes none), so the sync cannot hear of it;
    /// the commit creates such collections before its final comparison, which checks them.
    /// Held against canCommit, it held the commit back for good.
    async fn compare_definitions_of(
        &self,
        options: &VerifyOptions,
        documents: DocumentCheck,
        only: Option<BTreeSet<String>>,
        excuse_unannounced: bool,
    ) -> Result<Vec<String>, JobError> {
        if only.as_ref().is_some_and(BTreeSet::is_empty) {
            return Ok(Vec::new());
        }
        let options = VerifyOptions {
            documents,
            only,
            // Without documents to read, a collection costs round trips (listings, counts),
            // not reading: more at once (the commit compares every collection this way, 40,000
            // round trips at 10,000 collections, while the application waits).
            concurrency: if documents == DocumentCheck::Digest {
                options.concurrency
            } else {
                options.concurrency.max(SMALL_CONCURRENCY)
            },
            ..options.clone()
        };
        let report =
            verify::verify(&self.clusters.source, &self.clusters.destination, &options).await?;
        let views_synced = !self.ctx.options.pre_existing_destination_data;
        let mut unannounced = BTreeSet::new();
        if excuse_unannounced {
            for n in report.different().filter(|n| {
                n.destination.is_none()
                    && n.source
                        .as_ref()
                        .is_some_and(|s| s.kind != verify::NamespaceKind::View)
            }) {
                let Some((db, coll)) = n.namespace.split_once('.') else {
                    continue;
                };
                let empty = self
                    .ctx
                    .source
                    .database(db)
                    .collection::<bson::RawDocumentBuf>(coll)
                    .find_one(bson::doc! {})
                    .await?
                    .is_none();
                if empty {
                    unannounced.insert(n.namespace.clone());
                }
            }
        }
        Ok(report
            .different()
            .filter(|n| !unannounced.contains(&n.namespace))
            .filter(|n| {
                views_synced
                    || n.source
                        .as_ref()
                        .is_none_or(|s| s.kind != verify::NamespaceKind::View)
            })
            .flat_map(|n| {
                n.metadata_differences
                    .iter()
                    .map(move |d| format!("{}: {d}", n.namespace))
            })
            .collect())
    }

    /// A definition check during the sync. A difference is confirmed when the check before
    /// saw it too, the applier having applied the source up to that check's start since, with
    /// no definition change read in between.
    async fn check_definitions(&mut self) -> Result<(), JobError> {
        let applied = self.ctx.status.lock().applied_ts;
        let started = mongo::cluster_time(&self.ctx.source).await?;
        let found: BTreeSet<String> = self
            .compare_definitions(DocumentCheck::Skip)
            .await?
            .into_iter()
            .collect();
        let settled = match (&self.definitions.last, applied) {
            (Some((t, _)), Some(a)) => a >= *t,
            _ => false,
        };
        self.definitions.confirmed = match &self.definitions.last {
            Some((_, last)) if settled => found.intersection(last).cloned().collect(),
            // Not settled: what was confirmed stays so while it is still seen.
            _ => self
                .definitions
                .confirmed
                .intersection(&found)
                .cloned()
                .collect(),
        };
        self.definitions.last = Some((started, found));
        Ok(())
    }

    /// Writes the verifier's figures into the engine's status.
    fn publish(&self) {
        let ((first, count), pending) = {
            let q = self.queue();
            (q.confirmed(SHOWN), q.len() as u64)
        };
        let mut mismatches: Vec<String> = first.iter().map(recheck::describe).collect();
        mismatches.extend(self.definitions.confirmed.iter().cloned());
        let total = count + self.definitions.confirmed.len() as u64;
        let scanned = self.scanned_before as u64;
        let mut s = self.ctx.status.lock();
        let v = s.verification.get_or_insert_with(Default::default);
        if !v.verified {
            mismatches.truncate(SHOWN);
            v.mismatches = mismatches;
            v.mismatch_count = total;
        }
        v.pending_rechecks = pending;
        v.source.hashed_documents =
            self.hashed_before[0] + self.progress.source.hashed() + self.rechecked[0];
        v.destination.hashed_documents =
            self.hashed_before[1] + self.progress.destination.hashed() + self.rechecked[1];
        if !v.initial_done {
            v.source.scanned_collections = (scanned + self.progress.source.scanned())
                .min(v.source.total_collections.max(scanned));
            v.destination.scanned_collections = (scanned + self.progress.destination.scanned())
                .min(v.destination.total_collections.max(scanned));
        }
    }
}

/// Changed documents read from a stream, as queue entries: due at the change's time, or at
/// `due` when given.
fn queued(
    documents: &[(String, Bson, Timestamp)],
    due: Option<Timestamp>,
    source_changed: bool,
) -> Vec<Queued> {
    documents
        .iter()
        .map(|(ns, id, ts)| Queued {
            ns: ns.clone(),
            id: id.clone(),
            due: due.unwrap_or(*ts),
            source_changed,
        })
        .collect()
}

fn late_key(ns: &str, id: &Bson) -> (String, String) {
    (
        ns.to_string(),
        id.clone().into_relaxed_extjson().to_string(),
    )
}

/// What one read of both streams found.
struct StreamsRead {
    /// Both streams had nothing more.
    idle: bool,
    /// A stream returned as much as one read takes: more is waiting.
    full: bool,
}

/// Where a fresh verifier's source stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamsFrom {
    /// Where the copy started: every source document changed since the copy read it is
    /// queued for a comparison of its own, so the digests of what the copy read stand for
    /// the source's other documents (see [`copier_digests`]).
    CopyStart,
    /// Now, when the source's history no longer reaches back to the copy (the oplog moved
    /// on): the initial pass then reads the source again.
    Now,
}

/// The initial pass: every collection not yet compared, compared once.
struct InitialPass<'c> {
    ctx: &'c Ctx,
    clusters: &'c Clusters,
    store: VerifierStore,
    queue: Arc<std::sync::Mutex<Queue>>,
    scanned: BTreeSet<String>,
    options: VerifyOptions,
    /// During the sync, a collection compared again waits for the applier to pass the
    /// previous comparison; at commit everything is applied already.
    wait_for_applier: bool,
    /// Whether the source stream reaches back to the copy's start, which makes the digests
    /// the copy recorded usable in place of reading the source.
    source_since_copy: bool,
}

impl InitialPass<'_> {
    #[tracing::instrument(name = "verifier_initial_pass", skip_all)]
    async fn run(self) -> Result<(), JobError> {
        let ctx = self.ctx;
        let (src, dst) = tokio::try_join!(
            catalog::list_all(&ctx.source, &ctx.scope),
            catalog::list_all(&ctx.destination, &ctx.scope)
        )?;
        let with_docs = |specs: &[CollSpec]| -> Vec<CollSpec> {
            specs
                .iter()
                .filter(|s| s.kind != CollKind::View)
                .cloned()
                .collect()
        };
        let (src, dst) = (with_docs(&src), with_docs(&dst));
        let partitions = ctx.store.partitions().await?;
        let src_counts = copied_counts(&partitions);
        let known = if self.source_since_copy {
            copier_digests(&partitions, &src)
        } else {
            Default::default()
        };
        let known = Arc::new(known);
        let dst_counts = src_counts.clone();
        let (src_estimate, dst_estimate) = (
            src_counts.values().sum::<u64>(),
            dst_counts.values().sum::<u64>(),
        );
        {
            let mut s = ctx.status.lock();
            let v = s.verification.get_or_insert_with(Default::default);
            v.source.total_collections = src.len() as u64;
            v.destination.total_collections = dst.len() as u64;
            v.source.estimated_documents = src_estimate;
            v.destination.estimated_documents = dst_estimate;
        }
        let capped: BTreeSet<String> = src
            .iter()
            .chain(&dst)
            .filter(|s| s.is_capped())
            .map(CollSpec::ns)
            .collect();
        for ns in &capped {
            tracing::info!(ns = %ns, "capped collection: its documents are not verified (capped deletions have no change event), its definition is");
        }
        let todo: BTreeSet<String> = src
            .iter()
            .chain(&dst)
            .map(CollSpec::ns)
            .filter(|ns| !self.scanned.contains(ns))
            .collect();
        let todo: Vec<String> = todo.into_iter().collect();
        let started = Instant::now();
        let sizes: Vec<u64> = todo
            .iter()
            .map(|ns| {
                src_counts
                    .get(ns)
                    .copied()
                    .unwrap_or(0)
                    .max(dst_counts.get(ns).copied().unwrap_or(0))
            })
            .collect();
        for chunk in chunks_by_size(&todo, &sizes) {
            let (compare, skip): (Vec<String>, Vec<String>) =
                chunk.iter().cloned().partition(|ns| !capped.contains(ns));
            let mut left: BTreeSet<String> = compare.into_iter().collect();
            let mut attempt = 0;
            while !left.is_empty() {
                attempt += 1;
                // Small collections cost a round trip each more than they cost reading: more of
                // them are compared at once, as the copy copies them.
                let docs: u64 = left.iter().filter_map(|ns| src_counts.get(ns)).sum();
                let small = docs / (left.len() as u64).max(1) < SMALL_COLLECTION_DOCS;
                let options = VerifyOptions {
                    only: Some(left.clone()),
                    // Where a comparison with the copy's digest found a difference, the
                    // source was read then: a second round reads both sides again.
                    source_digests: (attempt == 1).then(|| known.clone()),
                    concurrency: if small {
                        SMALL_CONCURRENCY
                    } else {
                        self.options.concurrency
                    },
                    ..self.options.clone()
                };
                let report =
                    verify::verify(&self.clusters.source, &self.clusters.destination, &options)
                        .await?;
                let after = mongo::cluster_time(&ctx.source).await?;
                let mut queued = Vec::new();
                let mut done = Vec::new();
                for ns in &report.namespaces {
                    queued.extend(ns.mismatches.iter().filter_map(|m| {
                        Some(Queued {
                            ns: ns.namespace.clone(),
                            id: Bson::try_from(m.id.clone()).ok()?,
                            due: after,
                            source_changed: false,
                        })
                    }));
                    if !ns.more_mismatches || attempt >= INITIAL_ATTEMPTS {
                        done.push(ns.namespace.clone());
                    }
                }
                // A namespace gone from both sides since the listing is done too.
                for ns in &left {
                    if report.namespace(ns).is_none() {
                        done.push(ns.clone());
                    }
                }
                // On disk before the collections are recorded as compared.
                self.store.enqueue(&queued).await?;
                {
                    let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    q.add(&queued);
                    q.saved(&queued);
                }
                self.store.mark_scanned(&done).await?;
                for ns in &done {
                    left.remove(ns);
                }
                if !left.is_empty() && self.wait_for_applier {
                    tracing::info!(namespaces = ?left, "collections changing as they are compared; comparing them again once the applier catches up");
                    wait_for_applier(ctx, after).await;
                }
            }
            self.store.mark_scanned(&skip).await?;
        }
        tracing::info!(
            collections = todo.len(),
            // Compared with the digest the copy took of what it read, the source not read.
            source_from_copy = self.options.progress.as_ref().map_or(0, |p| p
                .source_reads_saved
                .load(std::sync::atomic::Ordering::Relaxed)),
            took_ms = started.elapsed().as_millis() as u64,
            "verifier initial pass finished"
        );
        let mut s = ctx.status.lock();
        let v = s.verification.get_or_insert_with(Default::default);
        v.initial_done = true;
        v.source.phase = VerifierPhase::StreamHashing;
        v.destination.phase = VerifierPhase::StreamHashing;
        v.source.scanned_collections = v.source.total_collections;
        v.destination.scanned_collections = v.destination.total_collections;
        // Until the next publication adds the rechecks in.
        if let Some(p) = &self.options.progress {
            v.source.hashed_documents = v.source.hashed_documents.max(p.source.hashed());
            v.destination.hashed_documents =
                v.destination.hashed_documents.max(p.destination.hashed());
        }
        Ok(())
    }
}

async fn wait_for_applier(ctx: &Ctx, until: Timestamp) {
    while ctx.status.lock().applied_ts.is_none_or(|a| a < until) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Documents per namespace as the copy counted them (its partitions): they size the initial
/// pass's rounds and are the estimated counts `/progress` shows. Asking both servers for every
/// collection's count cost two round trips per collection (4,000 for 2,000 collections); a
/// collection created since the copy counts as empty here.
fn copied_counts(partitions: &[PartitionDoc]) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for p in partitions {
        *counts.entry(format!("{}.{}", p.db, p.coll)).or_default() += p.copied_docs.max(0) as u64;
    }
    counts
}

/// The source digests the copy recorded, by namespace, for collections (`source`, as listed
/// now) it copied whole in this run: every partition finished with a digest, under the UUID
/// the collection still has. Time series (whose documents are buckets) and capped collections
/// (not compared) are left out.
///
/// Sound only with the source stream read from the copy's start: a document changed since
/// the copy read it has its own comparison queued, so the digest stands for the others, and
/// the destination is equal where its digest matches. A digest that does not match proves
/// nothing and the source is read after all.
fn copier_digests(
    partitions: &[PartitionDoc],
    source: &[CollSpec],
) -> std::collections::BTreeMap<String, Digest> {
    let uuids: std::collections::HashMap<String, &bson::Binary> = source
        .iter()
        .filter(|s| s.kind == CollKind::Collection && !s.is_capped())
        .filter_map(|s| Some((s.ns(), s.uuid.as_ref()?)))
        .collect();
    let mut out: std::collections::BTreeMap<String, Option<Digest>> = Default::default();
    for p in partitions {
        let ns = format!("{}.{}", p.db, p.coll);
        let usable =
            p.done && !p.recreate && p.uuid.is_some() && p.uuid.as_ref() == uuids.get(&ns).copied();
        let entry = out.entry(ns).or_insert(Some(Digest::new()));
        match (entry.as_mut(), p.digest.filter(|_| usable)) {
            (Some(total), Some(d)) => total.merge(&d),
            _ => *entry = None,
        }
    }
    out.into_iter()
        .filter_map(|(ns, d)| Some((ns, d?)))
        .collect()
}

/// `todo` in rounds of at most [`INITIAL_CHUNK_COLLECTIONS`] namespaces and, beyond the first,
/// [`INITIAL_CHUNK_DOCUMENTS`] documents.
/// `sizes` are the namespaces' document counts.
fn chunks_by_size<'t>(todo: &'t [String], sizes: &[u64]) -> Vec<&'t [String]> {
    let mut out = Vec::new();
    let (mut start, mut docs) = (0, 0u64);
    for i in 0..todo.len() {
        let n = sizes.get(i).copied().unwrap_or(0);
        let len = i - start;
        if len > 0 && (len >= INITIAL_CHUNK_COLLECTIONS || docs + n > INITIAL_CHUNK_DOCUMENTS) {
            out.push(&todo[start..i]);
            start = i;
            docs = 0;
        }
        docs += n;
    }
    if start < todo.len() {
        out.push(&todo[start..]);
    }
    out
}

/// The streams and rechecks, while the sync runs.
struct Follow<'v, 'a> {
    v: &'v mut Verifier<'a>,
}

impl Follow<'_, '_> {
    #[tracing::instrument(name = "verifier_follow", skip_all)]
    async fn run(self) -> Result<(), JobError> {
        let v = self.v;
        let mut definitions_at: Option<Instant> = None;
        let mut definitions_every = DEFINITIONS_EVERY;
        let mut published_at: Option<Instant> = None;
        let mut checkpoint_at = Instant::now();
        loop {
            let (applied, lag) = {
                let s = v.ctx.status.lock();
                (s.applied_ts, s.lag_secs())
            };
            // While the applier works off a backlog the verifier steps aside: reading both
            // streams and comparing documents as fast as the applier writes them slowed the
            // catch-up to a quarter of its rate on the test servers. The changes wait in the
            // oplogs (as with mongosync's verifier, the destination's must hold them), and a
            // document changed many times meanwhile is compared once.
            if lag.is_none_or(|l| l > RECHECK_LAG_SECS) {
                v.age_lag();
                if published_at.is_none_or(|t| t.elapsed() >= PUBLISH_EVERY) {
                    v.publish();
                    published_at = Some(Instant::now());
                }
                tokio::time::sleep(IDLE_PAUSE).await;
                continue;
            }
            let started = Instant::now();
            let read = v.read_streams().await?;
            let mut full = read.full;
            if let Some(applied) = applied {
                let due = v.queue().due(Some(applied), RECHECK_BATCH);
                full |= due.len() >= RECHECK_BATCH;
                if !due.is_empty() {
                    v.recheck(due).await?;
                }
            }
            // Not while the initial pass runs: with thousands of collections a check lists
            // every collection's indexes on both sides, and it slowed the pass it competed
            // with; a definition difference needs two sightings to be confirmed anyway, and
            // the commit compares definitions again.
            let initial_done = v
                .ctx
                .status
                .lock()
                .verification
                .as_ref()
                .is_some_and(|s| s.initial_done);
            if initial_done && definitions_at.is_none_or(|t| t.elapsed() >= definitions_every) {
                let started = Instant::now();
                v.check_definitions().await?;
                // Thousands of collections make a check long: it then takes at most a tenth
                // of the verifier's time.
                definitions_every = DEFINITIONS_EVERY.max(started.elapsed() * 10);
                definitions_at = Some(Instant::now());
            }
            if checkpoint_at.elapsed() >= CHECKPOINT_EVERY {
                v.checkpoint().await?;
                checkpoint_at = Instant::now();
            }
            if published_at.is_none_or(|t| t.elapsed() >= PUBLISH_EVERY) {
                v.publish();
                published_at = Some(Instant::now());
            }
            // A steady trickle is read a few times a second, not in a tight loop of reads
            // that each bring a handful of events; a full read is followed at once.
            if !full {
                tokio::time::sleep(POLL_EVERY.saturating_sub(started.elapsed())).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, uuid: u8, options: bson::Document) -> CollSpec {
        CollSpec {
            db: "db".into(),
            name: name.into(),
            kind: CollKind::Collection,
            options,
            uuid: Some(bson::Binary {
                subtype: bson::spec::BinarySubtype::Uuid,
                bytes: vec![uuid; 16],
            }),
        }
    }

    fn part(spec: &CollSpec, index: i32, hash: Option<u64>) -> PartitionDoc {
        PartitionDoc {
            index,
            done: true,
            digest: hash.map(|h| {
                let mut d = Digest::new();
                d.add_hash(h);
                d
            }),
            ..crate::engine::sync::copy::whole_collection(spec)
        }
    }

    #[test]
    fn the_copy_digest_stands_for_a_collection_only_when_it_is_whole_and_still_the_same() {
        let whole = spec("whole", 1, bson::doc! {});
        let unfinished = spec("unfinished", 2, bson::doc! {});
        let unhashed = spec("unhashed", 3, bson::doc! {});
        let recreated = spec("recreated", 4, bson::doc! {});
        let capped = spec("capped", 5, bson::doc! { "capped": true, "size": 4096 });
        let listed = vec![
            whole.clone(),
            unfinished.clone(),
            unhashed.clone(),
            // Dropped and made again since the copy: another UUID.
            spec("recreated", 9, bson::doc! {}),
            capped.clone(),
        ];
        let mut parts = vec![
            part(&whole, 0, Some(1)),
            part(&whole, 1, Some(2)),
            part(&unfinished, 0, Some(1)),
            PartitionDoc {
                done: false,
                ..part(&unfinished, 1, Some(2))
            },
            part(&unhashed, 0, Some(1)),
            part(&unhashed, 1, None),
            part(&recreated, 0, Some(1)),
            part(&capped, 0, Some(1)),
        ];
        // Renamed away since: not listed at all.
        parts.push(part(&spec("gone", 6, bson::doc! {}), 0, Some(1)));
        let known = copier_digests(&parts, &listed);
        let mut both = Digest::new();
        both.add_hash(1);
        both.add_hash(2);
        assert_eq!(
            known.into_iter().collect::<Vec<_>>(),
            vec![("db.whole".to_string(), both)]
        );
    }

    #[test]
    fn rounds_hold_many_small_collections_and_few_large_ones() {
        let todo: Vec<String> = (0..600).map(|i| format!("db.c{i:04}")).collect();
        let small = chunks_by_size(&todo, &[10; 600]);
        assert_eq!(
            small.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![256, 256, 88]
        );
        let large = chunks_by_size(&todo[..3], &[1_000_000; 3]);
        assert_eq!(
            large.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        let mixed = chunks_by_size(&todo[..4], &[20_000, 70_000, 20_000, 90_000]);
        assert_eq!(
            mixed.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![2, 1, 1]
        );
        assert!(chunks_by_size(&[], &[]).is_empty());
    }
}
