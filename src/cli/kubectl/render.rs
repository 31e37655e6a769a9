//! What `kubectl clustersync` prints and decides, as pure functions of the objects it read:
//! the status screen, the plan, the commit and mode-change decisions and the engine pod's
//! choice. The commands in `mod.rs` only fetch, call these and print, so everything a user
//! sees is unit-tested here without an API server.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;

use crate::contract::progress::{human_bytes as bytes, short_duration as duration};
use crate::operator::crd::{ClusterSync, ClusterSyncStatus, Mode, PlanStatus};

/// Events shown on the status screen: enough for the last few transitions, not a log.
pub const MAX_EVENTS: usize = 10;

/// `copied` of `total` as a whole percent, or the engine's own figure when it gave one.
fn percent(given: Option<&str>, copied: i64, total: i64) -> String {
    match given {
        Some(p) => p.to_string(),
        None if total > 0 => format!("{}%", copied.saturating_mul(100) / total),
        None => "-".into(),
    }
}

/// Rows padded to each column's widest cell, two spaces apart, the header first.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let last = cells.len() - 1;
        let mut l = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        let _ = writeln!(out, "  {}", l.trim_end());
    };
    line(out, header.to_vec());
    for r in rows {
        line(out, r.iter().map(String::as_str).collect());
    }
}

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Idle => "Idle",
        Mode::Running => "Running",
        Mode::Paused => "Paused",
        Mode::Committed => "Committed",
    }
}

/// When an Event last happened: its series' last sighting, its time, the deprecated
/// timestamp older recorders write, or its creation.
fn event_time(e: &Event) -> Option<Timestamp> {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0)
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.deprecated_last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The Events about `cs`, oldest first, the last [`MAX_EVENTS`] only (so the newest sits
/// just above the prompt).
pub fn recent_events<'a>(cs: &ClusterSync, events: &'a [Event]) -> Vec<&'a Event> {
    let name = cs.metadata.name.as_deref();
    let uid = cs.metadata.uid.as_deref();
    let mut mine: Vec<&Event> = events
        .iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("ClusterSync")
                    && r.name.as_deref() == name
                    // An object deleted and created again under the same name is another one.
                    && (uid.is_none() || r.uid.is_none() || r.uid.as_deref() == uid)
            })
        })
        .collect();
    mine.sort_by_key(|e| event_time(e));
    let skip = mine.len().saturating_sub(MAX_EVENTS);
    mine.split_off(skip)
}

