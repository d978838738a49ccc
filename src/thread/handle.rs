//! [`TaskHandle`] and [`AbortHandle`]: what a caller holds for submitted work.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, RuntimeFlavor};

use super::completion::{Completion, Resolve};
use super::context;
use super::dev::WorkName;
use super::error::Error;
use super::spin::Spin;

/// The result of work submitted with [`run_threadsafe`](crate::RuntimeThread::run_threadsafe) or
/// [`submit_blocking`](crate::RuntimeThread::submit_blocking).
///
/// It is not tied to the runtime that produced it: block on it from any thread ([`wait`],
/// [`wait_timeout`]), poll it ([`is_finished`]), [`cancel`] it, leave a callback ([`on_done`]), or
/// `.await` it from any executor. Dropping the handle detaches the work; it still runs.
///
/// Every handle resolves: with the value, or with [`Error::Cancelled`], [`Error::Panicked`] or
/// [`Error::Stopped`] (when the thread stops before the work finished). No caller waits forever.
///
/// ```
/// use std::time::Duration;
/// use runtime_thread::{Error, RuntimeThread};
///
/// let rt = RuntimeThread::builder().start()?;
/// let mut slow = rt.run_threadsafe(async {
///     tokio::time::sleep(Duration::from_secs(60)).await;
/// });
/// assert!(matches!(slow.wait_timeout(Duration::from_millis(10)), Err(Error::TimedOut(_))));
/// assert!(slow.cancel());
/// assert!(matches!(slow.wait(), Err(Error::Cancelled)));
/// # Ok::<(), Error>(())
/// ```
///
/// # In detail
///
/// A `TaskHandle` always resolves, exactly once: with the value, or
/// `Cancelled`, `Panicked { message }` (the runtime thread survives and serves the next call) or
/// `Stopped`. `wait()` blocks; `wait_timeout(d)` returns `TimedOut` and leaves the handle usable;
/// `is_finished()` polls; the handle is a `Future` usable from any executor. `cancel()` resolves the
/// handle with `Cancelled` at once and drops the future at its next poll; a blocking closure that has
/// started cannot be interrupted, so its result is discarded. `on_done(f)` calls `f` exactly once: at
/// once on the calling thread if the work is done, otherwise on the thread that finishes it (usually
/// the runtime thread, so keep it short). Dropping a handle detaches the work; it still runs.
///
/// [`wait`]: TaskHandle::wait
/// [`wait_timeout`]: TaskHandle::wait_timeout
/// [`is_finished`]: TaskHandle::is_finished
/// [`cancel`]: TaskHandle::cancel
/// [`on_done`]: TaskHandle::on_done
#[must_use = "dropping a TaskHandle detaches the work; call `wait`, `.await` or `on_done` to see its result"]
pub struct TaskHandle<T> {
    completion: Arc<Completion<T>>,
    /// How the runtime thread that resolves it wants its waiters to spin.
    spin: Arc<Spin>,
    /// In the development mode, the work, to report a panic nobody read.
    unread: Option<Unread<T>>,
}

impl<T> TaskHandle<T> {
    pub(crate) fn new(completion: Arc<Completion<T>>, spin: Arc<Spin>) -> Self {
        TaskHandle {
            completion,
            spin,
            unread: None,
        }
    }

    /// Reports the work's panic if this handle is dropped without its result being read
    /// (the development mode's "failures nobody read").
    pub(crate) fn report_unread_failure(&mut self, work: WorkName)
    where
        T: Send + 'static,
    {
        self.unread = Some(Unread {
            work,
            failure: panicked::<T>,
            leave: leave_report::<T>,
        });
    }

    /// In the development mode, counts `failure` as a failure to report when the handle is
    /// dropped unread (besides a panic): an `Err` that the work itself returned, say.
    pub(crate) fn count_as_failure(&mut self, failure: Failure<T>) {
        if let Some(unread) = &mut self.unread {
            unread.failure = failure;
        }
    }
}

