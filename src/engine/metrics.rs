//! The engine's Prometheus `/metrics`: read from the engine's status at each scrape, so the
//! numbers are the ones `/progress` shows and nothing is counted twice.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::status::{CollectionProgress, EventKind, StatusCell, VerificationStatus, VerifierSide};
use crate::contract::state::State;

/// A per-collection gauge: name, help, and its value from a collection's progress.
type PerCollection = (&'static str, &'static str, fn(&CollectionProgress) -> i64);

#[derive(Debug)]
struct StatusCollector(Arc<StatusCell>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A gauge family with one label: a sample per `(label value, value)`.
fn gauge_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: impl Iterator<Item = (&'a str, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (value_of_label, value) in samples {
        ConstGauge::new(value).encode(m.encode_family(&[(label, value_of_label)])?)?;
    }
    Ok(())
}

const STATES: [State; 7] = [
    State::Initializing,
    State::Idle,
    State::Running,
    State::Paused,
    State::Committing,
    State::Committed,
    State::Reversing,
];

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counters = &self.0.counters;
        let snap = self.0.lock().clone();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);

        // State as a one-hot family: alerts can say `state{state="RUNNING"} == 0`.
        let mut m = encoder.encode_descriptor(
            "state",
            "The engine's state (1 for the current one)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for state in STATES {
            let labels = [("state", state.as_str())];
            ConstGauge::new(i64::from(snap.state == state)).encode(m.encode_family(&labels)?)?;
        }

        counter(
            &mut encoder,
            "copied_bytes",
            "Bytes of documents copied by the initial copy",
            counters.copied_bytes.load(Ordering::Relaxed).max(0) as u64,
        )?;
        gauge(
            &mut encoder,
            "copy_estimated_bytes",
            "Estimated bytes the initial copy has to copy",
            snap.total_bytes,
        )?;
        counter(
            &mut encoder,
            "copied_documents",
            "Documents copied by partitions that finished in this process",
            load(&counters.copied_docs),
        )?;
        counter(
            &mut encoder,
            "partitions_copied",
            "Copy partitions finished in this process",
            load(&counters.partitions_copied),
        )?;

        let colls = counters.collections().clone();
        let per_collection: [PerCollection; 3] = [
            (
                "collection_partitions",
                "Copy partitions of each collection",
                |c| c.partitions as i64,
            ),
            (
                "collection_partitions_done",
                "Copy partitions of each collection that are finished",
                |c| c.partitions_done as i64,
            ),
            (
                "collection_copied_documents",
                "Documents of each collection copied so far",
                |c| c.copied_docs,
            ),
        ];
        for (name, help, value) in per_collection {
            let samples = colls.iter().map(|(ns, c)| (ns.as_str(), value(c)));
            gauge_family(&mut encoder, name, help, "collection", samples)?;
        }

        let mut m = encoder.encode_descriptor(
            "events_applied",
            "Change events applied to the destination, by type",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for kind in EventKind::ALL {
            let labels = [("type", kind.as_str())];
            ConstCounter::new(load(&counters.events_by_kind[kind as usize]))
                .encode(m.encode_family(&labels)?)?;
        }

        // Absent (not zero) while there is no lag to speak of, as `/progress` has null.
        if let Some(lag) = snap.lag_secs() {
            gauge(
                &mut encoder,
                "lag_seconds",
                "Seconds between the oldest source change not yet applied and the source's latest time",
                lag,
            )?;
        }
        counter(
            &mut encoder,
            "retries",
            "Times the sync was interrupted by an error and retried",
            load(&counters.retries),
        )?;
        counter(
            &mut encoder,
            "documents_repaired",
            "Documents read from the source by _id and written whole because a change to them could not be replayed exactly",
            load(&counters.documents_repaired),
        )?;
        counter(
            &mut encoder,
            "collections_recopied",
            "Collections copied again whole because a DDL event (a rename or drop) overtook their copy",
            load(&counters.collections_recopied),
        )?;
        gauge(
            &mut encoder,
            "sync_stopped",
            "1 when the sync stopped on an error it cannot retry (see /progress syncError)",
            i64::from(snap.fatal.is_some()),
        )?;
        gauge(
            &mut encoder,
            "warnings",
            "Warnings /progress reports now",
            snap.warnings.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "can_write",
            "1 once the destination may take application writes",
            i64::from(snap.can_write),
        )?;
        if let Some(v) = &snap.verification {
            encode_verification(&mut encoder, v)?;
        }
        Ok(())
    }
}

