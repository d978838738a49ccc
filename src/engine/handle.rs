//! [`ProcessHandle`]: waiting for and controlling a submitted process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::error::EngineError;
use super::outcome::{ProcessOutcome, ProcessStatus};
use super::runner_core::Core;
use super::shared::{KillRequest, ProcessShared, Settled};
use super::state::ProcessState;

/// Controls a process without waiting for it: cloneable, usable from any thread.
#[derive(Clone)]
pub struct ProcessController {
    shared: Arc<ProcessShared>,
}

impl ProcessController {
    pub(crate) fn new(shared: Arc<ProcessShared>) -> Self {
        ProcessController { shared }
    }

    /// The process id: a UUID, whose type the engine re-exports, so that a program names it
    /// without depending on `uuid` itself.
    ///
    /// ```
    /// use runtime_thread::engine::{Command, Process, Runner, StepContext, StepError, Uuid};
    ///
    /// struct Done;
    /// impl Process for Done {
    ///     async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
    ///         Ok(Command::finish())
    ///     }
    /// }
    ///
    /// let handle = Runner::start()?.submit(Done);
    /// let pid: Uuid = handle.pid();
    /// assert_eq!(handle.status().pid, pid);
    /// # Ok::<(), runtime_thread::engine::EngineError>(())
    /// ```
    pub fn pid(&self) -> Uuid {
        self.shared.identity.pid
    }

    /// The state it is in now: [`status`](Self::status) without the rest of the snapshot.
    pub fn state(&self) -> ProcessState {
        self.shared.state()
    }

    /// A status snapshot.
    pub fn status(&self) -> ProcessStatus {
        self.shared.snapshot()
    }

    /// Controllers of the children this process launched so far.
    pub fn children(&self) -> Vec<ProcessController> {
        self.shared
            .children()
            .into_iter()
            .map(|shared| ProcessController { shared })
            .collect()
    }

    /// Blocks until the process is in `state` (now or later), and returns its status then,
    /// instead of polling [`status`](Self::status).
    ///
    /// ```
    /// use std::time::Duration;
    /// use runtime_thread::engine::{Command, StepContext, Process, ProcessState, Runner, StepError};
    ///
    /// struct Approval;
    /// impl Process for Approval {
    ///     async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
    ///         if step == "run" {
    ///             return Ok(Command::wait_for_resume("approved"));
    ///         }
    ///         let by = ctx.take_resume_value().unwrap_or_default();
    ///         ctx.out("by", by);
    ///         Ok(Command::finish())
    ///     }
    /// }
    ///
    /// let runner = Runner::start()?;
    /// let approval = runner.submit(Approval);
    /// let status = approval.wait_for_state(ProcessState::Waiting, Duration::from_secs(5))?;
    /// assert!(status.awaiting_resume);
    /// approval.resume("the manager".into())?;
    /// assert_eq!(approval.wait()?.into_outputs()?["by"], "the manager");
    /// # Ok::<(), runtime_thread::engine::EngineError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EngineError::Thread(Error::TimedOut)` after `timeout`; [`EngineError::InvalidState`]
    /// if the process ended in another state, so that it never will be in `state`.
    pub fn wait_for_state(
        &self,
        state: ProcessState,
        timeout: Duration,
    ) -> Result<ProcessStatus, EngineError> {
        let deadline = std::time::Instant::now() + timeout;
        let reached = crate::thread::block_safely(|| self.shared.wait_for_state(state, deadline))
            .map_err(EngineError::Thread)?;
        if reached == state {
            return Ok(self.status());
        }
        if reached.is_terminal() {
            return Err(EngineError::InvalidState {
                state: reached,
                action: "reach the state waited for (it has ended)",
            });
        }
        Err(EngineError::Thread(crate::thread::Error::TimedOut(timeout)))
    }

    /// Asks the process to pause: at once in `Created` or `Waiting` (the wait stays armed), after
    /// the current step in `Running`. Returns false if it has already ended.
    pub fn pause(&self) -> bool {
        self.request(|c| c.paused = true)
    }

    /// Cancels a pause. Returns false if the process has already ended.
    pub fn play(&self) -> bool {
        self.request(|c| c.paused = false)
    }

