//! Facts gathered from each cluster before a sync, and the verdicts drawn from them. Gathering
//! talks to the servers; judging is pure, so every rule is unit-tested without one.

use crate::contract::preflight::ProblemKind;
use std::time::Duration;

use bson::{doc, Bson, Document};
use mongodb::Client;
use serde::Serialize;

use super::roles::{self, Deployment, Requirement, Side, SyncKind, UserRoles};

/// Oldest server major.minor a sync supports on either side (change streams with expanded
/// DDL events).
pub const MIN_VERSION: (u32, u32) = (6, 0);
const REACH_TIMEOUT: Duration = Duration::from_secs(10);
/// Copy speed assumed before any has been measured, for the oplog-window estimate.
pub const DEFAULT_COPY_RATE: u64 = 20_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Topology {
    ReplicaSet { name: String },
    Sharded,
    Standalone,
}

impl std::fmt::Display for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Topology::ReplicaSet { name } => write!(f, "replica set {name}"),
            Topology::Sharded => f.write_str("sharded cluster"),
            Topology::Standalone => f.write_str("standalone"),
        }
    }
}

/// The source's oplog span, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OplogWindow {
    pub first_secs: u32,
    pub last_secs: u32,
    /// Whether the oplog has ever dropped an entry. One that still holds the replica set's
    /// first entry ("initiating set") only reflects the set's age, not its capacity: it is
    /// no reason to warn.
    pub rolled_over: bool,
}

impl OplogWindow {
    pub fn span_secs(&self) -> u64 {
        self.last_secs.saturating_sub(self.first_secs) as u64
    }
}

/// What one cluster told us.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterFacts {
    pub label: String,
    pub hosts: String,
    pub deployment: Deployment,
    /// Why the cluster could not be examined, if it could not.
    pub unreachable: Option<String>,
    pub version: Option<String>,
    pub fcv: Option<String>,
    pub topology: Option<Topology>,
    /// Every member host the cluster reports, for same-cluster detection.
    pub members: Vec<String>,
    pub replica_set_id: Option<String>,
    pub user: Option<UserRoles>,
    pub oplog: Option<OplogWindow>,
    /// Namespaces holding user data (first few).
    pub user_namespaces: Vec<String>,
    pub data_bytes: i64,
}