/// What counts as a failure in an outcome, as text: a panic for any work, and for work whose
/// value is itself a `Result` (a messaging operation's), its error too.
pub(crate) type Failure<T> = fn(&Result<T, Error>) -> Option<String>;

/// The failure of any work: a panic.
fn panicked<T>(result: &Result<T, Error>) -> Option<String> {
    match result {
        Err(Error::Panicked { message }) => Some(format!("panicked: {message}")),
        _ => None,
    }
}

// In the development mode, a handle dropped with its outcome unread leaves a callback that
// reports a failure (at once if the work is done), as asyncio reports "Task exception was never
// retrieved": nobody else will see it. The callback slot is the one `on_done` uses, which
// clears `unread` first, so the two never meet.
impl<T> Drop for TaskHandle<T> {
    fn drop(&mut self) {
        if let Some(unread) = self.unread.take()
            && !self.completion.is_taken()
        {
            (unread.leave)(unread.work, unread.failure, &self.completion);
        }
    }
}

/// In the development mode: the work, what counts as its failure, and how to leave the report
/// (a function made where `T` is known to live long enough for a callback).
struct Unread<T> {
    work: WorkName,
    failure: Failure<T>,
    leave: fn(WorkName, Failure<T>, &Completion<T>),
}

fn leave_report<T: Send + 'static>(
    work: WorkName,
    failure: Failure<T>,
    completion: &Completion<T>,
) {
    completion.on_resolved(Box::new(move |outcome| {
        if let Some(failure) = failure(&outcome) {
            tracing::error!(
                target: "runtime_thread::dev",
                %work,
                %failure,
                "unread failure: {work} {failure}; its handle was dropped without reading it"
            );
        }
    }));
}

impl<T: Send + 'static> TaskHandle<T> {
    /// Blocks the calling thread until the work is done and returns its result.
    ///
    /// On the runtime thread of a current-thread [`RuntimeThread`](crate::RuntimeThread) this
    /// returns [`Error::WouldDeadlock`] at once unless the work is already done, because that
    /// thread is the only one that could finish it. On a multi-thread runtime's worker it moves
    /// the worker's other tasks away first (`tokio::task::block_in_place`) and then waits.
    ///
    /// # Errors
    ///
    /// The work's end when it did not produce a value: [`Error::Cancelled`], [`Error::Panicked`] or
    /// [`Error::Stopped`]; and [`Error::WouldDeadlock`] as described above.
    pub fn wait(self) -> Result<T, Error> {
        // Without a deadline `wait_until` always returns `Some`; the fallback only keeps this
        // free of a panic path.
        self.wait_before(None).unwrap_or(Err(Error::ResultTaken))
    }

    /// Like [`wait`](Self::wait), but gives up after `timeout` with [`Error::TimedOut`]; the handle
    /// stays usable, so the caller may wait again, cancel, or await.
    ///
    /// # Errors
    ///
    /// Those of [`wait`](Self::wait), and [`Error::TimedOut`] after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<T, Error> {
        let deadline = Instant::now().checked_add(timeout);
        self.wait_before(deadline)
            .unwrap_or(Err(Error::TimedOut(timeout)))
    }

    /// Like [`wait_timeout`](Self::wait_timeout), up to a point in time: several handles can
    /// share one deadline. After it, [`Error::TimedOut`] (with the time this call waited) and
    /// the handle stays usable.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use runtime_thread::RuntimeThread;
    ///
    /// let rt = RuntimeThread::builder().start()?;
    /// let mut handles: Vec<_> = (0..3).map(|i| rt.run_threadsafe(async move { i * 2 })).collect();
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// let doubled: Vec<u32> = handles
    ///     .iter_mut()
    ///     .map(|handle| handle.wait_until(deadline))
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(doubled, [0, 2, 4]);
    /// # Ok::<(), runtime_thread::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`wait`](Self::wait), and [`Error::TimedOut`] once `deadline` has passed.
    pub fn wait_until(&mut self, deadline: Instant) -> Result<T, Error> {
        let start = Instant::now();
        self.wait_before(Some(deadline))
            .unwrap_or_else(|| Err(Error::TimedOut(start.elapsed())))
    }

    fn wait_before(&self, deadline: Option<Instant>) -> Option<Result<T, Error>> {
        if let Some(outcome) = self.completion.try_take() {
            return Some(outcome);
        }
        spin_then_block(
            &self.spin,
            deadline,
            || self.completion.is_resolved(),
            || self.completion.wait(deadline),
        )
        .unwrap_or_else(|refused| Some(Err(refused)))
    }

    /// True once the work has finished (with any outcome), been cancelled, or been abandoned.
    pub fn is_finished(&self) -> bool {
        self.completion.is_resolved()
    }

    /// Cancels the work: the handle resolves with [`Error::Cancelled`] at once and the future is
    /// dropped at its next poll. A blocking closure that already runs cannot be interrupted; its
    /// result is discarded. Returns false if the work had already finished.
    pub fn cancel(&self) -> bool {
        self.completion.cancel()
    }

    /// Calls `callback` exactly once with the result: at once, on this thread, if the work is
    /// already done; otherwise on the thread that finishes it (usually the runtime thread, so keep
    /// the callback short and non-blocking). A panic in a callback run by that thread is caught and
    /// logged; one run at once on the calling thread propagates to the caller as usual.
    pub fn on_done<F>(mut self, callback: F)
    where
        F: FnOnce(Result<T, Error>) + Send + 'static,
    {
        self.unread = None;
        self.completion.on_resolved(Box::new(callback));
    }

    /// A cloneable handle that can only cancel the work or ask whether it finished.
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle::new(self.completion.clone())
    }
}

