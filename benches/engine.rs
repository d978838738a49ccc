//! Engine benchmarks for the workloads the engine runs so far (the plumpy baseline script's first
//! two): a trivial process run to completion from a plain thread, one after another, and 10,000
//! trivial processes submitted at once. The baseline in the same run is the same trivial work done
//! with `run_threadsafe`, i.e. what the engine's state machine costs on top of the core.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use runtime_thread::RuntimeThread;
use runtime_thread::engine::{Command, Context, Process, Runner, StepError};
use serde_json::json;

mod common;

struct Trivial;

impl Process for Trivial {
    async fn step(&mut self, _: &str, ctx: &mut Context) -> Result<Command, StepError> {
        ctx.out("result", json!(1));
        Ok(Command::finish())
    }
}

fn trivial_processes(c: &mut Criterion) {
    let mut group = c.benchmark_group("e_trivial_processes");
    let runner = Runner::start().unwrap();
    let thread = RuntimeThread::builder().start().unwrap();

    group.throughput(Throughput::Elements(1));
    group.bench_function("run_threadsafe_baseline_sequential", |b| {
        b.iter(|| thread.run_threadsafe(async { json!(1) }).wait().unwrap())
    });
    group.bench_function("runner_run_sequential", |b| {
        b.iter(|| runner.run(Trivial).unwrap())
    });

    const AT_ONCE: u64 = 10_000;
    group.throughput(Throughput::Elements(AT_ONCE));
    group.bench_function("runner_submit_10000_at_once", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let handles: Vec<_> = (0..AT_ONCE).map(|_| runner.submit(Trivial)).collect();
                for handle in handles {
                    handle.wait().unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
    thread.stop().unwrap();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = trivial_processes
}
criterion_main!(benches);
