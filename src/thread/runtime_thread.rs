//! [`RuntimeThread`]: the OS thread, its lifecycle, and the ways to hand it work.

use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::completion::Completion;
use super::config::{Config, Flavor};
use super::context::{self, Membership};
use super::dev::{Dev, WorkName};
use super::dispatcher::Dispatcher;
use super::error::{Error, panic_message};
use super::handle::{AbortHandle, TaskHandle};
use super::report::{StartupTaskReport, Stats, StopCause, StopReport};
use super::shared::Shared;
#[cfg(unix)]
use super::signals::{self, SignalListener, SignalRegistration};
use super::spawner::Spawner;
use super::startup::{self, StartupTask};
use super::task::{Job, TaskOutput};

/// How long shutdown waits for the blocking pool's idle threads to exit.
const POOL_EXIT_WAIT: Duration = Duration::from_millis(250);
/// How long shutdown waits when blocking jobs are known to be stuck: they will be detached anyway.
const DETACH_WAIT: Duration = Duration::from_millis(10);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A dedicated OS thread that owns a tokio runtime, driven from synchronous code.
///
/// Build one with [`RuntimeThread::builder`], [`start`](Self::start) it, hand it work from any
/// thread, and [`stop`](Self::stop) it. It is `Send + Sync`: share it by reference or in an `Arc`.
/// Dropping a running thread stops it gracefully and joins it.
///
/// ```
/// use runtime_thread::RuntimeThread;
///
/// let rt = RuntimeThread::builder().build()?; // built, not started
/// rt.start()?;                                // returns once the runtime accepts work
/// let sum = rt.run_threadsafe(async { 1 + 2 }).wait()?;
/// let doubled = rt.submit_blocking(move || sum * 2).wait()?;
/// assert_eq!(doubled, 6);
/// rt.stop()?;                                 // graceful, bounded, idempotent
/// # Ok::<(), runtime_thread::Error>(())
/// ```
///
/// # Lifecycle
///
/// `build()` gives a thread that is not started. `start()` returns once the runtime is
/// running, the dispatcher is up and every startup task is spawned; a set-up failure (OS thread,
/// runtime, signal registration) comes back as `Error::StartFailed`, never as a panic elsewhere. A
/// thread starts once: a second `start()` is `Error::AlreadyStarted`. Work submitted before start
/// resolves at once with `Error::NotStarted`.
///
/// # Stop
///
/// `stop()` (from any thread but the runtime's own) does, in order:
/// 1. refuse new work at once: `run_threadsafe` and `submit_blocking` return handles already resolved
///    with `Error::Stopped`, `spawn_threadsafe` and `register_startup_task` return `Err(Stopped)`;
/// 2. cancel the shutdown token (startup tasks hold child tokens; `shutdown_token()` gives it to any
///    future) and move every job still queued into a tracked task, so work accepted before the stop
///    gets the grace period too;
/// 3. wait until every tracked task (submitted futures, startup tasks, blocking jobs) has ended, or
///    the grace period (`grace_period`, default 5 s; `stop_with_grace` overrides it) has passed, or a
///    second signal arrives;
/// 4. shut the runtime down: tasks still running are dropped and their handles resolve with
///    `Error::Stopped`; blocking jobs still running cannot be interrupted, so they are left to finish
///    on their own OS threads (reported as detached) and their handles resolve with `Stopped` now;
/// 5. join the OS thread and return a `StopReport`: the cause, every startup task's outcome
///    (`Finished`, `Cancelled`, `Failed`, `Panicked`, `Aborted`), counts of aborted tasks, discarded
///    jobs and detached blocking jobs, whether the grace period expired or was forced, and how long it
///    took. `report.is_clean()` says whether nothing had to be abandoned.
///
/// Stop takes at most the grace period plus a small bound (10 ms when blocking jobs are stuck, at most
/// 250 ms for idle pool threads to exit), whatever the tasks do. Stopping again returns the same
/// report. `request_stop()` only asks (it works from anywhere, including a task on the thread itself);
/// `join()` waits for the end; a daemon's `main` is `start()` then `join()`. `stop()` or `join()` called
/// on the runtime's own threads requests the stop and returns `Error::WouldJoinItself`, since a thread
/// cannot join itself. Dropping a running `RuntimeThread` stops it.
///
/// # Reentrancy (the `nest_asyncio` problem)
///
/// Blocking on a handle from inside the runtime is decided
/// by where the wait happens, never by luck:
/// - on the thread of a current-thread runtime (the default flavour), `wait()` on unfinished work
///   returns `Error::WouldDeadlock` at once, because that thread is the only one that could finish
///   it: `.await` the handle there instead (a handle that is already finished returns its value);
/// - on a worker of a multi-thread runtime (`Flavor::MultiThread`), `wait()` works: it hands the
///   worker's other tasks to another thread (`tokio::task::block_in_place`) and blocks;
/// - in a blocking job, on any plain thread, or inside an unrelated runtime, `wait()` simply blocks.
///
/// # Signals
///
/// With `stop_on_ctrl_c()` (SIGINT and SIGTERM) or `stop_on_signals([...])`, off by
/// default: the first signal starts a graceful stop (`StopCause::Signal(n)`), a second one during the
/// grace period aborts at once (`report.forced`). Several `RuntimeThread`s in a process can listen;
/// each hears every signal. The handlers are signal-hook's, so a handler installed before ours keeps
/// being called. When the last listening thread has stopped, a signal whose disposition was the
/// default gets its default action again (a later Ctrl-C ends the process); an ignored signal stays
/// ignored. Signals that cannot be caught (SIGKILL, SIGSTOP, fault signals) are refused with
/// `Error::InvalidConfig`.
///
/// # Latency design
///
/// Submissions go through a crossbeam queue with a doorbell. On a current-thread runtime the
/// dispatcher polls each future once inline: a future ready on its first poll never becomes a tokio
/// task. After the last job the dispatcher keeps yielding to the scheduler for `idle_spin` (default
/// 50 µs) before it sleeps, and a blocking `wait()` spins for `wait_spin` (default 20 µs) before it
/// sleeps, so back-to-back calls skip OS wake-ups; with no traffic the thread sleeps. Each side
/// spins only while the other was last seen on another CPU, and a process that may use one CPU only
/// (affinity mask or cgroup quota) never spins: on a shared CPU a spin holds the CPU the other side
/// needs (57 µs per call pinned to one CPU before this rule, 4.6 µs with it). The doorbell and the
/// result cell are model-checked with loom (`scripts/test` runs them).
pub struct RuntimeThread {
    shared: Arc<Shared>,
    thread: Mutex<ThreadState>,
}

