//! The consuming side: serving RPCs, dispatching broadcasts to subscribers, working tasks
//! (with kiwipy's pending replies, late acknowledgements, and refused tasks held rather than
//! redelivered in a loop), and tasks taken with the pull API.

use super::*;
use crate::messaging::amqp::link::Acks;

impl AmqpCommunicator {
    // ---- RPC ---------------------------------------------------------------------------------

    /// Declares this connection's one RPC queue on `link` and serves it; returns its name.
    /// Every RPC subscriber is a binding of it (`[rpc].<identifier>`), not a queue of its own:
    /// a subscription costs one round trip to the broker, and the broker one binding, where
    /// kiwipy's cost a queue, a consumer and a binding (a worker with thousands of processes
    /// that listen would otherwise hold thousands of queues). The sender's side of the wire is
    /// kiwipy's, unchanged.
    pub(super) async fn serve_rpcs(&self, link: &Link) -> Result<String, Error> {
        let config = &self.inner.config;
        let queue = format!("rpc-{}", Uuid::new_v4().simple());
        let arguments = link::table(&[
            ("x-message-ttl", config.message_ttl_ms),
            ("x-expires", config.queue_expires_ms),
        ]);
        link::declare_exclusive(&link.consumer, &queue, arguments).await?;
        // kiwipy acknowledges a request as soon as it arrives (at most once); consuming
        // without acknowledgements is the same on the wire to every peer, with one frame less
        // per request.
        let consumer = link::consume(&link.consumer, &queue, &queue, Acks::None).await?;
        self.inner
            .runtime
            .spawn(self.clone().serve_requests(consumer));
        Ok(queue)
    }

    /// Routes the requests for `identifier` to this connection's RPC queue.
    pub(super) async fn bind_rpc(
        &self,
        link: &Link,
        queue: &str,
        identifier: &str,
    ) -> Result<(), Error> {
        let key = format!("{RPC_TOPIC}.{identifier}");
        link::bind(
            &link.consumer,
            queue,
            &self.inner.config.message_exchange,
            &key,
        )
        .await
    }

    /// Answers each request with the handler of the subscriber its routing key names.
    pub(super) async fn serve_requests(self, mut requests: Consumer) {
        while let Some(Ok(delivery)) = requests.next().await {
            let comm = self.clone();
            let identifier = delivery
                .routing_key
                .as_str()
                .strip_prefix(RPC_TOPIC)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or_default()
                .to_owned();
            let handler = (self.inner.subscriptions.lock().rpc)
                .get(&identifier)
                .map(|subscription| subscription.handler.clone());
            // Removed since the request was routed: an answer, rather than none.
            let handler = handler.unwrap_or_else(|| {
                Handler::sync(move |_| {
                    Response::Failed(format!("the RPC subscriber `{identifier}` has gone"))
                })
            });
            // Answered here when it can be at once (a synchronous handler: the answer is handed
            // to the connection without waiting), otherwise by a task of its own, so that a
            // slow handler holds up no other request. A task per request would cost a
            // scheduling, on a multi-threaded runtime often a wake-up of another thread.
            let mut answer = Box::pin(async move { comm.answer_request(delivery, handler).await });
            let mut polled = std::task::Context::from_waker(std::task::Waker::noop());
            if answer.as_mut().poll(&mut polled).is_pending() {
                // Its first poll as a task registers the task's waker.
                self.inner.runtime.spawn(answer);
            }
        }
    }

