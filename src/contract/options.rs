//! The `/api/v1/start` request body: mongosync's fields, parsed strictly.

use serde::{Deserialize, Serialize};

use crate::contract::filter::NamespaceFilter;
use crate::contract::write_blocking::Mode;

/// One of the two clusters named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub enum ClusterLabel {
    /// `cluster0`: the cluster given by `--cluster0`.
    #[serde(rename = "cluster0")]
    Cluster0,
    /// `cluster1`: the cluster given by `--cluster1`.
    #[serde(rename = "cluster1")]
    Cluster1,
}

impl ClusterLabel {
    /// The label as the API and the flags write it.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterLabel::Cluster0 => "cluster0",
            ClusterLabel::Cluster1 => "cluster1",
        }
    }
    /// 0 or 1, to index per-cluster arrays.
    pub fn index(self) -> usize {
        match self {
            ClusterLabel::Cluster0 => 0,
            ClusterLabel::Cluster1 => 1,
        }
    }
    /// The other cluster.
    pub fn other(self) -> Self {
        match self {
            ClusterLabel::Cluster0 => ClusterLabel::Cluster1,
            ClusterLabel::Cluster1 => ClusterLabel::Cluster0,
        }
    }
}

/// When the destination's indexes are built (`buildIndexes`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum BuildIndexes {
    /// Build the destination's indexes after copying the data (the default, fastest).
    #[default]
    AfterDataCopy,
    /// Build the destination's indexes before copying the data.
    BeforeDataCopy,
    /// As `beforeDataCopy`, but hashed indexes are not built.
    ExcludeHashed,
    /// As `afterDataCopy`, but hashed indexes are not built.
    ExcludeHashedAfterCopy,
    /// Build no indexes but `_id`; not allowed with `reversible`.
    Never,
}

impl BuildIndexes {
    /// Whether user indexes are built before the copy (`true`) or after it (`false`);
    /// `None` for `never`.
    pub fn before_copy(self) -> Option<bool> {
        match self {
            BuildIndexes::BeforeDataCopy | BuildIndexes::ExcludeHashed => Some(true),
            BuildIndexes::AfterDataCopy | BuildIndexes::ExcludeHashedAfterCopy => Some(false),
            BuildIndexes::Never => None,
        }
    }
    /// Whether hashed indexes are left out (`excludeHashed`, `excludeHashedAfterCopy`).
    pub fn skips_hashed(self) -> bool {
        matches!(
            self,
            BuildIndexes::ExcludeHashed | BuildIndexes::ExcludeHashedAfterCopy
        )
    }
}

/// `verification`: the embedded verifier's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verification {
    /// Run the embedded verifier (on by default): it compares the clusters during the sync
    /// and again at commit, and holds the commit back on a difference.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// One element of `copyInNaturalOrder`: collections copied in natural (record) order rather
/// than by `_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NaturalOrderEntry {
    /// The database.
    pub database: String,
    /// Its collections to copy in natural order; all of them when empty.
    #[serde(default)]
    pub collections: Vec<String>,
}

/// The body of `POST /api/v1/start`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartOptions {
    /// `source`: the cluster copied from.
    pub source: ClusterLabel,
    /// `destination`: the cluster copied to.
    pub destination: ClusterLabel,
    /// `includeNamespaces`: the namespaces to sync; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<NamespaceFilter>,
    /// `excludeNamespaces`: namespaces left out, applied after `includeNamespaces`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<NamespaceFilter>,
    /// `buildIndexes`: when the destination's indexes are built.
    #[serde(default)]
    pub build_indexes: BuildIndexes,
    /// `reversible`: whether `/reverse` may sync back from the destination after the commit.
    #[serde(default)]
    pub reversible: bool,
    /// `verification`: the embedded verifier's settings; it runs when this is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// `preExistingDestinationData`: the destination may hold data of its own outside the
    /// synced namespaces, which is why a filter is required with it.
    #[serde(default)]
    pub pre_existing_destination_data: bool,
    /// `detectRandomId` (on by default): large collections whose `_id`s look random are copied
    /// in natural order, as an `_id`-ordered read of them is random I/O on the source.
    #[serde(default = "yes")]
    pub detect_random_id: bool,
    /// `copyInNaturalOrder`: collections copied in natural order instead of by `_id`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_in_natural_order: Vec<NaturalOrderEntry>,
    /// `skipDiskSpaceCheck`: skips `/start`'s check of the destination's free space against
    /// the source's on-disk size (`InsufficientDestinationDiskSpace`).
    #[serde(default)]
    pub skip_disk_space_check: bool,
    /// Accepted only to answer with a precise error: replica-set to sharded sync needs a
    /// sharded destination.
    #[serde(default, skip_serializing)]
    pub sharding: Option<serde_json::Value>,
    /// mongosync's write blocking (removed from its `/start` in 1.20, which decides by itself;
    /// clustersync accepts it to let a user choose, and decides as 1.20 does without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_user_write_blocking: Option<crate::contract::write_blocking::Request>,
}

