//! User write blocking (`setUserWriteBlockMode`), as mongosync does it: the destination is
//! blocked for the whole sync and released right before `canWrite`; with dual blocking the
//! source is blocked at `/commit` and stays blocked, so applications cannot keep writing to the
//! old cluster. The engine's own writes pass because its user holds `bypassWriteBlockingMode`.
//!
//! The sequence lives in [`Sequence`], which talks to the clusters only through the
//! [`Blocker`] trait, so the order of commands is tested with a recording fake where a server
//! lacks the command.

use std::sync::Arc;

use futures::future::BoxFuture;

use crate::contract::options::ClusterLabel;
use crate::contract::write_blocking::Mode;

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The server has no `setUserWriteBlockMode` (MongoDB before 6.0, or other servers).
    #[error("{cluster} does not support setUserWriteBlockMode (write blocking needs MongoDB 6.0 or later)")]
    Unsupported { cluster: &'static str },
    #[error("{cluster}: setUserWriteBlockMode failed: {message}")]
    Failed {
        cluster: &'static str,
        message: String,
        transient: bool,
    },
}

/// Sends `setUserWriteBlockMode` to one cluster.
pub trait Blocker: Send + Sync {
    fn set(&self, cluster: ClusterLabel, blocked: bool) -> BoxFuture<'_, Result<(), BlockError>>;
}

/// The real one.
pub struct ServerBlocker {
    pub clients: [mongodb::Client; 2],
    pub scrub: Arc<dyn Fn(&str) -> String + Send + Sync>,
}

impl Blocker for ServerBlocker {
    fn set(&self, cluster: ClusterLabel, blocked: bool) -> BoxFuture<'_, Result<(), BlockError>> {
        Box::pin(async move {
            let cmd = bson::doc! { "setUserWriteBlockMode": 1, "global": blocked };
            match self.clients[cluster.index()]
                .database("admin")
                .run_command(cmd)
                .await
            {
                Ok(_) => Ok(()),
                Err(e)
                    if crate::mongo::error_code(&e)
                        == Some(crate::mongo::codes::COMMAND_NOT_FOUND) =>
                {
                    Err(BlockError::Unsupported {
                        cluster: cluster.as_str(),
                    })
                }
                Err(e) => Err(BlockError::Failed {
                    cluster: cluster.as_str(),
                    message: (self.scrub)(&crate::mongo::describe(&e)),
                    transient: crate::mongo::is_transient(&e),
                }),
            }
        })
    }
}

/// The write-blocking steps of one sync.
pub struct Sequence<'a> {
    pub blocker: &'a dyn Blocker,
    pub mode: Mode,
    pub source: ClusterLabel,
    pub destination: ClusterLabel,
}

