//! `ClusterSync` (`clustersync.io/v1alpha1`): what a user applies, and the status the
//! controller writes back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::contract::filter::NamespaceFilter;
use crate::contract::options::{BuildIndexes, Verification};

/// Rejected at admission: the same Secret key on both sides names one cluster twice.
const DIFFERENT_SECRETS: &str =
    "self.source.name != self.destination.name || self.source.key != self.destination.key";

/// Rejected at admission once the sync has started: the clusters, the direction-defining
/// options and the namespace filters cannot change mid-sync (restart from scratch instead).
const FROZEN_AFTER_START: &str = "!has(oldSelf.status) || !has(oldSelf.status.state) || oldSelf.status.state == 'IDLE' || (self.spec.source == oldSelf.spec.source && self.spec.destination == oldSelf.spec.destination && self.spec.reversible == oldSelf.spec.reversible && (has(self.spec.includeNamespaces) ? self.spec.includeNamespaces : []) == (has(oldSelf.spec.includeNamespaces) ? oldSelf.spec.includeNamespaces : []) && (has(self.spec.excludeNamespaces) ? self.spec.excludeNamespaces : []) == (has(oldSelf.spec.excludeNamespaces) ? oldSelf.spec.excludeNamespaces : []))";

/// Rejected at admission: a name the controller cannot derive its objects' names from. The
/// engine's Service is `<name>-engine`, which must be a DNS-1035 label (63 characters at most,
/// starting with a letter, no dots).
const VALID_NAME: &str =
    "self.metadata.name.size() <= 56 && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')";

/// Rejected at admission: a reversal asked of a sync that cannot be reversed (the controller
/// also reports it, as InvalidSpec, for an object stored before the rule).
const REVERSALS_NEED_REVERSIBLE: &str =
    "!has(self.reversals) || self.reversals == 0 || (has(self.reversible) && self.reversible)";

/// Rejected at admission: the counter is compared with the reversals done, so a jump or a
/// decrease would ask for reversals nobody meant, or silently none.
const REVERSALS_ONE_UP: &str = "self >= oldSelf && self <= oldSelf + 1";

/// Rejected at admission: once the engine is COMMITTED the destination is live, so the mode
/// stays Committed (a reversible sync is reversed through `reversals`).
const MODE_FROZEN_AFTER_COMMIT: &str = "!has(oldSelf.status) || !has(oldSelf.status.state) || oldSelf.status.state != 'COMMITTED' || self.spec.mode == oldSelf.spec.mode";

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
    /// Key in the Secret whose value is the connection string (default `uri`).
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
    /// No write blocking.
    None,
    /// The destination refuses application writes until the commit.
    DestinationOnly,
    /// Both clusters: the source from the commit on, the destination until it.
    SourceAndDestination,
}

/// The engine's pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EngineSpec {
    /// Image running `clustersync engine` (defaults to the operator's `--engine-image`, which the
    /// manifests and the chart set to the operator's own image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits of the engine's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Nodes the engine's pod may run on, by label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the engine's pod tolerates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Scheduling constraints of the engine's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// PriorityClass of the engine's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// `--loadLevel`, 1 (lightest) to 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // Kubernetes knows int32 and int64, and warns on any other integer format.
    #[schemars(range(min = 1, max = 4), extend("format" = "int32"))]
    pub load_level: Option<u8>,
    /// `--verbosity`: TRACE, DEBUG, INFO, WARN, ERROR, FATAL or PANIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // An enum in the schema so that the API server refuses a typo at `kubectl apply`; kept a
    // String in Rust so that an object stored before the enum still reads.
    #[schemars(extend("enum" = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "PANIC"]))]
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
    validation = Rule::new(FROZEN_AFTER_START).message("source, destination, reversible and the namespace filters cannot change after the sync has started; create a new ClusterSync to sync differently").field_path(".spec"),
    // No fieldPath: the API server accepts only paths inside the schema, and `metadata` has
    // none, so this root rule's errors start with `<nil>:`; the message names the field.
    validation = Rule::new(VALID_NAME).message("metadata.name must be at most 56 characters of lowercase letters, digits and '-', starting with a letter and ending with a letter or digit (the engine's Service is named <name>-engine); choose another name"),
    validation = Rule::new(MODE_FROZEN_AFTER_COMMIT).message("spec.mode cannot change once the sync is COMMITTED: the destination is live; reverse a reversible sync by raising spec.reversals, or create a new ClusterSync to sync again").field_path(".spec.mode"),
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Lag","type":"integer","jsonPath":".status.lagSeconds"}"#,
    printcolumn = r#"{"name":"Copied","type":"string","jsonPath":".status.copiedPercent"}"#,
    printcolumn = r#"{"name":"ETA","type":"string","jsonPath":".status.eta"}"#,
    printcolumn = r#"{"name":"CanCommit","type":"boolean","jsonPath":".status.canCommit"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(DIFFERENT_SECRETS).message("source and destination name the same Secret key; each side needs its own connection string"))]
