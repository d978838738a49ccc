//! [`SyncCommunicator`]: any [`Communicator`] driven from plain threads through a
//! [`RuntimeThread`] (kiwipy's `RmqThreadCommunicator` analogue).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::communicator::{Communicator, SubscriberId, TaskSendOptions, TaskSubscriberOptions};
use super::error::Error;
use super::filter::BroadcastFilter;
use super::handler::{BroadcastHandler, Handler};
use super::local::LocalCommunicator;
use super::message::{Broadcast, Value};
use super::reply::Reply;
use super::task::IncomingTask;
use crate::thread::RuntimeThread;

/// A communicator for synchronous code. Every operation runs on a [`RuntimeThread`] and returns a
/// [`Reply`]: block with `wait()`/`wait_timeout()`, `.await` it, or leave an `on_done` callback;
/// its error is this layer's [`Error`] (after [`close`](Self::close), `Closed`). Handlers run on
/// the runtime thread, as plain or async closures; inside one, call the async communicator
/// ([`inner`](Self::inner)) rather than blocking on this one.
///
/// Its operations are those of the [`Communicator`] trait (bring the trait into scope), each
/// hopping through the runtime thread and returning a [`Reply`] rather than an opaque future,
/// so code written against the trait runs over it unchanged.
///
/// ```
/// use runtime_thread::messaging::{Communicator, Handler, SyncCommunicator, Value};
///
/// let comm = SyncCommunicator::local()?;
/// comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)).wait()?;
/// let answer = comm.rpc_send("echo", "hello".into()).wait()?;
/// assert_eq!(answer, "hello");
/// comm.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct SyncCommunicator<C: Communicator = LocalCommunicator> {
    inner: C,
    thread: Arc<RuntimeThread>,
    owns_thread: bool,
}

impl<C: Communicator + std::fmt::Debug> std::fmt::Debug for SyncCommunicator<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncCommunicator")
            .field("inner", &self.inner)
            .field("thread", &self.thread)
            .field("owns_thread", &self.owns_thread)
            .finish()
    }
}

impl SyncCommunicator<LocalCommunicator> {
    /// An in-process broker on a runtime thread of its own, which [`close`](Self::close) stops.
    ///
    /// # Errors
    ///
    /// `Error::Thread` when the runtime thread cannot start.
    pub fn local() -> Result<Self, Error> {
        let thread = RuntimeThread::builder().name("communicator").start()?;
        Ok(SyncCommunicator::owning(
            LocalCommunicator::new(),
            Arc::new(thread),
        ))
    }
}

impl<C: Communicator> SyncCommunicator<C> {
    /// Drives `inner` on `thread`, which stays the caller's to stop.
    pub fn new(inner: C, thread: Arc<RuntimeThread>) -> Self {
        SyncCommunicator {
            inner,
            thread,
            owns_thread: false,
        }
    }

    /// Drives `inner` on `thread`, which [`close`](Self::close) stops.
    pub(crate) fn owning(inner: C, thread: Arc<RuntimeThread>) -> Self {
        SyncCommunicator {
            inner,
            thread,
            owns_thread: true,
        }
    }

    /// The async communicator underneath, for use inside handlers and async code.
    pub fn inner(&self) -> &C {
        &self.inner
    }

    /// The runtime thread the operations run on.
    pub fn thread(&self) -> &RuntimeThread {
        &self.thread
    }

    /// Closes the communicator (callers still waiting get [`Error::Closed`]) and, if it owns its
    /// runtime thread, stops that too. Bounded; safe to call more than once, from any thread.
    pub fn close(&self) {
        let inner = self.inner.clone();
        // Closing touches no IO for the local broker, but a network transport's close needs
        // its runtime: run it there, and give up on it after a bound rather than hang.
        let mut closing = self
            .thread
            .run_threadsafe(async move { inner.close().await });
        let _ = closing.wait_timeout(Duration::from_secs(5));
        if self.owns_thread {
            let _ = self.thread.stop();
        }
    }

    /// Runs `operation` on the communicator underneath, on the runtime thread.
    #[track_caller]
    fn submit<T, F>(&self, operation: impl FnOnce(C) -> F) -> Reply<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        Reply::new(self.thread.run_threadsafe(operation(self.inner.clone())))
    }
}

// Each operation is written once, here: the trait's methods return a [`Reply`], which is a
// future for async callers and a blocking handle for synchronous ones (an impl may name a more
// precise return type than the trait's `impl Future`, and callers of the concrete type see it).
#[allow(refining_impl_trait)]
impl<C: Communicator> Communicator for SyncCommunicator<C> {
    #[track_caller]
    fn add_rpc_subscriber(&self, identifier: &str, handler: Handler) -> Reply<()> {
        let identifier = identifier.to_owned();
        self.submit(move |c| async move { c.add_rpc_subscriber(&identifier, handler).await })
    }

    #[track_caller]
    fn remove_rpc_subscriber(&self, identifier: &str) -> Reply<()> {
        let identifier = identifier.to_owned();
        self.submit(move |c| async move { c.remove_rpc_subscriber(&identifier).await })
    }

    #[track_caller]
    fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> Reply<Value> {
        let recipient = recipient.to_owned();
        self.submit(move |c| async move { c.rpc_send_with(&recipient, message, timeout).await })
    }

    #[track_caller]
    fn rpc_send(&self, recipient: &str, message: Value) -> Reply<Value> {
        self.rpc_send_with(recipient, message, None)
    }

    #[track_caller]
    fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> Reply<SubscriberId> {
        self.submit(move |c| async move { c.add_broadcast_subscriber(filter, handler).await })
    }

    #[track_caller]
    fn remove_broadcast_subscriber(&self, id: SubscriberId) -> Reply<()> {
        self.submit(move |c| async move { c.remove_broadcast_subscriber(id).await })
    }

    #[track_caller]
    fn broadcast_send(&self, message: Broadcast) -> Reply<()> {
        self.submit(move |c| async move { c.broadcast_send(message).await })
    }

    #[track_caller]
    fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> Reply<SubscriberId> {
        let queue = queue.to_owned();
        self.submit(move |c| async move { c.add_task_subscriber(&queue, handler, options).await })
    }

    #[track_caller]
    fn remove_task_subscriber(&self, id: SubscriberId) -> Reply<()> {
        self.submit(move |c| async move { c.remove_task_subscriber(id).await })
    }

    #[track_caller]
    fn task_send_with(&self, task: Value, options: TaskSendOptions) -> Reply<Value> {
        self.submit(move |c| async move { c.task_send_with(task, options).await })
    }

    #[track_caller]
    fn task_send(&self, task: Value) -> Reply<Value> {
        self.task_send_with(task, TaskSendOptions::default())
    }

    #[track_caller]
    fn task_send_no_reply(&self, task: Value, options: TaskSendOptions) -> Reply<()> {
        self.submit(move |c| async move { c.task_send_no_reply(task, options).await })
    }

    #[track_caller]
    fn next_task(&self, queue: &str, timeout: Duration) -> Reply<IncomingTask> {
        let queue = queue.to_owned();
        self.submit(move |c| async move { c.next_task(&queue, timeout).await })
    }

    async fn close(&self) {
        let inner = self.inner.clone();
        let _ = self
            .thread
            .run_threadsafe(async move { inner.close().await })
            .await;
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
