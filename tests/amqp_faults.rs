//! Faults over a real RabbitMQ (`scripts/rabbitmq start`): a worker process killed with SIGKILL
//! while it holds tasks; garbage, truncated and oversized bodies on every kind of queue. (The
//! broker restart is in `amqp_restart.rs`, a test binary of its own, so that it disturbs no other
//! test.)
#![cfg(feature = "amqp")]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use runtime_thread::messaging::amqp::AmqpCommunicator;
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Error, Handler, Response,
    TaskSendOptions, TaskSubscriberOptions, Value,
};
use serde_json::json;
use tokio::sync::mpsc;

mod common;
use common::broker::runtime;
use common::{bounded, broker};

/// Started by the SIGKILL test as a separate process (the test binary again): takes tasks from
/// `held` and never answers them, printing `took <id>` for each.
#[test]
#[ignore = "a worker process that the SIGKILL test starts"]
fn child_process_worker() {
    let Ok(prefix) = std::env::var("AMQP_TEST_WORKER") else {
        return;
    };
    runtime().block_on(async move {
        let comm = AmqpCommunicator::connect(broker::named(&prefix))
            .await
            .unwrap();
        let worker = Handler::sync(|task: Value| {
            println!("took {}", task["id"]);
            Response::later(futures::future::pending::<Value>())
        });
        let options = TaskSubscriberOptions { prefetch: 5 };
        comm.add_task_subscriber("held", worker, options)
            .await
            .unwrap();
        println!("ready");
        futures::future::pending::<()>().await;
    });
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn tasks_held_by_a_worker_killed_with_sigkill_go_to_another_worker() {
    bounded(Duration::from_secs(60), || {
        let prefix = broker::unique();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process_worker",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env("AMQP_TEST_WORKER", &prefix)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next_line = move || loop {
            let line = lines.next().expect("the worker's output ended").unwrap();
            // libtest prints `test <name> ... ` before the first line of a test run alone (as
            // on one CPU).
            let line = line
                .rsplit_once(" ... ")
                .map_or(&line[..], |(_, rest)| rest);
            if line.starts_with("took") || line == "ready" {
                return line.to_owned();
            }
        };
        assert_eq!(next_line(), "ready");
        runtime().block_on(async {
            let client = AmqpCommunicator::connect(broker::named(&prefix))
                .await
                .unwrap();
            for id in 0..5 {
                let queued = client
                    .task_send_no_reply(json!({"id": id}), TaskSendOptions::for_queue("held"));
                assert_eq!(queued.await.unwrap(), ());
            }
            let mut took: Vec<String> = (0..5).map(|_| next_line()).collect();
            took.sort();
            assert_eq!(took, ["took 0", "took 1", "took 2", "took 3", "took 4"]);

            child.kill().unwrap(); // SIGKILL: no goodbye to the broker.
            child.wait().unwrap();

            let (done_tx, mut done) = mpsc::unbounded_channel();
            let second = Handler::sync(move |task: Value| {
                let _ = done_tx.send(task["id"].as_u64());
                json!("done")
            });
            let options = TaskSubscriberOptions { prefetch: 5 };
            client
                .add_task_subscriber("held", second, options)
                .await
                .unwrap();
            let mut ids: Vec<u64> = Vec::new();
            while ids.len() < 5 {
                ids.push(done.recv().await.unwrap().unwrap());
            }
            ids.sort_unstable();
            assert_eq!(ids, [0, 1, 2, 3, 4], "every held task was redelivered");
            client.delete_task_queue("held").await.unwrap();
            client.close().await;
        });
    });
}

/// Publishes raw bytes as a peer that speaks AMQP but not kiwipy would.
struct RawPeer {
    _connection: Connection,
    channel: lapin::Channel,
    replies: lapin::Consumer,
    reply_queue: String,
}

