//! Checkpoints: what is saved when, continuing in a new runner (after a simulated crash), every
//! persister, and clear errors for corrupt or unknown checkpoints.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use common::{QUICK, Recorder, bounded, until};
use parking_lot::Mutex;
use runtime_thread::RuntimeThread;
use runtime_thread::engine::{
    Chain, ChainContext, Checkpoint, Command, EngineError, Flow, InMemoryPersister,
    JsonDirPersister, Outline, PersistError, Persistent, Persister, Position, Process,
    ProcessController, ProcessHandle, ProcessOutcome, ProcessState, Runner, SavedWait, StepContext,
    StepError, WorkChain, step,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

fn runner_on(store: Arc<dyn Persister>) -> Runner {
    let thread = RuntimeThread::builder()
        .name("checkpoints")
        .start()
        .unwrap();
    let runner = Runner::builder()
        .thread(Arc::new(thread))
        .persister(store)
        .start()
        .unwrap();
    runner.register::<Chain<Fan>>();
    runner.register::<Leaf>();
    runner
}

/// Stops the runner's thread at once, as a crash would: running steps are dropped and nothing
/// more is saved.
fn crash(runner: Runner) {
    runner.thread().stop_with_grace(Duration::ZERO).unwrap();
}

fn temp_path(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!("runtime-thread-{what}-{}", Uuid::new_v4()))
}

/// A leaf process: `run` waits for a resume when `hold`, then outputs `y = 3x`.
#[derive(Serialize, Deserialize)]
struct Leaf {
    x: i64,
    hold: bool,
}

impl Process for Leaf {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" && self.hold {
            return Ok(Command::wait_for_resume("emit"));
        }
        let bonus = ctx
            .take_resume_value()
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        ctx.out("y", (self.x * 3 + bonus).into());
        Ok(Command::finish())
    }
}

impl Persistent for Leaf {
    const TYPE_NAME: &'static str = "tests.Leaf";
}

fn top_level(handles: Vec<ProcessHandle>) -> ProcessHandle {
    let mut top: Vec<_> = handles
        .into_iter()
        .filter(|h| h.status().parent.is_none())
        .collect();
    assert_eq!(top.len(), 1, "one top-level process was saved");
    top.remove(0)
}

/// Launches `n` held leaves (they wait for a resume) and sums their outputs.
#[derive(Serialize, Deserialize)]
struct Fan {
    n: i64,
}

static FAN: LazyLock<Outline<Fan>> = LazyLock::new(|| Outline::new([step("launch"), step("sum")]));

impl WorkChain for Fan {
    const TYPE_NAME: &'static str = "tests.Fan";
    fn outline() -> &'static Outline<Self> {
        &FAN
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        if step == "launch" {
            for x in 1..=self.n {
                let child = wc
                    .launch_persisted(Leaf { x, hold: true })
                    .map_err(|e| StepError::msg(e.to_string()))?;
                wc.to_context(format!("leaf{x}"), &child);
            }
        } else {
            let sum: i64 = wc.ctx().values().filter_map(|o| o["y"].as_i64()).sum();
            wc.out("sum", sum.into());
        }
        Ok(Flow::Next)
    }
}

fn resume_all(processes: &[ProcessController], value: i64) {
    for handle in processes {
        until(|| handle.status().awaiting_resume);
        handle.resume(value.into()).unwrap();
    }
}

