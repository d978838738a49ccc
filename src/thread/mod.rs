//! The core layer: [`RuntimeThread`], a dedicated OS thread owning a tokio runtime. Its items
//! are public at the crate root only; the semantics are documented on [`RuntimeThread`] and
//! [`TaskHandle`].
//!
//! One concept per module: the builder, the handle types, the hand-off queue between callers and
//! the runtime (`handoff`, loom-tested), the dispatcher that drains it, the result cell
//! (`completion`, loom-tested), when to spin (`spin`), startup tasks, blocking jobs, signals, and
//! the stop report.

//
// Under `cfg(loom)` only the hand-off protocols and their model tests are compiled: tokio removes
// parts of its API under that cfg, and the models need none of the rest.
#[cfg(not(loom))]
mod blocking;
#[cfg(not(loom))]
mod builder;
mod completion;
#[cfg(not(loom))]
mod config;
#[cfg(not(loom))]
mod context;
#[cfg(not(loom))]
mod dev;
#[cfg(not(loom))]
mod dispatcher;
mod error;
#[cfg(not(loom))]
mod handle;
mod handoff;
#[cfg(not(loom))]
mod named;
#[cfg(not(loom))]
mod report;
#[cfg(not(loom))]
mod runtime_thread;
#[cfg(not(loom))]
mod shared;
#[cfg(all(unix, not(loom)))]
mod signals;
#[cfg(not(loom))]
mod spawner;
#[cfg(not(loom))]
mod spin;
#[cfg(not(loom))]
mod startup;
mod sync;
#[cfg(not(loom))]
mod task;

#[cfg(not(loom))]
pub use builder::Builder;
#[cfg(not(loom))]
pub use config::Flavor;
#[cfg(not(loom))]
pub use dev::{DEV_MODE_VARIABLE, DevReport, SlowPoll, Stall};
#[cfg(not(loom))]
pub(crate) use dev::{Described, describe, watched};
pub use error::Error;
#[cfg(not(loom))]
pub(crate) use error::panic_message;
#[cfg(not(loom))]
pub use handle::{AbortHandle, TaskHandle};
#[cfg(not(loom))]
pub(crate) use handle::{block_safely, spin_then_block};
#[cfg(not(loom))]
pub use named::Named;
#[cfg(not(loom))]
pub use report::{StartupOutcome, StartupTaskReport, Stats, StopCause, StopReport};
#[cfg(not(loom))]
pub use runtime_thread::{RuntimeThread, StopGuard};
#[cfg(not(loom))]
pub(crate) use spawner::Spawner;
#[cfg(not(loom))]
pub use task::TaskOutput;