impl Sequence<'_> {
    /// Whether the clusters the mode needs accept the command. Unblocking a cluster that is not
    /// blocked changes nothing, so this is a safe probe.
    pub async fn probe(&self) -> Result<(), BlockError> {
        if self.mode.blocks_destination() {
            self.blocker.set(self.destination, false).await?;
        }
        if self.mode.blocks_source() {
            self.blocker.set(self.source, false).await?;
        }
        Ok(())
    }

    /// `/start`: block the destination.
    pub async fn on_start(&self) -> Result<(), BlockError> {
        if self.mode.blocks_destination() {
            self.blocker.set(self.destination, true).await?;
        }
        Ok(())
    }

    /// `/commit`: with dual blocking, block the source before the commit point is read.
    pub async fn on_commit(&self) -> Result<(), BlockError> {
        if self.mode.blocks_source() {
            self.blocker.set(self.source, true).await?;
        }
        Ok(())
    }

    /// Right before `canWrite`: release the destination.
    pub async fn on_can_write(&self) -> Result<(), BlockError> {
        if self.mode.blocks_destination() {
            self.blocker.set(self.destination, false).await?;
        }
        Ok(())
    }

    /// After a restart, re-assert what the persisted state implies (someone may have changed
    /// it by hand meanwhile): destination blocked until `canWrite`, source blocked once the
    /// commit began.
    pub async fn on_restart(&self, committing: bool, can_write: bool) -> Result<(), BlockError> {
        if self.mode.blocks_destination() && !can_write {
            self.blocker.set(self.destination, true).await?;
        }
        if self.mode.blocks_source() && committing {
            self.blocker.set(self.source, true).await?;
        }
        Ok(())
    }

    /// The sync cannot go on (a failed `/start`, a fatal error): release every block, so no
    /// cluster stays read-only for an application. Every release is attempted.
    pub async fn release_all(&self) -> Result<(), BlockError> {
        let mut first_error = None;
        for (needed, cluster) in [
            (self.mode.blocks_destination(), self.destination),
            (self.mode.blocks_source(), self.source),
        ] {
            if needed {
                if let Err(e) = self.blocker.set(cluster, false).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records every command; refuses the ones listed.
    #[derive(Default)]
    struct Recorder {
        log: Mutex<Vec<(ClusterLabel, bool)>>,
        unsupported: Vec<ClusterLabel>,
    }

    impl Blocker for Recorder {
        fn set(
            &self,
            cluster: ClusterLabel,
            blocked: bool,
        ) -> BoxFuture<'_, Result<(), BlockError>> {
            Box::pin(async move {
                if self.unsupported.contains(&cluster) {
                    return Err(BlockError::Unsupported {
                        cluster: cluster.as_str(),
                    });
                }
                self.log.lock().unwrap().push((cluster, blocked));
                Ok(())
            })
        }
    }

    use ClusterLabel::{Cluster0 as C0, Cluster1 as C1};

    fn ctl(b: &Recorder, mode: Mode) -> Sequence<'_> {
        Sequence {
            blocker: b,
            mode,
            source: C0,
            destination: C1,
        }
    }

    #[tokio::test]
    async fn dual_blocking_sequence() {
        let r = Recorder::default();
        let c = ctl(&r, Mode::SourceAndDestination);
        c.probe().await.unwrap();
        c.on_start().await.unwrap();
        c.on_commit().await.unwrap();
        c.on_can_write().await.unwrap();
        // probe (unblock dest, unblock source), block dest at start, block source at commit,
        // release dest before canWrite; the source stays blocked.
        assert_eq!(
            *r.log.lock().unwrap(),
            vec![
                (C1, false),
                (C0, false),
                (C1, true),
                (C0, true),
                (C1, false)
            ]
        );
    }

    #[tokio::test]
    async fn destination_only_and_none() {
        let r = Recorder::default();
        let c = ctl(&r, Mode::DestinationOnly);
        c.on_start().await.unwrap();
        c.on_commit().await.unwrap();
        c.on_can_write().await.unwrap();
        assert_eq!(*r.log.lock().unwrap(), vec![(C1, true), (C1, false)]);
        let r = Recorder::default();
        let c = ctl(&r, Mode::None);
        c.probe().await.unwrap();
        c.on_start().await.unwrap();
        c.on_commit().await.unwrap();
        c.on_can_write().await.unwrap();
        c.release_all().await.unwrap();
        assert!(r.log.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn failures_and_restarts_leave_nothing_blocked_that_should_not_be() {
        let r = Recorder::default();
        let c = ctl(&r, Mode::SourceAndDestination);
        c.on_start().await.unwrap();
        c.on_commit().await.unwrap();
        c.release_all().await.unwrap();
        assert_eq!(
            *r.log.lock().unwrap(),
            vec![(C1, true), (C0, true), (C1, false), (C0, false)]
        );
        let r = Recorder::default();
        let c = ctl(&r, Mode::SourceAndDestination);
        c.on_restart(false, false).await.unwrap(); // running: destination only
        c.on_restart(true, false).await.unwrap(); // committing: both
        c.on_restart(true, true).await.unwrap(); // after canWrite: source only
        assert_eq!(
            *r.log.lock().unwrap(),
            vec![(C1, true), (C1, true), (C0, true), (C0, true)]
        );
    }

    #[tokio::test]
    async fn an_unsupported_server_is_named() {
        let r = Recorder {
            unsupported: vec![C1],
            ..Default::default()
        };
        let e = ctl(&r, Mode::DestinationOnly).probe().await.unwrap_err();
        assert_eq!(e.to_string(), "cluster1 does not support setUserWriteBlockMode (write blocking needs MongoDB 6.0 or later)");
        // release_all still tries every cluster.
        let r = Recorder {
            unsupported: vec![C1],
            ..Default::default()
        };
        assert!(ctl(&r, Mode::SourceAndDestination)
            .release_all()
            .await
            .is_err());
        assert_eq!(*r.log.lock().unwrap(), vec![(C0, false)]);
    }
}
