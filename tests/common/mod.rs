//! Shared fixtures for clustersync integration tests (`mod common;`).
//!
//! - [`Server`]: a throwaway SecantusDB server (MongoDB wire protocol) with restartable storage.
//! - [`seed_full_dataset`]: a fixed dataset covering BSON types, big docs, odd `_id`s,
//!   collection options, index kinds and views (databases `seed_a`, `seed_b`).
//! - [`compare_clusters`] / [`assert_clusters_equal`]: byte-exact cluster comparison.
//! - [`Workload`]: deterministic concurrent random CRUD + DDL on `wl_1`, `wl_2`.
//! - [`Engine`]: runs `clustersync engine …` and talks to its HTTP API.
#![allow(dead_code)]

pub mod compare;
pub mod copy;
pub mod engine;
pub mod k8s;
pub mod kubelet_logs;
pub mod kubelet_real;
pub mod netns;
pub mod operator;
pub mod proxy;
pub mod seed;
pub mod server;
pub mod workload;

#[allow(unused_imports)]
pub use compare::{
    assert_clusters_converge, assert_clusters_equal, compare_clusters, compare_clusters_exact,
    compare_database, wait_clusters_equal,
};
#[allow(unused_imports)]
pub use copy::copy_cluster_naive;
#[allow(unused_imports)]
pub use engine::{metric, state_of, Engine, EngineCommand};
#[allow(unused_imports)]
pub use seed::{error_summary, seed_full_dataset, try_create_unsupported_indexes};
#[allow(unused_imports)]
pub use server::{client_for, free_port, uri_for_port, Server};
#[allow(unused_imports)]
pub use workload::{plan as workload_plan, Shapes, Workload, WorkloadOptions, WorkloadStats};