#[test]
fn a_chain_waiting_on_children_is_checkpointed_reloaded_in_a_new_runner_and_completes() {
    bounded(QUICK, || {
        let store: Arc<dyn Persister> = Arc::new(InMemoryPersister::new());
        let first = runner_on(store.clone());
        let parent = first
            .launch(Chain::new(Fan { n: 3 }))
            .persisted()
            .start()
            .unwrap();
        until(|| {
            parent.status().state == ProcessState::Waiting
                && parent.children().iter().all(|c| c.status().awaiting_resume)
        });
        // One child finishes before the crash: its result must survive in its own checkpoint.
        let children = parent.children();
        children[0].resume(10.into()).unwrap();
        // Its final checkpoint is written after it shows `Finished`: wait for that one.
        until(|| {
            store
                .load(children[0].pid())
                .is_ok_and(|c| c.state == ProcessState::Finished)
        });

        let saved = store.load(parent.pid()).unwrap();
        assert_eq!(saved.state, ProcessState::Waiting);
        let Position::Waiting {
            on: SavedWait::Children { children: awaited },
            ..
        } = &saved.position
        else {
            panic!("{:?}", saved.position)
        };
        assert_eq!(awaited.len(), 3);
        assert_eq!(saved.children.len(), 3);
        let ended = store.load(children[0].pid()).unwrap();
        assert_eq!(ended.state, ProcessState::Finished);
        assert!(ended.outcome.is_some());
        let parent_pid = parent.pid();
        crash(first);

        let second = runner_on(store.clone());
        // Only the top-level process comes back; its children run under it.
        let mut handles = second.load_all().unwrap();
        assert_eq!(handles.len(), 1);
        let top = handles.remove(0);
        assert_eq!(top.pid(), parent_pid);
        let leaves = top.children();
        assert_eq!(leaves.len(), 3);
        let waiting: Vec<_> = leaves
            .into_iter()
            .filter(|h| !h.status().state.is_terminal())
            .collect();
        assert_eq!(waiting.len(), 2);
        resume_all(&waiting, 10);
        let outputs = top.wait().unwrap().into_outputs().unwrap();
        // Leaves output 3x + 10 for x = 1, 2, 3.
        assert_eq!(outputs["sum"], 3 * (1 + 2 + 3) + 30);
        until(|| store.list().unwrap().is_empty());
    });
}

#[test]
fn a_paused_waiting_process_reloads_paused_and_its_wait_continues_after_play() {
    bounded(QUICK, || {
        let store: Arc<dyn Persister> = Arc::new(InMemoryPersister::new());
        let first = runner_on(store.clone());
        let leaf = first
            .launch(Leaf { x: 5, hold: true })
            .persisted()
            .start()
            .unwrap();
        until(|| leaf.status().awaiting_resume);
        assert!(leaf.pause());
        until(|| store.load(leaf.pid()).is_ok_and(|c| c.paused));
        // A resume that arrives while paused is kept, and saved with the next checkpoint.
        leaf.resume(1.into()).unwrap();
        let pid = leaf.pid();
        crash(first);

        let second = runner_on(store.clone());
        let leaf = second.load(pid).unwrap();
        let status = leaf.status();
        assert!(status.paused && status.state == ProcessState::Waiting);
        assert!(matches!(
            second.load(pid).unwrap_err(),
            EngineError::AlreadyRunning { .. }
        ));
        assert!(leaf.play());
        // The resume sent before the crash was lost with it (it came after the last
        // checkpoint), so the process waits again.
        until(|| leaf.status().awaiting_resume && !leaf.status().paused);
        leaf.resume(2.into()).unwrap();
        let outputs = leaf.wait().unwrap().into_outputs().unwrap();
        assert_eq!(outputs["y"], 17);
    });
}

#[test]
fn checkpoints_are_taken_at_every_state_and_deleted_at_the_end() {
    bounded(QUICK, || {
        let store = Arc::new(InMemoryPersister::new());
        let runner = runner_on(store.clone());
        let leaf = runner
            .launch(Leaf { x: 1, hold: true })
            .persisted()
            .start()
            .unwrap();
        until(|| leaf.status().state == ProcessState::Waiting);
        let saved = store.load(leaf.pid()).unwrap();
        assert_eq!(saved.type_name, "tests.Leaf");
        assert_eq!(saved.process, json!({"x": 1, "hold": true}));
        assert_eq!(
            saved.position,
            Position::Waiting {
                then: "emit".into(),
                on: SavedWait::Resume { value: None }
            }
        );
        // The round trip through bytes is exact.
        assert_eq!(
            Checkpoint::from_bytes(&saved.to_bytes().unwrap()).unwrap(),
            saved
        );
        leaf.resume(0.into()).unwrap();
        let pid = leaf.pid();
        leaf.wait().unwrap();
        // Handed over when `wait` returned: its checkpoint is gone by then.
        assert!(store.list().unwrap().is_empty());
        assert!(matches!(
            runner.load(pid).unwrap_err(),
            EngineError::Persist(PersistError::NotFound { .. })
        ));
    });
}

#[test]
fn persisting_without_a_store_is_a_typed_error() {
    let runner = Runner::start().unwrap();
    assert!(matches!(
        runner
            .launch(Leaf { x: 1, hold: false })
            .persisted()
            .start(),
        Err(EngineError::NoPersister)
    ));
    assert!(matches!(runner.load_all(), Err(EngineError::NoPersister)));
    // A chain's `launch_persisted` is refused too: the chain fails clearly.
    let error = runner
        .run(Chain::new(Fan { n: 1 }))
        .unwrap_err()
        .to_string();
    assert!(error.contains("no checkpoint store"), "{error}");
}

