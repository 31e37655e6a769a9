//! What a verification found, per namespace, in a form both people and programs read
//! (serde, camelCase JSON).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

/// What a namespace is on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NamespaceKind {
    Collection,
    Timeseries,
    View,
}

impl NamespaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NamespaceKind::Collection => "collection",
            NamespaceKind::Timeseries => "timeseries",
            NamespaceKind::View => "view",
        }
    }
}

impl fmt::Display for NamespaceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One side of a namespace. Views have no documents of their own, so no count or digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SideReport {
    #[serde(rename = "type")]
    pub kind: NamespaceKind,
    pub count: Option<u64>,
    pub digest: Option<Digest>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum MismatchKind {
    /// On the source only.
    MissingOnDestination,
    /// On the destination only.
    ExtraOnDestination,
    /// On both, with other bytes.
    DifferentContent,
}

impl MismatchKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MismatchKind::MissingOnDestination => "missing on destination",
            MismatchKind::ExtraOnDestination => "extra on destination",
            MismatchKind::DifferentContent => "different content",
        }
    }
}

impl fmt::Display for MismatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One differing document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    /// The `_id` in canonical extended JSON, so that `1` and `NumberLong(1)` stay apart.
    pub id: serde_json::Value,
    pub kind: MismatchKind,
    /// For a `differentContent` document: the paths of the differing fields (the first few,
    /// escaped for display, see [`super::diff`]); no value is ever shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// For a `differentContent` document: what differs, in words (`fields: v, sub.y`, `same
    /// fields, different order at top level`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Mismatch {
    pub fn new(id: serde_json::Value, kind: MismatchKind) -> Self {
        Self {
            id,
            kind,
            fields: Vec::new(),
            detail: None,
        }
    }

    /// Records what differs between the source's and the destination's document.
    pub fn set_diff(&mut self, diff: &super::diff::DocumentDiff) {
        if diff.is_empty() {
            return;
        }
        self.fields = diff.fields();
        self.detail = Some(diff.to_string());
    }

    /// The kind, and what differs when known: `different content (fields: v, sub.y)`.
    pub fn verdict(&self) -> String {
        match &self.detail {
            Some(d) => format!("{} ({d})", self.kind),
            None => self.kind.to_string(),
        }
    }

    /// The `_id` in relaxed extended JSON (`5`, `"abc"`, `{"$oid": …}`), for people.
    pub fn id_relaxed(&self) -> String {
        match bson::Bson::try_from(self.id.clone()) {
            Ok(b) => b.into_relaxed_extjson().to_string(),
            Err(_) => self.id.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceReport {
    /// `db.collection`.
    pub namespace: String,
    /// `None` when the namespace does not exist on that side.
    pub source: Option<SideReport>,
    pub destination: Option<SideReport>,
    pub equal: bool,
    /// The first differing documents, in `_id` order.
    pub mismatches: Vec<Mismatch>,
    /// More documents differ than `mismatches` lists.
    pub more_mismatches: bool,
    /// Differences in what the namespace is (existence, type, options, indexes, view
    /// definition), one sentence each.
    pub metadata_differences: Vec<String>,
}

impl NamespaceReport {
    pub fn is_equal(&self) -> bool {
        self.equal
    }
}

/// The outcome of comparing two clusters: one entry per namespace in scope on either side,
/// sorted by namespace.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub namespaces: Vec<NamespaceReport>,
    /// The most mismatching `_id`s listed per namespace.
    pub max_mismatches: usize,
}

impl Report {
    pub fn is_equal(&self) -> bool {
        self.namespaces.iter().all(|n| n.equal)
    }

    pub fn different(&self) -> impl Iterator<Item = &NamespaceReport> {
        self.namespaces.iter().filter(|n| !n.equal)
    }

    pub fn namespace(&self, ns: &str) -> Option<&NamespaceReport> {
        self.namespaces.iter().find(|n| n.namespace == ns)
    }
}

impl Report {
    /// The report as a table for people: one row per namespace, each difference under its
    /// row. Names come from the clusters, so every one is shown through [`terminal_safe`].
    pub fn text(&self, hosts0: &str, hosts1: &str) -> String {
        use std::fmt::Write;
        let mut out = format!(
            "clustersync verify: cluster0 (source) {} vs cluster1 (destination) {}\n\n",
            terminal_safe(hosts0),
            terminal_safe(hosts1)
        );
        let docs = |s: &Option<SideReport>| match s {
            Some(s) => s.count.map_or("-".to_string(), |c| c.to_string()),
            None => "absent".to_string(),
        };
        let kind = |n: &NamespaceReport| match (
            n.source.as_ref().map(|s| s.kind),
            n.destination.as_ref().map(|s| s.kind),
        ) {
            (Some(a), Some(b)) if a != b => format!("{a}/{b}"),
            (Some(a), _) | (None, Some(a)) => a.to_string(),
            (None, None) => "-".to_string(),
        };
        let width = self
            .namespaces
            .iter()
            .map(|n| terminal_safe(&n.namespace).chars().count())
            .max()
            .unwrap_or(0)
            .clamp("NAMESPACE".len(), 60);
        let _ = writeln!(
            out,
            "{:<width$}  {:<10}  {:>11}  {:>16}  RESULT",
            "NAMESPACE", "TYPE", "SOURCE DOCS", "DESTINATION DOCS"
        );
        for n in &self.namespaces {
            let _ = writeln!(
                out,
                "{:<width$}  {:<10}  {:>11}  {:>16}  {}",
                terminal_safe(&n.namespace),
                kind(n),
                docs(&n.source),
                docs(&n.destination),
                if n.equal { "EQUAL" } else { "DIFFERENT" }
            );
            for d in &n.metadata_differences {
                let _ = writeln!(out, "    - {}", terminal_safe(d));
            }
            for m in &n.mismatches {
                let _ = writeln!(
                    out,
                    "    - _id {}: {}",
                    terminal_safe(&m.id_relaxed()),
                    terminal_safe(&m.verdict())
                );
            }
            if n.more_mismatches {
                let _ = writeln!(
                    out,
                    "    - more documents differ (the first {} are listed; see --max-mismatches)",
                    n.mismatches.len()
                );
            }
        }
        if self.namespaces.is_empty() {
            out.push_str("(no namespace in scope on either cluster)\n");
        }
        let total = self.namespaces.len();
        let different = self.different().count();
        if different == 0 {
            let _ = writeln!(out, "\nRESULT: EQUAL ({total} namespaces compared)");
        } else {
            let _ = writeln!(
                out,
                "\nRESULT: DIFFERENT ({different} of {total} namespaces differ)"
            );
        }
        out
    }
}

/// `s` with every control character (escape, newline, ...) and every character that changes
/// how a terminal shows the text around it (bidirectional controls, zero-width characters)
/// written as an escape (`\u{1b}`, `\n`, `\u{202e}`), so that a name read from a cluster cannot
/// drive the terminal or fake a line of the report. Plain text comes back borrowed.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || super::diff::is_invisible(c);
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else if unsafe_char(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

// By hand so that the JSON carries the verdict (`equal`) and a summary, which are derived
// from the namespaces and so are not fields that could disagree with them.
impl Serialize for Report {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Summary {
            namespaces: usize,
            equal: usize,
            different: usize,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            equal: bool,
            summary: Summary,
            max_mismatches: usize,
            namespaces: &'a [NamespaceReport],
        }
        let different = self.different().count();
        Out {
            equal: self.is_equal(),
            summary: Summary {
                namespaces: self.namespaces.len(),
                equal: self.namespaces.len() - different,
                different,
            },
            max_mismatches: self.max_mismatches,
            namespaces: &self.namespaces,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_camel_case_with_verdict() {
        let r = Report {
            namespaces: vec![NamespaceReport {
                namespace: "a.b".into(),
                source: Some(SideReport {
                    kind: NamespaceKind::Collection,
                    count: Some(2),
                    digest: Some(Digest::default()),
                }),
                destination: None,
                equal: false,
                mismatches: vec![
                    Mismatch::new(
                        serde_json::json!({"$numberLong": "5"}),
                        MismatchKind::MissingOnDestination,
                    ),
                    {
                        let mut m = Mismatch::new(
                            serde_json::json!({"$numberInt": "6"}),
                            MismatchKind::DifferentContent,
                        );
                        m.set_diff(&crate::verify::diff::diff(
                            &bson::rawdoc! { "_id": 6, "v": 1, "s": { "a": 1, "b": 1 } },
                            &bson::rawdoc! { "_id": 6, "v": 2, "s": { "b": 1, "a": 1 } },
                        ));
                        m
                    },
                ],
                more_mismatches: false,
                metadata_differences: vec!["collection missing on the destination".into()],
            }],
            max_mismatches: 10,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["equal"], false);
        assert_eq!(v["summary"]["different"], 1);
        let ns = &v["namespaces"][0];
        assert_eq!(ns["source"]["type"], "collection");
        assert_eq!(ns["destination"], serde_json::Value::Null);
        assert_eq!(ns["mismatches"][0]["kind"], "missingOnDestination");
        assert!(ns["mismatches"][0].get("detail").is_none());
        assert_eq!(ns["mismatches"][1]["fields"], serde_json::json!(["v"]));
        assert_eq!(
            ns["mismatches"][1]["detail"],
            "fields: v; s: same fields, different order"
        );
        assert_eq!(
            r.namespaces[0].mismatches[1].verdict(),
            "different content (fields: v; s: same fields, different order)"
        );
        assert_eq!(ns["moreMismatches"], false);
        assert_eq!(
            ns["metadataDifferences"][0],
            "collection missing on the destination"
        );
        assert_eq!(r.namespaces[0].mismatches[0].id_relaxed(), "5");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn an_empty_report_says_nothing_was_in_scope() {
        assert_eq!(
            Report::default().text("a:27017", "b:27017"),
            "clustersync verify: cluster0 (source) a:27017 vs cluster1 (destination) b:27017\n\n\
             NAMESPACE  TYPE        SOURCE DOCS  DESTINATION DOCS  RESULT\n\
             (no namespace in scope on either cluster)\n\
             \nRESULT: EQUAL (0 namespaces compared)\n"
        );
    }

    #[test]
    fn text_escapes_control_characters_from_the_clusters() {
        let side = Some(SideReport {
            kind: NamespaceKind::Collection,
            count: Some(1),
            digest: None,
        });
        let m = Mismatch::new(
            serde_json::json!("\u{1b}]0;owned\u{7}"),
            MismatchKind::MissingOnDestination,
        );
        let r = Report {
            namespaces: vec![NamespaceReport {
                namespace: "db.\u{1b}[31mred\nRESULT: EQUAL\u{202e}".into(),
                source: side.clone(),
                destination: side,
                equal: false,
                mismatches: vec![m],
                more_mismatches: false,
                metadata_differences: vec!["index `\u{1b}[2J` missing on the destination".into()],
            }],
            max_mismatches: 10,
        };
        let t = r.text("a:1", "b:1");
        assert!(
            t.contains(r"db.\u{1b}[31mred\nRESULT: EQUAL\u{202e}"),
            "{t}"
        );
        assert!(t.contains(r"index `\u{1b}[2J` missing"), "{t}");
        assert!(
            !t.chars()
                .any(|c| (c.is_control() && c != '\n') || crate::verify::diff::is_invisible(c)),
            "{t:?}"
        );
        // Each namespace is one line: a newline in a name cannot fake a line of the report.
        assert_eq!(
            t.lines().filter(|l| l.starts_with("RESULT")).count(),
            1,
            "{t}"
        );
        // The JSON keeps the name as it is (serde escapes it).
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r"db.\u001b[31mred"), "{json}");
        assert_eq!(terminal_safe("plain.name"), "plain.name");
        assert!(matches!(
            terminal_safe("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
