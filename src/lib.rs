//! `runtime-thread`: drive async work from synchronous code through a dedicated OS thread that owns
//! a tokio runtime.
//!
//! Synchronous programs (a CLI, a GUI, a test, a daemon's `main`, a Python extension) often need to run
//! async work without becoming async themselves. A [`RuntimeThread`] owns one OS thread and one tokio
//! runtime; any thread can hand it futures and blocking closures and wait for, poll, cancel or `.await`
//! the results. Stopping is graceful, bounded in time and reports what it had to abandon.
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
//! The crate is built in layers, each on the one below: the core, [`thread`]; the messaging layer,
//! `messaging` (RPC, broadcasts and task queues, kiwipy-style); and the engine, `engine`
//! (plumpy-style processes; in progress).
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
// docs.rs (nightly, `--cfg docsrs`) marks the items of each cargo feature with it.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms, unreachable_pub)]
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(loom))]
pub mod engine;
#[cfg(not(loom))]
pub mod messaging;
pub mod thread;

// The README's examples include the RabbitMQ transport's, so they are tested with `amqp` on (as
// `scripts/test` does, with every feature).
#[cfg(all(doctest, not(loom), feature = "amqp"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(not(loom))]
pub use thread::{
    AbortHandle, Builder, Error, Flavor, RuntimeThread, StartupOutcome, StartupTaskReport, Stats,
    StopCause, StopGuard, StopReport, TaskHandle, TaskOutput,
};
pub use tokio_util::sync::CancellationToken;