enum ThreadState {
    NotStarted,
    Running(JoinHandle<StopReport>),
    Joined(StopReport),
}

impl RuntimeThread {
    pub(crate) fn from_parts(config: Config, startup: Vec<StartupTask>) -> Self {
        let id = NEXT_ID.fetch_add(1, Relaxed);
        RuntimeThread {
            shared: Arc::new(Shared::new(id, config, startup)),
            thread: Mutex::new(ThreadState::NotStarted),
        }
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// Starts the OS thread and its runtime; returns once the runtime accepts work and every
    /// startup task has been spawned. A thread can be started once: a second call returns
    /// [`Error::AlreadyStarted`]. A failure to set up (the OS thread, the runtime, a signal
    /// handler) comes back as [`Error::StartFailed`].
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`] on a second call; [`Error::StartFailed`] when the OS thread, the
    /// runtime or a signal handler cannot be set up.
    pub fn start(&self) -> Result<(), Error> {
        let mut thread = self.thread.lock();
        if !matches!(*thread, ThreadState::NotStarted) {
            return Err(Error::AlreadyStarted);
        }
        self.shared.handoff.begin_start()?;
        let (ready_tx, ready_rx) = sync_channel(1);
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(self.shared.config.name.clone())
            .spawn(move || thread_main(shared, ready_tx));
        let handle = match spawned {
            Ok(handle) => handle,
            Err(error) => {
                self.shared.handoff.close::<Job>();
                return Err(Error::start_failed(error));
            }
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {
                *thread = ThreadState::Running(handle);
                tracing::info!(thread = %self.name(), flavor = ?self.shared.config.flavor, "runtime thread started");
                Ok(())
            }
            Ok(Err(error)) => {
                let _ = handle.join();
                Err(error)
            }
            Err(_) => {
                let why = match handle.join() {
                    Err(payload) => panic_message(&*payload),
                    Ok(_) => "it exited early".to_owned(),
                };
                Err(Error::start_failed(io::Error::other(format!(
                    "the runtime thread died while starting: {why}"
                ))))
            }
        }
    }

    /// True between a successful start and the moment a stop is requested.
    pub fn is_running(&self) -> bool {
        self.shared.handoff.is_running()
    }

    /// Asks the thread to stop gracefully without waiting for it; works from any thread, including
    /// a task on the runtime thread itself. Returns true if this call started the stop.
    /// Use [`join`](Self::join) to wait for the end.
    pub fn request_stop(&self) -> bool {
        self.shared.request_stop(StopCause::Requested, None)
    }

    /// Stops the thread and waits for it: new work is refused at once, tasks' cancellation tokens
    /// fire, the grace period is given, what remains is aborted, the runtime is shut down and the
    /// OS thread joined. Bounded by the grace period plus a small constant, whatever the tasks do.
    /// Every handle still pending resolves. Calling it again returns the same report.
    ///
    /// Called from the runtime thread itself (or one of its pool threads), it requests the stop
    /// and returns [`Error::WouldJoinItself`], since a thread cannot join itself.
    ///
    /// # Errors
    ///
    /// [`Error::WouldJoinItself`] when called on the runtime's own threads (the stop is requested
    /// all the same); [`Error::NotStarted`] for a thread that was never started;
    /// [`Error::Panicked`] if the runtime thread itself panicked.
    pub fn stop(&self) -> Result<StopReport, Error> {
        self.stop_inner(None)
    }

    /// [`stop`](Self::stop) with a grace period other than the configured one (zero aborts at
    /// once). It only applies if this call is the one that starts the stop.
    ///
    /// # Errors
    ///
    /// As [`stop`](Self::stop).
    pub fn stop_with_grace(&self, grace: Duration) -> Result<StopReport, Error> {
        self.stop_inner(Some(grace))
    }

    fn stop_inner(&self, grace: Option<Duration>) -> Result<StopReport, Error> {
        self.shared.request_stop(StopCause::Requested, grace);
        self.join()
    }

    /// Blocks until the thread has stopped (for whatever reason: a stop request, a signal) and
    /// returns the report. A daemon's `main` is `start()` followed by `join()`. Returns
    /// [`Error::NotStarted`] for a thread that was never started and is not stopped, since it
    /// would wait forever.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] for a thread never started and not stopped; [`Error::WouldJoinItself`]
    /// on the runtime's own threads; [`Error::Panicked`] if the runtime thread itself panicked.
    pub fn join(&self) -> Result<StopReport, Error> {
        if context::belongs_to(self.shared.id) {
            return Err(Error::WouldJoinItself);
        }
        let mut thread = self.thread.lock();
        match std::mem::replace(&mut *thread, ThreadState::NotStarted) {
            ThreadState::NotStarted if self.shared.handoff.is_closed() => Ok(StopReport::default()),
            ThreadState::NotStarted => Err(Error::NotStarted),
            ThreadState::Running(handle) => {
                let report = handle.join().map_err(|payload| Error::Panicked {
                    message: panic_message(&*payload),
                })?;
                *thread = ThreadState::Joined(report.clone());
                Ok(report)
            }
            ThreadState::Joined(report) => {
                *thread = ThreadState::Joined(report.clone());
                Ok(report)
            }
        }
    }

    /// Runs `future` on the runtime thread and returns a handle to its result.
    ///
    /// The future is polled once straight away on the runtime thread; if it is not ready it
    /// becomes a tokio task. If the thread is not running, the handle is already resolved with
    /// [`Error::NotStarted`] or [`Error::Stopped`].
    #[track_caller]
    pub fn run_threadsafe<F>(&self, future: F) -> TaskHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.run_named(future, WorkName::Caller(Location::caller()))
    }

    /// [`run_threadsafe`](Self::run_threadsafe), naming the work in the development mode.
    pub(crate) fn run_named<F>(&self, future: F, name: WorkName) -> TaskHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let completion = Arc::new(Completion::new());
        let mut handle = TaskHandle::new(completion.clone(), self.shared.spin.clone());
        if self.shared.dev.is_some() {
            handle.report_unread_failure(name.clone());
        }
        self.shared.submit(future, completion, false, name);
        handle
    }

    /// Runs `future` on the runtime thread without waiting for it (fire and forget). A panic, or
    /// an `Err` the future returns, is logged through `tracing`; the future returns `()` or a
    /// `Result` (see [`TaskOutput`] for why). The returned handle can cancel it.
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] or [`Error::Stopped`] at once if the thread is not running, so a
    /// refused task is never silently lost.
    #[track_caller]
    pub fn spawn_threadsafe<F>(&self, future: F) -> Result<AbortHandle, Error>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        self.spawn_named(future, WorkName::Caller(Location::caller()))
    }

    /// [`spawn_threadsafe`](Self::spawn_threadsafe), naming the work in the development mode.
    pub(crate) fn spawn_named<F>(&self, future: F, name: WorkName) -> Result<AbortHandle, Error>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        self.shared
            .spawn_reported(future, name)
            .map(|completion| AbortHandle::new(completion))
    }

    /// A way for the layers above to hand this thread work from tasks that run on it, without
    /// those tasks keeping the thread alive.
    pub(crate) fn spawner(&self) -> Spawner {
        Spawner::new(self.shared.clone())
    }

    /// Runs the blocking closure `job` on the runtime's blocking pool (the `run_in_executor`
    /// analogue). The handle behaves as for [`run_threadsafe`](Self::run_threadsafe); a panic
    /// comes back as [`Error::Panicked`]. A job still running when the thread stops is left to
    /// finish on its own thread (reported as detached) and its handle resolves with `Stopped`.
    pub fn submit_blocking<F, R>(&self, job: F) -> TaskHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let completion = Arc::new(Completion::new());
        let handle = TaskHandle::new(completion.clone(), self.shared.spin.clone());
        let runtime = match (self.shared.handoff.refusal(), self.shared.runtime.get()) {
            (None, Some(runtime)) => runtime,
            (refusal, _) => {
                completion.resolve(Err(refusal.unwrap_or(Error::NotStarted)));
                return handle;
            }
        };
        self.shared.counters.submitted.fetch_add(1, Relaxed);
        let blocking = BlockingJob {
            completion: Some(completion),
            shared: self.shared.clone(),
            _tracked: self.shared.tracker.token(),
        };
        runtime.spawn_blocking(move || blocking.run(job));
        handle
    }

    /// Registers a startup task on a built thread (see
    /// [`Builder::startup_task`](crate::Builder::startup_task)). Before start it is kept for the
    /// start; on a running thread it starts at once; on a stopping or stopped thread it is refused
    /// with [`Error::Stopped`]. It is never silently dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] on a thread that is stopping or has stopped.
    pub fn register_startup_task<F, Fut>(
        &self,
        name: impl Into<String>,
        factory: F,
    ) -> Result<(), Error>
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: TaskOutput,
    {
        let task = StartupTask::new(name, factory);
        {
            let mut pending = self.shared.pending_startup.lock();
            if self.shared.handoff.is_closed() {
                return Err(Error::Stopped);
            }
            if let Some(pending) = pending.as_mut() {
                pending.push(task);
                return Ok(());
            }
        }
        // The runtime thread took the list, so the thread is running (or already stopping).
        if let Some(refusal) = self.shared.handoff.refusal() {
            return Err(refusal);
        }
        let prepared = startup::prepare(&self.shared.startup_records, task);
        let shared = self.shared.clone();
        self.shared.enqueue(Box::pin(async move {
            prepared.spawn(&shared.shutdown, &shared.tracker, shared.dev.is_some())
        }));
        Ok(())
    }

    /// A token that is cancelled when a stop begins. Futures submitted with `run_threadsafe` or
    /// `spawn_threadsafe` can watch it to finish cleanly within the grace period.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// The runtime's tokio handle, for power users (spawning directly bypasses this crate's
    /// bookkeeping: such tasks are not tracked, counted or given a grace period).
    ///
    /// # Errors
    ///
    /// [`Error::NotStarted`] before the thread starts, [`Error::Stopped`] once it is stopping.
    pub fn handle(&self) -> Result<tokio::runtime::Handle, Error> {
        if self.shared.handoff.is_closed() {
            return Err(Error::Stopped);
        }
        self.shared.runtime.get().cloned().ok_or(Error::NotStarted)
    }

    /// The startup tasks started so far and how each has ended, or
    /// [`StartupOutcome::Running`](crate::StartupOutcome::Running).
    pub fn startup_tasks(&self) -> Vec<StartupTaskReport> {
        self.shared.startup_records.snapshot()
    }

    /// Counts of submitted, completed and in-flight work.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Returns a guard that stops the thread when dropped, even during a panic (the `with`
    /// statement analogue), starting the thread first unless it already runs.
    ///
    /// ```
    /// use runtime_thread::RuntimeThread;
    ///
    /// let rt = RuntimeThread::builder().start()?;   // started the usual way
    /// {
    ///     let running = rt.start_guard()?;           // a guard for it all the same
    ///     running.run_threadsafe(async {}).wait()?;
    /// }
    /// assert!(!rt.is_running());
    /// # Ok::<(), runtime_thread::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Stopped`] for a thread that is stopping or has stopped, and whatever
    /// [`start`](Self::start) fails with.
    pub fn start_guard(&self) -> Result<StopGuard<'_>, Error> {
        match self.start() {
            Ok(()) => {}
            Err(Error::AlreadyStarted) if self.is_running() => {}
            Err(Error::AlreadyStarted) => return Err(Error::Stopped),
            Err(error) => return Err(error),
        }
        Ok(StopGuard { thread: self })
    }

