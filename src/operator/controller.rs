//! The reconciler: one ClusterSync at a time, from its spec and Secrets to a running engine
//! driven towards `mode`, and from the engine's `/progress` back to the status.
//!
//! It never writes the spec; everything it learns goes to status conditions and Events.
//! Failures are conditions plus a requeue with backoff, never a crash.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizing};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{json, Value};

use super::actions::EngineState;
use super::conditions::{self, types};
use super::crd::{ClusterSync, ClusterSyncStatus};
use super::credentials::{self, Resolved};
use super::engine_api::{self, CallError, EngineApi, EngineLocator, Verb};
use super::preflight::{self, Verdict};
use super::telemetry::{Metrics, SyncSeen};
use super::{decide, mirror, plan, pods, workload};
use crate::contract::errors::ErrorName;
use crate::contract::options::StartOptions;
use crate::contract::progress::{self, Progress, VerifierPhase};

/// Held on every ClusterSync until the controller has removed what it created.
pub const FINALIZER: &str = "clustersync.io/engine-cleanup";
/// Field manager of everything the controller applies.
pub const MANAGER: &str = "clustersync-operator";

/// How the controller runs engines.
pub struct Settings {
    /// Image of engine pods whose ClusterSync names none.
    pub engine_image: String,
    /// How often progress is read while a sync moves (slower when it rests).
    pub poll: Duration,
    /// How long the role preflight may take.
    pub preflight_timeout: Duration,
    /// How long a failed preflight is trusted before it is run again (roles can be granted
    /// without any Kubernetes object changing).
    pub preflight_retry: Duration,
    pub locator: Arc<dyn EngineLocator>,
    pub reporter: Reporter,
    /// Engine pod settings for ClusterSyncs that leave them unset (`spec.engine`).
    pub engine_defaults: super::crd::EngineSpec,
    /// The operator's own namespace: engines get a NetworkPolicy that admits only the
    /// operator's pods from there. `None` (an operator outside the cluster): no policy.
    pub operator_namespace: Option<String>,
    /// Also admitted to the engines' port by their NetworkPolicy: a metrics scraper.
    pub metrics_scraper: Option<workload::Scraper>,
    /// How long the engine's plan may take (the engine bounds it at 120 s itself).
    pub plan_timeout: Duration,
}

impl Settings {
    pub fn new(engine_image: String, locator: Arc<dyn EngineLocator>) -> Self {
        Self {
            engine_image,
            poll: Duration::from_secs(10),
            preflight_timeout: Duration::from_secs(30),
            preflight_retry: Duration::from_secs(60),
            locator,
            reporter: Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
            operator_namespace: std::env::var("POD_NAMESPACE").ok(),
            engine_defaults: Default::default(),
            metrics_scraper: None,
            plan_timeout: Duration::from_secs(150),
        }
    }
}

struct CachedVerdict {
    fingerprint: String,
    verdict: Verdict,
    at: Instant,
}

/// Shared by every reconcile of one controller.
pub struct Context {
    client: Client,
    settings: Arc<Settings>,
    http: reqwest::Client,
    recorder: Recorder,
    pub metrics: Arc<Metrics>,
    preflights: Mutex<HashMap<String, CachedVerdict>>,
    /// Per ClusterSync: when its last plan failed (not asked again before `preflight_retry`).
    plan_failures: Mutex<HashMap<String, Instant>>,
    failures: Mutex<HashMap<String, u32>>,
    /// The watched Deployments, Services and engine Pods (set when the controller starts).
    pub caches: OnceLock<super::Caches>,
    /// Per ClusterSync: a hash of the workload last applied, so an unchanged one is not
    /// applied again on every poll.
    applied: Mutex<HashMap<String, u64>>,
    /// Per ClusterSync uid: its engine API token (created once, never changed).
    tokens: Mutex<HashMap<String, String>>,
}

impl Context {
    pub fn new(client: Client, settings: Arc<Settings>, metrics: Arc<Metrics>) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), settings.reporter.clone()),
            client,
            settings,
            http: super::engine_api::http_client(),
            metrics,
            preflights: Mutex::new(HashMap::new()),
            plan_failures: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            caches: OnceLock::new(),
            applied: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn forget(&self, cs: &ClusterSync) {
        let key = key_of(cs);
        lock(&self.applied).remove(&key);
        lock(&self.preflights).remove(&key);
        lock(&self.plan_failures).remove(&key);
        if let Some(uid) = &cs.metadata.uid {
            lock(&self.tokens).remove(uid);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("ClusterSync {0} has no namespace")]
    NoNamespace(String),
    #[error("token Secret {0} has no key {key}; delete it and the controller creates a new one", key = workload::TOKEN_KEY)]
    TokenMissing(String),
}

impl Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.metric_label(),
                _ => "Finalizer",
            },
            Error::NoNamespace(_) => "NoNamespace",
            Error::TokenMissing(_) => "TokenMissing",
        }
    }
}

fn key_of(cs: &ClusterSync) -> String {
    format!("{}/{}", cs.namespace().unwrap_or_default(), cs.name_any())
}

