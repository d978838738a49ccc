//! [`Named`]: submitting work under a name, for the development mode's reports.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::dev::WorkName;
use super::error::Error;
use super::handle::{AbortHandle, TaskHandle};
use super::runtime_thread::RuntimeThread;
use super::task::TaskOutput;

/// Submits work to a [`RuntimeThread`] under a name, which the
/// [development mode](crate::Builder::dev_mode) uses in its reports instead of the place the
/// work was submitted from; made by [`RuntimeThread::named`]. Without the mode the name is
/// not used, and the work runs exactly as it would unnamed.
///
/// ```
/// use runtime_thread::RuntimeThread;
///
/// let rt = RuntimeThread::builder().start()?;
/// let answer = rt.named("the answer").run_threadsafe(async { 42 }).wait()?;
/// assert_eq!(answer, 42);
/// # Ok::<(), runtime_thread::Error>(())
/// ```
pub struct Named<'a> {
    thread: &'a RuntimeThread,
    name: Arc<str>,
}

impl RuntimeThread {
    /// Names the work submitted through the returned [`Named`].
    pub fn named(&self, name: impl Into<Arc<str>>) -> Named<'_> {
        Named {
            thread: self,
            name: name.into(),
        }
    }
}

impl Named<'_> {
    /// [`RuntimeThread::run_threadsafe`] under this name.
    pub fn run_threadsafe<F>(&self, future: F) -> TaskHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.thread.run_named(future, self.work())
    }

    /// [`RuntimeThread::spawn_threadsafe`] under this name.
    ///
    /// # Errors
    ///
    /// As [`RuntimeThread::spawn_threadsafe`].
    pub fn spawn_threadsafe<F>(&self, future: F) -> Result<AbortHandle, Error>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        self.thread.spawn_named(future, self.work())
    }

    fn work(&self) -> WorkName {
        WorkName::Named(self.name.clone())
    }
}

impl fmt::Debug for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named")
            .field("thread", &self.thread.name())
            .field("name", &self.name)
            .finish()
    }
}
