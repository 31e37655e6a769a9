//! `/start`: gathers what the clusters say (reachability, topology, write blocking, roles,
//! the destination's content), decides from those facts in pure functions (below, tested as
//! tables) whether the sync can work and how, refusing with a named error when it cannot, then
//! acts: takes the lease, persists the sync and starts its job.

use crate::contract::write_blocking::Mode;
#[allow(unused_imports)]
use crate::engine::*;

impl Engine {
    #[tracing::instrument(skip_all)]
    pub async fn start(self: &Arc<Self>, options: StartOptions) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Start.check(self.current_state())?;
        let scope = options.validate()?;
        let source = self.client(options.source);
        let destination = self.client(options.destination);
        let unavailable = |label: ClusterLabel, e: mongodb::error::Error| {
            ApiError::ClusterUnavailable(format!(
                "cannot reach {} ({}): {}; check that it is up and reachable, then call /start again",
                label.as_str(),
                self.uri(label).hosts(),
                self.scrub(&crate::mongo::describe(&e))
            ))
        };
        // Both clusters must answer promptly: /start answers within seconds, not after the
        // driver's full server-selection wait.
        let mut hellos = Vec::with_capacity(2);
        for label in [options.source, options.destination] {
            let admin = self.client(label).database("admin");
            match tokio::time::timeout(START_REACH_TIMEOUT, admin.run_command(doc! { "hello": 1 })).await {
                Ok(Ok(reply)) => hellos.push(reply),
                Ok(Err(e)) => return Err(unavailable(label, e)),
                Err(_) => {
                    return Err(ApiError::ClusterUnavailable(format!(
                        "{} ({}) did not answer within {} s; check that it is up and reachable, then call /start again",
                        label.as_str(),
                        self.uri(label).hosts(),
                        START_REACH_TIMEOUT.as_secs()
                    )))
                }
            }
        }
        source_has_change_streams(&hellos[0], self.uri(options.source).hosts())?;
        // Write blocking: the request must be honoured or refused, never quietly dropped; the
        // default is used where the servers allow it and reported where they do not.
        let requested = options.write_blocking();
        let probe = self.blocking(&options, requested.0).probe().await;
        let (mode, blocking_note) = write_blocking_plan(requested, probe)?;
        if let Some(note) = &blocking_note {
            tracing::warn!("{note}");
        }
        // Roles, versions and identity: everything else the preflight knows.
        let kind = preflight::SyncKind::of(options.reversible, mode.blocks_source());
        let report = self.preflight(&options, kind).await?;
        if !report.passed() {
            let all: Vec<String> = report.problems.iter().map(|p| p.message.clone()).collect();
            return Err(ApiError::PreflightFailed(all.join("; ")));
        }
        // The lease comes before anything is written: a destination another live engine
        // drives is refused, naming it.
        let me = self.lease.me.token.clone();
        let acquired = self
            .lease
            .acquire(destination, |holder, within| {
                tracing::warn!(
                    hostname = %holder.hostname,
                    pid = holder.pid,
                    port = holder.port,
                    wait_s = within.as_secs_f64().ceil() as u64,
                    "the destination's lease is held by another engine; watching whether it is still renewed"
                );
            })
            .await;
        match acquired {
            Ok(lease::Acquired::Yes) => {}
            Ok(lease::Acquired::Held(holder)) => return Err(ApiError::LeaseHeld(holder.refusal())),
            Err(e) => return Err(unavailable(options.destination, e)),
        }
        let result: Result<(), ApiError> = async {
            let store = Store::new(destination);
            let plan = self.judge_destination(&options, &scope).await?;
            if plan.drop_leftover {
                // Left by a /start that failed half-way: nothing in it is worth keeping, but
                // for the lease just taken.
                let db = destination.database(METADATA_DB);
                let names = db
                    .list_collection_names()
                    .await
                    .map_err(|e| unavailable(options.destination, e))?;
                for name in names.iter().filter(|n| *n != lease::LEASE_COLLECTION) {
                    db.collection::<bson::Document>(name)
                        .drop()
                        .await
                        .map_err(|e| unavailable(options.destination, e))?;
                }
            }
            // Open the change stream before anything is read, and keep its starting point: the
            // opening's resume token, or, from a server that gives none, the time read just before
            // (opening "now" rather than at a time spares servers that scan their oplog to find
            // a start time).
            let start_ts = crate::mongo::cluster_time(source)
                .await
                .map_err(|e| unavailable(options.source, e))?;
            let stream = source
                .watch()
                .show_expanded_events(true)
                .await
                .map_err(|e| unavailable(options.source, e))?;
            let token = stream.resume_token();
            drop(stream);
            let mut doc = Store::new_migration_doc(
                self.config.engine_id(),
                self.hosts(),
                options.clone(),
                start_ts,
                token,
            );
            doc.write_blocking = mode;
            doc.write_blocking_note = blocking_note.clone();
            doc.lease_token = Some(me.clone());
            let ctl = self.blocking(&options, mode);
            ctl.on_start()
                .await
                .map_err(|e| ApiError::WriteBlockingFailed(e.to_string()))?;
            if let Err(e) = store.create(&doc).await {
                // Nothing was recorded: nothing may stay blocked either.
                if let Err(release) = ctl.release_all().await {
                    tracing::error!(error = %release, "could not release write blocking after a failed /start");
                }
                return Err(unavailable(options.destination, e));
            }
            tracing::info!(
                migration = %doc.migration_id,
                source = %self.uri(options.source).hosts(),
                destination = %self.uri(options.destination).hosts(),
                "sync started"
            );
            {
                let mut s = self.status.lock();
                s.state = State::Running;
                s.phase = Some(crate::contract::state::Phase::Catalog);
                s.options = Some(options.clone());
                s.fatal = None;
                s.write_blocking = mode;
                if let Some(note) = blocking_note {
                    s.warnings.insert("write-blocking".into(), note);
                }
            }
            *control = Some(self.spawn_job(&options)?);
            Ok(())
        }
        .await;
        if result.is_err() {
            // Nothing was started: the next /start, here or elsewhere, need not wait, and a
            // refused /start leaves nothing behind on the destination.
            self.lease.release().await;
            if let Err(e) = drop_if_only_lease(destination).await {
                tracing::debug!(error = %self.scrub(&crate::mongo::describe(&e)), "could not drop the metadata database left by a refused /start");
            }
        }
        result
    }
}

