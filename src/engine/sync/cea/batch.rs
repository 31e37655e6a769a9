//! CRUD events, batched.
//!
//! Per document only what matters survives: an insert, replace or delete sets the whole
//! document (so it cancels whatever came before it), and the updates after it are kept in order
//! as deltas ([`delta`]: `$set` of the updated fields, raw; `$unset` of the removed ones;
//! `$push`/`$slice` for truncated arrays), each with the preconditions under which it
//! reproduces the source's bytes, field order included. Deltas need no read of the source. A
//! document whose delta cannot be proven exact, whose precondition fails on the destination, or
//! that the destination refuses is repaired: read from the source by `_id` and written whole
//! ([`repair`]). One document's event never costs more than that document.

use std::collections::HashMap;

use bson::{
    doc, Binary, Bson, RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp,
};
use futures::{StreamExt, TryStreamExt};
use mongodb::{Client, Collection};

use super::{repair, Applier};
use crate::contract::filter::Scope;
use crate::engine::status::EventKind;
use crate::engine::sync::cea::delta::{self, Delta, Plan};
use crate::engine::sync::context::{Ctx, JobError};
use crate::mongo;
use crate::mongo::catalog::{self, CollKind};

const WRITE_CHUNK_BYTES: usize = 8 * 1024 * 1024;
const WRITE_CHUNK_OPS: usize = 1_000;

/// The `_id` of a document, with its encoded bytes as the key.
#[derive(Clone)]
pub(crate) struct DocId {
    key: Vec<u8>,
    value: RawBson,
}

impl DocId {
    pub(crate) fn new(value: RawBsonRef<'_>) -> Self {
        let value = value.to_raw_bson();
        let mut d = RawDocumentBuf::new();
        d.append("_id", value.clone());
        Self {
            key: d.into_bytes(),
            value,
        }
    }
    pub(crate) fn bson(&self) -> Bson {
        Bson::try_from(self.value.clone()).unwrap_or(Bson::Null)
    }
    pub(crate) fn key(&self) -> &[u8] {
        &self.key
    }
    pub(crate) fn filter(&self) -> RawDocumentBuf {
        let mut q = RawDocumentBuf::new();
        q.append("_id", self.value.clone());
        q
    }
}

enum Base {
    Upsert(RawDocumentBuf),
    Delete,
}

struct DocOps {
    id: DocId,
    base: Option<Base>,
    /// Updates, in event order, applied after `base`.
    deltas: Vec<Delta>,
    /// Settle by reading the source instead.
    repair: bool,
}

/// What one event asks of its document.
enum Step {
    /// Insert: the whole document, new.
    Insert(RawDocumentBuf),
    /// Replace: the whole document.
    Whole(RawDocumentBuf),
    Delete,
    /// An update that replays exactly as these deltas.
    Deltas(Vec<Delta>),
    /// An update (or an event without its document) to settle from the source.
    Repair,
}

struct Logged {
    id: DocId,
    step: Step,
}

/// One namespace's events of the batch, in stream order. Most collections need only each
/// document's net effect ([`NsOps::coalesce`]); a capped collection needs the order itself,
/// since its insertion order decides both its natural order and which documents it evicts.
#[derive(Default)]
struct NsOps {
    uuid: Option<Binary>,
    log: Vec<Logged>,
}

impl NsOps {
    /// Per document only what matters survives: an insert, replace or delete sets the whole
    /// document (so it cancels whatever came before it), and the updates after it are kept in
    /// order. Documents come in the order the batch first saw them.
    fn coalesce(self) -> Vec<DocOps> {
        let mut at: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut docs: Vec<DocOps> = Vec::new();
        for Logged { id, step } in self.log {
            let i = *at.entry(id.key.clone()).or_insert_with(|| {
                docs.push(DocOps {
                    id,
                    base: None,
                    deltas: Vec::new(),
                    repair: false,
                });
                docs.len() - 1
            });
            let d = &mut docs[i];
            match step {
                Step::Whole(doc) | Step::Insert(doc) => {
                    d.base = Some(Base::Upsert(doc));
                    d.deltas.clear();
                    d.repair = false;
                }
                Step::Delete => {
                    d.base = Some(Base::Delete);
                    d.deltas.clear();
                    d.repair = false;
                }
                Step::Deltas(u) if !d.repair => d.deltas.extend(u),
                Step::Deltas(_) => {}
                Step::Repair => {
                    d.repair = true;
                    d.deltas.clear();
                }
            }
        }
        docs
    }
}

