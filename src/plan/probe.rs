//! The plan's measurement: a few megabytes read from the source's largest collections as raw
//! BSON and written, as the engine's copy writes them (`w: majority`, unordered, validation
//! bypassed: see `engine::sync::copy`), into a scratch database on the destination, where one
//! index is then built and timed, and where each special index kind the source uses (text,
//! hashed, geo, wildcard) is tried on an empty collection, so that a kind the destination
//! lacks is known before the sync fails on it. The scratch database is dropped at the end,
//! also when the measurement fails; a caller that abandons [`run`] (a timeout, Ctrl-C) drops
//! it with [`drop_scratch`].
//!
//! The scratch database's name starts with [`PLAN_PROBE_DB_PREFIX`], which no sync ever copies
//! (`contract::filter::is_internal_db`).

use std::time::{Duration, Instant};

use bson::{doc, Document, RawDocumentBuf};
use futures::TryStreamExt;
use mongodb::options::{Acknowledgment, WriteConcern};
use mongodb::Client;

pub use crate::contract::filter::PLAN_PROBE_DB_PREFIX;

/// How much the probe may read, and for how long it may read (and then write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes read at most.
    pub max_bytes: u64,
    /// Time spent reading at most; writing is bounded the same.
    pub max_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 20,
            max_time: Duration::from_secs(3),
        }
    }
}

/// One collection to read from, largest first, with an index of its to build on the copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The database.
    pub db: String,
    /// The collection.
    pub name: String,
    /// The sync form (`catalog::sync_form`) of one of its indexes, to time.
    pub index: Option<Document>,
}

/// What the probe reads and tries: the collections to read (largest first) and one index of
/// each special kind the source uses, in the form the sync would build it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Targets {
    /// Collections to read from.
    pub candidates: Vec<Candidate>,
    /// `(kind, sync-form index)` pairs to try on the destination.
    pub kinds: Vec<(String, Document)>,
}

/// One index kind tried on the destination.
#[derive(Debug, Clone, PartialEq)]
pub struct KindTrial {
    /// The kind: `text`, `hashed`, `2dsphere`, `2d`, `wildcard`.
    pub kind: String,
    /// Why the destination refused it, or `None` when it built it.
    pub refused: Option<String>,
}

/// An index build, timed.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexTiming {
    /// The index's key pattern, as relaxed extended JSON.
    pub keys: String,
    /// Seconds the build took.
    pub seconds: f64,
    /// Bytes of documents it indexed.
    pub bytes: u64,
}

/// What the probe measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Namespaces read, in order.
    pub read_from: Vec<String>,
    /// Documents read (and written).
    pub documents: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Seconds spent reading.
    pub read_seconds: f64,
    /// Documents written before the time ran out.
    pub written_documents: u64,
    /// Bytes written.
    pub written_bytes: u64,
    /// Seconds spent writing.
    pub write_seconds: f64,
    /// The timed index build, if one was made.
    pub index: Option<IndexTiming>,
    /// Index kinds tried on the destination.
    pub kinds: Vec<KindTrial>,
    /// The scratch database.
    pub scratch_db: String,
    /// Why the scratch database could not be dropped, if it could not.
    pub cleanup_failed: Option<String>,
}

/// Why the probe could not measure.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ProbeError {
    /// Reading the source failed.
    #[error("reading {ns} on the source failed: {reason}")]
    Read {
        /// The namespace.
        ns: String,
        /// The server's answer.
        reason: String,
    },
    /// Not run: a cluster could not be examined.
    #[error("not run: {0}")]
    Skipped(String),
    /// Writing the destination failed.
    #[error("writing the scratch database {db} on the destination failed: {reason}")]
    Write {
        /// The scratch database.
        db: String,
        /// The server's answer.
        reason: String,
    },
}

