//! How a process ended ([`ProcessOutcome`]) and how it is doing ([`ProcessStatus`]): plain
//! data, shared by handles, checkpoints and the process's own state.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::Value;
use uuid::Uuid;

use super::error::EngineError;
use super::exit_code::ExitCode;
use super::state::ProcessState;

/// The outputs a process emitted, by name.
pub type Outputs = BTreeMap<String, Value>;

/// How a process ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ProcessOutcome {
    /// It stopped with an exit code and these outputs.
    Finished {
        /// Zero for success.
        exit_code: ExitCode,
        /// What it emitted.
        outputs: Outputs,
    },
    /// A step failed (or the engine could not go on with the process).
    Excepted {
        /// The error.
        message: String,
        /// The process type, as its status shows it.
        #[serde(default)]
        process: String,
        /// The step that failed, when a step did (for a work chain, its outline step).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
    },
    /// It was killed.
    Killed {
        /// The kill message.
        message: String,
    },
}

impl ProcessOutcome {
    /// The outputs of a successful finish; anything else as an error.
    ///
    /// # Errors
    ///
    /// `EngineError::Failed` for a non-zero exit code, `EngineError::Excepted` and
    /// `EngineError::Killed` for those outcomes.
    pub fn into_outputs(self) -> Result<Outputs, EngineError> {
        match self {
            ProcessOutcome::Finished { exit_code, outputs } if exit_code.is_success() => {
                Ok(outputs)
            }
            ProcessOutcome::Finished { exit_code, .. } => Err(EngineError::Failed { exit_code }),
            ProcessOutcome::Excepted {
                message,
                process,
                step,
            } => Err(EngineError::Excepted {
                message,
                process,
                step,
            }),
            ProcessOutcome::Killed { message } => Err(EngineError::Killed { message }),
        }
    }

    /// The terminal state this outcome corresponds to.
    pub fn state(&self) -> ProcessState {
        match self {
            ProcessOutcome::Finished { .. } => ProcessState::Finished,
            ProcessOutcome::Excepted { .. } => ProcessState::Excepted,
            ProcessOutcome::Killed { .. } => ProcessState::Killed,
        }
    }
}

/// A status snapshot, as plumpy's `status` reply gives it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ProcessStatus {
    /// The process id.
    pub pid: Uuid,
    /// The process that launched it, if any.
    pub parent: Option<Uuid>,
    /// When it was created.
    pub ctime: SystemTime,
    /// The process type.
    pub process: String,
    /// Its state.
    pub state: ProcessState,
    /// Whether it is paused.
    pub paused: bool,
    /// Its status text (a pause, exit or kill message).
    pub status: Option<String>,
    /// Waiting for an external [`resume`](super::ProcessController::resume) (not a timer or a future).
    pub awaiting_resume: bool,
}
