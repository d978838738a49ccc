//! The conformance suite of the `Communicator` trait: written once, run against every transport.
//! It covers kiwipy's `CommunicatorTester` checklist and the faults kiwipy has (RPC timeout, close
//! while waiting, re-entrant handlers, all-reject, dropped subscriber, cancelled nested reply,
//! full-match filters, 10,000 tasks exactly once).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use parking_lot::Mutex;
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, DEFAULT_TASK_QUEUE, Error, Handler,
    IncomingTask, LocalCommunicator, Response, SubscriberId, SyncCommunicator, TaskSendOptions,
    TaskSubscriberOptions, Value, from_value, to_value,
};
use serde_json::json;
use tokio::sync::mpsc;

mod common;

const LIMIT: Duration = Duration::from_secs(20);
const PREFETCH_1: TaskSubscriberOptions = TaskSubscriberOptions { prefetch: 1 };

/// Runs `check` on a test runtime of its own, bounded in time.
fn run<C, F, Fut>(make: impl FnOnce() -> C, check: F)
where
    C: Communicator,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let comm = make();
        tokio::time::timeout(LIMIT, check(comm.clone()))
            .await
            .expect("the check hangs");
        comm.close().await;
    });
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        /// The in-process broker, used directly from async code.
        mod local {
            $( #[test] fn $check() { super::run(super::LocalCommunicator::new, super::$check) } )*
        }
        /// The same broker driven through the synchronous communicator's runtime thread.
        mod through_sync_communicator {
            $(
                #[test]
                fn $check() {
                    let sync = super::SyncCommunicator::local().unwrap();
                    let owner = sync.clone();
                    super::run(move || sync, super::$check);
                    owner.close();
                }
            )*
        }
        /// RabbitMQ (the project's node, see `tests/common/broker.rs`), used from async code.
        #[cfg(feature = "amqp")]
        mod amqp {
            $(
                #[test]
                #[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
                fn $check() { super::broker::run_async(super::$check) }
            )*
        }
        /// RabbitMQ through the synchronous communicator (`amqp::connect`).
        #[cfg(feature = "amqp")]
        mod amqp_through_sync_communicator {
            $(
                #[test]
                #[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
                fn $check() { super::broker::run_sync(super::$check) }
            )*
        }
    };
}

/// The RabbitMQ side of the suite: each test gets exchanges and task queues of its own names,
/// in kiwipy's testing mode (nothing is left on the broker).
#[cfg(feature = "amqp")]
mod broker {
    use std::future::Future;

    use runtime_thread::messaging::amqp::{self, AmqpCommunicator, AmqpConfig};
    use runtime_thread::messaging::{Communicator, SyncCommunicator};

    fn config() -> AmqpConfig {
        super::common::broker::config()
    }

    pub fn run_async<F, Fut>(check: F)
    where
        F: FnOnce(AmqpCommunicator) -> Fut,
        Fut: Future<Output = ()>,
    {
        let config = config();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let comm = AmqpCommunicator::connect(config).await.unwrap();
            tokio::time::timeout(super::LIMIT, check(comm.clone()))
                .await
                .expect("the check hangs");
            comm.close().await;
        });
    }

    pub fn run_sync<F, Fut>(check: F)
    where
        F: FnOnce(SyncCommunicator<AmqpCommunicator>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let config = config();
        let sync = amqp::connect_with(config).unwrap();
        let owner = sync.clone();
        super::run(move || sync, check);
        owner.close();
    }
}

conformance!(
    close_refuses_everything_afterwards,
    rpc_send_receive,
    add_remove_rpc_subscriber,
    duplicate_rpc_identifier_is_refused,
    rpc_nested_pending_replies_arrive_as_the_final_value,
    rpc_exception_is_a_remote_error,
    rpc_unroutable,
    unroutable_and_routed_requests_in_flight_together,
    rpc_times_out_when_the_server_never_answers,
    close_releases_callers_that_are_waiting,
    a_handler_can_call_the_communicator,
    a_cancelled_nested_reply_is_cancelled_not_silence,
    task_send_returns_the_result,
    future_task_result_arrives_later,
    task_exception_is_a_remote_error,
    task_no_reply_is_processed_once,
    add_remove_task_subscriber,
    remove_unknown_subscribers,
    a_task_every_subscriber_rejects_is_neither_lost_nor_spun,
    a_subscriber_removed_with_a_task_in_hand_gives_it_to_another,
    prefetch_limits_tasks_in_hand,
    pull_api_complete_requeue_and_empty,
    pulled_tasks_settle_on_a_plain_thread,
    a_task_nobody_takes_yet_waits_in_its_queue,
    named_queues_are_separate,
    ten_thousand_tasks_over_four_subscribers_exactly_once,
    broadcast_reaches_every_subscriber_with_its_envelope,
    broadcast_subject_filter,
    broadcast_sender_filter,
    broadcast_subject_and_sender_filters_combine,
    broadcast_filters_match_whole_strings,
    add_remove_broadcast_subscriber,
    broadcast_with_nobody_listening,
    typed_messages_round_trip_and_decode_errors_name_the_type,
);

