//! Whole-cluster comparison: databases, collections/views, options, indexes and
//! documents (byte-for-byte).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::{Client, Database};

/// Databases never compared.
pub const SKIP_DBS: [&str; 5] = [
    "admin",
    "local",
    "config",
    "clustersync_reserved_for_internal_use",
    "mongosync_reserved_for_internal_use",
];

const MAX_DIFF_LINE: usize = 300;

fn trunc(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &s[..end], s.len())
}

/// User databases (sorted), without [`SKIP_DBS`].
pub async fn user_databases(client: &Client) -> Result<Vec<String>> {
    let mut names = client
        .list_database_names()
        .await
        .context("listDatabases")?;
    names.retain(|n| !SKIP_DBS.contains(&n.as_str()));
    names.sort();
    Ok(names)
}

/// listCollections entries by name (without `system.*`), as raw command output.
pub async fn list_collection_specs(db: &Database) -> Result<BTreeMap<String, Document>> {
    let mut cursor = db
        .run_cursor_command(doc! { "listCollections": 1 })
        .await
        .with_context(|| format!("listCollections on {}", db.name()))?;
    let mut out = BTreeMap::new();
    while let Some(spec) = cursor.try_next().await? {
        let name = spec.get_str("name").unwrap_or_default().to_string();
        if name.starts_with("system.") {
            continue;
        }
        out.insert(name, spec);
    }
    Ok(out)
}

/// listIndexes normalized: `v` and `ns` removed, keyed (sorted) by name.
pub async fn list_index_specs(db: &Database, coll: &str) -> Result<BTreeMap<String, Document>> {
    list_index_specs_mode(db, coll, false).await
}

/// listIndexes keyed by name, `ns` removed; `exact` also keeps the index version `v`.
pub async fn list_index_specs_mode(
    db: &Database,
    coll: &str,
    exact: bool,
) -> Result<BTreeMap<String, Document>> {
    let mut cursor = db
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
        .with_context(|| format!("listIndexes on {}.{coll}", db.name()))?;
    let mut out = BTreeMap::new();
    while let Some(mut spec) = cursor.try_next().await? {
        spec.remove("ns");
        if exact {
            let name = spec.get_str("name").unwrap_or_default().to_string();
            out.insert(name, spec);
            continue;
        }
        spec.remove("v");
        let name = spec.get_str("name").unwrap_or_default().to_string();
        out.insert(name, spec);
    }
    Ok(out)
}

/// Raw bytes of a `{_id: <value>}` document: the map key for document comparison
/// (type-exact: `1` int32 and `1` int64 are different keys).
fn id_key(doc: &RawDocument) -> Vec<u8> {
    let mut k = RawDocumentBuf::new();
    match doc.get("_id") {
        Ok(Some(id)) => k.append("_id", id.to_raw_bson()),
        _ => k.append("_id", RawBsonRef::Null.to_raw_bson()),
    }
    k.into_bytes()
}

fn id_debug(key: &[u8]) -> String {
    let d = RawDocument::from_bytes(key)
        .ok()
        .and_then(|r| Document::try_from(r).ok())
        .and_then(|d| d.get("_id").cloned())
        .unwrap_or(Bson::Null);
    trunc(format!("{d:?}"), 120)
}