#[test]
fn corrupt_unknown_and_mismatched_checkpoints_give_clear_errors() {
    bounded(QUICK, || {
        let store = Arc::new(InMemoryPersister::new());
        let runner = runner_on(store.clone());
        let leaf = runner
            .launch(Leaf { x: 1, hold: true })
            .persisted()
            .start()
            .unwrap();
        until(|| leaf.status().awaiting_resume);
        let good = store.load(leaf.pid()).unwrap();
        let pid = Uuid::new_v4();
        let with = |edit: &dyn Fn(&mut Value)| {
            let mut value = serde_json::to_value(Checkpoint {
                pid,
                ..good.clone()
            })
            .unwrap();
            edit(&mut value);
            store.put_raw(pid, serde_json::to_vec(&value).unwrap());
            runner.load(pid).unwrap_err().to_string()
        };
        store.put_raw(pid, b"{ not json".to_vec());
        let error = runner.load(pid).unwrap_err().to_string();
        assert!(
            error.contains(&format!("checkpoint of process {pid} is corrupt: not JSON")),
            "{error}"
        );

        let error = with(&|v| v["version"] = json!(99));
        assert!(error.contains("format version 99"), "{error}");
        let error = with(&|v| v["type_name"] = json!("tests.Nope"));
        assert!(
            error.contains("\"tests.Nope\", which is not registered"),
            "{error}"
        );
        let error = with(&|v| v["process"] = json!({"x": "one"}));
        assert!(
            error.contains("the saved tests.Leaf does not decode"),
            "{error}"
        );
        let error = with(&|v| v["position"] = json!({"kind": "ended"}));
        assert!(error.contains("does not fit"), "{error}");
        let error = with(&|v| v["pid"] = json!(Uuid::nil()));
        assert!(error.contains("it holds process 00000000"), "{error}");

        // `load_all` meets the bad checkpoint before starting anything.
        let error = runner.load_all().unwrap_err().to_string();
        assert!(error.contains(&pid.to_string()), "{error}");
        store.delete(pid).unwrap();
        leaf.kill("done");
    });
}

#[test]
fn the_json_directory_store_replaces_files_atomically_and_continues_a_process() {
    bounded(QUICK, || {
        let dir = temp_path("json-dir");
        let store = Arc::new(JsonDirPersister::new(&dir).unwrap());
        let first = runner_on(store.clone());
        let leaf = first
            .launch(Leaf { x: 2, hold: true })
            .persisted()
            .start()
            .unwrap();
        until(|| leaf.status().awaiting_resume);
        until(|| {
            store
                .load(leaf.pid())
                .is_ok_and(|c| c.state == ProcessState::Waiting)
        });
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            files,
            [format!("{}.json", leaf.pid())],
            "no temporary file is left"
        );
        let pid = leaf.pid();
        crash(first);

        let second = runner_on(Arc::new(JsonDirPersister::new(&dir).unwrap()));
        let leaf = second.load(pid).unwrap();
        leaf.resume(4.into()).unwrap();
        assert_eq!(leaf.wait().unwrap().into_outputs().unwrap()["y"], 10);
        until(|| std::fs::read_dir(&dir).unwrap().next().is_none());
        assert!(matches!(
            store.load(pid),
            Err(PersistError::NotFound { .. })
        ));
        store.delete(pid).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    });
}

/// Waits on a timer, or on an in-memory future, and counts how often its first step ran.
#[derive(Serialize, Deserialize)]
struct Sleeper {
    future: bool,
    runs: u32,
}

impl Process for Sleeper {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "run" => {
                self.runs += 1;
                if self.future {
                    Ok(Command::wait_on("done", std::future::pending()))
                } else {
                    Ok(Command::sleep("done", Duration::from_millis(50)))
                }
            }
            _ => {
                ctx.out("runs", self.runs.into());
                Ok(Command::finish())
            }
        }
    }
}

impl Persistent for Sleeper {
    const TYPE_NAME: &'static str = "tests.Sleeper";
}