fn version_tuple(v: &str) -> Option<(u32, u32)> {
    let mut it = v.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Talks to one cluster; never fails: what cannot be learnt is recorded as such. `measure`
/// adds what costs a scan on some servers (data sizes, the oplog window, the namespaces
/// present), which `clustersync check` wants and `/start` learns otherwise.
pub async fn gather(
    client: &Client,
    label: &str,
    hosts: &str,
    scrub: &(dyn Fn(&str) -> String + Sync),
    measure: bool,
) -> ClusterFacts {
    let mut facts = ClusterFacts {
        label: label.to_string(),
        hosts: hosts.to_string(),
        deployment: Deployment::from_hosts(hosts),
        unreachable: None,
        version: None,
        fcv: None,
        topology: None,
        members: vec![],
        replica_set_id: None,
        user: None,
        oplog: None,
        user_namespaces: vec![],
        data_bytes: 0,
    };
    let admin = client.database("admin");
    let hello =
        match tokio::time::timeout(REACH_TIMEOUT, admin.run_command(doc! { "hello": 1 })).await {
            Ok(Ok(h)) => h,
            Ok(Err(e)) => {
                facts.unreachable = Some(scrub(&crate::mongo::describe(&e)));
                return facts;
            }
            Err(_) => {
                facts.unreachable = Some(format!("no answer within {} s", REACH_TIMEOUT.as_secs()));
                return facts;
            }
        };
    facts.topology = Some(if let Ok(name) = hello.get_str("setName") {
        Topology::ReplicaSet {
            name: name.to_string(),
        }
    } else if hello.get_str("msg") == Ok("isdbgrid") {
        Topology::Sharded
    } else {
        Topology::Standalone
    });
    facts.members = hello
        .get_array("hosts")
        .map(|h| {
            h.iter()
                .filter_map(|x| x.as_str().map(|s| s.to_ascii_lowercase()))
                .collect()
        })
        .unwrap_or_default();
    if let Ok(me) = hello.get_str("me") {
        facts.members.push(me.to_ascii_lowercase());
    }
    match roles::fetch(client).await {
        Ok(u) => facts.user = Some(u),
        Err(e) => {
            facts.unreachable = Some(scrub(&crate::mongo::describe(&e)));
            return facts;
        }
    }
    if let Ok(b) = admin.run_command(doc! { "buildInfo": 1 }).await {
        facts.version = b.get_str("version").ok().map(String::from);
    }
    if let Ok(p) = admin
        .run_command(doc! { "getParameter": 1, "featureCompatibilityVersion": 1 })
        .await
    {
        facts.fcv = p
            .get_document("featureCompatibilityVersion")
            .ok()
            .and_then(|f| f.get_str("version").ok())
            .map(String::from);
    }
    if let Ok(c) = admin.run_command(doc! { "replSetGetConfig": 1 }).await {
        facts.replica_set_id = c
            .get_document("config")
            .ok()
            .and_then(|c| c.get_document("settings").ok())
            .and_then(|s| match s.get("replicaSetId") {
                Some(Bson::ObjectId(o)) => Some(o.to_hex()),
                _ => None,
            });
    }
    if !measure {
        return facts;
    }
    facts.oplog = oplog_window(client).await;
    if let Ok(names) = client.list_database_names().await {
        for db in names
            .iter()
            .filter(|d| !crate::contract::filter::is_internal_db(d))
        {
            if let Ok(colls) = client.database(db).list_collection_names().await {
                for c in colls.iter().filter(|c| !c.starts_with("system.")) {
                    if facts.user_namespaces.len() < 5 {
                        facts.user_namespaces.push(format!("{db}.{c}"));
                    }
                }
            }
            if let Ok(s) = client.database(db).run_command(doc! { "dbStats": 1 }).await {
                facts.data_bytes += match s.get("dataSize") {
                    Some(Bson::Int32(v)) => *v as i64,
                    Some(Bson::Int64(v)) => *v,
                    Some(Bson::Double(v)) => *v as i64,
                    _ => 0,
                };
            }
        }
    }
    facts
}

/// The oldest oplog entry: its source time, and whether the oplog has rolled over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OplogStart {
    pub first_secs: u32,
    pub rolled_over: bool,
}

/// Whether `entry` is a replica set's first oplog entry, the no-op written by
/// `replSetInitiate`: while it is the oldest, the oplog has never dropped anything.
fn is_initiation(entry: &Document) -> bool {
    entry.get_str("op") == Ok("n")
        && entry
            .get_document("o")
            .is_ok_and(|o| o.get_str("msg") == Ok("initiating set"))
}

/// The oldest oplog entry, if the oplog can be read.
pub async fn oplog_start(client: &Client) -> Option<OplogStart> {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let first = oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": 1 })
        .projection(doc! { "ts": 1, "op": 1, "o.msg": 1 })
        .await
        .ok()??;
    Some(OplogStart {
        first_secs: first.get_timestamp("ts").ok()?.time,
        rolled_over: !is_initiation(&first),
    })
}

async fn oplog_window(client: &Client) -> Option<OplogWindow> {
    let oplog = client.database("local").collection::<Document>("oplog.rs");
    let ts = |d: Option<Document>| d.and_then(|d| d.get_timestamp("ts").ok()).map(|t| t.time);
    let oldest = oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": 1 })
        .projection(doc! { "ts": 1, "op": 1, "o.msg": 1 })
        .await
        .ok()?;
    let rolled_over = !oldest.as_ref().is_some_and(is_initiation);
    let first = ts(oldest)?;
    let last = ts(oplog
        .find_one(doc! {})
        .sort(doc! { "$natural": -1 })
        .projection(doc! { "ts": 1 })
        .await
        .ok()?)?;
    Some(OplogWindow {
        first_secs: first,
        last_secs: last,
        rolled_over,
    })
}