#[x_kube(validation = Rule::new(REVERSALS_NEED_REVERSIBLE).message("spec.reversals can be raised only for a sync with reversible: true (set when it was created); create a new ClusterSync with reversible: true to sync back").field_path(".reversals"))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSyncSpec {
    /// The Secret (in this namespace) and key (default `uri`) holding the connection string
    /// of the cluster to copy from.
    pub source: SecretKeyRef,
    /// The Secret (in this namespace) and key (default `uri`) holding the connection string
    /// of the cluster to copy to.
    pub destination: SecretKeyRef,
    /// What the sync should be doing: Idle (nothing started), Running (start or resume),
    /// Paused, or Committed (cut over once the destination has caught up). Cannot change once
    /// the engine is COMMITTED.
    #[serde(default)]
    pub mode: Mode,
    /// Allow `/reverse` after the commit.
    #[serde(default)]
    pub reversible: bool,
    /// Raise by one to reverse a committed reversible sync. It never goes down, and goes up
    /// one at a time.
    #[serde(default)]
    #[schemars(extend("format" = "int64"))]
    #[x_kube(validation = Rule::new(REVERSALS_ONE_UP).message("spec.reversals goes up by one at a time (each raise reverses the committed sync once) and never down"))]
    pub reversals: u32,
    /// Sync only these databases and collections (mongosync's `includeNamespaces`); all of
    /// them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_namespaces: Vec<NamespaceFilter>,
    /// Never sync these databases and collections (mongosync's `excludeNamespaces`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<NamespaceFilter>,
    /// When the destination's indexes are built (mongosync's `buildIndexes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_indexes: Option<BuildIndexes>,
    /// The embedded verifier (mongosync's `verification`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Verification>,
    /// Which clusters refuse application writes during the commit (mongosync's
    /// `enableUserWriteBlocking`); the engine's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_blocking: Option<WriteBlocking>,
    /// The engine's pod: image, resources and scheduling.
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
    /// The destination has caught up: setting spec.mode to Committed cuts over promptly.
    #[serde(default)]
    pub can_commit: bool,
    /// The destination accepts application writes (after the commit).
    #[serde(default)]
    pub can_write: bool,
    /// How far the destination is behind the source, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// Bytes copied so far by the collection copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_bytes: Option<i64>,
    /// Bytes the collection copy will copy in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Copy progress, e.g. "42%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_percent: Option<String>,
    /// What the engine is doing, e.g. "collection copy" or "change event application".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<String>,
    /// While RUNNING and not yet committable: why (the copy, the index builds, the lag, the
    /// embedded verifier's initial pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_blocker: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Reversals the controller has asked the engine for (compared with `spec.reversals`).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("format" = "int64"))]
    pub reversals_done: u32,
    /// Names of the Deployment, Service and token Secret running the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_workload: Option<String>,
    /// Seconds until the current stage is done: the collection copy while it runs, catching up
    /// with the source after it. Absent until the engine has measured a rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// `etaSeconds` in words, e.g. "4m10s" (the ETA printer column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<String>,
    /// How many namespaces are waiting, copying, building indexes, done or being re-copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_counts: Option<NamespaceCounts>,
    /// The namespaces with the most left to do (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slowest_collections: Vec<CollectionStatus>,
    /// What `clustersync plan` found, run by the engine while `spec.mode` is Idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
    /// The engine's embedded verifier; absent when verification is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationStatus>,
    /// Ready, CredentialsResolved, RolesVerified, EngineAvailable, InSync, Committed, Verified
    /// and PlanSafe, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How many namespaces are in each phase of the copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCounts {
    /// Not started.
    #[serde(default)]
    pub waiting: i64,
    /// Being copied.
    #[serde(default)]
    pub copying: i64,
    /// Copied; indexes being built.
    #[serde(default)]
    pub building_indexes: i64,
    /// Done.
    #[serde(default)]
    pub done: i64,
    /// Being copied again whole.
    #[serde(default)]
    pub recopying: i64,
}

