//! The conformance suite of the control layer: written once, run over the in-process broker and
//! over RabbitMQ, each with the asynchronous and the synchronous controller. A worker (a runner
//! whose processes listen, with a launcher and a checkpoint store) on one communicator; a
//! controller on another (over RabbitMQ, a connection of its own), which also records every
//! state broadcast.

mod common;

use std::future::Future;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use common::QUICK;
use common::processes::{Add, Boom, Waits};
use parking_lot::Mutex;
use runtime_thread::RuntimeThread;
use runtime_thread::control::{
    ControlError, Controller, Launcher, Listening, SyncController, wire::RemoteStatus,
};
use runtime_thread::engine::{
    ChainContext, Command, Flow, InMemoryPersister, Outline, Outputs, Persister, Process,
    ProcessHandle, ProcessOutcome, ProcessState, Runner, StepContext, StepError, Uuid, WorkChain,
    step,
};
use runtime_thread::messaging::{
    self, Broadcast, BroadcastFilter, BroadcastHandler, Communicator, LocalCommunicator,
    TaskSendOptions,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// The launchers' queue in these tests.
const QUEUE: &str = "processes";

// ---- process types -----------------------------------------------------------------------------

/// Runs step after step, each until the test lets one through the gate: a process that is
/// always running, and ends only when killed.
struct Gated {
    gate: Arc<Semaphore>,
}

impl Process for Gated {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        let permit = (self.gate.acquire().await).map_err(|e| StepError::msg(e.to_string()))?;
        permit.forget();
        Ok(Command::next("run"))
    }
}

/// Launches a `Waits` child and waits for it.
struct Parent;

impl Process for Parent {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            let child = ctx.launch(Waits {});
            return Ok(Command::wait_for_children("done", [("child", child.pid())]));
        }
        Ok(Command::finish())
    }
}

/// Two steps of a work chain, to show that chains launch like processes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Twice {
    x: i64,
}

static TWICE: LazyLock<Outline<Twice>> =
    LazyLock::new(|| Outline::new([step("double"), step("report")]));

impl WorkChain for Twice {
    const TYPE_NAME: &'static str = "conformance.Twice";
    fn outline() -> &'static Outline<Self> {
        &TWICE
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match step {
            "double" => self.x *= 2,
            _ => wc.out("x", self.x.into()),
        }
        Ok(Flow::Next)
    }
}

// ---- the two controllers behind one interface --------------------------------------------------

/// The controller's requests, blocking: the asynchronous controller awaited on the test's
/// runtime, or the synchronous one.
trait Ctl: Send + Sync {
    fn pause(&self, pid: Uuid, message: Option<&str>) -> Result<bool, ControlError>;
    fn play(&self, pid: Uuid) -> Result<bool, ControlError>;
    fn kill(&self, pid: Uuid, message: Option<&str>, force: bool) -> Result<bool, ControlError>;
    fn status(&self, pid: Uuid) -> Result<RemoteStatus, ControlError>;
    fn pause_all(&self, message: Option<&str>) -> Result<(), ControlError>;
    fn play_all(&self) -> Result<(), ControlError>;
    fn kill_all(&self, message: Option<&str>) -> Result<(), ControlError>;
    fn launch(&self, class: &str, inputs: Value, persist: bool) -> Result<Outputs, ControlError>;
    fn launch_nowait(
        &self,
        class: &str,
        inputs: Value,
        persist: bool,
    ) -> Result<Uuid, ControlError>;
    fn create(&self, class: &str, inputs: Value) -> Result<Uuid, ControlError>;
    fn continue_process(&self, pid: Uuid) -> Result<Outputs, ControlError>;
    fn continue_nowait(&self, pid: Uuid) -> Result<(), ControlError>;
    fn execute(&self, class: &str, inputs: Value) -> Result<Outputs, ControlError>;
    fn submit(&self, class: &str, inputs: Value) -> Result<Uuid, ControlError>;
    /// The same controller on another queue, with another timeout.
    fn on(&self, queue: &str, timeout: Duration) -> Box<dyn Ctl>;
}

/// The asynchronous controller, each request awaited on the test's runtime.
struct Awaited<C> {
    controller: Controller<C>,
    runtime: tokio::runtime::Handle,
}

impl<C: Communicator> Awaited<C> {
    fn wait<T>(&self, request: impl Future<Output = T>) -> T {
        self.runtime.block_on(request)
    }
}