/// A `/start` body that parsed but asks for something impossible.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidStart {
    /// `source` and `destination` name the same cluster.
    #[error("source and destination are both {0}; set one to cluster0 and the other to cluster1")]
    SameCluster(&'static str),
    /// `reversible` with `buildIndexes: never`.
    #[error("buildIndexes \"never\" cannot be combined with reversible: true; choose another buildIndexes value or drop reversible")]
    ReversibleWithoutIndexes,
    /// `reversible` with `includeNamespaces` or `excludeNamespaces`.
    #[error("reversible sync cannot be combined with includeNamespaces/excludeNamespaces; remove the filters or reversible")]
    ReversibleWithFilter,
    /// `reversible` with `preExistingDestinationData`.
    #[error(
        "reversible sync cannot be combined with preExistingDestinationData; remove one of them"
    )]
    ReversibleWithPreExisting,
    /// `preExistingDestinationData` without a namespace filter.
    #[error("preExistingDestinationData requires includeNamespaces or excludeNamespaces, so that synced namespaces cannot collide with the destination's own")]
    PreExistingWithoutFilter,
    /// A namespace filter is refused; carries the `FilterError` message.
    #[error("invalid namespace filter: {0}")]
    Filter(String),
    /// `sharding` was given: it is for a sharded destination, and sharded topologies are not
    /// supported yet.
    #[error("the sharding option is only for a sharded destination, and the destination is not sharded; remove \"sharding\"")]
    ShardingOnUnsharded,
    /// `enableUserWriteBlocking: "sourceAndDestination"` with a namespace filter.
    #[error("enableUserWriteBlocking \"sourceAndDestination\" cannot be combined with a namespace filter (the whole source would be blocked for a partial sync); use \"destinationOnly\"")]
    DualBlockingWithFilter,
    /// Write blocking other than `none` with `preExistingDestinationData`.
    #[error("write blocking cannot be combined with preExistingDestinationData (the destination keeps serving its own data); set enableUserWriteBlocking to \"none\"")]
    BlockingWithPreExisting,
    /// `reversible` with write blocking other than `sourceAndDestination`.
    #[error("a reversible sync needs enableUserWriteBlocking \"sourceAndDestination\" (the default), so that neither cluster takes writes it would not sync back")]
    ReversibleWithoutDualBlocking,
}

impl StartOptions {
    /// Checks the combinations mongosync rejects and compiles the namespace filters, once: the
    /// scope returned is the one the sync uses, so a bad regex is refused before anything
    /// moves and no caller can fall back to a wider scope.
    pub fn validate(&self) -> Result<crate::contract::filter::Scope, InvalidStart> {
        if self.source == self.destination {
            return Err(InvalidStart::SameCluster(self.source.as_str()));
        }
        if self.reversible && self.build_indexes == BuildIndexes::Never {
            return Err(InvalidStart::ReversibleWithoutIndexes);
        }
        let filtered = !self.include_namespaces.is_empty() || !self.exclude_namespaces.is_empty();
        if self.reversible && filtered {
            return Err(InvalidStart::ReversibleWithFilter);
        }
        if self.reversible && self.pre_existing_destination_data {
            return Err(InvalidStart::ReversibleWithPreExisting);
        }
        if self.pre_existing_destination_data && !filtered {
            return Err(InvalidStart::PreExistingWithoutFilter);
        }
        if let Some(r) = self.enable_user_write_blocking {
            let mode = r.mode();
            if mode == Mode::SourceAndDestination && filtered {
                return Err(InvalidStart::DualBlockingWithFilter);
            }
            if mode != Mode::None && self.pre_existing_destination_data {
                return Err(InvalidStart::BlockingWithPreExisting);
            }
            if self.reversible && mode != Mode::SourceAndDestination {
                return Err(InvalidStart::ReversibleWithoutDualBlocking);
            }
        }
        if self.sharding.is_some() {
            return Err(InvalidStart::ShardingOnUnsharded);
        }
        crate::contract::filter::Scope::compile(&self.include_namespaces, &self.exclude_namespaces)
            .map_err(|e| InvalidStart::Filter(e.to_string()))
    }

