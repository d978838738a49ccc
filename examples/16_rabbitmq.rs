//! 16 · A worker and a client in two processes, over RabbitMQ.
//!
//! Everything so far ran inside one program. With the `amqp` feature, the same communicator
//! API crosses process (and machine) boundaries through a RabbitMQ broker, speaking kiwipy's
//! protocol, so a Python program using kiwipy could take either side.
//!
//! The client starts the worker as a second OS process (this program with `--worker`), hears
//! its "ready" broadcast, sends it ten tasks at once and collects their results, asks it for
//! its count over RPC, and finally tells it to stop. All of it from plain synchronous code:
//! `amqp::connect` runs the connection on a runtime thread of its own, and each call returns a
//! handle to `wait()` on.
//!
//! Run it with the broker named in `RUNTIME_THREAD_AMQP_URL` (default: RabbitMQ's on
//! 127.0.0.1:5672). The project's own node will do: `export RUNTIME_THREAD_AMQP_URL=$(scripts/rabbitmq start)`,
//! then `cargo run --features amqp --example 16_rabbitmq`.

use std::error::Error;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::mpsc;
use std::time::Duration;

use runtime_thread::messaging::amqp::{self, AmqpConfig};
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Handler, TaskSendOptions,
    TaskSubscriberOptions, Value,
};
use serde_json::json;

/// Exchanges and queues of this run's own (so that two runs never meet), in kiwipy's testing
/// mode (nothing stays on the broker afterwards).
fn config(run: &str) -> AmqpConfig {
    AmqpConfig::new()
        .message_exchange(format!("example-{run}.messages"))
        .task_exchange(format!("example-{run}.tasks"))
        .task_queue_prefix(format!("example-{run}."))
        .testing_mode(true)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--worker") => worker(&args[2]),
        _ => client(),
    }
}

fn worker(run: &str) -> Result<(), Box<dyn Error>> {
    let comm = amqp::connect_with(config(run))?;
    let done = Arc::new(AtomicU64::new(0));

    // Tasks: a plain closure; the task is acknowledged once it has answered.
    let count = done.clone();
    let square = Handler::sync(move |n: Value| {
        count.fetch_add(1, SeqCst);
        let n = n.as_i64().ok_or("not an integer")?;
        Ok::<_, &str>(json!(n * n))
    });
    let options = TaskSubscriberOptions { prefetch: 4 };
    comm.add_task_subscriber("squares", square, options)
        .wait()?;

    // RPCs: how much was done, and a way to be told to stop.
    let count = done.clone();
    comm.add_rpc_subscriber("done", Handler::sync(move |_| json!(count.load(SeqCst))))
        .wait()?;
    let (stop, stopped) = mpsc::channel();
    let on_stop = Handler::sync(move |_| {
        let _ = stop.send(());
        "stopping"
    });
    comm.add_rpc_subscriber("stop", on_stop).wait()?;

    let hello = Broadcast::new(json!({"pid": std::process::id()}))
        .sender("worker")
        .subject("worker.ready");
    comm.broadcast_send(hello).wait()?;
    stopped.recv()?;
    comm.close();
    Ok(())
}

fn client() -> Result<(), Box<dyn Error>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let comm = match amqp::connect_with(config(&run)) {
        Ok(comm) => comm,
        Err(error) => {
            eprintln!("{error}\nIs RabbitMQ running? `scripts/rabbitmq start` starts one.");
            return Err(error.into());
        }
    };

    // Listen before the worker exists, so its "ready" cannot be missed.
    let (heard, ready) = mpsc::channel();
    let filter = BroadcastFilter::new().subject("worker.*");
    let listener = BroadcastHandler::sync(move |message: Broadcast| {
        let _ = heard.send(message);
    });
    comm.add_broadcast_subscriber(filter, listener).wait()?;

    let mut worker = Command::new(std::env::current_exe()?)
        .args(["--worker", &run])
        .spawn()?;
    let hello = ready.recv_timeout(Duration::from_secs(30))?;
    println!(
        "client: {} says {} (from {:?})",
        hello.subject.as_deref().unwrap_or("?"),
        hello.body,
        hello.sender.as_deref().unwrap_or("?")
    );

    // Ten tasks in flight at once: each call returns a handle at once; wait for them all.
    let sent: Vec<_> = (1..=10)
        .map(|n| comm.task_send_with(json!(n), TaskSendOptions::for_queue("squares")))
        .collect();
    let mut squares = Vec::new();
    for handle in sent {
        squares.push(handle.wait()?);
    }
    println!("client: squares {}", json!(squares));

    let done = comm.rpc_send("done", Value::Null).wait()?;
    println!("client: the worker says it did {done} tasks");
    assert_eq!(done, 10);

    comm.rpc_send("stop", Value::Null).wait()?;
    let status = worker.wait()?;
    println!("client: the worker exited ({status})");
    comm.close();
    Ok(())
}
