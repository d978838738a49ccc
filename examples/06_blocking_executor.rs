//! 06 · The blocking executor: run blocking code without freezing async work.
//!
//! A blocking call (a synchronous file read, a CPU-heavy loop, a C library, `thread::sleep`) holds
//! its OS thread until it returns. Inside an async task it would stop every other task on that
//! thread. `submit_blocking` sends such code to the runtime's pool of blocking threads instead
//! (Python's `run_in_executor`). Blocking code cannot be interrupted: a job still running at stop
//! is left to finish on its own thread and reported as detached.
//!
//! Run it: `cargo run --example 06_blocking_executor`

use std::time::{Duration, Instant};

use runtime_thread::RuntimeThread;

fn main() -> Result<(), runtime_thread::Error> {
    let rt = RuntimeThread::builder()
        .name("example-06")
        .max_blocking_threads(4)
        .grace_period(Duration::from_millis(100))
        .start()?;

    // A blocking job and async work side by side: the async work is not held up.
    let started = Instant::now();
    let slow_io = rt.submit_blocking(|| {
        std::thread::sleep(Duration::from_millis(100)); // stands in for a slow synchronous call
        std::thread::current().name().map(str::to_owned)
    });
    let quick = rt.run_threadsafe(async { "async work done" }).wait()?;
    println!(
        "{quick} after {:?}, while the blocking job still runs",
        started.elapsed()
    );
    println!("blocking job ran on thread {:?}", slow_io.wait()?);

    // CPU-heavy work: four jobs on four pool threads.
    let jobs: Vec<_> = (0..4u64)
        .map(|n| rt.submit_blocking(move || (0..2_000_000u64).map(|x| x ^ n).sum::<u64>()))
        .collect();
    for (n, job) in jobs.into_iter().enumerate() {
        println!("job {n}: {}", job.wait()?);
    }

    // A job that outlives the stop: it is detached, and its handle says `Stopped`.
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let stuck = rt.submit_blocking(move || gate.recv().is_ok());
    while rt.stats().in_flight == 0 {
        std::thread::yield_now();
    }
    let report = rt.stop()?;
    println!(
        "stop took {:?}; detached blocking jobs: {}; the stuck handle says {:?}",
        report.elapsed,
        report.blocking_detached,
        stuck.wait()
    );
    let _ = release.send(()); // let the detached thread finish
    Ok(())
}
