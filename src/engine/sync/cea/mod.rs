//! Change event application: one change stream over the whole source, applied to the
//! destination idempotently so that it converges although the events overlap the copy.
//!
//! CRUD events are batched ([`batch`]); DDL events are barriers applied alone ([`ddl`]). The
//! resume token is checkpointed on the destination only after everything before it has been
//! applied, so a restart replays at most one batch, which is harmless: every operation is
//! idempotent.

mod batch;
mod ddl;
mod delta;
mod repair;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bson::{doc, RawDocumentBuf};
use mongodb::change_stream::ChangeStream;

use crate::contract::filter::METADATA_DB;
use crate::engine::status::EventKind;
use crate::engine::sync::context::{Ctx, JobError};
use crate::mongo::{self, codes, error_code};

const MAX_BATCH_EVENTS: usize = 5_000;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
/// How long a batch keeps gathering events after its first one once the destination is free.
/// A steady trickle of events is applied every few tens of milliseconds instead of waiting for a
/// full batch, while a backlog still fills whole batches (the reader only stops once the batch
/// before it has been written).
const GATHER_WINDOW: Duration = Duration::from_millis(20);
/// How long the server may hold a getMore that has nothing to return: the idle-detection delay.
const MAX_AWAIT: Duration = Duration::from_millis(200);
/// A restart replays at most this much (harmless: every operation is idempotent), while the
/// destination is spared a metadata write per small batch.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

pub async fn run(ctx: &Ctx) -> Result<(), JobError> {
    Applier {
        ctx,
        kinds: HashMap::new(),
    }
    .run()
    .await
}

pub(crate) struct Applier<'a> {
    ctx: &'a Ctx,
    /// Destination collections (kind, capped) by namespace. Only this applier changes the
    /// destination, so the cache is exact between DDL events, which clear it.
    kinds: HashMap<(String, String), Option<batch::DestColl>>,
}

fn history_lost(e: &mongodb::error::Error) -> bool {
    error_code(e) == Some(codes::CHANGE_STREAM_HISTORY_LOST)
}

fn history_lost_error() -> JobError {
    JobError::fatal(
        "the source's oplog no longer holds the change stream's resume point (events were lost); enlarge the source oplog and restart the migration from scratch",
    )
}

fn is_crud(op: &str) -> bool {
    matches!(op, "insert" | "update" | "replace" | "delete")
}

/// One read from the change stream: CRUD events up to a batch's size, stopping early at a DDL
/// event (a barrier) or when the server has nothing more for now.
struct Read {
    pending: batch::Batch,
    ddl_event: Option<RawDocumentBuf>,
    /// The server had nothing after `probe`.
    idle: bool,
    /// The source's cluster time just before reading.
    probe: bson::Timestamp,
    /// The resume token after the last event read.
    token: Option<mongodb::change_stream::event::ResumeToken>,
    /// Source time of the first event read.
    first_ts: Option<bson::Timestamp>,
}

