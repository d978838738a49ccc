//! 05 · Many concurrent tasks with spawn_threadsafe.
//!
//! One thread can run thousands of tasks at once because a task that waits does not occupy the
//! thread: at each `.await` that is not ready, it hands the thread back to the runtime, which polls
//! another. `spawn_threadsafe` is fire-and-forget: it never blocks the caller. A task that fails
//! or panics is reported through `tracing` rather than lost.
//!
//! Run it: `cargo run --example 05_many_tasks`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use runtime_thread::RuntimeThread;

const TASKS: usize = 10_000;

fn main() -> Result<(), runtime_thread::Error> {
    // Print the crate's tracing events (start, stop, failures) to stderr.
    tracing_subscriber::fmt().with_target(false).init();

    let rt = RuntimeThread::builder().name("example-05").start()?;
    let done = Arc::new(AtomicUsize::new(0));
    let (all_done_tx, all_done) = std::sync::mpsc::channel();

    let started = Instant::now();
    for i in 0..TASKS {
        let (done, all_done_tx) = (done.clone(), all_done_tx.clone());
        rt.spawn_threadsafe(async move {
            // Each task sleeps 0-9 ms: 10,000 sleeps overlap instead of adding up to ~45 s.
            tokio::time::sleep(Duration::from_millis((i % 10) as u64)).await;
            if done.fetch_add(1, Ordering::SeqCst) + 1 == TASKS {
                let _ = all_done_tx.send(());
            }
        })?;
    }
    println!(
        "spawned {TASKS} tasks in {:?} (the caller never waited)",
        started.elapsed()
    );
    all_done
        .recv()
        .map_err(|_| runtime_thread::Error::Stopped)?;
    println!(
        "all {TASKS} finished after {:?} on one thread",
        started.elapsed()
    );

    // A failing fire-and-forget task: its error shows up as an ERROR event on stderr.
    rt.spawn_threadsafe(async { Err::<(), _>("could not reach the broker") })?;

    rt.stop()?;
    Ok(())
}
