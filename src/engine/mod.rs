//! The engine layer (the plumpy analogue), built on the core: processes as state machines of
//! async steps, with pause, play and kill from any thread, run by a [`Runner`] on a
//! [`RuntimeThread`](crate::RuntimeThread).
//!
//! ```text
//!            +---------+     +---------+  step returns Wait   +---------+
//!  submit -> | Created | --> | Running | -------------------> | Waiting |
//!            +---------+     +---------+ <------------------- +---------+
//!                 |            |  |  ^ Continue    resume / timer / future / children
//!                 |            |  +--+
//!                 |            | Stop(exit code)
//!                 |            v
//!                 |       +----------+   any live state: a step error -> Excepted,
//!                 +-----> | Finished |   kill (or a Kill command) -> Killed
//!                         +----------+
//! ```
//!
//! Pause is a flag, not a state.
//!
//! Names: a process's step sees a [`StepContext`]; a work chain's step sees a [`ChainContext`]
//! (the same, plus the chain's own variables, its [`ChainCtx`], which plumpy calls `ctx`).
//!
//! A process is a state machine of named async steps; each step returns a `Command`: the next step,
//! a wait (for a `resume`, a timer, a future, or children), a stop with an `ExitCode` (zero is
//! success), or a kill. A `Runner` drives thousands of processes on one `RuntimeThread`; each only
//! occupies the thread while a step runs. A step that needs a child process launches it and awaits
//! its handle: the step is suspended, nothing blocks, and no nested event loop is needed (plumpy
//! needed `nest_asyncio`, then greenlet portals, for this).
//!
//! ```rust
//! use runtime_thread::engine::{Command, StepContext, Process, Runner, StepError};
//! use serde_json::json;
//!
//! struct Square(i64);
//!
//! impl Process for Square {
//!     async fn step(&mut self, _step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
//!         ctx.out("square", json!(self.0 * self.0));
//!         Ok(Command::finish())
//!     }
//! }
//!
//! struct SumOfSquares;
//!
//! impl Process for SumOfSquares {
//!     async fn step(&mut self, _step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
//!         let mut sum = 0;
//!         for n in 1..=3 {
//!             // Run a child to completion from inside a step: just await it.
//!             let outputs = ctx.launch(Square(n)).await?.into_outputs()?;
//!             sum += outputs["square"].as_i64().unwrap_or(0);
//!         }
//!         ctx.out("sum", json!(sum));
//!         Ok(Command::finish())
//!     }
//! }
//!
//! let runner = Runner::start()?;
//! assert_eq!(runner.run(SumOfSquares)?["sum"], 14);
//! # Ok::<(), runtime_thread::engine::EngineError>(())
//! ```
//!
//! # Specs and ports
//!
//! A process type may declare `spec()`, a `ProcessSpec` of input and output
//! namespaces whose ports have types, defaults, optional flags and validators, nested (and dynamic)
//! namespaces, and ports exposed from another process's spec. `Runner::launch_from_inputs::<P>(inputs)`
//! checks JSON inputs against it, fills in defaults and builds the process from them (its fields are
//! its inputs; `launch_chain_from_inputs::<W>(inputs)` does the same for a work chain); an error
//! names the full port path, such as `inputs.ns.b: required, but not given`. Each
//! output is checked when emitted (an invalid one ends the process `Excepted`), and required outputs
//! when the process finishes successfully (a missing one turns the finish into exit code 11, AiiDA's
//! "missing output").
//!
//! # Work chains
//!
//! A `WorkChain` declares an `Outline` of named steps with `if_` / `elif_` / `else_`,
//! `while_` and `return_` / `return_code`, nested at any depth; predicates are plain functions of the
//! chain and its `ctx`, so a reloaded chain takes the same branches. A step may launch children and
//! add them with `wc.to_context(key, &child)`: the chain waits for all of them, stores each one's
//! outputs in `ctx[key]`, then goes on. A failed, excepted or killed child fails the chain with a
//! message naming it (`the child 'child1' excepted: ...`), unless `on_child_ended` is overridden to
//! tolerate it. Killing a process kills the children it launched (`kills_children` turns that off).
//! Run one with `runner.run(Chain::new(chain))`; example 13 shows one with `if_`, `while_` and a child.
//!
//! ```rust
//! use std::sync::LazyLock;
//! use runtime_thread::engine::{Chain, Flow, Outline, Runner, StepError, WorkChain, ChainContext, step, while_};
//!
//! struct Halve { n: u64, steps: u32 }
//!
//! static OUTLINE: LazyLock<Outline<Halve>> = LazyLock::new(|| Outline::new([
//!     while_("above_one", |h: &Halve, _ctx| h.n > 1, [step("halve")]),
//!     step("report"),
//! ]));
//!
//! impl WorkChain for Halve {
//!     const TYPE_NAME: &'static str = "readme.Halve";
//!     fn outline() -> &'static Outline<Self> { &OUTLINE }
//!     async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
//!         match step {
//!             "halve" => { self.n /= 2; self.steps += 1; }
//!             _ => wc.out("steps", self.steps.into()),
//!         }
//!         Ok(Flow::Next)
//!     }
//! }
//!
//! let outputs = Runner::start()?.run(Chain::new(Halve { n: 1000, steps: 0 }))?;
//! assert_eq!(outputs["steps"], 9);
//! # Ok::<(), runtime_thread::engine::EngineError>(())
//! ```
//!
//! # Checkpoints
//!
//! A process type that is `Serialize + Deserialize` and names itself
//! (`impl Persistent { const TYPE_NAME }`; a `Chain` of such a work chain is one) can be launched
//! [`persisted`](Launch::persisted) on a runner built with a store
//! (`Runner::builder().persister(store)`). Stores: `InMemoryPersister`,
//! `JsonDirPersister` (one `<pid>.json` per process, written to a temporary file, synced and renamed
//! over the old one) and `SqlitePersister` (feature `sqlite`, one row per process, WAL mode;
//! `open` commits each save before it returns, `open_batched` commits in groups: a writer thread
//! commits everything queued about once a millisecond, the table always the result of a prefix of
//! the writes, so a crash loses the last few milliseconds of checkpoints and the processes continue
//! from the ones before; the write-ahead log is checkpointed by a thread of the store's own, never
//! inside a commit), and `PostgresPersister` (feature `postgres`, for workers on several machines:
//! a writer thread of its own commits each save, pipelined, or in groups, so the runtime thread
//! never waits on the network; the engine awaits a step's checkpoint before the step runs
//! (`Persister::save_committed`); a store that cannot be reached stops processes at their last
//! checkpoint, abandoned rather than failed). Under SIGKILL at random moments (`tests/engine_sigkill.rs`, 300 kills a run) the
//! oldest step that ran again had started 1.2-1.6 ms before the kill at the median and at most 9 ms
//! with group commit, and at most 3.5 ms with a commit per save (which re-runs only the step in
//! flight). The guarantees:
//! - a persisted process is saved before it starts, on entering `Running` (before each step; the
//!   first entry skips it, as the store already holds that checkpoint), on entering `Waiting`
//!   (before it shows `Waiting`), when it parks paused and when it is played;
//! - a checkpoint is plain JSON data: type name, pid, parent, creation time, state, pause flag,
//!   status, inputs, outputs, the process's own fields (a work chain's `ctx` and outline position
//!   included), the next step or what it waits on (a resume, a wall-clock deadline, or children by
//!   pid and key), a pending resume value, and its children's pids;
//! - loading needs the type registered by name (`runner.register::<P>()`); nothing in a checkpoint
//!   chooses code to run; a corrupt, unknown, mismatched or other-version checkpoint is a typed error
//!   naming the pid, and `load_all` reads and checks every checkpoint before it starts any;
//! - `load(pid)` / `load_all()` continue processes in a new runner or a new program. The step that
//!   was running at a crash runs again: steps run **at least once**, so they should tolerate a repeat.
//!   A wait on an in-memory future cannot be saved, so its step runs again too; a wait for children,
//!   a resume or a timer is restored as it was (a timer whose deadline passed fires at once);
//! - an ended process keeps a final checkpoint with its outcome until it is handed over: a child's
//!   to its parent (which deletes it when it ends itself), a top-level process's to whoever waits
//!   (`wait`, `.await` or an `on_finish` callback deletes it, `Runner::forget(pid)` too), so a
//!   program that dies in between finds the outcome on reload, where `load_all` returns it as a
//!   finished handle. A child launched by a step that a crash interrupted is discarded on reload (the
//!   step launches it again);
//! - `submit_persisted_all` saves a batch's first checkpoints as one (all or none in SQLite, in
//!   PostgreSQL and in memory); `Persister::flush` waits until a store that commits in groups has
//!   committed;
//! - in a store shared by several programs that keeps **leases** (SQLite opened with
//!   `SqliteBuilder::leases`, PostgreSQL), a process runs in one runner at a time: `load` takes
//!   the lease of each process it continues before it reads its checkpoint (`PersistError::Held`
//!   if another program holds it), a process made here takes its lease with its first save, and
//!   the lease goes when the process ends or stops here. Every save carries the lease's fencing
//!   token, so a runner that lost its lease (it stalled, or could not renew it) saves nothing
//!   more of the process, which stops there
//!   (`PersistError::LeaseLost`); `load_all` leaves the processes others hold to them.
//!
//! Example 15 runs a chain that waits for an approval, ends the program abruptly, and finishes the
//! chain from its checkpoint in a new OS process.
//!
//! # Control
//!
//! From any thread, through the handle or a cloneable `ProcessController`: pause is a flag,
//! not a state. In `Created` and `Waiting` it takes effect at once (a paused wait stays armed); in
//! `Running` the step finishes and the process pauses before its next step. A graceful kill acts at
//! once between steps and in `Waiting` or while paused, and after the current step otherwise (whose
//! command is then discarded); a force-kill drops a running step at once. Cancelling the handle
//! force-kills: the process ends `Killed`, never `Excepted`. `resume(value)` ends a wait for a resume;
//! sent while the process is paused it is kept, never lost, and used once played; any other time it is
//! refused with a typed error. Every kill ends the driving task: nothing is left pending. Listeners
//! see every state change, pause, play and output; a panicking listener is logged, not fatal.
//!
//! # Layout
//!
//! The engine's modules, each using only those below it:
//!
//! ```text
//! launch                  Launch, and the launch methods of Runner and StepContext
//! runner                  Runner, RunnerBuilder: starting, saving and loading processes
//! workchain  outline      work chains (a process) and their outlines
//! driver                  runs one process's steps and waits, saves its checkpoints
//! process                 Process, Persistent, Command, StepContext
//! handle                  ProcessHandle, ProcessController
//! runner_core  park       what a runner's processes share; its parked drivers
//! watcher                 the hook through which the control layer reaches every process
//! shared                  one process's state, control requests and listeners
//! checkpoint  persist     checkpoints as data and their encoding; the stores
//! outcome  error          ProcessOutcome, ProcessStatus; EngineError, PersistError
//! state  exit_code  spec  listener   plain types
//! ```
//!
//! A step launches children through the runner that runs it; `launch` adds that method to
//! `StepContext`, so the step context itself needs only what the runner shares (`runner_core`).

