//! The initial copy: collections split into `_id` ranges (resumable units), each copied as raw
//! BSON in byte-bounded batches of unordered inserts, many units at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bson::{doc, Bson, Document, RawDocumentBuf};
use futures::{StreamExt, TryStreamExt};
use mongodb::options::{Acknowledgment, ReadConcern, WriteConcern};
use mongodb::{Client, Collection};
use tokio::sync::{mpsc, Semaphore};

use crate::engine::fence::Fence;
use crate::engine::status::Landed;
use crate::engine::store::{CopyOrder, PartitionDoc, Store};
use crate::mongo::catalog::{self, CollKind, CollSpec};
use crate::mongo::{codes, error_code};
use crate::verify::digest::Digest;

/// Knobs for the copy; `loadLevel` picks the concurrency.
#[derive(Debug, Clone, Copy)]
pub struct CopyTuning {
    /// Target size of one partition (resumable unit).
    pub partition_bytes: u64,
    /// Bytes per insert batch.
    pub batch_bytes: usize,
    /// Documents per insert batch.
    pub batch_docs: usize,
    /// Partitions copied at the same time.
    pub concurrency: usize,
    /// Collections at least this large whose `_id`s are random are copied in natural order
    /// (mongosync's `detectRandomId` threshold): an `_id`-ordered read of random keys turns
    /// into random I/O on the source.
    pub random_id_natural_bytes: u64,
    /// Concurrent insert streams per partition: writes within a collection run in parallel
    /// without the source paying for another range query.
    pub writers_per_partition: usize,
    /// Indexes per createIndexes command (`--createIndexesBatchSize`).
    pub index_batch: usize,
}

impl CopyTuning {
    pub fn for_load_level(level: u8, partition_bytes: u64) -> Self {
        let concurrency = match level {
            1 => 1,
            2 => 2,
            3 => 4,
            _ => 8,
        };
        let writers_per_partition = if level <= 1 { 1 } else { 2 };
        // Per partition, a batch per writer is being written and one more is queued for each,
        // one is being built, and the driver buffers one server batch: the batch size shrinks
        // as concurrency grows, so that the copy's memory is set here and not by the data.
        let in_flight = concurrency * (2 * writers_per_partition + 2);
        let batch_bytes = (COPY_MEMORY_BYTES / in_flight).clamp(1 << 20, 8 << 20);
        Self {
            partition_bytes,
            batch_bytes,
            batch_docs: 10_000,
            concurrency,
            random_id_natural_bytes: 20 * 1024 * 1024 * 1024,
            writers_per_partition,
            index_batch: 1,
        }
    }
}

/// The copy's budget for documents in flight, over all partitions.
const COPY_MEMORY_BYTES: usize = 128 << 20;

pub fn partition_id(db: &str, coll: &str, index: usize) -> String {
    format!("{db}.{coll}#{index:06}")
}

/// One partition covering a whole collection (used to copy a collection again).
pub fn whole_collection(spec: &CollSpec) -> PartitionDoc {
    let natural = spec.kind == CollKind::Timeseries || spec.is_capped();
    single_partition(
        spec,
        if natural {
            CopyOrder::Natural
        } else {
            CopyOrder::Id
        },
        false,
    )
}

fn single_partition(spec: &CollSpec, order: CopyOrder, recreate: bool) -> PartitionDoc {
    PartitionDoc {
        id: partition_id(&spec.db, &spec.name, 0),
        db: spec.db.clone(),
        coll: spec.name.clone(),
        index: 0,
        lo: None,
        hi: None,
        order,
        uuid: spec.uuid.clone(),
        recreate,
        done: false,
        copied_bytes: 0,
        copied_docs: 0,
        resume_from: None,
        estimated_bytes: 0,
        estimated_docs: 0,
        digest: None,
    }
}

/// Estimated size of a collection, in bytes and documents.
pub async fn collection_size(
    client: &Client,
    db: &str,
    coll: &str,
) -> mongodb::error::Result<(i64, i64)> {
    match client
        .database(db)
        .run_command(doc! { "collStats": coll })
        .await
    {
        Ok(r) => {
            let num = |k: &str| match r.get(k) {
                Some(Bson::Int32(v)) => *v as i64,
                Some(Bson::Int64(v)) => *v,
                Some(Bson::Double(v)) => *v as i64,
                _ => 0,
            };
            Ok((num("size"), num("count")))
        }
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => Ok((0, 0)),
        Err(e) => Err(e),
    }
}

