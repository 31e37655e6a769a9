//! `clustersync check` output: a readable table per cluster, or JSON for scripts.

use std::fmt::Write;

use super::checks::{ClusterVerdict, Report};

fn list(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn cluster(out: &mut String, v: &ClusterVerdict) {
    let f = &v.facts;
    let _ = writeln!(out, "{} ({})  {}", f.label, v.side, f.hosts);
    let row = |out: &mut String, k: &str, val: String| {
        let _ = writeln!(out, "  {k:<12} {val}");
    };
    match &f.unreachable {
        Some(why) => {
            row(out, "reachable", format!("NO: {why}"));
            return;
        }
        None => row(out, "reachable", "yes".into()),
    }
    row(
        out,
        "version",
        format!(
            "{} (featureCompatibilityVersion {})",
            f.version.as_deref().unwrap_or("unknown"),
            f.fcv.as_deref().unwrap_or("unknown")
        ),
    );
    row(
        out,
        "topology",
        f.topology
            .as_ref()
            .map(|t| t.to_string())
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
                    u.user.as_deref().unwrap_or("?"),
                    u.user_db.as_deref().unwrap_or("admin")
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
        row(out, "fix", g.clone());
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
        let _ = writeln!(out, "WARNING: {w}");
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
            let _ = writeln!(out, "  - {p}");
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