/// Drops the metadata database when all it holds is an empty lease collection (a refused
/// `/start` created it), so that a refusal leaves the destination as it was.
async fn drop_if_only_lease(destination: &Client) -> mongodb::error::Result<()> {
    let db = destination.database(METADATA_DB);
    let names = db.list_collection_names().await?;
    if names.iter().any(|n| n != lease::LEASE_COLLECTION) {
        return Ok(());
    }
    let leases = db
        .collection::<bson::Document>(lease::LEASE_COLLECTION)
        .count_documents(doc! {})
        .await?;
    if leases == 0 {
        db.drop().await?;
    }
    Ok(())
}

impl Engine {
    /// What `/start` requires of the destination before it writes, judged from what the
    /// clusters say: no other sync's metadata (ours or mongosync's), no user data unless
    /// allowed and then no clash with the namespaces to sync, and room on its disk. Shared
    /// with `POST /api/v1/preflight`, so that a preflight that passes is a `/start` that does.
    pub(in crate::engine) async fn judge_destination(
        &self,
        options: &StartOptions,
        scope: &Scope,
    ) -> Result<DestinationPlan, ApiError> {
        let source = self.client(options.source);
        let destination = self.client(options.destination);
        let unavailable = |label: ClusterLabel, e: mongodb::error::Error| {
            ApiError::ClusterUnavailable(format!(
                "cannot reach {} ({}): {}; check that it is up and reachable, then call /start again",
                label.as_str(),
                self.uri(label).hosts(),
                self.scrub(&crate::mongo::describe(&e))
            ))
        };
        let store = Store::new(destination);
        let metadata = if Store::exists(destination)
            .await
            .map_err(|e| unavailable(options.destination, e))?
        {
            match store
                .load()
                .await
                .map_err(|e| unavailable(options.destination, e))?
            {
                None => Metadata::Leftover,
                Some(_) => Metadata::AnotherSync,
            }
        } else {
            Metadata::None
        };
        let databases = destination
            .list_database_names()
            .await
            .map_err(|e| unavailable(options.destination, e))?;
        no_mongosync_metadata(&databases)?;
        let existing = crate::mongo::catalog::user_namespaces(destination)
            .await
            .map_err(|e| unavailable(options.destination, e))?;
        let plan = destination_plan(
            metadata,
            &existing,
            options.pre_existing_destination_data,
            self.uri(options.destination).hosts(),
        )?;
        if plan.check_clashes {
            let source_ns: Vec<String> = crate::mongo::catalog::list_all(source, scope)
                .await
                .map_err(|e| unavailable(options.source, e))?
                .iter()
                .map(|s| s.ns())
                .collect();
            no_clashes(&source_ns, &existing)?;
        }
        // mongosync 1.22's guardrail: the destination's free space against the source's
        // on-disk size (best effort: skipped where the servers report no figures).
        if !options.skip_disk_space_check {
            use crate::preflight::disk::{self, DiskSpace};
            match disk::check(source, destination, scope).await {
                DiskSpace::Short { needed, free } => {
                    return Err(ApiError::InsufficientDiskSpace(disk::shortage_message(
                        needed, free,
                    )))
                }
                DiskSpace::Enough { needed, free } => {
                    tracing::info!(needed, free, "the destination has room for the sync")
                }
                DiskSpace::Unknown(why) => {
                    tracing::info!(reason = %why, "the destination's disk space was not checked")
                }
            }
        }
        Ok(plan)
    }
}

