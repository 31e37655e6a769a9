//! A deterministic (given the seed), concurrent, random CRUD + DDL workload.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mongodb::bson::{doc, oid::ObjectId, spec::BinarySubtype, Binary, Bson, DateTime, Document};
use mongodb::options::{ClientOptions, UpdateOptions};
use mongodb::{Client, Database};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::seed::mongo_error_summary;

/// Operation kinds and their relative weights.
pub const OPS: &[(&str, u32)] = &[
    ("insert", 220),
    ("update_set", 100),
    ("update_set_dotted", 60),
    ("update_unset", 50),
    ("update_inc", 70),
    ("update_push", 50),
    ("update_pull", 40),
    ("update_positional", 40),
    ("update_array_index", 40),
    ("update_many", 20),
    ("replace", 70),
    ("delete", 80),
    ("create_collection", 10),
    ("drop_collection", 4),
    ("rename_collection", 8),
    ("create_index", 10),
    ("drop_index", 6),
];

/// Op kinds that are DDL.
pub const DDL_OPS: &[&str] = &[
    "create_collection",
    "drop_collection",
    "rename_collection",
    "create_index",
    "drop_index",
];

/// Extra op kinds of [`Shapes::Full`] (appended to [`OPS`]).
pub const FULL_OPS: &[(&str, u32)] = &[
    ("insert_shaped", 60),
    ("update_set_many_fields", 60),
    ("update_pipeline_set", 30),
    ("update_pipeline_merge", 25),
    ("update_pipeline_addfields_unset", 20),
    ("update_rename", 20),
    ("update_all_positional", 20),
    ("update_array_filters", 20),
    ("update_push_modifiers", 25),
    ("update_pop", 15),
    ("update_add_to_set", 20),
    ("update_array_pad", 15),
    ("update_min_max_mul", 25),
    ("update_current_date", 10),
    ("update_numeric_keys", 30),
    ("update_dollar_dot_fields", 10),
    ("update_unicode_fields", 15),
    ("update_nested_arrays", 15),
    ("update_unique_field", 15),
    ("insert_large", 2),
    ("insert_huge", 1),
    ("update_grow_large", 2),
    ("create_index_unique", 4),
    ("create_index_ttl", 4),
    ("coll_mod_ttl", 4),
    ("coll_mod_validator", 4),
    ("create_capped", 3),
    ("create_validated", 4),
    ("create_view", 4),
    ("drop_view", 3),
];

/// DDL op kinds of [`FULL_OPS`].
pub const FULL_DDL_OPS: &[&str] = &[
    "create_index_unique",
    "create_index_ttl",
    "coll_mod_ttl",
    "coll_mod_validator",
    "create_capped",
    "create_validated",
    "create_view",
    "drop_view",
];

fn is_ddl(kind: &str) -> bool {
    DDL_OPS.contains(&kind) || FULL_DDL_OPS.contains(&kind)
}

/// Which op mix the workload draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shapes {
    /// [`OPS`] only (what the older tests were written against).
    #[default]
    Basic,
    /// [`OPS`] + [`FULL_OPS`]: every update shape, large documents, more DDL
    /// (unique/TTL indexes, collMod, capped collections, validators, views).
    Full,
}

/// Index specs the workload creates/drops: (name, key).
fn index_specs() -> Vec<(&'static str, Document)> {
    vec![
        ("n_1", doc! { "n": 1 }),
        ("a.b.c_1", doc! { "a.b.c": 1 }),
        ("s_1_n_-1", doc! { "s": 1, "n": -1 }),
        ("tags_1", doc! { "tags": 1 }),
        ("r_1_when_-1", doc! { "r": 1, "when": -1 }),
    ]
}

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    /// Databases written to (default `wl_1`, `wl_2`).
    pub dbs: Vec<String>,
    /// Collection name pool (default `c0`..`c5`).
    pub collections: Vec<String>,
    /// Concurrent worker loops (default 2).
    pub workers: usize,
    /// Pause between two ops of one worker (default 4 ms).
    pub pause: Duration,
    /// Include DDL ops (default true).
    pub ddl: bool,
    /// Op mix (default [`Shapes::Basic`]).
    pub shapes: Shapes,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            dbs: vec!["wl_1".into(), "wl_2".into()],
            collections: (0..6).map(|i| format!("c{i}")).collect(),
            workers: 2,
            pause: Duration::from_millis(4),
            ddl: true,
            shapes: Shapes::Basic,
        }
    }
}

/// Per-kind counters returned by [`Workload::stop`].
#[derive(Debug, Clone, Default)]
pub struct WorkloadStats {
    /// Successful ops per kind.
    pub ok: BTreeMap<String, u64>,
    /// Failed ops per kind (failures are expected: dropped/renamed collections,
    /// duplicate keys, type mismatches...).
    pub errors: BTreeMap<String, u64>,
    /// A few error messages, for debugging.
    pub sample_errors: Vec<String>,
}