/// Short description of how two documents differ (first differing top-level fields).
fn describe_doc_diff(a: &RawDocument, b: &RawDocument) -> String {
    let fields = |d: &RawDocument| -> Vec<(String, Vec<u8>)> {
        d.iter_elements()
            .filter_map(|e| e.ok())
            .map(|e| {
                let mut one = RawDocumentBuf::new();
                if let Ok(v) = e.value() {
                    one.append("v", v.to_raw_bson());
                }
                (e.key().to_string(), one.into_bytes())
            })
            .collect()
    };
    let fa = fields(a);
    let fb = fields(b);
    let ka: Vec<&str> = fa.iter().map(|(k, _)| k.as_str()).collect();
    let kb: Vec<&str> = fb.iter().map(|(k, _)| k.as_str()).collect();
    if ka != kb {
        let sa: BTreeSet<&str> = ka.iter().copied().collect();
        let sb: BTreeSet<&str> = kb.iter().copied().collect();
        if sa == sb {
            return trunc(
                format!("field order differs: {ka:?} vs {kb:?}"),
                MAX_DIFF_LINE,
            );
        }
        let only_a: Vec<_> = sa.difference(&sb).collect();
        let only_b: Vec<_> = sb.difference(&sa).collect();
        return trunc(
            format!("fields only in src: {only_a:?}, only in dst: {only_b:?}"),
            MAX_DIFF_LINE,
        );
    }
    let mut diffs = Vec::new();
    for ((k, va), (_, vb)) in fa.iter().zip(fb.iter()) {
        if va != vb {
            let show = |bytes: &[u8]| {
                RawDocument::from_bytes(bytes)
                    .ok()
                    .and_then(|r| Document::try_from(r).ok())
                    .and_then(|d| d.get("v").cloned())
                    .map(|v| trunc(format!("{v:?}"), 80))
                    .unwrap_or_default()
            };
            diffs.push(format!("{k}: {} vs {}", show(va), show(vb)));
        }
        if diffs.len() >= 3 {
            break;
        }
    }
    trunc(
        format!("field values differ: {}", diffs.join("; ")),
        MAX_DIFF_LINE,
    )
}

async fn read_docs(db: &Database, coll: &str) -> Result<Vec<RawDocumentBuf>> {
    let c = db.collection::<RawDocumentBuf>(coll);
    let cursor = c
        .find(doc! {})
        .await
        .with_context(|| format!("find on {}.{coll}", db.name()))?;
    cursor
        .try_collect()
        .await
        .with_context(|| format!("reading {}.{coll}", db.name()))
}

fn without_uuid_info(spec: &Document) -> Document {
    let mut s = spec.clone();
    if let Ok(info) = s.get_document_mut("info") {
        info.remove("uuid");
    }
    s
}

/// Order-sensitive and type-exact equality (unlike `Document ==`, which ignores
/// field order).
pub fn strict_eq(a: &Document, b: &Document) -> bool {
    mongodb::bson::to_vec(a).ok() == mongodb::bson::to_vec(b).ok()
}

fn is_timeseries(spec: &Document) -> bool {
    spec.get_str("type") == Ok("timeseries")
        || spec
            .get_document("options")
            .map(|o| o.contains_key("timeseries"))
            .unwrap_or(false)
}

/// Top-level field names of a raw document, in order.
fn field_names(d: &RawDocument) -> String {
    let names: Vec<String> = d
        .iter_elements()
        .filter_map(|e| e.ok())
        .map(|e| e.key().to_string())
        .collect();
    trunc(format!("{names:?}"), 200)
}

