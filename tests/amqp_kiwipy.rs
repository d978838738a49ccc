//! Interoperability with a real kiwipy 0.9 (Python, in the virtual environment that
//! `scripts/python-venv` creates) over a real RabbitMQ: a kiwipy client calls Rust RPC
//! subscribers, sends tasks to Rust workers and broadcasts to Rust subscribers; a Rust client
//! does the same against kiwipy subscribers. The Python side is `tests/kiwipy/peer.py`.
#![cfg(feature = "amqp")]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use runtime_thread::messaging::amqp::AmqpCommunicator;
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Error, Handler, Response,
    TaskSendOptions, TaskSubscriberOptions, Value,
};
use serde_json::json;

mod common;
use common::broker::runtime;
use common::{bounded, broker};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/kiwipy/peer.py");

/// The Python venv's python, which `scripts/test` makes (`scripts/python-venv`) and names in
/// `RUNTIME_THREAD_PYTHON`.
fn python() -> PathBuf {
    match std::env::var_os("RUNTIME_THREAD_PYTHON") {
        Some(python) => python.into(),
        None => panic!(
            "RUNTIME_THREAD_PYTHON is not set: run these tests through scripts/test, or \
             export it as the path `scripts/python-venv` prints"
        ),
    }
}

/// The values both directions send: every JSON type, nesting, unicode, a 300 KB string.
fn values() -> Vec<Value> {
    vec![
        json!(null),
        json!(true),
        json!(false),
        json!(0),
        json!(-7),
        json!(1_u64 << 53),
        json!(1.5),
        json!(1e100),
        json!(-2.5e-10),
        json!(""),
        json!("text"),
        json!("unicode ünïcødé 😀 \u{2028} end"),
        json!([]),
        json!([1, "a", null, 2.0]),
        json!({}),
        json!({"nested": {"deep": [1, {"x": "y"}], "empty": {}}}),
        json!("x".repeat(300_000)),
    ]
}

#[test]
#[ignore = "needs the project's RabbitMQ node and Python venv: scripts/test runs it"]
fn a_kiwipy_client_calls_rust_rpcs_sends_rust_workers_tasks_and_broadcasts_to_rust() {
    let python = python();
    bounded(Duration::from_secs(120), move || {
        let prefix = broker::unique();
        runtime().block_on(async {
            let config = broker::named(&prefix).testing_mode(true);
            let comm = AmqpCommunicator::connect(config).await.unwrap();
            let echo = Handler::sync(|v: Value| v);
            comm.add_rpc_subscriber("rs-echo", echo).await.unwrap();
            let fail = Handler::sync(|_: Value| Err::<Value, _>("boom from rust"));
            comm.add_rpc_subscriber("rs-fail", fail).await.unwrap();
            let nested = Handler::sync(|v: Value| {
                Response::later(async move { Response::later(async move { json!({"deep": v}) }) })
            });
            comm.add_rpc_subscriber("rs-nested", nested).await.unwrap();

            let no_reply: Arc<Mutex<Vec<Value>>> = Arc::default();
            let record = no_reply.clone();
            let worker = Handler::sync(move |task: Value| match task {
                Value::String(s) if s == "fail" => {
                    Response::Failed("task failed in rust".to_owned())
                }
                // An answer that comes later: kiwipy's `pending` reply goes first.
                Value::String(s) if s == "later" => Response::later(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    json!("done later in rust")
                }),
                Value::Number(n) => Response::Value(json!(n.as_i64().unwrap_or(0) * 2)),
                Value::Object(mut map) if map.contains_key("noreply") => {
                    let id = map.remove("noreply").unwrap_or_default();
                    record.lock().push(id);
                    Response::Value(Value::Null)
                }
                other => Response::Value(other),
            });
            let options = TaskSubscriberOptions::default();
            comm.add_task_subscriber("rs-tasks", worker, options)
                .await
                .unwrap();
            let seen = no_reply.clone();
            let listed = Handler::sync(move |_: Value| json!(*seen.lock()));
            comm.add_rpc_subscriber("rs-no-reply", listed)
                .await
                .unwrap();

            let heard: Arc<Mutex<Vec<Value>>> = Arc::default();
            let record = heard.clone();
            let listener = BroadcastHandler::sync(move |b: Broadcast| {
                record
                    .lock()
                    .push(json!([b.body, b.sender, b.subject, b.correlation_id]));
            });
            comm.add_broadcast_subscriber(BroadcastFilter::new(), listener)
                .await
                .unwrap();
            let seen = heard.clone();
            let listed = Handler::sync(move |_: Value| json!(*seen.lock()));
            comm.add_rpc_subscriber("rs-heard", listed).await.unwrap();

            let output = tokio::task::spawn_blocking(move || {
                Command::new(python)
                    .args([PEER, "client", &broker::url(), &prefix])
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                output.status.success() && stdout.contains("ALL OK"),
                "the kiwipy client failed:\n{stdout}\n{stderr}"
            );
            comm.close().await;
        });
    });
}