#[test]
fn a_timer_wait_survives_a_reload_and_a_future_wait_reruns_its_step() {
    bounded(QUICK, || {
        for future in [false, true] {
            let store = Arc::new(InMemoryPersister::new());
            let first = runner_on(store.clone());
            first.register::<Sleeper>();
            let sleeper = first
                .launch(Sleeper { future, runs: 0 })
                .persisted()
                .start()
                .unwrap();
            until(|| {
                store
                    .load(sleeper.pid())
                    .is_ok_and(|c| c.state == ProcessState::Waiting)
            });
            let pid = sleeper.pid();
            crash(first);
            let second = runner_on(store.clone());
            second.register::<Sleeper>();
            let sleeper = second.load(pid).unwrap();
            if future {
                // The future is gone: the step that made it runs again (and waits again).
                until(|| {
                    store
                        .load(pid)
                        .is_ok_and(|c| c.process["runs"] == 2 && c.state == ProcessState::Waiting)
                });
                assert!(sleeper.kill("enough"));
                assert!(matches!(
                    sleeper.wait().unwrap(),
                    ProcessOutcome::Killed { .. }
                ));
            } else {
                let outputs = sleeper.wait().unwrap().into_outputs().unwrap();
                assert_eq!(outputs["runs"], 1, "the timer's step did not run again");
            }
        }
    });
}

/// Until `pid`'s checkpoint holds its outcome.
fn until_ended_in(store: &dyn Persister, pid: Uuid) {
    until(|| store.load(pid).is_ok_and(|c| c.outcome.is_some()));
}

#[test]
fn an_ended_process_keeps_its_outcome_in_the_store_until_it_is_handed_over() {
    bounded(QUICK, || {
        let store = Arc::new(InMemoryPersister::new());
        let first = runner_on(store.clone());
        // Ended, and nobody has read the outcome: the program dies now.
        let unread = first
            .launch(Leaf { x: 2, hold: false })
            .persisted()
            .start()
            .unwrap();
        let pid = unread.pid();
        drop(unread);
        until_ended_in(store.as_ref(), pid);
        crash(first);

        // The next program finds the outcome, as a finished top-level handle.
        let second = runner_on(store.clone());
        let handles = second.load_all().unwrap();
        assert_eq!(handles.len(), 1);
        assert!(handles[0].is_finished());
        // Loaded again, it is still there: only handing it over removes it.
        drop(handles);
        let again = second.load(pid).unwrap();
        let outputs = again.wait().unwrap().into_outputs().unwrap();
        assert_eq!(outputs["y"], 6);
        assert!(
            store.list().unwrap().is_empty(),
            "handed over, and still saved"
        );
    });
}

#[test]
fn on_finish_hands_the_outcome_over_after_its_callback_and_forget_without_one() {
    bounded(QUICK, || {
        let store = Arc::new(InMemoryPersister::new());
        let runner = runner_on(store.clone());
        let leaf = runner
            .launch(Leaf { x: 1, hold: true })
            .persisted()
            .start()
            .unwrap();
        let (pid, controller) = (leaf.pid(), leaf.controller());
        until(|| controller.status().awaiting_resume);
        // Forgetting a process that has not ended is refused.
        assert!(matches!(
            runner.forget(pid),
            Err(EngineError::InvalidState { .. })
        ));
        let (seen_tx, seen) = mpsc::channel();
        let during = store.clone();
        leaf.on_finish(move |outcome| {
            // The checkpoint, with the outcome, is still there while the callback runs.
            let kept = during.load(pid).is_ok_and(|c| c.outcome.is_some());
            seen_tx.send((outcome.is_ok(), kept)).unwrap();
        });
        controller.resume(0.into()).unwrap();
        assert_eq!(seen.recv_timeout(QUICK).unwrap(), (true, true));
        until(|| store.list().unwrap().is_empty());

        // A handle dropped unread leaves the outcome; `forget` removes it, and may be repeated.
        let dropped = runner
            .launch(Leaf { x: 3, hold: false })
            .persisted()
            .start()
            .unwrap();
        let pid = dropped.pid();
        drop(dropped);
        until_ended_in(store.as_ref(), pid);
        runner.forget(pid).unwrap();
        assert!(store.list().unwrap().is_empty());
        runner.forget(pid).unwrap();
    });
}

/// A store whose batch saves fail, to see that a failed batch starts nothing.
struct RefusesBatches(InMemoryPersister);

impl Persister for RefusesBatches {
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.0.save(checkpoint)
    }
    fn load(&self, pid: Uuid) -> Result<Checkpoint, PersistError> {
        self.0.load(pid)
    }
    fn list(&self) -> Result<Vec<Uuid>, PersistError> {
        self.0.list()
    }
    fn delete(&self, pid: Uuid) -> Result<(), PersistError> {
        self.0.delete(pid)
    }
    fn save_all(&self, _: Vec<(Uuid, Vec<u8>)>) -> Result<(), PersistError> {
        Err(PersistError::store_failed("the disk is full"))
    }
}

