//! clustersync: MongoDB cluster-to-cluster sync, and a Kubernetes operator that runs it.
//!
//! The map of the crate, top to bottom (a module uses only those below it; `tests/layout.rs`
//! keeps it so):
//!
//! - [`cli`]: the `clustersync` binary's subcommands (`engine`, `check`, `plan`, `verify`,
//!   `kubectl`, `operator`, `crd`), one file each, with their renderers.
//! - [`operator`]: the Kubernetes operator. It observes ClusterSyncs, decides in pure functions
//!   ([`operator::decide`], [`operator::actions`], [`operator::validate`],
//!   [`operator::workload`]) and acts on the API server and on the engine's HTTP API. It never
//!   connects to MongoDB and uses nothing of the engine but the [`contract`].
//! - [`engine`]: the sync engine behind `clustersync engine`, a drop-in for MongoDB's
//!   `mongosync` (same flags, same HTTP API, same states). It knows nothing of Kubernetes.
//! - [`plan`]: what a sync would carry, how long it should take and what may go wrong
//!   (`clustersync plan`, the engine's `/api/v1/plan`), from the preflight's facts, the
//!   catalog and a short measured probe.
//! - [`preflight`]: the checks before a sync (reachability, versions, topology, roles), run by
//!   the engine at `/start` and `/api/v1/preflight` and printed by `clustersync check`.
//! - [`verify`]: the byte-exact comparison of two clusters (`clustersync verify`), also used by
//!   the engine's embedded verifier.
//! - [`mongo`]: what every part that talks to MongoDB shares: clients, error naming without
//!   secrets, transient-error classification, the catalog.
//! - [`contract`]: the types the engine, the operator and the CLI agree on, with no I/O: the
//!   `/start` options, namespace filters, states and verbs, `/progress`, `/preflight`, error
//!   names.
//! - [`uri`] (connection strings: validation and redaction) and [`logging`].

pub mod cli;
pub mod contract;
pub mod engine;
pub mod logging;
pub mod mongo;
pub mod operator;
pub mod plan;
pub mod preflight;
pub mod uri;
pub mod verify;
