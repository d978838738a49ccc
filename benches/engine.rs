//! Engine throughput, with the workloads of the plumpy baseline script
//! (`../shared/baselines/plumpy_bench.py`, run on the same machine for the README's comparison):
//!
//! - `execute`: a trivial process (one validated input with a default, one validated int
//!   output) launched from inputs and run to the end from a plain thread, one after another,
//!   with both CPUs free, pinned to one CPU, and beside a busy thread;
//! - `concurrent-10000`: 10,000 of them submitted at once;
//! - `g_listening`: a trivial process run to the end one after another, silent and listening
//!   (the control layer's `Listening` over the in-process communicator), in the same run;
//! - `nested-execute`: a process whose step runs a child to completion by awaiting it;
//! - `workchain-3`: a three-step work chain writing its ctx;
//! - `parent-10`: a work chain launching 10 trivial children, waiting for all through ctx, then
//!   summing them; and the same with checkpoints, of every process (`all`) or of the parent
//!   only (`par`), in memory and in SQLite (a file in the temp directory), committing each save
//!   or in groups (`batched`).
//!
//! The baseline in the same run is the floor under all of them: the same trivial work done
//! with `run_threadsafe`, i.e. the core alone, without the engine's state machine.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use runtime_thread::RuntimeThread;
use runtime_thread::control::Listening;
use runtime_thread::engine::{
    Chain, ChainContext, Command, Flow, InMemoryPersister, Namespace, Outline, Persistent,
    Persister, Port, Process, ProcessSpec, Runner, StepContext, StepError, ValueType, WorkChain,
    step,
};
use runtime_thread::messaging::LocalCommunicator;
use serde::{Deserialize, Serialize};
use serde_json::json;

mod common;
use common::Condition;

/// plumpy's `OneOutput`: input `x` (int, default 1), output `y` (int) = x.
#[derive(Serialize, Deserialize)]
struct OneOutput {
    x: i64,
}

static ONE_OUTPUT: LazyLock<ProcessSpec> = LazyLock::new(|| {
    ProcessSpec::new(
        Namespace::new().port(
            "x",
            Port::new()
                .types(&[ValueType::Integer])
                .default_value(json!(1)),
        ),
        Namespace::new().port("y", Port::new().types(&[ValueType::Integer])),
    )
});

impl Process for OneOutput {
    fn spec() -> &'static ProcessSpec {
        &ONE_OUTPUT
    }
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        ctx.out("y", json!(self.x));
        Ok(Command::finish())
    }
}

impl Persistent for OneOutput {
    const TYPE_NAME: &'static str = "bench.OneOutput";
}

/// plumpy's `NestedParent`: runs a child to completion inside its own step.
struct NestedParent;

impl Process for NestedParent {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        let outputs = ctx.launch(OneOutput { x: 2 }).await?.into_outputs()?;
        ctx.out("y", outputs["y"].clone());
        Ok(Command::finish())
    }
}

/// plumpy's `ThreeSteps`.
#[derive(Serialize, Deserialize)]
struct ThreeSteps {
    x: i64,
}

static THREE_STEPS: LazyLock<Outline<ThreeSteps>> =
    LazyLock::new(|| Outline::new([step("first"), step("second"), step("third")]));

impl WorkChain for ThreeSteps {
    const TYPE_NAME: &'static str = "bench.ThreeSteps";
    fn outline() -> &'static Outline<Self> {
        &THREE_STEPS
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match step {
            "first" => {
                wc.ctx_mut().insert("value".into(), json!(self.x));
            }
            "second" => {
                let value = wc.ctx()["value"].as_i64().unwrap_or(0) + 1;
                wc.ctx_mut().insert("value".into(), json!(value));
            }
            _ => {
                let value = wc.ctx()["value"].clone();
                wc.out("y", value);
            }
        }
        Ok(Flow::Next)
    }
}

/// plumpy's `ParentOfTen` (and its checkpointed variants, by `persist_children`).
#[derive(Serialize, Deserialize)]
struct ParentOfTen {
    persist_children: bool,
}

static PARENT_OF_TEN: LazyLock<Outline<ParentOfTen>> =
    LazyLock::new(|| Outline::new([step("launch_children"), step("collect")]));

const KEYS: [&str; 10] = [
    "child_0", "child_1", "child_2", "child_3", "child_4", "child_5", "child_6", "child_7",
    "child_8", "child_9",
];

impl WorkChain for ParentOfTen {
    const TYPE_NAME: &'static str = "bench.ParentOfTen";
    fn outline() -> &'static Outline<Self> {
        &PARENT_OF_TEN
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        if step == "launch_children" {
            for (x, key) in KEYS.iter().enumerate() {
                let child = OneOutput { x: x as i64 };
                let child = if self.persist_children {
                    wc.launch_persisted(child)
                        .map_err(|e| StepError::msg(e.to_string()))?
                } else {
                    wc.launch(child)
                };
                wc.to_context(*key, &child);
            }
        } else {
            let total: i64 = KEYS
                .iter()
                .filter_map(|key| wc.ctx()[*key]["y"].as_i64())
                .sum();
            wc.out("total", json!(total));
        }
        Ok(Flow::Next)
    }
}

