//! The [`Communicator`] trait: kiwipy's three messaging patterns, for any transport.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::error::Error;
use super::filter::BroadcastFilter;
use super::handler::{BroadcastHandler, Handler};
use super::message::{Broadcast, Value};
use super::task::IncomingTask;

/// The task queue used when none is named (kiwipy's default).
pub const DEFAULT_TASK_QUEUE: &str = "kiwipy.tasks";

/// Identifies a broadcast or task subscriber, for removing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(pub(crate) u64);

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscriber-{}", self.0)
    }
}

/// How a task subscriber consumes its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskSubscriberOptions {
    /// At most this many tasks in hand at once (0 = unlimited, kiwipy's default). Default 1.
    pub prefetch: usize,
}

impl Default for TaskSubscriberOptions {
    fn default() -> Self {
        TaskSubscriberOptions { prefetch: 1 }
    }
}

/// Where a task goes and how long its sender waits: the options of
/// [`Communicator::task_send_with`] and [`Communicator::task_send_no_reply`].
///
/// ```
/// use std::time::Duration;
/// use runtime_thread::messaging::{DEFAULT_TASK_QUEUE, TaskSendOptions};
///
/// let options = TaskSendOptions::for_queue("resize").timeout(Duration::from_secs(30));
/// assert_eq!(options.queue, "resize");
/// assert_eq!(TaskSendOptions::default().queue, DEFAULT_TASK_QUEUE);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSendOptions {
    /// The queue (default [`DEFAULT_TASK_QUEUE`]).
    pub queue: String,
    /// How long to wait (default `None`: the communicator's default timeout).
    pub timeout: Option<Duration>,
}

impl Default for TaskSendOptions {
    fn default() -> Self {
        TaskSendOptions::for_queue(DEFAULT_TASK_QUEUE)
    }
}

impl TaskSendOptions {
    /// The options for `queue`, with the default timeout.
    pub fn for_queue(queue: impl Into<String>) -> Self {
        TaskSendOptions {
            queue: queue.into(),
            timeout: None,
        }
    }

