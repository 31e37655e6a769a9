//! `ClusterSync` (`clustersync.io/v1alpha1`): what a user applies, and the status the
//! controller writes back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::engine::filter::NamespaceFilter;
use crate::engine::options::{BuildIndexes, Verification};

/// Rejected at admission: the same Secret key on both sides names one cluster twice.
const DIFFERENT_SECRETS: &str =
    "self.source.name != self.destination.name || self.source.key != self.destination.key";

/// Rejected at admission once the sync has started: the clusters, the direction-defining
/// options and the namespace filters cannot change mid-sync (restart from scratch instead).
const FROZEN_AFTER_START: &str = "!has(oldSelf.status) || !has(oldSelf.status.state) || oldSelf.status.state == 'IDLE' || (self.spec.source == oldSelf.spec.source && self.spec.destination == oldSelf.spec.destination && self.spec.reversible == oldSelf.spec.reversible && (has(self.spec.includeNamespaces) ? self.spec.includeNamespaces : []) == (has(oldSelf.spec.includeNamespaces) ? oldSelf.spec.includeNamespaces : []) && (has(self.spec.excludeNamespaces) ? self.spec.excludeNamespaces : []) == (has(oldSelf.spec.excludeNamespaces) ? oldSelf.spec.excludeNamespaces : []))";

/// What the user wants the sync to be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Ready, nothing started.
    #[default]
    Idle,
    /// Start the sync, or resume it.
    Running,
    /// Pause it.
    Paused,
    /// Commit as soon as the engine can.
    Committed,
}

/// A Secret key holding a connection string (`mongodb://` or `mongodb+srv://`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name, in the ClusterSync's namespace.
    pub name: String,
    /// Key in the Secret.
    #[serde(default = "default_key")]
    pub key: String,
}

fn default_key() -> String {
    "uri".into()
}

/// mongosync's write blocking choice (defaults as mongosync 1.20 decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WriteBlocking {
    None,
    DestinationOnly,
    SourceAndDestination,
}

/// The engine's pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// Image running `clustersync engine` (defaults to the operator's own image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// `--loadLevel`, 1 (lightest) to 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4))]
    pub load_level: Option<u8>,
    /// `--verbosity`: TRACE, DEBUG, INFO, WARN, ERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<String>,
}

impl EngineSpec {
    /// This spec with every field it leaves unset taken from `defaults` (the operator's
    /// configured defaults for engine pods).
    pub fn or_defaults(&self, defaults: &EngineSpec) -> EngineSpec {
        EngineSpec {
            image: self.image.clone().or_else(|| defaults.image.clone()),
            resources: self
                .resources
                .clone()
                .or_else(|| defaults.resources.clone()),
            node_selector: if self.node_selector.is_empty() {
                defaults.node_selector.clone()
            } else {
                self.node_selector.clone()
            },
            tolerations: if self.tolerations.is_empty() {
                defaults.tolerations.clone()
            } else {
                self.tolerations.clone()
            },
            affinity: self.affinity.clone().or_else(|| defaults.affinity.clone()),
            priority_class_name: self
                .priority_class_name
                .clone()
                .or_else(|| defaults.priority_class_name.clone()),
            load_level: self.load_level.or(defaults.load_level),
            verbosity: self
                .verbosity
                .clone()
                .or_else(|| defaults.verbosity.clone()),
        }
    }
}

/// A MongoDB cluster-to-cluster sync.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "clustersync.io",
    version = "v1alpha1",
    kind = "ClusterSync",
    namespaced,
    shortname = "csync",
    status = "ClusterSyncStatus",
    validation = Rule::new(FROZEN_AFTER_START).message("source, destination, reversible and the namespace filters cannot change after the sync has started; create a new ClusterSync to sync differently"),
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.lagSeconds"}"#,
    printcolumn = r#"{"name":"Copied","type":"string","jsonPath":".status.copiedPercent"}"#,
    printcolumn = r#"{"name":"CanCommit","type":"boolean","jsonPath":".status.canCommit"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(DIFFERENT_SECRETS).message("source and destination name the same Secret key; each side needs its own connection string"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSyncSpec {
    /// Connection string of the cluster to copy from.
    pub source: SecretKeyRef,
    /// Connection string of the cluster to copy to.
    pub destination: SecretKeyRef,
    #[serde(default)]
    pub mode: Mode,
    /// Allow `/reverse` after the commit.
    #[serde(default)]
    pub reversible: bool,
    /// Raise by one to reverse a committed reversible sync.
    #[serde(default)]
    pub reversals: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<NamespaceFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<NamespaceFilter>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_indexes: Option<BuildIndexes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_blocking: Option<WriteBlocking>,
    #[serde(default)]
    pub engine: EngineSpec,
}

