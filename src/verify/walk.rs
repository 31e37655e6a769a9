//! The merge walk that names the documents behind a digest difference.
//!
//! Both sides are read sorted by `_id` and advanced together, one `(_id, hash)` at a time, so
//! memory stays at one entry per side (plus the rare run of documents sharing an `_id`, which
//! only time series collections have). The walk stops as soon as it has found one mismatch
//! more than asked for, which is how it knows to say there are more.
//!
//! A merge is only right if both inputs are sorted by the order it compares with. The walk
//! compares with MongoDB's order ([`order::compare`]); a server that sorts some `_id`s
//! otherwise (the SecantusDB test server orders embedded documents by their bytes) is caught
//! by checking each side's order as it is read, and the walk then gives up rather than report
//! documents that exist on both sides as missing and extra. [`LookupWalk`] is the order-free
//! way to finish the job.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};

use bson::{Bson, RawBson, RawDocument, RawDocumentBuf};
use futures::{Stream, StreamExt};

use super::digest::hash_document;
use super::order;
use super::report::{Mismatch, MismatchKind};

/// One document as the walk sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: RawBson,
    pub hash: u64,
}

impl Entry {
    pub fn of(doc: &RawDocument) -> Self {
        let id = match doc.get("_id") {
            Ok(Some(id)) => id.to_raw_bson(),
            _ => RawBson::Null,
        };
        Self {
            id,
            hash: hash_document(doc),
        }
    }
}

/// What the walk found: at most `limit` mismatches, and whether it stopped with more left.
#[derive(Debug, Default)]
pub struct WalkResult {
    pub mismatches: Vec<Mismatch>,
    pub more: bool,
}

struct Side<S> {
    stream: S,
    peeked: Option<Entry>,
    /// The `_id` of the entry read before `peeked`, to check the stream's order.
    last: Option<RawBson>,
    out_of_order: bool,
}

impl<S> Side<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            peeked: None,
            last: None,
            out_of_order: false,
        }
    }
}

impl<S, E> Side<S>
where
    S: Stream<Item = Result<Entry, E>> + Unpin,
{
    async fn peek(&mut self) -> Result<Option<&Entry>, E> {
        if self.peeked.is_none() {
            self.peeked = self.stream.next().await.transpose()?;
            if let Some(e) = &self.peeked {
                if let Some(last) = &self.last {
                    if order::compare(last.as_raw_bson_ref(), e.id.as_raw_bson_ref())
                        == Ordering::Greater
                    {
                        self.out_of_order = true;
                    }
                }
                self.last = Some(e.id.clone());
            }
        }
        Ok(self.peeked.as_ref())
    }

    async fn take(&mut self) -> Result<Option<Entry>, E> {
        self.peek().await?;
        Ok(self.peeked.take())
    }

    /// Every entry whose `_id` sorts equal to `id` (one, except in time series collections).
    async fn run(&mut self, id: &RawBson) -> Result<Vec<Entry>, E> {
        let mut out = Vec::new();
        while let Some(e) = self.peek().await? {
            if order::compare(e.id.as_raw_bson_ref(), id.as_raw_bson_ref()) != Ordering::Equal {
                break;
            }
            out.extend(self.take().await?);
        }
        Ok(out)
    }
}

/// Walks `source` and `destination`, both sorted by `_id` by the server, and returns the first
/// differing documents; `None` when a side turned out not to be in MongoDB's `_id` order, so
/// that a merge cannot be trusted.
pub async fn walk<S, D, E>(source: S, destination: D, limit: usize) -> Result<Option<WalkResult>, E>
where
    S: Stream<Item = Result<Entry, E>> + Unpin,
    D: Stream<Item = Result<Entry, E>> + Unpin,
{
    let mut src = Side::new(source);
    let mut dst = Side::new(destination);
    let mut found: Vec<Mismatch> = Vec::new();
    while found.len() <= limit {
        if src.out_of_order || dst.out_of_order {
            return Ok(None);
        }
        let ord = match (src.peek().await?, dst.peek().await?) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => order::compare(a.id.as_raw_bson_ref(), b.id.as_raw_bson_ref()),
        };
        match ord {
            Ordering::Less => {
                if let Some(e) = src.take().await? {
                    found.push(mismatch(e.id, MismatchKind::MissingOnDestination));
                }
            }
            Ordering::Greater => {
                if let Some(e) = dst.take().await? {
                    found.push(mismatch(e.id, MismatchKind::ExtraOnDestination));
                }
            }
            Ordering::Equal => {
                let Some(id) = src.peek().await?.map(|e| e.id.clone()) else {
                    break;
                };
                let a = src.run(&id).await?;
                let b = dst.run(&id).await?;
                found.extend(diff_runs(a, b));
            }
        }
    }
    if src.out_of_order || dst.out_of_order {
        return Ok(None);
    }
    Ok(Some(finish(found, limit)))
}

