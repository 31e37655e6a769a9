//! Comparing queued documents again, by `_id`, on both sides.
//!
//! A document that differs is compared again once the change applier has passed the time of
//! this comparison. It is a confirmed difference when it still differs then although the
//! source document stayed the same: the applier had every change to it and the destination
//! still disagrees, so something other than the sync wrote there, or the sync lost a write.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bson::{doc, Bson, DateTime, RawBson, RawDocumentBuf, Timestamp};
use futures::{StreamExt, TryStreamExt};

use crate::engine::sync::embedded_verifier::store::{key, Recheck};
use crate::engine::sync::embedded_verifier::Clusters;
use crate::verify::diff;
use crate::verify::walk::{id_key, Entry};
use crate::verify::{Cluster, MismatchKind, VerifyError};

/// A confirmed difference is compared again at most this often (it may heal: the source
/// changes the document, or someone repairs the destination).
const CONFIRMED_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct Outcome {
    /// Keys of documents found equal (or absent on both sides).
    pub equal: Vec<bson::Document>,
    /// The others, updated.
    pub different: Vec<Recheck>,
    /// Documents read, per side.
    pub read: [u64; 2],
    /// The differences this comparison confirmed (they were not before), described.
    pub newly_confirmed: Vec<String>,
}

/// Compares `entries` on both sides. `probe` is the source's time just before the reads.
pub async fn compare(
    clusters: &Clusters,
    entries: Vec<Recheck>,
    probe: Timestamp,
) -> Result<Outcome, VerifyError> {
    let mut by_ns: BTreeMap<String, Vec<Recheck>> = BTreeMap::new();
    for e in entries {
        by_ns.entry(e.key.ns.clone()).or_default().push(e);
    }
    let mut out = Outcome::default();
    let mut newly_confirmed = Vec::new();
    for (ns, entries) in by_ns {
        let ids: Vec<Bson> = entries.iter().map(|e| e.key.id.clone()).collect();
        let (src, dst) = tokio::try_join!(
            lookup(&clusters.source, &ns, &ids),
            lookup(&clusters.destination, &ns, &ids)
        )?;
        out.read[0] += src.len() as u64;
        out.read[1] += dst.len() as u64;
        for e in entries {
            let k = RawBson::try_from(e.key.id.clone())
                .map(|id| id_key(&id))
                .unwrap_or_default();
            let was_confirmed = e.confirmed;
            match judge(e, src.get(&k).copied(), dst.get(&k).copied(), probe) {
                Verdict::Equal(key) => out.equal.push(key),
                Verdict::Different(entry) => {
                    if entry.confirmed && !was_confirmed {
                        newly_confirmed.push(out.different.len());
                    }
                    out.different.push(*entry);
                }
            }
        }
    }
    describe_contents(clusters, &mut out.different).await?;
    out.newly_confirmed = newly_confirmed
        .into_iter()
        .map(|i| describe(&out.different[i]))
        .collect();
    Ok(out)
}

/// The most documents with different content one comparison reads again to say what differs
/// in them (confirmed differences first: they are the ones shown).
const DESCRIBED: usize = 100;

/// Reads the documents with different content again on both sides and records what differs
/// in each (a document changed in between may compare equal now: nothing is recorded then).
async fn describe_contents(
    clusters: &Clusters,
    entries: &mut [Recheck],
) -> Result<(), VerifyError> {
    let content = MismatchKind::DifferentContent.as_str();
    let mut todo: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].kind.as_deref() == Some(content))
        .collect();
    todo.sort_by_key(|&i| !entries[i].confirmed);
    todo.truncate(DESCRIBED);
    let mut by_ns: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for i in todo {
        by_ns.entry(entries[i].key.ns.clone()).or_default().push(i);
    }
    for (ns, at) in by_ns {
        let ids: Vec<Bson> = at.iter().map(|&i| entries[i].key.id.clone()).collect();
        let (src, dst) = tokio::try_join!(
            documents(&clusters.source, &ns, &ids),
            documents(&clusters.destination, &ns, &ids)
        )?;
        for i in at {
            let Ok(id) = RawBson::try_from(entries[i].key.id.clone()) else {
                continue;
            };
            let k = id_key(&id);
            if let (Some(a), Some(b)) = (src.get(&k), dst.get(&k)) {
                let d = diff::diff(a, b);
                entries[i].detail = (!d.is_empty()).then(|| d.to_string());
            }
        }
    }
    Ok(())
}

/// The documents of `ns` with these `_id`s, by `_id` bytes.
async fn documents(
    on: &Cluster,
    ns: &str,
    ids: &[Bson],
) -> Result<HashMap<Vec<u8>, RawDocumentBuf>, VerifyError> {
    let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
    let coll = on.client().database(db).collection::<RawDocumentBuf>(coll);
    let docs = find_by_ids(coll, ids.to_vec())
        .await
        .map_err(|e| on.failed(format!("reading differing documents of {ns}"), &e))?;
    Ok(docs
        .into_iter()
        .map(|d| (id_key(&Entry::of(&d).id), d))
        .collect())
}

#[derive(Debug)]
enum Verdict {
    /// Both sides agree: the key to drop from the queue.
    Equal(bson::Document),
    /// The entry, updated for its next comparison.
    Different(Box<Recheck>),
}

