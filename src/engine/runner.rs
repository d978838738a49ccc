//! [`Runner`]: runs processes on a [`RuntimeThread`], and saves and reloads persisted ones.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::checkpoint::{Checkpoint, Position, Resumed, SavedWait, encode};
use super::driver::{Saver, Start, checkpoint_of, drive};
use super::error::EngineError;
use super::error::PersistError;
use super::handle::{ProcessController, ProcessHandle};
use super::listener::ProcessListener;
use super::outcome::Outputs;
use super::persist::Persister;
use super::process::{Persistent, Process, StepContext};
use super::runner_core::{Core, Gate, Hook, Prepared};
use super::shared::{Identity, ProcessShared, Restored};
use super::spec::{PortError, ProcessSpec};
use super::state::ProcessState;
use super::watcher::ProcessWatcher;
use crate::thread::RuntimeThread;

/// Runs processes on a runtime thread: thousands at once, each a task that only occupies the
/// thread while a step runs. With a [`Persister`] it also checkpoints the processes launched
/// [`persisted`](super::Launch::persisted) and continues them with [`load`](Runner::load) /
/// [`load_all`](Runner::load_all), in this program or a later one.
///
/// There are two ways to start a process: [`submit`](Runner::submit) (or
/// [`run`](Runner::run), which also waits) for a process value with nothing else to set, and
/// [`launch`](Runner::launch) / [`launch_from_inputs`](Runner::launch_from_inputs) /
/// [`launch_chain_from_inputs`](Runner::launch_chain_from_inputs) for a [`Launch`](super::Launch) to
/// configure: persisted, with listeners.
///
/// # Lifetime
///
/// A runner made with [`start`](Runner::start) owns its thread: when the last clone of it is
/// dropped, the thread stops at once, without a grace period. Its processes are abandoned
/// (their handles report `Error::Stopped`), as in a crash: persisted ones keep their last
/// checkpoint, to be loaded again. A runner on a thread of yours
/// ([`RunnerBuilder::thread`]) leaves the thread to you: its processes run on until that
/// thread stops. The processes themselves never keep a thread alive.
#[derive(Clone)]
pub struct Runner {
    core: Core,
    hold: Arc<Hold>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("thread", &self.hold.thread)
            .field("owns_thread", &self.hold.owns_thread)
            .field("persisted", &self.core.persister().is_some())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Runner`]; made by [`Runner::builder`].
#[derive(Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RunnerBuilder {
    thread: Option<Arc<RuntimeThread>>,
    persister: Option<Arc<dyn Persister>>,
    watcher: Option<Arc<dyn ProcessWatcher>>,
}

impl std::fmt::Debug for RunnerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerBuilder")
            .field("thread", &self.thread)
            .field("persister", &self.persister.is_some())
            .field("watcher", &self.watcher.is_some())
            .finish()
    }
}

impl RunnerBuilder {
    /// Runs the processes on `thread`, which stays the caller's to stop: the runner does not
    /// stop it. Without this the runner starts a thread of its own, named `engine`, and stops
    /// it with its last clone (see [Lifetime](Runner#lifetime)).
    pub fn thread(mut self, thread: Arc<RuntimeThread>) -> Self {
        self.thread = Some(thread);
        self
    }

    /// Checkpoints persisted processes into `persister`, and loads them from it.
    pub fn persister(mut self, persister: Arc<dyn Persister>) -> Self {
        self.persister = Some(persister);
        self
    }

    /// Shows every process the runner starts or loads (children included) to `watcher`
    /// before its first step: how the control layer makes processes reachable over messaging.
    pub fn watcher(mut self, watcher: Arc<dyn ProcessWatcher>) -> Self {
        self.watcher = Some(watcher);
        self
    }

    /// Makes the runner, starting its own thread unless one was given.
    ///
    /// # Errors
    ///
    /// `EngineError::Thread` when the runner's own thread could not be started.
    pub fn start(self) -> Result<Runner, EngineError> {
        let hook = self.watcher.map(|watcher| -> Hook {
            Arc::new(move |shared: &Arc<ProcessShared>| {
                let controller = ProcessController::new(shared.clone());
                let watch = watcher.on_process(&controller);
                if let Some(listener) = watch.listener {
                    shared.attach(listener);
                }
                watch.hold
            })
        });
        Ok(match self.thread {
            Some(thread) => Runner::build(thread, self.persister, hook, false),
            None => {
                let thread = RuntimeThread::builder().name("engine").start()?;
                Runner::build(Arc::new(thread), self.persister, hook, true)
            }
        })
    }
}

/// What only the user's runners hold: the thread, and whether to stop it with the last one.
struct Hold {
    thread: Arc<RuntimeThread>,
    owns_thread: bool,
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.owns_thread {
            // On the runtime thread itself this only requests the stop, which is all it can do.
            let _ = self.thread.stop_with_grace(Duration::ZERO);
        }
    }
}

impl Runner {
    /// The engine behind this runner, which launches are started on.
    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// A runner on a runtime thread of its own, without a checkpoint store: the shorthand of
    /// `Runner::builder().start()`. The thread stops when the last clone of the runner is
    /// dropped (see [Lifetime](Runner#lifetime)).
    ///
    /// # Errors
    ///
    /// The thread could not be started (`EngineError::Thread`).
    pub fn start() -> Result<Self, EngineError> {
        Runner::builder().start()
    }

    /// Configures a runner: the thread it runs on and the store it checkpoints into.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use runtime_thread::RuntimeThread;
    /// use runtime_thread::engine::{InMemoryPersister, Runner};
    ///
    /// let thread = Arc::new(RuntimeThread::builder().name("engine").start()?);
    /// let runner = Runner::builder()
    ///     .thread(thread.clone())
    ///     .persister(Arc::new(InMemoryPersister::new()))
    ///     .start()?;
    /// assert!(runner.persister().is_some());
    /// # Ok::<(), runtime_thread::engine::EngineError>(())
    /// ```
    pub fn builder() -> RunnerBuilder {
        RunnerBuilder::default()
    }

