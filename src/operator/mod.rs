//! The Kubernetes side: the `ClusterSync` custom resource and the controller that runs the
//! engine for it. The engine's internals never appear here; the two meet at the engine's
//! HTTP API ([`engine_api`]).

pub mod actions;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod credentials;
pub mod decide;
pub mod engine_api;
pub mod leader;
pub mod mirror;
pub mod plan;
pub mod pods;
pub mod preflight;
pub mod telemetry;
pub mod validate;
pub mod workload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{reflector, watcher, Controller};
use kube::{Api, Client, ResourceExt};

use controller::{Context, Settings};
use crd::ClusterSync;
use leader::{Leadership, LeadershipLost, LeaseConfig};
use telemetry::Metrics;

/// How the operator process runs.
pub struct RunOptions {
    /// Watch ClusterSyncs (and their Secrets) in these namespaces only; all namespaces when
    /// empty.
    pub namespaces: Vec<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (none when `None`).
    pub telemetry_bind: Option<SocketAddr>,
    /// Lease for leader election (always lead when `None`).
    pub lease: Option<LeaseConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot serve health and metrics on {addr}: {source}; pick a free address with --metrics-bind")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    LeadershipLost(#[from] LeadershipLost),
    #[error(transparent)]
    LeaseTiming(#[from] leader::InvalidTiming),
}

/// Runs the operator until `shutdown` completes (or the leader lease is lost, which is an
/// error: the process must stop acting at once and is restarted to stand by again).
pub async fn run(
    client: Client,
    settings: Settings,
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    if let Some(addr) = opts.telemetry_bind {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RunError::Bind { addr, source })?;
        let app = telemetry::router(metrics.clone());
        let until = stopped();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(until)
                .await
            {
                tracing::error!(error = %e, "health and metrics server stopped");
            }
        });
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics");
    }

    // One controller per watched namespace (RBAC may be granted in those only), or one for
    // the whole cluster.
    let scopes: Vec<Option<String>> = if opts.namespaces.is_empty() {
        vec![None]
    } else {
        opts.namespaces.iter().cloned().map(Some).collect()
    };
    let api_for = |ns: &Option<String>| -> Api<ClusterSync> {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    };
    let probe = api_for(&scopes[0]);
    tokio::select! {
        _ = wait_for_crd(&probe) => {}
        _ = stopped() => return Ok(()),
    }
    metrics.set_ready(true);

    let leadership = opts
        .lease
        .map(|cfg| Leadership::new(client.clone(), cfg))
        .transpose()?;
    if let Some(l) = &leadership {
        tokio::select! {
            _ = l.acquire() => {}
            _ = stopped() => return Ok(()),
        }
    }
    // Without leader election this replica is the only one working: it leads.
    metrics.leader.set(1);

    let settings = Arc::new(settings);
    let run = futures::future::join_all(scopes.iter().map(|ns| {
        // One context per scope: each controller has its own caches.
        let ctx = Arc::new(Context::new(
            client.clone(),
            settings.clone(),
            metrics.clone(),
        ));
        controller(client.clone(), api_for(ns), ns.as_deref(), ctx, stopped())
    }));
    let result = match &leadership {
        Some(l) => tokio::select! {
            _ = run => Ok(()),
            lost = l.keep() => Err(RunError::LeadershipLost(lost)),
        },
        None => {
            run.await;
            Ok(())
        }
    };
    metrics.leader.set(0);
    if let (Some(l), Ok(())) = (&leadership, &result) {
        l.release().await;
    }
    result
}

/// Lists ClusterSyncs until the CRD answers: an operator installed before its CRD waits
/// instead of crash-looping.
async fn wait_for_crd(syncs: &Api<ClusterSync>) {
    let mut logged = false;
    loop {
        match syncs.list(&ListParams::default().limit(1)).await {
            Ok(_) => {
                if logged {
                    tracing::info!("the ClusterSync CRD is installed");
                }
                return;
            }
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "cannot list ClusterSyncs; waiting for the CRD (install it with `clustersync crd | kubectl apply -f -`) and for RBAC");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    }
}

/// A watch of `api` kept in a store, and its events (deletions included) as reconcile triggers.
fn cached<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::WatchStreamExt;
    let (store, writer) = reflector::store();
    let events = reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects();
    (store, events)
}

/// The objects one controller watches, cached: reconciles read them from here instead of
/// asking the API server.
#[derive(Clone)]
pub struct Caches {
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub pods: Store<Pod>,
}

/// One controller over `syncs`. What triggers a reconcile, and what does not:
/// - a ClusterSync's spec (generation), annotations or finalizers changing; not its status,
///   which the controller writes itself (that would be a reconcile per status patch);
/// - an owned Deployment or Service changing or disappearing, and an engine Pod changing
///   (a pull failure or crash loop shows at once);
/// - the requeue each reconcile asks for: that is how the engine is polled.
///
/// Secrets are never listed or watched: each reconcile reads the two a ClusterSync names by
/// name, so the operator needs no access to other Secrets' data.
async fn controller(
    client: Client,
    syncs: Api<ClusterSync>,
    namespace: Option<&str>,
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    use kube::runtime::predicates;
    use kube::runtime::{Predicate, PredicateConfig, WatchStreamExt};

    fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let owned = watcher::Config::default().labels(workload::MANAGED_BY_SELECTOR);

    let (sync_store, sync_writer) = reflector::store();
    let sync_events = reflector(sync_writer, watcher(syncs, watcher::Config::default()))
        .default_backoff()
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::annotations)
                .combine(predicates::finalizers)
                // A real API server bumps a custom resource's generation when it is marked for
                // deletion; this does not rely on it.
                .combine(|cs: &ClusterSync| Some(cs.metadata.deletion_timestamp.is_some() as u64)),
            PredicateConfig::default(),
        );
    let (deployments, dep_events) = cached(scoped(&client, namespace), owned.clone());
    let (services, svc_events) = cached(scoped(&client, namespace), owned.clone());
    let (pods, pod_events) = cached(scoped(&client, namespace), owned);
    // Each controller has a fresh context, so the caches are set exactly once.
    let _ = ctx.caches.set(Caches {
        deployments,
        services,
        pods,
    });

    let syncs_for_pods = sync_store.clone();
    Controller::for_stream(sync_events, sync_store)
        .owns_stream(dep_events)
        .owns_stream(svc_events)
        // Engine pods belong to a ReplicaSet; they are mapped to their ClusterSync by label.
        .watches_stream(pod_events, move |pod: Pod| {
            let ns = pod.namespace();
            let instance = pod.labels().get(workload::INSTANCE_LABEL).cloned();
            syncs_for_pods
                .state()
                .into_iter()
                .filter(|cs| {
                    cs.namespace() == ns
                        && workload::labels(cs).get(workload::INSTANCE_LABEL) == instance.as_ref()
                })
                .map(|cs| ObjectRef::from_obj(&*cs))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(stop)
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile did not complete");
            }
        })
        .await;
}
