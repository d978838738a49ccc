//! [`SyncCommunicator`]: any [`Communicator`] driven from plain threads through a
//! [`RuntimeThread`] (kiwipy's `RmqThreadCommunicator` analogue).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::communicator::{Communicator, SubscriberId, TaskSubscriberOptions};
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
/// It also implements [`Communicator`] itself (each call hops through the runtime thread), so
/// code written against the trait runs over it unchanged. When both apply, the inherent methods
/// below (returning handles) are the ones `comm.method()` calls.
///
/// ```
/// use runtime_thread::messaging::{Handler, SyncCommunicator, Value};
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

    fn submit<T, F>(&self, operation: impl FnOnce(C) -> F) -> Reply<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        Reply::new(self.thread.run_threadsafe(operation(self.inner.clone())))
    }

    /// See [`Communicator::add_rpc_subscriber`].
    pub fn add_rpc_subscriber(&self, identifier: &str, handler: Handler) -> Reply<()> {
        let identifier = identifier.to_owned();
        self.submit(move |c| async move { c.add_rpc_subscriber(&identifier, handler).await })
    }

    /// See [`Communicator::remove_rpc_subscriber`].
    pub fn remove_rpc_subscriber(&self, identifier: &str) -> Reply<()> {
        let identifier = identifier.to_owned();
        self.submit(move |c| async move { c.remove_rpc_subscriber(&identifier).await })
    }

    /// See [`Communicator::rpc_send`].
    pub fn rpc_send(&self, recipient: &str, message: Value) -> Reply<Value> {
        self.rpc_send_with(recipient, message, None)
    }

    /// See [`Communicator::rpc_send_with`].
    pub fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> Reply<Value> {
        let recipient = recipient.to_owned();
        self.submit(move |c| async move { c.rpc_send_with(&recipient, message, timeout).await })
    }

    /// See [`Communicator::add_broadcast_subscriber`].
    pub fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> Reply<SubscriberId> {
        self.submit(move |c| async move { c.add_broadcast_subscriber(filter, handler).await })
    }

    /// See [`Communicator::remove_broadcast_subscriber`].
    pub fn remove_broadcast_subscriber(&self, id: SubscriberId) -> Reply<()> {
        self.submit(move |c| async move { c.remove_broadcast_subscriber(id).await })
    }

    /// See [`Communicator::broadcast_send`].
    pub fn broadcast_send(&self, message: Broadcast) -> Reply<()> {
        self.submit(move |c| async move { c.broadcast_send(message).await })
    }

    /// See [`Communicator::add_task_subscriber`].
    pub fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> Reply<SubscriberId> {
        let queue = queue.to_owned();
        self.submit(move |c| async move { c.add_task_subscriber(&queue, handler, options).await })
    }

    /// See [`Communicator::remove_task_subscriber`].
    pub fn remove_task_subscriber(&self, id: SubscriberId) -> Reply<()> {
        self.submit(move |c| async move { c.remove_task_subscriber(id).await })
    }

    /// See [`Communicator::task_send`].
    pub fn task_send(&self, task: Value, no_reply: bool) -> Reply<Option<Value>> {
        self.task_send_with(super::DEFAULT_TASK_QUEUE, task, no_reply, None)
    }

    /// See [`Communicator::task_send_with`].
    pub fn task_send_with(
        &self,
        queue: &str,
        task: Value,
        no_reply: bool,
        timeout: Option<Duration>,
    ) -> Reply<Option<Value>> {
        let queue = queue.to_owned();
        self.submit(move |c| async move { c.task_send_with(&queue, task, no_reply, timeout).await })
    }

    /// See [`Communicator::next_task`].
    pub fn next_task(&self, queue: &str, timeout: Duration) -> Reply<IncomingTask> {
        let queue = queue.to_owned();
        self.submit(move |c| async move { c.next_task(&queue, timeout).await })
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

    /// Whether [`close`](Self::close) was called on the communicator underneath.
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}

impl<C: Communicator> Communicator for SyncCommunicator<C> {
    async fn add_rpc_subscriber(&self, identifier: &str, handler: Handler) -> Result<(), Error> {
        SyncCommunicator::add_rpc_subscriber(self, identifier, handler).await
    }

    async fn remove_rpc_subscriber(&self, identifier: &str) -> Result<(), Error> {
        SyncCommunicator::remove_rpc_subscriber(self, identifier).await
    }

    async fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        SyncCommunicator::rpc_send_with(self, recipient, message, timeout).await
    }

    async fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> Result<SubscriberId, Error> {
        SyncCommunicator::add_broadcast_subscriber(self, filter, handler).await
    }

    async fn remove_broadcast_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        SyncCommunicator::remove_broadcast_subscriber(self, id).await
    }

    async fn broadcast_send(&self, message: Broadcast) -> Result<(), Error> {
        SyncCommunicator::broadcast_send(self, message).await
    }

    async fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> Result<SubscriberId, Error> {
        SyncCommunicator::add_task_subscriber(self, queue, handler, options).await
    }

    async fn remove_task_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        SyncCommunicator::remove_task_subscriber(self, id).await
    }

    async fn task_send_with(
        &self,
        queue: &str,
        task: Value,
        no_reply: bool,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, Error> {
        SyncCommunicator::task_send_with(self, queue, task, no_reply, timeout).await
    }

    async fn next_task(&self, queue: &str, timeout: Duration) -> Result<IncomingTask, Error> {
        SyncCommunicator::next_task(self, queue, timeout).await
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
