//! Required-role checks: who each cluster's connection user is, which roles it holds
//! (inherited ones included), and which roles the requested kind of sync needs on that side,
//! per mongosync's permission tables (self-managed: by role; Atlas: `atlasAdmin` plus the
//! `bypassWriteBlockingMode` action).

use std::collections::BTreeSet;
use std::fmt;

use bson::{doc, Bson, Document};
use mongodb::Client;
use serde::Serialize;

/// What a sync will do, which decides the roles it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SyncKind {
    /// No write blocking, or the destination only.
    Default,
    /// Destination blocked during the sync and the source at commit.
    DualWriteBlocking,
    /// Started with `reversible: true`.
    Reversing,
    /// A second (or later) `/reverse`.
    MultipleReversals,
}

impl SyncKind {
    /// The kind of a first sync: reversible, or blocking the source at commit, or neither. The
    /// one place the engine's `/start`, its `/preflight` and `clustersync check` decide it.
    pub fn of(reversible: bool, blocks_source: bool) -> SyncKind {
        if reversible {
            SyncKind::Reversing
        } else if blocks_source {
            SyncKind::DualWriteBlocking
        } else {
            SyncKind::Default
        }
    }
}

impl fmt::Display for SyncKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SyncKind::Default => "default",
            SyncKind::DualWriteBlocking => "dual write-blocking",
            SyncKind::Reversing => "reversible",
            SyncKind::MultipleReversals => "multiple reversals",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Side {
    Source,
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Deployment {
    SelfManaged,
    Atlas,
}

impl Deployment {
    /// Atlas clusters are recognised by their host names.
    pub fn from_hosts(hosts: &str) -> Self {
        let atlas = !hosts.is_empty()
            && hosts.split(',').all(|h| {
                let host = h.split(':').next().unwrap_or("").to_ascii_lowercase();
                host.ends_with(".mongodb.net") || host.ends_with(".mongodb-dev.net")
            });
        if atlas {
            Deployment::Atlas
        } else {
            Deployment::SelfManaged
        }
    }
}

const DEFAULT_SOURCE: &[&str] = &["backup", "clusterMonitor", "readAnyDatabase"];
const DEFAULT_DEST: &[&str] = &[
    "clusterManager",
    "clusterMonitor",
    "readWriteAnyDatabase",
    "restore",
];
const DUAL_SOURCE: &[&str] = &[
    "backup",
    "clusterManager",
    "clusterMonitor",
    "readWriteAnyDatabase",
    "restore",
];
const REVERSING_DEST: &[&str] = &[
    "backup",
    "clusterManager",
    "clusterMonitor",
    "dbAdminAnyDatabase",
    "readWriteAnyDatabase",
    "restore",
];

/// What one side needs: roles (on `admin`) and privilege actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub roles: Vec<&'static str>,
    pub actions: Vec<&'static str>,
}

/// mongosync's tables (reference section 4): self-managed from the complete 1.11-1.19 tables,
/// Atlas from the Atlas table.
pub fn required(kind: SyncKind, deployment: Deployment, side: Side) -> Requirement {
    match deployment {
        Deployment::Atlas => Requirement {
            roles: vec!["atlasAdmin"],
            actions: if kind == SyncKind::Default && side == Side::Source {
                vec![]
            } else {
                vec!["bypassWriteBlockingMode"]
            },
        },
        Deployment::SelfManaged => {
            let roles = match (kind, side) {
                (SyncKind::Default, Side::Source) => DEFAULT_SOURCE,
                (SyncKind::Default, Side::Destination) => DEFAULT_DEST,
                (SyncKind::DualWriteBlocking, Side::Source) => DUAL_SOURCE,
                (SyncKind::DualWriteBlocking, Side::Destination) => DEFAULT_DEST,
                (SyncKind::Reversing, Side::Source) => DUAL_SOURCE,
                (SyncKind::Reversing, Side::Destination) => REVERSING_DEST,
                (SyncKind::MultipleReversals, _) => REVERSING_DEST,
            };
            Requirement {
                roles: roles.to_vec(),
                actions: vec![],
            }
        }
    }
}

/// Roles that grant every privilege.
const SUPERUSER: &[&str] = &["root", "__system"];