    pub(super) async fn answer_request(&self, delivery: Delivery, handler: Handler) {
        let (Some(reply_to), Some(correlation_id)) = reply_address(&delivery) else {
            tracing::warn!("an RPC request without reply_to or correlation_id was dropped");
            return;
        };
        let exchange = &self.inner.config.message_exchange;
        let response = match codec::decode(&delivery.data, self.inner.config.max_message_size) {
            Ok(message) => {
                let key = &delivery.routing_key;
                watched(async { handler.call(message).await }, || {
                    format!("rpc subscriber at '{key}'")
                })
                .await
            }
            Err(error) => {
                tracing::warn!(%error, "an RPC request could not be decoded");
                Response::Failed(format!("the request could not be decoded: {error}"))
            }
        };
        let mut send = |reply: Reply| {
            let body = reply.to_body(None);
            let (reply_to, correlation_id) = (&reply_to, &correlation_id);
            async move {
                (self.answer_rpc(exchange, reply_to, correlation_id, body)).await;
            }
        };
        let reply = follow(response, true, &mut send)
            .await
            .unwrap_or_else(|| Reply::Exception(Error::TaskRejected.to_string()));
        // Closing: the caller's timeout tells it.
        let Some(_answering) = self.inner.answering.begin() else {
            return;
        };
        send(reply).await;
    }

    // ---- broadcasts --------------------------------------------------------------------------

    /// Declares this connection's broadcast queue and consumes it; returns (queue, tag).
    pub(super) async fn consume_broadcasts(&self, link: &Link) -> Result<(String, String), Error> {
        let config = &self.inner.config;
        let queue = format!("broadcast-{}", Uuid::new_v4().simple());
        let arguments = link::table(&[("x-message-ttl", config.message_ttl_ms)]);
        link::declare_exclusive(&link.consumer, &queue, arguments).await?;
        link::bind(
            &link.consumer,
            &queue,
            &config.message_exchange,
            BROADCAST_TOPIC,
        )
        .await?;
        // The queue is this connection's own (exclusive): were the connection to drop, the
        // queue would go with whatever it holds, acknowledged or not, and the channel sets no
        // prefetch. An acknowledgement would protect nothing, at a frame and a wait per
        // broadcast: none is sent, as for requests.
        let consumer = link::consume(&link.consumer, &queue, "", Acks::None).await?;
        let tag = consumer.tag().to_string();
        self.inner
            .runtime
            .spawn(self.clone().dispatch_broadcasts(consumer));
        Ok((queue, tag))
    }

    pub(super) async fn dispatch_broadcasts(self, mut broadcasts: Consumer) {
        let limit = self.inner.config.max_message_size;
        while let Some(Ok(delivery)) = broadcasts.next().await {
            let message = codec::decode(&delivery.data, limit)
                .map_err(|e| e.to_string())
                .and_then(wire::parse_broadcast);
            match message {
                Ok(message) => self.deliver_broadcast(&message),
                Err(error) => tracing::warn!(%error, "a broadcast could not be decoded; dropped"),
            }
        }
    }

    /// Hands a broadcast to every subscriber whose filter it passes (each one's own task
    /// calls its handler, in order).
    pub(super) fn deliver_broadcast(&self, message: &Broadcast) {
        let subscriptions = self.inner.subscriptions.lock();
        for subscription in subscriptions.broadcast.values() {
            if subscription.filter.matches(message) {
                let _ = subscription.inbox.send(message.clone());
            }
        }
    }

    // ---- tasks -------------------------------------------------------------------------------

    pub(super) async fn ensure_task_queue(&self, link: &Link, queue: &str) -> Result<(), Error> {
        if self.inner.task_queues.lock().contains(queue) {
            return Ok(());
        }
        link::declare_task_queue(&link.publisher, &self.inner.config, queue).await?;
        self.inner.task_queues.lock().insert(queue.to_owned());
        Ok(())
    }

    /// Opens the channel of task subscription `id` on `link` and consumes its queue.
    pub(super) async fn consume_tasks(&self, link: &Link, id: u64) -> Result<(), Error> {
        let Some((queue, prefetch, handler, refused)) = ({
            let subscriptions = self.inner.subscriptions.lock();
            (subscriptions.tasks.get(&id)).map(|s| {
                (
                    s.queue.clone(),
                    s.prefetch,
                    s.handler.clone(),
                    s.refused.clone(),
                )
            })
        }) else {
            return Ok(());
        };
        self.ensure_task_queue(link, &queue).await?;
        let channel = link::prefetching_channel(&link.connection, prefetch).await?;
        let consumer = link::consume(&channel, &queue, "", Acks::Manual).await?;
        if let Some(s) = self.inner.subscriptions.lock().tasks.get_mut(&id) {
            s.channel = Some(channel);
        }
        self.inner
            .runtime
            .spawn(self.clone().work(consumer, handler, refused));
        Ok(())
    }