fn parent_of_ten(runner: &Runner, persisted: bool, persist_children: bool) {
    let chain = Chain::new(ParentOfTen { persist_children });
    let handle = if persisted {
        runner.launch(chain).persisted().start().unwrap()
    } else {
        runner.submit(chain)
    };
    let outputs = handle.wait().unwrap().into_outputs().unwrap();
    assert_eq!(outputs["total"], 45);
}

fn persisted_runner(store: Arc<dyn Persister>) -> Runner {
    let thread = RuntimeThread::builder().name("bench").start().unwrap();
    Runner::builder()
        .thread(Arc::new(thread))
        .persister(store)
        .start()
        .unwrap()
}

/// `execute` one after another, and its baseline, in each of the three conditions.
fn sequential_execute(c: &mut Criterion) {
    let mut group = c.benchmark_group("e_sequential_execute");
    group.throughput(Throughput::Elements(1));
    for condition in Condition::ALL {
        let _condition = condition.enter();
        let runner = Runner::start().unwrap();
        let thread = RuntimeThread::builder().start().unwrap();
        group.bench_function(
            BenchmarkId::new("run_threadsafe_baseline", condition.name()),
            |b| b.iter(|| thread.run_threadsafe(async { json!(1) }).wait().unwrap()),
        );
        group.bench_function(BenchmarkId::new("execute", condition.name()), |b| {
            b.iter(|| {
                runner
                    .launch_from_inputs::<OneOutput>(json!({}))
                    .start()
                    .unwrap()
                    .wait()
                    .unwrap()
            })
        });
        thread.stop().unwrap();
    }
    group.finish();
}

/// What listening costs (the control layer, over the in-process communicator): the same
/// trivial process run to the end one after another, silent and listening, in the same run.
fn listening_processes(c: &mut Criterion) {
    let mut group = c.benchmark_group("g_listening");
    group.throughput(Throughput::Elements(1));
    let thread = Arc::new(RuntimeThread::builder().name("bench").start().unwrap());
    let silent = Runner::builder().thread(thread.clone()).start().unwrap();
    group.bench_function("silent", |b| {
        b.iter(|| silent.run(OneOutput { x: 1 }).unwrap())
    });
    let listening = Listening::new(LocalCommunicator::new(), &thread).unwrap();
    let heard = Runner::builder()
        .thread(thread.clone())
        .watcher(listening)
        .start()
        .unwrap();
    group.bench_function("listening", |b| {
        b.iter(|| heard.run(OneOutput { x: 1 }).unwrap())
    });
    group.finish();
    drop((silent, heard));
    thread.stop().unwrap();
}

fn trivial_processes(c: &mut Criterion) {
    let mut group = c.benchmark_group("e_trivial_processes");
    let runner = Runner::start().unwrap();

    group.throughput(Throughput::Elements(1));
    group.bench_function("run_without_inputs_sequential", |b| {
        b.iter(|| runner.run(OneOutput { x: 1 }).unwrap())
    });
    group.bench_function("nested_execute_sequential", |b| {
        b.iter(|| runner.run(NestedParent).unwrap())
    });
    group.bench_function("workchain_3_sequential", |b| {
        b.iter(|| runner.run(Chain::new(ThreeSteps { x: 1 })).unwrap())
    });

    const AT_ONCE: u64 = 10_000;
    group.throughput(Throughput::Elements(AT_ONCE));
    group.bench_function("concurrent_10000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let handles: Vec<_> = (0..AT_ONCE)
                    .map(|_| {
                        runner
                            .launch_from_inputs::<OneOutput>(json!({}))
                            .start()
                            .unwrap()
                    })
                    .collect();
                for handle in handles {
                    handle.wait().unwrap();
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

fn parents_of_ten(c: &mut Criterion) {
    let mut group = c.benchmark_group("e_parent_of_10");
    group.throughput(Throughput::Elements(1));
    let runner = Runner::start().unwrap();
    group.bench_function("no_checkpoints", |b| {
        b.iter(|| parent_of_ten(&runner, false, false))
    });

    let memory = persisted_runner(Arc::new(InMemoryPersister::new()));
    group.bench_function("memory_all", |b| {
        b.iter(|| parent_of_ten(&memory, true, true))
    });
    group.bench_function("memory_parent", |b| {
        b.iter(|| parent_of_ten(&memory, true, false))
    });

    let path = std::env::temp_dir().join(format!(
        "runtime-thread-bench-{}.sqlite",
        std::process::id()
    ));
    let sqlite = persisted_runner(Arc::new(
        runtime_thread::engine::SqlitePersister::open(&path).unwrap(),
    ));
    group.bench_function("sqlite_all", |b| {
        b.iter(|| parent_of_ten(&sqlite, true, true))
    });
    group.bench_function("sqlite_parent", |b| {
        b.iter(|| parent_of_ten(&sqlite, true, false))
    });
    drop(sqlite);

    let batched_path = path.with_extension("batched.sqlite");
    let batched = persisted_runner(Arc::new(
        runtime_thread::engine::SqlitePersister::open_batched(&batched_path).unwrap(),
    ));
    group.bench_function("sqlite_batched_all", |b| {
        b.iter(|| parent_of_ten(&batched, true, true))
    });
    group.bench_function("sqlite_batched_parent", |b| {
        b.iter(|| parent_of_ten(&batched, true, false))
    });
    group.finish();
    drop(batched);
    for db in [&path, &batched_path] {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = sequential_execute, listening_processes, trivial_processes, parents_of_ten
}
criterion_main!(benches);