    fn build(
        thread: Arc<RuntimeThread>,
        persister: Option<Arc<dyn Persister>>,
        hook: Option<Hook>,
        owns_thread: bool,
    ) -> Self {
        let core = Core::new(&thread, persister, hook);
        Runner {
            core,
            hold: Arc::new(Hold {
                thread,
                owns_thread,
            }),
        }
    }

    /// The runtime thread the processes run on.
    pub fn thread(&self) -> &RuntimeThread {
        &self.hold.thread
    }

    /// The checkpoint store, if the runner has one.
    pub fn persister(&self) -> Option<&Arc<dyn Persister>> {
        self.core.persister()
    }

    /// Starts `process`, not persisted and without listeners, and returns its handle: the
    /// shorthand of `launch(process).start()`, which cannot fail in that case.
    pub fn submit<P: Process>(&self, process: P) -> ProcessHandle {
        self.core.start_fresh(process, None, None, Vec::new())
    }

    /// Runs `process` to the end from synchronous code and returns its outputs; a failure exit
    /// code, an exception or a kill comes back as an error. Inside a step, launch a child with
    /// [`StepContext::launch`] and await it instead.
    ///
    /// # Errors
    ///
    /// A failure exit code, an exception or a kill (see
    /// [`ProcessOutcome::into_outputs`](super::ProcessOutcome::into_outputs)), and the errors of
    /// [`ProcessHandle::wait`].
    pub fn run<P: Process>(&self, process: P) -> Result<Outputs, EngineError> {
        self.submit(process).wait()?.into_outputs()
    }

    /// Registers `P` under [`Persistent::TYPE_NAME`], so that its checkpoints can be loaded.
    /// Launching a persisted `P` registers it too; register before loading in a new program.
    pub fn register<P: Persistent>(&self) {
        self.core.register::<P>();
    }