#[test]
fn a_batch_is_submitted_whole_or_not_at_all() {
    bounded(QUICK, || {
        let store = Arc::new(InMemoryPersister::new());
        let runner = runner_on(store.clone());
        let leaves = (1..=5).map(|x| Leaf { x, hold: false });
        let handles = runner.submit_persisted_all(leaves).unwrap();
        assert_eq!(handles.len(), 5);
        for (x, handle) in (1..=5).zip(handles) {
            assert_eq!(handle.wait().unwrap().into_outputs().unwrap()["y"], 3 * x);
        }
        assert!(store.list().unwrap().is_empty());

        let refusing = Arc::new(RefusesBatches(InMemoryPersister::new()));
        let runner = runner_on(refusing.clone());
        let refused = runner.submit_persisted_all((1..=5).map(|x| Leaf { x, hold: false }));
        let error = refused.expect_err("refused").to_string();
        assert!(error.contains("the disk is full"), "{error}");
        assert!(
            refusing.list().unwrap().is_empty(),
            "part of a refused batch was saved"
        );
        assert_eq!(
            runner.thread().stats().submitted,
            0,
            "part of a refused batch started"
        );
    });
}

#[test]
fn one_launch_combines_inputs_a_listener_and_a_checkpoint() {
    bounded(QUICK, || {
        let store = Arc::new(InMemoryPersister::new());
        let runner = runner_on(store.clone());
        let states = Arc::new(Recorder::default());
        let handle = runner
            .launch_from_inputs::<Leaf>(json!({"x": 4, "hold": true}))
            .listener(states.clone())
            .persisted()
            .start()
            .unwrap();
        let controller = handle.controller();
        controller
            .wait_for_state(ProcessState::Waiting, QUICK)
            .unwrap();
        // Persisted: the store holds it, under its registered name, which the status shows.
        assert_eq!(store.load(handle.pid()).unwrap().type_name, "tests.Leaf");
        assert_eq!(controller.status().process, "tests.Leaf");
        controller.resume(json!(null)).unwrap();
        assert_eq!(handle.wait().unwrap().into_outputs().unwrap()["y"], 12);
        // The listener was there from the start.
        assert_eq!(states.0.lock()[0], "-->created");
        assert_eq!(states.0.lock().last().unwrap(), "running->finished");

        // Bad inputs fail the launch before anything is saved or started.
        let refused = runner
            .launch_from_inputs::<Leaf>(json!({"x": "four", "hold": false}))
            .persisted()
            .start();
        assert!(
            matches!(refused, Err(EngineError::InvalidInputs(_))),
            "{refused:?}"
        );
        // Without a store, a persisted launch is refused and nothing runs.
        let plain = Runner::start().unwrap();
        let refused = plain.launch(Leaf { x: 1, hold: false }).persisted().start();
        assert!(
            matches!(refused, Err(EngineError::NoPersister)),
            "{refused:?}"
        );
        assert_eq!(plain.thread().stats().submitted, 0);
    });
}

/// Two steps; the first tells the test it has begun and waits until the test releases it.
/// Every step run is logged under the process's token.
#[derive(Serialize, Deserialize)]
struct Gated {
    token: u64,
}

/// Per token: the test's ends of a gated process (told when step one begins; releases it).
type Gate = (SyncSender<()>, Arc<tokio::sync::Notify>);
static GATES: LazyLock<Mutex<HashMap<u64, Gate>>> = LazyLock::new(Mutex::default);
static STEPS_RUN: LazyLock<Mutex<Vec<(u64, String)>>> = LazyLock::new(Mutex::default);

/// A token whose step one can be watched (the receiver) and released (the notify).
fn gate(token: u64) -> (mpsc::Receiver<()>, Arc<tokio::sync::Notify>) {
    let (began, begun) = mpsc::sync_channel(1);
    let release = Arc::new(tokio::sync::Notify::new());
    GATES.lock().insert(token, (began, release.clone()));
    (begun, release)
}

fn steps_of(token: u64) -> Vec<String> {
    let run = STEPS_RUN.lock();
    run.iter()
        .filter(|(t, _)| *t == token)
        .map(|(_, s)| s.clone())
        .collect()
}

