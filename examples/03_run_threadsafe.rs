//! 03 · run_threadsafe: hand a future to the runtime thread and get its result back.
//!
//! This is the main demo. A future is a value describing work that can pause (at each `.await`)
//! and resume later; it does nothing until an executor polls it. `run_threadsafe` moves a future
//! onto the runtime thread and returns a `TaskHandle`, which you can block on, poll, cancel,
//! leave a callback on, or `.await` from any other executor.
//!
//! Run it: `cargo run --example 03_run_threadsafe`

use std::time::{Duration, Instant};

use runtime_thread::{Error, RuntimeThread};

fn main() -> Result<(), Error> {
    // This example panics on purpose; print one line instead of the default message and backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("(a deliberate panic: {info})")));
    let rt = RuntimeThread::builder().name("example-03").start()?;

    // 1. Block until done. A future that is ready on its first poll is answered inline by the
    //    runtime thread: in a release build (`cargo run --release --example 03_run_threadsafe`)
    //    a round trip costs well under a microsecond on a machine with a CPU free for each
    //    side; a debug build is many times slower.
    let started = Instant::now();
    for i in 0..10_000 {
        assert_eq!(rt.run_threadsafe(async move { i + 1 }).wait()?, i + 1);
    }
    let profile = if cfg!(debug_assertions) {
        "a debug build: add --release for the real figure"
    } else {
        "a release build"
    };
    println!("10,000 round trips in {:?} ({profile})", started.elapsed());

    // 2. Futures that really wait (timers, sockets, channels) work the same way; meanwhile the
    //    runtime thread serves other work.
    let slow = rt.run_threadsafe(async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        "woke up after 50 ms"
    });
    println!("finished yet? {}", slow.is_finished());
    println!("{}", slow.wait()?);

    // 3. Bounded waits: give up after a deadline, keep the handle, decide later.
    let (release, gate) = tokio::sync::oneshot::channel::<&str>();
    let mut waiting = rt.run_threadsafe(async move { gate.await.unwrap_or("sender dropped") });
    match waiting.wait_timeout(Duration::from_millis(10)) {
        Err(Error::TimedOut(after)) => println!("not ready after {after:?}; still usable"),
        other => println!("unexpected: {other:?}"),
    }
    release.send("released").ok();
    println!("then: {}", waiting.wait_timeout(Duration::from_secs(5))?);

    // 4. Cancel: the handle resolves with `Cancelled` at once and the future is dropped.
    let forever = rt.run_threadsafe(futures::future::pending::<()>());
    forever.cancel();
    println!("cancelled: {:?}", forever.wait());

    // 5. A callback instead of a wait: called exactly once, at once if the work is already done.
    let (tx, rx) = std::sync::mpsc::channel();
    rt.run_threadsafe(async { 2 + 2 })
        .on_done(move |result| tx.send(result).unwrap());
    println!("on_done delivered {:?}", rx.recv().unwrap());

    // 6. A panic in the future comes back as an error; the thread survives and keeps serving.
    let boom = rt.run_threadsafe(async {
        if true {
            panic!("a bug in one task");
        }
    });
    println!("panicked task: {:?}", boom.wait());
    println!(
        "next call still works: {}",
        rt.run_threadsafe(async { "yes" }).wait()?
    );

    // 7. The handle is itself a future, usable from any executor, not only tokio.
    let from_elsewhere = futures::executor::block_on(rt.run_threadsafe(async { "awaited" }))?;
    println!("{from_elsewhere} from futures::executor::block_on");

    let stats = rt.stats();
    println!(
        "submitted {}, completed {}, in flight {}",
        stats.submitted, stats.completed, stats.in_flight
    );
    rt.stop()?;
    Ok(())
}
