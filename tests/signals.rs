//! SIGINT/SIGTERM handling. Each case runs in a child process (this test binary re-executed with
//! an environment variable naming the case), so signals never reach the test runner itself.

#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use runtime_thread::{RuntimeThread, StopCause};

const CASE: &str = "RUNTIME_THREAD_SIGNAL_CASE";
const LIMIT: Duration = Duration::from_secs(20);

/// The child processes' entry point; it does nothing in the test runner itself.
#[test]
#[ignore = "entry point of the child processes started by the other tests in this file"]
fn child_process_entry() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    match case.as_str() {
        "graceful" => graceful(),
        "forced" => forced(),
        "restored" => restored(),
        "ignored" => ignored(),
        "two_threads" => two_threads(),
        other => panic!("unknown case {other}"),
    }
}

fn say(line: impl std::fmt::Display) {
    println!("{line}");
}

fn graceful() {
    let rt = RuntimeThread::builder()
        .stop_on_ctrl_c()
        .startup_task("worker", |token| async move {
            token.cancelled().await;
            say("goodbye");
        })
        .start()
        .unwrap();
    say("ready");
    let report = rt.join().unwrap();
    say(format_args!(
        "cause={:?} clean={}",
        report.cause,
        report.is_clean()
    ));
}

fn forced() {
    let rt = RuntimeThread::builder()
        .stop_on_ctrl_c()
        .grace_period(Duration::from_secs(3600))
        .startup_task("stubborn", |token| async move {
            token.cancelled().await;
            say("cancel seen");
            futures::future::pending::<()>().await;
        })
        .start()
        .unwrap();
    say("ready");
    let report = rt.join().unwrap();
    say(format_args!(
        "forced={} aborted={}",
        report.forced,
        report.aborted()
    ));
}

/// Sets SIGINT's disposition before the case runs: a process started in the background by a
/// non-interactive shell (as CI may be) inherits SIGINT ignored.
fn set_sigint(disposition: libc::sighandler_t) {
    // SAFETY: setting a signal's disposition to SIG_DFL or SIG_IGN installs no Rust code.
    let previous = unsafe { libc::signal(libc::SIGINT, disposition) };
    assert_ne!(previous, libc::SIG_ERR);
}

fn restored() {
    set_sigint(libc::SIG_DFL);
    let rt = RuntimeThread::builder().stop_on_ctrl_c().start().unwrap();
    rt.stop().unwrap();
    say("stopped");
    // With the default disposition back, SIGINT ends the process here.
    std::thread::sleep(LIMIT);
    say("still alive");
    std::process::exit(3);
}

fn ignored() {
    set_sigint(libc::SIG_IGN);
    let rt = RuntimeThread::builder().stop_on_ctrl_c().start().unwrap();
    rt.stop().unwrap();
    // raise() runs the handler before it returns, so surviving this line proves SIGINT is still
    // ignored after the thread stopped.
    signal_hook::low_level::raise(libc::SIGINT).unwrap();
    say("survived");
}

fn two_threads() {
    let first = RuntimeThread::builder()
        .name("first")
        .stop_on_ctrl_c()
        .start()
        .unwrap();
    let second = RuntimeThread::builder()
        .name("second")
        .stop_on_ctrl_c()
        .start()
        .unwrap();
    say("ready");
    for rt in [&first, &second] {
        let report = rt.join().unwrap();
        assert!(matches!(report.cause, StopCause::Signal(_)), "{report:?}");
        say(format_args!("{} stopped", rt.name()));
    }
}

/// A running child case, its stdout read line by line on a helper thread.
struct ChildCase {
    child: Child,
    lines: Receiver<String>,
}

impl ChildCase {
    fn start(case: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process_entry",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CASE, case)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildCase { child, lines }
    }

    /// Waits for a line containing `marker` (the test harness may print its own text before it on
    /// the same line); returns the line from the marker on.
    fn expect(&self, marker: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(marker) {
                        return line[at..].to_owned();
                    }
                }
                Err(_) => panic!("the child never printed {marker:?}"),
            }
        }
    }

    fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    fn exit_status(self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        let mut child = self.child;
        let (status_tx, status) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = status_tx.send(child.wait());
        });
        match status.recv_timeout(LIMIT) {
            Ok(status) => status.unwrap(),
            Err(_) => {
                // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the child did not exit");
            }
        }
    }
}

#[test]
fn sigterm_stops_the_thread_gracefully() {
    let case = ChildCase::start("graceful");
    case.expect("ready");
    case.signal(libc::SIGTERM);
    case.expect("goodbye");
    let summary = case.expect("cause=");
    assert_eq!(
        summary,
        format!("cause=Signal({}) clean=true", libc::SIGTERM)
    );
    assert!(case.exit_status().success());
}

#[test]
fn a_second_signal_during_the_grace_period_aborts_at_once() {
    let case = ChildCase::start("forced");
    case.expect("ready");
    case.signal(libc::SIGINT);
    case.expect("cancel seen");
    case.signal(libc::SIGINT);
    assert_eq!(case.expect("forced="), "forced=true aborted=1");
    assert!(case.exit_status().success());
}

#[test]
fn after_the_thread_stops_ctrl_c_ends_the_process_again() {
    use std::os::unix::process::ExitStatusExt;
    let case = ChildCase::start("restored");
    case.expect("stopped");
    case.signal(libc::SIGINT);
    let status = case.exit_status();
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
}

#[test]
fn a_signal_that_was_ignored_stays_ignored_after_the_thread_stops() {
    let case = ChildCase::start("ignored");
    case.expect("survived");
    assert!(case.exit_status().success());
}

#[test]
fn several_runtime_threads_each_hear_the_signal() {
    let case = ChildCase::start("two_threads");
    case.expect("ready");
    case.signal(libc::SIGTERM);
    case.expect("first stopped");
    case.expect("second stopped");
    assert!(case.exit_status().success());
}