/// One comparison of a queued document, given its hash on each side (`None`: absent).
fn judge(mut e: Recheck, s: Option<u64>, d: Option<u64>, probe: Timestamp) -> Verdict {
    if s == d {
        return Verdict::Equal(key(&e.key.ns, &e.key.id));
    }
    let source_hash = s.map(|h| h as i64);
    // The entry is due only once the applier has passed the previous comparison: if the
    // source document is the same as then, the destination has had every change to it.
    let confirmed = e.attempts >= 1 && e.source_hash == source_hash;
    let kind = match (s, d) {
        (Some(_), None) => MismatchKind::MissingOnDestination,
        (None, Some(_)) => MismatchKind::ExtraOnDestination,
        _ => MismatchKind::DifferentContent,
    };
    e.attempts += 1;
    e.source_hash = source_hash;
    e.confirmed = confirmed;
    e.kind = Some(kind.as_str().to_string());
    // Said again by `describe_contents`, for a document with different content.
    e.detail = None;
    e.due = probe;
    e.after = if confirmed {
        DateTime::from_millis(
            DateTime::now().timestamp_millis() + CONFIRMED_BACKOFF.as_millis() as i64,
        )
    } else {
        DateTime::from_millis(0)
    };
    Verdict::Different(Box::new(e))
}

/// `_id`s per lookup. An `$in` costs `mongod` one index probe per value; some servers
/// compare every value with every other (measured on the test server: 100 values 27 ms, 1,000
/// values 1.7 s), so lookups stay small and run a few at a time.
const LOOKUP_IDS: usize = 100;
const LOOKUPS_AT_ONCE: usize = 4;

/// The hashes of the documents of `ns` with these `_id`s, by `_id` bytes.
async fn lookup(
    on: &Cluster,
    ns: &str,
    ids: &[Bson],
) -> Result<HashMap<Vec<u8>, u64>, VerifyError> {
    let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
    let coll = on.client().database(db).collection::<RawDocumentBuf>(coll);
    let what = || format!("comparing documents of {ns} again");
    let lookups: Vec<_> = ids
        .chunks(LOOKUP_IDS)
        .map(|chunk| find_by_ids(coll.clone(), chunk.to_vec()))
        .collect();
    let mut out = HashMap::with_capacity(ids.len());
    let mut results = futures::stream::iter(lookups).buffer_unordered(LOOKUPS_AT_ONCE);
    while let Some(docs) = results.next().await {
        for d in docs.map_err(|e| on.failed(what(), &e))? {
            let e = Entry::of(&d);
            out.insert(id_key(&e.id), e.hash);
        }
    }
    Ok(out)
}

async fn find_by_ids(
    coll: mongodb::Collection<RawDocumentBuf>,
    ids: Vec<Bson>,
) -> mongodb::error::Result<Vec<RawDocumentBuf>> {
    coll.find(doc! { "_id": { "$in": ids } })
        .await?
        .try_collect()
        .await
}

/// One sentence naming a confirmed difference.
pub fn describe(r: &Recheck) -> String {
    let id = r.key.id.clone().into_relaxed_extjson().to_string();
    let detail = r
        .detail
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    format!(
        "{}: _id {} {}{detail}",
        r.key.ns,
        id,
        r.kind.as_deref().unwrap_or("differs")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sync::embedded_verifier::store::RecheckKey;

    fn queued() -> Recheck {
        Recheck {
            key: RecheckKey {
                ns: "shop.orders".into(),
                id: Bson::Int32(17),
            },
            due: Timestamp {
                time: 1,
                increment: 0,
            },
            after: DateTime::from_millis(0),
            attempts: 0,
            source_hash: None,
            confirmed: false,
            kind: None,
            detail: None,
        }
    }

    fn different(v: Verdict) -> Recheck {
        match v {
            Verdict::Different(e) => *e,
            Verdict::Equal(k) => panic!("expected a difference, got equal {k}"),
        }
    }

    #[test]
    fn a_difference_is_confirmed_only_when_it_outlasts_an_unchanged_source_document() {
        let t = |time| Timestamp { time, increment: 0 };
        // Equal (or absent on both sides): dropped from the queue.
        assert!(matches!(
            judge(queued(), Some(5), Some(5), t(2)),
            Verdict::Equal(_)
        ));
        assert!(matches!(
            judge(queued(), None, None, t(2)),
            Verdict::Equal(_)
        ));
        // First sighting: not confirmed, due again once the applier passes this read.
        let first = different(judge(queued(), Some(5), Some(6), t(2)));
        assert!(!first.confirmed);
        assert_eq!((first.attempts, first.due), (1, t(2)));
        assert_eq!(first.kind.as_deref(), Some("different content"));
        // The source changed in between: the applier may not have it yet.
        let moved = different(judge(first.clone(), Some(7), Some(6), t(3)));
        assert!(!moved.confirmed);
        // Same source document, still different: confirmed, and backed off.
        let confirmed = different(judge(first, Some(5), Some(6), t(3)));
        assert!(confirmed.confirmed);
        assert!(confirmed.after > DateTime::now());
        assert_eq!(
            describe(&confirmed),
            "shop.orders: _id 17 different content"
        );
        let described = Recheck {
            detail: Some("fields: name".into()),
            ..confirmed.clone()
        };
        assert_eq!(
            describe(&described),
            "shop.orders: _id 17 different content (fields: name)"
        );
        // A new comparison says again what differs.
        assert_eq!(
            different(judge(described, Some(5), Some(6), t(4))).detail,
            None
        );
        // Kinds.
        let missing = different(judge(queued(), Some(5), None, t(2)));
        assert_eq!(missing.kind.as_deref(), Some("missing on destination"));
        let extra = different(judge(queued(), None, Some(5), t(2)));
        assert_eq!(extra.kind.as_deref(), Some("extra on destination"));
    }
}
