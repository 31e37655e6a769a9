//! `/pause`, `/resume` and `/commit`: the state changes of a running sync, each persisted on
//! the destination before it is reported.

use super::source_blocked_warning;
#[allow(unused_imports)]
use crate::engine::*;

impl Engine {
    pub(in crate::engine) async fn stop_job(control: &mut Option<JoinHandle<()>>) {
        if let Some(job) = control.take() {
            job.abort();
            let _ = job.await;
        }
    }

    fn persisted_store(&self) -> Result<Store, ApiError> {
        let dest = self
            .status
            .lock()
            .options
            .as_ref()
            .map(|o| o.destination)
            .ok_or_else(|| ApiError::Internal("no sync options in memory".into()))?;
        Ok(Store::fenced(self.client(dest), &self.lease.me.token))
    }

    pub(in crate::engine) fn store_error(&self, e: mongodb::error::Error) -> ApiError {
        ApiError::ClusterUnavailable(format!(
            "could not record the change on the destination: {}; try again",
            self.scrub(&crate::mongo::describe(&e))
        ))
    }

    #[tracing::instrument(skip_all)]
    pub async fn pause(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Pause.check(self.current_state())?;
        self.refuse_if_stopped()?;
        let store = self.persisted_store()?;
        Self::stop_job(&mut control).await;
        if let Err(e) = store.set_state(DurableState::Paused).await {
            // Not recorded: keep running so memory and the destination agree.
            let options = self
                .status
                .lock()
                .options
                .clone()
                .expect("running sync has options");
            *control = Some(self.spawn_job(&options)?);
            return Err(self.store_error(e));
        }
        self.status.lock().state = State::Paused;
        tracing::info!("sync paused");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn resume(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Resume.check(self.current_state())?;
        self.refuse_if_stopped()?;
        let store = self.persisted_store()?;
        store
            .set_state(DurableState::Running)
            .await
            .map_err(|e| self.store_error(e))?;
        let options = {
            let mut s = self.status.lock();
            s.state = State::Running;
            s.options.clone().expect("paused sync has options")
        };
        *control = Some(self.spawn_job(&options)?);
        tracing::info!("sync resumed");
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn commit(self: &Arc<Self>) -> Result<(), ApiError> {
        let _control = self.control.lock().await;
        Verb::Commit.check(self.current_state())?;
        if let Some(why) = self.status.snapshot().commit_blocker() {
            return Err(ApiError::NotReadyToCommit(why));
        }
        let (options, mode) = {
            let s = self.status.lock();
            (
                s.options.clone().expect("running sync has options"),
                s.write_blocking,
            )
        };
        // Dual blocking: the source stops taking application writes before the commit point is
        // read, so nothing written after it is lost.
        self.blocking(&options, mode)
            .on_commit()
            .await
            .map_err(|e| ApiError::WriteBlockingFailed(e.to_string()))?;
        if mode.blocks_source() {
            self.status.warn(
                "source-blocked",
                source_blocked_warning(options.source, self.uri(options.source).hosts()),
            );
        }
        let commit_ts = crate::mongo::cluster_time(self.client(options.source))
            .await
            .map_err(|e| {
                ApiError::ClusterUnavailable(format!(
                    "cannot read the source's latest time: {}; try again",
                    self.scrub(&crate::mongo::describe(&e))
                ))
            })?;
        let store = self.persisted_store()?;
        store
            .set(doc! { "state": bson::to_bson(&DurableState::Committing).expect("enum"), "commitTs": commit_ts })
            .await
            .map_err(|e| self.store_error(e))?;
        {
            let mut s = self.status.lock();
            s.state = State::Committing;
            s.commit_ts = Some(commit_ts);
        }
        tracing::info!(commit_ts = %format_args!("{}.{}", commit_ts.time, commit_ts.increment), "commit requested");
        Ok(())
    }
}
