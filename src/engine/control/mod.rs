//! The engine's control: what its HTTP API's verbs do to a sync, one file per concern, each
//! an `impl Engine` block over the handle in `engine/mod.rs`.

mod lifecycle;
mod plan;
mod preflight;
mod restore;
mod reverse;
mod run;
mod start;

use crate::contract::options::ClusterLabel;

/// The warning a sync carries while the source is write-blocked for the commit.
pub(super) fn source_blocked_warning(source: ClusterLabel, hosts: &str) -> String {
    format!(
        "clustersync has blocked user writes on the source cluster ({}: {hosts}) for the commit; it stays blocked after COMMITTED so that applications move to the destination",
        source.as_str()
    )
}
