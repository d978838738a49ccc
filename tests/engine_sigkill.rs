//! What a SIGKILL loses: nothing that was handed over, and no outcome. Work chains with
//! persisted children run in a worker process (this test binary again) that is killed with
//! SIGKILL at random moments, seeded, and started again on the same SQLite store, in both
//! commit modes. Between two workers, this process takes the outcomes from the store, as
//! whoever waits for the chains would (a controller answering a `continue`, a program that
//! restarts), and hands each over by deleting its checkpoint. Every chain's outcome must
//! arrive exactly once, with the right value, and nothing may be left in the store.
//!
//! The worker also reports when each step of a chain starts. A step that runs again after a
//! kill tells how far back the store was at the kill: the window the commit mode can lose,
//! printed per mode.
#![cfg(all(unix, feature = "sqlite"))]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Os, Stdio};
use std::sync::{Arc, LazyLock, mpsc};
use std::time::Duration;

use common::bounded;
use runtime_thread::RuntimeThread;
use runtime_thread::engine::{
    Chain, ChainContext, Command, Flow, Outline, Persistent, Persister, Process, ProcessOutcome,
    ProcessState, Runner, SqlitePersister, StepContext, StepError, WorkChain, step,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Chains submitted together, as one batch, per round.
const CHAINS: u64 = 12;
/// Workers killed per commit mode.
const KILLS: usize = 150;
/// The latest moment of a kill, after the worker says it is ready.
const KILL_WITHIN_US: u64 = 6_000;
/// Set in a worker: the store's path, and `batched` for group commit.
const WORKER: &str = "RUNTIME_THREAD_KILL_WORKER";
/// Set in a worker: the round whose chains to submit when the store is empty.
const ROUND: &str = "RUNTIME_THREAD_KILL_ROUND";

/// A leaf: outputs `y = 2x`.
#[derive(Serialize, Deserialize)]
struct Leaf {
    x: u64,
}

impl Process for Leaf {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        ctx.out("y", json!(self.x * 2));
        Ok(Command::finish())
    }
}

impl Persistent for Leaf {
    const TYPE_NAME: &'static str = "tests.kill.Leaf";
}

/// Launches three persisted leaves, sums their outputs, and adds its own index.
#[derive(Serialize, Deserialize)]
struct Tally {
    index: u64,
    sum: u64,
}

static TALLY: LazyLock<Outline<Tally>> = LazyLock::new(|| {
    Outline::new([
        step("launch"),
        step("gather"),
        step("double"),
        step("finish"),
    ])
});

/// What chain `index` must come to.
fn expected(index: u64) -> u64 {
    let leaves: u64 = (0..3).map(|k| 2 * (index * 10 + k)).sum();
    2 * leaves + index
}

/// The time now on the clock both processes share.
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime only writes into the struct we pass.
    let mut now: libc::timespec = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0);
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// A worker's report line, written whole (one `write` per line on a pipe is atomic).
fn report(line: std::fmt::Arguments<'_>) {
    let line = format!("{line}\n");
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

impl WorkChain for Tally {
    const TYPE_NAME: &'static str = "tests.kill.Tally";

    fn outline() -> &'static Outline<Self> {
        &TALLY
    }

    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        report(format_args!("ran {} {step} {}", self.index, monotonic_ns()));
        match step {
            "launch" => {
                for k in 0..3 {
                    let leaf = wc
                        .launch_persisted(Leaf {
                            x: self.index * 10 + k,
                        })
                        .map_err(|e| StepError::msg(e.to_string()))?;
                    wc.to_context(format!("leaf{k}"), &leaf);
                }
            }
            "gather" => {
                self.sum = wc.ctx().values().filter_map(|o| o["y"].as_u64()).sum();
            }
            "double" => self.sum *= 2,
            _ => {
                wc.out("index", json!(self.index));
                wc.out("value", json!(self.sum + self.index));
            }
        }
        Ok(Flow::Next)
    }
}

fn store(path: &Path, batched: bool) -> Arc<dyn Persister> {
    Arc::new(if batched {
        SqlitePersister::open_batched(path).unwrap()
    } else {
        SqlitePersister::open(path).unwrap()
    })
}

