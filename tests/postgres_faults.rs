//! The PostgreSQL store when the database goes away: saves refused clearly while it is down,
//! changes queued before the loss kept once it is back, processes stopped at their last
//! checkpoint rather than run unsaved, and 200 processes through a restart, each ending once
//! with its outputs.
//!
//! These tests stop the project's cluster, so they run one at a time, in a test binary of their
//! own (cargo runs test binaries one after another).
#![cfg(feature = "postgres")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use common::postgres::{self, builder, password, unique_schema};
use common::processes::Doubles;
use common::{bounded, until};
use parking_lot::Mutex;
use runtime_thread::engine::{
    Command, EngineError, PersistError, Persistent, Persister, PostgresPersister, Process, Runner,
    StepContext, StepError,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One test at a time: each takes the server down.
static SERVER: Mutex<()> = Mutex::new(());

fn runner_on(store: Arc<dyn Persister>) -> Runner {
    let runner = common::runner_on(store, "pg-faults");
    runner.register::<Doubles>();
    runner.register::<Count>();
    runner
}

/// Waits until the store refuses saves: it has noticed that the server is gone.
fn until_refused(store: &PostgresPersister) -> PersistError {
    let probe = Uuid::new_v4();
    loop {
        match store.save_bytes(probe, b"{}".to_vec()) {
            Err(error) => return error,
            Ok(()) => std::thread::yield_now(),
        }
    }
}

/// Waits until the store accepts saves again: it has reconnected.
fn until_accepted(store: &PostgresPersister) {
    let probe = Uuid::new_v4();
    until(|| store.save_bytes(probe, b"{}".to_vec()).is_ok());
    store.delete(probe).unwrap();
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn saves_are_refused_while_the_database_is_down_and_queued_ones_are_kept_after() {
    let _server = SERVER.lock();
    bounded(Duration::from_secs(60), || {
        let schema = unique_schema();
        let store = builder(&schema)
            .retry_for(Duration::from_secs(30))
            .connect()
            .unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        store.save_bytes(a, b"{\"a\": 1}".to_vec()).unwrap();
        store.flush().unwrap();

        postgres::down();
        let refused = until_refused(&store);
        assert!(refused.is_transient(), "{refused:?}");
        let text = refused.to_string();
        assert!(text.contains("cannot be reached"), "{text}");
        assert!(!text.contains(&password()), "{text}");
        let read = store.list().unwrap_err();
        assert!(read.is_transient(), "{read:?}");

        postgres::up();
        until_accepted(&store);
        store.save_bytes(b, b"{\"b\": 2}".to_vec()).unwrap();
        store.flush().unwrap();
        let fresh = postgres::store(&schema, false);
        let mut found = fresh.list().unwrap();
        found.sort();
        let mut expected = vec![a, b];
        expected.sort();
        assert_eq!(found, expected);
    });
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn a_process_stops_at_its_last_checkpoint_while_the_database_is_down_and_goes_on_after() {
    let _server = SERVER.lock();
    bounded(Duration::from_secs(60), || {
        let schema = unique_schema();
        let store = Arc::new(postgres::store(&schema, false));
        let runner = runner_on(store.clone());
        let handle = runner
            .launch(Doubles { x: 21 })
            .persisted()
            .start()
            .unwrap();
        let process = handle.controller();
        until(|| process.status().awaiting_resume);
        store.flush().unwrap();

        postgres::down();
        until_refused(&store);
        // The next step's checkpoint cannot be saved: the process stops where it was, not
        // failed, and not run unsaved.
        process.resume(serde_json::Value::Null).unwrap();
        let stopped = handle.wait().unwrap_err();
        assert!(matches!(stopped, EngineError::Thread(_)), "{stopped:?}");
        assert!(process.was_abandoned());
        drop(runner);

        postgres::up();
        until_accepted(&store);
        let second = runner_on(store.clone());
        let reloaded = second.load(process.pid()).unwrap();
        reloaded
            .controller()
            .resume(serde_json::Value::Null)
            .unwrap();
        let outputs = reloaded.wait().unwrap().into_outputs().unwrap();
        assert_eq!(outputs["y"], 42);
    });
}

/// Counts `rounds` times with a short timer wait between, then emits: `acc` folds each round's
/// number in, so that a skipped or reordered round changes the result (a repeated one does not,
/// since a round only counts once the checkpoint after it is kept).
#[derive(Serialize, Deserialize)]
struct Count {
    index: u64,
    rounds: u64,
    done: u64,
    acc: u64,
}

/// How often each process ran a step (at least once each; more where a restart cut one short).
static STEPS_RUN: LazyLock<Mutex<HashMap<u64, u64>>> = LazyLock::new(Default::default);

impl Process for Count {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        *STEPS_RUN.lock().entry(self.index).or_default() += 1;
        if self.done == self.rounds {
            ctx.out("index", self.index.into());
            ctx.out("acc", self.acc.into());
            return Ok(Command::finish());
        }
        self.done += 1;
        self.acc = self.acc * 3 + self.done;
        Ok(Command::sleep(
            "round",
            Duration::from_millis(5 + self.index % 7),
        ))
    }
}

impl Persistent for Count {
    const TYPE_NAME: &'static str = "pgfaults.Count";
}

fn expected_acc(rounds: u64) -> u64 {
    (1..=rounds).fold(0, |acc, done| acc * 3 + done)
}

/// 200 processes run while the server restarts: each ends exactly once with its outputs, or
/// stops at its last checkpoint and then ends once when continued; none is lost.
fn two_hundred_processes_through_a_restart(group_commit: bool) {
    const PROCESSES: u64 = 200;
    const ROUNDS: u64 = 12;
    let schema = unique_schema();
    let store = Arc::new(
        builder(&schema)
            .group_commit(group_commit)
            .retry_for(Duration::from_secs(30))
            .connect()
            .unwrap(),
    );
    let runner = runner_on(store.clone());
    let base = if group_commit { 1_000 } else { 0 };
    let handles: Vec<_> = (0..PROCESSES)
        .map(|i| {
            runner
                .launch(Count {
                    index: base + i,
                    rounds: ROUNDS,
                    done: 0,
                    acc: 0,
                })
                .persisted()
                .start()
                .unwrap()
        })
        .collect();
    // Restart once every process has run a round and before most have ended.
    until(|| {
        let run = STEPS_RUN.lock();
        (base..base + PROCESSES).all(|i| run.get(&i).is_some_and(|n| *n >= 2))
    });
    let ended_before = handles
        .iter()
        .filter(|h| h.status().state.is_terminal())
        .count();
    postgres::restart();

    let mut outcomes: HashMap<Uuid, serde_json::Value> = HashMap::new();
    let mut stopped = Vec::new();
    for handle in handles {
        let pid = handle.pid();
        match handle.wait() {
            Ok(outcome) => {
                let outputs = outcome.into_outputs().unwrap();
                assert!(outcomes.insert(pid, outputs["acc"].clone()).is_none());
            }
            Err(EngineError::Thread(_)) => stopped.push(pid),
            Err(error) => panic!("process {pid} failed: {error}"),
        }
    }
    assert!(
        ended_before < PROCESSES as usize / 2,
        "the restart came too late to matter: {ended_before} had ended"
    );
    // Continued as a redelivered `continue` task would be: from the store, once each.
    until_accepted(&store);
    let second = runner_on(store.clone());
    let continued: Vec<_> = stopped
        .iter()
        .map(|pid| second.load(*pid).unwrap())
        .collect();
    for handle in continued {
        let pid = handle.pid();
        let outputs = handle.wait().unwrap().into_outputs().unwrap();
        assert!(outcomes.insert(pid, outputs["acc"].clone()).is_none());
    }
    assert_eq!(outcomes.len(), PROCESSES as usize, "none is lost");
    for acc in outcomes.values() {
        assert_eq!(*acc, expected_acc(ROUNDS));
    }
    let run = STEPS_RUN.lock();
    let repeated: u64 = (base..base + PROCESSES)
        .map(|i| run[&i] - (ROUNDS + 1))
        .sum();
    eprintln!(
        "group commit {group_commit}: {} stopped by the restart and continued, {repeated} steps \
         ran again, {ended_before} had ended before it",
        stopped.len()
    );
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn two_hundred_processes_through_a_restart_committing_each_save() {
    let _server = SERVER.lock();
    bounded(Duration::from_secs(90), || {
        two_hundred_processes_through_a_restart(false);
    });
}

#[test]
#[ignore = "needs the project's PostgreSQL cluster: scripts/test runs it"]
fn two_hundred_processes_through_a_restart_with_group_commit() {
    let _server = SERVER.lock();
    bounded(Duration::from_secs(90), || {
        two_hundred_processes_through_a_restart(true);
    });
}
