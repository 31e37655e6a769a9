//! The engine's state persisted on the destination, in [`METADATA_DB`]: the migration
//! document (phase, options, resume point) and one document per copy partition.

use bson::{doc, Bson, Document, Timestamp};
use futures::TryStreamExt;
use mongodb::change_stream::event::ResumeToken;
use mongodb::options::{Acknowledgment, ReadConcern, WriteConcern};
use mongodb::{Client, Collection};
use serde::{Deserialize, Serialize};

use crate::contract::filter::METADATA_DB;
use crate::contract::options::StartOptions;
use crate::contract::state::{DurableState, Phase};
use crate::verify::digest::Digest;

const MIGRATION_ID: &str = "migration";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationDoc {
    #[serde(rename = "_id")]
    pub id: String,
    /// Random, to tell two migrations apart in logs.
    pub migration_id: String,
    /// The `--id` the engine ran with.
    pub engine_id: String,
    /// Hosts (never credentials) of the clusters given as `--cluster0` and `--cluster1`.
    pub cluster0_hosts: String,
    pub cluster1_hosts: String,
    pub options: StartOptions,
    pub state: DurableState,
    pub phase: Phase,
    /// Source time at which the change stream was opened, before anything was read.
    pub start_ts: Timestamp,
    pub resume_token: Option<ResumeToken>,
    /// Cluster time of the last change event applied (or covered by an empty read).
    pub applied_ts: Option<Timestamp>,
    /// Source time when the copy finished: events up to here are the copy's backlog.
    pub copy_finished_ts: Option<Timestamp>,
    pub commit_ts: Option<Timestamp>,
    #[serde(default)]
    pub can_write: bool,
    #[serde(default)]
    pub estimated_total_bytes: i64,
    /// The write blocking in force (the request, or the default the servers allowed).
    #[serde(default = "no_blocking")]
    pub write_blocking: crate::contract::write_blocking::Mode,
    /// Why the default write blocking could not be used, shown in `/progress` `warnings`.
    #[serde(default)]
    pub write_blocking_note: Option<String>,
    /// How many times the sync has been reversed: after a crash mid-reversal both clusters
    /// hold a migration document, and the higher generation is the current one.
    #[serde(default)]
    pub generation: i64,
    /// Destination time right before its write blocking was released for `canWrite`: every
    /// application write on it comes later, so a reversal replays from here.
    #[serde(default)]
    pub can_write_ts: Option<Timestamp>,
    /// The token of the engine holding the destination's lease (see [`super::lease`]):
    /// updates are conditional on it, so an engine that lost the lease cannot overwrite
    /// its successor's progress.
    #[serde(default)]
    pub lease_token: Option<String>,
    /// Why the sync stopped for good (`/progress` `syncError`): an engine restarted on this
    /// destination reports it and starts no job, instead of failing the same way again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_error: Option<String>,
    /// The index build's outcome, recorded when it ends: a restarted engine reports it in
    /// `indexBuilding` as the one that built them did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_building: Option<crate::contract::progress::IndexBuilding>,
    /// The differences the final verification found, when it stopped the commit: a restarted
    /// engine reports them with the `syncError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_verification: Option<FinalVerification>,
}

fn no_blocking() -> crate::contract::write_blocking::Mode {
    crate::contract::write_blocking::Mode::None
}

