//! The daemon layer (circus and `verdi daemon`): a supervised pool of worker processes.
//!
//! In progress. What is here: [`Supervisor`], which keeps a resizable pool of identical worker
//! processes running (event-driven replacement, crash-loop [`Backoff`], stop with SIGTERM then
//! SIGKILL per process group, no orphans even when it is killed, the workers' output in one
//! log file). The control socket, the worker mode and the command line come next.

mod backoff;
mod error;
mod output;
mod status;
mod supervisor;

pub use backoff::Backoff;
pub use error::DaemonError;
pub use status::{PoolStatus, WorkerStatus};
pub use supervisor::{Supervisor, SupervisorBuilder};