impl<C: Communicator> Ctl for Awaited<C> {
    fn pause(&self, pid: Uuid, message: Option<&str>) -> Result<bool, ControlError> {
        self.wait(self.controller.pause(pid, message))
    }
    fn play(&self, pid: Uuid) -> Result<bool, ControlError> {
        self.wait(self.controller.play(pid))
    }
    fn kill(&self, pid: Uuid, message: Option<&str>, force: bool) -> Result<bool, ControlError> {
        self.wait(self.controller.kill(pid, message, force))
    }
    fn status(&self, pid: Uuid) -> Result<RemoteStatus, ControlError> {
        self.wait(self.controller.status(pid))
    }
    fn pause_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        self.wait(self.controller.pause_all(message))
    }
    fn play_all(&self) -> Result<(), ControlError> {
        self.wait(self.controller.play_all())
    }
    fn kill_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        self.wait(self.controller.kill_all(message))
    }
    fn launch(&self, class: &str, inputs: Value, persist: bool) -> Result<Outputs, ControlError> {
        self.wait(self.controller.launch(class, inputs, persist))
    }
    fn launch_nowait(
        &self,
        class: &str,
        inputs: Value,
        persist: bool,
    ) -> Result<Uuid, ControlError> {
        self.wait(self.controller.launch_nowait(class, inputs, persist))
    }
    fn create(&self, class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        self.wait(self.controller.create(class, inputs))
    }
    fn continue_process(&self, pid: Uuid) -> Result<Outputs, ControlError> {
        self.wait(self.controller.continue_process(pid))
    }
    fn continue_nowait(&self, pid: Uuid) -> Result<(), ControlError> {
        self.wait(self.controller.continue_nowait(pid))
    }
    fn execute(&self, class: &str, inputs: Value) -> Result<Outputs, ControlError> {
        self.wait(self.controller.execute(class, inputs))
    }
    fn submit(&self, class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        self.wait(self.controller.submit(class, inputs))
    }
    fn on(&self, queue: &str, timeout: Duration) -> Box<dyn Ctl> {
        Box::new(Awaited {
            controller: self.controller.with_queue(queue).with_timeout(timeout),
            runtime: self.runtime.clone(),
        })
    }
}

/// The synchronous controller, as it is.
struct Blocking<C>(SyncController<C>);

impl<C: Communicator> Ctl for Blocking<C> {
    fn pause(&self, pid: Uuid, message: Option<&str>) -> Result<bool, ControlError> {
        self.0.pause(pid, message)
    }
    fn play(&self, pid: Uuid) -> Result<bool, ControlError> {
        self.0.play(pid)
    }
    fn kill(&self, pid: Uuid, message: Option<&str>, force: bool) -> Result<bool, ControlError> {
        self.0.kill(pid, message, force)
    }
    fn status(&self, pid: Uuid) -> Result<RemoteStatus, ControlError> {
        self.0.status(pid)
    }
    fn pause_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        self.0.pause_all(message)
    }
    fn play_all(&self) -> Result<(), ControlError> {
        self.0.play_all()
    }
    fn kill_all(&self, message: Option<&str>) -> Result<(), ControlError> {
        self.0.kill_all(message)
    }
    fn launch(&self, class: &str, inputs: Value, persist: bool) -> Result<Outputs, ControlError> {
        self.0.launch(class, inputs, persist)
    }
    fn launch_nowait(
        &self,
        class: &str,
        inputs: Value,
        persist: bool,
    ) -> Result<Uuid, ControlError> {
        self.0.launch_nowait(class, inputs, persist)
    }
    fn create(&self, class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        self.0.create(class, inputs)
    }
    fn continue_process(&self, pid: Uuid) -> Result<Outputs, ControlError> {
        self.0.continue_process(pid)
    }
    fn continue_nowait(&self, pid: Uuid) -> Result<(), ControlError> {
        self.0.continue_nowait(pid)
    }
    fn execute(&self, class: &str, inputs: Value) -> Result<Outputs, ControlError> {
        self.0.execute(class, inputs)
    }
    fn submit(&self, class: &str, inputs: Value) -> Result<Uuid, ControlError> {
        self.0.submit(class, inputs)
    }
    fn on(&self, queue: &str, timeout: Duration) -> Box<dyn Ctl> {
        Box::new(Blocking(self.0.with_queue(queue).with_timeout(timeout)))
    }
}

// ---- the world: a worker and a controller ------------------------------------------------------

