//! What the engine knows about itself right now, shared between the sync job, the monitor and
//! the HTTP API, and rendered as mongosync's `/progress` document.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bson::Timestamp;
#[cfg(test)]
use serde_json::Value;

use crate::contract::options::StartOptions;
use crate::contract::progress::{
    self, CeaStage, CollectionCopy, DirectionMapping, IndexBuilding, Lag, NamespacePhase,
    NamespaceProgress, Namespaces, Ping, Progress, ProgressReply, VerifierPhase,
};
use crate::contract::state::{Phase, State};
use crate::engine::rate::{self, RateWindow};

/// `canCommit` needs lag at or under this, as in mongosync 1.21+.
pub const COMMIT_LAG_LIMIT_SECS: i64 = 30;

#[derive(Debug, Default)]
pub struct Counters {
    pub copied_bytes: AtomicI64,
    pub events_applied: AtomicU64,
    /// Documents copied by partitions that finished, in this process.
    pub copied_docs: AtomicU64,
    pub partitions_copied: AtomicU64,
    /// Change events applied, by [`EventKind`].
    pub events_by_kind: [AtomicU64; 5],
    /// Times the sync was interrupted by an error and retried.
    pub retries: AtomicU64,
    /// Documents read from the source and written whole because a change to them could not
    /// be replayed exactly (see `cea::repair`).
    pub documents_repaired: AtomicU64,
    /// Collections copied again whole because a DDL event overtook their copy.
    pub collections_recopied: AtomicU64,
    /// Copy progress by namespace, from the planned partitions and those finished.
    pub collections: Mutex<BTreeMap<String, CollectionProgress>>,
    /// When the copy's first insert in this process was sent, and the copied bytes then: where
    /// the copy's rate window starts. Bytes land in lumps (a batch at a time, several in
    /// flight); counting from the first lump would credit the window with bytes sent before it.
    pub copy_flowing: Mutex<Option<(Instant, i64)>>,
    /// When the copy's latest batch landed, and the copied bytes then.
    pub copy_landed: Mutex<Option<(Instant, i64)>>,
}

/// One collection's copy, for `/progress.namespaces` and the per-collection metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CollectionProgress {
    pub partitions: u64,
    pub partitions_done: u64,
    /// Bytes on the destination: finished partitions, checkpoints, and batches landed since.
    pub copied_bytes: i64,
    pub copied_docs: i64,
    /// The planned partitions' estimated size.
    pub total_bytes: i64,
    /// The planned partitions' estimated documents (0: not known).
    pub total_docs: i64,
    /// When its first batch landed in this process, and what was copied before it.
    pub started: Option<(Instant, i64)>,
    /// Its indexes are built after the copy and are not built yet: once copied it is
    /// "building indexes", not done (it would otherwise go back from done when the index
    /// builds start).
    pub indexes_pending: bool,
    /// Being copied again whole (a DDL change overtook its copy).
    pub recopying: bool,
}

impl CollectionProgress {
    /// Where it is.
    pub fn phase(&self) -> NamespacePhase {
        if self.recopying {
            NamespacePhase::Recopying
        } else if self.partitions_done < self.partitions {
            if self.started.is_some() || self.copied_bytes > 0 {
                NamespacePhase::Copying
            } else {
                NamespacePhase::Waiting
            }
        } else if self.indexes_pending {
            NamespacePhase::BuildingIndexes
        } else {
            NamespacePhase::Done
        }
    }

    /// Records a batch that landed.
    fn landed(&mut self, bytes: i64, docs: i64, now: Instant) {
        self.started.get_or_insert((now, self.copied_bytes));
        self.copied_bytes += bytes;
        self.copied_docs += docs;
    }

    /// Its pace since its first batch in this process (5 s of it at least).
    fn per_second(&self, now: Instant) -> Option<f64> {
        let (at, before) = self.started?;
        rate::since(
            at,
            now,
            self.copied_bytes - before,
            std::time::Duration::from_secs(5),
        )
    }
}

/// Told as each batch of a copy lands on the destination, so that progress moves smoothly.
pub trait Landed: Sync {
    /// A batch is about to be sent.
    fn sending(&self) {}
    fn landed(&self, db: &str, coll: &str, bytes: i64, docs: i64);
}

/// The overall count alone.
impl Landed for AtomicI64 {
    fn landed(&self, _db: &str, _coll: &str, bytes: i64, _docs: i64) {
        self.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// The initial copy: the overall count and the namespace's.
impl Landed for Counters {
    fn sending(&self) {
        let mut f = self.copy_flowing.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some((Instant::now(), self.copied_bytes.load(Ordering::Relaxed)));
        }
    }

    fn landed(&self, db: &str, coll: &str, bytes: i64, docs: i64) {
        let now = Instant::now();
        let total = self.copied_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        {
            let mut l = self.copy_landed.lock().unwrap_or_else(|p| p.into_inner());
            if l.is_none_or(|(_, t)| total > t) {
                *l = Some((now, total));
            }
        }
        self.collections()
            .entry(format!("{db}.{coll}"))
            .or_default()
            .landed(bytes, docs, Instant::now());
    }
}

/// A collection copied again whole after the copy: its namespace's count only (the overall
/// copied bytes are the initial copy's, as in mongosync).
pub struct Recopy<'a>(pub &'a Counters);

