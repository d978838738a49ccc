//! The supervisor against circus 0.19 on this machine, measured the same way in the same run
//! (`../shared/baselines/circus_bench.py`, run from here when `RUNTIME_THREAD_PYTHON` names a
//! python with circus, as `scripts/python-venv` makes). Workers are `sleep 1000`, four of them:
//!
//! - respawn: `kill -9` of one worker until its replacement runs (40 kills; circus's at a random
//!   phase of its 1 s check tick, AiiDA's setting);
//! - status: a `status` round trip through the control socket, one client kept open;
//! - start: from starting the supervisor to four workers running;
//! - stop: from asking for the stop until every worker has exited;
//! - the command line's `daemon status` (the example program `18_daemon`, built here in
//!   release mode with the `cli` feature): the wall time of the whole command, process start
//!   to exit, against `circusctl status`.
//!
//! Each in three conditions (both CPUs free, everything pinned to CPU 0 as `taskset -c 0`, and
//! beside a busy thread), circus measured in the same condition (its processes inherit the
//! bench's CPU affinity, and share the machine with the busy thread).
//!
//! Run: `cargo bench --bench daemon`.

use std::process::Command;
use std::time::{Duration, Instant};

use runtime_thread::daemon::{Backoff, ControlClient, Supervisor};

mod common;
use common::Condition;

const KILLS: usize = 40;
const ROUNDS: usize = 5;
const WORKERS: usize = 4;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Four `sleep` workers; the crash-loop policy counts no exit as a crash (`stable_after`
/// zero), so that 40 kills in a row are 40 plain respawns, as circus (which has no such policy)
/// does them. With the default policy the first kill of each worker is replaced as fast.
fn pool() -> Supervisor {
    Supervisor::builder("/bin/sleep")
        .args(["1000"])
        .workers(WORKERS)
        .grace_period(Duration::from_secs(1))
        .backoff(Backoff {
            stable_after: Duration::ZERO,
            ..Backoff::default()
        })
        .start()
        .unwrap()
}

/// Four `sleep` workers, their supervisor answering on `socket`.
fn answering_on(socket: &std::path::Path) -> Supervisor {
    let pool = Supervisor::builder("/bin/sleep")
        .args(["1000"])
        .workers(WORKERS)
        .control_socket(socket)
        .start()
        .unwrap();
    four_running(&pool);
    pool
}

fn four_running(pool: &Supervisor) {
    pool.wait_for(|s| s.workers.len() == WORKERS, Duration::from_secs(10))
        .unwrap();
}

/// Milliseconds from `kill -9` of a worker until its replacement runs (spawn has returned once
/// the new process has exec'd `sleep`).
fn respawns() -> Vec<f64> {
    let pool = pool();
    four_running(&pool);
    let mut times = Vec::with_capacity(KILLS);
    for _ in 0..KILLS {
        let victim = pool.status().pids()[0];
        let start = Instant::now();
        // SAFETY: a plain system call.
        unsafe {
            libc::kill(victim as libc::pid_t, libc::SIGKILL);
        }
        pool.wait_for(
            move |s| s.workers.len() == WORKERS && !s.pids().contains(&victim),
            Duration::from_secs(10),
        )
        .unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    pool.stop().unwrap();
    times
}

/// Milliseconds per `status` round trip through the control socket, one client kept open
/// (circus's persistent-client figure), 1,000 calls.
fn status_round_trips() -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!("bench-daemon-{}", std::process::id()));
    let socket = dir.join("control.sock");
    let pool = answering_on(&socket);
    let mut client = ControlClient::connect(&socket, Duration::from_secs(5)).unwrap();
    let mut times = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let start = Instant::now();
        client.request("status", serde_json::json!({})).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    pool.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    times
}

/// (start to four running, stop to all exited), in milliseconds.
fn start_and_stop() -> (f64, f64) {
    let start = Instant::now();
    let pool = pool();
    four_running(&pool);
    let started = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    pool.stop().unwrap();
    (started, start.elapsed().as_secs_f64() * 1e3)
}

