//! The daemon layer (circus and `verdi daemon`): a supervised pool of worker processes.
//!
//! - [`Supervisor`] keeps a resizable pool of identical worker processes running:
//!   event-driven replacement, crash-loop [`Backoff`] shown in its [status](PoolStatus), stop
//!   with SIGTERM, a grace period, then SIGKILL per process group, no orphans even when it is
//!   killed, the workers' output in one log file with time and pid on each line, a locked pid
//!   file, and a control socket that [`ControlClient`] speaks (circus's request and reply
//!   shape: `status`, `numprocesses`, `stats`, `dstats`, `incr`, `decr`, `set`, `restart`,
//!   `quit`).
//! - [`Worker`] (features `amqp` and `sqlite`) is what each worker runs: a runner on the
//!   shared SQLite store, reachable over RabbitMQ, taking processes from the task queue; on
//!   SIGTERM it lets running steps end and leaves the rest to another worker.
//! - [`DaemonConfig`] gives both their settings, from defaults, a file and the environment.
//! - [`cli::Cli`] (feature `cli`) is the command line a program embeds: `daemon start`,
//!   `stop`, `status`, ..., and `process list`, `submit`, `pause`, ...: the same binary is the
//!   command line, the supervisor and the workers. Example `18_daemon` is one.
//!
//! Unix only (process groups, `PR_SET_PDEATHSIG` on Linux, Unix sockets).

mod backoff;
#[cfg(all(feature = "amqp", feature = "sqlite"))]
mod broker;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
#[cfg(feature = "cli")]
mod detach;
mod error;
mod output;
mod pid_file;
mod request;
mod socket;
mod status;
#[cfg(all(feature = "amqp", feature = "sqlite"))]
mod store;
mod supervisor;
#[cfg(all(feature = "amqp", feature = "sqlite"))]
mod worker;

pub use backoff::Backoff;
pub use config::{DaemonConfig, ServiceConfig};
pub use error::DaemonError;
pub use socket::ControlClient;
pub use status::{PoolStatus, ServiceStatus, WorkerStatus};
pub use supervisor::{Supervisor, SupervisorBuilder};
#[cfg(all(feature = "amqp", feature = "sqlite"))]
pub use worker::{RunningWorker, Worker};
