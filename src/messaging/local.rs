//! [`LocalCommunicator`]: the in-process broker.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::communicator::{Communicator, SubscriberId, TaskSendOptions, TaskSubscriberOptions};
use super::error::Error;
use super::filter::BroadcastFilter;
use super::handler::{BroadcastHandler, Handler};
use super::message::{Broadcast, Value};
use super::response::Response;
use super::task::{IncomingTask, Settle};
use crate::thread::watched;

/// The default for operations that wait for an answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The in-process broker: all three patterns within one program, the embedded default.
///
/// Cloning gives another handle to the same broker (handlers capture a clone to call it from
/// inside). Its async methods must run within a tokio runtime; from plain threads use
/// [`SyncCommunicator`](super::SyncCommunicator). Handlers run as tasks on that runtime.
///
/// ```
/// use runtime_thread::messaging::{Communicator, Handler, LocalCommunicator, Value};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let comm = LocalCommunicator::new();
/// comm.add_rpc_subscriber("doubler", Handler::sync(|v: Value| Value::from(v.as_i64().unwrap_or(0) * 2)))
///     .await?;
/// assert_eq!(comm.rpc_send("doubler", 21.into()).await?, 42);
/// # Ok::<(), runtime_thread::messaging::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct LocalCommunicator {
    inner: Arc<Inner>,
}

struct Inner {
    closed: CancellationToken,
    default_timeout: Duration,
    next_id: AtomicU64,
    state: Mutex<State>,
}

/// An RPC subscriber: its handler, and the runtime it was added on, where the handler runs
/// when it does not answer at once.
#[derive(Clone)]
struct RpcSubscriber {
    handler: Handler,
    runtime: tokio::runtime::Handle,
}

/// The runtime the caller polls on: where the subscribers it adds run their handlers.
fn runtime_here() -> Result<tokio::runtime::Handle, Error> {
    tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)
}

#[derive(Default)]
struct State {
    rpc: HashMap<String, RpcSubscriber>,
    broadcast: Vec<BroadcastSubscriber>,
    queues: HashMap<String, TaskQueue>,
    task_subscribers: HashMap<SubscriberId, String>,
}

struct BroadcastSubscriber {
    id: SubscriberId,
    filter: BroadcastFilter,
    inbox: mpsc::UnboundedSender<Broadcast>,
}

#[derive(Default)]
struct TaskQueue {
    pending: VecDeque<QueuedTask>,
    subscribers: Vec<TaskSubscriber>,
    /// Tasks handed out and not yet answered, by lease.
    in_hand: HashMap<u64, InHand>,
    arrivals: Arc<Notify>,
}

struct QueuedTask {
    body: Value,
    reply: Option<oneshot::Sender<Result<Value, Error>>>,
    rejected_by: Vec<SubscriberId>,
}

struct TaskSubscriber {
    id: SubscriberId,
    handler: Handler,
    prefetch: usize,
    in_hand: usize,
    /// The runtime it was added on, where its handler runs: a task given back or answered on
    /// a plain thread (a synchronous worker's) is handed out again from there, with no
    /// runtime of its own.
    runtime: tokio::runtime::Handle,
}

impl TaskSubscriber {
    fn can_take(&self, task: &QueuedTask) -> bool {
        (self.prefetch == 0 || self.in_hand < self.prefetch) && !task.rejected_by.contains(&self.id)
    }
}

struct InHand {
    task: QueuedTask,
    /// The push subscriber holding it; `None` for a pulled task.
    holder: Option<SubscriberId>,
    worker: Option<tokio::task::AbortHandle>,
}

/// How a task in hand ends.
enum Settlement {
    Answer(Result<Value, Error>),
    Reject,
    Requeue,
}

impl LocalCommunicator {
    /// A broker whose waiting operations time out after [`DEFAULT_TIMEOUT`].
    pub fn new() -> Self {
        Self::with_default_timeout(DEFAULT_TIMEOUT)
    }