impl WorkloadStats {
    pub fn ok_count(&self, kind: &str) -> u64 {
        self.ok.get(kind).copied().unwrap_or(0)
    }
    pub fn error_count(&self, kind: &str) -> u64 {
        self.errors.get(kind).copied().unwrap_or(0)
    }
    pub fn total_ok(&self) -> u64 {
        self.ok.values().sum()
    }
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
    /// Successful inserts.
    pub fn inserts(&self) -> u64 {
        self.ok_count("insert")
    }
    /// Successful update/replace ops (all `update_*` kinds and `replace`).
    pub fn updates(&self) -> u64 {
        self.ok
            .iter()
            .filter(|(k, _)| k.starts_with("update_") || k.as_str() == "replace")
            .map(|(_, v)| v)
            .sum()
    }
    pub fn deletes(&self) -> u64 {
        self.ok_count("delete")
    }
    /// Successful DDL ops.
    pub fn ddl(&self) -> u64 {
        DDL_OPS
            .iter()
            .chain(FULL_DDL_OPS.iter())
            .map(|k| self.ok_count(k))
            .sum()
    }
    fn merge(&mut self, other: WorkloadStats) {
        for (k, v) in other.ok {
            *self.ok.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for e in other.sample_errors {
            if self.sample_errors.len() < 20 {
                self.sample_errors.push(e);
            }
        }
    }
}

impl fmt::Display for WorkloadStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ok ({} inserts, {} updates, {} deletes, {} DDL), {} errors; ok={:?} errors={:?}",
            self.total_ok(),
            self.inserts(),
            self.updates(),
            self.deletes(),
            self.ddl(),
            self.total_errors(),
            self.ok,
            self.errors
        )
    }
}

/// A running workload. Dropping it without `stop()` signals the workers to stop.
pub struct Workload {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<WorkloadStats>>,
    ddl_gate: Arc<tokio::sync::RwLock<()>>,
}

impl Workload {
    /// Start the default workload (databases `wl_1`, `wl_2`; 2 workers) against `uri`.
    /// Must be called inside a tokio runtime.
    pub fn start(uri: String, seed: u64) -> Workload {
        Self::start_with_options(uri, seed, WorkloadOptions::default())
    }

    pub fn start_with_options(uri: String, seed: u64, opts: WorkloadOptions) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let huge_done = Arc::new(AtomicBool::new(false));
        let ddl_gate = Arc::new(tokio::sync::RwLock::new(()));
        let opts = Arc::new(opts);
        let handles = (0..opts.workers.max(1))
            .map(|i| {
                let (uri, opts, stop) = (uri.clone(), opts.clone(), stop.clone());
                let (huge_done, ddl_gate) = (huge_done.clone(), ddl_gate.clone());
                let seed = worker_seed(seed, i);
                tokio::spawn(
                    async move { worker(uri, seed, opts, stop, huge_done, ddl_gate).await },
                )
            })
            .collect();
        Workload {
            stop,
            handles,
            ddl_gate,
        }
    }

    /// Holds back DDL (documents are still written) until the guard is dropped; waits for the
    /// DDL in flight. For a SIGKILL of the source: the test server's crash recovery can leave
    /// its index catalog contradicting its own change stream when DDL is in flight at the
    /// crash (scripts/testbed-crash-ddl.py shows it), which mongod's cannot.
    pub async fn hold_ddl(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.ddl_gate.clone().write_owned().await
    }

    /// Signal the workers, wait for their current op to finish, return merged stats.
    pub async fn stop(mut self) -> WorkloadStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut stats = WorkloadStats::default();
        for h in self.handles.drain(..) {
            match h.await {
                Ok(s) => stats.merge(s),
                Err(e) => stats.sample_errors.push(format!("worker task failed: {e}")),
            }
        }
        stats
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A worker's hold on the DDL gate while its op runs.
enum GateTurn<'a> {
    Alone(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'a, ()>),
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'a, ()>),
}

/// The first `n` ops worker `worker` (0-based) would run for `seed`, as
/// `"<kind> <db>.<coll> <op details>"` lines: the workload's choices depend only on
/// the seed (and options), not on timing or results.
pub fn plan(seed: u64, worker: usize, n: usize, opts: &WorkloadOptions) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(worker_seed(seed, worker));
    let ops = enabled_ops(opts);
    (0..n)
        .map(|_| {
            let (kind, db, coll, op) = next_op(&mut rng, &ops, opts);
            format!("{kind} {db}.{coll} {op:?}")
        })
        .collect()
}

fn worker_seed(seed: u64, worker: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(worker as u64 + 1)
}

