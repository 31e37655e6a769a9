//! The checks before a sync, as `/start` runs them and as `POST /api/v1/preflight` reports
//! them without starting anything.

#[allow(unused_imports)]
use crate::engine::*;

impl Engine {
    /// `POST /api/v1/preflight`: the checks `/start` would run for `options`, reported, with
    /// nothing started or written. Allowed in every state.
    pub async fn check(
        &self,
        options: StartOptions,
    ) -> Result<crate::contract::preflight::PreflightReply, ApiError> {
        let scope = options.validate()?;
        let report = self.examine(&options, preflight::kind_for(&options)).await;
        let mut reply = report.to_reply();
        // What /start judges of the destination, as /start judges it.
        if reply.passed {
            if let Err(e) = self.judge_destination(&options, &scope).await {
                use crate::contract::preflight::{PreflightProblem, ProblemKind};
                reply.passed = false;
                reply.problems.push(PreflightProblem {
                    kind: match e.name() {
                        ErrorName::InsufficientDestinationDiskSpace => {
                            ProblemKind::InsufficientDiskSpace
                        }
                        ErrorName::ClusterUnavailable => ProblemKind::Unreachable,
                        _ => ProblemKind::DestinationNotEmpty,
                    },
                    message: e.to_string(),
                });
            }
        }
        Ok(reply)
    }

    /// The preflight for `options`' direction, reported.
    async fn examine(
        &self,
        options: &StartOptions,
        kind: preflight::SyncKind,
    ) -> preflight::Report {
        let scrub = |t: &str| self.scrub(t);
        let side =
            |label: ClusterLabel| (self.client(label), label.as_str(), self.uri(label).hosts());
        preflight::run(
            side(options.source),
            side(options.destination),
            preflight::Intent {
                kind,
                // The destination's content is judged by the caller, with the namespace filter.
                pre_existing_destination_data: true,
                copy_rate: preflight::checks::DEFAULT_COPY_RATE,
                measure: false,
            },
            &scrub,
        )
        .await
    }

    /// Runs the preflight for `options`' direction; missing roles refuse the call at once.
    pub(in crate::engine) async fn preflight(
        &self,
        options: &StartOptions,
        kind: preflight::SyncKind,
    ) -> Result<preflight::Report, ApiError> {
        let report = self.examine(options, kind).await;
        let roles: Vec<String> = report
            .problems_of(crate::contract::preflight::ProblemKind::Roles)
            .map(|p| p.message.clone())
            .collect();
        if roles.is_empty() {
            Ok(report)
        } else {
            Err(ApiError::InsufficientPermissions(roles.join("; ")))
        }
    }
}
