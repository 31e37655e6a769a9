//! The controller's decisions, apart from its I/O: whether to reconcile at all, which call to
//! make to the engine, and when to look again. `controller.rs` observes (API server, engine)
//! and acts; everything it decides is here, as pure functions tested as tables.

use std::collections::BTreeMap;
use std::time::Duration;

use super::actions::{self, EngineState, Observed};
use super::crd::{ClusterSync, ClusterSyncSpec};
use super::validate;
use crate::contract::options::StartOptions;
use crate::contract::state::Verb;

/// Annotation that makes the controller leave a ClusterSync alone ("false"): no engine calls,
/// no workload changes, for driving the engine by hand during an incident.
pub const RECONCILE_ANNOTATION: &str = "clustersync.io/reconcile";

/// How long a sync that nothing will change on its own waits before it is looked at again
/// (a paused reconcile, an invalid spec, a committed sync): changes to the object wake the
/// controller sooner.
pub const REST: Duration = Duration::from_secs(300);
/// The shortest wait after a refusal, so that a refused call is not repeated every poll.
pub const AFTER_REFUSAL: Duration = Duration::from_secs(30);

/// Why a reconcile stops before it looks at anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    /// The `Ready` reason.
    pub reason: &'static str,
    /// The `Ready` message, saying what to do.
    pub message: String,
    /// A Warning Event to record, when the user must act.
    pub warn: Option<String>,
}

/// The first step: a ClusterSync paused by annotation or with a spec that cannot work goes no
/// further; otherwise the `/start` body its spec makes.
pub fn gate(
    annotations: &BTreeMap<String, String>,
    spec: &ClusterSyncSpec,
) -> Result<StartOptions, Halt> {
    if annotations.get(RECONCILE_ANNOTATION).map(String::as_str) == Some("false") {
        return Err(Halt {
            reason: "ReconcilePaused",
            message: format!(
                "the controller leaves this sync alone while annotation {RECONCILE_ANNOTATION} is \"false\"; remove it to resume reconciling"
            ),
            warn: None,
        });
    }
    validate::start_options(spec).map_err(|message| Halt {
        reason: "InvalidSpec",
        message: format!("{message}; fix the ClusterSync's spec"),
        warn: Some(message),
    })
}

/// The call to make to the engine, if any: what `mode` and `reversals` ask for given what the
/// engine reports, except that a sync that stopped for good gets no call (`/commit` of a
/// stopped sync must not happen), and `/start` waits for the roles.
pub fn engine_call(
    cs: &ClusterSync,
    state: Option<EngineState>,
    can_commit: bool,
    reversals_done: u32,
    stopped: bool,
    roles_ok: bool,
) -> Option<Verb> {
    let state = state?;
    if stopped {
        return None;
    }
    let seen = Observed {
        state,
        can_commit,
        reversals_done,
    };
    match actions::next(cs.spec.mode, cs.spec.reversible, cs.spec.reversals, seen) {
        actions::Action::Wait => None,
        actions::Action::Start if !roles_ok => None,
        actions::Action::Start => Some(Verb::Start),
        actions::Action::Pause => Some(Verb::Pause),
        actions::Action::Resume => Some(Verb::Resume),
        actions::Action::Commit => Some(Verb::Commit),
        actions::Action::Reverse => Some(Verb::Reverse),
    }
}