    /// A broker with another default timeout.
    pub fn with_default_timeout(timeout: Duration) -> Self {
        LocalCommunicator {
            inner: Arc::new(Inner {
                closed: CancellationToken::new(),
                default_timeout: timeout,
                next_id: AtomicU64::new(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.closed.is_cancelled() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Relaxed)
    }

    /// Waits for `answer` up to `timeout`, or until the communicator closes.
    async fn await_answer<T>(
        &self,
        answer: impl std::future::Future<Output = Result<T, Error>>,
        timeout: Duration,
    ) -> Result<T, Error> {
        tokio::select! {
            biased;
            _ = self.inner.closed.cancelled() => Err(Error::Closed),
            outcome = tokio::time::timeout(timeout, answer) => {
                outcome.unwrap_or(Err(Error::Timeout(timeout)))
            }
        }
    }
}

impl Default for LocalCommunicator {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LocalCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCommunicator")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// A task handed to a subscriber under the lock, whose worker is started after the lock is
/// released: starting it can drop it at once (a runtime shutting down refuses new tasks by
/// dropping them), and a dropped worker takes the lock to give its task back.
struct Assignment {
    lease: u64,
    queue: String,
    handler: Handler,
    body: Value,
    holder: SubscriberId,
    runtime: tokio::runtime::Handle,
}

impl Inner {
    /// Hands pending tasks of `queue` to subscribers with room that have not rejected them.
    /// Called with the state locked; start the returned workers once it is unlocked.
    fn assign(self: &Arc<Self>, name: &str, queue: &mut TaskQueue) -> Vec<Assignment> {
        let mut assignments = Vec::new();
        let mut index = 0;
        while index < queue.pending.len() {
            let task = &queue.pending[index];
            // The least busy eligible subscriber, so that work spreads across subscribers.
            let Some(subscriber) = queue
                .subscribers
                .iter_mut()
                .filter(|s| s.can_take(task))
                .min_by_key(|s| s.in_hand)
            else {
                index += 1;
                continue;
            };
            subscriber.in_hand += 1;
            let (holder, handler) = (subscriber.id, subscriber.handler.clone());
            let runtime = subscriber.runtime.clone();
            let Some(task) = queue.pending.remove(index) else {
                break;
            };
            let lease = self.next_id.fetch_add(1, Relaxed);
            assignments.push(Assignment {
                lease,
                queue: name.to_owned(),
                handler,
                body: task.body.clone(),
                holder,
                runtime,
            });
            queue.in_hand.insert(
                lease,
                InHand {
                    task,
                    holder: Some(holder),
                    worker: None,
                },
            );
        }
        assignments
    }

    /// Starts the workers of `assignments`, each on its subscriber's runtime (from any thread);
    /// must be called with the state unlocked. A runtime that has shut down drops the worker at
    /// once, and its lease gives the task back to the queue.
    fn start_workers(self: &Arc<Self>, assignments: Vec<Assignment>) {
        if assignments.is_empty() {
            return;
        }
        let mut started = Vec::with_capacity(assignments.len());
        for assignment in assignments {
            let lease = Lease {
                inner: self.clone(),
                queue: assignment.queue.clone(),
                lease: assignment.lease,
                settled: false,
            };
            let worker = assignment.runtime.spawn(run_task(
                lease,
                assignment.handler,
                assignment.body,
                assignment.holder,
            ));
            started.push((assignment.queue, assignment.lease, worker.abort_handle()));
        }
        let mut state = self.state.lock();
        for (queue, lease, worker) in started {
            if let Some(held) = state
                .queues
                .get_mut(&queue)
                .and_then(|q| q.in_hand.get_mut(&lease))
            {
                held.worker = Some(worker);
            }
        }
    }

    /// Ends a task in hand. Only an explicit settlement hands tasks out again: a lease dropped
    /// unsettled (its runtime is going away) just gives its task back, so that a shutting-down
    /// runtime that drops every new worker cannot make this loop.
    fn settle(
        self: &Arc<Self>,
        queue_name: &str,
        lease: u64,
        settlement: Settlement,
        redispatch: bool,
    ) {
        let assignments = {
            let mut state = self.state.lock();
            let Some(queue) = state.queues.get_mut(queue_name) else {
                return; // closed meanwhile
            };
            // A lease that is gone was requeued already (its subscriber was removed): ignore it.
            let Some(InHand {
                mut task, holder, ..
            }) = queue.in_hand.remove(&lease)
            else {
                return;
            };
            if let Some(holder) = holder
                && let Some(subscriber) = queue.subscribers.iter_mut().find(|s| s.id == holder)
            {
                subscriber.in_hand -= 1;
            }
            match settlement {
                Settlement::Answer(outcome) => {
                    if let Some(reply) = task.reply.take() {
                        let _ = reply.send(outcome);
                    }
                }
                Settlement::Reject => {
                    task.rejected_by.extend(holder);
                    queue.pending.push_front(task);
                }
                Settlement::Requeue => {
                    queue.pending.push_front(task);
                    queue.arrivals.notify_waiters();
                }
            }
            if !redispatch {
                return;
            }
            self.assign(queue_name, queue)
        };
        self.start_workers(assignments);
    }
}

/// A task in hand; dropped unsettled (its worker was aborted or its runtime went away), the task
/// goes back to the queue, never lost.
struct Lease {
    inner: Arc<Inner>,
    queue: String,
    lease: u64,
    settled: bool,
}

impl Lease {
    fn settle(mut self, settlement: Settlement) {
        self.settled = true;
        self.inner.settle(&self.queue, self.lease, settlement, true);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.settled {
            // Its worker was dropped: give the task back, without handing it out again here.
            self.inner
                .settle(&self.queue, self.lease, Settlement::Requeue, false);
        }
    }
}

impl Settle for Lease {
    fn answer(&mut self, outcome: Result<Value, Error>) {
        self.settled = true;
        self.inner
            .settle(&self.queue, self.lease, Settlement::Answer(outcome), true);
    }
    fn requeue(&mut self) {
        self.settled = true;
        self.inner
            .settle(&self.queue, self.lease, Settlement::Requeue, true);
    }
}

async fn run_task(lease: Lease, handler: Handler, body: Value, holder: SubscriberId) {
    let queue = &lease.queue;
    // The call itself runs inside the watched poll: a plain-closure handler does its work there.
    let call = async move { handler.call(body).await };
    let response = watched(call, || {
        format!("task subscriber {holder} on queue '{queue}'")
    })
    .await;
    let mut response = response;
    // Followed here rather than by `settle`, so that a rejection after a pending answer
    // gives the task back too.
    while let Response::Pending(later) = response {
        response = later.await;
    }
    if matches!(response, Response::Rejected) {
        tracing::debug!(%holder, "task rejected; offering it to another subscriber");
        return lease.settle(Settlement::Reject);
    }
    let outcome = response.settle().await;
    lease.settle(Settlement::Answer(outcome));
}

impl Communicator for LocalCommunicator {
    async fn add_rpc_subscriber(&self, identifier: &str, handler: Handler) -> Result<(), Error> {
        self.check_open()?;
        let mut state = self.inner.state.lock();
        if state.rpc.contains_key(identifier) {
            return Err(Error::DuplicateSubscriber {
                identifier: identifier.to_owned(),
            });
        }
        let runtime = runtime_here()?;
        state
            .rpc
            .insert(identifier.to_owned(), RpcSubscriber { handler, runtime });
        Ok(())
    }

    async fn remove_rpc_subscriber(&self, identifier: &str) -> Result<(), Error> {
        self.check_open()?;
        match self.inner.state.lock().rpc.remove(identifier) {
            Some(_) => Ok(()),
            None => Err(Error::UnknownSubscriber {
                identifier: identifier.to_owned(),
            }),
        }
    }

    async fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        self.check_open()?;
        let subscriber = self.inner.state.lock().rpc.get(recipient).cloned();
        let RpcSubscriber { handler, runtime } = subscriber.ok_or_else(|| Error::Unroutable {
            recipient: recipient.to_owned(),
        })?;
        let call = watched(async move { handler.call(message).await }, || {
            format!("rpc subscriber '{recipient}'")
        });
        let mut server = Box::pin(async move { call.await.settle().await });
        // Poll the server once here: a handler that answers at once (every plain-closure handler)
        // then costs no task, no timer and no wait.
        if let Some(answer) = (&mut server).now_or_never() {
            return answer;
        }
        // Otherwise the server side runs as its own task, as a remote server would: a caller that
        // gives up does not cancel work already started.
        let server = runtime.spawn(server);
        let answer = async move {
            server.await.unwrap_or_else(|e| {
                Err(Error::Remote {
                    message: e.to_string(),
                })
            })
        };
        self.await_answer(answer, timeout.unwrap_or(self.inner.default_timeout))
            .await
    }

    async fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> Result<SubscriberId, Error> {
        self.check_open()?;
        let id = SubscriberId(self.next_id());
        let (inbox, mut messages) = mpsc::unbounded_channel();
        // One consumer per subscriber keeps each subscriber's deliveries in send order.
        runtime_here()?.spawn(async move {
            while let Some(message) = messages.recv().await {
                watched(async { handler.call(message).await }, || {
                    format!("broadcast subscriber {id}")
                })
                .await;
            }
        });
        self.inner
            .state
            .lock()
            .broadcast
            .push(BroadcastSubscriber { id, filter, inbox });
        Ok(id)
    }

    async fn remove_broadcast_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        self.check_open()?;
        let mut state = self.inner.state.lock();
        let before = state.broadcast.len();
        state.broadcast.retain(|s| s.id != id);
        if state.broadcast.len() == before {
            return Err(Error::UnknownSubscriber {
                identifier: id.to_string(),
            });
        }
        Ok(())
    }

    async fn broadcast_send(&self, message: Broadcast) -> Result<(), Error> {
        self.check_open()?;
        let state = self.inner.state.lock();
        for subscriber in state
            .broadcast
            .iter()
            .filter(|s| s.filter.matches(&message))
        {
            let _ = subscriber.inbox.send(message.clone());
        }
        Ok(())
    }

    async fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> Result<SubscriberId, Error> {
        self.check_open()?;
        let runtime = runtime_here()?;
        let id = SubscriberId(self.next_id());
        let assignments = {
            let mut state = self.inner.state.lock();
            state.task_subscribers.insert(id, queue.to_owned());
            let task_queue = state.queues.entry(queue.to_owned()).or_default();
            task_queue.subscribers.push(TaskSubscriber {
                id,
                handler,
                prefetch: options.prefetch,
                in_hand: 0,
                runtime,
            });
            self.inner.assign(queue, task_queue)
        };
        self.inner.start_workers(assignments);
        Ok(id)
    }

    async fn remove_task_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        self.check_open()?;
        let mut workers = Vec::new();
        let assignments = {
            let mut state = self.inner.state.lock();
            let Some(name) = state.task_subscribers.remove(&id) else {
                return Err(Error::UnknownSubscriber {
                    identifier: id.to_string(),
                });
            };
            let Some(queue) = state.queues.get_mut(&name) else {
                return Ok(());
            };
            queue.subscribers.retain(|s| s.id != id);
            // Its tasks in hand go back to the front of the queue now; the aborted workers'
            // leases then find nothing to settle.
            let leases: Vec<u64> = queue
                .in_hand
                .iter()
                .filter(|(_, held)| held.holder == Some(id))
                .map(|(lease, _)| *lease)
                .collect();
            for lease in leases {
                if let Some(held) = queue.in_hand.remove(&lease) {
                    workers.extend(held.worker);
                    queue.pending.push_front(held.task);
                }
            }
            queue.arrivals.notify_waiters();
            self.inner.assign(&name, queue)
        };
        for worker in workers {
            worker.abort();
        }
        self.inner.start_workers(assignments);
        Ok(())
    }

    async fn task_send_with(&self, task: Value, options: TaskSendOptions) -> Result<Value, Error> {
        let reply = self.send_task(&options.queue, task, false, options.timeout);
        reply.await?.ok_or(Error::Closed)
    }

    async fn task_send_no_reply(&self, task: Value, options: TaskSendOptions) -> Result<(), Error> {
        let queued = self.send_task(&options.queue, task, true, options.timeout);
        queued.await.map(drop)
    }

    async fn next_task(&self, queue: &str, timeout: Duration) -> Result<IncomingTask, Error> {
        self.check_open()?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrivals = {
                let mut state = self.inner.state.lock();
                let task_queue = state.queues.entry(queue.to_owned()).or_default();
                if let Some(task) = task_queue.pending.pop_front() {
                    let lease = self.next_id();
                    let (body, no_reply) = (task.body.clone(), task.reply.is_none());
                    task_queue.in_hand.insert(
                        lease,
                        InHand {
                            task,
                            holder: None,
                            worker: None,
                        },
                    );
                    let lease = Lease {
                        inner: self.inner.clone(),
                        queue: queue.to_owned(),
                        lease,
                        settled: false,
                    };
                    return Ok(IncomingTask::new(body, no_reply, Box::new(lease)));
                }
                task_queue.arrivals.clone()
            };
            let arrived = arrivals.notified();
            // Re-check after registering: a task may have arrived between the unlock and here.
            let has_pending = self
                .inner
                .state
                .lock()
                .queues
                .get(queue)
                .is_some_and(|q| !q.pending.is_empty());
            if has_pending {
                continue;
            }
            tokio::select! {
                biased;
                _ = self.inner.closed.cancelled() => return Err(Error::Closed),
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::QueueEmpty { queue: queue.to_owned() });
                }
                _ = arrived => {}
            }
        }
    }

    async fn close(&self) {
        self.inner.closed.cancel();
        let state = std::mem::take(&mut *self.inner.state.lock());
        for queue in state.queues.into_values() {
            for held in queue.in_hand.into_values() {
                if let Some(worker) = held.worker {
                    worker.abort();
                }
            }
        }
        // Dropping the rest closes every inbox and reply channel.
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }
}

