//! The PostgreSQL store against the SQLite store and plumpy, in the same run: the engine's
//! `parent-10` workload (a work chain launching 10 trivial children, waiting for all, then
//! summing them) with every process checkpointed,
//!
//! - one parent after another (each waits for the last: a latency), and 50 parents at once
//!   (a throughput), each sample 0.4 s of whole parents;
//! - in SQLite (a file in the temp directory; without leases, and with them, as a daemon's
//!   workers share it) and in PostgreSQL (the project's cluster on 127.0.0.1,
//!   `scripts/postgres start`), each committing every save or in groups;
//! - against plumpy 0.26's `parent-10-pkl-all` (pickle files, its checkpointed figure) and
//!   `parent-10-mem-all` (in memory), run by `../shared/baselines/plumpy_bench.py` from here in
//!   each condition when `RUNTIME_THREAD_PYTHON` names a python with plumpy
//!   (`scripts/python-venv` makes one);
//!
//! in three conditions (both CPUs free, everything of ours and plumpy pinned to CPU 0, and
//! beside a busy thread). The database server is a process of its own, on whichever CPU the
//! OS gives it, as a database on another machine would be. Rounds interleave the stores;
//! figures are medians over rounds.
//!
//! Run: `scripts/postgres start`, then
//! `RUNTIME_THREAD_POSTGRES_URL=$(scripts/postgres url) RUNTIME_THREAD_PYTHON=$(scripts/python-venv)
//! cargo bench --all-features --bench postgres`.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use runtime_thread::RuntimeThread;
use runtime_thread::engine::{
    Chain, ChainContext, Command, Flow, Outline, Persistent, Persister, PostgresPersister, Process,
    Runner, SqlitePersister, StepContext, StepError, WorkChain, step,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

mod common;
use common::Condition;

const ROUNDS: usize = 7;
/// How long one sample runs parents (whole parents, or whole bursts).
const SAMPLE: std::time::Duration = std::time::Duration::from_millis(400);
/// Parents started at once, in the burst samples.
const BURST: usize = 50;

#[derive(Serialize, Deserialize)]
struct OneOutput {
    x: i64,
}

impl Process for OneOutput {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        ctx.out("y", self.x.into());
        Ok(Command::finish())
    }
}

impl Persistent for OneOutput {
    const TYPE_NAME: &'static str = "bench.OneOutput";
}

/// plumpy's checkpointed `ParentOfTen`: every child is persisted too.
#[derive(Serialize, Deserialize)]
struct ParentOfTen;

static PARENT_OF_TEN: LazyLock<Outline<ParentOfTen>> =
    LazyLock::new(|| Outline::new([step("launch_children"), step("collect")]));

impl WorkChain for ParentOfTen {
    const TYPE_NAME: &'static str = "bench.ParentOfTen";
    fn outline() -> &'static Outline<Self> {
        &PARENT_OF_TEN
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        if step == "launch_children" {
            for x in 0..10 {
                let child = wc
                    .launch_persisted(OneOutput { x })
                    .map_err(|e| StepError::msg(e.to_string()))?;
                wc.to_context(format!("child_{x}"), &child);
            }
        } else {
            let total: i64 = (0..10)
                .filter_map(|x| wc.ctx()[&format!("child_{x}")]["y"].as_i64())
                .sum();
            wc.out("total", json!(total));
        }
        Ok(Flow::Next)
    }
}

fn runner_on(store: Arc<dyn Persister>) -> Runner {
    let thread = RuntimeThread::builder().name("bench").start().unwrap();
    Runner::builder()
        .thread(Arc::new(thread))
        .persister(store)
        .start()
        .unwrap()
}

fn check(outputs: &runtime_thread::engine::Outputs) {
    assert_eq!(outputs["total"], 45);
}