mod checkpoint;
mod driver;
mod error;
mod exit_code;
mod handle;
mod launch;
mod listener;
mod outcome;
mod outline;
mod park;
pub(crate) mod persist;
mod process;
mod runner;
mod runner_core;
mod shared;
mod spec;
mod state;
mod watcher;
mod workchain;

pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, ChildRef, Position, SavedWait};
pub use outline::{
    Branch, ChainCtx, Instruction, Outline, Predicate, Stepper, if_, return_, return_code, step,
    while_,
};
pub use persist::{Committed, InMemoryPersister, JsonDirPersister, Persister};
#[cfg(feature = "postgres")]
pub use persist::{PostgresBuilder, PostgresPersister};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use persist::{SqliteBuilder, SqlitePersister};
pub use workchain::{Chain, ChainContext, Flow, WorkChain, store_child_result};

/// The type of a process id (a UUID, as plumpy's pids are), re-exported so that a program can
/// name it without depending on `uuid` itself.
pub use uuid::Uuid;

pub use error::{EngineError, PersistError};
pub use exit_code::ExitCode;
pub use handle::{ProcessController, ProcessHandle};
pub use launch::Launch;
pub use listener::ProcessListener;
pub use outcome::{Outputs, ProcessOutcome, ProcessStatus};
pub use process::{Command, Persistent, Process, StepContext, StepError, StepName, WaitOn};
pub use runner::{Runner, RunnerBuilder};
pub use spec::{Namespace, Port, PortError, ProcessSpec, Validator, ValueType};
pub use state::ProcessState;
pub use watcher::{ProcessWatcher, Watch};
