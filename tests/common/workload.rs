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
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        WorkloadOptions {
            dbs: vec!["wl_1".into(), "wl_2".into()],
            collections: (0..6).map(|i| format!("c{i}")).collect(),
            workers: 2,
            pause: Duration::from_millis(4),
            ddl: true,
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
        DDL_OPS.iter().map(|k| self.ok_count(k)).sum()
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
}

impl Workload {
    /// Start the default workload (databases `wl_1`, `wl_2`; 2 workers) against `uri`.
    /// Must be called inside a tokio runtime.
    pub fn start(uri: String, seed: u64) -> Workload {
        Self::start_with_options(uri, seed, WorkloadOptions::default())
    }

    pub fn start_with_options(uri: String, seed: u64, opts: WorkloadOptions) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let opts = Arc::new(opts);
        let handles = (0..opts.workers.max(1))
            .map(|i| {
                let (uri, opts, stop) = (uri.clone(), opts.clone(), stop.clone());
                let seed = worker_seed(seed, i);
                tokio::spawn(async move { worker(uri, seed, opts, stop).await })
            })
            .collect();
        Workload { stop, handles }
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
    OPS.iter()
        .copied()
        .filter(|(k, _)| opts.ddl || !DDL_OPS.contains(k))
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
        let db = client.database(db);
        let res = tokio::time::timeout(Duration::from_secs(15), op.run(&db, coll)).await;
        let err = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(mongo_error_summary(&e)),
            Err(_) => Some("timed out after 15s".to_string()),
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
            other => unreachable!("unknown op kind {other}"),
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
        }
        Ok(())
    }
}
