//! Process control over the in-process communicator: RPC intents by pid, state broadcasts in
//! plumpy's order, broadcasts to every process.

mod common;

use std::sync::Arc;
use std::sync::mpsc;

use common::{QUICK, bounded, until};
use runtime_thread::RuntimeThread;
use runtime_thread::control::Listening;
use runtime_thread::engine::{
    Command, Process, ProcessHandle, ProcessOutcome, ProcessState, Runner, StepContext, StepError,
};
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Error, LocalCommunicator,
    SyncCommunicator,
};
use serde_json::{Value, json};

/// Waits for a resume, then finishes.
struct Waits;

impl Process for Waits {
    async fn step(&mut self, step: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Ok(match step {
            "run" => Command::wait_for_resume("done"),
            _ => Command::finish(),
        })
    }
}

/// Finishes at once.
struct Quick;

impl Process for Quick {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Ok(Command::finish())
    }
}

/// Fails in its first step.
struct Fails;

impl Process for Fails {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Err(StepError::msg("no input"))
    }
}

struct Setup {
    thread: Arc<RuntimeThread>,
    runner: Runner,
    comm: SyncCommunicator,
    /// Every state broadcast, as (sender, subject), in the order heard.
    heard: mpsc::Receiver<(String, String)>,
}

fn setup() -> Setup {
    let thread = Arc::new(RuntimeThread::builder().name("control").start().unwrap());
    let broker = LocalCommunicator::new();
    let comm = SyncCommunicator::new(broker.clone(), thread.clone());
    let (tell, heard) = mpsc::channel();
    let tell = std::sync::Mutex::new(tell);
    comm.add_broadcast_subscriber(
        BroadcastFilter::new().subject("state_changed.*"),
        BroadcastHandler::sync(move |b: Broadcast| {
            let _ = tell
                .lock()
                .unwrap()
                .send((b.sender.unwrap_or_default(), b.subject.unwrap_or_default()));
        }),
    )
    .wait()
    .unwrap();
    let listening = Listening::new(broker, &thread).unwrap();
    let runner = Runner::builder()
        .thread(thread.clone())
        .watcher(listening)
        .start()
        .unwrap();
    Setup {
        thread,
        runner,
        comm,
        heard,
    }
}

fn intent(intent: &str) -> Value {
    json!({"intent": intent, "message": null})
}

/// The subjects `pid` broadcast, up to and including its terminal state.
fn subjects_of(heard: &mpsc::Receiver<(String, String)>, pid: &str) -> Vec<String> {
    let mut subjects = Vec::new();
    loop {
        let (sender, subject) = heard.recv_timeout(QUICK).expect("a state broadcast");
        if sender != pid {
            continue;
        }
        let ended = [".finished", ".excepted", ".killed"]
            .iter()
            .any(|end| subject.ends_with(end));
        subjects.push(subject);
        if ended {
            return subjects;
        }
    }
}

fn waiting(runner: &Runner) -> ProcessHandle {
    let handle = runner.submit(Waits);
    handle
        .controller()
        .wait_for_state(ProcessState::Waiting, QUICK)
        .unwrap();
    handle
}

