//! Launching processes: [`Launch`], the one way to start a process with options (persisted,
//! listeners, from inputs), and the launch methods of [`Runner`] and [`StepContext`] (a step
//! launches children through the runner that runs it).

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::error::EngineError;
use super::handle::ProcessHandle;
use super::listener::ProcessListener;
use super::outcome::Outputs;
use super::process::StepContext;
use super::process::{Persistent, Process};
use super::runner::{Runner, build_from_inputs};
use super::runner_core::Core;
use super::workchain::{Chain, WorkChain};

/// How a persisted launch starts its process: chosen by [`Launch::persisted`], the one place
/// that knows `P: Persistent`.
type StartPersisted<P> = fn(
    &Core,
    P,
    Option<Value>,
    Vec<Arc<dyn ProcessListener>>,
) -> Result<ProcessHandle, EngineError>;

/// A process about to start, with its options; made by [`Runner::launch`],
/// [`Runner::launch_from_inputs`] or [`Runner::launch_chain_from_inputs`], started by
/// [`start`](Launch::start) (or [`run`](Launch::run)).
///
/// ```
/// use std::sync::Arc;
/// use runtime_thread::engine::{
///     Command, InMemoryPersister, StepContext, Persistent, Process, Runner, StepError,
/// };
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Double { x: i64 }
///
/// impl Process for Double {
///     async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
///         ctx.out("y", (2 * self.x).into());
///         Ok(Command::finish())
///     }
/// }
///
/// impl Persistent for Double {
///     const TYPE_NAME: &'static str = "doc.Double";
/// }
///
/// let runner = Runner::builder().persister(Arc::new(InMemoryPersister::new())).start()?;
/// // Built from inputs, checked against the (default) spec, and checkpointed as it runs.
/// let handle = runner
///     .launch_from_inputs::<Double>(serde_json::json!({ "x": 21 }))
///     .persisted()
///     .start()?;
/// assert_eq!(handle.status().process, "doc.Double");
/// assert_eq!(handle.wait()?.into_outputs()?["y"], 42);
/// # Ok::<(), runtime_thread::engine::EngineError>(())
/// ```
#[must_use = "a launch does nothing until `start` or `run` is called"]
pub struct Launch<'r, P> {
    runner: &'r Runner,
    /// The process and the validated inputs it was built from, or why it could not be built.
    built: Result<(P, Option<Value>), EngineError>,
    listeners: Vec<Arc<dyn ProcessListener>>,
    persisted: Option<StartPersisted<P>>,
}

impl<P> std::fmt::Debug for Launch<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("process", &std::any::type_name::<P>())
            .field("built", &self.built.as_ref().map(|_| ()))
            .field("listeners", &self.listeners.len())
            .field("persisted", &self.persisted.is_some())
            .finish()
    }
}

impl Runner {
    /// A launch of `process`, to configure ([`persisted`](Launch::persisted),
    /// [`listener`](Launch::listener)) and [`start`](Launch::start).
    pub fn launch<P: Process>(&self, process: P) -> Launch<'_, P> {
        Launch::new(self, Ok((process, None)))
    }

    /// A launch of a `P` built from `inputs`, as plumpy launches a process class with an
    /// inputs mapping: the inputs are checked against `P`'s spec (defaults filled in), `P` is
    /// deserialised from them (its fields are its inputs), and its steps see them as
    /// [`inputs`](super::StepContext::inputs). Invalid inputs make [`Launch::start`] fail
    /// before anything runs, with the full port path in the error.
    pub fn launch_from_inputs<P>(&self, inputs: Value) -> Launch<'_, P>
    where
        P: Process + DeserializeOwned,
    {
        let built = build_from_inputs::<P>(P::spec(), inputs);
        Launch::new(self, built.map(|(process, inputs)| (process, Some(inputs))))
    }

    /// [`launch_from_inputs`](Self::launch_from_inputs) for a work chain: `W` is built from
    /// the inputs checked against its spec, and starts at the top of its outline.
    pub fn launch_chain_from_inputs<W>(&self, inputs: Value) -> Launch<'_, Chain<W>>
    where
        W: WorkChain + DeserializeOwned,
    {
        let built = build_from_inputs::<W>(W::spec(), inputs);
        Launch::new(
            self,
            built.map(|(chain, inputs)| (Chain::new(chain), Some(inputs))),
        )
    }
}

impl StepContext {
    /// Launches a child process on the same runner. Either await its handle inside the step
    /// (the parent's step is simply suspended meanwhile: no nested event loop), or return
    /// [`Command::wait_for_children`](super::Command::wait_for_children) with its pid, a wait that a checkpoint can hold.
    /// Killing this process kills the child too (see [`Process::kills_children`]).
    pub fn launch<P: Process>(&mut self, child: P) -> ProcessHandle {
        let handle = self.runner().start_child(child, self.pid());
        self.shared().add_child(handle.shared().clone());
        handle
    }