/// One side's communicator and what drives it.
struct Side<C> {
    comm: C,
    thread: Arc<RuntimeThread>,
}

impl<C: Communicator> Side<C> {
    /// Runs an operation of the communicator on the side's thread and waits for it.
    fn run<T: Send + 'static>(&self, operation: impl Future<Output = T> + Send + 'static) -> T {
        self.thread.run_threadsafe(operation).wait().unwrap()
    }
}

struct World<C: Communicator> {
    worker: Side<C>,
    runner: Runner,
    store: Arc<InMemoryPersister>,
    _launcher: Launcher,
    controller: Side<C>,
    ctl: Box<dyn Ctl>,
    /// Every state broadcast the controller's side heard: (sender, subject).
    heard: Mutex<mpsc::Receiver<(String, String)>>,
    /// Everything heard but not yet asked for, by sender.
    pending: Mutex<Vec<(String, String)>>,
    /// Runs the asynchronous controller's requests (and keeps its runtime alive).
    _runtime: Option<tokio::runtime::Runtime>,
}

/// How a test's world connects: the worker's and the controller's communicators.
trait Transport {
    type Comm: Communicator;
    /// A communicator connected from `thread`'s runtime.
    fn connect(&self, thread: &RuntimeThread) -> Self::Comm;
}

/// The in-process broker, one for both sides.
struct InProcess(LocalCommunicator);

impl Transport for InProcess {
    type Comm = LocalCommunicator;
    fn connect(&self, _: &RuntimeThread) -> LocalCommunicator {
        self.0.clone()
    }
}

fn in_process() -> InProcess {
    InProcess(LocalCommunicator::new())
}

fn world<T: Transport>(transport: T, asynchronous: bool) -> World<T::Comm> {
    let worker_thread = Arc::new(RuntimeThread::builder().name("worker").start().unwrap());
    let worker_comm = transport.connect(&worker_thread);
    let store = Arc::new(InMemoryPersister::new());
    let runner = Runner::builder()
        .thread(worker_thread.clone())
        .persister(store.clone())
        .watcher(Listening::new(worker_comm.clone(), &worker_thread).unwrap())
        .start()
        .unwrap();
    let launcher = Launcher::builder()
        .process::<Add>()
        .process_as::<Add>("tests.workflows:Add")
        .process::<Boom>()
        .process::<Waits>()
        .chain::<Twice>()
        .queue(QUEUE)
        .slots(0)
        .start(&runner, worker_comm.clone())
        .unwrap();
    let controller_thread = Arc::new(RuntimeThread::builder().name("controller").start().unwrap());
    let controller_comm = transport.connect(&controller_thread);
    let controller = Controller::new(controller_comm.clone())
        .with_queue(QUEUE)
        .with_timeout(QUICK);
    let (ctl, runtime): (Box<dyn Ctl>, _) = if asynchronous {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        let awaited = Awaited {
            controller,
            runtime: handle,
        };
        (Box::new(awaited), Some(runtime))
    } else {
        let sync = SyncController::from_controller(controller, controller_thread.clone());
        (Box::new(Blocking(sync)), None)
    };
    let controller = Side {
        comm: controller_comm,
        thread: controller_thread,
    };
    let (tell, heard) = mpsc::channel();
    let tell = Mutex::new(tell);
    let listen = BroadcastHandler::sync(move |b: Broadcast| {
        let heard = (b.sender.unwrap_or_default(), b.subject.unwrap_or_default());
        let _ = tell.lock().send(heard);
    });
    let comm = controller.comm.clone();
    let filter = BroadcastFilter::new().subject("state_changed.*");
    controller
        .run(async move { comm.add_broadcast_subscriber(filter, listen).await })
        .unwrap();
    World {
        worker: Side {
            comm: worker_comm,
            thread: worker_thread,
        },
        runner,
        store,
        _launcher: launcher,
        controller,
        ctl,
        heard: Mutex::new(heard),
        pending: Mutex::new(Vec::new()),
        _runtime: runtime,
    }
}