/// `writing` is set while the batch before this one is being written; reading goes on until
/// that write ends, so batches grow with the destination's latency.
async fn read_batch(
    ctx: &Ctx,
    stream: &mut ChangeStream<RawDocumentBuf>,
    writing: &AtomicBool,
) -> Result<Read, JobError> {
    let probe = mongo::cluster_time(&ctx.source).await?;
    let mut first_ts = None;
    let mut pending = batch::Batch::default();
    let mut idle = false;
    let mut ddl_event = None;
    let mut first_event: Option<Instant> = None;
    loop {
        if first_event.is_some_and(|t| t.elapsed() >= GATHER_WINDOW)
            && !writing.load(Ordering::Acquire)
        {
            break;
        }
        let next = match stream.next_if_any().await {
            Ok(n) => n,
            Err(e) if history_lost(&e) => return Err(history_lost_error()),
            Err(e) => return Err(e.into()),
        };
        let Some(ev) = next else {
            idle = true;
            break;
        };
        let op = ev.get_str("operationType").unwrap_or("").to_string();
        if first_ts.is_none() {
            first_ts = ev.get_timestamp("clusterTime").ok();
            // The batch before this one may still be being written: it is older.
            if ctx.status.lock().oldest_unapplied.is_none() {
                ctx.status.unapplied_from(first_ts);
            }
        }
        if is_crud(&op) {
            first_event.get_or_insert_with(Instant::now);
            pending.add(&ctx.scope, &ev, &op);
            if pending.events >= MAX_BATCH_EVENTS || pending.bytes >= MAX_BATCH_BYTES {
                break;
            }
        } else {
            ddl_event = Some(ev);
            break;
        }
    }
    // Published only now, after the first event (if any) marked where the lag starts.
    ctx.status.saw_source_time(probe);
    Ok(Read {
        pending,
        ddl_event,
        idle,
        probe,
        token: stream.resume_token(),
        first_ts,
    })
}

/// The resume token of everything applied so far, and what the last checkpoint recorded.
#[derive(Default)]
struct Checkpoint {
    applied_token: Option<mongodb::change_stream::event::ResumeToken>,
    saved: Option<(
        Option<mongodb::change_stream::event::ResumeToken>,
        bson::Timestamp,
    )>,
    saved_at: Option<Instant>,
}

impl Checkpoint {
    /// Everything up to `token` (if the read gave one) is applied.
    fn applied(&mut self, token: Option<mongodb::change_stream::event::ResumeToken>) {
        if token.is_some() {
            self.applied_token = token;
        }
    }

    fn is_stale(&self) -> bool {
        self.saved_at
            .is_none_or(|t| t.elapsed() >= CHECKPOINT_EVERY)
    }

    /// Records the applied token and time on the destination, unless they are recorded already.
    async fn save(&mut self, ctx: &Ctx, applied: bson::Timestamp) -> Result<(), JobError> {
        let now = (self.applied_token.clone(), applied);
        if self.saved.as_ref() != Some(&now) {
            ctx.fenced()?;
            ctx.store.checkpoint(now.0.as_ref(), applied).await?;
            self.saved = Some(now);
        }
        self.saved_at = Some(Instant::now());
        Ok(())
    }
}

impl<'a> Applier<'a> {
    async fn open_stream(&self) -> Result<ChangeStream<RawDocumentBuf>, JobError> {
        let doc = self.ctx.store.load().await?.ok_or_else(|| {
            JobError::fatal("the migration document disappeared from the destination")
        })?;
        let mut watch = self
            .ctx
            .source
            .watch()
            .pipeline(vec![doc! { "$match": { "ns.db": { "$nin": ["admin", "config", "local", METADATA_DB] } } }])
            .show_expanded_events(true)
            .max_await_time(MAX_AWAIT)
            .batch_size(1000);
        match doc.resume_token {
            Some(t) => watch = watch.resume_after(t),
            None => watch = watch.start_at_operation_time(doc.start_ts),
        }
        match watch.await {
            Ok(s) => Ok(s.with_type::<RawDocumentBuf>()),
            Err(e) if history_lost(&e) => Err(history_lost_error()),
            Err(e) => Err(e.into()),
        }
    }