/// How a partition's documents are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CopyOrder {
    /// `_id` index order between `lo` (inclusive) and `hi` (exclusive), across BSON types.
    Id,
    /// Natural order, whole collection (capped, time series, natural-order requests).
    Natural,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartitionDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub db: String,
    pub coll: String,
    pub index: i32,
    pub lo: Option<Bson>,
    pub hi: Option<Bson>,
    pub order: CopyOrder,
    /// The source collection's UUID when the copy was planned. A collection found under the
    /// same name with another UUID is another collection (the planned one was renamed or
    /// dropped): its documents reach the destination through change events instead.
    #[serde(default)]
    pub uuid: Option<bson::Binary>,
    /// Time series collections have no unique `_id`: a redo starts from an empty collection.
    #[serde(default)]
    pub recreate: bool,
    pub done: bool,
    #[serde(default)]
    pub copied_bytes: i64,
    #[serde(default)]
    pub copied_docs: i64,
    /// For an unfinished `_id`-ordered partition: the `_id` up to which (inclusive) its
    /// documents are on the destination, `copied_bytes`/`copied_docs` counting them. A
    /// restarted engine carries on from there instead of from the partition's start.
    #[serde(
        default,
        rename = "resumeFrom",
        skip_serializing_if = "Option::is_none"
    )]
    pub resume_from: Option<Bson>,
    /// Its share of the collection's estimated size when planned (0 when not known).
    #[serde(default, rename = "estimatedBytes")]
    pub estimated_bytes: i64,
    /// Its share of the collection's document count when planned (0 when not known: a
    /// collection of a small database, copied whole without being sized).
    #[serde(default, rename = "estimatedDocs")]
    pub estimated_docs: i64,
    /// The digest of the source documents the copy read for this partition (of those up to
    /// `resume_from` while unfinished): the verifier's initial pass compares the destination
    /// with it instead of reading the source again. Absent where it is not known whole (a
    /// partition resumed from a checkpoint recorded without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// See [`MigrationDoc::final_verification`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalVerification {
    pub mismatch_count: i64,
    pub mismatches: Vec<String>,
}

#[derive(Clone)]
pub struct Store {
    migration: Collection<MigrationDoc>,
    raw_migration: Collection<Document>,
    partitions: Collection<PartitionDoc>,
    recopy: Collection<Document>,
    db: mongodb::Database,
    /// Set on the store of the engine that holds the lease: its updates of the migration
    /// document match only while the document names it.
    lease_token: Option<String>,
}

/// The metadata database on the destination, read and written with majority concerns (and
/// journaled writes): what it records must survive a failover.
pub fn database(destination: &Client) -> mongodb::Database {
    destination.database_with_options(
        METADATA_DB,
        mongodb::options::DatabaseOptions::builder()
            .write_concern(
                WriteConcern::builder()
                    .w(Acknowledgment::Majority)
                    .journal(true)
                    .build(),
            )
            .read_concern(ReadConcern::majority())
            .build(),
    )
}

impl Store {
    pub fn new(destination: &Client) -> Self {
        let db = database(destination);
        Self {
            migration: db.collection("migration"),
            raw_migration: db.collection("migration"),
            partitions: db.collection("partitions"),
            recopy: db.collection("recopy"),
            lease_token: None,
            db,
        }
    }

    /// A store whose migration-document updates are conditional on holding the lease.
    pub fn fenced(destination: &Client, token: &str) -> Self {
        Self {
            lease_token: Some(token.to_string()),
            ..Self::new(destination)
        }
    }

    /// Records this engine (just granted the lease) as the one the migration document's
    /// updates must come from.
    pub async fn claim(&self, token: &str) -> mongodb::error::Result<()> {
        self.raw_migration
            .update_one(
                doc! { "_id": MIGRATION_ID },
                doc! { "$set": { "leaseToken": token } },
            )
            .await
            .map(|_| ())
    }

    pub async fn load(&self) -> mongodb::error::Result<Option<MigrationDoc>> {
        self.migration.find_one(doc! { "_id": MIGRATION_ID }).await
    }

    /// Whether the metadata database exists at all (possibly from an aborted start).
    pub async fn exists(client: &Client) -> mongodb::error::Result<bool> {
        let names = client.list_database_names().await?;
        Ok(names.iter().any(|n| n == METADATA_DB))
    }

    pub fn new_migration_doc(
        engine_id: &str,
        hosts: [&str; 2],
        options: StartOptions,
        start_ts: Timestamp,
        resume_token: Option<ResumeToken>,
    ) -> MigrationDoc {
        MigrationDoc {
            id: MIGRATION_ID.into(),
            migration_id: uuid::Uuid::new_v4().to_string(),
            engine_id: engine_id.into(),
            cluster0_hosts: hosts[0].into(),
            cluster1_hosts: hosts[1].into(),
            options,
            state: DurableState::Running,
            phase: Phase::Catalog,
            start_ts,
            resume_token,
            applied_ts: None,
            copy_finished_ts: None,
            commit_ts: None,
            can_write: false,
            estimated_total_bytes: 0,
            write_blocking: crate::contract::write_blocking::Mode::None,
            write_blocking_note: None,
            generation: 0,
            can_write_ts: None,
            lease_token: None,
            sync_error: None,
            index_building: None,
            final_verification: None,
        }
    }

