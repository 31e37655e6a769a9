//! Comparing two clusters namespace by namespace.
//!
//! Each collection is read once on each side, concurrently, for its count and digest (natural
//! order, the cheapest scan). Only when those differ is it read a second time, sorted by
//! `_id`, for the merge walk that names the differing documents. A few collections are
//! compared at a time; nothing holds more than a cursor batch per scan.

use std::collections::{BTreeMap, HashMap};

use bson::{doc, Bson, Document, RawBson, RawDocumentBuf};
use futures::{stream, StreamExt, TryFutureExt, TryStreamExt};
use mongodb::error::ErrorKind;

use super::diff;
use super::digest::Digest;
use super::report::{Mismatch, MismatchKind, NamespaceReport, Report, SideReport};
use super::walk::{id_key, walk, Entry, LookupWalk, WalkResult};
use super::{Cluster, DocumentCheck, SideProgress, VerifyError, VerifyOptions};
use crate::mongo;
use crate::mongo::catalog::{self, CollSpec};
use crate::verify::definitions::{compare_indexes, compare_specs, kind_of};

/// Both clusters of one verification, for error messages scrubbed of both URIs' secrets.
struct Pair<'a> {
    source: &'a Cluster,
    destination: &'a Cluster,
}

impl Pair<'_> {
    fn scrub(&self, text: &str) -> String {
        self.destination.uri.scrub(&self.source.uri.scrub(text))
    }

    fn failed(&self, on: &Cluster, what: String, e: &mongodb::error::Error) -> VerifyError {
        VerifyError::Command {
            label: on.label.clone(),
            hosts: on.hosts().to_string(),
            what,
            reason: self.scrub(&mongo::describe(e)),
        }
    }

    async fn ping(&self, on: &Cluster) -> Result<(), VerifyError> {
        match on
            .client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let (label, hosts) = (on.label.clone(), on.hosts().to_string());
                let reason = self.scrub(&mongo::describe(&e));
                Err(match e.kind.as_ref() {
                    ErrorKind::Authentication { .. } => VerifyError::Authentication {
                        label,
                        hosts,
                        reason,
                    },
                    _ => VerifyError::Unreachable {
                        label,
                        hosts,
                        reason,
                    },
                })
            }
        }
    }
}

/// The namespaces in scope, only in the databases of `only` when it is given: a caller that
/// compares a few hundred namespaces at a time (the engine's verifier) listed every database
/// for each round, which made its pass grow with the square of the collection count (197 s at
/// 10,000 collections against 7.5 s at 2,000).
async fn listing(
    client: &mongodb::Client,
    scope: &crate::contract::filter::Scope,
    only: Option<&std::collections::BTreeSet<String>>,
) -> mongodb::error::Result<Vec<CollSpec>> {
    let Some(only) = only else {
        return catalog::list_all(client, scope).await;
    };
    let dbs: std::collections::BTreeSet<&str> = only
        .iter()
        .filter_map(|ns| ns.split_once('.').map(|(db, _)| db))
        .collect();
    let mut out = Vec::new();
    for db in dbs.into_iter().filter(|db| scope.may_include_db(db)) {
        out.extend(catalog::list_db(client, db, scope).await?);
    }
    Ok(out)
}

