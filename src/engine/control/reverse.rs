//! `/reverse`: a committed reversible sync turned around, its metadata moved to the new
//! destination (the old source), which stays write-blocked while it catches up.

#[allow(unused_imports)]
use crate::engine::*;

impl Engine {
    #[tracing::instrument(skip_all)]
    pub async fn reverse(self: &Arc<Self>) -> Result<(), ApiError> {
        let mut control = self.control.lock().await;
        Verb::Reverse.check(self.current_state())?;
        let reversible = self
            .status
            .lock()
            .options
            .as_ref()
            .is_some_and(|o| o.reversible);
        if !reversible {
            return Err(ApiError::NotReversible);
        }
        let (old_options, mode, note) = {
            let s = self.status.lock();
            (
                s.options.clone().expect("committed sync has options"),
                s.write_blocking,
                s.warnings.get("write-blocking").cloned(),
            )
        };
        let old_store = Store::new(self.client(old_options.destination));
        let old = old_store
            .load()
            .await
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| {
                ApiError::Internal("the migration document is missing from the destination".into())
            })?;
        let from = old.can_write_ts.ok_or_else(|| {
            ApiError::Internal(
                "the commit recorded no canWrite time; this sync cannot be reversed".into(),
            )
        })?;
        let mut options = old_options.clone();
        options.source = old_options.destination;
        options.destination = old_options.source;
        // Both clusters now play both parts: the multiple-reversals roles on each.
        self.preflight(&options, preflight::SyncKind::MultipleReversals)
            .await?;
        // The lease moves with the metadata: the new destination is taken before anything is
        // written to it.
        if let Err(why) = self.lease.move_to(self.client(options.destination)).await {
            return Err(ApiError::LeaseHeld(self.scrub(&why)));
        }
        self.status.lock().state = State::Reversing;
        let result = self.write_reversal(&old, &options, mode, from).await;
        if let Err(e) = result {
            // The metadata stays where it was, and so does the lease.
            if let Err(why) = self
                .lease
                .move_to(self.client(old_options.destination))
                .await
            {
                tracing::warn!(error = %self.scrub(&why), "could not move the lease back after a failed reversal");
            }
            self.status.lock().state = State::Committed;
            return Err(e);
        }
        {
            let mut s = self.status.lock();
            s.state = State::Running;
            s.phase = Some(crate::contract::state::Phase::ChangeEvents);
            s.options = Some(options.clone());
            s.warnings.remove("source-blocked");
            if let Some(n) = note {
                s.warnings.insert("write-blocking".into(), n);
            }
        }
        self.status.restart_from(from);
        *control = Some(self.spawn_job(&options)?);
        tracing::info!(
            source = %self.uri(options.source).hosts(),
            destination = %self.uri(options.destination).hosts(),
            generation = old.generation + 1,
            "sync reversed"
        );
        Ok(())
    }

    /// REVERSING: the migration's metadata moves to the new destination (the old source),
    /// which stays write-blocked while it receives the new source's changes since `canWrite`.
    async fn write_reversal(
        &self,
        old: &MigrationDoc,
        options: &StartOptions,
        mode: crate::contract::write_blocking::Mode,
        from: bson::Timestamp,
    ) -> Result<(), ApiError> {
        let new_store = Store::new(self.client(options.destination));
        let old_store = Store::new(self.client(options.source));
        let mut doc = old.clone();
        doc.options = options.clone();
        doc.generation = old.generation + 1;
        doc.state = DurableState::Running;
        doc.phase = crate::contract::state::Phase::ChangeEvents;
        doc.start_ts = from;
        doc.resume_token = None;
        doc.applied_ts = Some(from);
        doc.copy_finished_ts = Some(from);
        doc.commit_ts = None;
        doc.can_write = false;
        doc.can_write_ts = None;
        doc.lease_token = Some(self.lease.me.token.clone());
        let mut parts = old_store
            .partitions()
            .await
            .map_err(|e| self.store_error(e))?;
        // What the old direction's copy read says nothing of the new source: its digests must
        // not stand for it in the reversed verifier's first comparison.
        for p in &mut parts {
            p.digest = None;
        }
        self.blocking(options, mode)
            .on_start()
            .await
            .map_err(|e| ApiError::WriteBlockingFailed(e.to_string()))?;
        new_store
            .replace_partitions(&parts)
            .await
            .map_err(|e| self.store_error(e))?;
        new_store
            .replace(&doc)
            .await
            .map_err(|e| self.store_error(e))?;
        // The old direction's metadata goes last: until then a restart finds both and keeps
        // the newer generation.
        self.client(options.source)
            .database(METADATA_DB)
            .drop()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(())
    }
}
