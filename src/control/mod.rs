//! The control layer (plumpy's process communications), built on the engine and messaging,
//! which know nothing of each other: processes reached over any
//! [`Communicator`](crate::messaging::Communicator) by their pid, state broadcasts, a
//! controller and a launcher, wire-compatible with plumpy 0.26.
//!
//! - [`Listening`] makes a runner's processes answer plumpy's RPCs (`play`, `pause`, `kill`,
//!   `status`) under their pids, obey the `pause` / `play` / `kill` broadcasts, and announce
//!   every state they enter.
//! - [`Launcher`] takes plumpy's launcher tasks (`launch`, `create`, `continue`) from a task
//!   queue and runs them on a runner: with it, a runner is a worker.
//! - [`Controller`] (and [`SyncController`] for synchronous code) sends all of these and
//!   returns the final answers.
//! - [`wire`] holds the messages themselves, as plumpy writes and reads them.
//!
//! The same messages cross the in-process broker and RabbitMQ, so a controller in one
//! program steers processes in another, written in Rust or in Python with plumpy.

mod controller;
mod error;
mod launcher;
mod listen;
mod sync;
pub mod wire;

pub use controller::{Controller, DEFAULT_CONTROL_TIMEOUT};
pub use error::ControlError;
pub use launcher::{Launcher, LauncherBuilder};
pub use listen::Listening;
pub use sync::SyncController;
