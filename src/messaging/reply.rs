//! [`Reply`]: the handle of a [`SyncCommunicator`](super::SyncCommunicator) operation.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use super::error::Error;
use crate::thread::TaskHandle;

/// An operation of a [`SyncCommunicator`](super::SyncCommunicator), running on its runtime
/// thread: block on it ([`wait`](Self::wait), [`wait_timeout`](Self::wait_timeout)), poll it,
/// cancel it, leave a callback, or `.await` it from any executor. Its outcome is the
/// operation's, in the messaging layer's one error type: a communicator whose runtime thread
/// has stopped answers [`Error::Closed`].
///
/// ```
/// use runtime_thread::messaging::{Communicator, Error, Handler, SyncCommunicator, Value};
///
/// let comm = SyncCommunicator::local()?;
/// comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)).wait()?;
/// assert_eq!(comm.rpc_send("echo", 1.into()).wait()?, 1);
/// assert!(matches!(comm.rpc_send("nobody", 1.into()).wait(), Err(Error::Unroutable { .. })));
/// comm.close();
/// assert!(matches!(comm.rpc_send("echo", 1.into()).wait(), Err(Error::Closed)));
/// # Ok::<(), Error>(())
/// ```
#[must_use = "dropping a Reply detaches the operation; call `wait` or `.await` it to see its outcome"]
pub struct Reply<T> {
    handle: TaskHandle<Result<T, Error>>,
}

impl<T: Send + 'static> Reply<T> {
    pub(crate) fn new(mut handle: TaskHandle<Result<T, Error>>) -> Self {
        // Dropped unread in the development mode, an operation that failed is reported too.
        handle.count_as_failure(failed::<T>);
        Reply { handle }
    }

    /// Blocks until the operation is done.
    ///
    /// # Errors
    ///
    /// The operation's error; [`Error::Closed`] if the communicator's runtime thread has
    /// stopped; [`Error::Thread`] for a wait that cannot be made here (on the runtime thread
    /// itself: `.await` there instead).
    pub fn wait(self) -> Result<T, Error> {
        flatten(self.handle.wait())
    }

    /// Like [`wait`](Self::wait), up to `timeout`; after a time-out (`Error::Thread` of
    /// `TimedOut`) the reply is still usable.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), and the time-out.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<T, Error> {
        flatten(self.handle.wait_timeout(timeout))
    }

    /// True once the operation has finished (with any outcome).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Cancels the operation (a waiting send stops waiting); false if it had finished.
    pub fn cancel(&self) -> bool {
        self.handle.cancel()
    }

    /// Calls `callback` once with the outcome: at once if the operation is done, otherwise on
    /// the thread that finishes it (the runtime thread: keep it short).
    pub fn on_done<F>(self, callback: F)
    where
        F: FnOnce(Result<T, Error>) + Send + 'static,
    {
        self.handle
            .on_done(move |outcome| callback(flatten(outcome)));
    }
}

impl<T: Send + 'static> Future for Reply<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.handle).poll(cx).map(flatten)
    }
}

impl<T> fmt::Debug for Reply<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Reply").field(&self.handle).finish()
    }
}

/// The two layers of outcome as one: a runtime thread that has stopped means closed.
fn flatten<T>(outcome: Result<Result<T, Error>, crate::thread::Error>) -> Result<T, Error> {
    match outcome {
        Ok(result) => result,
        Err(crate::thread::Error::Stopped | crate::thread::Error::NotStarted) => Err(Error::Closed),
        Err(other) => Err(Error::Thread(other)),
    }
}

/// A messaging operation's failure: its error (but `Closed`, which the program asked for), or
/// a panic.
fn failed<T>(outcome: &Result<Result<T, Error>, crate::thread::Error>) -> Option<String> {
    match outcome {
        Ok(Ok(_)) | Ok(Err(Error::Closed)) => None,
        Ok(Err(error)) => Some(format!("failed: {error}")),
        Err(crate::thread::Error::Panicked { message }) => Some(format!("panicked: {message}")),
        Err(_) => None,
    }
}
