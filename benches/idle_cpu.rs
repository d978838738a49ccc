//! e. CPU used by an idle, started runtime thread over one second, against a bare tokio runtime
//! thread in the same run. Criterion plans its iterations from the durations it is given, and this
//! figure is CPU time per wall second, so it has its own small harness: ROUNDS windows of one
//! second each, after a burst of work (so any spin after activity is counted), median reported.
//!
//! With the `amqp` feature and the project's broker (`RUNTIME_THREAD_AMQP_URL`), also a
//! communicator waiting in `next_task` on an empty queue, against the same communicator idle.

use std::time::Duration;

use runtime_thread::RuntimeThread;

mod common;
use common::RawRuntimeThread;

const ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_secs(1);

/// User + system CPU time of the whole process.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass, which is plain data.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let to_duration = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    to_duration(usage.ru_utime) + to_duration(usage.ru_stime)
}

/// CPU used by the process while the main thread sleeps through one window.
fn idle_window() -> Duration {
    let before = process_cpu();
    std::thread::sleep(WINDOW);
    process_cpu() - before
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percent(cpu: Duration) -> f64 {
    100.0 * cpu.as_secs_f64() / WINDOW.as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that run short.
    if !std::env::args().any(|a| a == "--bench") {
        println!("idle_cpu: skipped outside `cargo bench`");
        return;
    }

    let baseline = {
        let raw = RawRuntimeThread::start();
        let samples = (0..ROUNDS)
            .map(|_| {
                let _ = futures::executor::block_on(raw.handle.spawn(async { 1 }));
                idle_window()
            })
            .collect();
        median(samples)
    };

    let ours = {
        let rt = RuntimeThread::builder().start().unwrap();
        let samples = (0..ROUNDS)
            .map(|_| {
                for i in 0..1_000 {
                    rt.run_threadsafe(async move { i }).wait().unwrap();
                }
                idle_window()
            })
            .collect();
        rt.stop().unwrap();
        median(samples)
    };

    println!("e_idle_cpu (median of {ROUNDS} one-second windows after a burst of work)");
    println!(
        "  bare tokio runtime thread: {:>9.1?} CPU per second = {:.4}%",
        baseline,
        percent(baseline)
    );
    println!(
        "  RuntimeThread:             {:>9.1?} CPU per second = {:.4}%",
        ours,
        percent(ours)
    );
    #[cfg(feature = "amqp")]
    waiting_pull();
}

/// CPU of a RabbitMQ communicator waiting in `next_task` on an empty queue, against the same
/// communicator doing nothing, in the same run.
#[cfg(feature = "amqp")]
fn waiting_pull() {
    use runtime_thread::messaging::Communicator;
    use runtime_thread::messaging::amqp::{self, AmqpConfig};

    let Ok(url) = std::env::var("RUNTIME_THREAD_AMQP_URL") else {
        println!("  (no RUNTIME_THREAD_AMQP_URL: the waiting-pull rows need the project's broker)");
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string();
    let config = AmqpConfig::new()
        .url(url)
        .message_exchange(format!("idle-{run}.messages"))
        .task_exchange(format!("idle-{run}.tasks"))
        .task_queue_prefix(format!("idle-{run}."))
        .testing_mode(true);
    let comm = amqp::connect_with(config).unwrap();
    let idle = median((0..ROUNDS).map(|_| idle_window()).collect());
    let pull = comm.next_task("empty", Duration::from_secs(3600));
    let waiting = median((0..ROUNDS).map(|_| idle_window()).collect());
    comm.close();
    drop(pull);
    println!(
        "  RabbitMQ communicator, idle: {:>9.1?} CPU per second = {:.4}%",
        idle,
        percent(idle)
    );
    println!(
        "  ... waiting in next_task:   {:>9.1?} CPU per second = {:.4}%",
        waiting,
        percent(waiting)
    );
}
