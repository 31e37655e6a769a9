//! Change event application: one change stream over the whole source, applied to the
//! destination idempotently so that it converges although the events overlap the copy.
//!
//! CRUD events are batched. Within a batch only the last event per document matters, because
//! every applied operation sets the whole document (or deletes it): inserts and replaces carry
//! the document, updates are resolved by reading the document's current state from the source
//! in one `$in` query per collection. Deletes run before upserts (two `_id`s of different BSON
//! types but equal value, such as 1 and 1.0, are the same key to the server). DDL events are
//! barriers: the batch before them is flushed, then they are applied alone. The resume token is
//! checkpointed on the destination only after everything before it has been applied.

use std::collections::HashMap;
use std::time::Duration;

use bson::{
    doc, Binary, Bson, Document, RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf,
    Timestamp,
};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::ReadConcern;
use mongodb::{Client, Collection};

use super::catalog::{self, CollKind, CollSpec};
use super::filter::METADATA_DB;
use super::job::{Ctx, JobError};
use super::mongo::{self, codes, error_code};
use super::options::BuildIndexes;

const MAX_BATCH_EVENTS: usize = 5_000;
const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;
const WRITE_CHUNK_BYTES: usize = 8 * 1024 * 1024;
const WRITE_CHUNK_OPS: usize = 1_000;

/// The `_id` of a document, with its encoded bytes as the dedupe key.
#[derive(Clone)]
struct DocId {
    key: Vec<u8>,
    value: RawBson,
}

impl DocId {
    fn new(value: RawBsonRef<'_>) -> Self {
        let value = value.to_raw_bson();
        let mut d = RawDocumentBuf::new();
        d.append("_id", value.clone());
        Self {
            key: d.into_bytes(),
            value,
        }
    }
    fn bson(&self) -> Bson {
        Bson::try_from(self.value.clone()).unwrap_or(Bson::Null)
    }
}

enum Op {
    Upsert(RawDocumentBuf),
    Delete,
    /// An update: the document's current state is read from the source.
    Lookup,
}

#[derive(Default)]
struct NsBatch {
    uuid: Option<Binary>,
    ops: HashMap<Vec<u8>, (DocId, Op)>,
}

#[derive(Default)]
struct Batch {
    by_ns: HashMap<(String, String), NsBatch>,
    events: usize,
    bytes: usize,
    last_ts: Option<Timestamp>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.events == 0
    }
}

fn ns_of(ev: &RawDocument, key: &str) -> Option<(String, String)> {
    let ns = ev.get_document(key).ok()?;
    Some((
        ns.get_str("db").ok()?.to_string(),
        ns.get_str("coll").ok()?.to_string(),
    ))
}

fn uuid_of(ev: &RawDocument) -> Option<Binary> {
    ev.get_binary("collectionUUID").ok().map(|b| Binary {
        subtype: b.subtype,
        bytes: b.bytes.to_vec(),
    })
}

fn is_crud(op: &str) -> bool {
    matches!(op, "insert" | "update" | "replace" | "delete")
}

pub async fn run(ctx: &Ctx) -> Result<(), JobError> {
    let mut applier = Applier::new(ctx);
    applier.run().await
}

struct Applier<'a> {
    ctx: &'a Ctx,
    /// Source collection UUIDs by namespace; cleared at every DDL event.
    source_uuids: HashMap<(String, String), Option<Binary>>,
    /// Destination collection kinds by namespace; cleared at every DDL event.
    kinds: HashMap<(String, String), Option<CollKind>>,
}

impl<'a> Applier<'a> {
    fn new(ctx: &'a Ctx) -> Self {
        Self {
            ctx,
            source_uuids: HashMap::new(),
            kinds: HashMap::new(),
        }
    }

