//! Exclusive ownership in the stores that several programs share (SQLite between OS processes
//! on one machine, committing each save or in groups; PostgreSQL between machines): a process
//! runs on at most one worker at a time.
//!
//! - a process held by one program is refused to another, and the other's saves of it do not
//!   land (fencing);
//! - the same `continue` reaching two workers at once, 100 times: each process runs on exactly
//!   one;
//! - a `continue` of a process another worker holds waits, and goes on once that worker stops;
//! - a worker SIGKILLed while holding leases: another continues its processes once the leases
//!   run out;
//! - a worker stalled past its lease (SIGSTOP, then SIGCONT) cannot save afterwards.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Os, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier, LazyLock};
use std::time::{Duration, Instant};

use common::processes::Doubles;
use common::{QUICK, bounded, until};
use parking_lot::Mutex;
use runtime_thread::control::{Controller, Launcher};
use runtime_thread::engine::{
    Command, EngineError, PersistError, Persistent, Persister, Process, ProcessState, Runner,
    StepContext, StepError,
};
use runtime_thread::messaging::LocalCommunicator;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const KIND: &str = "RUNTIME_THREAD_LEASE_STORE";
const PLACE: &str = "RUNTIME_THREAD_LEASE_PLACE";
const MODE: &str = "RUNTIME_THREAD_LEASE_MODE";
const PIDS: &str = "RUNTIME_THREAD_LEASE_PIDS";

/// The lease of the programs that must not lose theirs during a test.
const STEADY: Duration = Duration::from_secs(10);

/// A store that several programs can share, with leases.
#[derive(Clone, Copy, Debug)]
enum Shared {
    #[cfg(feature = "sqlite")]
    Sqlite { group_commit: bool },
    #[cfg(feature = "postgres")]
    Postgres,
}

/// Where the programs of one test share their store: a file, or a PostgreSQL schema. A file
/// is removed when the test ends.
struct Place(String);

impl Drop for Place {
    fn drop(&mut self) {
        if std::path::Path::new(&self.0).is_absolute() {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", self.0));
            }
        }
    }
}

impl Shared {
    fn place(self) -> Place {
        match self {
            #[cfg(feature = "sqlite")]
            Shared::Sqlite { .. } => Place(
                std::env::temp_dir()
                    .join(format!("runtime-thread-leases-{}.sqlite", Uuid::new_v4()))
                    .display()
                    .to_string(),
            ),
            #[cfg(feature = "postgres")]
            Shared::Postgres => Place(common::postgres::unique_schema()),
        }
    }

    /// The store at `place`, as the program `name`.
    fn open(self, place: &str, name: &str, lease_for: Duration) -> Arc<dyn Persister> {
        match self {
            #[cfg(feature = "sqlite")]
            Shared::Sqlite { group_commit } => Arc::new(
                runtime_thread::engine::SqlitePersister::builder(place)
                    .group_commit(group_commit)
                    .leases(true)
                    .owner_name(name)
                    .lease_for(lease_for)
                    .open()
                    .unwrap(),
            ),
            #[cfg(feature = "postgres")]
            Shared::Postgres => Arc::new(
                common::postgres::builder(place)
                    .owner_name(name)
                    .lease_for(lease_for)
                    .connect()
                    .unwrap(),
            ),
        }
    }

    /// As the worker process is told it.
    fn code(self) -> &'static str {
        match self {
            #[cfg(feature = "sqlite")]
            Shared::Sqlite {
                group_commit: false,
            } => "sqlite",
            #[cfg(feature = "sqlite")]
            Shared::Sqlite { group_commit: true } => "sqlite-group",
            #[cfg(feature = "postgres")]
            Shared::Postgres => "postgres",
        }
    }

    fn from_code(code: &str) -> Self {
        match code {
            #[cfg(feature = "sqlite")]
            "sqlite" => Shared::Sqlite {
                group_commit: false,
            },
            #[cfg(feature = "sqlite")]
            "sqlite-group" => Shared::Sqlite { group_commit: true },
            #[cfg(feature = "postgres")]
            "postgres" => Shared::Postgres,
            other => panic!("no shared store {other:?}"),
        }
    }

    /// Whether the worker process `stalled` is stopped outside every commit: a program stopped
    /// inside one holds SQLite's write lock, and every other program's writes wait for it (the
    /// store's docs say so). PostgreSQL rolls a stalled session's work back on its own terms.
    fn stalled_outside_a_commit(self, place: &str) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            Shared::Sqlite { .. } => {
                let connection = rusqlite::Connection::open(place).unwrap();
                connection.busy_timeout(Duration::from_millis(50)).unwrap();
                connection
                    .execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
                    .is_ok()
            }
            #[cfg(feature = "postgres")]
            Shared::Postgres => {
                let _ = place;
                true
            }
        }
    }
}