// ---- Decisions: pure, from the facts gathered above. ----

/// The source must offer change streams: a replica set or a sharded cluster's router.
fn source_has_change_streams(hello: &bson::Document, hosts: &str) -> Result<(), ApiError> {
    if hello.get_str("setName").is_err() && hello.get_str("msg") != Ok("isdbgrid") {
        return Err(ApiError::UnsupportedTopology(format!(
            "the source ({hosts}) is a standalone server, which has no change streams; convert it to a replica set (a single-node one is enough) and call /start again"
        )));
    }
    Ok(())
}

/// The write blocking to use, from what was asked (`explicit`, or the default for these
/// options) and what the servers answered to a probe: an explicit request is honoured or
/// refused, a default the servers cannot do falls back to none with a note saying so.
fn write_blocking_plan(
    (mode, explicit): (Mode, bool),
    probe: Result<(), blocking::BlockError>,
) -> Result<(Mode, Option<String>), ApiError> {
    match probe {
        Ok(()) => Ok((mode, None)),
        Err(blocking::BlockError::Unsupported { cluster }) if !explicit => Ok((
            Mode::None,
            Some(format!(
                "write blocking is not in force: {cluster} does not support setUserWriteBlockMode, so neither cluster's application writes are blocked; stop writes to the source yourself before /commit, and do not write to the destination before canWrite"
            )),
        )),
        Err(e @ blocking::BlockError::Unsupported { .. }) => Err(ApiError::WriteBlockingUnsupported(
            format!("{e}; start without enableUserWriteBlocking, or with \"none\""),
        )),
        Err(e) => Err(ApiError::WriteBlockingFailed(e.to_string())),
    }
}

/// What the destination's metadata database holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metadata {
    None,
    /// Left by a `/start` that failed half-way (no migration document).
    Leftover,
    /// Another sync's migration document.
    AnotherSync,
}

/// What `/start` must do about the destination before it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::engine) struct DestinationPlan {
    pub(in crate::engine) drop_leftover: bool,
    /// User data is there and allowed: the namespaces to sync must not clash with it.
    check_clashes: bool,
}

fn destination_plan(
    metadata: Metadata,
    existing: &[String],
    pre_existing_allowed: bool,
    hosts: &str,
) -> Result<DestinationPlan, ApiError> {
    if metadata == Metadata::AnotherSync {
        return Err(ApiError::DestinationNotEmpty(format!(
            "the destination already holds another sync's metadata (database {METADATA_DB}); drop it to start over"
        )));
    }
    if !existing.is_empty() && !pre_existing_allowed {
        let shown: Vec<_> = existing.iter().take(5).cloned().collect();
        return Err(ApiError::DestinationNotEmpty(format!(
            "the destination ({hosts}) already holds user data ({}{}); empty it, or set preExistingDestinationData: true with a namespace filter that keeps the synced namespaces apart",
            shown.join(", "),
            if existing.len() > 5 {
                format!(" and {} more", existing.len() - 5)
            } else {
                String::new()
            }
        )));
    }
    Ok(DestinationPlan {
        drop_leftover: metadata == Metadata::Leftover,
        check_clashes: !existing.is_empty(),
    })
}

/// mongosync's metadata databases, current and older names: a destination holding one is (or
/// was) a mongosync migration's, which mongosync itself refuses to start on.
fn is_mongosync_metadata(db: &str) -> bool {
    db.starts_with("__mdb_internal_mongosync")
        || db == "mongosync_reserved_for_internal_use"
        || db.starts_with("mongosync_reserved_for_verification")
        || db.starts_with("mongosync_internal_")
}

fn no_mongosync_metadata(databases: &[String]) -> Result<(), ApiError> {
    let found: Vec<&str> = databases
        .iter()
        .map(String::as_str)
        .filter(|d| is_mongosync_metadata(d))
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(ApiError::DestinationNotEmpty(format!(
        "the destination holds mongosync's metadata ({}): a mongosync migration ran or runs on it; if it is over, drop those databases (db.getSiblingDB(\"<name>\").dropDatabase()) and call /start again",
        found.join(", ")
    )))
}