impl<C: Communicator> World<C> {
    /// The subjects `pid` broadcast, up to and including a terminal state (or, with
    /// `until_subject`, that one).
    fn subjects_of(&self, pid: Uuid, until_subject: Option<&str>) -> Vec<String> {
        let pid = pid.to_string();
        let ends = |subject: &str| match until_subject {
            Some(last) => subject == last,
            None => [".finished", ".excepted", ".killed"]
                .iter()
                .any(|end| subject.ends_with(end)),
        };
        let mut subjects = Vec::new();
        {
            let mut pending = self.pending.lock();
            let mut kept = Vec::new();
            let mut done = false;
            for (sender, subject) in pending.drain(..) {
                if sender == pid && !done {
                    done = ends(&subject);
                    subjects.push(subject);
                } else {
                    kept.push((sender, subject));
                }
            }
            *pending = kept;
            if done {
                return subjects;
            }
        }
        let heard = self.heard.lock();
        loop {
            let (sender, subject) = heard
                .recv_timeout(QUICK)
                .unwrap_or_else(|_| panic!("{pid} broadcast no end; heard {subjects:?}"));
            if sender != pid {
                self.pending.lock().push((sender, subject));
                continue;
            }
            let done = ends(&subject);
            subjects.push(subject);
            if done {
                return subjects;
            }
        }
    }

    /// A process that waits for a resume, submitted straight to the worker's runner.
    fn waiting(&self) -> ProcessHandle {
        let handle = self.runner.submit(Waits {});
        handle
            .wait_for_state(ProcessState::Waiting, QUICK)
            .expect("it waits");
        handle
    }

    /// Blocks until the process `handle` controls is paused (or not), from the worker's side.
    fn until_paused(&self, handle: &ProcessHandle, paused: bool) {
        let controller = handle.controller();
        let reached = self.worker.run(async move {
            let wait = async {
                if paused {
                    controller.until_paused().await
                } else {
                    controller.until_played().await
                }
            };
            tokio::time::timeout(QUICK, wait).await
        });
        assert_eq!(reached, Ok(true), "paused: {paused}");
    }

    /// Sends a raw task to the launchers' queue, bypassing the controller.
    fn raw_task(&self, task: Value, timeout: Duration) -> Result<Value, messaging::Error> {
        let comm = self.controller.comm.clone();
        let options = TaskSendOptions::for_queue(QUEUE).timeout(timeout);
        self.controller
            .run(async move { comm.task_send_with(task, options).await })
    }

    /// Sends a raw RPC to `pid`, bypassing the controller.
    fn raw_rpc(&self, pid: Uuid, message: Value) -> Result<Value, messaging::Error> {
        let comm = self.controller.comm.clone();
        self.controller
            .run(async move { comm.rpc_send(&pid.to_string(), message).await })
    }
}

impl<C: Communicator> Drop for World<C> {
    fn drop(&mut self) {
        let (worker, controller) = (self.worker.comm.clone(), self.controller.comm.clone());
        self.worker.run(async move { worker.close().await });
        self.controller.run(async move { controller.close().await });
    }
}

fn killed_with(outcome: &ProcessOutcome, text: &str) -> bool {
    matches!(outcome, ProcessOutcome::Killed { message } if message.contains(text))
}

fn no_such_process(result: Result<impl std::fmt::Debug, ControlError>, pid: Uuid) {
    assert!(
        matches!(&result, Err(ControlError::NoSuchProcess { pid: p }) if *p == pid),
        "{result:?}"
    );
}

// ---- the checks --------------------------------------------------------------------------------

/// Each intent on a waiting process, then on a paused one, then after it ended.
fn intents_on_a_waiting_then_paused_then_ended_process<C: Communicator>(w: World<C>) {
    let handle = w.waiting();
    let pid = handle.pid();
    let status = w.ctl.status(pid).unwrap();
    assert_eq!(status.state, ProcessState::Waiting);
    assert!(!status.paused);
    assert_eq!(status.process_string, "<Waits> (ProcessState.WAITING)");
    // Paused: the state stays, the flag shows it; a second pause or play also answers true.
    assert!(w.ctl.pause(pid, Some("lunch")).unwrap());
    let status = w.ctl.status(pid).unwrap();
    assert!(status.paused);
    assert_eq!(status.state, ProcessState::Waiting);
    assert!(w.ctl.pause(pid, None).unwrap());
    assert!(w.ctl.play(pid).unwrap());
    assert!(!w.ctl.status(pid).unwrap().paused);
    assert!(w.ctl.play(pid).unwrap());
    // An unknown intent is an error naming it; the process carries on.
    let unknown = w.raw_rpc(pid, json!({"intent": "dance", "message": null}));
    assert!(
        matches!(&unknown, Err(messaging::Error::Remote { message }) if message.contains("Unknown intent")),
        "{unknown:?}"
    );
    assert!(w.raw_rpc(pid, json!("garbage")).is_err());
    assert_eq!(w.ctl.status(pid).unwrap().state, ProcessState::Waiting);
    // Killed while paused.
    assert!(w.ctl.pause(pid, None).unwrap());
    assert!(w.ctl.kill(pid, Some("enough"), false).unwrap());
    assert!(killed_with(&handle.wait().unwrap(), "enough"));
    assert_eq!(
        w.subjects_of(pid, None),
        [
            "state_changed.None.created",
            "state_changed.created.running",
            "state_changed.running.waiting",
            "state_changed.waiting.killed",
        ]
    );
    // Ended: no subscriber any more.
    no_such_process(w.ctl.status(pid), pid);
    no_such_process(w.ctl.pause(pid, None), pid);
    no_such_process(w.ctl.play(pid), pid);
    no_such_process(w.ctl.kill(pid, None, false), pid);
}

