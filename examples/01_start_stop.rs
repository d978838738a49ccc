//! 01 · Start and stop a runtime thread.
//!
//! Async Rust needs an executor to drive futures. A synchronous program (this `main` is an
//! ordinary function, not `async`) can still use async code by owning an executor on a thread of
//! its own: that is what a `RuntimeThread` is, one OS thread running one tokio runtime.
//!
//! Run it: `cargo run --example 01_start_stop`

use runtime_thread::RuntimeThread;

fn main() -> Result<(), runtime_thread::Error> {
    // Building only configures; nothing runs yet (like constructing a thread object).
    let rt = RuntimeThread::builder().name("example-01").build()?;
    println!("built:   running = {}", rt.is_running());

    // `start` spawns the OS thread, builds the runtime on it, and returns only once the runtime
    // accepts work, so the next line can never race with start-up.
    rt.start()?;
    println!("started: running = {}", rt.is_running());

    // Hand it a future and block this thread until the answer comes back.
    let answer = rt.run_threadsafe(async { 6 * 7 }).wait()?;
    println!("the runtime thread computed {answer}");

    // `stop` is graceful and bounded: it refuses new work, lets running tasks finish within a
    // grace period, shuts the runtime down, joins the thread and tells us what happened.
    let report = rt.stop()?;
    println!(
        "stopped: running = {}, cause = {:?}, clean = {}, took {:?}",
        rt.is_running(),
        report.cause,
        report.is_clean(),
        report.elapsed
    );

    // Stopping again is harmless: it returns the same report.
    assert_eq!(rt.stop()?, report);
    Ok(())
}
