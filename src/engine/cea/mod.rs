//! Change event application: one change stream over the whole source, applied to the
//! destination idempotently so that it converges although the events overlap the copy.
//!
//! CRUD events are batched ([`batch`]); DDL events are barriers applied alone ([`ddl`]). The
//! resume token is checkpointed on the destination only after everything before it has been
//! applied, so a restart replays at most one batch, which is harmless: every operation is
//! idempotent.

mod batch;
mod ddl;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bson::{doc, RawDocumentBuf};
use mongodb::change_stream::ChangeStream;

use super::catalog::CollKind;
use super::filter::METADATA_DB;
use super::job::{Ctx, JobError};
use super::mongo::{self, codes, error_code};

const MAX_BATCH_EVENTS: usize = 5_000;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

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
    /// Destination collection kinds by namespace. Only this applier changes the destination,
    /// so the cache is exact between DDL events, which clear it.
    kinds: HashMap<(String, String), Option<CollKind>>,
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
}

async fn read_batch(
    ctx: &Ctx,
    stream: &mut ChangeStream<RawDocumentBuf>,
) -> Result<Read, JobError> {
    let probe = mongo::cluster_time(&ctx.source).await?;
    ctx.status.saw_source_time(probe);
    let mut pending = batch::Batch::default();
    let mut idle = false;
    let mut ddl_event = None;
    loop {
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
        if is_crud(&op) {
            pending.add(&ctx.scope, &ev, &op);
            if pending.events >= MAX_BATCH_EVENTS || pending.bytes >= MAX_BATCH_BYTES {
                break;
            }
        } else {
            ddl_event = Some(ev);
            break;
        }
    }
    Ok(Read {
        pending,
        ddl_event,
        idle,
        probe,
        token: stream.resume_token(),
    })
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
            .max_await_time(Duration::from_millis(500))
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
        let (mut last_token, mut last_applied) = (None, None);
        let mut next = read_batch(ctx, &mut stream).await?;
        loop {
            if self.commit_point_reached() {
                // Fresh copies still waiting are done first; a DDL event that overtook one
                // marks it again, so the stream is read once more before the commit ends.
                if self.ctx.store.pending_recopies().await?.is_empty() {
                    return Ok(());
                }
                ddl::recopy_pending(self.ctx).await?;
                self.kinds.clear();
            }
            let Read {
                pending,
                ddl_event,
                idle,
                probe,
                token,
            } = next;
            let n = pending.events;
            let last = pending.last_ts;
            // A full batch with no barrier after it: the next one is read from the source while
            // this one is written to the destination. Batches are still applied one after the
            // other, so each document's changes keep their order.
            let overlap = !pending.is_empty() && ddl_event.is_none() && !idle;
            let mut read_ahead = None;
            if overlap {
                let (applied, read) =
                    tokio::join!(self.apply_batch(pending), read_batch(ctx, &mut stream));
                applied?;
                read_ahead = Some(read?);
            } else if !pending.is_empty() {
                self.apply_batch(pending).await?;
            }
            if n > 0 {
                self.ctx
                    .status
                    .counters
                    .events_applied
                    .fetch_add(n as u64, Ordering::Relaxed);
                if let Some(ts) = last {
                    self.ctx.status.lock().crud_ts = Some(ts);
                    self.ctx.status.applied_through(ts);
                }
            }
            if let Some(ev) = ddl_event {
                let ts = ev.get_timestamp("clusterTime").ok();
                self.kinds.clear();
                ddl::apply(self.ctx, &ev).await?;
                self.ctx
                    .status
                    .counters
                    .events_applied
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(ts) = ts {
                    self.ctx.status.lock().ddl_ts = Some(ts);
                    self.ctx.status.applied_through(ts);
                }
            }
            if idle {
                // The server had nothing after `probe`: everything up to it is applied.
                self.ctx.status.applied_through(probe);
                // Caught up: the collections marked for a fresh copy are named as they are now.
                ddl::recopy_pending(self.ctx).await?;
                self.ctx.store.forget_recopies_before(probe).await?;
                self.kinds.clear();
            }
            // Events are flowing again: an earlier interruption is over.
            self.ctx.status.clear_warning("sync");
            // The token of what was just applied (not of a batch read ahead).
            let applied = self.ctx.status.lock().applied_ts.unwrap_or(probe);
            if token != last_token || Some(applied) != last_applied {
                self.ctx.store.checkpoint(token.as_ref(), applied).await?;
                last_token = token;
                last_applied = Some(applied);
            }
            next = match read_ahead {
                Some(r) => r,
                None => read_batch(ctx, &mut stream).await?,
            };
        }
    }

    /// Everything up to the commit point is applied.
    fn commit_point_reached(&self) -> bool {
        let s = self.ctx.status.lock();
        matches!((s.commit_ts, s.applied_ts), (Some(c), Some(a)) if a >= c)
    }
}
