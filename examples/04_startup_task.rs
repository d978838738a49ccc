//! 04 · A startup task that loops until it is cancelled, then says goodbye.
//!
//! Long-running background work (a heartbeat, a poller, a consumer) is registered before start.
//! Each such task receives a `CancellationToken`: cancellation in async Rust is cooperative, so the
//! task decides where it can stop cleanly by watching the token. At stop the token fires, the task
//! gets a grace period to finish, and only then is it aborted if it ignored the token.
//!
//! Run it: `cargo run --example 04_startup_task`

use std::time::Duration;

use runtime_thread::RuntimeThread;

fn main() -> Result<(), runtime_thread::Error> {
    let (ticks_tx, ticks) = std::sync::mpsc::channel();
    let rt = RuntimeThread::builder()
        .name("example-04")
        .grace_period(Duration::from_secs(2))
        .startup_task("ticker", move |token| async move {
            let mut interval = tokio::time::interval(Duration::from_millis(20));
            let mut count = 0u32;
            loop {
                // `select!` waits for whichever comes first: the next tick or the stop signal.
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = interval.tick() => {
                        count += 1;
                        println!("tick {count}");
                        let _ = ticks_tx.send(count);
                    }
                }
            }
            // Clean-up can still await here: the grace period covers it.
            tokio::time::sleep(Duration::from_millis(5)).await;
            println!("ticker: goodbye after {count} ticks");
        })
        .start()?;

    // Let it tick three times, then stop.
    while ticks.recv().map_err(|_| runtime_thread::Error::Stopped)? < 3 {}
    let report = rt.stop()?;
    for task in &report.startup_tasks {
        println!("startup task {:?} ended: {:?}", task.name, task.outcome);
    }
    Ok(())
}