/// Subscribes `handler` to `queue` with one task in hand at a time.
async fn subscribe<C: Communicator>(comm: &C, queue: &str, handler: Handler) -> SubscriberId {
    comm.add_task_subscriber(queue, handler, PREFETCH_1)
        .await
        .unwrap()
}

fn echo() -> Handler {
    Handler::sync(|message: Value| message)
}

async fn close_refuses_everything_afterwards<C: Communicator>(comm: C) {
    assert!(!comm.is_closed());
    comm.close().await;
    assert!(comm.is_closed());
    let closed = |r: Result<(), Error>| assert!(matches!(r, Err(Error::Closed)), "{r:?}");
    closed(comm.add_rpc_subscriber("a", echo()).await);
    closed(comm.rpc_send("a", json!(1)).await.map(drop));
    closed(comm.task_send(json!(1)).await.map(drop));
    closed(comm.broadcast_send(Broadcast::new(1)).await);
    closed(
        comm.add_broadcast_subscriber(BroadcastFilter::new(), BroadcastHandler::sync(|_| {}))
            .await
            .map(drop),
    );
    closed(
        comm.add_task_subscriber("q", echo(), PREFETCH_1)
            .await
            .map(drop),
    );
    closed(comm.next_task("q", Duration::from_secs(1)).await.map(drop));
    comm.close().await; // closing twice is harmless
}

async fn rpc_send_receive<C: Communicator>(comm: C) {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    comm.add_rpc_subscriber(
        "calc",
        Handler::sync(move |message: Value| {
            seen_tx.send(message.clone()).unwrap();
            json!({"sum": message["a"].as_i64().unwrap_or(0) + message["b"].as_i64().unwrap_or(0)})
        }),
    )
    .await
    .unwrap();
    let answer = comm
        .rpc_send("calc", json!({"a": 2, "b": 40}))
        .await
        .unwrap();
    assert_eq!(answer, json!({"sum": 42}));
    assert_eq!(seen.recv().await.unwrap(), json!({"a": 2, "b": 40}));
    let async_handler = Handler::from_async(|message: Value| async move {
        tokio::task::yield_now().await;
        json!(["async", message])
    });
    comm.add_rpc_subscriber("async", async_handler)
        .await
        .unwrap();
    assert_eq!(
        comm.rpc_send("async", json!(1)).await.unwrap(),
        json!(["async", 1])
    );
}

async fn add_remove_rpc_subscriber<C: Communicator>(comm: C) {
    comm.add_rpc_subscriber("svc", echo()).await.unwrap();
    assert_eq!(
        comm.rpc_send("svc", json!("hi")).await.unwrap(),
        json!("hi")
    );
    comm.remove_rpc_subscriber("svc").await.unwrap();
    assert!(matches!(
        comm.rpc_send("svc", json!("hi")).await,
        Err(Error::Unroutable { recipient }) if recipient == "svc"
    ));
    comm.add_rpc_subscriber("svc", echo()).await.unwrap();
    assert_eq!(comm.rpc_send("svc", json!(2)).await.unwrap(), json!(2));
}

async fn duplicate_rpc_identifier_is_refused<C: Communicator>(comm: C) {
    comm.add_rpc_subscriber("one", echo()).await.unwrap();
    assert!(matches!(
        comm.add_rpc_subscriber("one", echo()).await,
        Err(Error::DuplicateSubscriber { identifier }) if identifier == "one"
    ));
}

