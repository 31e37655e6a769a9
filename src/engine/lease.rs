//! Fencing: at most one engine drives a destination at a time.
//!
//! The engine that drives a sync holds a lease: one document in the destination's metadata
//! database naming its holder (a random token per process, hostname, pid and port; never a
//! connection string). The holder renews it every [`Timing::renew`]; each renewal bumps a
//! counter. Expiry is judged on the *observer's* monotonic clock, never by comparing two
//! machines' wall clocks: a contender that sees the same holder and counter for a whole lease
//! duration knows the holder has stopped renewing, and takes the lease over with a conditional
//! update on exactly that holder and counter. The holder, for its part, trusts its lease only
//! until a fraction of the duration after it *sent* its last successful renewal, which is
//! before any contender could have started watching that renewal: the holder's fence always
//! closes before a contender's watch ends, whatever the clocks say.
//!
//! Every write the job makes checks the in-memory [`Fence`] first (a clock read); the
//! migration document's writes also carry the holder's token in their filter, so an engine
//! that lost its lease cannot overwrite the new holder's progress even if it got past a check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bson::{doc, Document};
use mongodb::{Client, Collection};
use std::sync::{Mutex, MutexGuard};

use super::fence::Fence;
use crate::engine::store;
use crate::mongo;

fn lk<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The collection (in the metadata database) and `_id` of the lease document.
pub const LEASE_COLLECTION: &str = "lease";
const LEASE_ID: &str = "lease";

/// A lease lasts this long without a renewal (mongosync has no equivalent; 15 s keeps a
/// crashed engine's successor waiting briefly while tolerating a few missed renewals).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// Hidden override of the lease duration in milliseconds, for tests: the renewal interval
/// follows as a fifth of it.
pub const LEASE_ENV: &str = "CLUSTERSYNC_LEASE_MS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease lasts without renewal, as contenders judge it.
    pub duration: Duration,
    /// How often the holder renews.
    pub renew: Duration,
}

impl Timing {
    pub fn from_duration(duration: Duration) -> Self {
        Self {
            duration,
            renew: (duration / 5).max(Duration::from_millis(50)),
        }
    }

    /// The default, or the hidden override.
    pub fn from_env() -> Self {
        let d = std::env::var(LEASE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&ms| ms >= 250)
            .map(Duration::from_millis)
            .unwrap_or(LEASE_DURATION);
        Self::from_duration(d)
    }

