//! [`Launcher`]: a worker's task subscriber that launches, creates and continues processes on
//! its runner, as plumpy's `ProcessLauncher` does.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};

use super::error::ControlError;
use super::wire::{LauncherTask, WireError, state_changed_subject};
use crate::engine::{
    EngineError, PersistError, Persistent, Persister, ProcessHandle, ProcessOutcome, ProcessState,
    Runner, Uuid, WorkChain,
};
use crate::messaging::{
    Broadcast, Communicator, DEFAULT_TASK_QUEUE, Handler, Response, SubscriberId,
    TaskSubscriberOptions, uuid_value,
};

/// Takes plumpy's launcher tasks (`launch`, `create`, `continue`) from a task queue and runs
/// them on a runner: the worker side of [`Controller::launch`](super::Controller::launch) and
/// its siblings. Made with [`Launcher::builder`]; it serves until dropped.
///
/// - **Types.** A task names its process type; the launcher knows the types registered with
///   [`process`](LauncherBuilder::process) / [`chain`](LauncherBuilder::chain) (under their
///   `TYPE_NAME`) or [`process_as`](LauncherBuilder::process_as) /
///   [`chain_as`](LauncherBuilder::chain_as) (under another name, such as the `module:Class`
///   that a Python client sends). An unknown name is answered with an error naming it.
/// - **Inputs** travel as plumpy's do, in the keyword argument `inputs` (or as the one
///   positional argument), and are checked against the type's spec.
/// - **`launch`** starts the process (checkpointed if `persist`) and answers its pid at once
///   (`nowait`) or its outputs when it has finished; a failed or killed process is answered
///   with an error.
/// - **`create`** saves the process without running it (it needs `persist`, since nothing
///   could continue it otherwise) and answers its pid; it announces `state_changed.None.created`.
/// - **`continue`** loads the process from the runner's store and answers as `launch` does.
///   With `nowait` false (AiiDA's way) the task is answered, and so acknowledged, only when
///   the process has ended: if the worker dies first, the broker gives the task to another
///   worker, which continues from the last checkpoint, or answers with the stored outputs of a
///   process that had ended. A `continue` of a process this runner runs already waits for it
///   rather than running it twice; one of a process that another worker holds (a store with
///   leases: SQLite with leases, PostgreSQL) waits until that worker has let it go (it ended,
///   stopped or died, and its lease ran out), then continues it, so that it never runs in two
///   places.
/// - **Rejections** (the task goes to another worker), as plumpy's: an unknown task type, and
///   `persist` or `continue` on a runner without a checkpoint store. A task that cannot finish
///   because the runner stopped, or whose store is out of reach for now, is given back too.
///
/// The runner's processes are reachable over messaging only if the runner also has a
/// [`Listening`](super::Listening) watcher; a launcher alone only starts them. A runner's
/// launcher keeps the runner alive until the launcher is dropped.
///
/// See [`Controller`](super::Controller) for an example.
pub struct Launcher {
    queue: String,
    subscriber: SubscriberId,
    /// Removes the subscription (the communicator's type is not the launcher's).
    unsubscribe: Mutex<Option<BoxFuture<'static, ()>>>,
    /// Where the subscription is removed when the launcher is dropped (possibly on a plain
    /// thread, so not with `tokio::spawn`).
    runtime: tokio::runtime::Handle,
    /// The tasks taken and not yet answered (or given back), one token each.
    in_hand: TaskTracker,
}

/// `response`, with `held` kept until its final answer (through every pending level).
fn answered_with(response: Response, held: TaskTrackerToken) -> Response {
    match response {
        Response::Pending(later) => {
            Response::Pending(Box::pin(async move { answered_with(later.await, held) }))
        }
        done => {
            // The final answer: no longer in hand.
            drop(held);
            done
        }
    }
}

/// Configures a [`Launcher`]: its process types, its queue and its slots.
#[must_use = "a builder does nothing until `start` is called"]
pub struct LauncherBuilder {
    types: HashMap<String, ProcessType>,
    queue: String,
    slots: usize,
}

/// How the launcher makes processes of one registered type.
#[derive(Clone, Copy)]
struct ProcessType {
    launch: fn(&Runner, Value, bool) -> Result<ProcessHandle, EngineError>,
    create: fn(&Runner, Value) -> Result<Uuid, EngineError>,
    register: fn(&Runner),
}