    pub async fn create(&self, doc: &MigrationDoc) -> mongodb::error::Result<()> {
        self.migration.insert_one(doc).await.map(|_| ())
    }

    /// Writes the migration document whole, over any earlier one (a reversal's new
    /// destination may hold one from an earlier direction).
    pub async fn replace(&self, doc: &MigrationDoc) -> mongodb::error::Result<()> {
        self.migration
            .replace_one(doc! { "_id": MIGRATION_ID }, doc)
            .upsert(true)
            .await
            .map(|_| ())
    }

    /// Sets fields of the migration document; from a fenced store, only while the document
    /// names this engine's lease.
    pub async fn set(&self, fields: Document) -> mongodb::error::Result<()> {
        let mut filter = doc! { "_id": MIGRATION_ID };
        if let Some(t) = &self.lease_token {
            filter.insert("leaseToken", t);
        }
        let r = self
            .raw_migration
            .update_one(filter, doc! { "$set": fields })
            .await?;
        if r.matched_count == 0 && self.lease_token.is_some() {
            return Err(mongodb::error::Error::custom(crate::engine::fence::Fenced::Lost(
                "the migration document on the destination now names another engine's lease, so this engine stopped writing; that engine drives the sync now".into(),
            )));
        }
        Ok(())
    }

    /// Records why the sync stopped for good.
    pub async fn set_sync_error(&self, message: &str) -> mongodb::error::Result<()> {
        self.set(doc! { "syncError": message }).await
    }

    /// Forgets a stop by the final verification, so the commit runs (and verifies) again.
    pub async fn clear_final_verification_stop(&self) -> mongodb::error::Result<()> {
        self.raw_migration
            .update_one(
                doc! { "_id": MIGRATION_ID, "finalVerification": { "$exists": true } },
                doc! { "$unset": { "syncError": "", "finalVerification": "" } },
            )
            .await
            .map(|_| ())
    }

    pub async fn set_state(&self, state: DurableState) -> mongodb::error::Result<()> {
        self.set(doc! { "state": bson::to_bson(&state).expect("enum serializes") })
            .await
    }

    pub async fn set_phase(&self, phase: Phase, extra: Document) -> mongodb::error::Result<()> {
        let mut fields = extra;
        fields.insert("phase", bson::to_bson(&phase).expect("enum serializes"));
        self.set(fields).await
    }

    pub async fn checkpoint(
        &self,
        token: Option<&ResumeToken>,
        applied: Timestamp,
    ) -> mongodb::error::Result<()> {
        let mut fields = doc! { "appliedTs": applied };
        if let Some(t) = token {
            fields.insert(
                "resumeToken",
                bson::to_bson(t).map_err(mongodb::error::Error::custom)?,
            );
        }
        self.set(fields).await
    }

    pub async fn replace_partitions(&self, parts: &[PartitionDoc]) -> mongodb::error::Result<()> {
        self.partitions.delete_many(doc! {}).await?;
        if !parts.is_empty() {
            for chunk in parts.chunks(1000) {
                self.partitions.insert_many(chunk).await?;
            }
        }
        Ok(())
    }

    pub async fn partitions(&self) -> mongodb::error::Result<Vec<PartitionDoc>> {
        self.partitions.find(doc! {}).await?.try_collect().await
    }

    /// Bytes copied by the partitions (recorded as each finishes): what `collectionCopy` counts
    /// from when an engine restarts (its own counter starts at zero), and the truth after the
    /// copy.
    pub async fn copied_bytes(&self) -> mongodb::error::Result<i64> {
        let mut cursor = self
            .partitions
            .clone_with_type::<Document>()
            .aggregate([doc! { "$group": { "_id": null, "bytes": { "$sum": "$copiedBytes" } } }])
            .await?;
        Ok(match cursor.try_next().await? {
            Some(d) => match d.get("bytes") {
                Some(Bson::Int64(n)) => *n,
                Some(Bson::Int32(n)) => *n as i64,
                Some(Bson::Double(n)) => *n as i64,
                _ => 0,
            },
            None => 0,
        })
    }

