//! 07 · The development mode: when something is slow, be told which thing.
//!
//! A runtime thread runs many tasks by taking turns: each task runs until its next `.await` that
//! is not ready, then hands the thread back. A task that blocks instead (`std::thread::sleep`, a
//! synchronous file or database call, a long computation) keeps its turn, and every other task on
//! the thread waits, silently. Python's asyncio has a development mode (`python -X dev`) that
//! names such callbacks; this is the same idea. Switch it on with `.dev_mode(true)` on the
//! builder, or with `RUNTIME_THREAD_DEV_MODE=1` in the environment, and the thread reports,
//! through `tracing`:
//!
//! - a poll that held the thread longer than 100 ms (a "slow poll"), naming the work;
//! - a poll still running after 250 ms (a "stall"), while it runs, from a watchdog thread;
//! - a handle dropped without being read whose work panicked (a "failure nobody read").
//!
//! This program makes each mistake on purpose, then the fix. Off, the mode costs nothing.
//!
//! Run it: `cargo run --example 07_dev_mode`

use std::time::Duration;

use runtime_thread::RuntimeThread;

fn main() -> Result<(), runtime_thread::Error> {
    // The reports are `tracing` events: print them to stderr. The panic below is deliberate.
    tracing_subscriber::fmt().with_target(false).init();
    std::panic::set_hook(Box::new(|info| eprintln!("(a deliberate panic: {info})")));

    let rt = RuntimeThread::builder()
        .name("example-07")
        .dev_mode(true)
        .start()?;

    // Mistake 1: a blocking call inside a future. The thread can do nothing else for 150 ms.
    // The work is named with `named`; unnamed work is named by the line that submitted it.
    rt.named("fetch the report")
        .run_threadsafe(async {
            std::thread::sleep(Duration::from_millis(150)); // a synchronous call, in disguise
        })
        .wait()?;

    // Mistake 2: a long computation in a future. While it runs, the watchdog says so: this is
    // how an endless loop or a deadlocked lock shows itself, before anyone loses patience.
    rt.named("count to a large number")
        .run_threadsafe(async {
            let until = std::time::Instant::now() + Duration::from_millis(400);
            let mut n = 0u64;
            while std::time::Instant::now() < until {
                n = n.wrapping_add(1);
            }
            n
        })
        .wait()?;

    // Mistake 3: fire, forget, and never look. The panic would go unseen; the mode reports it.
    drop(rt.run_threadsafe(async {
        tokio::task::yield_now().await;
        panic!("the broker's answer did not parse");
    }));

    // The fix for 1 and 2: blocking work goes to the blocking pool, where it waits on a thread
    // of its own, and the async work around it keeps the runtime thread free. No warning now.
    let report = rt.submit_blocking(|| {
        std::thread::sleep(Duration::from_millis(150));
        "the report"
    });
    println!("fetched {}", report.wait()?);

    // The stop report sums up what the mode saw.
    let report = rt.stop()?;
    if let Some(seen) = report.dev {
        println!("{} slow polls; the slowest:", seen.slow_polls);
        for slow in &seen.slowest {
            println!("  {:>4} ms  {}", slow.held.as_millis(), slow.work);
        }
        for stall in &seen.stalls {
            println!(
                "stalled {} ms in: {}",
                stall.running_for.as_millis(),
                stall.work
            );
        }
    }
    Ok(())
}