impl ProcessType {
    fn of_process<P: Persistent>() -> Self {
        ProcessType {
            launch: |runner, inputs, persist| {
                let launch = runner.launch_from_inputs::<P>(inputs);
                if persist {
                    launch.persisted().start()
                } else {
                    launch.start()
                }
            },
            create: |runner, inputs| runner.launch_from_inputs::<P>(inputs).create(),
            register: |runner| runner.register::<P>(),
        }
    }

    fn of_chain<W: WorkChain + Serialize + DeserializeOwned>() -> Self {
        ProcessType {
            launch: |runner, inputs, persist| {
                let launch = runner.launch_chain_from_inputs::<W>(inputs);
                if persist {
                    launch.persisted().start()
                } else {
                    launch.start()
                }
            },
            create: |runner, inputs| runner.launch_chain_from_inputs::<W>(inputs).create(),
            register: |runner| runner.register::<crate::engine::Chain<W>>(),
        }
    }
}

impl Launcher {
    /// A launcher to configure: no types yet, the default task queue, one slot.
    pub fn builder() -> LauncherBuilder {
        LauncherBuilder {
            types: HashMap::new(),
            queue: DEFAULT_TASK_QUEUE.to_owned(),
            slots: 1,
        }
    }
}

impl LauncherBuilder {
    /// Launches processes of type `P` under its [`TYPE_NAME`](Persistent::TYPE_NAME).
    pub fn process<P: Persistent>(self) -> Self {
        self.process_as::<P>(P::TYPE_NAME)
    }

    /// Launches processes of type `P` under `name` too: an alias, such as the `module:Class`
    /// identifier a Python client sends for it.
    pub fn process_as<P: Persistent>(mut self, name: impl Into<String>) -> Self {
        self.types
            .insert(name.into(), ProcessType::of_process::<P>());
        self
    }

    /// Launches work chains of type `W` under its [`TYPE_NAME`](WorkChain::TYPE_NAME).
    pub fn chain<W: WorkChain + Serialize + DeserializeOwned>(self) -> Self {
        self.chain_as::<W>(W::TYPE_NAME)
    }

    /// Launches work chains of type `W` under `name` too.
    pub fn chain_as<W: WorkChain + Serialize + DeserializeOwned>(
        mut self,
        name: impl Into<String>,
    ) -> Self {
        self.types.insert(name.into(), ProcessType::of_chain::<W>());
        self
    }

    /// Takes tasks from `queue` (default: the messaging layer's default task queue, as
    /// plumpy's; AiiDA names one per profile).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Holds at most `slots` tasks at once (AiiDA's worker slots; 0 = no limit). Default 1.
    /// A `continue` holds its slot until its process ends.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// Registers the types with `runner` (so that it can load their checkpoints) and
    /// subscribes to the queue on `comm`, from the runner's thread.
    ///
    /// # Errors
    ///
    /// The communicator's failure to subscribe; the thread's refusal when called on the
    /// runner's thread itself (it waits for the subscription) or after it stopped.
    pub fn start<C: Communicator>(
        self,
        runner: &Runner,
        comm: C,
    ) -> Result<Launcher, ControlError> {
        for kind in self.types.values() {
            (kind.register)(runner);
        }
        let serving = Arc::new(Serving {
            runner: runner.clone(),
            comm: comm.clone(),
            types: self.types,
        });
        let in_hand = TaskTracker::new();
        let taking = in_hand.clone();
        let handler = Handler::from_async(move |task| {
            let (serving, held) = (serving.clone(), taking.token());
            async move { answered_with(serving.take(task).await, held) }
        });
        let options = TaskSubscriberOptions {
            prefetch: self.slots,
        };
        let (subscribing, queue) = (comm.clone(), self.queue.clone());
        let subscriber = runner
            .thread()
            .run_threadsafe(async move {
                subscribing
                    .add_task_subscriber(&queue, handler, options)
                    .await
            })
            .wait()??;
        let unsubscribe = Box::pin(async move {
            if let Err(error) = comm.remove_task_subscriber(subscriber).await {
                tracing::debug!(%error, "a launcher's subscription was gone already");
            }
        });
        Ok(Launcher {
            queue: self.queue,
            subscriber,
            unsubscribe: Mutex::new(Some(unsubscribe)),
            runtime: runner.thread().handle()?,
            in_hand,
        })
    }
}

