//! Exclusive ownership in the PostgreSQL store: a process runs on at most one worker at a time.
//!
//! - a process held by one program is refused to another, and the other's saves of it do not
//!   land (fencing);
//! - the same `continue` reaching two workers at once, 100 times: each process runs on exactly
//!   one;
//! - a `continue` of a process another worker holds waits, and goes on once that worker stops;
//! - a worker SIGKILLed while holding leases: another continues its processes once the leases
//!   run out;
//! - a worker stalled past its lease (SIGSTOP, then SIGCONT) cannot save afterwards.
#![cfg(feature = "postgres")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Os, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier, LazyLock};
use std::time::{Duration, Instant};

use common::postgres::{builder, unique_schema};
use common::{QUICK, bounded, until};
use parking_lot::Mutex;
use runtime_thread::RuntimeThread;
use runtime_thread::control::{Controller, Launcher};
use runtime_thread::engine::{
    Command, EngineError, PersistError, Persistent, Persister, PostgresPersister, Process,
    ProcessState, Runner, StepContext, StepError,
};
use runtime_thread::messaging::LocalCommunicator;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const SCHEMA: &str = "RUNTIME_THREAD_LEASE_SCHEMA";
const MODE: &str = "RUNTIME_THREAD_LEASE_MODE";
const PIDS: &str = "RUNTIME_THREAD_LEASE_PIDS";

fn store_as(schema: &str, name: &str, lease_for: Duration) -> Arc<PostgresPersister> {
    Arc::new(
        builder(schema)
            .owner_name(name)
            .lease_for(lease_for)
            .connect()
            .unwrap(),
    )
}

fn runner_on(store: Arc<dyn Persister>) -> Runner {
    let thread = RuntimeThread::builder().name("leases").start().unwrap();
    let runner = Runner::builder()
        .thread(Arc::new(thread))
        .persister(store)
        .start()
        .unwrap();
    runner.register::<Held>();
    runner.register::<Once>();
    runner.register::<Ticker>();
    runner
}

/// `run` waits for a resume, then `emit` outputs `y = 2x`.
#[derive(Serialize, Deserialize)]
struct Held {
    x: i64,
}

impl Process for Held {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            return Ok(Command::wait_for_resume("emit"));
        }
        ctx.out("y", (self.x * 2).into());
        Ok(Command::finish())
    }
}

impl Persistent for Held {
    const TYPE_NAME: &'static str = "leases.Held";
}

/// Counts its runs by `index`, waits for a resume (so that it is still running when the
/// second continue comes), then finishes.
#[derive(Serialize, Deserialize)]
struct Once {
    index: u64,
}

static RUNS: LazyLock<Mutex<HashMap<u64, u64>>> = LazyLock::new(Default::default);

impl Process for Once {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            *RUNS.lock().entry(self.index).or_default() += 1;
            return Ok(Command::wait_for_resume("end"));
        }
        ctx.out("index", self.index.into());
        Ok(Command::finish())
    }
}

impl Persistent for Once {
    const TYPE_NAME: &'static str = "leases.Once";
}

/// Ticks every 20 ms forever, noting the OS process that ran the last tick (saved in each
/// checkpoint) and printing `tick N`.
#[derive(Serialize, Deserialize)]
struct Ticker {
    ticks: u64,
    host: u32,
}

impl Process for Ticker {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        self.ticks += 1;
        self.host = std::process::id();
        println!("tick {}", self.ticks);
        Ok(Command::sleep("tick", Duration::from_millis(20)))
    }
}

impl Persistent for Ticker {
    const TYPE_NAME: &'static str = "leases.Ticker";
}

fn bytes_of(store: &dyn Persister, pid: Uuid) -> String {
    let checkpoint = store.load(pid).unwrap();
    checkpoint.status.unwrap_or_default()
}