/// One reconcile, under the finalizer.
#[tracing::instrument(name = "reconcile", skip_all, fields(clustersync = %key_of(&cs)))]
pub async fn reconcile(cs: Arc<ClusterSync>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let key = key_of(&cs);
    let ns = cs
        .namespace()
        .ok_or_else(|| Error::NoNamespace(cs.name_any()))?;
    let api: Api<ClusterSync> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, cs, |event| async {
        match event {
            Finalizing::Apply(cs) => apply(&cs, &ctx).await,
            Finalizing::Cleanup(cs) => cleanup(&cs, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
    result
}

/// Retries a failed reconcile with exponential backoff (1 s doubling, at most 5 min).
pub fn error_policy(cs: Arc<ClusterSync>, err: &Error, ctx: Arc<Context>) -> Action {
    let key = key_of(&cs);
    ctx.metrics.error(err.metric_label());
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let n = failures.entry(key.clone()).or_default();
    *n = n.saturating_add(1);
    let wait = Duration::from_secs(1u64 << (*n).min(9)).min(Duration::from_secs(300));
    tracing::warn!(clustersync = %key, error = %err, retry_in_s = wait.as_secs(), "reconcile failed; retrying");
    Action::requeue(wait)
}

/// What a reconcile found that keeps the sync from being Ready, beyond the prerequisite
/// conditions: a spec that cannot work, a refusal by the engine, a sync that stopped.
struct Blocker {
    reason: String,
    message: String,
}

/// What one pass decided: when to look again, and what stands in the way.
struct Outcome {
    requeue: Duration,
    blocker: Option<Blocker>,
}

/// Writes status conditions for one reconcile with one timestamp and generation.
struct Conditions<'a> {
    status: &'a mut ClusterSyncStatus,
    generation: Option<i64>,
    now: Time,
}

impl Conditions<'_> {
    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            ok,
            reason,
            message,
            self.generation,
            self.now.clone(),
        );
    }

    fn has_reason(&self, type_: &str, reason: &str) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.reason == reason)
    }

    fn is_false(&self, type_: &str) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "False")
    }
}

async fn apply(cs: &ClusterSync, ctx: &Context) -> Result<Action, Error> {
    let key = key_of(cs);
    let old = cs.status.clone().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = cs.metadata.generation;
    status.engine_workload = Some(workload::engine_name(cs));
    let mut events = Vec::new();
    let mut conds = Conditions {
        status: &mut status,
        generation: cs.metadata.generation,
        now: Time(Timestamp::now()),
    };
    let outcome = drive(cs, ctx, &mut conds, &mut events).await?;
    let (ready, reason, message) = readiness(conds.status, outcome.blocker.as_ref());
    conds.set(types::READY, ready, &reason, message);
    if old.state != status.state {
        let (now, was) = (
            status.state.as_deref().unwrap_or("unknown"),
            old.state.as_deref().unwrap_or("not running"),
        );
        // The recorder folds events of one reason and action into one series that keeps its
        // first note: with one action for every change, a COMMITTED sync would still read
        // "the engine is INITIALIZING" (x7). One action per transition keeps them apart.
        events.push(event(
            EventType::Normal,
            "StateChanged",
            &format!("Observe{}", transition(was, now)),
            format!("the engine is {now} (was {was})"),
        ));
    }
    events.extend(verification_events(&old, &status));
    if status != old {
        let api: Api<ClusterSync> =
            Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
        api.patch_status(
            &cs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status_patch(&old, &status)),
        )
        .await?;
    }
    let reference = cs.object_ref(&());
    for e in &events {
        // The operator's log tells the same story as its Events (an operator's log was
        // otherwise silent while its syncs were blocked); the reconcile span names the sync.
        let note = e.note.as_deref().unwrap_or_default();
        match e.type_ {
            EventType::Warning => tracing::warn!(reason = %e.reason, "{note}"),
            EventType::Normal => tracing::info!(reason = %e.reason, "{note}"),
        }
        if let Err(err) = ctx.recorder.publish(e, &reference).await {
            tracing::warn!(error = %err, reason = %e.reason, "could not record an Event");
        }
    }
    ctx.metrics.sync_seen(
        &key,
        Some(SyncSeen {
            state: status.state.clone().unwrap_or_else(|| "UNKNOWN".into()),
            not_ready: status
                .conditions
                .iter()
                .find(|c| c.type_ == types::READY && c.status != "True")
                .map(|c| c.reason.clone()),
        }),
    );
    Ok(Action::requeue(outcome.requeue))
}

