//! [`Controller`]: steers processes and launches them over a communicator, as plumpy's
//! `RemoteProcessController` does, with one answer per request.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::error::ControlError;
use super::wire::{Intent, LauncherTask, RemoteStatus};
use crate::engine::{Outputs, Uuid};
use crate::messaging::{Broadcast, Communicator, DEFAULT_TASK_QUEUE, TaskSendOptions, as_uuid};

/// How long a [`Controller`] waits for an answer unless told otherwise.
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(30);

/// Steers processes by pid and launches them through a launcher's task queue, over any
/// communicator: the same messages as plumpy's controllers, so the processes may run in this
/// program, another Rust program, or a Python plumpy worker.
///
/// Every request waits for its final answer, up to the controller's timeout: plumpy's reply
/// `pending` and its future of a future are followed inside (its `unwrap_kiwi_future`, done
/// once). A request that must wait long (a `launch` that runs the process to its end) takes
/// [`with_timeout`](Self::with_timeout). From synchronous code, use [`SyncController`](super::SyncController).
///
/// ```
/// use std::sync::Arc;
/// use runtime_thread::RuntimeThread;
/// use runtime_thread::control::{Controller, Launcher, Listening};
/// use runtime_thread::engine::{Command, Process, Runner, StepContext, StepError, Persistent};
/// use runtime_thread::messaging::LocalCommunicator;
/// use serde_json::json;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Add { a: i64, b: i64 }
/// impl Process for Add {
///     async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
///         ctx.out("sum", (self.a + self.b).into());
///         Ok(Command::finish())
///     }
/// }
/// impl Persistent for Add {
///     const TYPE_NAME: &'static str = "doc.Add";
/// }
///
/// // A worker: a runner whose processes listen, and a launcher on the task queue.
/// let thread = Arc::new(RuntimeThread::builder().start()?);
/// let broker = LocalCommunicator::new();
/// let runner = Runner::builder()
///     .thread(thread.clone())
///     .watcher(Listening::new(broker.clone(), &thread)?)
///     .start()?;
/// let _launcher = Launcher::builder().process::<Add>().start(&runner, broker.clone())?;
///
/// // A controller, here on the same thread (any executor will do).
/// let controller = Controller::new(broker);
/// let outputs = thread
///     .run_threadsafe(async move { controller.launch("doc.Add", json!({"a": 1, "b": 2}), false).await })
///     .wait()??;
/// assert_eq!(outputs["sum"], 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Controller<C> {
    comm: C,
    timeout: Duration,
    queue: String,
}

impl<C: Communicator> Controller<C> {
    /// A controller on `comm`, with [`DEFAULT_CONTROL_TIMEOUT`] and the default task queue.
    pub fn new(comm: C) -> Self {
        Controller {
            comm,
            timeout: DEFAULT_CONTROL_TIMEOUT,
            queue: DEFAULT_TASK_QUEUE.to_owned(),
        }
    }