fn runner(store: Arc<dyn Persister>) -> Runner {
    let thread = RuntimeThread::builder().name("kill").start().unwrap();
    let runner = Runner::builder()
        .thread(Arc::new(thread))
        .persister(store)
        .start()
        .unwrap();
    runner.register::<Chain<Tally>>();
    runner.register::<Leaf>();
    runner
}

/// The worker: continues whatever the store holds, submits the round's chains as one batch
/// if it holds nothing, says it is ready, and runs until it is killed.
#[test]
#[ignore = "the worker process that the SIGKILL test starts"]
fn child_process_kill_worker() {
    let setting = std::env::var(WORKER).expect("started by the SIGKILL test");
    let (path, mode) = setting.rsplit_once(',').expect("path,mode");
    let round: u64 = std::env::var(ROUND).unwrap().parse().unwrap();
    let store = store(Path::new(path), mode == "batched");
    let runner = runner(store.clone());
    let loaded = runner.load_all().unwrap();
    if store.list().unwrap().is_empty() {
        let chains = (0..CHAINS).map(|i| {
            Chain::new(Tally {
                index: round * CHAINS + i,
                sum: 0,
            })
        });
        drop(runner.submit_persisted_all(chains).unwrap());
    }
    // The handles are dropped unread: the outcomes stay in the store for the test to take.
    drop(loaded);
    report(format_args!("ready"));
    loop {
        std::thread::park();
    }
}

/// A worker killed at `delay` after it is ready; what it reported, and when it was killed.
struct Killed {
    lines: Vec<String>,
    at_ns: u64,
}

