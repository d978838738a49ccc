//! `runtime-thread`: drive async work from synchronous code through a dedicated OS thread that owns
//! a tokio runtime.
//!
//! Synchronous programs (a CLI, a GUI, a test, a daemon's `main`, a Python extension) often need to run
//! async work without becoming async themselves. A [`RuntimeThread`] owns one OS thread and one tokio
//! runtime; any thread can hand it futures and blocking closures and wait for, poll, cancel or `.await`
//! the results. Stopping is graceful, bounded in time and reports what it had to abandon.
//!
//! ```toml
//! [dependencies]
//! runtime-thread = "0.1"  # features = ["sqlite", "amqp"] for the SQLite store and RabbitMQ
//! ```
//!
//! ```
//! use runtime_thread::RuntimeThread;
//!
//! let rt = RuntimeThread::builder().name("demo").start()?;
//! let answer = rt.run_threadsafe(async { 6 * 7 }).wait()?;
//! assert_eq!(answer, 42);
//! let report = rt.stop()?;
//! assert!(report.is_clean());
//! # Ok::<(), runtime_thread::Error>(())
//! ```
//!
//! # Layers
//!
//! Each layer is built on the ones before it, and none reaches up.
//!
//! | layer | module | what it gives |
//! |---|---|---|
//! | core | the crate root | [`RuntimeThread`]: submission from any thread, handles that always resolve, startup tasks, blocking jobs, signals, a bounded stop |
//! | messaging | [`messaging`] | kiwipy's model: RPC, broadcasts and task queues behind one trait, in process or over RabbitMQ, from async code or plain threads |
//! | engine | [`engine`] | plumpy's model: processes as state machines of async steps, specs and ports, work chains, children, checkpoints |
//! | control | [`control`] | plumpy's process control over any communicator; in progress: its messages so far |
//!
//! # Cargo features
//!
//! | feature | adds |
//! |---|---|
//! | (none) | the three layers, with the in-process broker and the in-memory and JSON-directory checkpoint stores |
//! | `sqlite` | `engine::SqlitePersister`: checkpoints in SQLite (bundled), one commit per save or group commit, leases for a file several programs share |
//! | `amqp` | `messaging::amqp`: the RabbitMQ transport, wire-compatible with kiwipy 0.9 (lapin) |
//!
//! # Examples
//!
//! The repository's `examples/` teach async Rust step by step, each a short program whose
//! comments explain one idea: `01_start_stop` to `08_daemon` the core (round trips, guards,
//! startup tasks, many tasks, blocking jobs, the development mode, a daemon's `main`), `09_rpc` to `11_task_queue`
//! messaging, `12_simple_process` to `15_checkpoint` the engine (processes, work chains,
//! control, a checkpoint continued in a new OS process), and `16_rabbitmq` two processes over
//! RabbitMQ. `cargo run --example 03_run_threadsafe` is the main demo.
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
// docs.rs (nightly, `--cfg docsrs`) marks the items of each cargo feature with it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms, unreachable_pub)]
#![cfg_attr(loom, allow(dead_code, unused_imports, unreachable_pub))]

#[cfg(not(loom))]
pub mod control;
#[cfg(all(unix, not(loom)))]
pub mod daemon;
#[cfg(not(loom))]
pub mod engine;
#[cfg(not(loom))]
pub mod messaging;
mod thread;

// The README's examples include the RabbitMQ transport's, so they are tested with `amqp` on (as
// `scripts/test` does, with every feature).
#[cfg(all(doctest, not(loom), feature = "amqp"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Each public item has one path: the core's items live at the crate root, not also under a
/// `thread` module.
///
/// ```compile_fail
/// use runtime_thread::thread::RuntimeThread;
/// ```
///
/// ```
/// use runtime_thread::{RuntimeThread, TaskHandle};
/// use runtime_thread::engine::{Runner, StepContext};
/// use runtime_thread::messaging::Communicator;
/// ```
#[cfg(all(doctest, not(loom)))]
pub struct OnePublicPath;

#[cfg(not(loom))]
pub use thread::{
    AbortHandle, Builder, DEV_MODE_VARIABLE, DevReport, Error, Flavor, Named, RuntimeThread,
    SlowPoll, Stall, StartupOutcome, StartupTaskReport, Stats, StopCause, StopGuard, StopReport,
    TaskHandle, TaskOutput,
};
pub use tokio_util::sync::CancellationToken;
