//! The broker goes down and comes back while RPCs, tasks and broadcasts flow
//! (`scripts/rabbitmq stop-app`, `start-app`): every task is processed at least once, callers
//! get answers or clear errors, connecting and closing while it is down are bounded, and both
//! communicators reconnect. Alone in its test binary: the outage drops every connection.
#![cfg(feature = "amqp")]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use parking_lot::Mutex;
use runtime_thread::messaging::amqp::AmqpCommunicator;
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Error, Handler, TaskSendOptions,
    TaskSubscriberOptions, Value,
};
use serde_json::json;
use tokio::sync::mpsc;

mod common;
use common::broker::runtime;
use common::{bounded, broker};

/// Errors a caller may see while the broker restarts: none of them is a hang or a panic.
fn transient(error: &Error) -> bool {
    matches!(
        error,
        Error::ConnectionLost | Error::Broker { .. } | Error::Timeout(_) | Error::Unroutable { .. }
    )
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn a_broker_restart_while_rpcs_tasks_and_broadcasts_flow_loses_no_task() {
    let config = broker::durable_config();
    let config = config.reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    bounded(Duration::from_secs(180), move || {
        runtime().block_on(async move {
            const TASKS: u64 = 300;
            let server = AmqpCommunicator::connect(config.clone()).await.unwrap();
            let client = AmqpCommunicator::connect(config.clone()).await.unwrap();

            let processed: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
            let (progress_tx, mut progress) = mpsc::unbounded_channel();
            let seen = processed.clone();
            let worker = Handler::sync(move |task: Value| {
                let id = task["id"].as_u64().unwrap_or(u64::MAX);
                *seen.lock().entry(id).or_default() += 1;
                let _ = progress_tx.send(id);
                task
            });
            let options = TaskSubscriberOptions { prefetch: 10 };
            server
                .add_task_subscriber("jobs", worker, options)
                .await
                .unwrap();
            server
                .add_rpc_subscriber("echo", Handler::sync(|v: Value| v))
                .await
                .unwrap();
            let heard = Arc::new(AtomicUsize::new(0));
            let counter = heard.clone();
            let listener = BroadcastHandler::sync(move |_| {
                counter.fetch_add(1, SeqCst);
            });
            server
                .add_broadcast_subscriber(BroadcastFilter::new(), listener)
                .await
                .unwrap();

            // Tasks: each is sent until a send succeeds (at least once from the sender's side).
            let errors = Arc::new(Mutex::new(Vec::new()));
            let sender = tokio::spawn({
                let (client, errors) = (client.clone(), errors.clone());
                async move {
                    for id in 0..TASKS {
                        loop {
                            let sent = client
                                .task_send_with(
                                    json!({"id": id}),
                                    TaskSendOptions::for_queue("jobs")
                                        .timeout(Duration::from_secs(5)),
                                )
                                .await;
                            match sent {
                                Ok(answer) => {
                                    assert_eq!(answer, json!({"id": id}));
                                    break;
                                }
                                Err(error) => {
                                    assert!(transient(&error), "task {id}: {error}");
                                    errors.lock().push(error.to_string());
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                        }
                    }
                }
            });
            // RPCs and broadcasts alongside, until the tasks are done.
            let done = Arc::new(AtomicBool::new(false));
            let chatter = tokio::spawn({
                let (client, errors, done) = (client.clone(), errors.clone(), done.clone());
                async move {
                    let mut answered = 0;
                    let mut n = 0;
                    while !done.load(SeqCst) {
                        n += 1;
                        match client
                            .rpc_send_with("echo", json!(n), Some(Duration::from_secs(5)))
                            .await
                        {
                            Ok(answer) => {
                                assert_eq!(answer, json!(n));
                                answered += 1;
                            }
                            Err(error) => {
                                assert!(transient(&error), "rpc: {error}");
                                errors.lock().push(error.to_string());
                            }
                        }
                        if let Err(error) = client.broadcast_send(Broadcast::new(json!(n))).await {
                            assert!(transient(&error), "broadcast: {error}");
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    answered
                }
            });

            // Take the broker down once a quarter of the tasks went through.
            while progress.recv().await.unwrap() < TASKS / 4 {}
            let bystander = AmqpCommunicator::connect(config.clone()).await.unwrap();
            tokio::task::spawn_blocking(broker::stop_app).await.unwrap();
            // While it is down: connecting fails clearly within its timeout, a call gives up
            // within its own, and closing a communicator whose connection dropped is bounded.
            let quick = config.clone().connect_timeout(Duration::from_secs(2));
            let refused = AmqpCommunicator::connect(quick)
                .await
                .expect_err("broker is down");
            assert!(matches!(refused, Error::Broker { .. }), "{refused}");
            let call = bystander.rpc_send_with("echo", json!(0), Some(Duration::from_millis(500)));
            let outcome = call.await;
            assert!(outcome.as_ref().is_err_and(transient), "{outcome:?}");
            let started = std::time::Instant::now();
            bystander.close().await;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "close took {:?}",
                started.elapsed()
            );
            tokio::task::spawn_blocking(broker::start_app)
                .await
                .unwrap();
            sender.await.unwrap();
            done.store(true, SeqCst);
            assert!(chatter.await.unwrap() > 0, "no RPC was answered");

            let processed = processed.lock().clone();
            let missing: Vec<u64> = (0..TASKS)
                .filter(|id| !processed.contains_key(id))
                .collect();
            assert!(missing.is_empty(), "tasks never processed: {missing:?}");
            assert!(client.connections() >= 2, "the client did not reconnect");
            assert!(server.connections() >= 2, "the server did not reconnect");
            eprintln!(
                "restart: {} errors seen by callers, {} duplicate deliveries",
                errors.lock().len(),
                processed.values().filter(|&&n| n > 1).count()
            );

            // Recovered: every pattern works again, on the reconnected communicators.
            assert_eq!(
                client.rpc_send("echo", json!("after")).await.unwrap(),
                "after"
            );
            let before = heard.load(SeqCst);
            client
                .broadcast_send(Broadcast::new(json!("after")))
                .await
                .unwrap();
            let task =
                client.task_send_with(json!({"id": TASKS}), TaskSendOptions::for_queue("jobs"));
            assert_eq!(task.await.unwrap(), json!({"id": TASKS}));
            common::until(|| heard.load(SeqCst) > before);
            client.delete_task_queue("jobs").await.unwrap();
            client.close().await;
            server.close().await;
        })
    });
}