/// A database's data size in bytes (`dbStats`), when the server reports one.
pub async fn database_size(client: &Client, db: &str) -> mongodb::error::Result<Option<i64>> {
    let r = client
        .database(db)
        .run_command(doc! { "dbStats": 1 })
        .await?;
    Ok(match r.get("dataSize") {
        Some(Bson::Int32(v)) => Some(*v as i64),
        Some(Bson::Int64(v)) => Some(*v),
        Some(Bson::Double(v)) => Some(*v as i64),
        _ => None,
    })
}

/// Whether a database of `data_size` bytes needs no per-collection sizing: every collection
/// in it is then smaller than a small partition, so it is copied whole, at once, and never
/// split or probed for random `_id`s. One `dbStats` per database then replaces a `collStats`
/// per collection (which scans the collection on some servers): 2,000 collections of a
/// multi-tenant deployment were 2,000 round trips before the first write.
pub fn database_is_small(data_size: i64) -> bool {
    (0..SMALL_PARTITION_BYTES).contains(&data_size)
}

/// Splits one collection into partitions. Boundaries come from a server-side `$sample` of
/// `_id`s, sorted by the server so that any mix of `_id` types is ordered as the index orders
/// it; reads then use the `_id` index with `min`/`max`, which (unlike `$gte`/`$lt`) do not
/// stop at type boundaries.
/// `detect_random_id` is the `/start` option of that name; `size` (bytes, documents), when the
/// caller knows it already, saves asking the server.
pub async fn plan(
    source: &Client,
    spec: &CollSpec,
    natural: bool,
    detect_random_id: bool,
    tuning: &CopyTuning,
    size: Option<(i64, i64)>,
) -> mongodb::error::Result<(Vec<PartitionDoc>, i64)> {
    let (bytes, count) = match size {
        Some(known) => known,
        None => collection_size(source, &spec.db, &spec.name).await?,
    };
    let single = |order, recreate| PartitionDoc {
        estimated_bytes: bytes,
        estimated_docs: count,
        ..single_partition(spec, order, recreate)
    };
    match spec.kind {
        CollKind::View => return Ok((vec![], 0)),
        CollKind::Timeseries => return Ok((vec![single(CopyOrder::Natural, true)], bytes)),
        CollKind::Collection => {}
    }
    // Capped collections keep their insertion order, which only a natural-order read keeps.
    if spec.is_capped() || natural {
        return Ok((vec![single(CopyOrder::Natural, false)], bytes));
    }
    // As mongosync, clustered collections are left in `_id` order: their `_id` is the record
    // order.
    if detect_random_id
        && bytes as u64 >= tuning.random_id_natural_bytes
        && !spec.options.contains_key("clusteredIndex")
        && ids_look_random(source, spec).await?
    {
        tracing::info!(ns = %spec.ns(), "random _id values: copying in natural order");
        return Ok((vec![single(CopyOrder::Natural, false)], bytes));
    }
    let wanted = (bytes as u64)
        .div_ceil(tuning.partition_bytes.max(1))
        .clamp(1, 10_000) as i64;
    if wanted <= 1 || count < 2 {
        return Ok((vec![single(CopyOrder::Id, false)], bytes));
    }
    let sample_size = (wanted * 16).min(count);
    let ids: Vec<Document> = source
        .database(&spec.db)
        .collection::<Document>(&spec.name)
        .aggregate(vec![
            doc! { "$sample": { "size": sample_size } },
            doc! { "$project": { "_id": 1 } },
            doc! { "$sort": { "_id": 1 } },
        ])
        .allow_disk_use(true)
        .await?
        .try_collect()
        .await?;
    let ids = ids_of(ids);
    let mut bounds: Vec<Bson> = Vec::new();
    for i in 1..wanted {
        let pos = (i as usize * ids.len()) / wanted as usize;
        if let Some(b) = ids.get(pos) {
            if bounds.last() != Some(b) {
                bounds.push(b.clone());
            }
        }
    }
    let mut parts = Vec::with_capacity(bounds.len() + 1);
    let mut lo: Option<Bson> = None;
    for (i, hi) in bounds
        .into_iter()
        .map(Some)
        .chain(std::iter::once(None))
        .enumerate()
    {
        parts.push(PartitionDoc {
            id: partition_id(&spec.db, &spec.name, i),
            db: spec.db.clone(),
            coll: spec.name.clone(),
            index: i as i32,
            lo: lo.clone(),
            hi: hi.clone(),
            order: CopyOrder::Id,
            uuid: spec.uuid.clone(),
            recreate: false,
            done: false,
            copied_bytes: 0,
            copied_docs: 0,
            resume_from: None,
            estimated_bytes: bytes / wanted.max(1),
            estimated_docs: count / wanted.max(1),
            digest: None,
        });
        lo = hi;
    }
    Ok((parts, bytes))
}