/// With data allowed on the destination, none of the namespaces to sync may be there.
fn no_clashes(source_ns: &[String], existing: &[String]) -> Result<(), ApiError> {
    let clashes: Vec<&str> = source_ns
        .iter()
        .filter(|ns| existing.contains(ns))
        .take(5)
        .map(String::as_str)
        .collect();
    if clashes.is_empty() {
        return Ok(());
    }
    Err(ApiError::NamespaceConflict(format!(
        "namespaces to sync already exist on the destination: {}; exclude them with excludeNamespaces or drop them from the destination",
        clashes.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use blocking::BlockError;

    #[test]
    fn a_standalone_source_is_refused() {
        assert!(source_has_change_streams(&doc! { "setName": "rs0" }, "h").is_ok());
        assert!(source_has_change_streams(&doc! { "msg": "isdbgrid" }, "h").is_ok());
        let e = source_has_change_streams(&doc! { "isWritablePrimary": true }, "h:1").unwrap_err();
        assert_eq!(e.name(), ErrorName::UnsupportedTopology);
        assert!(e.to_string().contains("h:1"));
    }

    #[test]
    fn the_write_blocking_table() {
        let unsupported = || {
            Err(BlockError::Unsupported {
                cluster: "cluster1",
            })
        };
        let failed = || {
            Err(BlockError::Failed {
                cluster: "cluster1",
                message: "boom".into(),
                transient: true,
            })
        };
        let dual = Mode::SourceAndDestination;
        assert_eq!(
            write_blocking_plan((dual, true), Ok(())).unwrap(),
            (dual, None)
        );
        assert_eq!(
            write_blocking_plan((dual, false), Ok(())).unwrap(),
            (dual, None)
        );
        let (mode, note) = write_blocking_plan((dual, false), unsupported()).unwrap();
        assert_eq!(
            mode,
            Mode::None,
            "a default the servers cannot do falls back"
        );
        assert!(note.unwrap().contains("stop writes to the source yourself"));
        let refused = write_blocking_plan((dual, true), unsupported()).unwrap_err();
        assert_eq!(refused.name(), ErrorName::WriteBlockingUnsupported);
        assert_eq!(
            write_blocking_plan((dual, false), failed())
                .unwrap_err()
                .name(),
            ErrorName::WriteBlockingFailed
        );
    }

    #[test]
    fn mongosyncs_metadata_on_the_destination_is_refused() {
        let dbs = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(no_mongosync_metadata(&dbs(&[
            "admin",
            "app",
            "clustersync_reserved_for_internal_use"
        ]))
        .is_ok());
        for leftover in [
            "__mdb_internal_mongosync",
            "__mdb_internal_mongosync_verifier_dst",
            "mongosync_reserved_for_internal_use",
            "mongosync_internal_orders",
        ] {
            let e = no_mongosync_metadata(&dbs(&["admin", leftover])).unwrap_err();
            assert_eq!(e.name(), ErrorName::DestinationNotEmpty, "{leftover}");
            assert!(e.to_string().contains(leftover) && e.to_string().contains("dropDatabase"));
        }
    }

    #[test]
    fn the_destination_table() {
        let none: Vec<String> = vec![];
        let some = vec!["app.users".to_string()];
        let plan = |m, e: &[String], allowed| destination_plan(m, e, allowed, "h");
        assert_eq!(
            plan(Metadata::None, &none, false).unwrap(),
            DestinationPlan {
                drop_leftover: false,
                check_clashes: false
            }
        );
        assert_eq!(
            plan(Metadata::Leftover, &none, false).unwrap(),
            DestinationPlan {
                drop_leftover: true,
                check_clashes: false
            }
        );
        assert_eq!(
            plan(Metadata::AnotherSync, &none, true).unwrap_err().name(),
            ErrorName::DestinationNotEmpty
        );
        let e = plan(Metadata::None, &some, false).unwrap_err();
        assert_eq!(e.name(), ErrorName::DestinationNotEmpty);
        assert!(
            e.to_string().contains("app.users")
                && e.to_string().contains("preExistingDestinationData")
        );
        assert_eq!(
            plan(Metadata::None, &some, true).unwrap(),
            DestinationPlan {
                drop_leftover: false,
                check_clashes: true
            }
        );
        assert!(no_clashes(&["app.orders".into()], &some).is_ok());
        let e = no_clashes(&["app.users".into()], &some).unwrap_err();
        assert_eq!(e.name(), ErrorName::NamespaceConflict);
    }
}
