//! 08 · A daemon's main: start, then wait until Ctrl-C or SIGTERM stops it.
//!
//! Signals are delivered to a process, not to a thread, and Rust's default is to die on SIGINT
//! and SIGTERM. With `stop_on_ctrl_c`, the runtime thread turns them into a graceful stop instead:
//! the first one cancels the tasks and starts the grace period; a second one aborts at once. Once
//! the thread has stopped, the default is back, so a later Ctrl-C ends the process as usual.
//!
//! Run it: `cargo run --example 08_daemon` and press Ctrl-C. To stop by itself after a moment
//! (as CI does), pass `--stop-after-ms 300`: the example then sends SIGTERM to itself.

use std::time::Duration;

use runtime_thread::RuntimeThread;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();

    let rt = RuntimeThread::builder()
        .name("daemon")
        .stop_on_ctrl_c()
        .grace_period(Duration::from_secs(3))
        .startup_task("heartbeat", |token| async move {
            let mut beats = 0u64;
            while !token.is_cancelled() {
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        beats += 1;
                        println!("heartbeat {beats}");
                    }
                }
            }
            println!("heartbeat: flushing state and saying goodbye");
        })
        .start()?;
    println!("daemon running; press Ctrl-C (or send SIGTERM) to stop");

    if let Some(after) = stop_after() {
        // Demonstrates the real signal path: SIGTERM to our own process.
        std::thread::spawn(move || {
            std::thread::sleep(after);
            let _ = signal_hook::low_level::raise(signal_hook::consts::SIGTERM);
        });
    }

    // The whole of a daemon's main loop: wait for the thread to stop.
    let report = rt.join()?;
    println!(
        "stopped by {:?} after a {:?} shutdown",
        report.cause, report.elapsed
    );
    Ok(())
}

fn stop_after() -> Option<Duration> {
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--stop-after-ms" {
            return args.next()?.parse().ok().map(Duration::from_millis);
        }
    }
    None
}
