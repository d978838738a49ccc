//! [`AmqpCommunicator`]: the [`Communicator`] over RabbitMQ, speaking kiwipy's protocol.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicRejectOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Acker, BasicProperties, Channel, Confirmation, Consumer};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::codec;
use super::config::AmqpConfig;
use super::link::{self, Link, broker_error};
use super::wire::{self, BROADCAST_TOPIC, RPC_TOPIC, Reply};
use answering::Answering;
use serve::Refusals;

mod answering;
mod serve;
use crate::messaging::task::{IncomingTask, Settle};
use crate::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Error, Handler, Response,
    SubscriberId, TaskSendOptions, TaskSubscriberOptions,
};
use crate::thread::watched;

/// A [`Communicator`] over RabbitMQ, wire-compatible with kiwipy: a kiwipy program can call its
/// RPC subscribers, send its workers tasks and hear its broadcasts, and the other way round.
///
/// Every request, task, broadcast and task reply waits for the broker's publisher confirm
/// (the confirm is what the sender learns from: a broadcast is kept by the broker, a task
/// reply went out before its task is acknowledged). An answer to an RPC does not: it goes on a
/// channel of its own without confirms, handed to the connection without waiting, since only
/// the answering side would hear of a refusal, and its caller's timeout covers an answer lost
/// with the broker or the connection. Requests and broadcasts are consumed without
/// acknowledgements: their queues are the connection's own, so an acknowledgement would keep
/// nothing that the queue's end would not lose anyway. RPCs are published `mandatory`, so an
/// RPC to an identifier nobody serves is [`Error::Unroutable`] at once. A task is not: its
/// sender declares its queue first (as kiwipy does), so the task waits there for a worker, for
/// up to the queue's message TTL (a week), and a sender waiting for the result gets
/// [`Error::Timeout`] if no worker answers in time. Answers have a timeout (kiwipy's have
/// none). A task is acknowledged only once its handler has answered, and
/// goes back to its queue if the handler rejects it or the worker's connection drops
/// (at-least-once). When the connection drops, callers waiting for answers get
/// [`Error::ConnectionLost`]; the communicator reconnects with backoff, declares its queues
/// again and resumes its subscriptions. [`close`](Communicator::close) is bounded.
///
/// ```no_run
/// use runtime_thread::messaging::amqp::{AmqpCommunicator, AmqpConfig};
/// use runtime_thread::messaging::{Communicator, Handler, Value};
///
/// # async fn demo() -> Result<(), runtime_thread::messaging::Error> {
/// let comm = AmqpCommunicator::connect(AmqpConfig::new()).await?;
/// comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)).await?;
/// assert_eq!(comm.rpc_send("echo", "hi".into()).await?, "hi");
/// comm.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AmqpCommunicator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpCommunicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpCommunicator")
            .field("config", &self.inner.config)
            .field("connected", &self.is_connected())
            .field("connections", &self.connections())
            .field("closed", &self.is_closed())
            .finish()
    }
}

struct Inner {
    config: AmqpConfig,
    /// kiwipy's `host` of task replies.
    host: Value,
    /// The live connection; `None` while (re)connecting.
    link: watch::Sender<Option<Arc<Link>>>,
    closed: CancellationToken,
    /// Held for writing while the broker's topology is changed (subscriptions added or
    /// removed, or all of them declared again after a reconnection), so that the two never
    /// interleave; for reading while an RPC subscriber's binding is added or removed, so that
    /// many processes subscribe at once.
    topology: tokio::sync::RwLock<()>,
    subscriptions: Mutex<Subscriptions>,
    /// Callers waiting for replies, by correlation id.
    waiters: Mutex<HashMap<String, mpsc::UnboundedSender<Result<Reply, Error>>>>,
    /// Task queues declared on the current connection.
    task_queues: Mutex<HashSet<String>>,
    /// Wakes subscribers holding tasks they refused before, when a new subscriber arrives.
    new_subscriber: Notify,
    /// Final answers on their way out, which a close lets go first.
    answering: Answering,
    next_id: AtomicU64,
    /// Connections opened so far (the first, then one per reconnection).
    connections: AtomicU64,
    /// The runtime it was connected on, where its own tasks run: what spawns them, so that no
    /// path needs a runtime context of its caller.
    runtime: tokio::runtime::Handle,
}

