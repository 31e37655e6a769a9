//! DDL events, each applied alone (a barrier between CRUD batches).
//!
//! A rename needs care when it overtook the initial copy: the copy reads by name, so the
//! renamed collection's documents that had not been copied yet are nowhere on the
//! destination. Every collection renamed while the copy's backlog is applied is therefore
//! marked for a fresh copy under its new name. The copy itself waits until the stream has
//! caught up ([`recopy_pending`]), when the marks name the source's collections as they are
//! now; a rename or drop that the stream delivers later but that happened before the copy's
//! read began moves the mark on, so a read that may have answered for another collection is
//! done again. Marks are persisted, and every step can be replayed after a crash.

use bson::{doc, Document, RawDocument};
use mongodb::Client;

use crate::contract::options::BuildIndexes;
use crate::engine::sync::context::{Ctx, JobError};
use crate::mongo::catalog::{self, CollKind, CollSpec};
use crate::mongo::{codes, error_code};

fn ns_at(ev: &RawDocument, key: &str) -> Option<(String, String)> {
    let ns = ev.get_document(key).ok()?;
    Some((
        ns.get_str("db").ok()?.to_string(),
        ns.get_str("coll").ok()?.to_string(),
    ))
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
            catalog::create_as_announced(&ctx.destination, &spec).await?;
        }
        "drop" if in_scope => {
            catalog::drop_collection(&ctx.destination, &db, &coll).await?;
            ctx.store.unmark_recopy(&format!("{db}.{coll}")).await?;
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
            match (in_scope, to_in) {
                (true, true) => {
                    let from_ns = format!("{db}.{coll}");
                    let during_copy_backlog = match (ts, ctx.status.lock().copy_finished_ts) {
                        (Some(t), Some(c)) => t <= c,
                        _ => true,
                    };
                    let overtaken = match (ctx.store.recopy_mark(&from_ns).await?, ts) {
                        // Waiting for its copy: the copy follows the collection.
                        (Some(None), _) => true,
                        // Copied from a read that began after this rename: it read the wrong
                        // collection (or none).
                        (Some(Some(read_at)), Some(t)) => t < read_at,
                        _ => false,
                    };
                    // Mark the new name before unmarking the old one, so a crash in between
                    // loses nothing.
                    if during_copy_backlog || overtaken {
                        ctx.store.mark_recopy(&format!("{to_db}.{to_coll}")).await?;
                    }
                    ctx.store.unmark_recopy(&from_ns).await?;
                    rename(&ctx.destination, &db, &coll, &to_db, &to_coll).await?;
                }
                (true, false) => {
                    return Err(JobError::fatal(format!(
                        "collection {db}.{coll} was renamed to {to_db}.{to_coll}, which the namespace filter excludes; a filtered collection cannot be renamed out of the filter. Restart the migration from scratch with a filter that covers both names"
                    )));
                }
                (false, true) => {
                    // Entering the filter: a new collection for the destination.
                    ctx.store.mark_recopy(&format!("{to_db}.{to_coll}")).await?;
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

/// Copies every marked collection again from the source. Called when the stream has caught
/// up, so the marks name the source's collections as they are now; each copy records the
/// source time its read began, for [`apply`] to tell whether a later-delivered rename or drop
/// overtook it.
pub async fn recopy_pending(ctx: &Ctx) -> Result<(), JobError> {
    for ns in ctx.store.pending_recopies().await? {
        let Some((db, coll)) = ns.split_once('.') else {
            ctx.store.unmark_recopy(&ns).await?;
            continue;
        };
        let read_at = crate::mongo::cluster_time(&ctx.source).await?;
        // Gone from the source: a drop event the stream has not delivered yet removes it.
        if let Some(spec) = catalog::find_spec(&ctx.source, db, coll).await? {
            tracing::warn!(ns = %ns, "copying a collection again whole: a rename or drop on the source overtook its copy, or the changes to some of its documents were made to a collection renamed since");
            catalog::drop_collection(&ctx.destination, db, coll).await?;
            catalog::create(&ctx.destination, &spec).await?;
            let recopying = |on: bool| {
                let mut colls = ctx.status.counters.collections();
                let c = colls.entry(ns.clone()).or_default();
                c.recopying = on;
                if on {
                    (c.copied_bytes, c.copied_docs, c.started) = (0, 0, None);
                }
            };
            recopying(true);
            let copied = ctx.copy_whole(&spec).await;
            recopying(false);
            copied?;
            if spec.kind != CollKind::View && ctx.options.build_indexes != BuildIndexes::Never {
                ctx.build_indexes(db, coll, None).await?;
            }
            let n = ctx
                .status
                .counters
                .collections_recopied
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            ctx.status.warn(
                "recopies",
                format!("collection {ns} was copied again whole because a rename or drop on the source overtook its copy ({n} collection re-copies in this process)"),
            );
        }
        ctx.store.recopy_done(&ns, read_at).await?;
    }
    Ok(())
}