/// A fresh scratch database name.
pub fn scratch_name() -> String {
    format!(
        "{PLAN_PROBE_DB_PREFIX}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// Drops the scratch database `name` on `destination`.
pub async fn drop_scratch(destination: &Client, name: &str) -> mongodb::error::Result<()> {
    debug_assert!(name.starts_with(PLAN_PROBE_DB_PREFIX));
    destination.database(name).drop().await
}

/// Drops the scratch database of a probe that was abandoned mid-way (a timeout, Ctrl-C): a
/// batch it had sent is still being written by the server and would create the database
/// again after a single drop, so it is dropped until it has stayed gone for a while (at
/// most [`ABANDONED_CLEANUP`]).
pub async fn drop_abandoned_scratch(
    destination: &Client,
    name: &str,
) -> mongodb::error::Result<()> {
    let deadline = Instant::now() + ABANDONED_CLEANUP;
    let mut absent = 0;
    loop {
        drop_scratch(destination, name).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        let present = destination
            .list_database_names()
            .await?
            .iter()
            .any(|d| d == name);
        absent = if present { 0 } else { absent + 1 };
        if absent >= 3 || Instant::now() >= deadline {
            return if present {
                drop_scratch(destination, name).await
            } else {
                Ok(())
            };
        }
    }
}

/// How long [`drop_abandoned_scratch`] keeps at it.
pub const ABANDONED_CLEANUP: Duration = Duration::from_secs(8);

/// The kind of an index, when it is one a destination may lack.
pub fn special_kind(spec: &Document) -> Option<&'static str> {
    let key = spec.get_document("key").ok()?;
    if key.keys().any(|k| k == "$**" || k.ends_with(".$**")) {
        return Some("wildcard");
    }
    key.values().find_map(|v| match v.as_str() {
        Some("text") => Some("text"),
        Some("hashed") => Some("hashed"),
        Some("2dsphere") => Some("2dsphere"),
        Some("2d") => Some("2d"),
        Some("geoHaystack") => Some("geoHaystack"),
        _ => None,
    })
}

/// Reads, writes, builds and tries as described above, then drops the scratch database
/// `scratch` (whatever happened). `kinds` holds one sync-form index per special kind the
/// source uses (see [`Targets`]). `scrub` takes connection strings out of server messages.
#[tracing::instrument(skip_all, fields(scratch = %scratch))]
pub async fn run(
    source: &Client,
    destination: &Client,
    targets: &Targets,
    scratch: &str,
    budget: Budget,
    scrub: &(dyn Fn(&str) -> String + Sync),
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Measured, ProbeError> {
    let result = measure(
        source,
        destination,
        targets,
        scratch,
        budget,
        scrub,
        progress,
    )
    .await;
    let cleanup = drop_scratch(destination, scratch)
        .await
        .err()
        .map(|e| scrub(&crate::mongo::describe(&e)));
    if let Some(e) = &cleanup {
        tracing::warn!(error = %e, "the probe's scratch database could not be dropped");
    }
    result.map(|mut m| {
        m.cleanup_failed = cleanup;
        m
    })
}

async fn measure(
    source: &Client,
    destination: &Client,
    targets: &Targets,
    scratch: &str,
    budget: Budget,
    scrub: &(dyn Fn(&str) -> String + Sync),
    progress: &(dyn Fn(&str) + Sync),
) -> Result<Measured, ProbeError> {
    let (candidates, kinds) = (&targets.candidates, &targets.kinds);
    let mut m = Measured {
        scratch_db: scratch.to_string(),
        ..Default::default()
    };
    let describe = |e: &mongodb::error::Error| scrub(&crate::mongo::describe(e));
    // Read: the largest collections first, until the bytes or the time run out.
    let started = Instant::now();
    let mut read: Vec<(usize, Vec<RawDocumentBuf>)> = Vec::new();
    'read: for (i, c) in candidates.iter().enumerate() {
        let ns = format!("{}.{}", c.db, c.name);
        let failed = |e: mongodb::error::Error| ProbeError::Read {
            ns: ns.clone(),
            reason: describe(&e),
        };
        let mut cursor = source
            .database(&c.db)
            .collection::<RawDocumentBuf>(&c.name)
            .find(doc! {})
            .await
            .map_err(failed)?;
        m.read_from.push(ns.clone());
        let mut docs = Vec::new();
        loop {
            if m.read_bytes >= budget.max_bytes || started.elapsed() >= budget.max_time {
                read.push((i, docs));
                break 'read;
            }
            match cursor.try_next().await.map_err(failed)? {
                Some(d) => {
                    m.read_bytes += d.as_bytes().len() as u64;
                    m.documents += 1;
                    docs.push(d);
                    if m.documents.is_multiple_of(256) {
                        progress(&format!(
                            "probe: read {} from the source",
                            crate::contract::progress::human_bytes(m.read_bytes as i64)
                        ));
                    }
                }
                None => break,
            }
        }
        read.push((i, docs));
    }
    m.read_seconds = started.elapsed().as_secs_f64();
    // Write: as the copy does, one scratch collection per source collection (their _ids may
    // collide), within the same time bound.
    let db = destination.database(scratch);
    let write_failed = |e: mongodb::error::Error| ProbeError::Write {
        db: scratch.to_string(),
        reason: describe(&e),
    };
    let started = Instant::now();
    // Bytes written per scratch collection: what a timed index build there indexes.
    let mut written = vec![0u64; candidates.len()];
    'write: for (i, docs) in &read {
        let coll = db.collection_with_options::<RawDocumentBuf>(
            &format!("c{i}"),
            mongodb::options::CollectionOptions::builder()
                .write_concern(WriteConcern::builder().w(Acknowledgment::Majority).build())
                .build(),
        );
        for batch in batches(docs, 1 << 20) {
            if started.elapsed() >= budget.max_time {
                break 'write;
            }
            let bytes: u64 = batch.iter().map(|d| d.as_bytes().len() as u64).sum();
            let n = batch.len() as u64;
            coll.insert_many(batch.iter().cloned())
                .ordered(false)
                .bypass_document_validation(true)
                .await
                .map_err(write_failed)?;
            m.written_bytes += bytes;
            written[*i] += bytes;
            m.written_documents += n;
            progress(&format!(
                "probe: wrote {} to the destination",
                crate::contract::progress::human_bytes(m.written_bytes as i64)
            ));
        }
    }
    m.write_seconds = started.elapsed().as_secs_f64();
    // One index build on what was written, timed.
    if let Some((i, spec)) = written
        .iter()
        .position(|&b| b > 0)
        .and_then(|i| candidates[i].index.clone().map(|s| (i, s)))
    {
        progress("probe: building an index on the copy");
        let keys = spec.get_document("key").cloned().unwrap_or_default();
        let bytes = written[i];
        let t = Instant::now();
        match db
            .run_command(doc! { "createIndexes": format!("c{i}"), "indexes": [spec] })
            .await
        {
            Ok(_) => {
                m.index = Some(IndexTiming {
                    keys: bson::Bson::Document(keys)
                        .into_relaxed_extjson()
                        .to_string(),
                    seconds: t.elapsed().as_secs_f64(),
                    bytes,
                })
            }
            Err(e) => {
                tracing::debug!(error = %describe(&e), "the probe's index build failed; the estimate assumes one")
            }
        }
    }
    // Each special index kind, on an empty collection of its own.
    for (n, (kind, spec)) in kinds.iter().enumerate() {
        progress(&format!("probe: trying a {kind} index on the destination"));
        let coll = format!("k{n}");
        let refused = match db
            .run_command(doc! { "createIndexes": &coll, "indexes": [spec.clone()] })
            .await
        {
            Ok(_) => None,
            Err(e) => Some(describe(&e)),
        };
        m.kinds.push(KindTrial {
            kind: kind.clone(),
            refused,
        });
    }
    Ok(m)
}