    /// Starts every process of `processes` persisted, as
    /// [`Launch::persisted`](super::Launch::persisted) does, after saving their first
    /// checkpoints as one: a crash during the submission leaves all of them in the store or
    /// none, with a store that saves in one transaction (the SQLite and in-memory ones; see
    /// [`Persister::save_all`]).
    ///
    /// # Errors
    ///
    /// `EngineError::NoPersister` on a runner without a store; the store's failure to save
    /// the batch, in which case none of the processes starts.
    pub fn submit_persisted_all<P: Persistent>(
        &self,
        processes: impl IntoIterator<Item = P>,
    ) -> Result<Vec<ProcessHandle>, EngineError> {
        self.core.start_persisted_all(processes)
    }

    /// Continues the process saved under `pid` (and the children it waits for) from its
    /// checkpoint. The step that was running when the checkpoint was taken runs again.
    ///
    /// # Errors
    ///
    /// `EngineError::NoPersister` without a store; `AlreadyRunning` for a process that runs in this
    /// runner already; `Persist(NotFound)` for a pid the store does not hold; `UnknownProcessType`
    /// for a type that was not [`register`](Self::register)ed; `Checkpoint` for a checkpoint that
    /// does not decode or contradicts itself; the store's failure.
    pub fn load(&self, pid: Uuid) -> Result<ProcessHandle, EngineError> {
        self.core.load(pid)
    }

    /// The controller of the persisted process `pid` if it runs in this runner now (loaded
    /// or launched persisted, and not ended): what a second [`load`](Self::load) of it, refused
    /// with `AlreadyRunning`, can wait on instead.
    pub fn running(&self, pid: Uuid) -> Option<ProcessController> {
        self.core.running(pid).map(ProcessController::new)
    }

    /// Continues every saved process not already running in this runner, and returns the
    /// handles of the top-level ones (their children run too, and are reached through
    /// [`children`](super::ProcessController::children)). A top-level process that had ended
    /// comes back as a finished handle with its outcome: see [Outcomes of persisted
    /// processes](ProcessHandle#outcomes-of-persisted-processes). Every checkpoint is read and
    /// decoded before any process starts, so a corrupt or unknown one stops the load with an
    /// error naming it and nothing half-loaded is left running.
    ///
    /// # Errors
    ///
    /// As [`load`](Self::load), for the first checkpoint that fails; nothing has started then.
    pub fn load_all(&self) -> Result<Vec<ProcessHandle>, EngineError> {
        let handles = self.core.load_all()?;
        Ok(handles
            .into_iter()
            .filter(|handle| handle.shared().identity.parent.is_none())
            .collect())
    }

    /// Deletes the checkpoint of an ended process whose outcome was not handed over through
    /// a handle (the handle was dropped unread, or the outcome was read and kept elsewhere).
    /// A pid the store does not hold is not an error.
    ///
    /// # Errors
    ///
    /// `EngineError::InvalidState` for a process that has not ended (kill it, or let it end,
    /// first); the store's failure.
    pub fn forget(&self, pid: Uuid) -> Result<(), EngineError> {
        self.core.forget(pid)
    }

    /// Stops the runner's processes for another runner to continue them, as a worker does on
    /// SIGTERM: a step that is running finishes (within `grace`), and then its process stops
    /// at that step boundary instead of taking the next step; a waiting or paused process
    /// stops at once. Each stops where its last checkpoint is (a step about to run is saved
    /// first), so a runner elsewhere continues it from there. Their handles report
    /// `Error::Stopped`, as after a crash, and listeners hear
    /// [`on_abandoned`](super::ProcessListener::on_abandoned), not a kill. Processes started
    /// after the close stop before their first step.
    ///
    /// Returns how many processes were still in a step when `grace` ran out (0: all stopped
    /// in time); they are dropped when the runner's thread stops, and their steps run again
    /// wherever they are continued. Closing is final for the runner and idempotent.
    ///
    /// ```
    /// use std::time::Duration;
    /// use runtime_thread::engine::{Command, Process, Runner, StepContext, StepError};
    ///
    /// struct Nap;
    /// impl Process for Nap {
    ///     async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
    ///         Ok(Command::sleep("never", Duration::from_secs(3600)))
    ///     }
    /// }
    ///
    /// let runner = Runner::start()?;
    /// let nap = runner.submit(Nap);
    /// nap.controller().wait_for_state(
    ///     runtime_thread::engine::ProcessState::Waiting,
    ///     Duration::from_secs(5),
    /// );
    /// assert_eq!(runner.close(Duration::from_secs(5))?, 0);
    /// assert!(nap.wait().is_err()); // stopped, not ended
    /// # Ok::<(), runtime_thread::engine::EngineError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EngineError::Thread` when called on the runner's own thread (it would wait on
    /// itself: the close is asked for anyway) or after the thread stopped.
    pub fn close(&self, grace: Duration) -> Result<usize, EngineError> {
        self.core.close();
        let core = self.core.clone();
        let stopped = self.thread().run_threadsafe(async move {
            let _ = tokio::time::timeout(grace, core.until_no_drivers()).await;
            core.drivers()
        });
        Ok(stopped.wait()?)
    }

