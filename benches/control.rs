//! The control layer against plumpy 0.26.1 + kiwipy 0.9, on the project's RabbitMQ node in the
//! same run (`benches/plumpy_control_bench.py` is plumpy's side, run from here when
//! `RUNTIME_THREAD_PYTHON` names the venv's python). Figures are medians over rounds:
//!
//! - `pause_play_us`: a remote pause then play of one waiting process (a synchronous
//!   controller here, the worker in another process), median of 200 pairs;
//! - launches: trivial processes launched through the task queue with `nowait` false (outputs
//!   awaited), 1,000 with 100 in flight, on 1 and on 4 worker processes, each taking up to 100
//!   tasks at once; silent (plumpy's launcher gives its processes no communicator by default,
//!   and the Rust worker's runner has no `Listening`) and listening (every process reachable
//!   and broadcasting its states, as AiiDA's are);
//! - in process, no broker: a trivial process run to its end one after another, silent and
//!   listening (over the in-process communicator), in alternating rounds: the ratio is what
//!   making every process reachable costs;
//! - with `--ten-thousand`: 10,000 processes listening over RabbitMQ at once: the time until
//!   every one is subscribed and waiting, and the broker's memory before and after.
//!
//! Run: `cargo bench --features amqp --bench control [-- --ten-thousand]`, with
//! `RUNTIME_THREAD_AMQP_URL=$(scripts/rabbitmq start)` and
//! `RUNTIME_THREAD_PYTHON=$(scripts/python-venv)`.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command as Os, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use runtime_thread::RuntimeThread;
use runtime_thread::control::{Controller, Launcher, Listening, SyncController};
use runtime_thread::engine::{ProcessHandle, ProcessState, Runner};
use runtime_thread::messaging::LocalCommunicator;
use runtime_thread::messaging::amqp::{AmqpCommunicator, AmqpConfig};
use serde_json::{Value, json};

const PAIRS: usize = 200;
const LAUNCHES: usize = 1_000;
const IN_FLIGHT: usize = 100;
const SLOTS: usize = 100;
const IN_PROCESS: usize = 5_000;
const TEN_THOUSAND: usize = 10_000;

#[path = "../tests/common/processes.rs"]
mod processes;
use processes::{Add, Waits};

fn url() -> String {
    std::env::var("RUNTIME_THREAD_AMQP_URL").unwrap_or_default()
}

fn config(prefix: &str) -> AmqpConfig {
    AmqpConfig::new()
        .url(url())
        .message_exchange(format!("{prefix}.messages"))
        .task_exchange(format!("{prefix}.tasks"))
        .task_queue_prefix(format!("{prefix}."))
        .default_timeout(Duration::from_secs(60))
        .testing_mode(true)
}

