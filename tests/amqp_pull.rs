//! The pull API over RabbitMQ waits as a consumer of its queue, not by polling it: a waiting
//! `next_task` shows up as the queue's consumer and gets a task as soon as it is queued.
#![cfg(feature = "amqp")]

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use runtime_thread::messaging::amqp::AmqpCommunicator;
use runtime_thread::messaging::{Communicator, TaskSendOptions};
use serde_json::json;

mod common;
use common::broker::runtime;
use common::{bounded, broker};

/// Pulls measured one after another.
const PULLS: usize = 21;

/// How many consumers `queue` has, as the broker counts them.
async fn consumers(channel: &lapin::Channel, queue: &str) -> u32 {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .expect("the queue exists")
        .consumer_count()
}

/// Waits until `queue` has `count` consumers, or fails with `otherwise` after five seconds:
/// the broker's count is the only place where a consumer shows, so it is asked again and again.
async fn until_consumers(channel: &lapin::Channel, queue: &str, count: u32, otherwise: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while consumers(channel, queue).await != count {
        assert!(Instant::now() < deadline, "{otherwise}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Two connections on names of this test's own (`prefix`): one pulls, one sends.
async fn puller_and_sender() -> (String, AmqpCommunicator, AmqpCommunicator) {
    let prefix = broker::unique();
    let config = broker::named(&prefix).testing_mode(true);
    let puller = AmqpCommunicator::connect(config.clone()).await.unwrap();
    let sender = AmqpCommunicator::connect(config).await.unwrap();
    (prefix, puller, sender)
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn a_waiting_pull_is_a_consumer_of_its_queue_and_gets_a_task_at_once() {
    bounded(Duration::from_secs(60), || {
        runtime().block_on(async {
            let (prefix, puller, sender) = puller_and_sender().await;
            let raw = Connection::connect(&broker::url(), ConnectionProperties::default())
                .await
                .unwrap();
            let channel = raw.create_channel().await.unwrap();
            let queue = format!("{prefix}.pull");
            // Declares the queue, and leaves it empty.
            sender
                .task_send_no_reply(json!(-1), TaskSendOptions::for_queue("pull"))
                .await
                .unwrap();
            let first = puller
                .next_task("pull", Duration::from_secs(5))
                .await
                .unwrap();
            first.complete(json!(null)).await;
            let mut latencies = Vec::with_capacity(PULLS);
            for i in 0..PULLS {
                let waiting = tokio::spawn({
                    let puller = puller.clone();
                    async move { puller.next_task("pull", Duration::from_secs(20)).await }
                });
                // A polling pull never shows as a consumer at all.
                until_consumers(
                    &channel,
                    &queue,
                    1,
                    "a waiting pull is not a consumer: it polls",
                )
                .await;
                let sent = Instant::now();
                sender
                    .task_send_no_reply(json!(i), TaskSendOptions::for_queue("pull"))
                    .await
                    .unwrap();
                let task = waiting.await.unwrap().unwrap();
                latencies.push(sent.elapsed());
                assert_eq!(task.body(), &json!(i));
                task.complete(json!(null)).await;
            }
            // The pull's consumer is cancelled once it has its task.
            until_consumers(&channel, &queue, 0, "a finished pull's consumer stayed").await;
            latencies.sort();
            let median = latencies[PULLS / 2];
            eprintln!(
                "pull latency (send to receipt): median {median:?}, most {:?}",
                latencies[PULLS - 1]
            );
            assert!(
                median < Duration::from_millis(10),
                "median pull latency {median:?}: no faster than the old 10 ms poll"
            );
            puller.close().await;
            sender.close().await;
            let _ = raw.close(200, "done".into()).await;
        })
    });
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn a_pull_that_times_out_leaves_no_consumer_and_loses_no_task() {
    bounded(Duration::from_secs(60), || {
        runtime().block_on(async {
            let (_, puller, sender) = puller_and_sender().await;
            for _ in 0..20 {
                let empty = puller.next_task("late", Duration::from_millis(5)).await;
                assert!(empty.is_err());
            }
            // Whatever those abandoned pulls' consumers caught went back to the queue.
            for i in 0..20 {
                sender
                    .task_send_no_reply(json!(i), TaskSendOptions::for_queue("late"))
                    .await
                    .unwrap();
            }
            let mut seen = Vec::new();
            for _ in 0..20 {
                let task = puller
                    .next_task("late", Duration::from_secs(5))
                    .await
                    .unwrap();
                seen.push(task.body().as_i64().unwrap());
                task.complete(json!(null)).await;
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..20).collect::<Vec<_>>());
            puller.close().await;
            sender.close().await;
        })
    });
}
