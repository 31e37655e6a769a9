//! The verifier's state on the destination's metadata database, so that it resumes after a
//! restart instead of starting over: where each side's change stream stands, which
//! namespaces had their initial pass, and the documents waiting to be compared again.
//!
//! The queue lives on disk, not in memory: however many documents change or differ, the
//! verifier holds one batch of them at a time.

use bson::{doc, Bson, DateTime, Document, Timestamp};
use futures::TryStreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::{Client, Collection};
use serde::{Deserialize, Serialize};

use crate::contract::filter::METADATA_DB;

const STATE_ID: &str = "state";

/// Where one side's change stream stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamPos {
    /// The side's time when the verifier started: the stream's start without a token.
    pub start_at: Timestamp,
    pub token: Option<ResumeToken>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifierState {
    #[serde(rename = "_id")]
    id: String,
    /// The sync run this state belongs to (the migration's start time; a reversal starts a
    /// new run).
    pub run: Timestamp,
    pub source: StreamPos,
    pub destination: StreamPos,
    /// Namespaces whose initial pass is done. Kept in a collection of their own, one
    /// document each (see [`VerifierStore::mark_scanned`]); read into this field on load.
    /// Older engines wrote them here, and what they wrote is still read.
    #[serde(default)]
    pub scanned: Vec<String>,
}

impl VerifierState {
    pub fn new(run: Timestamp, source_at: Timestamp, destination_at: Timestamp) -> Self {
        Self {
            id: STATE_ID.into(),
            run,
            source: StreamPos {
                start_at: source_at,
                token: None,
            },
            destination: StreamPos {
                start_at: destination_at,
                token: None,
            },
            scanned: Vec::new(),
        }
    }

    /// Whether the source stream reads from the copy's start (see `StreamsFrom`): state
    /// written before it did, or started over after the oplog moved on, reads from later.
    pub fn source_since_copy(&self) -> bool {
        self.source.start_at <= self.run
    }
}

/// Which side a stream or a read is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn field(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// The key of a queued document: `{ns, id}`, in that field order (an embedded document
/// matches by its bytes).
pub fn key(ns: &str, id: &Bson) -> Document {
    doc! { "ns": ns, "id": id.clone() }
}

/// A queued document's `_id` on disk: its [`key`]'s bytes as binary data. A scalar, because
/// some servers find a document-valued `_id` by reading the whole collection: on the test
/// server one lookup in 4,000 entries took 107 ms, a checkpoint's 1,000 upserts 67 s and its
/// deletion of 1,000 keys 32 s, and the verifier of a sync under steady writes stood still.
pub fn stored_id(key: &Document) -> Bson {
    let mut bytes = Vec::new();
    // Writing a document to memory cannot fail.
    let _ = key.to_writer(&mut bytes);
    Bson::Binary(bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes,
    })
}