    /// Whether [`close`](Self::close) has been asked for.
    pub fn is_closing(&self) -> bool {
        self.core.is_closing()
    }

    /// Completes when [`close`](Self::close) is asked for (at once if it was).
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let core = self.core.clone();
        async move { core.closing().await }
    }
}

impl Core {
    /// See [`Runner::register`].
    pub(crate) fn register<P: Persistent>(&self) {
        self.register_loader(P::TYPE_NAME, prepare::<P>);
    }

    /// See [`Runner::load`].
    fn load(&self, pid: Uuid) -> Result<ProcessHandle, EngineError> {
        if self.running(pid).is_some() {
            return Err(EngineError::AlreadyRunning { pid });
        }
        self.load_tree(vec![pid])?
            .into_iter()
            .find(|handle| handle.pid() == pid)
            .ok_or(EngineError::Persist(PersistError::NotFound { pid }))
    }

    /// See [`Runner::forget`].
    fn forget(&self, pid: Uuid) -> Result<(), EngineError> {
        let store = self.store()?;
        let checkpoint = match store.load(pid) {
            Ok(checkpoint) => checkpoint,
            Err(PersistError::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if !checkpoint.state.is_terminal() {
            return Err(EngineError::InvalidState {
                state: checkpoint.state,
                action: "be forgotten (only an ended process can)",
            });
        }
        if let Some(live) = self.live(pid) {
            live.hand_over();
        }
        Ok(store.delete(pid)?)
    }

    /// See [`Runner::load_all`]. In a store with leases, the processes that other programs
    /// hold are left to them.
    fn load_all(&self) -> Result<Vec<ProcessHandle>, EngineError> {
        let pids = self.store()?.list()?;
        self.load_tree_of(pids, true)
    }

    fn load_tree(&self, roots: Vec<Uuid>) -> Result<Vec<ProcessHandle>, EngineError> {
        self.load_tree_of(roots, false)
    }

    fn load_tree_of(
        &self,
        roots: Vec<Uuid>,
        skip_held: bool,
    ) -> Result<Vec<ProcessHandle>, EngineError> {
        let store = self.store()?;
        // The leases taken by this load, given back if it fails.
        let mut taken = Vec::new();
        let prepared = self
            .prepare_tree(store.as_ref(), roots, skip_held, &mut taken)
            .and_then(|prepared| self.discard_orphans(prepared, store.as_ref()));
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                for pid in taken {
                    store.release(pid);
                }
                return Err(error);
            }
        };
        let loaded: HashMap<Uuid, Arc<ProcessShared>> = prepared
            .iter()
            .map(|p| (p.shared.identity.pid, p.shared.clone()))
            .collect();
        let mut handles = Vec::with_capacity(prepared.len());
        for process in prepared {
            let children = process
                .children
                .iter()
                .filter_map(|pid| loaded.get(pid).cloned().or_else(|| self.live(*pid)))
                .collect();
            self.track(&process.shared);
            handles.push(ProcessHandle::new(process.shared.clone(), self.clone()));
            (process.start)(self, store.clone(), children);
        }
        Ok(handles)
    }

