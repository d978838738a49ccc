//! 11 · A task queue with several workers.
//!
//! A task queue hands each task to exactly one of its workers. A worker takes at most `prefetch`
//! tasks at a time, and a task counts as done only once its worker has answered: if the worker
//! goes away mid-task, the task goes back to the queue for another. A worker can also reject a
//! task it cannot handle; it is then offered to the others, and waits if nobody accepts it.
//!
//! Run it: `cargo run --example 11_task_queue`

use std::time::Duration;

use runtime_thread::messaging::{
    Communicator, Handler, Response, SyncCommunicator, TaskSendOptions, TaskSubscriberOptions,
    Value,
};
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let comm = SyncCommunicator::local()?;

    // Three workers; each handles two tasks at a time and takes 10 ms per task.
    for worker in ["w1", "w2", "w3"] {
        comm.add_task_subscriber(
            "resize",
            Handler::from_async(move |task: Value| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                json!({ "image": task, "done_by": worker })
            }),
            TaskSubscriberOptions { prefetch: 2 },
        )
        .wait()?;
    }

    // Send twelve tasks without waiting, then collect the answers.
    let started = std::time::Instant::now();
    let pending: Vec<_> = (1..=12)
        .map(|i| {
            comm.task_send_with(
                json!(format!("img{i}.png")),
                TaskSendOptions::for_queue("resize"),
            )
        })
        .collect();
    for handle in pending {
        println!("{}", handle.wait()?);
    }
    println!(
        "12 tasks x 10 ms on 3 workers x 2 slots took {:?}",
        started.elapsed()
    );

    // A worker that only takes even numbers: odd ones go to the other worker instead.
    comm.add_task_subscriber(
        "numbers",
        Handler::sync(|task: Value| match task.as_i64() {
            Some(n) if n % 2 == 0 => json!(format!("{n} taken by the even worker")).into(),
            _ => Response::Rejected,
        }),
        TaskSubscriberOptions::default(),
    )
    .wait()?;
    comm.add_task_subscriber(
        "numbers",
        Handler::sync(|task: Value| json!(format!("{task} taken by the any worker"))),
        TaskSubscriberOptions::default(),
    )
    .wait()?;
    for n in [1, 2, 3] {
        let answer = comm
            .task_send_with(json!(n), TaskSendOptions::for_queue("numbers"))
            .wait()?;
        println!("{}", answer);
    }

    // Pulling instead of subscribing: take one task, answer it.
    let sender = comm.task_send_with(json!("by hand"), TaskSendOptions::for_queue("manual"));
    let task = comm.next_task("manual", Duration::from_secs(1)).wait()?;
    println!("pulled {}", task.body());
    comm.thread()
        .run_threadsafe(async move { task.complete(json!("answered by hand")).await })
        .wait()?;
    println!("the sender got {}", sender.wait()?);

    comm.close();
    Ok(())
}
