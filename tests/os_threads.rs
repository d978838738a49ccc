//! No OS thread outlives a stopped runtime thread. This file holds a single test so that no other
//! test's threads change the count while it runs.

mod common;

use std::time::{Duration, Instant};

use common::{QUICK, bounded};
use runtime_thread::{Flavor, RuntimeThread};

fn os_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("Linux /proc")
        .count()
}

/// The kernel drops a thread's /proc entry a moment after the joiner is woken, and nothing
/// notifies that moment, so poll it, briefly and with a bound.
fn settles_to(expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = os_threads();
        if now == expected || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn no_os_threads_are_left_after_a_guard_drops() {
    bounded(QUICK, || {
        let before = os_threads();
        for flavor in [Flavor::CurrentThread, Flavor::MultiThread { workers: 2 }] {
            let rt = RuntimeThread::builder().flavor(flavor).build().unwrap();
            {
                let running = rt.start_guard().unwrap();
                // Bring up the blocking pool too.
                let blocking: Vec<_> = (0..4).map(|i| running.submit_blocking(move || i)).collect();
                for job in blocking {
                    job.wait().unwrap();
                }
                assert_eq!(running.run_threadsafe(async { 1 }).wait().unwrap(), 1);
                assert!(os_threads() > before, "{flavor:?} started threads");
            }
            assert_eq!(settles_to(before), before, "{flavor:?} left threads behind");
        }
    });
}