    async fn open_stream(
        &self,
    ) -> Result<mongodb::change_stream::ChangeStream<RawDocumentBuf>, JobError> {
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
            Err(e) if history_lost(&e) => Err(JobError::fatal(history_lost_message())),
            Err(e) => Err(e.into()),
        }
    }

    async fn run(&mut self) -> Result<(), JobError> {
        let mut stream = self.open_stream().await?;
        let (mut last_token, mut last_applied) = (None, None);
        loop {
            if self.commit_point_reached() {
                return Ok(());
            }
            let probe = mongo::cluster_time(&self.ctx.source).await?;
            self.ctx.status.saw_source_time(probe);
            let mut batch = Batch::default();
            let mut idle = false;
            let mut ddl: Option<RawDocumentBuf> = None;
            loop {
                let next = match stream.next_if_any().await {
                    Ok(n) => n,
                    Err(e) if history_lost(&e) => {
                        return Err(JobError::fatal(history_lost_message()))
                    }
                    Err(e) => return Err(e.into()),
                };
                let Some(ev) = next else {
                    idle = true;
                    break;
                };
                let op = ev.get_str("operationType").unwrap_or("").to_string();
                if is_crud(&op) {
                    self.add(&mut batch, &ev, &op);
                    if batch.events >= MAX_BATCH_EVENTS || batch.bytes >= MAX_BATCH_BYTES {
                        break;
                    }
                } else {
                    ddl = Some(ev);
                    break;
                }
            }
            if !batch.is_empty() {
                let n = batch.events;
                let last = batch.last_ts;
                self.apply_batch(batch).await?;
                self.ctx
                    .status
                    .counters
                    .events_applied
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                if let Some(ts) = last {
                    self.ctx.status.lock().crud_ts = Some(ts);
                    self.ctx.status.applied_through(ts);
                }
            }
            if let Some(ev) = ddl {
                let ts = ev.get_timestamp("clusterTime").ok();
                self.apply_ddl(&ev).await?;
                self.ctx
                    .status
                    .counters
                    .events_applied
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(ts) = ts {
                    self.ctx.status.lock().ddl_ts = Some(ts);
                    self.ctx.status.applied_through(ts);
                }
            }
            if idle {
                // The server had nothing after `probe`: everything up to it is applied.
                self.ctx.status.applied_through(probe);
            }
            let applied = self.ctx.status.lock().applied_ts.unwrap_or(probe);
            let token = stream.resume_token();
            if token != last_token || Some(applied) != last_applied {
                self.ctx.store.checkpoint(token.as_ref(), applied).await?;
                last_token = token;
                last_applied = Some(applied);
            }
        }
    }

    fn commit_point_reached(&self) -> bool {
        let s = self.ctx.status.lock();
        matches!((s.commit_ts, s.applied_ts), (Some(c), Some(a)) if a >= c)
    }

    fn add(&self, batch: &mut Batch, ev: &RawDocument, op: &str) {
        let Some(ns) = ns_of(ev, "ns") else { return };
        if let Ok(ts) = ev.get_timestamp("clusterTime") {
            batch.last_ts = Some(ts);
        }
        batch.events += 1;
        if !self.ctx.scope.includes(&ns.0, &ns.1) {
            return;
        }
        let Ok(Some(id)) = ev
            .get_document("documentKey")
            .map(|k| k.get("_id").ok().flatten())
        else {
            return;
        };
        let id = DocId::new(id);
        let entry = batch.by_ns.entry(ns).or_default();
        if entry.uuid.is_none() {
            entry.uuid = uuid_of(ev);
        }
        let op = match op {
            "insert" | "replace" => match ev.get_document("fullDocument") {
                Ok(d) => {
                    batch.bytes += d.as_bytes().len();
                    Op::Upsert(d.to_raw_document_buf())
                }
                Err(_) => Op::Lookup,
            },
            "delete" => Op::Delete,
            _ => Op::Lookup,
        };
        entry.ops.insert(id.key.clone(), (id, op));
    }

    async fn source_uuid(&mut self, db: &str, coll: &str) -> Result<Option<Binary>, JobError> {
        let key = (db.to_string(), coll.to_string());
        if let Some(u) = self.source_uuids.get(&key) {
            return Ok(u.clone());
        }
        let u = catalog::find_spec(&self.ctx.source, db, coll)
            .await?
            .and_then(|s| s.uuid);
        self.source_uuids.insert(key, u.clone());
        Ok(u)
    }

    async fn dest_kind(&mut self, db: &str, coll: &str) -> Result<Option<CollKind>, JobError> {
        let key = (db.to_string(), coll.to_string());
        if let Some(k) = self.kinds.get(&key) {
            return Ok(*k);
        }
        let k = catalog::find_spec(&self.ctx.destination, db, coll)
            .await?
            .map(|s| s.kind);
        self.kinds.insert(key, k);
        Ok(k)
    }

    async fn apply_batch(&mut self, batch: Batch) -> Result<(), JobError> {
        // Lookups and writes for different collections are independent: run them together.
        let mut prepared = Vec::new();
        for ((db, coll), nsb) in batch.by_ns {
            let current_uuid = self.source_uuid(&db, &coll).await?;
            let mut kind = self.dest_kind(&db, &coll).await?;
            if kind.is_none() && nsb.uuid.is_some() && nsb.uuid == current_uuid {
                // The destination lacks a collection the source has (its copy was overtaken
                // by a rename or drop); create it with its options rather than let an upsert
                // create a bare one.
                if let Some(spec) = catalog::find_spec(&self.ctx.source, &db, &coll).await? {
                    catalog::create(&self.ctx.destination, &spec).await?;
                    catalog::build_indexes(
                        &self.ctx.source,
                        &self.ctx.destination,
                        &db,
                        &coll,
                        self.ctx.options.build_indexes,
                        None,
                    )
                    .await?;
                    kind = Some(spec.kind);
                    self.kinds.insert((db.clone(), coll.clone()), kind);
                }
            }
            prepared.push((db, coll, nsb, current_uuid, kind));
        }
        let ctx = self.ctx;
        futures::stream::iter(prepared.into_iter().map(
            |(db, coll, nsb, current_uuid, kind)| async move {
                apply_ns(ctx, &db, &coll, nsb, current_uuid, kind).await
            },
        ))
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(op = ev.get_str("operationType").unwrap_or("?")))]
    async fn apply_ddl(&mut self, ev: &RawDocument) -> Result<(), JobError> {
        self.source_uuids.clear();
        self.kinds.clear();
        let op = ev.get_str("operationType").unwrap_or("");
        let ctx = self.ctx;
        let Some((db, coll)) = ns_of(ev, "ns").or_else(|| {
            ev.get_document("ns")
                .ok()
                .and_then(|n| n.get_str("db").ok())
                .map(|d| (d.to_string(), String::new()))
        }) else {
            return Ok(());
        };
        let desc: Document = ev
            .get_document("operationDescription")
            .ok()
            .and_then(|d| Document::try_from(d).ok())
            .unwrap_or_default();
        let uuid = uuid_of(ev);
        let in_scope = ctx.scope.includes(&db, &coll);
        let ts = ev.get_timestamp("clusterTime").ok();
        tracing::debug!(ns = %format!("{db}.{coll}"), "applying DDL event");
        match op {
            "create" if in_scope => {
                let kind = match ev.get_str("nsType").unwrap_or("collection") {
                    "view" => CollKind::View,
                    "timeseries" => CollKind::Timeseries,
                    _ => CollKind::Collection,
                };
                let mut options = desc.clone();
                options.remove("idIndex");
                if kind == CollKind::View {
                    if let Some(p) = options.remove("viewPipeline") {
                        options.insert("pipeline", p);
                    }
                }
                let spec = CollSpec {
                    db: db.clone(),
                    name: coll.clone(),
                    kind,
                    options,
                    uuid,
                };
                catalog::create(&ctx.destination, &spec).await?;
            }
            "drop" if in_scope => {
                catalog::drop_collection(&ctx.destination, &db, &coll).await?;
                if let Some(u) = &uuid {
                    ctx.store.clear_pending_uuid(u).await?;
                }
            }
            "dropDatabase" => {
                for spec in catalog::list_db(&ctx.destination, &db, &ctx.scope).await? {
                    catalog::drop_collection(&ctx.destination, &db, &spec.name).await?;
                }
            }
            "rename" => {
                let to = ns_of(ev, "to").or_else(|| {
                    desc.get_document("to").ok().and_then(|t| {
                        Some((
                            t.get_str("db").ok()?.to_string(),
                            t.get_str("coll").ok()?.to_string(),
                        ))
                    })
                });
                let Some((to_db, to_coll)) = to else {
                    return Ok(());
                };
                let to_in = ctx.scope.includes(&to_db, &to_coll);
                match (in_scope, to_in) {
                    (true, true) => {
                        rename(&ctx.destination, &db, &coll, &to_db, &to_coll).await?;
                        let drain = match (ts, ctx.status.lock().copy_finished_ts) {
                            (Some(t), Some(c)) => t <= c,
                            _ => true,
                        };
                        if drain {
                            // The rename may have overtaken this collection's copy.
                            resync_collection(ctx, &to_db, &to_coll, uuid.as_ref()).await?;
                        } else if let Some(u) = &uuid {
                            settle_pending(ctx, &to_db, &to_coll, u).await?;
                        }
                    }
                    (true, false) => {
                        return Err(JobError::fatal(format!(
                            "collection {db}.{coll} was renamed to {to_db}.{to_coll}, which the namespace filter excludes; a filtered collection cannot be renamed out of the filter. Restart the migration from scratch with a filter that covers both names"
                        )));
                    }
                    (false, true) => {
                        if let Some(spec) =
                            catalog::find_spec(&ctx.source, &to_db, &to_coll).await?
                        {
                            catalog::create(&ctx.destination, &spec).await?;
                            resync_collection(ctx, &to_db, &to_coll, uuid.as_ref()).await?;
                            catalog::build_indexes(
                                &ctx.source,
                                &ctx.destination,
                                &to_db,
                                &to_coll,
                                ctx.options.build_indexes,
                                None,
                            )
                            .await?;
                        }
                    }
                    (false, false) => {}
                }
            }
            "createIndexes" if in_scope => {
                let names: Vec<String> = desc
                    .get_array("indexes")
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i.as_document()?.get_str("name").ok().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if ctx.options.build_indexes != BuildIndexes::Never {
                    catalog::build_indexes(
                        &ctx.source,
                        &ctx.destination,
                        &db,
                        &coll,
                        ctx.options.build_indexes,
                        Some(&names),
                    )
                    .await?;
                }
            }
            "dropIndexes" if in_scope => {
                if let Ok(indexes) = desc.get_array("indexes") {
                    for name in indexes
                        .iter()
                        .filter_map(|i| i.as_document()?.get_str("name").ok())
                    {
                        catalog::drop_index(&ctx.destination, &db, &coll, name).await?;
                    }
                }
            }
            "modify" if in_scope => {
                let m = catalog::modification(&desc);
                if !m.is_empty() {
                    let mut cmd = doc! { "collMod": &coll };
                    cmd.extend(m);
                    match ctx.destination.database(&db).run_command(cmd).await {
                        Ok(_) => {}
                        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            "shardCollection" | "reshardCollection" | "refineCollectionShardKey" if in_scope => {
                return Err(JobError::fatal(format!(
                    "{op} on {db}.{coll} during the sync is not supported; restart the migration from scratch after it completes"
                )));
            }
            "invalidate" => {
                return Err(JobError::fatal(
                    "the source change stream was invalidated; restart the migration from scratch",
                ));
            }
            _ => tracing::debug!(op, "event not applicable; skipped"),
        }
        Ok(())
    }
}

async fn rename(
    client: &Client,
    db: &str,
    coll: &str,
    to_db: &str,
    to_coll: &str,
) -> Result<(), JobError> {
    let cmd = doc! { "renameCollection": format!("{db}.{coll}"), "to": format!("{to_db}.{to_coll}"), "dropTarget": true };
    match client.database("admin").run_command(cmd).await {
        Ok(_) => Ok(()),
        // Already renamed before a restart, or never created because it was dropped later.
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn history_lost(e: &mongodb::error::Error) -> bool {
    error_code(e) == Some(codes::CHANGE_STREAM_HISTORY_LOST)
        || e.contains_label("NonResumableChangeStreamError")
            && error_code(e) == Some(codes::CHANGE_STREAM_HISTORY_LOST)
}

fn history_lost_message() -> String {
    "the source's oplog no longer holds the change stream's resume point (events were lost); enlarge the source oplog and restart the migration from scratch".into()
}

/// Reads the current state of `ids` from the source, keyed by `_id` bytes.
async fn lookup(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    ids: &[DocId],
) -> Result<HashMap<Vec<u8>, RawDocumentBuf>, JobError> {
    let src: Collection<RawDocumentBuf> = ctx.source.database(db).collection_with_options(
        coll,
        mongodb::options::CollectionOptions::builder()
            .read_concern(ReadConcern::majority())
            .build(),
    );
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(WRITE_CHUNK_OPS) {
        let values: Vec<Bson> = chunk.iter().map(|i| i.bson()).collect();
        let mut cursor = src.find(doc! { "_id": { "$in": values } }).await?;
        while let Some(d) = cursor.try_next().await? {
            if let Ok(Some(id)) = d.get("_id") {
                out.insert(DocId::new(id).key, d);
            }
        }
    }
    Ok(out)
}

async fn apply_ns(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    nsb: NsBatch,
    current_uuid: Option<Binary>,
    kind: Option<CollKind>,
) -> Result<(), JobError> {
    let mut upserts: Vec<(DocId, RawDocumentBuf)> = Vec::new();
    let mut deletes: Vec<DocId> = Vec::new();
    let mut lookups: Vec<DocId> = Vec::new();
    for (_, (id, op)) in nsb.ops {
        match op {
            Op::Upsert(d) => upserts.push((id, d)),
            Op::Delete => deletes.push(id),
            Op::Lookup => lookups.push(id),
        }
    }
    if !lookups.is_empty() {
        let same_collection = nsb.uuid.is_none() || nsb.uuid == current_uuid;
        let found = if same_collection {
            lookup(ctx, db, coll, &lookups).await?
        } else {
            HashMap::new()
        };
        for id in lookups {
            match found.get(&id.key) {
                Some(d) => upserts.push((id, d.clone())),
                None if !same_collection => {
                    // Renamed or dropped since: the rename settles it; a drop forgets it.
                    if let Some(u) = &nsb.uuid {
                        ctx.store
                            .add_pending(doc! { "uuid": u.clone(), "id": id.bson() })
                            .await?;
                    }
                }
                // Deleted since the update: its delete event follows.
                None => {}
            }
        }
    }
    write_deletes(&ctx.destination, db, coll, &deletes).await?;
    if kind == Some(CollKind::Timeseries) {
        insert_missing(&ctx.destination, db, coll, upserts).await
    } else {
        write_upserts(&ctx.destination, db, coll, upserts).await
    }
}

fn majority() -> RawDocumentBuf {
    let mut wc = RawDocumentBuf::new();
    wc.append("w", "majority");
    wc
}

async fn write_deletes(
    client: &Client,
    db: &str,
    coll: &str,
    ids: &[DocId],
) -> Result<(), JobError> {
    for chunk in ids.chunks(WRITE_CHUNK_OPS) {
        let mut stmts = RawArrayBuf::new();
        for id in chunk {
            let mut q = RawDocumentBuf::new();
            q.append("_id", id.value.clone());
            let mut s = RawDocumentBuf::new();
            s.append("q", q);
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

/// Replaces (or inserts) whole documents by `_id`, as raw bytes, in byte-bounded commands.
async fn write_upserts(
    client: &Client,
    db: &str,
    coll: &str,
    docs: Vec<(DocId, RawDocumentBuf)>,
) -> Result<(), JobError> {
    let mut i = 0;
    while i < docs.len() {
        let mut stmts = RawArrayBuf::new();
        let mut bytes = 0;
        let start = i;
        while i < docs.len()
            && (i == start
                || (bytes + docs[i].1.as_bytes().len() < WRITE_CHUNK_BYTES
                    && i - start < WRITE_CHUNK_OPS))
        {
            let (id, d) = &docs[i];
            let mut q = RawDocumentBuf::new();
            q.append("_id", id.value.clone());
            let mut s = RawDocumentBuf::new();
            s.append("q", q);
            s.append("u", d.clone());
            s.append("upsert", true);
            stmts.push(s);
            bytes += d.as_bytes().len();
            i += 1;
        }
        let mut cmd = RawDocumentBuf::new();
        cmd.append("update", coll);
        cmd.append("updates", stmts);
        cmd.append("ordered", false);
        cmd.append("bypassDocumentValidation", true);
        cmd.append("writeConcern", majority());
        mongo::run_write(client, db, cmd, &[]).await?;
    }
    Ok(())
}

/// Time series collections have no unique `_id`: insert only what is not there yet.
async fn insert_missing(
    client: &Client,
    db: &str,
    coll: &str,
    docs: Vec<(DocId, RawDocumentBuf)>,
) -> Result<(), JobError> {
    if docs.is_empty() {
        return Ok(());
    }
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

/// Copies a whole collection again by upsert (after a rename overtook its copy).
async fn resync_collection(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    uuid: Option<&Binary>,
) -> Result<(), JobError> {
    if let Some(u) = uuid {
        let current = catalog::find_spec(&ctx.source, db, coll)
            .await?
            .and_then(|s| s.uuid);
        if current.as_ref() != Some(u) {
            // Renamed again or dropped since: the later event handles it.
            return Ok(());
        }
    }
    let src: Collection<RawDocumentBuf> = ctx.source.database(db).collection(coll);
    let mut cursor = src.find(doc! {}).await?;
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(d) = cursor.try_next().await? {
        let Ok(Some(id)) = d.get("_id") else { continue };
        bytes += d.as_bytes().len();
        batch.push((DocId::new(id), d));
        if bytes >= WRITE_CHUNK_BYTES || batch.len() >= WRITE_CHUNK_OPS {
            write_upserts(&ctx.destination, db, coll, std::mem::take(&mut batch)).await?;
            bytes = 0;
        }
    }
    write_upserts(&ctx.destination, db, coll, batch).await?;
    if let Some(u) = uuid {
        ctx.store.clear_pending_uuid(u).await?;
    }
    Ok(())
}

/// Settles documents whose lookups missed because their collection was being renamed.
async fn settle_pending(ctx: &Ctx, db: &str, coll: &str, uuid: &Binary) -> Result<(), JobError> {
    let ids = ctx.store.take_pending(uuid).await?;
    if ids.is_empty() {
        return Ok(());
    }
    let current = catalog::find_spec(&ctx.source, db, coll)
        .await?
        .and_then(|s| s.uuid);
    if current.as_ref() != Some(uuid) {
        return Ok(());
    }
    let src: Collection<RawDocumentBuf> = ctx.source.database(db).collection(coll);
    let mut cursor = src.find(doc! { "_id": { "$in": ids.clone() } }).await?;
    let mut docs = Vec::new();
    while let Some(d) = cursor.try_next().await? {
        if let Ok(Some(id)) = d.get("_id") {
            docs.push((DocId::new(id), d));
        }
    }
    write_upserts(&ctx.destination, db, coll, docs).await?;
    for id in &ids {
        ctx.store.remove_pending(uuid, id).await?;
    }
    Ok(())
}