#[derive(Default)]
pub(crate) struct Batch {
    by_ns: HashMap<(String, String), NsOps>,
    pub events: usize,
    /// Events by [`EventKind`], for the metrics.
    pub kinds: [u64; 5],
    pub bytes: usize,
    pub last_ts: Option<Timestamp>,
}

fn ns_of(ev: &RawDocument) -> Option<(String, String)> {
    let ns = ev.get_document("ns").ok()?;
    Some((
        ns.get_str("db").ok()?.to_string(),
        ns.get_str("coll").ok()?.to_string(),
    ))
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    pub fn add(&mut self, scope: &Scope, ev: &RawDocument, op: &str) {
        if let Ok(ts) = ev.get_timestamp("clusterTime") {
            self.last_ts = Some(ts);
        }
        self.events += 1;
        self.kinds[EventKind::of(op) as usize] += 1;
        let Some(ns) = ns_of(ev) else { return };
        if !scope.includes(&ns.0, &ns.1) {
            return;
        }
        let Ok(Some(id)) = ev
            .get_document("documentKey")
            .map(|k| k.get("_id").ok().flatten())
        else {
            return;
        };
        let id = DocId::new(id);
        let nso = self.by_ns.entry(ns).or_default();
        if nso.uuid.is_none() {
            nso.uuid = ev.get_binary("collectionUUID").ok().map(|b| Binary {
                subtype: b.subtype,
                bytes: b.bytes.to_vec(),
            });
        }
        let step = match op {
            "insert" | "replace" => match ev.get_document("fullDocument") {
                Ok(d) => {
                    self.bytes += d.as_bytes().len();
                    let d = d.to_raw_document_buf();
                    if op == "insert" {
                        Step::Insert(d)
                    } else {
                        Step::Whole(d)
                    }
                }
                Err(_) => Step::Repair,
            },
            "delete" => Step::Delete,
            _ => {
                let plan = match ev.get_document("updateDescription") {
                    Ok(desc) => delta::plan(desc),
                    Err(_) => Plan::Repair(delta::RepairReason::Malformed),
                };
                match plan {
                    Plan::Replay(d) => {
                        self.bytes += d.iter().map(|u| u.update.as_bytes().len()).sum::<usize>();
                        Step::Deltas(d)
                    }
                    Plan::Repair(reason) => {
                        tracing::trace!(?reason, "an update that cannot be replayed exactly");
                        Step::Repair
                    }
                }
            }
        };
        nso.log.push(Logged { id, step });
    }
}

/// What the applier knows of a destination collection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct DestColl {
    pub kind: CollKind,
    pub capped: bool,
}

