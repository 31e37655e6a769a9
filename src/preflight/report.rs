//! `clustersync check` output: a readable table per cluster, or JSON for scripts.

use std::fmt::Write;

use super::checks::{ClusterVerdict, Report};

// Names and messages from the clusters are escaped as `verify`'s report escapes them.
use crate::verify::report::terminal_safe as esc;

fn list(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(|s| esc(s.as_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn cluster(out: &mut String, v: &ClusterVerdict) {
    let f = &v.facts;
    let _ = writeln!(out, "{} ({})  {}", esc(&f.label), v.side, esc(&f.hosts));
    let row = |out: &mut String, k: &str, val: String| {
        let _ = writeln!(out, "  {k:<12} {val}");
    };
    match &f.unreachable {
        Some(why) => {
            row(out, "reachable", format!("NO: {}", esc(why)));
            return;
        }
        None => row(out, "reachable", "yes".into()),
    }
    row(
        out,
        "version",
        format!(
            "{} (featureCompatibilityVersion {})",
            esc(f.version.as_deref().unwrap_or("unknown")),
            esc(f.fcv.as_deref().unwrap_or("unknown"))
        ),
    );
    row(
        out,
        "topology",
        f.topology
            .as_ref()
            .map(|t| esc(&t.to_string()).into_owned())
            .unwrap_or_else(|| "unknown".into()),
    );
    match f.user.as_ref() {
        Some(u) if u.auth_disabled() => {
            row(
                out,
                "user",
                "(authentication disabled: every privilege)".into(),
            );
        }
        Some(u) => {
            row(
                out,
                "user",
                format!(
                    "{}@{}",
                    esc(u.user.as_deref().unwrap_or("?")),
                    esc(u.user_db.as_deref().unwrap_or("admin"))
                ),
            );
            row(out, "roles", list(&u.roles));
        }
        None => row(out, "user", "unknown".into()),
    }
    row(out, "required", list(&v.required.roles));
    let mut missing: Vec<String> = v.missing_roles.iter().map(|s| s.to_string()).collect();
    missing.extend(v.missing_actions.iter().map(|a| format!("action {a}")));
    row(out, "missing", list(&missing));
    if let Some(g) = &v.grant_command {
        row(out, "fix", esc(g).into_owned());
    }
}

pub fn text(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "clustersync preflight for a {} sync\n", r.kind);
    cluster(&mut out, &r.source);
    out.push('\n');
    cluster(&mut out, &r.destination);
    out.push('\n');
    for w in &r.warnings {
        let _ = writeln!(out, "WARNING: {}", esc(w));
    }
    if r.passed() {
        let _ = writeln!(out, "RESULT: ready to sync");
    } else {
        let _ = writeln!(
            out,
            "RESULT: {} problem(s) block the sync:",
            r.problems.len()
        );
        for p in &r.problems {
            let _ = writeln!(out, "  - {}", esc(&p.to_string()));
        }
    }
    out
}

pub fn json(r: &Report) -> String {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("passed".into(), serde_json::Value::Bool(r.passed()));
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::preflight::ProblemKind;
    use crate::preflight::checks::{judge, ClusterFacts, Intent, Topology};
    use crate::preflight::roles::{Deployment, SyncKind, UserRoles};

    fn facts(label: &str, hosts: &str, namespaces: Vec<String>) -> ClusterFacts {
        ClusterFacts {
            label: label.into(),
            hosts: hosts.into(),
            deployment: Deployment::SelfManaged,
            unreachable: None,
            version: Some("8.0.4".into()),
            fcv: Some("8.0".into()),
            topology: Some(Topology::ReplicaSet {
                name: "rs\u{1b}[8m".into(),
            }),
            members: vec![hosts.into()],
            replica_set_id: None,
            user: Some(UserRoles {
                user: Some("u\u{1b}[31m".into()),
                user_db: Some("admin".into()),
                roles: vec!["root".into()],
                actions: vec![],
            }),
            oplog: None,
            user_namespaces: namespaces,
            data_bytes: 0,
        }
    }

    #[test]
    fn text_escapes_what_the_clusters_said() {
        let r = judge(
            facts("cluster0", "a:1", vec![]),
            facts(
                "cluster1",
                "b:1",
                vec!["db.\u{1b}[31mred\nRESULT: ready to sync\u{202e}".into()],
            ),
            Intent {
                kind: SyncKind::Default,
                pre_existing_destination_data: false,
                copy_rate: 50_000_000,
                measure: true,
            },
        );
        assert_eq!(r.problems_of(ProblemKind::DestinationNotEmpty).count(), 1);
        let t = text(&r);
        assert!(
            t.contains(r"db.\u{1b}[31mred\nRESULT: ready to sync\u{202e}"),
            "{t}"
        );
        assert!(t.contains(r"u\u{1b}[31m@admin"), "{t}");
        assert!(t.contains(r"replica set rs\u{1b}[8m"), "{t}");
        assert!(
            !t.chars()
                .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
            "{t:?}"
        );
        assert_eq!(
            t.lines().filter(|l| l.starts_with("RESULT")).count(),
            1,
            "{t}"
        );
        // JSON keeps the names as they are; serde escapes them.
        assert!(json(&r).contains(r"db.\u001b[31mred"));
        assert_eq!(esc("plain"), "plain");
    }
}