impl Launcher {
    /// The queue it takes tasks from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Completes when every task the launcher has taken has its final answer (or was given
    /// back). A `continue` is answered when its process ends, so this waits for the
    /// processes: after [`Runner::close`], which ends or stops every one, it comes promptly.
    /// A worker that stops waits for it before it closes its communicator (which lets the
    /// answers on their way out go first), so that no process that ended is left unanswered.
    pub fn until_answered(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let in_hand = self.in_hand.clone();
        // Closed only so that `wait` can end: tokens are still handed out after it.
        in_hand.close();
        async move { in_hand.wait().await }
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // Tasks in hand go back to the queue with the subscription.
        if let Some(unsubscribe) = self.unsubscribe.get_mut().take() {
            self.runtime.spawn(unsubscribe);
        }
    }
}

/// What the launcher's task subscriber holds.
struct Serving<C> {
    runner: Runner,
    comm: C,
    types: HashMap<String, ProcessType>,
}

impl<C: Communicator> Serving<C> {
    async fn take(self: Arc<Self>, body: Value) -> Response {
        let task = match LauncherTask::from_message(&body) {
            Ok(task) => task,
            Err(WireError::UnknownTask { task }) => {
                tracing::debug!(%task, "a launcher task of an unknown type was rejected");
                return Response::Rejected;
            }
            Err(error) => return Response::Failed(error.to_string()),
        };
        let has_store = self.runner.persister().is_some();
        match task {
            LauncherTask::Launch { persist, .. } | LauncherTask::Create { persist, .. }
                if persist && !has_store =>
            {
                Response::Rejected
            }
            LauncherTask::Continue { .. } if !has_store => Response::Rejected,
            LauncherTask::Launch {
                process_class,
                persist,
                nowait,
                init_args,
                init_kwargs,
            } => self.launch(&process_class, init_args, init_kwargs, persist, nowait),
            LauncherTask::Create {
                process_class,
                persist,
                init_args,
                init_kwargs,
            } => {
                self.create(&process_class, init_args, init_kwargs, persist)
                    .await
            }
            LauncherTask::Continue { pid, nowait, tag } => self.resume(pid, nowait, tag),
        }
    }

    fn launch(
        &self,
        process_class: &str,
        init_args: Vec<Value>,
        init_kwargs: Map<String, Value>,
        persist: bool,
        nowait: bool,
    ) -> Response {
        let started = self.kind(process_class).and_then(|kind| {
            let inputs = inputs_of(init_args, init_kwargs)?;
            (kind.launch)(&self.runner, inputs, persist).map_err(|e| e.to_string())
        });
        match started {
            Ok(handle) => answer_when(handle, nowait, &self.runner),
            Err(message) => Response::Failed(message),
        }
    }

    async fn create(
        &self,
        process_class: &str,
        init_args: Vec<Value>,
        init_kwargs: Map<String, Value>,
        persist: bool,
    ) -> Response {
        if !persist {
            return Response::Failed(format!(
                "a create task without persist makes a {process_class} that nothing can continue; \
                 send persist: true"
            ));
        }
        let created = self.kind(process_class).and_then(|kind| {
            let inputs = inputs_of(init_args, init_kwargs)?;
            (kind.create)(&self.runner, inputs).map_err(|e| e.to_string())
        });
        let pid = match created {
            Ok(pid) => pid,
            Err(message) => return Response::Failed(message),
        };
        // Its first state, announced here since it does not run here.
        let created = Broadcast::new(Value::Null)
            .sender(pid.to_string())
            .subject(state_changed_subject(None, ProcessState::Created));
        if let Err(error) = self.comm.broadcast_send(created).await {
            tracing::warn!(%pid, %error, "a state broadcast could not be sent");
        }
        Response::Value(uuid_value(pid))
    }

