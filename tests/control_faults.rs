//! Faults of the control layer with real worker processes: two workers (OS processes of this
//! test binary) share a SQLite checkpoint store and the project's RabbitMQ node; one is killed
//! with SIGKILL while it runs 20 waiting processes, and the other continues every one of them
//! to its end, each answered once. Garbage and tasks for unknown types or pids get clear errors,
//! and the worker carries on.
#![cfg(all(unix, feature = "amqp", feature = "sqlite"))]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Os, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use parking_lot::Mutex;
use runtime_thread::RuntimeThread;
use runtime_thread::control::{ControlError, Controller, Launcher, Listening};
use runtime_thread::engine::{
    Command, Persistent, Persister, Process, Runner, SqlitePersister, StepContext, StepError,
};
use runtime_thread::messaging::amqp::AmqpCommunicator;
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, TaskSendOptions,
};
use serde_json::json;

mod common;
use common::{QUICK, bounded, broker, until};

/// How many waiting processes the killed worker holds.
const PROCESSES: u64 = 20;
/// How long each process waits (its own timer: the work, not the test's synchronisation).
const WAIT: Duration = Duration::from_secs(3);
/// The worker's settings, from the test: `<store path>,<prefix>,<name>`.
const WORKER: &str = "RUNTIME_THREAD_CONTROL_WORKER";

/// Waits on a timer, then finishes with its index and the worker that ended it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sleeper {
    index: u64,
}

impl Process for Sleeper {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            return Ok(Command::sleep("done", WAIT));
        }
        let worker = std::env::var(WORKER).unwrap_or_default();
        let name = worker.rsplit(',').next().unwrap_or_default().to_owned();
        ctx.out("index", self.index.into());
        ctx.out("worker", name.into());
        Ok(Command::finish())
    }
}

impl Persistent for Sleeper {
    const TYPE_NAME: &'static str = "faults.Sleeper";
}

/// A worker: a listening runner on the shared store, and a launcher on the process queue; it
/// says `ready` and serves until killed.
#[test]
#[ignore = "the worker process that the control fault test starts"]
fn child_process_control_worker() {
    let setting = std::env::var(WORKER).expect("started by the control fault test");
    let mut parts = setting.split(',');
    let (path, prefix) = (parts.next().unwrap(), parts.next().unwrap());
    let thread = Arc::new(RuntimeThread::builder().name("worker").start().unwrap());
    let config = broker::named(prefix).testing_mode(true);
    let comm = thread
        .run_threadsafe(AmqpCommunicator::connect(config))
        .wait()
        .unwrap()
        .unwrap();
    let store = Arc::new(SqlitePersister::open(path).unwrap());
    let runner = Runner::builder()
        .thread(thread.clone())
        .persister(store)
        .watcher(Listening::new(comm.clone(), &thread).unwrap())
        .start()
        .unwrap();
    let _launcher = Launcher::builder()
        .process::<Sleeper>()
        .queue("processes")
        .slots(0)
        .start(&runner, comm)
        .unwrap();
    println!("ready");
    loop {
        std::thread::park();
    }
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Worker {
    fn start(store: &Path, prefix: &str, name: &str) -> Self {
        let mut child = Os::new(std::env::current_exe().unwrap())
            .args([
                "child_process_control_worker",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(WORKER, format!("{},{prefix},{name}", store.display()))
            .env("RUNTIME_THREAD_AMQP_URL", broker::url())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Held from here, so that a failure below kills it too.
        let worker = Worker(child);
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    // After libtest's `test ... ` when it runs tests one at a time (one CPU).
                    Ok(line) if line.ends_with("ready") => drop(ready_tx.send(())),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        ready.recv_timeout(QUICK).expect("the worker is ready");
        worker
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn temp_store() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("runtime-thread-control-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("checkpoints.sqlite")
}

#[test]
#[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
fn a_sigkilled_workers_processes_end_on_the_other_worker_once_each() {
    bounded(Duration::from_secs(120), || {
        let path = temp_store();
        // Made before the workers, so that they open a database in WAL mode.
        drop(SqlitePersister::open(&path).unwrap());
        let prefix = broker::unique();
        let first = Worker::start(&path, &prefix, "first");
        let runtime = broker::runtime();
        let comm = runtime
            .block_on(AmqpCommunicator::connect(
                broker::named(&prefix).testing_mode(true),
            ))
            .unwrap();
        let (tell, heard) = mpsc::channel();
        let tell = Mutex::new(tell);
        let listen = BroadcastHandler::sync(move |b: Broadcast| {
            let _ = tell.lock().send(b.subject.unwrap_or_default());
        });
        let filter = BroadcastFilter::new().subject("state_changed.running.waiting");
        runtime
            .block_on(comm.add_broadcast_subscriber(filter, listen))
            .unwrap();
        let controller = Controller::new(comm.clone())
            .with_queue("processes")
            .with_timeout(Duration::from_secs(60));

        // 20 processes created in the shared store, then continued: all on the first worker,
        // the only one, which holds their tasks until they end.
        let pids = runtime.block_on(async {
            let mut pids = Vec::new();
            for index in 0..PROCESSES {
                let pid = controller.create("faults.Sleeper", json!({ "index": index }));
                pids.push(pid.await.unwrap());
            }
            pids
        });
        let continued: Vec<_> = pids
            .iter()
            .map(|&pid| {
                let controller = controller.clone();
                runtime.spawn(async move { controller.continue_process(pid).await })
            })
            .collect();
        for _ in 0..PROCESSES {
            heard.recv_timeout(QUICK).expect("a process waits");
        }
        let second = Worker::start(&path, &prefix, "second");
        first.kill();

        // The broker gives the unanswered tasks to the second worker, which continues each
        // process from its checkpoint to the end.
        let mut indices = BTreeSet::new();
        for answer in continued {
            let outputs = runtime.block_on(answer).unwrap().unwrap();
            assert_eq!(outputs["worker"], "second", "{outputs:?}");
            assert!(indices.insert(outputs["index"].as_u64().unwrap()));
        }
        assert_eq!(indices, (0..PROCESSES).collect());
        // Each outcome is handed over just after its answer (see the launcher's docs):
        // nothing is left in the store.
        let store = SqlitePersister::open(&path).unwrap();
        until(|| store.list().unwrap().is_empty());

        // Garbage, an unknown type and an unknown pid: clear errors; the worker carries on.
        let garbage = runtime.block_on(comm.task_send_with(
            json!({"task": "launch", "args": "garbage"}),
            TaskSendOptions::for_queue("processes").timeout(QUICK),
        ));
        assert!(
            matches!(&garbage, Err(runtime_thread::messaging::Error::Remote { message }) if message.contains("malformed")),
            "{garbage:?}"
        );
        let unknown = runtime.block_on(controller.launch("faults.Nothing", json!({}), false));
        assert!(
            matches!(&unknown, Err(ControlError::Remote { message }) if message.contains("faults.Nothing")),
            "{unknown:?}"
        );
        let missing = uuid::Uuid::new_v4();
        let answer = runtime.block_on(controller.continue_process(missing));
        assert!(
            matches!(&answer, Err(ControlError::Remote { message }) if message.contains(&missing.to_string())),
            "{answer:?}"
        );
        let pid = runtime
            .block_on(controller.create("faults.Sleeper", json!({ "index": 99 })))
            .unwrap();
        let outputs = runtime.block_on(controller.continue_process(pid)).unwrap();
        assert_eq!(outputs["index"], 99);
        drop(second);
        runtime.block_on(comm.close());
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    });
}
