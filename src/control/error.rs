//! [`ControlError`]: what can go wrong when steering a process over messaging.

use std::time::Duration;

use crate::engine::Uuid;
use crate::messaging;

use super::wire::WireError;

/// Why a control request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No process answers under this pid: it never existed, it has ended (its subscription
    /// goes with it), or the runner it ran on does not listen (no
    /// [`Listening`](super::Listening) watcher).
    #[error(
        "no process {pid} is reachable: it has ended, never existed, or runs on a runner \
         that does not listen"
    )]
    NoSuchProcess {
        /// The pid asked for.
        pid: Uuid,
    },
    /// No answer in time.
    #[error(
        "no answer within {0:?}: is a worker running, and keeping up? (or give the controller \
         a longer timeout)"
    )]
    Timeout(Duration),
    /// The process or the launcher answered with an error (a failed or killed process, an
    /// unknown type or pid, bad inputs): its text.
    #[error("the remote side failed: {message}")]
    Remote {
        /// The error as the remote side wrote it.
        message: String,
    },
    /// The launcher refused the task (plumpy's rejection: an unknown task type, or `persist`
    /// or `continue` on a worker without a checkpoint store); another worker may take it.
    #[error("the worker refused the task: does any worker have a checkpoint store?")]
    Refused,
    /// An answer that is not what plumpy sends.
    #[error("unexpected answer: {0}")]
    Unexpected(#[source] WireError),
    /// The transport failed (closed, broker lost): the messaging layer's error.
    #[error(transparent)]
    Messaging(messaging::Error),
}

impl ControlError {
    /// The error of a request addressed to `pid` (an RPC): unroutable means no such process.
    pub(crate) fn to_process(pid: Uuid, error: messaging::Error) -> Self {
        match error {
            messaging::Error::Unroutable { .. } => ControlError::NoSuchProcess { pid },
            other => other.into(),
        }
    }
}

impl From<messaging::Error> for ControlError {
    fn from(error: messaging::Error) -> Self {
        match error {
            messaging::Error::Timeout(after) => ControlError::Timeout(after),
            messaging::Error::Remote { message } => ControlError::Remote { message },
            messaging::Error::TaskRejected => ControlError::Refused,
            other => ControlError::Messaging(other),
        }
    }
}

impl From<crate::thread::Error> for ControlError {
    fn from(error: crate::thread::Error) -> Self {
        ControlError::Messaging(messaging::Error::Thread(error))
    }
}