impl Applier<'_> {
    async fn dest_coll(&mut self, db: &str, coll: &str) -> Result<Option<DestColl>, JobError> {
        let key = (db.to_string(), coll.to_string());
        if let Some(k) = self.kinds.get(&key) {
            return Ok(*k);
        }
        let k = catalog::find_spec(&self.ctx.destination, db, coll)
            .await?
            .map(|s| DestColl {
                kind: s.kind,
                capped: s.is_capped(),
            });
        self.kinds.insert(key, k);
        Ok(k)
    }

    pub(crate) async fn apply_batch(&mut self, batch: Batch) -> Result<(), JobError> {
        let mut prepared = Vec::new();
        for ((db, coll), nso) in batch.by_ns {
            let mut dest = self.dest_coll(&db, &coll).await?;
            // Documents change only in collections: a view under this name on the
            // destination is stale (a glitched listing made it, or a create event the source
            // did not send for an implicitly created collection left it).
            let stale_view = dest.is_some_and(|d| d.kind == CollKind::View);
            if (dest.is_none() || stale_view) && nso.uuid.is_some() {
                // The destination lacks a collection the source has (its copy was overtaken
                // by a rename or drop): create it with its options rather than let an upsert
                // create a bare one.
                if let Some(spec) = catalog::find_spec(&self.ctx.source, &db, &coll).await? {
                    if spec.uuid == nso.uuid && spec.kind != CollKind::View {
                        if stale_view {
                            tracing::warn!(ns = %spec.ns(), "the destination holds a view where the source has a collection; replacing it");
                            catalog::drop_collection(&self.ctx.destination, &db, &coll).await?;
                        }
                        catalog::create(&self.ctx.destination, &spec).await?;
                        self.ctx.build_indexes(&db, &coll, None).await?;
                        dest = Some(DestColl {
                            kind: spec.kind,
                            capped: spec.is_capped(),
                        });
                        self.kinds.insert((db.clone(), coll.clone()), dest);
                    }
                }
            }
            prepared.push((db, coll, nso, dest));
        }
        let ctx = self.ctx;
        // Collections are independent of each other: write them concurrently.
        futures::stream::iter(
            prepared
                .into_iter()
                .map(|(db, coll, nso, dest)| async move {
                    match dest {
                        Some(d) if d.capped => apply_in_order(ctx, &db, &coll, nso).await,
                        _ => apply_ns(ctx, &db, &coll, nso, dest.map(|d| d.kind)).await,
                    }
                }),
        )
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }
}

/// Majority and journaled: the resume token checkpointed after a batch must never be ahead of
/// writes a destination crash could lose (MongoDB journals majority writes anyway; not every
/// server does).
fn majority() -> RawDocumentBuf {
    let mut wc = RawDocumentBuf::new();
    wc.append("w", "majority");
    wc.append("j", true);
    wc
}

#[tracing::instrument(name = "apply_collection", skip_all, fields(collection = %format_args!("{db}.{coll}")))]
async fn apply_ns(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    nso: NsOps,
    kind: Option<CollKind>,
) -> Result<(), JobError> {
    let mut deletes = Vec::new();
    let mut statements: Vec<Statement> = Vec::new();
    let uuid = nso.uuid.clone();
    let mut docs: Vec<DocOps> = nso.coalesce();
    let mut to_repair: Vec<usize> = Vec::new();
    let mut inserts_ts = Vec::new();
    // A time series collection has no unique `_id` for a guard to trip on: its (rare)
    // deltas are replayed unguarded.
    let guarded = kind != Some(CollKind::Timeseries);
    for (i, d) in docs.iter_mut().enumerate() {
        if d.repair {
            to_repair.push(i);
            continue;
        }
        match d.base.take() {
            Some(Base::Delete) => deletes.push(d.id.clone()),
            Some(Base::Upsert(doc)) if kind == Some(CollKind::Timeseries) => {
                inserts_ts.push((d.id.clone(), doc))
            }
            Some(Base::Upsert(doc)) => statements.push(Statement::whole(i, &d.id, doc)),
            None => {}
        }
        for u in d.deltas.drain(..) {
            statements.push(Statement::delta(i, &d.id, u, guarded));
        }
    }
    tracing::debug!(ns = %format!("{db}.{coll}"), deletes = deletes.len(), writes = statements.len(), repairs = to_repair.len(), "applying batch");
    let writers = ctx.tuning.concurrency.max(1);
    // Deletes are independent of each other: chunks at once (a batch holds a few at most).
    let mut delete_chunks = Vec::new();
    for chunk in deletes.chunks(WRITE_CHUNK_OPS) {
        delete_chunks.push(write_deletes(&ctx.destination, db, coll, chunk));
    }
    futures::future::try_join_all(delete_chunks).await?;
    if !inserts_ts.is_empty() {
        insert_missing(&ctx.destination, db, coll, inserts_ts).await?;
    }
    // Statements go to parallel writers by document: each writer keeps its documents'
    // statements in order (a document's deltas follow its upsert); documents are independent.
    let mut groups: Vec<Vec<Statement>> = (0..writers).map(|_| Vec::new()).collect();
    for s in statements {
        groups[writer_of(&docs[s.owner].id.key, writers)].push(s);
    }
    let mut writes = Vec::new();
    for g in groups.into_iter().filter(|g| !g.is_empty()) {
        writes.push(write_statements(&ctx.destination, db, coll, g));
    }
    let refused = futures::future::try_join_all(writes).await?;
    to_repair.extend(refused.into_iter().flatten());
    if !to_repair.is_empty() {
        to_repair.sort_unstable();
        to_repair.dedup();
        let ids: Vec<DocId> = to_repair.iter().map(|&i| docs[i].id.clone()).collect();
        repair::documents(ctx, db, coll, uuid.as_ref(), kind, ids).await?;
    }
    Ok(())
}