/// A running step: a pause or a kill takes effect after it, a forced kill at once.
fn intents_on_a_running_process<C: Communicator>(w: World<C>) {
    let gate = Arc::new(Semaphore::new(0));
    let handle = w.runner.submit(Gated { gate: gate.clone() });
    let pid = handle.pid();
    handle.wait_for_state(ProcessState::Running, QUICK).unwrap();
    assert_eq!(w.ctl.status(pid).unwrap().state, ProcessState::Running);
    // Answered once a step has ended with the pause requested, and the process paused.
    assert!(stepping_until_answered(&gate, || w.ctl.pause(pid, None)).unwrap());
    let status = w.ctl.status(pid).unwrap();
    assert!(status.paused);
    assert_eq!(status.state, ProcessState::Running);
    assert!(w.ctl.play(pid).unwrap());
    assert!(!w.ctl.status(pid).unwrap().paused);
    assert!(stepping_until_answered(&gate, || w.ctl.kill(pid, Some("late"), false)).unwrap());
    assert!(killed_with(&handle.wait().unwrap(), "late"));
    // A forced kill does not wait for the step.
    let stubborn = w.runner.submit(Gated { gate: gate.clone() });
    let pid = stubborn.pid();
    stubborn
        .wait_for_state(ProcessState::Running, QUICK)
        .unwrap();
    assert_eq!(w.ctl.status(pid).unwrap().state, ProcessState::Running);
    assert!(w.ctl.kill(pid, Some("now"), true).unwrap());
    assert!(killed_with(&stubborn.wait().unwrap(), "now"));
    assert_eq!(
        w.subjects_of(pid, None).last().map(String::as_str),
        Some("state_changed.running.killed")
    );
}

/// Sends `request` from another thread and lets one step through the gate at a time until it
/// is answered: a request that acts after the running step is answered after some step,
/// whenever it arrived.
fn stepping_until_answered<T: Send>(gate: &Semaphore, request: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let (answer, answered) = mpsc::channel();
        scope.spawn(move || answer.send(request()));
        loop {
            gate.add_permits(1);
            match answered.recv_timeout(Duration::from_millis(20)) {
                Ok(answer) => return answer,
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the request panicked"),
            }
        }
    })
}

/// `pause_all`, `play_all` and `kill_all` reach every process.
fn broadcasts_reach_every_process<C: Communicator>(w: World<C>) {
    let processes: Vec<ProcessHandle> = (0..3).map(|_| w.waiting()).collect();
    w.ctl.pause_all(Some("maintenance")).unwrap();
    for process in &processes {
        w.until_paused(process, true);
    }
    w.ctl.play_all().unwrap();
    for process in &processes {
        w.until_paused(process, false);
    }
    w.ctl.kill_all(Some("shutdown")).unwrap();
    for process in processes {
        assert!(killed_with(&process.wait().unwrap(), "shutdown"));
    }
}

/// The exact subjects of a finishing and an excepted process (a killed one: above).
fn state_broadcasts_of_finished_and_excepted_processes<C: Communicator>(w: World<C>) {
    let pid = w
        .ctl
        .launch_nowait("test.Add", json!({"a": 1, "b": 2}), false);
    assert_eq!(
        w.subjects_of(pid.unwrap(), None),
        [
            "state_changed.None.created",
            "state_changed.created.running",
            "state_changed.running.finished",
        ]
    );
    let pid = w.ctl.launch_nowait("test.Boom", json!({}), false);
    assert_eq!(
        w.subjects_of(pid.unwrap(), None),
        [
            "state_changed.None.created",
            "state_changed.created.running",
            "state_changed.running.excepted",
        ]
    );
}

