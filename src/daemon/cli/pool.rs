//! `daemon ...`: the supervisor and its workers.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Context;
use super::args::DaemonCommand;
use super::exit::{Exit, Failure};
use crate::RuntimeThread;
use crate::control::Launcher;
use crate::daemon::broker;
use crate::daemon::detach::{self, Started};
use crate::daemon::pid_file::{PidFile, PidFileState};
use crate::daemon::{ControlClient, DaemonConfig, DaemonError, Supervisor, Worker};
use crate::messaging::Communicator;

/// How long a control request may take (all but `quit`, which waits for the workers).
const REQUEST: Duration = Duration::from_secs(10);
/// How long `daemon start` waits for the supervisor to say its workers run.
const READY: Duration = Duration::from_secs(30);
/// How long `daemon start` gives the broker to answer.
const BROKER: Duration = Duration::from_secs(5);

pub(super) fn run(context: &Context<'_>, command: DaemonCommand) -> Result<(), Failure> {
    match command {
        DaemonCommand::Start {
            workers,
            foreground,
        } => start(
            context,
            workers.unwrap_or(context.config.workers),
            foreground,
        ),
        DaemonCommand::Stop => stop(context),
        DaemonCommand::Status => status(context),
        DaemonCommand::Incr { n } => resize(context, "incr", n),
        DaemonCommand::Decr { n } => resize(context, "decr", n),
        DaemonCommand::Restart => restart(context),
        DaemonCommand::Logs { lines } => logs(context, lines),
        DaemonCommand::Worker => worker(context),
    }
}

fn start(context: &Context<'_>, workers: usize, foreground: bool) -> Result<(), Failure> {
    let config = &context.config;
    refuse_if_running(config)?;
    check_broker(config)?;
    make_directories(config)?;
    if foreground {
        return serve(context, workers);
    }
    let mut command = Command::new(current_exe()?);
    if let Some(file) = &context.file {
        command.arg("--config").arg(file);
    }
    command.args(["daemon", "start", &workers.to_string(), "--foreground"]);
    match detach::start_detached(command, &config.log_file, READY)? {
        Started::Ready(details) => {
            let details: Value = serde_json::from_str(&details).unwrap_or(Value::Null);
            let shown = details.clone();
            context.out.show(
                move || {
                    format!(
                        "daemon started: supervisor pid {}, workers {}\n  log: {}\n  control socket: {}",
                        shown["pid"],
                        shown["workers"],
                        config.log_file.display(),
                        config.control_socket.display()
                    )
                },
                details,
            );
            Ok(())
        }
        Started::Failed(why) => Err(Failure::new(
            Exit::Failed,
            format!("the daemon could not start: {why}"),
        )),
        Started::Silent(why) => Err(Failure::new(
            Exit::Failed,
            format!(
                "the daemon did not start: {why}. The end of its log ({}):\n{}",
                config.log_file.display(),
                tail(&config.log_file, 10).unwrap_or_default()
            ),
        )),
    }
}

/// The supervisor itself, in this process, until it is told to quit.
fn serve(context: &Context<'_>, workers: usize) -> Result<(), Failure> {
    let config = &context.config;
    let ready = detach::ready_pipe();
    let started = supervise(context, workers);
    let supervisor = match started {
        Ok(supervisor) => supervisor,
        Err(error) => {
            detach::announce(ready, Err(&error.to_string()));
            return Err(error.into());
        }
    };
    let running = supervisor.status();
    let details = json!({"pid": std::process::id(), "workers": running.pids()});
    if ready.is_some() {
        detach::announce(ready, Ok(&details.to_string()));
    } else {
        context.out.show(
            || {
                format!(
                    "daemon running in the foreground: supervisor pid {}, workers {:?}; \
                     Ctrl-C stops it\n  log: {}",
                    std::process::id(),
                    running.pids(),
                    config.log_file.display()
                )
            },
            details,
        );
    }
    let last = supervisor.join()?;
    println!("daemon stopped ({} workers started in all)", last.started);
    Ok(())
}

fn supervise(context: &Context<'_>, workers: usize) -> Result<Supervisor, DaemonError> {
    let config = &context.config;
    let mut args = Vec::new();
    if let Some(file) = &context.file {
        args.push(std::ffi::OsString::from("--config"));
        args.push(file.clone().into_os_string());
    }
    args.extend(["daemon".into(), "worker".into()]);
    let program = std::env::current_exe().map_err(|source| DaemonError::Config {
        what: "this program's path".to_owned(),
        why: source.to_string(),
    })?;
    let mut builder = Supervisor::builder(program);
    for service in &config.services {
        if let Some((program, args)) = service.command.split_first() {
            builder = builder.service(service.name.clone(), program, args);
        }
    }
    let supervisor = builder
        .args(args)
        .workers(workers)
        .grace_period(config.grace())
        .log_file(&config.log_file)
        .control_socket(&config.control_socket)
        .pid_file(&config.pid_file)
        .quit_on_signals()
        .start()?;
    // Started (not yet connected): a worker that cannot start shows as a failure here.
    supervisor.wait_for(move |s| s.workers.len() >= workers || s.failures > 0, READY)?;
    Ok(supervisor)
}

