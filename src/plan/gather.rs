//! What a plan learns from the servers, read-only: every namespace in scope with its sizes,
//! options and indexes (the source), the filesystem and the namespaces already there (the
//! destination), whether each side has `setUserWriteBlockMode`, and the source's recent oplog
//! write rate. Nothing here judges; [`super::judge`] does, without a server.

use bson::{doc, Bson, Document, RawDocumentBuf};
use futures::{StreamExt, TryStreamExt};
use mongodb::Client;

use crate::contract::filter::Scope;
use crate::contract::plan::NamespaceKind;
use crate::mongo::catalog::{self, CollKind, CollSpec};
use crate::mongo::{codes, error_code};

/// Oplog entries read (newest first) to measure the source's write rate.
pub const OPLOG_SAMPLE: i64 = 1000;
/// Bytes of oplog entries read at most for that measurement.
pub const OPLOG_SAMPLE_BYTES: usize = 16 << 20;

/// One source namespace in scope.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceFacts {
    /// The database.
    pub db: String,
    /// The collection or view.
    pub name: String,
    /// What it is.
    pub kind: NamespaceKind,
    /// `listCollections`' options (capped size, time series, validator, collation, view
    /// pipeline, ...).
    pub options: Document,
    /// Documents (`collStats` `count`).
    pub documents: u64,
    /// Uncompressed data bytes (`collStats` `size`).
    pub data_bytes: u64,
    /// On-disk data bytes (`collStats` `storageSize`).
    pub storage_bytes: u64,
    /// On-disk index bytes (`collStats` `totalIndexSize`).
    pub index_bytes: u64,
    /// `listIndexes`, as the server answers it (`_id` included).
    pub indexes: Vec<Document>,
}