/// What the controller last saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSyncStatus {
    /// The engine's state: INITIALIZING, IDLE, RUNNING, PAUSED, COMMITTING, COMMITTED, REVERSING.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(default)]
    pub can_commit: bool,
    #[serde(default)]
    pub can_write: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Copy progress, e.g. "42%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_percent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Reversals the controller has asked the engine for (compared with `spec.reversals`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reversals_done: u32,
    /// Names of the Deployment, Service and token Secret running the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_workload: Option<String>,
    /// The engine's embedded verifier; absent when verification is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// What the embedded verifier reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerificationStatus {
    /// "not started", "initial hashing" or "stream hashing".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Collections compared in the initial pass, on the source.
    #[serde(default)]
    pub scanned_collections: i64,
    #[serde(default)]
    pub total_collections: i64,
    /// Confirmed differences between the clusters.
    #[serde(default)]
    pub mismatch_count: i64,
    /// The first differences, one sentence each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatches: Vec<String>,
    /// The final comparison at commit found the clusters equal.
    #[serde(default)]
    pub verified: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The CRD as YAML, as `clustersync crd` prints it and `crds/` holds it.
pub fn crd_yaml() -> String {
    let crd = ClusterSync::crd();
    format!(
        "# Generated by `clustersync crd` from src/operator/crd.rs; do not edit.\n{}",
        serde_norway::to_string(&crd).expect("the CRD serializes")
    )
}

/// Where the generated CRD lives in the repository.
pub const CRD_PATH: &str = "crds/clustersync.io_clustersyncs.yaml";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_directory_matches_the_rust_types() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(CRD_PATH);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == crd_yaml(),
            "{CRD_PATH} is out of date with src/operator/crd.rs; regenerate it (and the chart's copy) with scripts/gen_manifests.sh"
        );
    }

    #[test]
    fn schema_carries_names_columns_and_rules() {
        let y = crd_yaml();
        for want in [
            "group: clustersync.io",
            "kind: ClusterSync",
            "- csync",
            "name: v1alpha1",
            "jsonPath: .status.state",
            "jsonPath: .status.copiedPercent",
            "x-kubernetes-validations",
            "oldSelf.status.state ==",
            "self.source.name != self.destination.name",
            "subresources",
        ] {
            assert!(y.contains(want), "{want} missing from the CRD:\n{y}");
        }
    }

    #[test]
    fn engine_settings_fall_back_to_the_operators_defaults() {
        let own: EngineSpec = serde_json::from_value(serde_json::json!({
            "loadLevel": 4, "nodeSelector": { "pool": "sync" }
        }))
        .unwrap();
        let defaults: EngineSpec = serde_json::from_value(serde_json::json!({
            "loadLevel": 2, "nodeSelector": { "pool": "default" }, "priorityClassName": "batch",
            "tolerations": [{ "key": "dedicated", "operator": "Exists" }]
        }))
        .unwrap();
        let e = own.or_defaults(&defaults);
        assert_eq!(e.load_level, Some(4), "the ClusterSync's own value wins");
        assert_eq!(e.node_selector["pool"], "sync");
        assert_eq!(e.priority_class_name.as_deref(), Some("batch"));
        assert_eq!(e.tolerations.len(), 1);
        assert_eq!(EngineSpec::default().or_defaults(&defaults), defaults);
    }

    #[test]
    fn minimal_resource_takes_defaults() {
        let s: ClusterSyncSpec = serde_json::from_value(serde_json::json!({
            "source": { "name": "src" },
            "destination": { "name": "dst" }
        }))
        .unwrap();
        assert_eq!(s.mode, Mode::Idle);
        assert_eq!(s.source.key, "uri");
        assert!(!s.reversible && s.reversals == 0);
    }
}