    /// A `continue` task (`continue` is a keyword).
    fn resume(&self, pid: Uuid, nowait: bool, tag: Option<String>) -> Response {
        if let Some(tag) = tag {
            return Response::Failed(format!(
                "cannot continue {pid} from the checkpoint tagged {tag:?}: the store keeps one \
                 checkpoint per process; send no tag"
            ));
        }
        match self.runner.load(pid) {
            Ok(handle) => answer_when(handle, nowait, &self.runner),
            // Already here (a redelivered task, or a second controller): answer as that run
            // does, without running it twice.
            Err(EngineError::AlreadyRunning { .. }) if nowait => Response::Value(uuid_value(pid)),
            Err(EngineError::AlreadyRunning { .. }) => match self.runner.running(pid) {
                Some(running) => {
                    Response::later(async move { outcome_answer(Ok(running.until_ended().await)) })
                }
                // Ended in the meantime: its outcome went to the handle that ran it.
                None => Response::Failed(format!(
                    "process {pid} ended just as it was continued again; its outcome went to \
                     the first continue"
                )),
            },
            // Another worker holds it: it runs there (a task delivered twice). Wait until it is
            // free, then answer as a continue does: the worker that held it may have stopped.
            Err(EngineError::Persist(PersistError::Held { ends_in, .. })) => {
                let runner = self.runner.clone();
                Response::later(continue_when_free(runner, pid, nowait, ends_in))
            }
            Err(error) => not_loaded(pid, error),
        }
    }

    fn kind(&self, process_class: &str) -> Result<ProcessType, String> {
        self.types.get(process_class).copied().ok_or_else(|| {
            let mut known: Vec<&str> = self.types.keys().map(String::as_str).collect();
            known.sort_unstable();
            format!(
                "no process type {process_class:?} is registered with this worker's launcher \
                 (it knows {known:?})"
            )
        })
    }
}

/// How often a `continue` of a process held elsewhere tries again, at most: a lease gives no
/// signal when it is released, so this polls (leases end on their own after their owner stops
/// renewing them, and are released when their process ends or stops).
const HELD_RETRY: Duration = Duration::from_millis(250);

/// Continues `pid` once no other worker holds it; gives the task back if this runner closes
/// first.
async fn continue_when_free(
    runner: Runner,
    pid: Uuid,
    nowait: bool,
    ends_in: Duration,
) -> Response {
    let mut wait = ends_in.min(HELD_RETRY);
    loop {
        tokio::select! {
            biased;
            () = runner.closing() => return Response::Rejected,
            () = tokio::time::sleep(wait) => {}
        }
        match runner.load(pid) {
            Ok(handle) => return answer_when(handle, nowait, &runner),
            Err(EngineError::Persist(PersistError::Held { ends_in, .. })) => {
                wait = ends_in.min(HELD_RETRY);
            }
            Err(EngineError::AlreadyRunning { .. }) => {
                return Response::Failed(format!(
                    "process {pid} was continued here by another task meanwhile"
                ));
            }
            Err(error) => return not_loaded(pid, error),
        }
    }
}

/// The answer to a `continue` whose process could not be loaded (for a reason other than its
/// running here or elsewhere already).
fn not_loaded(pid: Uuid, error: EngineError) -> Response {
    match error {
        EngineError::Persist(PersistError::NotFound { .. }) => Response::Failed(format!(
            "no checkpoint for process {pid}: it never existed, or it ended and its outcome went \
             to an earlier continue of it (if the worker that ran it died just after handing it \
             over, that answer was lost with it)"
        )),
        // The store is out of reach for now: another worker, or this one later, continues it.
        EngineError::Persist(error) if error.is_transient() => Response::Rejected,
        error => Response::Failed(error.to_string()),
    }
}

/// How long an answered outcome stays in the store before it is handed over (its checkpoint
/// deleted). A worker that dies between its answer and the task's acknowledgement (a
/// millisecond or so) leaves the task to be delivered again, and the continue that takes it
/// then finds the outcome and answers with it, rather than finding nothing. A worker that dies
/// within this time of an answer leaves that outcome in the store: a finished process that
/// the store lists and that any `continue` answers. No signal says when an acknowledgement
/// has reached the broker, so this is a time, chosen well above the millisecond.
const KEEP_ANSWERED: Duration = Duration::from_millis(100);

