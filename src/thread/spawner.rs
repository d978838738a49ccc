//! [`Spawner`]: how the layers above hand a runtime thread work from tasks that run on it.
//!
//! A task on the runtime thread that held the [`RuntimeThread`](super::RuntimeThread) itself
//! would keep alive the very thread that runs it: dropped by the user, the thread would never
//! stop. A spawner reaches the same queue without that: it refuses work once the thread has
//! stopped, and stopping stays the business of whoever holds the `RuntimeThread`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use super::dev::WorkName;
use super::error::Error;
use super::shared::Shared;
use super::spin::Spin;
use super::task::TaskOutput;

/// Submits work to a runtime thread without keeping it alive.
#[derive(Clone)]
pub(crate) struct Spawner {
    shared: Arc<Shared>,
}

impl Spawner {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Spawner { shared }
    }

    /// See `Shared::spawn_job`: no handle, refused once the thread stopped; `name` names the
    /// job in the development mode (and is not called otherwise).
    pub(crate) fn spawn_job(
        &self,
        job: impl Future<Output = ()> + Send + 'static,
        name: impl FnOnce() -> String,
    ) -> Result<(), Error> {
        self.shared.spawn_job(job, name)
    }

    /// Whether the thread runs in the development mode, so that the work it runs should say
    /// what it is doing (see `dev::describe`).
    pub(crate) fn dev_mode(&self) -> bool {
        self.shared.dev.is_some()
    }

    /// [`RuntimeThread::spawn_threadsafe`](super::RuntimeThread::spawn_threadsafe), without
    /// the handle.
    #[track_caller]
    pub(crate) fn spawn_reported<F>(&self, future: F) -> Result<(), Error>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let name = WorkName::Caller(std::panic::Location::caller());
        self.shared.spawn_reported(future, name).map(drop)
    }

    /// How blocking waiters on this thread's work spin before they sleep.
    pub(crate) fn spin(&self) -> &Spin {
        &self.shared.spin
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spawner")
            .field("thread", &self.shared.config.name)
            .finish()
    }
}