impl Landed for Recopy<'_> {
    fn landed(&self, db: &str, coll: &str, bytes: i64, docs: i64) {
        self.0
            .collections()
            .entry(format!("{db}.{coll}"))
            .or_default()
            .landed(bytes, docs, Instant::now());
    }
}

/// The kinds of change event counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Insert = 0,
    Update = 1,
    Replace = 2,
    Delete = 3,
    Ddl = 4,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Insert,
        EventKind::Update,
        EventKind::Replace,
        EventKind::Delete,
        EventKind::Ddl,
    ];

    pub fn of(operation_type: &str) -> EventKind {
        match operation_type {
            "insert" => EventKind::Insert,
            "update" => EventKind::Update,
            "replace" => EventKind::Replace,
            "delete" => EventKind::Delete,
            _ => EventKind::Ddl,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Insert => "insert",
            EventKind::Update => "update",
            EventKind::Replace => "replace",
            EventKind::Delete => "delete",
            EventKind::Ddl => "ddl",
        }
    }
}

impl Counters {
    /// A copy starts (or starts again) in this process: its rate is measured from its own
    /// first insert and landings.
    pub fn copy_starts(&self) {
        *self.copy_flowing.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.copy_landed.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub fn applied(&self, kind: EventKind, n: u64) {
        self.events_by_kind[kind as usize].fetch_add(n, Ordering::Relaxed);
        self.events_applied.fetch_add(n, Ordering::Relaxed);
    }

    pub fn collections(&self) -> MutexGuard<'_, BTreeMap<String, CollectionProgress>> {
        self.collections.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the embedded verifier reports in `/progress.verification`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerificationStatus {
    pub source: VerifierSide,
    pub destination: VerifierSide,
    /// Every namespace has had its initial pass on both sides.
    pub initial_done: bool,
    /// Differences confirmed by a re-read after the change applier had passed them, one
    /// sentence each (the first few).
    pub mismatches: Vec<String>,
    /// How many differences are confirmed in all.
    pub mismatch_count: u64,
    /// Documents waiting to be compared again.
    pub pending_rechecks: u64,
    /// The final comparison at commit found both clusters equal.
    pub verified: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VerifierSide {
    pub phase: VerifierPhase,
    pub estimated_documents: u64,
    pub hashed_documents: u64,
    pub scanned_collections: u64,
    pub total_collections: u64,
    /// How far the verifier's change stream on this side is behind it.
    pub lag_secs: Option<i64>,
}

impl VerificationStatus {
    fn lag_secs(&self) -> Option<i64> {
        self.source.lag_secs.max(self.destination.lag_secs)
    }

    /// Why the verifier holds `canCommit` back, if it does.
    fn commit_blocker(&self) -> Option<String> {
        if self.mismatch_count > 0 {
            return Some(format!(
                "the embedded verifier found {} difference(s) between the clusters: {}; polling alone will not clear them: make those documents or definitions on the destination equal to the source's (the verifier rechecks them and the difference heals), or start the migration over",
                self.mismatch_count,
                self.mismatches.join("; ")
            ));
        }
        if !self.initial_done {
            return Some(format!(
                "the embedded verifier's initial pass is not finished ({} of {} collections on the source, {} of {} on the destination)",
                self.source.scanned_collections,
                self.source.total_collections,
                self.destination.scanned_collections,
                self.destination.total_collections,
            ));
        }
        match self.lag_secs() {
            Some(l) if l > COMMIT_LAG_LIMIT_SECS => Some(format!(
                "the embedded verifier's lag is {l} s; it must be at most {COMMIT_LAG_LIMIT_SECS} s"
            )),
            _ => None,
        }
    }

    fn to_contract(&self) -> progress::Verification {
        let side = |s: &VerifierSide| progress::VerifierSide {
            estimated_document_count: s.estimated_documents,
            hashed_document_count: s.hashed_documents,
            lag_time_seconds: s.lag_secs.unwrap_or(0),
            total_collection_count: s.total_collections,
            scanned_collection_count: s.scanned_collections,
            phase: s.phase,
        };
        progress::Verification {
            source: side(&self.source),
            destination: side(&self.destination),
            // Not in mongosync's reply (mongosync fails the migration instead): what differs,
            // for people and for the operator's `Verified` condition.
            mismatch_count: (self.mismatch_count > 0).then_some(self.mismatch_count),
            mismatches: if self.mismatch_count > 0 {
                self.mismatches.clone()
            } else {
                Vec::new()
            },
            verified: self.verified,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: State,
    pub phase: Option<Phase>,
    pub options: Option<StartOptions>,
    pub can_write: bool,
    pub total_bytes: i64,
    /// Latest source time seen.
    pub source_now: Option<Timestamp>,
    /// Everything on the source up to this time has been applied.
    pub applied_ts: Option<Timestamp>,
    /// Source time of the oldest change read but not yet applied. Lag is measured from it when
    /// there is one: after a quiet spell the source's clock has not moved since the last
    /// applied change, so `source_now - applied_ts` would count the quiet spell as lag.
    pub oldest_unapplied: Option<Timestamp>,
    pub crud_ts: Option<Timestamp>,
    pub ddl_ts: Option<Timestamp>,
    pub copy_finished_ts: Option<Timestamp>,
    pub commit_ts: Option<Timestamp>,
    /// The index builds after the copy (`indexBuilding`).
    pub indexes: Option<IndexBuilding>,
    /// Source time of the oldest entry in the source's oplog (from the monitor).
    pub oplog_first_secs: Option<u32>,
    /// The lag last sampled by [`StatusCell::sample_lag`], and when.
    pub lag_sample: Option<(std::time::Instant, i64)>,
    /// Seconds of lag shed per second lately (smoothed); `None` or negative while it grows.
    pub catchup_rate: Option<f64>,
    /// Whether the source's oplog has ever dropped an entry: until then its window is the
    /// replica set's age, and the oplog warning would cry wolf.
    pub oplog_rolled_over: bool,
    /// Source time the sync started from (the oldest entry it may still need).
    pub start_ts: Option<Timestamp>,
    /// The copied bytes over the last minute, sampled by the monitor while the copy runs.
    pub copy_rate: RateWindow,
    /// By cluster label index: `None` not measured, `Some(-1)` failed.
    pub ping_ms: [Option<i64>; 2],
    pub warnings: BTreeMap<String, String>,
    pub fatal: Option<String>,
    pub write_blocking: crate::contract::write_blocking::Mode,
    /// `None` when verification is off.
    pub verification: Option<VerificationStatus>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            state: State::Initializing,
            phase: None,
            options: None,
            can_write: false,
            total_bytes: 0,
            source_now: None,
            applied_ts: None,
            oldest_unapplied: None,
            crud_ts: None,
            ddl_ts: None,
            copy_finished_ts: None,
            commit_ts: None,
            indexes: None,
            oplog_first_secs: None,
            oplog_rolled_over: false,
            lag_sample: None,
            catchup_rate: None,
            start_ts: None,
            copy_rate: RateWindow::default(),
            ping_ms: [None, None],
            warnings: BTreeMap::new(),
            fatal: None,
            write_blocking: crate::contract::write_blocking::Mode::None,
            verification: None,
        }
    }
}

impl Snapshot {
    /// mongosync's `estimatedOplogTimeRemaining`: how long until the oldest source entry the
    /// sync still needs leaves the oplog, if the oplog keeps its current span. `None` until
    /// the oplog has been read.
    pub fn oplog_time_remaining_secs(&self) -> Option<u64> {
        let first = self.oplog_first_secs?;
        let needed = self.applied_ts.or(self.start_ts)?;
        Some(needed.time.saturating_sub(first) as u64)
    }

    /// Seconds the copy still needs at the rate measured over the last minute, while it runs
    /// (`estimatedSecondsToCopyComplete`). Absent until that rate has enough signal.
    ///
    /// Work lands in lumps, a batch at a time with several in flight. The finish is predicted
    /// when the latest lump landed (`landed`: when, and the copied bytes then), from the rate up
    /// to then, and counted down from there: measured at any other moment, the rate would
    /// sag between lumps and jump at each. Once that prediction has run out the copy is
    /// slower than it was, and the rate up to now takes over.
    pub fn copy_time_remaining_secs(
        &self,
        copied: i64,
        landed: Option<(Instant, i64)>,
    ) -> Option<u64> {
        if self.phase != Some(Phase::Copy) || self.state != State::Running {
            return None;
        }
        let now = Instant::now();
        let remaining = self.total_bytes - copied;
        let predicted = landed.and_then(|(at, value)| {
            let eta = rate::eta_secs(remaining, self.copy_rate.per_second_at(at, value))?;
            let left = eta - now.saturating_duration_since(at).as_secs() as i64;
            (left > 0).then_some(left)
        });
        predicted
            .or_else(|| rate::eta_secs(remaining, self.copy_rate.per_second_at(now, copied)))
            .map(|s| s as u64)
    }

    pub fn lag_secs(&self) -> Option<i64> {
        let applied = self.applied_ts?;
        // Committed: everything the source held at the commit is applied, and nothing more
        // is to come; the source's clock moving on is not lag.
        if self.state == State::Committed {
            return Some(0);
        }
        let behind_from = self.oldest_unapplied.unwrap_or(applied).max(applied);
        // Committing: the source is blocked at the commit point, and only what came before
        // it remains to apply; the source's clock moving on is not lag (it reaches 0).
        let now = match (self.state, self.commit_ts) {
            (State::Committing, Some(c)) => c,
            _ => self.source_now.unwrap_or(applied),
        };
        Some((now.time as i64 - behind_from.time as i64).max(0))
    }

    /// Why `/commit` would be refused now, or `None` if it would be accepted.
    pub fn commit_blocker(&self) -> Option<String> {
        if self.state != State::Running {
            return Some(format!("the state is {}", self.state.as_str()));
        }
        if let Some(f) = &self.fatal {
            return Some(format!("the sync stopped on an error: {f}"));
        }
        match self.phase {
            Some(Phase::ChangeEvents) => {}
            Some(Phase::IndexBuild) => return Some("indexes are still being built".into()),
            _ => return Some("the initial collection copy is not finished".into()),
        }
        match self.lag_secs() {
            None => Some("no change event has been applied yet".into()),
            Some(l) if l > COMMIT_LAG_LIMIT_SECS => Some(format!(
                "lag is {l} s; it must be at most {COMMIT_LAG_LIMIT_SECS} s"
            )),
            _ => self
                .verification
                .as_ref()
                .and_then(VerificationStatus::commit_blocker),
        }
    }
}

/// The shared cell. Locks are held only to copy or change a few fields.
#[derive(Debug, Default)]
pub struct StatusCell {
    inner: Mutex<Snapshot>,
    pub counters: Counters,
    /// Set once the sync stopped for good in this process (not when a stop is restored).
    stopped_here: std::sync::atomic::AtomicBool,
    stop: tokio::sync::Notify,
}

impl StatusCell {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    /// The sync stopped for good in this process: `/progress` reports why (`syncError`), and
    /// [`StatusCell::stopped`] wakes whoever ends the process.
    pub fn fail(&self, message: impl Into<String>) {
        self.lock().fatal = Some(message.into());
        self.stopped_here.store(true, Ordering::SeqCst);
        self.stop.notify_waiters();
    }

    /// Samples the lag (the monitor calls this every few seconds) and updates how fast it is
    /// falling, for `estimatedSecondsToCEACatchup`.
    pub fn sample_lag(&self) {
        let mut s = self.lock();
        let now = std::time::Instant::now();
        let (Some(lag), true) = (
            s.lag_secs(),
            s.phase == Some(Phase::ChangeEvents) && s.state == State::Running,
        ) else {
            s.lag_sample = None;
            s.catchup_rate = None;
            return;
        };
        match s.lag_sample {
            // Every monitor tick (2 s): a backlog after `/resume` is often gone within
            // seconds, and a longer window would report nothing while it falls.
            Some((at, before)) if now.duration_since(at).as_secs_f64() >= 1.5 => {
                let rate = (before - lag) as f64 / now.duration_since(at).as_secs_f64();
                s.catchup_rate = Some(match s.catchup_rate {
                    Some(r) => 0.5 * r + 0.5 * rate,
                    None => rate,
                });
                s.lag_sample = Some((now, lag));
            }
            Some(_) => {}
            None => s.lag_sample = Some((now, lag)),
        }
    }

    /// Samples the copied bytes (the monitor calls this every few seconds), for the copy's
    /// ETA. Outside a running copy the window is emptied: a pause is no pace.
    pub fn sample_copy(&self) {
        let copied = self.counters.copied_bytes.load(Ordering::Relaxed);
        let flowing = *self
            .counters
            .copy_flowing
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut s = self.lock();
        match flowing {
            // Nothing sent yet: opening cursors and creating collections are not its pace.
            Some((at, base)) if s.phase == Some(Phase::Copy) && s.state == State::Running => {
                if s.copy_rate.is_empty() {
                    s.copy_rate.sample(at, base);
                }
                s.copy_rate.sample(Instant::now(), copied);
            }
            _ => s.copy_rate.clear(),
        }
    }

    /// Resolves once [`StatusCell::fail`] was called in this process.
    pub async fn stopped(&self) {
        loop {
            let woken = self.stop.notified();
            if self.stopped_here.load(Ordering::SeqCst) {
                return;
            }
            woken.await;
        }
    }

    pub fn warn(&self, key: &str, message: impl Into<String>) {
        self.lock().warnings.insert(key.to_string(), message.into());
    }

    pub fn clear_warning(&self, key: &str) {
        self.lock().warnings.remove(key);
    }

    /// Records that everything up to `ts` is applied (never moves backwards).
    pub fn applied_through(&self, ts: Timestamp) {
        let mut s = self.lock();
        if s.applied_ts.is_none_or(|a| ts > a) {
            s.applied_ts = Some(ts);
        }
        if s.source_now.is_none_or(|n| ts > n) {
            s.source_now = Some(ts);
        }
    }

    /// Starts the progress anew for a reversal, from `from` on the new source.
    pub fn restart_from(&self, from: Timestamp) {
        let mut s = self.lock();
        s.applied_ts = Some(from);
        s.oldest_unapplied = None;
        s.source_now = None;
        s.crud_ts = None;
        s.ddl_ts = None;
        s.commit_ts = None;
        s.can_write = false;
        s.start_ts = Some(from);
        s.copy_finished_ts = Some(from);
        s.oplog_first_secs = None;
    }

    /// Records the oldest change read and not yet applied (`None`: everything read is applied).
    pub fn unapplied_from(&self, ts: Option<Timestamp>) {
        self.lock().oldest_unapplied = ts;
    }

    pub fn saw_source_time(&self, ts: Timestamp) {
        let mut s = self.lock();
        if s.source_now.is_none_or(|n| ts > n) {
            s.source_now = Some(ts);
        }
    }
}

/// Renders `/progress` following mongosync's rules: in IDLE (and INITIALIZING) every field
/// but `state` and `canCommit` is null; in PAUSED `lag` and `lagTimeSeconds` are null.
pub fn progress_reply(
    snap: &Snapshot,
    counters: &Counters,
    hosts: [&str; 2],
    engine_id: &str,
) -> ProgressReply {
    let null_all = matches!(snap.state, State::Idle | State::Initializing);
    let blocker = snap.commit_blocker();
    let can_commit = blocker.is_none();
    let mut warnings: Vec<String> = snap.warnings.values().cloned().collect();
    if let Some(f) = &snap.fatal {
        warnings.insert(0, f.clone());
    }
    let mut p = Progress::nulls(snap.state, can_commit);
    // Not in mongosync's reply (mongosync exits instead): tells a supervisor, such as the
    // operator, that the sync stopped for good rather than merely warning.
    p.sync_error = snap.fatal.clone();
    if null_all {
        p.warnings = warnings;
        return ProgressReply {
            progress: p,
            success: true,
        };
    }
    let paused = snap.state == State::Paused;
    let lag = snap.lag_secs();
    let in_cea = snap.phase == Some(Phase::ChangeEvents);
    let info = match snap.state {
        State::Committed => progress::INFO_COMMITTED,
        State::Committing => progress::INFO_COMMITTING,
        _ => snap
            .phase
            .map(|p| p.info())
            .unwrap_or(progress::INFO_COLLECTION_COPY),
    };
    p.can_write = Some(snap.can_write);
    p.info = Some(info.to_string());
    if snap.state == State::Running && snap.fatal.is_none() {
        p.commit_blocker = blocker;
    }
    if in_cea && !paused {
        let drain = match (snap.applied_ts, snap.copy_finished_ts) {
            (Some(a), Some(c)) => a < c,
            _ => true,
        };
        p.cea_stage = Some(if drain {
            CeaStage::CollectionCopyDrain
        } else {
            CeaStage::SteadyState
        });
    }
    // CRUD and DDL events come through one stream and are applied in order, so each kind's
    // lag is the overall lag once an event of that kind has been applied.
    let kind_lag = |seen: Option<Timestamp>| seen.and(lag);
    if !paused && lag.is_some() {
        p.lag = Some(Lag {
            overall_lag_seconds: lag,
            crud_lag_seconds: kind_lag(snap.crud_ts.or(snap.applied_ts)),
            ddl_lag_seconds: kind_lag(snap.ddl_ts),
        });
        p.lag_time_seconds = lag;
    }
    p.total_events_applied = Some(counters.events_applied.load(Ordering::Relaxed));
    // mongosync: only during change event application, and only while the lag falls.
    if let (true, false, Some(l), Some(rate)) = (in_cea, paused, lag, snap.catchup_rate) {
        if l > 0 && rate > 0.01 {
            p.estimated_seconds_to_cea_catchup = Some((l as f64 / rate).ceil() as i64);
        }
    }
    let copied = counters.copied_bytes.load(Ordering::Relaxed);
    let (total, copied) = match snap.phase {
        Some(Phase::Catalog) | None => (1, 0),
        Some(Phase::Copy) => (snap.total_bytes.max(copied).max(1), copied),
        // After the copy the estimate is what was copied, as in mongosync 1.21+.
        _ => (copied, copied),
    };
    p.collection_copy = Some(CollectionCopy {
        estimated_total_bytes: total,
        estimated_copied_bytes: copied,
    });
    let landed = *counters
        .copy_landed
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if snap.state == State::Running {
        p.estimated_seconds_to_copy_complete = snap
            .copy_time_remaining_secs(copied, landed)
            .map(|s| s as i64);
    }
    let now = Instant::now();
    p.namespaces = namespaces(
        &counters.collections(),
        snap.copy_rate
            .per_second_at(now, copied)
            .filter(|_| snap.phase == Some(Phase::Copy)),
        now,
    );
    if let Some(i) = snap.indexes {
        if in_cea || snap.phase == Some(Phase::IndexBuild) {
            p.index_building = Some(i);
        }
    }
    if let Some(o) = &snap.options {
        let s = o.source;
        let d = o.destination;
        p.direction_mapping = Some(DirectionMapping {
            source: format!("{}: {}", s.as_str(), hosts[s.index()]),
            destination: format!("{}: {}", d.as_str(), hosts[d.index()]),
        });
        let ping = |i: usize| Ping {
            ping_latency_ms: snap.ping_ms[i].filter(|ms| *ms >= 1 || *ms == -1),
        };
        p.source = Some(ping(s.index()));
        p.destination = Some(ping(d.index()));
    }
    p.verification = snap.verification.as_ref().map(|v| v.to_contract());
    p.mongosync_id = Some(engine_id.to_string());
    p.coordinator_id = Some(engine_id.to_string());
    if snap.state == State::Running && !snap.can_write {
        let remaining = snap.oplog_time_remaining_secs();
        p.estimated_oplog_time_remaining = Some(remaining.map_or(
            "not checked yet".to_string(),
            crate::preflight::checks::human_duration,
        ));
        // The oplog must outlast what is left to do: the copy, then catching up.
        let needed = snap.copy_time_remaining_secs(copied, landed).unwrap_or(0)
            + lag.unwrap_or(0).max(0) as u64;
        if let Some(r) = remaining {
            if snap.oplog_rolled_over && r < needed + OPLOG_MARGIN_SECS {
                warnings.push(format!(
                    "{}: the source's oplog drops the oldest entry the sync still needs in {}, which does not cover what the sync has left ({} to finish the copy and catch up) plus a 15-minute margin; enlarge the source oplog (replSetResizeOplog) now",
                    crate::preflight::checks::OPLOG_TOO_SMALL,
                    crate::preflight::checks::human_duration(r),
                    crate::preflight::checks::human_duration(needed)
                ));
            }
        }
    }
    p.warnings = warnings;
    ProgressReply {
        progress: p,
        success: true,
    }
}

/// `/progress.namespaces`: every namespace counted by phase, the ones with the most left to do
/// listed first. `None` when no copy was planned in this process.
pub fn namespaces(
    colls: &BTreeMap<String, CollectionProgress>,
    copy_rate: Option<f64>,
    now: Instant,
) -> Option<Namespaces> {
    if colls.is_empty() {
        return None;
    }
    let mut out = Namespaces {
        copy_bytes_per_second: copy_rate,
        ..Namespaces::default()
    };
    let mut listed: Vec<NamespaceProgress> = Vec::with_capacity(colls.len());
    for (ns, c) in colls {
        let phase = c.phase();
        let n = &mut out.counts;
        *match phase {
            NamespacePhase::Waiting => &mut n.waiting,
            NamespacePhase::Copying => &mut n.copying,
            NamespacePhase::BuildingIndexes => &mut n.building_indexes,
            NamespacePhase::Done => &mut n.done,
            NamespacePhase::Recopying => &mut n.recopying,
        } += 1;
        let copying = matches!(phase, NamespacePhase::Copying | NamespacePhase::Recopying);
        let per_second = c.per_second(now).filter(|_| copying);
        // Once copied, what was copied is the size (as for the overall count, as in
        // mongosync); a recopy's size is not planned: what it has copied is all that is known.
        let total = if c.partitions_done >= c.partitions && !c.recopying {
            c.copied_bytes
        } else {
            c.total_bytes.max(c.copied_bytes)
        };
        listed.push(NamespaceProgress {
            namespace: ns.clone(),
            phase,
            copied_documents: c.copied_docs,
            total_documents: if c.partitions_done >= c.partitions && !c.recopying {
                Some(c.copied_docs)
            } else {
                (c.total_docs > 0).then(|| c.total_docs.max(c.copied_docs))
            },
            copied_bytes: c.copied_bytes,
            total_bytes: total,
            bytes_per_second: per_second,
            estimated_seconds_remaining: rate::eta_secs(total - c.copied_bytes, per_second)
                .filter(|_| phase == NamespacePhase::Copying),
        });
    }
    // Most left to do first: by phase (copying, re-copying, waiting, building indexes, done),
    // then the longest ETA, then the most bytes left.
    listed.sort_by(|a, b| {
        a.phase
            .cmp(&b.phase)
            .then(
                b.estimated_seconds_remaining
                    .cmp(&a.estimated_seconds_remaining),
            )
            .then((b.total_bytes - b.copied_bytes).cmp(&(a.total_bytes - a.copied_bytes)))
            .then(a.namespace.cmp(&b.namespace))
    });
    out.omitted = listed.len().saturating_sub(Namespaces::LISTED) as u64;
    listed.truncate(Namespaces::LISTED);
    out.collections = listed;
    Some(out)
}

/// Slack kept between the oplog's remaining time and the work left.
const OPLOG_MARGIN_SECS: u64 = 15 * 60;

#[cfg(test)]
mod tests {
    use super::*;

    /// `/progress` as its clients see it.
    fn progress_json(
        snap: &Snapshot,
        counters: &Counters,
        hosts: [&str; 2],
        engine_id: &str,
    ) -> Value {
        serde_json::to_value(progress_reply(snap, counters, hosts, engine_id)).unwrap()
    }
    use crate::contract::options::{ClusterLabel, StartOptions};

    fn opts() -> StartOptions {
        serde_json::from_str(r#"{"source":"cluster1","destination":"cluster0"}"#).unwrap()
    }

    #[test]
    fn idle_is_all_null_but_state_and_can_commit() {
        let s = Snapshot {
            state: State::Idle,
            ..Default::default()
        };
        let v = progress_json(&s, &Counters::default(), ["a:1", "b:2"], "coordinator");
        let p = &v["progress"];
        assert_eq!(p["state"], "IDLE");
        assert_eq!(p["canCommit"], false);
        for k in [
            "canWrite",
            "info",
            "lag",
            "lagTimeSeconds",
            "collectionCopy",
            "directionMapping",
        ] {
            assert!(p[k].is_null(), "{k}");
        }
    }

    #[test]
    fn the_verifier_holds_can_commit_back_and_reports_mongosync_fields() {
        let mut snap = Snapshot {
            state: State::Running,
            phase: Some(Phase::ChangeEvents),
            applied_ts: Some(Timestamp {
                time: 100,
                increment: 1,
            }),
            source_now: Some(Timestamp {
                time: 100,
                increment: 1,
            }),
            verification: Some(VerificationStatus::default()),
            ..Snapshot::default()
        };
        let why = snap.commit_blocker().unwrap();
        assert!(why.contains("initial pass is not finished"), "{why}");
        let v = snap.verification.as_mut().unwrap();
        v.initial_done = true;
        v.source.phase = VerifierPhase::StreamHashing;
        v.destination.lag_secs = Some(45);
        let why = snap.commit_blocker().unwrap();
        assert!(why.contains("verifier's lag is 45 s"), "{why}");
        let v = snap.verification.as_mut().unwrap();
        v.destination.lag_secs = Some(0);
        assert_eq!(snap.commit_blocker(), None);
        let v = snap.verification.as_mut().unwrap();
        v.mismatch_count = 1;
        v.mismatches = vec!["a.b: _id 7 different content".into()];
        let why = snap.commit_blocker().unwrap();
        assert!(why.contains("a.b: _id 7 different content"), "{why}");
        let p = progress_json(&snap, &Counters::default(), ["h0", "h1"], "coordinator");
        let v = &p["progress"]["verification"];
        assert_eq!(v["source"]["phase"], "stream hashing");
        assert_eq!(v["destination"]["phase"], "not started");
        for k in [
            "estimatedDocumentCount",
            "hashedDocumentCount",
            "lagTimeSeconds",
            "totalCollectionCount",
            "scannedCollectionCount",
        ] {
            assert!(
                v["source"][k].is_u64() || v["source"][k].is_i64(),
                "{k}: {v}"
            );
        }
        assert_eq!(v["mismatchCount"], 1);
        snap.verification = None;
        let p = progress_json(&snap, &Counters::default(), ["h0", "h1"], "coordinator");
        assert!(
            p["progress"].get("verification").is_none(),
            "off: no verification field"
        );
    }

    #[test]
    fn lag_counts_from_the_oldest_unapplied_change_not_from_a_quiet_spell() {
        let ts = |t| Timestamp {
            time: t,
            increment: 1,
        };
        // Quiet from 100 to 160, then a burst at 160 read but not yet applied.
        let mut s = Snapshot {
            applied_ts: Some(ts(100)),
            source_now: Some(ts(161)),
            oldest_unapplied: Some(ts(160)),
            ..Default::default()
        };
        assert_eq!(s.lag_secs(), Some(1));
        // A backlog: the oldest unapplied change is right after what was applied.
        s.oldest_unapplied = Some(ts(100));
        assert_eq!(s.lag_secs(), Some(61));
        // Nothing read ahead: measured from what was applied.
        s.oldest_unapplied = None;
        assert_eq!(s.lag_secs(), Some(61));
    }

    /// mongosync's lag reaches 0 at the commit: while COMMITTING only what precedes the commit
    /// point counts, and the source's clock moving on (writes are blocked) is not lag.
    /// A wait for canCommit is explained (a new user waited 3.5 minutes on the verifier's
    /// initial pass with nothing saying so).
    #[test]
    fn the_commit_blocker_is_reported_while_running() {
        let mut s = Snapshot {
            state: State::Running,
            phase: Some(Phase::Copy),
            ..Default::default()
        };
        let c = Counters::default();
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert_eq!(
            v["progress"]["commitBlocker"],
            "the initial collection copy is not finished"
        );
        s.state = State::Paused;
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert!(v["progress"].get("commitBlocker").is_none(), "{v}");
    }

    #[test]
    fn catchup_is_estimated_only_while_the_lag_falls() {
        let ts = |t| Timestamp {
            time: t,
            increment: 1,
        };
        let mut s = Snapshot {
            state: State::Running,
            phase: Some(Phase::ChangeEvents),
            applied_ts: Some(ts(100)),
            source_now: Some(ts(160)),
            catchup_rate: Some(2.0),
            ..Default::default()
        };
        let c = Counters::default();
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert_eq!(v["progress"]["estimatedSecondsToCEACatchup"], 30, "{v}");
        s.catchup_rate = Some(-1.0);
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert!(v["progress"].get("estimatedSecondsToCEACatchup").is_none());
        s.catchup_rate = Some(2.0);
        s.phase = Some(Phase::Copy);
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert!(v["progress"].get("estimatedSecondsToCEACatchup").is_none());
    }

    #[test]
    fn lag_while_committing_counts_to_the_commit_point() {
        let ts = |t| Timestamp {
            time: t,
            increment: 1,
        };
        let mut s = Snapshot {
            state: State::Committing,
            applied_ts: Some(ts(100)),
            commit_ts: Some(ts(104)),
            source_now: Some(ts(190)),
            ..Default::default()
        };
        assert_eq!(s.lag_secs(), Some(4));
        s.applied_ts = Some(ts(104));
        assert_eq!(s.lag_secs(), Some(0));
        s.state = State::Committed;
        assert_eq!(s.lag_secs(), Some(0));
    }

    #[test]
    fn running_in_cea_can_commit_and_paused_hides_lag() {
        let ts = |t| {
            Some(Timestamp {
                time: t,
                increment: 1,
            })
        };
        let mut s = Snapshot {
            state: State::Running,
            phase: Some(Phase::ChangeEvents),
            options: Some(opts()),
            applied_ts: ts(100),
            source_now: ts(105),
            copy_finished_ts: ts(90),
            ..Default::default()
        };
        let c = Counters::default();
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        let p = &v["progress"];
        assert_eq!(p["canCommit"], true);
        assert_eq!(p["lag"]["overallLagSeconds"], 5);
        assert_eq!(p["ceaStage"], "steady state");
        assert_eq!(p["directionMapping"]["Source"], "cluster1: h1:2");
        assert_eq!(p["directionMapping"]["Destination"], "cluster0: h0:1");
        assert_eq!(ClusterLabel::Cluster1.index(), 1);
        s.source_now = ts(200);
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert_eq!(v["progress"]["canCommit"], false);
        assert_eq!(
            v["progress"]["estimatedOplogTimeRemaining"],
            "not checked yet"
        );
        // A young source whose oplog reaches back 10 minutes, but has never dropped an entry:
        // the window is its age, not a limit; no warning.
        s.oplog_first_secs = Some(10_000 - 600);
        s.applied_ts = ts(10_000);
        s.source_now = ts(10_005);
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert!(v["progress"]["warnings"].is_null(), "{v}");
        // The same window in an oplog that rolls over: too short.
        s.oplog_rolled_over = true;
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert_eq!(
            v["progress"]["estimatedOplogTimeRemaining"],
            "less than 15 minutes"
        );
        assert!(
            v["progress"]["warnings"][0]
                .as_str()
                .unwrap()
                .starts_with(crate::preflight::checks::OPLOG_TOO_SMALL),
            "{v}"
        );
        s.oplog_first_secs = Some(0);
        s.applied_ts = ts(5 * 3600);
        s.source_now = ts(5 * 3600);
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert_eq!(v["progress"]["estimatedOplogTimeRemaining"], "5 hours");
        assert!(v["progress"]["warnings"].is_null(), "{v}");
        s.state = State::Paused;
        let v = progress_json(&s, &c, ["h0:1", "h1:2"], "coordinator");
        assert!(v["progress"].get("estimatedOplogTimeRemaining").is_none());
        assert!(v["progress"]["lag"].is_null() && v["progress"]["lagTimeSeconds"].is_null());
        assert_eq!(v["progress"]["canCommit"], false);
    }

    #[test]
    fn namespaces_are_counted_by_phase_and_listed_most_left_to_do_first() {
        let now = Instant::now();
        let ago = |secs| now - std::time::Duration::from_secs(secs);
        let mut colls = BTreeMap::new();
        let c = |partitions, done, copied, total| CollectionProgress {
            partitions,
            partitions_done: done,
            copied_bytes: copied,
            total_bytes: total,
            ..Default::default()
        };
        colls.insert("a.done".to_string(), c(2, 2, 900, 1000));
        colls.insert("a.waiting".to_string(), c(1, 0, 0, 5000));
        let mut slow = c(4, 1, 1000, 10_000);
        slow.started = Some((ago(10), 0));
        colls.insert("a.slow".to_string(), slow);
        let mut fast = c(1, 0, 2000, 3000);
        fast.started = Some((ago(10), 0));
        colls.insert("a.fast".to_string(), fast);
        let mut young = c(1, 0, 100, 3000);
        young.started = Some((ago(2), 0));
        colls.insert("a.young".to_string(), young);
        colls.insert(
            "a.indexing".to_string(),
            CollectionProgress {
                indexes_pending: true,
                ..c(1, 1, 10, 10)
            },
        );
        colls.insert(
            "a.recopy".to_string(),
            CollectionProgress {
                recopying: true,
                ..c(0, 0, 50, 0)
            },
        );
        let n = namespaces(&colls, Some(123.0), now).unwrap();
        assert_eq!(
            (
                n.counts.waiting,
                n.counts.copying,
                n.counts.building_indexes,
                n.counts.done,
                n.counts.recopying
            ),
            (1, 3, 1, 1, 1)
        );
        let order: Vec<&str> = n.collections.iter().map(|c| c.namespace.as_str()).collect();
        assert_eq!(
            order,
            [
                "a.slow",
                "a.fast",
                "a.young",
                "a.recopy",
                "a.waiting",
                "a.indexing",
                "a.done"
            ],
            "copying (longest ETA first, then the most left), re-copying, waiting, indexing, done"
        );
        let by = |ns: &str| n.collections.iter().find(|c| c.namespace == ns).unwrap();
        // 1,000 bytes in 10 s: 9,000 left take 90 s.
        assert_eq!(by("a.slow").estimated_seconds_remaining, Some(90));
        assert_eq!(by("a.fast").estimated_seconds_remaining, Some(5));
        assert_eq!(
            by("a.young").estimated_seconds_remaining,
            None,
            "under 5 s: no pace yet"
        );
        assert_eq!(by("a.waiting").estimated_seconds_remaining, None);
        // Done: what was copied is the size.
        assert_eq!(by("a.done").total_bytes, 900);
        assert_eq!(by("a.recopy").total_bytes, 50);
        assert_eq!(n.copy_bytes_per_second, Some(123.0));
        assert_eq!(namespaces(&BTreeMap::new(), None, now), None);
        // More than LISTED: the rest are counted, not listed.
        let many: BTreeMap<String, CollectionProgress> = (0..Namespaces::LISTED + 7)
            .map(|i| (format!("m.c{i}"), c(1, 1, 1, 1)))
            .collect();
        let n = namespaces(&many, None, now).unwrap();
        assert_eq!(n.collections.len(), Namespaces::LISTED);
        assert_eq!(n.omitted, 7);
        assert_eq!(n.counts.done, Namespaces::LISTED as u64 + 7);
    }
}