    /// The write blocking asked for: the explicit request, or mongosync 1.20's choice (none with
    /// pre-existing destination data, the destination only with a filter, both otherwise).
    pub fn write_blocking(&self) -> (Mode, bool) {
        match self.enable_user_write_blocking {
            Some(r) => (r.mode(), true),
            None if self.pre_existing_destination_data => (Mode::None, false),
            None if !self.include_namespaces.is_empty() || !self.exclude_namespaces.is_empty() => {
                (Mode::DestinationOnly, false)
            }
            None => (Mode::SourceAndDestination, false),
        }
    }

    /// Whether `/start` asks for the embedded verifier (`verification.enabled`, true when
    /// absent); the engine's own `disable_verification` setting can still turn it off.
    pub fn verification_enabled(&self) -> bool {
        self.verification.as_ref().is_none_or(|v| v.enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StartOptions, serde_json::Error> {
        serde_json::from_str(s)
    }

    #[test]
    fn minimal_body_takes_mongosync_defaults() {
        let o = parse(r#"{"source":"cluster0","destination":"cluster1"}"#).unwrap();
        assert_eq!(o.build_indexes, BuildIndexes::AfterDataCopy);
        assert!(!o.reversible && !o.pre_existing_destination_data);
        assert!(o.verification_enabled());
        o.validate().unwrap();
    }

    #[test]
    fn strict_parsing() {
        assert!(parse(r#"{"source":"cluster0"}"#)
            .unwrap_err()
            .to_string()
            .contains("missing field `destination`"));
        assert!(
            parse(r#"{"source":"cluster0","destination":"cluster1","bogus":1}"#)
                .unwrap_err()
                .to_string()
                .contains("unknown field `bogus`")
        );
        assert!(
            parse(r#"{"source":"cluster0","destination":"cluster1","reversible":"yes"}"#)
                .unwrap_err()
                .to_string()
                .contains("invalid type")
        );
        assert!(parse(r#"{"source":"cluster2","destination":"cluster1"}"#)
            .unwrap_err()
            .to_string()
            .contains("unknown variant"));
        assert!(parse(
            r#"{"source":"cluster0","destination":"cluster1","buildIndexes":"sometimes"}"#
        )
        .is_err());
    }

    #[test]
    fn write_blocking_defaults_follow_mongosync_1_20() {
        let wb = |s: &str| parse(s).unwrap().write_blocking();
        assert_eq!(
            wb(r#"{"source":"cluster0","destination":"cluster1"}"#),
            (Mode::SourceAndDestination, false)
        );
        assert_eq!(
            wb(
                r#"{"source":"cluster0","destination":"cluster1","includeNamespaces":[{"database":"a"}]}"#
            ),
            (Mode::DestinationOnly, false)
        );
        assert_eq!(
            wb(
                r#"{"source":"cluster0","destination":"cluster1","preExistingDestinationData":true,"includeNamespaces":[{"database":"a"}]}"#
            ),
            (Mode::None, false)
        );
        assert_eq!(
            wb(r#"{"source":"cluster0","destination":"cluster1","enableUserWriteBlocking":false}"#),
            (Mode::None, true)
        );
    }

    #[test]
    fn rejected_combinations() {
        let bad = [
            (
                r#"{"source":"cluster0","destination":"cluster0"}"#,
                "both cluster0",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","reversible":true,"buildIndexes":"never"}"#,
                "never",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","reversible":true,"includeNamespaces":[{"database":"a"}]}"#,
                "filters",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","preExistingDestinationData":true}"#,
                "requires includeNamespaces",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","enableUserWriteBlocking":true,"includeNamespaces":[{"database":"a"}]}"#,
                "destinationOnly",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","enableUserWriteBlocking":"destinationOnly","preExistingDestinationData":true,"includeNamespaces":[{"database":"a"}]}"#,
                "\"none\"",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","enableUserWriteBlocking":"none","reversible":true}"#,
                "reversible",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","sharding":{"shardingEntries":[]}}"#,
                "sharded",
            ),
            (
                r#"{"source":"cluster0","destination":"cluster1","includeNamespaces":[{"collections":["a"]}]}"#,
                "database",
            ),
        ];
        for (body, want) in bad {
            let e = parse(body).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains(want), "{body}: {e}");
        }
    }
}