fn run_worker(path: &Path, batched: bool, round: u64, delay: Duration) -> Killed {
    let mode = if batched { "batched" } else { "each" };
    let mut worker: Child = Os::new(std::env::current_exe().unwrap())
        .args([
            "child_process_kill_worker",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(WORKER, format!("{},{mode}", path.display()))
        .env(ROUND, round.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (ready_tx, ready) = mpsc::channel();
    let output = worker.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            // libtest prints `test <name> ... ` before the first line of a test run alone (as
            // on one CPU).
            let line = match line.rsplit_once(" ... ") {
                Some((_, rest)) => rest.to_owned(),
                None => line,
            };
            if line == "ready" {
                let _ = ready_tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    // Killed before it is ready too, now and then: start-up and submission are moments as well.
    let _ = ready.recv_timeout(Duration::from_secs(10));
    std::thread::sleep(delay);
    let at_ns = monotonic_ns();
    worker.kill().unwrap();
    worker.wait().unwrap();
    Killed {
        lines: reader.join().unwrap(),
        at_ns,
    }
}

/// Takes every ended chain's outcome from the store and hands it over (deletes its
/// checkpoint), as a waiter that is never killed: `(index, value)`.
fn take_outcomes(path: &Path, batched: bool) -> Vec<(u64, u64)> {
    let store = store(path, batched);
    let mut taken = Vec::new();
    for pid in store.list().unwrap() {
        let checkpoint = store.load(pid).unwrap();
        let Some(outcome) = checkpoint.outcome else {
            continue;
        };
        if checkpoint.parent.is_some() {
            continue;
        }
        assert_eq!(checkpoint.state, ProcessState::Finished);
        let ProcessOutcome::Finished { outputs, .. } = outcome else {
            panic!("chain {pid} did not finish: {outcome:?}");
        };
        taken.push(index_and_value(&outputs));
        store.delete(pid).unwrap();
    }
    store.flush().unwrap();
    taken
}

fn index_and_value(outputs: &runtime_thread::engine::Outputs) -> (u64, u64) {
    let number = |name: &str| outputs[name].as_u64().expect("a number");
    (number("index"), number("value"))
}

/// The steps each chain started, with when: index -> [(step, time)].
fn steps_run(lines: &[String]) -> HashMap<u64, Vec<(String, u64)>> {
    let mut steps: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
    for line in lines {
        let mut words = line.split(' ');
        if words.next() != Some("ran") {
            continue;
        }
        let (Some(index), Some(step), Some(at)) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        let entry = steps.entry(index.parse().unwrap()).or_default();
        entry.push((step.to_owned(), at.parse().unwrap()));
    }
    steps
}

/// What the kill of `killed` lost, seen from the worker after it: for each chain that ran a
/// step again, how long before the kill that step had first started, and how many steps ran
/// again.
fn lost(killed: &Killed, after: &[String]) -> Vec<(Duration, usize)> {
    let before = steps_run(&killed.lines);
    let mut lost = Vec::new();
    for (index, again) in steps_run(after) {
        let Some(earlier) = before.get(&index) else {
            continue;
        };
        let Some(first) = again.first() else { continue };
        if let Some(position) = earlier.iter().position(|(step, _)| *step == first.0) {
            let started = earlier[position].1;
            let window = Duration::from_nanos(killed.at_ns.saturating_sub(started));
            lost.push((window, earlier.len() - position));
        }
    }
    lost
}

/// A seeded xorshift: the kills of a failing run can be replayed.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn temp_store(mode: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runtime-thread-kill-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{mode}.sqlite"))
}

/// Kills workers on one store, then finishes the last round here, and checks every outcome.
fn every_outcome_exactly_once(batched: bool, seed: u64) {
    let path = temp_store(if batched { "batched" } else { "each" });
    let mut random = Seeded(seed);
    let mut delivered: BTreeMap<u64, u64> = BTreeMap::new();
    let mut round = 0;
    let mut windows: Vec<(Duration, usize)> = Vec::new();
    let mut previous: Option<Killed> = None;
    for _ in 0..KILLS {
        let delay = Duration::from_micros(random.next() % KILL_WITHIN_US);
        let killed = run_worker(&path, batched, round, delay);
        if let Some(earlier) = previous.take() {
            windows.extend(lost(&earlier, &killed.lines));
        }
        for (index, value) in take_outcomes(&path, batched) {
            assert_eq!(value, expected(index), "chain {index} computed wrongly");
            let again = delivered.insert(index, value);
            assert!(
                again.is_none(),
                "chain {index}'s outcome was delivered twice"
            );
        }
        // The round is done when all its chains are delivered: the next worker starts another.
        if (round * CHAINS..(round + 1) * CHAINS).all(|i| delivered.contains_key(&i)) {
            round += 1;
        }
        previous = Some(killed);
    }
    // The last round, finished here without a kill: the waiter takes each outcome once.
    let runner = runner(store(&path, batched));
    for handle in runner.load_all().unwrap() {
        let outputs = handle.wait().unwrap().into_outputs().unwrap();
        let (index, value) = index_and_value(&outputs);
        assert_eq!(value, expected(index), "chain {index} computed wrongly");
        let again = delivered.insert(index, value);
        assert!(
            again.is_none(),
            "chain {index}'s outcome was delivered twice"
        );
    }
    runner.persister().unwrap().flush().unwrap();
    assert!(
        runner.persister().unwrap().list().unwrap().is_empty(),
        "checkpoints were left behind"
    );
    let complete = delivered.len() as u64 / CHAINS * CHAINS;
    assert!(
        complete >= CHAINS,
        "no round was completed: the test proves nothing"
    );
    assert_eq!(
        delivered.keys().copied().collect::<Vec<_>>(),
        (0..delivered.len() as u64).collect::<Vec<_>>(),
        "outcomes were lost"
    );
    drop(runner);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());

    windows.sort();
    let mode = if batched {
        "group commit"
    } else {
        "a commit per save"
    };
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        let median = windows[windows.len() / 2].0;
        let most_steps = windows.iter().map(|w| w.1).max().unwrap_or(0);
        eprintln!(
            "{mode}: {KILLS} kills, {} chains delivered, {} re-runs; the oldest re-run step \
             started before its kill: median {median:?}, least {:?}, most {:?}; at most \
             {most_steps} steps of one chain ran again",
            delivered.len(),
            windows.len(),
            first.0,
            last.0
        );
    }
}

fn seed() -> u64 {
    std::env::var("RUNTIME_THREAD_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_1130)
}

#[test]
fn sigkilled_workers_lose_no_outcome_committing_each_save() {
    bounded(Duration::from_secs(300), || {
        every_outcome_exactly_once(false, seed())
    });
}

#[test]
fn sigkilled_workers_lose_no_outcome_with_group_commit() {
    bounded(Duration::from_secs(300), || {
        every_outcome_exactly_once(true, seed() ^ 0x9e37_79b9)
    });
}