    /// Runs `body` with the thread running, starting it first unless it already runs, and
    /// stops the thread afterwards, even if `body` panics (the panic then continues once the
    /// thread has stopped).
    ///
    /// ```
    /// use runtime_thread::RuntimeThread;
    ///
    /// let rt = RuntimeThread::builder().build()?;
    /// let n = rt.scope(|rt| rt.run_threadsafe(async { 5 }).wait())??;
    /// assert_eq!(n, 5);
    /// assert!(!rt.is_running());
    /// # Ok::<(), runtime_thread::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`start_guard`](Self::start_guard) (a thread that cannot start); the body's own
    /// result is returned inside `Ok`.
    pub fn scope<R>(&self, body: impl FnOnce(&RuntimeThread) -> R) -> Result<R, Error> {
        let guard = self.start_guard()?;
        Ok(body(&guard))
    }
}

impl Drop for RuntimeThread {
    fn drop(&mut self) {
        self.shared.request_stop(StopCause::Dropped, None);
        if !context::belongs_to(self.shared.id) {
            let _ = self.join();
        }
    }
}

impl fmt::Debug for RuntimeThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeThread")
            .field("name", &self.name())
            .field("running", &self.is_running())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Stops its [`RuntimeThread`] when dropped; from [`RuntimeThread::start_guard`]. Dereferences to
