//! Per-document repair: a document whose change cannot be replayed exactly is read from the
//! source by `_id` and written whole, or deleted where the source no longer has it.
//!
//! The read is of the source's current state, which is at least as new as the change that
//! called for it; the changes after it that the stream delivers later are replayed on top of
//! it (they set absolute values, and their guards call for another repair where the
//! document's shape differs), so the document converges on the source's bytes once the stream
//! has passed its last change.
//!
//! A read by name could answer for another collection, if the source's collection was renamed
//! or dropped (and another put in its place) after the change: the read is made only while
//! the source's collection under that name carries the change's UUID, checked before and
//! after the read. Where it does not, a DDL event the stream has not delivered yet explains
//! it, and the collection is marked for a fresh copy, the existing remedy for a copy that a
//! DDL overtook (see `ddl`), which follows renames and is cancelled by a drop.

use std::sync::atomic::Ordering;

use bson::{doc, Binary, Bson, RawDocumentBuf};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::ReadConcern;

use crate::engine::sync::cea::batch::{write_deletes, write_statements, DocId, Statement};
use crate::engine::sync::context::{Ctx, JobError};
use crate::mongo::catalog::{self, CollKind};

/// `_id`s per source read: the test server's `$in` costs grow with the square of its values.
const READ_CHUNK: usize = 100;
/// Source reads in flight at once for one collection's repairs.
const READ_CONCURRENCY: usize = 4;

/// Repairs `ids` of `db.coll` from the source. `uuid` is the collection's UUID as the
/// change events saw it (`None` when they did not say).
pub(crate) async fn documents(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    uuid: Option<&Binary>,
    kind: Option<CollKind>,
    ids: Vec<DocId>,
) -> Result<(), JobError> {
    if ids.is_empty() {
        return Ok(());
    }
    let ns = format!("{db}.{coll}");
    if kind == Some(CollKind::Timeseries) {
        // No unique `_id` to read and replace by; change streams carry no events for them
        // anyway, so this is never reached on the servers known.
        tracing::warn!(ns = %ns, documents = ids.len(), "cannot repair documents of a time series collection by _id; left as replayed");
        return Ok(());
    }
    let Some(found) = read_guarded(ctx, db, coll, uuid, &ids).await? else {
        tracing::info!(ns = %ns, documents = ids.len(), "the source collection was renamed or dropped since these changes; the collection will be copied again under the name the stream gives it");
        ctx.store.mark_recopy(&ns).await?;
        return Ok(());
    };
    let mut present = std::collections::HashMap::with_capacity(found.len());
    for d in found {
        if let Ok(Some(id)) = d.get("_id") {
            present.insert(DocId::new(id).key().to_vec(), d);
        }
    }
    let mut replace = Vec::new();
    let mut delete = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match present.remove(id.key()) {
            Some(d) => replace.push(Statement::whole(i, id, d)),
            None => delete.push(id.clone()),
        }
    }
    let (replaced, deleted) = (replace.len(), delete.len());
    write_deletes(&ctx.destination, db, coll, &delete).await?;
    let refused = write_statements(&ctx.destination, db, coll, replace).await?;
    if !refused.is_empty() {
        // A whole document the update command cannot take (a top-level name starting with
        // `$`, allowed in inserts since MongoDB 5.0): delete it and insert it instead.
        let again: Vec<DocId> = refused.iter().map(|&i| ids[i].clone()).collect();
        reinsert(ctx, db, coll, uuid, &again).await?;
    }
    ctx.status
        .counters
        .documents_repaired
        .fetch_add((replaced + deleted) as u64, Ordering::Relaxed);
    tracing::debug!(ns = %ns, replaced, deleted, "repaired documents from the source");
    Ok(())
}

/// The source's documents among `ids`, or `None` when the collection under that name is not
/// the one the changes were made to (checked before and after the read).
async fn read_guarded(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    uuid: Option<&Binary>,
    ids: &[DocId],
) -> Result<Option<Vec<RawDocumentBuf>>, JobError> {
    let same = || async {
        let spec = catalog::find_spec(&ctx.source, db, coll).await?;
        Ok::<bool, JobError>(match (spec, uuid) {
            (None, _) => false,
            (Some(s), Some(u)) => s.uuid.as_ref() == Some(u),
            // The events did not name a UUID: nothing to tell collections apart by.
            (Some(_), None) => true,
        })
    };
    if !same().await? {
        return Ok(None);
    }
    // The read must see every change already applied: a majority snapshot that lags them
    // would find a just-inserted document absent and the repair would delete it. A causally
    // consistent session after the source's current majority time makes the server wait for a
    // snapshot at least that new (`afterClusterTime`).
    let after = crate::mongo::cluster_time(&ctx.source).await?;
    let source = ctx.source.database(db).collection::<RawDocumentBuf>(coll);
    let chunks: Vec<Vec<Bson>> = ids
        .chunks(READ_CHUNK)
        .map(|c| c.iter().map(DocId::bson).collect())
        .collect();
    let reads = futures::stream::iter(chunks.into_iter().map(|values| {
        let source = source.clone();
        let client = ctx.source.clone();
        async move {
            let mut session = client.start_session().causal_consistency(true).await?;
            session.advance_operation_time(after);
            let mut cursor = source
                .find(doc! { "_id": { "$in": values } })
                .read_concern(ReadConcern::majority())
                .session(&mut session)
                .await?;
            let mut out = Vec::new();
            while let Some(d) = cursor.next(&mut session).await {
                out.push(d?);
            }
            Ok::<_, mongodb::error::Error>(out)
        }
    }))
    .buffer_unordered(READ_CONCURRENCY)
    .try_collect::<Vec<Vec<RawDocumentBuf>>>()
    .await?;
    if !same().await? {
        return Ok(None);
    }
    Ok(Some(reads.into_iter().flatten().collect()))
}

/// Deletes and inserts documents the update command refused to replace, read again from the
/// source.
async fn reinsert(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    uuid: Option<&Binary>,
    ids: &[DocId],
) -> Result<(), JobError> {
    let Some(docs) = read_guarded(ctx, db, coll, uuid, ids).await? else {
        ctx.store.mark_recopy(&format!("{db}.{coll}")).await?;
        return Ok(());
    };
    write_deletes(&ctx.destination, db, coll, ids).await?;
    if !docs.is_empty() {
        ctx.destination
            .database(db)
            .collection::<RawDocumentBuf>(coll)
            .insert_many(docs)
            .ordered(false)
            .bypass_document_validation(true)
            .await?;
    }
    Ok(())
}