/// The one screen `kubectl clustersync status NAME` prints: what the sync is doing, whether it
/// can commit, its progress, the embedded verifier, the conditions and the recent Events.
/// Fields the operator has not written (yet) are left out, not shown empty.
pub fn status_screen(cs: &ClusterSync, events: &[Event], now: Timestamp) -> String {
    let mut o = String::new();
    let name = cs.metadata.name.as_deref().unwrap_or("?");
    let ns = cs.metadata.namespace.as_deref().unwrap_or("default");
    let st = cs.status.clone().unwrap_or_default();
    let _ = writeln!(o, "ClusterSync {name} (namespace {ns})");
    let state = st.state.as_deref().unwrap_or("unknown (no status yet)");
    let _ = writeln!(
        o,
        "  Mode:         {} (spec)    State: {state}",
        mode_name(cs.spec.mode)
    );
    if let Some(ready) = st.conditions.iter().find(|c| c.type_ == "Ready") {
        let _ = writeln!(o, "  Ready:        {} ({})", ready.status, ready.reason);
    }
    let commit = if st.can_commit {
        "yes".to_string()
    } else {
        match &st.commit_blocker {
            Some(b) => format!("no: {b}"),
            None => "no".to_string(),
        }
    };
    let _ = writeln!(o, "  Can commit:   {commit}");
    if st.can_write {
        let _ = writeln!(
            o,
            "  Can write:    yes (the destination accepts application writes)"
        );
    }
    if let Some(lag) = st.lag_seconds {
        let _ = writeln!(o, "  Lag:          {}", duration(lag));
    }
    if let Some(info) = &st.info {
        let _ = writeln!(o, "  Doing:        {info}");
    }
    copy_line(&mut o, &st);
    if let Some(c) = &st.namespace_counts {
        let _ = writeln!(
            o,
            "  Namespaces:   {} waiting, {} copying, {} building indexes, {} done, {} re-copying",
            c.waiting, c.copying, c.building_indexes, c.done, c.recopying
        );
    }
    if let Some(w) = &st.engine_workload {
        let _ = writeln!(o, "  Engine:       Deployment {w}");
    }
    if !st.slowest_collections.is_empty() {
        let _ = writeln!(o, "\nCollections with the most left to copy");
        let rows: Vec<Vec<String>> = st
            .slowest_collections
            .iter()
            .map(|c| {
                vec![
                    c.namespace.clone(),
                    c.phase.clone(),
                    format!("{} of {}", bytes(c.copied_bytes), bytes(c.total_bytes)),
                    percent(c.copied_percent.as_deref(), c.copied_bytes, c.total_bytes),
                    c.eta_seconds.map_or("-".into(), duration),
                ]
            })
            .collect();
        table(
            &mut o,
            &["NAMESPACE", "PHASE", "COPIED", "PERCENT", "ETA"],
            &rows,
        );
    }
    if let Some(v) = &st.verification {
        let _ = writeln!(o, "\nVerifier");
        let _ = writeln!(
            o,
            "  Phase: {}    Scanned: {}/{} collections    Mismatches: {}{}",
            v.phase.as_deref().unwrap_or("-"),
            v.scanned_collections,
            v.total_collections,
            v.mismatch_count,
            if v.verified {
                "    Verified at commit"
            } else {
                ""
            }
        );
        for m in &v.mismatches {
            let _ = writeln!(o, "  - {m}");
        }
    }
    if cs.spec.mode == Mode::Idle {
        match &st.plan {
            Some(p) => {
                let _ = writeln!(
                    o,
                    "\nPlan (kubectl clustersync plan {name} for the details)"
                );
                let _ = writeln!(o, "  {}", plan_summary(p));
            }
            None => {
                let _ = writeln!(
                    o,
                    "\nPlan: none yet (the operator plans while spec.mode is Idle)"
                );
            }
        }
    }
    if !st.conditions.is_empty() {
        let _ = writeln!(o, "\nConditions");
        let rows: Vec<Vec<String>> = st
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        table(&mut o, &["TYPE", "STATUS", "REASON", "MESSAGE"], &rows);
    }
    let recent = recent_events(cs, events);
    if recent.is_empty() {
        let _ = writeln!(o, "\nEvents: none");
    } else {
        let _ = writeln!(o, "\nEvents (newest last)");
        let rows: Vec<Vec<String>> = recent
            .iter()
            .map(|e| {
                let age = event_time(e)
                    .map(|t| duration((now - t).get_seconds()))
                    .unwrap_or_else(|| "?".into());
                let count = e.series.as_ref().map_or(1, |s| s.count.max(1));
                let age = if count > 1 {
                    format!("{age} (x{count})")
                } else {
                    age
                };
                vec![
                    age,
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                ]
            })
            .collect();
        table(&mut o, &["AGE", "TYPE", "REASON", "MESSAGE"], &rows);
    }
    o
}

/// `Copied: 12.0 MiB of 40.0 MiB (30%), ETA 4m10s`, with what is known of it.
fn copy_line(o: &mut String, st: &ClusterSyncStatus) {
    let mut parts = Vec::new();
    match (st.copied_bytes, st.total_bytes) {
        (Some(c), Some(t)) => parts.push(format!(
            "{} of {} ({})",
            bytes(c),
            bytes(t),
            percent(st.copied_percent.as_deref(), c, t)
        )),
        (Some(c), None) => parts.push(bytes(c)),
        _ => {
            if let Some(p) = &st.copied_percent {
                parts.push(p.clone());
            }
        }
    }
    let eta = st
        .eta
        .clone()
        .or_else(|| st.eta_seconds.map(duration))
        .map(|e| format!("ETA {e}"));
    parts.extend(eta);
    if !parts.is_empty() {
        let _ = writeln!(o, "  Copied:       {}", parts.join(", "));
    }
}

