//! What the benchmarks compare against: a runtime thread set up by hand, the way a user would
//! without this crate.
#![allow(dead_code)]

use std::thread;
use std::time::Duration;

use criterion::Criterion;

/// Short warm-up and measurement windows: the whole suite stays within a few minutes.
pub fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// A current-thread tokio runtime driven by its own thread, as a user would set it up by hand.
pub struct RawRuntimeThread {
    pub handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RawRuntimeThread {
    pub fn start() -> Self {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            ready_tx.send(rt.handle().clone()).unwrap();
            let _ = rt.block_on(stop_rx);
        });
        RawRuntimeThread {
            handle: ready_rx.recv().unwrap(),
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for RawRuntimeThread {
    fn drop(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
    }
}

/// The conditions a latency is measured in, each with its own baselines: users run on idle
/// machines, in containers limited to one CPU, and beside other busy programs.
#[derive(Debug, Clone, Copy)]
pub enum Condition {
    /// Both CPUs free.
    TwoCpus,
    /// The measuring thread and every thread it starts pinned to CPU 0 (as `taskset -c 0`).
    OneCpu,
    /// A thread spinning beside the measurement, wherever the OS puts it.
    BesideBusyThread,
}

impl Condition {
    pub const ALL: [Condition; 3] = [
        Condition::TwoCpus,
        Condition::OneCpu,
        Condition::BesideBusyThread,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::TwoCpus => "two_cpus",
            Condition::OneCpu => "one_cpu",
            Condition::BesideBusyThread => "beside_busy_thread",
        }
    }

    /// Enters the condition on the calling thread; threads it starts before the guard drops
    /// inherit it (the affinity mask is inherited at thread creation).
    pub fn enter(self) -> ConditionGuard {
        match self {
            Condition::TwoCpus => ConditionGuard::None,
            Condition::OneCpu => ConditionGuard::Pinned(pin_to_cpu_zero()),
            Condition::BesideBusyThread => {
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let spinning = stop.clone();
                let busy = thread::spawn(move || {
                    while !spinning.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                });
                ConditionGuard::Busy(stop, Some(busy))
            }
        }
    }
}

pub enum ConditionGuard {
    None,
    Pinned(libc::cpu_set_t),
    Busy(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        Option<thread::JoinHandle<()>>,
    ),
}

impl Drop for ConditionGuard {
    fn drop(&mut self) {
        match self {
            ConditionGuard::None => {}
            ConditionGuard::Pinned(before) => set_affinity(before),
            ConditionGuard::Busy(stop, busy) => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Some(busy) = busy.take() {
                    busy.join().unwrap();
                }
            }
        }
    }
}

/// Pins the calling thread to CPU 0; returns the mask it had.
fn pin_to_cpu_zero() -> libc::cpu_set_t {
    // SAFETY: plain data in and out of the affinity calls, for the calling thread only.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut before), 0);
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut only);
        set_affinity(&only);
        before
    }
}

fn set_affinity(mask: &libc::cpu_set_t) {
    // SAFETY: as above.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), mask) };
    assert_eq!(rc, 0, "sched_setaffinity failed");
}
