//! [`SyncController`]: the [`Controller`] for synchronous code.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::controller::Controller;
use super::error::ControlError;
use super::wire::RemoteStatus;
use crate::RuntimeThread;
use crate::engine::{Outputs, Uuid};
use crate::messaging::Communicator;

/// A [`Controller`] whose requests block the calling thread until answered (or timed out),
/// driven on a [`RuntimeThread`]: what plumpy's `RemoteProcessThreadController` is to
/// Python, with the answer itself rather than a future of a future.
///
/// Call it from any thread but the runtime thread it drives (that one would wait for
/// itself, and is refused). To send many requests at once without waiting for each, run the
/// asynchronous [`Controller`]'s futures with [`RuntimeThread::run_threadsafe`].
///
/// ```
/// use std::sync::Arc;
/// use runtime_thread::RuntimeThread;
/// use runtime_thread::control::{Listening, SyncController};
/// use runtime_thread::engine::{Command, Process, ProcessState, Runner, StepContext, StepError};
/// use runtime_thread::messaging::LocalCommunicator;
///
/// struct Waits;
/// impl Process for Waits {
///     async fn step(&mut self, step: &str, _: &mut StepContext) -> Result<Command, StepError> {
///         Ok(match step {
///             "run" => Command::wait_for_resume("done"),
///             _ => Command::finish(),
///         })
///     }
/// }
///
/// let thread = Arc::new(RuntimeThread::builder().start()?);
/// let broker = LocalCommunicator::new();
/// let runner = Runner::builder()
///     .thread(thread.clone())
///     .watcher(Listening::new(broker.clone(), &thread)?)
///     .start()?;
/// let process = runner.submit(Waits);
///
/// let controller = SyncController::new(broker, thread);
/// assert!(controller.pause(process.pid(), Some("lunch"))?);
/// assert!(controller.status(process.pid())?.paused);
/// assert!(controller.kill(process.pid(), Some("enough"), false)?);
/// assert_eq!(process.wait()?.state(), ProcessState::Killed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SyncController<C> {
    controller: Controller<C>,
    thread: Arc<RuntimeThread>,
}

impl<C: Communicator> SyncController<C> {
    /// A controller on `comm`, driven on `thread` (which stays the caller's to stop), with the
    /// defaults of [`Controller::new`].
    pub fn new(comm: C, thread: Arc<RuntimeThread>) -> Self {
        SyncController::from_controller(Controller::new(comm), thread)
    }

    /// `controller`, driven on `thread`.
    pub fn from_controller(controller: Controller<C>, thread: Arc<RuntimeThread>) -> Self {
        SyncController { controller, thread }
    }

    /// The asynchronous controller it drives.
    pub fn controller(&self) -> &Controller<C> {
        &self.controller
    }