/// One line: safe or not, the scope and the estimate.
fn plan_summary(p: &PlanStatus) -> String {
    let blocking = p.risks.iter().filter(|r| r.starts_with("blocking")).count();
    format!(
        "{}: {} collections in {} databases, {} documents, {}; estimate {}{}",
        if p.safe { "safe" } else { "NOT SAFE" },
        p.collections,
        p.databases,
        p.documents,
        bytes(p.data_bytes),
        p.estimate
            .clone()
            .unwrap_or_else(|| duration(p.estimated_seconds)),
        match (p.risks.len(), blocking) {
            (0, _) => String::new(),
            (n, 0) => format!("; {n} warning(s)"),
            (n, b) => format!("; {n} risk(s), {b} blocking"),
        }
    )
}

/// What `kubectl clustersync plan NAME` prints, and whether the plan says the sync is safe
/// (`None` when there is no plan yet).
pub fn plan_report(cs: &ClusterSync) -> (String, Option<bool>) {
    let mut o = String::new();
    let name = cs.metadata.name.as_deref().unwrap_or("?");
    let ns = cs.metadata.namespace.as_deref().unwrap_or("default");
    let Some(p) = cs.status.as_ref().and_then(|s| s.plan.as_ref()) else {
        let why = if cs.spec.mode == Mode::Idle {
            "the operator writes status.plan while spec.mode is Idle; it has not yet (see kubectl clustersync status)"
                .to_string()
        } else {
            format!(
                "the operator plans only while spec.mode is Idle, and it is {}",
                mode_name(cs.spec.mode)
            )
        };
        let _ = writeln!(
            o,
            "No plan yet for clustersync {name} in namespace {ns}: {why}."
        );
        return (o, None);
    };
    let _ = writeln!(
        o,
        "Plan for clustersync {name} (namespace {ns}): {}",
        if p.safe {
            "SAFE to start"
        } else {
            "NOT SAFE: a blocking risk must be dealt with first"
        }
    );
    if let Some(at) = &p.planned_at {
        let _ = writeln!(o, "  Made:         {at}");
    }
    if let (Some(for_gen), Some(now_gen)) = (p.for_generation, cs.metadata.generation) {
        if for_gen != now_gen {
            let _ = writeln!(
                o,
                "  Note:         made for generation {for_gen}; the spec is at generation {now_gen} and is planned again"
            );
        }
    }
    let _ = writeln!(
        o,
        "  Scope:        {} databases, {} collections, {} views, {} documents",
        p.databases, p.collections, p.views, p.documents
    );
    let _ = writeln!(
        o,
        "  Data:         {} to copy; {} indexes to build ({} on the source)",
        bytes(p.data_bytes),
        p.indexes,
        bytes(p.index_bytes)
    );
    let _ = writeln!(
        o,
        "  Estimate:     {}",
        p.estimate
            .clone()
            .unwrap_or_else(|| duration(p.estimated_seconds))
    );
    if let Some(probe) = &p.probe {
        let _ = writeln!(o, "  Measured by:  {probe}");
    }
    if p.risks.is_empty() {
        let _ = writeln!(o, "\nRisks: none");
    } else {
        let _ = writeln!(o, "\nRisks");
        for r in &p.risks {
            let _ = writeln!(o, "  - {r}");
        }
    }
    if !p.largest_namespaces.is_empty() {
        let _ = writeln!(o, "\nLargest namespaces");
        for n in &p.largest_namespaces {
            let _ = writeln!(o, "  - {n}");
        }
    }
    (o, Some(p.safe))
}