/// Compares every namespace in scope on either cluster. `source` is the side data was copied
/// from: "missing" and "extra" are from the destination's point of view.
pub async fn verify(
    source: &Cluster,
    destination: &Cluster,
    options: &VerifyOptions,
) -> Result<Report, VerifyError> {
    let scope = options.scope()?;
    let pair = Pair {
        source,
        destination,
    };
    // Both pings run even when one fails, so that the source is named first when both are down.
    let (ps, pd) = tokio::join!(pair.ping(source), pair.ping(destination));
    ps?;
    pd?;
    let (src_specs, dst_specs) = tokio::try_join!(
        async {
            listing(&source.client, &scope, options.only.as_ref())
                .await
                .map_err(|e| pair.failed(source, "listing collections".into(), &e))
        },
        async {
            listing(&destination.client, &scope, options.only.as_ref())
                .await
                .map_err(|e| pair.failed(destination, "listing collections".into(), &e))
        },
    )?;
    let mut by_ns: BTreeMap<String, (Option<CollSpec>, Option<CollSpec>)> = BTreeMap::new();
    let wanted = |spec: &CollSpec| options.only.as_ref().is_none_or(|o| o.contains(&spec.ns()));
    let src_specs = src_specs.into_iter().filter(|s| wanted(s));
    let dst_specs = dst_specs.into_iter().filter(|s| wanted(s));
    for s in src_specs {
        let ns = s.ns();
        by_ns.entry(ns).or_default().0 = Some(s);
    }
    for d in dst_specs {
        let ns = d.ns();
        by_ns.entry(ns).or_default().1 = Some(d);
    }
    let pair = &pair;
    let mut namespaces: Vec<NamespaceReport> = stream::iter(by_ns)
        .map(|(ns, (s, d))| compare_namespace(pair, ns, s, d, options))
        .buffer_unordered(options.concurrency.max(1))
        .try_collect()
        .await?;
    namespaces.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    Ok(Report {
        namespaces,
        max_mismatches: options.max_mismatches,
    })
}

async fn compare_namespace(
    pair: &Pair<'_>,
    ns: String,
    src: Option<CollSpec>,
    dst: Option<CollSpec>,
    options: &VerifyOptions,
) -> Result<NamespaceReport, VerifyError> {
    let (limit, index_form) = (options.max_mismatches, options.index_form);
    let progress = options.progress.as_deref();
    let mut metadata = Vec::new();
    let comparable = match (&src, &dst) {
        (Some(s), Some(d)) => {
            metadata.extend(compare_specs(s, d));
            kind_of(s) == kind_of(d)
        }
        (Some(s), None) => {
            metadata.push(format!("{} missing on the destination", kind_of(s)));
            false
        }
        (None, Some(d)) => {
            metadata.push(format!(
                "{} extra on the destination (not on the source)",
                kind_of(d)
            ));
            false
        }
        (None, None) => false,
    };
    let (src_docs, dst_docs) = (with_documents(src.as_ref()), with_documents(dst.as_ref()));
    let compare_idx = comparable && src_docs.is_some() && options.definitions;
    let known = src_docs
        .filter(|_| options.documents == DocumentCheck::Digest)
        .and_then(|s| options.source_digests.as_ref()?.get(&s.ns()).copied());
    let source_scan = |check| {
        scan(
            pair,
            pair.source,
            src_docs,
            check,
            progress.map(|p| &p.source),
        )
    };
    let (mut src_digest, dst_digest, mut src_idx, mut dst_idx) = tokio::try_join!(
        // With the source's digest known, its side waits for the destination's.
        source_scan(match known {
            Some(_) => DocumentCheck::Skip,
            None => options.documents,
        }),
        scan(
            pair,
            pair.destination,
            dst_docs,
            options.documents,
            progress.map(|p| &p.destination)
        ),
        indexes(pair, pair.source, src_docs.filter(|_| compare_idx)),
        indexes(pair, pair.destination, dst_docs.filter(|_| compare_idx)),
    )?;
    if let Some(known) = known {
        if dst_digest == Some(known) {
            src_digest = Some(known);
            if let Some(p) = progress {
                use std::sync::atomic::Ordering::Relaxed;
                p.source.hashed_documents.fetch_add(known.count, Relaxed);
                p.source.scanned_namespaces.fetch_add(1, Relaxed);
                p.source_reads_saved.fetch_add(1, Relaxed);
            }
        } else {
            // Changed since, or copied wrong: only the source as it is now can say.
            src_digest = source_scan(DocumentCheck::Digest).await?;
        }
    }
    if compare_idx {
        metadata.extend(compare_indexes(&src_idx, &dst_idx, index_form));
    }
    let mut report = NamespaceReport {
        namespace: ns,
        source: side(src.as_ref(), src_digest, options.documents),
        destination: side(dst.as_ref(), dst_digest, options.documents),
        equal: false,
        mismatches: Vec::new(),
        more_mismatches: false,
        metadata_differences: Vec::new(),
    };
    let documents_differ = src_digest != dst_digest;
    if options.documents == DocumentCheck::Count && comparable && documents_differ {
        let count = |d: Option<Digest>| d.map_or(0, |d| d.count);
        metadata.push(format!(
            "document counts differ: {} on the source, {} on the destination",
            count(src_digest),
            count(dst_digest)
        ));
    }
    if options.documents == DocumentCheck::Digest && comparable && documents_differ {
        if let (Some(s), Some(d)) = (src_docs, dst_docs) {
            if !compare_idx {
                // Not listed above: the walk needs them (it reads by the `_id` index).
                (src_idx, dst_idx) = tokio::try_join!(
                    indexes(pair, pair.source, Some(s)),
                    indexes(pair, pair.destination, Some(d)),
                )?;
            }
            let merged = walk(
                sorted_by_id(pair, pair.source, s, &src_idx),
                sorted_by_id(pair, pair.destination, d, &dst_idx),
                limit,
            )
            .await?;
            let found = match merged {
                Some(found) => found,
                None => {
                    tracing::debug!(
                        namespace = %s.ns(),
                        "the servers sort some _ids otherwise than MongoDB; finding the differing documents by lookups"
                    );
                    lookups(pair, (s, &src_idx), (d, &dst_idx), limit).await?
                }
            };
            if found.mismatches.is_empty() && !found.more {
                metadata.push(
                    "the documents' digests differ but a second read sorted by _id found no differing document; the data probably changed during verification, run it again"
                        .into(),
                );
            }
            report.mismatches = found.mismatches;
            report.more_mismatches = found.more;
            if options.describe {
                describe(pair, s, d, &mut report.mismatches).await?;
            }
        }
    }
    report.equal = metadata.is_empty() && !documents_differ && report.mismatches.is_empty();
    report.metadata_differences = metadata;
    Ok(report)
}

