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
use super::task::IncomingTask;
use crate::thread::{RuntimeThread, TaskHandle};

/// A communicator for synchronous code. Every operation runs on a [`RuntimeThread`] and returns
/// the core's [`TaskHandle`]: block with `wait()`/`wait_timeout()`, `.await` it, or leave an
/// `on_done` callback. Handlers run on the runtime thread, as plain or async closures; inside one,
/// call the async communicator ([`inner`](Self::inner)) rather than blocking on this one.
///
/// It also implements [`Communicator`] itself (each call hops through the runtime thread), so
/// code written against the trait runs over it unchanged. When both apply, the inherent methods
/// below (returning handles) are the ones `comm.method()` calls.
///
/// ```
/// use runtime_thread::messaging::{Handler, SyncCommunicator, Value};
///
/// let comm = SyncCommunicator::local()?;
/// comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)).wait()??;
/// let answer = comm.rpc_send("echo", "hello".into()).wait()??;
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

    fn submit<T, F>(&self, operation: impl FnOnce(C) -> F) -> TaskHandle<Result<T, Error>>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, Error>> + Send + 'static,
    {
        self.thread.run_threadsafe(operation(self.inner.clone()))
    }

    /// See [`Communicator::add_rpc_subscriber`].
    pub fn add_rpc_subscriber(
        &self,
        identifier: &str,
        handler: Handler,
    ) -> TaskHandle<Result<(), Error>> {
        let identifier = identifier.to_owned();
        self.submit(move |c| async move { c.add_rpc_subscriber(&identifier, handler).await })
    }

    /// See [`Communicator::remove_rpc_subscriber`].
    pub fn remove_rpc_subscriber(&self, identifier: &str) -> TaskHandle<Result<(), Error>> {
        let identifier = identifier.to_owned();
        self.submit(move |c| async move { c.remove_rpc_subscriber(&identifier).await })
    }

    /// See [`Communicator::rpc_send`].
    pub fn rpc_send(&self, recipient: &str, message: Value) -> TaskHandle<Result<Value, Error>> {
        self.rpc_send_with(recipient, message, None)
    }

    /// See [`Communicator::rpc_send_with`].
    pub fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> TaskHandle<Result<Value, Error>> {
        let recipient = recipient.to_owned();
        self.submit(move |c| async move { c.rpc_send_with(&recipient, message, timeout).await })
    }

    /// See [`Communicator::add_broadcast_subscriber`].
    pub fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> TaskHandle<Result<SubscriberId, Error>> {
        self.submit(move |c| async move { c.add_broadcast_subscriber(filter, handler).await })
    }

    /// See [`Communicator::remove_broadcast_subscriber`].
    pub fn remove_broadcast_subscriber(&self, id: SubscriberId) -> TaskHandle<Result<(), Error>> {
        self.submit(move |c| async move { c.remove_broadcast_subscriber(id).await })
    }

    /// See [`Communicator::broadcast_send`].
    pub fn broadcast_send(&self, message: Broadcast) -> TaskHandle<Result<(), Error>> {
        self.submit(move |c| async move { c.broadcast_send(message).await })
    }

    /// See [`Communicator::add_task_subscriber`].
    pub fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> TaskHandle<Result<SubscriberId, Error>> {
        let queue = queue.to_owned();
        self.submit(move |c| async move { c.add_task_subscriber(&queue, handler, options).await })
    }

    /// See [`Communicator::remove_task_subscriber`].
    pub fn remove_task_subscriber(&self, id: SubscriberId) -> TaskHandle<Result<(), Error>> {
        self.submit(move |c| async move { c.remove_task_subscriber(id).await })
    }

    /// See [`Communicator::task_send`].
    pub fn task_send(
        &self,
        task: Value,
        no_reply: bool,
    ) -> TaskHandle<Result<Option<Value>, Error>> {
        self.task_send_with(super::DEFAULT_TASK_QUEUE, task, no_reply, None)
    }

    /// See [`Communicator::task_send_with`].
    pub fn task_send_with(
        &self,
        queue: &str,
        task: Value,
        no_reply: bool,
        timeout: Option<Duration>,
    ) -> TaskHandle<Result<Option<Value>, Error>> {
        let queue = queue.to_owned();
        self.submit(move |c| async move { c.task_send_with(&queue, task, no_reply, timeout).await })
    }

    /// See [`Communicator::next_task`].
    pub fn next_task(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> TaskHandle<Result<IncomingTask, Error>> {
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

/// A handle's two layers of outcome as one: a runtime thread that has stopped means closed.
fn flatten<T>(outcome: Result<Result<T, Error>, crate::thread::Error>) -> Result<T, Error> {
    match outcome {
        Ok(result) => result,
        Err(crate::thread::Error::Stopped | crate::thread::Error::NotStarted) => Err(Error::Closed),
        Err(other) => Err(Error::Thread(other)),
    }
}

impl<C: Communicator> Communicator for SyncCommunicator<C> {
    async fn add_rpc_subscriber(&self, identifier: &str, handler: Handler) -> Result<(), Error> {
        flatten(SyncCommunicator::add_rpc_subscriber(self, identifier, handler).await)
    }

    async fn remove_rpc_subscriber(&self, identifier: &str) -> Result<(), Error> {
        flatten(SyncCommunicator::remove_rpc_subscriber(self, identifier).await)
    }

    async fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        flatten(SyncCommunicator::rpc_send_with(self, recipient, message, timeout).await)
    }

    async fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> Result<SubscriberId, Error> {
        flatten(SyncCommunicator::add_broadcast_subscriber(self, filter, handler).await)
    }

    async fn remove_broadcast_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        flatten(SyncCommunicator::remove_broadcast_subscriber(self, id).await)
    }

    async fn broadcast_send(&self, message: Broadcast) -> Result<(), Error> {
        flatten(SyncCommunicator::broadcast_send(self, message).await)
    }

    async fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> Result<SubscriberId, Error> {
        flatten(SyncCommunicator::add_task_subscriber(self, queue, handler, options).await)
    }

    async fn remove_task_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        flatten(SyncCommunicator::remove_task_subscriber(self, id).await)
    }

    async fn task_send_with(
        &self,
        queue: &str,
        task: Value,
        no_reply: bool,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, Error> {
        flatten(SyncCommunicator::task_send_with(self, queue, task, no_reply, timeout).await)
    }

    async fn next_task(&self, queue: &str, timeout: Duration) -> Result<IncomingTask, Error> {
        flatten(SyncCommunicator::next_task(self, queue, timeout).await)
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
