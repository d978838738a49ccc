//! The supervisor with real child processes: a SIGKILLed worker is replaced, a crash loop
//! backs off, resizes go through one queue, a stop leaves nothing, output lines stay whole,
//! and killing the supervisor itself with SIGKILL leaves no worker alive.
#![cfg(target_os = "linux")]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::os::{alive, group_alive, sigkill};
use common::{QUICK, bounded, until};
use runtime_thread::daemon::{Backoff, PoolStatus, Supervisor};

fn sleeper(workers: usize) -> Supervisor {
    Supervisor::builder("/bin/sh")
        .args(["-c", "exec sleep 1000"])
        .workers(workers)
        .grace_period(Duration::from_secs(5))
        .start()
        .unwrap()
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
        let restarts: Vec<u32> = after.workers.iter().map(|w| w.restarts).collect();
        assert_eq!(restarts, [0, 1], "the replacement counts one restart");
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
    say_pids(&pids);
    loop {
        std::thread::park();
    }
}

#[test]
fn a_sigkilled_supervisor_leaves_no_worker_alive_a_second_later() {
    bounded(QUICK, || {
        let (mut supervisor, pids, _) = supervisor_process("child_process_supervisor");
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

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rt-daemon-{}", uuid::Uuid::new_v4().simple()))
}

#[test]
fn the_control_socket_answers_circus_shaped_requests() {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    use runtime_thread::daemon::{ControlClient, DaemonError};
    use serde_json::json;

    bounded(QUICK, || {
        let dir = temp_dir();
        let socket = dir.join("private").join("control.sock");
        let pool = Supervisor::builder("/bin/sleep")
            .args(["1000"])
            .workers(2)
            .control_socket(&socket)
            .start()
            .unwrap();
        let mode = std::fs::metadata(socket.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        pool.wait_for(running(2), QUICK).unwrap();
        let mut client = ControlClient::connect(&socket, Duration::from_secs(5)).unwrap();
        let status = client.request("status", json!({})).unwrap();
        assert_eq!(status["target"], 2);
        assert_eq!(status["workers"].as_array().unwrap().len(), 2);
        assert_eq!(
            client.request("numprocesses", json!({})).unwrap()["numprocesses"],
            2
        );
        let stats = client.request("stats", json!({})).unwrap();
        for worker in stats["workers"].as_array().unwrap() {
            assert!(worker["memory_bytes"].as_u64().unwrap() > 0, "{worker}");
            assert!(worker["cpu_seconds"].as_f64().is_some(), "{worker}");
            assert_eq!(worker["restarts"], 0, "{worker}");
        }
        let dstats = client.request("dstats", json!({})).unwrap();
        assert_eq!(dstats["supervisor"]["pid"], std::process::id());
        assert_eq!(
            client.request("incr", json!({"nb": 2})).unwrap()["numprocesses"],
            4
        );
        assert_eq!(
            client.request("decr", json!({"nb": 3})).unwrap()["numprocesses"],
            1
        );
        assert_eq!(
            client.request("set", json!({"numprocesses": 2})).unwrap()["numprocesses"],
            2
        );
        let before = pool.wait_for(running(2), QUICK).unwrap().pids();
        assert_eq!(
            client.request("restart", json!({})).unwrap()["restarted"],
            2
        );
        pool.wait_for(
            move |s| running(2)(s) && s.pids().iter().all(|p| !before.contains(p)),
            QUICK,
        )
        .unwrap();
        // Errors: a reply, and the connection and the supervisor go on.
        let unknown = client.request("dance", json!({}));
        assert!(
            matches!(&unknown, Err(DaemonError::Refused { reason }) if reason.contains("unknown command 'dance'")),
            "{unknown:?}"
        );
        let bad = client.request("incr", json!({"nb": "two"}));
        assert!(matches!(bad, Err(DaemonError::Refused { .. })), "{bad:?}");
        let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        raw.write_all(b"this is not json\n{\"id\": 7, \"command\": \"numprocesses\"}\n")
            .unwrap();
        let mut replies = BufReader::new(raw).lines();
        let garbage: serde_json::Value =
            serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
        assert_eq!(garbage["status"], "error");
        let fine: serde_json::Value =
            serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
        assert_eq!(
            (fine["id"].clone(), fine["status"].clone()),
            (json!(7), json!("ok"))
        );
        // quit, waiting: answered once every worker has exited.
        let last = client.request("quit", json!({"waiting": true})).unwrap();
        assert_eq!(last["workers"], json!([]));
        assert!(pool.join().unwrap().workers.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn a_second_supervisor_on_a_live_socket_refuses_and_a_stale_socket_is_replaced() {
    use runtime_thread::daemon::DaemonError;

    bounded(QUICK, || {
        let dir = temp_dir();
        let socket = dir.join("control.sock");
        std::fs::create_dir_all(&dir).unwrap();
        // A stale socket file: bound, then its owner gone.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists());
        let first = Supervisor::builder("/bin/sleep")
            .args(["1000"])
            .control_socket(&socket)
            .start()
            .unwrap();
        let second = Supervisor::builder("/bin/sleep")
            .args(["1000"])
            .control_socket(&socket)
            .start();
        assert!(
            matches!(&second, Err(DaemonError::AlreadyRunning { path }) if *path == socket),
            "{second:?}"
        );
        first.stop().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn a_client_ignores_foreign_replies_and_times_out() {
    use std::io::Write;

    use runtime_thread::daemon::{ControlClient, DaemonError};

    bounded(QUICK, || {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("silent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        // A server that answers someone else's request, then nothing.
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = String::new();
            BufReader::new(stream.try_clone().unwrap())
                .read_line(&mut request)
                .unwrap();
            stream
                .write_all(b"{\"id\": \"someone-else\", \"status\": \"ok\"}\n")
                .unwrap();
            stream
        });
        let mut client = ControlClient::connect(&socket, Duration::from_millis(300)).unwrap();
        let answer = client.request("status", serde_json::json!({}));
        assert!(
            matches!(answer, Err(DaemonError::NoAnswer(_))),
            "{answer:?}"
        );
        drop(server.join().unwrap());
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn the_pid_file_is_held_while_the_supervisor_lives_and_a_stale_one_is_taken_over() {
    use runtime_thread::daemon::DaemonError;

    bounded(QUICK, || {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let pid_file = dir.join("daemon.pid");
        // Left by a supervisor that died: nobody holds its lock.
        std::fs::write(&pid_file, "999999\n").unwrap();
        let first = Supervisor::builder("/bin/sleep")
            .args(["1000"])
            .pid_file(&pid_file)
            .start()
            .unwrap();
        let written = std::fs::read_to_string(&pid_file).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        let second = Supervisor::builder("/bin/sleep")
            .args(["1000"])
            .pid_file(&pid_file)
            .start();
        assert!(
            matches!(&second, Err(DaemonError::PidFileHeld { pid: Some(pid), .. }) if *pid == std::process::id()),
            "{second:?}"
        );
        first.stop().unwrap();
        assert!(!pid_file.exists(), "removed at the end");
        let _ = std::fs::remove_dir_all(dir);
    });
}

#[test]
fn quit_right_after_a_respawn_is_never_refused() {
    use runtime_thread::daemon::ControlClient;

    bounded(Duration::from_secs(60), || {
        let dir = temp_dir();
        let socket = dir.join("control.sock");
        for trial in 0..40 {
            let pool = Supervisor::builder("/bin/sleep")
                .args(["1000"])
                .workers(2)
                .control_socket(&socket)
                .start()
                .unwrap();
            let pids = pool.wait_for(running(2), QUICK).unwrap().pids();
            let mut client = ControlClient::connect(&socket, QUICK).unwrap();
            sigkill(pids[0]);
            let last = client.request("quit", serde_json::json!({"waiting": true}));
            let last = last.unwrap_or_else(|e| panic!("trial {trial}: quit refused: {e}"));
            assert_eq!(last["workers"], serde_json::json!([]), "trial {trial}");
            assert!(pool.join().unwrap().workers.is_empty());
            assert!(!alive(pids[1]), "trial {trial}");
        }
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// The supervisor process of the SIGTERM race test: quits on SIGTERM, says so, and exits.
#[test]
#[ignore = "the supervisor process that the SIGTERM race test starts"]
fn child_process_signalled_supervisor() {
    let pool = Supervisor::builder("/bin/sleep")
        .args(["1000"])
        .workers(2)
        .quit_on_signals()
        .start()
        .unwrap();
    let pids = pool.wait_for(running(2), QUICK).unwrap().pids();
    say_pids(&pids);
    let last = pool.join().unwrap();
    println!("quit with {} workers left", last.workers.len());
}

#[test]
fn sigterm_right_after_a_respawn_is_never_lost() {
    bounded(Duration::from_secs(120), || {
        for trial in 0..40 {
            let (mut supervisor, pids, lines) =
                supervisor_process("child_process_signalled_supervisor");
            sigkill(pids[0]);
            // SAFETY: a plain system call.
            unsafe {
                libc::kill(supervisor.id() as libc::pid_t, libc::SIGTERM);
            }
            let rest: Vec<String> = lines.map_while(Result::ok).collect();
            let status = supervisor.wait().unwrap();
            let said = rest
                .iter()
                .any(|line| line.contains("quit with 0 workers left"));
            assert!(
                said && status.success(),
                "trial {trial}: {status}, {rest:?}"
            );
            assert!(!alive(pids[1]), "trial {trial}");
        }
    });
}

#[test]
fn decr_right_after_incr_and_both_pipelined_are_never_refused() {
    use std::io::Write;

    use runtime_thread::daemon::ControlClient;
    use serde_json::{Value, json};

    bounded(Duration::from_secs(60), || {
        let dir = temp_dir();
        let socket = dir.join("control.sock");
        let pool = Supervisor::builder("/bin/sleep")
            .args(["1000"])
            .workers(1)
            .control_socket(&socket)
            .start()
            .unwrap();
        let mut client = ControlClient::connect(&socket, QUICK).unwrap();
        // decr right after incr's reply (AiiDA's test; circus refused 34 of 40).
        for trial in 0..40 {
            let incr = client.request("incr", json!({"nb": 1}));
            assert_eq!(incr.unwrap()["numprocesses"], 2, "trial {trial}");
            let decr = client.request("decr", json!({"nb": 1}));
            assert_eq!(decr.unwrap()["numprocesses"], 1, "trial {trial}");
        }
        // Both on one connection before either reply (two clients at once; circus refused 40
        // of 40).
        let mut raw = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let mut replies = BufReader::new(raw.try_clone().unwrap()).lines();
        for trial in 0..40 {
            let both = format!(
                "{{\"id\": \"i{trial}\", \"command\": \"incr\"}}\n{{\"id\": \"d{trial}\", \"command\": \"decr\"}}\n"
            );
            raw.write_all(both.as_bytes()).unwrap();
            for expected in [format!("i{trial}"), format!("d{trial}")] {
                let reply: Value = serde_json::from_str(&replies.next().unwrap().unwrap()).unwrap();
                assert_eq!(reply["id"], json!(expected), "trial {trial}");
                assert_eq!(reply["status"], "ok", "trial {trial}: {reply}");
            }
        }
        pool.wait_for(running(1), QUICK).unwrap();
        pool.stop().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    });
}

/// What a supervisor process says first: its workers' pids.
fn say_pids(pids: &[u32]) {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    println!("pids {}", pids.join(" "));
}

/// Starts this test binary as the supervisor process `entry` (a `child_process_*` test);
/// returns it, the workers' pids it says, and the rest of its output.
fn supervisor_process(
    entry: &str,
) -> (
    std::process::Child,
    Vec<u32>,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut supervisor = Command::new(std::env::current_exe().unwrap())
        .args([entry, "--exact", "--ignored", "--nocapture"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(supervisor.stdout.take().unwrap()).lines();
    let pids = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let (_, pids) = line.split_once("pids ")?;
            Some(pids.split(' ').map(|p| p.parse().unwrap()).collect())
        })
        .expect("the supervisor names its workers");
    (supervisor, pids, lines)
}

#[test]
fn a_service_starts_before_the_workers_is_replaced_and_stops_after_them() {
    bounded(QUICK, || {
        let dir = std::env::temp_dir().join(format!("rt-service-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let order = dir.join("order");
        // Each says when it is ready for SIGTERM, and when SIGTERM comes, then exits.
        let script = |role: &str| {
            let order = order.display();
            format!(
                "trap 'echo stop {role} >> {order}; exit 0' TERM; echo ready {role} >> {order}; \
                 while :; do sleep 1 & wait $!; done"
            )
        };
        let lines = |prefix: &str| {
            let text = std::fs::read_to_string(&order).unwrap_or_default();
            text.lines()
                .filter(|line| line.starts_with(prefix))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let pool = Supervisor::builder("/bin/sh")
            .args(["-c", &script("worker")])
            .workers(2)
            .service("helper", "/bin/sh", ["-c", &script("service")])
            .grace_period(Duration::from_secs(5))
            .start()
            .unwrap();
        let up = pool
            .wait_for(
                |s| s.workers.len() == 2 && s.services.iter().all(|s| s.pid.is_some()),
                QUICK,
            )
            .unwrap();
        let service = up.services[0].pid.unwrap();
        assert_eq!(up.services[0].name, "helper");
        // Started first: the kernel hands out pids in order (it wraps only past pid_max).
        assert!(up.pids().iter().all(|&worker| worker > service), "{up:?}");

        sigkill(service);
        let replaced = pool
            .wait_for(
                move |s| s.services[0].pid.is_some_and(|pid| pid != service),
                QUICK,
            )
            .unwrap();
        assert_eq!(replaced.services[0].restarts, 1);
        assert!(
            (replaced.services[0].last_exit.as_deref()).is_some_and(|e| e.contains("signal: 9")),
            "{replaced:?}"
        );
        // Resizing concerns the workers only.
        assert_eq!(pool.incr(1).unwrap(), 3);
        let everyone: Vec<u32> = pool
            .wait_for(running(3), QUICK)
            .unwrap()
            .pids()
            .into_iter()
            .chain(replaced.services[0].pid)
            .collect();
        // Every one has set its trap (a shell killed before that could not say it stopped).
        until(|| lines("ready worker").len() == 3 && lines("ready service").len() == 2);

        let last = pool.stop().unwrap();
        assert!(last.services.iter().all(|s| s.pid.is_none()), "{last:?}");
        assert_eq!(
            lines("stop"),
            ["stop worker", "stop worker", "stop worker", "stop service"],
            "the service stops after every worker"
        );
        for pid in everyone {
            assert!(!alive(pid), "{pid} outlived the stop");
        }
        let _ = std::fs::remove_dir_all(dir);
    });
}
