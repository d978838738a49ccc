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
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Error, Handler, IncomingTask,
    LocalCommunicator, SubscriberId, SyncCommunicator, TaskSendOptions, TaskSubscriberOptions,
};
use serde_json::{Value, json};

/// What a process killed while it waits broadcasts, in plumpy's order.
const KILLED_WHILE_WAITING: [&str; 4] = [
    "state_changed.None.created",
    "state_changed.created.running",
    "state_changed.running.waiting",
    "state_changed.waiting.killed",
];

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

/// The in-process broker behind a transport that, like a network, never answers at once:
/// every operation waits for one turn of the runtime first. It drives `Listening` down the path
/// where a process's messages go through a task of their own.
#[derive(Clone)]
struct Deferred(LocalCommunicator, Broadcasts);

/// What a [`Deferred`] transport does with broadcasts.
#[derive(Clone, Copy, PartialEq)]
enum Broadcasts {
    Send,
    Fail,
}

impl Communicator for Deferred {
    async fn add_rpc_subscriber(&self, identifier: &str, handler: Handler) -> Result<(), Error> {
        tokio::task::yield_now().await;
        self.0.add_rpc_subscriber(identifier, handler).await
    }
    async fn remove_rpc_subscriber(&self, identifier: &str) -> Result<(), Error> {
        tokio::task::yield_now().await;
        self.0.remove_rpc_subscriber(identifier).await
    }
    async fn rpc_send_with(
        &self,
        recipient: &str,
        message: Value,
        timeout: Option<std::time::Duration>,
    ) -> Result<Value, Error> {
        tokio::task::yield_now().await;
        self.0.rpc_send_with(recipient, message, timeout).await
    }
    async fn add_broadcast_subscriber(
        &self,
        filter: BroadcastFilter,
        handler: BroadcastHandler,
    ) -> Result<SubscriberId, Error> {
        tokio::task::yield_now().await;
        self.0.add_broadcast_subscriber(filter, handler).await
    }
    async fn remove_broadcast_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        tokio::task::yield_now().await;
        self.0.remove_broadcast_subscriber(id).await
    }
    async fn broadcast_send(&self, message: Broadcast) -> Result<(), Error> {
        tokio::task::yield_now().await;
        if self.1 == Broadcasts::Fail {
            return Err(Error::Broker {
                reason: "this test's transport fails every broadcast".into(),
                source: None,
            });
        }
        self.0.broadcast_send(message).await
    }
    async fn add_task_subscriber(
        &self,
        queue: &str,
        handler: Handler,
        options: TaskSubscriberOptions,
    ) -> Result<SubscriberId, Error> {
        self.0.add_task_subscriber(queue, handler, options).await
    }
    async fn remove_task_subscriber(&self, id: SubscriberId) -> Result<(), Error> {
        self.0.remove_task_subscriber(id).await
    }
    async fn task_send_with(&self, task: Value, options: TaskSendOptions) -> Result<Value, Error> {
        self.0.task_send_with(task, options).await
    }
    async fn task_send_no_reply(&self, task: Value, options: TaskSendOptions) -> Result<(), Error> {
        self.0.task_send_no_reply(task, options).await
    }
    async fn next_task(
        &self,
        queue: &str,
        timeout: std::time::Duration,
    ) -> Result<IncomingTask, Error> {
        self.0.next_task(queue, timeout).await
    }
    async fn close(&self) {
        self.0.close().await
    }
    fn is_closed(&self) -> bool {
        self.0.is_closed()
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
    setup_over(|broker| broker)
}

/// A runner whose processes listen on `transport(broker)`; the test's own side uses the broker
/// directly.
fn setup_over<C: Communicator>(transport: impl FnOnce(LocalCommunicator) -> C) -> Setup {
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
    let listening = Listening::new(transport(broker), &thread).unwrap();
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
        assert_eq!(status["process_string"], "<Waits> (ProcessState.WAITING)");
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
        assert_eq!(subjects_of(&s.heard, &pid), KILLED_WHILE_WAITING);
        drop(s.runner);
        s.thread.stop().unwrap();
    });
}

#[test]
fn over_a_transport_that_never_answers_at_once_the_order_is_the_same() {
    bounded(QUICK, || {
        let s = setup_over(|broker| Deferred(broker, Broadcasts::Send));
        let tasks = || s.thread.handle().unwrap().metrics().num_alive_tasks();
        let before = tasks();
        // Three processes in turn: a task left behind by each would add up.
        for _ in 0..3 {
            let killed = waiting(&s.runner);
            let pid = killed.pid().to_string();
            let rpc = |body: Value| s.comm.rpc_send(&pid, body).wait();
            // Made by the process's task, and waited for before its first step: it answers.
            assert!(rpc(intent("status")).is_ok());
            assert_eq!(rpc(intent("pause")).unwrap(), true);
            assert_eq!(rpc(intent("play")).unwrap(), true);
            killed.kill("stop");
            killed.wait().unwrap();
            assert_eq!(subjects_of(&s.heard, &pid), KILLED_WHILE_WAITING);
            // Unsubscribed before the last broadcast, by the same task.
            let gone = rpc(intent("status"));
            assert!(matches!(gone, Err(Error::Unroutable { .. })), "{gone:?}");
        }
        // And each task ended: it and its process's outbox must not keep each other alive.
        // (The count may also fall by a task of the set-up that has ended meanwhile.)
        until(|| tasks() <= before);
        drop(s.runner);
        s.thread.stop().unwrap();
    });
}

#[test]
fn a_failed_state_broadcast_is_logged_and_the_process_carries_on() {
    bounded(QUICK, || {
        let s = setup_over(|broker| Deferred(broker, Broadcasts::Fail));
        let handle = waiting(&s.runner);
        let pid = handle.pid().to_string();
        let rpc = |body: Value| s.comm.rpc_send(&pid, body).wait();
        assert_eq!(
            rpc(intent("status")).unwrap()["state"],
            "ProcessState.WAITING"
        );
        handle.resume(json!("on")).unwrap();
        assert_eq!(handle.wait().unwrap().state(), ProcessState::Finished);
        // Nothing was heard, and the process ended as if it had been.
        assert!(s.heard.try_recv().is_err());
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