    /// Reads the checkpoints of `roots` and of their children, children first taken (the
    /// leases it takes are added to `taken`), and prepares their processes.
    fn prepare_tree(
        &self,
        store: &dyn Persister,
        roots: Vec<Uuid>,
        skip_held: bool,
        taken: &mut Vec<Uuid>,
    ) -> Result<Vec<Prepared>, EngineError> {
        let root_set: HashSet<Uuid> = roots.iter().copied().collect();
        let mut seen = HashSet::new();
        let mut queue = roots;
        let mut prepared = Vec::new();
        while let Some(pid) = queue.pop() {
            if !seen.insert(pid) || self.running(pid).is_some() {
                continue;
            }
            // Taken before the checkpoint is read, so that it is the last one its previous
            // holder could write.
            match store.acquire(pid) {
                Ok(()) => taken.push(pid),
                Err(PersistError::Held { .. }) if skip_held && root_set.contains(&pid) => continue,
                Err(error) => return Err(error.into()),
            }
            let checkpoint = match store.load(pid) {
                Ok(checkpoint) => checkpoint,
                // A child that was never saved (or is gone) only matters if the parent waits
                // for it; the parent then fails with an error naming the child.
                Err(PersistError::NotFound { .. }) if !root_set.contains(&pid) => {
                    store.release(pid);
                    continue;
                }
                Err(error) => return Err(error.into()),
            };
            let loader = self.loader(&checkpoint.type_name).ok_or_else(|| {
                EngineError::UnknownProcessType {
                    type_name: checkpoint.type_name.clone(),
                    pid,
                }
            })?;
            let process = loader(checkpoint)?;
            queue.extend(process.children.iter().copied());
            prepared.push(process);
        }
        Ok(prepared)
    }

    /// Drops (and deletes) children that their parent does not know: a child launched by a
    /// step that a crash interrupted, before the parent's next checkpoint. That step runs
    /// again on reload and launches the child anew, so the old copy must not run as well.
    fn discard_orphans(
        &self,
        prepared: Vec<Prepared>,
        store: &dyn Persister,
    ) -> Result<Vec<Prepared>, EngineError> {
        let loaded: HashSet<Uuid> = prepared.iter().map(|p| p.shared.identity.pid).collect();
        let listed: HashSet<Uuid> = prepared
            .iter()
            .flat_map(|p| p.children.iter().copied())
            .collect();
        let mut kept = Vec::with_capacity(prepared.len());
        for process in prepared {
            let pid = process.shared.identity.pid;
            let orphan = match process.shared.identity.parent {
                None => false,
                Some(parent) if loaded.contains(&parent) => !listed.contains(&pid),
                Some(parent) => match self.live(parent) {
                    Some(parent) => parent.child(pid).is_none(),
                    None => matches!(store.load(parent), Err(PersistError::NotFound { .. })),
                },
            };
            if orphan {
                tracing::info!(%pid, "discarding a child launched by an interrupted step");
                store.delete(pid)?;
                store.release(pid);
            } else {
                kept.push(process);
            }
        }
        Ok(kept)
    }

    pub(crate) fn start_child<P: Process>(&self, child: P, parent: Uuid) -> ProcessHandle {
        self.start_fresh(child, None, Some(parent), Vec::new())
    }

    pub(crate) fn start_fresh<P: Process>(
        &self,
        process: P,
        inputs: Option<Value>,
        parent: Option<Uuid>,
        listeners: Vec<Arc<dyn ProcessListener>>,
    ) -> ProcessHandle {
        let identity = Identity::new(P::name(), parent, false);
        let shared = Arc::new(ProcessShared::new(identity, Restored::FRESH, listeners));
        let hold = self.watch(&shared);
        let ctx = StepContext::new(shared, self.clone(), P::spec(), inputs);
        let first = process.first_step().to_owned();
        self.spawn(process, ctx, Start::Step(first), None, hold)
    }