impl<T: Send + 'static> Future for TaskHandle<T> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.completion.poll_take(cx)
    }
}

impl<T> fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.completion.is_resolved())
            .finish()
    }
}

/// Cancels submitted work without being able to read its result; returned by
/// [`spawn_threadsafe`](crate::RuntimeThread::spawn_threadsafe) and
/// [`TaskHandle::abort_handle`].
///
/// ```
/// use runtime_thread::RuntimeThread;
///
/// let rt = RuntimeThread::builder().start()?;
/// let forever = rt.spawn_threadsafe(futures::future::pending::<()>())?;
/// assert!(!forever.is_finished());
/// assert!(forever.cancel());
/// assert!(forever.is_finished());
/// # Ok::<(), runtime_thread::Error>(())
/// ```
#[derive(Clone)]
pub struct AbortHandle {
    completion: Arc<dyn Resolve>,
}

impl AbortHandle {
    pub(crate) fn new(completion: Arc<dyn Resolve>) -> Self {
        AbortHandle { completion }
    }

    /// Cancels the work; returns false if it had already finished.
    pub fn cancel(&self) -> bool {
        self.completion.cancel()
    }

    /// True once the work has finished, been cancelled, or been abandoned at stop.
    pub fn is_finished(&self) -> bool {
        self.completion.is_resolved()
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AbortHandle")
            .field("finished", &self.completion.is_resolved())
            .finish()
    }
}

/// Runs a blocking `wait` where blocking is safe: refused with [`Error::WouldDeadlock`] on a
/// current-thread runtime's own thread (the work could never run), through `block_in_place`
/// on a multi-thread runtime's worker, and as it is anywhere else.
pub(crate) fn block_safely<R>(wait: impl FnOnce() -> R) -> Result<R, Error> {
    if context::on_a_scheduler_thread() {
        return Err(Error::WouldDeadlock);
    }
    Ok(match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    })
}

/// How every blocking waiter on a runtime thread's work waits: refused where blocking could
/// deadlock (see [`block_safely`]), then a short spin until `done` holds (see
/// [`Spin::until`]), then `sleep`, which blocks until the result is there or `deadline`.
pub(crate) fn spin_then_block<R>(
    spin: &Spin,
    deadline: Option<Instant>,
    done: impl Fn() -> bool,
    sleep: impl FnOnce() -> R,
) -> Result<R, Error> {
    block_safely(|| {
        spin.until(deadline, done);
        sleep()
    })
}
