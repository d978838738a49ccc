//! Configuration of a [`RuntimeThread`](super::RuntimeThread).

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RuntimeThread;
use super::config::{Config, Flavor};
use super::error::Error;
use super::startup::StartupTask;
use super::task::TaskOutput;

/// Configures and builds a [`RuntimeThread`].
///
/// ```
/// use std::time::Duration;
/// use runtime_thread::{Flavor, RuntimeThread};
///
/// let rt = RuntimeThread::builder()
///     .name("worker")
///     .flavor(Flavor::MultiThread { workers: 2 })
///     .grace_period(Duration::from_millis(500))
///     .startup_task("ticker", |token| async move {
///         token.cancelled().await; // runs until stop
///     })
///     .start()?;
/// let report = rt.stop()?;
/// assert_eq!(report.cancelled(), 1);
/// # Ok::<(), runtime_thread::Error>(())
/// ```
pub struct Builder {
    config: Config,
    startup: Vec<StartupTask>,
}

// The builder is where a thread's configuration starts, so it is defined next to it.
impl RuntimeThread {
    /// A builder with the defaults: current-thread runtime, 5 s grace period, no signals.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl Builder {
    fn new() -> Self {
        Builder {
            config: Config::default(),
            startup: Vec::new(),
        }
    }

    /// Name of the OS thread (default `runtime-thread`); the runtime's pool threads are named
    /// `<name>-pool`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Which scheduler to run (default [`Flavor::CurrentThread`]).
    pub fn flavor(mut self, flavor: Flavor) -> Self {
        self.config.flavor = flavor;
        self
    }

    /// Upper bound on the threads of the blocking pool used by
    /// [`submit_blocking`](RuntimeThread::submit_blocking) (tokio's default: 512).
    pub fn max_blocking_threads(mut self, threads: usize) -> Self {
        self.config.max_blocking_threads = Some(threads);
        self
    }

    /// How long a stop waits for tasks to finish after their cancellation tokens fire, before it
    /// aborts them (default 5 s).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.config.grace = grace;
        self
    }

    /// Stop gracefully when the process receives any of `signals` (off by default); a second one
    /// during the grace period aborts at once. See the crate README for the exact semantics.
    #[cfg(unix)]
    pub fn stop_on_signals(mut self, signals: impl IntoIterator<Item = i32>) -> Self {
        self.config.signals = signals.into_iter().collect();
        self
    }

    /// Shorthand for [`stop_on_signals`](Self::stop_on_signals) with SIGINT and SIGTERM.
    #[cfg(unix)]
    pub fn stop_on_ctrl_c(self) -> Self {
        self.stop_on_signals([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
    }

    /// Registers a task started with the thread and cancelled at stop. `factory` is called on the
    /// runtime thread with a token that fires when the stop begins; the task then has the grace
    /// period to return before it is aborted. It may return `()` or a `Result` (an error is logged
    /// and reported). Its outcome is in the [`StopReport`](crate::StopReport).
    pub fn startup_task<F, Fut>(mut self, name: impl Into<String>, factory: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
    {
        self.startup.push(StartupTask::new(name, factory));
        self
    }

    /// How long the runtime thread keeps polling for new work after the last job before it
    /// sleeps (default 50 µs). Work that arrives while it polls skips the cost of a wake-up
    /// through the OS; with no traffic the thread sleeps. Zero turns the spin off.
    ///
    /// The spin is skipped while the last submitting thread shares the runtime thread's CPU
    /// (it could not submit until the spin ended), and always in a process that may use only
    /// one CPU (its affinity mask or cgroup quota), so the default suits both cases.
    pub fn idle_spin(mut self, spin: Duration) -> Self {
        self.config.idle_spin = spin;
        self
    }

    /// How long a blocking [`wait`](crate::TaskHandle::wait) spins before it sleeps (default
    /// 20 µs). Zero turns the spin off. As with [`idle_spin`](Self::idle_spin), a waiter does
    /// not spin while the runtime thread shares its CPU, nor in a process limited to one CPU.
    pub fn wait_spin(mut self, spin: Duration) -> Self {
        self.config.wait_spin = spin;
        self
    }

    /// Switches the development mode on or off (default: off, unless the environment variable
    /// [`DEV_MODE_VARIABLE`](crate::DEV_MODE_VARIABLE) is set to anything but `0`, as
    /// `PYTHONDEVMODE` switches on Python's). In it, the thread reports through `tracing`
    /// (target `runtime_thread::dev`):
    ///
    /// - every poll of work that entered through this crate (submitted futures, startup tasks,
    ///   engine steps, message handlers) that held the thread longer than the
    ///   [slow-poll threshold](Self::slow_poll_threshold), naming the work and the time;
    /// - a poll still running past the [stall threshold](Self::stall_threshold), while it runs
    ///   (a watchdog thread looks four times per threshold), naming what it polls;
    /// - a [`TaskHandle`](crate::TaskHandle) dropped unread whose work panicked.
    ///
    /// The [`StopReport`](crate::StopReport) then sums up the slowest polls and the stalls. Off,
    /// nothing is timed or wrapped and no watchdog runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// use runtime_thread::RuntimeThread;
    ///
    /// let rt = RuntimeThread::builder()
    ///     .dev_mode(true)
    ///     .slow_poll_threshold(Duration::from_millis(20))
    ///     .start()?;
    /// // A blocking sleep inside a future holds the thread: the mode names it.
    /// rt.run_threadsafe(async { std::thread::sleep(Duration::from_millis(30)) }).wait()?;
    /// let report = rt.stop()?;
    /// let seen = report.dev.expect("the mode was on");
    /// assert_eq!(seen.slow_polls, 1);
    /// // Named by where it was submitted (or by a name given with `RuntimeThread::named`).
    /// assert!(seen.slowest[0].work.starts_with("the future submitted at"));
    /// # Ok::<(), runtime_thread::Error>(())
    /// ```
    pub fn dev_mode(mut self, on: bool) -> Self {
        self.config.dev.on = on;
        self
    }

    /// In the development mode, how long a poll may hold the thread before it is reported
    /// (default 100 ms, asyncio's `slow_callback_duration`).
    pub fn slow_poll_threshold(mut self, threshold: Duration) -> Self {
        self.config.dev.slow_poll = threshold;
        self
    }

    /// In the development mode, how long a poll may run before the watchdog reports it while it
    /// still runs (default 250 ms: longer than a slow poll, so that a poll just over that
    /// threshold gives one warning).
    pub fn stall_threshold(mut self, threshold: Duration) -> Self {
        self.config.dev.stall = threshold;
        self
    }

    /// Builds the thread without starting it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a setting that cannot work: a name with a NUL byte, zero
    /// workers, zero blocking threads, a signal that cannot be caught, a zero threshold.
    pub fn build(self) -> Result<RuntimeThread, Error> {
        self.config.validate()?;
        Ok(RuntimeThread::from_parts(self.config, self.startup))
    }

    /// Builds the thread and starts it.
    ///
    /// # Errors
    ///
    /// Those of [`build`](Self::build) and of [`RuntimeThread::start`].
    pub fn start(self) -> Result<RuntimeThread, Error> {
        let thread = self.build()?;
        thread.start()?;
        Ok(thread)
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("startup_tasks", &self.startup.len())
            .finish()
    }
}