    /// Records partitions as copied (`id`, bytes, documents, digest of what was read), in one
    /// command.
    pub async fn finish_partitions(
        &self,
        done: &[(&str, i64, i64, Option<Digest>)],
    ) -> mongodb::error::Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let updates: Vec<Document> = done
            .iter()
            .map(|(id, bytes, docs, digest)| {
                doc! {
                    "q": { "_id": *id },
                    "u": { "$set": {
                        "done": true,
                        "copiedBytes": *bytes,
                        "copiedDocs": *docs,
                        "digest": digest_bson(digest.as_ref()),
                    } },
                }
            })
            .collect();
        self.db
            .run_command(doc! {
                "update": self.partitions.name(),
                "updates": updates,
                "ordered": false,
                "writeConcern": { "w": "majority", "j": true },
            })
            .await
            .map(|_| ())
    }

    /// Records how far an unfinished partition has been copied (see
    /// [`PartitionDoc::resume_from`]); never moves a finished one.
    pub async fn checkpoint_partition(
        &self,
        id: &str,
        resume_from: &Bson,
        bytes: i64,
        docs: i64,
        digest: Option<&Digest>,
    ) -> mongodb::error::Result<()> {
        self.partitions
            .update_one(
                doc! { "_id": id, "done": false },
                doc! { "$set": {
                    "resumeFrom": resume_from.clone(),
                    "copiedBytes": bytes,
                    "copiedDocs": docs,
                    "digest": digest_bson(digest),
                } },
            )
            .await
            .map(|_| ())
    }

    /// Marks a destination namespace whose content must be copied again from the source (its
    /// collection was renamed while the copy ran, or a change could not be replayed exactly).
    pub async fn mark_recopy(&self, ns: &str) -> mongodb::error::Result<()> {
        self.recopy
            .update_one(
                doc! { "_id": ns },
                doc! { "$set": { "readAt": Bson::Null } },
            )
            .upsert(true)
            .await
            .map(|_| ())
    }

    /// The mark of a namespace: `None` unmarked, `Some(None)` waiting for its copy,
    /// `Some(Some(t))` copied from a read that started at source time `t`.
    pub async fn recopy_mark(&self, ns: &str) -> mongodb::error::Result<Option<Option<Timestamp>>> {
        Ok(self
            .recopy
            .find_one(doc! { "_id": ns })
            .await?
            .map(|d| d.get_timestamp("readAt").ok()))
    }

    pub async fn recopy_done(&self, ns: &str, read_at: Timestamp) -> mongodb::error::Result<()> {
        self.recopy
            .update_one(doc! { "_id": ns }, doc! { "$set": { "readAt": read_at } })
            .await
            .map(|_| ())
    }

    pub async fn unmark_recopy(&self, ns: &str) -> mongodb::error::Result<()> {
        self.recopy.delete_one(doc! { "_id": ns }).await.map(|_| ())
    }

    /// Namespaces waiting for their copy.
    pub async fn pending_recopies(&self) -> mongodb::error::Result<Vec<String>> {
        let docs: Vec<Document> = self
            .recopy
            .find(doc! { "readAt": Bson::Null })
            .await?
            .try_collect()
            .await?;
        Ok(docs
            .iter()
            .filter_map(|d| d.get_str("_id").ok().map(String::from))
            .collect())
    }

    /// Forgets copies whose read started before `applied`: every DDL event that could have
    /// overtaken them has been applied by now.
    pub async fn forget_recopies_before(&self, applied: Timestamp) -> mongodb::error::Result<()> {
        self.recopy
            .delete_many(doc! { "readAt": { "$type": "timestamp", "$lte": applied } })
            .await
            .map(|_| ())
    }

    pub async fn clear_recopy_db(&self, db: &str) -> mongodb::error::Result<()> {
        let prefix = format!("^{}\\.", regex::escape(db));
        self.recopy
            .delete_many(doc! { "_id": { "$regex": prefix } })
            .await
            .map(|_| ())
    }
}

/// A partition's digest as stored (`null` when unknown, which also clears an older one).
fn digest_bson(digest: Option<&Digest>) -> Bson {
    digest
        .and_then(|d| bson::to_bson(d).ok())
        .unwrap_or(Bson::Null)
}