    pub(crate) fn start_persisted<P: Persistent>(
        &self,
        process: P,
        inputs: Option<Value>,
        parent: Option<Uuid>,
        listeners: Vec<Arc<dyn ProcessListener>>,
    ) -> Result<ProcessHandle, EngineError> {
        let created = self.create_persisted(process, inputs, parent, listeners)?;
        // Saved before anything runs, so even a crash before the first step loses nothing.
        created
            .saver
            .store
            .save_bytes(created.pid(), created.bytes.clone())?;
        Ok(self.start_created(created))
    }

    /// Starts `processes`, after saving all their first checkpoints as one (see
    /// [`Persister::save_all`]): a crash during the submission leaves all of them or none.
    pub(crate) fn start_persisted_all<P: Persistent>(
        &self,
        processes: impl IntoIterator<Item = P>,
    ) -> Result<Vec<ProcessHandle>, EngineError> {
        let created = processes
            .into_iter()
            .map(|process| self.create_persisted(process, None, None, Vec::new()))
            .collect::<Result<Vec<_>, _>>()?;
        let store = self.store()?;
        store.save_all(created.iter().map(|c| (c.pid(), c.bytes.clone())).collect())?;
        Ok(created.into_iter().map(|c| self.start_created(c)).collect())
    }

    /// A persisted process ready to start, with the bytes of its first checkpoint.
    fn create_persisted<P: Persistent>(
        &self,
        process: P,
        inputs: Option<Value>,
        parent: Option<Uuid>,
        listeners: Vec<Arc<dyn ProcessListener>>,
    ) -> Result<Created<P>, EngineError> {
        let store = self.store()?;
        self.register::<P>();
        let identity = Identity::new(P::TYPE_NAME, parent, true);
        let shared = Arc::new(ProcessShared::new(identity, Restored::FRESH, listeners));
        let ctx = StepContext::new(shared.clone(), self.clone(), P::spec(), inputs);
        let first = process.first_step().to_owned();
        let start = Start::Step(first.clone());
        let saver = saver(store, &start);
        let position = Position::Step { step: first };
        let state = ProcessState::Created;
        let bytes = saver.encode(&checkpoint_of(&shared, &ctx, state, &process, &position))?;
        Ok(Created {
            process,
            ctx,
            start,
            saver,
            bytes,
        })
    }

    /// Saves the first checkpoint of `process` and leaves it there, not started: see
    /// [`Launch::create`](super::Launch::create).
    pub(crate) fn create_saved<P: Persistent>(
        &self,
        process: P,
        inputs: Option<Value>,
    ) -> Result<Uuid, EngineError> {
        let created = self.create_persisted(process, inputs, None, Vec::new())?;
        let pid = created.pid();
        let store = created.saver.store;
        store.save_bytes(pid, created.bytes)?;
        // Not run here: whoever gets the pid may continue the process from another program,
        // so it is not held, and it is kept before the pid is handed out (a store that
        // commits later is flushed).
        store.release(pid);
        store.flush()?;
        Ok(pid)
    }

    /// Starts a created process, whose first checkpoint is saved.
    fn start_created<P: Persistent>(&self, created: Created<P>) -> ProcessHandle {
        let hold = self.watch(created.ctx.shared());
        self.track(created.ctx.shared());
        self.spawn(
            created.process,
            created.ctx,
            created.start,
            Some(created.saver),
            hold,
        )
    }

    fn spawn<P: Process>(
        &self,
        process: P,
        ctx: StepContext,
        start: Start,
        saver: Option<Saver<P>>,
        hold: Option<Gate>,
    ) -> ProcessHandle {
        let shared = ctx.shared().clone();
        // A refusal drops the driver, which marks the process abandoned: say why.
        let name = || {
            format!(
                "process {} {}",
                shared.identity.type_name, shared.identity.pid
            )
        };
        let driver = drive(process, ctx, start, saver);
        let spawned = match hold {
            None => self.spawner().spawn_job(driver, name),
            Some(hold) => self.spawner().spawn_job(
                async move {
                    hold.await;
                    driver.await;
                },
                name,
            ),
        };
        if let Err(why) = spawned {
            shared.refused(why);
        }
        ProcessHandle::new(shared, self.clone())
    }
}

