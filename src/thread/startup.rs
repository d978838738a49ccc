//! Startup tasks: long-running async closures registered before start (the decorator analogue of
//! the Python original). Each gets a cancellation token, runs from start to stop, and its outcome
//! lands in the stop report.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::dev::{Timed, WorkName};
use super::error::panic_message;
use super::report::{StartupOutcome, StartupTaskReport};
use super::task::TaskOutput;

type StartupFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;
type Factory = Box<dyn FnOnce(CancellationToken) -> StartupFuture + Send>;

/// A registered task, not yet started.
pub(crate) struct StartupTask {
    name: String,
    factory: Factory,
}

impl StartupTask {
    pub(crate) fn new<F, Fut>(name: impl Into<String>, factory: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
    {
        StartupTask {
            name: name.into(),
            factory: Box::new(move |token| {
                let future = factory(token);
                Box::pin(async move { future.await.failure() })
            }),
        }
    }
}

/// The outcome of every startup task, in start order.
#[derive(Default)]
pub(crate) struct StartupRecords(Arc<Mutex<Vec<StartupTaskReport>>>);

impl StartupRecords {
    fn add(&self, name: String) -> usize {
        let mut records = self.0.lock();
        records.push(StartupTaskReport {
            name,
            outcome: StartupOutcome::Running,
        });
        records.len() - 1
    }

    fn set(&self, index: usize, outcome: StartupOutcome) {
        if let Some(record) = self.0.lock().get_mut(index) {
            record.outcome = outcome;
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<StartupTaskReport> {
        self.0.lock().clone()
    }

    fn handle(&self) -> StartupRecords {
        StartupRecords(self.0.clone())
    }
}

/// Writes a task's outcome; if dropped before that, the task was aborted at shutdown.
struct OutcomeGuard {
    records: StartupRecords,
    index: usize,
    name: String,
    recorded: bool,
}

impl OutcomeGuard {
    fn record(mut self, outcome: StartupOutcome) {
        match &outcome {
            StartupOutcome::Failed { message } => {
                tracing::error!(task = %self.name, error = %message, "startup task failed");
            }
            StartupOutcome::Panicked { message } => {
                tracing::error!(task = %self.name, panic = %message, "startup task panicked");
            }
            _ => tracing::debug!(task = %self.name, ?outcome, "startup task ended"),
        }
        self.records.set(self.index, outcome);
        self.recorded = true;
    }
}

impl Drop for OutcomeGuard {
    fn drop(&mut self) {
        if !self.recorded {
            tracing::warn!(task = %self.name, "startup task was still running at shutdown and was aborted");
            self.records.set(self.index, StartupOutcome::Aborted);
        }
    }
}

/// A startup task with its report entry, ready to be spawned. Dropped unspawned (the thread
/// stopped first), it is reported as aborted.
pub(crate) struct Prepared {
    guard: OutcomeGuard,
    factory: Factory,
}

pub(crate) fn prepare(records: &StartupRecords, task: StartupTask) -> Prepared {
    let StartupTask { name, factory } = task;
    Prepared {
        guard: OutcomeGuard {
            index: records.add(name.clone()),
            records: records.handle(),
            name,
            recorded: false,
        },
        factory,
    }
}

impl Prepared {
    /// Starts the task with a child of the thread's `shutdown` token, tracked by `tracker`
    /// (so a graceful stop waits for it); must be called from within the runtime.
    /// In the development mode (`watched`), its polls are watched under its name.
    pub(crate) fn spawn(self, shutdown: &CancellationToken, tracker: &TaskTracker, watched: bool) {
        let Prepared { guard, factory } = self;
        let token = shutdown.child_token();
        let future = match catch_unwind(AssertUnwindSafe(|| factory(token.clone()))) {
            Ok(future) => future,
            Err(payload) => {
                let message = panic_message(&*payload);
                return guard.record(StartupOutcome::Panicked { message });
            }
        };
        let name = guard.name.clone();
        let task = async move {
            let outcome = match AssertUnwindSafe(future).catch_unwind().await {
                Err(payload) => StartupOutcome::Panicked {
                    message: panic_message(&*payload),
                },
                Ok(Some(message)) => StartupOutcome::Failed { message },
                Ok(None) if token.is_cancelled() => StartupOutcome::Cancelled,
                Ok(None) => StartupOutcome::Finished,
            };
            guard.record(outcome);
        };
        if watched {
            let name = WorkName::Named(format!("startup task '{name}'").into());
            drop(tracker.spawn(Timed::new(task, name)));
        } else {
            drop(tracker.spawn(task));
        }
    }
}