/// `launch` with and without `nowait` and `persist`, by name and by alias, and its errors.
fn launch_with_and_without_nowait_and_persist<C: Communicator>(w: World<C>) {
    let outputs = w.ctl.launch("test.Add", json!({"a": 2, "b": 40}), false);
    assert_eq!(outputs.unwrap()["sum"], 42);
    let outputs = w
        .ctl
        .launch("tests.workflows:Add", json!({"a": 1, "b": 1}), false);
    assert_eq!(outputs.unwrap()["sum"], 2);
    let outputs = w.ctl.launch("conformance.Twice", json!({"x": 21}), false);
    assert_eq!(outputs.unwrap()["x"], 42);
    // Not persisted: nothing in the store.
    let pid = w.ctl.launch_nowait("test.Waits", json!({}), false).unwrap();
    assert!(w.store.load(pid).is_err());
    assert!(w.ctl.kill(pid, None, false).unwrap());
    // Persisted: checkpointed as it runs.
    let pid = w.ctl.launch_nowait("test.Waits", json!({}), true).unwrap();
    let running = w.runner.running(pid).expect("it runs on the worker");
    assert_eq!(
        w.subjects_of(pid, Some("state_changed.running.waiting"))
            .len(),
        3
    );
    assert_eq!(w.store.load(pid).unwrap().state, ProcessState::Waiting);
    running.resume(json!("go")).unwrap();
    assert!(
        w.subjects_of(pid, None)
            .last()
            .unwrap()
            .ends_with(".finished")
    );
    // Errors: a failing process, an unknown type, inputs that do not fit.
    let failed = w.ctl.launch("test.Boom", json!({}), false);
    assert!(
        matches!(&failed, Err(ControlError::Remote { message }) if message.contains("boom")),
        "{failed:?}"
    );
    let unknown = w.ctl.launch("nowhere:Nothing", json!({}), false);
    assert!(
        matches!(&unknown, Err(ControlError::Remote { message }) if message.contains("nowhere:Nothing")),
        "{unknown:?}"
    );
    let bad = w.ctl.launch("test.Add", json!({"a": "one"}), false);
    assert!(
        matches!(&bad, Err(ControlError::Remote { message }) if message.contains("inputs")),
        "{bad:?}"
    );
    // A launch whose process is killed answers the kill.
    std::thread::scope(|scope| {
        let launching = scope.spawn(|| w.ctl.launch("test.Waits", json!({}), false));
        // The one `Waits` alive now (the earlier ones have ended).
        let pid = w.heard_created_alive("Waits");
        w.subjects_of(pid, Some("state_changed.running.waiting"));
        assert!(w.ctl.kill(pid, Some("stop it"), false).unwrap());
        let answer = launching.join().unwrap();
        assert!(
            matches!(&answer, Err(ControlError::Remote { message }) if message.contains("stop it")),
            "{answer:?}"
        );
    });
}

