//! The engine layer (the plumpy analogue), built on the core: processes as state machines of
//! async steps, with pause, play and kill from any thread, run by a [`Runner`] on a
//! [`RuntimeThread`](crate::RuntimeThread).
//!
//! ```text
//!            +---------+     +---------+  step returns Wait   +---------+
//!  submit -> | Created | --> | Running | -------------------> | Waiting |
//!            +---------+     +---------+ <------------------- +---------+
//!                 |            |  |  ^ Continue    resume / timer / future
//!                 |            |  +--+
//!                 |            | Stop(exit code)
//!                 |            v
//!                 |       +----------+   any live state: a step error -> Excepted,
//!                 +-----> | Finished |   kill (or a Kill command) -> Killed
//!                         +----------+
//! ```
//!
//! Pause is a flag, not a state. This release has the process model, its driver, specs and ports,
//! and the runner; work chains and checkpoints are to come.

mod driver;
mod error;
mod exit_code;
mod handle;
mod listener;
mod process;
mod runner;
mod shared;
mod spec;
mod state;

pub use error::EngineError;
pub use exit_code::ExitCode;
pub use handle::{ProcessController, ProcessHandle, ProcessOutcome, ProcessStatus};
pub use listener::ProcessListener;
pub use process::{Command, Context, Outputs, Process, StepError, WaitOn};
pub use runner::Runner;
pub use spec::{Namespace, Port, PortError, ProcessSpec, Validator, ValueType};
pub use state::ProcessState;
