//! DDL events, each applied alone (a barrier between CRUD batches).
//!
//! A rename needs care when it overtook the initial copy: the copy reads by name, so the
//! renamed collection's documents that had not been copied yet are nowhere on the
//! destination. Every collection renamed while the copy's backlog is being applied is
//! therefore copied again from the source under its new name, once the stream proves that
//! name still holds that collection; until then the namespace carries a persisted mark that
//! follows later renames.

use bson::{doc, Document, RawDocument};
use mongodb::change_stream::event::ResumeToken;
use mongodb::Client;

use super::super::catalog::{self, CollKind, CollSpec};
use super::super::job::{Ctx, JobError};
use super::super::mongo::{codes, error_code};
use super::super::options::BuildIndexes;
use super::lineage;

fn ns_at(ev: &RawDocument, key: &str) -> Option<(String, String)> {
    let ns = ev.get_document(key).ok()?;
    Some((
        ns.get_str("db").ok()?.to_string(),
        ns.get_str("coll").ok()?.to_string(),
    ))
}

fn token_of(ev: &RawDocument) -> Option<ResumeToken> {
    bson::from_slice(ev.get_document("_id").ok()?.as_bytes()).ok()
}

#[tracing::instrument(skip_all, fields(op = ev.get_str("operationType").unwrap_or("?")))]
pub async fn apply(ctx: &Ctx, ev: &RawDocument) -> Result<(), JobError> {
    let op = ev.get_str("operationType").unwrap_or("");
    let (db, coll) = match ns_at(ev, "ns") {
        Some(ns) => ns,
        None => match ev
            .get_document("ns")
            .ok()
            .and_then(|n| n.get_str("db").ok())
        {
            Some(db) => (db.to_string(), String::new()),
            None => return Ok(()),
        },
    };
    let desc: Document = ev
        .get_document("operationDescription")
        .ok()
        .and_then(|d| Document::try_from(d).ok())
        .unwrap_or_default();
    let in_scope = ctx.scope.includes(&db, &coll);
    let ts = ev.get_timestamp("clusterTime").ok();
    let to = ns_at(ev, "to").or_else(|| {
        let t = desc.get_document("to").ok()?;
        Some((
            t.get_str("db").ok()?.to_string(),
            t.get_str("coll").ok()?.to_string(),
        ))
    });
    tracing::debug!(ns = %format!("{db}.{coll}"), to = ?to, ts = ?ts, "applying DDL event");
    match op {
        "create" if in_scope => {
            let kind = match ev.get_str("nsType").unwrap_or("collection") {
                "view" => CollKind::View,
                "timeseries" => CollKind::Timeseries,
                _ => CollKind::Collection,
            };
            let mut options = desc;
            options.remove("idIndex");
            if let Some(p) = options.remove("viewPipeline") {
                options.insert("pipeline", p);
            }
            let spec = CollSpec {
                db,
                name: coll,
                kind,
                options,
                uuid: None,
            };
            catalog::create(&ctx.destination, &spec).await?;
        }
        "drop" if in_scope => {
            catalog::drop_collection(&ctx.destination, &db, &coll).await?;
            ctx.store.take_recopy(&format!("{db}.{coll}")).await?;
        }
        "dropDatabase" => {
            for spec in catalog::list_db(&ctx.destination, &db, &ctx.scope).await? {
                catalog::drop_collection(&ctx.destination, &db, &spec.name).await?;
            }
            ctx.store.clear_recopy_db(&db).await?;
        }
        "rename" => {
            let Some((to_db, to_coll)) = to else {
                return Ok(());
            };
            let to_in = ctx.scope.includes(&to_db, &to_coll);
            let token = token_of(ev);
            match (in_scope, to_in) {
                (true, true) => {
                    // Each step can be replayed after a crash: the mark moves to the new name
                    // before the old one is removed, and stays until the copy has landed.
                    let from_ns = format!("{db}.{coll}");
                    let target = format!("{to_db}.{to_coll}");
                    let during_copy_backlog = match (ts, ctx.status.lock().copy_finished_ts) {
                        (Some(t), Some(c)) => t <= c,
                        _ => true,
                    };
                    if during_copy_backlog || ctx.store.has_recopy(&from_ns).await? {
                        ctx.store.mark_recopy(&target).await?;
                    }
                    ctx.store.take_recopy(&from_ns).await?;
                    rename(&ctx.destination, &db, &coll, &to_db, &to_coll).await?;
                    if ctx.store.has_recopy(&target).await? {
                        recopy(ctx, &to_db, &to_coll, token.as_ref()).await?;
                    }
                }
                (true, false) => {
                    return Err(JobError::fatal(format!(
                        "collection {db}.{coll} was renamed to {to_db}.{to_coll}, which the namespace filter excludes; a filtered collection cannot be renamed out of the filter. Restart the migration from scratch with a filter that covers both names"
                    )));
                }
                (false, true) => {
                    // Entering the filter: a new collection for the destination.
                    ctx.store.mark_recopy(&format!("{to_db}.{to_coll}")).await?;
                    recopy(ctx, &to_db, &to_coll, token.as_ref()).await?;
                }
                (false, false) => {}
            }
        }
        "createIndexes" if in_scope => {
            let names: Vec<String> = desc
                .get_array("indexes")
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_document()?.get_str("name").ok().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if ctx.options.build_indexes != BuildIndexes::Never {
                ctx.build_indexes(&db, &coll, Some(&names)).await?;
            }
        }
        "dropIndexes" if in_scope => {
            if let Ok(indexes) = desc.get_array("indexes") {
                for name in indexes
                    .iter()
                    .filter_map(|i| i.as_document()?.get_str("name").ok())
                {
                    catalog::drop_index(&ctx.destination, &db, &coll, name).await?;
                }
            }
        }
        "modify" if in_scope => {
            let m = catalog::modification(&desc);
            if !m.is_empty() {
                let mut cmd = doc! { "collMod": &coll };
                cmd.extend(m);
                match ctx.destination.database(&db).run_command(cmd).await {
                    Ok(_) => {}
                    Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        "shardCollection" | "reshardCollection" | "refineCollectionShardKey" if in_scope => {
            return Err(JobError::fatal(format!(
                "{op} on {db}.{coll} during the sync is not supported; restart the migration from scratch after it completes"
            )));
        }
        "invalidate" => {
            return Err(JobError::fatal(
                "the source change stream was invalidated; restart the migration from scratch",
            ));
        }
        _ => tracing::debug!(op, "event not applicable; skipped"),
    }
    Ok(())
}

async fn rename(
    client: &Client,
    db: &str,
    coll: &str,
    to_db: &str,
    to_coll: &str,
) -> Result<(), JobError> {
    let cmd = doc! {
        "renameCollection": format!("{db}.{coll}"),
        "to": format!("{to_db}.{to_coll}"),
        "dropTarget": true,
    };
    match client.database("admin").run_command(cmd).await {
        Ok(_) => Ok(()),
        // Already renamed before a restart, or the collection never reached the destination.
        Err(e) if error_code(&e) == Some(codes::NAMESPACE_NOT_FOUND) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Copies a marked collection again from the source, provided the source name still holds the
/// collection the event was about, then clears the mark; otherwise leaves the mark for the
/// later drop or rename that the stream holds.
async fn recopy(
    ctx: &Ctx,
    db: &str,
    coll: &str,
    token: Option<&ResumeToken>,
) -> Result<(), JobError> {
    let ns = format!("{db}.{coll}");
    if !unchanged(ctx, token, db, coll).await? {
        // A later drop or rename in the stream will deal with it; the mark stays.
        return Ok(());
    }
    let Some(spec) = catalog::find_spec(&ctx.source, db, coll).await? else {
        return Ok(());
    };
    tracing::info!(ns = %ns, "copying a collection again: it was renamed while the initial copy ran");
    catalog::drop_collection(&ctx.destination, db, coll).await?;
    catalog::create(&ctx.destination, &spec).await?;
    ctx.copy_whole(&spec).await?;
    if spec.kind != CollKind::View && ctx.options.build_indexes != BuildIndexes::Never {
        ctx.build_indexes(db, coll, None).await?;
    }
    if unchanged(ctx, token, db, coll).await? {
        ctx.store.take_recopy(&ns).await?;
    }
    // Otherwise it was renamed again while being read: the mark stays for the next rename.
    Ok(())
}

async fn unchanged(
    ctx: &Ctx,
    token: Option<&ResumeToken>,
    db: &str,
    coll: &str,
) -> mongodb::error::Result<bool> {
    match token {
        Some(t) => lineage::unchanged_since(&ctx.source, t, db, coll).await,
        None => Ok(false),
    }
}
