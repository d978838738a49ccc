//! When a thread spins rather than sleeps.
//!
//! A hand-off between a caller and the runtime thread completes within a microsecond when the
//! two run at once on two CPUs. A short spin on each side (the runtime thread waiting for the
//! next job, a caller waiting for its result) then saves a sleep and a wake-up through the OS.
//! When the two share one CPU, the spinning thread holds the very CPU the other one needs:
//! every spin is lost, and a caller waited 57 µs per call pinned to one CPU, where a sleep
//! and a wake-up cost 5.
//!
//! So a spin starts, and goes on, only while the thread it waits for was last seen on another
//! CPU: the rule of adaptive mutexes ("spin only while the owner runs"), with "on another CPU"
//! as the part user space can see cheaply (`sched_getcpu`, a few nanoseconds). A process that
//! may use one CPU only (its affinity mask or its cgroup quota) never spins. A spinning thread
//! never yields to the OS either: a yield hands the CPU to whatever else is runnable there for
//! a whole time slice (1.4 ms per call beside a busy process on the same CPU), while a thread
//! that sleeps is woken with priority.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

/// Rounds of a spin between two looks at the clock and at the other thread's CPU: both cost
/// more than a spin hint.
const ROUNDS_PER_LOOK: u32 = 32;

/// The spin settings of one runtime thread and what its two sides last saw of each other.
#[derive(Debug)]
pub(crate) struct Spin {
    /// How long the runtime thread spins for new work after the last job.
    idle: Duration,
    /// How long a blocking waiter spins for its result.
    wait: Duration,
    /// The CPU the runtime thread ran on when it last took work. Each cell has a cache line of
    /// its own, away from the `Arc`'s counts that every handle changes: the reader of one
    /// should not lose its copy whenever the other side submits or drops a handle.
    runtime_cpu: CachePadded<CpuCell>,
    /// The CPU the last thread that submitted from outside the runtime ran on.
    submitter_cpu: CachePadded<CpuCell>,
}

impl Spin {
    /// The configured spins, or none at all in a process that may use a single CPU.
    pub(crate) fn new(idle: Duration, wait: Duration) -> Self {
        let (idle, wait) = if may_run_in_parallel() {
            (idle, wait)
        } else {
            (Duration::ZERO, Duration::ZERO)
        };
        Spin {
            idle,
            wait,
            runtime_cpu: CachePadded::new(CpuCell::new()),
            submitter_cpu: CachePadded::new(CpuCell::new()),
        }
    }

    /// The runtime thread's idle spin (zero when the process may use a single CPU).
    pub(crate) fn idle(&self) -> Duration {
        self.idle
    }

    /// Called by every thread that submits from outside the runtime.
    pub(crate) fn record_submitter(&self) {
        self.submitter_cpu.record();
    }

    /// Called by the runtime thread when it takes work; returns its CPU.
    pub(crate) fn record_runtime(&self) -> u32 {
        self.runtime_cpu.record()
    }

    /// Whether the runtime thread, on `cpu`, should stop spinning for the next job: the last
    /// submitter shares its CPU, so it cannot submit while the runtime thread holds it.
    pub(crate) fn submitter_shares(&self, cpu: u32) -> bool {
        self.submitter_cpu.holds(cpu)
    }

    /// Spins until `done` holds, as a blocking waiter on this runtime's work does before it
    /// sleeps: for at most the wait spin, never past `deadline`, and only while the runtime
    /// thread is on another CPU than the caller.
    pub(crate) fn until(&self, deadline: Option<Instant>, done: impl Fn() -> bool) {
        if self.wait.is_zero() || self.runtime_shares_mine() {
            return;
        }
        let start = Instant::now();
        let limit = deadline.map_or(start + self.wait, |d| d.min(start + self.wait));
        let mut rounds: u32 = 0;
        while !done() {
            rounds = rounds.wrapping_add(1);
            if rounds.is_multiple_of(ROUNDS_PER_LOOK)
                && (Instant::now() >= limit || self.runtime_shares_mine())
            {
                return;
            }
            std::hint::spin_loop();
        }
    }

