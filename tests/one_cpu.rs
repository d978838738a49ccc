//! On one CPU, a thread that spins holds the CPU the other side of the hand-off needs. These
//! tests pin the test thread (and so the runtime thread it starts, which inherits the mask) to
//! one CPU and check that the runtime thread does not burn its idle spin between calls.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::{QUICK, bounded};
use runtime_thread::RuntimeThread;
use runtime_thread::engine::{Command, Process, Runner, StepContext, StepError};

/// Round trips per measurement: enough to average out a stray preemption.
const CALLS: u32 = 2_000;

/// Pins the calling thread to CPU 0 for the rest of its life.
fn pin_to_cpu_zero() {
    // SAFETY: plain data in and out of the affinity call, for the calling thread only.
    unsafe {
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut only);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &only);
        assert_eq!(rc, 0, "sched_setaffinity failed");
    }
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    // SAFETY: clock_gettime only writes into the struct we pass.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The runtime thread's CPU time, read on the runtime thread.
fn runtime_cpu_time(rt: &RuntimeThread) -> Duration {
    rt.run_threadsafe(async { thread_cpu_time() })
        .wait()
        .unwrap()
}

/// The configured idle spin: what each call would cost the runtime thread if it spun.
const IDLE_SPIN: Duration = Duration::from_micros(50);

/// A call's share of the runtime thread's CPU time must stay well below a spin: spinning, each
/// call costs the runtime thread the whole of it (54 µs were measured); not spinning, about
/// 2 µs in a release build and 6-12 µs in a debug one.
const MOST_PER_CALL: Duration = Duration::from_micros(25);

#[test]
fn on_one_cpu_the_runtime_thread_does_not_spin_between_calls() {
    bounded(QUICK, || {
        pin_to_cpu_zero();
        let rt = RuntimeThread::builder()
            .idle_spin(IDLE_SPIN)
            .start()
            .unwrap();
        for _ in 0..100 {
            rt.run_threadsafe(async {}).wait().unwrap();
        }
        let before = runtime_cpu_time(&rt);
        for _ in 0..CALLS {
            rt.run_threadsafe(async {}).wait().unwrap();
        }
        let per_call = (runtime_cpu_time(&rt) - before) / CALLS;
        rt.stop().unwrap();
        assert!(
            per_call < MOST_PER_CALL,
            "the runtime thread spent {per_call:?} of CPU per call: it spins while its caller waits for the CPU"
        );
    });
}

struct Trivial;

impl Process for Trivial {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        ctx.out("y", 1.into());
        Ok(Command::finish())
    }
}

#[test]
fn on_one_cpu_the_engine_thread_does_not_spin_between_processes() {
    bounded(QUICK, || {
        pin_to_cpu_zero();
        let runner = Runner::start().unwrap();
        for _ in 0..100 {
            runner.run(Trivial).unwrap();
        }
        let before = runtime_cpu_time(runner.thread());
        for _ in 0..CALLS {
            runner.run(Trivial).unwrap();
        }
        let per_call = (runtime_cpu_time(runner.thread()) - before) / CALLS;
        assert!(
            per_call < MOST_PER_CALL,
            "the engine thread spent {per_call:?} of CPU per process: it spins while its caller waits for the CPU"
        );
    });
}