/// `create` saves without running; `continue` (waiting or not) runs it once; `execute` and
/// `submit` are both (`submit` without waiting).
fn create_continue_and_execute<C: Communicator>(w: World<C>) {
    let pid = w.ctl.create("test.Add", json!({"a": 3, "b": 4})).unwrap();
    assert_eq!(w.store.load(pid).unwrap().state, ProcessState::Created);
    no_such_process(w.ctl.status(pid), pid);
    assert_eq!(
        w.subjects_of(pid, Some("state_changed.None.created")),
        ["state_changed.None.created"]
    );
    assert_eq!(w.ctl.continue_process(pid).unwrap()["sum"], 7);
    // Continued: no second `None.created`.
    assert_eq!(
        w.subjects_of(pid, None),
        [
            "state_changed.created.running",
            "state_changed.running.finished",
        ]
    );
    let pid = w.ctl.create("test.Waits", json!({})).unwrap();
    w.subjects_of(pid, Some("state_changed.None.created"));
    w.ctl.continue_nowait(pid).unwrap();
    w.subjects_of(pid, Some("state_changed.running.waiting"));
    // A second continue of a process that runs here does not run it again: it waits for it.
    w.ctl.continue_nowait(pid).unwrap();
    std::thread::scope(|scope| {
        let continuing = scope.spawn(|| w.ctl.continue_process(pid));
        let running = w.runner.running(pid).expect("it runs");
        running.resume(json!("once")).unwrap();
        assert_eq!(continuing.join().unwrap().unwrap()["resumed"], "once");
    });
    assert_eq!(
        w.subjects_of(pid, None),
        [
            "state_changed.waiting.running",
            "state_changed.running.finished"
        ]
    );
    let outputs = w
        .ctl
        .execute("tests.workflows:Add", json!({"a": 5, "b": 5}));
    assert_eq!(outputs.unwrap()["sum"], 10);
    // `submit` answers the pid; the process runs to its end without anyone waiting.
    let pid = w.ctl.submit("test.Add", json!({"a": 6, "b": 1})).unwrap();
    assert_eq!(
        w.subjects_of(pid, Some("state_changed.running.finished")),
        [
            "state_changed.None.created",
            "state_changed.created.running",
            "state_changed.running.finished"
        ]
    );
    // Errors: an unknown pid, a create of an unknown type.
    let unknown = Uuid::new_v4();
    let missing = w.ctl.continue_process(unknown);
    assert!(
        matches!(&missing, Err(ControlError::Remote { message }) if message.contains(&unknown.to_string())),
        "{missing:?}"
    );
    assert!(matches!(
        w.ctl.create("nowhere:Nothing", json!({})),
        Err(ControlError::Remote { .. })
    ));
}

/// What plumpy rejects goes to another worker: an unknown task type, and `persist` or
/// `continue` on a worker without a store. Garbage is answered with an error, and the worker
/// carries on.
fn rejections_and_garbage<C: Communicator>(w: World<C>) {
    // A worker without a store on a queue of its own.
    let bare_runner = Runner::builder()
        .thread(w.worker.thread.clone())
        .watcher(Listening::new(w.worker.comm.clone(), &w.worker.thread).unwrap())
        .start()
        .unwrap();
    let bare = Launcher::builder()
        .process::<Add>()
        .queue("bare")
        .start(&bare_runner, w.worker.comm.clone())
        .unwrap();
    let brief = w.ctl.on("bare", Duration::from_millis(300));
    // Not persisted: it serves.
    let outputs = brief.launch("test.Add", json!({"a": 1, "b": 2}), false);
    assert_eq!(outputs.unwrap()["sum"], 3);
    // Refused: nobody takes them, so the sender times out.
    for refused in [
        brief
            .launch_nowait("test.Add", json!({"a": 1, "b": 2}), true)
            .map(drop),
        brief.create("test.Add", json!({"a": 1, "b": 2})).map(drop),
        brief.continue_process(Uuid::new_v4()).map(drop),
    ] {
        assert!(
            matches!(refused, Err(ControlError::Timeout(_))),
            "{refused:?}"
        );
    }
    // A worker with a store that joins takes the refused tasks from the queue.
    let _stored = Launcher::builder()
        .process::<Add>()
        .queue("bare")
        .start(&w.runner, w.worker.comm.clone())
        .unwrap();
    // (The store has no notification: watched by spinning, bounded by the test's watchdog.)
    common::until(|| w.store.list().unwrap().len() == 2);
    drop(bare);
    // An unknown task type is rejected by every worker.
    let unknown = w.raw_task(
        json!({"task": "destroy", "args": {}}),
        Duration::from_millis(300),
    );
    assert!(
        matches!(unknown, Err(messaging::Error::Timeout(_))),
        "{unknown:?}"
    );
    // Garbage: an error answer; the worker serves the next task.
    for garbage in [
        json!("garbage"),
        json!({"task": "launch"}),
        json!({"task": "continue", "args": {"pid": 7}}),
    ] {
        let answer = w.raw_task(garbage.clone(), QUICK);
        assert!(
            matches!(&answer, Err(messaging::Error::Remote { message }) if message.contains("malformed")),
            "{garbage}: {answer:?}"
        );
    }
    let outputs = w.ctl.launch("test.Add", json!({"a": 1, "b": 1}), false);
    assert_eq!(outputs.unwrap()["sum"], 2);
}

