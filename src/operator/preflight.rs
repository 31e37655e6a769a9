//! The engine library's preflight, run by the controller before it asks the engine to start:
//! a user sees missing roles in `kubectl describe` instead of in a refused `/start`.

use std::time::Duration;

use super::credentials::Resolved;
use crate::contract::options::StartOptions;
use crate::contract::write_blocking::Mode;
use crate::preflight::checks::{ProblemKind, DEFAULT_COPY_RATE};
use crate::preflight::{self, Intent, SyncKind};

/// The controller's reading of a preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// Users lack roles: one message per user, naming the roles and the grant command.
    MissingRoles(String),
    /// A cluster cannot be examined (down, wrong password, TLS).
    Unreachable(String),
    /// Anything else that stops a sync (version, topology, the same cluster twice).
    Failed(String),
}

impl Verdict {
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Passed)
    }

    /// Condition reason and message.
    pub fn reason_and_message(&self) -> (&'static str, String) {
        match self {
            Verdict::Passed => (
                "RolesPresent",
                "both connection users hold the roles this sync needs".into(),
            ),
            Verdict::MissingRoles(m) => ("MissingRoles", m.clone()),
            Verdict::Unreachable(m) => ("ClusterUnreachable", m.clone()),
            Verdict::Failed(m) => ("PreflightFailed", m.clone()),
        }
    }
}

/// The roles a sync needs follow from its options, as in the engine: reversible, or blocking
/// the source at commit when that was asked for explicitly. (When dual blocking is only the
/// default, the engine may fall back to none; it then checks the stricter set itself.)
pub fn kind_for(options: &StartOptions) -> SyncKind {
    let (mode, explicit) = options.write_blocking();
    if options.reversible {
        SyncKind::Reversing
    } else if explicit && mode == Mode::SourceAndDestination {
        SyncKind::DualWriteBlocking
    } else {
        SyncKind::Default
    }
}

/// Connects to both clusters and judges them. Bounded in time: a silent cluster is reported,
/// not waited for.
pub async fn run(creds: &Resolved, options: &StartOptions, timeout: Duration) -> Verdict {
    let scrub = |t: &str| creds.scrub(t);
    let work = async {
        let source = crate::mongo::build_client("source", &creds.source)
            .await
            .map_err(|e| Verdict::Unreachable(scrub(&e.to_string())))?;
        let destination = crate::mongo::build_client("destination", &creds.destination)
            .await
            .map_err(|e| Verdict::Unreachable(scrub(&e.to_string())))?;
        let report = preflight::run(
            (&source, "source", creds.source.hosts()),
            (&destination, "destination", creds.destination.hosts()),
            Intent {
                kind: kind_for(options),
                // The engine judges the destination's content with the namespace filter.
                pre_existing_destination_data: true,
                copy_rate: DEFAULT_COPY_RATE,
                measure: false,
            },
            &scrub,
        )
        .await;
        Ok::<_, Verdict>(report)
    };
    let report = match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            return Verdict::Unreachable(format!(
                "the clusters ({} and {}) did not answer within {}s; check that they are up and reachable from the operator's pod",
                creds.source.hosts(),
                creds.destination.hosts(),
                timeout.as_secs()
            ))
        }
        Ok(Err(v)) => return v,
        Ok(Ok(r)) => r,
    };
    let join = |kind: ProblemKind| {
        report
            .problems_of(kind)
            .map(|p| p.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let roles = join(ProblemKind::Roles);
    let unreachable = join(ProblemKind::Unreachable);
    if !unreachable.is_empty() {
        Verdict::Unreachable(unreachable)
    } else if !roles.is_empty() {
        Verdict::MissingRoles(roles)
    } else if report.passed() {
        Verdict::Passed
    } else {
        Verdict::Failed(
            report
                .problems
                .iter()
                .map(|p| p.message.clone())
                .collect::<Vec<_>>()
                .join("; "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(body: serde_json::Value) -> StartOptions {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn the_sync_kind_follows_the_options() {
        let base = serde_json::json!({"source": "cluster0", "destination": "cluster1"});
        assert_eq!(kind_for(&options(base.clone())), SyncKind::Default);
        let mut r = base.clone();
        r["reversible"] = true.into();
        assert_eq!(kind_for(&options(r)), SyncKind::Reversing);
        let mut d = base;
        d["enableUserWriteBlocking"] = "sourceAndDestination".into();
        assert_eq!(kind_for(&options(d)), SyncKind::DualWriteBlocking);
    }
}