fn enabled_ops(opts: &WorkloadOptions) -> Vec<(&'static str, u32)> {
    let extra: &[(&str, u32)] = match opts.shapes {
        Shapes::Basic => &[],
        Shapes::Full => FULL_OPS,
    };
    OPS.iter()
        .chain(extra.iter())
        .copied()
        .filter(|(k, _)| opts.ddl || !is_ddl(k))
        .collect()
}

/// Draw the next op: every random choice is made here, before the op runs.
fn next_op<'o>(
    rng: &mut StdRng,
    ops: &[(&'static str, u32)],
    opts: &'o WorkloadOptions,
) -> (&'static str, &'o str, &'o str, Op) {
    let total: u32 = ops.iter().map(|(_, w)| w).sum();
    let mut pick = rng.random_range(0..total);
    let mut kind = "insert";
    for (k, w) in ops {
        if pick < *w {
            kind = k;
            break;
        }
        pick -= w;
    }
    let db = &opts.dbs[rng.random_range(0..opts.dbs.len())];
    let coll = &opts.collections[rng.random_range(0..opts.collections.len())];
    let op = Op::generate(kind, rng, &opts.collections, coll);
    (kind, db, coll, op)
}

async fn worker(
    uri: String,
    seed: u64,
    opts: Arc<WorkloadOptions>,
    stop: Arc<AtomicBool>,
    huge_done: Arc<AtomicBool>,
    ddl_gate: Arc<tokio::sync::RwLock<()>>,
) -> WorkloadStats {
    let mut stats = WorkloadStats::default();
    let client = match ClientOptions::parse(&uri).await.and_then(|mut o| {
        o.server_selection_timeout = Some(Duration::from_secs(5));
        o.connect_timeout = Some(Duration::from_secs(5));
        Client::with_options(o)
    }) {
        Ok(c) => c,
        Err(e) => {
            stats.sample_errors.push(format!("client for {uri}: {e}"));
            return stats;
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let ops = enabled_ops(&opts);
    while !stop.load(Ordering::SeqCst) {
        let (kind, db, coll, op) = next_op(&mut rng, &ops, &opts);
        // At most one near-16 MB document per run (the choice is still the seed's).
        if kind == "insert_huge" && huge_done.swap(true, Ordering::SeqCst) {
            *stats.ok.entry("insert_huge_skipped".into()).or_default() += 1;
            continue;
        }
        let db = client.database(db);
        // DDL runs alone, writes run together. The test server does not serialize a write
        // against a concurrent rename or drop as mongod's collection locks do: a slow insert
        // can be logged (and streamed) before a rename of its collection yet be stored in the
        // collection created under the old name after it, so the source contradicts its own
        // change stream (reproduced by scripts/testbed-rename-race.py, SOAK.md). No sync can
        // follow such a source; the gate keeps the workload to what a real server orders.
        let gated = async {
            let _turn = if is_ddl(kind) {
                GateTurn::Alone(ddl_gate.write().await)
            } else {
                GateTurn::Shared(ddl_gate.read().await)
            };
            op.run(&db, coll).await
        };
        let res = tokio::time::timeout(Duration::from_secs(30), gated).await;
        let err = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(mongo_error_summary(&e)),
            Err(_) => Some("timed out after 30s".to_string()),
        };
        match err {
            None => *stats.ok.entry(kind.to_string()).or_default() += 1,
            Some(e) => {
                *stats.errors.entry(kind.to_string()).or_default() += 1;
                if stats.sample_errors.len() < 10 {
                    stats
                        .sample_errors
                        .push(format!("{kind} on {}.{coll}: {e}", db.name()));
                }
            }
        }
        tokio::time::sleep(opts.pause).await;
    }
    stats
}

fn random_id(rng: &mut StdRng) -> Bson {
    let p: f64 = rng.random();
    if p < 0.70 {
        Bson::Int32(rng.random_range(0..200))
    } else if p < 0.85 {
        Bson::Int32(rng.random_range(0..2000))
    } else {
        Bson::String(format!("k{}", rng.random_range(0..50)))
    }
}

fn random_string(rng: &mut StdRng) -> String {
    const WORDS: &[&str] = &[
        "alpha",
        "beta",
        "gamma",
        "delta",
        "été",
        "日本",
        "x",
        "",
        "longer words here",
        "😀",
    ];
    let n = rng.random_range(1..4);
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn random_scalar(rng: &mut StdRng) -> Bson {
    match rng.random_range(0..11) {
        0 => Bson::Int32(rng.random_range(-1000..1000)),
        1 => Bson::Int64(rng.random_range(-(1i64 << 40)..(1i64 << 40))),
        2 => Bson::Double(rng.random_range(-1e6..1e6)),
        3 => Bson::String(random_string(rng)),
        4 => Bson::Boolean(rng.random()),
        5 => Bson::Null,
        6 => Bson::DateTime(DateTime::from_millis(
            rng.random_range(-1_000_000_000_000i64..4_000_000_000_000),
        )),
        7 => Bson::ObjectId(ObjectId::from_bytes(rng.random())),
        8 => Bson::Binary(Binary {
            subtype: BinarySubtype::Generic,
            bytes: (0..rng.random_range(0..32)).map(|_| rng.random()).collect(),
        }),
        9 => Bson::Decimal128(
            format!(
                "{}.{}",
                rng.random_range(-9999..9999),
                rng.random_range(0..999)
            )
            .parse()
            .unwrap(),
        ),
        _ => Bson::Int32(rng.random_range(0..10)),
    }
}

fn random_value(rng: &mut StdRng, depth: u32) -> Bson {
    if depth == 0 || rng.random_bool(0.6) {
        return random_scalar(rng);
    }
    if rng.random_bool(0.5) {
        let n = rng.random_range(0..4);
        let mut d = Document::new();
        for i in 0..n {
            d.insert(format!("f{i}"), random_value(rng, depth - 1));
        }
        Bson::Document(d)
    } else {
        let n = rng.random_range(0..5);
        Bson::Array((0..n).map(|_| random_value(rng, depth - 1)).collect())
    }
}

fn small_int_array(rng: &mut StdRng) -> Bson {
    let n = rng.random_range(0..6);
    Bson::Array(
        (0..n)
            .map(|_| Bson::Int32(rng.random_range(0..10)))
            .collect(),
    )
}

/// A document body (without `_id`).
fn random_body(rng: &mut StdRng) -> Document {
    let n = match rng.random_range(0..3) {
        0 => Bson::Int32(rng.random_range(0..1000)),
        1 => Bson::Int64(rng.random_range(0..1_000_000)),
        _ => Bson::Double(rng.random_range(0.0..1000.0)),
    };
    let mut d = doc! {
        "n": n,
        "r": rng.random_range(0..10),
        "s": random_string(rng),
        "a": { "b": { "c": random_scalar(rng) }, "x": random_scalar(rng) },
        "arr": small_int_array(rng),
        "tags": (0..rng.random_range(0..4)).map(|i| format!("tag{i}")).collect::<Vec<_>>(),
        "when": DateTime::from_millis(rng.random_range(0..4_000_000_000_000i64)),
        "v": random_value(rng, 3),
    };
    if rng.random_bool(0.3) {
        d.insert("nested", random_value(rng, 4));
    }
    d
}

/// One fully determined operation.
#[derive(Debug)]
enum Op {
    Insert(Document),
    Update {
        filter: Document,
        update: Document,
        upsert: bool,
    },
    UpdateMany {
        filter: Document,
        update: Document,
    },
    Replace {
        filter: Document,
        replacement: Document,
    },
    Delete(Document),
    CreateCollection(Document),
    DropCollection,
    Rename {
        to: String,
        drop_target: bool,
    },
    CreateIndex {
        name: String,
        key: Document,
    },
    DropIndex(String),
    /// Pipeline update (`update_one(filter, [stages])`).
    UpdatePipeline {
        filter: Document,
        pipeline: Vec<Document>,
        upsert: bool,
    },
    /// Operator update with `arrayFilters`.
    UpdateArrayFilters {
        filter: Document,
        update: Document,
        array_filters: Vec<Document>,
    },
    /// Insert `doc` plus a `blob` string of `size` bytes of `fill` (built when run).
    InsertBlob {
        doc: Document,
        size: usize,
        fill: char,
    },
    /// `$set: {blob: <size bytes of fill>}` on `filter`.
    UpdateBlob {
        filter: Document,
        size: usize,
        fill: char,
    },
    /// A database command run as is (DDL with options: createIndexes, collMod, create...).
    Command(Document),
    /// `drop` of the collection (its error ignored), then `create` with these options:
    /// turns a pool collection into a capped one.
    Recreate(Document),
}

impl Op {
    fn generate(kind: &str, rng: &mut StdRng, collections: &[String], coll: &str) -> Op {
        let id = random_id(rng);
        let by_id = doc! { "_id": id.clone() };
        let update = |update: Document| Op::Update {
            filter: by_id.clone(),
            update,
            upsert: false,
        };
        match kind {
            "insert" => {
                let mut d = doc! { "_id": id.clone() };
                d.extend(random_body(rng));
                Op::Insert(d)
            }
            "update_set" => Op::Update {
                filter: by_id.clone(),
                update: doc! { "$set": { "s": random_string(rng), "v": random_value(rng, 3) } },
                upsert: rng.random_bool(0.2),
            },
            "update_set_dotted" => {
                let path = ["a.b.c", "a.b.d", "a.x", "a.y.z"][rng.random_range(0..4)];
                update(doc! { "$set": { path: random_value(rng, 2) } })
            }
            "update_unset" => {
                let path = ["v", "s", "a.b.c", "tags", "nested", "a.x"][rng.random_range(0..6)];
                update(doc! { "$unset": { path: "" } })
            }
            "update_inc" => {
                let by = if rng.random_bool(0.5) {
                    Bson::Int32(rng.random_range(-5..10))
                } else {
                    Bson::Double(rng.random_range(-1.0..1.0))
                };
                update(doc! { "$inc": { "n": by } })
            }
            "update_push" => {
                if rng.random_bool(0.5) {
                    update(doc! { "$push": { "arr": rng.random_range(0..10) } })
                } else {
                    let each: Vec<i32> = (0..rng.random_range(1..4))
                        .map(|_| rng.random_range(0..10))
                        .collect();
                    update(doc! { "$push": { "arr": { "$each": each, "$slice": -8 } } })
                }
            }
            "update_pull" => {
                if rng.random_bool(0.5) {
                    update(doc! { "$pull": { "arr": rng.random_range(0..10) } })
                } else {
                    update(doc! { "$pull": { "arr": { "$lt": rng.random_range(0..5) } } })
                }
            }
            "update_positional" => {
                let old = rng.random_range(0..10);
                Op::Update {
                    filter: doc! { "_id": id.clone(), "arr": old },
                    update: doc! { "$set": { "arr.$": rng.random_range(0..10) } },
                    upsert: false,
                }
            }
            "update_array_index" => {
                let i = rng.random_range(0..3);
                let path = format!("arr.{i}");
                if rng.random_bool(0.5) {
                    update(doc! { "$set": { path: rng.random_range(0..10) } })
                } else {
                    update(doc! { "$inc": { path: 1 } })
                }
            }
            "update_many" => Op::UpdateMany {
                filter: doc! { "r": rng.random_range(0..10) },
                update: doc! { "$inc": { "n": 1 }, "$set": { "touched": true } },
            },
            "replace" => Op::Replace {
                filter: by_id.clone(),
                replacement: random_body(rng),
            },
            "delete" => Op::Delete(by_id.clone()),
            "create_collection" => {
                let opts = if rng.random_bool(0.25) {
                    doc! { "collation": { "locale": "en", "strength": 2 } }
                } else {
                    doc! {}
                };
                Op::CreateCollection(opts)
            }
            "drop_collection" => Op::DropCollection,
            "rename_collection" => {
                let others: Vec<&String> = collections.iter().filter(|c| *c != coll).collect();
                let to = if others.is_empty() {
                    format!("{coll}_renamed")
                } else {
                    others[rng.random_range(0..others.len())].clone()
                };
                Op::Rename {
                    to,
                    drop_target: rng.random_bool(0.5),
                }
            }
            "create_index" => {
                let specs = index_specs();
                let (name, key) = specs[rng.random_range(0..specs.len())].clone();
                Op::CreateIndex {
                    name: name.to_string(),
                    key,
                }
            }
            "drop_index" => {
                let specs = index_specs();
                Op::DropIndex(specs[rng.random_range(0..specs.len())].0.to_string())
            }
            other => generate_full(other, rng, id, coll)
                .unwrap_or_else(|| unreachable!("unknown op kind {other}")),
        }
    }

    async fn run(self, db: &Database, coll: &str) -> mongodb::error::Result<()> {
        let c = db.collection::<Document>(coll);
        match self {
            Op::Insert(d) => {
                c.insert_one(d).await?;
            }
            Op::Update {
                filter,
                update,
                upsert,
            } => {
                c.update_one(filter, update)
                    .with_options(UpdateOptions::builder().upsert(upsert).build())
                    .await?;
            }
            Op::UpdateMany { filter, update } => {
                c.update_many(filter, update).await?;
            }
            Op::Replace {
                filter,
                replacement,
            } => {
                c.replace_one(filter, replacement).await?;
            }
            Op::Delete(filter) => {
                c.delete_one(filter).await?;
            }
            Op::CreateCollection(opts) => {
                let mut cmd = doc! { "create": coll };
                cmd.extend(opts);
                db.run_command(cmd).await?;
            }
            Op::DropCollection => {
                db.run_command(doc! { "drop": coll }).await?;
            }
            Op::Rename { to, drop_target } => {
                let from = format!("{}.{coll}", db.name());
                let to = format!("{}.{to}", db.name());
                db.client()
                    .database("admin")
                    .run_command(
                        doc! { "renameCollection": from, "to": to, "dropTarget": drop_target },
                    )
                    .await?;
            }
            Op::CreateIndex { name, key } => {
                db.run_command(doc! {
                    "createIndexes": coll,
                    "indexes": [ { "key": key, "name": name } ],
                })
                .await?;
            }
            Op::DropIndex(name) => {
                db.run_command(doc! { "dropIndexes": coll, "index": name })
                    .await?;
            }
            Op::UpdatePipeline {
                filter,
                pipeline,
                upsert,
            } => {
                c.update_one(filter, pipeline)
                    .with_options(UpdateOptions::builder().upsert(upsert).build())
                    .await?;
            }
            Op::UpdateArrayFilters {
                filter,
                update,
                array_filters,
            } => {
                c.update_one(filter, update)
                    .with_options(
                        UpdateOptions::builder()
                            .array_filters(array_filters)
                            .build(),
                    )
                    .await?;
            }
            Op::InsertBlob {
                mut doc,
                size,
                fill,
            } => {
                doc.insert("blob", fill.to_string().repeat(size));
                c.insert_one(doc).await?;
            }
            Op::UpdateBlob { filter, size, fill } => {
                c.update_one(
                    filter,
                    doc! { "$set": { "blob": fill.to_string().repeat(size) } },
                )
                .await?;
            }
            Op::Command(cmd) => {
                db.run_command(cmd).await?;
            }
            Op::Recreate(cmd) => {
                let _ = db.run_command(doc! { "drop": coll }).await;
                db.run_command(cmd).await?;
            }
        }
        Ok(())
    }
}

/// Distinct picks of `k` items of `pool`, in a random order.
fn pick_distinct<'a>(rng: &mut StdRng, pool: &[&'a str], k: usize) -> Vec<&'a str> {
    let mut left: Vec<&str> = pool.to_vec();
    let mut out = Vec::new();
    while out.len() < k && !left.is_empty() {
        out.push(left.remove(rng.random_range(0..left.len())));
    }
    out
}

