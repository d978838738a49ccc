//! The core layer: [`RuntimeThread`], a dedicated OS thread owning a tokio runtime.
//!
//! One concept per module: the builder, the handle types, the hand-off queue between callers and
//! the runtime (`handoff`, loom-tested), the dispatcher that drains it, the result cell
//! (`completion`, loom-tested), when to spin (`spin`), startup tasks, blocking jobs, signals, and
//! the stop report. The exact semantics follow.
//!
//! # Lifecycle
//!
//! `build()` gives a thread that is not started. `start()` returns once the runtime is
//! running, the dispatcher is up and every startup task is spawned; a set-up failure (OS thread,
//! runtime, signal registration) comes back as `Error::StartFailed`, never as a panic elsewhere. A
//! thread starts once: a second `start()` is `Error::AlreadyStarted`. Work submitted before start
//! resolves at once with `Error::NotStarted`.
//!
//! # Stop
//!
//! `stop()` (from any thread but the runtime's own) does, in order:
//! 1. refuse new work at once: `run_threadsafe` and `submit_blocking` return handles already resolved
//!    with `Error::Stopped`, `spawn_threadsafe` and `register_startup_task` return `Err(Stopped)`;
//! 2. cancel the shutdown token (startup tasks hold child tokens; `shutdown_token()` gives it to any
//!    future) and move every job still queued into a tracked task, so work accepted before the stop
//!    gets the grace period too;
//! 3. wait until every tracked task (submitted futures, startup tasks, blocking jobs) has ended, or
//!    the grace period (`grace_period`, default 5 s; `stop_with_grace` overrides it) has passed, or a
//!    second signal arrives;
//! 4. shut the runtime down: tasks still running are dropped and their handles resolve with
//!    `Error::Stopped`; blocking jobs still running cannot be interrupted, so they are left to finish
//!    on their own OS threads (reported as detached) and their handles resolve with `Stopped` now;
//! 5. join the OS thread and return a `StopReport`: the cause, every startup task's outcome
//!    (`Finished`, `Cancelled`, `Failed`, `Panicked`, `Aborted`), counts of aborted tasks, discarded
//!    jobs and detached blocking jobs, whether the grace period expired or was forced, and how long it
//!    took. `report.is_clean()` says whether nothing had to be abandoned.
//!
//! Stop takes at most the grace period plus a small bound (10 ms when blocking jobs are stuck, at most
//! 250 ms for idle pool threads to exit), whatever the tasks do. Stopping again returns the same
//! report. `request_stop()` only asks (it works from anywhere, including a task on the thread itself);
//! `join()` waits for the end; a daemon's `main` is `start()` then `join()`. `stop()` or `join()` called
//! on the runtime's own threads requests the stop and returns `Error::WouldJoinItself`, since a thread
//! cannot join itself. Dropping a running `RuntimeThread` stops it.
//!
//! # Handles and cancellation
//!
//! A `TaskHandle` always resolves, exactly once: with the value, or
//! `Cancelled`, `Panicked { message }` (the runtime thread survives and serves the next call) or
//! `Stopped`. `wait()` blocks; `wait_timeout(d)` returns `TimedOut` and leaves the handle usable;
//! `is_finished()` polls; the handle is a `Future` usable from any executor. `cancel()` resolves the
//! handle with `Cancelled` at once and drops the future at its next poll; a blocking closure that has
//! started cannot be interrupted, so its result is discarded. `on_done(f)` calls `f` exactly once: at
//! once on the calling thread if the work is done, otherwise on the thread that finishes it (usually
//! the runtime thread, so keep it short). Dropping a handle detaches the work; it still runs.
//!
//! # Reentrancy (the `nest_asyncio` problem)
//!
//! Blocking on a handle from inside the runtime is decided
//! by where the wait happens, never by luck:
//! - on the thread of a current-thread runtime (the default flavour), `wait()` on unfinished work
//!   returns `Error::WouldDeadlock` at once, because that thread is the only one that could finish
//!   it: `.await` the handle there instead (a handle that is already finished returns its value);
//! - on a worker of a multi-thread runtime (`Flavor::MultiThread`), `wait()` works: it hands the
//!   worker's other tasks to another thread (`tokio::task::block_in_place`) and blocks;
//! - in a blocking job, on any plain thread, or inside an unrelated runtime, `wait()` simply blocks.
//!
//! # Signals
//!
//! With `stop_on_ctrl_c()` (SIGINT and SIGTERM) or `stop_on_signals([...])`, off by
//! default: the first signal starts a graceful stop (`StopCause::Signal(n)`), a second one during the
//! grace period aborts at once (`report.forced`). Several `RuntimeThread`s in a process can listen;
//! each hears every signal. The handlers are signal-hook's, so a handler installed before ours keeps
//! being called. When the last listening thread has stopped, a signal whose disposition was the
//! default gets its default action again (a later Ctrl-C ends the process); an ignored signal stays
//! ignored. Signals that cannot be caught (SIGKILL, SIGSTOP, fault signals) are refused with
//! `Error::InvalidConfig`.
//!
//! # Latency design
//!
//! Submissions go through a crossbeam queue with a doorbell. On a current-thread runtime the
//! dispatcher polls each future once inline: a future ready on its first poll never becomes a tokio
//! task. After the last job the dispatcher keeps yielding to the scheduler for `idle_spin` (default
//! 50 µs) before it sleeps, and a blocking `wait()` spins for `wait_spin` (default 20 µs) before it
//! sleeps, so back-to-back calls skip OS wake-ups; with no traffic the thread sleeps. Each side
//! spins only while the other was last seen on another CPU, and a process that may use one CPU only
//! (affinity mask or cgroup quota) never spins: on a shared CPU a spin holds the CPU the other side
//! needs (57 µs per call pinned to one CPU before this rule, 4.6 µs with it). The doorbell and the
//! result cell are model-checked with loom (`scripts/test` runs them).

//
// Under `cfg(loom)` only the hand-off protocols and their model tests are compiled: tokio removes
// parts of its API under that cfg, and the models need none of the rest.
#[cfg(not(loom))]
mod blocking;
#[cfg(not(loom))]
mod builder;
mod completion;
#[cfg(not(loom))]
mod context;
#[cfg(not(loom))]
mod dispatcher;
mod error;
#[cfg(not(loom))]
mod handle;
mod handoff;
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
pub use builder::{Builder, Flavor};
pub use error::Error;
#[cfg(not(loom))]
pub(crate) use error::panic_message;
#[cfg(not(loom))]
pub use handle::{AbortHandle, TaskHandle};
#[cfg(not(loom))]
pub(crate) use handle::{block_safely, spin_then_block};
#[cfg(not(loom))]
pub use report::{StartupOutcome, StartupTaskReport, Stats, StopCause, StopReport};
#[cfg(not(loom))]
pub use runtime_thread::{RuntimeThread, StopGuard};
#[cfg(not(loom))]
pub(crate) use spawner::Spawner;
#[cfg(not(loom))]
pub use task::TaskOutput;
