//! Spec validation without the API: a ClusterSync becomes the engine's `/start` body, checked
//! by the same rules the engine applies, so a bad spec is reported in status before any pod
//! exists.

use crate::contract::options::{ClusterLabel, StartOptions};
use crate::contract::verbosity::Verbosity;
use crate::contract::write_blocking::{Mode, Request};

use super::crd::{ClusterSyncSpec, WriteBlocking};

/// The `/start` body for this spec: the spec's source is the engine's cluster0.
pub fn start_options(spec: &ClusterSyncSpec) -> Result<StartOptions, String> {
    if spec.source == spec.destination {
        return Err(format!(
            "source and destination both name Secret {} key {}; each side needs its own connection string",
            spec.source.name, spec.source.key
        ));
    }
    if spec.reversals > 0 && !spec.reversible {
        return Err(format!(
            "spec.reversals is {} but spec.reversible is false; a sync can only be reversed when it was started with reversible: true",
            spec.reversals
        ));
    }
    if let Some(v) = &spec.engine.verbosity {
        if Verbosity::parse(v).is_none() {
            return Err(format!(
                "engine.verbosity {v:?} is not one of {}",
                Verbosity::ALL.map(Verbosity::as_str).join(", ")
            ));
        }
    }
    if let Some(r) = &spec.engine.resources {
        for (kind, map) in [("requests", &r.requests), ("limits", &r.limits)] {
            for (name, q) in map.iter().flatten() {
                if !is_quantity(&q.0) {
                    return Err(format!(
                        "engine.resources.{kind}.{name} {:?} is not a Kubernetes quantity (such as 500m, 2, 512Mi or 1Gi)",
                        q.0
                    ));
                }
            }
        }
    }
    let options = StartOptions {
        source: ClusterLabel::Cluster0,
        destination: ClusterLabel::Cluster1,
        include_namespaces: spec.include_namespaces.clone(),
        exclude_namespaces: spec.exclude_namespaces.clone(),
        build_indexes: spec.build_indexes.unwrap_or_default(),
        reversible: spec.reversible,
        verification: spec.verification.clone(),
        pre_existing_destination_data: false,
        detect_random_id: true,
        copy_in_natural_order: vec![],
        skip_disk_space_check: false,
        sharding: None,
        enable_user_write_blocking: spec.write_blocking.map(|w| {
            Request::Named(match w {
                WriteBlocking::None => Mode::None,
                WriteBlocking::DestinationOnly => Mode::DestinationOnly,
                WriteBlocking::SourceAndDestination => Mode::SourceAndDestination,
            })
        }),
    };
    options.validate().map_err(|e| e.to_string())?;
    Ok(options)
}

/// Kubernetes' quantity syntax: a signed decimal number and an optional binary (Ki..Ei),
/// decimal (n, u, m, k, M, G, T, P, E) or exponent (e3, E-2) suffix. The API server refuses
/// anything else, and only when the engine's Deployment is applied.
fn is_quantity(s: &str) -> bool {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(digits);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = matches!(
        suffix,
        "" | "Ki"
            | "Mi"
            | "Gi"
            | "Ti"
            | "Pi"
            | "Ei"
            | "n"
            | "u"
            | "m"
            | "k"
            | "M"
            | "G"
            | "T"
            | "P"
            | "E"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
        .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_are_checked_as_the_api_server_does() {
        for ok in [
            "1", "500m", "0.5", "512Mi", "1Gi", "2e3", "1E-2", "+1", "100k",
        ] {
            assert!(super::is_quantity(ok), "{ok}");
        }
        for bad in ["lots", "", "1.2.3", "5 Gi", "1gb", "Gi", "1e", "."] {
            assert!(!super::is_quantity(bad), "{bad}");
        }
    }

    use super::*;

    fn spec(extra: serde_json::Value) -> ClusterSyncSpec {
        let mut base =
            serde_json::json!({ "source": { "name": "a" }, "destination": { "name": "b" } });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn a_plain_spec_becomes_a_start_body() {
        let o = start_options(&spec(serde_json::json!({}))).unwrap();
        assert_eq!(
            (o.source, o.destination),
            (ClusterLabel::Cluster0, ClusterLabel::Cluster1)
        );
        let body = serde_json::to_value(&o).unwrap();
        assert_eq!(body["source"], "cluster0");
        let w = start_options(&spec(
            serde_json::json!({ "writeBlocking": "destinationOnly" }),
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_value(&w).unwrap()["enableUserWriteBlocking"],
            "destinationOnly"
        );
    }

    #[test]
    fn what_cannot_work_is_named() {
        let cases = [
            (
                serde_json::json!({ "destination": { "name": "a" } }),
                "each side",
            ),
            (
                serde_json::json!({ "reversible": true, "buildIndexes": "never" }),
                "never",
            ),
            (
                serde_json::json!({ "reversible": true, "includeNamespaces": [{ "database": "x" }] }),
                "filters",
            ),
            (
                serde_json::json!({ "includeNamespaces": [{ "databaseRegex": { "pattern": "(" } }] }),
                "regex",
            ),
            (
                serde_json::json!({ "engine": { "verbosity": "LOUD" } }),
                "verbosity",
            ),
            (serde_json::json!({ "reversals": 1 }), "reversible: true"),
            (
                serde_json::json!({ "writeBlocking": "sourceAndDestination", "includeNamespaces": [{ "database": "x" }] }),
                "destinationOnly",
            ),
        ];
        for (extra, want) in cases {
            let e = start_options(&spec(extra.clone())).unwrap_err();
            assert!(e.contains(want), "{extra}: {e}");
        }
    }
}
