//! Process states and the transitions between them.

use serde::{Deserialize, Serialize};

/// Where a process is in its life. The last three are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessState {
    /// Built, inputs accepted, not yet run.
    Created,
    /// Running a step.
    Running,
    /// Waiting for something (a resume, a timer, a future, a child) before the next step.
    Waiting,
    /// Stopped with an exit code (zero means success).
    Finished,
    /// A step failed; the error message is kept.
    Excepted,
    /// Killed, with a message.
    Killed,
}

impl ProcessState {
    /// True for `Finished`, `Excepted` and `Killed`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ProcessState::Finished | ProcessState::Excepted | ProcessState::Killed
        )
    }

    /// Whether the machine may go from `self` to `to`. Every live state may go to `Excepted` and
    /// `Killed`; a terminal state goes nowhere.
    pub fn can_transition_to(self, to: ProcessState) -> bool {
        use ProcessState::*;
        match (self, to) {
            (from, _) if from.is_terminal() => false,
            (_, Excepted | Killed) => true,
            (Created, Running) => true,
            (Running, Running | Waiting | Finished) => true,
            (Waiting, Running) => true,
            _ => false,
        }
    }

    /// Its name, as plumpy names the state too (`ProcessState.value`): `created`, `running`,
    /// `waiting`, `finished`, `excepted`, `killed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Created => "created",
            ProcessState::Running => "running",
            ProcessState::Waiting => "waiting",
            ProcessState::Finished => "finished",
            ProcessState::Excepted => "excepted",
            ProcessState::Killed => "killed",
        }
    }

    /// The state named `name` (see [`as_str`](Self::as_str)).
    pub fn from_name(name: &str) -> Option<ProcessState> {
        use ProcessState::*;
        [Created, Running, Waiting, Finished, Excepted, Killed]
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::ProcessState::{self, *};

    const ALL: [ProcessState; 6] = [Created, Running, Waiting, Finished, Excepted, Killed];

    #[test]
    fn a_state_is_found_by_its_name() {
        for state in ALL {
            assert_eq!(ProcessState::from_name(state.as_str()), Some(state));
            assert_eq!(state.to_string(), state.as_str());
        }
        assert_eq!(ProcessState::from_name("asleep"), None);
    }

    #[test]
    fn the_transition_table_is_exactly_the_documented_one() {
        let allowed = [
            (Created, Running),
            (Created, Excepted),
            (Created, Killed),
            (Running, Running),
            (Running, Waiting),
            (Running, Finished),
            (Running, Excepted),
            (Running, Killed),
            (Waiting, Running),
            (Waiting, Excepted),
            (Waiting, Killed),
        ];
        for from in ALL {
            for to in ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_are_the_last_three() {
        let terminal: Vec<_> = ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Finished, Excepted, Killed]);
    }
}