#[test]
fn a_process_answers_each_intent_by_its_pid() {
    bounded(QUICK, || {
        let s = setup();
        let handle = waiting(&s.runner);
        let pid = handle.pid().to_string();
        let rpc = |body: Value| s.comm.rpc_send(&pid, body).wait();

        let status = rpc(intent("status")).unwrap();
        assert_eq!(status["state"], "ProcessState.WAITING");
        assert_eq!(status["process_string"], "Waits (ProcessState.WAITING)");
        assert_eq!(status["paused"], false);
        assert!(status["ctime"].as_f64().unwrap() > 1.7e9, "{status}");

        assert_eq!(rpc(intent("pause")).unwrap(), true);
        let status = rpc(intent("status")).unwrap();
        assert_eq!(status["paused"], true);
        // Pausing does not change the state, as in plumpy.
        assert_eq!(status["state"], "ProcessState.WAITING");
        assert_eq!(rpc(intent("play")).unwrap(), true);
        assert_eq!(rpc(intent("status")).unwrap()["paused"], false);

        match rpc(intent("launch")) {
            Err(Error::Remote { message }) => {
                assert!(message.contains("Unknown intent"), "{message}")
            }
            other => panic!("expected a remote error, got {other:?}"),
        }

        let kill = json!({"intent": "kill", "message": "enough", "force_kill": false});
        assert_eq!(rpc(kill).unwrap(), true);
        match handle.wait().unwrap() {
            ProcessOutcome::Killed { message } => assert_eq!(message, "enough"),
            other => panic!("expected killed, got {other:?}"),
        }
        // Its last broadcast is sent just before its subscription goes: after hearing it, the
        // process is no longer reachable.
        let subjects = subjects_of(&s.heard, &pid);
        assert_eq!(subjects.last().unwrap(), "state_changed.waiting.killed");
        assert!(matches!(
            rpc(intent("status")),
            Err(Error::Unroutable { .. })
        ));
        drop(s.runner);
        s.thread.stop().unwrap();
    });
}

#[test]
fn state_broadcasts_follow_plumpys_order() {
    bounded(QUICK, || {
        let s = setup();
        let finished = s.runner.submit(Quick);
        let pid = finished.pid().to_string();
        finished.wait().unwrap();
        assert_eq!(
            subjects_of(&s.heard, &pid),
            [
                "state_changed.None.created",
                "state_changed.created.running",
                "state_changed.running.finished"
            ]
        );

        let excepted = s.runner.submit(Fails);
        let pid = excepted.pid().to_string();
        excepted.wait().unwrap();
        assert_eq!(
            subjects_of(&s.heard, &pid),
            [
                "state_changed.None.created",
                "state_changed.created.running",
                "state_changed.running.excepted"
            ]
        );

        let killed = waiting(&s.runner);
        let pid = killed.pid().to_string();
        killed.kill("stop");
        killed.wait().unwrap();
        assert_eq!(
            subjects_of(&s.heard, &pid),
            [
                "state_changed.None.created",
                "state_changed.created.running",
                "state_changed.running.waiting",
                "state_changed.waiting.killed"
            ]
        );
        drop(s.runner);
        s.thread.stop().unwrap();
    });
}

#[test]
fn pause_play_and_kill_broadcasts_reach_every_process() {
    bounded(QUICK, || {
        let s = setup();
        let handles: Vec<_> = (0..3).map(|_| waiting(&s.runner)).collect();
        let controllers: Vec<_> = handles.iter().map(|h| h.controller()).collect();

        s.comm
            .broadcast_send(Broadcast::new("for the night").subject("pause"))
            .wait()
            .unwrap();
        until(|| controllers.iter().all(|c| c.status().paused));
        s.comm
            .broadcast_send(Broadcast::new(Value::Null).subject("play"))
            .wait()
            .unwrap();
        until(|| controllers.iter().all(|c| !c.status().paused));
        s.comm
            .broadcast_send(Broadcast::new("closing time").subject("kill"))
            .wait()
            .unwrap();
        for mut handle in handles {
            match handle.wait_timeout(QUICK).unwrap() {
                ProcessOutcome::Killed { message } => assert_eq!(message, "closing time"),
                other => panic!("expected killed, got {other:?}"),
            }
        }
        drop(s.runner);
        s.thread.stop().unwrap();
    });
}

#[test]
fn a_runner_without_a_watcher_leaves_its_processes_unreachable() {
    bounded(QUICK, || {
        let thread = Arc::new(RuntimeThread::builder().start().unwrap());
        let comm = SyncCommunicator::new(LocalCommunicator::new(), thread.clone());
        let runner = Runner::builder().thread(thread.clone()).start().unwrap();
        let handle = waiting(&runner);
        let pid = handle.pid().to_string();
        assert!(matches!(
            comm.rpc_send(&pid, intent("status")).wait(),
            Err(Error::Unroutable { .. })
        ));
        handle.kill("done");
        handle.wait().unwrap();
        drop(runner);
        thread.stop().unwrap();
    });
}
