//! Memory per waiting process, and a million processes waiting at once.
//!
//! Like the plumpy baseline's memory test: create N processes that wait (for a `resume` that
//! never comes), keep their handles, and divide the growth of the resident set by N. Each kind
//! runs in a fresh child process (this binary re-runs itself), so one measurement's heap does
//! not serve the next. The baseline in the same run is the floor: N bare tokio tasks, each
//! waiting on a oneshot channel, with their join handles kept.
//!
//! Criterion cannot plan iterations from bytes, so this has its own harness:
//! `cargo bench --bench engine_memory` (about half a minute).

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use runtime_thread::RuntimeThread;
use runtime_thread::engine::{
    Chain, ChainContext, Command, Flow, Outline, Process, ProcessState, Runner, StepContext,
    StepError, WorkChain, step,
};

/// A process that waits for a resume.
struct WaitForever;

impl Process for WaitForever {
    async fn step(&mut self, step: &str, _: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "run" => Ok(Command::wait_for_resume("after")),
            _ => Ok(Command::finish()),
        }
    }
}

/// A work chain waiting, through its ctx, on a child that waits for a resume.
struct ChainWaiting;

static CHAIN_WAITING: LazyLock<Outline<ChainWaiting>> =
    LazyLock::new(|| Outline::new([step("start"), step("finish")]));

impl WorkChain for ChainWaiting {
    const TYPE_NAME: &'static str = "bench.ChainWaiting";
    fn outline() -> &'static Outline<Self> {
        &CHAIN_WAITING
    }
    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        if step == "start" {
            let child = wc.launch(WaitForever);
            wc.to_context("never", &child);
        }
        Ok(Flow::Next)
    }
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

/// Processes submitted before waiting for them to be waiting.
const BATCH: usize = 1000;

struct Measured {
    bytes_per_unit: f64,
    build: Duration,
    kill: Option<Duration>,
}

fn measure_engine(kind: &str, n: usize) -> Measured {
    let thread = Arc::new(RuntimeThread::builder().name("memory").start().unwrap());
    let runner = Runner::builder().thread(thread).start().unwrap();
    // Warm the allocator and the runtime up first, so their one-off growth is not counted.
    let warm: Vec<_> = (0..1000).map(|_| runner.submit(WaitForever)).collect();
    for handle in warm {
        while !handle.status().awaiting_resume {
            std::thread::yield_now();
        }
        handle.kill("warm-up");
        handle.wait().unwrap();
    }
    let before = rss_bytes();
    let start = Instant::now();
    // Submitted in batches, each waited for: what is measured is what waiting processes keep,
    // not the high-water mark of a queue of 100,000 submissions not yet started (freed heap
    // stays in the resident set). `BURST=1` in the environment submits all at once instead.
    let batch = if std::env::var_os("BURST").is_some() {
        n
    } else {
        BATCH
    };
    let mut handles = Vec::with_capacity(n);
    while handles.len() < n {
        let from = handles.len();
        for _ in 0..batch.min(n - from) {
            handles.push(match kind {
                "chain" => runner.submit(Chain::new(ChainWaiting)),
                _ => runner.submit(WaitForever),
            });
        }
        for handle in &handles[from..] {
            while handle.status().state != ProcessState::Waiting {
                std::thread::yield_now();
            }
        }
    }
    let build = start.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    let start = Instant::now();
    for handle in &handles {
        handle.kill("done");
    }
    for handle in handles {
        handle.wait().unwrap();
    }
    Measured {
        bytes_per_unit: grown as f64 / n as f64,
        build,
        kill: Some(start.elapsed()),
    }
}

fn measure_tokio(n: usize) -> Measured {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let before = rss_bytes();
    let start = Instant::now();
    let mut senders = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    // The same batches as the processes, each polled until it waits.
    for i in 0..n {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        senders.push(tx);
        tasks.push(runtime.spawn(async move {
            let _ = rx.await;
        }));
        if (i + 1) % BATCH == 0 {
            runtime.block_on(tokio::task::yield_now());
        }
    }
    runtime.block_on(tokio::task::yield_now());
    let build = start.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    drop(senders);
    runtime.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });
    Measured {
        bytes_per_unit: grown as f64 / n as f64,
        build,
        kill: None,
    }
}

fn child(kind: &str, n: usize) {
    let measured = match kind {
        "tokio" => measure_tokio(n),
        _ => measure_engine(kind, n),
    };
    println!(
        "{} {} {}",
        measured.bytes_per_unit,
        measured.build.as_secs_f64(),
        measured.kill.map_or(-1.0, |k| k.as_secs_f64())
    );
}

fn run_child(kind: &str, n: usize) -> (f64, f64, f64) {
    let me = std::env::current_exe().unwrap();
    let output = std::process::Command::new(me)
        .args(["--child", kind, &n.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{kind}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<f64> = text
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields[0], fields[1], fields[2])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, kind, n] = args.as_slice()
        && flag == "--child"
    {
        child(kind, n.parse().unwrap());
        return;
    }
    // `cargo test --benches` runs bench binaries without `--bench`: keep that quick.
    if !args.iter().any(|a| a == "--bench") {
        println!("engine_memory: run with `cargo bench --bench engine_memory`");
        return;
    }
    const SAMPLES: usize = 3;
    println!(
        "kind                                   N  bytes/unit (median of {SAMPLES})  build s  kill s"
    );
    for (label, kind, n) in [
        ("tokio task on a oneshot (baseline)", "tokio", 100_000),
        ("process waiting for a resume", "plain", 100_000),
        ("work chain waiting on a child (x2)", "chain", 100_000),
        ("process waiting for a resume", "plain", 1_000_000),
    ] {
        let mut samples: Vec<(f64, f64, f64)> = (0..SAMPLES).map(|_| run_child(kind, n)).collect();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (bytes, build, kill) = samples[SAMPLES / 2];
        let kill = if kill < 0.0 {
            "-".to_owned()
        } else {
            format!("{kill:.2}")
        };
        println!("{label:<36} {n:>9}  {bytes:>10.0}                   {build:>7.2}  {kill:>6}");
    }
}