/// A per-side verifier gauge: name, help, and its value from one side's figures.
type PerSide = (&'static str, &'static str, fn(&VerifierSide) -> i64);

/// The embedded verifier's figures (absent when verification is off).
fn encode_verification(
    encoder: &mut DescriptorEncoder,
    v: &VerificationStatus,
) -> Result<(), std::fmt::Error> {
    let per_side: [PerSide; 5] = [
        (
            "verifier_hashed_documents",
            "Documents the embedded verifier has hashed (initial pass and rechecks), by side",
            |s| s.hashed_documents as i64,
        ),
        (
            "verifier_estimated_documents",
            "Documents the servers count in the collections the verifier compares, by side",
            |s| s.estimated_documents as i64,
        ),
        (
            "verifier_scanned_collections",
            "Collections the verifier's initial pass has compared, by side",
            |s| s.scanned_collections as i64,
        ),
        (
            "verifier_total_collections",
            "Collections the verifier's initial pass compares, by side",
            |s| s.total_collections as i64,
        ),
        (
            "verifier_lag_seconds",
            "How far the verifier's change stream on each side is behind that side",
            |s| s.lag_secs.unwrap_or(0),
        ),
    ];
    for (name, help, value) in per_side {
        let samples = [
            ("source", value(&v.source)),
            ("destination", value(&v.destination)),
        ];
        gauge_family(encoder, name, help, "side", samples.into_iter())?;
    }
    gauge(
        encoder,
        "verifier_mismatches",
        "Confirmed differences between the clusters (the commit is held back while any stand)",
        v.mismatch_count as i64,
    )?;
    gauge(
        encoder,
        "verifier_pending_rechecks",
        "Documents waiting to be compared again",
        v.pending_rechecks as i64,
    )?;
    gauge(
        encoder,
        "verifier_initial_pass_done",
        "1 once every collection has been compared once",
        i64::from(v.initial_done),
    )?;
    gauge(
        encoder,
        "verifier_verified",
        "1 once the final comparison at commit found the clusters equal",
        i64::from(v.verified),
    )
}

/// The registry `/metrics` renders; metric names start with `clustersync_engine_`.
pub fn registry(status: Arc<StatusCell>) -> Registry {
    let mut registry = Registry::with_prefix("clustersync_engine");
    registry.register_collector(Box::new(StatusCollector(status)));
    registry
}

/// The Prometheus text exposition of `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_families_and_lag_from_the_status() {
        let status = StatusCell::new();
        status.counters.applied(EventKind::Update, 7);
        status.counters.applied(EventKind::Ddl, 1);
        status.counters.copied_bytes.store(1234, Ordering::Relaxed);
        status.counters.collections().insert(
            "shop.orders".into(),
            CollectionProgress {
                partitions: 4,
                partitions_done: 1,
                copied_bytes: 10,
                copied_docs: 3,
                ..Default::default()
            },
        );
        let reg = registry(status.clone());
        let text = render(&reg);
        assert!(
            text.contains("clustersync_engine_events_applied_total{type=\"update\"} 7"),
            "{text}"
        );
        assert!(text.contains("clustersync_engine_events_applied_total{type=\"ddl\"} 1"));
        assert!(text.contains("clustersync_engine_copied_bytes_total 1234"));
        assert!(
            text.contains("clustersync_engine_collection_partitions{collection=\"shop.orders\"} 4")
        );
        assert!(text.contains("clustersync_engine_state{state=\"INITIALIZING\"} 1"));
        assert!(!text.contains("lag_seconds"), "no lag before change events");
        status.applied_through(bson::Timestamp {
            time: 100,
            increment: 1,
        });
        status.saw_source_time(bson::Timestamp {
            time: 103,
            increment: 1,
        });
        assert!(render(&reg).contains("clustersync_engine_lag_seconds 3"));
        assert!(
            !render(&reg).contains("verifier"),
            "verification off: no verifier series"
        );
        status.lock().verification = Some(VerificationStatus {
            mismatch_count: 2,
            source: VerifierSide {
                hashed_documents: 42,
                ..Default::default()
            },
            ..Default::default()
        });
        let text = render(&reg);
        assert!(
            text.contains("clustersync_engine_verifier_hashed_documents{side=\"source\"} 42"),
            "{text}"
        );
        assert!(text.contains("clustersync_engine_verifier_mismatches 2"));
        assert!(text.contains("clustersync_engine_verifier_initial_pass_done 0"));
    }
}