fn finish(mut found: Vec<Mismatch>, limit: usize) -> WalkResult {
    let more = found.len() > limit;
    found.truncate(limit);
    WalkResult {
        mismatches: found,
        more,
    }
}

/// An `_id` as bytes, for exact (type- and field-order-sensitive) matching.
pub fn id_key(id: &RawBson) -> Vec<u8> {
    let mut d = RawDocumentBuf::new();
    d.append("", id.clone());
    d.into_bytes()
}

/// The order-free way to name differing documents: every source document is looked up on the
/// destination by `_id`, a batch at a time, then every destination `_id` on the source. It
/// reads each side twice where the merge walk reads it once, and matches `_id`s by their bytes
/// (an `_id` of `1` on one side and `NumberLong(1)` on the other is reported as missing and
/// extra rather than as one changed document).
pub struct LookupWalk {
    found: Vec<Mismatch>,
    limit: usize,
}

impl LookupWalk {
    pub fn new(limit: usize) -> Self {
        Self {
            found: Vec::new(),
            limit,
        }
    }

    /// Whether enough has been found to stop reading.
    pub fn done(&self) -> bool {
        self.found.len() > self.limit
    }

    /// A batch of source entries against the destination documents found under their `_id`s.
    pub fn source_batch(&mut self, batch: Vec<Entry>, on_destination: &[Entry]) {
        let mut there: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
        for e in on_destination {
            there.entry(id_key(&e.id)).or_default().push(e.hash);
        }
        for e in batch {
            let kind = match there.get_mut(&id_key(&e.id)) {
                Some(hashes) if hashes.is_empty() => MismatchKind::MissingOnDestination,
                Some(hashes) => match hashes.iter().position(|h| *h == e.hash) {
                    Some(at) => {
                        hashes.swap_remove(at);
                        continue;
                    }
                    None => {
                        hashes.pop();
                        MismatchKind::DifferentContent
                    }
                },
                None => MismatchKind::MissingOnDestination,
            };
            self.found.push(mismatch(e.id, kind));
        }
    }

    /// A batch of destination `_id`s against the source documents found under them.
    pub fn destination_batch(&mut self, batch: Vec<Entry>, on_source: &[Entry]) {
        let there: HashSet<Vec<u8>> = on_source.iter().map(|e| id_key(&e.id)).collect();
        for e in batch {
            if !there.contains(&id_key(&e.id)) {
                self.found
                    .push(mismatch(e.id, MismatchKind::ExtraOnDestination));
            }
        }
    }

    pub fn finish(self) -> WalkResult {
        finish(self.found, self.limit)
    }
}

/// Matches documents with equal `_id`s by hash; what is left on both sides is one document
/// changed (reported once, under the source's `_id`), the rest missing or extra.
fn diff_runs(mut a: Vec<Entry>, mut b: Vec<Entry>) -> Vec<Mismatch> {
    a.retain(|x| match b.iter().position(|y| y.hash == x.hash) {
        Some(at) => {
            b.swap_remove(at);
            false
        }
        None => true,
    });
    let changed = a.len().min(b.len());
    let mut out = Vec::new();
    let mut b = b.into_iter().skip(changed);
    for (i, e) in a.into_iter().enumerate() {
        let kind = if i < changed {
            MismatchKind::DifferentContent
        } else {
            MismatchKind::MissingOnDestination
        };
        out.push(mismatch(e.id, kind));
    }
    out.extend(
        b.by_ref()
            .map(|e| mismatch(e.id, MismatchKind::ExtraOnDestination)),
    );
    out
}