    /// How long after sending a successful renewal the holder still trusts its lease: two
    /// thirds of the duration leaves room for missed renewals, and for the renewal's own
    /// round trip and clock-rate differences before a contender's watch could end.
    pub fn trust(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// Who this process is, as written in the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub token: String,
    pub hostname: String,
    pub pid: u32,
    pub port: u16,
    /// Where this process's pid means something: the kernel boot and pid namespace
    /// (`None` where `/proc` does not say). Two engines with the same one can see each other's
    /// processes, so a holder that crashed there is known dead at once instead of after a
    /// whole lease duration.
    pub pid_space: Option<String>,
    /// This process's start time in clock ticks since boot, so a pid reused by another
    /// process is not mistaken for the holder.
    pub started: Option<u64>,
}

impl Identity {
    pub fn for_this_process(port: u16) -> Self {
        let pid = std::process::id();
        Self {
            token: uuid::Uuid::new_v4().simple().to_string(),
            hostname: hostname(),
            pid,
            port,
            pid_space: pid_space(),
            started: process_start(pid),
        }
    }
}

/// The kernel boot and pid namespace of this process: pid namespace inode numbers are unique
/// only within one boot.
fn pid_space() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    Some(format!("{}/{}", boot.trim(), ns.display()))
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/<pid>/stat`), or `None`
/// if there is no such process.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the holder seen in the lease is a process of this pid space that no longer runs
/// (or whose pid another process has since taken). Holders elsewhere are never judged here.
fn holder_gone(me: &Identity, holder: &Sighting) -> bool {
    let (Some(mine), Some(theirs), Some(started)) =
        (&me.pid_space, &holder.pid_space, holder.started)
    else {
        return false;
    };
    if mine != theirs || holder.pid <= 0 || holder.pid > u32::MAX as i64 {
        return false;
    }
    process_start(holder.pid as u32) != Some(started)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// The lease document as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub token: String,
    pub renewals: i64,
    pub hostname: String,
    pub pid: i64,
    pub port: i64,
    /// The holder's wall clock, for people only: expiry never depends on it.
    pub acquired_at: Option<bson::DateTime>,
    pub renewed_at: Option<bson::DateTime>,
    /// The holder's lease duration: a contender honours the holder's, not its own.
    pub duration: Duration,
    /// The holder's [`Identity::pid_space`] and [`Identity::started`].
    pub pid_space: Option<String>,
    pub started: Option<u64>,
}

impl Sighting {
    fn from_doc(d: &Document) -> Option<Self> {
        Some(Self {
            token: d.get_str("token").ok()?.to_string(),
            renewals: d
                .get_i64("renewals")
                .or_else(|_| d.get_i32("renewals").map(i64::from))
                .unwrap_or(0),
            hostname: d.get_str("hostname").unwrap_or("?").to_string(),
            pid: d
                .get_i64("pid")
                .or_else(|_| d.get_i32("pid").map(i64::from))
                .unwrap_or(0),
            port: d
                .get_i64("port")
                .or_else(|_| d.get_i32("port").map(i64::from))
                .unwrap_or(0),
            acquired_at: d.get_datetime("acquiredAt").ok().copied(),
            renewed_at: d.get_datetime("renewedAt").ok().copied(),
            duration: d
                .get_i64("durationMs")
                .ok()
                .filter(|&ms| ms > 0)
                .map(|ms| Duration::from_millis(ms as u64))
                .unwrap_or(LEASE_DURATION),
            pid_space: d.get_str("pidSpace").ok().map(String::from),
            started: d
                .get_i64("started")
                .ok()
                .and_then(|t| u64::try_from(t).ok()),
        })
    }

    /// The refusal shown to an operator: who holds the lease, since when, and what to do.
    pub fn refusal(&self) -> String {
        let since = self
            .acquired_at
            .and_then(|t| t.try_to_rfc3339_string().ok())
            .unwrap_or_else(|| "an unknown time".into());
        let secs = self.duration.as_secs_f64().ceil() as u64;
        format!(
            "another clustersync engine is driving this sync: host {}, pid {}, port {}, holding the destination's lease since {since}; stop that engine first (a cleanly stopped engine releases the lease at once), or, if it is already gone, wait for its lease to expire within {secs} s and start this one again",
            self.hostname, self.pid, self.port
        )
    }
}

/// What a contender watching the lease saw first: the holder, its counter, and when (on this
/// process's monotonic clock).
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub token: String,
    pub renewals: i64,
    pub since: Instant,
}

/// What to do about the lease, given what is in it now.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nobody holds it: create it.
    Create,
    /// It is ours: renew it.
    Renew,
    /// Someone else holds it and has not been watched yet, or not long enough: watch it for
    /// this much longer.
    Wait { watch: Watch, remaining: Duration },
    /// Its holder has not renewed it for a whole lease duration, or is a process of this
    /// machine that has exited: take it over (conditionally on the same holder and counter).
    TakeOver { token: String, renewals: i64 },
    /// Its holder renewed it (or another engine took it) while we watched: it is alive.
    Refuse,
}

/// The lease decision, free of I/O. `current` is the lease document now; `watch` what an
/// earlier look saw; `gone` whether its holder is known to have exited (a process of this
/// machine that no longer runs: it renews nothing, so there is nothing to wait for).
pub fn decide(
    me: &str,
    current: Option<&Sighting>,
    watch: Option<&Watch>,
    gone: bool,
    now: Instant,
) -> Decision {
    let Some(cur) = current else {
        return Decision::Create;
    };
    if cur.token == me {
        return Decision::Renew;
    }
    if gone {
        return Decision::TakeOver {
            token: cur.token.clone(),
            renewals: cur.renewals,
        };
    }
    let Some(w) = watch else {
        return Decision::Wait {
            watch: Watch {
                token: cur.token.clone(),
                renewals: cur.renewals,
                since: now,
            },
            remaining: cur.duration,
        };
    };
    if w.token != cur.token || w.renewals != cur.renewals {
        return Decision::Refuse;
    }
    let watched = now.saturating_duration_since(w.since);
    if watched >= cur.duration {
        Decision::TakeOver {
            token: cur.token.clone(),
            renewals: cur.renewals,
        }
    } else {
        Decision::Wait {
            watch: w.clone(),
            remaining: cur.duration - watched,
        }
    }
}

/// The outcome of trying to acquire the lease.
pub enum Acquired {
    Yes,
    /// A live engine holds it.
    Held(Sighting),
}

/// The lease of one destination, held (or sought) by this process.
pub struct Lease {
    pub me: Identity,
    pub timing: Timing,
    pub fence: Arc<Fence>,
    coll: Mutex<Option<Collection<Document>>>,
    renewer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Told once, with the reason, when another engine takes the lease.
    on_lost: Box<dyn Fn(&str) + Send + Sync>,
    /// Removes connection-string secrets from driver errors before they are logged.
    scrub: Box<dyn Fn(&str) -> String + Send + Sync>,
}

fn lease_collection(destination: &Client) -> Collection<Document> {
    store::database(destination).collection(LEASE_COLLECTION)
}

async fn read(coll: &Collection<Document>) -> mongodb::error::Result<Option<Sighting>> {
    Ok(coll
        .find_one(doc! { "_id": LEASE_ID })
        .await?
        .as_ref()
        .and_then(Sighting::from_doc))
}

impl Lease {
    pub fn new(
        me: Identity,
        timing: Timing,
        on_lost: Box<dyn Fn(&str) + Send + Sync>,
        scrub: Box<dyn Fn(&str) -> String + Send + Sync>,
    ) -> Arc<Self> {
        Arc::new(Self {
            me,
            timing,
            fence: Fence::new(),
            coll: Mutex::new(None),
            renewer: Mutex::new(None),
            on_lost,
            scrub,
        })
    }

    fn holder_fields(&self, now: bson::DateTime) -> Document {
        doc! {
            "token": &self.me.token,
            "hostname": &self.me.hostname,
            "pid": self.me.pid as i64,
            "port": self.me.port as i64,
            "durationMs": self.timing.duration.as_millis() as i64,
            "pidSpace": self.me.pid_space.clone(),
            "started": self.me.started.map(|t| t as i64),
            "renewals": 0i64,
            "acquiredAt": now,
            "renewedAt": now,
        }
    }

    /// Acquires the lease on `destination`, watching a held one for up to its duration: a
    /// holder that renews meanwhile is alive ([`Acquired::Held`]), one that does not is taken
    /// over. `on_wait` is told what is being waited for, once per holder.
    pub async fn acquire(
        self: &Arc<Self>,
        destination: &Client,
        on_wait: impl Fn(&Sighting, Duration),
    ) -> mongodb::error::Result<Acquired> {
        let coll = lease_collection(destination);
        let mut watch: Option<Watch> = None;
        loop {
            let current = read(&coll).await?;
            let sent = Instant::now();
            let now = bson::DateTime::now();
            let gone = current.as_ref().is_some_and(|c| holder_gone(&self.me, c));
            match decide(&self.me.token, current.as_ref(), watch.as_ref(), gone, sent) {
                Decision::Create => {
                    let mut d = self.holder_fields(now);
                    d.insert("_id", LEASE_ID);
                    match coll.insert_one(d).await {
                        Ok(_) => return self.won(coll, sent),
                        // Another engine created it first: look again.
                        Err(e) if mongo::error_code(&e) == Some(mongo::codes::DUPLICATE_KEY) => {
                            continue
                        }
                        Err(e) => return Err(e),
                    }
                }
                Decision::Renew => {
                    let r = coll
                        .update_one(
                            doc! { "_id": LEASE_ID, "token": &self.me.token },
                            doc! { "$inc": { "renewals": 1i64 }, "$set": { "renewedAt": now } },
                        )
                        .await?;
                    if r.matched_count == 1 {
                        return self.won(coll, sent);
                    }
                }
                Decision::TakeOver { token, renewals } => {
                    let r = coll
                        .update_one(
                            doc! { "_id": LEASE_ID, "token": &token, "renewals": renewals },
                            doc! { "$set": self.holder_fields(now) },
                        )
                        .await?;
                    if r.matched_count == 1 {
                        if gone {
                            tracing::warn!(previous_holder = %token, "took over the lease of an engine of this machine that exited without releasing it");
                        } else {
                            tracing::warn!(previous_holder = %token, "took over the lease of an engine that stopped renewing it");
                        }
                        return self.won(coll, sent);
                    }
                    // Renewed or taken at the last moment: judged on the next look.
                }
                Decision::Refuse => {
                    let cur = current.expect("refused over a lease someone holds");
                    return Ok(Acquired::Held(cur));
                }
                Decision::Wait {
                    watch: w,
                    remaining,
                } => {
                    if watch.is_none() {
                        on_wait(current.as_ref().expect("waits on a held lease"), remaining);
                    }
                    watch = Some(w);
                    // Look often enough to see a live holder's renewal promptly.
                    let holder_renew = Timing::from_duration(
                        current
                            .as_ref()
                            .map_or(self.timing.duration, |c| c.duration),
                    )
                    .renew;
                    tokio::time::sleep(remaining.min(holder_renew)).await;
                }
            }
        }
    }

    fn won(
        self: &Arc<Self>,
        coll: Collection<Document>,
        sent: Instant,
    ) -> mongodb::error::Result<Acquired> {
        self.fence.proven(sent, self.timing.trust());
        *lk(&self.coll) = Some(coll);
        self.spawn_renewer();
        Ok(Acquired::Yes)
    }

    /// Renews the lease every [`Timing::renew`] until it is lost or released.
    fn spawn_renewer(self: &Arc<Self>) {
        let mut slot = lk(&self.renewer);
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let me = Arc::downgrade(self);
        *slot = Some(tokio::spawn(async move {
            loop {
                let Some(lease) = me.upgrade() else { return };
                tokio::time::sleep(lease.timing.renew).await;
                let Some(coll) = lk(&lease.coll).clone() else {
                    return;
                };
                let sent = Instant::now();
                let r = tokio::time::timeout(
                    lease.timing.duration,
                    coll.update_one(
                        doc! { "_id": LEASE_ID, "token": &lease.me.token },
                        doc! { "$inc": { "renewals": 1i64 }, "$set": { "renewedAt": bson::DateTime::now() } },
                    ),
                )
                .await;
                match r {
                    Ok(Ok(u)) if u.matched_count == 1 => {
                        lease.fence.proven(sent, lease.timing.trust())
                    }
                    Ok(Ok(_)) => {
                        let holder = read(&coll).await.ok().flatten();
                        let why = match holder {
                            Some(h) => format!(
                                "this engine lost its lease on the destination to another engine (host {}, pid {}, port {}) and stopped writing; that engine drives the sync now",
                                h.hostname, h.pid, h.port
                            ),
                            None => "this engine's lease on the destination was removed, so it stopped writing; restart it to take the lease again".to_string(),
                        };
                        tracing::error!(error = %why, "lease lost");
                        lease.fence.lose(why.clone());
                        (lease.on_lost)(&why);
                        return;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %(lease.scrub)(&mongo::describe(&e)), "could not renew the lease; retrying")
                    }
                    Err(_) => tracing::warn!("renewing the lease timed out; retrying"),
                }
            }
        }));
    }

    /// Moves the lease to another destination (a reversal): acquired there first, then the
    /// old one is let go.
    pub async fn move_to(self: &Arc<Self>, destination: &Client) -> Result<(), String> {
        let old = lk(&self.coll).clone();
        match self.acquire(destination, |_, _| {}).await {
            Ok(Acquired::Yes) => {}
            Ok(Acquired::Held(h)) => return Err(h.refusal()),
            Err(e) => return Err((self.scrub)(&mongo::describe(&e))),
        }
        if let Some(old) = old {
            let _ = old
                .delete_one(doc! { "_id": LEASE_ID, "token": &self.me.token })
                .await;
        }
        Ok(())
    }

    /// Lets the lease go (clean shutdown, or a /start that did not go through), so the next
    /// engine need not wait for it to expire.
    pub async fn release(&self) {
        let handle = lk(&self.renewer).take();
        if let Some(h) = handle {
            h.abort();
        }
        self.fence.close();
        let coll = lk(&self.coll).take();
        if let Some(coll) = coll {
            match coll
                .delete_one(doc! { "_id": LEASE_ID, "token": &self.me.token })
                .await
            {
                Ok(_) => tracing::info!("lease released"),
                Err(e) => {
                    tracing::warn!(error = %(self.scrub)(&mongo::describe(&e)), "could not release the lease; the next engine waits for it to expire")
                }
            }
        }
    }

    pub fn is_held(&self) -> bool {
        lk(&self.coll).is_some() && !self.fence.is_lost()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fence::fence_open;

    fn sighting(token: &str, renewals: i64) -> Sighting {
        Sighting {
            token: token.into(),
            renewals,
            hostname: "h".into(),
            pid: 1,
            port: 27182,
            acquired_at: None,
            renewed_at: None,
            duration: Duration::from_secs(15),
            pid_space: None,
            started: None,
        }
    }

    #[test]
    fn a_free_lease_is_created_and_our_own_renewed() {
        let now = Instant::now();
        assert_eq!(decide("me", None, None, false, now), Decision::Create);
        assert_eq!(
            decide("me", Some(&sighting("me", 4)), None, false, now),
            Decision::Renew
        );
    }

    #[test]
    fn a_held_lease_is_watched_then_refused_if_renewed() {
        let t0 = Instant::now();
        let other = sighting("other", 7);
        let Decision::Wait { watch, remaining } = decide("me", Some(&other), None, false, t0)
        else {
            panic!("first look waits");
        };
        assert_eq!(remaining, Duration::from_secs(15));
        assert_eq!(watch.renewals, 7);
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            decide(
                "me",
                Some(&sighting("other", 8)),
                Some(&watch),
                false,
                later
            ),
            Decision::Refuse
        );
        // Taken by a third engine meanwhile: alive too.
        assert_eq!(
            decide(
                "me",
                Some(&sighting("third", 0)),
                Some(&watch),
                false,
                later
            ),
            Decision::Refuse
        );
    }

    #[test]
    fn an_unrenewed_lease_is_taken_over_after_a_full_duration() {
        let t0 = Instant::now();
        let other = sighting("other", 7);
        let Decision::Wait { watch, .. } = decide("me", Some(&other), None, false, t0) else {
            panic!("first look waits");
        };
        match decide(
            "me",
            Some(&other),
            Some(&watch),
            false,
            t0 + Duration::from_secs(10),
        ) {
            Decision::Wait { remaining, .. } => assert_eq!(remaining, Duration::from_secs(5)),
            d => panic!("still waits, got {d:?}"),
        }
        assert_eq!(
            decide(
                "me",
                Some(&other),
                Some(&watch),
                false,
                t0 + Duration::from_secs(15)
            ),
            Decision::TakeOver {
                token: "other".into(),
                renewals: 7
            }
        );
    }

    #[test]
    fn an_exited_holder_of_this_machine_is_taken_over_at_once() {
        let other = sighting("other", 7);
        assert_eq!(
            decide("me", Some(&other), None, true, Instant::now()),
            Decision::TakeOver {
                token: "other".into(),
                renewals: 7
            }
        );
        // Our own lease is renewed, whatever the probe said.
        assert_eq!(
            decide("me", Some(&sighting("me", 1)), None, true, Instant::now()),
            Decision::Renew
        );
    }

    #[test]
    fn only_a_process_of_the_same_pid_space_is_judged() {
        let me = Identity::for_this_process(1);
        let space = me.pid_space.clone().expect("Linux has /proc");
        let holder = |pid: i64, space: Option<String>, started: Option<u64>| Sighting {
            pid,
            pid_space: space,
            started,
            ..sighting("other", 0)
        };
        // A live process (this one): not gone.
        assert!(!holder_gone(
            &me,
            &holder(me.pid as i64, Some(space.clone()), me.started)
        ));
        // The same pid with another start time: the pid was reused, the holder is gone.
        assert!(holder_gone(
            &me,
            &holder(
                me.pid as i64,
                Some(space.clone()),
                me.started.map(|t| t + 1)
            )
        ));
        // A pid no process has (above pid_max).
        assert!(holder_gone(
            &me,
            &holder(1 << 23, Some(space.clone()), Some(5))
        ));
        // Another machine or pid namespace, or an older engine that did not say: never judged.
        assert!(!holder_gone(
            &me,
            &holder(1 << 23, Some("elsewhere".into()), Some(5))
        ));
        assert!(!holder_gone(&me, &holder(1 << 23, None, None)));
    }

    #[test]
    fn the_holder_trusts_its_lease_for_less_than_a_contender_waits() {
        let timing = Timing::from_duration(Duration::from_secs(15));
        assert_eq!(timing.renew, Duration::from_secs(3));
        assert!(timing.trust() < timing.duration);
        let sent = Instant::now();
        assert!(fence_open(Some(sent + timing.trust()), false, sent));
        assert!(!fence_open(
            Some(sent + timing.trust()),
            false,
            sent + timing.trust()
        ));
        assert!(!fence_open(Some(sent + timing.trust()), true, sent));
        assert!(!fence_open(None, false, sent));
    }

    #[test]
    fn the_refusal_names_the_holder_and_the_wait() {
        let msg = sighting("other", 1).refusal();
        assert!(msg.contains("host h, pid 1, port 27182"), "{msg}");
        assert!(msg.contains("within 15 s"), "{msg}");
    }
}
