//! Preflight: everything that can be checked before a sync moves anything, as a library that
//! the engine (`/start`), `clustersync check` and the operator all call.

pub mod checks;
pub mod disk;
pub mod report;
pub mod roles;

use mongodb::Client;

pub use checks::{ClusterFacts, Intent, Report};
pub use roles::{Side, SyncKind};

use crate::contract::options::StartOptions;
use crate::contract::preflight::{PreflightProblem, PreflightReply};
use crate::contract::write_blocking::Mode;

/// The roles a sync needs follow from its options, as `/start` judges them: reversible, or
/// blocking the source at commit when that was asked for explicitly. (When dual blocking is
/// only the default, `/start` may fall back to none; it then checks the stricter set itself.)
pub fn kind_for(options: &StartOptions) -> SyncKind {
    let (mode, explicit) = options.write_blocking();
    SyncKind::of(
        options.reversible,
        explicit && mode == Mode::SourceAndDestination,
    )
}

impl Report {
    /// The report as `POST /api/v1/preflight` answers it.
    pub fn to_reply(&self) -> PreflightReply {
        PreflightReply {
            success: true,
            passed: self.passed(),
            problems: self
                .problems
                .iter()
                .map(|p| PreflightProblem {
                    kind: p.kind,
                    message: p.message.clone(),
                })
                .collect(),
            warnings: self.warnings.clone(),
        }
    }
}

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
