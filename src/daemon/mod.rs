//! The daemon layer (circus and `verdi daemon`): a supervised pool of worker processes.
//!
//! In progress. What is here: [`Supervisor`], which keeps a resizable pool of identical worker
//! processes running (event-driven replacement, crash-loop [`Backoff`], stop with SIGTERM then
//! SIGKILL per process group, no orphans even when it is killed, the workers' output in one
//! log file), and its control socket with [`ControlClient`] (circus's request and reply shape:
//! `status`, `numprocesses`, `stats`, `dstats`, `incr`, `decr`, `set`, `restart`, `quit`), and a
//! locked pid file. Detaching, the worker mode, the configuration and the command line come
//! next.

mod backoff;
mod config;
mod error;
mod output;
mod pid_file;
mod request;
mod socket;
mod status;
mod supervisor;
#[cfg(all(feature = "amqp", feature = "sqlite"))]
mod worker;

pub use backoff::Backoff;
pub use config::DaemonConfig;
pub use error::DaemonError;
pub use socket::ControlClient;
pub use status::{PoolStatus, WorkerStatus};
pub use supervisor::{Supervisor, SupervisorBuilder};
#[cfg(all(feature = "amqp", feature = "sqlite"))]
pub use worker::{RunningWorker, Worker};
