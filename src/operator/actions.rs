//! What the controller should ask the engine next, from the user's `mode` and the engine's
//! state: a pure table, so every pair is tested without a cluster.

use super::crd::Mode;
/// The engine's state as `/progress` reports it: the engine's own type, read from the API.
pub use crate::contract::state::State as EngineState;

/// One call to the engine's HTTP API, or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do now (wait, or already where the user wants).
    Wait,
    Start,
    Pause,
    Resume,
    /// `/commit`, only once the engine reports `canCommit`.
    Commit,
    Reverse,
}

/// What the engine reported, as far as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub state: EngineState,
    pub can_commit: bool,
    /// Reversals the engine has already done (counted by the controller in status).
    pub reversals_done: u32,
}

/// The next call. `reversals_wanted` is the spec's counter: raising it asks for one more
/// `/reverse` of a committed reversible sync, after which `mode` applies again in the new
/// direction.
pub fn next(mode: Mode, reversible: bool, reversals_wanted: u32, seen: Observed) -> Action {
    use EngineState as S;
    if matches!(seen.state, S::Initializing | S::Committing | S::Reversing) {
        return Action::Wait;
    }
    if seen.state == S::Committed && reversible && reversals_wanted > seen.reversals_done {
        return Action::Reverse;
    }
    match (mode, seen.state) {
        (Mode::Idle, _) => Action::Wait,
        (Mode::Running | Mode::Committed, S::Idle) => Action::Start,
        (Mode::Paused, S::Idle) => Action::Wait,
        (Mode::Running, S::Paused) | (Mode::Committed, S::Paused) => Action::Resume,
        (Mode::Paused, S::Running) => Action::Pause,
        (Mode::Committed, S::Running) if seen.can_commit => Action::Commit,
        _ => Action::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EngineState as S;

    fn seen(state: EngineState, can_commit: bool) -> Observed {
        Observed {
            state,
            can_commit,
            reversals_done: 0,
        }
    }

    #[test]
    fn the_whole_table() {
        let cases = [
            (Mode::Idle, S::Idle, false, Action::Wait),
            (Mode::Idle, S::Running, true, Action::Wait),
            (Mode::Running, S::Initializing, false, Action::Wait),
            (Mode::Running, S::Idle, false, Action::Start),
            (Mode::Running, S::Running, true, Action::Wait),
            (Mode::Running, S::Paused, false, Action::Resume),
            (Mode::Running, S::Committed, false, Action::Wait),
            (Mode::Paused, S::Idle, false, Action::Wait),
            (Mode::Paused, S::Running, false, Action::Pause),
            (Mode::Paused, S::Paused, false, Action::Wait),
            (Mode::Committed, S::Idle, false, Action::Start),
            (Mode::Committed, S::Running, false, Action::Wait),
            (Mode::Committed, S::Running, true, Action::Commit),
            (Mode::Committed, S::Paused, false, Action::Resume),
            (Mode::Committed, S::Committing, false, Action::Wait),
            (Mode::Committed, S::Committed, false, Action::Wait),
            (Mode::Committed, S::Reversing, false, Action::Wait),
        ];
        for (mode, state, can_commit, want) in cases {
            assert_eq!(
                next(mode, false, 0, seen(state, can_commit)),
                want,
                "{mode:?} {state:?} canCommit={can_commit}"
            );
        }
    }

    #[test]
    fn reversals_follow_the_counter() {
        let committed = Observed {
            state: S::Committed,
            can_commit: false,
            reversals_done: 0,
        };
        assert_eq!(next(Mode::Committed, true, 1, committed), Action::Reverse);
        assert_eq!(
            next(Mode::Committed, false, 1, committed),
            Action::Wait,
            "not reversible"
        );
        let done = Observed {
            reversals_done: 1,
            ..committed
        };
        assert_eq!(next(Mode::Committed, true, 1, done), Action::Wait);
        assert_eq!(next(Mode::Committed, true, 2, done), Action::Reverse);
        assert!(
            EngineState::parse("RUNNING") == Some(S::Running) && EngineState::parse("x").is_none()
        );
    }
}