fn mismatch(id: RawBson, kind: MismatchKind) -> Mismatch {
    let id = Bson::try_from(id).unwrap_or(Bson::Null);
    Mismatch::new(id.into_canonical_extjson(), kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;
    use futures::stream;

    fn entries(docs: &[RawDocumentBuf]) -> impl Stream<Item = Result<Entry, ()>> + Unpin {
        stream::iter(docs.iter().map(|d| Ok(Entry::of(d))).collect::<Vec<_>>())
    }

    async fn run(a: &[RawDocumentBuf], b: &[RawDocumentBuf], limit: usize) -> WalkResult {
        walk(entries(a), entries(b), limit)
            .await
            .unwrap()
            .expect("inputs in order")
    }

    fn kinds(r: &WalkResult) -> Vec<(String, MismatchKind)> {
        r.mismatches
            .iter()
            .map(|m| (m.id.to_string(), m.kind))
            .collect()
    }

    #[tokio::test]
    async fn classifies_missing_extra_and_changed() {
        let a = [
            rawdoc! { "_id": 1, "v": 1 },
            rawdoc! { "_id": 2, "v": 2 },
            rawdoc! { "_id": 3, "v": 3 },
            rawdoc! { "_id": "s", "v": 4 },
        ];
        let b = [
            rawdoc! { "_id": 1, "v": 1 },
            rawdoc! { "_id": 3, "v": 30 },
            rawdoc! { "_id": 4, "v": 4 },
            rawdoc! { "_id": "s", "v": 4 },
        ];
        let r = run(&a, &b, 10).await;
        assert_eq!(
            kinds(&r),
            vec![
                (
                    r#"{"$numberInt":"2"}"#.into(),
                    MismatchKind::MissingOnDestination
                ),
                (
                    r#"{"$numberInt":"3"}"#.into(),
                    MismatchKind::DifferentContent
                ),
                (
                    r#"{"$numberInt":"4"}"#.into(),
                    MismatchKind::ExtraOnDestination
                ),
            ]
        );
        assert!(!r.more);
        assert!(run(&a, &a, 10).await.mismatches.is_empty());
    }

    #[tokio::test]
    async fn stops_at_the_limit_and_says_there_is_more() {
        let a: Vec<_> = (0..50).map(|i| rawdoc! { "_id": i }).collect();
        let r = run(&a, &[], 3).await;
        assert_eq!(r.mismatches.len(), 3);
        assert!(r.more);
        let r = run(&a[..3], &[], 3).await;
        assert_eq!(r.mismatches.len(), 3);
        assert!(!r.more);
    }

    #[tokio::test]
    async fn same_value_other_numeric_type_is_a_content_difference() {
        let r = run(&[rawdoc! { "_id": 7 }], &[rawdoc! { "_id": 7i64 }], 10).await;
        assert_eq!(
            kinds(&r),
            vec![(
                r#"{"$numberInt":"7"}"#.into(),
                MismatchKind::DifferentContent
            )]
        );
    }

    #[tokio::test]
    async fn runs_of_one_id_compare_as_multisets() {
        let m = |v: i32| rawdoc! { "_id": 1, "v": v };
        let r = run(&[m(1), m(2), m(3)], &[m(3), m(1)], 10).await;
        assert_eq!(kinds(&r).len(), 1);
        assert_eq!(r.mismatches[0].kind, MismatchKind::MissingOnDestination);
        let r = run(&[m(1), m(2)], &[m(2), m(9), m(8)], 10).await;
        let k: Vec<_> = r.mismatches.iter().map(|m| m.kind).collect();
        assert_eq!(
            k,
            vec![
                MismatchKind::DifferentContent,
                MismatchKind::ExtraOnDestination
            ]
        );
    }

    #[tokio::test]
    async fn a_side_out_of_mongodb_order_makes_the_walk_give_up() {
        // Embedded documents ordered by bytes, as one test server does: {b: "x"} first.
        let a = [
            rawdoc! { "_id": { "b": "x" } },
            rawdoc! { "_id": { "a": 1 } },
        ];
        let r = walk(entries(&a), entries(&a), 10).await.unwrap();
        assert!(r.is_none());
        let b = [
            rawdoc! { "_id": { "a": 1 } },
            rawdoc! { "_id": { "b": "x" } },
        ];
        let r = walk(entries(&b), entries(&b), 10).await.unwrap();
        assert!(r.unwrap().mismatches.is_empty());
    }

    #[test]
    fn lookups_match_by_exact_id() {
        let e = |d: RawDocumentBuf| Entry::of(&d);
        let mut w = LookupWalk::new(10);
        w.source_batch(
            vec![
                e(rawdoc! { "_id": 1, "v": 1 }),
                e(rawdoc! { "_id": 2, "v": 2 }),
                e(rawdoc! { "_id": { "b": 1, "a": 2 } }),
                e(rawdoc! { "_id": 4 }),
            ],
            &[
                e(rawdoc! { "_id": 1, "v": 1 }),
                e(rawdoc! { "_id": 2, "v": 20 }),
                e(rawdoc! { "_id": { "a": 2, "b": 1 } }),
            ],
        );
        w.destination_batch(
            vec![
                e(rawdoc! { "_id": 1 }),
                e(rawdoc! { "_id": { "a": 2, "b": 1 } }),
            ],
            &[e(rawdoc! { "_id": 1 })],
        );
        assert!(!w.done());
        let r = w.finish();
        let got: Vec<_> = r
            .mismatches
            .iter()
            .map(|m| (m.id.to_string(), m.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    r#"{"$numberInt":"2"}"#.to_string(),
                    MismatchKind::DifferentContent
                ),
                (
                    r#"{"b":{"$numberInt":"1"},"a":{"$numberInt":"2"}}"#.to_string(),
                    MismatchKind::MissingOnDestination
                ),
                (
                    r#"{"$numberInt":"4"}"#.to_string(),
                    MismatchKind::MissingOnDestination
                ),
                (
                    r#"{"a":{"$numberInt":"2"},"b":{"$numberInt":"1"}}"#.to_string(),
                    MismatchKind::ExtraOnDestination
                ),
            ]
        );
    }
}