    async fn run(&mut self) -> Result<(), JobError> {
        let ctx = self.ctx;
        let mut stream = self.open_stream().await?;
        let mut checkpoint = Checkpoint::default();
        let writing = AtomicBool::new(false);
        let mut next = read_batch(ctx, &mut stream, &writing).await?;
        loop {
            if self.commit_point_reached() {
                let applied = self.ctx.status.lock().applied_ts;
                if let Some(applied) = applied {
                    checkpoint.save(self.ctx, applied).await?;
                }
                // Fresh copies still waiting are done first; a DDL event that overtook one
                // marks it again, so the stream is read once more before the commit ends.
                if self.ctx.store.pending_recopies().await?.is_empty() {
                    return Ok(());
                }
                ctx.fenced()?;
                ddl::recopy_pending(self.ctx).await?;
                self.kinds.clear();
            }
            let Read {
                pending,
                ddl_event,
                idle,
                probe,
                token,
                first_ts: _,
            } = next;
            let n = pending.events;
            let kinds = pending.kinds;
            let last = pending.last_ts;
            let cycle = Instant::now();
            // A full batch with no barrier after it: the next one is read from the source while
            // this one is written to the destination. Batches are still applied one after the
            // other, so each document's changes keep their order.
            let overlap = !pending.is_empty() && ddl_event.is_none() && !idle;
            let mut read_ahead = None;
            if overlap {
                writing.store(true, Ordering::Release);
                // The fence is checked right before each batch reaches the destination.
                ctx.fenced()?;
                let apply = async {
                    let r = self.apply_batch(pending).await;
                    writing.store(false, Ordering::Release);
                    r
                };
                let (applied, read) = tokio::join!(apply, read_batch(ctx, &mut stream, &writing));
                applied?;
                read_ahead = Some(read?);
            } else if !pending.is_empty() {
                ctx.fenced()?;
                self.apply_batch(pending).await?;
            }
            if n > 0 {
                for kind in EventKind::ALL {
                    let k = kinds[kind as usize];
                    if k > 0 {
                        self.ctx.status.counters.applied(kind, k);
                    }
                }
                if let Some(ts) = last {
                    self.ctx.status.lock().crud_ts = Some(ts);
                    self.ctx.status.applied_through(ts);
                }
            }
            let barrier = ddl_event.is_some();
            if let Some(ev) = ddl_event {
                let ts = ev.get_timestamp("clusterTime").ok();
                self.kinds.clear();
                ctx.fenced()?;
                ddl::apply(self.ctx, &ev).await?;
                self.ctx.status.counters.applied(EventKind::Ddl, 1);
                if let Some(ts) = ts {
                    self.ctx.status.lock().ddl_ts = Some(ts);
                    self.ctx.status.applied_through(ts);
                }
            }
            if idle {
                // The server had nothing after `probe`: everything up to it is applied.
                self.ctx.status.applied_through(probe);
                // Caught up: the collections marked for a fresh copy are named as they are now.
                ctx.fenced()?;
                ddl::recopy_pending(self.ctx).await?;
                self.ctx.store.forget_recopies_before(probe).await?;
                self.kinds.clear();
            }
            if n > 0 {
                let s = self.ctx.status.lock();
                tracing::debug!(
                    events = n,
                    took = ?cycle.elapsed(),
                    read_ahead = read_ahead.as_ref().map_or(0, |r| r.pending.events),
                    lag = ?s.lag_secs(),
                    "applied a batch"
                );
            }
            // Everything read is applied but for a batch read ahead.
            self.ctx
                .status
                .unapplied_from(read_ahead.as_ref().and_then(|r| r.first_ts));
            // Events are flowing again: an earlier interruption is over.
            self.ctx.status.clear_warning("sync");
            // The token of what was just applied (not of a batch read ahead). A DDL event or
            // an idle stream is checkpointed at once; a stream of CRUD batches once a second.
            let applied = self.ctx.status.lock().applied_ts.unwrap_or(probe);
            let due = barrier || idle || checkpoint.is_stale();
            checkpoint.applied(token);
            if due {
                checkpoint.save(self.ctx, applied).await?;
            }
            next = match read_ahead {
                Some(r) => r,
                None => read_batch(ctx, &mut stream, &writing).await?,
            };
        }
    }

    /// Everything up to the commit point is applied.
    fn commit_point_reached(&self) -> bool {
        let s = self.ctx.status.lock();
        matches!((s.commit_ts, s.applied_ts), (Some(c), Some(a)) if a >= c)
    }
}