    /// The same controller, waiting up to `timeout` for each answer.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        SyncController::from_controller(self.controller.with_timeout(timeout), self.thread.clone())
    }

    /// The same controller, sending launcher tasks to `queue`.
    #[must_use]
    pub fn with_queue(&self, queue: impl Into<String>) -> Self {
        SyncController::from_controller(self.controller.with_queue(queue), self.thread.clone())
    }

    /// See [`Controller::pause`].
    ///
    /// # Errors
    ///
    /// As [`Controller::pause`]; the thread's refusal when called on the thread itself or
    /// after it stopped.
    pub fn pause(&self, pid: Uuid, message: Option<&str>) -> Result<bool, ControlError> {
        let message = message.map(str::to_owned);
        self.block(move |c| async move { c.pause(pid, message.as_deref()).await })
    }

    /// See [`Controller::play`].
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    pub fn play(&self, pid: Uuid) -> Result<bool, ControlError> {
        self.block(move |c| async move { c.play(pid).await })
    }

    /// See [`Controller::kill`].
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    pub fn kill(
        &self,
        pid: Uuid,
        message: Option<&str>,
        force: bool,
    ) -> Result<bool, ControlError> {
        let message = message.map(str::to_owned);
        self.block(move |c| async move { c.kill(pid, message.as_deref(), force).await })
    }

    /// See [`Controller::status`].
    ///
    /// # Errors
    ///
    /// As [`Controller::status`], and as [`pause`](Self::pause).
    pub fn status(&self, pid: Uuid) -> Result<RemoteStatus, ControlError> {
        self.block(move |c| async move { c.status(pid).await })
    }

    /// See [`Controller::pause_all`].
    ///
    /// # Errors
    ///
    /// As [`Controller::pause_all`], and as [`pause`](Self::pause).
    pub fn pause_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        let message = message.map(str::to_owned);
        self.block(move |c| async move { c.pause_all(message.as_deref()).await })
    }

    /// See [`Controller::play_all`].
    ///
    /// # Errors
    ///
    /// As [`pause_all`](Self::pause_all).
    pub fn play_all(&self) -> Result<(), ControlError> {
        self.block(move |c| async move { c.play_all().await })
    }

    /// See [`Controller::kill_all`].
    ///
    /// # Errors
    ///
    /// As [`pause_all`](Self::pause_all).
    pub fn kill_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        let message = message.map(str::to_owned);
        self.block(move |c| async move { c.kill_all(message.as_deref()).await })
    }

    /// See [`Controller::launch`].
    ///
    /// # Errors
    ///
    /// As [`Controller::launch`], and as [`pause`](Self::pause).
    pub fn launch(
        &self,
        process_class: &str,
        inputs: Value,
        persist: bool,
    ) -> Result<Outputs, ControlError> {
        let class = process_class.to_owned();
        self.block(move |c| async move { c.launch(&class, inputs, persist).await })
    }

    /// See [`Controller::launch_nowait`].
    ///
    /// # Errors
    ///
    /// As [`Controller::launch_nowait`], and as [`pause`](Self::pause).
    pub fn launch_nowait(
        &self,
        process_class: &str,
        inputs: Value,
        persist: bool,
    ) -> Result<Uuid, ControlError> {
        let class = process_class.to_owned();
        self.block(move |c| async move { c.launch_nowait(&class, inputs, persist).await })
    }

    /// See [`Controller::create`].
    ///
    /// # Errors
    ///
    /// As [`Controller::create`], and as [`pause`](Self::pause).
    pub fn create(&self, process_class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        let class = process_class.to_owned();
        self.block(move |c| async move { c.create(&class, inputs).await })
    }

    /// See [`Controller::continue_process`].
    ///
    /// # Errors
    ///
    /// As [`Controller::continue_process`], and as [`pause`](Self::pause).
    pub fn continue_process(&self, pid: Uuid) -> Result<Outputs, ControlError> {
        self.block(move |c| async move { c.continue_process(pid).await })
    }

    /// See [`Controller::continue_nowait`].
    ///
    /// # Errors
    ///
    /// As [`Controller::continue_nowait`], and as [`pause`](Self::pause).
    pub fn continue_nowait(&self, pid: Uuid) -> Result<(), ControlError> {
        self.block(move |c| async move { c.continue_nowait(pid).await })
    }

    /// See [`Controller::submit`].
    ///
    /// # Errors
    ///
    /// As [`Controller::submit`], and as [`pause`](Self::pause).
    pub fn submit(&self, process_class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        let class = process_class.to_owned();
        self.block(move |c| async move { c.submit(&class, inputs).await })
    }

    /// See [`Controller::execute`].
    ///
    /// # Errors
    ///
    /// As [`Controller::execute`], and as [`pause`](Self::pause).
    pub fn execute(&self, process_class: &str, inputs: Value) -> Result<Outputs, ControlError> {
        let class = process_class.to_owned();
        self.block(move |c| async move { c.execute(&class, inputs).await })
    }

    /// Runs one request on the thread and waits for its answer.
    fn block<T, F, Fut>(&self, request: F) -> Result<T, ControlError>
    where
        T: Send + 'static,
        F: FnOnce(Controller<C>) -> Fut,
        Fut: Future<Output = Result<T, ControlError>> + Send + 'static,
    {
        let future = request(self.controller.clone());
        self.thread.run_threadsafe(future).wait()?
    }
}

impl<C: fmt::Debug> fmt::Debug for SyncController<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncController")
            .field("controller", &self.controller)
            .field("thread", &self.thread)
            .finish()
    }
}
