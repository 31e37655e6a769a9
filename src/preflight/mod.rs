//! Preflight: everything that can be checked before a sync moves anything, as a library that
//! the engine (`/start`), `clustersync check` and the operator all call.

pub mod checks;
pub mod report;
pub mod roles;

use mongodb::Client;

pub use checks::{ClusterFacts, Intent, Report};
pub use roles::{Side, SyncKind};

/// Gathers both clusters' facts at once and judges them.
pub async fn run(
    source: (&Client, &str, &str),
    destination: (&Client, &str, &str),
    intent: Intent,
    scrub: &(dyn Fn(&str) -> String + Sync),
) -> Report {
    let (s, d) = tokio::join!(
        checks::gather(source.0, source.1, source.2, scrub, intent.measure),
        checks::gather(
            destination.0,
            destination.1,
            destination.2,
            scrub,
            intent.measure
        ),
    );
    checks::judge(s, d, intent)
}