/// How many of the first `_id`s in insertion order are looked at to judge their randomness.
const RANDOM_ID_PROBE: i64 = 256;

/// Whether `_id` has little to do with insertion order: the first documents in natural order
/// are checked for ascending `_id`s (ObjectIds, counters and timestamps ascend; UUIDs and hashes
/// do not).
async fn ids_look_random(source: &Client, spec: &CollSpec) -> mongodb::error::Result<bool> {
    let ids: Vec<Document> = source
        .database(&spec.db)
        .collection::<Document>(&spec.name)
        .find(doc! {})
        .sort(doc! { "$natural": 1 })
        .projection(doc! { "_id": 1 })
        .limit(RANDOM_ID_PROBE)
        .await?
        .try_collect()
        .await?;
    Ok(ids_are_random(&ids_of(ids)))
}

/// The `_id`s of `_id`-only projections.
fn ids_of(docs: Vec<Document>) -> Vec<Bson> {
    docs.into_iter()
        .filter_map(|mut d| d.remove("_id"))
        .collect()
}

/// Fewer than 3 in 4 neighbours in ascending order means random; `_id`s of different types
/// (or of types without an obvious order) are not judged random.
fn ids_are_random(ids: &[Bson]) -> bool {
    let mut pairs = 0usize;
    let mut ascending = 0usize;
    for w in ids.windows(2) {
        let Some(ord) = same_type_cmp(&w[0], &w[1]) else {
            return false;
        };
        pairs += 1;
        if ord.is_lt() {
            ascending += 1;
        }
    }
    pairs >= 16 && ascending * 4 < pairs * 3
}

fn same_type_cmp(a: &Bson, b: &Bson) -> Option<std::cmp::Ordering> {
    use Bson::*;
    let num = |v: &Bson| match v {
        Int32(i) => Some(*i as f64),
        Int64(i) => Some(*i as f64),
        Double(d) => Some(*d),
        _ => None,
    };
    match (a, b) {
        (ObjectId(x), ObjectId(y)) => Some(x.bytes().cmp(&y.bytes())),
        (String(x), String(y)) => Some(x.cmp(y)),
        (Binary(x), Binary(y)) => Some(x.bytes.cmp(&y.bytes)),
        (DateTime(x), DateTime(y)) => Some(x.cmp(y)),
        _ => num(a)?.partial_cmp(&num(b)?),
    }
}

/// Copied documents are written with `w: majority`, not journaled one by one: a partition is
/// recorded as copied (its checkpoint, or its end) only by a later write that is majority and
/// journaled, and a journal is one sequential log, so that write's flush carries every
/// document acknowledged before it. A destination that crashes earlier loses only documents
/// the engine has not recorded, which it copies again. Majority keeps them through a failover
/// (a document on a rolled-back primary only would make a later record a lie). On `mongod`
/// majority writes are journaled anyway (`writeConcernMajorityJournalDefault`); the test
/// server flushes its journal for each `j: true` batch (a naive copy of 200,000 documents
/// took 31.0 s with it, 27.0 s without).
fn destination_collection(client: &Client, db: &str, coll: &str) -> Collection<RawDocumentBuf> {
    client.database(db).collection_with_options(
        coll,
        mongodb::options::CollectionOptions::builder()
            .write_concern(WriteConcern::builder().w(Acknowledgment::Majority).build())
            .build(),
    )
}

/// Inserts a batch; documents already there (a redone partition, or a change event that got
/// there first) are left alone: the change events that follow the copy settle their content.
async fn insert_batch(
    coll: &Collection<RawDocumentBuf>,
    batch: Vec<RawDocumentBuf>,
) -> mongodb::error::Result<()> {
    match coll
        .insert_many(batch)
        .ordered(false)
        .bypass_document_validation(true)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => match e.kind.as_ref() {
            mongodb::error::ErrorKind::InsertMany(im)
                if im.write_concern_error.is_none()
                    && im
                        .write_errors
                        .as_ref()
                        .is_some_and(|w| w.iter().all(|w| w.code == codes::DUPLICATE_KEY)) =>
            {
                Ok(())
            }
            _ => Err(e),
        },
    }
}

/// An insert that takes longer than this halves the partition's next batches; one that takes
/// under a quarter of it doubles them (up to the tuning's size). On a slow destination a
/// batch of several megabytes takes many seconds to land, and nothing shows for it until it
/// has: progress, its ETA and checkpoints move in lumps of that size. Bounding a batch's time
/// keeps them moving every second or so, at no cost on a fast destination, where batches stay
/// at full size.
const BATCH_TARGET: Duration = Duration::from_secs(1);
/// The smallest batch the adjustment goes down to: a few hundred documents of common sizes
/// per insert, so that round trips stay a small part of the work.
const MIN_BATCH_BYTES: usize = 256 << 10;
/// A partition's first batch: small, so that its first bytes land soon whatever the
/// destination's speed; the following ones grow while they land quickly (a fast destination
/// reaches full-size batches within a few).
const FIRST_BATCH_BYTES: usize = MIN_BATCH_BYTES;