    /// Launches a child that is checkpointed in the runner's persister, so that a reloaded
    /// parent finds it again (a child launched with [`launch`](Self::launch) is not saved).
    ///
    /// # Errors
    ///
    /// `EngineError::NoPersister` when the runner has no store; the store's failure to save the
    /// child's first checkpoint (the child then does not start).
    pub fn launch_persisted<P: Persistent>(
        &mut self,
        child: P,
    ) -> Result<ProcessHandle, EngineError> {
        let parent = Some(self.pid());
        let handle = self
            .runner()
            .start_persisted(child, None, parent, Vec::new())?;
        self.shared().add_child(handle.shared().clone());
        Ok(handle)
    }
}

impl<'r, P: Process> Launch<'r, P> {
    fn new(runner: &'r Runner, built: Result<(P, Option<Value>), EngineError>) -> Self {
        Launch {
            runner,
            built,
            listeners: Vec::new(),
            persisted: None,
        }
    }

    /// Attaches `listener` before the process starts, so that it sees every state from
    /// `Created` on. May be called more than once.
    pub fn listener(mut self, listener: Arc<dyn ProcessListener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Checkpoints the process: it is saved before it starts and at every state it enters, and
    /// its type is registered for loading (see the [module docs](super)).
    pub fn persisted(mut self) -> Self
    where
        P: Persistent,
    {
        self.persisted = Some(|core, process, inputs, listeners| {
            core.start_persisted(process, inputs, None, listeners)
        });
        self
    }

    /// Starts the process and returns its handle.
    ///
    /// # Errors
    ///
    /// - `EngineError::InvalidInputs` when the inputs it was to be built from do not fit its
    ///   spec or its fields;
    /// - for a persisted launch, `EngineError::NoPersister` on a runner without a store, and
    ///   the store's failure to save the first checkpoint (the process then does not start).
    pub fn start(self) -> Result<ProcessHandle, EngineError> {
        let (process, inputs) = self.built?;
        let core = self.runner.core();
        match self.persisted {
            Some(start_persisted) => start_persisted(core, process, inputs, self.listeners),
            None => Ok(core.start_fresh(process, inputs, None, self.listeners)),
        }
    }

    /// Saves the process's first checkpoint, in state `Created`, without running it, and
    /// returns its pid: a [`Runner::load`] of that pid, in this program or another one that
    /// shares the store, runs it (plumpy's `create` then `continue`, which lets a process
    /// outlive the program that made it). The process is not shown to the runner's watcher
    /// and hears no listener (nothing runs here); the loading runner's watcher sees it.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use runtime_thread::engine::{
    ///     Command, InMemoryPersister, Persistent, Process, ProcessState, Runner, StepContext,
    ///     StepError,
    /// };
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Hello;
    /// impl Process for Hello {
    ///     async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
    ///         ctx.out("greeting", "hello".into());
    ///         Ok(Command::finish())
    ///     }
    /// }
    /// impl Persistent for Hello {
    ///     const TYPE_NAME: &'static str = "doc.Hello";
    /// }
    ///
    /// let runner = Runner::builder().persister(Arc::new(InMemoryPersister::new())).start()?;
    /// let pid = runner.launch(Hello).create()?;
    /// assert_eq!(runner.persister().unwrap().load(pid)?.state, ProcessState::Created);
    /// assert_eq!(runner.load(pid)?.wait()?.into_outputs()?["greeting"], "hello");
    /// # Ok::<(), runtime_thread::engine::EngineError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// `EngineError::InvalidInputs` as for [`start`](Self::start); `EngineError::NoPersister`
    /// on a runner without a store; the store's failure to save.
    ///
    /// [`Runner::load`]: super::Runner::load
    pub fn create(self) -> Result<Uuid, EngineError>
    where
        P: Persistent,
    {
        let (process, inputs) = self.built?;
        self.runner.core().create_saved(process, inputs)
    }

    /// Starts the process and waits for its outputs, from synchronous code.
    ///
    /// # Errors
    ///
    /// Those of [`start`](Self::start), then those of [`ProcessOutcome::into_outputs`]
    /// (a failure exit code, an exception, a kill) and of waiting (the thread stopped).
    ///
    /// [`ProcessOutcome::into_outputs`]: super::ProcessOutcome::into_outputs
    pub fn run(self) -> Result<Outputs, EngineError> {
        self.start()?.wait()?.into_outputs()
    }
}
