//! The engine's preflight, asked for by the controller before it asks the engine to start: a
//! user sees missing roles in `kubectl describe` instead of in a refused `/start`.

use std::time::Duration;

use super::engine_api::EngineApi;
use crate::contract::options::StartOptions;
use crate::contract::preflight::{PreflightReply, ProblemKind};

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
    /// The engine could not be asked.
    EngineUnavailable(String),
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
            Verdict::EngineUnavailable(m) => ("EngineNotReady", m.clone()),
        }
    }
}

/// Asks the engine to run `/start`'s checks (`POST /api/v1/preflight`) and judges its reply.
/// The operator never connects to the clusters itself: the engine holds the connections and
/// the credentials. Bounded in time: a silent engine or cluster is reported, not waited for.
pub async fn run(api: &EngineApi, options: &StartOptions, timeout: Duration) -> Verdict {
    let reply = match tokio::time::timeout(timeout, api.preflight(options)).await {
        Err(_) => {
            return Verdict::Unreachable(format!(
                "the engine's preflight did not answer within {}s; check that both clusters are up and reachable from the engine's pod",
                timeout.as_secs()
            ))
        }
        Ok(Err(e)) => return Verdict::EngineUnavailable(e.to_string()),
        Ok(Ok(r)) => r,
    };
    judge(&reply)
}

/// The controller's reading of the engine's preflight reply.
pub fn judge(reply: &PreflightReply) -> Verdict {
    let unreachable = reply.messages_of(ProblemKind::Unreachable);
    let roles = reply.messages_of(ProblemKind::Roles);
    if !unreachable.is_empty() {
        Verdict::Unreachable(unreachable)
    } else if !roles.is_empty() {
        Verdict::MissingRoles(roles)
    } else if reply.passed {
        Verdict::Passed
    } else {
        Verdict::Failed(
            reply
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
    use crate::contract::preflight::PreflightProblem;

    fn reply(passed: bool, problems: &[(ProblemKind, &str)]) -> PreflightReply {
        PreflightReply {
            success: true,
            passed,
            problems: problems
                .iter()
                .map(|(kind, m)| PreflightProblem {
                    kind: *kind,
                    message: m.to_string(),
                })
                .collect(),
            warnings: vec![],
        }
    }

    #[test]
    fn the_verdict_names_the_most_basic_problem_first() {
        assert_eq!(judge(&reply(true, &[])), Verdict::Passed);
        assert_eq!(
            judge(&reply(false, &[(ProblemKind::Roles, "u lacks restore")])),
            Verdict::MissingRoles("u lacks restore".into())
        );
        assert_eq!(
            judge(&reply(
                false,
                &[
                    (ProblemKind::Roles, "u lacks restore"),
                    (ProblemKind::Unreachable, "cluster1 down")
                ]
            )),
            Verdict::Unreachable("cluster1 down".into())
        );
        assert_eq!(
            judge(&reply(
                false,
                &[
                    (ProblemKind::Version, "5.0"),
                    (ProblemKind::SameCluster, "same")
                ]
            )),
            Verdict::Failed("5.0; same".into())
        );
    }
}