    pub(super) async fn work(self, mut tasks: Consumer, handler: Handler, refused: Arc<Refusals>) {
        while let Some(Ok(delivery)) = tasks.next().await {
            let comm = self.clone();
            let (handler, refused) = (handler.clone(), refused.clone());
            self.inner
                .runtime
                .spawn(async move { comm.do_task(delivery, handler, refused).await });
        }
    }

    pub(super) async fn do_task(
        &self,
        delivery: Delivery,
        handler: Handler,
        refused: Arc<Refusals>,
    ) {
        let id = task_id(&delivery);
        if let Some(times) = refused.seen_again(&id) {
            // Refused here before: give it back after a while, or as soon as another subscriber
            // arrives, without asking the handler again (kiwipy redelivers in a hot loop).
            let hold = Duration::from_millis(100 << times.min(6)).min(Duration::from_secs(5));
            tokio::select! {
                () = tokio::time::sleep(hold) => {}
                () = self.inner.new_subscriber.notified() => {}
                () = self.inner.closed.cancelled() => {}
            }
            let _ = delivery.nack(requeue()).await;
            return;
        }
        let (reply_to, correlation_id) = reply_address(&delivery);
        let (task, no_reply) = match self.decode_task(&delivery) {
            Ok(task) => task,
            Err(reason) => {
                tracing::warn!(%reason, "a task could not be decoded; rejected");
                let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
                let exception =
                    Reply::Exception(format!("the task could not be decoded: {reason}"));
                self.task_reply(&reply_to, &correlation_id, exception).await;
                return;
            }
        };
        let queue = &delivery.routing_key;
        let call = async { handler.call(task).await };
        let response = watched(call, || format!("task subscriber on queue '{queue}'")).await;
        let mut send = |reply: Reply| {
            let (reply_to, correlation_id) = (&reply_to, &correlation_id);
            async move { self.task_reply(reply_to, correlation_id, reply).await }
        };
        let Some(reply) = follow(response, !no_reply, &mut send).await else {
            // Rejected after all: back to the queue, for another worker.
            refused.remember(id);
            let _ = delivery.nack(requeue()).await;
            return;
        };
        // Closing: unacknowledged, the task goes back to the queue with the connection.
        let Some(_answering) = self.inner.answering.begin() else {
            return;
        };
        // The reply, then the acknowledgement (kiwipy does the reverse): a worker that dies
        // between the two leaves a task that is delivered again (at least once, as any task
        // whose worker dies), never one acknowledged whose sender waits for a reply in vain.
        match (&reply_to, &correlation_id) {
            (Some(reply_to), Some(correlation_id)) if !no_reply => {
                self.reply_then_ack(reply_to, correlation_id, reply, &delivery)
                    .await;
            }
            _ => {
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        }
    }

    /// A task's body: the task and its no-reply flag, or why it cannot be read.
    pub(super) fn decode_task(&self, delivery: &Delivery) -> Result<(Value, bool), String> {
        codec::decode(&delivery.data, self.inner.config.max_message_size)
            .map_err(|e| e.to_string())
            .and_then(wire::parse_task)
    }

    pub(super) async fn task_reply(
        &self,
        reply_to: &Option<String>,
        correlation_id: &Option<String>,
        reply: Reply,
    ) {
        if let (Some(reply_to), Some(correlation_id)) = (reply_to, correlation_id) {
            let confirmed = !matches!(reply, Reply::Pending);
            let body = reply.to_body(Some(&self.inner.host));
            let exchange = &self.inner.config.task_exchange;
            (self.reply(exchange, reply_to, correlation_id, body, confirmed)).await;
        }
    }
}

/// The tasks one subscriber refused, by id, and how often it was offered them since.
#[derive(Default)]
pub(super) struct Refusals(Mutex<HashMap<String, u32>>);

/// Remembered refusals per subscriber (a bound, not a working set: refused tasks are rare).
const MAX_REFUSALS: usize = 10_000;

/// Follows pending answers to the final one, sending kiwipy's `{pending: null}` for each level
/// when `announce` says so; `None` for a rejection.
async fn follow<F, Fut>(mut response: Response, announce: bool, send: &mut F) -> Option<Reply>
where
    F: FnMut(Reply) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        response = match response {
            Response::Value(value) => return Some(Reply::Result(value)),
            Response::Failed(message) => return Some(Reply::Exception(message)),
            Response::Cancelled => return Some(Reply::Cancelled),
            Response::Rejected => return None,
            Response::Pending(later) => {
                if announce {
                    send(Reply::Pending).await;
                }
                later.await
            }
        };
    }
}