/// A capped collection's events, applied one after the other in stream order: its insertion
/// order decides its natural order and which documents it evicts when full, so the
/// destination evicts exactly what the source did only if it sees the same writes in the same
/// order, inserts as inserts (a server may evict differently for an upsert). Consecutive
/// writes of one kind still share a command (ordered, so a refusal stops the rest and is
/// settled before going on). A document repaired from the source is at its newest state, so
/// its later events in this batch are skipped.
#[tracing::instrument(name = "apply_capped", skip_all, fields(collection = %format_args!("{db}.{coll}")))]
async fn apply_in_order(ctx: &Ctx, db: &str, coll: &str, nso: NsOps) -> Result<(), JobError> {
    let mut w = InOrder {
        ctx,
        db,
        coll,
        uuid: nso.uuid,
        repaired: std::collections::HashSet::new(),
        ids: Vec::new(),
        updates: Vec::new(),
        inserts: Vec::new(),
    };
    tracing::debug!(ns = %format!("{db}.{coll}"), events = nso.log.len(), "applying a capped collection's events in order");
    for Logged { id, step } in nso.log {
        if w.repaired.contains(&id.key) {
            continue;
        }
        let owner = w.ids.len();
        w.ids.push(id.clone());
        match step {
            Step::Insert(doc) => {
                w.flush_updates().await?;
                w.inserts.push((owner, doc));
            }
            Step::Whole(doc) => {
                w.flush_inserts().await?;
                w.updates.push(Statement::whole(owner, &id, doc));
            }
            Step::Deltas(u) => {
                w.flush_inserts().await?;
                w.updates
                    .extend(u.into_iter().map(|d| Statement::delta(owner, &id, d, true)));
            }
            Step::Delete => {
                w.flush().await?;
                write_deletes(&ctx.destination, db, coll, std::slice::from_ref(&id)).await?;
            }
            Step::Repair => {
                w.flush().await?;
                w.repair(owner).await?;
            }
        }
    }
    w.flush().await
}

/// The writes of [`apply_in_order`] not sent yet: at most one of `updates` and `inserts` is
/// non-empty.
struct InOrder<'a> {
    ctx: &'a Ctx,
    db: &'a str,
    coll: &'a str,
    uuid: Option<Binary>,
    repaired: std::collections::HashSet<Vec<u8>>,
    ids: Vec<DocId>,
    updates: Vec<Statement>,
    inserts: Vec<(usize, RawDocumentBuf)>,
}