async fn rpc_nested_pending_replies_arrive_as_the_final_value<C: Communicator>(comm: C) {
    comm.add_rpc_subscriber(
        "nested",
        Handler::sync(|_| {
            Response::later(async {
                tokio::task::yield_now().await;
                Response::later(async { json!(42) })
            })
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        comm.rpc_send("nested", Value::Null).await.unwrap(),
        json!(42)
    );
    // A reply given later from elsewhere, through a responder.
    comm.add_rpc_subscriber(
        "deferred",
        Handler::sync(|message: Value| {
            let (responder, response) = Response::deferred();
            tokio::spawn(async move { responder.respond(json!({"got": message})) });
            response
        }),
    )
    .await
    .unwrap();
    assert_eq!(
        comm.rpc_send("deferred", json!(7)).await.unwrap(),
        json!({"got": 7})
    );
}

async fn rpc_exception_is_a_remote_error<C: Communicator>(comm: C) {
    comm.add_rpc_subscriber("fails", Handler::sync(|_| Err::<Value, _>("disk full")))
        .await
        .unwrap();
    assert!(matches!(
        comm.rpc_send("fails", json!(1)).await,
        Err(Error::Remote { message }) if message == "disk full"
    ));
    comm.add_rpc_subscriber(
        "panics",
        Handler::sync(|_| -> Value { panic!("handler bug") }),
    )
    .await
    .unwrap();
    match comm.rpc_send("panics", json!(1)).await {
        Err(Error::Remote { message }) => assert!(message.contains("handler bug"), "{message}"),
        other => panic!("expected Remote, got {other:?}"),
    }
    // The subscriber still serves after a failure.
    assert!(comm.rpc_send("fails", json!(1)).await.is_err());
}

async fn rpc_unroutable<C: Communicator>(comm: C) {
    assert!(matches!(
        comm.rpc_send("nobody", json!(1)).await,
        Err(Error::Unroutable { recipient }) if recipient == "nobody"
    ));
}

/// Unroutable and routed requests in flight together each get their own answer: over
/// RabbitMQ, lapin may attach a returned message to another message's confirm.
async fn unroutable_and_routed_requests_in_flight_together<C: Communicator>(comm: C) {
    comm.add_rpc_subscriber("here", echo()).await.unwrap();
    let within = Some(Duration::from_secs(5));
    let answers = futures::future::join_all((0..100).map(|i| {
        let comm = comm.clone();
        async move {
            let recipient = if i % 2 == 0 {
                "here".to_owned()
            } else {
                format!("gone-{i}")
            };
            (i, comm.rpc_send_with(&recipient, json!(i), within).await)
        }
    }))
    .await;
    for (i, answer) in answers {
        if i % 2 == 0 {
            assert_eq!(answer.unwrap(), json!(i));
        } else {
            assert!(
                matches!(&answer, Err(Error::Unroutable { recipient }) if *recipient == format!("gone-{i}")),
                "{i}: {answer:?}"
            );
        }
    }
}

async fn rpc_times_out_when_the_server_never_answers<C: Communicator>(comm: C) {
    comm.add_rpc_subscriber(
        "silent",
        Handler::from_async(|_| futures::future::pending::<Value>()),
    )
    .await
    .unwrap();
    let timeout = Duration::from_millis(50);
    assert!(matches!(
        comm.rpc_send_with("silent", json!(1), Some(timeout)).await,
        Err(Error::Timeout(t)) if t == timeout
    ));
    let task_timeout = comm
        .task_send_with(
            json!(1),
            TaskSendOptions::for_queue("nobody-consumes").timeout(timeout),
        )
        .await;
    assert!(
        matches!(task_timeout, Err(Error::Timeout(_))),
        "{task_timeout:?}"
    );
}

async fn close_releases_callers_that_are_waiting<C: Communicator>(comm: C) {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    comm.add_rpc_subscriber(
        "silent",
        Handler::from_async(move |_| {
            let _ = started_tx.send(());
            futures::future::pending::<Value>()
        }),
    )
    .await
    .unwrap();
    let rpc = tokio::spawn({
        let comm = comm.clone();
        async move { comm.rpc_send("silent", json!(1)).await }
    });
    let task = tokio::spawn({
        let comm = comm.clone();
        async move {
            comm.task_send_with(json!(1), TaskSendOptions::for_queue("unconsumed"))
                .await
        }
    });
    let pull = tokio::spawn({
        let comm = comm.clone();
        async move {
            comm.next_task("empty", Duration::from_secs(3600))
                .await
                .map(drop)
        }
    });
    started.recv().await.unwrap();
    comm.close().await;
    assert!(matches!(rpc.await.unwrap(), Err(Error::Closed)));
    assert!(matches!(task.await.unwrap(), Err(Error::Closed)));
    assert!(matches!(pull.await.unwrap(), Err(Error::Closed)));
}

async fn a_handler_can_call_the_communicator<C: Communicator>(comm: C) {
    comm.add_rpc_subscriber("inner", Handler::sync(|v: Value| json!(["inner", v])))
        .await
        .unwrap();
    subscribe(&comm, DEFAULT_TASK_QUEUE, echo()).await;
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    comm.add_broadcast_subscriber(
        BroadcastFilter::new(),
        BroadcastHandler::sync(move |b| heard_tx.send(b.body).unwrap()),
    )
    .await
    .unwrap();
    let me = comm.clone();
    comm.add_rpc_subscriber(
        "outer",
        Handler::from_async(move |v: Value| {
            let comm = me.clone();
            async move {
                let inner = comm.rpc_send("inner", v).await?;
                let task = comm.task_send(json!("from a handler")).await?;
                comm.broadcast_send(Broadcast::new("handled")).await?;
                Ok::<_, Error>(json!({"inner": inner, "task": task}))
            }
        }),
    )
    .await
    .unwrap();
    let answer = comm.rpc_send("outer", json!(5)).await.unwrap();
    assert_eq!(
        answer,
        json!({"inner": ["inner", 5], "task": "from a handler"})
    );
    assert_eq!(heard.recv().await.unwrap(), json!("handled"));
}

async fn a_cancelled_nested_reply_is_cancelled_not_silence<C: Communicator>(comm: C) {
    let dropping = || {
        Handler::sync(|_| {
            let (responder, response) = Response::deferred();
            drop(responder);
            response
        })
    };
    comm.add_rpc_subscriber("gives-up", dropping())
        .await
        .unwrap();
    assert!(matches!(
        comm.rpc_send("gives-up", json!(1)).await,
        Err(Error::Cancelled)
    ));
    subscribe(&comm, "gives-up", dropping()).await;
    let task = comm
        .task_send_with(json!(1), TaskSendOptions::for_queue("gives-up"))
        .await;
    assert!(matches!(task, Err(Error::Cancelled)), "{task:?}");
}

async fn task_send_returns_the_result<C: Communicator>(comm: C) {
    subscribe(
        &comm,
        DEFAULT_TASK_QUEUE,
        Handler::sync(|v: Value| json!(v.as_i64().unwrap_or(0) * 3)),
    )
    .await;
    assert_eq!(comm.task_send(json!(14)).await.unwrap(), json!(42));
}

async fn future_task_result_arrives_later<C: Communicator>(comm: C) {
    subscribe(
        &comm,
        DEFAULT_TASK_QUEUE,
        Handler::sync(|_| {
            Response::later(async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                json!(42)
            })
        }),
    )
    .await;
    assert_eq!(comm.task_send(json!(0)).await.unwrap(), json!(42));
}

async fn task_exception_is_a_remote_error<C: Communicator>(comm: C) {
    subscribe(
        &comm,
        DEFAULT_TASK_QUEUE,
        Handler::sync(|_| Err::<Value, _>("bad input")),
    )
    .await;
    assert!(matches!(
        comm.task_send(json!(1)).await,
        Err(Error::Remote { message }) if message == "bad input"
    ));
}

async fn task_no_reply_is_processed_once<C: Communicator>(comm: C) {
    let (done_tx, mut done) = mpsc::unbounded_channel();
    subscribe(
        &comm,
        DEFAULT_TASK_QUEUE,
        Handler::sync(move |v: Value| done_tx.send(v).unwrap()),
    )
    .await;
    comm.task_send_no_reply(json!("once"), TaskSendOptions::default())
        .await
        .unwrap();
    assert_eq!(done.recv().await.unwrap(), json!("once"));
    // A later task proves the first was not delivered twice: it is the next one seen.
    comm.task_send(json!("twice?")).await.unwrap();
    assert_eq!(done.recv().await.unwrap(), json!("twice?"));
}

async fn add_remove_task_subscriber<C: Communicator>(comm: C) {
    let processed = Arc::new(AtomicUsize::new(0));
    let counter = processed.clone();
    let id = subscribe(
        &comm,
        "work",
        Handler::sync(move |_| {
            counter.fetch_add(1, SeqCst);
        }),
    )
    .await;
    comm.task_send_with(json!(1), TaskSendOptions::for_queue("work"))
        .await
        .unwrap();
    comm.remove_task_subscriber(id).await.unwrap();
    comm.task_send_no_reply(json!("unprocessed"), TaskSendOptions::for_queue("work"))
        .await
        .unwrap();
    // The task waits in the queue, untouched: pulling it proves it was not processed.
    let pulled = comm.next_task("work", LIMIT).await.unwrap();
    assert_eq!(pulled.body(), &json!("unprocessed"));
    assert_eq!(processed.load(SeqCst), 1);
}

async fn remove_unknown_subscribers<C: Communicator>(comm: C) {
    let id = subscribe(&comm, "q", echo()).await;
    comm.remove_task_subscriber(id).await.unwrap();
    assert!(matches!(
        comm.remove_task_subscriber(id).await,
        Err(Error::UnknownSubscriber { .. })
    ));
    assert!(matches!(
        comm.remove_rpc_subscriber("never-added").await,
        Err(Error::UnknownSubscriber { .. })
    ));
    let b = comm
        .add_broadcast_subscriber(BroadcastFilter::new(), BroadcastHandler::sync(|_| {}))
        .await
        .unwrap();
    comm.remove_broadcast_subscriber(b).await.unwrap();
    assert!(matches!(
        comm.remove_broadcast_subscriber(b).await,
        Err(Error::UnknownSubscriber { .. })
    ));
}

async fn a_task_every_subscriber_rejects_is_neither_lost_nor_spun<C: Communicator>(comm: C) {
    let offers = Arc::new(AtomicUsize::new(0));
    let (offered_tx, mut offered) = mpsc::unbounded_channel();
    for _ in 0..2 {
        let (offers, offered_tx) = (offers.clone(), offered_tx.clone());
        subscribe(
            &comm,
            "picky",
            Handler::sync(move |_| {
                offers.fetch_add(1, SeqCst);
                offered_tx.send(()).unwrap();
                Response::Rejected
            }),
        )
        .await;
    }
    let sender = tokio::spawn({
        let comm = comm.clone();
        async move {
            comm.task_send_with(json!("job"), TaskSendOptions::for_queue("picky"))
                .await
        }
    });
    offered.recv().await.unwrap();
    offered.recv().await.unwrap();
    // Both refused it once. A redelivery loop (kiwipy spins at ~2,000/s here) would keep
    // offering it; watch for a while to see that nothing more happens.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        offers.load(SeqCst),
        2,
        "the rejected task was offered again and again"
    );
    assert!(!sender.is_finished(), "the task must wait, not fail");
    // A subscriber that accepts gets it: it was kept, not lost.
    subscribe(&comm, "picky", Handler::sync(|_| json!("taken"))).await;
    assert_eq!(sender.await.unwrap().unwrap(), json!("taken"));
    assert_eq!(offers.load(SeqCst), 2);
}