pub(super) fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}

/// What identifies a task across redeliveries: its correlation id (kiwipy always sets one),
/// else its message id, else its body.
fn task_id(delivery: &Delivery) -> String {
    if let Some(id) = delivery.properties.correlation_id() {
        return id.to_string();
    }
    if let Some(id) = delivery.properties.message_id() {
        return id.to_string();
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    delivery.data.hash(&mut hasher);
    format!("body-{:016x}", hasher.finish())
}

impl Refusals {
    fn remember(&self, id: String) {
        let mut refused = self.0.lock();
        if refused.len() >= MAX_REFUSALS {
            refused.clear();
        }
        refused.insert(id, 0);
    }

    /// How often a task refused before was offered again, counting this time.
    fn seen_again(&self, id: &str) -> Option<u32> {
        let mut refused = self.0.lock();
        let times = refused.get_mut(id)?;
        *times = times.saturating_add(1);
        Some(*times)
    }
}

impl AmqpCommunicator {
    // ---- the pull API ------------------------------------------------------------------------

    /// The next task of `queue`: at once if one is there (`basic.get`), else the first one
    /// delivered to a consumer with room for one, which is then cancelled (no polling: a
    /// waiting pull costs nothing and gets a task as soon as it is queued). `None` if the
    /// pulling channel (or its connection) closed, or the queue was deleted, meanwhile.
    ///
    /// The exchange with the broker runs as a task of its own: a request already sent cannot
    /// be taken back, so a caller that gives up (a timeout) must not drop it half-way, or the
    /// broker's answer (a task, or a consumer that would take one) would be left to nobody.
    /// What comes after the caller has gone is given back to the queue.
    pub(super) async fn take_one(
        &self,
        link: &Arc<Link>,
        queue: &str,
    ) -> Result<Option<Delivery>, Error> {
        let (taken_tx, taken) = tokio::sync::oneshot::channel();
        let (link, queue) = (link.clone(), queue.to_owned());
        self.inner.runtime.spawn(async move {
            let mut taken_tx = taken_tx;
            let got = take_for(&link, &queue, &mut taken_tx).await;
            if let Err(Ok(Some(unwanted))) = taken_tx.send(got) {
                let _ = unwanted.nack(requeue()).await;
            }
        });
        // The task never ends without sending, unless the runtime is shutting down.
        taken.await.unwrap_or(Ok(None))
    }

    /// A delivery taken by a pull, as an [`IncomingTask`]; `None` (and rejected) if it cannot
    /// be decoded.
    pub(super) async fn pulled(&self, delivery: Delivery) -> Option<IncomingTask> {
        let (task, no_reply) = match self.decode_task(&delivery) {
            Ok(task) => task,
            Err(reason) => {
                tracing::warn!(%reason, "a pulled task could not be decoded; rejected");
                let _ = delivery.reject(BasicRejectOptions { requeue: false }).await;
                return None;
            }
        };
        let (reply_to, correlation_id) = reply_address(&delivery);
        let settle = Pulled {
            comm: self.clone(),
            runtime: tokio::runtime::Handle::current(),
            acker: delivery.acker,
            reply_to,
            correlation_id,
            no_reply,
        };
        Some(IncomingTask::new(task, no_reply, Box::new(settle)))
    }
}

/// [`AmqpCommunicator::take_one`]'s exchange with the broker; stops waiting for a delivery
/// when the caller has gone.
async fn take_for(
    link: &Link,
    queue: &str,
    caller: &mut tokio::sync::oneshot::Sender<Result<Option<Delivery>, Error>>,
) -> Result<Option<Delivery>, Error> {
    let got = link
        .puller
        .basic_get(queue.into(), BasicGetOptions::default())
        .await;
    match got {
        Ok(Some(message)) => return Ok(Some(message.delivery)),
        Ok(None) => {}
        Err(_) if !link.puller.status().connected() => return Ok(None),
        Err(error) => return Err(broker_error(&format!("cannot pull from {queue}"), error)),
    }
    let tag = format!("pull-{}", Uuid::new_v4().simple());
    let consumer = link::consume(&link.puller, queue, &tag, Acks::Manual).await?;
    let mut waiting = OneShotConsumer {
        channel: link.puller.clone(),
        tag,
        consumer: Some(consumer),
        runtime: tokio::runtime::Handle::current(),
    };
    tokio::select! {
        delivery = waiting.next() => Ok(delivery),
        () = caller.closed() => Ok(None),
    }
}

/// A consumer that takes one delivery. However it ends (with its delivery, or dropped while
/// waiting because the pull timed out), it is cancelled, and a delivery that reached it after
/// all is given back to the queue, never left unacknowledged on the channel.
struct OneShotConsumer {
    channel: Channel,
    tag: String,
    consumer: Option<Consumer>,
    runtime: tokio::runtime::Handle,
}

impl OneShotConsumer {
    async fn next(&mut self) -> Option<Delivery> {
        let consumer = self.consumer.as_mut()?;
        match consumer.next().await {
            Some(Ok(delivery)) => Some(delivery),
            _ => None,
        }
    }
}

impl Drop for OneShotConsumer {
    fn drop(&mut self) {
        let Some(mut consumer) = self.consumer.take() else {
            return;
        };
        let (channel, tag) = (self.channel.clone(), std::mem::take(&mut self.tag));
        // Captured handle: a pull's future may be dropped anywhere.
        self.runtime.spawn(async move {
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            // After the cancel, the stream ends once what was already delivered is read.
            while let Some(Ok(late)) = consumer.next().await {
                let _ = late.nack(requeue()).await;
            }
        });
    }
}

/// A pulled task: answered or given back through its delivery, on the runtime it was pulled
/// on, from whichever thread settles it (a synchronous worker's has no runtime).
pub(super) struct Pulled {
    pub(super) comm: AmqpCommunicator,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) acker: Acker,
    pub(super) reply_to: Option<String>,
    pub(super) correlation_id: Option<String>,
    pub(super) no_reply: bool,
}