/// the thread.
///
/// ```
/// use runtime_thread::RuntimeThread;
///
/// let rt = RuntimeThread::builder().build()?;
/// {
///     let running = rt.start_guard()?;
///     assert_eq!(running.run_threadsafe(async { 1 }).wait()?, 1);
/// } // stopped and joined here
/// assert!(!rt.is_running());
/// # Ok::<(), runtime_thread::Error>(())
/// ```
#[must_use = "the thread stops as soon as the guard is dropped"]
pub struct StopGuard<'a> {
    thread: &'a RuntimeThread,
}

impl StopGuard<'_> {
    /// Stops now and returns the report (dropping the guard stops too, discarding it).
    ///
    /// # Errors
    ///
    /// As [`RuntimeThread::stop`].
    pub fn stop(self) -> Result<StopReport, Error> {
        let thread = self.thread;
        std::mem::forget(self);
        thread.stop()
    }
}

impl std::ops::Deref for StopGuard<'_> {
    type Target = RuntimeThread;
    fn deref(&self) -> &RuntimeThread {
        self.thread
    }
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.thread.stop() {
            tracing::warn!(thread = %self.thread.name(), %error, "stopping on guard drop failed");
        }
    }
}

impl fmt::Debug for StopGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StopGuard").field(self.thread).finish()
    }
}