/// An Event when the verifier first finds a difference, and when it passes at commit.
fn verification_events(old: &ClusterSyncStatus, new: &ClusterSyncStatus) -> Vec<Event> {
    let (Some(v), before) = (&new.verification, old.verification.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if v.mismatch_count > 0 && before.is_none_or(|b| b.mismatch_count == 0) {
        out.push(event(
            EventType::Warning,
            "VerificationMismatch",
            "Verify",
            format!(
                "the embedded verifier found {} difference(s) between the clusters: {}",
                v.mismatch_count,
                v.mismatches.join("; ")
            ),
        ));
    }
    if v.verified && !before.is_some_and(|b| b.verified) {
        out.push(event(
            EventType::Normal,
            "Verified",
            "Verify",
            "the final comparison at commit found the destination equal to the source".into(),
        ));
    }
    out
}

/// A JSON merge patch turning `old` into `new`: top-level fields that disappeared are nulled,
/// since a merge patch otherwise leaves them (a lag from before a restart, say).
fn status_patch(old: &ClusterSyncStatus, new: &ClusterSyncStatus) -> Value {
    let old = serde_json::to_value(old).unwrap_or_default();
    let mut new = serde_json::to_value(new).unwrap_or_else(|_| json!({}));
    if let (Some(o), Some(n)) = (old.as_object(), new.as_object_mut()) {
        for k in o.keys() {
            if !n.contains_key(k) {
                n.insert(k.clone(), Value::Null);
            }
        }
    }
    json!({ "status": new })
}

/// `IDLE`, `RUNNING` → `IdleToRunning`: an Event action (CamelCase, as actions are written).
fn transition(was: &str, now: &str) -> String {
    let camel = |s: &str| -> String {
        s.split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(|w| {
                let lower = w.to_ascii_lowercase();
                let mut c = lower.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    };
    format!("{}To{}", camel(was), camel(now))
}

fn event(type_: EventType, reason: &str, action: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.into(),
        // Events carry at most 1 kB of note.
        note: Some(truncate(note, 1000)),
        action: action.into(),
        secondary: None,
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// `Ready`: the prerequisites hold and nothing blocks the sync.
fn readiness(status: &ClusterSyncStatus, blocker: Option<&Blocker>) -> (bool, String, String) {
    if let Some(b) = blocker {
        return (false, b.reason.clone(), b.message.clone());
    }
    // The engine before the roles: roles are checked through a running engine's state, so
    // while it is unavailable "roles not checked yet" would point the user the wrong way.
    for t in [
        types::CREDENTIALS_RESOLVED,
        types::ENGINE_AVAILABLE,
        types::ROLES_VERIFIED,
    ] {
        match status.conditions.iter().find(|c| c.type_ == t) {
            Some(c) if c.status == "True" => {}
            Some(c) => return (false, c.reason.clone(), format!("{t}: {}", c.message)),
            None => return (false, "Pending".into(), format!("{t}: not checked yet")),
        }
    }
    let state = status.state.as_deref().unwrap_or("unknown");
    (
        true,
        "SyncHealthy".into(),
        match (&status.copied_percent, status.lag_seconds) {
            (_, Some(lag)) => format!("the engine is {state}, {lag}s behind the source"),
            (Some(p), None) => format!("the engine is {state}, {p} copied"),
            _ => format!("the engine is {state}"),
        },
    )
}

/// One pass over a ClusterSync: gate → credentials → workload → engine → roles → call.
/// Each step observes or acts; what it decides comes from `decide` (pure, tested as tables).
async fn drive(
    cs: &ClusterSync,
    ctx: &Context,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) -> Result<Outcome, Error> {
    let poll = ctx.settings.poll;
    let ns = cs.namespace().unwrap_or_default();
    let engine = workload::engine_name(cs);
    let waiting = Outcome {
        requeue: poll,
        blocker: None,
    };

    let options = match decide::gate(cs.annotations(), &cs.spec) {
        Ok(o) => o,
        Err(halt) => {
            if let Some(note) = halt.warn {
                events.push(event(EventType::Warning, halt.reason, "Validate", note));
            }
            return Ok(Outcome {
                requeue: decide::REST,
                blocker: Some(Blocker {
                    reason: halt.reason.into(),
                    message: halt.message,
                }),
            });
        }
    };

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let token = ensure_token(cs, ctx, &secrets).await?;
    let creds = resolve_credentials(cs, &secrets, &token, conds, events).await;
    // Without credentials no engine is created; one that already runs keeps its environment
    // and is still watched.
    // Secrets are not watched (the operator reads only those named, by name): a missing one
    // is looked for again at the next poll.
    if creds.is_none() && !ctx.has_child::<Deployment>(&ns, &engine) {
        return Ok(waiting);
    }
    // With the Secrets unreadable, the running engine is left exactly as it is.
    if let Some(c) = &creds {
        if let Some(refused) = apply_workload(cs, ctx, c, conds, events).await {
            return Ok(refused);
        }
    }

    let (api, progress) = match reach_engine(cs, ctx, token, conds, events).await {
        Ok(reached) => reached,
        Err(outcome) => return Ok(outcome),
    };
    mirror::apply_progress(conds.status, &progress);
    let mut state = current_state(conds.status);
    let roles_ok = check_roles(
        cs,
        ctx,
        creds.as_ref(),
        &api,
        &options,
        state,
        conds,
        events,
    )
    .await;
    make_plan(cs, ctx, &api, &options, state, conds, events).await;
    let mut blocker = stopped(&progress, conds, events);

    let verb = decide::engine_call(
        cs,
        state,
        conds.status.can_commit,
        conds.status.reversals_done,
        blocker.is_some(),
        roles_ok,
    );
    if let Some(verb) = verb {
        match call_engine(cs, ctx, &api, verb, &options, conds, events).await {
            Ok(()) => state = current_state(conds.status),
            Err(refused) => blocker = Some(refused),
        }
    }

    set_sync_conditions(conds, state);
    let requeue = decide::requeue(
        state,
        blocker.is_some(),
        cs.spec.reversals,
        conds.status.reversals_done,
        poll,
    );
    Ok(Outcome { requeue, blocker })
}

/// Reads the two Secrets the spec names (by name only) and records the outcome.
async fn resolve_credentials(
    cs: &ClusterSync,
    secrets: &Api<Secret>,
    token: &str,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) -> Option<Resolved> {
    let ns = cs.namespace().unwrap_or_default();
    match credentials::resolve(secrets, &ns, &cs.spec, token.as_bytes()).await {
        Ok(c) => {
            conds.set(
                types::CREDENTIALS_RESOLVED,
                true,
                "SecretsFound",
                format!(
                    "source {} and destination {} read from their Secrets",
                    c.source.hosts(),
                    c.destination.hosts()
                ),
            );
            Some(c)
        }
        Err(e) => {
            let first = !conds.is_false(types::CREDENTIALS_RESOLVED);
            conds.set(
                types::CREDENTIALS_RESOLVED,
                false,
                e.reason(),
                e.to_string(),
            );
            if first {
                events.push(event(
                    EventType::Warning,
                    e.reason(),
                    "ResolveCredentials",
                    e.to_string(),
                ));
            }
            None
        }
    }
}

/// Applies the engine's objects when their inputs changed; a refusal is the outcome.
async fn apply_workload(
    cs: &ClusterSync,
    ctx: &Context,
    creds: &Resolved,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) -> Option<Outcome> {
    let e = ensure_workload(cs, ctx, &creds.fingerprint).await.err()?;
    let (reason, message) = apply_failure(&e, &workload::engine_name(cs));
    if !conds.has_reason(types::ENGINE_AVAILABLE, reason) {
        events.push(event(
            EventType::Warning,
            reason,
            "ApplyWorkload",
            message.clone(),
        ));
    }
    conds.set(types::ENGINE_AVAILABLE, false, reason, message.clone());
    Some(Outcome {
        requeue: decide::AFTER_REFUSAL.max(ctx.settings.poll),
        blocker: Some(Blocker {
            reason: reason.into(),
            message,
        }),
    })
}

/// Finds the engine and reads its `/progress`; while it cannot be reached, the outcome says
/// why (a pod problem first: it beats "not ready yet").
async fn reach_engine(
    cs: &ClusterSync,
    ctx: &Context,
    token: String,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) -> Result<(EngineApi, Progress), Outcome> {
    let ns = cs.namespace().unwrap_or_default();
    let engine = workload::engine_name(cs);
    let waiting = || Outcome {
        requeue: ctx.settings.poll,
        blocker: None,
    };
    let Some(base) = ctx.settings.locator.base_url(&ns, &engine) else {
        if let Some(outcome) = pod_blocker(cs, ctx, conds, events) {
            return Err(outcome);
        }
        conds.set(
            types::ENGINE_AVAILABLE,
            false,
            "EngineNotScheduled",
            format!("waiting for the engine's pod (Deployment {engine}) to be scheduled"),
        );
        return Err(waiting());
    };
    let api = EngineApi::new(ctx.http.clone(), base, token);
    match api.progress().await {
        Ok(p) => {
            conds.set(
                types::ENGINE_AVAILABLE,
                true,
                "EngineReachable",
                format!("the engine answers at {}", api.base_url()),
            );
            Ok((api, p))
        }
        Err(e) => {
            if let Some(outcome) = pod_blocker(cs, ctx, conds, events) {
                return Err(outcome);
            }
            let reason = match &e {
                CallError::Refused { .. } => "EngineUnauthorized",
                _ => "EngineNotReady",
            };
            conds.set(
                types::ENGINE_AVAILABLE,
                false,
                reason,
                format!("{e}; the engine's pod (Deployment {engine}) may still be starting"),
            );
            Err(waiting())
        }
    }
}

/// Roles are checked (by the engine) while nothing has started; afterwards the engine
/// checked them itself at `/start`. True when `/start` may be called.
#[allow(clippy::too_many_arguments)]
async fn check_roles(
    cs: &ClusterSync,
    ctx: &Context,
    creds: Option<&Resolved>,
    api: &EngineApi,
    options: &StartOptions,
    state: Option<EngineState>,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) -> bool {
    if state != Some(EngineState::Idle) {
        if !conds
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == types::ROLES_VERIFIED)
        {
            conds.set(
                types::ROLES_VERIFIED,
                true,
                "CheckedByEngine",
                "the sync started; the engine checked the roles itself",
            );
        }
        return true;
    }
    let Some(c) = creds else {
        return false;
    };
    let verdict = cached_preflight(ctx, cs, c, api, options).await;
    let (reason, message) = verdict.reason_and_message();
    if !verdict.passed() && !conds.is_false(types::ROLES_VERIFIED) {
        events.push(event(
            EventType::Warning,
            reason,
            "Preflight",
            message.clone(),
        ));
    }
    conds.set(types::ROLES_VERIFIED, verdict.passed(), reason, message);
    verdict.passed()
}

/// While the sync is Idle (spec and engine), asks the engine for a plan once per generation and
/// again when it grows stale, and writes its summary to `status.plan` with the PlanSafe
/// condition (and a Warning Event when a risk blocks the sync). A failed plan is an Event and
/// is asked for again after `preflight_retry`; it never blocks anything.
#[allow(clippy::too_many_arguments)]
async fn make_plan(
    cs: &ClusterSync,
    ctx: &Context,
    api: &EngineApi,
    options: &StartOptions,
    state: Option<EngineState>,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) {
    let idle = cs.spec.mode == super::crd::Mode::Idle && state == Some(EngineState::Idle);
    let age = conds
        .status
        .plan
        .as_ref()
        .and_then(|p| p.planned_at.as_deref())
        .and_then(|t| t.parse::<Timestamp>().ok())
        .and_then(|t| Duration::try_from(Timestamp::now().duration_since(t)).ok());
    if !plan::wanted(
        idle,
        conds.status.plan.as_ref(),
        cs.metadata.generation,
        age,
    ) {
        return;
    }
    let key = key_of(cs);
    if lock(&ctx.plan_failures)
        .get(&key)
        .is_some_and(|at| at.elapsed() < ctx.settings.preflight_retry)
    {
        return;
    }
    let why = match tokio::time::timeout(ctx.settings.plan_timeout, api.plan(options)).await {
        Ok(Ok(p)) => {
            lock(&ctx.plan_failures).remove(&key);
            let (ok, reason, message) = plan::condition(&p);
            tracing::info!(safe = ok, risks = p.risks.len(), "plan");
            if !ok && !conds.is_false(types::PLAN_SAFE) {
                events.push(event(EventType::Warning, reason, "Plan", message.clone()));
            }
            conds.status.plan = Some(plan::summarize(
                &p,
                cs.metadata.generation,
                Timestamp::now().to_string(),
            ));
            conds.set(types::PLAN_SAFE, ok, reason, message);
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "the engine's plan did not answer within {} s",
            ctx.settings.plan_timeout.as_secs()
        ),
    };
    tracing::warn!(error = %why, "plan failed");
    lock(&ctx.plan_failures).insert(key, Instant::now());
    events.push(event(
        EventType::Warning,
        "PlanFailed",
        "Plan",
        format!(
            "{why}; it is asked for again in {} s (the sync can be started without it)",
            ctx.settings.preflight_retry.as_secs()
        ),
    ));
}

/// A sync the engine reports stopped for good blocks every call, with a Warning Event the
/// first time.
fn stopped(
    progress: &Progress,
    conds: &Conditions<'_>,
    events: &mut Vec<Event>,
) -> Option<Blocker> {
    let error = progress.sync_error.as_ref()?;
    let reported = conds
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == types::READY && c.reason == "SyncStopped");
    if !reported {
        events.push(event(
            EventType::Warning,
            "SyncStopped",
            "Observe",
            error.to_string(),
        ));
    }
    Some(Blocker {
        reason: "SyncStopped".into(),
        message: format!("the sync stopped: {error}"),
    })
}

/// Makes the call `decide` chose; on success the status is refreshed from `/progress`, on a
/// refusal the engine's reason blocks the sync.
async fn call_engine(
    cs: &ClusterSync,
    ctx: &Context,
    api: &EngineApi,
    verb: Verb,
    options: &StartOptions,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) -> Result<(), Blocker> {
    let body =
        (verb == Verb::Start).then(|| serde_json::to_value(options).unwrap_or_else(|_| json!({})));
    match api.call(verb, body).await {
        Ok(()) => {
            ctx.metrics.engine_call(engine_api::path(verb), true);
            tracing::info!(verb = engine_api::path(verb), "engine accepted");
            events.push(event(
                EventType::Normal,
                past_tense(verb),
                verb_action(verb),
                format!(
                    "asked the engine to {} (spec.mode {:?})",
                    engine_api::path(verb),
                    cs.spec.mode
                ),
            ));
            if verb == Verb::Reverse {
                conds.status.reversals_done += 1;
            }
            match api.progress().await {
                Ok(p) => mirror::apply_progress(conds.status, &p),
                // The state the call led to, until the next poll reads it: the schema's rules
                // key on it (source and destination are fixed once the state leaves IDLE), so a
                // status left at IDLE after a started sync would let them change.
                Err(_) => conds.status.state = Some(verb.leads_to().as_str().to_string()),
            }
            Ok(())
        }
        Err(e) => {
            ctx.metrics.engine_call(engine_api::path(verb), false);
            let name = e.refusal().unwrap_or("EngineUnreachable").to_string();
            let message = e.to_string();
            if e.refused_as() == Some(ErrorName::InsufficientPermissions) {
                forget_preflight(ctx, cs);
                conds.set(
                    types::ROLES_VERIFIED,
                    false,
                    "MissingRoles",
                    message.clone(),
                );
            }
            events.push(event(
                EventType::Warning,
                &name,
                verb_action(verb),
                message.clone(),
            ));
            Err(Blocker {
                reason: name,
                message,
            })
        }
    }
}

/// A pod that cannot run says why (a condition, and a Warning Event when the reason is new);
/// that beats "not ready yet".
fn pod_blocker(
    cs: &ClusterSync,
    ctx: &Context,
    conds: &mut Conditions<'_>,
    events: &mut Vec<Event>,
) -> Option<Outcome> {
    let problem = ctx.pod_problem(cs)?;
    if !conds.has_reason(types::ENGINE_AVAILABLE, &problem.reason) {
        events.push(event(
            EventType::Warning,
            &problem.reason,
            "RunEngine",
            problem.message.clone(),
        ));
    }
    conds.set(
        types::ENGINE_AVAILABLE,
        false,
        &problem.reason,
        problem.message.clone(),
    );
    Some(Outcome {
        requeue: ctx.settings.poll,
        blocker: Some(Blocker {
            reason: problem.reason,
            message: problem.message,
        }),
    })
}

fn current_state(status: &ClusterSyncStatus) -> Option<EngineState> {
    status.state.as_deref().and_then(EngineState::parse)
}

fn past_tense(verb: Verb) -> &'static str {
    match verb {
        Verb::Start => "Started",
        Verb::Pause => "Paused",
        Verb::Resume => "Resumed",
        Verb::Commit => "CommitRequested",
        Verb::Reverse => "Reversed",
    }
}

fn verb_action(verb: Verb) -> &'static str {
    match verb {
        Verb::Start => "Start",
        Verb::Pause => "Pause",
        Verb::Resume => "Resume",
        Verb::Commit => "Commit",
        Verb::Reverse => "Reverse",
    }
}