/// One cluster's verdict.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterVerdict {
    pub side: Side,
    pub facts: ClusterFacts,
    pub required: Requirement,
    pub missing_roles: Vec<&'static str>,
    pub missing_actions: Vec<&'static str>,
    pub grant_command: Option<String>,
}

/// What a sync asks for.
#[derive(Debug, Clone, Copy)]
pub struct Intent {
    pub kind: SyncKind,
    pub pre_existing_destination_data: bool,
    /// Bytes per second the copy is expected to reach, for the oplog-window estimate.
    pub copy_rate: u64,
    /// Also measure data sizes, the oplog window and the destination's namespaces.
    pub measure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The whole preflight result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub kind: SyncKind,
    pub source: ClusterVerdict,
    pub destination: ClusterVerdict,
    /// Problems that block the sync, each naming what to do.
    pub problems: Vec<Problem>,
    /// Risks that do not block it.
    pub warnings: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn problems_of(&self, kind: ProblemKind) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(move |p| p.kind == kind)
    }
}

fn verdict(side: Side, facts: ClusterFacts, kind: SyncKind) -> ClusterVerdict {
    let required = roles::required(kind, facts.deployment, side);
    let (missing_roles, missing_actions, grant_command) = match &facts.user {
        Some(u) => {
            let (r, a) = u.missing(&required);
            let g = u.grant_command(&r);
            (r, a, g)
        }
        None => (vec![], vec![], None),
    };
    ClusterVerdict {
        side,
        facts,
        required,
        missing_roles,
        missing_actions,
        grant_command,
    }
}

/// Judges the gathered facts. Pure.
pub fn judge(source: ClusterFacts, destination: ClusterFacts, intent: Intent) -> Report {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let src = verdict(Side::Source, source, intent.kind);
    let dst = verdict(Side::Destination, destination, intent.kind);
    for v in [&src, &dst] {
        let f = &v.facts;
        let who = format!("{} ({}, the {})", f.label, f.hosts, v.side);
        if let Some(why) = &f.unreachable {
            problems.push(problem(ProblemKind::Unreachable, format!("{who} cannot be examined: {why}; check that it is up, reachable and that the credentials are right")));
            continue;
        }
        if let Some(ver) = &f.version {
            if version_tuple(ver).is_some_and(|t| t < MIN_VERSION) {
                problems.push(problem(
                    ProblemKind::Version,
                    format!(
                    "{who} runs MongoDB {ver}; clustersync needs {}.{} or later: upgrade it first",
                    MIN_VERSION.0, MIN_VERSION.1
                ),
                ));
            } else if let (Some(fcv), Some(t)) = (&f.fcv, version_tuple(ver)) {
                if version_tuple(fcv).is_some_and(|c| c != t) {
                    problems.push(problem(ProblemKind::Version, format!(
                        "{who} runs MongoDB {ver} with featureCompatibilityVersion {fcv}; finish the upgrade (setFeatureCompatibilityVersion: \"{}.{}\") before syncing",
                        t.0, t.1
                    )));
                }
            }
        }
        if !v.missing_roles.is_empty() || !v.missing_actions.is_empty() {
            let user = f
                .user
                .as_ref()
                .and_then(|u| u.user.clone())
                .unwrap_or_default();
            let mut what = Vec::new();
            if !v.missing_roles.is_empty() {
                what.push(format!("roles {}", v.missing_roles.join(", ")));
            }
            if !v.missing_actions.is_empty() {
                what.push(format!(
                    "privilege actions {} (grant them with a custom role)",
                    v.missing_actions.join(", ")
                ));
            }
            problems.push(problem(
                ProblemKind::Roles,
                format!(
                    "{who}: user \"{user}\" lacks {} needed for a {} sync{}",
                    what.join(" and "),
                    intent.kind,
                    v.grant_command
                        .as_ref()
                        .map(|g| format!("; grant them with: {g}"))
                        .unwrap_or_default()
                ),
            ));
        }
    }
    let both_seen = src.facts.unreachable.is_none() && dst.facts.unreachable.is_none();
    if src.facts.unreachable.is_none() && src.facts.topology == Some(Topology::Standalone) {
        problems.push(problem(ProblemKind::Topology, format!(
            "the source ({}) is a standalone server, which has no change streams; convert it to a replica set (a single-node one is enough)",
            src.facts.hosts
        )));
    }
    if both_seen {
        let same_id = matches!((&src.facts.replica_set_id, &dst.facts.replica_set_id), (Some(a), Some(b)) if a == b);
        let shared: Vec<&String> = src
            .facts
            .members
            .iter()
            .filter(|m| dst.facts.members.contains(m))
            .collect();
        if same_id || !shared.is_empty() {
            problems.push(problem(ProblemKind::SameCluster, format!(
                "source and destination are the same cluster ({}); point --cluster0 and --cluster1 at different clusters",
                shared.first().map(|s| s.as_str()).unwrap_or(&src.facts.hosts)
            )));
        }
        let major = |f: &ClusterFacts| f.version.as_deref().and_then(version_tuple).map(|t| t.0);
        if matches!(
            intent.kind,
            SyncKind::Reversing | SyncKind::MultipleReversals
        ) && major(&src.facts).is_some()
            && major(&src.facts) != major(&dst.facts)
        {
            problems.push(problem(
                ProblemKind::Version,
                format!(
                    "a reversible sync needs the same MongoDB major version on both sides, and the source runs {} while the destination runs {}; upgrade one of them, or start without reversible",
                    src.facts.version.as_deref().unwrap_or("?"),
                    dst.facts.version.as_deref().unwrap_or("?")
                ),
            ));
        }
        if !intent.pre_existing_destination_data && !dst.facts.user_namespaces.is_empty() {
            problems.push(problem(ProblemKind::DestinationNotEmpty, format!(
                "the destination ({}) already holds user data ({}); empty it, or set preExistingDestinationData with a namespace filter",
                dst.facts.hosts,
                dst.facts.user_namespaces.join(", ")
            )));
        }
    }
    if let Some(w) = oplog_warning(&src.facts, intent.copy_rate) {
        warnings.push(w);
    }
    Report {
        kind: intent.kind,
        source: src,
        destination: dst,
        problems,
        warnings,
    }
}