fn refuse_if_running(config: &DaemonConfig) -> Result<(), Failure> {
    if ControlClient::connect(&config.control_socket, REQUEST).is_ok() {
        return Err(DaemonError::AlreadyRunning {
            path: config.control_socket.clone(),
        }
        .into());
    }
    match PidFile::probe(&config.pid_file) {
        PidFileState::Held(pid) => Err(DaemonError::PidFileHeld {
            path: config.pid_file.clone(),
            pid,
        }
        .into()),
        PidFileState::StaleRemoved(pid) => {
            eprintln!(
                "note: removed a stale pid file {} (its supervisor{} died without removing it)",
                config.pid_file.display(),
                pid.map(|p| format!(", pid {p},")).unwrap_or_default()
            );
            Ok(())
        }
        PidFileState::Absent => Ok(()),
    }
}

/// Workers are separate processes that need the broker: without one they could not work.
fn check_broker(config: &DaemonConfig) -> Result<(), Failure> {
    let thread = RuntimeThread::builder()
        .name("broker-check")
        .start()
        .map_err(DaemonError::from)?;
    let comm = broker::connect(&thread, config, Some(BROKER))?;
    let _ = thread
        .run_threadsafe(async move { comm.close().await })
        .wait();
    Ok(())
}

fn make_directories(config: &DaemonConfig) -> Result<(), Failure> {
    for file in [&config.store, &config.log_file, &config.pid_file] {
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Failure::new(
                    Exit::Failed,
                    format!("cannot make the directory {}: {e}", dir.display()),
                )
            })?;
        }
    }
    Ok(())
}

fn stop(context: &Context<'_>) -> Result<(), Failure> {
    let config = &context.config;
    let wait = config.grace() + REQUEST;
    let mut client = connect(config, wait)?;
    let supervisor = client.request("dstats", json!({}))?["supervisor"]["pid"]
        .as_u64()
        .and_then(|pid| u32::try_from(pid).ok());
    // Opened before the quit, so that even a quick exit is seen.
    let exit = supervisor.and_then(ProcessExit::watch);
    let last = client.request("quit", json!({"waiting": true}))?;
    drop(client);
    if let Some(exit) = exit
        && !exit.wait(REQUEST)
    {
        return Err(Failure::new(
            Exit::Timeout,
            format!(
                "the workers have stopped, but the supervisor (pid {}) has not exited within {REQUEST:?}",
                supervisor.unwrap_or_default()
            ),
        ));
    }
    context.out.show(
        || "daemon stopped: every worker has exited".to_owned(),
        json!({"stopped": true, "last": last}),
    );
    Ok(())
}

fn status(context: &Context<'_>) -> Result<(), Failure> {
    let config = &context.config;
    let mut client = connect(config, REQUEST)?;
    let status = client.request("status", json!({}))?;
    let stats = client.request("stats", json!({}))?;
    let supervisor = client.request("dstats", json!({}))?;
    let value = json!({
        "supervisor": supervisor["supervisor"],
        "target": status["target"],
        "workers": stats["workers"],
        "stopping": status["stopping"],
        "failures": status["failures"],
        "backoff_ms": status["backoff_ms"],
        "last_exit": status["last_exit"],
        "started": status["started"],
        "services": status["services"],
        "log": config.log_file,
        "control_socket": config.control_socket,
    });
    let shown = value.clone();
    context.out.show(move || status_text(&shown), value);
    Ok(())
}

fn status_text(status: &Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let up = |started: &Value| uptime(now - started.as_f64().unwrap_or(now));
    let supervisor = &status["supervisor"];
    let workers = status["workers"].as_array().cloned().unwrap_or_default();
    let mut text = format!(
        "daemon running: supervisor pid {}, up {}; {} of {} workers\n",
        supervisor["pid"],
        up(&supervisor["started"]),
        workers.len(),
        status["target"]
    );
    text.push_str("  PID      CPU       MEMORY     UP         RESTARTS\n");
    for worker in &workers {
        text.push_str(&format!(
            "  {:<8} {:<9} {:<10} {:<10} {}\n",
            worker["pid"].to_string(),
            format!("{:.2} s", worker["cpu_seconds"].as_f64().unwrap_or(0.0)),
            megabytes(&worker["memory_bytes"]),
            up(&worker["started"]),
            worker["restarts"]
        ));
    }
    for service in status["services"].as_array().into_iter().flatten() {
        let state = match service["pid"].as_u64() {
            Some(pid) => format!("pid {pid}"),
            None => "not running".to_owned(),
        };
        text.push_str(&format!(
            "  service {}: {state}, {} restarts\n",
            service["name"].as_str().unwrap_or_default(),
            service["restarts"]
        ));
    }
    if let Some(backoff) = status["backoff_ms"].as_u64() {
        text.push_str(&format!(
            "  crash loop: {} quick exits in a row; next start in {:.1} s\n",
            status["failures"],
            backoff as f64 / 1000.0
        ));
    }
    if let Some(last) = status["last_exit"].as_str() {
        text.push_str(&format!("  last exit: {last}\n"));
    }
    text.push_str(&format!(
        "  log: {}",
        status["log"].as_str().unwrap_or_default()
    ));
    text
}