fn connect(thread: &RuntimeThread, prefix: &str) -> AmqpCommunicator {
    thread
        .run_threadsafe(AmqpCommunicator::connect(config(prefix)))
        .wait()
        .unwrap()
        .expect("connect to the broker")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A worker process (this binary again): a listening runner with a launcher.
fn serve(prefix: &str) {
    let thread = Arc::new(RuntimeThread::builder().name("worker").start().unwrap());
    let comm = connect(&thread, prefix);
    let mut runner = Runner::builder().thread(thread.clone());
    if std::env::var_os("CONTROL_BENCH_SILENT").is_none() {
        runner = runner.watcher(Listening::new(comm.clone(), &thread).unwrap());
    }
    let runner = runner.start().unwrap();
    let _launcher = Launcher::builder()
        .process_as::<Add>("__main__:Add")
        .process_as::<Add>("__main__:ListeningAdd")
        .process_as::<Waits>("__main__:Waits")
        .queue("processes")
        .slots(SLOTS)
        .start(&runner, comm)
        .unwrap();
    println!("READY");
    // Until the bench closes stdin.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

struct Workers(Vec<Child>);

impl Workers {
    fn start(prefix: &str, count: usize, listening: bool) -> Self {
        let workers = (0..count)
            .map(|_| {
                let mut worker = Os::new(std::env::current_exe().unwrap());
                if !listening {
                    worker.env("CONTROL_BENCH_SILENT", "1");
                }
                let mut child = worker
                    .env("CONTROL_BENCH_WORKER", prefix)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut ready = String::new();
                BufReader::new(child.stdout.take().unwrap())
                    .read_line(&mut ready)
                    .unwrap();
                assert_eq!(ready.trim(), "READY");
                child
            })
            .collect();
        Workers(workers)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.0 {
            drop(worker.stdin.take());
        }
        for worker in &mut self.0 {
            let _ = worker.wait();
        }
    }
}

fn pause_play(thread: &Arc<RuntimeThread>) -> f64 {
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let _workers = Workers::start(&prefix, 1, true);
    let comm = connect(thread, &prefix);
    let controller = SyncController::new(comm, thread.clone())
        .with_queue("processes")
        .with_timeout(Duration::from_secs(60));
    let pid = controller
        .launch_nowait("__main__:Waits", json!({}), false)
        .unwrap();
    // Answered once it started, so it waits now or soon; status says when.
    while controller.status(pid).unwrap().state != ProcessState::Waiting {
        std::thread::yield_now();
    }
    let mut times = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let start = Instant::now();
        assert!(controller.pause(pid, None).unwrap());
        assert!(controller.play(pid).unwrap());
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    controller.kill(pid, None, false).unwrap();
    median(times)
}

fn launches(thread: &Arc<RuntimeThread>, workers: usize, listening: bool) -> f64 {
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let _workers = Workers::start(&prefix, workers, listening);
    let comm = connect(thread, &prefix);
    let controller = Controller::new(comm)
        .with_queue("processes")
        .with_timeout(Duration::from_secs(60));
    thread
        .run_threadsafe(async move {
            let launch = |i: usize| {
                let controller = controller.clone();
                async move {
                    let inputs = json!({"a": i, "b": 1});
                    let outputs = controller
                        .launch("__main__:Add", inputs, false)
                        .await
                        .unwrap();
                    assert_eq!(outputs["sum"], json!(i + 1));
                }
            };
            for i in 0..20 {
                launch(i).await;
            }
            let start = Instant::now();
            let mut in_flight = FuturesUnordered::new();
            for i in 0..LAUNCHES {
                if in_flight.len() >= IN_FLIGHT {
                    in_flight.next().await;
                }
                in_flight.push(launch(i));
            }
            while in_flight.next().await.is_some() {}
            LAUNCHES as f64 / start.elapsed().as_secs_f64()
        })
        .wait()
        .unwrap()
}

/// Trivial processes run to the end one after another on `runner`: per second.
fn run_in_process(runner: &Runner) -> f64 {
    let start = Instant::now();
    for i in 0..IN_PROCESS {
        let outputs = runner.run(Add { a: i as i64, b: 1 }).unwrap();
        assert_eq!(outputs["sum"], json!(i + 1));
    }
    IN_PROCESS as f64 / start.elapsed().as_secs_f64()
}

fn broker_memory() -> u64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq");
    let output = Os::new(script)
        .args(["ctl", "eval", "erlang:memory(total)."])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// 10,000 processes listening over RabbitMQ: seconds until all wait (each subscribed), and
/// the broker's memory growth in bytes per process.
fn ten_thousand() -> (f64, f64, u64) {
    let prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let thread = Arc::new(
        RuntimeThread::builder()
            .name("ten-thousand")
            .start()
            .unwrap(),
    );
    let comm = connect(&thread, &prefix);
    let runner = Runner::builder()
        .thread(thread.clone())
        .watcher(Listening::new(comm, &thread).unwrap())
        .start()
        .unwrap();
    let before = broker_memory();
    let start = Instant::now();
    let processes: Vec<ProcessHandle> =
        (0..TEN_THOUSAND).map(|_| runner.submit(Waits {})).collect();
    for process in &processes {
        process
            .wait_for_state(ProcessState::Waiting, Duration::from_secs(600))
            .unwrap();
    }
    let declared = start.elapsed().as_secs_f64();
    let after = broker_memory();
    let start = Instant::now();
    for process in &processes {
        process.kill("done");
    }
    for process in processes {
        process.wait().unwrap();
    }
    let ended = start.elapsed().as_secs_f64();
    let per_process = after.saturating_sub(before) as f64 / TEN_THOUSAND as f64;
    (declared, ended, per_process as u64)
}

fn plumpy(rounds: usize) -> Option<Value> {
    let Some(python) = std::env::var_os("RUNTIME_THREAD_PYTHON") else {
        println!("plumpy baseline skipped: RUNTIME_THREAD_PYTHON is not set");
        return None;
    };
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/plumpy_control_bench.py"
    );
    let output = Os::new(python)
        .args([script, &url(), &SLOTS.to_string(), &rounds.to_string()])
        .output()
        .unwrap();
    if !output.status.success() {
        println!(
            "plumpy baseline failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

fn main() {
    if let Ok(prefix) = std::env::var("CONTROL_BENCH_WORKER") {
        return serve(&prefix);
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then only check it runs.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("CONTROL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);

    // In process: silent and listening, alternating.
    let thread = Arc::new(RuntimeThread::builder().name("bench").start().unwrap());
    let silent = Runner::builder().thread(thread.clone()).start().unwrap();
    let listening = Runner::builder()
        .thread(thread.clone())
        .watcher(Listening::new(LocalCommunicator::new(), &thread).unwrap())
        .start()
        .unwrap();
    run_in_process(&silent);
    run_in_process(&listening);
    let (mut quiet, mut heard, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..(rounds * 3) {
        let (q, h) = (run_in_process(&silent), run_in_process(&listening));
        quiet.push(q);
        heard.push(h);
        ratios.push(h / q);
    }
    println!(
        "in process: silent {:.0}/s, listening {:.0}/s, listening/silent {:.2} (median of paired rounds)",
        median(quiet),
        median(heard),
        median(ratios)
    );

    if url().is_empty() {
        println!(
            "RUNTIME_THREAD_AMQP_URL is not set: the RabbitMQ figures need the project's node \
             (`export RUNTIME_THREAD_AMQP_URL=$(scripts/rabbitmq start)`)"
        );
        return;
    }
    if args.iter().any(|a| a == "--ten-thousand") {
        let (declared, ended, bytes) = ten_thousand();
        println!(
            "10,000 listening over RabbitMQ: all subscribed and waiting after {declared:.1} s, \
             all killed and unsubscribed after {ended:.1} s, broker memory +{bytes} B per process"
        );
    }
    let mut figures: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for _ in 0..rounds {
        figures[0].push(pause_play(&thread));
        figures[1].push(launches(&thread, 1, false));
        figures[2].push(launches(&thread, 4, false));
        figures[3].push(launches(&thread, 1, true));
        figures[4].push(launches(&thread, 4, true));
    }
    let theirs = plumpy(rounds);
    let figure = |name: &str| theirs.as_ref().and_then(|t| t[name].as_f64());
    println!("| figure | runtime-thread | plumpy + kiwipy | ratio |");
    println!("|---|---:|---:|---:|");
    let rows = [
        (
            "pause then play (µs, lower is better)",
            "pause_play_us",
            true,
        ),
        (
            "launch, silent, 1 worker (processes/s)",
            "launch_per_s_1",
            false,
        ),
        (
            "launch, silent, 4 workers (processes/s)",
            "launch_per_s_4",
            false,
        ),
        (
            "launch, listening, 1 worker (processes/s)",
            "launch_listening_per_s_1",
            false,
        ),
        (
            "launch, listening, 4 workers (processes/s)",
            "launch_listening_per_s_4",
            false,
        ),
    ];
    for ((label, name, lower_is_better), ours) in rows.into_iter().zip(figures) {
        let ours = median(ours);
        match figure(name) {
            Some(theirs) => {
                let ratio = if lower_is_better {
                    theirs / ours
                } else {
                    ours / theirs
                };
                println!("| {label} | {ours:.0} | {theirs:.0} | {ratio:.1}x |");
            }
            None => println!("| {label} | {ours:.0} | - | - |"),
        }
    }
}