/// Built-in roles that contain others (server-defined, so `rolesInfo` does not list them as
/// inherited).
fn implied(role: &str) -> &'static [&'static str] {
    match role {
        "root" | "__system" => &[
            "readWriteAnyDatabase",
            "readAnyDatabase",
            "dbAdminAnyDatabase",
            "userAdminAnyDatabase",
            "clusterAdmin",
            "clusterManager",
            "clusterMonitor",
            "hostManager",
            "backup",
            "restore",
        ],
        "clusterAdmin" => &["clusterManager", "clusterMonitor", "hostManager"],
        "readWriteAnyDatabase" => &["readAnyDatabase"],
        _ => &[],
    }
}

/// The connection user's identity and effective roles on one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserRoles {
    /// `None` when the cluster runs without authentication.
    pub user: Option<String>,
    pub user_db: Option<String>,
    /// Roles on `admin` (directly granted or inherited), sorted.
    pub roles: Vec<String>,
    /// Privilege actions held on any resource.
    pub actions: Vec<String>,
}

impl UserRoles {
    pub fn auth_disabled(&self) -> bool {
        self.user.is_none()
    }

    pub fn is_superuser(&self) -> bool {
        self.roles.iter().any(|r| SUPERUSER.contains(&r.as_str()))
    }

    /// The required roles and actions this user lacks.
    pub fn missing(&self, need: &Requirement) -> (Vec<&'static str>, Vec<&'static str>) {
        if self.auth_disabled() || self.is_superuser() {
            return (vec![], vec![]);
        }
        let roles = need
            .roles
            .iter()
            .filter(|r| !self.roles.iter().any(|h| h == *r))
            .copied()
            .collect();
        let actions = need
            .actions
            .iter()
            .filter(|a| !self.actions.iter().any(|h| h == *a))
            .copied()
            .collect();
        (roles, actions)
    }

    /// The mongosh command that grants `missing` roles (no password involved).
    pub fn grant_command(&self, missing: &[&str]) -> Option<String> {
        let user = self.user.as_ref()?;
        if missing.is_empty() {
            return None;
        }
        let roles: Vec<String> = missing
            .iter()
            .map(|r| format!("{{ role: \"{r}\", db: \"admin\" }}"))
            .collect();
        Some(format!(
            "db.getSiblingDB(\"{}\").grantRolesToUser(\"{}\", [{}])",
            self.user_db.as_deref().unwrap_or("admin"),
            user,
            roles.join(", ")
        ))
    }
}

/// Closes a set of roles over the built-in containment table.
pub fn with_implied(roles: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut set: BTreeSet<String> = roles.into_iter().collect();
    loop {
        let extra: Vec<String> = set
            .iter()
            .flat_map(|r| implied(r).iter().map(|s| s.to_string()))
            .filter(|r| !set.contains(r))
            .collect();
        if extra.is_empty() {
            break;
        }
        set.extend(extra);
    }
    set.into_iter().collect()
}

fn role_names(list: Option<&Vec<Bson>>, only_admin: bool) -> Vec<(String, String)> {
    list.into_iter()
        .flatten()
        .filter_map(|r| {
            let r = r.as_document()?;
            let name = r.get_str("role").ok()?.to_string();
            let db = r.get_str("db").unwrap_or("admin").to_string();
            (!only_admin || db == "admin").then_some((name, db))
        })
        .collect()
}