/// A persisted process made but not started: what it needs to start, and its first checkpoint.
struct Created<P> {
    process: P,
    ctx: StepContext,
    start: Start,
    saver: Saver<P>,
    bytes: Vec<u8>,
}

impl<P> Created<P> {
    fn pid(&self) -> Uuid {
        self.ctx.shared().identity.pid
    }
}

/// `start` tells whether the store holds the checkpoint of the first `Running` entry already
/// (a process saved at submission, or loaded at a step, starts exactly there).
fn saver<P: Persistent>(store: Arc<dyn Persister>, start: &Start) -> Saver<P> {
    Saver {
        store,
        encode: encode::<P>,
        current: matches!(start, Start::Step(_)),
    }
}

/// Checks `inputs` against `spec` (filling in defaults) and builds a `P` from them.
pub(crate) fn build_from_inputs<P>(
    spec: &ProcessSpec,
    inputs: Value,
) -> Result<(P, Value), EngineError>
where
    P: DeserializeOwned,
{
    let mut inputs = inputs;
    spec.validate_inputs(&mut inputs)?;
    let process: P = serde_json::from_value(inputs.clone()).map_err(|e| PortError {
        path: "inputs".to_owned(),
        message: format!("cannot build {}: {e}", std::any::type_name::<P>()),
    })?;
    Ok((process, inputs))
}

/// The [`Loader`] of `P`: decodes the process and checks that the checkpoint is coherent.
fn prepare<P: Persistent>(checkpoint: Checkpoint) -> Result<Prepared, EngineError> {
    let pid = checkpoint.pid;
    let corrupt = |reason: String| EngineError::Checkpoint { pid, reason };
    let process: P = serde_json::from_value(checkpoint.process)
        .map_err(|e| corrupt(format!("the saved {} does not decode: {e}", P::TYPE_NAME)))?;
    let start = match (checkpoint.position, &checkpoint.outcome) {
        (Position::Step { step }, None) => Some(Start::Step(step)),
        (Position::Waiting { then, on }, None) => Some(Start::Wait(then, on)),
        (Position::Ended, Some(_)) => None,
        (position, outcome) => {
            return Err(corrupt(format!(
                "position {position:?} does not fit outcome {outcome:?}"
            )));
        }
    };
    if checkpoint.state.is_terminal() != start.is_none() {
        return Err(corrupt(format!(
            "state {} does not fit its position",
            checkpoint.state
        )));
    }
    let identity = Identity {
        pid,
        ctime: checkpoint.ctime,
        type_name: P::TYPE_NAME,
        parent: checkpoint.parent,
        persisted: true,
        loaded: true,
    };
    let restored = Restored {
        state: checkpoint.state,
        paused: checkpoint.paused,
        text: checkpoint.status,
        // So that a `resume` right after the load is accepted, before the driver re-arms.
        awaiting_resume: matches!(start, Some(Start::Wait(_, SavedWait::Resume { .. }))),
        outcome: checkpoint.outcome,
    };
    let shared = Arc::new(ProcessShared::new(identity, restored, Vec::new()));
    let (inputs, outputs, resumed) = (checkpoint.inputs, checkpoint.outputs, checkpoint.resumed);
    let started = shared.clone();
    Ok(Prepared {
        shared,
        children: checkpoint.children,
        start: Box::new(move |runner, store, children| {
            started.set_children(children);
            let Some(start) = start else {
                // Ended before it was saved: its shared state already holds the outcome, and
                // nothing of it runs here (its checkpoint waits to be handed over).
                store.release(started.identity.pid);
                return;
            };
            let hold = runner.watch(&started);
            let mut ctx = StepContext::new(started, runner.clone(), P::spec(), inputs);
            ctx.outputs = outputs;
            ctx.resumed = resumed.map(|value| Box::new(Resumed::Value(value)));
            let saver = saver(store, &start);
            // The handle is made by the caller, for loaded processes of every kind.
            drop(runner.spawn(process, ctx, start, Some(saver), hold));
        }),
    })
}
