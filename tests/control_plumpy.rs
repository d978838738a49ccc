//! Interoperability of the control layer with a real plumpy 0.26.1 (Python, in the venv that
//! `scripts/python-venv` creates) over a real RabbitMQ, both ways: a plumpy controller steers
//! and launches processes on a Rust worker; a Rust controller steers and launches processes on
//! a plumpy worker. The Python side is `tests/plumpy/peer.py`.
#![cfg(feature = "amqp")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use parking_lot::Mutex;
use runtime_thread::RuntimeThread;
use runtime_thread::control::{ControlError, Launcher, Listening, SyncController};
use runtime_thread::engine::{InMemoryPersister, ProcessState, Runner, Uuid};
use runtime_thread::messaging::amqp::AmqpCommunicator;
use runtime_thread::messaging::{Broadcast, BroadcastFilter, BroadcastHandler, Communicator};
use serde_json::json;

mod common;
use common::processes::{Add, Waits};
use common::{QUICK, bounded, broker};

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/plumpy/peer.py");

/// The venv's python, which `scripts/test` makes (`scripts/python-venv`) and names in
/// `RUNTIME_THREAD_PYTHON`.
fn python() -> PathBuf {
    match std::env::var_os("RUNTIME_THREAD_PYTHON") {
        Some(python) => python.into(),
        None => panic!(
            "RUNTIME_THREAD_PYTHON is not set: run these tests through scripts/test, or export \
             it as the path `scripts/python-venv` prints"
        ),
    }
}

/// A communicator connected from `thread`, with the names of `prefix`.
fn connect(thread: &RuntimeThread, prefix: &str) -> AmqpCommunicator {
    let config = broker::named(prefix).testing_mode(true);
    thread
        .run_threadsafe(AmqpCommunicator::connect(config))
        .wait()
        .unwrap()
        .expect("connect to the project's RabbitMQ node")
}

#[test]
#[ignore = "needs the project's RabbitMQ node and Python venv: scripts/test runs it"]
fn a_plumpy_controller_steers_and_launches_rust_processes() {
    let python = python();
    bounded(Duration::from_secs(120), move || {
        let prefix = broker::unique();
        let thread = Arc::new(RuntimeThread::builder().name("worker").start().unwrap());
        let comm = connect(&thread, &prefix);
        let runner = Runner::builder()
            .thread(thread.clone())
            .persister(Arc::new(InMemoryPersister::new()))
            .watcher(Listening::new(comm.clone(), &thread).unwrap())
            .start()
            .unwrap();
        let _launcher = Launcher::builder()
            .process_as::<Add>("tests.workflows:Add")
            .process_as::<Waits>("tests.workflows:Waits")
            .queue("processes")
            .slots(0)
            .start(&runner, comm.clone())
            .unwrap();
        let output = Command::new(python)
            .args([PEER, "control", &broker::url(), &prefix])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("ALL OK"),
            "the plumpy controller failed:\n{stdout}\n{stderr}"
        );
        thread
            .run_threadsafe(async move { comm.close().await })
            .wait()
            .unwrap();
    });
}

/// The plumpy worker, stopped (stdin closed) and reaped when dropped.
struct PlumpyWorker(Child);

impl PlumpyWorker {
    fn start(python: PathBuf, prefix: &str) -> Self {
        let mut child = Command::new(python)
            .args([PEER, "worker", &broker::url(), prefix])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "READY", "the plumpy worker did not start");
        PlumpyWorker(child)
    }
}

impl Drop for PlumpyWorker {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs the project's RabbitMQ node and Python venv: scripts/test runs it"]
fn a_rust_controller_steers_and_launches_plumpy_processes() {
    let python = python();
    bounded(Duration::from_secs(120), move || {
        let prefix = broker::unique();
        let _worker = PlumpyWorker::start(python, &prefix);
        let thread = Arc::new(RuntimeThread::builder().name("controller").start().unwrap());
        let comm = connect(&thread, &prefix);
        let (tell, heard) = mpsc::channel();
        let tell = Mutex::new(tell);
        let listen = BroadcastHandler::sync(move |b: Broadcast| {
            let _ = tell
                .lock()
                .send((b.sender.unwrap_or_default(), b.subject.unwrap_or_default()));
        });
        let subscribing = comm.clone();
        let filter = BroadcastFilter::new().subject("state_changed.*");
        thread
            .run_threadsafe(
                async move { subscribing.add_broadcast_subscriber(filter, listen).await },
            )
            .wait()
            .unwrap()
            .unwrap();
        let until_heard = |pid: Uuid, last: &str| -> Vec<String> {
            let mut subjects = Vec::new();
            loop {
                let (sender, subject) = heard.recv_timeout(QUICK).expect("a state broadcast");
                if sender == pid.to_string() {
                    subjects.push(subject.clone());
                    if subject == last {
                        return subjects;
                    }
                }
            }
        };
        let controller = SyncController::new(comm.clone(), thread.clone())
            .with_queue("processes")
            .with_timeout(QUICK);

        // A plumpy process, launched from Rust (its pid comes back as a `!uuid`), steered.
        let pid = controller
            .launch_nowait("__main__:Waits", json!({}), false)
            .unwrap();
        assert_eq!(
            until_heard(pid, "state_changed.running.waiting"),
            [
                "state_changed.None.created",
                "state_changed.created.running",
                "state_changed.running.waiting",
            ]
        );
        let status = controller.status(pid).unwrap();
        assert_eq!(status.state, ProcessState::Waiting);
        assert!(!status.paused);
        assert!(status.process_string.starts_with("<Waits>"), "{status:?}");
        assert!(controller.pause(pid, Some("lunch")).unwrap());
        assert!(controller.status(pid).unwrap().paused);
        assert!(controller.play(pid).unwrap());
        assert!(!controller.status(pid).unwrap().paused);
        assert!(controller.kill(pid, Some("from rust"), false).unwrap());
        assert_eq!(
            until_heard(pid, "state_changed.waiting.killed"),
            ["state_changed.waiting.killed"]
        );
        let gone = controller.status(pid);
        assert!(
            matches!(gone, Err(ControlError::NoSuchProcess { .. })),
            "{gone:?}"
        );

        // Launch, and create-then-continue, of a plumpy process type: its outputs come back.
        let outputs = controller
            .launch("__main__:Add", json!({"a": 1, "b": 2}), false)
            .unwrap();
        assert_eq!(outputs["sum"], 3);
        let outputs = controller
            .execute("__main__:Add", json!({"a": 20, "b": 22}))
            .unwrap();
        assert_eq!(outputs["sum"], 42);
        let pid = controller
            .create("__main__:Add", json!({"a": 2, "b": 2}))
            .unwrap();
        assert_eq!(controller.continue_process(pid).unwrap()["sum"], 4);
        // plumpy answers an unknown type with an error naming it.
        let unknown = controller.launch("__main__:Nothing", json!({}), false);
        assert!(
            matches!(&unknown, Err(ControlError::Remote { message }) if message.contains("Nothing")),
            "{unknown:?}"
        );
        thread
            .run_threadsafe(async move { comm.close().await })
            .wait()
            .unwrap();
    });
}
