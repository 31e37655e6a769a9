//! `clustersync operator`: the Kubernetes operator, which reconciles ClusterSync resources into
//! engines it runs and drives.
//!
//! This module reads and validates the flags (each also an environment variable, as a
//! Deployment sets them), then hands `operator::run` its settings: the engine image and pod
//! defaults, the metrics scraper engine NetworkPolicies admit, the namespaces to watch, where
//! `/healthz`, `/readyz` and `/metrics` are served, and the leader-election Lease (none with
//! `--no-leader-election`). It runs until Ctrl-C or SIGTERM.
//!
//! Exit codes: 2 on a bad flag or environment variable (all checked before the runtime starts;
//! a misspelt field of `--engine-defaults` is an error, not ignored), 1 when the operator stops
//! on an error (the Kubernetes API cannot be reached, say) or the async runtime cannot start, 0
//! after a signal.

use std::process::ExitCode;

use crate::operator::crd::EngineSpec;
use crate::operator::workload::Scraper;
use crate::operator::{controller::Settings, engine_api::ServiceDns, leader, RunOptions};

#[derive(clap::Args)]
pub(super) struct OperatorArgs {
    /// Watch ClusterSyncs (and their engines) in these namespaces only (comma-separated); all
    /// namespaces if unset.
    #[arg(
        long = "namespace",
        env = "CLUSTERSYNC_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    namespace: Vec<String>,
    /// Image of the engine pods, unless a ClusterSync names its own (spec.engine.image).
    #[arg(long = "engine-image", env = "CLUSTERSYNC_ENGINE_IMAGE", default_value = concat!("ghcr.io/clustersync/clustersync:", env!("CARGO_PKG_VERSION")))]
    engine_image: String,
    /// Engine pod settings (JSON, the fields of a ClusterSync's spec.engine) for syncs that
    /// leave them unset, e.g. {"resources":{...},"nodeSelector":{...},"tolerations":[...]}.
    #[arg(
        long = "engine-defaults",
        env = "CLUSTERSYNC_ENGINE_DEFAULTS",
        value_name = "JSON"
    )]
    engine_defaults: Option<String>,
    /// Namespace of a metrics scraper (e.g. Prometheus) that engine NetworkPolicies admit to
    /// the engines' /metrics, besides the operator.
    #[arg(
        long = "metrics-scraper-namespace",
        env = "CLUSTERSYNC_METRICS_SCRAPER_NAMESPACE"
    )]
    metrics_scraper_namespace: Option<String>,
    /// Labels of the scraper's pods (JSON object of strings; {} or unset: every pod in
    /// --metrics-scraper-namespace).
    #[arg(
        long = "metrics-scraper-pod-labels",
        env = "CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS",
        value_name = "JSON"
    )]
    metrics_scraper_pod_labels: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long = "metrics-bind", default_value = "0.0.0.0:8080")]
    metrics_bind: std::net::SocketAddr,
    /// Seconds between progress reads of a moving sync.
    #[arg(long = "poll-seconds", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    poll_seconds: u64,
    /// Run without leader election (only when exactly one replica runs).
    #[arg(long = "no-leader-election")]
    no_leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long = "lease-name", default_value = "clustersync-operator")]
    lease_name: String,
    /// Namespace of the Lease (the operator's own namespace; out of a cluster, the
    /// kubeconfig's namespace unless given: pass the installed operator's namespace, e.g.
    /// `clustersync-system`, so that a replica run by hand shares its lease instead of leading
    /// alongside it).
    #[arg(long = "lease-namespace", env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity in the Lease (its pod name).
    #[arg(long = "identity", env = "POD_NAME")]
    identity: Option<String>,
    /// Log level: TRACE, DEBUG, INFO, WARN, ERROR.
    #[arg(long = "verbosity", default_value = "INFO")]
    verbosity: String,
}

