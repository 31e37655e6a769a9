//! What the engine, the operator and the CLI agree on, with no I/O: the `/start` options and
//! their validation, namespace filters, the engine's states and verbs, the `/progress`
//! document and the names of the API's errors. The engine serves it, the operator reads it;
//! both compile against these types, so the HTTP API cannot drift between them.

#![warn(missing_docs)]

pub mod errors;
pub mod filter;
pub mod options;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod state;
pub mod verbosity;
pub mod write_blocking;