fn checkpoint(pid: Uuid, mark: &str) -> Vec<u8> {
    use runtime_thread::engine::{CHECKPOINT_VERSION, Checkpoint, Position, ProcessState};
    Checkpoint {
        version: CHECKPOINT_VERSION,
        type_name: "leases.Marked".to_owned(),
        pid,
        parent: None,
        ctime: std::time::SystemTime::UNIX_EPOCH,
        state: ProcessState::Running,
        paused: false,
        status: Some(mark.to_owned()),
        inputs: None,
        outputs: Default::default(),
        process: serde_json::json!({}),
        position: Position::Step {
            step: "run".to_owned(),
        },
        resumed: None,
        children: Vec::new(),
        outcome: None,
    }
    .to_bytes()
    .unwrap()
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn a_held_process_is_refused_to_others_and_their_saves_of_it_do_not_land() {
    bounded(QUICK, || {
        let schema = unique_schema();
        let a = store_as(&schema, "worker-a", Duration::from_secs(10));
        let b = store_as(&schema, "worker-b", Duration::from_secs(10));
        let pid = Uuid::new_v4();
        // Made by a: its first save takes the lease.
        a.save_bytes(pid, checkpoint(pid, "a1")).unwrap();
        a.flush().unwrap();

        let held = b.acquire(pid).unwrap_err();
        let PersistError::Held { owner, ends_in, .. } = &held else {
            panic!("{held:?}");
        };
        assert_eq!(owner, "worker-a");
        assert!(*ends_in <= Duration::from_secs(10), "{ends_in:?}");
        assert!(held.to_string().contains("runs on worker-a"), "{held}");

        // b writes it anyway (as if it thought it had made it): the save does not land, and
        // b can save it no more.
        b.save_bytes(pid, checkpoint(pid, "b1")).unwrap();
        assert!(matches!(b.flush(), Err(PersistError::LeaseLost { pid: p }) if p == pid));
        assert!(matches!(
            b.save_bytes(pid, checkpoint(pid, "b2")),
            Err(PersistError::LeaseLost { .. })
        ));
        let fresh = store_as(&schema, "reader", Duration::from_secs(10));
        assert_eq!(bytes_of(&*fresh, pid), "a1");

        // a lets it go; b takes it, and then it is a's saves that do not land.
        a.release(pid);
        a.flush().unwrap();
        b.release(pid);
        b.acquire(pid).unwrap();
        b.save_bytes(pid, checkpoint(pid, "b3")).unwrap();
        b.flush().unwrap();
        a.save_bytes(pid, checkpoint(pid, "a2")).unwrap();
        assert!(matches!(a.flush(), Err(PersistError::LeaseLost { .. })));
        assert_eq!(bytes_of(&*fresh, pid), "b3");
    });
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn the_same_continue_on_two_workers_at_once_runs_the_process_on_one_100_times() {
    bounded(Duration::from_secs(60), || {
        let schema = unique_schema();
        let workers: Vec<Runner> = ["worker-a", "worker-b"]
            .into_iter()
            .map(|name| runner_on(store_as(&schema, name, Duration::from_secs(10))))
            .collect();
        let barrier = Arc::new(Barrier::new(2));
        let mut ran_on = [0; 2];
        for index in 0..100 {
            let pid = workers[index as usize % 2]
                .launch(Once { index })
                .create()
                .unwrap();
            let loads: Vec<_> = std::thread::scope(|scope| {
                let loading: Vec<_> = (workers.iter())
                    .map(|worker| {
                        let barrier = barrier.clone();
                        scope.spawn(move || {
                            barrier.wait();
                            worker.load(pid)
                        })
                    })
                    .collect();
                loading.into_iter().map(|l| l.join().unwrap()).collect()
            });
            let mut running = Vec::new();
            for (n, load) in loads.into_iter().enumerate() {
                match load {
                    Ok(handle) => running.push((n, handle)),
                    Err(EngineError::Persist(PersistError::Held { .. })) => {}
                    Err(error) => panic!("round {index}: {error}"),
                }
            }
            assert_eq!(running.len(), 1, "round {index}: one worker runs it");
            let (n, handle) = running.pop().unwrap();
            ran_on[n] += 1;
            let process = handle.controller();
            until(|| process.status().awaiting_resume);
            process.resume(serde_json::Value::Null).unwrap();
            let outputs = handle.wait().unwrap().into_outputs().unwrap();
            assert_eq!(outputs["index"], index);
            assert_eq!(RUNS.lock()[&index], 1, "round {index}: it ran once");
        }
        eprintln!(
            "ran on worker a {} times, on worker b {}",
            ran_on[0], ran_on[1]
        );
    });
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn a_continue_waits_while_another_worker_holds_the_process_and_goes_on_when_it_stops() {
    bounded(QUICK, || {
        let schema = unique_schema();
        let holder = runner_on(store_as(&schema, "holder", Duration::from_secs(10)));
        let waiter = runner_on(store_as(&schema, "waiter", Duration::from_secs(10)));
        let handle = holder.launch(Held { x: 21 }).persisted().start().unwrap();
        let process = handle.controller();
        until(|| process.status().awaiting_resume);
        // Its first checkpoint, and with it its lease, are committed.
        holder.persister().unwrap().flush().unwrap();
        let pid = process.pid();

        let comm = LocalCommunicator::new();
        let runtime = waiter.thread();
        let launcher = Launcher::builder()
            .process::<Held>()
            .queue("leases")
            .start(&waiter, comm.clone())
            .unwrap();
        let controller = Controller::new(comm).with_queue("leases");
        let (answer, answered) = mpsc::channel();
        let continuing = runtime.spawn_threadsafe(async move {
            let _ = answer.send(controller.continue_process(pid).await);
        });
        // Held by the other worker: not run here, not answered.
        assert!(answered.recv_timeout(Duration::from_millis(600)).is_err());
        assert!(waiter.running(pid).is_none(), "run while held elsewhere");

        // The holder stops (it closes, as a worker does when told to stop): the waiting
        // continue takes the process over.
        assert_eq!(holder.close(Duration::from_secs(5)).unwrap(), 0);
        until(|| waiter.running(pid).is_some());
        waiter
            .running(pid)
            .unwrap()
            .resume(serde_json::Value::Null)
            .unwrap();
        let outputs = answered.recv_timeout(QUICK).unwrap().unwrap();
        assert_eq!(outputs["y"], 42);
        drop((continuing, launcher));
    });
}

/// The worker process of the SIGKILL and SIGSTOP tests: loads the processes named in
/// [`PIDS`] (taking their leases), says `ready`, and runs them until killed; prints `stopped`
/// when one stops without an outcome (its lease lost).
#[test]
#[ignore = "the worker process that the lease tests start"]
fn child_process_lease_worker() {
    let schema = std::env::var(SCHEMA).unwrap();
    let lease_for = Duration::from_millis(std::env::var(MODE).unwrap().parse().unwrap());
    let store = store_as(&schema, "child", lease_for);
    let runner = runner_on(store);
    let handles: Vec<_> = (std::env::var(PIDS).unwrap().split(','))
        .map(|pid| runner.load(pid.parse().unwrap()).unwrap())
        .collect();
    println!("ready");
    for handle in handles {
        if handle.wait().is_err() {
            println!("stopped");
        }
    }
    loop {
        std::thread::park();
    }
}

/// A child worker running `pids` with leases of `lease_for`, and its output lines.
fn start_worker(schema: &str, lease_for: Duration, pids: &[Uuid]) -> (Child, Receiver<String>) {
    let list: Vec<String> = pids.iter().map(Uuid::to_string).collect();
    let mut child = Os::new(std::env::current_exe().unwrap())
        .args([
            "child_process_lease_worker",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(SCHEMA, schema)
        .env(MODE, lease_for.as_millis().to_string())
        .env(PIDS, list.join(","))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let output = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, lines)
}

/// Waits for a line that `wanted` accepts. A line may start with the test harness's own
/// `test child_process_lease_worker ... ` (printed before the test's output when the harness
/// runs one test at a time, as on one CPU): the tests match the ends of lines.
fn until_line(lines: &Receiver<String>, wanted: impl Fn(&str) -> bool) {
    loop {
        let line = lines
            .recv_timeout(QUICK)
            .expect("the worker said nothing more");
        if wanted(&line) {
            return;
        }
    }
}

/// Loads `pid` as soon as no other worker holds it; polls, since a lease that runs out sends
/// no signal. Returns how many times it was held.
fn load_when_free(runner: &Runner, pid: Uuid) -> (runtime_thread::engine::ProcessHandle, u32) {
    let mut held = 0;
    loop {
        match runner.load(pid) {
            Ok(handle) => return (handle, held),
            Err(EngineError::Persist(PersistError::Held { .. })) => {
                held += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn a_killed_workers_processes_are_continued_by_another_once_its_leases_run_out() {
    bounded(Duration::from_secs(60), || {
        let schema = unique_schema();
        let lease_for = Duration::from_millis(1500);
        let survivor = runner_on(store_as(&schema, "survivor", lease_for));
        let pids: Vec<Uuid> = (0..5)
            .map(|x| survivor.launch(Held { x }).create().unwrap())
            .collect();
        let (mut worker, lines) = start_worker(&schema, lease_for, &pids);
        until_line(&lines, |line| line.ends_with("ready"));
        worker.kill().unwrap();
        let killed = Instant::now();
        worker.wait().unwrap();

        let mut handles = Vec::new();
        for (n, pid) in pids.iter().enumerate() {
            let (handle, held) = load_when_free(&survivor, *pid);
            if n == 0 {
                assert!(
                    held > 0,
                    "the dead worker's lease was not held until it ran out"
                );
            }
            handles.push(handle);
        }
        let waited = killed.elapsed();
        assert!(
            waited <= lease_for + Duration::from_secs(2),
            "continued {waited:?} after the kill"
        );
        for (x, handle) in handles.into_iter().enumerate() {
            handle.controller().resume(serde_json::Value::Null).unwrap();
            let outputs = handle.wait().unwrap().into_outputs().unwrap();
            assert_eq!(outputs["y"], 2 * x as i64);
        }
    });
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn a_worker_stalled_past_its_lease_cannot_save_afterwards() {
    bounded(Duration::from_secs(60), || {
        let schema = unique_schema();
        let lease_for = Duration::from_millis(1000);
        let taker = runner_on(store_as(&schema, "taker", lease_for));
        let pid = taker.launch(Ticker { ticks: 0, host: 0 }).create().unwrap();
        let (mut worker, lines) = start_worker(&schema, lease_for, &[pid]);
        until_line(&lines, |line| line.ends_with("tick 3"));
        let stalled = worker.id().cast_signed();
        // SAFETY: signalling a child process of this test.
        assert_eq!(unsafe { libc::kill(stalled, libc::SIGSTOP) }, 0);

        // Its lease runs out; this worker takes the process over and ticks it on.
        let (handle, held) = load_when_free(&taker, pid);
        assert!(
            held > 0,
            "the stalled worker's lease was not held until it ran out"
        );
        let reader = store_as(&schema, "reader", lease_for);
        let host_of = || reader.load(pid).unwrap().process["host"].as_u64().unwrap();
        until(|| host_of() == u64::from(std::process::id()));

        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(stalled, libc::SIGCONT) }, 0);
        until_line(&lines, |line| line.ends_with("stopped"));
        // Whatever it did after it woke, none of it reached the store.
        let ticks_before = reader.load(pid).unwrap().process["ticks"].as_u64().unwrap();
        until(|| reader.load(pid).unwrap().process["ticks"].as_u64().unwrap() > ticks_before + 2);
        assert_eq!(host_of(), u64::from(std::process::id()));

        handle.controller().kill("the test is over");
        assert_eq!(handle.wait().unwrap().state(), ProcessState::Killed);
        worker.kill().unwrap();
        worker.wait().unwrap();
    });
}
