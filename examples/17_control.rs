//! 17 · Steering processes in another program: a worker and a controller.
//!
//! Example 14 paused, played and killed a process through its handle, in the program that ran
//! it. Here a *worker* runs the processes and a *controller* steers them by pid alone, over a
//! communicator, with plumpy's messages (so either side could be a Python plumpy program):
//!
//! - the worker's runner has a `Listening` watcher: every process answers `pause`, `play`,
//!   `kill` and `status` under its pid, and broadcasts each state it enters;
//! - the worker's `Launcher` takes `launch` tasks from a queue and starts the processes;
//! - the controller launches a work chain, hears its state broadcasts, pauses it, reads its
//!   status, plays it, kills a second one, and waits for the first to finish.
//!
//! With the `amqp` feature and a broker named in `RUNTIME_THREAD_AMQP_URL` (the project's node:
//! `export RUNTIME_THREAD_AMQP_URL=$(scripts/rabbitmq start)`), the worker is a second OS
//! process (this program with `--worker`). Without a reachable broker, the example says so and
//! runs both sides in this one process, on the in-process communicator: the code is the same.
//!
//! `cargo run --all-features --example 17_control`

use std::error::Error;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use runtime_thread::RuntimeThread;
use runtime_thread::control::{Launcher, Listening, SyncController};
use runtime_thread::engine::{
    ChainContext, Flow, Outline, Runner, StepError, WorkChain, step, while_,
};
use runtime_thread::messaging::{
    Broadcast, BroadcastFilter, BroadcastHandler, Communicator, LocalCommunicator,
};
use serde_json::json;

/// Counts down, one tick every 100 ms.
#[derive(serde::Serialize, serde::Deserialize)]
struct Countdown {
    left: u32,
}

static OUTLINE: LazyLock<Outline<Countdown>> = LazyLock::new(|| {
    Outline::new([
        while_("left", |c: &Countdown, _| c.left > 0, [step("tick")]),
        step("report"),
    ])
});

impl WorkChain for Countdown {
    const TYPE_NAME: &'static str = "example.Countdown";
    fn outline() -> &'static Outline<Self> {
        &OUTLINE
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match step {
            "tick" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.left -= 1;
            }
            _ => wc.out("done", true.into()),
        }
        Ok(Flow::Next)
    }
}

const QUEUE: &str = "example-processes";

/// The worker's side: a runner whose processes listen, and a launcher on the queue.
fn serve<C: Communicator>(
    comm: C,
    thread: &Arc<RuntimeThread>,
) -> Result<Launcher, Box<dyn Error>> {
    let runner = Runner::builder()
        .thread(thread.clone())
        .watcher(Listening::new(comm.clone(), thread)?)
        .start()?;
    Ok(Launcher::builder()
        .chain::<Countdown>()
        .queue(QUEUE)
        .slots(10)
        .start(&runner, comm)?)
}