fn problem(kind: ProblemKind, message: String) -> Problem {
    Problem { kind, message }
}

/// Warns when the source's oplog covers less time than the copy is expected to take.
fn oplog_warning(source: &ClusterFacts, copy_rate: u64) -> Option<String> {
    let window = source.oplog?;
    if !window.rolled_over {
        // A young replica set's oplog spans only its age; nothing has been dropped yet.
        return None;
    }
    let copy_secs = (source.data_bytes.max(0) as u64) / copy_rate.max(1);
    let span = window.span_secs();
    (span < copy_secs.saturating_mul(2) && copy_secs > 60).then(|| {
        format!(
            "{}; the source's oplog covers {} but the copy of about {} MB is expected to take {}: events could roll off before they are applied. Enlarge the source oplog (replSetResizeOplog) first",
            OPLOG_TOO_SMALL,
            human_duration(span),
            source.data_bytes / 1_000_000,
            human_duration(copy_secs)
        )
    })
}

/// The first words of mongosync's oplog warning.
pub const OPLOG_TOO_SMALL: &str =
    "The amount of available oplog on the source cluster is too small for the sync to complete successfully";

/// mongosync's `estimatedOplogTimeRemaining` wording.
pub fn human_duration(secs: u64) -> String {
    match secs {
        s if s > 72 * 3600 => "more than 72 hours".to_string(),
        s if s >= 3600 => format!("{} hours", s / 3600),
        s if s >= 15 * 60 => format!("{} minutes", s / 60),
        _ => "less than 15 minutes".to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A reachable self-managed replica set on 8.0 whose user is `root`: what every rule
    /// passes; the plan's tests start from it too.
    pub(crate) fn facts(label: &str, hosts: &str) -> ClusterFacts {
        ClusterFacts {
            label: label.into(),
            hosts: hosts.into(),
            deployment: Deployment::SelfManaged,
            unreachable: None,
            version: Some("8.0.4".into()),
            fcv: Some("8.0".into()),
            topology: Some(Topology::ReplicaSet { name: "rs".into() }),
            members: vec![hosts.into()],
            replica_set_id: None,
            user: Some(UserRoles {
                user: Some("u".into()),
                user_db: Some("admin".into()),
                roles: vec!["root".into()],
                actions: vec![],
            }),
            oplog: None,
            user_namespaces: vec![],
            data_bytes: 0,
        }
    }

    fn intent() -> Intent {
        Intent {
            kind: SyncKind::Default,
            pre_existing_destination_data: false,
            copy_rate: 50_000_000,
            measure: true,
        }
    }

    #[test]
    fn a_clean_pair_passes() {
        let r = judge(facts("cluster0", "a:1"), facts("cluster1", "b:1"), intent());
        assert!(r.passed(), "{:?}", r.problems);
    }

    #[test]
    fn each_rule_names_its_problem() {
        let mut s = facts("cluster0", "a:1");
        s.topology = Some(Topology::Standalone);
        s.version = Some("5.0.3".into());
        let mut d = facts("cluster1", "a:1");
        d.fcv = Some("7.0".into());
        d.user_namespaces = vec!["app.users".into()];
        d.user = Some(UserRoles {
            user: Some("syncer".into()),
            user_db: Some("admin".into()),
            roles: vec!["clusterMonitor".into()],
            actions: vec![],
        });
        let r = judge(s, d, intent());
        let all = r
            .problems
            .iter()
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(r.problems_of(ProblemKind::Roles).count(), 1);
        for want in [
            "standalone",
            "5.0.3",
            "featureCompatibilityVersion 7.0",
            "same cluster",
            "app.users",
            "clusterManager",
            "grantRolesToUser(\"syncer\"",
        ] {
            assert!(all.contains(want), "{want} missing from:\n{all}");
        }
        let mut u = facts("cluster1", "b:1");
        u.unreachable = Some("no answer".into());
        let r = judge(facts("cluster0", "a:1"), u, intent());
        assert!(
            r.problems[0].message.contains("cluster1")
                && r.problems[0].message.contains("no answer")
        );
        assert_eq!(r.problems[0].kind, ProblemKind::Unreachable);
    }

    #[test]
    fn reversible_needs_one_major_version() {
        let mut d = facts("cluster1", "b:1");
        d.version = Some("7.0.2".into());
        d.fcv = Some("7.0".into());
        let mut i = intent();
        assert!(judge(facts("cluster0", "a:1"), d.clone(), i).passed());
        i.kind = SyncKind::Reversing;
        let r = judge(facts("cluster0", "a:1"), d, i);
        assert!(
            r.problems[0].message.contains("same MongoDB major version"),
            "{:?}",
            r.problems
        );
    }

    #[test]
    fn short_oplog_warns() {
        let mut s = facts("cluster0", "a:1");
        s.data_bytes = 500_000_000_000;
        s.oplog = Some(OplogWindow {
            first_secs: 1000,
            last_secs: 4600,
            rolled_over: false,
        });
        // A young replica set: the oplog has never dropped an entry, its span is its age.
        let young = judge(s.clone(), facts("cluster1", "b:1"), intent());
        assert!(young.warnings.is_empty(), "{:?}", young.warnings);
        s.oplog.as_mut().unwrap().rolled_over = true;
        let r = judge(s, facts("cluster1", "b:1"), intent());
        assert!(r.passed());
        assert!(
            r.warnings[0].starts_with(OPLOG_TOO_SMALL),
            "{:?}",
            r.warnings
        );
        assert_eq!(human_duration(3 * 3600 + 5), "3 hours");
        assert_eq!(human_duration(600), "less than 15 minutes");
        assert_eq!(human_duration(100 * 3600), "more than 72 hours");
    }
}
