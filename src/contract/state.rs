//! The engine's states (mongosync's, as `/progress` reports them) and the sync phases
//! underneath RUNNING.

use serde::{Deserialize, Serialize};

/// What `/progress` calls `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// Starting up: reaching the clusters and loading any persisted sync; no verb is accepted.
    Initializing,
    /// No sync started yet; waiting for `/start`.
    Idle,
    /// Copying or applying change events; `/pause` is accepted, and `/commit` once `canCommit`.
    Running,
    /// Stopped by `/pause` until `/resume`.
    Paused,
    /// After `/commit`: applying the final change events before `canWrite`.
    Committing,
    /// The sync is finished; `/reverse` is accepted if it was started with `reversible: true`.
    Committed,
    /// After `/reverse`: swapping the clusters' roles, then RUNNING in the other direction.
    Reversing,
}

impl State {
    /// Reads `/progress`'s `state` string.
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// The state as `/progress` writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initializing => "INITIALIZING",
            State::Idle => "IDLE",
            State::Running => "RUNNING",
            State::Paused => "PAUSED",
            State::Committing => "COMMITTING",
            State::Committed => "COMMITTED",
            State::Reversing => "REVERSING",
        }
    }
}

/// The state that is persisted on the destination once a sync has started: INITIALIZING and
/// IDLE exist only in memory, so they cannot be written by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DurableState {
    /// [`State::Running`], persisted.
    Running,
    /// [`State::Paused`], persisted.
    Paused,
    /// [`State::Committing`], persisted.
    Committing,
    /// [`State::Committed`], persisted.
    Committed,
}

impl From<DurableState> for State {
    fn from(s: DurableState) -> Self {
        match s {
            DurableState::Running => State::Running,
            DurableState::Paused => State::Paused,
            DurableState::Committing => State::Committing,
            DurableState::Committed => State::Committed,
        }
    }
}

/// Where a sync job is in its work, persisted so that a restart continues from there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Creating collections and views on the destination and planning copy partitions.
    Catalog,
    /// Copying partitions.
    Copy,
    /// Building indexes after the copy (`afterDataCopy`, `excludeHashedAfterCopy`).
    IndexBuild,
    /// Applying change events (also during COMMITTING).
    ChangeEvents,
    /// Restoring index and collection properties at commit (after the final events).
    Finalize,
    /// Nothing left to do.
    Done,
}

impl Phase {
    /// mongosync's `info` string for the phase.
    pub fn info(self) -> &'static str {
        match self {
            Phase::Catalog | Phase::Copy | Phase::IndexBuild => "collection copy",
            Phase::ChangeEvents => "change event application",
            Phase::Finalize => "waiting for commit to complete",
            Phase::Done => "commit completed",
        }
    }
}

/// An API call that the current state does not allow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{action} is not allowed in state {state}: {hint}")]
pub struct WrongState {
    /// The verb refused, as its path (`/start`, `/pause`, ...).
    pub action: &'static str,
    /// The current state, as `/progress` names it.
    pub state: &'static str,
    /// When the verb is accepted.
    pub hint: &'static str,
}

/// The API verbs that change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `/start`: begin a sync.
    Start,
    /// `/pause`: stop syncing, keeping the progress made.
    Pause,
    /// `/resume`: continue a paused sync.
    Resume,
    /// `/commit`: finish the sync and let applications write to the destination.
    Commit,
    /// `/reverse`: sync back from the destination to the source after a commit.
    Reverse,
}

impl Verb {
    /// The verb's endpoint, as error messages name it.
    pub fn name(self) -> &'static str {
        match self {
            Verb::Start => "/start",
            Verb::Pause => "/pause",
            Verb::Resume => "/resume",
            Verb::Commit => "/commit",
            Verb::Reverse => "/reverse",
        }
    }

    /// The state an accepted call puts the engine in at once (mongosync's state table).
    pub fn leads_to(self) -> State {
        match self {
            Verb::Start | Verb::Resume => State::Running,
            Verb::Pause => State::Paused,
            Verb::Commit => State::Committing,
            Verb::Reverse => State::Reversing,
        }
    }

    /// The state a verb requires, as mongosync's state table gives it.
    pub fn check(self, state: State) -> Result<(), WrongState> {
        let (ok, hint) = match self {
            Verb::Start => (
                state == State::Idle,
                "/start is accepted only in IDLE; a sync has already been started (or the engine is still initializing)",
            ),
            Verb::Pause => (state == State::Running, "/pause is accepted only in RUNNING"),
            Verb::Resume => (state == State::Paused, "/resume is accepted only in PAUSED"),
            Verb::Commit => (
                state == State::Running,
                "/commit is accepted only in RUNNING with canCommit true",
            ),
            Verb::Reverse => (
                state == State::Committed,
                "/reverse is accepted only in COMMITTED, for a sync started with reversible: true",
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(WrongState {
                action: self.name(),
                state: state.as_str(),
                hint,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_follow_the_state_table() {
        use State::*;
        let all = [
            Initializing,
            Idle,
            Running,
            Paused,
            Committing,
            Committed,
            Reversing,
        ];
        let allowed = |v: Verb| {
            all.iter()
                .filter(|s| v.check(**s).is_ok())
                .copied()
                .collect::<Vec<_>>()
        };
        assert_eq!(allowed(Verb::Start), vec![Idle]);
        assert_eq!(allowed(Verb::Pause), vec![Running]);
        assert_eq!(allowed(Verb::Resume), vec![Paused]);
        assert_eq!(allowed(Verb::Commit), vec![Running]);
        assert_eq!(allowed(Verb::Reverse), vec![Committed]);
        // What each accepted verb leads to is a state that verb's successor accepts.
        assert_eq!(Verb::Start.leads_to(), Running);
        assert_eq!(Verb::Pause.leads_to(), Paused);
        assert!(Verb::Resume.check(Verb::Pause.leads_to()).is_ok());
        assert!(Verb::Pause.check(Verb::Resume.leads_to()).is_ok());
        assert_eq!(Verb::Commit.leads_to(), Committing);
        assert_eq!(Verb::Reverse.leads_to(), Reversing);
        let e = Verb::Start.check(Initializing).unwrap_err().to_string();
        assert!(e.contains("/start") && e.contains("INITIALIZING"), "{e}");
    }
}