impl LocalCommunicator {
    /// Queues `task`, and unless `no_reply` waits for its result: what both task-sending
    /// operations of the trait do.
    async fn send_task(
        &self,
        queue: &str,
        task: Value,
        no_reply: bool,
        timeout: Option<Duration>,
    ) -> Result<Option<Value>, Error> {
        self.check_open()?;
        let (reply, answer) = if no_reply {
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let assignments = {
            let mut state = self.inner.state.lock();
            let task_queue = state.queues.entry(queue.to_owned()).or_default();
            task_queue.pending.push_back(QueuedTask {
                body: task,
                reply,
                rejected_by: Vec::new(),
            });
            task_queue.arrivals.notify_waiters();
            self.inner.assign(queue, task_queue)
        };
        self.inner.start_workers(assignments);
        let Some(answer) = answer else {
            return Ok(None);
        };
        // A dropped reply sender means the broker closed.
        let answer = async move { answer.await.unwrap_or(Err(Error::Closed)).map(Some) };
        self.await_answer(answer, timeout.unwrap_or(self.inner.default_timeout))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::{BroadcastFilter, BroadcastHandler};

    /// Outside a tokio runtime, subscribing is a clear error, never a panic.
    #[test]
    fn subscribing_outside_a_runtime_says_where_to_await() {
        let comm = LocalCommunicator::new();
        let rpc = comm.add_rpc_subscriber("a", Handler::sync(|v: Value| v));
        assert!(matches!(
            futures::executor::block_on(rpc),
            Err(Error::NoRuntime)
        ));
        let broadcasts =
            comm.add_broadcast_subscriber(BroadcastFilter::new(), BroadcastHandler::sync(|_| {}));
        assert!(matches!(
            futures::executor::block_on(broadcasts),
            Err(Error::NoRuntime)
        ));
        let tasks = comm.add_task_subscriber(
            "q",
            Handler::sync(|v: Value| v),
            TaskSubscriberOptions::default(),
        );
        assert!(matches!(
            futures::executor::block_on(tasks),
            Err(Error::NoRuntime)
        ));
    }
}