/// What `commit` does with a ClusterSync as read.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitDecision {
    /// Nothing to do; say why (exit 0).
    Nothing(String),
    /// Refuse, with the reason (exit 1).
    Refuse(String),
    /// Ask on the terminal first.
    Confirm,
    /// Set spec.mode to Committed.
    Commit,
}

/// Whether to commit: never while the engine says it cannot (the destination would be cut
/// over behind the source), and never unconfirmed: `--yes`, or a yes on a terminal. A
/// script without `--yes` is refused rather than left waiting on a prompt nobody sees.
pub fn decide_commit(cs: &ClusterSync, yes: bool, terminal: bool) -> CommitDecision {
    let name = cs.metadata.name.as_deref().unwrap_or("?");
    let st = cs.status.clone().unwrap_or_default();
    if st.state.as_deref() == Some("COMMITTED") {
        return CommitDecision::Nothing(format!("clustersync {name} is already COMMITTED"));
    }
    if cs.spec.mode == Mode::Committed {
        return CommitDecision::Nothing(format!(
            "clustersync {name} already has spec.mode Committed; the operator commits once the engine can (state {})",
            st.state.as_deref().unwrap_or("unknown")
        ));
    }
    if !st.can_commit {
        let why = st.commit_blocker.clone().unwrap_or_else(|| {
            format!(
                "the engine is {} and has not reported canCommit",
                st.state.as_deref().unwrap_or("not reporting a state")
            )
        });
        return CommitDecision::Refuse(format!(
            "refusing to commit clustersync {name}: it cannot commit yet: {why}"
        ));
    }
    match (yes, terminal) {
        (true, _) => CommitDecision::Commit,
        (false, true) => CommitDecision::Confirm,
        (false, false) => CommitDecision::Refuse(format!(
            "refusing to commit clustersync {name} without confirmation: standard input is not a terminal; pass --yes to commit"
        )),
    }
}

/// What `pause` or `resume` does: `Ok(None)` when the mode is already `to`, `Err` when the
/// change cannot be made (after the commit the destination is live and the mode is frozen).
pub fn decide_mode(cs: &ClusterSync, to: Mode) -> Result<Option<Mode>, String> {
    let name = cs.metadata.name.as_deref().unwrap_or("?");
    let state = cs.status.as_ref().and_then(|s| s.state.as_deref());
    if state == Some("COMMITTED") || cs.spec.mode == Mode::Committed {
        return Err(format!(
            "clustersync {name} is committed (or committing): its mode cannot change any more"
        ));
    }
    if cs.spec.mode == to {
        return Ok(None);
    }
    // The operator does not start a sync to pause it: the mode would read Paused over a sync
    // that never began.
    if to == Mode::Paused && cs.spec.mode == Mode::Idle {
        return Err(format!(
            "clustersync {name} has not started (spec.mode Idle): there is nothing to pause; start it with kubectl clustersync resume {name}"
        ));
    }
    Ok(Some(to))
}

/// What to tell the user after a mode change, and what to watch next.
pub fn after_mode_change(name: &str, ns: &str, from: Mode, to: Mode) -> String {
    let watch = format!("kubectl clustersync status {name} -n {ns}");
    let next = match to {
        Mode::Running if from == Mode::Idle => "the operator starts the sync",
        Mode::Running => "the operator resumes the sync",
        Mode::Paused => "the operator pauses the sync (state PAUSED); resume it with `kubectl clustersync resume`",
        Mode::Committed => "the operator commits: the destination takes writes once state is COMMITTED and canWrite is true",
        Mode::Idle => "nothing starts",
    };
    format!(
        "clustersync {name}: spec.mode {} -> {}: {next}.\nWatch it with: {watch}",
        mode_name(from),
        mode_name(to)
    )
}

/// The engine pod to read logs from: one not being deleted, running before pending, the
/// newest first (after a rollout the new pod is the one doing the work).
pub fn pick_engine_pod(pods: &[Pod]) -> Option<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .max_by_key(|p| {
            let running = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (running, created)
        })
        .or_else(|| pods.first())
}