/// The next batch size after an insert of a batch of `limit` bytes took `took`.
fn next_batch_limit(limit: usize, took: Duration, max: usize) -> usize {
    let floor = MIN_BATCH_BYTES.min(max);
    if took > BATCH_TARGET {
        (limit / 2).max(floor)
    } else if took < BATCH_TARGET / 4 {
        limit.saturating_mul(2).min(max)
    } else {
        limit
    }
    .clamp(floor, max)
}

/// How often an `_id`-ordered partition records how far it has been copied: a crashed engine
/// redoes at most this much of each partition in flight (one small update per partition).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// Hidden override of [`CHECKPOINT_INTERVAL`] in milliseconds, for tests: a copy on a quiet
/// machine can finish before the default interval is up.
pub const CHECKPOINT_ENV: &str = "CLUSTERSYNC_COPY_CHECKPOINT_MS";

fn checkpoint_interval() -> Duration {
    static INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *INTERVAL.get_or_init(|| {
        std::env::var(CHECKPOINT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&ms| ms >= 10)
            .map_or(CHECKPOINT_INTERVAL, Duration::from_millis)
    })
}

/// One batch read, as the frontier keeps it until it is part of the finished prefix.
#[derive(Debug)]
struct ReadBatch {
    last_id: Bson,
    bytes: i64,
    docs: i64,
    digest: Digest,
    written: bool,
}

/// The batches of one partition, in read order, as their writes finish (in any order): the
/// `_id` up to which every document is written is the last one of the longest finished
/// prefix.
#[derive(Debug, Default)]
struct Frontier {
    /// Batches read and not yet part of the finished prefix.
    pending: std::collections::VecDeque<ReadBatch>,
    /// Sequence number of `pending`'s first batch.
    first: u64,
    /// The finished prefix: its last `_id`, and the bytes, documents and digest up to it (no
    /// digest when the prefix was copied before a restart that did not record one).
    safe: Option<Bson>,
    bytes: i64,
    docs: i64,
    digest: Option<Digest>,
}

impl Frontier {
    fn starting_at(bytes: i64, docs: i64, digest: Option<Digest>) -> Self {
        Self {
            bytes,
            docs,
            digest,
            ..Self::default()
        }
    }

    /// A batch read: its sequence number.
    fn read(&mut self, last_id: Bson, bytes: i64, docs: i64, digest: Digest) -> u64 {
        self.pending.push_back(ReadBatch {
            last_id,
            bytes,
            docs,
            digest,
            written: false,
        });
        self.first + self.pending.len() as u64 - 1
    }

    /// A batch written; true when the finished prefix grew.
    fn written(&mut self, seq: u64) -> bool {
        if let Some(b) = seq
            .checked_sub(self.first)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            b.written = true;
        }
        let mut grew = false;
        while self.pending.front().is_some_and(|b| b.written) {
            let b = self.pending.pop_front().expect("front");
            self.first += 1;
            self.safe = Some(b.last_id);
            self.bytes += b.bytes;
            self.docs += b.docs;
            if let Some(d) = &mut self.digest {
                d.merge(&b.digest);
            }
            grew = true;
        }
        grew
    }
}

/// Where a partition's copy is recorded as it goes (`None` for copies that are not resumable
/// units, such as a collection copied again whole).
#[derive(Clone, Copy)]
pub struct Checkpoints<'a> {
    pub store: &'a Store,
}

/// A partition this small (its share of its collection's estimated bytes) skips the queue for
/// opening source cursors, and copies alongside the large ones: its cost is round trips, not
/// bytes, so thousands of small collections are copied many at a time.
const SMALL_PARTITION_BYTES: i64 = 1 << 20;
/// Small partitions in flight at once, beside the `loadLevel` large ones.
const SMALL_CONCURRENCY: usize = 16;
/// How long a database's listing answers for its collections' UUID checks (see [`Shared`]), at
/// least: a listing answers for ten times as long as it took, so that listing stays a tenth of
/// the source's work. Listing one database of 10,000 collections every second took 107 s of
/// the test server's CPU during a 171 s copy.
const LISTING_TTL: Duration = Duration::from_secs(1);
const LISTING_TTL_PER_COST: u32 = 10;

