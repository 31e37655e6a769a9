//! The operator's own endpoints: `/healthz` (liveness), `/readyz` (readiness: the CRD is
//! installed and the controller runs or stands by) and `/metrics` (Prometheus text format).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// What a reconcile last saw of one ClusterSync, for the gauges that count syncs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSeen {
    /// The engine's state (`UNKNOWN` before one is known).
    pub state: String,
    /// The `Ready` condition's reason while it is not True.
    pub not_ready: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub verb: String,
    pub outcome: String,
}

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_seconds: Histogram,
    pub engine_calls: Family<CallLabels, Counter>,
    syncs: Family<StateLabels, Gauge>,
    not_ready: Family<ErrorLabels, Gauge>,
    pub leader: Gauge,
    /// What was last seen of each ClusterSync, to count syncs by state and by reason, and
    /// every reason ever counted (to zero it once no sync has it).
    seen: Mutex<(HashMap<String, SyncSeen>, HashSet<String>)>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("clustersync_operator");
        let reconciles = Counter::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        let engine_calls = Family::<CallLabels, Counter>::default();
        let syncs = Family::<StateLabels, Gauge>::default();
        let not_ready = Family::<ErrorLabels, Gauge>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "ClusterSync reconciles run",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_seconds.clone(),
        );
        registry.register(
            "engine_calls",
            "Calls to engines' APIs by verb and outcome",
            engine_calls.clone(),
        );
        registry.register(
            "syncs",
            "ClusterSyncs by the engine state last seen",
            syncs.clone(),
        );
        // Reconcile errors count failed API calls; a sync blocked by a missing Secret, a
        // missing role or a pod that cannot start reconciles without error, so this gauge is
        // what to alert on ("not Ready for 15 minutes").
        registry.register(
            "syncs_not_ready",
            "ClusterSyncs whose Ready condition is not True, by its reason",
            not_ready.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_seconds,
            engine_calls,
            syncs,
            not_ready,
            leader,
            seen: Mutex::new((HashMap::new(), HashSet::new())),
            ready: AtomicBool::new(false),
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn error(&self, reason: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn engine_call(&self, verb: &str, ok: bool) {
        self.engine_calls
            .get_or_create(&CallLabels {
                verb: verb.into(),
                outcome: if ok { "ok" } else { "refused" }.into(),
            })
            .inc();
    }

    /// Records what was seen of `key` (`None`: the sync is gone) and recounts the syncs by
    /// state and by reason for not being ready.
    pub fn sync_seen(&self, key: &str, seen: Option<SyncSeen>) {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (all, known) = &mut *guard;
        match seen {
            Some(s) => {
                all.insert(key.to_string(), s);
            }
            None => {
                all.remove(key);
            }
        }
        let mut states: HashMap<&str, i64> = HashMap::new();
        let mut reasons: HashMap<String, i64> = HashMap::new();
        for s in all.values() {
            *states.entry(s.state.as_str()).or_default() += 1;
            if let Some(r) = &s.not_ready {
                *reasons.entry(r.clone()).or_default() += 1;
            }
        }
        // Zero the states no sync is in any more, so a gauge never sticks at an old count.
        for state in [
            "UNKNOWN",
            "INITIALIZING",
            "IDLE",
            "RUNNING",
            "PAUSED",
            "COMMITTING",
            "COMMITTED",
            "REVERSING",
        ] {
            self.syncs
                .get_or_create(&StateLabels {
                    state: state.into(),
                })
                .set(states.get(state).copied().unwrap_or(0));
        }
        // Reasons are open-ended (each blocker names its own): zero the ones seen before.
        for reason in known.iter() {
            reasons.entry(reason.clone()).or_insert(0);
        }
        known.extend(reasons.keys().cloned());
        for (reason, n) in reasons {
            self.not_ready.get_or_create(&ErrorLabels { reason }).set(n);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The router for `/healthz`, `/readyz` and `/metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

async fn readyz(State(m): State<Arc<Metrics>>) -> Response {
    if m.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the ClusterSync CRD",
        )
            .into_response()
    }
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syncs_are_counted_by_state() {
        let m = Metrics::new();
        let seen = |state: &str, not_ready: Option<&str>| {
            Some(SyncSeen {
                state: state.into(),
                not_ready: not_ready.map(Into::into),
            })
        };
        m.sync_seen("a/x", seen("RUNNING", None));
        m.sync_seen("a/y", seen("RUNNING", Some("MissingRoles")));
        m.sync_seen("a/z", seen("UNKNOWN", Some("SecretNotFound")));
        m.sync_seen("a/x", seen("COMMITTED", None));
        m.reconciles.inc();
        m.error("Kube");
        let text = m.encode();
        assert!(
            text.contains("clustersync_operator_syncs{state=\"RUNNING\"} 1"),
            "{text}"
        );
        assert!(text.contains("clustersync_operator_syncs{state=\"COMMITTED\"} 1"));
        assert!(text.contains("clustersync_operator_reconciles_total 1"));
        assert!(text.contains("clustersync_operator_reconcile_errors_total{reason=\"Kube\"} 1"));
        assert!(text.contains("clustersync_operator_syncs_not_ready{reason=\"MissingRoles\"} 1"));
        assert!(text.contains("clustersync_operator_syncs_not_ready{reason=\"SecretNotFound\"} 1"));
        m.sync_seen("a/y", None);
        m.sync_seen("a/z", seen("IDLE", None));
        let text = m.encode();
        assert!(text.contains("clustersync_operator_syncs{state=\"RUNNING\"} 0"));
        assert!(
            text.contains("clustersync_operator_syncs_not_ready{reason=\"MissingRoles\"} 0")
                && text
                    .contains("clustersync_operator_syncs_not_ready{reason=\"SecretNotFound\"} 0"),
            "{text}"
        );
    }
}
