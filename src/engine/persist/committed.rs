//! The answer to a save that is kept later than it is made.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;

use super::PersistError;

/// Ready when a save made through [`Persister::save_committed`](super::Persister::save_committed)
/// is kept by its store, with the store's failure if it could not be.
///
/// ```
/// use runtime_thread::engine::{Committed, PersistError};
///
/// # futures::executor::block_on(async {
/// Committed::now().await?;
/// Committed::later(async { Ok(()) }).await?;
/// let failed = Committed::later(async { Err(PersistError::store_failed("disk full")) });
/// assert!(failed.await.is_err());
/// # Ok::<(), PersistError>(())
/// # })?;
/// # Ok::<(), PersistError>(())
/// ```
#[must_use = "a save is only known to be kept once this is awaited"]
pub struct Committed(Option<BoxFuture<'static, Result<(), PersistError>>>);

impl Committed {
    /// A save that is kept already.
    pub fn now() -> Self {
        Committed(None)
    }

    /// A save that is kept when `commit` is ready.
    pub fn later(commit: impl Future<Output = Result<(), PersistError>> + Send + 'static) -> Self {
        Committed(Some(Box::pin(commit)))
    }
}

impl Future for Committed {
    type Output = Result<(), PersistError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            None => Poll::Ready(Ok(())),
            Some(commit) => commit.as_mut().poll(cx),
        }
    }
}

impl std::fmt::Debug for Committed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Committed")
            .field(&if self.0.is_some() { "later" } else { "now" })
            .finish()
    }
}