/// A year-keyed map (`{"2021": …, "2023": …}`: numeric object keys).
fn year_map(rng: &mut StdRng) -> Document {
    let mut d = Document::new();
    for y in pick_distinct(rng, &["2019", "2020", "2021", "2022", "2023", "2024"], 3) {
        d.insert(y, rng.random_range(0..100));
    }
    d
}

fn nested_array(rng: &mut StdRng) -> Bson {
    let n = rng.random_range(0..4);
    Bson::Array(
        (0..n)
            .map(|_| {
                let m = rng.random_range(0..3);
                Bson::Array(
                    (0..m)
                        .map(|_| {
                            if rng.random_bool(0.3) {
                                Bson::Array(vec![Bson::Int32(rng.random_range(0..9))])
                            } else {
                                Bson::Int32(rng.random_range(0..9))
                            }
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

/// A validator for `create`/`collMod` (valid for most workload documents).
fn random_validator(rng: &mut StdRng) -> Document {
    let level = ["strict", "moderate"][rng.random_range(0..2)];
    let action = ["warn", "error"][rng.random_range(0..2)];
    let validator = match rng.random_range(0..3) {
        0 => doc! { "$or": [ { "n": { "$exists": true } }, { "k": { "$type": "string" } } ] },
        1 => doc! { "r": { "$gte": 0 } },
        _ => {
            doc! { "$jsonSchema": { "bsonType": "object", "properties": { "s": { "bsonType": "string" } } } }
        }
    };
    doc! { "validator": validator, "validationLevel": level, "validationAction": action }
}

/// `expireAfterSeconds` values for the TTL index on `when`: about 60–66 years, so no
/// workload document (all dated 1970 or later) ever expires on either side.
fn ttl_seconds(rng: &mut StdRng) -> i64 {
    rng.random_range(1_900_000_000i64..2_100_000_000)
}

/// Op kinds of [`FULL_OPS`] (`None` for an unknown kind).
fn generate_full(kind: &str, rng: &mut StdRng, id: Bson, coll: &str) -> Option<Op> {
    let by_id = doc! { "_id": id.clone() };
    let update = |update: Document| Op::Update {
        filter: by_id.clone(),
        update,
        upsert: false,
    };
    let pipeline = |stages: Vec<Document>| Op::UpdatePipeline {
        filter: by_id.clone(),
        pipeline: stages,
        upsert: false,
    };
    let op = match kind {
        "insert_shaped" => {
            let mut d = doc! { "_id": id.clone() };
            d.extend(random_body(rng));
            d.insert("scores", year_map(rng));
            d.insert("na", nested_array(rng));
            if rng.random_bool(0.5) {
                d.insert("ключ", random_scalar(rng));
                d.insert("名前", doc! { "子": random_string(rng) });
            }
            if rng.random_bool(0.3) {
                d.insert("uq", rng.random_range(0..40));
            }
            Op::Insert(d)
        }
        "update_set_many_fields" => {
            let pool = ["k", "v", "sub.y.z", "zz", "aa", "m.n.o", "s", "b2.c"];
            let k = rng.random_range(2..5);
            let mut set = Document::new();
            for f in pick_distinct(rng, &pool, k) {
                set.insert(f, random_value(rng, 1));
            }
            Op::Update {
                filter: by_id.clone(),
                update: doc! { "$set": set },
                upsert: rng.random_bool(0.1),
            }
        }
        "update_pipeline_set" => {
            let mut set = Document::new();
            let k = rng.random_range(2..4);
            for f in pick_distinct(rng, &["zz", "aa", "mm", "n", "p.q"], k) {
                set.insert(f, Bson::Document(doc! { "$literal": random_value(rng, 1) }));
            }
            Op::UpdatePipeline {
                filter: by_id.clone(),
                pipeline: vec![doc! { "$set": set }],
                upsert: rng.random_bool(0.1),
            }
        }
        "update_pipeline_merge" => {
            let mut extra = Document::new();
            for f in pick_distinct(rng, &["new1", "a", "zz", "s", "sub"], 2) {
                extra.insert(f, doc! { "$literal": random_value(rng, 2) });
            }
            pipeline(vec![
                doc! { "$replaceWith": { "$mergeObjects": [ "$$ROOT", extra ] } },
            ])
        }
        "update_pipeline_addfields_unset" => {
            let unset = pick_distinct(rng, &["s", "a.x", "tags", "zz", "v"], 2);
            pipeline(vec![
                doc! { "$addFields": {
                    "sub.w": { "$literal": random_scalar(rng) },
                    "total": { "$add": [ rng.random_range(0..9), 1 ] },
                } },
                doc! { "$unset": unset },
            ])
        }
        "update_rename" => {
            let pairs = [
                ("s", "s2"),
                ("s2", "s"),
                ("a.x", "ax"),
                ("v", "vv"),
                ("vv", "v"),
                ("a.b", "ab"),
                ("tags", "sub.tags"),
            ];
            let (from, to) = pairs[rng.random_range(0..pairs.len())];
            update(doc! { "$rename": { from: to } })
        }
        "update_all_positional" => {
            if rng.random_bool(0.5) {
                update(doc! { "$inc": { "arr.$[]": rng.random_range(1..3) } })
            } else {
                update(doc! { "$set": { "na.$[]": [rng.random_range(0..9)] } })
            }
        }
        "update_array_filters" => {
            let lim = rng.random_range(0..10);
            Op::UpdateArrayFilters {
                filter: by_id.clone(),
                update: doc! { "$set": { "arr.$[e]": rng.random_range(0..10) } },
                array_filters: vec![doc! { "e": { "$gte": lim } }],
            }
        }
        "update_push_modifiers" => {
            let each: Vec<i32> = (0..rng.random_range(1..4))
                .map(|_| rng.random_range(0..10))
                .collect();
            let mut m = doc! { "$each": each };
            if rng.random_bool(0.6) {
                m.insert("$position", rng.random_range(-2..3));
            }
            if rng.random_bool(0.5) {
                m.insert("$sort", [1, -1][rng.random_range(0..2)]);
            }
            if rng.random_bool(0.6) {
                m.insert("$slice", rng.random_range(-6..7));
            }
            update(doc! { "$push": { "arr": m } })
        }
        "update_pop" => {
            let f = ["arr", "tags", "na"][rng.random_range(0..3)];
            let end = [1, -1][rng.random_range(0..2)];
            update(doc! { "$pop": { f: end } })
        }
        "update_add_to_set" => {
            if rng.random_bool(0.5) {
                update(doc! { "$addToSet": { "tags": format!("tag{}", rng.random_range(0..6)) } })
            } else {
                let each: Vec<String> = (0..rng.random_range(1..4))
                    .map(|_| format!("tag{}", rng.random_range(0..6)))
                    .collect();
                update(doc! { "$addToSet": { "tags": { "$each": each } } })
            }
        }
        "update_array_pad" => {
            let path = format!("arr.{}", rng.random_range(6..12));
            update(doc! { "$set": { path: rng.random_range(0..10) } })
        }
        "update_min_max_mul" => match rng.random_range(0..4) {
            0 => update(doc! { "$min": { "n": rng.random_range(0..500) } }),
            1 => update(doc! { "$max": { "n": rng.random_range(500..1500), "hi": 1 } }),
            2 => {
                let by = [Bson::Int32(2), Bson::Double(1.5), Bson::Int64(3)]
                    [rng.random_range(0..3)]
                .clone();
                update(doc! { "$mul": { "n": by } })
            }
            _ => update(doc! { "$mul": { "newnum": 3 }, "$min": { "lo": rng.random_range(0..9) } }),
        },
        "update_current_date" => {
            if rng.random_bool(0.5) {
                update(doc! { "$currentDate": { "cd": true } })
            } else {
                update(
                    doc! { "$currentDate": { "ts.t": { "$type": "timestamp" }, "cd": { "$type": "date" } } },
                )
            }
        }
        "update_numeric_keys" => {
            let year = rng.random_range(2015..2030);
            match rng.random_range(0..3) {
                0 => {
                    update(doc! { "$set": { format!("scores.{year}"): rng.random_range(0..100) } })
                }
                1 => update(doc! { "$inc": { format!("scores.{year}"): 1 } }),
                _ => update(doc! { "$set": {
                    format!("years.{year}.q{}", rng.random_range(1..5)): random_scalar(rng)
                } }),
            }
        }
        "update_dollar_dot_fields" => {
            // Not "a.b": the documents have a sub-document `a`, and the test server reports
            // a new top-level "a.b" exactly as it reports `$set: {"a.b": …}` on it (MongoDB 6.1+
            // tells them apart with `disambiguatedPaths`, which the engine uses; see README,
            // "What the tests run against"). Names whose first part the documents lack are
            // exercised instead.
            let field = ["d.e", "$price", "x.y.z", "$"][rng.random_range(0..4)];
            let value = random_scalar(rng);
            if rng.random_bool(0.8) {
                pipeline(vec![doc! { "$replaceWith": { "$setField": {
                    "field": { "$literal": field },
                    "input": "$$ROOT",
                    "value": { "$literal": value },
                } } }])
            } else {
                pipeline(vec![doc! { "$replaceWith": { "$unsetField": {
                    "field": { "$literal": field },
                    "input": "$$ROOT",
                } } }])
            }
        }
        "update_unicode_fields" => {
            let mut set = Document::new();
            let k = rng.random_range(1..4);
            for f in pick_distinct(rng, &["ключ", "名前.子", "é", "😀", "Ωmega.ß"], k) {
                set.insert(f, random_scalar(rng));
            }
            update(doc! { "$set": set })
        }
        "update_nested_arrays" => match rng.random_range(0..3) {
            0 => update(doc! { "$set": { "na": nested_array(rng) } }),
            1 => update(doc! { "$push": { "na.0": rng.random_range(0..9) } }),
            _ => update(doc! { "$set": { "na.1.0": rng.random_range(0..9) } }),
        },
        "update_unique_field" => update(doc! { "$set": { "uq": rng.random_range(0..40) } }),
        "insert_large" => {
            let mut d = doc! { "_id": id.clone() };
            d.extend(random_body(rng));
            Op::InsertBlob {
                doc: d,
                size: rng.random_range(1_000_000..4_000_000),
                fill: ['L', 'ü', 'x'][rng.random_range(0..3)],
            }
        }
        "insert_huge" => Op::InsertBlob {
            doc: doc! { "_id": format!("huge-{}", rng.random_range(0..1000)), "n": 1 },
            size: rng.random_range(16_000_000..16_500_000),
            fill: 'H',
        },
        "update_grow_large" => Op::UpdateBlob {
            filter: by_id.clone(),
            size: rng.random_range(1_000_000..3_000_000),
            fill: 'G',
        },
        "create_index_unique" => Op::Command(doc! {
            "createIndexes": coll,
            "indexes": [ { "key": { "uq": 1 }, "name": "uq_1", "unique": true, "sparse": true } ],
        }),
        "create_index_ttl" => Op::Command(doc! {
            "createIndexes": coll,
            "indexes": [ { "key": { "when": 1 }, "name": "ttl_when", "expireAfterSeconds": ttl_seconds(rng) } ],
        }),
        "coll_mod_ttl" => Op::Command(doc! {
            "collMod": coll,
            "index": { "name": "ttl_when", "expireAfterSeconds": ttl_seconds(rng) },
        }),
        "coll_mod_validator" => {
            let mut cmd = doc! { "collMod": coll };
            cmd.extend(random_validator(rng));
            Op::Command(cmd)
        }
        "create_capped" => {
            let mut cmd = doc! { "create": coll, "capped": true, "size": rng.random_range(65_536..1_048_576) };
            if rng.random_bool(0.5) {
                cmd.insert("max", rng.random_range(20..200));
            }
            Op::Recreate(cmd)
        }
        "create_validated" => {
            let mut cmd = doc! { "create": coll };
            cmd.extend(random_validator(rng));
            if rng.random_bool(0.3) {
                cmd.insert("collation", doc! { "locale": "fr", "strength": 1 });
            }
            Op::Command(cmd)
        }
        "create_view" => {
            let view = format!("vw{}", rng.random_range(0..3));
            let pipeline = match rng.random_range(0..3) {
                0 => vec![doc! { "$match": { "r": { "$lt": rng.random_range(1..10) } } }],
                1 => vec![
                    doc! { "$project": { "n": 1, "s": 1 } },
                    doc! { "$sort": { "n": 1 } },
                ],
                _ => vec![],
            };
            Op::Command(doc! { "create": view, "viewOn": coll, "pipeline": pipeline })
        }
        "drop_view" => Op::Command(doc! { "drop": format!("vw{}", rng.random_range(0..3)) }),
        _ => return None,
    };
    Some(op)
}
