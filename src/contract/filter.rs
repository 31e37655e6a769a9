//! Namespace filters (`includeNamespaces` / `excludeNamespaces`) and the set of namespaces a
//! sync never touches.

// The server evaluates `$regex` with PCRE: lookaround (`^(?!temp)`), backreferences and
// atomic groups included. `fancy_regex` accepts those, where the `regex` crate refuses them.
use fancy_regex::Regex;
use serde::{Deserialize, Serialize};

/// Database holding the engine's own persisted state on the destination.
pub const METADATA_DB: &str = "clustersync_reserved_for_internal_use";

/// Prefix of the scratch databases `clustersync plan` writes its probe to on a destination
/// (and drops again): never synced, so that a plan run beside a sync, or a probe left by a
/// plan killed outright, is never copied anywhere.
pub const PLAN_PROBE_DB_PREFIX: &str = "__clustersync_plan_probe_";

/// Databases never synced: the server's own, ours, and other tools' metadata.
pub fn is_internal_db(db: &str) -> bool {
    matches!(db, "admin" | "local" | "config" | METADATA_DB)
        || db.starts_with(PLAN_PROBE_DB_PREFIX)
        || db.starts_with("__mdb_internal")
        || db.starts_with("mongosync_reserved_for")
        || db.starts_with("mongosync_internal_")
}

/// Collections never synced (`system.*`, including `system.views`, which is how views are
/// stored and is recreated from the view definitions instead).
pub fn is_internal_collection(coll: &str) -> bool {
    coll.starts_with("system.")
}

/// A regular expression as `databaseRegex` and `collectionsRegex` give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexSpec {
    /// A regular expression (MongoDB's `$regex` syntax).
    pub pattern: String,
    /// Regular expression options, e.g. `i` for case-insensitive matching.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub options: String,
}

/// One element of `includeNamespaces` or `excludeNamespaces`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceFilter {
    /// A database, by name (one of `database` and `databaseRegex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Collections of that database, by name; all of them when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections: Option<Vec<String>>,
    /// Databases whose names match a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_regex: Option<RegexSpec>,
    /// Collections whose names match a regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collections_regex: Option<RegexSpec>,
}

/// Why a namespace filter is refused; `/start` answers it as `InvalidStartOptions`. Each
/// variant carries the filter's position (from 0) in its list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    /// The filter names neither `database` nor `databaseRegex`.
    #[error("filter #{0} needs \"database\" or \"databaseRegex\"")]
    NoDatabase(usize),
    /// The filter sets both `database` and `databaseRegex`.
    #[error("filter #{0} sets both \"database\" and \"databaseRegex\"; keep one")]
    BothDatabase(usize),
    /// The filter names, by exact name, a database or collection that is never synced.
    #[error("filter #{index}: {what} names a system database or collection ({name}), which is never synced")]
    System {
        /// The filter's position in its list.
        index: usize,
        /// The field that names it: `database` or `collections`.
        what: &'static str,
        /// The name given.
        name: String,
    },
    /// A `databaseRegex` or `collectionsRegex` pattern does not compile.
    #[error("filter #{index}: regex {pattern:?} is invalid: {reason}")]
    BadRegex {
        /// The filter's position in its list.
        index: usize,
        /// The pattern as given.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// `database` is an empty string, or `collections` holds one: it names nothing, so the
    /// filter would silently select nothing (or exclude nothing).
    #[error("{list}[{index}].{what} {}", empty_name_advice(.what))]
    EmptyName {
        /// `includeNamespaces` or `excludeNamespaces`.
        list: &'static str,
        /// The filter's position in its list.
        index: usize,
        /// The field: `database` or `collections`.
        what: &'static str,
    },
    /// A regex option other than `i`, `m`, `s`, `x` (and `u`, which is accepted and ignored).
    #[error("filter #{index}: regex option {option:?} is not supported; use a combination of i, m, s, x")]
    BadOption {
        /// The filter's position in its list.
        index: usize,
        /// The option refused.
        option: char,
    },
}

/// What is wrong with an empty name in `what`, and what to do instead.
fn empty_name_advice(what: &str) -> &'static str {
    if what == "database" {
        "is an empty string, which names no database; give the database's name, or use \"databaseRegex\""
    } else {
        "holds an empty string, which names no collection; list collections by name, or leave \"collections\" out to take the whole database"
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Regex(Regex),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(e) => e == s,
            // An error is a backtracking limit hit: not reachable with namespace names (at
            // most 255 bytes), and a non-match rather than a panic if it were.
            Matcher::Regex(r) => r.is_match(s).unwrap_or(false),
        }
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    db: Matcher,
    colls: Option<Vec<String>>,
    colls_regex: Option<Regex>,
}