/// The answer to a started process: its pid once it has started (so that it is reachable, if
/// the runner listens), or its outputs when it ends. Either goes out only once the store has
/// kept what it says (the first checkpoint; the outcome), so that whoever acts on the answer,
/// or continues the process elsewhere, finds the store agreeing with it.
fn answer_when(handle: ProcessHandle, nowait: bool, runner: &Runner) -> Response {
    let store = runner.persister().cloned();
    if nowait {
        let process = handle.controller();
        return Response::later(async move {
            process.until_started().await;
            // Stopped here before it could start (the runner is closing): give the task back
            // rather than answer the pid of a process that nothing runs.
            if process.was_abandoned() || !kept(store).await {
                return Response::Rejected;
            }
            Response::Value(uuid_value(process.pid()))
        });
    }
    let runner = runner.clone();
    Response::later(async move {
        let process = handle.controller();
        // Not the handle: it would hand the outcome over (delete it) before the answer is out.
        let outcome = process.until_ended().await;
        // The runner stopped under it: give the task back, for another worker to continue.
        if process.was_abandoned() || !kept(store).await {
            tracing::info!(pid = %process.pid(), "a launcher task could not finish here; given back");
            return Response::Rejected;
        }
        hand_over_later(&runner, handle);
        outcome_answer(Ok(outcome))
    })
}

/// Hands an answered outcome over after [`KEEP_ANSWERED`], or as soon as the runner closes.
fn hand_over_later(runner: &Runner, handle: ProcessHandle) {
    let closing = runner.closing();
    let handing = async move {
        tokio::select! {
            () = tokio::time::sleep(KEEP_ANSWERED) => {}
            () = closing => {}
        }
        // Answered already: this only deletes its checkpoint.
        drop(handle.await);
    };
    if runner.thread().spawn_threadsafe(handing).is_err() {
        tracing::debug!("the runner has stopped: an answered outcome stays in the store");
    }
}

/// Waits until the store has kept every change made so far; false if it could not (the task
/// is then given back, and the process continued again from what the store holds).
async fn kept(store: Option<Arc<dyn Persister>>) -> bool {
    let Some(store) = store else {
        return true;
    };
    match store.until_flushed().await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "the store did not keep a process's changes; its task is given back");
            false
        }
    }
}

/// plumpy's answer for an ended process: the outputs of a finished one (whatever its exit
/// code), an error for an excepted or killed one.
fn outcome_answer(outcome: Result<ProcessOutcome, EngineError>) -> Response {
    match outcome {
        Ok(ProcessOutcome::Finished { outputs, .. }) => {
            Response::Value(Value::Object(outputs.into_iter().collect()))
        }
        Ok(ProcessOutcome::Excepted { message, .. }) => Response::Failed(message),
        Ok(ProcessOutcome::Killed { message }) => {
            Response::Failed(EngineError::Killed { message }.to_string())
        }
        // The runner stopped under it: give the task back, for another worker to continue.
        Err(error) => {
            tracing::info!(%error, "a launcher task could not finish here; given back");
            Response::Rejected
        }
    }
}

/// A process's inputs from plumpy's constructor arguments: the keyword `inputs`, or the one
/// positional argument.
fn inputs_of(init_args: Vec<Value>, mut init_kwargs: Map<String, Value>) -> Result<Value, String> {
    let keyword = init_kwargs.remove("inputs");
    if !init_kwargs.is_empty() {
        let names: Vec<&String> = init_kwargs.keys().collect();
        return Err(format!(
            "a Rust process takes only its inputs, not the constructor arguments {names:?}"
        ));
    }
    match (keyword, init_args.len()) {
        (Some(inputs), 0) => Ok(inputs),
        (None, 0) => Ok(Value::Object(Map::new())),
        (None, 1) => Ok(init_args.into_iter().next().unwrap_or(Value::Null)),
        _ => Err(
            "a Rust process takes its inputs once, as `inputs` or as the one positional argument"
                .to_owned(),
        ),
    }
}

impl fmt::Debug for Launcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Launcher")
            .field("queue", &self.queue)
            .field("subscriber", &self.subscriber)
            .finish()
    }
}

impl fmt::Debug for LauncherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<&String> = self.types.keys().collect();
        types.sort_unstable();
        f.debug_struct("LauncherBuilder")
            .field("types", &types)
            .field("queue", &self.queue)
            .field("slots", &self.slots)
            .finish()
    }
}