/// When to look again: soon while the engine moves, less often while it rests, rarely once
/// committed with no reversal asked for, and not before [`AFTER_REFUSAL`] when something
/// blocks the sync.
pub fn requeue(
    state: Option<EngineState>,
    blocked: bool,
    reversals_wanted: u32,
    reversals_done: u32,
    poll: Duration,
) -> Duration {
    match state {
        _ if blocked => AFTER_REFUSAL.max(poll),
        Some(EngineState::Committed) if reversals_wanted <= reversals_done => REST,
        Some(EngineState::Idle | EngineState::Paused) => poll * 3,
        _ => poll,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::crd::Mode;
    use EngineState as S;

    fn sync(mode: Mode, reversible: bool, reversals: u32) -> ClusterSync {
        let mut cs: ClusterSync = serde_json::from_value(serde_json::json!({
            "apiVersion": "clustersync.io/v1alpha1", "kind": "ClusterSync",
            "metadata": { "name": "s", "namespace": "n" },
            "spec": { "source": { "name": "a" }, "destination": { "name": "b" } }
        }))
        .unwrap();
        cs.spec.mode = mode;
        cs.spec.reversible = reversible;
        cs.spec.reversals = reversals;
        cs
    }

    #[test]
    fn the_gate_stops_a_paused_reconcile_and_an_invalid_spec() {
        let cs = sync(Mode::Running, false, 0);
        assert!(gate(&BTreeMap::new(), &cs.spec).is_ok());
        let paused = BTreeMap::from([(RECONCILE_ANNOTATION.to_string(), "false".to_string())]);
        let h = gate(&paused, &cs.spec).unwrap_err();
        assert_eq!((h.reason, h.warn), ("ReconcilePaused", None));
        let other = BTreeMap::from([(RECONCILE_ANNOTATION.to_string(), "true".to_string())]);
        assert!(gate(&other, &cs.spec).is_ok());
        let bad = sync(Mode::Running, false, 3);
        let h = gate(&BTreeMap::new(), &bad.spec).unwrap_err();
        assert_eq!(h.reason, "InvalidSpec");
        assert!(
            h.message.ends_with("fix the ClusterSync's spec"),
            "{}",
            h.message
        );
        assert!(h.warn.unwrap().contains("reversible"));
    }

    #[test]
    fn the_engine_call_table() {
        use Mode::*;
        // (mode, reversible, reversals wanted, state, canCommit, done, stopped, roles) → call
        type Row = (
            Mode,
            bool,
            u32,
            Option<S>,
            bool,
            u32,
            bool,
            bool,
            Option<Verb>,
        );
        #[rustfmt::skip]
        let rows: &[Row] = &[
            (Running, false, 0, None, false, 0, false, true, None),
            (Running, false, 0, Some(S::Idle), false, 0, false, true, Some(Verb::Start)),
            (Running, false, 0, Some(S::Idle), false, 0, false, false, None),
            (Committed, false, 0, Some(S::Idle), false, 0, false, true, Some(Verb::Start)),
            (Paused, false, 0, Some(S::Running), false, 0, false, true, Some(Verb::Pause)),
            (Running, false, 0, Some(S::Paused), false, 0, false, true, Some(Verb::Resume)),
            (Committed, false, 0, Some(S::Running), false, 0, false, true, None),
            (Committed, false, 0, Some(S::Running), true, 0, false, true, Some(Verb::Commit)),
            (Committed, false, 0, Some(S::Running), true, 0, true, true, None),
            (Committed, true, 1, Some(S::Committed), false, 0, false, true, Some(Verb::Reverse)),
            (Committed, true, 1, Some(S::Committed), false, 1, false, true, None),
            (Idle, false, 0, Some(S::Idle), false, 0, false, true, None),
        ];
        for &(mode, reversible, wanted, state, can_commit, done, stopped, roles, want) in rows {
            let cs = sync(mode, reversible, wanted);
            assert_eq!(
                engine_call(&cs, state, can_commit, done, stopped, roles),
                want,
                "{mode:?} reversible={reversible} wanted={wanted} {state:?} canCommit={can_commit} done={done} stopped={stopped} roles={roles}"
            );
        }
    }

    #[test]
    fn the_requeue_table() {
        let poll = Duration::from_secs(10);
        let rows: &[(Option<S>, bool, u32, u32, Duration)] = &[
            (Some(S::Running), false, 0, 0, poll),
            (None, false, 0, 0, poll),
            (Some(S::Idle), false, 0, 0, poll * 3),
            (Some(S::Paused), false, 0, 0, poll * 3),
            (Some(S::Committed), false, 0, 0, REST),
            (Some(S::Committed), false, 1, 0, poll),
            (Some(S::Running), true, 0, 0, AFTER_REFUSAL),
        ];
        for &(state, blocked, wanted, done, want) in rows {
            assert_eq!(
                requeue(state, blocked, wanted, done, poll),
                want,
                "{state:?} {blocked}"
            );
        }
        assert_eq!(
            requeue(Some(S::Running), true, 0, 0, Duration::from_secs(60)),
            Duration::from_secs(60),
            "never sooner than the poll"
        );
    }
}
