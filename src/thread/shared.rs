//! State shared between a [`RuntimeThread`](super::RuntimeThread), its OS thread and its tasks.

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::blocking::BlockingRegistry;
use super::completion::Completion;
use super::config::Config;
use super::dev::{Dev, Timed, WorkName};
use super::error::Error;
use super::handoff::{ChannelQueue, Handoff, StopRequest};
use super::report::{Stats, StopCause};
use super::spin::Spin;
use super::startup::{StartupRecords, StartupTask};
use super::task::{Job, Supervised, TaskOutput, report_failure};

pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) config: Config,
    /// When the runtime thread and its blocking waiters spin rather than sleep.
    pub(crate) spin: Arc<Spin>,
    pub(crate) handoff: Handoff<ChannelQueue<Job>>,
    pub(crate) counters: Counters,
    /// Every task that may hold up a graceful stop: spawned jobs, startup tasks, blocking jobs.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when a stop begins; startup tasks get child tokens of it.
    pub(crate) shutdown: CancellationToken,
    /// Cancelled to cut the grace period short (a second signal).
    pub(crate) force: CancellationToken,
    pub(crate) runtime: OnceLock<tokio::runtime::Handle>,
    pub(crate) blocking: BlockingRegistry,
    /// Tasks registered before start; `None` once the runtime thread has taken them.
    pub(crate) pending_startup: Mutex<Option<Vec<StartupTask>>>,
    pub(crate) startup_records: StartupRecords,
    /// The development mode, when it is on.
    pub(crate) dev: Option<Arc<Dev>>,
    stop: Mutex<StopRequestInfo>,
}

#[derive(Default)]
struct StopRequestInfo {
    cause: Option<StopCause>,
    grace: Option<Duration>,
    at: Option<Instant>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    /// Spawned jobs that were still running when the runtime was shut down.
    pub(crate) aborted: AtomicU64,
}

impl Counters {
    pub(crate) fn add_completed(&self, n: usize) {
        if n > 0 {
            self.completed.fetch_add(n as u64, Relaxed);
        }
    }
}

impl Shared {
    pub(crate) fn new(id: u64, config: Config, startup: Vec<StartupTask>) -> Self {
        Shared {
            id,
            spin: Arc::new(Spin::new(config.idle_spin, config.wait_spin)),
            dev: Dev::new(config.dev, &config.name),
            config,
            handoff: Handoff::new(ChannelQueue::new()),
            counters: Counters::default(),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            force: CancellationToken::new(),
            runtime: OnceLock::new(),
            blocking: BlockingRegistry::default(),
            pending_startup: Mutex::new(Some(startup)),
            startup_records: StartupRecords::default(),
            stop: Mutex::new(StopRequestInfo::default()),
        }
    }

    /// Asks the thread to stop; returns true if this call started the stop.
    pub(crate) fn request_stop(&self, cause: StopCause, grace: Option<Duration>) -> bool {
        let mut info = self.stop.lock();
        match self.handoff.request_stop() {
            StopRequest::Initiated => {
                info.cause = Some(cause);
                info.grace = grace;
                info.at = Some(Instant::now());
                drop(info);
                self.shutdown.cancel();
                tracing::info!(thread = %self.config.name, ?cause, "runtime thread stop requested");
                true
            }
            StopRequest::NeverStarted => {
                info.cause = Some(StopCause::NeverStarted);
                false
            }
            StopRequest::AlreadyStopping => false,
        }
    }

    pub(crate) fn grace(&self) -> Duration {
        self.stop.lock().grace.unwrap_or(self.config.grace)
    }

    pub(crate) fn stop_cause(&self) -> StopCause {
        self.stop.lock().cause.unwrap_or(StopCause::NeverStarted)
    }

    pub(crate) fn stop_requested_at(&self) -> Option<Instant> {
        self.stop.lock().at
    }

    pub(crate) fn stats(&self) -> Stats {
        // Read completed first so that a racing completion can only make in_flight look larger,
        // never negative.
        let completed = self.counters.completed.load(Relaxed);
        let submitted = self.counters.submitted.load(Relaxed);
        Stats {
            submitted,
            completed,
            in_flight: submitted.saturating_sub(completed),
        }
    }

    /// Submits `future` to run supervised, resolving `completion` with its outcome (or at once
    /// with the refusal, if the thread is not running).
    pub(crate) fn submit<F>(
        &self,
        future: F,
        completion: Arc<Completion<F::Output>>,
        detached: bool,
        name: WorkName,
    ) where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        if let Some(refusal) = self.handoff.refusal() {
            completion.resolve(Err(refusal));
            return;
        }
        let supervised = Supervised::new(future, completion, detached);
        if self.dev.is_some() {
            return self.enqueue_timed(supervised, name);
        }
        self.enqueue(Box::pin(supervised));
    }

    /// The development mode's submission, kept out of line so that the usual one stays as
    /// small as it was without the mode.
    #[cold]
    #[inline(never)]
    fn enqueue_timed(&self, job: impl Future<Output = ()> + Send + 'static, name: WorkName) {
        self.enqueue(Box::pin(Timed::new(job, name)));
    }

    /// Submits a fire-and-forget `future`, whose failure is logged; its completion is returned
    /// for cancelling it. Refused at once if the thread is not running.
    pub(crate) fn spawn_reported<F>(
        &self,
        future: F,
        name: WorkName,
    ) -> Result<Arc<Completion<()>>, Error>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        if let Some(refusal) = self.handoff.refusal() {
            return Err(refusal);
        }
        let completion = Arc::new(Completion::new());
        self.submit(report_failure(future), completion.clone(), true, name);
        Ok(completion)
    }

    /// Hands `job` over without a handle: the leanest submission, for layers above that keep
    /// their own completion state (the engine's processes). Refused, the job is dropped here.
    /// In the development mode, `name` names the job in its reports; it is not called otherwise.
    pub(crate) fn spawn_job(
        &self,
        job: impl Future<Output = ()> + Send + 'static,
        name: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        if let Some(refusal) = self.handoff.refusal() {
            return Err(refusal);
        }
        if self.dev.is_some() {
            self.enqueue_timed(job, WorkName::Named(name().into()));
        } else {
            self.enqueue(Box::pin(job));
        }
        Ok(())
    }

    /// Queues an accepted job, keeping the counters honest about jobs dropped by a racing close.
    pub(crate) fn enqueue(&self, job: Job) {
        self.counters.submitted.fetch_add(1, Relaxed);
        // Work the runtime's own tasks submit says nothing about where the next caller runs.
        if !super::context::belongs_to(self.id) {
            self.spin.record_submitter();
        }
        let dropped = self.handoff.push(job);
        self.counters.add_completed(dropped);
    }
}