/// Source databases' collections, by database, with how long they answer for.
type Listings =
    std::collections::HashMap<String, (Instant, Duration, std::sync::Arc<Vec<CollSpec>>)>;

/// What the partitions of one copy share.
pub struct Shared {
    /// Cursors are opened one at a time (see [`copy_partition`]).
    opening: Semaphore,
    /// Large partitions in flight.
    large: Semaphore,
    /// Each source database's collections, listed at most once a second (see
    /// [`LISTING_TTL`]) for the partitions' UUID checks: one listing per database instead of
    /// one per collection. The check is a
    /// look before the read, racy whatever its age; a rename or drop it misses is carried by
    /// the change events (the rename marks the collection for a fresh copy).
    listings: Option<tokio::sync::Mutex<Listings>>,
}

impl Shared {
    pub fn new(concurrency: usize, cached_listings: bool) -> Self {
        Self {
            opening: Semaphore::new(1),
            large: Semaphore::new(concurrency.max(1)),
            listings: cached_listings.then(Default::default),
        }
    }

    async fn spec(
        &self,
        source: &Client,
        db: &str,
        coll: &str,
    ) -> mongodb::error::Result<Option<CollSpec>> {
        let Some(listings) = &self.listings else {
            return catalog::find_spec(source, db, coll).await;
        };
        let mut map = listings.lock().await;
        let fresh = map
            .get(db)
            .filter(|(at, ttl, _)| at.elapsed() < *ttl)
            .map(|(_, _, l)| l.clone());
        let listing = match fresh {
            Some(l) => l,
            None => {
                let t = Instant::now();
                let l = std::sync::Arc::new(catalog::list_db_all(source, db).await?);
                let ttl = LISTING_TTL.max(t.elapsed() * LISTING_TTL_PER_COST);
                map.insert(db.to_string(), (Instant::now(), ttl, l.clone()));
                l
            }
        };
        drop(map);
        Ok(listing.iter().find(|s| s.name == coll).cloned())
    }
}

/// What a partition's copy read: bytes, documents, and the digest of the documents (`None`
/// when part of them was copied before a restart that recorded no digest).
pub type CopiedPartition = (i64, i64, Option<Digest>);