/// Serde for [`Recheck::key`]: written as [`stored_id`], read in that form or in the
/// `{ns, id}` document older engines wrote.
mod stored_key {
    use super::{key, stored_id, RecheckKey};
    use bson::{Bson, Document};
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(k: &RecheckKey, s: S) -> Result<S::Ok, S::Error> {
        stored_id(&key(&k.ns, &k.id)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<RecheckKey, D::Error> {
        let doc = match Bson::deserialize(d)? {
            Bson::Binary(b) => {
                Document::from_reader(b.bytes.as_slice()).map_err(D::Error::custom)?
            }
            Bson::Document(doc) => doc,
            other => return Err(D::Error::custom(format!("unexpected queue key {other:?}"))),
        };
        match (doc.get_str("ns"), doc.get("id")) {
            (Ok(ns), Some(id)) => Ok(RecheckKey {
                ns: ns.to_string(),
                id: id.clone(),
            }),
            _ => Err(D::Error::custom("a queue key without ns or id")),
        }
    }
}

/// A document waiting to be compared again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recheck {
    #[serde(rename = "_id", with = "stored_key")]
    pub key: RecheckKey,
    /// Compared once the change applier has applied the source up to this time.
    pub due: Timestamp,
    /// Not compared before this wall-clock time (confirmed differences back off).
    #[serde(default = "never")]
    pub after: DateTime,
    /// Consecutive comparisons that found it different.
    #[serde(default)]
    pub attempts: i32,
    /// The source document's hash at the last comparison (`None`: absent).
    #[serde(default)]
    pub source_hash: Option<i64>,
    /// Different on two comparisons between which the source document did not change,
    /// the applier having passed the first.
    #[serde(default)]
    pub confirmed: bool,
    /// What differs (`missingOnDestination`, `extraOnDestination`, `different`).
    #[serde(default)]
    pub kind: Option<String>,
    /// For a document with different content: what differs (field paths and types, never
    /// values; see [`crate::verify::diff`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Not held back: the epoch (some servers refuse dates outside the usual years).
fn never() -> DateTime {
    DateTime::from_millis(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecheckKey {
    pub ns: String,
    pub id: Bson,
}

/// A change or a suspected difference to compare again.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub ns: String,
    pub id: Bson,
    pub due: Timestamp,
    /// The source changed this document: an earlier streak of differences is void.
    pub source_changed: bool,
}

#[derive(Clone)]
pub struct VerifierStore {
    state: Collection<VerifierState>,
    raw_state: Collection<Document>,
    rechecks: Collection<Recheck>,
    raw_rechecks: Collection<Document>,
    scanned: Collection<Document>,
}

impl VerifierStore {
    pub fn new(destination: &Client) -> Self {
        let db = crate::engine::store::database(destination);
        Self {
            state: db.collection("verifier"),
            raw_state: db.collection("verifier"),
            rechecks: db.collection("verifierRechecks"),
            raw_rechecks: db.collection("verifierRechecks"),
            scanned: db.collection("verifierScanned"),
        }
    }

    pub async fn load(&self) -> mongodb::error::Result<Option<VerifierState>> {
        let Some(mut state) = self.state.find_one(doc! { "_id": STATE_ID }).await? else {
            return Ok(None);
        };
        let mut cursor = self.scanned.find(doc! {}).await?;
        while let Some(d) = cursor.try_next().await? {
            if let Ok(ns) = d.get_str("_id") {
                state.scanned.push(ns.to_owned());
            }
        }
        state.scanned.sort();
        state.scanned.dedup();
        Ok(Some(state))
    }

    /// Starts over: a new state, an empty queue.
    pub async fn reset(&self, state: &VerifierState) -> mongodb::error::Result<()> {
        self.rechecks.delete_many(doc! {}).await?;
        self.scanned.delete_many(doc! {}).await?;
        self.state
            .replace_one(doc! { "_id": STATE_ID }, state)
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Where both streams stand; saved after the queue they fed.
    pub async fn save_tokens(
        &self,
        source: Option<&ResumeToken>,
        destination: Option<&ResumeToken>,
    ) -> mongodb::error::Result<()> {
        let mut set = Document::new();
        for (side, token) in [(Side::Source, source), (Side::Destination, destination)] {
            if let Some(t) = token {
                let t = bson::to_bson(t).map_err(mongodb::error::Error::custom)?;
                set.insert(format!("{}.token", side.field()), t);
            }
        }
        if set.is_empty() {
            return Ok(());
        }
        self.raw_state
            .update_one(doc! { "_id": STATE_ID }, doc! { "$set": set })
            .await?;
        Ok(())
    }

    /// Records namespaces as compared: one document each. An `$addToSet` into one array costs
    /// the server a membership test against every namespace already there: at 10,000
    /// collections the initial pass's 40 rounds spent about 180 s of its 184 s in it.
    /// Plain inserts, a namespace recorded before (a round retried after a restart) being a
    /// duplicate key to ignore: on the test server an upsert costs 30 times an insert.
    pub async fn mark_scanned(&self, namespaces: &[String]) -> mongodb::error::Result<()> {
        let db = self.scanned.client().database(METADATA_DB);
        for chunk in namespaces.chunks(1000) {
            let documents: Vec<Document> = chunk.iter().map(|ns| doc! { "_id": ns }).collect();
            write_command(
                &db,
                "insert",
                self.scanned.name(),
                "documents",
                documents,
                &[DUPLICATE_KEY],
            )
            .await?;
        }
        Ok(())
    }

    /// Queues documents for a comparison on disk at once, one round trip for the lot (the
    /// initial pass's findings, saved before a collection is recorded as compared). A
    /// document already queued keeps its place; its due time only moves later.
    pub async fn enqueue(&self, items: &[Queued]) -> mongodb::error::Result<()> {
        for chunk in items.chunks(1000) {
            let updates: Vec<Document> = chunk
                .iter()
                .map(|q| {
                    let u = if q.source_changed {
                        doc! {
                            "$max": { "due": q.due },
                            "$set": { "attempts": 0, "confirmed": false, "after": DateTime::from_millis(0) },
                        }
                    } else {
                        doc! {
                            "$max": { "due": q.due },
                            "$setOnInsert": { "attempts": 0, "confirmed": false, "after": DateTime::from_millis(0) },
                        }
                    };
                    doc! { "q": { "_id": stored_id(&key(&q.ns, &q.id)) }, "u": u, "upsert": true }
                })
                .collect();
            self.bulk_write(self.raw_rechecks.name(), updates).await?;
        }
        Ok(())
    }

    /// Deletes queued documents by [`key`]: one command, whose statements each name at most
    /// [`IN_MAX`] keys (an `$in` costs some servers a comparison of every value with every
    /// other: 1,000 values took 1.2 s on the test server, 100 took 19 ms).
    pub async fn remove(&self, keys: &[Document]) -> mongodb::error::Result<()> {
        let db = self.raw_rechecks.client().database(METADATA_DB);
        for command in keys.chunks(IN_MAX * 100) {
            let deletes: Vec<Document> = command
                .chunks(IN_MAX)
                .map(|chunk| {
                    let ids: Vec<Bson> = chunk.iter().map(stored_id).collect();
                    doc! { "q": { "_id": { "$in": ids } }, "limit": 0 }
                })
                .collect();
            write_command(
                &db,
                "delete",
                self.raw_rechecks.name(),
                "deletes",
                deletes,
                &[],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn update(&self, entries: &[Recheck]) -> mongodb::error::Result<()> {
        for chunk in entries.chunks(1000) {
            let updates: Vec<Document> = chunk
                .iter()
                .map(|r| {
                    let full = bson::to_document(r).unwrap_or_default();
                    doc! { "q": { "_id": stored_id(&key(&r.key.ns, &r.key.id)) }, "u": full, "upsert": true }
                })
                .collect();
            self.bulk_write(self.raw_rechecks.name(), updates).await?;
        }
        Ok(())
    }

    /// The queue as saved at the last checkpoint. Entries an older engine keyed by a
    /// document are saved again under their [`stored_id`] (and the old ones deleted), so
    /// that later checkpoints find them.
    pub async fn load_queue(&self) -> mongodb::error::Result<Vec<Recheck>> {
        let old = self
            .raw_rechecks
            .count_documents(doc! { "_id": { "$type": "object" } })
            .await?;
        let queue: Vec<Recheck> = self.rechecks.find(doc! {}).await?.try_collect().await?;
        if old > 0 {
            // Saved again before the old entries go: a crash in between leaves both, which
            // only compares a document twice.
            self.update(&queue).await?;
            self.raw_rechecks
                .delete_many(doc! { "_id": { "$type": "object" } })
                .await?;
        }
        Ok(queue)
    }

    /// One unordered `update` command for many statements: the driver's `update_one` would
    /// take a round trip each.
    async fn bulk_write(
        &self,
        collection: &str,
        updates: Vec<Document>,
    ) -> mongodb::error::Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let db = self.raw_rechecks.client().database(METADATA_DB);
        write_command(&db, "update", collection, "updates", updates, &[]).await
    }
}

const DUPLICATE_KEY: i32 = 11000;

/// One unordered, majority-journaled write command (`insert`, `update` or `delete` with its
/// statements under `field`), its failed statements an error unless their code is expected.
async fn write_command(
    db: &mongodb::Database,
    command: &str,
    collection: &str,
    field: &str,
    statements: Vec<Document>,
    expected: &[i32],
) -> mongodb::error::Result<()> {
    let reply = db
        .run_command(doc! {
            command: collection,
            field: statements,
            "ordered": false,
            "writeConcern": { "w": "majority", "j": true },
        })
        .await?;
    write_errors(reply, expected)
}

/// The most values one `$in` names (see [`VerifierStore::remove`]).
const IN_MAX: usize = 100;

/// An unordered write command reports failed statements in its reply, not as an error.
/// Errors with a code in `expected` are not failures.
fn write_errors(reply: Document, expected: &[i32]) -> mongodb::error::Result<()> {
    let failed = reply
        .get_array("writeErrors")
        .map(|errors| {
            errors
                .iter()
                .filter_map(Bson::as_document)
                .find(|e| !e.get_i32("code").is_ok_and(|c| expected.contains(&c)))
        })
        .unwrap_or_default();
    match failed {
        Some(e) => Err(mongodb::error::Error::custom(format!(
            "the verifier's state could not be written on the destination: {}",
            e.get_str("errmsg").unwrap_or("write error")
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_are_stored_as_scalars_and_read_in_either_form() {
        let entry = Recheck {
            key: RecheckKey {
                ns: "shop.orders".into(),
                id: Bson::Document(doc! { "b": 1, "a": [1, "x"] }),
            },
            due: Timestamp {
                time: 5,
                increment: 1,
            },
            after: never(),
            attempts: 1,
            source_hash: Some(-3),
            confirmed: false,
            kind: None,
            detail: None,
        };
        let stored = bson::to_document(&entry).unwrap();
        assert!(
            matches!(stored.get("_id"), Some(Bson::Binary(_))),
            "{stored:?}"
        );
        assert_eq!(
            stored.get("_id"),
            Some(&stored_id(&key("shop.orders", &entry.key.id)))
        );
        assert_eq!(
            bson::from_document::<Recheck>(stored.clone()).unwrap(),
            entry
        );
        // As older engines wrote it.
        let mut legacy = stored;
        legacy.insert("_id", key("shop.orders", &entry.key.id));
        assert_eq!(bson::from_document::<Recheck>(legacy).unwrap(), entry);
    }

    #[test]
    fn a_namespace_recorded_twice_is_no_failure_but_any_other_write_error_is() {
        let duplicate =
            doc! { "index": 0, "code": DUPLICATE_KEY, "errmsg": "E11000 duplicate key" };
        let other = doc! { "index": 1, "code": 2, "errmsg": "bad value" };
        assert!(write_errors(doc! { "ok": 1, "n": 3 }, &[]).is_ok());
        assert!(write_errors(
            doc! { "ok": 1, "writeErrors": [duplicate.clone()] },
            &[DUPLICATE_KEY]
        )
        .is_ok());
        let e = write_errors(
            doc! { "ok": 1, "writeErrors": [duplicate.clone(), other] },
            &[DUPLICATE_KEY],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bad value"), "{e}");
        // The queue's upserts expect no duplicate.
        assert!(write_errors(doc! { "ok": 1, "writeErrors": [duplicate] }, &[]).is_err());
    }
}