/// `docs` in runs of at most `max_bytes` (and at least one document each).
fn batches(docs: &[RawDocumentBuf], max_bytes: usize) -> Vec<&[RawDocumentBuf]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, d) in docs.iter().enumerate() {
        let len = d.as_bytes().len();
        if i > start && bytes + len > max_bytes {
            out.push(&docs[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < docs.len() {
        out.push(&docs[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_by_bytes_and_keep_every_document() {
        let docs: Vec<RawDocumentBuf> = (0..10)
            .map(|i| {
                RawDocumentBuf::from_document(&doc! { "_id": i, "s": "x".repeat(90) }).unwrap()
            })
            .collect();
        let size = docs[0].as_bytes().len();
        let b = batches(&docs, size * 3);
        assert_eq!(b.iter().map(|b| b.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert!(batches(&[], 10).is_empty());
        // A document larger than the bound goes alone.
        assert_eq!(batches(&docs[..2], 1).len(), 2);
    }

    #[test]
    fn special_kinds() {
        let k = |key: Document| special_kind(&doc! { "key": key, "name": "x" });
        assert_eq!(k(doc! { "a": "text" }), Some("text"));
        assert_eq!(k(doc! { "a": 1, "h": "hashed" }), Some("hashed"));
        assert_eq!(k(doc! { "loc": "2dsphere" }), Some("2dsphere"));
        assert_eq!(k(doc! { "$**": 1 }), Some("wildcard"));
        assert_eq!(k(doc! { "a.$**": 1 }), Some("wildcard"));
        assert_eq!(k(doc! { "a": 1, "b": -1 }), None);
        assert!(scratch_name().starts_with(PLAN_PROBE_DB_PREFIX));
        assert_ne!(scratch_name(), scratch_name());
    }
}