impl Settle for Pulled {
    fn answer(&mut self, outcome: Result<Value, Error>) {
        let reply = match outcome {
            Ok(value) => Reply::Result(value),
            Err(Error::Cancelled) => Reply::Cancelled,
            Err(Error::Remote { message }) => Reply::Exception(message),
            Err(other) => Reply::Exception(other.to_string()),
        };
        let comm = self.comm.clone();
        let acker = self.acker.clone();
        let (reply_to, correlation_id) = (self.reply_to.take(), self.correlation_id.take());
        let no_reply = self.no_reply;
        self.runtime.spawn(async move {
            let _ = acker.ack(BasicAckOptions::default()).await;
            if !no_reply {
                comm.task_reply(&reply_to, &correlation_id, reply).await;
            }
        });
    }

    fn requeue(&mut self) {
        let acker = self.acker.clone();
        self.runtime.spawn(async move {
            let _ = acker.nack(requeue()).await;
        });
    }
}

/// Where a request's answers go: its `reply_to` and `correlation_id`.
pub(super) fn reply_address(delivery: &Delivery) -> (Option<String>, Option<String>) {
    let text = |value: &Option<lapin::types::ShortString>| value.as_ref().map(|s| s.to_string());
    (
        text(delivery.properties.reply_to()),
        text(delivery.properties.correlation_id()),
    )
}