/// A blocking closure's bookkeeping: it resolves the handle however the closure ends, including
/// being dropped unrun when the pool shuts down.
struct BlockingJob<R> {
    completion: Option<Arc<Completion<R>>>,
    shared: Arc<Shared>,
    _tracked: tokio_util::task::task_tracker::TaskTrackerToken,
}

impl<R: Send + 'static> BlockingJob<R> {
    fn run(mut self, job: impl FnOnce() -> R) {
        let Some(completion) = self.completion.take() else {
            return;
        };
        if completion.cancel_requested() {
            self.shared.counters.add_completed(1);
            return;
        }
        let ticket = self.shared.blocking.enter(completion.clone());
        let outcome = catch_unwind(AssertUnwindSafe(job)).map_err(|payload| Error::Panicked {
            message: panic_message(&*payload),
        });
        // A job abandoned at stop was already counted and resolved there.
        if self.shared.blocking.leave(ticket) {
            completion.resolve(outcome);
            self.shared.counters.add_completed(1);
        }
    }
}

impl<R> Drop for BlockingJob<R> {
    fn drop(&mut self) {
        if let Some(completion) = self.completion.take() {
            completion.resolve(Err(Error::Stopped));
            self.shared.counters.add_completed(1);
        }
    }
}

/// How the serving phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GraceEnd {
    Drained,
    Expired,
    Forced,
}