    /// Waits up to `timeout` instead of the communicator's default.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// RPC, broadcasts and task queues, as kiwipy offers them, over some transport.
///
/// Every operation that waits for an answer has a timeout: the communicator's default, or the
/// one given to the `_with` variant. Dropping the returned future abandons the wait and releases
/// what it held. After [`close`](Communicator::close) every operation fails with
/// [`Error::Closed`], including those already waiting. Handlers may call the communicator
/// (a clone of it) from inside themselves.
pub trait Communicator: Clone + Send + Sync + 'static {
    /// Serves RPCs sent to `identifier`. [`Error::DuplicateSubscriber`] if it is taken.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateSubscriber`] when `identifier` is taken. After [`close`](Self::close),
    /// [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or [`Error::ConnectionLost`] when the
    /// broker fails.
    fn add_rpc_subscriber(
        &self,
        identifier: &str,
        handler: Handler,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Stops serving `identifier`; later sends to it are [`Error::Unroutable`].
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSubscriber`] when nobody serves `identifier`. After [`close`](Self::close),
    /// [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or [`Error::ConnectionLost`] when the
    /// broker fails.
    fn remove_rpc_subscriber(
        &self,
        identifier: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sends `message` to the RPC subscriber `recipient` and waits for the final answer (following
    /// pending replies) up to `timeout`, or the default one when `None`.
    ///
    /// # Errors
    ///
    /// [`Error::Unroutable`] when nobody serves `recipient`; [`Error::Remote`] when the subscriber
    /// answered with an error; [`Error::TaskRejected`] when it rejected the message;
    /// [`Error::Timeout`]; [`Error::Cancelled`] when the subscriber cancelled the answer. After [`close`](Self::close), [`Error::Closed`]; over RabbitMQ,
    /// [`Error::Broker`] or [`Error::ConnectionLost`] when the broker fails.
    fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Value, Error>> + Send;

    /// [`rpc_send_with`](Self::rpc_send_with) with the default timeout.
    fn rpc_send(
        &self,
        recipient: &str,
        message: Value,
    ) -> impl Future<Output = Result<Value, Error>> + Send {
        self.rpc_send_with(recipient, message, None)
    }

    /// Receives every broadcast that passes `filter`, in the order they were sent.
    ///
    /// # Errors
    ///
    /// After [`close`](Self::close), [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or
    /// [`Error::ConnectionLost`] when the broker fails.
    fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> impl Future<Output = Result<SubscriberId, Error>> + Send;

    /// Stops a broadcast subscriber.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSubscriber`] for an id that is not subscribed. After [`close`](Self::close),
    /// [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or [`Error::ConnectionLost`] when the
    /// broker fails.
    fn remove_broadcast_subscriber(
        &self,
        id: SubscriberId,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Sends a broadcast to every matching subscriber (none listening is fine).
    ///
    /// # Errors
    ///
    /// After [`close`](Self::close), [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or
    /// [`Error::ConnectionLost`] when the broker fails.
    fn broadcast_send(&self, message: Broadcast) -> impl Future<Output = Result<(), Error>> + Send;

    /// Takes tasks from `queue` (created if needed). A task is acknowledged only once the handler
    /// has answered; a [`Response::Rejected`](super::Response::Rejected) offers it to another
    /// subscriber; a subscriber removed with tasks in hand gives them back to the queue.
    ///
    /// # Errors
    ///
    /// After [`close`](Self::close), [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or
    /// [`Error::ConnectionLost`] when the broker fails.
    fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> impl Future<Output = Result<SubscriberId, Error>> + Send;

    /// Stops a task subscriber; its tasks in hand go back to the queue.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSubscriber`] for an id that is not subscribed. After [`close`](Self::close),
    /// [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or [`Error::ConnectionLost`] when the
    /// broker fails.
    fn remove_task_subscriber(
        &self,
        id: SubscriberId,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Queues `task` on the options' queue and waits for its result, up to the options' timeout
    /// (or the default one). A task subscriber's [`Response::Rejected`](super::Response::Rejected)
    /// hands it to another subscriber; its error answer is [`Error::Remote`].
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when the worker answered with an error; [`Error::Timeout`] (a task that
    /// every subscriber rejected stays queued, so its sender times out). After [`close`](Self::close), [`Error::Closed`];
    /// over RabbitMQ, [`Error::Broker`] or [`Error::ConnectionLost`] when the broker fails.
    fn task_send_with(
        &self,
        task: Value,
        options: TaskSendOptions,
    ) -> impl Future<Output = Result<Value, Error>> + Send;

    /// [`task_send_with`](Self::task_send_with) on the default queue with the default timeout.
    fn task_send(&self, task: Value) -> impl Future<Output = Result<Value, Error>> + Send {
        self.task_send_with(task, TaskSendOptions::default())
    }

    /// Queues `task` on the options' queue without asking for a result (kiwipy's
    /// `no_reply=True`): returns once the task is queued (over RabbitMQ, once the broker has
    /// confirmed it), within the options' timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when the broker does not confirm in time. After [`close`](Self::close),
    /// [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or [`Error::ConnectionLost`] when the
    /// broker fails.
    fn task_send_no_reply(
        &self,
        task: Value,
        options: TaskSendOptions,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Pulls the next task from `queue`, waiting up to `timeout`; [`Error::QueueEmpty`] if none
    /// came. The task goes back to the queue unless it is answered. Waiting costs nothing and
    /// a task queued meanwhile arrives at once: the in-process broker wakes the pull, and over
    /// RabbitMQ a waiting pull is a consumer of the queue with room for one task (no polling).
    /// The task may be answered, given back or dropped on any thread, including one without a
    /// runtime (a synchronous worker's).
    ///
    /// # Errors
    ///
    /// [`Error::QueueEmpty`] when no task came within `timeout`. After [`close`](Self::close),
    /// [`Error::Closed`]; over RabbitMQ, [`Error::Broker`] or [`Error::ConnectionLost`] when the
    /// broker fails.
    fn next_task(
        &self,
        queue: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<IncomingTask, Error>> + Send;

    /// Closes the communicator at once: later operations and every one still waiting fail with
    /// [`Error::Closed`]. Bounded; never waits for handlers.
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Whether [`close`](Self::close) was called.
    fn is_closed(&self) -> bool;
}
