//! clustersync: MongoDB cluster-to-cluster sync.
//!
//! [`engine`] is the sync engine, a drop-in for MongoDB's `mongosync` (same flags, same HTTP
//! API, same states). It knows nothing of Kubernetes.

pub mod contract;
pub mod engine;
pub mod logging;
pub mod mongo;
pub mod operator;
pub mod preflight;
pub mod uri;
pub mod verify;