fn resize(context: &Context<'_>, command: &str, n: usize) -> Result<(), Failure> {
    let mut client = connect(&context.config, REQUEST)?;
    let reply = client.request(command, json!({"nb": n}))?;
    let workers = reply["numprocesses"].clone();
    context.out.show(
        || format!("workers: {workers}"),
        json!({"workers": workers}),
    );
    Ok(())
}

fn restart(context: &Context<'_>) -> Result<(), Failure> {
    let mut client = connect(&context.config, REQUEST)?;
    let reply = client.request("restart", json!({}))?;
    let restarted = reply["restarted"].clone();
    context.out.show(
        || format!("{restarted} workers told to stop; their replacements start now"),
        json!({"restarted": restarted}),
    );
    Ok(())
}

fn logs(context: &Context<'_>, lines: usize) -> Result<(), Failure> {
    let path = &context.config.log_file;
    let text = tail(path, lines).map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!(
                "cannot read the log {}: {e} (has the daemon run yet?)",
                path.display()
            ),
        )
    })?;
    let shown = text.clone();
    context.out.show(
        move || shown.trim_end().to_owned(),
        json!({"lines": text.lines().collect::<Vec<_>>()}),
    );
    Ok(())
}

fn worker(context: &Context<'_>) -> Result<(), Failure> {
    let launcher = (context.cli.launcher)(Launcher::builder());
    Worker::new(context.config.clone(), launcher).run()?;
    Ok(())
}

/// A client of the running supervisor; a clear error (and a stale pid file removed) when none
/// runs.
fn connect(config: &DaemonConfig, timeout: Duration) -> Result<ControlClient, Failure> {
    match ControlClient::connect(&config.control_socket, timeout) {
        Ok(client) => Ok(client),
        Err(DaemonError::NotRunning { .. }) => Err(not_running(config)),
        Err(other) => Err(other.into()),
    }
}

fn not_running(config: &DaemonConfig) -> Failure {
    let socket = config.control_socket.display();
    let message = match PidFile::probe(&config.pid_file) {
        PidFileState::Held(pid) => format!(
            "a supervisor{} holds the pid file {}, but nothing answers on {socket}: is it \
             starting, or configured with another control socket?",
            pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
            config.pid_file.display()
        ),
        PidFileState::StaleRemoved(pid) => format!(
            "no daemon is running; removed the stale pid file {} (its supervisor{} died \
             without removing it). Start one with `daemon start`",
            config.pid_file.display(),
            pid.map(|p| format!(", pid {p},")).unwrap_or_default()
        ),
        PidFileState::Absent => format!(
            "no daemon is running (nothing answers on {socket}); start one with `daemon start`"
        ),
    };
    Failure::new(Exit::NotRunning, message)
}

fn current_exe() -> Result<std::path::PathBuf, Failure> {
    std::env::current_exe().map_err(|e| {
        Failure::new(
            Exit::Failed,
            format!("cannot find this program's own path: {e}"),
        )
    })
}

/// The last `lines` lines of the file at `path` (from its last 1 MiB at most).
fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    const WINDOW: u64 = 1 << 20;
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(WINDOW)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    let kept = &all[all.len().saturating_sub(lines)..];
    Ok(kept.iter().map(|line| format!("{line}\n")).collect())
}

fn uptime(seconds: f64) -> String {
    let seconds = seconds.max(0.0) as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

fn megabytes(bytes: &Value) -> String {
    bytes
        .as_u64()
        .map_or_else(|| "?".to_owned(), |b| format!("{:.1} MB", b as f64 / 1e6))
}

/// A process's exit, watched through a pidfd (Linux 5.3+): the kernel says when it exits.
struct ProcessExit(std::os::fd::OwnedFd);

impl ProcessExit {
    fn watch(pid: u32) -> Option<Self> {
        use std::os::fd::FromRawFd;
        // SAFETY: a system call with two integer arguments; a returned descriptor is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: just opened, owned by nothing else.
        Some(ProcessExit(unsafe {
            std::os::fd::OwnedFd::from_raw_fd(fd)
        }))
    }

    /// Waits up to `timeout` for the exit; true once it has happened.
    fn wait(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: poll on one valid pollfd.
        unsafe { libc::poll(&mut poll, 1, millis) > 0 }
    }
}