impl RawPeer {
    /// Connects, with a reply queue bound on both `exchanges` under its own name.
    async fn connect(exchanges: [&str; 2]) -> RawPeer {
        let connection = Connection::connect(&broker::url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let reply_queue = format!("raw-reply-{}", uuid::Uuid::new_v4().simple());
        let bindings = exchanges.map(|exchange| (exchange, reply_queue.as_str()));
        let replies = RawPeer::listen(&channel, &reply_queue, &bindings).await;
        RawPeer {
            _connection: connection,
            channel,
            replies,
            reply_queue,
        }
    }

    /// Declares the exclusive queue `queue`, binds it (exchange, key) and consumes it without
    /// acknowledgements.
    async fn listen(
        channel: &lapin::Channel,
        queue: &str,
        bindings: &[(&str, &str)],
    ) -> lapin::Consumer {
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..QueueDeclareOptions::default()
        };
        (channel.queue_declare(queue.into(), exclusive, FieldTable::default()))
            .await
            .unwrap();
        for (exchange, key) in bindings {
            channel
                .queue_bind(
                    queue.into(),
                    (*exchange).into(),
                    (*key).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        let no_ack = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        channel
            .basic_consume(queue.into(), "".into(), no_ack, FieldTable::default())
            .await
            .unwrap()
    }

    async fn send(&self, exchange: &str, key: &str, body: &[u8], correlation_id: &str) {
        let properties = BasicProperties::default()
            .with_correlation_id(correlation_id.into())
            .with_reply_to(self.reply_queue.as_str().into());
        self.channel
            .basic_publish(
                exchange.into(),
                key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The next reply, decoded as JSON.
    async fn reply(&mut self) -> (String, Value) {
        let delivery = self.replies.next().await.unwrap().unwrap();
        let correlation_id = delivery
            .properties
            .correlation_id()
            .clone()
            .unwrap()
            .to_string();
        (
            correlation_id,
            serde_json::from_slice(&delivery.data).unwrap(),
        )
    }
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn garbage_truncated_and_oversized_bodies_get_clear_errors_and_consumers_keep_running() {
    let config = broker::config();
    let config = config.max_message_size(64 * 1024);
    bounded(Duration::from_secs(60), move || {
        runtime().block_on(async move {
            let (messages, tasks) = (
                config.message_exchange_name().to_owned(),
                config.task_exchange_name().to_owned(),
            );
            let work_queue = format!("{}.work", messages.trim_end_matches(".messages"));
            let comm = AmqpCommunicator::connect(config).await.unwrap();
            comm.add_rpc_subscriber("victim", Handler::sync(|v: Value| v))
                .await
                .unwrap();
            let calls = Arc::new(AtomicUsize::new(0));
            let counter = calls.clone();
            let work = Handler::sync(move |v: Value| {
                counter.fetch_add(1, SeqCst);
                v
            });
            comm.add_task_subscriber("work", work, TaskSubscriberOptions::default())
                .await
                .unwrap();
            let (heard_tx, mut heard) = mpsc::unbounded_channel();
            let listener = BroadcastHandler::sync(move |b: Broadcast| {
                let _ = heard_tx.send(b.body);
            });
            comm.add_broadcast_subscriber(BroadcastFilter::new(), listener)
                .await
                .unwrap();

            let mut raw = RawPeer::connect([&messages, &tasks]).await;
            let garbage: &[&[u8]] = &[
                b"\xff\xfe\x00garbage",
                b"{\"a\": [1, 2",
                b"!!python/object/apply:os.system ['echo pwned']\n",
                b"- [unclosed\n",
            ];
            let oversized = vec![b'1'; 100 * 1024];
            let bodies = garbage.iter().copied().chain([oversized.as_slice()]);
            for (n, body) in bodies.enumerate() {
                // An RPC: the caller gets a clear exception rather than silence.
                raw.send(&messages, "[rpc].victim", body, &format!("rpc-{n}"))
                    .await;
                let (id, reply) = raw.reply().await;
                assert_eq!(id, format!("rpc-{n}"));
                let text = reply["exception"].as_str().unwrap_or_default();
                assert!(text.contains("could not be decoded"), "rpc {n}: {reply}");
                // A task: rejected without requeue, and an exception with kiwipy's `host`.
                raw.send(&tasks, &work_queue, body, &format!("task-{n}"))
                    .await;
                let (id, reply) = raw.reply().await;
                assert_eq!(id, format!("task-{n}"));
                assert!(reply["exception"].is_string(), "task {n}: {reply}");
                assert!(reply["host"]["pid"].is_u64(), "task {n}: {reply}");
                // A broadcast: dropped (no subscriber sees it).
                raw.send(&messages, "[broadcast]", body, "").await;
            }
            assert_eq!(calls.load(SeqCst), 0, "a bad task reached the handler");

            // A server answering garbage: the caller gets a decode error, not a hang.
            let (requests_tx, mut requests) = mpsc::unbounded_channel::<()>();
            let liar = RawPeer::connect([&messages, &tasks]).await;
            let queue = format!("raw-rpc-{}", uuid::Uuid::new_v4().simple());
            let bindings = [(messages.as_str(), "[rpc].liar")];
            let mut incoming = RawPeer::listen(&liar.channel, &queue, &bindings).await;
            let channel = liar.channel.clone();
            let bad_server = tokio::spawn(async move {
                while let Some(Ok(request)) = incoming.next().await {
                    let _ = requests_tx.send(());
                    let to = request.properties.reply_to().clone().unwrap();
                    let id = request.properties.correlation_id().clone().unwrap();
                    let properties = BasicProperties::default().with_correlation_id(id);
                    // Back through the exchange the request came by, as kiwipy replies.
                    let _ = channel
                        .basic_publish(
                            request.exchange,
                            to,
                            BasicPublishOptions::default(),
                            b"{\"result\": [1,",
                            properties,
                        )
                        .await;
                }
            });
            let answer = comm.rpc_send("liar", json!("question")).await;
            assert!(matches!(answer, Err(Error::Decode { .. })), "{answer:?}");
            requests.recv().await.unwrap();
            bad_server.abort();
            drop(liar);

            // Everything still runs.
            assert_eq!(comm.rpc_send("victim", json!(1)).await.unwrap(), 1);
            let task = comm
                .task_send_with(json!(2), TaskSendOptions::for_queue("work"))
                .await;
            assert_eq!(task.unwrap(), json!(2));
            comm.broadcast_send(Broadcast::new(json!("valid")))
                .await
                .unwrap();
            assert_eq!(
                heard.recv().await.unwrap(),
                "valid",
                "the first broadcast heard"
            );
            // A message over the limit is refused before it is sent.
            let big = json!("x".repeat(100 * 1024));
            let refused = comm.rpc_send("victim", big).await;
            assert!(
                matches!(refused, Err(Error::TooLarge { .. })),
                "{refused:?}"
            );
            comm.close().await;
        })
    });
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn refused_credentials_and_unreachable_brokers_are_clear_errors_that_hide_the_password() {
    bounded(Duration::from_secs(60), || {
        runtime().block_on(async {
            let wrong = broker::named(&broker::unique())
                .url(broker::url_as("guest", "s3cret-pw"))
                .connect_timeout(Duration::from_secs(5));
            let shown = format!("{wrong:?}");
            assert!(
                !shown.contains("s3cret-pw") && shown.contains("guest:***"),
                "{shown}"
            );
            let error = AmqpCommunicator::connect(wrong).await.expect_err("refused");
            let text = error.to_string();
            assert!(matches!(error, Error::Broker { .. }), "{text}");
            assert!(!text.contains("s3cret-pw"), "the password leaked: {text}");

            let nowhere = broker::named(&broker::unique())
                .url("amqp://bob:hunter2@127.0.0.1:1/%2f")
                .connect_timeout(Duration::from_secs(5));
            let error = AmqpCommunicator::connect(nowhere)
                .await
                .expect_err("unreachable");
            let text = error.to_string();
            assert!(
                text.contains("127.0.0.1:1") && !text.contains("hunter2"),
                "{text}"
            );
        });
    });
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn a_url_with_an_empty_vhost_reaches_the_root_vhost_as_in_kiwipy() {
    bounded(Duration::from_secs(60), || {
        runtime().block_on(async {
            for url in [
                format!("amqp://guest:guest@{}/", broker::address()),
                format!("amqp://guest:guest@{}", broker::address()),
            ] {
                let comm = AmqpCommunicator::connect(broker::config().url(url.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("{url}: {e}"));
                comm.add_rpc_subscriber("root", Handler::sync(|v: Value| v))
                    .await
                    .unwrap();
                assert_eq!(comm.rpc_send("root", json!(1)).await.unwrap(), 1);
                comm.close().await;
            }
        })
    });
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn heartbeats_keep_an_idle_connection_open() {
    let config = broker::config();
    bounded(Duration::from_secs(60), move || {
        runtime().block_on(async move {
            // With a 1 s heartbeat, RabbitMQ closes a connection that misses two of them.
            let comm = AmqpCommunicator::connect(config.heartbeat(1))
                .await
                .unwrap();
            comm.add_rpc_subscriber("idle", Handler::sync(|v: Value| v))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert!(comm.is_connected());
            assert_eq!(comm.rpc_send("idle", json!(1)).await.unwrap(), 1);
            assert_eq!(comm.connections(), 1, "the connection dropped while idle");
            comm.close().await;
        })
    });
}