/// An idle worker answers every request at once: plumpy's worker left 14 of 100 `status`
/// requests unanswered for over a second (its loop was not woken). Each request here may take
/// two seconds at most, a bound far above a round trip.
fn replies_never_stall_on_an_idle_worker<C: Communicator>(w: World<C>) {
    let process = w.waiting();
    let pid = process.pid();
    let brief = w.ctl.on(QUEUE, Duration::from_secs(2));
    for _ in 0..100 {
        assert_eq!(brief.status(pid).unwrap().state, ProcessState::Waiting);
    }
    for _ in 0..20 {
        assert!(brief.pause(pid, None).unwrap());
        assert!(brief.play(pid).unwrap());
    }
    assert!(brief.kill(pid, None, false).unwrap());
}

/// Killing a parent over messaging kills its child too.
fn a_parent_killed_remotely_kills_its_children<C: Communicator>(w: World<C>) {
    let parent = w.runner.submit(Parent);
    parent.wait_for_state(ProcessState::Waiting, QUICK).unwrap();
    let child = parent.controller().children()[0].clone();
    // (Over the network a child waits for its subscription before it runs.)
    child.wait_for_state(ProcessState::Waiting, QUICK).unwrap();
    assert!(w.ctl.kill(parent.pid(), Some("cancelled"), false).unwrap());
    assert!(killed_with(&parent.wait().unwrap(), "cancelled"));
    assert_eq!(
        w.subjects_of(child.pid(), None).last().map(String::as_str),
        Some("state_changed.waiting.killed")
    );
    no_such_process(w.ctl.status(child.pid()), child.pid());
}

impl<C: Communicator> World<C> {
    /// The next process whose creation was broadcast and that is alive now, of type `name`
    /// (asked over RPC: ended processes do not answer).
    fn heard_created_alive(&self, name: &str) -> Uuid {
        let heard = self.heard.lock();
        loop {
            let (sender, subject) = heard.recv_timeout(QUICK).expect("a process is created");
            if subject == "state_changed.None.created" {
                let pid: Uuid = sender.parse().expect("a pid");
                let alive = self.ctl.status(pid);
                if alive.is_ok_and(|s| s.process_string.starts_with(&format!("<{name}>"))) {
                    return pid;
                }
            }
            self.pending.lock().push((sender, subject));
        }
    }
}

// ---- the matrix --------------------------------------------------------------------------------

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        /// The in-process broker, the asynchronous controller.
        mod local_async {
            $( #[test] fn $check() { super::bounded(|| super::$check(super::world(super::in_process(), true))) } )*
        }
        /// The in-process broker, the synchronous controller.
        mod local_sync {
            $( #[test] fn $check() { super::bounded(|| super::$check(super::world(super::in_process(), false))) } )*
        }
        /// RabbitMQ (the project's node), the asynchronous controller.
        #[cfg(feature = "amqp")]
        mod amqp_async {
            $(
                #[test]
                #[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
                fn $check() { super::bounded(|| super::$check(super::world(super::rabbitmq(), true))) }
            )*
        }
        /// RabbitMQ, the synchronous controller.
        #[cfg(feature = "amqp")]
        mod amqp_sync {
            $(
                #[test]
                #[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
                fn $check() { super::bounded(|| super::$check(super::world(super::rabbitmq(), false))) }
            )*
        }
    };
}

/// Each check is bounded as a whole.
fn bounded(check: impl FnOnce() + Send + 'static) {
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_test_writer()
        .try_init();
    common::bounded(Duration::from_secs(60), check);
}

/// RabbitMQ: both sides connect with the names of one test (in testing mode).
#[cfg(feature = "amqp")]
struct RabbitMq(runtime_thread::messaging::amqp::AmqpConfig);

#[cfg(feature = "amqp")]
impl Transport for RabbitMq {
    type Comm = runtime_thread::messaging::amqp::AmqpCommunicator;
    fn connect(&self, thread: &RuntimeThread) -> Self::Comm {
        let config = self.0.clone();
        thread
            .run_threadsafe(runtime_thread::messaging::amqp::AmqpCommunicator::connect(
                config,
            ))
            .wait()
            .unwrap()
            .expect("connect to the project's RabbitMQ node")
    }
}

#[cfg(feature = "amqp")]
fn rabbitmq() -> RabbitMq {
    RabbitMq(common::broker::config())
}

conformance!(
    intents_on_a_waiting_then_paused_then_ended_process,
    intents_on_a_running_process,
    broadcasts_reach_every_process,
    state_broadcasts_of_finished_and_excepted_processes,
    launch_with_and_without_nowait_and_persist,
    create_continue_and_execute,
    rejections_and_garbage,
    a_parent_killed_remotely_kills_its_children,
    replies_never_stall_on_an_idle_worker,
);
