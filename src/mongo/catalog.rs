//! Collections, views and indexes: reading them from the source, creating them on the
//! destination in their sync-time form, and restoring their real form at commit.
//!
//! During the sync a destination index differs from its source in two ways, as in mongosync:
//! unique indexes are built non-unique (change events are applied out of order and could
//! collide transiently), and TTL indexes expire nothing (`expireAfterSeconds` = `i32::MAX`, so
//! the destination deletes nothing the source still has). Unlike mongosync, hidden indexes stay
//! hidden: the engine never queries the destination by a secondary index, so nothing is gained
//! by showing them, and a commit has one fewer change to make. [`finalize_before_write`] and
//! [`finalize_unique`] restore the rest at commit.

use bson::{doc, Binary, Bson, Document};
use futures::TryStreamExt;
use mongodb::Client;

use crate::contract::filter::Scope;
use crate::contract::options::BuildIndexes;
use crate::mongo::{codes, error_code};

/// `expireAfterSeconds` of a TTL index during the sync: it expires nothing, so the
/// destination deletes nothing the source still has.
pub const TTL_DISABLED: i32 = i32::MAX;

/// What `listCollections` calls the namespace's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollKind {
    /// A collection (capped or not).
    Collection,
    /// A time-series collection.
    Timeseries,
    /// A view.
    View,
}

/// A source collection or view as `listCollections` describes it.
#[derive(Debug, Clone)]
pub struct CollSpec {
    /// The database.
    pub db: String,
    /// The collection or view.
    pub name: String,
    /// Collection, time-series collection or view.
    pub kind: CollKind,
    /// `listCollections`' `options`, in the server's order.
    pub options: Document,
    /// The collection's UUID (views have none).
    pub uuid: Option<Binary>,
}