/// One namespace's copy, as `/progress` reports it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionStatus {
    /// `db.collection`.
    pub namespace: String,
    /// waiting, copying, building indexes, done or re-copying.
    pub phase: String,
    /// Bytes copied.
    #[serde(default)]
    pub copied_bytes: i64,
    /// Bytes to copy, as estimated when the copy was planned.
    #[serde(default)]
    pub total_bytes: i64,
    /// Copy progress, e.g. "42%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_percent: Option<String>,
    /// Seconds until it is copied, at its measured rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
}

/// A summary of the engine's plan (`POST /api/v1/plan`), for `kubectl get -o yaml` and
/// `kubectl describe` before the sync is started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// False when a risk blocks the sync (also the PlanSafe condition).
    #[serde(default)]
    pub safe: bool,
    /// Databases in scope.
    #[serde(default)]
    pub databases: i64,
    /// Collections in scope (views apart).
    #[serde(default)]
    pub collections: i64,
    /// Views in scope.
    #[serde(default)]
    pub views: i64,
    /// Documents in scope.
    #[serde(default)]
    pub documents: i64,
    /// Uncompressed bytes the copy moves.
    #[serde(default)]
    pub data_bytes: i64,
    /// On-disk index bytes on the source.
    #[serde(default)]
    pub index_bytes: i64,
    /// Indexes to build.
    #[serde(default)]
    pub indexes: i64,
    /// Seconds the whole sync should take to become committable (copy, index builds,
    /// catch-up).
    #[serde(default)]
    pub estimated_seconds: i64,
    /// The same in words, with its parts, e.g. "12m (copy 9m, indexes 2m, catch-up 1m)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimate: Option<String>,
    /// How the rates behind the estimate were measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
    /// Each risk, "blocking: ..." or "warning: ...", with what to do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub risks: Vec<String>,
    /// The largest namespaces (at most 10), "db.coll: N documents, X MiB".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub largest_namespaces: Vec<String>,
    /// The spec generation the plan was made for (a changed spec is planned again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_generation: Option<i64>,
    /// When it was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<String>,
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
    /// Collections the initial pass compares in all.
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
    let mut crd = serde_json::to_value(ClusterSync::crd()).expect("the CRD serializes");
    unwrap_descriptions(&mut crd);
    format!(
        "# Generated by `clustersync crd` from src/operator/crd.rs; do not edit.\n{}",
        serde_norway::to_string(&crd).expect("the CRD serializes")
    )
}

/// Doc comments reach the schema with their source line breaks, which `kubectl explain`
/// prints mid-sentence: a single line break becomes a space (paragraphs stay).
fn unwrap_descriptions(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match x {
                    serde_json::Value::String(d) if k == "description" => {
                        *d = d
                            .split("\n\n")
                            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    other => unwrap_descriptions(other),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
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

    /// The schema's list of levels is written out for schemars; it must be the engine's.
    #[test]
    fn the_verbosity_enum_is_the_engines() {
        let crd = serde_json::to_value(ClusterSync::crd()).unwrap();
        let levels = crd.pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/engine/properties/verbosity/enum")
            .expect("engine.verbosity has an enum");
        let engine: Vec<&str> = crate::contract::verbosity::Verbosity::ALL
            .iter()
            .map(|v| v.as_str())
            .collect();
        assert_eq!(levels, &serde_json::json!(engine));
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
        // The API server warns on integer formats other than int32 and int64.
        for line in y.lines().filter(|l| l.trim_start().starts_with("format: ")) {
            let f = line.trim_start().trim_start_matches("format: ");
            assert!(
                [
                    "int32",
                    "int64",
                    "double",
                    "date-time",
                    "byte",
                    "float",
                    "int-or-string"
                ]
                .contains(&f),
                "format {f} would make the API server warn on every apply"
            );
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