async fn a_subscriber_removed_with_a_task_in_hand_gives_it_to_another<C: Communicator>(comm: C) {
    let (holding_tx, mut holding) = mpsc::unbounded_channel();
    let stuck = subscribe(
        &comm,
        "handover",
        Handler::from_async(move |_| {
            let _ = holding_tx.send(());
            futures::future::pending::<Value>()
        }),
    )
    .await;
    let sender = tokio::spawn({
        let comm = comm.clone();
        async move {
            comm.task_send_with(json!("job"), TaskSendOptions::for_queue("handover"))
                .await
        }
    });
    holding.recv().await.unwrap();
    subscribe(&comm, "handover", Handler::sync(|_| json!("second"))).await;
    comm.remove_task_subscriber(stuck).await.unwrap();
    assert_eq!(sender.await.unwrap().unwrap(), json!("second"));
}

async fn prefetch_limits_tasks_in_hand<C: Communicator>(comm: C) {
    let in_hand = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    for _ in 0..2 {
        let (in_hand, most, gate, started_tx) = (
            in_hand.clone(),
            most.clone(),
            gate.clone(),
            started_tx.clone(),
        );
        subscribe(
            &comm,
            "limited",
            Handler::from_async(move |v: Value| {
                let (in_hand, most, gate, started_tx) = (
                    in_hand.clone(),
                    most.clone(),
                    gate.clone(),
                    started_tx.clone(),
                );
                async move {
                    most.fetch_max(in_hand.fetch_add(1, SeqCst) + 1, SeqCst);
                    started_tx.send(()).unwrap();
                    gate.acquire().await.unwrap().forget();
                    in_hand.fetch_sub(1, SeqCst);
                    v
                }
            }),
        )
        .await;
    }
    let senders: Vec<_> = (0..5)
        .map(|i| {
            let comm = comm.clone();
            tokio::spawn(async move {
                comm.task_send_with(json!(i), TaskSendOptions::for_queue("limited"))
                    .await
            })
        })
        .collect();
    // Two subscribers with prefetch 1: exactly two tasks start while the gate is shut.
    started.recv().await.unwrap();
    started.recv().await.unwrap();
    assert_eq!(in_hand.load(SeqCst), 2);
    gate.add_permits(5);
    let mut answers = Vec::new();
    for sender in senders {
        answers.push(sender.await.unwrap().unwrap());
    }
    answers.sort_by_key(|v| v.as_i64());
    assert_eq!(answers, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    assert_eq!(
        most.load(SeqCst),
        2,
        "never more than one task in hand per subscriber"
    );
}

async fn pull_api_complete_requeue_and_empty<C: Communicator>(comm: C) {
    let empty = comm.next_task("pull", Duration::from_millis(20)).await;
    assert!(matches!(empty, Err(Error::QueueEmpty { queue }) if queue == "pull"));
    let sender = tokio::spawn({
        let comm = comm.clone();
        async move {
            comm.task_send_with(json!(10), TaskSendOptions::for_queue("pull"))
                .await
        }
    });
    // Given back explicitly, then by dropping: it comes back each time.
    let first = comm.next_task("pull", LIMIT).await.unwrap();
    assert_eq!(first.body(), &json!(10));
    assert!(!first.no_reply());
    first.requeue();
    drop(comm.next_task("pull", LIMIT).await.unwrap());
    let rejected = comm.next_task("pull", LIMIT).await.unwrap();
    rejected.complete(Response::Rejected).await;
    let task = comm.next_task("pull", LIMIT).await.unwrap();
    let doubled = task.body().as_i64().unwrap() * 2;
    task.complete(json!(doubled)).await;
    assert_eq!(sender.await.unwrap().unwrap(), json!(20));
    // Answered tasks are gone.
    assert!(
        comm.next_task("pull", Duration::from_millis(20))
            .await
            .is_err()
    );
}

/// Settles `task` on a plain thread of its own, which has no runtime: the way a synchronous
/// worker holds the tasks it pulls.
fn on_a_plain_thread(task: IncomingTask, settle: impl FnOnce(IncomingTask) + Send + 'static) {
    std::thread::spawn(move || settle(task))
        .join()
        .expect("settling on a plain thread panicked");
}

async fn pulled_tasks_settle_on_a_plain_thread<C: Communicator>(comm: C) {
    let sender = tokio::spawn({
        let comm = comm.clone();
        async move {
            comm.task_send_with(json!(10), TaskSendOptions::for_queue("plain"))
                .await
        }
    });
    // Given back explicitly, then by dropping: it comes back each time.
    let task = comm.next_task("plain", LIMIT).await.unwrap();
    on_a_plain_thread(task, IncomingTask::requeue);
    let task = comm.next_task("plain", LIMIT).await.unwrap();
    on_a_plain_thread(task, drop);
    // Answered: the sender gets the answer.
    let task = comm.next_task("plain", LIMIT).await.unwrap();
    assert_eq!(task.body(), &json!(10));
    on_a_plain_thread(task, |task| {
        futures::executor::block_on(task.complete(json!(20)));
    });
    assert_eq!(sender.await.unwrap().unwrap(), json!(20));

    // Given back while a push subscriber waits: the subscriber gets it, although the thread
    // that gave it back has no runtime to start the subscriber's handler on.
    let sender = tokio::spawn({
        let comm = comm.clone();
        async move {
            comm.task_send_with(json!(5), TaskSendOptions::for_queue("plain"))
                .await
        }
    });
    let task = comm.next_task("plain", LIMIT).await.unwrap();
    let tripler = Handler::sync(|v: Value| json!(v.as_i64().unwrap_or(0) * 3));
    subscribe(&comm, "plain", tripler).await;
    on_a_plain_thread(task, IncomingTask::requeue);
    assert_eq!(sender.await.unwrap().unwrap(), json!(15));
}

/// A task to a queue nobody consumes is not unroutable (its queue is declared as it is sent):
/// it waits there for a worker, and a sender waiting for its result times out.
async fn a_task_nobody_takes_yet_waits_in_its_queue<C: Communicator>(comm: C) {
    let waited = Duration::from_millis(100);
    let sent = comm
        .task_send_with(
            json!("for whoever comes"),
            TaskSendOptions::for_queue("later").timeout(waited),
        )
        .await;
    assert!(
        matches!(sent, Err(Error::Timeout(t)) if t == waited),
        "{sent:?}"
    );
    let task = comm.next_task("later", LIMIT).await.unwrap();
    assert_eq!(task.body(), &json!("for whoever comes"));
    task.complete(json!(null)).await;
}

async fn named_queues_are_separate<C: Communicator>(comm: C) {
    subscribe(&comm, "a", Handler::sync(|_| json!("from a"))).await;
    subscribe(&comm, "b", Handler::sync(|_| json!("from b"))).await;
    assert_eq!(
        comm.task_send_with(json!(0), TaskSendOptions::for_queue("a"))
            .await
            .unwrap(),
        json!("from a")
    );
    assert_eq!(
        comm.task_send_with(json!(0), TaskSendOptions::for_queue("b"))
            .await
            .unwrap(),
        json!("from b")
    );
}

async fn ten_thousand_tasks_over_four_subscribers_exactly_once<C: Communicator>(comm: C) {
    const TASKS: i64 = 10_000;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let per_subscriber: Vec<Arc<AtomicUsize>> =
        (0..4).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    for count in &per_subscriber {
        let (seen, count) = (seen.clone(), count.clone());
        comm.add_task_subscriber(
            "bulk",
            Handler::sync(move |v: Value| {
                let id = v.as_i64().unwrap_or(-1);
                assert!(seen.lock().insert(id), "task {id} processed twice");
                count.fetch_add(1, SeqCst);
                json!(id * 2)
            }),
            TaskSubscriberOptions { prefetch: 8 },
        )
        .await
        .unwrap();
    }
    let results = futures::future::join_all((0..TASKS).map(|i| {
        let comm = comm.clone();
        async move {
            (
                i,
                comm.task_send_with(json!(i), TaskSendOptions::for_queue("bulk"))
                    .await,
            )
        }
    }))
    .await;
    for (i, result) in results {
        assert_eq!(result.unwrap(), json!(i * 2));
    }
    assert_eq!(seen.lock().len(), TASKS as usize);
    for count in per_subscriber {
        assert!(count.load(SeqCst) > 0, "every subscriber took a share");
    }
}

/// Subscribes with `filter` and returns a receiver of what arrives.
async fn listen<C: Communicator>(
    comm: &C,
    filter: BroadcastFilter,
) -> mpsc::UnboundedReceiver<Broadcast> {
    let (tx, rx) = mpsc::unbounded_channel();
    comm.add_broadcast_subscriber(filter, BroadcastHandler::sync(move |b| tx.send(b).unwrap()))
        .await
        .unwrap();
    rx
}

/// Sends every broadcast, then `marker` (a broadcast with body `"end"` that the filter under test
/// passes), and returns the `subject|sender` of what `rx` saw before the marker. Deliveries to one
/// subscriber keep their order, so everything filtered in arrives before the marker.
async fn received<C: Communicator>(
    comm: &C,
    rx: &mut mpsc::UnboundedReceiver<Broadcast>,
    sends: Vec<Broadcast>,
    marker: Broadcast,
) -> Vec<String> {
    assert_eq!(marker.body, json!("end"));
    for message in sends {
        comm.broadcast_send(message).await.unwrap();
    }
    comm.broadcast_send(marker).await.unwrap();
    let mut seen = Vec::new();
    loop {
        let message = rx.recv().await.unwrap();
        if message.body == json!("end") {
            return seen;
        }
        seen.push(format!(
            "{}|{}",
            message.subject.unwrap_or_default(),
            message.sender.unwrap_or_default()
        ));
    }
}

async fn broadcast_reaches_every_subscriber_with_its_envelope<C: Communicator>(comm: C) {
    let mut first = listen(&comm, BroadcastFilter::new()).await;
    let mut second = listen(&comm, BroadcastFilter::new()).await;
    comm.broadcast_send(Broadcast::new(json!({"n": 1})))
        .await
        .unwrap();
    comm.broadcast_send(
        Broadcast::new("full")
            .sender("alice")
            .subject("news")
            .correlation_id(7),
    )
    .await
    .unwrap();
    for rx in [&mut first, &mut second] {
        let plain = rx.recv().await.unwrap();
        assert_eq!(plain, Broadcast::new(json!({"n": 1})));
        assert_eq!(
            (plain.sender, plain.subject, plain.correlation_id),
            (None, None, None)
        );
        let full = rx.recv().await.unwrap();
        assert_eq!(full.sender.as_deref(), Some("alice"));
        assert_eq!(full.subject.as_deref(), Some("news"));
        assert_eq!(full.correlation_id, Some(json!(7)));
    }
}

async fn broadcast_subject_filter<C: Communicator>(comm: C) {
    let mut rx = listen(&comm, BroadcastFilter::new().subject("purchase.*")).await;
    let seen = received(
        &comm,
        &mut rx,
        vec![
            Broadcast::new(1).subject("purchase.car"),
            Broadcast::new(2).subject("sale.car"),
            Broadcast::new(3).subject("purchase.house"),
            Broadcast::new(4),
        ],
        Broadcast::new("end").subject("purchase.end"),
    )
    .await;
    assert_eq!(seen, ["purchase.car|", "purchase.house|"]);
}

async fn broadcast_sender_filter<C: Communicator>(comm: C) {
    let mut rx = listen(&comm, BroadcastFilter::new().sender("*.jones")).await;
    let seen = received(
        &comm,
        &mut rx,
        vec![
            Broadcast::new(1).sender("bob.jones"),
            Broadcast::new(2).sender("alice.smith"),
            Broadcast::new(3).sender("alice.jones"),
        ],
        Broadcast::new("end").sender("end.jones"),
    )
    .await;
    assert_eq!(seen, ["|bob.jones", "|alice.jones"]);
}

async fn broadcast_subject_and_sender_filters_combine<C: Communicator>(comm: C) {
    let filter = BroadcastFilter::new()
        .subject("purchase.*")
        .sender("*.jones");
    let mut rx = listen(&comm, filter).await;
    let seen = received(
        &comm,
        &mut rx,
        vec![
            Broadcast::new(1)
                .subject("purchase.car")
                .sender("bob.jones"),
            Broadcast::new(2)
                .subject("purchase.car")
                .sender("bob.smith"),
            Broadcast::new(3).subject("sale.car").sender("bob.jones"),
        ],
        Broadcast::new("end")
            .subject("purchase.end")
            .sender("end.jones"),
    )
    .await;
    assert_eq!(seen, ["purchase.car|bob.jones"]);
}

async fn broadcast_filters_match_whole_strings<C: Communicator>(comm: C) {
    let mut rx = listen(&comm, BroadcastFilter::new().sender("alice.jones")).await;
    let seen = received(
        &comm,
        &mut rx,
        vec![
            Broadcast::new(1).sender("alice.jones"),
            Broadcast::new(2).sender("alice.jonesy"),
            Broadcast::new(3).sender("xalice.jones"),
        ],
        Broadcast::new("end").sender("alice.jones"),
    )
    .await;
    assert_eq!(seen, ["|alice.jones"]);
}

async fn add_remove_broadcast_subscriber<C: Communicator>(comm: C) {
    let removed_count = Arc::new(AtomicUsize::new(0));
    let counter = removed_count.clone();
    let removed = comm
        .add_broadcast_subscriber(
            BroadcastFilter::new(),
            BroadcastHandler::sync(move |_| {
                counter.fetch_add(1, SeqCst);
            }),
        )
        .await
        .unwrap();
    comm.remove_broadcast_subscriber(removed).await.unwrap();
    let mut probe = listen(&comm, BroadcastFilter::new()).await;
    comm.broadcast_send(Broadcast::new("after removal"))
        .await
        .unwrap();
    assert_eq!(probe.recv().await.unwrap().body, json!("after removal"));
    // Removal happened before the send, so the removed subscriber can never see it.
    assert_eq!(removed_count.load(SeqCst), 0);
    let mut again = listen(&comm, BroadcastFilter::new()).await;
    comm.broadcast_send(Broadcast::new("re-added"))
        .await
        .unwrap();
    assert_eq!(again.recv().await.unwrap().body, json!("re-added"));
}

async fn broadcast_with_nobody_listening<C: Communicator>(comm: C) {
    comm.broadcast_send(Broadcast::new("into the void"))
        .await
        .unwrap();
}

async fn typed_messages_round_trip_and_decode_errors_name_the_type<C: Communicator>(comm: C) {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Order {
        item: String,
        count: u32,
    }
    comm.add_rpc_subscriber(
        "orders",
        Handler::sync(|v: Value| -> Result<Value, Error> {
            let mut order: Order = from_value(v)?;
            order.count *= 2;
            to_value(&order)
        }),
    )
    .await
    .unwrap();
    let order = Order {
        item: "bolt".into(),
        count: 21,
    };
    let answer: Order = from_value(
        comm.rpc_send("orders", to_value(&order).unwrap())
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(answer.count, 42);
    match comm.rpc_send("orders", json!({"item": 5})).await {
        Err(Error::Remote { message }) => assert!(message.contains("Order"), "{message}"),
        other => panic!("expected a decode failure, got {other:?}"),
    }
}