#[derive(Default)]
struct Subscriptions {
    rpc: HashMap<String, RpcSubscription>,
    /// The one RPC queue on the current connection, bound once per RPC subscriber; made with
    /// the first of them.
    rpc_queue: Option<String>,
    broadcast: BTreeMap<u64, BroadcastSubscription>,
    /// The broadcast queue and consumer tag on the current connection, while consuming.
    broadcast_queue: Option<(String, String)>,
    tasks: BTreeMap<u64, TaskSubscription>,
}

struct RpcSubscription {
    handler: Handler,
}

struct BroadcastSubscription {
    filter: BroadcastFilter,
    inbox: mpsc::UnboundedSender<Broadcast>,
}

struct TaskSubscription {
    queue: String,
    handler: Handler,
    prefetch: usize,
    /// Its channel on the current connection: closing it gives its tasks in hand back.
    channel: Option<Channel>,
    refused: Arc<Refusals>,
}

impl AmqpCommunicator {
    /// Connects to the broker and declares the exchanges and this communicator's reply queue.
    /// Fails with [`Error::Broker`] if the broker cannot be reached within the connect timeout.
    ///
    /// # Errors
    ///
    /// [`Error::Broker`] when the broker cannot be reached or refuses the declarations within the
    /// connect timeout.
    pub async fn connect(config: AmqpConfig) -> Result<Self, Error> {
        let (link, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            config,
            host: wire::host(),
            link,
            closed: CancellationToken::new(),
            topology: tokio::sync::RwLock::new(()),
            subscriptions: Mutex::new(Subscriptions::default()),
            waiters: Mutex::new(HashMap::new()),
            task_queues: Mutex::new(HashSet::new()),
            new_subscriber: Notify::new(),
            answering: Answering::default(),
            next_id: AtomicU64::new(1),
            connections: AtomicU64::new(0),
            runtime: tokio::runtime::Handle::current(),
        });
        let comm = AmqpCommunicator { inner };
        let first = comm.establish().await?;
        comm.inner.runtime.spawn(comm.clone().supervise(first));
        Ok(comm)
    }

    /// The configuration it was connected with.
    pub fn config(&self) -> &AmqpConfig {
        &self.inner.config
    }

    /// How many connections it has opened: 1, plus one per reconnection.
    pub fn connections(&self) -> u64 {
        self.inner.connections.load(Relaxed)
    }

    /// Whether a connection is up now (false while reconnecting).
    pub fn is_connected(&self) -> bool {
        self.inner.link.borrow().is_some()
    }

    /// Deletes task queue `queue` (named as in [`TaskSendOptions::queue`](crate::messaging::TaskSendOptions::queue)) with the tasks
    /// in it; returns how many it held. kiwipy has no such call; tests and administration do.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after close; [`Error::Broker`] when the broker fails; [`Error::Timeout`]
    /// when it does not answer in time.
    pub async fn delete_task_queue(&self, queue: &str) -> Result<u32, Error> {
        self.check_open()?;
        let name = self.inner.config.task_queue_name(queue);
        self.bounded(async {
            let link = self.link().await?;
            let dropped = link
                .publisher
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|e| broker_error(&format!("cannot delete the task queue {name}"), e))?;
            self.inner.task_queues.lock().remove(&name);
            Ok(dropped)
        })
        .await
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.inner.closed.is_cancelled() {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The live connection, waiting for a reconnection if there is none.
    async fn link(&self) -> Result<Arc<Link>, Error> {
        let mut updates = self.inner.link.subscribe();
        loop {
            self.check_open()?;
            if let Some(link) = updates.borrow_and_update().clone() {
                return Ok(link);
            }
            tokio::select! {
                _ = updates.changed() => {}
                () = self.inner.closed.cancelled() => return Err(Error::Closed),
            }
        }
    }

    /// Waits until the live connection is another one than `old` (which has failed).
    async fn link_other_than(&self, old: &Arc<Link>) -> Result<(), Error> {
        let mut updates = self.inner.link.subscribe();
        loop {
            self.check_open()?;
            let replaced =
                (updates.borrow_and_update().as_ref()).is_some_and(|live| !Arc::ptr_eq(live, old));
            if replaced {
                return Ok(());
            }
            tokio::select! {
                _ = updates.changed() => {}
                () = self.inner.closed.cancelled() => return Err(Error::Closed),
            }
        }
    }

    /// Opens a connection and declares every subscription on it; then it is the live one.
    async fn establish(&self) -> Result<Arc<Link>, Error> {
        let _topology = self.inner.topology.write().await;
        let link = Arc::new(Link::open(&self.inner.config).await?);
        if let Err(error) = self.subscribe_all(&link).await {
            link::close(&link.connection).await;
            return Err(error);
        }
        self.inner.connections.fetch_add(1, Relaxed);
        self.inner.link.send_replace(Some(link.clone()));
        Ok(link)
    }

    /// Declares every subscription on a new connection, and consumes its reply queue.
    async fn subscribe_all(&self, link: &Link) -> Result<(), Error> {
        self.inner.task_queues.lock().clear();
        let replies = link.consume_replies().await?;
        self.inner
            .runtime
            .spawn(self.clone().dispatch_replies(replies, link.lost.clone()));
        let (rpc, broadcast, tasks) = {
            let mut subscriptions = self.inner.subscriptions.lock();
            subscriptions.rpc_queue = None;
            let rpc: Vec<String> = subscriptions.rpc.keys().cloned().collect();
            let tasks: Vec<u64> = subscriptions.tasks.keys().copied().collect();
            (rpc, !subscriptions.broadcast.is_empty(), tasks)
        };
        if !rpc.is_empty() {
            let queue = self.serve_rpcs(link).await?;
            for identifier in rpc {
                self.bind_rpc(link, &queue, &identifier).await?;
            }
            self.inner.subscriptions.lock().rpc_queue = Some(queue);
        }
        if broadcast {
            let consuming = self.consume_broadcasts(link).await?;
            self.inner.subscriptions.lock().broadcast_queue = Some(consuming);
        }
        for id in tasks {
            self.consume_tasks(link, id).await?;
        }
        Ok(())
    }

    /// Watches the live connection; when it drops, fails the callers waiting on it and
    /// reconnects with backoff until it succeeds or the communicator is closed.
    async fn supervise(self, mut link: Arc<Link>) {
        loop {
            tokio::select! {
                biased;
                () = self.inner.closed.cancelled() => return,
                () = connection_lost(&link) => {}
            }
            tracing::warn!(
                broker = %self.inner.config.redacted_url(),
                "the connection to the broker dropped; reconnecting"
            );
            self.inner.link.send_replace(None);
            self.fail_waiters(|| Error::ConnectionLost);
            let mut delay = self.inner.config.reconnect_initial;
            link = loop {
                tokio::select! {
                    () = self.inner.closed.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                match self.establish().await {
                    Ok(link) => break link,
                    Err(error) => {
                        tracing::warn!(%error, ?delay, "reconnection failed; retrying");
                        delay = (delay * 2).min(self.inner.config.reconnect_max);
                    }
                }
            };
            tracing::info!("reconnected to the broker");
        }
    }

    fn fail_waiters(&self, error: impl Fn() -> Error) {
        let waiters = std::mem::take(&mut *self.inner.waiters.lock());
        for (_, waiter) in waiters {
            let _ = waiter.send(Err(error()));
        }
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Relaxed)
    }

    // ---- publishing --------------------------------------------------------------------------

    /// Encodes, publishes and waits for the broker's confirm. `Ok(false)` if the message was
    /// returned as unroutable (only `mandatory` messages are).
    async fn publish(
        &self,
        link: &Link,
        exchange: &str,
        routing_key: &str,
        body: &Value,
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<bool, Error> {
        let own_id = properties.correlation_id().clone();
        let message = Outgoing {
            exchange,
            routing_key,
            body,
            properties,
            mandatory,
        };
        let confirm = self.send_frames(link, &link.publisher, message).await?;
        let confirm = confirm
            .await
            .map_err(|e| publish_failed(link, exchange, routing_key, e))?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(true),
            // lapin hands a returned message to the next confirm it resolves, which, with
            // several mandatory messages in flight on the channel (one ack may cover many),
            // can be another message's: the return goes to whoever sent it.
            Confirmation::Ack(Some(returned)) => {
                if returned.properties.correlation_id() == &own_id {
                    return Ok(false);
                }
                self.returned_elsewhere(&returned);
                Ok(true)
            }
            Confirmation::Nack(_) => Err(Error::Broker {
                source: None,
                reason: format!("the broker refused a message to {exchange} / {routing_key}"),
            }),
        }
    }

    /// Tells the caller waiting for the answer to a request that came back unroutable, whose
    /// return lapin attached to another message's confirm.
    fn returned_elsewhere(&self, returned: &lapin::message::BasicReturnMessage) {
        let Some(correlation_id) = returned.properties.correlation_id() else {
            return;
        };
        let key = returned.routing_key.as_str();
        let recipient = key
            .strip_prefix(RPC_TOPIC)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(key)
            .to_owned();
        if let Some(waiter) = self.inner.waiters.lock().get(correlation_id.as_str()) {
            let _ = waiter.send(Err(Error::Unroutable { recipient }));
        }
    }

    /// Encodes and publishes without waiting for the broker's confirm: a task of its own takes
    /// it (a confirm dropped unread would stay in lapin's list for `wait_for_confirms`).
    async fn publish_unconfirmed(
        &self,
        link: &Link,
        exchange: &str,
        routing_key: &str,
        body: &Value,
        properties: BasicProperties,
    ) -> Result<(), Error> {
        let message = Outgoing {
            exchange,
            routing_key,
            body,
            properties,
            mandatory: false,
        };
        let confirm = self.send_frames(link, &link.publisher, message).await?;
        let comm = self.clone();
        self.inner.runtime.spawn(async move {
            // Never returned itself (not mandatory), but it may carry another message's return.
            if let Ok(Confirmation::Ack(Some(returned))) = confirm.await {
                comm.returned_elsewhere(&returned);
            }
        });
        Ok(())
    }

    /// Encodes a message and hands its frames to `channel`, one of `link`'s.
    async fn send_frames(
        &self,
        link: &Link,
        channel: &lapin::Channel,
        message: Outgoing<'_>,
    ) -> Result<lapin::PublisherConfirm, Error> {
        let bytes = codec::encode(message.body);
        let limit = self.inner.config.max_message_size;
        if bytes.len() > limit {
            return Err(Error::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let options = BasicPublishOptions {
            mandatory: message.mandatory,
            ..BasicPublishOptions::default()
        };
        let (exchange, routing_key) = (message.exchange, message.routing_key);
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                &bytes,
                message.properties,
            )
            .await
            .map_err(|e| publish_failed(link, exchange, routing_key, e))
    }

    /// Sends a request and follows its replies (pending ones included) to the final answer.
    async fn request(
        &self,
        link: &Link,
        exchange: &str,
        routing_key: &str,
        body: Value,
        persistent: bool,
        recipient: &str,
    ) -> Result<Value, Error> {
        let correlation_id = Uuid::new_v4().to_string();
        // Registered first: the answer may come before the publisher confirm.
        let mut replies = self.await_replies(&correlation_id);
        let request = Request {
            exchange,
            routing_key,
            persistent,
            recipient,
        };
        self.send_request(link, &request, &body, &correlation_id)
            .await?;
        loop {
            match replies.next().await {
                Ok(Reply::Pending) => continue,
                Ok(Reply::Result(value)) => return Ok(value),
                Ok(Reply::Exception(message)) => return Err(Error::Remote { message }),
                Ok(Reply::Cancelled) => return Err(Error::Cancelled),
                Err(error) => return Err(error),
            }
        }
    }

    /// Publishes a request (mandatory, answers to this connection's reply queue);
    /// [`Error::Unroutable`] when no queue takes it.
    async fn send_request(
        &self,
        link: &Link,
        request: &Request<'_>,
        body: &Value,
        correlation_id: &str,
    ) -> Result<(), Error> {
        let properties = properties(
            Some(correlation_id),
            Some(&link.reply_queue),
            request.persistent,
        );
        let routed = self
            .publish(
                link,
                request.exchange,
                request.routing_key,
                body,
                properties,
                true,
            )
            .await?;
        if routed {
            Ok(())
        } else {
            Err(Error::Unroutable {
                recipient: request.recipient.to_owned(),
            })
        }
    }

    /// Registers a caller for the replies to `correlation_id`; unregistered when dropped.
    fn await_replies(&self, correlation_id: &str) -> Replies {
        let (sender, receiver) = mpsc::unbounded_channel();
        (self.inner.waiters.lock()).insert(correlation_id.to_owned(), sender);
        Replies {
            comm: self.clone(),
            correlation_id: correlation_id.to_owned(),
            receiver,
        }
    }

    /// Publishes a reply (on the exchange the request came through, as kiwipy does).
    /// Sends a reply; waits for the broker's confirm only if `confirmed` (a `pending` reply
    /// does not wait: the final reply, on the same channel, comes after it in any case, and
    /// sooner by a round trip).
    async fn reply(
        &self,
        exchange: &str,
        reply_to: &str,
        correlation_id: &str,
        body: Value,
        confirmed: bool,
    ) {
        let Ok(link) = self.link().await else {
            return;
        };
        let properties = properties(Some(correlation_id), None, false);
        let sent = if confirmed {
            self.publish(&link, exchange, reply_to, &body, properties, false)
                .await
                .map(drop)
        } else {
            self.publish_unconfirmed(&link, exchange, reply_to, &body, properties)
                .await
        };
        if let Err(error) = sent {
            tracing::warn!(%error, "a reply could not be sent");
        }
    }

    /// Sends an answer to an RPC (a `pending` one or the final one) on the channel without
    /// publisher confirms: the broker's confirm of an answer would tell only this side, which
    /// could do nothing with it but log, and costs a frame, a promise and a wake-up per call;
    /// a caller whose answer is lost gets its timeout, as it would if this program died.
    pub(super) async fn answer_rpc(
        &self,
        exchange: &str,
        reply_to: &str,
        correlation_id: &str,
        body: Value,
    ) {
        let Ok(link) = self.link().await else {
            return;
        };
        let message = Outgoing {
            exchange,
            routing_key: reply_to,
            body: &body,
            properties: properties(Some(correlation_id), None, false),
            mandatory: false,
        };
        // Handed to the connection, not waited for: lapin's `basic_publish` resolves once its
        // I/O thread has written the frames, which only this side would learn, at the price of
        // a wake-up each way. A channel found closed fails at once, on the first poll.
        let sent = (self.send_frames(&link, &link.replier, message)).now_or_never();
        if let Some(Err(error)) = sent {
            tracing::warn!(%error, "an answer to an RPC could not be sent");
        }
    }

    /// Sends a task's final reply, then acknowledges the task as soon as the reply is on its
    /// way, before the broker confirms it: a worker that dies before the acknowledgement
    /// leaves the task to be delivered again, never acknowledged without its reply; and whoever
    /// acts on the reply (removes the subscriber, say) finds the task already settled.
    pub(super) async fn reply_then_ack(
        &self,
        reply_to: &str,
        correlation_id: &str,
        reply: Reply,
        delivery: &Delivery,
    ) {
        let ack = || delivery.ack(lapin::options::BasicAckOptions::default());
        let Ok(link) = self.link().await else {
            let _ = ack().await;
            return;
        };
        let body = reply.to_body(Some(&self.inner.host));
        let message = Outgoing {
            exchange: &self.inner.config.task_exchange,
            routing_key: reply_to,
            body: &body,
            properties: properties(Some(correlation_id), None, false),
            mandatory: false,
        };
        match self.send_frames(&link, &link.publisher, message).await {
            Ok(confirm) => {
                let _ = ack().await;
                if let Err(error) = confirm.await {
                    tracing::warn!(%error, "a task's reply was not confirmed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "a task's reply could not be sent");
                let _ = ack().await;
            }
        }
    }

    /// Consumes this connection's reply queue and hands each reply to its caller.
    /// Hands replies to their waiters until the reply consumer ends, which means that the
    /// connection (or its consuming channel) is gone: then `lost` is cancelled.
    async fn dispatch_replies(self, mut replies: Consumer, lost: CancellationToken) {
        let _lost = lost.drop_guard();
        while let Some(Ok(delivery)) = replies.next().await {
            let Some(correlation_id) = delivery.properties.correlation_id() else {
                tracing::debug!("a reply without a correlation id was dropped");
                continue;
            };
            let waiter = self
                .inner
                .waiters
                .lock()
                .get(correlation_id.as_str())
                .cloned();
            let Some(waiter) = waiter else {
                tracing::debug!(%correlation_id, "a reply for nobody waiting was dropped");
                continue;
            };
            let reply = codec::decode(&delivery.data, self.inner.config.max_message_size)
                .map_err(|e| e.to_string())
                .and_then(Reply::parse)
                .map_err(|reason| Error::Decode {
                    what: "a reply".to_owned(),
                    reason,
                });
            let _ = waiter.send(reply);
        }
    }

    /// Bounds a topology change by the default timeout.
    async fn bounded<T>(&self, change: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
        self.within(self.inner.config.default_timeout, change, || {
            Error::Timeout(self.inner.config.default_timeout)
        })
        .await
    }

    /// Runs a change to the subscriptions and the broker's topology: holding the topology
    /// lock (so it never interleaves with a resubscription after a reconnection), bounded by
    /// the default timeout, [`Error::Closed`] once closed.
    async fn change_topology<T>(
        &self,
        change: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        self.check_open()?;
        self.bounded(async {
            let _topology = self.inner.topology.write().await;
            change.await
        })
        .await
    }

    /// Declares a subscription registered just before on the live connection (waiting for one
    /// if needed) and, if that fails, takes the registration back with `undo`: the add methods'
    /// one way to leave nothing half-made.
    async fn declare_or_undo<T, F>(
        &self,
        declare: impl FnOnce(Arc<Link>) -> F,
        undo: impl FnOnce(&mut Subscriptions),
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let declared = match self.link().await {
            Ok(link) => declare(link).await,
            Err(error) => Err(error),
        };
        if declared.is_err() {
            undo(&mut self.inner.subscriptions.lock());
        }
        declared
    }

    /// Binds the RPC subscriber `identifier` (registered just before) to the connection's RPC
    /// queue, making that queue first if this is the first subscriber. Bindings are made under
    /// the topology lock's read side, so many at once, and never during a resubscription.
    async fn bind_on_live_queue(&self, identifier: &str) -> Result<(), Error> {
        loop {
            {
                let _bindings = self.inner.topology.read().await;
                let queue = self.inner.subscriptions.lock().rpc_queue.clone();
                if let Some(queue) = queue {
                    let link = self.link().await?;
                    return self.bind_rpc(&link, &queue, identifier).await;
                }
            }
            let _topology = self.inner.topology.write().await;
            if self.inner.subscriptions.lock().rpc_queue.is_none() {
                let link = self.link().await?;
                let queue = self.serve_rpcs(&link).await?;
                self.inner.subscriptions.lock().rpc_queue = Some(queue);
            }
        }
    }

    /// Cancels consumer `tag` and deletes its `queue` on the live connection, if there is one;
    /// best effort, since a connection that has gone took both with it.
    async fn stop_consuming(&self, tag: &str, queue: &str) {
        let link = self.inner.link.borrow().clone();
        if let Some(link) = link {
            let _ = (link.consumer)
                .basic_cancel(tag.into(), BasicCancelOptions::default())
                .await;
            let _ = (link.consumer)
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        }
    }

    /// Runs an operation for at most `timeout` (then `expired()`), and ends it with
    /// [`Error::Closed`] as soon as the communicator is closed, whatever it was doing.
    async fn within<T>(
        &self,
        timeout: Duration,
        operation: impl Future<Output = Result<T, Error>>,
        expired: impl FnOnce() -> Error,
    ) -> Result<T, Error> {
        tokio::select! {
            biased;
            () = self.inner.closed.cancelled() => Err(Error::Closed),
            result = tokio::time::timeout(timeout, operation) => result.unwrap_or_else(|_| Err(expired())),
        }
    }
}

/// kiwipy's message properties: priority 0, a random message id, empty headers, delivery mode
/// 2 for tasks and 1 otherwise.
/// A message to publish.
struct Outgoing<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    body: &'a Value,
    properties: BasicProperties,
    mandatory: bool,
}

/// A publish that failed: the broker's error, or `ConnectionLost` once the connection is gone.
fn publish_failed(link: &Link, exchange: &str, routing_key: &str, error: lapin::Error) -> Error {
    if link.connection.status().connected() {
        broker_error(
            &format!("cannot publish to {exchange} / {routing_key}"),
            error,
        )
    } else {
        Error::ConnectionLost
    }
}

fn properties(
    correlation_id: Option<&str>,
    reply_to: Option<&str>,
    persistent: bool,
) -> BasicProperties {
    let mut properties = BasicProperties::default()
        .with_priority(0)
        .with_delivery_mode(if persistent { 2 } else { 1 })
        .with_message_id(Uuid::new_v4().simple().to_string().into())
        .with_headers(FieldTable::default());
    if let Some(correlation_id) = correlation_id {
        properties = properties.with_correlation_id(correlation_id.into());
    }
    if let Some(reply_to) = reply_to {
        properties = properties.with_reply_to(reply_to.into());
    }
    properties
}

/// Waits until the connection is no longer usable: lapin reports an error as an event, and a
/// close by the broker to the consumers, whose end the reply consumer signals (`Link::lost`).
async fn connection_lost(link: &Link) {
    let mut events = link.connection.events_listener();
    loop {
        tokio::select! {
            () = link.lost.cancelled() => return,
            event = events.next() => match event {
                Some(lapin::Event::Error(error)) => {
                    tracing::debug!(%error, "connection error");
                    return;
                }
                None => return,
                Some(_) => {}
            },
        }
    }
}

/// Where a request goes: exchange and routing key, whether it is persistent (tasks), and the
/// recipient named in an [`Error::Unroutable`].
struct Request<'a> {
    exchange: &'a str,
    routing_key: &'a str,
    persistent: bool,
    recipient: &'a str,
}

/// The replies to one request, until dropped.
struct Replies {
    comm: AmqpCommunicator,
    correlation_id: String,
    receiver: mpsc::UnboundedReceiver<Result<Reply, Error>>,
}

impl Replies {
    async fn next(&mut self) -> Result<Reply, Error> {
        self.receiver
            .recv()
            .await
            .unwrap_or(Err(Error::ConnectionLost))
    }
}

impl Drop for Replies {
    fn drop(&mut self) {
        self.comm.inner.waiters.lock().remove(&self.correlation_id);
    }
}

impl Communicator for AmqpCommunicator {
    async fn add_rpc_subscriber(&self, identifier: &str, handler: Handler) -> Result<(), Error> {
        self.check_open()?;
        self.bounded(async {
            {
                let mut subscriptions = self.inner.subscriptions.lock();
                if subscriptions.rpc.contains_key(identifier) {
                    return Err(Error::DuplicateSubscriber {
                        identifier: identifier.to_owned(),
                    });
                }
                let subscription = RpcSubscription { handler };
                subscriptions
                    .rpc
                    .insert(identifier.to_owned(), subscription);
            }
            let bound = self.bind_on_live_queue(identifier).await;
            if bound.is_err() {
                self.inner.subscriptions.lock().rpc.remove(identifier);
            }
            bound
        })
        .await
    }

    async fn remove_rpc_subscriber(&self, identifier: &str) -> Result<(), Error> {
        self.check_open()?;
        self.bounded(async {
            let _bindings = self.inner.topology.read().await;
            if !self.inner.subscriptions.lock().rpc.contains_key(identifier) {
                return Err(Error::UnknownSubscriber {
                    identifier: identifier.to_owned(),
                });
            }
            // Unbound first, then forgotten: a request sent from now on is `Unroutable` at
            // once, and those already routed are still answered by the handler.
            let link = self.inner.link.borrow().clone();
            let queue = self.inner.subscriptions.lock().rpc_queue.clone();
            if let (Some(link), Some(queue)) = (link, queue) {
                let exchange = &self.inner.config.message_exchange;
                let key = format!("{RPC_TOPIC}.{identifier}");
                let _ = link::unbind(&link.consumer, &queue, exchange, &key).await;
            }
            self.inner.subscriptions.lock().rpc.remove(identifier);
            Ok(())
        })
        .await
    }

    async fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<Duration>,
    ) -> Result<Value, Error> {
        self.check_open()?;
        let timeout = timeout.unwrap_or(self.inner.config.default_timeout);
        let exchange = &self.inner.config.message_exchange;
        let key = format!("{RPC_TOPIC}.{recipient}");
        let call = async {
            let link = self.link().await?;
            self.request(&link, exchange, &key, message, false, recipient)
                .await
        };
        self.within(timeout, call, || Error::Timeout(timeout)).await
    }

    async fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> Result<SubscriberId, Error> {
        self.change_topology(async {
            let id = self.next_id();
            let (inbox, mut messages) = mpsc::unbounded_channel::<Broadcast>();
            self.inner.runtime.spawn(async move {
                while let Some(message) = messages.recv().await {
                    watched(async { handler.call(message).await }, || {
                        format!("broadcast subscriber {id}")
                    })
                    .await;
                }
            });
            let start = {
                let mut subscriptions = self.inner.subscriptions.lock();
                subscriptions
                    .broadcast
                    .insert(id, BroadcastSubscription { filter, inbox });
                subscriptions.broadcast_queue.is_none()
            };
            if start {
                let consuming = self
                    .declare_or_undo(
                        |link| async move { self.consume_broadcasts(&link).await },
                        |subscriptions| drop(subscriptions.broadcast.remove(&id)),
                    )
                    .await?;
                self.inner.subscriptions.lock().broadcast_queue = Some(consuming);
            }
            Ok(SubscriberId(id))
        })
        .await
    }

    async fn remove_broadcast_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        self.change_topology(async {
            let stop = {
                let mut subscriptions = self.inner.subscriptions.lock();
                if subscriptions.broadcast.remove(&id.0).is_none() {
                    return Err(Error::UnknownSubscriber {
                        identifier: id.to_string(),
                    });
                }
                if subscriptions.broadcast.is_empty() {
                    subscriptions.broadcast_queue.take()
                } else {
                    None
                }
            };
            // The last one gone: the queue goes too, so that no old broadcasts pile up for a
            // later subscriber (kiwipy keeps it, and replays up to 66 s of them).
            if let Some((queue, tag)) = stop {
                self.stop_consuming(&tag, &queue).await;
            }
            Ok(())
        })
        .await
    }

    async fn broadcast_send(&self, message: Broadcast) -> Result<(), Error> {
        self.check_open()?;
        self.bounded(async {
            let link = self.link().await?;
            let body = wire::broadcast_body(&message);
            let exchange = &self.inner.config.message_exchange;
            self.publish(
                &link,
                exchange,
                BROADCAST_TOPIC,
                &body,
                properties(None, None, false),
                false,
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> Result<SubscriberId, Error> {
        self.change_topology(async {
            let id = self.next_id();
            let subscription = TaskSubscription {
                queue: self.inner.config.task_queue_name(queue),
                handler,
                prefetch: options.prefetch,
                channel: None,
                refused: Arc::default(),
            };
            self.inner
                .subscriptions
                .lock()
                .tasks
                .insert(id, subscription);
            self.declare_or_undo(
                |link| async move { self.consume_tasks(&link, id).await },
                |subscriptions| drop(subscriptions.tasks.remove(&id)),
            )
            .await?;
            self.inner.new_subscriber.notify_waiters();
            Ok(SubscriberId(id))
        })
        .await
    }

    async fn remove_task_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        self.change_topology(async {
            let removed = self.inner.subscriptions.lock().tasks.remove(&id.0);
            let Some(removed) = removed else {
                return Err(Error::UnknownSubscriber {
                    identifier: id.to_string(),
                });
            };
            // Closing its channel gives its unacknowledged tasks back to the queue.
            if let Some(channel) = removed.channel {
                let _ = channel.close(200, "subscriber removed".into()).await;
            }
            Ok(())
        })
        .await
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
        let named = queue;
        let queue = &self.inner.config.task_queue_name(queue);
        let pull = async {
            loop {
                let link = self.link().await?;
                self.ensure_task_queue(&link, queue).await?;
                let Some(delivery) = self.take_one(&link, queue).await? else {
                    // The pull's consumer ended: its queue was deleted (declare it again), or
                    // the pulling channel went with its connection (wait for the next one).
                    self.inner.task_queues.lock().remove(queue);
                    if !link.puller.status().connected() {
                        link.lost.cancel();
                        self.link_other_than(&link).await?;
                    }
                    continue;
                };
                if let Some(task) = self.pulled(delivery).await {
                    return Ok(task);
                }
            }
        };
        let empty = || Error::QueueEmpty {
            queue: named.to_owned(),
        };
        self.within(timeout, pull, empty).await
    }

    async fn close(&self) {
        if self.inner.closed.is_cancelled() {
            return;
        }
        // Answers already on their way out go first (each a round trip or two).
        self.inner.answering.drain(DRAIN).await;
        self.inner.closed.cancel();
        self.fail_waiters(|| Error::Closed);
        // Handlers and broadcast subscribers' tasks go now, not with the last clone.
        let subscriptions = std::mem::take(&mut *self.inner.subscriptions.lock());
        drop(subscriptions);
        let link = self.inner.link.send_replace(None);
        if let Some(link) = link {
            link::close(&link.connection).await;
        }
    }

    fn is_closed(&self) -> bool {
        self.inner.closed.is_cancelled()
    }
}

/// How long a close waits for the answers on their way out.
const DRAIN: Duration = Duration::from_secs(5);

impl AmqpCommunicator {
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
        let timeout = timeout.unwrap_or(self.inner.config.default_timeout);
        let queue = &self.inner.config.task_queue_name(queue);
        let send = async {
            let link = self.link().await?;
            // kiwipy's publisher declares its queue before sending; so does this one.
            self.ensure_task_queue(&link, queue).await?;
            let body = wire::task_body(&task, no_reply);
            let exchange = &self.inner.config.task_exchange;
            if !no_reply {
                return (self
                    .request(&link, exchange, queue, body, true, queue)
                    .await)
                    .map(Some);
            }
            let request = Request {
                exchange,
                routing_key: queue,
                persistent: true,
                recipient: queue,
            };
            let correlation_id = Uuid::new_v4().to_string();
            self.send_request(&link, &request, &body, &correlation_id)
                .await
                .map(|()| None)
        };
        self.within(timeout, send, || Error::Timeout(timeout)).await
    }
}
