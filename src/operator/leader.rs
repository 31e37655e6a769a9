//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! drive the same engine at once: only the holder runs the controller.
//!
//! As client-go does, expiry is judged by this replica's own clock (how long the lease record
//! has stayed unchanged), never by comparing the holder's timestamps with ours, so clock skew
//! between nodes cannot hand the lease to two replicas.
//!
//! Leadership cannot split: the holder trusts its lease only until `renew_deadline` after it
//! *sent* its last successful renewal, and every lease call has a timeout, so a holder whose
//! requests hang steps down before `lease_duration` has passed since a candidate last saw the
//! record change, which is the earliest a candidate takes over.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::Api;

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a holder that stopped renewing keeps the lease.
    pub lease_duration: Duration,
    /// How long the holder trusts its lease after sending the last renewal that succeeded;
    /// shorter than `lease_duration`, so the holder stops before anyone else may start.
    pub renew_deadline: Duration,
    /// How often the holder renews, and a candidate retries.
    pub retry_every: Duration,
}

/// Lease timings that would let two replicas lead at once.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("leader election timings must satisfy retry ({retry:?}) < renew deadline ({renew:?}) < lease duration ({lease:?}); a renew deadline of about two thirds of the lease works")]
pub struct InvalidTiming {
    pub retry: Duration,
    pub renew: Duration,
    pub lease: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
        }
    }

    /// Checks retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), InvalidTiming> {
        if self.retry_every < self.renew_deadline && self.renew_deadline < self.lease_duration {
            Ok(())
        } else {
            Err(InvalidTiming {
                retry: self.retry_every,
                renew: self.renew_deadline,
                lease: self.lease_duration,
            })
        }
    }
}

/// The lease was lost (another replica holds it, or renewing failed for a whole lease
/// duration): the caller must stop acting as the leader at once.
#[derive(Debug, thiserror::Error)]
#[error("lost the leader lease {namespace}/{name}: {why}")]
pub struct LeadershipLost {
    pub namespace: String,
    pub name: String,
    pub why: String,
}

pub struct Leadership {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// The other holder's record as last seen, and when it was first seen so.
    observed: Mutex<Option<(String, Instant)>>,
    /// When the last request that won or renewed the lease was sent.
    renewed: Mutex<Option<Instant>>,
}

enum Attempt {
    Held,
    HeldByOther(String),
}

impl Leadership {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Result<Self, InvalidTiming> {
        cfg.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Mutex::new(None),
            renewed: Mutex::new(None),
        })
    }

    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        let mut last_holder = String::new();
        loop {
            let sent = Instant::now();
            // A hung request must not hold a candidate forever either.
            let attempt = tokio::time::timeout(self.cfg.renew_deadline, self.try_acquire())
                .await
                .unwrap_or_else(|_| Err(timed_out(self.cfg.renew_deadline)));
            match attempt {
                Ok(Attempt::Held) => {
                    *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
                    tracing::info!(lease = %self.cfg.name, namespace = %self.cfg.namespace, identity = %self.cfg.identity, "acquired the leader lease");
                    return;
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    if holder != last_holder {
                        tracing::info!(lease = %self.cfg.name, namespace = %self.cfg.namespace, %holder, "another replica leads; standing by");
                        last_holder = holder;
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "cannot read or write the leader lease; retrying")
                }
            }
            tokio::time::sleep(self.cfg.retry_every).await;
        }
    }

    /// Renews the lease until it is lost; returns why. It returns no later than the renew
    /// deadline after the last successful renewal was sent, whatever the API server does
    /// (a request still pending then is abandoned).
    pub async fn keep(&self) -> LeadershipLost {
        let mut renewed = self
            .renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now);
        let deadline_s = self.cfg.renew_deadline.as_secs_f64();
        loop {
            let deadline = tokio::time::Instant::from_std(renewed + self.cfg.renew_deadline);
            let next = tokio::time::Instant::now() + self.cfg.retry_every;
            if next >= deadline {
                tokio::time::sleep_until(deadline).await;
                return self.lost(format!(
                    "it could not be renewed within the renew deadline ({deadline_s}s)"
                ));
            }
            tokio::time::sleep_until(next).await;
            let sent = Instant::now();
            match tokio::time::timeout_at(deadline, self.try_acquire()).await {
                Err(_) => {
                    return self.lost(format!(
                        "renewing it did not complete within the renew deadline ({deadline_s}s)"
                    ))
                }
                Ok(Ok(Attempt::Held)) => {
                    renewed = sent;
                    *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(sent);
                }
                Ok(Ok(Attempt::HeldByOther(holder))) => {
                    return self.lost(format!("{holder} holds it now"));
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "renewing the leader lease failed; retrying until the renew deadline")
                }
            }
        }
    }

    /// Gives the lease up (at shutdown), so a standby takes over without waiting it out.
    pub async fn release(&self) {
        let call = self.cfg.renew_deadline;
        let Ok(Ok(Some(mut lease))) =
            tokio::time::timeout(call, self.api.get_opt(&self.cfg.name)).await
        else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let replaced = tokio::time::timeout(
            call,
            self.api
                .replace(&self.cfg.name, &PostParams::default(), &lease),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out(call)));
        if let Err(e) = replaced {
            tracing::warn!(lease = %self.cfg.name, error = %e, "could not release the leader lease; a standby takes over when it expires");
        }
    }

    fn lost(&self, why: String) -> LeadershipLost {
        LeadershipLost {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            why,
        }
    }

    async fn try_acquire(&self) -> Result<Attempt, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = self.cfg.lease_duration.as_secs() as i32;
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.cfg.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(e) if is_conflict(&e) => Ok(Attempt::HeldByOther("a replica".into())),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.cfg.identity;
        if !mine && !holder.is_empty() && !self.expired(spec, &holder) {
            return Ok(Attempt::HeldByOther(holder));
        }
        if !mine {
            spec.holder_identity = Some(self.cfg.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(now);
        // The resourceVersion in `lease` makes this a compare-and-swap: of two replicas taking
        // over at once, one gets 409.
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                *self.observed.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(Attempt::Held)
            }
            Err(e) if is_conflict(&e) => Ok(Attempt::HeldByOther(if mine {
                "another replica".into()
            } else {
                holder
            })),
            Err(e) => Err(e),
        }
    }

    /// Whether `holder`'s record has stayed unchanged, by our clock, for its whole duration.
    fn expired(&self, spec: &LeaseSpec, holder: &str) -> bool {
        let record = format!(
            "{holder}@{:?}",
            spec.renew_time.as_ref().map(|t| t.0.as_millisecond())
        );
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.cfg.lease_duration);
        let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
        match observed.as_ref() {
            Some((seen, since)) if *seen == record => since.elapsed() >= duration,
            _ => {
                *observed = Some((record, Instant::now()));
                false
            }
        }
    }
}

fn timed_out(after: Duration) -> kube::Error {
    kube::Error::Service(
        format!(
            "the API server did not answer within {}s",
            after.as_secs_f64()
        )
        .into(),
    )
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
