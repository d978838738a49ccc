//! The synchronous communicator from plain threads: blocking waits, bounded waits, callbacks,
//! close while waiting, and what happens when a handler blocks on it (kiwipy stalls 5 s there).

mod common;

use std::time::{Duration, Instant};

use common::{QUICK, bounded};
use runtime_thread::messaging::{
    Communicator, Error, Handler, IntoResponse, Response, SyncCommunicator, TaskSendOptions,
    TaskSubscriberOptions, Value,
};
use serde_json::json;

#[test]
fn plain_threads_call_and_handlers_run_on_the_runtime_thread() {
    bounded(QUICK, || {
        let comm = SyncCommunicator::local().unwrap();
        comm.add_rpc_subscriber(
            "where",
            Handler::sync(|_| json!(std::thread::current().name())),
        )
        .wait()
        .unwrap();
        let answer = comm.rpc_send("where", Value::Null).wait().unwrap();
        assert_eq!(answer, json!("communicator"));
        comm.add_task_subscriber(
            "jobs",
            Handler::sync(|v: Value| json!(v.as_i64().unwrap_or(0) + 1)),
            TaskSubscriberOptions::default(),
        )
        .wait()
        .unwrap();
        let result = comm
            .task_send_with(json!(41), TaskSendOptions::for_queue("jobs"))
            .wait()
            .unwrap();
        assert_eq!(result, json!(42));
        comm.close();
        assert!(comm.is_closed());
    });
}

#[test]
fn handles_support_bounded_waits_and_callbacks() {
    bounded(QUICK, || {
        let comm = SyncCommunicator::local().unwrap();
        comm.add_rpc_subscriber(
            "deferred",
            Handler::sync(|_| {
                let (responder, response) = Response::deferred();
                // Answered later from a plain thread.
                std::thread::spawn(move || responder.respond(json!("opened")));
                response
            }),
        )
        .wait()
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        comm.rpc_send("deferred", Value::Null)
            .on_done(move |outcome| tx.send(outcome).unwrap());
        let outcome = rx.recv_timeout(QUICK).unwrap();
        assert_eq!(outcome.unwrap(), json!("opened"));

        comm.add_rpc_subscriber(
            "silent",
            Handler::from_async(|_| futures::future::pending::<Value>()),
        )
        .wait()
        .unwrap();
        let mut waiting = comm.rpc_send("silent", Value::Null);
        assert!(matches!(
            waiting.wait_timeout(Duration::from_millis(20)),
            Err(Error::Thread(runtime_thread::Error::TimedOut(_)))
        ));
        assert!(
            !waiting.is_finished(),
            "a bounded wait leaves the call running"
        );
        comm.close();
        // Closing resolves the waiting call rather than leaving it hanging.
        let closed = waiting.wait();
        assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
    });
}

#[test]
fn a_handler_that_blocks_on_the_sync_communicator_fails_at_once_instead_of_stalling() {
    bounded(QUICK, || {
        let comm = SyncCommunicator::local().unwrap();
        comm.add_rpc_subscriber("inner", Handler::sync(|v: Value| v))
            .wait()
            .unwrap();
        let nested = comm.clone();
        comm.add_rpc_subscriber(
            "outer",
            Handler::sync(move |v: Value| -> Response {
                // Blocking on the runtime thread from inside a handler: refused, not a stall.
                match nested.rpc_send("inner", v).wait() {
                    Ok(answer) => answer.into_response(),
                    Err(error) => Response::Failed(error.to_string()),
                }
            }),
        )
        .wait()
        .unwrap();
        let started = Instant::now();
        match comm.rpc_send("outer", json!(1)).wait() {
            Err(Error::Remote { message }) => assert!(message.contains(".await"), "{message}"),
            other => panic!("expected the deadlock to be refused, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no multi-second stall"
        );
        comm.close();
    });
}

#[test]
fn many_plain_threads_call_concurrently() {
    bounded(QUICK, || {
        let comm = SyncCommunicator::local().unwrap();
        comm.add_rpc_subscriber(
            "square",
            Handler::sync(|v: Value| json!(v.as_i64().unwrap_or(0).pow(2))),
        )
        .wait()
        .unwrap();
        std::thread::scope(|scope| {
            for t in 0..4i64 {
                let comm = &comm;
                scope.spawn(move || {
                    for i in 0..1_000i64 {
                        let n = t * 1_000 + i;
                        let answer = comm.rpc_send("square", json!(n)).wait().unwrap();
                        assert_eq!(answer, json!(n * n));
                    }
                });
            }
        });
        comm.close();
    });
}

#[test]
fn after_close_calls_fail_at_once() {
    bounded(QUICK, || {
        let comm = SyncCommunicator::local().unwrap();
        comm.close();
        let late = comm.rpc_send("anyone", Value::Null);
        assert!(late.is_finished(), "refused at once, not queued");
        // The communicator's own error, not its runtime thread's.
        assert!(matches!(late.wait(), Err(Error::Closed)));
        comm.close(); // closing twice is harmless
    });
}

#[test]
fn stopping_the_runtime_with_tasks_in_hand_neither_hangs_nor_loses_them() {
    bounded(QUICK, || {
        use runtime_thread::RuntimeThread;
        use runtime_thread::messaging::{Communicator, LocalCommunicator};
        use std::sync::Arc;

        let broker = LocalCommunicator::new();
        let first = Arc::new(
            RuntimeThread::builder()
                .grace_period(Duration::from_millis(20))
                .start()
                .unwrap(),
        );
        let comm = SyncCommunicator::new(broker.clone(), first.clone());
        let (holding_tx, holding) = std::sync::mpsc::channel();
        comm.add_task_subscriber(
            "work",
            Handler::from_async(move |_| {
                let _ = holding_tx.send(());
                futures::future::pending::<Value>()
            }),
            TaskSubscriberOptions::default(),
        )
        .wait()
        .unwrap();
        comm.task_send_no_reply(json!("job"), TaskSendOptions::for_queue("work"))
            .wait()
            .unwrap();
        holding.recv_timeout(QUICK).unwrap();
        // The runtime goes away under the worker holding the task: the stop must stay bounded.
        first.stop().unwrap();
        // The task was given back to the queue, not lost: another runtime can pull it.
        let second = RuntimeThread::builder().start().unwrap();
        let pulled = second
            .run_threadsafe(async move {
                let task = broker.next_task("work", Duration::from_secs(5)).await?;
                Ok::<_, Error>(task.body().clone())
            })
            .wait()
            .unwrap()
            .unwrap();
        assert_eq!(pulled, json!("job"));
    });
}
