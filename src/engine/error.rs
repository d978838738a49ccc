//! The engine's error type.

use super::exit_code::ExitCode;
use super::state::ProcessState;

/// What can go wrong when driving or controlling a process.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A transition the state machine does not allow.
    #[error("a process cannot go from {from} to {to}")]
    InvalidTransition {
        /// The current state.
        from: ProcessState,
        /// The state asked for.
        to: ProcessState,
    },
    /// The operation needs another state (e.g. `resume` outside `Waiting`).
    #[error("the process is {state}, so it cannot {action}")]
    InvalidState {
        /// The current state.
        state: ProcessState,
        /// What was attempted.
        action: &'static str,
    },
    /// A step returned an error or panicked; the process is `Excepted`.
    #[error("the process excepted: {message}")]
    Excepted {
        /// The error.
        message: String,
    },
    /// The process was killed.
    #[error("the process was killed: {message}")]
    Killed {
        /// The kill message.
        message: String,
    },
    /// The process finished with a non-zero exit code.
    #[error("the process failed with exit code {exit_code}")]
    Failed {
        /// The exit code.
        exit_code: ExitCode,
    },
    /// The inputs do not fit the process's spec (the path names the port).
    #[error("invalid inputs: {0}")]
    InvalidInputs(#[from] super::spec::PortError),
    /// The runtime thread that drove the process stopped or failed.
    #[error("the engine's runtime thread: {0}")]
    Thread(#[from] crate::thread::Error),
}
