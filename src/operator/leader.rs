//! Leader election on a `coordination.k8s.io/v1` Lease, so that two operator replicas never
//! drive the same engine at once: only the holder runs the controller.
//!
//! As client-go does, expiry is judged by this replica's own clock (how long the lease record
//! has stayed unchanged), never by comparing the holder's timestamps with ours, so clock skew
//! between nodes cannot hand the lease to two replicas.

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
    /// How often the holder renews, and a candidate retries.
    pub retry_every: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        Self {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            retry_every: Duration::from_secs(4),
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
}

enum Attempt {
    Held,
    HeldByOther(String),
}

impl Leadership {
    pub fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Mutex::new(None),
        }
    }

    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        let mut last_holder = String::new();
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Held) => {
                    tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "acquired the leader lease");
                    return;
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    if holder != last_holder {
                        tracing::info!(lease = %self.cfg.name, %holder, "another replica leads; standing by");
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

    /// Renews the lease until it is lost; returns why.
    pub async fn keep(&self) -> LeadershipLost {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.cfg.retry_every).await;
            match self.try_acquire().await {
                Ok(Attempt::Held) => last_renewed = Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    return self.lost(format!("{holder} holds it now"));
                }
                Err(e) if last_renewed.elapsed() >= self.cfg.lease_duration => {
                    return self.lost(format!(
                        "it could not be renewed for {}s: {e}",
                        self.cfg.lease_duration.as_secs()
                    ));
                }
                Err(e) => {
                    tracing::warn!(lease = %self.cfg.name, error = %e, "renewing the leader lease failed; retrying")
                }
            }
        }
    }

    /// Gives the lease up (at shutdown), so a standby takes over without waiting it out.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
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

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
