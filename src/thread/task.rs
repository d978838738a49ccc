//! The wrapper every submitted future runs in: it catches panics, honours cancellation from the
//! handle, and resolves the handle exactly once, even when the runtime drops it unfinished.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::completion::Completion;
use super::error::{Error, panic_message};

/// A type-erased job as it travels through the injection queue.
pub(crate) type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What a fire-and-forget task ([`spawn_threadsafe`](crate::RuntimeThread::spawn_threadsafe),
/// a startup task) may return: nothing, or a `Result` whose error is then reported (through
/// `tracing`, or in the stop report) instead of being lost.
///
/// Why not any type, as `tokio::spawn` takes: nobody reads a detached task's output, so an
/// `Err` in it would vanish silently, and without specialisation a generic bound cannot tell a
/// `Result` from other types. A future with another output ends with `;` to drop it, or
/// runs with [`run_threadsafe`](crate::RuntimeThread::run_threadsafe), whose handle gives the
/// value back.
///
/// ```compile_fail
/// # let rt = runtime_thread::RuntimeThread::builder().start()?;
/// rt.spawn_threadsafe(async { 42_usize })?; // a usize would be dropped unseen
/// # Ok::<(), runtime_thread::Error>(())
/// ```
///
/// ```
/// # let rt = runtime_thread::RuntimeThread::builder().start()?;
/// rt.spawn_threadsafe(async { 42_usize; })?; // dropped on purpose
/// rt.spawn_threadsafe(async { "42".parse::<usize>() })?; // an Err would be logged
/// # Ok::<(), runtime_thread::Error>(())
/// ```
#[diagnostic::on_unimplemented(
    message = "a detached task must return `()` or a `Result`, not `{Self}`",
    label = "this future's output would be dropped unseen",
    note = "end the future with `;` to drop the value on purpose, or use `run_threadsafe` to get it back",
    note = "a `Result` is accepted: its error is logged instead of lost"
)]
pub trait TaskOutput: Send + 'static {
    /// The failure to report, if the task failed.
    fn failure(&self) -> Option<String>;
}

impl TaskOutput for () {
    fn failure(&self) -> Option<String> {
        None
    }
}

impl<T, E> TaskOutput for Result<T, E>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    fn failure(&self) -> Option<String> {
        self.as_ref().err().map(ToString::to_string)
    }
}

pin_project! {
    /// Drives `future` and writes its outcome into `completion`.
    pub(crate) struct Supervised<F: Future> {
        // `None` once finished: the future is dropped here, isolated, rather than wherever the
        // wrapper itself happens to be dropped (possibly inside the dispatcher's poll).
        #[pin]
        future: Option<F>,
        completion: Arc<Completion<F::Output>>,
        // Nobody waits on a detached task's handle, so its panic must be logged loudly.
        detached: bool,
    }

    impl<F: Future> PinnedDrop for Supervised<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.future.is_some() {
                this.completion.resolve(Err(Error::Stopped));
            }
        }
    }
}

impl<F: Future> Supervised<F> {
    pub(crate) fn new(future: F, completion: Arc<Completion<F::Output>>, detached: bool) -> Self {
        Supervised {
            future: Some(future),
            completion,
            detached,
        }
    }
}

impl<F: Future> Future for Supervised<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        let Some(future) = this.future.as_mut().as_pin_mut() else {
            return Poll::Ready(());
        };
        if this.completion.cancel_requested() {
            release(this.future);
            return Poll::Ready(());
        }
        let outcome = match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(value)) => Ok(value),
            Ok(Poll::Pending) => {
                this.completion.register_task(cx.waker());
                if !this.completion.cancel_requested() {
                    return Poll::Pending;
                }
                release(this.future);
                return Poll::Ready(());
            }
            Err(payload) => {
                let message = panic_message(&*payload);
                if *this.detached {
                    tracing::error!(panic = %message, "a task spawned with spawn_threadsafe panicked");
                } else {
                    tracing::debug!(panic = %message, "a submitted task panicked");
                }
                Err(Error::Panicked { message })
            }
        };
        release(this.future);
        this.completion.resolve(outcome);
        Poll::Ready(())
    }
}

/// Drops a finished or cancelled future; a panic in its `Drop` is logged, not propagated into the
/// runtime.
fn release<F>(mut future: Pin<&mut Option<F>>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || future.set(None))) {
        tracing::error!(panic = %panic_message(&*payload), "dropping a finished task panicked");
    }
}

/// Turns a fire-and-forget future into one whose failure is reported rather than dropped.
pub(crate) async fn report_failure<F>(future: F)
where
    F: Future,
    F::Output: TaskOutput,
{
    if let Some(failure) = future.await.failure() {
        tracing::error!(error = %failure, "a task spawned with spawn_threadsafe failed");
    }
}