impl Process for Gated {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        STEPS_RUN.lock().push((self.token, step.to_owned()));
        if step == "run" {
            let gate = GATES.lock().get(&self.token).cloned();
            if let Some((began, release)) = gate {
                let _ = began.try_send(());
                release.notified().await;
            }
            return Ok(Command::next("two"));
        }
        ctx.out("done", true.into());
        Ok(Command::finish())
    }
}

impl Persistent for Gated {
    const TYPE_NAME: &'static str = "tests.Gated";
}

#[test]
fn closing_a_runner_stops_waiting_processes_at_once_for_another_runner_to_continue() {
    bounded(QUICK, || {
        let store: Arc<dyn Persister> = Arc::new(InMemoryPersister::new());
        let first = runner_on(store.clone());
        let heard = Arc::new(Recorder::default());
        let parent = first
            .launch(Chain::new(Fan { n: 3 }))
            .persisted()
            .listener(heard.clone())
            .start()
            .unwrap();
        until(|| {
            parent.status().state == ProcessState::Waiting
                && parent.children().iter().all(|c| c.status().awaiting_resume)
        });
        let parent_pid = parent.pid();

        let controller = parent.controller();
        assert!(!controller.was_abandoned());
        assert_eq!(first.close(QUICK).unwrap(), 0, "nothing was in a step");
        assert!(controller.was_abandoned());
        assert!(matches!(parent.wait(), Err(EngineError::Thread(_))));
        // Not announced as a kill: the process goes on elsewhere.
        let heard = heard.0.lock().clone();
        assert_eq!(heard.last().map(String::as_str), Some("abandoned"));
        assert!(!heard.iter().any(|e| e.ends_with("killed")), "{heard:?}");
        assert_eq!(store.load(parent_pid).unwrap().state, ProcessState::Waiting);
        // Closed for good: a process started now stops before its first step.
        let late = first.submit(Leaf { x: 1, hold: false });
        assert!(late.wait().is_err());

        let second = runner_on(store.clone());
        let top = top_level(second.load_all().unwrap());
        assert_eq!(top.pid(), parent_pid);
        resume_all(&top.children(), 10);
        let outputs = top.wait().unwrap().into_outputs().unwrap();
        assert_eq!(outputs["sum"], 3 * (1 + 2 + 3) + 30);
    });
}

#[test]
fn a_closing_runner_lets_a_running_step_end_then_saves_the_next_step_to_go_on_from() {
    bounded(QUICK, || {
        let token = 1;
        let (begun, release) = gate(token);
        let store: Arc<dyn Persister> = Arc::new(InMemoryPersister::new());
        let first = runner_on(store.clone());
        let process = first.launch(Gated { token }).persisted().start().unwrap();
        let pid = process.pid();
        begun.recv().unwrap();

        let closing = {
            let first = first.clone();
            std::thread::spawn(move || first.close(QUICK))
        };
        until(|| first.is_closing());
        // The close waits for the step, which ends only now.
        release.notify_one();
        assert_eq!(closing.join().unwrap().unwrap(), 0);
        assert!(process.wait().is_err());
        let saved = store.load(pid).unwrap();
        assert!(
            matches!(&saved.position, Position::Step { step } if step == "two"),
            "{:?}",
            saved.position
        );

        let second = runner_on(store.clone());
        second.register::<Gated>();
        let outputs = second
            .load(pid)
            .unwrap()
            .wait()
            .unwrap()
            .into_outputs()
            .unwrap();
        assert_eq!(outputs["done"], true);
        // Step `run` ran once: the second runner went on from `two`.
        assert_eq!(steps_of(token), ["run", "two"]);
    });
}

#[test]
fn a_close_whose_grace_runs_out_counts_the_steps_still_running() {
    bounded(QUICK, || {
        let token = 2;
        let (begun, release) = gate(token);
        let store: Arc<dyn Persister> = Arc::new(InMemoryPersister::new());
        let first = runner_on(store.clone());
        let process = first.launch(Gated { token }).persisted().start().unwrap();
        let pid = process.pid();
        begun.recv().unwrap();
        assert_eq!(first.close(Duration::from_millis(50)).unwrap(), 1);
        // The step still runs until the thread stops; stopping drops it.
        crash(first);
        assert!(process.wait().is_err());
        // The step that was running runs again wherever the process is continued.
        let saved = store.load(pid).unwrap();
        assert!(matches!(&saved.position, Position::Step { step } if step == "run"));
        release.notify_one();
    });
}