/// Views have no documents of their own to compare: they are computed from collections.
fn with_documents(spec: Option<&CollSpec>) -> Option<&CollSpec> {
    spec.filter(|s| s.kind != catalog::CollKind::View)
}

fn side(
    spec: Option<&CollSpec>,
    digest: Option<Digest>,
    check: DocumentCheck,
) -> Option<SideReport> {
    spec.map(|s| SideReport {
        kind: kind_of(s),
        count: digest.map(|d| d.count),
        // A count-only comparison's digest holds the count alone.
        digest: digest.filter(|_| check == DocumentCheck::Digest),
    })
}

/// The side's digest (under [`DocumentCheck::Count`], a digest holding only the count).
async fn scan(
    pair: &Pair<'_>,
    on: &Cluster,
    spec: Option<&CollSpec>,
    check: DocumentCheck,
    progress: Option<&SideProgress>,
) -> Result<Option<Digest>, VerifyError> {
    let Some(spec) = spec else { return Ok(None) };
    let failed = |e: mongodb::error::Error| pair.failed(on, format!("reading {}", spec.ns()), &e);
    let digest = match check {
        DocumentCheck::Digest => super::digest::digest_collection(
            &on.client,
            &spec.db,
            &spec.name,
            progress.map(|p| &p.hashed_documents),
        )
        .await
        .map_err(failed)?,
        DocumentCheck::Skip => return Ok(None),
        DocumentCheck::Count => {
            let count = on
                .client
                .database(&spec.db)
                .collection::<RawDocumentBuf>(&spec.name)
                .estimated_document_count()
                .await
                .map_err(failed)?;
            Digest {
                count,
                ..Digest::new()
            }
        }
    };
    if let Some(p) = progress {
        p.scanned_namespaces
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(Some(digest))
}

async fn indexes(
    pair: &Pair<'_>,
    on: &Cluster,
    spec: Option<&CollSpec>,
) -> Result<Vec<Document>, VerifyError> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    catalog::list_indexes(&on.client, &spec.db, &spec.name)
        .await
        .map_err(|e| pair.failed(on, format!("listing the indexes of {}", spec.ns()), &e))
}

