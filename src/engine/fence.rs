//! The in-memory fence every writer checks before it writes: open while this engine's lease on
//! the destination (see [`super::lease`]) is proven, closed for good once it is lost. Apart
//! from the lease's I/O so that the metadata store can name a lost lease without importing it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn lk<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the holder may still write, free of I/O: `valid_until` is the end of the trust
/// its last successful renewal bought.
pub fn fence_open(valid_until: Option<Instant>, lost: bool, now: Instant) -> bool {
    !lost && valid_until.is_some_and(|v| now < v)
}

/// Why the fence is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// Another engine took the lease (or it was removed): this engine must stop for good.
    #[error("{0}")]
    Lost(String),
    /// The lease could not be renewed lately (the destination is slow or unreachable): writes
    /// wait until a renewal succeeds.
    #[error("the lease on the destination could not be renewed for {0} s; writes are paused until the destination answers")]
    Unproven(u64),
}

/// The in-memory fence every writer checks: cheap (a lock and a clock read).
#[derive(Debug, Default)]
pub struct Fence {
    inner: Mutex<FenceState>,
}

#[derive(Debug, Default)]
struct FenceState {
    valid_until: Option<Instant>,
    last_renewed: Option<Instant>,
    lost: Option<String>,
}

impl Fence {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Ok while the lease is proven.
    pub fn check(&self) -> Result<(), Fenced> {
        let s = lk(&self.inner);
        if let Some(why) = &s.lost {
            return Err(Fenced::Lost(why.clone()));
        }
        if fence_open(s.valid_until, false, Instant::now()) {
            Ok(())
        } else {
            Err(Fenced::Unproven(
                s.last_renewed.map_or(0, |t| t.elapsed().as_secs()),
            ))
        }
    }

    /// [`Self::check`], waiting up to `within` while the lease is only unproven (the renewal
    /// is late, not refused). For a write that follows long read-only work: failing there
    /// made the job start its phase again, and the commit's final comparison (17 s at a
    /// million documents, on a busy destination that also delayed the renewal) ran four times.
    pub async fn proven_within(&self, within: Duration) -> Result<(), Fenced> {
        let deadline = Instant::now() + within;
        loop {
            match self.check() {
                Err(Fenced::Unproven(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    pub fn is_lost(&self) -> bool {
        lk(&self.inner).lost.is_some()
    }

    /// A renewal sent at `sent` succeeded.
    pub(super) fn proven(&self, sent: Instant, trust: Duration) {
        let mut s = lk(&self.inner);
        if s.lost.is_none() {
            s.valid_until = Some(sent + trust);
            s.last_renewed = Some(sent);
        }
    }

    pub(super) fn lose(&self, why: String) {
        let mut s = lk(&self.inner);
        s.valid_until = None;
        s.lost.get_or_insert(why);
    }

    /// Released on purpose (clean shutdown): nothing may be written after.
    pub(super) fn close(&self) {
        lk(&self.inner).valid_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_fence_stays_closed() {
        let f = Fence::default();
        assert!(matches!(f.check(), Err(Fenced::Unproven(_))));
        f.proven(Instant::now(), Duration::from_secs(10));
        assert!(f.check().is_ok());
        f.lose("taken".into());
        f.proven(Instant::now(), Duration::from_secs(10));
        assert_eq!(f.check(), Err(Fenced::Lost("taken".into())));
    }

    #[tokio::test]
    async fn a_late_renewal_is_waited_for_and_a_lost_lease_is_not() {
        let f = Arc::new(Fence::default());
        let renewer = {
            let f = f.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                f.proven(Instant::now(), Duration::from_secs(10));
            })
        };
        assert_eq!(f.proven_within(Duration::from_secs(5)).await, Ok(()));
        renewer.await.unwrap();
        // Never renewed: unproven once the wait is over.
        let g = Fence::default();
        let t = Instant::now();
        assert!(matches!(
            g.proven_within(Duration::from_millis(300)).await,
            Err(Fenced::Unproven(_))
        ));
        assert!(t.elapsed() >= Duration::from_millis(300));
        // Lost: at once, however long the wait could be.
        f.lose("taken".into());
        let t = Instant::now();
        assert_eq!(
            f.proven_within(Duration::from_secs(5)).await,
            Err(Fenced::Lost("taken".into()))
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
