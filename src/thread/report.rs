//! What a stop reports, and the running counters.

use std::time::Duration;

use super::dev::DevReport;

/// Counts of work submitted to a [`RuntimeThread`](crate::RuntimeThread), from
/// [`stats`](crate::RuntimeThread::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Jobs accepted (futures and blocking closures); refused submissions are not counted.
    pub submitted: u64,
    /// Jobs resolved in any way: finished, failed, cancelled, or abandoned at stop.
    pub completed: u64,
    /// Accepted and not yet resolved.
    pub in_flight: u64,
}

/// Why a runtime thread stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StopCause {
    /// It was never started.
    #[default]
    NeverStarted,
    /// [`stop`](crate::RuntimeThread::stop) or
    /// [`request_stop`](crate::RuntimeThread::request_stop) was called.
    Requested,
    /// The process received this signal.
    Signal(i32),
    /// The [`RuntimeThread`](crate::RuntimeThread) value was dropped while running.
    Dropped,
}

/// How a startup task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartupOutcome {
    /// Still running (only seen in a report taken while the thread runs).
    Running,
    /// Returned on its own before any stop was requested.
    Finished,
    /// Returned after its cancellation token fired, within the grace period.
    Cancelled,
    /// Returned an error, which was also logged.
    Failed {
        /// The error, as displayed.
        message: String,
    },
    /// Panicked; the panic was caught and logged.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// Still running when the grace period ended, so it was dropped.
    Aborted,
}

/// One startup task in a [`StopReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartupTaskReport {
    /// The name it was registered under.
    pub name: String,
    /// How it ended.
    pub outcome: StartupOutcome,
}

/// What [`stop`](crate::RuntimeThread::stop) and [`join`](crate::RuntimeThread::join) return: how
/// the stop went and what it had to abandon.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StopReport {
    /// What triggered the stop.
    pub cause: StopCause,
    /// Every startup task, in the order they were started.
    pub startup_tasks: Vec<StartupTaskReport>,
    /// Submitted futures still running when the grace period ended; they were dropped and their
    /// handles resolved with [`Error::Stopped`](crate::Error::Stopped).
    pub tasks_aborted: u64,
    /// Submissions still queued, never started; their handles resolved with `Stopped`.
    pub jobs_discarded: u64,
    /// Blocking jobs still running when the thread stopped. Their OS threads were left to finish
    /// on their own (blocking code cannot be interrupted); their handles resolved with `Stopped`.
    pub blocking_detached: u64,
    /// The grace period ran out before every task finished.
    pub grace_expired: bool,
    /// The grace period was cut short by a second signal.
    pub forced: bool,
    /// What the [development mode](crate::Builder::dev_mode) saw: `None` when it was off.
    pub dev: Option<DevReport>,
    /// From the stop request to the end of the thread.
    pub elapsed: Duration,
}

impl StopReport {
    /// Startup tasks that finished on their own before the stop.
    pub fn finished(&self) -> usize {
        self.count(|o| matches!(o, StartupOutcome::Finished))
    }

    /// Startup tasks that ended in response to their cancellation token.
    pub fn cancelled(&self) -> usize {
        self.count(|o| matches!(o, StartupOutcome::Cancelled))
    }

    /// Startup tasks that ignored cancellation and were aborted.
    pub fn aborted(&self) -> usize {
        self.count(|o| matches!(o, StartupOutcome::Aborted))
    }

    /// True when nothing was aborted, discarded, detached, failed or panicked.
    pub fn is_clean(&self) -> bool {
        self.tasks_aborted == 0
            && self.jobs_discarded == 0
            && self.blocking_detached == 0
            && !self.grace_expired
            && !self.forced
            && self.startup_tasks.iter().all(|t| {
                matches!(
                    t.outcome,
                    StartupOutcome::Finished | StartupOutcome::Cancelled
                )
            })
    }

    fn count(&self, which: impl Fn(&StartupOutcome) -> bool) -> usize {
        self.startup_tasks
            .iter()
            .filter(|t| which(&t.outcome))
            .count()
    }
}