impl InOrder<'_> {
    async fn flush(&mut self) -> Result<(), JobError> {
        self.flush_inserts().await?;
        self.flush_updates().await
    }

    async fn repair(&mut self, owner: usize) -> Result<(), JobError> {
        let id = self.ids[owner].clone();
        self.repaired.insert(id.key.clone());
        repair::documents(
            self.ctx,
            self.db,
            self.coll,
            self.uuid.as_ref(),
            Some(CollKind::Collection),
            vec![id],
        )
        .await
    }

    /// Sends the pending updates in order; a refused statement's document is repaired at that
    /// point and its statements after it are dropped, then the rest is sent.
    async fn flush_updates(&mut self) -> Result<(), JobError> {
        let mut rest: Vec<Statement> = std::mem::take(&mut self.updates);
        while !rest.is_empty() {
            let Some(failed) =
                write_ordered(&self.ctx.destination, self.db, self.coll, &rest).await?
            else {
                break;
            };
            let after = rest.split_off(failed + 1);
            self.repair(rest[failed].owner).await?;
            rest = after
                .into_iter()
                .filter(|s| !self.repaired.contains(&self.ids[s.owner].key))
                .collect();
        }
        Ok(())
    }

    /// Sends the pending inserts in order. One already there (the copy read it, or a replay
    /// after a restart) is replaced instead; one refused otherwise is repaired.
    async fn flush_inserts(&mut self) -> Result<(), JobError> {
        let mut rest = std::mem::take(&mut self.inserts);
        while !rest.is_empty() {
            let Some((failed, code)) =
                insert_ordered(&self.ctx.destination, self.db, self.coll, &rest).await?
            else {
                break;
            };
            let after = rest.split_off(failed + 1);
            let (owner, doc) = rest.pop().expect("the failed insert");
            if code == Some(mongo::codes::DUPLICATE_KEY) {
                let id = self.ids[owner].clone();
                let replace = [Statement::whole(owner, &id, doc)];
                if write_ordered(&self.ctx.destination, self.db, self.coll, &replace)
                    .await?
                    .is_some()
                {
                    self.repair(owner).await?;
                }
            } else {
                self.repair(owner).await?;
            }
            rest = after;
        }
        Ok(())
    }
}

/// Runs `docs` as ordered inserts in byte-bounded commands. Returns the index of the first one
/// refused and its error code, after which nothing more was run.
async fn insert_ordered(
    client: &Client,
    db: &str,
    coll: &str,
    docs: &[(usize, RawDocumentBuf)],
) -> Result<Option<(usize, Option<i32>)>, JobError> {
    let mut start = 0;
    while start < docs.len() {
        let mut batch = RawArrayBuf::new();
        let (mut bytes, mut end) = (0, start);
        while end < docs.len() {
            let len = docs[end].1.as_bytes().len();
            if end > start && (bytes + len > WRITE_CHUNK_BYTES || end - start >= WRITE_CHUNK_OPS) {
                break;
            }
            bytes += len;
            batch.push(docs[end].1.clone());
            end += 1;
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("insert", coll);
        cmd.append("documents", batch);
        cmd.append("ordered", true);
        cmd.append("bypassDocumentValidation", true);
        cmd.append("writeConcern", majority());
        let reply = run_update(client, db, cmd).await?;
        let first = reply
            .get_array("writeErrors")
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.as_document()?;
                let i = usize::try_from(e.get_i32("index").ok()?).ok()?;
                Some((i, e.get_i32("code").ok()))
            })
            .min_by_key(|(i, _)| *i);
        if let Some((i, code)) = first {
            return Ok(Some((start + i, code)));
        }
        start = end;
    }
    Ok(None)
}

/// Runs `statements` in order, in byte-bounded ordered commands. Returns the index of the
/// first statement refused (or whose guard failed, or that upserted under a guard), after
/// which nothing more was run.
async fn write_ordered(
    client: &Client,
    db: &str,
    coll: &str,
    statements: &[Statement],
) -> Result<Option<usize>, JobError> {
    let mut start = 0;
    while start < statements.len() {
        let mut stmts = RawArrayBuf::new();
        let mut bytes = 0;
        let mut end = start;
        while end < statements.len() {
            let len = statements[end].body.as_bytes().len();
            if end > start && (bytes + len > WRITE_CHUNK_BYTES || end - start >= WRITE_CHUNK_OPS) {
                break;
            }
            bytes += len;
            stmts.push(statements[end].body.clone());
            end += 1;
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("update", coll);
        cmd.append("updates", stmts);
        cmd.append("ordered", true);
        cmd.append("bypassDocumentValidation", true);
        cmd.append("writeConcern", majority());
        let reply = run_update(client, db, cmd).await?;
        let index = |d: &Bson| -> Option<usize> {
            usize::try_from(d.as_document()?.get_i32("index").ok()?).ok()
        };
        let upserted_guarded = reply
            .get_array("upserted")
            .into_iter()
            .flatten()
            .filter_map(index)
            .find(|&i| statements[start + i].guarded);
        let refused = reply
            .get_array("writeErrors")
            .into_iter()
            .flatten()
            .filter_map(index)
            .min();
        if let Some(i) = [upserted_guarded, refused].into_iter().flatten().min() {
            return Ok(Some(start + i));
        }
        start = end;
    }
    Ok(None)
}

/// The writer that owns a document: a stable hash of its `_id` bytes.
fn writer_of(key: &[u8], writers: usize) -> usize {
    // FNV-1a: stable across runs and cheap; any even spread will do.
    let h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    });
    (h % writers as u64) as usize
}