/// Reads the connection user's roles: `connectionStatus` names the user and its roles;
/// `rolesInfo` adds the roles those inherit (custom roles built on built-in ones).
pub async fn fetch(client: &Client) -> mongodb::error::Result<UserRoles> {
    let admin = client.database("admin");
    let status = admin
        .run_command(doc! { "connectionStatus": 1, "showPrivileges": true })
        .await?;
    let auth = status.get_document("authInfo").cloned().unwrap_or_default();
    let users = auth.get_array("authenticatedUsers").ok();
    let first: Option<&Document> = users.and_then(|u| u.first()).and_then(Bson::as_document);
    let Some(first) = first else {
        return Ok(UserRoles {
            user: None,
            user_db: None,
            roles: vec![],
            actions: vec![],
        });
    };
    let user = first.get_str("user").ok().map(String::from);
    let user_db = first.get_str("db").ok().map(String::from);
    let direct = role_names(auth.get_array("authenticatedUserRoles").ok(), false);
    let mut names: Vec<String> = direct
        .iter()
        .filter(|(_, db)| db == "admin")
        .map(|(n, _)| n.clone())
        .collect();
    if !direct.is_empty() {
        let query: Vec<Bson> = direct
            .iter()
            .map(|(role, db)| Bson::Document(doc! { "role": role, "db": db }))
            .collect();
        if let Ok(info) = admin
            .run_command(doc! { "rolesInfo": query, "showBuiltinRoles": true })
            .await
        {
            for role in info.get_array("roles").into_iter().flatten() {
                if let Some(role) = role.as_document() {
                    for (name, _) in role_names(role.get_array("inheritedRoles").ok(), true) {
                        names.push(name);
                    }
                    for (name, _) in role_names(role.get_array("roles").ok(), true) {
                        names.push(name);
                    }
                }
            }
        }
    }
    let mut actions: BTreeSet<String> = BTreeSet::new();
    for p in auth
        .get_array("authenticatedUserPrivileges")
        .into_iter()
        .flatten()
    {
        if let Some(p) = p.as_document() {
            for a in p.get_array("actions").into_iter().flatten() {
                if let Some(a) = a.as_str() {
                    actions.insert(a.to_string());
                }
            }
        }
    }
    Ok(UserRoles {
        user,
        user_db,
        roles: with_implied(names),
        actions: actions.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(roles: &[&str]) -> UserRoles {
        UserRoles {
            user: Some("syncer".into()),
            user_db: Some("admin".into()),
            roles: with_implied(roles.iter().map(|s| s.to_string())),
            actions: vec![],
        }
    }

    #[test]
    fn tables_follow_the_reference() {
        let r = |k, s| required(k, Deployment::SelfManaged, s).roles;
        assert_eq!(
            r(SyncKind::Default, Side::Source),
            vec!["backup", "clusterMonitor", "readAnyDatabase"]
        );
        assert_eq!(
            r(SyncKind::Default, Side::Destination),
            vec![
                "clusterManager",
                "clusterMonitor",
                "readWriteAnyDatabase",
                "restore"
            ]
        );
        assert!(r(SyncKind::DualWriteBlocking, Side::Source).contains(&"readWriteAnyDatabase"));
        assert!(r(SyncKind::Reversing, Side::Destination).contains(&"dbAdminAnyDatabase"));
        assert!(!r(SyncKind::Reversing, Side::Source).contains(&"dbAdminAnyDatabase"));
        assert_eq!(
            r(SyncKind::MultipleReversals, Side::Source),
            r(SyncKind::MultipleReversals, Side::Destination)
        );
        let atlas = required(SyncKind::Default, Deployment::Atlas, Side::Destination);
        assert_eq!(atlas.roles, vec!["atlasAdmin"]);
        assert_eq!(atlas.actions, vec!["bypassWriteBlockingMode"]);
    }

    #[test]
    fn superusers_inheritance_and_missing_roles() {
        let need = required(
            SyncKind::Default,
            Deployment::SelfManaged,
            Side::Destination,
        );
        assert_eq!(user(&["root"]).missing(&need), (vec![], vec![]));
        // clusterAdmin contains clusterManager and clusterMonitor.
        assert_eq!(
            user(&["clusterAdmin", "readWriteAnyDatabase", "restore"]).missing(&need),
            (vec![], vec![])
        );
        let u = user(&["clusterMonitor", "readWriteAnyDatabase"]);
        let (missing, _) = u.missing(&need);
        assert_eq!(missing, vec!["clusterManager", "restore"]);
        assert_eq!(
            u.grant_command(&missing).unwrap(),
            "db.getSiblingDB(\"admin\").grantRolesToUser(\"syncer\", [{ role: \"clusterManager\", db: \"admin\" }, { role: \"restore\", db: \"admin\" }])"
        );
        // readWriteAnyDatabase satisfies readAnyDatabase on a source.
        let src = required(SyncKind::Default, Deployment::SelfManaged, Side::Source);
        assert_eq!(
            user(&["backup", "clusterMonitor", "readWriteAnyDatabase"])
                .missing(&src)
                .0,
            Vec::<&str>::new()
        );
        let open = UserRoles {
            user: None,
            user_db: None,
            roles: vec![],
            actions: vec![],
        };
        assert!(open.auth_disabled() && open.missing(&src).0.is_empty());
    }

    #[test]
    fn atlas_is_recognised_by_host_names() {
        assert_eq!(
            Deployment::from_hosts("cluster0.abcde.mongodb.net"),
            Deployment::Atlas
        );
        assert_eq!(
            Deployment::from_hosts(
                "a-shard-00-00.x.mongodb.net:27017,a-shard-00-01.x.mongodb.net:27017"
            ),
            Deployment::Atlas
        );
        assert_eq!(
            Deployment::from_hosts("db1.example.com:27017"),
            Deployment::SelfManaged
        );
        assert_eq!(
            Deployment::from_hosts("127.0.0.1:27017"),
            Deployment::SelfManaged
        );
    }
}