impl CollSpec {
    /// `db.name`.
    pub fn ns(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
    /// A capped collection.
    pub fn is_capped(&self) -> bool {
        self.options.get_bool("capped").unwrap_or(false)
    }

    fn from_list_entry(db: &str, entry: &Document) -> Option<Self> {
        let name = entry.get_str("name").ok()?.to_string();
        let kind = match entry.get_str("type").unwrap_or("collection") {
            "view" => CollKind::View,
            "timeseries" => CollKind::Timeseries,
            _ => CollKind::Collection,
        };
        let options = entry.get_document("options").cloned().unwrap_or_default();
        let kind = if kind == CollKind::Collection && options.contains_key("timeseries") {
            CollKind::Timeseries
        } else {
            kind
        };
        let uuid = match entry.get_document("info").ok().and_then(|i| i.get("uuid")) {
            Some(Bson::Binary(b)) => Some(b.clone()),
            _ => None,
        };
        Some(Self {
            db: db.to_string(),
            name,
            kind,
            options,
            uuid,
        })
    }

    /// The `create` command that makes this collection or view on the destination.
    pub fn create_command(&self) -> Document {
        let mut cmd = doc! { "create": &self.name };
        for (k, v) in &self.options {
            match (k.as_str(), v) {
                ("clusteredIndex", Bson::Document(ci)) => {
                    let mut ci = ci.clone();
                    ci.remove("v");
                    cmd.insert(k, ci);
                }
                _ => {
                    cmd.insert(k, v.clone());
                }
            }
        }
        cmd
    }
}

/// `listCollections` of one database, in scope only.
pub async fn list_db(
    client: &Client,
    db: &str,
    scope: &Scope,
) -> mongodb::error::Result<Vec<CollSpec>> {
    let mut specs = list_db_all(client, db).await?;
    specs.retain(|s| scope.includes(&s.db, &s.name));
    Ok(specs)
}

/// One collection's current spec on `client`, if it exists.
pub async fn find_spec(
    client: &Client,
    db: &str,
    coll: &str,
) -> mongodb::error::Result<Option<CollSpec>> {
    let entries: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listCollections": 1, "filter": { "name": coll } })
        .await?
        .try_collect()
        .await?;
    Ok(entries
        .iter()
        .find_map(|e| CollSpec::from_list_entry(db, e)))
}

/// Every collection and view of one database, in scope or not.
pub async fn list_db_all(client: &Client, db: &str) -> mongodb::error::Result<Vec<CollSpec>> {
    let entries: Vec<Document> = client
        .database(db)
        .run_cursor_command(doc! { "listCollections": 1 })
        .await?
        .try_collect()
        .await?;
    Ok(entries
        .iter()
        .filter_map(|e| CollSpec::from_list_entry(db, e))
        .collect())
}

/// Every collection and view in scope on `client`.
pub async fn list_all(client: &Client, scope: &Scope) -> mongodb::error::Result<Vec<CollSpec>> {
    let mut out = Vec::new();
    for db in client.list_database_names().await? {
        if scope.may_include_db(&db) {
            out.extend(list_db(client, &db, scope).await?);
        }
    }
    Ok(out)
}

/// Databases on `client` that hold user data (any non-system collection or view).
pub async fn user_namespaces(client: &Client) -> mongodb::error::Result<Vec<String>> {
    let everything = Scope::default();
    let mut out = Vec::new();
    for spec in list_all(client, &everything).await? {
        out.push(spec.ns());
    }
    Ok(out)
}

/// Creates a collection or view; an existing one of the same name is left as it is, so that
/// a replayed `create` (or a restarted catalog phase) is harmless.
pub async fn create(client: &Client, spec: &CollSpec) -> mongodb::error::Result<()> {
    try_create(client, spec).await.map(|_| ())
}

/// [`create`] for the catalog phase, which a restarted engine runs again over what an
/// interrupted run created. A collection found with other options than the source's was left
/// half-made (an engine killed between the `create` and the `collMod`s that align its options
/// lost the validator for good): while it is empty, as it is before the copy, it is created
/// again; one holding documents (a destination with data of its own) gets the values at least.
pub async fn create_for_copy(client: &Client, spec: &CollSpec) -> mongodb::error::Result<()> {
    if try_create(client, spec).await? {
        return Ok(());
    }
    let Some(existing) = find_spec(client, &spec.db, &spec.name).await? else {
        // Dropped in between: nothing half-made is left.
        return create(client, spec).await;
    };
    if existing.kind == spec.kind && same_options(&existing, spec) {
        return Ok(());
    }
    let empty = existing.kind == CollKind::View
        || client
            .database(&spec.db)
            .collection::<bson::RawDocumentBuf>(&spec.name)
            .find_one(doc! {})
            .await?
            .is_none();
    if empty {
        tracing::info!(ns = %spec.ns(), "an earlier run left this namespace with other options than the source's; creating it again");
        drop_collection(client, &spec.db, &spec.name).await?;
        return create(client, spec).await;
    }
    if existing.kind == spec.kind {
        complete_options(client, spec, &existing).await?;
    }
    Ok(())
}

/// Whether two specs list the same options in the same order (a `Document`'s equality
/// ignores order; the sync keeps it).
fn same_options(a: &CollSpec, b: &CollSpec) -> bool {
    bson::to_vec(&a.options).ok() == bson::to_vec(&b.options).ok()
}

/// Sets, by `collMod` in the source's order, the options `collMod` can set that `existing`
/// lacks or holds otherwise than `spec`: what an interrupted [`align_option_order`] had not
/// set yet.
async fn complete_options(
    client: &Client,
    spec: &CollSpec,
    existing: &CollSpec,
) -> mongodb::error::Result<()> {
    for (o, value) in spec
        .options
        .iter()
        .filter(|(o, _)| APPENDABLE_OPTIONS.contains(&o.as_str()))
    {
        if existing.options.get(o) == Some(value) {
            continue;
        }
        tracing::info!(ns = %spec.ns(), option = %o, "setting an option an earlier run had not set yet");
        client
            .database(&spec.db)
            .run_command(doc! { "collMod": &spec.name, o.as_str(): value.clone() })
            .await?;
    }
    Ok(())
}

/// [`create`], saying whether it created the namespace (`false`: the name was taken).
async fn try_create(client: &Client, spec: &CollSpec) -> mongodb::error::Result<bool> {
    match client
        .database(&spec.db)
        .run_command(spec.create_command())
        .await
    {
        Ok(_) => align_option_order(client, spec).await.map(|_| true),
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_EXISTS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates what a source `create` event describes. The source had nothing under that name just
/// before the event, so a destination namespace of another kind (a collection where a view is
/// created, or the reverse) is stale: it is replaced. Some servers' `listCollections` shows a
/// view being created as a plain collection for a moment, and a sync that listed it then
/// created a collection; the view's create event sets it right. One of the same kind is
/// kept: the copy, made after the event, may have filled it, and the events after this one
/// bring it up to date.
pub async fn create_as_announced(client: &Client, spec: &CollSpec) -> mongodb::error::Result<()> {
    if try_create(client, spec).await? {
        return Ok(());
    }
    match find_spec(client, &spec.db, &spec.name).await? {
        // Of the same kind but half-made: a create replayed after an engine was killed while
        // aligning the options.
        Some(existing) if existing.kind == spec.kind && !same_options(&existing, spec) => {
            complete_options(client, spec, &existing).await
        }
        Some(existing) if existing.kind != spec.kind => {
            tracing::warn!(
                ns = %spec.ns(),
                found = ?existing.kind,
                announced = ?spec.kind,
                "the destination holds another kind of namespace under a name the source just created; replacing it"
            );
            drop_collection(client, &spec.db, &spec.name).await?;
            create(client, spec).await
        }
        _ => Ok(()),
    }
}

/// Options a `collMod` can set on an existing collection, and which some servers then list
/// after the options the collection was created with.
const APPENDABLE_OPTIONS: &[&str] = &["validator", "validationLevel", "validationAction"];

/// Makes a just-created (empty) collection list its options in the source's order. MongoDB
/// lists them in a fixed order whatever the commands, so there this finds nothing to do; some
/// servers list `create`'s options in an order of their own and append what `collMod` sets
/// later, so a source collection given its validator by `collMod` lists it last. Where the
/// difference is a tail of such options, the collection is created without them and they are
/// set one `collMod` at a time, in the source's order. What still differs after that (a server
/// whose own order cannot be reproduced) is left as is: the options' values are the source's.
async fn align_option_order(client: &Client, spec: &CollSpec) -> mongodb::error::Result<()> {
    // Only a collection with such options can differ: the others cost no listCollections.
    if spec.kind != CollKind::Collection
        || !APPENDABLE_OPTIONS
            .iter()
            .any(|o| spec.options.contains_key(*o))
    {
        return Ok(());
    }
    let Some(created) = find_spec(client, &spec.db, &spec.name).await? else {
        return Ok(());
    };
    let want: Vec<&String> = spec.options.keys().collect();
    let have: Vec<&String> = created.options.keys().collect();
    let Some(k) = want.iter().zip(&have).position(|(w, h)| w != h) else {
        return Ok(());
    };
    let tail: Vec<&String> = want[k..]
        .iter()
        .copied()
        .filter(|o| APPENDABLE_OPTIONS.contains(&o.as_str()))
        .collect();
    if tail.is_empty() {
        return Ok(());
    }
    let mut head = spec.clone();
    for o in &tail {
        head.options.remove(o.as_str());
    }
    drop_collection(client, &spec.db, &spec.name).await?;
    client
        .database(&spec.db)
        .run_command(head.create_command())
        .await?;
    for o in &tail {
        let value = spec.options.get(o.as_str()).cloned().unwrap_or(Bson::Null);
        client
            .database(&spec.db)
            .run_command(doc! { "collMod": &spec.name, o.as_str(): value })
            .await?;
    }
    Ok(())
}

/// Drops `db.coll`; one already gone is fine.
pub async fn drop_collection(client: &Client, db: &str, coll: &str) -> mongodb::error::Result<()> {
    match client.database(db).run_command(doc! { "drop": coll }).await {
        Ok(_) => Ok(()),
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `listIndexes`, or nothing when the collection does not exist (any more).
pub async fn list_indexes(
    client: &Client,
    db: &str,
    coll: &str,
) -> mongodb::error::Result<Vec<Document>> {
    match client
        .database(db)
        .run_cursor_command(doc! { "listIndexes": coll })
        .await
    {
        Ok(cursor) => cursor.try_collect().await,
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => Ok(vec![]),
        Err(e) => Err(e),
    }
}

fn is_kind(spec: &Document, kind: &str) -> bool {
    spec.get_document("key")
        .map(|k| k.values().any(|v| v.as_str() == Some(kind)))
        .unwrap_or(false)
}

/// The form in which a source index is built on the destination during the sync, or `None`
/// when it is not built at all (the `_id` index, which every collection has; hashed indexes
/// under `excludeHashed*`).
pub fn sync_form(spec: &Document, mode: BuildIndexes) -> Option<Document> {
    if spec.get_str("name") == Ok("_id_") || spec.get_bool("clustered").unwrap_or(false) {
        return None;
    }
    if mode.skips_hashed() && is_kind(spec, "hashed") {
        return None;
    }
    let mut out = Document::new();
    for (k, v) in spec {
        match k.as_str() {
            "v" | "ns" | "background" | "unique" | "prepareUnique" => {}
            "expireAfterSeconds" => {
                out.insert(k, TTL_DISABLED);
            }
            _ => {
                out.insert(k, v.clone());
            }
        }
    }
    Some(out)
}

/// Makes the destination collection carry every source index (in sync form), restricted to
/// `names` when given. Returns how many indexes were created.
pub async fn build_indexes(
    source: &Client,
    destination: &Client,
    db: &str,
    coll: &str,
    mode: BuildIndexes,
    names: Option<&[String]>,
    batch: usize,
) -> mongodb::error::Result<usize> {
    if mode == BuildIndexes::Never {
        return Ok(0);
    }
    let src = list_indexes(source, db, coll).await?;
    build_listed_indexes(&src, destination, db, coll, mode, names, batch).await
}

/// [`build_indexes`] from the source's index listing `src`, already read (the index phase
/// lists every collection's indexes to find those with more than `_id`; listing them again
/// cost a round trip per collection).
pub async fn build_listed_indexes(
    src: &[Document],
    destination: &Client,
    db: &str,
    coll: &str,
    mode: BuildIndexes,
    names: Option<&[String]>,
    batch: usize,
) -> mongodb::error::Result<usize> {
    if mode == BuildIndexes::Never {
        return Ok(0);
    }
    let dst = list_indexes(destination, db, coll).await?;
    let have: Vec<&str> = dst.iter().filter_map(|d| d.get_str("name").ok()).collect();
    let missing: Vec<Document> = src
        .iter()
        .filter(|s| names.is_none_or(|n| s.get_str("name").is_ok_and(|x| n.iter().any(|m| m == x))))
        .filter(|s| s.get_str("name").is_ok_and(|n| !have.contains(&n)))
        .filter_map(|s| sync_form(s, mode))
        .collect();
    if missing.is_empty() {
        return Ok(0);
    }
    let n = missing.len();
    // `batch` indexes per command (`--createIndexesBatchSize`); a batch the destination
    // refuses is built again one index per command, so that a single refused spec (say, a
    // kind the destination lacks, or a same-named index with another spec) keeps no other
    // from being built.
    let mut single = Vec::new();
    for chunk in missing.chunks(batch.max(1)) {
        if chunk.len() == 1 {
            single.extend(chunk.iter().cloned());
            continue;
        }
        let cmd = doc! { "createIndexes": coll, "indexes": chunk.to_vec() };
        match destination.database(db).run_command(cmd).await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => return Ok(0),
            Err(_) => single.extend(chunk.iter().cloned()),
        }
    }
    for spec in single {
        let name = spec.get_str("name").unwrap_or_default().to_string();
        let cmd = doc! { "createIndexes": coll, "indexes": [spec.clone()] };
        match destination.database(db).run_command(cmd.clone()).await {
            Ok(_) => {}
            Err(e)
                if matches!(
                    error_code(&e),
                    Some(
                        codes::INDEX_OPTIONS_CONFLICT
                            | codes::INDEX_KEY_SPECS_CONFLICT
                            | codes::INDEX_ALREADY_EXISTS
                    )
                ) =>
            {
                // A same-named index with another spec: the source's current one wins.
                drop_index(destination, db, coll, &name).await?;
                destination.database(db).run_command(cmd).await?;
            }
            Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Drops index `name` of `db.coll`; one already gone (or a collection gone) is fine.
pub async fn drop_index(
    client: &Client,
    db: &str,
    coll: &str,
    name: &str,
) -> mongodb::error::Result<()> {
    match client
        .database(db)
        .run_command(doc! { "dropIndexes": coll, "index": name })
        .await
    {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                error_code(&e),
                Some(codes::INDEX_NOT_FOUND | codes::NAMESPACE_NOT_FOUND)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn coll_mod_index(
    client: &Client,
    db: &str,
    coll: &str,
    index: Document,
) -> mongodb::error::Result<()> {
    client
        .database(db)
        .run_command(doc! { "collMod": coll, "index": index })
        .await
        .map(|_| ())
}

/// First half of the commit-time restoration, before `canWrite`: TTL values, hidden flags,
/// and `prepareUnique` on indexes that are unique on the source (so new writes already
/// respect uniqueness).
///
/// With `rebuild_unique` (a destination whose unique conversion leaves traces, see
/// [`unique_conversion_leaves_traces`]) those indexes are instead rebuilt from the source's
/// definition here, while the destination is still closed to application writes (so no
/// duplicate can slip in between the drop and the build).
pub async fn finalize_before_write(
    source: &Client,
    destination: &Client,
    db: &str,
    coll: &str,
    rebuild_unique: bool,
) -> mongodb::error::Result<()> {
    for (s, d) in index_pairs(source, destination, db, coll).await? {
        let name = s.get_str("name").unwrap_or_default();
        let unique = s.get_bool("unique").unwrap_or(false) && name != "_id_";
        let leftover = d.contains_key("prepareUnique") && !s.contains_key("prepareUnique");
        if rebuild_unique && unique && (!d.get_bool("unique").unwrap_or(false) || leftover) {
            rebuild_index(destination, db, coll, &s).await?;
            continue;
        }
        if let Some(ttl) = s.get("expireAfterSeconds") {
            if d.get("expireAfterSeconds") != Some(ttl) {
                coll_mod_index(
                    destination,
                    db,
                    coll,
                    doc! { "name": name, "expireAfterSeconds": ttl.clone() },
                )
                .await?;
            }
        }
        let hidden = s.get_bool("hidden").unwrap_or(false);
        if hidden != d.get_bool("hidden").unwrap_or(false) {
            coll_mod_index(
                destination,
                db,
                coll,
                doc! { "name": name, "hidden": hidden },
            )
            .await?;
        }
        if s.get_bool("unique").unwrap_or(false)
            && !d.get_bool("unique").unwrap_or(false)
            && !d.get_bool("prepareUnique").unwrap_or(false)
            && name != "_id_"
        {
            coll_mod_index(
                destination,
                db,
                coll,
                doc! { "name": name, "prepareUnique": true },
            )
            .await?;
        }
    }
    Ok(())
}

/// Drops the destination's index of that name and builds the source's definition in its place.
async fn rebuild_index(
    destination: &Client,
    db: &str,
    coll: &str,
    source_spec: &Document,
) -> mongodb::error::Result<()> {
    let name = source_spec.get_str("name").unwrap_or_default();
    drop_index(destination, db, coll, name).await?;
    let mut spec = source_spec.clone();
    spec.remove("v");
    spec.remove("ns");
    destination
        .database(db)
        .run_command(doc! { "createIndexes": coll, "indexes": [spec] })
        .await
        .map(|_| ())
}

/// Whether the destination's unique-index conversion (`collMod` `prepareUnique`, then
/// `unique`) leaves the index definition other than a unique index built as such: MongoDB
/// removes `prepareUnique` once the index is unique, some servers leave `prepareUnique: false`
/// behind, and a server without the conversion cannot do it at all. Tried once on a scratch
/// collection in the metadata database.
pub async fn unique_conversion_leaves_traces(destination: &Client) -> mongodb::error::Result<bool> {
    let db = destination.database(crate::contract::filter::METADATA_DB);
    let coll = "unique_conversion_probe";
    let _ = db.run_command(doc! { "drop": coll }).await;
    let probe = async {
        db.run_command(doc! { "create": coll }).await?;
        db.run_command(doc! {
            "createIndexes": coll,
            "indexes": [{ "key": { "p": 1 }, "name": "p_1" }],
        })
        .await?;
        for step in [doc! { "prepareUnique": true }, doc! { "unique": true }] {
            let mut index = doc! { "name": "p_1" };
            index.extend(step);
            if let Err(e) = db
                .run_command(doc! { "collMod": coll, "index": index })
                .await
            {
                tracing::debug!(error = %crate::mongo::describe(&e), "the destination cannot convert an index to unique in place");
                return Ok(true);
            }
        }
        let specs = list_indexes(destination, crate::contract::filter::METADATA_DB, coll).await?;
        Ok::<bool, mongodb::error::Error>(
            specs
                .iter()
                .filter(|s| s.get_str("name") == Ok("p_1"))
                .any(|s| s.contains_key("prepareUnique") || !s.get_bool("unique").unwrap_or(false)),
        )
    }
    .await;
    let _ = db.run_command(doc! { "drop": coll }).await;
    probe
}

/// Second half, after `canWrite`: converts `prepareUnique` indexes to unique.
pub async fn finalize_unique(
    source: &Client,
    destination: &Client,
    db: &str,
    coll: &str,
) -> mongodb::error::Result<()> {
    for (s, d) in index_pairs(source, destination, db, coll).await? {
        let name = s.get_str("name").unwrap_or_default();
        if !s.get_bool("unique").unwrap_or(false)
            || name == "_id_"
            || d.get_bool("unique").unwrap_or(false)
        {
            continue;
        }
        match coll_mod_index(destination, db, coll, doc! { "name": name, "unique": true }).await {
            Ok(()) => {}
            Err(e) if error_code(&e) == Some(codes::COMMAND_NOT_FOUND) => {
                // A server without unique conversion: rebuild the index as unique.
                rebuild_index(destination, db, coll, &s).await?;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Each source index with the destination index of the same name, where there is one.
async fn index_pairs(
    source: &Client,
    destination: &Client,
    db: &str,
    coll: &str,
) -> mongodb::error::Result<Vec<(Document, Document)>> {
    let src = list_indexes(source, db, coll).await?;
    let mut dst = list_indexes(destination, db, coll).await?;
    Ok(src
        .into_iter()
        .filter_map(|s| {
            let name = s.get_str("name").ok()?;
            let at = dst.iter().position(|d| d.get_str("name") == Ok(name))?;
            let d = dst.swap_remove(at);
            Some((s, d))
        })
        .collect())
}

/// The collection options `collMod` can change and a `modify` event may carry.
pub const MODIFIABLE_OPTIONS: &[&str] = &[
    "validator",
    "validationLevel",
    "validationAction",
    "changeStreamPreAndPostImages",
    "viewOn",
    "pipeline",
    "expireAfterSeconds",
    "timeseries",
];

/// The options of a collection description that `collMod` can change, as a `collMod` body.
pub fn modification(desc: &Document) -> Document {
    let mut out = Document::new();
    for (k, v) in desc {
        if MODIFIABLE_OPTIONS.contains(&k.as_str()) {
            out.insert(k, v.clone());
        }
    }
    out
}