/// One update statement of the `update` command, and the document it belongs to.
pub(crate) struct Statement {
    /// The document's index in the batch (what a refusal names for repair).
    pub owner: usize,
    pub body: RawDocumentBuf,
    /// Its filter carries a delta's guards (beside the `_id`, which keeps the `_id` index in
    /// use): the statement upserts so that a guard that fails
    /// on an existing document trips the `_id` index (a duplicate key error naming the
    /// statement), and an upsert reports a document missing on the destination. Either way
    /// the document is repaired.
    pub guarded: bool,
}

impl Statement {
    /// The whole document, inserted or replaced.
    pub(crate) fn whole(owner: usize, id: &DocId, doc: RawDocumentBuf) -> Self {
        let mut s = RawDocumentBuf::new();
        s.append("q", id.filter());
        s.append("u", doc);
        s.append("upsert", true);
        Statement {
            owner,
            body: s,
            guarded: false,
        }
    }

    fn delta(owner: usize, id: &DocId, d: Delta, guard: bool) -> Self {
        let guarded = guard && !d.guards.is_empty();
        let mut q = id.filter();
        if guarded {
            for e in delta::guard_filter(&d.guards).iter().flatten() {
                q.append(e.0, e.1.to_raw_bson());
            }
        }
        let mut s = RawDocumentBuf::new();
        s.append("q", q);
        s.append("u", d.update);
        if guarded {
            s.append("upsert", true);
        }
        Statement {
            owner,
            body: s,
            guarded,
        }
    }
}

pub(crate) async fn write_deletes(
    client: &Client,
    db: &str,
    coll: &str,
    ids: &[DocId],
) -> Result<(), JobError> {
    for chunk in ids.chunks(WRITE_CHUNK_OPS) {
        let mut stmts = RawArrayBuf::new();
        for id in chunk {
            let mut s = RawDocumentBuf::new();
            s.append("q", id.filter());
            s.append("limit", 1i32);
            stmts.push(s);
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("delete", coll);
        cmd.append("deletes", stmts);
        cmd.append("ordered", false);
        cmd.append("writeConcern", majority());
        mongo::run_write(client, db, cmd, &[]).await?;
    }
    Ok(())
}

/// Runs update statements, a document's in order (its deltas follow its upsert), in
/// byte-bounded unordered commands: round `k` holds each document's `k`-th statement, so no
/// command holds two statements of one document and the server may run them in any order and
/// go on past a failure. A statement the server refuses, or whose guard fails, marks its
/// document for repair from the source, and that document's later statements are skipped; the
/// others go on, at no extra round trip. Returns the documents to repair.
pub(crate) async fn write_statements(
    client: &Client,
    db: &str,
    coll: &str,
    statements: Vec<Statement>,
) -> Result<Vec<usize>, JobError> {
    let mut refused: std::collections::HashSet<usize> = std::collections::HashSet::new();
    for round in rounds(&statements) {
        let mut next = 0;
        while next < round.len() {
            let mut stmts = RawArrayBuf::new();
            let mut sent: Vec<usize> = Vec::new();
            let mut bytes = 0;
            while next < round.len() {
                let s = &statements[round[next]];
                let len = s.body.as_bytes().len();
                if !sent.is_empty()
                    && (bytes + len > WRITE_CHUNK_BYTES || sent.len() >= WRITE_CHUNK_OPS)
                {
                    break;
                }
                if !refused.contains(&s.owner) {
                    bytes += len;
                    stmts.push(s.body.clone());
                    sent.push(round[next]);
                }
                next += 1;
            }
            if sent.is_empty() {
                continue;
            }
            let mut cmd = RawDocumentBuf::new();
            cmd.append("update", coll);
            cmd.append("updates", stmts);
            cmd.append("ordered", false);
            cmd.append("bypassDocumentValidation", true);
            cmd.append("writeConcern", majority());
            let reply = run_update(client, db, cmd).await?;
            let at = |d: &Bson| -> Option<&Statement> {
                let i = d.as_document()?.get_i32("index").ok()?;
                sent.get(usize::try_from(i).ok()?).map(|&p| &statements[p])
            };
            // A guarded delta that upserted found no document: the copy has not written it (or
            // the source deleted it since); what the upsert made is replaced by the repair.
            for u in reply.get_array("upserted").into_iter().flatten() {
                if let Some(s) = at(u).filter(|s| s.guarded) {
                    refused.insert(s.owner);
                }
            }
            for e in reply.get_array("writeErrors").into_iter().flatten() {
                if let Some(s) = at(e) {
                    tracing::trace!(
                        code = e.as_document().and_then(|e| e.get_i32("code").ok()),
                        "a delta was refused by the destination or its guard failed; repairing the document from the source"
                    );
                    refused.insert(s.owner);
                }
            }
        }
    }
    Ok(refused.into_iter().collect())
}

/// Runs a write command; a write concern error fails it (its writes may not last).
async fn run_update(
    client: &Client,
    db: &str,
    cmd: RawDocumentBuf,
) -> Result<bson::Document, JobError> {
    let reply = client.database(db).run_raw_command(cmd).await?;
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(JobError::Mongo(mongodb::error::Error::custom(
            mongo::WriteRejected {
                code: wce.get_i32("code").unwrap_or_default(),
                msg: wce
                    .get_str("errmsg")
                    .unwrap_or("write concern error")
                    .to_string(),
            },
        )));
    }
    Ok(reply)
}