    /// Kills the process: at once when it is created, waiting or paused; after the current step
    /// (whose command is then discarded) when it is running. Returns false if it already ended.
    pub fn kill(&self, message: impl Into<String>) -> bool {
        let message = message.into();
        self.request(|c| {
            c.kill = Some(Box::new(KillRequest {
                message,
                force: false,
            }))
        })
    }

    /// Kills the process at once, dropping a running step. Returns false if it already ended.
    pub fn force_kill(&self, message: impl Into<String>) -> bool {
        let message = message.into();
        self.request(|c| {
            c.kill = Some(Box::new(KillRequest {
                message,
                force: true,
            }))
        })
    }

    /// Waits until the process is paused, after a [`pause`](Self::pause): at once when it is
    /// paused already, after its current step when it is running. `true` once paused, `false`
    /// if it ended first. Awaitable on any executor; bound it with a timeout, since a process
    /// that is never asked to pause never is.
    pub async fn until_paused(&self) -> bool {
        self.shared.until_paused_is(true).await
    }

    /// Waits until the process is not paused, after a [`play`](Self::play): `true` once it
    /// runs (or waits) again, `false` if it ended first.
    pub async fn until_played(&self) -> bool {
        self.shared.until_paused_is(false).await
    }

    /// Waits until the process has left `Created`: its first step has begun (after whatever a
    /// [`Watch::hold_until`](super::Watch::hold_until) held it for), or it ended before.
    pub async fn until_started(&self) {
        self.shared.until_started().await;
    }

    /// Waits until the process has ended, and returns its outcome (an abandoned process ended
    /// killed). Unlike a [`ProcessHandle`], a controller never hands a persisted outcome over:
    /// the final checkpoint stays for the process's handle.
    pub async fn until_ended(&self) -> ProcessOutcome {
        self.shared.outcome().await
    }

    /// Whether the process was continued from a checkpoint ([`Runner::load`]) rather than
    /// started by this runner: it entered its first state before the checkpoint was taken.
    ///
    /// [`Runner::load`]: super::Runner::load
    pub fn was_loaded(&self) -> bool {
        self.shared.identity.loaded
    }

    /// Whether the process stopped here without ending: its runner closed
    /// ([`Runner::close`](super::Runner::close)) or its runtime stopped. Its state reads
    /// `Killed`, but its last checkpoint stays for another runner to continue it.
    pub fn was_abandoned(&self) -> bool {
        matches!(self.shared.try_outcome(), Some(Err(_)))
    }

    /// Ends a process's wait for a resume with `value`. A paused process keeps the value and
    /// continues with it once played. A process that is not waiting for a resume (running, or
    /// waiting on a timer or a future) refuses it with [`EngineError::InvalidState`].
    ///
    /// # Errors
    ///
    /// `EngineError::InvalidState` when the process is not waiting for a resume.
    pub fn resume(&self, value: Value) -> Result<(), EngineError> {
        // The wait is armed (and the flag set) just before the process shows `Waiting`: a
        // resume in between is kept for it, so the flag alone decides, as the status shows it.
        if !self.shared.awaiting_resume() {
            return Err(EngineError::InvalidState {
                state: self.shared.state(),
                action: "be resumed (only a process waiting for a resume can)",
            });
        }
        self.shared
            .update_control(|c| c.resume = Some(Box::new(value)));
        Ok(())
    }

    fn request(&self, change: impl FnOnce(&mut super::shared::Control)) -> bool {
        if self.shared.state().is_terminal() {
            return false;
        }
        self.shared.update_control(change);
        true
    }
}