    /// The same controller, waiting up to `timeout` for each answer.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Controller {
            timeout,
            ..self.clone()
        }
    }

    /// The same controller, sending launcher tasks to `queue` (the launchers' queue; AiiDA
    /// names one per profile).
    #[must_use]
    pub fn with_queue(&self, queue: impl Into<String>) -> Self {
        Controller {
            queue: queue.into(),
            ..self.clone()
        }
    }

    /// The communicator it sends through.
    pub fn communicator(&self) -> &C {
        &self.comm
    }

    /// How long it waits for each answer.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Pauses process `pid`, and answers once it is paused (a running process pauses after
    /// its current step): `true`, or `false` if it ended first.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchProcess`] when no process answers under `pid`;
    /// [`ControlError::Timeout`]; the transport's failure.
    pub async fn pause(&self, pid: Uuid, message: Option<&str>) -> Result<bool, ControlError> {
        let message = message.map(str::to_owned);
        self.answer_bool(pid, Intent::Pause { message }).await
    }

    /// Plays process `pid` (ends a pause), and answers once it is no longer paused: `true`,
    /// or `false` if it ended first.
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    pub async fn play(&self, pid: Uuid) -> Result<bool, ControlError> {
        self.answer_bool(pid, Intent::Play { message: None }).await
    }

    /// Kills process `pid` with `message`, and answers once it has ended: `true` if it ended
    /// killed, `false` if it ended otherwise first. `force` drops a running step at once
    /// instead of letting it end.
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause).
    pub async fn kill(
        &self,
        pid: Uuid,
        message: Option<&str>,
        force: bool,
    ) -> Result<bool, ControlError> {
        let message = message.map(str::to_owned);
        self.answer_bool(pid, Intent::Kill { message, force }).await
    }

    /// The status of process `pid`.
    ///
    /// # Errors
    ///
    /// As [`pause`](Self::pause); [`ControlError::Unexpected`] for an answer that is not a
    /// status.
    pub async fn status(&self, pid: Uuid) -> Result<RemoteStatus, ControlError> {
        let answer = self.ask(pid, Intent::Status { message: None }).await?;
        RemoteStatus::from_message(&answer).map_err(ControlError::Unexpected)
    }

    /// Asks every listening process to pause (a broadcast: no answer).
    ///
    /// # Errors
    ///
    /// The transport's failure to send.
    pub async fn pause_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        self.tell_all("pause", message.map_or(Value::Null, Value::from))
            .await
    }

    /// Asks every listening process to play (a broadcast: no answer).
    ///
    /// # Errors
    ///
    /// The transport's failure to send.
    pub async fn play_all(&self) -> Result<(), ControlError> {
        self.tell_all("play", Value::Null).await
    }

    /// Asks every listening process to die (a broadcast: no answer).
    ///
    /// # Errors
    ///
    /// The transport's failure to send.
    pub async fn kill_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        self.tell_all("kill", message.map_or(Value::Null, Value::from))
            .await
    }

    /// Launches a process of type `process_class` (a name or alias a launcher registered)
    /// built from `inputs`, checkpointed when `persist` (the worker needs a store then), and
    /// returns its outputs once it has finished.
    ///
    /// # Errors
    ///
    /// [`ControlError::Remote`] when the type is unknown, the inputs do not fit, or the process
    /// failed or was killed (the text says which); [`ControlError::Timeout`] (no launcher, or a
    /// process that outlived the timeout: see [`with_timeout`](Self::with_timeout)); for
    /// `persist` without a worker that has a store, a timeout too (the task stays queued for
    /// one that has); the transport's failure.
    pub async fn launch(
        &self,
        process_class: &str,
        inputs: Value,
        persist: bool,
    ) -> Result<Outputs, ControlError> {
        let task = launch_task(process_class, inputs, persist, false);
        outputs(self.send_task(&task).await?)
    }

    /// Launches a process, checkpointed when `persist` (the worker needs a store then), and
    /// returns its pid as soon as it has started.
    ///
    /// # Errors
    ///
    /// As [`launch`](Self::launch).
    pub async fn launch_nowait(
        &self,
        process_class: &str,
        inputs: Value,
        persist: bool,
    ) -> Result<Uuid, ControlError> {
        let task = launch_task(process_class, inputs, persist, true);
        pid(self.send_task(&task).await?)
    }

    /// Creates a process and saves it without running it; returns its pid, for a later
    /// [`continue_process`](Self::continue_process) on any worker that shares the store.
    ///
    /// # Errors
    ///
    /// As [`launch_nowait`](Self::launch_nowait) with `persist`.
    pub async fn create(&self, process_class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        let task = LauncherTask::Create {
            process_class: process_class.to_owned(),
            persist: true,
            init_args: Vec::new(),
            init_kwargs: inputs_keyword(inputs),
        };
        pid(self.send_task(&task).await?)
    }

    /// Continues the saved process `pid` on a worker, and returns its outputs once it has
    /// finished (plumpy's name: `continue` is a Rust keyword). The worker acknowledges the task
    /// only then, so if it dies meanwhile another worker continues the process. A process that
    /// had already ended answers with its stored outputs.
    ///
    /// # Errors
    ///
    /// [`ControlError::Remote`] when the store holds no such process or it failed or was
    /// killed; [`ControlError::Refused`] when no worker has a store; as
    /// [`launch`](Self::launch) otherwise.
    pub async fn continue_process(&self, pid: Uuid) -> Result<Outputs, ControlError> {
        let task = continue_task(pid, false);
        outputs(self.send_task(&task).await?)
    }

    /// Continues the saved process `pid` on a worker and returns once it runs.
    ///
    /// # Errors
    ///
    /// As [`continue_process`](Self::continue_process).
    pub async fn continue_nowait(&self, pid: Uuid) -> Result<(), ControlError> {
        let task = continue_task(pid, true);
        let answer = self.send_task(&task).await?;
        match self::pid(answer)? {
            answered if answered == pid => Ok(()),
            other => Err(ControlError::Unexpected(
                super::wire::WireError::Malformed {
                    reason: format!("continued {pid}, but the worker answered {other}"),
                },
            )),
        }
    }

    /// Creates the process, saved, then continues it, and returns its outputs: the process
    /// outlives this program (plumpy's `execute_process`; AiiDA submits this way).
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create), then as [`continue_process`](Self::continue_process).
    pub async fn execute(
        &self,
        process_class: &str,
        inputs: Value,
    ) -> Result<Outputs, ControlError> {
        let pid = self.create(process_class, inputs).await?;
        self.continue_process(pid).await
    }

    /// Creates the process, saved, then queues its `continue` without waiting for the
    /// answer, and returns its pid (AiiDA's `submit`). The worker that takes the task
    /// acknowledges it only when the process ends, so if that worker dies the broker gives
    /// the task to another, which continues from the last checkpoint. Follow the process
    /// with [`status`](Self::status), or the store.
    ///
    /// # Errors
    ///
    /// As [`create`](Self::create); the transport's failure to queue the task.
    pub async fn submit(&self, process_class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        let pid = self.create(process_class, inputs).await?;
        let task = continue_task(pid, false);
        let options = TaskSendOptions::for_queue(self.queue.clone()).timeout(self.timeout);
        self.comm
            .task_send_no_reply(task.to_message(), options)
            .await?;
        Ok(pid)
    }

    async fn ask(&self, pid: Uuid, intent: Intent) -> Result<Value, ControlError> {
        let recipient = pid.to_string();
        self.comm
            .rpc_send_with(&recipient, intent.to_message(), Some(self.timeout))
            .await
            .map_err(|error| ControlError::to_process(pid, error))
    }

    async fn answer_bool(&self, pid: Uuid, intent: Intent) -> Result<bool, ControlError> {
        match self.ask(pid, intent).await? {
            Value::Bool(done) => Ok(done),
            other => Err(unexpected(format!("expected true or false, got {other}"))),
        }
    }

    async fn tell_all(&self, subject: &str, body: Value) -> Result<(), ControlError> {
        let broadcast = Broadcast::new(body).subject(subject);
        Ok(self.comm.broadcast_send(broadcast).await?)
    }

    async fn send_task(&self, task: &LauncherTask) -> Result<Value, ControlError> {
        let options = TaskSendOptions::for_queue(self.queue.clone()).timeout(self.timeout);
        Ok(self.comm.task_send_with(task.to_message(), options).await?)
    }
}