impl Compiled {
    fn matches_db(&self, db: &str) -> bool {
        self.db.matches(db)
    }
    /// A filter without collection criteria covers the whole database.
    fn whole_db(&self) -> bool {
        self.colls.is_none() && self.colls_regex.is_none()
    }
    fn matches(&self, db: &str, coll: &str) -> bool {
        if !self.db.matches(db) {
            return false;
        }
        if self.whole_db() {
            return true;
        }
        self.colls
            .as_ref()
            .is_some_and(|c| c.iter().any(|n| n == coll))
            || self
                .colls_regex
                .as_ref()
                .is_some_and(|r| r.is_match(coll).unwrap_or(false))
    }
}

fn compile_regex(index: usize, spec: &RegexSpec) -> Result<Regex, FilterError> {
    let mut flags = String::new();
    for c in spec.options.chars() {
        match c {
            'i' | 'm' | 's' | 'x' => flags.push(c),
            'u' => {}
            other => {
                return Err(FilterError::BadOption {
                    index,
                    option: other,
                })
            }
        }
    }
    let pattern = if flags.is_empty() {
        spec.pattern.clone()
    } else {
        format!("(?{flags}){}", spec.pattern)
    };
    Regex::new(&pattern).map_err(|e| FilterError::BadRegex {
        index,
        pattern: spec.pattern.clone(),
        reason: e.to_string(),
    })
}

fn compile(list: &'static str, index: usize, f: &NamespaceFilter) -> Result<Compiled, FilterError> {
    let empty = |what| FilterError::EmptyName { list, index, what };
    if f.database.as_deref() == Some("") {
        return Err(empty("database"));
    }
    if f.collections.iter().flatten().any(String::is_empty) {
        return Err(empty("collections"));
    }
    let db = match (&f.database, &f.database_regex) {
        (Some(_), Some(_)) => return Err(FilterError::BothDatabase(index)),
        (None, None) => return Err(FilterError::NoDatabase(index)),
        (Some(d), None) => {
            if is_internal_db(d) {
                return Err(FilterError::System {
                    index,
                    what: "database",
                    name: d.clone(),
                });
            }
            Matcher::Exact(d.clone())
        }
        (None, Some(r)) => Matcher::Regex(compile_regex(index, r)?),
    };
    if let Some(c) = f
        .collections
        .iter()
        .flatten()
        .find(|c| is_internal_collection(c))
    {
        return Err(FilterError::System {
            index,
            what: "collections",
            name: c.clone(),
        });
    }
    let colls_regex = f
        .collections_regex
        .as_ref()
        .map(|r| compile_regex(index, r))
        .transpose()?;
    Ok(Compiled {
        db,
        colls: f.collections.clone(),
        colls_regex,
    })
}

/// Which namespaces a sync covers: include first (everything when empty), then exclude;
/// internal databases and `system.*` collections never.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    include: Vec<Compiled>,
    exclude: Vec<Compiled>,
}