/// How many `_id`s one lookup asks for: some servers' `$in` costs grow with the square of
/// its values (see the engine's verifier), `mongod`'s do not.
const LOOKUP_BATCH: usize = 100;

/// The differing documents found without relying on the `_id` order (see [`LookupWalk`]).
async fn lookups(
    pair: &Pair<'_>,
    src: (&CollSpec, &[Document]),
    dst: (&CollSpec, &[Document]),
    limit: usize,
) -> Result<WalkResult, VerifyError> {
    let mut w = LookupWalk::new(limit);
    let mut entries = sorted_by_id(pair, pair.source, src.0, src.1);
    while !w.done() {
        let batch = next_batch(&mut entries).await?;
        if batch.is_empty() {
            break;
        }
        let there = by_ids(pair, pair.destination, dst.0, &batch).await?;
        w.source_batch(batch, &there);
    }
    let mut entries = sorted_by_id(pair, pair.destination, dst.0, dst.1);
    while !w.done() {
        let batch = next_batch(&mut entries).await?;
        if batch.is_empty() {
            break;
        }
        let there = by_ids(pair, pair.source, src.0, &batch).await?;
        w.destination_batch(batch, &there);
    }
    Ok(w.finish())
}

async fn next_batch(
    entries: &mut (impl futures::Stream<Item = Result<Entry, VerifyError>> + Unpin),
) -> Result<Vec<Entry>, VerifyError> {
    let mut batch = Vec::with_capacity(LOOKUP_BATCH);
    while batch.len() < LOOKUP_BATCH {
        match entries.try_next().await? {
            Some(e) => batch.push(e),
            None => break,
        }
    }
    Ok(batch)
}

/// The documents of `spec` on `on` whose `_id` is one of `batch`'s.
async fn by_ids(
    pair: &Pair<'_>,
    on: &Cluster,
    spec: &CollSpec,
    batch: &[Entry],
) -> Result<Vec<Entry>, VerifyError> {
    let ids: Vec<Bson> = batch
        .iter()
        .map(|e| Bson::try_from(e.id.clone()).unwrap_or(Bson::Null))
        .collect();
    let what = || format!("looking up documents of {} by _id", spec.ns());
    on.client
        .database(&spec.db)
        .collection::<RawDocumentBuf>(&spec.name)
        .find(doc! { "_id": { "$in": ids } })
        .await
        .map_err(|e| pair.failed(on, what(), &e))?
        .map_ok(|d| Entry::of(&d))
        .try_collect()
        .await
        .map_err(|e| pair.failed(on, what(), &e))
}

/// Reads the documents listed as `differentContent` again on both sides, by `_id`, and records
/// what differs in each. A document changed since the walk may now be equal (nothing recorded);
/// an `_id` several documents share (time series) is not described.
async fn describe(
    pair: &Pair<'_>,
    src: &CollSpec,
    dst: &CollSpec,
    mismatches: &mut [Mismatch],
) -> Result<(), VerifyError> {
    let ids: Vec<Bson> = mismatches
        .iter()
        .filter(|m| m.kind == MismatchKind::DifferentContent)
        .filter_map(|m| Bson::try_from(m.id.clone()).ok())
        .collect();
    for chunk in ids.chunks(LOOKUP_BATCH) {
        let (a, b) = tokio::try_join!(
            documents_by_id(pair, pair.source, src, chunk),
            documents_by_id(pair, pair.destination, dst, chunk),
        )?;
        for m in mismatches
            .iter_mut()
            .filter(|m| m.kind == MismatchKind::DifferentContent)
        {
            let Some(key) = Bson::try_from(m.id.clone())
                .ok()
                .and_then(|id| RawBson::try_from(id).ok())
                .map(|id| id_key(&id))
            else {
                continue;
            };
            if let (Some([x]), Some([y])) = (
                a.get(&key).map(Vec::as_slice),
                b.get(&key).map(Vec::as_slice),
            ) {
                m.set_diff(&diff::diff(x, y));
            }
        }
    }
    Ok(())
}