/// Copies one partition, from its checkpoint if it has one. `copied` is told of each batch as
/// it lands, so that `/progress` moves smoothly. Returns what the whole partition read (before a
/// restart included).
#[tracing::instrument(skip_all, fields(collection = %format_args!("{}.{}", part.db, part.coll), partition = part.index))]
#[allow(clippy::too_many_arguments)]
pub async fn copy_partition(
    source: &Client,
    destination: &Client,
    part: &PartitionDoc,
    tuning: &CopyTuning,
    copied: &dyn Landed,
    shared: &Shared,
    fence: &Fence,
    checkpoints: Option<Checkpoints<'_>>,
) -> mongodb::error::Result<CopiedPartition> {
    // A closed fence travels as a driver error, which the job turns back into a lease error.
    let fenced = || fence.check().map_err(mongodb::error::Error::custom);
    let small = part.estimated_bytes < SMALL_PARTITION_BYTES;
    let _large = if small {
        None
    } else {
        Some(shared.large.acquire().await)
    };
    let current = shared.spec(source, &part.db, &part.coll).await?;
    let Some(current) = current.filter(|c| part.uuid.is_none() || c.uuid == part.uuid) else {
        tracing::debug!(
            "collection renamed or dropped since the copy was planned; change events carry it"
        );
        return Ok((0, 0, None));
    };
    if part.recreate {
        fenced()?;
        catalog::drop_collection(destination, &part.db, &part.coll).await?;
        catalog::create(destination, &current).await?;
    }
    let src: Collection<RawDocumentBuf> = source.database(&part.db).collection_with_options(
        &part.coll,
        mongodb::options::CollectionOptions::builder()
            .read_concern(ReadConcern::majority())
            .build(),
    );
    // The driver buffers one server batch per cursor: a batch the size of ours, not the
    // server's 16 MB default.
    let mut find = src.find(doc! {}).batch_size(tuning.batch_docs as u32);
    // Only an `_id`-ordered read can carry on where it stopped: `min` is inclusive, so the
    // checkpoint's document is read again, and its insert is a duplicate left alone.
    let resume = match (part.order, &part.resume_from) {
        (CopyOrder::Id, Some(id)) if !part.recreate => Some(id.clone()),
        _ => None,
    };
    let (start_bytes, start_docs, start_digest) = match resume {
        Some(_) => (part.copied_bytes, part.copied_docs, part.digest),
        None => (0, 0, Some(Digest::new())),
    };
    if resume.is_some() {
        tracing::info!(
            already_copied_docs = start_docs,
            already_copied_bytes = start_bytes,
            "resuming the partition from its checkpoint"
        );
    }
    match part.order {
        CopyOrder::Id => {
            find = find.hint(mongodb::options::Hint::Keys(doc! { "_id": 1 }));
            if let Some(lo) = resume.as_ref().or(part.lo.as_ref()) {
                find = find.min(doc! { "_id": lo.clone() });
            }
            if let Some(hi) = &part.hi {
                find = find.max(doc! { "_id": hi.clone() });
            }
        }
        CopyOrder::Natural => find = find.sort(doc! { "$natural": 1 }),
    }
    let t = Instant::now();
    // Cursors are opened one at a time: a server that does the work of a query up front (as
    // the test server does) then returns the first partition's first batch as early as
    // possible, and the next partition's query overlaps that partition's writes. An index
    // seek (mongod) makes the wait negligible.
    let permit = if small {
        None
    } else {
        Some(shared.opening.acquire().await)
    };
    let cursor = find.await;
    drop(permit);
    let mut cursor = match cursor {
        Ok(c) => c,
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => return Ok((0, 0, None)),
        Err(e) => return Err(e),
    };
    let opened = t.elapsed();
    let dst = destination_collection(destination, &part.db, &part.coll);
    // Batches are read ahead while earlier ones are written by several writers: reads and
    // writes overlap, and memory stays at a few batches per partition whatever its size.
    // Unordered inserts of distinct documents commute, so writers need no coordination.
    let writers = tuning.writers_per_partition.max(1);
    let (tx, rx) = mpsc::channel::<(u64, Vec<RawDocumentBuf>)>(writers);
    let rx = tokio::sync::Mutex::new(rx);
    let checkpoints = checkpoints.filter(|_| part.order == CopyOrder::Id && !part.recreate);
    let frontier =
        std::sync::Mutex::new(Frontier::starting_at(start_bytes, start_docs, start_digest));
    // Held while a checkpoint is written, and when the last one was.
    let last_checkpoint = tokio::sync::Mutex::new(Instant::now());
    let checkpoint = || async {
        let Some(cp) = checkpoints else {
            return Ok(());
        };
        let Ok(mut last) = last_checkpoint.try_lock() else {
            return Ok(()); // another writer is recording it
        };
        if last.elapsed() < checkpoint_interval() {
            return Ok(());
        }
        let (id, bytes, docs, digest) = {
            let f = frontier.lock().unwrap_or_else(|p| p.into_inner());
            match &f.safe {
                Some(id) => (id.clone(), f.bytes, f.docs, f.digest),
                None => return Ok(()),
            }
        };
        fenced()?;
        cp.store
            .checkpoint_partition(&part.id, &id, bytes, docs, digest.as_ref())
            .await?;
        *last = Instant::now();
        Ok::<(), mongodb::error::Error>(())
    };
    // The batch size the reader fills to, adjusted by the writers (see BATCH_TARGET).
    let batch_limit = AtomicUsize::new(FIRST_BATCH_BYTES.min(tuning.batch_bytes));
    // Time spent waiting on each side says which server a partition waits for.
    let started = Instant::now();
    let writer = || async {
        let mut writing = Duration::ZERO;
        loop {
            let Some((seq, batch)) = rx.lock().await.recv().await else {
                break;
            };
            let bytes: usize = batch.iter().map(|d| d.as_bytes().len()).sum();
            let docs = batch.len();
            let t = Instant::now();
            // Checked per batch: an engine that lost its lease stops within one batch.
            fenced()?;
            copied.sending();
            insert_batch(&dst, batch).await?;
            let took = t.elapsed();
            writing += took;
            let limit = batch_limit.load(Ordering::Relaxed);
            batch_limit.store(
                next_batch_limit(limit, took, tuning.batch_bytes),
                Ordering::Relaxed,
            );
            copied.landed(&part.db, &part.coll, bytes as i64, docs as i64);
            let grew = frontier
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .written(seq);
            if grew {
                checkpoint().await?;
            }
        }
        Ok::<Duration, mongodb::error::Error>(writing)
    };
    let writer = async {
        let times = futures::future::try_join_all((0..writers).map(|_| writer())).await?;
        Ok::<Duration, mongodb::error::Error>(times.into_iter().sum())
    };
    // Numbers a batch for the frontier, by its last `_id`.
    let number = |batch: &[RawDocumentBuf], bytes: usize, digest: Digest| {
        let last_id = batch
            .last()
            .and_then(|d| d.get("_id").ok().flatten())
            .and_then(|id| Bson::try_from(id.to_raw_bson()).ok())
            .unwrap_or(Bson::Null);
        frontier.lock().unwrap_or_else(|p| p.into_inner()).read(
            last_id,
            bytes as i64,
            batch.len() as i64,
            digest,
        )
    };
    let reader = async {
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        // Hashed as read, for the verifier: the source's side of its first comparison.
        let mut batch_digest = Digest::new();
        let (mut total_bytes, mut total_docs) = (start_bytes, start_docs);
        let mut skip = resume
            .clone()
            .and_then(|id| bson::RawBson::try_from(id).ok());
        let mut reading = Duration::ZERO;
        loop {
            let t = Instant::now();
            let next = cursor.try_next().await?;
            reading += t.elapsed();
            let Some(doc) = next else { break };
            // The checkpoint's own document is read again (`min` is inclusive) and was
            // counted before the restart.
            if let Some(id) = skip.take() {
                if doc.get("_id").ok().flatten() == Some(id.as_raw_bson_ref()) {
                    continue;
                }
            }
            let len = doc.as_bytes().len();
            if !batch.is_empty()
                && (batch_bytes + len > batch_limit.load(Ordering::Relaxed)
                    || batch.len() >= tuning.batch_docs)
            {
                let seq = number(&batch, batch_bytes, std::mem::take(&mut batch_digest));
                if tx.send((seq, std::mem::take(&mut batch))).await.is_err() {
                    break;
                }
                batch_bytes = 0;
            }
            batch_digest.add(&doc);
            batch_bytes += len;
            total_bytes += len as i64;
            total_docs += 1;
            batch.push(doc);
        }
        if !batch.is_empty() {
            let seq = number(&batch, batch_bytes, batch_digest);
            let _ = tx.send((seq, batch)).await;
        }
        drop(tx);
        Ok::<_, mongodb::error::Error>((total_bytes, total_docs, reading))
    };
    // try_join: a failed write must also end the reader, which would otherwise wait forever
    // to hand a batch to writers that have stopped (and the other way round).
    let ((bytes, docs, reading), writing) = tokio::try_join!(reader, writer)?;
    // Every batch is written now: the frontier's digest covers the whole partition.
    let digest = frontier.lock().unwrap_or_else(|p| p.into_inner()).digest;
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        open_ms = opened.as_millis() as u64,
        read_wait_ms = reading.as_millis() as u64,
        write_ms = writing.as_millis() as u64,
        docs,
        "partition copied"
    );
    Ok((bytes, docs, digest))
}

