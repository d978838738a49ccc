//! The one error type of the core layer.

use std::sync::Arc;
use std::time::Duration;

/// Everything that can go wrong when starting, stopping or submitting work to a
/// [`RuntimeThread`](crate::RuntimeThread), or when waiting for a [`TaskHandle`](crate::TaskHandle).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Work was submitted before [`start`](crate::RuntimeThread::start) was called.
    #[error("the runtime thread has not been started: call `start()` before submitting work")]
    NotStarted,
    /// [`start`](crate::RuntimeThread::start) was called on a thread that was started (or stopped) before.
    #[error("the runtime thread was already started: a RuntimeThread can be started only once")]
    AlreadyStarted,
    /// The OS thread, the tokio runtime or a signal handler could not be set up.
    #[error("the runtime thread failed to start: {0}")]
    StartFailed(#[source] Arc<std::io::Error>),
    /// The builder was given a value it cannot use.
    #[error("invalid runtime-thread configuration: {0}")]
    InvalidConfig(String),
    /// The thread is stopping or has stopped: the work was refused, or was never run, or was still
    /// running when the grace period ended.
    #[error("the runtime thread is stopping or has stopped, so this work was not completed")]
    Stopped,
    /// The task was cancelled through its handle before it finished.
    #[error("the task was cancelled before it finished")]
    Cancelled,
    /// The task panicked; the runtime thread caught the panic and keeps serving other work.
    ///
    /// As with tokio's `JoinError`, the panic is also reported as it happens by the process's
    /// panic hook, which runs before the panic is caught: the default hook prints the message
    /// (and a backtrace with `RUST_BACKTRACE=1`) on stderr. A program that expects panics in
    /// its tasks and reports them through this error can keep stderr quiet with a hook of its
    /// own, for example one that stays silent on the runtime's threads (named after the
    /// builder's `name`, its pool `<name>-pool`):
    ///
    /// ```
    /// let default_hook = std::panic::take_hook();
    /// std::panic::set_hook(Box::new(move |info| {
    ///     let on_runtime = std::thread::current()
    ///         .name()
    ///         .is_some_and(|name| name.starts_with("my-runtime"));
    ///     if !on_runtime {
    ///         default_hook(info);
    ///     }
    /// }));
    /// # let _ = std::panic::take_hook();
    /// ```
    #[error("the task panicked: {message}")]
    Panicked {
        /// The panic payload, when it was a string.
        message: String,
    },
    /// A bounded wait ended before the task did. The handle is still usable.
    #[error("the task did not finish within {0:?}")]
    TimedOut(Duration),
    /// A blocking wait was issued on a current-thread runtime's own thread, where it could only
    /// deadlock: `.await` the handle there instead.
    #[error(
        "a blocking wait on the runtime thread itself would deadlock it: `.await` the handle instead \
         (or use the multi-thread flavour, where blocking waits from tasks are allowed)"
    )]
    WouldDeadlock,
    /// [`stop`](crate::RuntimeThread::stop) or [`join`](crate::RuntimeThread::join) was
    /// called on the runtime's own threads, which cannot wait for themselves to end. A `stop`
    /// has requested the stop all the same.
    #[error(
        "stop() and join() wait for the runtime thread to end, which cannot happen while they run \
         on it: use request_stop() there (stop() has requested it already), and stop or join \
         from another thread"
    )]
    WouldJoinItself,
    /// The result was already taken out of this handle by an earlier successful wait.
    #[error("the result was already taken from this handle")]
    ResultTaken,
}

impl Error {
    pub(crate) fn start_failed(error: std::io::Error) -> Self {
        Error::StartFailed(Arc::new(error))
    }
}

/// The message carried by a panic payload, or a placeholder when it is not a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}