/// Milliseconds per `18_daemon daemon status` (40 runs), from spawning the command to its
/// exit, against a supervisor with four workers.
fn cli_status_walls(program: &std::path::Path) -> Vec<f64> {
    let dir = std::env::temp_dir().join(format!("bench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("control.sock");
    let config = dir.join("daemon.json");
    let settings = serde_json::json!({ "control_socket": socket, "pid_file": dir.join("pid") });
    std::fs::write(&config, settings.to_string()).unwrap();
    let pool = answering_on(&socket);
    let mut times = Vec::with_capacity(40);
    for _ in 0..40 {
        let start = Instant::now();
        let status = Command::new(program)
            .arg("--config")
            .arg(&config)
            .args(["daemon", "status"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(status.success(), "daemon status failed: {status}");
    }
    pool.stop().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    times
}

fn circus() -> Option<serde_json::Value> {
    let python = std::env::var_os("RUNTIME_THREAD_PYTHON")?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/baselines/circus_bench.py"
    );
    if !std::path::Path::new(script).exists() {
        println!("circus baseline skipped: {script} is not here");
        return None;
    }
    let out = std::env::temp_dir().join(format!("circus-{}.json", std::process::id()));
    let status = Command::new(python)
        .args([
            script,
            "--runs",
            "3",
            "--kills",
            "8",
            "--calls",
            "200",
            "--cli-calls",
            "10",
            "--scenarios",
            "respawn,stop,rtt",
        ])
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .ok()?;
    let results = status
        .success()
        .then(|| std::fs::read(&out).ok())
        .flatten()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let _ = std::fs::remove_file(out);
    results
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let cli = build_cli();
    for condition in Condition::ALL {
        let _entered = condition.enter();
        println!("\n{}:", condition.name());
        measure(cli.as_deref());
    }
}

/// The example program `18_daemon`, built in release mode with the `cli` feature.
fn build_cli() -> Option<std::path::PathBuf> {
    let built = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--features", "cli"])
        .args(["--example", "18_daemon"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .ok()?;
    if !built.success() {
        println!("the command line is not measured: 18_daemon did not build");
        return None;
    }
    Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples/18_daemon"))
}

fn measure(cli: Option<&std::path::Path>) {
    let kills = respawns();
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (start, stop) = start_and_stop();
        starts.push(start);
        stops.push(stop);
    }
    let ours = [
        Some(median(kills)),
        Some(median(status_round_trips())),
        Some(median(starts)),
        Some(median(stops)),
        cli.map(|program| median(cli_status_walls(program))),
    ];
    let theirs = circus();
    let find = |path: &[&str]| {
        let mut value = theirs.as_ref()?.get("summary")?;
        for key in path {
            value = value.get(key)?;
        }
        value.as_f64()
    };
    let rows = [
        (
            "kill -9 worker → replacement running (ms)",
            find(&["respawn", "median_ms"]),
        ),
        (
            "`status` round trip, client kept open (ms)",
            find(&["rtt_status", "median_ms"]),
        ),
        (
            "start → 4 workers running (ms)",
            find(&["startup_all_workers", "median_ms"]),
        ),
        (
            "stop → every worker exited (ms)",
            find(&["stop_reply", "median_ms"]),
        ),
        (
            "command line `daemon status`, wall (ms)",
            find(&["circusctl_status_wall", "median_ms"]),
        ),
    ];
    println!("| figure | runtime-thread | circus 0.19 | ratio |");
    println!("|---|---:|---:|---:|");
    for ((label, theirs), ours) in rows.into_iter().zip(ours) {
        let Some(ours) = ours else {
            println!("| {label} | - | - | - |");
            continue;
        };
        match theirs {
            Some(theirs) => println!(
                "| {label} | {ours:.3} | {theirs:.2} | {:.0}x |",
                theirs / ours
            ),
            None => println!("| {label} | {ours:.3} | - | - |"),
        }
    }
    if theirs.is_none() {
        println!("(circus not measured: RUNTIME_THREAD_PYTHON with circus installed is needed)");
    }
}