fn runner_on(store: Arc<dyn Persister>) -> Runner {
    let runner = common::runner_on(store, "leases");
    runner.register::<Doubles>();
    runner.register::<Once>();
    runner.register::<Ticker>();
    runner
}

/// Counts its runs by `index` in test `test` (tests run at once, each over its store), waits for a resume (so that it is still running when the
/// second continue comes), then finishes.
#[derive(Serialize, Deserialize)]
struct Once {
    test: Uuid,
    index: u64,
}

static RUNS: LazyLock<Mutex<HashMap<(Uuid, u64), u64>>> = LazyLock::new(Default::default);

impl Process for Once {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            *RUNS.lock().entry((self.test, self.index)).or_default() += 1;
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

fn a_held_process_is_refused_to_others_and_their_saves_of_it_do_not_land(kind: Shared) {
    bounded(QUICK, move || {
        let place = kind.place();
        let a = kind.open(&place.0, "worker-a", STEADY);
        let b = kind.open(&place.0, "worker-b", STEADY);
        let pid = Uuid::new_v4();
        // Made by a: its first save takes the lease.
        a.save_bytes(pid, checkpoint(pid, "a1")).unwrap();
        a.flush().unwrap();

        let held = b.acquire(pid).unwrap_err();
        let PersistError::Held { owner, ends_in, .. } = &held else {
            panic!("{held:?}");
        };
        assert_eq!(owner, "worker-a");
        assert!(*ends_in <= STEADY, "{ends_in:?}");
        assert!(held.to_string().contains("runs on worker-a"), "{held}");

        // b writes it anyway (as if it thought it had made it): the save does not land, and
        // b can save it no more.
        // (A store committing each save refuses it at once; one committing in groups, when
        // it is flushed.)
        let refused = (b.save_bytes(pid, checkpoint(pid, "b1"))).and_then(|()| b.flush());
        assert!(matches!(refused, Err(PersistError::LeaseLost { pid: p }) if p == pid));
        assert!(matches!(
            b.save_bytes(pid, checkpoint(pid, "b2")),
            Err(PersistError::LeaseLost { .. })
        ));
        let fresh = kind.open(&place.0, "reader", STEADY);
        assert_eq!(bytes_of(&*fresh, pid), "a1");

        // a lets it go; b takes it, and then it is a's saves that do not land.
        a.release(pid);
        a.flush().unwrap();
        b.release(pid);
        b.acquire(pid).unwrap();
        b.save_bytes(pid, checkpoint(pid, "b3")).unwrap();
        b.flush().unwrap();
        let refused = (a.save_bytes(pid, checkpoint(pid, "a2"))).and_then(|()| a.flush());
        assert!(matches!(refused, Err(PersistError::LeaseLost { .. })));
        assert_eq!(bytes_of(&*fresh, pid), "b3");
    });
}

fn the_same_continue_on_two_workers_at_once_runs_the_process_on_one_100_times(kind: Shared) {
    bounded(Duration::from_secs(60), move || {
        let place = kind.place();
        let workers: Vec<Runner> = ["worker-a", "worker-b"]
            .into_iter()
            .map(|name| runner_on(kind.open(&place.0, name, STEADY)))
            .collect();
        let barrier = Arc::new(Barrier::new(2));
        let mut ran_on = [0; 2];
        let test = Uuid::new_v4();
        for index in 0..100 {
            let pid = workers[index as usize % 2]
                .launch(Once { test, index })
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
            assert_eq!(RUNS.lock()[&(test, index)], 1, "round {index}: it ran once");
        }
        eprintln!(
            "ran on worker a {} times, on worker b {}",
            ran_on[0], ran_on[1]
        );
    });
}

fn a_continue_waits_while_another_worker_holds_the_process_and_goes_on_when_it_stops(kind: Shared) {
    bounded(QUICK, move || {
        let place = kind.place();
        let holder = runner_on(kind.open(&place.0, "holder", STEADY));
        let waiter = runner_on(kind.open(&place.0, "waiter", STEADY));
        let handle = holder
            .launch(Doubles { x: 21 })
            .persisted()
            .start()
            .unwrap();
        let process = handle.controller();
        until(|| process.status().awaiting_resume);
        // Its first checkpoint, and with it its lease, are committed.
        holder.persister().unwrap().flush().unwrap();
        let pid = process.pid();

        let comm = LocalCommunicator::new();
        let runtime = waiter.thread();
        let launcher = Launcher::builder()
            .process::<Doubles>()
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
/// when one stops without an outcome (its lease lost). It ends when its stdin closes.
#[test]
#[ignore = "the worker process that the lease tests start"]
fn child_process_lease_worker() {
    // Ends with the test that started it, however that ends (its stdin closes).
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let kind = Shared::from_code(&std::env::var(KIND).unwrap());
    let place = std::env::var(PLACE).unwrap();
    let lease_for = Duration::from_millis(std::env::var(MODE).unwrap().parse().unwrap());
    let store = kind.open(&place, "child", lease_for);
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
fn start_worker(
    kind: Shared,
    place: &str,
    lease_for: Duration,
    pids: &[Uuid],
) -> (Child, Receiver<String>) {
    let list: Vec<String> = pids.iter().map(Uuid::to_string).collect();
    let mut child = Os::new(std::env::current_exe().unwrap())
        .args([
            "child_process_lease_worker",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(KIND, kind.code())
        .env(PLACE, place)
        .env(MODE, lease_for.as_millis().to_string())
        .env(PIDS, list.join(","))
        .stdin(Stdio::piped())
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

fn a_killed_workers_processes_are_continued_by_another_once_its_leases_run_out(kind: Shared) {
    bounded(Duration::from_secs(60), move || {
        let place = kind.place();
        let lease_for = Duration::from_millis(1500);
        // Only the worker's lease is short: a taker with a lease as short could lose its own
        // under the load of the whole suite (a renewal held up two thirds of a second).
        let survivor = runner_on(kind.open(&place.0, "survivor", STEADY));
        let pids: Vec<Uuid> = (0..5)
            .map(|x| survivor.launch(Doubles { x }).create().unwrap())
            .collect();
        let (mut worker, lines) = start_worker(kind, &place.0, lease_for, &pids);
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
            // (With group commit, the killed worker's last checkpoints may be lost: the
            // process then starts again from its first, and waits again.)
            let process = handle.controller();
            until(|| process.status().awaiting_resume);
            process.resume(serde_json::Value::Null).unwrap();
            let outputs = handle.wait().unwrap().into_outputs().unwrap();
            assert_eq!(outputs["y"], 2 * x as i64);
        }
    });
}

fn a_worker_stalled_past_its_lease_cannot_save_afterwards(kind: Shared) {
    bounded(Duration::from_secs(60), move || {
        let place = kind.place();
        let lease_for = Duration::from_millis(1000);
        // Only the stalled worker's lease is short (see the test above).
        let taker = runner_on(kind.open(&place.0, "taker", STEADY));
        let pid = taker.launch(Ticker { ticks: 0, host: 0 }).create().unwrap();
        let (mut worker, lines) = start_worker(kind, &place.0, lease_for, &[pid]);
        until_line(&lines, |line| line.ends_with("tick 3"));
        let stalled = worker.id().cast_signed();
        loop {
            // SAFETY: signalling a child process of this test.
            assert_eq!(unsafe { libc::kill(stalled, libc::SIGSTOP) }, 0);
            if kind.stalled_outside_a_commit(&place.0) {
                break;
            }
            // SAFETY: as above.
            assert_eq!(unsafe { libc::kill(stalled, libc::SIGCONT) }, 0);
        }

        // Its lease runs out; this worker takes the process over and ticks it on.
        let (handle, held) = load_when_free(&taker, pid);
        assert!(
            held > 0,
            "the stalled worker's lease was not held until it ran out"
        );
        let reader = kind.open(&place.0, "reader", STEADY);
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

/// The tests, for one kind of shared store.
macro_rules! leases {
    ($module:ident, $kind:expr $(, #[$attr:meta])*) => {
        mod $module {
            use super::*;

            $(#[$attr])*
            #[test]
            fn a_held_process_is_refused_to_others_and_their_saves_of_it_do_not_land() {
                super::a_held_process_is_refused_to_others_and_their_saves_of_it_do_not_land($kind);
            }

            $(#[$attr])*
            #[test]
            fn the_same_continue_on_two_workers_at_once_runs_the_process_on_one_100_times() {
                super::the_same_continue_on_two_workers_at_once_runs_the_process_on_one_100_times($kind);
            }

            $(#[$attr])*
            #[test]
            fn a_continue_waits_while_another_worker_holds_the_process_and_goes_on_when_it_stops() {
                super::a_continue_waits_while_another_worker_holds_the_process_and_goes_on_when_it_stops($kind);
            }

            $(#[$attr])*
            #[test]
            fn a_killed_workers_processes_are_continued_by_another_once_its_leases_run_out() {
                super::a_killed_workers_processes_are_continued_by_another_once_its_leases_run_out($kind);
            }

            $(#[$attr])*
            #[test]
            fn a_worker_stalled_past_its_lease_cannot_save_afterwards() {
                super::a_worker_stalled_past_its_lease_cannot_save_afterwards($kind);
            }
        }
    };
}

#[cfg(feature = "sqlite")]
leases!(
    sqlite,
    Shared::Sqlite {
        group_commit: false
    }
);
#[cfg(feature = "sqlite")]
leases!(sqlite_group, Shared::Sqlite { group_commit: true });
#[cfg(feature = "postgres")]
leases!(
    postgres,
    Shared::Postgres,
    #[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
);