async fn compare_documents(
    ns: &str,
    src: &Database,
    dst: &Database,
    coll: &str,
    multiset: bool,
    exact: bool,
    out: &mut Vec<String>,
) -> Result<()> {
    let (a, b) = tokio::try_join!(read_docs(src, coll), read_docs(dst, coll))?;
    if multiset {
        let mut counts: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
        for d in &a {
            *counts.entry(d.as_bytes().to_vec()).or_default() += 1;
        }
        for d in &b {
            *counts.entry(d.as_bytes().to_vec()).or_default() -= 1;
        }
        for (bytes, n) in counts.into_iter().filter(|(_, n)| *n != 0) {
            let id = RawDocument::from_bytes(&bytes)
                .map(|r| id_debug(&id_key(r)))
                .unwrap_or_default();
            let what = if n > 0 {
                "missing in dst"
            } else {
                "extra in dst"
            };
            out.push(format!(
                "{ns}: document _id={id} {what} ({} cop{})",
                n.abs(),
                if n.abs() == 1 { "y" } else { "ies" }
            ));
        }
        return Ok(());
    }
    let mut ma: BTreeMap<Vec<u8>, RawDocumentBuf> = BTreeMap::new();
    for d in a {
        let k = id_key(&d);
        if ma.insert(k.clone(), d).is_some() {
            out.push(format!("{ns}: duplicate _id={} in src", id_debug(&k)));
        }
    }
    let mut mb: BTreeMap<Vec<u8>, RawDocumentBuf> = BTreeMap::new();
    for d in b {
        let k = id_key(&d);
        if mb.insert(k.clone(), d).is_some() {
            out.push(format!("{ns}: duplicate _id={} in dst", id_debug(&k)));
        }
    }
    for (k, da) in &ma {
        match mb.get(k) {
            None => out.push(format!("{ns}: document _id={} missing in dst", id_debug(k))),
            Some(d2) if da.as_bytes() != d2.as_bytes() && exact => out.push(format!(
                "{ns}: document _id={} differs: {}; src fields {} ({} bytes), dst fields {} ({} bytes)",
                id_debug(k),
                describe_doc_diff(da, d2),
                field_names(da),
                da.as_bytes().len(),
                field_names(d2),
                d2.as_bytes().len(),
            )),
            Some(d2) if da.as_bytes() != d2.as_bytes() => out.push(format!(
                "{ns}: document _id={} differs: {}",
                id_debug(k),
                describe_doc_diff(da, d2)
            )),
            Some(_) => {}
        }
    }
    for k in mb.keys().filter(|k| !ma.contains_key(*k)) {
        out.push(format!("{ns}: document _id={} extra in dst", id_debug(k)));
    }
    Ok(())
}

/// Compare two clusters; returns human-readable differences (empty = equal).
/// Wording: "missing in dst" = only in src, "extra in dst" = only in dst.
/// A database missing on one side is reported once, then per collection/view.
pub async fn compare_clusters(src: &Client, dst: &Client) -> Result<Vec<String>> {
    compare_clusters_mode(src, dst, false).await
}

/// [`compare_clusters`] with nothing normalized away: collection specs (options,
/// `idIndex`, `info` without the uuid) and index specs (with `v`, `prepareUnique`, …)
/// compared as BSON bytes, field order included; documents byte for byte with both
/// documents' field names listed when they differ.
pub async fn compare_clusters_exact(src: &Client, dst: &Client) -> Result<Vec<String>> {
    compare_clusters_mode(src, dst, true).await
}

async fn compare_clusters_mode(src: &Client, dst: &Client, exact: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let dbs_a = user_databases(src).await?;
    let dbs_b = user_databases(dst).await?;
    for d in dbs_a.iter().filter(|d| !dbs_b.contains(d)) {
        out.push(format!("database {d} missing in dst"));
    }
    for d in dbs_b.iter().filter(|d| !dbs_a.contains(d)) {
        out.push(format!("database {d} extra in dst"));
    }
    let all: BTreeSet<&String> = dbs_a.iter().chain(dbs_b.iter()).collect();
    for name in all {
        compare_database_mode(&src.database(name), &dst.database(name), exact, &mut out).await?;
    }
    Ok(out)
}

/// Compare one database of each side (collections, views, options, indexes, documents).
pub async fn compare_database(src: &Database, dst: &Database, out: &mut Vec<String>) -> Result<()> {
    compare_database_mode(src, dst, false, out).await
}

