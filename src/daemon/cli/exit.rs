//! [`Exit`]: what the command line's exit status says, and the failures that lead to each.

use std::process::ExitCode;

use crate::control::ControlError;
use crate::daemon::DaemonError;

/// The exit status of a daemon's command line: what happened, for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum Exit {
    /// It was done.
    Ok = 0,
    /// It failed for another reason (the message says which).
    Failed = 1,
    /// The command line or the inputs were wrong.
    Usage = 2,
    /// No daemon is running.
    NotRunning = 3,
    /// A daemon is running already.
    AlreadyRunning = 4,
    /// The broker cannot be reached.
    NoBroker = 5,
    /// No such process: not running on any worker, and not in the store.
    NoSuchProcess = 6,
    /// No answer in time.
    Timeout = 7,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A command that failed: how the program exits, and what it says on stderr.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) exit: Exit,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

impl From<DaemonError> for Failure {
    fn from(error: DaemonError) -> Self {
        let exit = match &error {
            DaemonError::NotRunning { .. } => Exit::NotRunning,
            DaemonError::AlreadyRunning { .. } | DaemonError::PidFileHeld { .. } => {
                Exit::AlreadyRunning
            }
            DaemonError::Broker { .. } => Exit::NoBroker,
            DaemonError::NoAnswer(_) | DaemonError::Timeout { .. } => Exit::Timeout,
            DaemonError::Config { .. } => Exit::Usage,
            _ => Exit::Failed,
        };
        Failure::new(exit, error.to_string())
    }
}

impl From<ControlError> for Failure {
    fn from(error: ControlError) -> Self {
        let exit = match &error {
            ControlError::NoSuchProcess { .. } => Exit::NoSuchProcess,
            ControlError::Timeout(_) => Exit::Timeout,
            _ => Exit::Failed,
        };
        Failure::new(exit, error.to_string())
    }
}