#[test]
#[ignore = "needs the project's RabbitMQ node and Python venv: scripts/test runs it"]
fn a_rust_client_calls_kiwipy_rpcs_sends_kiwipy_workers_tasks_and_broadcasts_to_kiwipy() {
    let python = python();
    bounded(Duration::from_secs(120), move || {
        let prefix = broker::unique();
        let mut peer = Command::new(python)
            .args([PEER, "serve", &broker::url(), &prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(peer.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        if line.trim() != "READY" {
            let mut stderr = String::new();
            let _ = peer.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!("the kiwipy peer did not start: {line}\n{stderr}");
        }
        runtime().block_on(async {
            let config = broker::named(&prefix).testing_mode(true);
            let comm = AmqpCommunicator::connect(config).await.unwrap();
            for value in values() {
                let answer = comm.rpc_send("py-echo", value.clone()).await.unwrap();
                assert_eq!(answer, value, "echoed by kiwipy");
            }
            let failed = comm.rpc_send("py-fail", json!(1)).await;
            match failed {
                Err(Error::Remote { message }) => assert!(message.contains("boom from python")),
                other => panic!("py-fail: {other:?}"),
            }
            let nested = comm.rpc_send("py-nested", json!("q")).await.unwrap();
            assert_eq!(nested, json!({"deep": "q"}));
            let nobody = comm.rpc_send("nobody-here", json!(1)).await;
            assert!(
                matches!(nobody, Err(Error::Unroutable { .. })),
                "{nobody:?}"
            );

            let doubled = comm
                .task_send_with(json!(21), TaskSendOptions::for_queue("py-tasks"))
                .await;
            assert_eq!(doubled.unwrap(), json!(42));
            let failed = comm
                .task_send_with(json!("fail"), TaskSendOptions::for_queue("py-tasks"))
                .await;
            match failed {
                Err(Error::Remote { message }) => {
                    assert!(message.contains("task failed in python"))
                }
                other => panic!("failing task: {other:?}"),
            }
            let later = comm.task_send_with(json!("later"), TaskSendOptions::for_queue("py-tasks"));
            assert_eq!(later.await.unwrap(), json!("done later in python"));
            let queued = comm.task_send_no_reply(
                json!({"noreply": "rs-1"}),
                TaskSendOptions::for_queue("py-tasks"),
            );
            assert_eq!(queued.await.unwrap(), ());
            loop {
                let done = comm.rpc_send("py-no-reply", Value::Null).await.unwrap();
                if done == json!(["rs-1"]) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }

            let message = Broadcast::new(json!({"k": ["v", 1]}))
                .sender("rs.sender")
                .subject("rs.subject")
                .correlation_id("cid-9");
            comm.broadcast_send(message).await.unwrap();
            let expected = json!([[{"k": ["v", 1]}, "rs.sender", "rs.subject", "cid-9"]]);
            loop {
                let heard = comm.rpc_send("py-heard", Value::Null).await.unwrap();
                if heard == expected {
                    break;
                }
                assert_eq!(heard, json!([]), "kiwipy heard something else");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            comm.close().await;
        });
        drop(peer.stdin.take()); // The peer stops when its stdin closes.
        assert!(peer.wait().unwrap().success(), "the kiwipy peer failed");
    });
}