/// Why `pod` has no log to show yet (its engine container never started), if it has none.
pub fn no_log_yet(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    let started = status
        .and_then(|s| s.container_statuses.as_ref())
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.name == "engine"
                    && (c.restart_count > 0
                        || c.state
                            .as_ref()
                            .is_some_and(|st| st.running.is_some() || st.terminated.is_some()))
            })
        });
    match phase {
        "Running" | "Succeeded" | "Failed" => None,
        _ if started => None,
        "Pending" => Some("it is Pending (not scheduled or not started)".into()),
        other => Some(format!("it is {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_that_never_started_has_no_log() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "status": status})).unwrap()
        };
        assert!(no_log_yet(&pod(json!({"phase": "Pending"})))
            .unwrap()
            .contains("Pending"));
        assert_eq!(no_log_yet(&pod(json!({"phase": "Running"}))), None);
        assert_eq!(
            no_log_yet(&pod(json!({"phase": "Pending", "containerStatuses": [
                {"name": "engine", "restartCount": 2, "ready": false, "image": "i", "imageID": "",
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}))),
            None,
            "a crash-looping container has logs from its earlier runs"
        );
    }

    fn cs(mode: &str, status: serde_json::Value) -> ClusterSync {
        serde_json::from_value(json!({
            "apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
            "metadata": { "name": "move", "namespace": "app", "uid": "u-1", "generation": 3 },
            "spec": { "source": { "name": "a" }, "destination": { "name": "b" }, "mode": mode },
            "status": status,
        }))
        .unwrap()
    }

    fn event(reason: &str, at: &str, kind: &str, name: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": { "name": format!("e-{reason}"), "namespace": "app" },
            "eventTime": at, "reportingController": "clustersync-operator",
            "reportingInstance": "x", "action": "Observe",
            "type": "Normal", "reason": reason, "note": format!("{reason} happened"),
            "regarding": { "kind": kind, "name": name, "namespace": "app", "uid": "u-1" },
        }))
        .unwrap()
    }

    #[test]
    fn human_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(40 * 1024 * 1024), "40.0 MiB");
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(250), "4m10s");
        assert_eq!(duration(240), "4m");
        assert_eq!(duration(3700), "1h1m");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(90_000), "1d1h");
        assert_eq!(duration(-5), "0s");
    }

    #[test]
    fn the_status_screen_shows_progress_collections_verifier_conditions_and_events() {
        let c = cs(
            "Running",
            json!({
                "state": "RUNNING", "canCommit": false,
                "commitBlocker": "the collection copy is 30% done",
                "lagSeconds": 3, "copiedBytes": 12 * 1024 * 1024, "totalBytes": 40 * 1024 * 1024,
                "copiedPercent": "30%", "etaSeconds": 250, "eta": "4m10s",
                "info": "collection copy", "engineWorkload": "move-engine",
                "namespaceCounts": { "waiting": 2, "copying": 1, "buildingIndexes": 0, "done": 5, "recopying": 0 },
                "slowestCollections": [
                    { "namespace": "shop.orders", "phase": "copying", "copiedBytes": 1048576,
                      "totalBytes": 4194304, "etaSeconds": 130 },
                    { "namespace": "shop.users", "phase": "waiting", "copiedBytes": 0, "totalBytes": 0 }
                ],
                "verification": { "phase": "initial hashing", "scannedCollections": 3,
                                  "totalCollections": 10, "mismatchCount": 1,
                                  "mismatches": ["shop.orders _id 7 differs"] },
                "plan": { "safe": true },
                "conditions": [{ "type": "Ready", "status": "False", "reason": "Copying",
                                 "message": "the copy is running", "lastTransitionTime": "2026-01-01T00:00:00Z" }]
            }),
        );
        let now: Timestamp = "2026-01-01T01:00:00Z".parse().unwrap();
        let mut events: Vec<Event> = (0..12)
            .map(|i| {
                event(
                    &format!("R{i:02}"),
                    &format!("2026-01-01T00:{:02}:00.000000Z", 10 + i),
                    "ClusterSync",
                    "move",
                )
            })
            .collect();
        events.reverse();
        events.push(event(
            "Other",
            "2026-01-01T00:59:00.000000Z",
            "ClusterSync",
            "other",
        ));
        events.push(event(
            "PodThing",
            "2026-01-01T00:59:00.000000Z",
            "Pod",
            "move",
        ));
        let s = status_screen(&c, &events, now);
        for want in [
            "ClusterSync move (namespace app)",
            "Mode:         Running (spec)    State: RUNNING",
            "Ready:        False (Copying)",
            "Can commit:   no: the collection copy is 30% done",
            "Lag:          3s",
            "Copied:       12.0 MiB of 40.0 MiB (30%), ETA 4m10s",
            "2 waiting, 1 copying, 0 building indexes, 5 done, 0 re-copying",
            "shop.orders  copying  1.0 MiB of 4.0 MiB  25%      2m10s",
            "shop.users   waiting  0 B of 0 B          -        -",
            "Phase: initial hashing    Scanned: 3/10 collections    Mismatches: 1",
            "- shop.orders _id 7 differs",
            "Ready  False   Copying  the copy is running",
            "39m  Normal  R11     R11 happened",
        ] {
            assert!(s.contains(want), "{want:?} missing from:\n{s}");
        }
        // The last ten, oldest first; others' Events and the plan (not Idle) left out.
        assert!(
            !s.contains("R01 happened") && s.contains("R02 happened"),
            "{s}"
        );
        assert!(s.find("R02 happened") < s.find("R11 happened"), "{s}");
        for absent in ["Other", "PodThing", "Plan"] {
            assert!(!s.contains(absent), "{absent} in:\n{s}");
        }
    }

    #[test]
    fn absent_fields_are_left_out_and_idle_shows_the_plan() {
        let c = cs("Idle", json!({}));
        let s = status_screen(&c, &[], Timestamp::UNIX_EPOCH);
        assert!(s.contains("State: unknown (no status yet)"), "{s}");
        assert!(s.contains("Plan: none yet"), "{s}");
        assert!(s.contains("Events: none"), "{s}");
        for absent in [
            "Lag",
            "Copied",
            "Namespaces",
            "Verifier",
            "Collections",
            "Conditions",
            "ETA",
        ] {
            assert!(!s.contains(absent), "{absent} in:\n{s}");
        }
        let c = cs(
            "Idle",
            json!({ "state": "IDLE", "plan": {
                "safe": false, "databases": 2, "collections": 5, "documents": 1000,
                "dataBytes": 2097152, "estimatedSeconds": 720,
                "estimate": "12m (copy 9m, indexes 2m, catch-up 1m)",
                "risks": ["blocking: no oplog window; raise it", "warning: a big index"]
            }}),
        );
        let s = status_screen(&c, &[], Timestamp::UNIX_EPOCH);
        assert!(
            s.contains("NOT SAFE: 5 collections in 2 databases, 1000 documents, 2.0 MiB; estimate 12m (copy 9m, indexes 2m, catch-up 1m); 2 risk(s), 1 blocking"),
            "{s}"
        );
    }

    #[test]
    fn the_plan_report_says_safe_or_not_and_when_there_is_none() {
        let (text, safe) = plan_report(&cs("Running", json!({ "state": "RUNNING" })));
        assert_eq!(safe, None);
        assert!(
            text.contains("No plan yet for clustersync move in namespace app"),
            "{text}"
        );
        assert!(text.contains("it is Running"), "{text}");
        let (text, safe) = plan_report(&cs(
            "Idle",
            json!({ "plan": {
                "safe": false, "databases": 1, "collections": 2, "views": 1, "documents": 10,
                "dataBytes": 1024, "indexBytes": 2048, "indexes": 3, "estimatedSeconds": 65,
                "probe": "read 1000 documents", "forGeneration": 2,
                "risks": ["blocking: the destination is not empty; empty it"],
                "largestNamespaces": ["a.b: 10 documents, 0.0 MiB"]
            }}),
        ));
        assert_eq!(safe, Some(false));
        for want in [
            "NOT SAFE",
            "1 databases, 2 collections, 1 views, 10 documents",
            "1.0 KiB to copy; 3 indexes to build (2.0 KiB on the source)",
            "Estimate:     1m5s",
            "Measured by:  read 1000 documents",
            "made for generation 2; the spec is at generation 3",
            "- blocking: the destination is not empty; empty it",
            "- a.b: 10 documents, 0.0 MiB",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn commit_is_refused_until_the_engine_can_and_unless_confirmed() {
        use CommitDecision::*;
        let blocked = cs(
            "Running",
            json!({ "state": "RUNNING", "canCommit": false, "commitBlocker": "lag is 40s" }),
        );
        match decide_commit(&blocked, true, true) {
            Refuse(why) => assert!(why.contains("lag is 40s"), "{why}"),
            other => panic!("{other:?}"),
        }
        let no_status = cs("Idle", json!({}));
        assert!(matches!(decide_commit(&no_status, true, false), Refuse(_)));
        let ready = cs("Running", json!({ "state": "RUNNING", "canCommit": true }));
        assert_eq!(decide_commit(&ready, true, false), Commit);
        assert_eq!(decide_commit(&ready, false, true), Confirm);
        match decide_commit(&ready, false, false) {
            Refuse(why) => assert!(why.contains("--yes"), "{why}"),
            other => panic!("{other:?}"),
        }
        let done = cs(
            "Committed",
            json!({ "state": "COMMITTED", "canCommit": false }),
        );
        assert!(matches!(decide_commit(&done, false, false), Nothing(_)));
        let asked = cs(
            "Committed",
            json!({ "state": "RUNNING", "canCommit": true }),
        );
        assert!(matches!(decide_commit(&asked, true, false), Nothing(_)));
    }

    #[test]
    fn mode_changes_stop_at_the_commit() {
        let running = cs("Running", json!({ "state": "RUNNING" }));
        assert_eq!(decide_mode(&running, Mode::Paused), Ok(Some(Mode::Paused)));
        assert_eq!(decide_mode(&running, Mode::Running), Ok(None));
        let done = cs("Committed", json!({ "state": "COMMITTED" }));
        assert!(decide_mode(&done, Mode::Paused).is_err());
        let t = after_mode_change("move", "app", Mode::Idle, Mode::Running);
        assert!(
            t.contains("Idle -> Running") && t.contains("kubectl clustersync status move -n app")
        );
    }

    #[test]
    fn the_engine_pod_is_the_newest_running_one() {
        let pod = |name: &str, created: &str, phase: &str, deleting: bool| -> Pod {
            let mut p = json!({
                "metadata": { "name": name, "creationTimestamp": created },
                "status": { "phase": phase },
            });
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(p).unwrap()
        };
        let pods = vec![
            pod("old", "2026-01-01T00:00:00Z", "Running", false),
            pod("newer", "2026-01-01T00:05:00Z", "Running", false),
            pod("pending", "2026-01-01T00:09:00Z", "Pending", false),
            pod("going", "2026-01-01T00:10:00Z", "Running", true),
        ];
        let name = |p: Option<&Pod>| p.and_then(|p| p.metadata.name.clone());
        assert_eq!(name(pick_engine_pod(&pods)), Some("newer".into()));
        assert_eq!(name(pick_engine_pod(&pods[2..])), Some("pending".into()));
        assert_eq!(name(pick_engine_pod(&pods[3..])), Some("going".into()));
        assert_eq!(name(pick_engine_pod(&[])), None);
    }

    #[test]
    fn a_sync_that_never_started_cannot_be_paused() {
        let idle = cs("Idle", json!({"state": "IDLE"}));
        assert!(decide_mode(&idle, Mode::Paused)
            .unwrap_err()
            .contains("nothing to pause"));
        assert_eq!(decide_mode(&idle, Mode::Running), Ok(Some(Mode::Running)));
    }
}