/// A submitted process: wait for its outcome (blocking, bounded, or `.await` from any executor)
/// and control it. Dropping the handle does not stop the process.
///
/// # Outcomes of persisted processes
///
/// A top-level persisted process keeps its final checkpoint, with its outcome, until the
/// outcome is handed over, so that a crash between its end and its waiter never loses it (a
/// reload returns it as a finished handle). The handle hands it over, and deletes that
/// checkpoint, when [`wait`](Self::wait) or `.await` returns it, or when the callback of
/// [`on_finish`](Self::on_finish) (or the future of
/// [`on_finish_async`](Self::on_finish_async)) has run. A handle dropped without reading the
/// outcome leaves the checkpoint for a later [`Runner::load`](super::Runner::load) or
/// [`Runner::forget`](super::Runner::forget).
///
/// The deletion is made before `wait` returns: a crash in the instant between the two loses the
/// outcome with the caller. With a store that commits in groups
/// (`SqlitePersister::open_batched`) it is committed with the next
/// group: a crash before that hands the outcome over again after a reload. Where that matters,
/// [`flush`](super::Persister::flush) the store after taking the outcome, or take it with
/// `on_finish`, whose callback runs before the deletion.
///
/// The handle reads the outcome from the process's own shared state, so a process costs no
/// separate completion cell: most of what a waiting process occupies is its driver.
pub struct ProcessHandle {
    controller: ProcessController,
    runner: Core,
    /// In the development mode, for a top-level process: nobody has read the outcome yet.
    unread: AtomicBool,
    /// Made on the first poll as a future.
    awaiting: Option<futures::future::BoxFuture<'static, Settled>>,
}

fn settled(outcome: Settled) -> Result<ProcessOutcome, EngineError> {
    outcome.map_err(EngineError::Thread)
}

impl ProcessHandle {
    pub(crate) fn new(shared: Arc<ProcessShared>, runner: Core) -> Self {
        // A child's outcome is read by its parent, whatever becomes of its handle.
        let watched = runner.spawner().dev_mode() && shared.identity.parent.is_none();
        ProcessHandle {
            controller: ProcessController { shared },
            runner,
            unread: AtomicBool::new(watched),
            awaiting: None,
        }
    }

    /// The outcome is being read through this handle.
    fn mark_read(&self) {
        self.unread.store(false, Relaxed);
    }

    pub(crate) fn shared(&self) -> &Arc<ProcessShared> {
        &self.controller.shared
    }

    /// A cloneable controller for other threads.
    pub fn controller(&self) -> ProcessController {
        self.controller.clone()
    }

    /// Cancels the process: it ends `Killed` (not excepted), at once.
    pub fn cancel(&self) -> bool {
        self.controller.force_kill("cancelled through its handle")
    }

    /// True once the process has ended.
    pub fn is_finished(&self) -> bool {
        self.shared().try_outcome().is_some()
    }

    /// Calls `callback` once with the outcome when the process ends: at once, on this thread,
    /// if it has; otherwise on the runner's thread. A callback that panics is logged, never
    /// fatal.
    pub fn on_finish<F>(self, callback: F)
    where
        F: FnOnce(Result<ProcessOutcome, EngineError>) + Send + 'static,
    {
        self.mark_read();
        match self.shared().try_outcome() {
            Some(outcome) => {
                let ended = outcome.is_ok();
                let call = std::panic::AssertUnwindSafe(|| callback(settled(outcome)));
                if std::panic::catch_unwind(call).is_err() {
                    tracing::error!("an on-finish callback panicked");
                }
                if ended {
                    self.runner.handed_over(self.shared());
                }
            }
            None => self.on_finish_async(move |outcome| {
                callback(outcome);
                std::future::ready(())
            }),
        }
    }

    /// Like [`on_finish`](Self::on_finish), for an async callback: the future it returns runs
    /// on the runner's thread (tracked, so a stop gives it the grace period). If that thread
    /// has stopped, the refusal is logged.
    pub fn on_finish_async<F, Fut>(self, callback: F)
    where
        F: FnOnce(Result<ProcessOutcome, EngineError>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.mark_read();
        let shared = self.shared().clone();
        let runner = self.runner.clone();
        let watcher = async move {
            let outcome = shared.settled_outcome().await;
            let ended = outcome.is_ok();
            let call =
                std::panic::AssertUnwindSafe(async move { callback(settled(outcome)).await });
            if futures::FutureExt::catch_unwind(call).await.is_err() {
                tracing::error!("an on-finish callback panicked");
            }
            if ended {
                runner.handed_over(&shared);
            }
        };
        if let Err(error) = self.runner.spawner().spawn_reported(watcher) {
            tracing::error!(%error, "an on-finish callback could not be started");
        }
    }

