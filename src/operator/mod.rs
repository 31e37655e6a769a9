//! The Kubernetes side: the `ClusterSync` custom resource (and, next, the controller that runs
//! the engine for it). The engine's internals never appear here; the two meet at the engine's
//! HTTP API.

pub mod actions;
pub mod conditions;
pub mod crd;
pub mod mirror;
pub mod validate;
pub mod workload;