async fn compare_database_mode(
    src: &Database,
    dst: &Database,
    exact: bool,
    out: &mut Vec<String>,
) -> Result<()> {
    let dbn = src.name().to_string();
    let ca = list_collection_specs(src).await?;
    let cb = list_collection_specs(dst).await?;
    for n in ca.keys().filter(|n| !cb.contains_key(*n)) {
        let t = ca[n].get_str("type").unwrap_or("collection");
        out.push(format!("{dbn}.{n}: {t} missing in dst"));
    }
    for n in cb.keys().filter(|n| !ca.contains_key(*n)) {
        let t = cb[n].get_str("type").unwrap_or("collection");
        out.push(format!("{dbn}.{n}: {t} extra in dst"));
    }
    for (name, sa) in ca.iter() {
        let Some(sb) = cb.get(name) else { continue };
        let ns = format!("{dbn}.{name}");
        let (sa, sb) = (without_uuid_info(sa), without_uuid_info(sb));
        if exact && !strict_eq(&sa, &sb) {
            out.push(trunc(
                format!(
                    "{ns}: listCollections spec differs (bytes/field order): src {sa} vs dst {sb}"
                ),
                2 * MAX_DIFF_LINE,
            ));
        }
        let ta = sa.get_str("type").unwrap_or("collection");
        let tb = sb.get_str("type").unwrap_or("collection");
        if ta != tb {
            out.push(format!("{ns}: type {ta} in src, {tb} in dst"));
            continue;
        }
        let oa = sa.get_document("options").cloned().unwrap_or_default();
        let ob = sb.get_document("options").cloned().unwrap_or_default();
        if oa != ob {
            out.push(trunc(
                format!("{ns}: options differ: src {oa} vs dst {ob}"),
                2 * MAX_DIFF_LINE,
            ));
        }
        if ta == "view" {
            continue;
        }
        let ia = list_index_specs_mode(src, name, exact).await?;
        let ib = list_index_specs_mode(dst, name, exact).await?;
        for (iname, spec) in &ia {
            match ib.get(iname) {
                None => out.push(trunc(
                    format!("{ns}: index {iname} missing in dst: {spec}"),
                    MAX_DIFF_LINE,
                )),
                Some(other) => {
                    let keys_a = spec.get_document("key").cloned().unwrap_or_default();
                    let keys_b = other.get_document("key").cloned().unwrap_or_default();
                    if spec != other
                        || !strict_eq(&keys_a, &keys_b)
                        || (exact && !strict_eq(spec, other))
                    {
                        out.push(trunc(
                            format!("{ns}: index {iname} differs: src {spec} vs dst {other}"),
                            2 * MAX_DIFF_LINE,
                        ));
                    }
                }
            }
        }
        for (iname, spec) in ib.iter().filter(|(n, _)| !ia.contains_key(*n)) {
            out.push(trunc(
                format!("{ns}: index {iname} extra in dst: {spec}"),
                MAX_DIFF_LINE,
            ));
        }
        compare_documents(&ns, src, dst, name, is_timeseries(&sa), exact, out).await?;
    }
    Ok(())
}

fn format_diffs(diffs: &[String], max: usize) -> String {
    let mut s = diffs
        .iter()
        .take(max)
        .map(|d| format!("  - {d}"))
        .collect::<Vec<_>>()
        .join("\n");
    if diffs.len() > max {
        s.push_str(&format!("\n  … and {} more", diffs.len() - max));
    }
    s
}

/// Panic with the first ~20 differences if the clusters differ.
pub async fn assert_clusters_equal(src: &Client, dst: &Client) {
    let diffs = compare_clusters(src, dst)
        .await
        .expect("compare_clusters failed");
    if !diffs.is_empty() {
        panic!(
            "clusters differ ({} differences):\n{}",
            diffs.len(),
            format_diffs(&diffs, 20)
        );
    }
}

/// Poll [`compare_clusters`] (every 500 ms) until it reports no difference or
/// `timeout` passes; returns the last differences (empty = converged).
pub async fn wait_clusters_equal(src: &Client, dst: &Client, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let diffs = match compare_clusters(src, dst).await {
            Ok(d) => d,
            Err(e) => vec![format!("compare_clusters error: {e:#}")],
        };
        if diffs.is_empty() || Instant::now() > deadline {
            return diffs;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// [`wait_clusters_equal`], panicking with the first ~20 differences on timeout.
pub async fn assert_clusters_converge(src: &Client, dst: &Client, timeout: Duration) {
    let diffs = wait_clusters_equal(src, dst, timeout).await;
    if !diffs.is_empty() {
        panic!(
            "clusters still differ after {timeout:?} ({} differences):\n{}",
            diffs.len(),
            format_diffs(&diffs, 20)
        );
    }
}