    /// Blocks until the process ends. On the runner's own thread (inside a step, on the
    /// default current-thread flavour) it refuses at once with
    /// `EngineError::Thread(Error::WouldDeadlock)`: await the handle there instead. A process
    /// whose runtime stopped before it ended gives `EngineError::Thread(Error::Stopped)`.
    ///
    /// # Errors
    ///
    /// `EngineError::Thread(Error::WouldDeadlock)` on the runner's own thread (current-thread
    /// flavour); `EngineError::Thread(Error::Stopped)` when the runtime stopped before the process
    /// ended. The process's own failure is not an error here: it is the outcome.
    pub fn wait(self) -> Result<ProcessOutcome, EngineError> {
        self.wait_before(None)
            .unwrap_or(Err(EngineError::Thread(crate::thread::Error::ResultTaken)))
    }

    /// Blocks up to `timeout`; the handle stays usable after a time-out.
    ///
    /// # Errors
    ///
    /// Those of [`wait`](Self::wait), and `EngineError::Thread(Error::TimedOut)` after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ProcessOutcome, EngineError> {
        let deadline = std::time::Instant::now().checked_add(timeout);
        self.wait_before(deadline)
            .unwrap_or(Err(EngineError::Thread(crate::thread::Error::TimedOut(
                timeout,
            ))))
    }

    /// Blocks up to a point in time, so that several handles can share one deadline; after
    /// it, `EngineError::Thread(Error::TimedOut)` (with the time this call waited) and the
    /// handle stays usable.
    ///
    /// # Errors
    ///
    /// Those of [`wait`](Self::wait), and `EngineError::Thread(Error::TimedOut)` once `deadline`
    /// has passed.
    pub fn wait_until(
        &mut self,
        deadline: std::time::Instant,
    ) -> Result<ProcessOutcome, EngineError> {
        let start = std::time::Instant::now();
        self.wait_before(Some(deadline)).unwrap_or_else(|| {
            Err(EngineError::Thread(crate::thread::Error::TimedOut(
                start.elapsed(),
            )))
        })
    }

    fn wait_before(
        &self,
        deadline: Option<std::time::Instant>,
    ) -> Option<Result<ProcessOutcome, EngineError>> {
        let shared = self.shared();
        let outcome = match shared.try_outcome() {
            Some(outcome) => outcome,
            None => {
                let waited = crate::thread::spin_then_block(
                    self.runner.spawner().spin(),
                    deadline,
                    || shared.is_published(),
                    || shared.wait_outcome(deadline),
                );
                match waited {
                    Ok(outcome) => outcome?,
                    Err(refused) => return Some(Err(EngineError::Thread(refused))),
                }
            }
        };
        Some(self.deliver(outcome))
    }

    /// The outcome as the caller gets it; handed over, so its checkpoint may go.
    fn deliver(&self, outcome: Settled) -> Result<ProcessOutcome, EngineError> {
        self.mark_read();
        if outcome.is_ok() {
            self.runner.handed_over(self.shared());
        }
        settled(outcome)
    }
}

impl Drop for ProcessHandle {
    fn drop(&mut self) {
        if self.unread.load(Relaxed) {
            self.shared().dropped_unread();
        }
    }
}

impl std::fmt::Debug for ProcessController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessController")
            .field("pid", &self.shared.identity.pid)
            .field("state", &self.shared.state())
            .finish()
    }
}

impl std::fmt::Debug for ProcessHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ProcessHandle")
            .field(&self.controller)
            .finish()
    }
}

impl std::ops::Deref for ProcessHandle {
    type Target = ProcessController;
    fn deref(&self) -> &ProcessController {
        &self.controller
    }
}

impl Future for ProcessHandle {
    type Output = Result<ProcessOutcome, EngineError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        if self.awaiting.is_none() {
            let shared = self.shared().clone();
            self.awaiting = Some(Box::pin(async move { shared.settled_outcome().await }));
        }
        let outcome = match &mut self.awaiting {
            Some(awaiting) => std::task::ready!(awaiting.as_mut().poll(cx)),
            None => return Poll::Pending,
        };
        Poll::Ready(self.deliver(outcome))
    }
}