    fn runtime_shares_mine(&self) -> bool {
        self.runtime_cpu.holds(current_cpu())
    }
}

/// Whether the process may run two threads at once: false when its CPU affinity or its cgroup
/// quota leaves it one CPU (`taskset -c 0`, a container limited to one CPU). Read once per
/// process (it reads cgroup files, tens of microseconds); a later change of affinity is still
/// seen, through the CPUs the two sides run on.
fn may_run_in_parallel() -> bool {
    static PARALLEL: OnceLock<bool> = OnceLock::new();
    // Unknown (an unsupported platform): allow spinning; the CPU check still applies.
    *PARALLEL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

/// A CPU unknown to the caller: never equal to a real one.
const UNKNOWN_CPU: u32 = u32::MAX;

/// The CPU the calling thread runs on now, or [`UNKNOWN_CPU`] where the platform cannot tell.
#[cfg(target_os = "linux")]
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no arguments and only reads the calling thread's state.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).unwrap_or(UNKNOWN_CPU)
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn current_cpu() -> u32 {
    UNKNOWN_CPU
}

/// The CPU one thread was last seen on, for another thread to compare with its own.
#[derive(Debug)]
struct CpuCell(AtomicU32);

impl CpuCell {
    const fn new() -> Self {
        CpuCell(AtomicU32::new(UNKNOWN_CPU))
    }

    /// Records the calling thread's CPU; written only when it changed, so that threads
    /// recording on every call do not keep taking the cache line from the reader.
    fn record(&self) -> u32 {
        let cpu = current_cpu();
        if self.0.load(Relaxed) != cpu {
            self.0.store(cpu, Relaxed);
        }
        cpu
    }

    /// True if the recorded thread was last seen on `cpu` (never for an unknown CPU).
    fn holds(&self, cpu: u32) -> bool {
        cpu != UNKNOWN_CPU && self.0.load(Relaxed) == cpu
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Runs `body` with the calling thread pinned to `cpu`, so that it cannot move meanwhile.
    fn pinned<R>(cpu: usize, body: impl FnOnce() -> R) -> R {
        // SAFETY: plain data in and out of the affinity calls, on the calling thread only.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            assert_eq!(libc::sched_getaffinity(0, size, &mut before), 0);
            let mut only: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut only);
            assert_eq!(libc::sched_setaffinity(0, size, &only), 0);
            let result = body();
            assert_eq!(libc::sched_setaffinity(0, size, &before), 0);
            result
        }
    }

    fn configured() -> Spin {
        Spin::new(Duration::from_micros(50), Duration::from_millis(5))
    }

    /// How often a waiter looked at its result before it gave up spinning.
    fn looks_while_waiting(spin: &Spin) -> u32 {
        let looks = Cell::new(0);
        spin.until(None, || {
            looks.set(looks.get() + 1);
            false
        });
        looks.get()
    }

    #[test]
    fn a_waiter_does_not_spin_on_the_runtime_threads_cpu() {
        let spin = configured();
        let looks = pinned(0, || {
            spin.record_runtime();
            looks_while_waiting(&spin)
        });
        assert_eq!(
            looks, 0,
            "the waiter spun on the CPU the runtime thread needs"
        );
    }

    #[test]
    fn a_waiter_spins_while_the_runtime_thread_is_on_another_cpu() {
        let spin = configured();
        if spin.wait.is_zero() {
            return; // this process may use one CPU only: nothing spins, as the next test shows
        }
        std::thread::scope(|scope| {
            scope.spawn(|| pinned(1, || spin.record_runtime()));
        });
        let looks = pinned(0, || looks_while_waiting(&spin));
        assert!(looks > 1, "the waiter gave up at once");
    }

    #[test]
    fn the_runtime_thread_stops_spinning_for_a_submitter_on_its_cpu() {
        let spin = configured();
        pinned(0, || spin.record_submitter());
        assert!(spin.submitter_shares(0));
        assert!(!spin.submitter_shares(1));
        assert!(!spin.submitter_shares(UNKNOWN_CPU));
    }
}
