//! The daemon's command line, through the example program `18_daemon` (which `cargo test`
//! builds with the `cli` feature): refusals and their exit codes without a broker, and, over
//! the project's RabbitMQ node with the SQLite store, a daemon of two workers that runs 50
//! work chains with children to their end while one worker is killed with SIGKILL and another
//! is stopped with SIGTERM, and that leaves no process behind when it stops; and, with the
//! project's PostgreSQL cluster as the store, two workers that run 1,000 work chains with
//! children to their end while one of them is killed.
#![cfg(all(unix, feature = "cli"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::os::{alive, sigkill};
use common::{QUICK, bounded, until};

/// One daemon's files (and broker names), under a short directory of its own: a Unix
/// socket's path must stay short.
struct Daemon {
    dir: PathBuf,
    config: PathBuf,
}

impl Daemon {
    fn new(broker_url: &str) -> Self {
        Self::with(broker_url, json!({}))
    }

    /// A daemon whose settings are the usual ones with `more` (an object) added.
    fn with(broker_url: &str, more: Value) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = PathBuf::from(format!("/tmp/rt-{}", &id[..12]));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("daemon.json");
        let settings = json!({
            "broker_url": broker_url,
            "prefix": format!("test-{id}"),
            "store": dir.join("store.sqlite"),
            "log_file": dir.join("daemon.log"),
            "pid_file": dir.join("daemon.pid"),
            "control_socket": dir.join("run/control.sock"),
            "grace_period": 10,
            "slots": 200,
            "services": [{"name": "keeper", "command": ["/bin/sleep", "1000"]}],
        });
        let mut settings = settings;
        for (name, value) in more.as_object().unwrap() {
            settings[name] = value.clone();
        }
        std::fs::write(&config, settings.to_string()).unwrap();
        Daemon { dir, config }
    }

    /// Runs the program with `args` (after `--config`), its environment free of `SQUARES_*`.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(program());
        command.arg("--config").arg(&self.config).args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SQUARES_") {
                command.env_remove(name);
            }
        }
        command
    }

    /// Starts the program with `args`, its output captured.
    fn spawn(&self, args: &[&str]) -> std::process::Child {
        self.command(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs a command that must succeed with `--json`, and returns its value.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let output = self.run(&all);
        assert!(output.status.success(), "{args:?}: {}", shown(&output));
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The supervisor's pid, from its pid file.
    fn supervisor(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.path("daemon.pid")).ok()?;
        text.trim().parse().ok()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test must not leave a daemon: stop it, then kill what is left.
        if let Some(pid) = self.supervisor() {
            let _ = self.run(&["daemon", "stop"]);
            if alive(pid) {
                sigkill(pid);
            }
        }
        if std::thread::panicking() {
            eprintln!("the daemon's files are kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The example program, built by `cargo test` beside this test's binary.
fn program() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let path = deps
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples/18_daemon");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --features cli --example 18_daemon` \
         (`cargo test --all-features` builds it)",
        path.display()
    );
    path
}

fn shown(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn start_without_a_broker_refuses_and_says_how_to_start_one() {
    bounded(QUICK, || {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let daemon = Daemon::new(&format!("amqp://guest:secret@127.0.0.1:{port}/%2f"));
        let output = daemon.run(&["daemon", "start", "2"]);
        assert_eq!(output.status.code(), Some(5), "{}", shown(&output));
        let said = stderr(&output);
        assert!(said.contains("start RabbitMQ"), "{said}");
        assert!(
            !said.contains("secret"),
            "the password is never shown: {said}"
        );
        assert!(!daemon.path("daemon.pid").exists());
        assert!(!daemon.path("run/control.sock").exists());
    });
}

#[test]
fn without_a_daemon_commands_say_so_and_a_stale_pid_file_is_removed() {
    bounded(QUICK, || {
        let daemon = Daemon::new("amqp://guest:guest@127.0.0.1:1/%2f");
        let output = daemon.run(&["daemon", "status"]);
        assert_eq!(output.status.code(), Some(3), "{}", shown(&output));
        assert!(stderr(&output).contains("no daemon is running"));

        // Left by a supervisor that died: nobody holds its lock.
        std::fs::write(daemon.path("daemon.pid"), "999999\n").unwrap();
        let output = daemon.run(&["daemon", "stop"]);
        assert_eq!(output.status.code(), Some(3), "{}", shown(&output));
        let said = stderr(&output);
        assert!(said.contains("removed the stale pid file"), "{said}");
        assert!(said.contains("999999"), "{said}");
        assert!(!daemon.path("daemon.pid").exists());
    });
}

#[test]
fn bad_settings_and_inputs_are_usage_errors() {
    bounded(QUICK, || {
        let daemon = Daemon::new("amqp://guest:guest@127.0.0.1:1/%2f");
        std::fs::write(&daemon.config, r#"{"wrokers": 2}"#).unwrap();
        let output = daemon.run(&["daemon", "status"]);
        assert_eq!(output.status.code(), Some(2), "{}", shown(&output));
        assert!(stderr(&output).contains("wrokers"), "{}", shown(&output));
        let output = daemon.run(&["daemon", "begin"]);
        assert_eq!(output.status.code(), Some(2), "{}", shown(&output));
    });
}

#[cfg(feature = "amqp")]
mod over_rabbitmq {
    use super::*;
    use common::broker;
    use runtime_thread::messaging::amqp::{AmqpCommunicator, AmqpConfig};
    use runtime_thread::messaging::{Broadcast, BroadcastFilter, BroadcastHandler, Communicator};

    /// How many work chains the end-to-end test submits.
    const CHAINS: usize = 50;

    /// The settings the daemon's config file gives, for the test's own communicator.
    fn amqp_of(daemon: &Daemon) -> AmqpConfig {
        let settings: Value =
            serde_json::from_str(&std::fs::read_to_string(&daemon.config).unwrap()).unwrap();
        let prefix = settings["prefix"].as_str().unwrap();
        AmqpConfig::new()
            .url(broker::url())
            .message_exchange(format!("{prefix}.messages"))
            .task_exchange(format!("{prefix}.tasks"))
            .task_queue_prefix(format!("{prefix}."))
    }

    /// What the store of a stopped daemon holds, checked: no top-level process unfinished.
    /// Outcomes are handed over 100 ms after their answers (at once when a worker stops); a
    /// worker killed meanwhile leaves them there (finished, and answered again by any
    /// `continue`), and leaves the children that a step it did not finish had launched (the
    /// step runs again elsewhere and launches new ones): garbage, but nothing that a process
    /// still needs.
    fn left_in_store(daemon: &Daemon) -> Vec<Value> {
        let listed = daemon.json(&["process", "list"]);
        let rows = listed.as_array().unwrap().clone();
        let unfinished = (rows.iter())
            .filter(|row| row["parent"].is_null() && row["state"] != "finished")
            .count();
        assert_eq!(
            unfinished, 0,
            "top-level processes left unfinished: {rows:?}"
        );
        rows
    }

    fn workers(daemon: &Daemon) -> Vec<u32> {
        let status = daemon.json(&["daemon", "status"]);
        (status["workers"].as_array().unwrap().iter())
            .map(|w| w["pid"].as_u64().unwrap() as u32)
            .collect()
    }

    #[test]
    #[ignore = "needs the project's RabbitMQ node: scripts/test runs it"]
    fn fifty_chains_finish_through_a_sigkill_and_a_sigterm_and_stop_leaves_nothing() {
        bounded(Duration::from_secs(180), || {
            let daemon = Daemon::new(&broker::url());
            let started = daemon.json(&["daemon", "start", "2"]);
            let supervisor = started["pid"].as_u64().unwrap() as u32;
            assert_eq!(daemon.supervisor(), Some(supervisor));
            assert_eq!(started["workers"].as_array().unwrap().len(), 2);

            // A second start refuses, naming the running one.
            let again = daemon.run(&["daemon", "start", "2"]);
            assert_eq!(again.status.code(), Some(4), "{}", shown(&again));
            assert!(stderr(&again).contains("already"), "{}", shown(&again));

            // The end of every process is heard on the daemon's broadcasts.
            let runtime = broker::runtime();
            let comm = runtime
                .block_on(AmqpCommunicator::connect(amqp_of(&daemon)))
                .unwrap();
            let (tell, heard) = mpsc::channel();
            let tell = parking_lot::Mutex::new(tell);
            let finished = BroadcastHandler::sync(move |b: Broadcast| {
                let _ = tell.lock().send(b.sender.unwrap_or_default());
            });
            let filter = BroadcastFilter::new().subject("state_changed.*.finished");
            runtime
                .block_on(comm.add_broadcast_subscriber(filter, finished))
                .unwrap();

            // 50 submissions that wait for their outputs: each is answered by whichever worker
            // ends its chain (or, for a chain that ended just before its worker died, with the
            // outputs it left in the store). The waits differ, so that the chains end over a
            // few seconds, not all at once.
            let submissions: Vec<_> = (0..CHAINS)
                .map(|index| {
                    let inputs = json!({"n": 3, "delay_ms": 1500 + 40 * index}).to_string();
                    // Bounded, so that a lost answer fails the test (and stops the daemon).
                    daemon.spawn(&[
                        "--json",
                        "process",
                        "submit",
                        "squares.Sum",
                        "--inputs",
                        &inputs,
                        "--wait",
                        "--timeout",
                        "90",
                    ])
                })
                .collect();
            // And one that only prints its pid: the store holds it with its children (its
            // wait outlasts this look).
            let submitted = daemon.json(&[
                "process",
                "submit",
                "squares.Sum",
                "--inputs",
                r#"{"n": 2, "delay_ms": 4000}"#,
            ]);
            let lone = submitted["pid"].as_str().unwrap().to_owned();
            let listed = daemon.json(&["process", "list"]);
            let listed: Vec<&str> = (listed.as_array().unwrap().iter())
                .filter_map(|row| row["pid"].as_str())
                .collect();
            assert!(listed.contains(&lone.as_str()), "{listed:?}");

            // Progress: processes finished, chains and their children (200 in all).
            let mut ended = std::collections::HashSet::new();
            let mut wait_for_processes =
                |done: &dyn Fn(&std::collections::HashSet<String>) -> bool| {
                    while !done(&ended) {
                        let pid = heard
                            .recv_timeout(Duration::from_secs(60))
                            .expect("processes go on finishing");
                        ended.insert(pid);
                    }
                };
            wait_for_processes(&|ended| ended.len() >= 20);
            // SIGKILL: the worker's processes are continued elsewhere from their checkpoints.
            let before = workers(&daemon);
            sigkill(before[0]);
            // Replaced (the supervisor reaps at once; this only waits for the reaping).
            until(|| {
                let now = workers(&daemon);
                now.len() == 2 && !now.contains(&before[0])
            });
            // SIGTERM (by `decr`, the oldest first): steps end, the rest go back to the queue.
            wait_for_processes(&|ended| ended.len() >= 60);
            let decr = daemon.json(&["daemon", "decr"]);
            assert_eq!(decr["workers"], 1);
            for submission in submissions {
                let output = submission.wait_with_output().unwrap();
                assert!(output.status.success(), "{}", shown(&output));
                let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
                // 1 + 4 + 9.
                assert_eq!(answer["outputs"]["sum"], 14, "{answer}");
            }

            // The lone one, answered to nobody, ends too.
            wait_for_processes(&|ended| ended.contains(&lone));
            let status = daemon.json(&["daemon", "status"]);
            assert_eq!(status["target"], 1);
            assert!(status["started"].as_u64().unwrap() >= 3, "{status}");
            // Every process ended and its outcome was handed over (to its `--wait`, or to
            // the worker's `continue` for the lone one, 100 ms after its answer: nothing
            // announces that, so this looks until it is so), but for what the killed worker
            // left (see `left_in_store`, after the stop).
            until(|| daemon.run(&["process", "status", &lone]).status.code() == Some(6));
            let log = std::fs::read_to_string(daemon.path("daemon.log")).unwrap();
            assert!(log.contains("worker stopping"), "{log}");
            assert!(log.contains("| worker ready"), "{log}");
            let logs = daemon.json(&["daemon", "logs", "-n", "3"]);
            assert_eq!(logs["lines"].as_array().unwrap().len(), 3);

            let keeper = status["services"][0]["pid"].as_u64().unwrap() as u32;
            assert!(alive(keeper), "{status}");
            let mut everyone = workers(&daemon);
            everyone.push(keeper);
            everyone.extend(&before);
            everyone.push(supervisor);
            let stopped = daemon.run(&["daemon", "stop"]);
            assert!(stopped.status.success(), "{}", shown(&stopped));
            for pid in everyone {
                assert!(!alive(pid), "process {pid} outlived `daemon stop`");
            }
            assert!(!daemon.path("daemon.pid").exists());
            assert!(!daemon.path("run/control.sock").exists());
            let leftovers = left_in_store(&daemon);
            assert!(leftovers.len() <= 10, "{leftovers:?}");
            runtime.block_on(comm.close());
        });
    }

    /// Two workers sharing PostgreSQL and RabbitMQ, 1,000 work chains with children (and plain
    /// processes) submitted at once, as AiiDA submits (created, then continued), one worker
    /// killed with SIGKILL part-way: every submission is answered once, with the right
    /// outputs. The killed worker's tasks come back to the queue; the worker that gets them
    /// finds their processes still held until the dead worker's leases run out, then
    /// continues them from their checkpoints.
    #[cfg(feature = "postgres")]
    #[test]
    #[ignore = "needs the project's RabbitMQ node and PostgreSQL cluster: scripts/test runs them"]
    fn a_thousand_chains_on_two_workers_sharing_postgres_finish_through_a_sigkill() {
        use runtime_thread::control::Controller;

        const SUBMISSIONS: usize = 1_000;
        bounded(Duration::from_secs(240), || {
            let schema = common::postgres::unique_schema();
            let daemon = Daemon::with(
                &broker::url(),
                json!({"store_url": common::postgres::url(), "store_schema": schema}),
            );
            let started = daemon.json(&["daemon", "start", "2"]);
            assert_eq!(started["workers"].as_array().unwrap().len(), 2);
            let runtime = broker::runtime();
            let comm = runtime
                .block_on(AmqpCommunicator::connect(amqp_of(&daemon)))
                .unwrap();
            let controller = Controller::new(comm.clone())
                .with_queue("process.queue")
                .with_timeout(Duration::from_secs(200));

            // A mixed load: chains of 1 to 4 children and lone squares, waits of 20-400 ms.
            let (answer, answers) = mpsc::channel();
            for index in 0..SUBMISSIONS {
                let (controller, answer) = (controller.clone(), answer.clone());
                runtime.spawn(async move {
                    let n = (index % 5) as i64;
                    let delay_ms = 20 + (index * 37) % 380;
                    let (kind, inputs, expected) = if n == 0 {
                        let x = (index % 11) as i64;
                        (
                            "squares.Square",
                            json!({"x": x, "delay_ms": delay_ms}),
                            x * x,
                        )
                    } else {
                        let sum = n * (n + 1) * (2 * n + 1) / 6;
                        ("squares.Sum", json!({"n": n, "delay_ms": delay_ms}), sum)
                    };
                    let outputs = async {
                        let pid = controller.create(kind, inputs).await?;
                        controller.continue_process(pid).await
                    }
                    .await;
                    let _ = answer.send((index, kind, expected, outputs));
                });
            }
            drop(answer);
            let mut answered = vec![0; SUBMISSIONS];
            let mut receive = |count: usize| {
                for _ in 0..count {
                    let (index, kind, expected, outputs) = answers
                        .recv_timeout(Duration::from_secs(60))
                        .unwrap_or_else(|_| {
                            let missing: Vec<usize> =
                                (0..SUBMISSIONS).filter(|i| answered[*i] == 0).collect();
                            panic!("submissions go on being answered; missing {missing:?}")
                        });
                    answered[index] += 1;
                    let outputs = outputs.unwrap_or_else(|e| panic!("{kind} {index}: {e}"));
                    let key = if kind == "squares.Sum" { "sum" } else { "y" };
                    assert_eq!(outputs[key], expected, "{kind} {index}");
                }
            };
            receive(300);
            let before = workers(&daemon);
            sigkill(before[0]);
            receive(SUBMISSIONS - 300);
            assert!(answered.iter().all(|n| *n == 1), "each answered once");

            let now = workers(&daemon);
            assert!(!now.contains(&before[0]), "the killed worker was replaced");

            // Every outcome was handed over, but for what the killed worker left (see
            // `left_in_store`): no top-level process is left unfinished.
            let stopped = daemon.run(&["daemon", "stop"]);
            assert!(stopped.status.success(), "{}", shown(&stopped));
            // How many depends on how far the killed worker's store writer was behind its
            // answers when it died (its queued hand-overs die with it): under the whole test
            // suite's load, up to a second of them (130 seen), a few when the test runs alone.
            let leftovers = left_in_store(&daemon);
            assert!(leftovers.len() <= 300, "{leftovers:?}");
            eprintln!("the store kept {} entries after the kill", leftovers.len());
            runtime.block_on(comm.close());
        });
    }
}