/// The documents of `spec` on `on` with these `_id`s, by `_id` bytes.
async fn documents_by_id(
    pair: &Pair<'_>,
    on: &Cluster,
    spec: &CollSpec,
    ids: &[Bson],
) -> Result<HashMap<Vec<u8>, Vec<RawDocumentBuf>>, VerifyError> {
    let what = || format!("reading differing documents of {}", spec.ns());
    let docs: Vec<RawDocumentBuf> = on
        .client
        .database(&spec.db)
        .collection::<RawDocumentBuf>(&spec.name)
        .find(doc! { "_id": { "$in": ids.to_vec() } })
        .await
        .map_err(|e| pair.failed(on, what(), &e))?
        .try_collect()
        .await
        .map_err(|e| pair.failed(on, what(), &e))?;
    let mut out: HashMap<Vec<u8>, Vec<RawDocumentBuf>> = HashMap::new();
    for d in docs {
        out.entry(id_key(&Entry::of(&d).id)).or_default().push(d);
    }
    Ok(out)
}

/// The name of the index on `{_id: 1}`, if the collection has one (time series collections do
/// not).
fn id_index(indexes: &[Document]) -> Option<String> {
    indexes.iter().find_map(|ix| {
        let key = ix.get_document("key").ok()?;
        let ascending = matches!(key.get("_id")?, Bson::Int32(1) | Bson::Int64(1))
            || key.get_f64("_id") == Ok(1.0);
        (key.len() == 1 && ascending)
            .then(|| ix.get_str("name").ok().map(str::to_string))
            .flatten()
    })
}

/// The collection as `(_id, hash)` entries in `_id` order, read through the `_id` index when
/// there is one (no in-memory sort on the server).
fn sorted_by_id<'a>(
    pair: &'a Pair<'_>,
    on: &'a Cluster,
    spec: &'a CollSpec,
    indexes: &[Document],
) -> impl futures::Stream<Item = Result<Entry, VerifyError>> + Unpin + 'a {
    let hint = id_index(indexes);
    let what = move || format!("reading {} in _id order", spec.ns());
    let open = async move {
        let coll = on
            .client
            .database(&spec.db)
            .collection::<RawDocumentBuf>(&spec.name);
        let find = coll.find(doc! {}).sort(doc! { "_id": 1 });
        let find = match hint {
            Some(name) => find.hint(mongodb::options::Hint::Name(name)),
            None => find.allow_disk_use(true),
        };
        let cursor = find.await.map_err(|e| pair.failed(on, what(), &e))?;
        Ok::<_, VerifyError>(
            cursor
                .map_ok(|d: RawDocumentBuf| Entry::of(&d))
                .map_err(move |e| pair.failed(on, what(), &e)),
        )
    };
    Box::pin(open.try_flatten_stream())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_index_is_found_by_key_not_name() {
        let ixs = [
            doc! { "key": { "a": 1 }, "name": "a_1" },
            doc! { "key": { "_id": 1 }, "name": "primary" },
        ];
        assert_eq!(id_index(&ixs).as_deref(), Some("primary"));
        assert_eq!(
            id_index(&[doc! { "key": { "_id": -1 }, "name": "x" }]),
            None
        );
        assert_eq!(
            id_index(&[doc! { "key": { "_id": 1, "a": 1 }, "name": "x" }]),
            None
        );
    }
}
