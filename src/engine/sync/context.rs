//! What a sync job's parts share: [`Ctx`] (the clusters, the store, the options and the
//! fence, with the few operations every phase needs) and [`JobError`]. Apart from the job that
//! runs the phases, so that change application and the verifier depend on it and not on their
//! caller.

use std::sync::Arc;

use mongodb::Client;

use crate::contract::filter::Scope;
use crate::contract::options::StartOptions;
use crate::contract::write_blocking::Mode;
use crate::engine::blocking::{Blocker, Sequence};
use crate::engine::fence::{Fence, Fenced};
use crate::engine::status::StatusCell;
use crate::engine::store::Store;
use crate::engine::sync::copy::{self, CopyTuning};
use crate::mongo::catalog::{self, CollKind};
use crate::verify::Cluster;

/// Both clusters, as the verifier reads them (errors scrubbed of their connection strings).
pub struct Clusters {
    pub source: Cluster,
    pub destination: Cluster,
}

/// Everything a job needs; cheap to clone.
#[derive(Clone)]
pub struct Ctx {
    pub source: Client,
    pub destination: Client,
    pub store: Store,
    pub scope: Arc<Scope>,
    pub options: StartOptions,
    pub status: Arc<StatusCell>,
    pub tuning: CopyTuning,
    pub blocker: Arc<dyn Blocker>,
    pub write_blocking: Mode,
    /// Both clusters as the embedded verifier compares them; `None` when verification is off.
    pub verifier: Option<Arc<Clusters>>,
    /// This engine's lease on the destination: every write checks it first.
    pub fence: Arc<Fence>,
}

impl Ctx {
    /// Ok while this engine provably holds the destination's lease; checked before writes.
    pub fn fenced(&self) -> Result<(), JobError> {
        Ok(self.fence.check()?)
    }

    /// [`Self::fenced`], waiting for a late renewal up to the lease's duration: for writes
    /// that follow long read-only work, which a failure here would make the job repeat.
    pub async fn fenced_after_reading(&self) -> Result<(), JobError> {
        Ok(self
            .fence
            .proven_within(crate::engine::lease::LEASE_DURATION)
            .await?)
    }

    pub fn blocking(&self) -> Sequence<'_> {
        Sequence {
            blocker: self.blocker.as_ref(),
            mode: self.write_blocking,
            source: self.options.source,
            destination: self.options.destination,
        }
    }

    /// Builds the source's indexes of `db.coll` (those in `names`, or all) on the destination,
    /// in sync form, per `buildIndexes`.
    pub async fn build_indexes(
        &self,
        db: &str,
        coll: &str,
        names: Option<&[String]>,
    ) -> mongodb::error::Result<usize> {
        catalog::build_indexes(
            &self.source,
            &self.destination,
            db,
            coll,
            self.options.build_indexes,
            names,
            self.tuning.index_batch,
        )
        .await
    }

    /// [`Self::build_indexes`] from a source index listing already read.
    pub async fn build_listed_indexes(
        &self,
        src: &[bson::Document],
        db: &str,
        coll: &str,
    ) -> mongodb::error::Result<usize> {
        catalog::build_listed_indexes(
            src,
            &self.destination,
            db,
            coll,
            self.options.build_indexes,
            None,
            self.tuning.index_batch,
        )
        .await
    }

    /// Copies a whole collection that already exists (empty or partial) on the destination.
    pub async fn copy_whole(&self, spec: &catalog::CollSpec) -> mongodb::error::Result<()> {
        if spec.kind == CollKind::View {
            return Ok(());
        }
        let part = copy::whole_collection(spec);
        copy::copy_partition(
            &self.source,
            &self.destination,
            &part,
            &self.tuning,
            &crate::engine::status::Recopy(&self.status.counters),
            &copy::Shared::new(1, false),
            &self.fence,
            None,
        )
        .await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The sync cannot go on; the message says why and what to do.
    #[error("{0}")]
    Fatal(String),
    #[error(transparent)]
    Mongo(#[from] mongodb::error::Error),
    /// A comparison by the embedded verifier could not be carried out (a cluster down, a
    /// command failed); retried like the sync's other interruptions. Already scrubbed.
    #[error("{0}")]
    Verify(#[from] crate::verify::VerifyError),
    /// This engine's lease on the destination is lost (fatal) or unproven (retried).
    #[error(transparent)]
    Lease(#[from] Fenced),
}

impl JobError {
    pub fn fatal(msg: impl Into<String>) -> Self {
        JobError::Fatal(msg.into())
    }
}