/// plumpy passes a process's inputs as the keyword argument `inputs` of its constructor.
fn inputs_keyword(inputs: Value) -> Map<String, Value> {
    match json!({ "inputs": inputs }) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn launch_task(process_class: &str, inputs: Value, persist: bool, nowait: bool) -> LauncherTask {
    LauncherTask::Launch {
        process_class: process_class.to_owned(),
        persist,
        nowait,
        init_args: Vec::new(),
        init_kwargs: inputs_keyword(inputs),
    }
}

fn continue_task(pid: Uuid, nowait: bool) -> LauncherTask {
    LauncherTask::Continue {
        pid,
        nowait,
        tag: None,
    }
}

fn unexpected(reason: String) -> ControlError {
    ControlError::Unexpected(super::wire::WireError::Malformed { reason })
}

/// A launcher's answer with outputs: a mapping.
fn outputs(answer: Value) -> Result<Outputs, ControlError> {
    match answer {
        Value::Object(map) => Ok(map.into_iter().collect()),
        Value::Null => Ok(Outputs::new()),
        other => Err(unexpected(format!("expected the outputs, got {other}"))),
    }
}

/// A launcher's answer with a pid: a UUID value or text.
fn pid(answer: Value) -> Result<Uuid, ControlError> {
    as_uuid(&answer).ok_or_else(|| unexpected(format!("expected a pid, got {answer}")))
}

impl<C: fmt::Debug> fmt::Debug for Controller<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("comm", &self.comm)
            .field("timeout", &self.timeout)
            .field("queue", &self.queue)
            .finish()
    }
}