fn thread_main(shared: Arc<Shared>, ready: SyncSender<Result<(), Error>>) -> StopReport {
    let (runtime, listener, _registration) = match set_up(&shared) {
        Ok(parts) => parts,
        Err(error) => {
            shared.handoff.close::<Job>();
            let _ = ready.send(Err(Error::start_failed(error)));
            return StopReport::default();
        }
    };
    context::enter(Some(Membership {
        runtime: shared.id,
        scheduler: shared.config.flavor == Flavor::CurrentThread,
    }));
    if let Some(dev) = &shared.dev {
        dev.join_thread();
        if let Err(error) = dev.start_watchdog() {
            tracing::warn!(thread = %shared.config.name, %error, "the development mode's watchdog could not start; slow polls are still reported");
        }
    }
    let end = runtime.block_on(serve(&shared, listener, ready));
    // Still a member while the runtime drops its tasks: a task holding the last handle to this
    // thread then drops it here, and that handle must not try to join its own thread.
    let report = shut_down(runtime, &shared, end);
    context::enter(None);
    report
    // `_registration` drops here, after the runtime: the signals are released last.
}

#[cfg(unix)]
type Registration = Option<SignalRegistration>;
#[cfg(not(unix))]
type Registration = ();
#[cfg(unix)]
type Listener = Option<SignalListener>;
#[cfg(not(unix))]
type Listener = ();

fn set_up(shared: &Shared) -> io::Result<(tokio::runtime::Runtime, Listener, Registration)> {
    let runtime = build_runtime(shared)?;
    #[cfg(unix)]
    {
        if shared.config.signals.is_empty() {
            return Ok((runtime, None, None));
        }
        let registration = SignalRegistration::register(&shared.config.signals)?;
        let listener = {
            let _entered = runtime.enter();
            registration.listener()?
        };
        Ok((runtime, Some(listener), Some(registration)))
    }
    #[cfg(not(unix))]
    Ok((runtime, (), ()))
}

fn build_runtime(shared: &Shared) -> io::Result<tokio::runtime::Runtime> {
    let config = &shared.config;
    let mut builder = match config.flavor {
        Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
        Flavor::MultiThread { workers } => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
    };
    builder
        .enable_all()
        .thread_name(format!("{}-pool", config.name));
    if let Some(threads) = config.max_blocking_threads {
        builder.max_blocking_threads(threads);
    }
    let id = shared.id;
    let dev = shared.dev.clone();
    builder.on_thread_start(move || {
        context::enter(Some(Membership {
            runtime: id,
            scheduler: false,
        }));
        // Workers poll tasks too; the blocking pool's threads join as well, harmlessly.
        if let Some(dev) = &dev {
            dev.join_thread();
        }
    });
    if shared.dev.is_some() {
        builder.on_thread_stop(Dev::leave_thread);
    }
    builder.build()
}

