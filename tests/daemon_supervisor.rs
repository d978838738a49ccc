//! The supervisor with real child processes: a SIGKILLed worker is replaced, a crash loop
//! backs off, resizes go through one queue, a stop leaves nothing, output lines stay whole,
//! and killing the supervisor itself with SIGKILL leaves no worker alive.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{QUICK, bounded};
use runtime_thread::daemon::{Backoff, PoolStatus, Supervisor};

fn sleeper(workers: usize) -> Supervisor {
    Supervisor::builder("/bin/sh")
        .args(["-c", "exec sleep 1000"])
        .workers(workers)
        .grace_period(Duration::from_secs(5))
        .start()
        .unwrap()
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether any live process (not a zombie) is in process group `group`.
fn group_alive(group: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the command name: state, ppid, pgrp, ...
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string()
    })
}

fn sigkill(pid: u32) {
    // SAFETY: a plain system call.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

fn running(count: usize) -> impl FnMut(&PoolStatus) -> bool + Send + 'static {
    move |s| s.workers.len() == count && s.stopping == 0
}

#[test]
fn a_sigkilled_worker_is_replaced_at_once() {
    bounded(QUICK, || {
        let pool = sleeper(2);
        let before = pool.wait_for(running(2), QUICK).unwrap().pids();
        let killed = before[0];
        sigkill(killed);
        let after = pool
            .wait_for(
                move |s| s.workers.len() == 2 && !s.pids().contains(&killed),
                QUICK,
            )
            .unwrap();
        assert!(after.pids().contains(&before[1]));
        assert_eq!(after.started, 3);
        assert_eq!(
            after.failures, 1,
            "a worker up for less than 10 s counts as a crash"
        );
        assert!(
            after.last_exit.as_deref().unwrap().contains("signal: 9"),
            "{after:?}"
        );
        pool.stop().unwrap();
    });
}

#[test]
fn a_crash_looping_worker_backs_off_and_says_so() {
    bounded(QUICK, || {
        let start = Instant::now();
        let pool = Supervisor::builder("/bin/false")
            .backoff(Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(160),
                stable_after: Duration::from_secs(10),
            })
            .start()
            .unwrap();
        let looping = pool.wait_for(|s| s.failures >= 5, QUICK).unwrap();
        assert!(looping.backoff.is_some(), "{looping:?}");
        assert!(
            looping
                .last_exit
                .as_deref()
                .unwrap()
                .contains("exit status: 1")
        );
        // Five failures in a row wait 0 + 20 + 40 + 80 ms at least between them: the rate is
        // bounded.
        assert!(start.elapsed() >= Duration::from_millis(140), "{looping:?}");
        let stopped = pool.stop().unwrap();
        assert!(stopped.workers.is_empty());
    });
}

#[test]
fn resizes_pipelined_are_none_of_them_refused() {
    bounded(QUICK, || {
        let pool = sleeper(1);
        for _ in 0..40 {
            assert_eq!(pool.incr(2).unwrap(), 3);
            assert_eq!(pool.decr(2).unwrap(), 1);
        }
        assert_eq!(pool.set_workers(2).unwrap(), 2);
        pool.wait_for(running(2), QUICK).unwrap();
        pool.stop().unwrap();
    });
}

#[test]
fn a_stop_terms_then_kills_each_group_and_leaves_nothing() {
    bounded(QUICK, || {
        // One worker ignores SIGTERM, and starts a grandchild in its group: both must go.
        let pool = Supervisor::builder("/bin/sh")
            .args(["-c", "trap '' TERM; sleep 1000 & wait"])
            .workers(2)
            .grace_period(Duration::from_millis(200))
            .start()
            .unwrap();
        let pids = pool.wait_for(running(2), QUICK).unwrap().pids();
        let stopped = pool.stop().unwrap();
        assert!(stopped.workers.is_empty() && stopped.stopping == 0);
        for pid in pids {
            assert!(!alive(pid), "worker {pid} outlived the stop");
            // Its group (the grandchild `sleep`) is gone too (at most a zombie for init).
            assert!(!group_alive(pid), "the group of {pid} outlived the stop");
        }
    });
}

#[test]
fn output_lines_are_whole_and_carry_time_and_pid() {
    bounded(QUICK, || {
        let dir = std::env::temp_dir().join(format!("rt-daemon-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("workers.log");
        let script = "i=0; while [ $i -lt 300 ]; do echo \"line $i of $$ xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; i=$((i+1)); done; echo done >&2; exec sleep 1000";
        let pool = Supervisor::builder("/bin/sh")
            .args(["-c", script])
            .workers(3)
            .log_file(&log)
            .start()
            .unwrap();
        let pids = pool.wait_for(running(3), QUICK).unwrap().pids();
        // (The log has no notification: read until every worker's last line is there,
        // bounded by the test's watchdog.)
        common::until(|| count(&log, "| done") == 3);
        let text = std::fs::read_to_string(&log).unwrap();
        let mut lines = 0;
        for line in text.lines() {
            let (time, rest) = line.split_at(19);
            assert!(
                time.chars().nth(4) == Some('-') && time.chars().nth(13) == Some(':'),
                "{line}"
            );
            let (pid, content) = rest.trim_start_matches(" [").split_once("] | ").unwrap();
            let pid: u32 = pid.parse().unwrap();
            assert!(pids.contains(&pid), "{line}");
            assert!(
                content == "done"
                    || (content.starts_with("line ")
                        && content.ends_with(&format!("of {pid} {}", "x".repeat(46)))),
                "a line cut or mixed: {line}"
            );
            lines += 1;
        }
        assert_eq!(lines, 3 * 301);
        pool.stop().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    });
}

fn count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .map(|text| text.lines().filter(|l| l.ends_with(needle)).count())
        .unwrap_or(0)
}

/// The supervisor process of the SIGKILL test: starts three workers, prints their pids, and
/// waits to be killed.
#[test]
#[ignore = "the supervisor process that the supervisor SIGKILL test starts"]
fn child_process_supervisor() {
    let pool = sleeper(3);
    let pids = pool.wait_for(running(3), QUICK).unwrap().pids();
    println!(
        "pids {}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    loop {
        std::thread::park();
    }
}

#[test]
fn a_sigkilled_supervisor_leaves_no_worker_alive_a_second_later() {
    bounded(QUICK, || {
        let mut supervisor = Command::new(std::env::current_exe().unwrap())
            .args([
                "child_process_supervisor",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(supervisor.stdout.take().unwrap());
        let pids: Vec<u32> = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                let (_, pids) = line.split_once("pids ")?;
                Some(pids.split(' ').map(|p| p.parse().unwrap()).collect())
            })
            .expect("the supervisor names its workers");
        assert_eq!(pids.len(), 3);
        assert!(pids.iter().all(|&pid| alive(pid)));
        supervisor.kill().unwrap();
        supervisor.wait().unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        // (A poll: the workers are not our children, so nothing notifies us of their end.)
        while pids.iter().any(|&pid| alive(pid)) {
            assert!(
                Instant::now() < deadline,
                "workers alive a second after: {pids:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}
