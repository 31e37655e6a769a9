//! A sync job: runs the phases persisted on the destination, from wherever they stand, and
//! restarts itself after errors that go away (a cluster down, an election).

use std::sync::atomic::Ordering;
use std::time::Duration;

use bson::doc;
use futures::{StreamExt, TryStreamExt};

use crate::contract::options::BuildIndexes;
use crate::contract::progress::IndexBuilding;
use crate::contract::state::{DurableState, Phase};
use crate::engine::fence::Fenced;
use crate::engine::store::PartitionDoc;
use crate::engine::sync::context::{Ctx, JobError};
use crate::engine::sync::copy::{self};
use crate::engine::sync::embedded_verifier::Verifier;
use crate::mongo;
use crate::mongo::catalog::{self, CollKind};

/// Runs the job until it is done, fails for good, or is aborted (pause).
#[tracing::instrument(name = "sync_job", skip_all)]
pub async fn supervise(ctx: Ctx, scrub: impl Fn(&str) -> String + Send + Sync) {
    let mut failures = 0u32;
    loop {
        // A fence closed deep inside a write (a copy batch) comes back as a driver error.
        let result = run(&ctx).await.map_err(|e| match e {
            JobError::Mongo(m) => match m.get_custom::<Fenced>() {
                Some(f) => JobError::Lease(f.clone()),
                None => JobError::Mongo(m),
            },
            other => other,
        });
        match result {
            Err(JobError::Lease(Fenced::Lost(msg))) => {
                // Not a failure of the sync: another engine drives it now. Its write blocks
                // are that engine's to keep, so nothing is released here.
                tracing::error!(error = %msg, "sync stopped: lease lost");
                ctx.status.fail(msg);
                return;
            }
            Err(JobError::Lease(e @ Fenced::Unproven(_))) => {
                // The destination is slow or away: the renewal retries on its own, and the
                // job waits for it rather than writing unfenced.
                let msg = e.to_string();
                tracing::warn!(error = %msg, "sync paused until the lease is renewed");
                ctx.status.warn("sync", msg);
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Ok(()) => {
                ctx.status.clear_warning("sync");
                return;
            }
            Err(JobError::Fatal(msg)) => {
                tracing::error!(error = %msg, "sync stopped");
                stop_for_good(&ctx, msg).await;
                return;
            }
            Err(e) => {
                let (transient, msg) = match &e {
                    JobError::Mongo(e) => (mongo::is_transient(e), scrub(&mongo::describe(e))),
                    other => (
                        matches!(
                            other,
                            JobError::Verify(crate::verify::VerifyError::Unreachable { .. })
                        ),
                        scrub(&other.to_string()),
                    ),
                };
                failures += 1;
                if !transient && failures > 8 {
                    let msg = format!("the sync failed repeatedly and stopped: {msg}");
                    tracing::error!(error = %msg, "sync stopped");
                    stop_for_good(&ctx, msg).await;
                    return;
                }
                ctx.status.counters.retries.fetch_add(1, Ordering::Relaxed);
                let wait = Duration::from_millis((500u64 << failures.min(6)).min(30_000));
                tracing::warn!(error = %msg, retry_in_ms = wait.as_millis() as u64, "sync interrupted; retrying");
                ctx.status.warn(
                    "sync",
                    format!("the sync was interrupted and is retrying: {msg}"),
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// A sync that cannot go on: the reason is persisted (a restarted engine reports it instead of
/// failing again), write blocking is released, and the status says so, which ends the process
/// once reported (see `cli/engine.rs`).
async fn stop_for_good(ctx: &Ctx, msg: String) {
    if let Err(e) = ctx.store.set_sync_error(&msg).await {
        tracing::warn!(error = %mongo::describe(&e), "could not record the stop on the destination");
    }
    release_blocks(ctx).await;
    ctx.status.fail(msg);
}

/// A sync that cannot go on must not leave an application's cluster read-only.
async fn release_blocks(ctx: &Ctx) {
    match ctx.blocking().release_all().await {
        Ok(()) => {}
        Err(e) => {
            tracing::error!(error = %e, "could not release write blocking");
            ctx.status.warn(
                "write-blocking-release",
                format!("could not release write blocking after the failure: {e}; run db.adminCommand({{setUserWriteBlockMode: 1, global: false}}) on the blocked cluster"),
            );
        }
    }
}

async fn run(ctx: &Ctx) -> Result<(), JobError> {
    loop {
        let doc = ctx.store.load().await?.ok_or_else(|| {
            JobError::fatal(
                "the migration document is missing from the destination's metadata database",
            )
        })?;
        {
            let mut s = ctx.status.lock();
            s.phase = Some(doc.phase);
            s.total_bytes = doc.estimated_total_bytes;
            s.start_ts = Some(doc.start_ts);
            s.copy_finished_ts = doc.copy_finished_ts;
            if s.indexes.is_none() {
                s.indexes = doc.index_building;
            }
            // `/commit` may have landed between the load and here (it does not wait for the
            // job): a commit point already in memory is newer than the document read.
            if doc.commit_ts.is_some() {
                s.commit_ts = doc.commit_ts;
            }
            s.can_write = doc.can_write;
            if ctx.verifier.is_none() {
                s.verification = None;
            } else if s.verification.is_none() {
                s.verification = Some(Default::default());
            }
            if let Some(a) = doc.applied_ts {
                drop(s);
                ctx.status.applied_through(a);
            }
        }
        match doc.phase {
            Phase::Catalog => catalog_phase(ctx).await?,
            Phase::Copy => copy_phase(ctx).await?,
            Phase::IndexBuild => index_phase(ctx).await?,
            Phase::ChangeEvents => {
                // The verifier follows the applier until the commit point is applied, then is
                // dropped: its state is on disk, and the final comparison opens it again. It
                // opens beside the applier rather than before it: opening its streams took
                // 1.8 s of a 60,000-document sync on the test server, which scans its oplog
                // for a start time.
                let verify = async {
                    match Verifier::open(ctx).await? {
                        Some(mut verifier) => verifier.background().await,
                        None => futures::future::pending().await,
                    }
                };
                tokio::select! {
                    r = crate::engine::sync::cea::run(ctx) => r?,
                    r = verify => match r? {},
                }
                ctx.store.set_phase(Phase::Finalize, doc! {}).await?;
            }
            Phase::Finalize => finalize_phase(ctx).await?,
            Phase::Done => return Ok(()),
        }
        ctx.status.clear_warning("sync");
    }
}

#[tracing::instrument(skip_all)]
async fn catalog_phase(ctx: &Ctx) -> Result<(), JobError> {
    let started = std::time::Instant::now();
    let specs = catalog::list_all(&ctx.source, &ctx.scope).await?;
    let before = ctx.options.build_indexes.before_copy() == Some(true);
    // Collections first, then views (a view may sit on any of them). Collections are
    // independent of each other: created a few at a time (one round trip each, which added up
    // with thousands of collections).
    // Owned first: a borrowing filter closure inside the stream makes the job's future not
    // `Send`.
    let colls: Vec<catalog::CollSpec> = specs
        .iter()
        .filter(|s| s.kind != CollKind::View)
        .cloned()
        .collect();
    // The destination's catalog and the source's sizing touch different servers: side by
    // side (at 10,000 collections each took seconds, one after the other).
    let create = async {
        let t = std::time::Instant::now();
        futures::stream::iter(colls)
            .map(|spec| async move {
                ctx.fenced()?;
                catalog::create_for_copy(&ctx.destination, &spec).await?;
                if before {
                    ctx.build_indexes(&spec.db, &spec.name, None).await?;
                }
                Ok::<(), JobError>(())
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        if !ctx.options.pre_existing_destination_data {
            for spec in specs.iter().filter(|s| s.kind == CollKind::View) {
                ctx.fenced()?;
                catalog::create_for_copy(&ctx.destination, spec).await?;
            }
        }
        tracing::info!(
            took_ms = t.elapsed().as_millis() as u64,
            "destination catalog created"
        );
        Ok::<(), JobError>(())
    };
    let planning = async {
        // Sizing and sampling cost the source a round trip or two per collection (a scan on some
        // servers): a database small enough as a whole has its collections copied whole without
        // asking, the others are planned concurrently.
        let small = small_databases(ctx, &specs).await?;
        let plans: Vec<(Vec<PartitionDoc>, i64)> = futures::stream::iter(specs.iter().cloned().map(|spec| {
            let natural = ctx.options.copy_in_natural_order.iter().any(|e| {
                e.database == spec.db
                    && (e.collections.is_empty() || e.collections.contains(&spec.name))
            });
            // The database's size shared out over its collections: the progress total stays the
            // database's size, and each share is under the small-partition size.
            let size = small.get(&spec.db).map(|(bytes, colls)| (bytes / (*colls).max(1), 0));
            async move {
                let t = std::time::Instant::now();
                let plan = copy::plan(
                    &ctx.source,
                    &spec,
                    natural,
                    ctx.options.detect_random_id,
                    &ctx.tuning,
                    size,
                ).await?;
                tracing::debug!(ns = %spec.ns(), took_ms = t.elapsed().as_millis() as u64, partitions = plan.0.len(), "planned");
                Ok::<_, mongodb::error::Error>(plan)
            }
        }))
        .buffered(ctx.tuning.concurrency.max(1))
        .try_collect()
        .await?;
        Ok::<_, JobError>(plans)
    };
    let ((), plans) = tokio::try_join!(create, planning)?;
    let total: i64 = plans.iter().map(|(_, bytes)| bytes).sum();
    let parts: Vec<PartitionDoc> = plans.into_iter().flat_map(|(p, _)| p).collect();
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        collections = specs.iter().filter(|s| s.kind != CollKind::View).count(),
        views = specs.iter().filter(|s| s.kind == CollKind::View).count(),
        partitions = parts.len(),
        bytes = total,
        "copy planned"
    );
    // Planning only read (a scan per collection on some servers): a late renewal is waited
    // for rather than planning again.
    ctx.fenced_after_reading().await?;
    ctx.store.replace_partitions(&parts).await?;
    ctx.store
        .set_phase(Phase::Copy, doc! { "estimatedTotalBytes": total })
        .await?;
    Ok(())
}

/// Databases with fewer collections are sized collection by collection.
const DB_STATS_MIN_COLLECTIONS: i64 = 16;

/// The databases of `specs` small enough as a whole to need no per-collection sizing (see
/// [`copy::database_is_small`]), with their data size and collection count. One `dbStats`
/// per database, a few at a time.
async fn small_databases(
    ctx: &Ctx,
    specs: &[catalog::CollSpec],
) -> Result<std::collections::HashMap<String, (i64, i64)>, JobError> {
    let mut colls: std::collections::BTreeMap<String, i64> = Default::default();
    for spec in specs.iter().filter(|s| s.kind != CollKind::View) {
        *colls.entry(spec.db.clone()).or_default() += 1;
    }
    // Worth a `dbStats` only where it replaces many `collStats`: it reads the whole database
    // on some servers (1.3 s for one 20 MB collection on the test server), as each `collStats`
    // reads its collection.
    colls.retain(|_, n| *n >= DB_STATS_MIN_COLLECTIONS);
    let sized: Vec<(String, Option<i64>, i64)> = futures::stream::iter(colls)
        .map(|(db, n)| async move {
            // Only a shortcut: a server that cannot say has its collections sized one by one.
            let size = match copy::database_size(&ctx.source, &db).await {
                Ok(size) => size,
                Err(e) => {
                    tracing::debug!(db = %db, error = %mongo::describe(&e), "no dbStats; sizing the database's collections one by one");
                    None
                }
            };
            Ok::<_, mongodb::error::Error>((db, size, n))
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    Ok(sized
        .into_iter()
        .filter_map(|(db, size, n)| {
            size.filter(|s| copy::database_is_small(*s))
                .map(|s| (db, (s, n)))
        })
        .collect())
}

#[tracing::instrument(skip_all)]
async fn copy_phase(ctx: &Ctx) -> Result<(), JobError> {
    let parts = ctx.store.partitions().await?;
    // Finished partitions, and what unfinished ones recorded at their last checkpoint.
    let done_bytes: i64 = parts.iter().map(|p| p.copied_bytes).sum();
    ctx.status
        .counters
        .copied_bytes
        .store(done_bytes, Ordering::Relaxed);
    // The rate window starts again with this copy's first insert.
    ctx.status.counters.copy_starts();
    {
        let mut colls = ctx.status.counters.collections();
        colls.clear();
        // Indexes built after the copy: a copied collection waits for them (the index phase
        // clears this for those with none).
        let indexes_after = ctx.options.build_indexes.before_copy() == Some(false);
        for p in &parts {
            let c = colls.entry(format!("{}.{}", p.db, p.coll)).or_default();
            c.indexes_pending = indexes_after;
            c.partitions += 1;
            c.total_bytes += p.estimated_bytes;
            c.total_docs += p.estimated_docs;
            // Finished partitions, and unfinished ones as far as their checkpoint: batches
            // landed from here on are added as they land.
            c.copied_bytes += p.copied_bytes;
            c.copied_docs += p.copied_docs;
            if p.done {
                c.partitions_done += 1;
            }
        }
    }
    let todo: Vec<_> = parts.into_iter().filter(|p| !p.done).collect();
    tracing::info!(partitions = todo.len(), "copying");
    let started = std::time::Instant::now();
    let store = ctx.store.clone();
    let result = copy::copy_all(
        &ctx.source,
        &ctx.destination,
        todo,
        ctx.tuning,
        &ctx.status.counters,
        &ctx.fence,
        copy::Checkpoints { store: &ctx.store },
        |group: Vec<copy::Finished>| {
            let store = store.clone();
            let status = ctx.status.clone();
            let fence = ctx.fence.clone();
            async move {
                fence.check().map_err(mongodb::error::Error::custom)?;
                let marks: Vec<_> = group
                    .iter()
                    .map(|(p, (bytes, docs, digest))| (p.id.as_str(), *bytes, *docs, *digest))
                    .collect();
                store.finish_partitions(&marks).await?;
                let counters = &status.counters;
                let mut colls = counters.collections();
                for (p, (_, docs, _)) in &group {
                    counters
                        .copied_docs
                        .fetch_add(*docs as u64, Ordering::Relaxed);
                    counters.partitions_copied.fetch_add(1, Ordering::Relaxed);
                    // Its bytes and documents were counted as its batches landed.
                    let c = colls.entry(format!("{}.{}", p.db, p.coll)).or_default();
                    c.partitions_done += 1;
                }
                Ok(())
            }
        },
    )
    .await;
    result?;
    let finished = mongo::cluster_time(&ctx.source).await?;
    let next = match ctx.options.build_indexes.before_copy() {
        Some(false) => Phase::IndexBuild,
        _ => Phase::ChangeEvents,
    };
    // The copied-byte count of finished partitions is the truth after the copy.
    let copied = restore_copied_bytes(ctx).await?;
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        bytes = copied,
        "collection copy finished"
    );
    ctx.store
        .set_phase(
            next,
            doc! { "copyFinishedTs": finished, "copiedBytes": copied },
        )
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
async fn index_phase(ctx: &Ctx) -> Result<(), JobError> {
    restore_copied_bytes(ctx).await?;
    let started = std::time::Instant::now();
    let specs = catalog::list_all(&ctx.destination, &ctx.scope).await?;
    let colls: Vec<catalog::CollSpec> = specs
        .into_iter()
        .filter(|s| s.kind != CollKind::View)
        .collect();
    let total = colls.len() as u64;
    let with = with_secondary_indexes(ctx, colls).await?;
    let counts: Vec<u64> = with
        .iter()
        .map(|(_, src)| {
            src.iter()
                .filter(|i| catalog::sync_form(i, ctx.options.build_indexes).is_some())
                .count() as u64
        })
        .collect();
    let progress = std::sync::Mutex::new(IndexBuilding {
        indexes_built: 0,
        total_indexes_to_build: counts.iter().sum(),
        // Collections with nothing to build are finished as soon as that is known.
        collections_finished: total - with.len() as u64,
        collections_total: total,
    });
    let publish = |p: IndexBuilding| ctx.status.lock().indexes = Some(p);
    publish(*progress.lock().unwrap_or_else(|e| e.into_inner()));
    let indexed = |spec: &catalog::CollSpec| {
        if let Some(c) = ctx
            .status
            .counters
            .collections()
            .get_mut(&format!("{}.{}", spec.db, spec.name))
        {
            c.indexes_pending = false;
        }
    };
    // Those with nothing to build are done now; the others as their builds finish.
    {
        let building: std::collections::HashSet<String> = with
            .iter()
            .map(|(spec, _)| format!("{}.{}", spec.db, spec.name))
            .collect();
        for (ns, c) in ctx.status.counters.collections().iter_mut() {
            c.indexes_pending = building.contains(ns);
        }
    }
    futures::stream::iter(with.into_iter().zip(counts))
        .map(|((spec, src), n)| {
            let progress = &progress;
            async move {
                ctx.fenced()?;
                ctx.build_listed_indexes(&src, &spec.db, &spec.name).await?;
                indexed(&spec);
                let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
                p.indexes_built = (p.indexes_built + n).min(p.total_indexes_to_build);
                p.collections_finished += 1;
                publish(*p);
                Ok::<(), JobError>(())
            }
        })
        .buffer_unordered(INDEX_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    let progress = progress.into_inner().unwrap_or_else(|e| e.into_inner());
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        collections = total,
        indexes = progress.indexes_built,
        "indexes built"
    );
    ctx.store
        .set_phase(
            Phase::ChangeEvents,
            doc! { "indexBuilding": bson::to_bson(&progress).expect("plain struct") },
        )
        .await?;
    Ok(())
}

/// Collections whose indexes are built, restored or finished at once: independent of each
/// other, so a few at a time (one after another, 2,000 collections made the commit wait for
/// 12,000 index listings in a row).
const INDEX_CONCURRENCY: usize = 8;

/// Index listings at once: a round trip each, nothing built.
const LISTING_CONCURRENCY: usize = 16;

/// Runs `step` (after the fence check) for every collection of `colls`, a few at a time.
async fn each_collection<F, Fut>(
    ctx: &Ctx,
    colls: &[catalog::CollSpec],
    step: F,
) -> Result<(), JobError>
where
    F: Fn(catalog::CollSpec) -> Fut,
    Fut: std::future::Future<Output = Result<(), JobError>>,
{
    // Owned: a stream of borrowed specs makes the job's future not `Send`.
    futures::stream::iter(colls.to_vec())
        .map(|spec| {
            let fenced = ctx.fenced();
            let step = step(spec);
            async move {
                fenced?;
                step.await
            }
        })
        .buffer_unordered(INDEX_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// The collections of `colls` whose source has an index besides `_id` (the only ones the
/// index steps have anything to do for: every collection has `_id`, and it is never built,
/// restored or converted), each with the source's listing. One listing per collection, a few
/// at a time.
async fn with_secondary_indexes(
    ctx: &Ctx,
    colls: Vec<catalog::CollSpec>,
) -> Result<Vec<(catalog::CollSpec, Vec<bson::Document>)>, JobError> {
    let listed: Vec<(catalog::CollSpec, Vec<bson::Document>)> = futures::stream::iter(colls)
        .map(|spec| async move {
            let src = catalog::list_indexes(&ctx.source, &spec.db, &spec.name).await?;
            Ok::<_, mongodb::error::Error>((spec, src))
        })
        .buffered(LISTING_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(listed
        .into_iter()
        .filter(|(_, src)| src.iter().any(|i| i.get_str("name") != Ok("_id_")))
        .collect())
}

/// Sets the copied-byte counter from the finished partitions, and returns it.
async fn restore_copied_bytes(ctx: &Ctx) -> Result<i64, JobError> {
    let copied = ctx.store.copied_bytes().await?;
    ctx.status
        .counters
        .copied_bytes
        .store(copied, Ordering::Relaxed);
    Ok(copied)
}

/// Some servers create a collection without a change event (an update that matches nothing
/// in a missing collection, on some test servers): make sure every source collection and view
/// in scope exists on the destination before it is handed over.
async fn create_unannounced(ctx: &Ctx) -> Result<(), JobError> {
    let dest: std::collections::HashSet<String> = catalog::list_all(&ctx.destination, &ctx.scope)
        .await?
        .iter()
        .map(|s| s.ns())
        .collect();
    let mut missing = catalog::list_all(&ctx.source, &ctx.scope).await?;
    missing.retain(|s| !dest.contains(&s.ns()));
    missing.sort_by_key(|s| s.kind == CollKind::View);
    for spec in missing {
        if ctx.options.pre_existing_destination_data && spec.kind == CollKind::View {
            continue;
        }
        tracing::info!(ns = %spec.ns(), "creating a collection the change stream never announced");
        ctx.fenced()?;
        catalog::create(&ctx.destination, &spec).await?;
        ctx.copy_whole(&spec).await?;
    }
    Ok(())
}

/// Commit: the final events are applied; restore what the sync changed on the destination,
/// report `canWrite`, finish unique indexes, then COMMITTED.
#[tracing::instrument(skip_all)]
async fn finalize_phase(ctx: &Ctx) -> Result<(), JobError> {
    restore_copied_bytes(ctx).await?;
    create_unannounced(ctx).await?;
    let specs = catalog::list_all(&ctx.destination, &ctx.scope).await?;
    let colls: Vec<catalog::CollSpec> = specs
        .into_iter()
        .filter(|s| s.kind != CollKind::View)
        .collect();
    // The commit waits on what follows: only collections with indexes besides `_id` have
    // anything to build, restore or convert.
    let listed = with_secondary_indexes(ctx, colls).await?;
    let indexed: Vec<catalog::CollSpec> = listed.iter().map(|(spec, _)| spec.clone()).collect();
    if ctx.options.build_indexes != BuildIndexes::Never {
        futures::stream::iter(listed)
            .map(|(spec, src)| async move {
                ctx.fenced()?;
                ctx.build_listed_indexes(&src, &spec.db, &spec.name).await?;
                Ok::<(), JobError>(())
            })
            .buffer_unordered(INDEX_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
    }
    // Once `canWrite` is out, the destination belongs to the application: the final
    // comparison runs before, and only then.
    if !ctx.status.lock().can_write {
        if let Some(verifier) = Verifier::open(ctx).await? {
            verifier.final_check().await?;
        }
    }
    // Unique indexes end exactly as the source defines them: converted in place after
    // `canWrite` where the server's conversion leaves no trace, else rebuilt before it.
    // The final comparison only read: a late renewal is waited for rather than comparing
    // again.
    ctx.fenced_after_reading().await?;
    let rebuild_unique = catalog::unique_conversion_leaves_traces(&ctx.destination).await?;
    if rebuild_unique {
        tracing::info!("the destination's unique-index conversion leaves traces in the index definition; unique indexes are rebuilt before canWrite instead");
    }
    each_collection(ctx, &indexed, |spec| async move {
        catalog::finalize_before_write(
            &ctx.source,
            &ctx.destination,
            &spec.db,
            &spec.name,
            rebuild_unique,
        )
        .await?;
        Ok(())
    })
    .await?;
    // Every application write on the destination comes after this point (they are blocked
    // until the release just below): a reversal replays the destination from here.
    let can_write_ts = mongo::cluster_time(&ctx.destination).await?;
    ctx.fenced()?;
    ctx.store.set(doc! { "canWriteTs": can_write_ts }).await?;
    ctx.fenced()?;
    ctx.blocking().on_can_write().await.map_err(|e| {
        JobError::fatal(format!(
            "cannot release the destination's write blocking: {e}"
        ))
    })?;
    ctx.store.set(doc! { "canWrite": true }).await?;
    ctx.status.lock().can_write = true;
    each_collection(ctx, &indexed, |spec| async move {
        catalog::finalize_unique(&ctx.source, &ctx.destination, &spec.db, &spec.name).await?;
        Ok(())
    })
    .await?;
    ctx.fenced()?;
    ctx.store
        .set_phase(
            Phase::Done,
            doc! { "state": bson::to_bson(&DurableState::Committed).expect("enum") },
        )
        .await?;
    {
        let mut s = ctx.status.lock();
        s.state = crate::contract::state::State::Committed;
        s.phase = Some(Phase::Done);
    }
    tracing::info!("commit completed");
    Ok(())
}
