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
//! # Checkpoints
//!
//! A process whose type implements [`Persistent`] (serde plus a stable name; a [`Chain`] of a
//! serialisable [`WorkChain`] does) can be started with [`Runner::submit_persisted`]. It is then
//! saved into the runner's [`Persister`]:
//! - before it starts, and on entering `Running` (before each step), with the step to run;
//! - on entering `Waiting`, with what it waits on as data: a resume, a wall-clock deadline, or
//!   children by pid (a wait on an in-memory future cannot be saved: that step runs again);
//! - when it parks paused and when it is played;
//! - when it ends, with its outcome, kept until the outcome is handed over: to the parent for
//!   a child, to whoever waits for a top-level process (see [`ProcessHandle`]); the
//!   checkpoints of its ended children are deleted then.
//!
//! A crash loses at most the step that was running: on reload it runs again (at least once), so
//! steps should be idempotent or tolerate a repeat. Loading needs the type registered by name
//! ([`Runner::register`]); a checkpoint is plain JSON and never names code to run.

mod checkpoint;
mod driver;
mod error;
mod exit_code;
mod handle;
mod listener;
mod outline;
mod persist;
mod process;
mod runner;
mod shared;
mod spec;
mod state;
mod workchain;

pub use checkpoint::{CHECKPOINT_VERSION, Checkpoint, ChildRef, Persistent, Position, SavedWait};
pub use outline::{
    Branch, Ctx, Instruction, Outline, Predicate, Stepper, if_, return_, return_code, step, while_,
};
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub use persist::SqlitePersister;
pub use persist::{InMemoryPersister, JsonDirPersister, PersistError, Persister};
pub use workchain::{Chain, Flow, WorkChain, WorkContext, store_child_result};

pub use error::EngineError;
pub use exit_code::ExitCode;
pub use handle::{ProcessController, ProcessHandle, ProcessOutcome, ProcessStatus};
pub use listener::ProcessListener;
pub use process::{Command, Context, Outputs, Process, StepError, StepName, WaitOn};
pub use runner::Runner;
pub use spec::{Namespace, Port, PortError, ProcessSpec, Validator, ValueType};
pub use state::ProcessState;