/// The controller's side: it knows the worker only by its queue and its processes by pid.
fn steer<C: Communicator>(comm: C, thread: &Arc<RuntimeThread>) -> Result<(), Box<dyn Error>> {
    // Every state broadcast, as "pid: subject".
    let (heard, states) = mpsc::channel();
    let heard = Mutex::new(heard);
    let listen = BroadcastHandler::sync(move |b: Broadcast| {
        let line = (b.sender.unwrap_or_default(), b.subject.unwrap_or_default());
        let _ = heard.lock().unwrap().send(line);
    });
    let subscribing = comm.clone();
    let filter = BroadcastFilter::new().subject("state_changed.*");
    thread
        .run_threadsafe(async move { subscribing.add_broadcast_subscriber(filter, listen).await })
        .wait()??;
    let until = |pid: &str, subject: &str| -> Result<(), Box<dyn Error>> {
        loop {
            let (sender, heard) = states.recv_timeout(Duration::from_secs(30))?;
            println!("controller: heard {}… {heard}", &sender[..8]);
            if sender == pid && heard == subject {
                return Ok(());
            }
        }
    };

    let controller = SyncController::new(comm, thread.clone())
        .with_queue(QUEUE)
        .with_timeout(Duration::from_secs(30));
    let pid = controller.launch_nowait("example.Countdown", json!({"left": 5}), false)?;
    println!("controller: launched a countdown, pid {pid}");
    until(&pid.to_string(), "state_changed.created.running")?;

    assert!(controller.pause(pid, Some("coffee"))?);
    let status = controller.status(pid)?;
    println!(
        "controller: paused it: {} (paused: {})",
        status.process_string, status.paused
    );
    assert!(controller.play(pid)?);
    println!("controller: played it again");

    let other = controller.launch_nowait("example.Countdown", json!({"left": 50}), false)?;
    until(&other.to_string(), "state_changed.created.running")?;
    assert!(controller.kill(other, Some("not needed"), false)?);
    println!("controller: killed a second one, {other}");

    until(&pid.to_string(), "state_changed.running.finished")?;
    println!("controller: the first finished; a status request now finds nobody:");
    println!("controller: {}", controller.status(pid).unwrap_err());
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().collect();
    #[cfg(feature = "amqp")]
    if args.get(1).map(String::as_str) == Some("--worker") {
        return over_rabbitmq::worker(&args[2]);
    }
    #[cfg(feature = "amqp")]
    match over_rabbitmq::controller() {
        Err(over_rabbitmq::NoBroker(why)) => {
            println!("No RabbitMQ broker reachable ({why}); running both sides in this process.");
        }
        Ok(result) => return result,
    }
    drop(args);
    let thread = Arc::new(RuntimeThread::builder().name("example").start()?);
    let broker = LocalCommunicator::new();
    let _launcher = serve(broker.clone(), &thread)?;
    steer(broker, &thread)
}

#[cfg(feature = "amqp")]
mod over_rabbitmq {
    use std::error::Error;
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    use runtime_thread::RuntimeThread;
    use runtime_thread::messaging::amqp::{AmqpCommunicator, AmqpConfig};

    /// No broker to talk to, and why.
    pub struct NoBroker(pub String);

    /// This run's own exchanges and queue names, in kiwipy's testing mode.
    fn config(run: &str) -> AmqpConfig {
        AmqpConfig::new()
            .message_exchange(format!("example-{run}.messages"))
            .task_exchange(format!("example-{run}.tasks"))
            .task_queue_prefix(format!("example-{run}."))
            .testing_mode(true)
    }

    fn connect(thread: &RuntimeThread, run: &str) -> Result<AmqpCommunicator, NoBroker> {
        let connecting = thread.run_threadsafe(AmqpCommunicator::connect(config(run)));
        match connecting.wait() {
            Ok(Ok(comm)) => Ok(comm),
            Ok(Err(error)) => Err(NoBroker(error.to_string())),
            Err(error) => Err(NoBroker(error.to_string())),
        }
    }

    /// The worker process: serves until the controller closes its stdin.
    pub fn worker(run: &str) -> Result<(), Box<dyn Error>> {
        let thread = Arc::new(RuntimeThread::builder().name("worker").start()?);
        let comm = connect(&thread, run).map_err(|NoBroker(why)| why)?;
        let _launcher = super::serve(comm, &thread)?;
        println!("ready");
        std::io::stdin().read_to_end(&mut Vec::new())?;
        Ok(())
    }

    /// The controller process, which starts the worker process.
    pub fn controller() -> Result<Result<(), Box<dyn Error>>, NoBroker> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let thread = Arc::new(
            RuntimeThread::builder()
                .name("controller")
                .start()
                .map_err(|e| NoBroker(e.to_string()))?,
        );
        let comm = connect(&thread, &run)?;
        println!("Over RabbitMQ: the worker is another process.");
        Ok((|| {
            let mut worker = Command::new(std::env::current_exe()?)
                .args(["--worker", &run])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let mut ready = String::new();
            BufReader::new(worker.stdout.take().ok_or("no stdout")?).read_line(&mut ready)?;
            println!("worker: {}", ready.trim());
            let steered = super::steer(comm, &thread);
            drop(worker.stdin.take());
            worker.wait()?;
            steered
        })())
    }
}