impl Scope {
    /// Compiles `includeNamespaces` and `excludeNamespaces`; the first bad filter is refused.
    pub fn compile(
        include: &[NamespaceFilter],
        exclude: &[NamespaceFilter],
    ) -> Result<Self, FilterError> {
        Ok(Self {
            include: include
                .iter()
                .enumerate()
                .map(|(i, f)| compile("includeNamespaces", i, f))
                .collect::<Result<_, _>>()?,
            exclude: exclude
                .iter()
                .enumerate()
                .map(|(i, f)| compile("excludeNamespaces", i, f))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether any include or exclude filter was given (a partial sync).
    pub fn is_filtered(&self) -> bool {
        !self.include.is_empty() || !self.exclude.is_empty()
    }

    /// Whether any collection of `db` can be in scope (used to skip whole databases).
    pub fn may_include_db(&self, db: &str) -> bool {
        if is_internal_db(db) {
            return false;
        }
        let included = self.include.is_empty() || self.include.iter().any(|f| f.matches_db(db));
        included
            && !self
                .exclude
                .iter()
                .any(|f| f.matches_db(db) && f.whole_db())
    }

    /// Whether every collection of `db`, including ones created later, is in scope.
    pub fn includes_whole_db(&self, db: &str) -> bool {
        if is_internal_db(db) {
            return false;
        }
        let included = self.include.is_empty()
            || self
                .include
                .iter()
                .any(|f| f.matches_db(db) && f.whole_db());
        included && !self.exclude.iter().any(|f| f.matches_db(db))
    }

    /// Whether the collection `db.coll` is in scope.
    pub fn includes(&self, db: &str, coll: &str) -> bool {
        if is_internal_db(db) || is_internal_collection(coll) {
            return false;
        }
        let included = self.include.is_empty() || self.include.iter().any(|f| f.matches(db, coll));
        included && !self.exclude.iter().any(|f| f.matches(db, coll))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(json: &str) -> Vec<NamespaceFilter> {
        serde_json::from_str(json).unwrap()
    }

    /// mongosync hands the pattern to the server (PCRE): a negative lookahead, refused by
    /// the `regex` crate, selects every database but the `temp` ones.
    #[test]
    fn regexes_have_the_servers_pcre_features() {
        let s = Scope::compile(
            &f(r#"[{"databaseRegex":{"pattern":"^(?!temp).*","options":""}}]"#),
            &f(r#"[{"database":"app","collectionsRegex":{"pattern":"^(\\w)\\1","options":"i"}}]"#),
        )
        .unwrap();
        assert!(s.includes("app", "orders"));
        assert!(s.includes("shop", "x"));
        assert!(!s.includes("temp1", "x"), "lookahead");
        assert!(
            !s.includes("app", "AAlog"),
            "a backreference, case-insensitive"
        );
        assert!(
            !s.includes("__mdb_internal_atlas", "x"),
            "Atlas-internal databases"
        );
    }

    #[test]
    fn no_filter_means_everything_but_internals() {
        let s = Scope::compile(&[], &[]).unwrap();
        assert!(s.includes("app", "users"));
        assert!(!s.includes("admin", "x"));
        assert!(!s.includes(METADATA_DB, "state"));
        assert!(!s.includes("app", "system.views"));
        assert!(!s.includes("__mdb_internal_mongosync", "x"));
        assert!(!s.is_filtered());
    }

    #[test]
    fn include_then_exclude() {
        let inc = f(
            r#"[{"database":"sales"},{"database":"hr","collections":["staff","pay"]},
                       {"databaseRegex":{"pattern":"^log_","options":"i"},"collectionsRegex":{"pattern":"^2026"}}]"#,
        );
        let exc = f(r#"[{"database":"sales","collections":["tmp"]},{"database":"LOG_old"}]"#);
        let s = Scope::compile(&inc, &exc).unwrap();
        assert!(s.includes("sales", "orders"));
        assert!(!s.includes("sales", "tmp"));
        assert!(s.includes("hr", "staff") && !s.includes("hr", "other"));
        assert!(s.includes("Log_eu", "2026-01") && !s.includes("log_eu", "2025-01"));
        assert!(!s.includes("LOG_old", "2026-01"));
        assert!(!s.includes("other", "x"));
        assert!(!s.includes_whole_db("sales")); // sales.tmp is excluded
        assert!(
            s.may_include_db("sales") && !s.may_include_db("LOG_old") && !s.may_include_db("other")
        );
    }

    #[test]
    fn exclude_only() {
        let s = Scope::compile(&[], &f(r#"[{"databaseRegex":{"pattern":"^tmp"}}]"#)).unwrap();
        assert!(s.includes("app", "a") && !s.includes("tmp1", "a"));
        assert!(s.includes_whole_db("app"));
    }

    #[test]
    fn bad_filters_are_named() {
        let e = Scope::compile(
            &f(r#"[{"database":"a"},{"databaseRegex":{"pattern":"("}}]"#),
            &[],
        )
        .unwrap_err();
        assert!(matches!(e, FilterError::BadRegex { index: 1, .. }), "{e}");
        let e = Scope::compile(&f(r#"[{"database":"admin"}]"#), &[]).unwrap_err();
        assert!(e.to_string().contains("system database"));
        let e = Scope::compile(
            &f(r#"[{"databaseRegex":{"pattern":"a","options":"q"}}]"#),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("'q'"), "{e}");
        assert!(serde_json::from_str::<Vec<NamespaceFilter>>(
            r#"[{"database":"a","colls":["x"]}]"#
        )
        .is_err());
    }

    #[test]
    fn empty_names_are_refused_naming_the_field() {
        let e = Scope::compile(&f(r#"[{"database":"a"},{"database":""}]"#), &[]).unwrap_err();
        assert_eq!(
            e,
            FilterError::EmptyName {
                list: "includeNamespaces",
                index: 1,
                what: "database"
            }
        );
        let msg = e.to_string();
        assert!(
            msg.starts_with("includeNamespaces[1].database is an empty string")
                && msg.contains("give the database's name"),
            "{msg}"
        );
        let e =
            Scope::compile(&f(r#"[{"database":"a","collections":["x",""]}]"#), &[]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("includeNamespaces[0].collections holds an empty string"),
            "{e}"
        );
        let e = Scope::compile(&[], &f(r#"[{"database":""}]"#)).unwrap_err();
        assert!(
            e.to_string().starts_with("excludeNamespaces[0].database"),
            "{e}"
        );
        // A regex may match the empty string; only exact names are refused.
        assert!(Scope::compile(&f(r#"[{"databaseRegex":{"pattern":""}}]"#), &[]).is_ok());
    }
}