/// Parents per second, over a [`SAMPLE`] of `batch` parents at a time.
fn rate(runner: &Runner, batch: usize) -> f64 {
    let start = Instant::now();
    let mut parents = 0;
    while start.elapsed() < SAMPLE {
        let handles: Vec<_> = (0..batch)
            .map(|_| {
                runner
                    .launch(Chain::new(ParentOfTen))
                    .persisted()
                    .start()
                    .unwrap()
            })
            .collect();
        for handle in handles {
            check(&handle.wait().unwrap().into_outputs().unwrap());
        }
        parents += batch;
    }
    parents as f64 / start.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The stores, by name, in the order of the table.
fn stores(url: &str, dir: &std::path::Path, condition: Condition) -> Vec<(&'static str, Runner)> {
    let schema = |mode: &str| {
        format!(
            "bench_{}_{mode}_{}",
            condition.name(),
            uuid::Uuid::new_v4().simple()
        )
    };
    let postgres = |group_commit: bool, mode: &str| -> Arc<dyn Persister> {
        Arc::new(
            PostgresPersister::builder(url)
                .schema(schema(mode))
                .group_commit(group_commit)
                .connect()
                .unwrap(),
        )
    };
    let file = |name: &str| dir.join(format!("{}-{name}.sqlite", condition.name()));
    let leased = |group_commit: bool, name: &str| -> Arc<dyn Persister> {
        Arc::new(
            SqlitePersister::builder(file(name))
                .group_commit(group_commit)
                .leases(true)
                .open()
                .unwrap(),
        )
    };
    vec![
        (
            "sqlite_each",
            runner_on(Arc::new(SqlitePersister::open(file("each")).unwrap())),
        ),
        (
            "sqlite_group",
            runner_on(Arc::new(
                SqlitePersister::open_batched(file("group")).unwrap(),
            )),
        ),
        (
            "sqlite_each_leases",
            runner_on(leased(false, "each-leases")),
        ),
        (
            "sqlite_group_leases",
            runner_on(leased(true, "group-leases")),
        ),
        ("postgres_each", runner_on(postgres(false, "each"))),
        ("postgres_group", runner_on(postgres(true, "group"))),
    ]
}

/// plumpy's checkpointed figures in this condition: (`pkl-all`, `mem-all`) parents per second.
fn plumpy() -> Option<(f64, f64)> {
    let python = std::env::var("RUNTIME_THREAD_PYTHON").ok()?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/baselines/plumpy_bench.py"
    );
    let json = std::env::temp_dir().join(format!("plumpy-pg-bench-{}.json", std::process::id()));
    let status = std::process::Command::new(python)
        .args([script, "--only", "parent-10-pkl-all,parent-10-mem-all"])
        .args(["--rounds", "1", "--repeats", "5", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).ok()?).ok()?;
    let _ = std::fs::remove_file(&json);
    let rate = |name: &str| report["throughput"][name]["median"].as_f64();
    Some((rate("parent-10-pkl-all")?, rate("parent-10-mem-all")?))
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that run short.
    if !std::env::args().any(|a| a == "--bench") {
        println!("postgres: skipped outside `cargo bench`");
        return;
    }
    let Ok(url) = std::env::var("RUNTIME_THREAD_POSTGRES_URL") else {
        println!("postgres: set RUNTIME_THREAD_POSTGRES_URL=$(scripts/postgres start) to run it");
        return;
    };
    let dir = std::env::temp_dir().join(format!("runtime-thread-pg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // RUNTIME_THREAD_BENCH_CONDITION=two_cpus (say) measures one condition only.
    let only = std::env::var("RUNTIME_THREAD_BENCH_CONDITION").ok();
    for condition in Condition::ALL {
        if only.as_deref().is_some_and(|name| name != condition.name()) {
            continue;
        }
        let _entered = condition.enter();
        let stores = stores(&url, &dir, condition);
        // Warm-up: connections, statements, the tables' first pages.
        for (_, runner) in &stores {
            rate(runner, BURST);
        }
        let mut samples: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
        for _ in 0..ROUNDS {
            for (name, runner) in &stores {
                samples
                    .entry((name, "sequential"))
                    .or_default()
                    .push(rate(runner, 1));
                samples
                    .entry((name, "burst"))
                    .or_default()
                    .push(rate(runner, BURST));
            }
        }
        let plumpy = plumpy();
        println!(
            "== {} (parents/s, median of {ROUNDS} rounds)",
            condition.name()
        );
        let rate = |name: &str, how: &str| median(samples[&(name, how)].clone());
        for how in ["sequential", "burst"] {
            for (name, _) in &stores {
                println!("  {how:<10} {name:<15} {:>9.0}/s", rate(name, how));
            }
        }
        let group = rate("postgres_group", "sequential");
        println!(
            "  postgres group / sqlite group, one after another: {:.2}x; at once: {:.2}x",
            group / rate("sqlite_group", "sequential"),
            rate("postgres_group", "burst") / rate("sqlite_group", "burst")
        );
        println!(
            "  sqlite with leases / without, one after another: each {:.2}x, group {:.2}x; at \
             once: each {:.2}x, group {:.2}x",
            rate("sqlite_each_leases", "sequential") / rate("sqlite_each", "sequential"),
            rate("sqlite_group_leases", "sequential") / rate("sqlite_group", "sequential"),
            rate("sqlite_each_leases", "burst") / rate("sqlite_each", "burst"),
            rate("sqlite_group_leases", "burst") / rate("sqlite_group", "burst"),
        );
        match plumpy {
            Some((pickle, memory)) => println!(
                "  plumpy parent-10-pkl-all {pickle:.0}/s, mem-all {memory:.0}/s; postgres group \
                 one after another = {:.0}x pkl-all, postgres each = {:.2}x",
                group / pickle,
                rate("postgres_each", "sequential") / pickle
            ),
            None => println!(
                "  plumpy: not measured (set RUNTIME_THREAD_PYTHON to a python with plumpy)"
            ),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