/// `InSync` and `Committed`, from the engine's state.
fn set_sync_conditions(conds: &mut Conditions<'_>, state: Option<EngineState>) {
    use EngineState as S;
    let st = &conds.status;
    let lag = st
        .lag_seconds
        .map(|l| format!("{l}s"))
        .unwrap_or_else(|| "unknown".into());
    let (in_sync, reason, message) = match state {
        None => (false, "Unknown", "the engine's state is not known yet".to_string()),
        Some(S::Initializing) => (false, "Initializing", "the engine is starting".into()),
        Some(S::Idle) => (
            false,
            "NotStarted",
            "the sync has not started; set spec.mode to Running to start it".into(),
        ),
        Some(S::Running) if st.can_commit => (
            true,
            "CaughtUp",
            format!("the destination is {lag} behind the source; set spec.mode to Committed to cut over"),
        ),
        Some(S::Running) if st.info.as_deref() == Some(progress::INFO_COLLECTION_COPY) => (
            false,
            "Copying",
            format!(
                "copying the collections: {} of {} bytes ({})",
                st.copied_bytes.unwrap_or(0),
                st.total_bytes.unwrap_or(0),
                st.copied_percent.as_deref().unwrap_or("0%")
            ),
        ),
        Some(S::Running) => (
            false,
            "CatchingUp",
            match &st.commit_blocker {
                Some(why) => format!(
                    "{}; {lag} behind the source; not ready to commit: {why}",
                    st.info.as_deref().unwrap_or("applying changes")
                ),
                None => format!(
                    "{}; {lag} behind the source",
                    st.info.as_deref().unwrap_or("applying changes")
                ),
            },
        ),
        Some(S::Paused) => (
            false,
            "Paused",
            "the sync is paused; set spec.mode to Running to resume it".into(),
        ),
        Some(S::Committing) => (
            true,
            "Committing",
            "the last changes are being applied".into(),
        ),
        Some(S::Committed) => (true, "Committed", "the sync is committed".into()),
        Some(S::Reversing) => (
            false,
            "Reversing",
            "the sync is being reversed".into(),
        ),
    };
    let (committed, c_reason, c_message) = match state {
        Some(S::Committed) if st.can_write => (
            true,
            "CommitCompleted",
            "the destination accepts writes; point applications at it".to_string(),
        ),
        Some(S::Committed | S::Committing) => (
            false,
            "Committing",
            "committing; the destination does not accept writes yet".into(),
        ),
        _ => (
            false,
            "NotCommitted",
            "not committed; set spec.mode to Committed to commit once the destination has caught up"
                .into(),
        ),
    };
    conds.set(types::IN_SYNC, in_sync, reason, message);
    conds.set(types::COMMITTED, committed, c_reason, c_message);
    let (verified, v_reason, v_message) = verified_condition(conds.status, state);
    conds.set(types::VERIFIED, verified, v_reason, v_message);
}

