//! 02 · Scoped use: the thread stops when the scope ends, even if the scope panics.
//!
//! Python writes `with AsyncioThread() as thread: ...`. Rust gets the same guarantee from
//! ownership: a guard value whose `Drop` stops the thread. Drop runs on every way out of a scope,
//! including an unwinding panic, so the thread can never be left running by mistake.
//!
//! Run it: `cargo run --example 02_scoped_guard`

use std::panic::{AssertUnwindSafe, catch_unwind};

use runtime_thread::RuntimeThread;

fn main() -> Result<(), runtime_thread::Error> {
    // This example panics on purpose; print one line instead of the default message and backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("(a deliberate panic: {info})")));
    let rt = RuntimeThread::builder().name("example-02").build()?;

    // Form 1: a guard. It dereferences to the thread, and stops it when dropped.
    {
        let running = rt.start_guard()?;
        let greeting = running
            .run_threadsafe(async { "hello from the guard" })
            .wait()?;
        println!("{greeting}");
    } // <- stopped and joined here
    println!("after the guard's scope: running = {}", rt.is_running());

    // Form 2: a closure. Start, run the body, stop.
    let rt = RuntimeThread::builder().name("example-02b").build()?;
    let doubled = rt.scope(|rt| rt.run_threadsafe(async { 21 * 2 }).wait())??;
    println!(
        "the closure form returned {doubled}; running = {}",
        rt.is_running()
    );

    // Even a panicking body cannot leave the thread running: the stop happens during unwinding.
    let rt = RuntimeThread::builder().name("example-02c").build()?;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        rt.scope(|_| panic!("something went wrong in the body"))
    }));
    println!(
        "the body panicked ({}), and the thread is stopped: running = {}",
        outcome.is_err(),
        rt.is_running()
    );
    Ok(())
}