pub(super) fn run(args: OperatorArgs) -> ExitCode {
    let level = args.verbosity.to_ascii_lowercase();
    if !["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
        errln!(
            "error: --verbosity {}: use TRACE, DEBUG, INFO, WARN or ERROR",
            args.verbosity
        );
        return ExitCode::from(2);
    }
    let engine_defaults: EngineSpec = match args
        .engine_defaults
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => Default::default(),
        Some(json) => match parse_engine_defaults(json) {
            Ok(d) => d,
            Err(e) => {
                errln!("error: --engine-defaults (CLUSTERSYNC_ENGINE_DEFAULTS): {e}; give a JSON object with the fields of a ClusterSync's spec.engine (resources, nodeSelector, tolerations, affinity, priorityClassName, loadLevel, verbosity)");
                return ExitCode::from(2);
            }
        },
    };
    let metrics_scraper = match parse_scraper(
        args.metrics_scraper_namespace.as_deref(),
        args.metrics_scraper_pod_labels.as_deref(),
    ) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = crate::logging::init_stdout(&level) {
        errln!("error: {e}");
        return ExitCode::from(2);
    }
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the Kubernetes API (in-cluster service account or kubeconfig): {e}"
            )
        })?;
        let lease = if args.no_leader_election {
            None
        } else {
            let namespace = args
                .lease_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            let identity = args.identity.clone().unwrap_or_else(|| {
                format!("clustersync-operator-{}", uuid::Uuid::new_v4().simple())
            });
            Some(leader::LeaseConfig::new(
                namespace,
                args.lease_name.clone(),
                identity,
            ))
        };
        let mut settings =
            Settings::new(args.engine_image.clone(), std::sync::Arc::new(ServiceDns));
        settings.poll = std::time::Duration::from_secs(args.poll_seconds);
        settings.engine_defaults = engine_defaults;
        settings.metrics_scraper = metrics_scraper;
        tracing::info!(
            target: "clustersync",
            version = env!("CARGO_PKG_VERSION"),
            namespaces = %if args.namespace.is_empty() { "(all)".to_string() } else { args.namespace.join(",") },
            engine_image = %args.engine_image,
            "clustersync operator starting"
        );
        crate::operator::run(
            client,
            settings,
            RunOptions {
                namespaces: args
                    .namespace
                    .iter()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect(),
                telemetry_bind: Some(args.metrics_bind),
                lease,
            },
            super::shutdown_signal(),
        )
        .await?;
        Ok::<(), anyhow::Error>(())
    });
    match result {
        Ok(()) => {
            tracing::info!(target: "clustersync", "operator stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(target: "clustersync", error = %e, "operator stopped");
            errln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The metrics scraper engine NetworkPolicies admit, from its two settings.
fn parse_scraper(namespace: Option<&str>, labels: Option<&str>) -> Result<Option<Scraper>, String> {
    let labels = labels.map(str::trim).filter(|l| !l.is_empty());
    let Some(namespace) = namespace.map(str::trim).filter(|n| !n.is_empty()) else {
        return match labels {
            Some(_) => Err("--metrics-scraper-pod-labels (CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS) needs --metrics-scraper-namespace (CLUSTERSYNC_METRICS_SCRAPER_NAMESPACE): name the scraper's namespace".into()),
            None => Ok(None),
        };
    };
    let pod_labels = match labels {
        None => Default::default(),
        Some(json) => serde_json::from_str(json).map_err(|e| {
            format!("--metrics-scraper-pod-labels (CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS): {e}; give a JSON object of label names to string values, e.g. {{\"app.kubernetes.io/name\":\"prometheus\"}}")
        })?,
    };
    Ok(Some(Scraper {
        namespace: namespace.to_string(),
        pod_labels,
    }))
}

/// Engine defaults as the operator takes them: a misspelt field is an error, not ignored.
fn parse_engine_defaults(json: &str) -> Result<EngineSpec, String> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let schema = schemars::schema_for!(EngineSpec);
    let known: Vec<String> = schema
        .as_value()
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let given = value.as_object().ok_or("not a JSON object")?;
    if let Some(unknown) = given.keys().find(|k| !known.contains(k)) {
        return Err(format!("unknown field {unknown:?}"));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_defaults_refuse_an_unknown_field() {
        assert_eq!(
            parse_engine_defaults(r#"{"nodeSelektor":{}}"#),
            Err("unknown field \"nodeSelektor\"".to_string())
        );
        assert_eq!(
            parse_engine_defaults("[]"),
            Err("not a JSON object".to_string())
        );
        let d = parse_engine_defaults(r#"{"priorityClassName":"low","loadLevel":2}"#).unwrap();
        assert_eq!(d.priority_class_name.as_deref(), Some("low"));
        assert_eq!(d.load_level, Some(2));
    }

    #[test]
    fn scraper_pod_labels_need_a_namespace() {
        assert_eq!(parse_scraper(None, None), Ok(None));
        assert_eq!(parse_scraper(Some(" "), Some("")), Ok(None));
        assert!(parse_scraper(None, Some(r#"{"app":"prometheus"}"#))
            .unwrap_err()
            .contains("needs --metrics-scraper-namespace"));
        let s = parse_scraper(Some("monitoring"), Some(r#"{"app":"prometheus"}"#))
            .unwrap()
            .unwrap();
        assert_eq!(s.namespace, "monitoring");
        assert_eq!(
            s.pod_labels.get("app").map(String::as_str),
            Some("prometheus")
        );
        assert!(parse_scraper(Some("monitoring"), Some("{\"app\":1}"))
            .unwrap_err()
            .starts_with(
                "--metrics-scraper-pod-labels (CLUSTERSYNC_METRICS_SCRAPER_POD_LABELS): "
            ));
    }
}
