//! Criterion benchmarks of the core layer, each against its baseline measured in the same run.
//!
//! a. round trip of a trivial future from a plain thread: `run_threadsafe(..).wait()` vs a bare
//!    crossbeam ping-pong between two threads (the floor) and vs the naive pattern
//!    (`Handle::spawn` + a channel back), each in three conditions: both CPUs free, pinned to
//!    one CPU (as `taskset -c 0`), and beside a busy thread;
//!    The round trip is also measured with the development mode on (`run_threadsafe_dev_mode`);
//! b. fire-and-forget throughput from 1 and 4 threads: `spawn_threadsafe` vs raw `Handle::spawn`,
//!    with the development mode off and on;
//! c. blocking round trip: `submit_blocking(..).wait()` vs raw `Handle::spawn_blocking`;
//! d. a start + stop cycle vs a bare thread that builds a runtime, reports ready, and is stopped.
//!
//! The idle CPU figure (e) is in `benches/idle_cpu.rs`.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runtime_thread::RuntimeThread;

mod common;
use common::{Condition, RawRuntimeThread};

fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("a_round_trip");
    group.throughput(Throughput::Elements(1));
    for condition in Condition::ALL {
        let _condition = condition.enter();
        let id = |name: &str| BenchmarkId::new(name, condition.name());

        // The floor: two threads passing a value back and forth.
        {
            let (to_echo, echo_rx) = crossbeam_channel::bounded::<u64>(1);
            let (echo_tx, from_echo) = crossbeam_channel::bounded::<u64>(1);
            let echo = thread::spawn(move || {
                while let Ok(v) = echo_rx.recv() {
                    if echo_tx.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            group.bench_function(id("crossbeam_ping_pong"), |b| {
                b.iter(|| {
                    to_echo.send(1).unwrap();
                    from_echo.recv().unwrap()
                })
            });
            drop(to_echo);
            echo.join().unwrap();
        }

        // The naive pattern: spawn onto a runtime thread's handle, wait on a channel.
        {
            let raw = RawRuntimeThread::start();
            group.bench_function(id("naive_handle_spawn_channel"), |b| {
                b.iter(|| {
                    let (tx, rx) = crossbeam_channel::bounded(1);
                    raw.handle.spawn(async move {
                        let _ = tx.send(1u64);
                    });
                    rx.recv().unwrap()
                })
            });
        }

        // The development mode off (explicitly, whatever the environment says) and on.
        for (name, dev_mode) in [("run_threadsafe", false), ("run_threadsafe_dev_mode", true)] {
            let rt = RuntimeThread::builder().dev_mode(dev_mode).start().unwrap();
            group.bench_function(id(name), |b| {
                b.iter(|| rt.run_threadsafe(async { 1u64 }).wait().unwrap())
            });
            rt.stop().unwrap();
        }
    }
    group.finish();
}

/// Spawns `total` counting tasks from `threads` threads through `spawn` and returns the time
/// until the runtime has run the last one.
fn timed_spawns(
    threads: usize,
    total: u64,
    spawn: impl Fn(Box<dyn FnOnce() + Send>) + Sync,
) -> Duration {
    let per_thread = (total as usize).div_ceil(threads);
    let total = per_thread * threads;
    let done = Arc::new(AtomicUsize::new(0));
    let (finished_tx, finished) = crossbeam_channel::bounded::<()>(1);
    let barrier = Barrier::new(threads + 1);
    thread::scope(|scope| {
        for _ in 0..threads {
            let (done, finished_tx, barrier, spawn) = (&done, &finished_tx, &barrier, &spawn);
            scope.spawn(move || {
                barrier.wait();
                for _ in 0..per_thread {
                    let (done, finished_tx) = (done.clone(), finished_tx.clone());
                    spawn(Box::new(move || {
                        if done.fetch_add(1, Relaxed) + 1 == total {
                            let _ = finished_tx.send(());
                        }
                    }));
                }
            });
        }
        barrier.wait();
        let start = Instant::now();
        finished.recv().unwrap();
        start.elapsed()
    })
}

/// `iters` batches of `batch` spawns, timed as [`timed_spawns`] does.
fn batches(
    iters: u64,
    threads: usize,
    batch: u64,
    spawn: impl Fn(Box<dyn FnOnce() + Send>) + Sync,
) -> Duration {
    (0..iters)
        .map(|_| timed_spawns(threads, batch, &spawn))
        .sum()
}

fn spawn_throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("b_spawn_throughput");
    const BATCH: u64 = 10_000;
    group.throughput(Throughput::Elements(BATCH));
    for threads in [1usize, 4] {
        let raw = RawRuntimeThread::start();
        group.bench_with_input(
            BenchmarkId::new("raw_handle_spawn", threads),
            &threads,
            |b, &t| {
                b.iter_custom(|iters| {
                    batches(iters, t, BATCH, |count| {
                        raw.handle.spawn(async move { count() });
                    })
                })
            },
        );
        drop(raw);
        for (name, dev_mode) in [
            ("spawn_threadsafe", false),
            ("spawn_threadsafe_dev_mode", true),
        ] {
            let rt = RuntimeThread::builder().dev_mode(dev_mode).start().unwrap();
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &t| {
                b.iter_custom(|iters| {
                    batches(iters, t, BATCH, |count| {
                        rt.spawn_threadsafe(async move { count() }).unwrap();
                    })
                })
            });
            rt.stop().unwrap();
        }
    }
    group.finish();
}

fn blocking_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("c_blocking_round_trip");
    group.throughput(Throughput::Elements(1));
    {
        let raw = RawRuntimeThread::start();
        group.bench_function("raw_spawn_blocking", |b| {
            b.iter(|| futures::executor::block_on(raw.handle.spawn_blocking(|| 1u64)).unwrap())
        });
    }
    {
        let rt = RuntimeThread::builder().start().unwrap();
        group.bench_function("submit_blocking", |b| {
            b.iter(|| rt.submit_blocking(|| 1u64).wait().unwrap())
        });
        rt.stop().unwrap();
    }
    group.finish();
}

fn bare_cycle() {
    drop(RawRuntimeThread::start());
}

fn runtime_thread_cycle() {
    let rt = RuntimeThread::builder().start().unwrap();
    rt.stop().unwrap();
}

/// Times `measured` while running `other` between timed iterations, so that both variants see
/// the same machine: thread creation on a shared VM drifts by tens of percent over seconds, and
/// criterion measures one variant after the other.
fn paired(iters: u64, measured: fn(), other: fn()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        other();
        let start = Instant::now();
        measured();
        total += start.elapsed();
    }
    total
}

fn start_stop(c: &mut Criterion) {
    let mut group = c.benchmark_group("d_start_stop");
    group.bench_function("bare_thread_and_runtime", |b| {
        b.iter_custom(|iters| paired(iters, bare_cycle, runtime_thread_cycle))
    });
    group.bench_function("runtime_thread", |b| {
        b.iter_custom(|iters| paired(iters, runtime_thread_cycle, bare_cycle))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = round_trip, spawn_throughput, blocking_round_trip, start_stop
}
criterion_main!(benches);