/// `Verified`, from the engine's embedded verifier.
fn verified_condition(
    st: &ClusterSyncStatus,
    state: Option<EngineState>,
) -> (bool, &'static str, String) {
    let Some(v) = &st.verification else {
        return match state {
            None | Some(EngineState::Initializing | EngineState::Idle) => (
                false,
                "NotStarted",
                "the embedded verifier starts with change event application".into(),
            ),
            Some(_) => (
                false,
                "Disabled",
                "verification is off (spec.verification.enabled is false, or the engine runs with --disableVerification): nothing checks the destination against the source".into(),
            ),
        };
    };
    if v.mismatch_count > 0 {
        return (
            false,
            "Mismatch",
            format!(
                "the embedded verifier found {} difference(s) between the clusters, and holds the commit back: {}",
                v.mismatch_count,
                v.mismatches.join("; ")
            ),
        );
    }
    if v.verified {
        return (
            true,
            "Verified",
            "the final comparison at commit found the destination equal to the source".into(),
        );
    }
    match v.phase.as_deref() {
        Some(p) if p == VerifierPhase::StreamHashing.as_str() => (
            true,
            "Consistent",
            format!(
                "all {} collections compared equal; changes are compared as they are applied, and again at commit",
                v.total_collections
            ),
        ),
        Some("initial hashing") => (
            false,
            "InitialPass",
            format!(
                "comparing the collections: {} of {} done",
                v.scanned_collections, v.total_collections
            ),
        ),
        _ => (
            false,
            "NotStarted",
            "the embedded verifier starts with change event application".into(),
        ),
    }
}