/// The runtime thread's main future: serve until a stop is requested, then give the grace period.
async fn serve(
    shared: &Arc<Shared>,
    #[allow(unused_mut)] mut listener: Listener,
    ready: SyncSender<Result<(), Error>>,
) -> GraceEnd {
    let runtime = tokio::runtime::Handle::current();
    runtime.spawn(Dispatcher::new(shared.clone()));
    let _ = shared.runtime.set(runtime);
    // A stop requested while starting is honoured right below; the thread still starts cleanly.
    shared.handoff.mark_running();
    let registered = shared.pending_startup.lock().take().unwrap_or_default();
    for task in registered {
        startup::prepare(&shared.startup_records, task).spawn(
            &shared.shutdown,
            &shared.tracker,
            shared.dev.is_some(),
        );
    }
    let _ = ready.send(Ok(()));

    wait_for_stop_request(shared, &mut listener).await;

    Dispatcher::new(shared.clone()).flush();
    shared.tracker.close();
    let grace = shared.grace();
    tokio::select! {
        biased;
        _ = shared.force.cancelled() => GraceEnd::Forced,
        _ = shared.tracker.wait() => GraceEnd::Drained,
        _ = tokio::time::sleep(grace) => GraceEnd::Expired,
        _ = next_signal(&mut listener) => {
            tracing::warn!(thread = %shared.config.name, "second signal: aborting without waiting for the grace period");
            GraceEnd::Forced
        }
    }
}

async fn wait_for_stop_request(shared: &Shared, listener: &mut Listener) {
    tokio::select! {
        _ = shared.shutdown.cancelled() => {}
        received = next_signal(listener) => {
            tracing::info!(thread = %shared.config.name, signal = received.1, "signal received: stopping");
            shared.request_stop(StopCause::Signal(received.1), None);
            if received.0 > 1 {
                shared.force.cancel();
            }
        }
    }
}

/// The next signal as (how many arrived, the last one's number); never resolves without signals.
#[cfg(unix)]
async fn next_signal(listener: &mut Listener) -> (usize, i32) {
    let received = signals::next(listener).await;
    (received.count, received.signal)
}

#[cfg(not(unix))]
async fn next_signal(_listener: &mut Listener) -> (usize, i32) {
    std::future::pending().await
}

fn shut_down(runtime: tokio::runtime::Runtime, shared: &Shared, end: GraceEnd) -> StopReport {
    let wait = if shared.blocking.running() > 0 {
        DETACH_WAIT
    } else {
        POOL_EXIT_WAIT
    };
    // Drops every task still running (resolving its handle with `Stopped`) and waits a bounded
    // time for the blocking pool.
    runtime.shutdown_timeout(wait);
    let discarded = shared.handoff.close::<Job>();
    shared.counters.add_completed(discarded);
    let detached = shared.blocking.abandon_all();
    shared.counters.add_completed(detached);
    let report = StopReport {
        cause: shared.stop_cause(),
        startup_tasks: shared.startup_records.snapshot(),
        tasks_aborted: shared.counters.aborted.load(Relaxed),
        jobs_discarded: discarded as u64,
        blocking_detached: detached as u64,
        grace_expired: end == GraceEnd::Expired,
        forced: end == GraceEnd::Forced,
        dev: shared.dev.as_ref().map(|dev| dev.finish()),
        elapsed: shared
            .stop_requested_at()
            .map_or(Duration::ZERO, |at| Instant::now() - at),
    };
    tracing::info!(
        thread = %shared.config.name,
        cause = ?report.cause,
        elapsed = ?report.elapsed,
        tasks_aborted = report.tasks_aborted,
        jobs_discarded = report.jobs_discarded,
        blocking_detached = report.blocking_detached,
        "runtime thread stopped"
    );
    report
}