/// Statement indexes by round: a document's `k`-th statement is in round `k`.
fn rounds(statements: &[Statement]) -> Vec<Vec<usize>> {
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, s) in statements.iter().enumerate() {
        let k = seen.entry(s.owner).or_insert(0);
        if rounds.len() <= *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(i);
        *k += 1;
    }
    rounds
}

/// Time series collections have no unique `_id`: insert only what is not there yet.
async fn insert_missing(
    client: &Client,
    db: &str,
    coll: &str,
    docs: Vec<(DocId, RawDocumentBuf)>,
) -> Result<(), JobError> {
    let target: Collection<RawDocumentBuf> = client.database(db).collection(coll);
    let values: Vec<Bson> = docs.iter().map(|(i, _)| i.bson()).collect();
    let mut present = std::collections::HashSet::new();
    let mut cursor = target
        .find(doc! { "_id": { "$in": values } })
        .projection(doc! { "_id": 1 })
        .await?;
    while let Some(d) = cursor.try_next().await? {
        if let Ok(Some(id)) = d.get("_id") {
            present.insert(DocId::new(id).key);
        }
    }
    let missing: Vec<RawDocumentBuf> = docs
        .into_iter()
        .filter(|(i, _)| !present.contains(&i.key))
        .map(|(_, d)| d)
        .collect();
    if !missing.is_empty() {
        target
            .insert_many(missing)
            .ordered(false)
            .bypass_document_validation(true)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn raw(d: bson::Document) -> RawDocumentBuf {
        RawDocumentBuf::from_document(&d).unwrap()
    }

    fn as_docs(v: Vec<RawDocumentBuf>) -> Vec<bson::Document> {
        v.iter()
            .map(|d| bson::Document::try_from(d.as_ref()).unwrap())
            .collect()
    }

    #[test]
    fn rounds_hold_one_statement_per_document_in_order() {
        let id = DocId::new(bson::RawBsonRef::Int32(1));
        let st = |owner| Statement::whole(owner, &id, RawDocumentBuf::new());
        let statements = vec![st(0), st(1), st(0), st(2), st(0), st(1)];
        assert_eq!(
            rounds(&statements),
            vec![vec![0, 1, 3], vec![2, 5], vec![4]]
        );
    }

    #[test]
    fn batch_keeps_the_last_whole_document_and_the_deltas_after_it() {
        let scope = Scope::default();
        let mut b = Batch::default();
        let ev = |op: &str, extra: bson::Document| {
            let mut d = doc! { "operationType": op, "ns": { "db": "d", "coll": "c" }, "documentKey": { "_id": 1 } };
            d.extend(extra);
            raw(d)
        };
        let upd = |v: i32| doc! { "updateDescription": { "updatedFields": { "v": v }, "removedFields": [], "truncatedArrays": [] } };
        b.add(&scope, &ev("update", upd(1)), "update");
        b.add(
            &scope,
            &ev("replace", doc! { "fullDocument": { "_id": 1, "r": true } }),
            "replace",
        );
        b.add(&scope, &ev("update", upd(2)), "update");
        b.add(&scope, &ev("update", upd(3)), "update");
        let ns = ("d".to_string(), "c".to_string());
        let docs = std::mem::take(b.by_ns.get_mut(&ns).unwrap()).coalesce();
        let d = &docs[0];
        assert!(matches!(d.base, Some(Base::Upsert(_))));
        assert_eq!(
            as_docs(d.deltas.iter().map(|d| d.update.clone()).collect()),
            vec![doc! { "$set": { "v": 2 } }, doc! { "$set": { "v": 3 } }]
        );
        b.add(&scope, &ev("update", upd(4)), "update");
        b.add(&scope, &ev("delete", doc! {}), "delete");
        let docs = std::mem::take(b.by_ns.get_mut(&ns).unwrap()).coalesce();
        assert_eq!(docs.len(), 1);
        assert!(matches!(docs[0].base, Some(Base::Delete)) && docs[0].deltas.is_empty());
        assert_eq!(b.events, 6);
    }

    #[test]
    fn the_log_keeps_every_event_in_stream_order_for_capped_collections() {
        let scope = Scope::default();
        let mut b = Batch::default();
        let ev = |op: &str, id: i32| {
            raw(
                doc! { "operationType": op, "ns": { "db": "d", "coll": "c" }, "documentKey": { "_id": id }, "fullDocument": { "_id": id } },
            )
        };
        for (op, id) in [
            ("insert", 3),
            ("insert", 1),
            ("delete", 3),
            ("insert", 3),
            ("insert", 2),
        ] {
            b.add(&scope, &ev(op, id), op);
        }
        let ns = b.by_ns.remove(&("d".to_string(), "c".to_string())).unwrap();
        let seen: Vec<(i32, &str)> = ns
            .log
            .iter()
            .map(|l| {
                let id = match l.id.value.as_raw_bson_ref() {
                    bson::RawBsonRef::Int32(i) => i,
                    _ => -1,
                };
                let what = match l.step {
                    Step::Insert(_) => "insert",
                    Step::Whole(_) => "whole",
                    Step::Delete => "delete",
                    _ => "other",
                };
                (id, what)
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                (3, "insert"),
                (1, "insert"),
                (3, "delete"),
                (3, "insert"),
                (2, "insert")
            ]
        );
        // Coalesced (any other collection): one entry per document, first-seen order.
        let docs = ns.coalesce();
        assert_eq!(docs.len(), 3);
        assert!(docs.iter().all(|d| matches!(d.base, Some(Base::Upsert(_)))));
    }

    #[test]
    fn events_outside_the_scope_are_counted_but_not_applied() {
        let inc: Vec<crate::contract::filter::NamespaceFilter> =
            serde_json::from_str(r#"[{"database":"keep"}]"#).unwrap();
        let scope = Scope::compile(&inc, &[]).unwrap();
        let mut b = Batch::default();
        let ev = raw(
            doc! { "operationType": "insert", "ns": { "db": "other", "coll": "c" }, "documentKey": { "_id": 1 }, "fullDocument": { "_id": 1 } },
        );
        b.add(&scope, &ev, "insert");
        assert_eq!(b.events, 1);
        assert!(b.by_ns.is_empty());
    }
}