/// Finished partitions are recorded in groups of at most this many, or this often: one
/// journaled write per partition cost a round trip each, during which the copy stood still.
const DONE_GROUP: usize = 64;
const DONE_INTERVAL: Duration = Duration::from_millis(250);

/// A finished partition and what its copy read.
pub type Finished = (PartitionDoc, CopiedPartition);

/// Copies `parts`, `tuning.concurrency` large partitions and [`SMALL_CONCURRENCY`] small ones
/// at a time, recording finished ones through `done` (in groups, each soon after it lands).
#[allow(clippy::too_many_arguments)]
pub async fn copy_all<F, Fut>(
    source: &Client,
    destination: &Client,
    parts: Vec<PartitionDoc>,
    tuning: CopyTuning,
    copied: &dyn Landed,
    fence: &Fence,
    checkpoints: Checkpoints<'_>,
    done: F,
) -> mongodb::error::Result<()>
where
    F: Fn(Vec<Finished>) -> Fut,
    Fut: std::future::Future<Output = mongodb::error::Result<()>>,
{
    let shared = Shared::new(tuning.concurrency, true);
    let shared = &shared;
    // The copier and the recorder run side by side: a partition's future holds a pooled
    // connection between its polls, so recording while the copier's stream stood unpolled
    // could wait for a connection that only the copier would give back.
    let (tx, mut rx) = mpsc::unbounded_channel::<Finished>();
    let copier = async move {
        let mut results = futures::stream::iter(parts.into_iter().map(|p| async move {
            let r = copy_partition(
                source,
                destination,
                &p,
                &tuning,
                copied,
                shared,
                fence,
                Some(checkpoints),
            )
            .await;
            (p, r)
        }))
        .buffer_unordered(tuning.concurrency.max(1) + SMALL_CONCURRENCY);
        while let Some((part, result)) = results.next().await {
            // The recorder only stops early on an error, which ends this copy anyway.
            let _ = tx.send((part, result?));
        }
        Ok::<(), mongodb::error::Error>(())
    };
    let recorder = async {
        let mut group = Vec::new();
        loop {
            let first = match rx.recv().await {
                Some(d) => d,
                None => break,
            };
            group.push(first);
            // Whatever else finishes within the interval joins the group.
            let deadline = tokio::time::Instant::now() + DONE_INTERVAL;
            while group.len() < DONE_GROUP {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(d)) => group.push(d),
                    Ok(None) | Err(_) => break,
                }
            }
            done(std::mem::take(&mut group)).await?;
        }
        Ok::<(), mongodb::error::Error>(())
    };
    tokio::try_join!(copier, recorder)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascending_ids_are_not_random_and_shuffled_ones_are() {
        let ascending: Vec<Bson> = (0..100).map(|i| Bson::Int64(i * 7)).collect();
        assert!(!ids_are_random(&ascending));
        let oids: Vec<Bson> = (0..100)
            .map(|_| Bson::ObjectId(bson::oid::ObjectId::new()))
            .collect();
        assert!(!ids_are_random(&oids), "ObjectIds made in order ascend");
        // A fixed scramble of 0..100: about half the neighbours ascend.
        let scrambled: Vec<Bson> = (0..100u64)
            .map(|i| Bson::Int64(((i * 7_919) % 101) as i64 * if i % 2 == 0 { 1 } else { -1 }))
            .collect();
        assert!(ids_are_random(&scrambled));
        let uuids: Vec<Bson> = (0..100)
            .map(|_| Bson::Binary(bson::Binary::from_uuid(bson::Uuid::new())))
            .collect();
        assert!(ids_are_random(&uuids));
    }

    #[test]
    fn the_frontier_is_the_longest_written_prefix() {
        let hashed = |n: u64| {
            let mut d = Digest::new();
            d.add_hash(n);
            d
        };
        let mut f = Frontier::starting_at(100, 10, Some(hashed(1)));
        let a = f.read(Bson::Int32(5), 50, 5, hashed(2));
        let b = f.read(Bson::Int32(9), 40, 4, hashed(3));
        let c = f.read(Bson::Int32(12), 30, 3, hashed(4));
        // Written out of order: nothing is safe until the first batch is.
        assert!(!f.written(c));
        assert!(!f.written(b));
        assert_eq!(f.safe, None);
        assert_eq!((f.bytes, f.docs), (100, 10));
        assert_eq!(f.digest, Some(hashed(1)));
        assert!(f.written(a));
        assert_eq!(f.safe, Some(Bson::Int32(12)));
        assert_eq!((f.bytes, f.docs), (220, 22));
        // The checkpoint's digest covers exactly the prefix it records.
        let mut all = Digest::new();
        for n in 1..=4 {
            all.add_hash(n);
        }
        assert_eq!(f.digest, Some(all));
        // Later batches carry on the numbering; a repeated or unknown one changes nothing.
        let d = f.read(Bson::Int32(20), 1, 1, hashed(5));
        assert_eq!(d, 3);
        assert!(!f.written(a));
        assert!(!f.written(99));
        assert!(f.written(d));
        assert_eq!(f.safe, Some(Bson::Int32(20)));
    }

    #[test]
    fn a_prefix_copied_without_a_digest_leaves_the_partition_without_one() {
        let mut f = Frontier::starting_at(100, 10, None);
        let a = f.read(Bson::Int32(5), 50, 5, Digest::new());
        assert!(f.written(a));
        assert_eq!((f.bytes, f.docs), (150, 15));
        assert_eq!(
            f.digest, None,
            "half a digest would compare unequal to everything"
        );
    }

    #[test]
    fn mixed_or_few_ids_are_not_judged_random() {
        let mixed = vec![
            Bson::Int32(5),
            Bson::String("a".into()),
            Bson::Int32(1),
            Bson::String("0".into()),
        ];
        assert!(!ids_are_random(&mixed));
        let few: Vec<Bson> = [3, 1, 2].into_iter().map(Bson::Int32).collect();
        assert!(!ids_are_random(&few), "too few to judge");
    }

    #[test]
    fn batches_shrink_while_they_land_slowly_and_grow_back_while_fast() {
        let max = 5 << 20;
        let slow = Duration::from_secs(3);
        let fast = Duration::from_millis(50);
        let ok = Duration::from_millis(600);
        assert_eq!(next_batch_limit(1 << 20, slow, max), 512 << 10);
        assert_eq!(next_batch_limit(300 << 10, slow, max), MIN_BATCH_BYTES);
        assert_eq!(next_batch_limit(1 << 20, ok, max), 1 << 20);
        assert_eq!(next_batch_limit(1 << 20, fast, max), 2 << 20);
        assert_eq!(next_batch_limit(4 << 20, fast, max), max);
        // A tuning smaller than the floor is kept as it is.
        assert_eq!(next_batch_limit(100 << 10, slow, 100 << 10), 100 << 10);
    }
}