async fn cached_preflight(
    ctx: &Context,
    cs: &ClusterSync,
    creds: &Resolved,
    api: &EngineApi,
    options: &crate::contract::options::StartOptions,
) -> Verdict {
    let key = key_of(cs);
    let fingerprint = format!(
        "{}@{}",
        creds.fingerprint,
        cs.metadata.generation.unwrap_or(0)
    );
    {
        let cache = ctx.preflights.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&key) {
            let fresh = c.verdict.passed() || c.at.elapsed() < ctx.settings.preflight_retry;
            if c.fingerprint == fingerprint && fresh {
                return c.verdict.clone();
            }
        }
    }
    let verdict = preflight::run(api, options, ctx.settings.preflight_timeout).await;
    tracing::info!(passed = verdict.passed(), verdict = ?verdict, "role preflight");
    ctx.preflights
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            key,
            CachedVerdict {
                fingerprint,
                verdict: verdict.clone(),
                at: Instant::now(),
            },
        );
    verdict
}

fn forget_preflight(ctx: &Context, cs: &ClusterSync) {
    ctx.preflights
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&key_of(cs));
}

/// The API token: created once, then only read (a running engine keeps the one it started
/// with).
async fn ensure_token(
    cs: &ClusterSync,
    ctx: &Context,
    secrets: &Api<Secret>,
) -> Result<String, Error> {
    let uid = cs.metadata.uid.clone().unwrap_or_default();
    if let Some(t) = lock(&ctx.tokens).get(&uid) {
        return Ok(t.clone());
    }
    let name = workload::token_secret_name(cs);
    let secret = match secrets.get_opt(&name).await? {
        Some(s) => s,
        None => match secrets
            .create(&PostParams::default(), &workload::token_secret(cs))
            .await
        {
            Ok(s) => s,
            // Another reconcile created it first: use theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => secrets.get(&name).await?,
            Err(e) => return Err(e.into()),
        },
    };
    let token =
        credentials::value_of(&secret, workload::TOKEN_KEY).ok_or(Error::TokenMissing(name))?;
    lock(&ctx.tokens).insert(uid, token.clone());
    Ok(token)
}

