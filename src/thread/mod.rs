//! The core layer: [`RuntimeThread`], a dedicated OS thread owning a tokio runtime.
//!
//! One concept per module: the builder, the handle types, the hand-off queue between callers and
//! the runtime, the dispatcher that drains it, startup tasks, blocking jobs, signals, and the stop
//! report.

mod blocking;
mod builder;
mod completion;
mod context;
mod dispatcher;
mod error;
mod handle;
mod handoff;
mod report;
mod runtime_thread;
mod shared;
#[cfg(unix)]
mod signals;
mod startup;
mod sync;
mod task;

pub use builder::{Builder, Flavor};
pub use error::Error;
pub use handle::{AbortHandle, TaskHandle};
pub use report::{StartupOutcome, StartupTaskReport, Stats, StopCause, StopReport};
pub use runtime_thread::{RuntimeThread, StopGuard};
pub use task::TaskOutput;