impl NamespaceFacts {
    /// `db.name`.
    pub fn ns(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

/// What a namespace is, from its `listCollections` entry.
pub fn kind_of(spec: &CollSpec) -> NamespaceKind {
    match spec.kind {
        CollKind::View => NamespaceKind::View,
        CollKind::Timeseries => NamespaceKind::Timeseries,
        CollKind::Collection if spec.is_capped() => NamespaceKind::Capped,
        CollKind::Collection if spec.options.contains_key("clusteredIndex") => {
            NamespaceKind::Clustered
        }
        CollKind::Collection => NamespaceKind::Collection,
    }
}

/// A non-negative number of a server reply, whatever its BSON type.
pub fn number(d: &Document, key: &str) -> Option<u64> {
    match d.get(key)? {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(n) if *n >= 0.0 => Some(*n as u64),
        _ => None,
    }
}

/// Every source namespace in scope, with its sizes and indexes; `progress` hears how many of
/// them have been examined. A few at a time: thousands of collections cost two round trips
/// each.
pub async fn namespaces(
    client: &Client,
    scope: &Scope,
    progress: &(dyn Fn(&str) + Sync),
) -> mongodb::error::Result<Vec<NamespaceFacts>> {
    let specs = catalog::list_all(client, scope).await?;
    let total = specs.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let done = &done;
    let mut out: Vec<NamespaceFacts> = futures::stream::iter(specs)
        .map(|spec| async move {
            let facts = one(client, spec).await;
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            progress(&format!("examining namespaces: {n}/{total}"));
            facts
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    out.sort_by_key(|n| n.ns());
    Ok(out)
}

async fn one(client: &Client, spec: CollSpec) -> mongodb::error::Result<NamespaceFacts> {
    let kind = kind_of(&spec);
    let mut facts = NamespaceFacts {
        db: spec.db.clone(),
        name: spec.name.clone(),
        kind,
        options: spec.options.clone(),
        documents: 0,
        data_bytes: 0,
        storage_bytes: 0,
        index_bytes: 0,
        indexes: vec![],
    };
    if kind == NamespaceKind::View {
        return Ok(facts);
    }
    let db = client.database(&spec.db);
    match db.run_command(doc! { "collStats": &spec.name }).await {
        Ok(s) => {
            facts.documents = number(&s, "count").unwrap_or(0);
            facts.data_bytes = number(&s, "size").unwrap_or(0);
            facts.storage_bytes = number(&s, "storageSize").unwrap_or(facts.data_bytes);
            facts.index_bytes = number(&s, "totalIndexSize").unwrap_or(0);
        }
        // Dropped since it was listed: nothing to copy.
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => {}
        Err(e) => {
            // A server without collStats for this kind: the count at least.
            tracing::debug!(ns = %spec.ns(), error = %crate::mongo::describe(&e), "no collStats; counting");
            facts.documents = db
                .collection::<RawDocumentBuf>(&spec.name)
                .estimated_document_count()
                .await?;
        }
    }
    facts.indexes = catalog::list_indexes(client, &spec.db, &spec.name).await?;
    Ok(facts)
}

/// What the plan learns of one side beyond the preflight's facts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideFacts {
    /// Whether the server has `setUserWriteBlockMode` (`None`: could not be told).
    pub write_blocking: Option<bool>,
    /// `dbStats` `fsTotalSize` (MongoDB reports it for the filesystem of its dbPath).
    pub fs_total: Option<u64>,
    /// `dbStats` `fsUsedSize`.
    pub fs_used: Option<u64>,
    /// The recent oplog write rate, when the oplog could be read.
    pub oplog_rate: Option<OplogRate>,
}

/// The newest oplog entries: how many bytes over how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OplogRate {
    /// Entries read.
    pub entries: u64,
    /// Their BSON bytes.
    pub bytes: u64,
    /// Seconds between the oldest and the newest of them (whole seconds, as `ts` counts).
    pub span_secs: u64,
}

impl OplogRate {
    /// Bytes per second; a burst within one second counts as one second.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.span_secs.max(1) as f64
    }
}

/// Whether the server has `setUserWriteBlockMode`, asked without changing anything: the
/// command without its required `global` field is refused by a server that has it (a parse
/// error) and unknown to one that has not (`CommandNotFound`). The engine's own probe sends
/// `global: false`, which would lift a block someone set on purpose; a plan must not.
pub async fn write_blocking_supported(client: &Client) -> Option<bool> {
    match client
        .database("admin")
        .run_command(doc! { "setUserWriteBlockMode": 1 })
        .await
    {
        Ok(_) => Some(true),
        Err(e) => match error_code(&e) {
            Some(codes::COMMAND_NOT_FOUND) => Some(false),
            // Not allowed to ask: the answer is unknown.
            Some(codes::UNAUTHORIZED) | None => None,
            Some(_) => Some(true),
        },
    }
}

/// The source's newest [`OPLOG_SAMPLE`] oplog entries (at most [`OPLOG_SAMPLE_BYTES`]),
/// measured.
pub async fn oplog_rate(client: &Client) -> Option<OplogRate> {
    let oplog = client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs");
    let mut cursor = oplog
        .find(doc! {})
        .sort(doc! { "$natural": -1 })
        .limit(OPLOG_SAMPLE)
        .await
        .ok()?;
    // Entries can be large (a 16 MB document's insert): the sample stops at a byte bound too.
    let mut entries: Vec<RawDocumentBuf> = Vec::new();
    let mut read = 0usize;
    while read < OPLOG_SAMPLE_BYTES {
        match cursor.try_next().await.ok()? {
            Some(e) => {
                read += e.as_bytes().len();
                entries.push(e);
            }
            None => break,
        }
    }
    let ts = |d: &RawDocumentBuf| d.get_timestamp("ts").ok().map(|t| t.time);
    // Up to now, not up to the newest entry: a burst of writes minutes ago is not the source's
    // write rate today.
    let now = crate::mongo::cluster_time(client)
        .await
        .ok()
        .map(|t| t.time);
    let newest = ts(entries.first()?)?.max(now.unwrap_or(0));
    let oldest = ts(entries.last()?)?;
    Some(OplogRate {
        entries: entries.len() as u64,
        bytes: entries.iter().map(|e| e.as_bytes().len() as u64).sum(),
        span_secs: newest.saturating_sub(oldest) as u64,
    })
}

/// One side's [`SideFacts`]; the oplog only for a source, the filesystem only for a
/// destination.
pub async fn side(client: &Client, source: bool) -> SideFacts {
    let mut facts = SideFacts {
        write_blocking: write_blocking_supported(client).await,
        ..Default::default()
    };
    if source {
        facts.oplog_rate = oplog_rate(client).await;
    } else if let Ok(s) = client
        .database("admin")
        .run_command(doc! { "dbStats": 1 })
        .await
    {
        facts.fs_total = number(&s, "fsTotalSize");
        facts.fs_used = number(&s, "fsUsedSize");
    }
    facts
}

/// The destination's namespaces in scope: a sync onto pre-existing data must not clash with
/// them.
pub async fn clashes(destination: &Client, scope: &Scope) -> mongodb::error::Result<Vec<String>> {
    Ok(catalog::list_all(destination, scope)
        .await?
        .iter()
        .map(CollSpec::ns)
        .collect())
}