/// Applies the NetworkPolicy, the Service and the Deployment, when they differ from what was
/// last applied or one of them is gone. Server-side apply with our field manager: the same
/// spec applied twice changes nothing, so an operator restart leaves the running engine alone.
async fn ensure_workload(
    cs: &ClusterSync,
    ctx: &Context,
    credentials_version: &str,
) -> Result<(), kube::Error> {
    let ns = cs.namespace().unwrap_or_default();
    let name = workload::engine_name(cs);
    let mut with_defaults = cs.clone();
    with_defaults.spec.engine = cs.spec.engine.or_defaults(&ctx.settings.engine_defaults);
    let policy = ctx
        .settings
        .operator_namespace
        .as_ref()
        .map(|op| workload::network_policy(cs, op, ctx.settings.metrics_scraper.as_ref()));
    let service = workload::service(cs);
    let deployment = workload::deployment(
        &with_defaults,
        &ctx.settings.engine_image,
        credentials_version,
    );
    let inputs = xxhash_rust::xxh3::xxh3_64(
        serde_json::to_string(&(&policy, &service, &deployment))
            .unwrap_or_default()
            .as_bytes(),
    );
    let key = key_of(cs);
    let present = ctx.has_child::<Deployment>(&ns, &name) && ctx.has_child::<Service>(&ns, &name);
    if present && lock(&ctx.applied).get(&key) == Some(&inputs) {
        return Ok(());
    }
    let pp = PatchParams::apply(MANAGER).force();
    if let Some(policy) = &policy {
        Api::<NetworkPolicy>::namespaced(ctx.client.clone(), &ns)
            .patch(&name, &pp, &Patch::Apply(policy))
            .await?;
    }
    Api::<Service>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(&service))
        .await?;
    Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .patch(&name, &pp, &Patch::Apply(&deployment))
        .await?;
    lock(&ctx.applied).insert(key, inputs);
    Ok(())
}

/// The condition reason and message for a child object the API server refused.
fn apply_failure(e: &kube::Error, engine: &str) -> (&'static str, String) {
    match e {
        kube::Error::Api(s) if s.code == 403 => (
            "Forbidden",
            format!(
                "the operator may not create the engine's objects ({engine}): {}; grant its ServiceAccount the permissions in deploy/base/clusterrole.yaml",
                s.message
            ),
        ),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => (
            "InvalidEngineObject",
            format!(
                "the API server refused the engine's objects ({engine}): {}; check spec.engine",
                s.message
            ),
        ),
        kube::Error::Api(s) => (
            "ApplyFailed",
            format!(
                "applying the engine's objects ({engine}) failed ({}): {}",
                s.code, s.message
            ),
        ),
        other => (
            "ApplyFailed",
            format!("applying the engine's objects ({engine}) failed: {other}"),
        ),
    }
}

impl Context {
    /// Whether the watch cache holds `name` (true before the caches exist: then the API is
    /// asked by applying).
    fn has_child<K>(&self, ns: &str, name: &str) -> bool
    where
        K: kube::Resource<DynamicType = ()> + Clone + 'static,
        super::Caches: CacheOf<K>,
    {
        match self.caches.get() {
            Some(c) => c
                .store()
                .get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
                .is_some(),
            None => false,
        }
    }

    /// Why the engine's pod cannot run, if it cannot.
    fn pod_problem(&self, cs: &ClusterSync) -> Option<pods::Problem> {
        let caches = self.caches.get()?;
        let ns = cs.namespace();
        let instance = workload::labels(cs).get(workload::INSTANCE_LABEL).cloned();
        let mine: Vec<_> = caches
            .pods
            .state()
            .into_iter()
            .filter(|p| {
                p.namespace() == ns && p.labels().get(workload::INSTANCE_LABEL) == instance.as_ref()
            })
            .collect();
        pods::problem(mine.iter().map(|p| p.as_ref()), Timestamp::now())
    }
}

/// The cache of one kind of child object.
pub trait CacheOf<K: kube::Resource<DynamicType = ()> + Clone + 'static> {
    fn store(&self) -> &kube::runtime::reflector::Store<K>;
}

impl CacheOf<Deployment> for super::Caches {
    fn store(&self) -> &kube::runtime::reflector::Store<Deployment> {
        &self.deployments
    }
}

impl CacheOf<Service> for super::Caches {
    fn store(&self) -> &kube::runtime::reflector::Store<Service> {
        &self.services
    }
}

