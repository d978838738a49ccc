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
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            ProcessState::Created => "created",
            ProcessState::Running => "running",
            ProcessState::Waiting => "waiting",
            ProcessState::Finished => "finished",
            ProcessState::Excepted => "excepted",
            ProcessState::Killed => "killed",
        };
        f.write_str(name)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::ProcessState::{self, *};

    const ALL: [ProcessState; 6] = [Created, Running, Waiting, Finished, Excepted, Killed];

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
