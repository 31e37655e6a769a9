//! `POST /api/v1/plan` (ours; mongosync has no such endpoint): what a sync with the `/start`
//! body's options would carry, how long it should take and what may go wrong, from the same
//! library as `clustersync plan`, with the engine's own clients. Read-only for user data (the
//! probe's scratch database is dropped), so it is allowed in every state.

use std::time::Duration;

#[allow(unused_imports)]
use crate::engine::*;

/// The most a plan may take before the call is answered with an error: the probe is bounded,
/// but listing and sizing thousands of collections is not.
pub const PLAN_TIMEOUT: Duration = Duration::from_secs(120);

impl Engine {
    /// The plan for `options` (validated as `/start` validates them).
    #[tracing::instrument(skip_all)]
    pub async fn plan(
        &self,
        options: StartOptions,
    ) -> Result<crate::contract::plan::Plan, ApiError> {
        let plan_options = crate::plan::PlanOptions::from_start(&options)?;
        let scrub = |t: &str| self.scrub(t);
        let side = |label: ClusterLabel| crate::plan::Side {
            client: self.client(label),
            label: label.as_str(),
            hosts: self.uri(label).hosts(),
        };
        let quiet = |_: &str| {};
        let run = crate::plan::run(
            side(options.source),
            side(options.destination),
            &plan_options,
            &scrub,
            &quiet,
        );
        match tokio::time::timeout(PLAN_TIMEOUT, run).await {
            Ok(plan) => Ok(plan),
            Err(_) => {
                // The probe may have been writing when it was abandoned.
                let destination = self.client(options.destination);
                if let Err(e) = crate::plan::probe::drop_abandoned_scratch(
                    destination,
                    &plan_options.scratch_db,
                )
                .await
                {
                    tracing::warn!(scratch = %plan_options.scratch_db, error = %self.scrub(&crate::mongo::describe(&e)), "the plan's scratch database could not be dropped");
                }
                Err(ApiError::ClusterUnavailable(format!(
                    "the plan did not finish within {} s: the clusters answer too slowly (or hold very many collections); narrow it with includeNamespaces, or run clustersync plan, which has no time limit",
                    PLAN_TIMEOUT.as_secs()
                )))
            }
        }
    }
}