/// Deletes one object the controller created; one already gone is fine.
async fn delete_if_present<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    match Api::<K>::namespaced(ctx.client.clone(), ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deleting a ClusterSync stops its engine and removes what the controller created. The
/// clusters' data, including the engine's metadata on the destination, is left as it is.
async fn cleanup(cs: &ClusterSync, ctx: &Context) -> Result<Action, Error> {
    let ns = cs.namespace().unwrap_or_default();
    let name = workload::engine_name(cs);
    delete_if_present::<Deployment>(ctx, &ns, &name).await?;
    delete_if_present::<Service>(ctx, &ns, &name).await?;
    delete_if_present::<NetworkPolicy>(ctx, &ns, &name).await?;
    delete_if_present::<Secret>(ctx, &ns, &workload::token_secret_name(cs)).await?;
    ctx.forget(cs);
    ctx.metrics.sync_seen(&key_of(cs), None);
    let state = cs
        .status
        .as_ref()
        .and_then(|s| s.state.clone())
        .unwrap_or_else(|| "not started".into());
    let note = format!(
        "stopped the engine (it was {state}) and removed its Deployment, Service, NetworkPolicy and token Secret; the clusters' data is untouched"
    );
    tracing::info!("{note}");
    if let Err(err) = ctx
        .recorder
        .publish(
            &event(EventType::Normal, "EngineRemoved", "Cleanup", note),
            &cs.object_ref(&()),
        )
        .await
    {
        tracing::warn!(error = %err, "could not record an Event");
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vanished_fields_are_nulled_in_the_patch() {
        let old = ClusterSyncStatus {
            lag_seconds: Some(3),
            state: Some("RUNNING".into()),
            ..Default::default()
        };
        let new = ClusterSyncStatus {
            state: Some("IDLE".into()),
            ..Default::default()
        };
        let p = status_patch(&old, &new);
        assert_eq!(p["status"]["lagSeconds"], Value::Null);
        assert!(p["status"].as_object().unwrap().contains_key("lagSeconds"));
        assert_eq!(p["status"]["state"], "IDLE");
    }

    #[test]
    fn ready_needs_every_prerequisite_and_no_blocker() {
        let mut st = ClusterSyncStatus::default();
        let mut c = Conditions {
            status: &mut st,
            generation: Some(1),
            now: Time(Timestamp::from_second(1).unwrap()),
        };
        c.set(types::CREDENTIALS_RESOLVED, true, "SecretsFound", "ok");
        let (ok, reason, msg) = readiness(c.status, None);
        assert!(!ok && reason == "Pending" && msg.starts_with("EngineAvailable"));
        c.set(types::ENGINE_AVAILABLE, true, "EngineReachable", "ok");
        let (ok, reason, msg) = readiness(c.status, None);
        assert!(!ok && reason == "Pending" && msg.starts_with("RolesVerified"));
        c.set(
            types::ROLES_VERIFIED,
            false,
            "MissingRoles",
            "user u lacks restore",
        );
        let (ok, reason, msg) = readiness(c.status, None);
        assert!(!ok && reason == "MissingRoles" && msg.contains("lacks restore"));
        c.set(types::ROLES_VERIFIED, true, "RolesPresent", "ok");
        c.set(types::ENGINE_AVAILABLE, true, "EngineReachable", "ok");
        c.status.state = Some("RUNNING".into());
        c.status.copied_percent = Some("40%".into());
        let (ok, _, msg) = readiness(c.status, None);
        assert!(ok && msg.contains("40% copied"), "{msg}");
        let b = Blocker {
            reason: "NamespaceConflict".into(),
            message: "the destination has data".into(),
        };
        assert!(!readiness(c.status, Some(&b)).0);
    }

    #[test]
    fn sync_conditions_follow_the_engine() {
        let mut st = ClusterSyncStatus {
            state: Some("RUNNING".into()),
            info: Some("collection copy".into()),
            copied_bytes: Some(10),
            total_bytes: Some(40),
            copied_percent: Some("25%".into()),
            ..Default::default()
        };
        let mut c = Conditions {
            status: &mut st,
            generation: None,
            now: Time(Timestamp::from_second(1).unwrap()),
        };
        set_sync_conditions(&mut c, Some(EngineState::Running));
        let find = |s: &ClusterSyncStatus, t: &str| {
            s.conditions.iter().find(|c| c.type_ == t).cloned().unwrap()
        };
        let in_sync = find(c.status, types::IN_SYNC);
        assert_eq!(
            (in_sync.status.as_str(), in_sync.reason.as_str()),
            ("False", "Copying")
        );
        assert!(in_sync.message.contains("25%"));
        c.status.state = Some("COMMITTED".into());
        c.status.can_write = true;
        set_sync_conditions(&mut c, Some(EngineState::Committed));
        assert_eq!(find(c.status, types::COMMITTED).status, "True");
        assert_eq!(find(c.status, types::IN_SYNC).status, "True");
    }

    #[test]
    fn verified_follows_the_embedded_verifier_and_its_changes_are_events() {
        use crate::operator::crd::VerificationStatus;
        let running = Some(EngineState::Running);
        let mut st = ClusterSyncStatus::default();
        let (ok, reason, msg) = verified_condition(&st, running);
        assert!(!ok && reason == "Disabled" && msg.contains("verification is off"));
        assert_eq!(
            verified_condition(&st, Some(EngineState::Idle)).1,
            "NotStarted"
        );
        st.verification = Some(VerificationStatus {
            phase: Some("initial hashing".into()),
            scanned_collections: 3,
            total_collections: 8,
            ..Default::default()
        });
        let (ok, reason, msg) = verified_condition(&st, running);
        assert!(
            !ok && reason == "InitialPass" && msg.contains("3 of 8"),
            "{msg}"
        );
        let before = st.clone();
        let v = st.verification.as_mut().unwrap();
        v.phase = Some("stream hashing".into());
        assert_eq!(verified_condition(&st, running).1, "Consistent");
        assert!(verification_events(&before, &st).is_empty());

        let consistent = st.clone();
        let v = st.verification.as_mut().unwrap();
        v.mismatch_count = 2;
        v.mismatches = vec![
            "a.b: _id 5 different content".into(),
            "a.b: index `x_1` missing on the destination".into(),
        ];
        let (ok, reason, msg) = verified_condition(&st, running);
        assert!(!ok && reason == "Mismatch");
        assert!(msg.contains("_id 5") && msg.contains("x_1"), "{msg}");
        let events = verification_events(&consistent, &st);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].reason, "VerificationMismatch");
        assert!(matches!(events[0].type_, EventType::Warning));
        // Still mismatching on the next pass: no second Event.
        assert!(verification_events(&st, &st.clone()).is_empty());

        let mismatching = st.clone();
        let v = st.verification.as_mut().unwrap();
        v.mismatch_count = 0;
        v.mismatches.clear();
        v.verified = true;
        let (ok, reason, _) = verified_condition(&st, Some(EngineState::Committed));
        assert!(ok && reason == "Verified");
        let events = verification_events(&mismatching, &st);
        assert_eq!(
            events.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["Verified"]
        );
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let s = truncate("é".repeat(600), 1000);
        assert!(s.len() <= 1003 && s.ends_with('…'));
    }

    #[test]
    fn each_state_transition_is_an_action_of_its_own() {
        assert_eq!(transition("IDLE", "RUNNING"), "IdleToRunning");
        assert_eq!(
            transition("not running", "INITIALIZING"),
            "NotRunningToInitializing"
        );
        assert_ne!(
            transition("IDLE", "RUNNING"),
            transition("PAUSED", "RUNNING")
        );
    }
}
