//! The engine's error types: [`EngineError`], and [`PersistError`] for checkpoint stores.

use std::sync::Arc;

use uuid::Uuid;

use super::exit_code::ExitCode;
use super::state::ProcessState;

/// What can go wrong when driving or controlling a process.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The operation needs another state (e.g. `resume` outside `Waiting`).
    #[error("the process is {state}, so it cannot {action}")]
    InvalidState {
        /// The current state.
        state: ProcessState,
        /// What was attempted.
        action: &'static str,
    },
    /// A step returned an error or panicked; the process is `Excepted`.
    #[error("{process} excepted{}: {message}", in_step(step))]
    Excepted {
        /// The error.
        message: String,
        /// The process type.
        process: String,
        /// The step that failed, when a step did.
        step: Option<String>,
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
    #[error(transparent)]
    InvalidInputs(#[from] super::spec::PortError),
    /// The checkpoint store failed, or holds no (or a corrupt) checkpoint for the pid.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// A checkpoint names a process type that was not registered with the runner.
    #[error(
        "the checkpoint of process {pid} is of type {type_name:?}, which is not registered \
         (call Runner::register for it before loading)"
    )]
    UnknownProcessType {
        /// The type name in the checkpoint.
        type_name: String,
        /// The process.
        pid: uuid::Uuid,
    },
    /// A checkpoint that decodes but cannot be continued (its process fields do not fit the
    /// registered type, or its parts contradict each other).
    #[error("the checkpoint of process {pid} cannot be continued: {reason}")]
    Checkpoint {
        /// The process.
        pid: uuid::Uuid,
        /// Why.
        reason: String,
    },
    /// Persisting or loading needs a runner built with a persister.
    #[error(
        "this runner has no checkpoint store (give it one with Runner::builder().persister(..))"
    )]
    NoPersister,
    /// The process is already running in this runner.
    #[error("process {pid} is already running in this runner")]
    AlreadyRunning {
        /// The process.
        pid: uuid::Uuid,
    },
    /// The runtime thread that drove the process stopped, was never started, or failed.
    #[error(transparent)]
    Thread(#[from] crate::thread::Error),
}

/// ` in step 'name'`, or nothing.
pub(crate) fn in_step(step: &Option<String>) -> String {
    step.as_ref()
        .map(|step| format!(" in step '{step}'"))
        .unwrap_or_default()
}

/// A store's failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// No checkpoint for this pid.
    #[error("no checkpoint for process {pid}")]
    NotFound {
        /// The process.
        pid: Uuid,
    },
    /// The stored bytes are not a checkpoint this build can read.
    #[error("the checkpoint of process {pid} is corrupt: {reason}")]
    Corrupt {
        /// The process.
        pid: Uuid,
        /// What is wrong with it.
        reason: String,
    },
    /// The store cannot be reached for now (a database server that is down or restarting):
    /// nothing was saved. A process whose save fails so stops where its last kept checkpoint
    /// is, without an outcome, to be continued once the store is back.
    #[error(
        "the checkpoint store cannot be reached: {what}; processes stop at their last checkpoint until it is back"
    )]
    Unavailable {
        /// What the store was doing, and where it is (without a password).
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// Another program holds the process's lease: it runs there. Continue it there, or once that
    /// program has stopped (a lease whose owner stops renewing it ends after the store's lease
    /// time).
    #[error(
        "process {pid} runs on {owner} (its lease there ends in {ends_in:?} unless renewed); continue it once that worker has stopped"
    )]
    Held {
        /// The process.
        pid: Uuid,
        /// The program holding it, as it named itself (host and process id by default).
        owner: String,
        /// When its lease ends if it is not renewed.
        ends_in: std::time::Duration,
    },
    /// This program no longer holds the process's lease (it was not renewed in time, and
    /// another program may have taken the process over), so nothing more of it may be saved
    /// here: the process stops where it is, and goes on wherever it is continued.
    #[error(
        "this program no longer holds process {pid}: its lease ran out, and another worker may run it now; it stops here"
    )]
    LeaseLost {
        /// The process.
        pid: Uuid,
    },
    /// The store itself failed (I/O, database, encoding); `source` keeps the cause.
    #[error("the checkpoint store failed: {what}")]
    Store {
        /// What the store was doing.
        what: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    },
}

impl PersistError {
    /// A store failure while doing `what`, caused by `source`.
    pub fn store(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        PersistError::Store {
            what: what.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A store that cannot be reached for now, while doing `what`.
    pub fn unavailable(
        what: impl Into<String>,
        source: Option<Arc<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        PersistError::Unavailable {
            what: what.into(),
            source,
        }
    }

    /// Whether the failure may pass by itself (the store is unreachable for now), so that a
    /// process stops where it is rather than ending excepted.
    pub fn is_transient(&self) -> bool {
        matches!(self, PersistError::Unavailable { .. })
    }

    /// Whether a process whose save fails so should stop where its last kept checkpoint is
    /// (abandoned, to be continued later or elsewhere) rather than end excepted: the store is
    /// unreachable for now, or the process's lease is lost.
    pub fn stops_process(&self) -> bool {
        matches!(
            self,
            PersistError::Unavailable { .. } | PersistError::LeaseLost { .. }
        )
    }

    /// A store failure without an underlying error (a custom store's own condition).
    pub fn store_failed(what: impl Into<String>) -> Self {
        PersistError::Store {
            what: what.into(),
            source: None,
        }
    }
}
