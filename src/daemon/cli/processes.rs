//! `process ...`: the processes, in the store and on the workers.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::Context;
use super::args::ProcessCommand;
use super::exit::{Exit, Failure};
use crate::RuntimeThread;
use crate::control::{ControlError, SyncController};
use crate::daemon::{DaemonConfig, DaemonError};
use crate::daemon::{broker, store};
use crate::engine::{Checkpoint, Persister};
use crate::messaging::amqp::AmqpCommunicator;

/// How long a request to a process may take.
const REQUEST: Duration = Duration::from_secs(10);
/// How often the progress line of `submit --wait` is redrawn (a display, not a wait: the
/// answer itself ends the wait).
const REDRAW: Duration = Duration::from_millis(200);

pub(super) fn run(context: &Context<'_>, command: ProcessCommand) -> Result<(), Failure> {
    match command {
        ProcessCommand::List => list(context),
        ProcessCommand::Status { pid } => status(context, pid),
        ProcessCommand::Pause { pid, message } => {
            let remote = Remote::connect(&context.config)?;
            let done = remote.controller.pause(pid, message.as_deref())?;
            steered(context, pid, "paused", done)
        }
        ProcessCommand::Play { pid } => {
            let remote = Remote::connect(&context.config)?;
            let done = remote.controller.play(pid)?;
            steered(context, pid, "played", done)
        }
        ProcessCommand::Kill {
            pid,
            message,
            force,
        } => {
            let remote = Remote::connect(&context.config)?;
            let done = remote.controller.kill(pid, message.as_deref(), force)?;
            steered(context, pid, "killed", done)
        }
        ProcessCommand::Submit {
            type_name,
            inputs,
            wait,
            timeout,
        } => submit(context, &type_name, &inputs, wait.then_some(timeout)),
    }
}

/// A controller over the configured broker, on a thread of its own.
struct Remote {
    controller: SyncController<AmqpCommunicator>,
    _thread: Arc<RuntimeThread>,
}

impl Remote {
    fn connect(config: &DaemonConfig) -> Result<Self, Failure> {
        let thread = Arc::new(
            RuntimeThread::builder()
                .name("cli")
                .start()
                .map_err(DaemonError::from)?,
        );
        let comm = broker::connect(&thread, config, None)?;
        let controller = SyncController::new(comm, thread.clone())
            .with_queue(config.queue.clone())
            .with_timeout(REQUEST);
        Ok(Remote {
            controller,
            _thread: thread,
        })
    }
}

fn steered(context: &Context<'_>, pid: Uuid, done: &str, happened: bool) -> Result<(), Failure> {
    if !happened {
        return Err(Failure::new(
            Exit::Failed,
            format!("process {pid} was not {done}: it has ended, or is {done} already"),
        ));
    }
    context
        .out
        .show(|| format!("{pid} {done}"), json!({"pid": pid, done: true}));
    Ok(())
}

fn list(context: &Context<'_>) -> Result<(), Failure> {
    let checkpoints = read_store(&context.config)?;
    let rows: Vec<Value> = checkpoints.iter().map(row).collect();
    context.out.show(
        || {
            if rows.is_empty() {
                return format!("no processes in {}", context.config.store_shown());
            }
            let mut text = format!(
                "{:<36}  {:<24} {:<10} {}\n",
                "PID", "TYPE", "STATE", "PARENT"
            );
            for row in &rows {
                text.push_str(&format!(
                    "{:<36}  {:<24} {:<10} {}\n",
                    row["pid"].as_str().unwrap_or_default(),
                    row["type"].as_str().unwrap_or_default(),
                    format!(
                        "{}{}",
                        row["state"].as_str().unwrap_or_default(),
                        if row["paused"] == true {
                            " (paused)"
                        } else {
                            ""
                        }
                    ),
                    row["parent"].as_str().unwrap_or("-")
                ));
            }
            text.push_str(&format!("{} processes", rows.len()));
            text
        },
        Value::Array(rows.clone()),
    );
    Ok(())
}

/// The configured store, if there is one to read: a database, or a SQLite file that exists
/// (a daemon that never ran has none, and that is not an error).
fn open_store(config: &DaemonConfig) -> Result<Option<Arc<dyn Persister>>, Failure> {
    if config.store_url.is_none() && !config.store.exists() {
        return Ok(None);
    }
    Ok(Some(store::open(config, "command line")?))
}

/// Every checkpoint in the store, oldest first; one that cannot be read is skipped (a worker
/// may delete it meanwhile).
fn read_store(config: &DaemonConfig) -> Result<Vec<Checkpoint>, Failure> {
    let Some(store) = open_store(config)? else {
        return Ok(Vec::new());
    };
    let pids = store.list().map_err(|source| DaemonError::Store {
        at: config.store_shown(),
        source,
    })?;
    let mut checkpoints: Vec<Checkpoint> = pids
        .into_iter()
        .filter_map(|pid| store.load(pid).ok())
        .collect();
    checkpoints.sort_by_key(|c| c.ctime);
    Ok(checkpoints)
}

fn row(checkpoint: &Checkpoint) -> Value {
    json!({
        "pid": checkpoint.pid,
        "type": checkpoint.type_name,
        "state": checkpoint.state.to_string(),
        "paused": checkpoint.paused,
        "parent": checkpoint.parent,
        "created": seconds(checkpoint.ctime),
    })
}

fn status(context: &Context<'_>, pid: Uuid) -> Result<(), Failure> {
    let remote = Remote::connect(&context.config)?;
    match remote.controller.status(pid) {
        Ok(status) => {
            let value = json!({
                "pid": pid,
                "running": true,
                "state": status.state.to_string(),
                "paused": status.paused,
                "process": status.process_string,
                "created": seconds(status.ctime),
            });
            context.out.show(
                || {
                    let paused = if status.paused { ", paused" } else { "" };
                    format!("{pid} {} (on a worker{paused})", status.process_string)
                },
                value,
            );
            Ok(())
        }
        Err(ControlError::NoSuchProcess { .. }) => saved_status(context, pid),
        Err(other) => Err(other.into()),
    }
}

/// A process no worker runs: what the store says of it.
fn saved_status(context: &Context<'_>, pid: Uuid) -> Result<(), Failure> {
    let saved = open_store(&context.config)?.and_then(|store| store.load(pid).ok());
    let Some(saved) = saved else {
        return Err(Failure::new(
            Exit::NoSuchProcess,
            format!(
                "no process {pid}: no worker runs it and the store {} does not hold it (it \
                 has ended and its outcome was handed over, or it never existed)",
                context.config.store_shown()
            ),
        ));
    };
    let mut value = row(&saved);
    value["running"] = false.into();
    context.out.show(
        || {
            format!(
                "{pid} {} saved as {}, not running on any worker now (its task is queued, or \
                 a worker continues it soon)",
                saved.type_name, saved.state
            )
        },
        value,
    );
    Ok(())
}

fn submit(
    context: &Context<'_>,
    type_name: &str,
    inputs: &str,
    wait: Option<f64>,
) -> Result<(), Failure> {
    let inputs: Value = serde_json::from_str(inputs).map_err(|e| {
        Failure::new(
            Exit::Usage,
            format!("--inputs is not JSON: {e} (give an object, such as '{{\"x\": 3}}')"),
        )
    })?;
    if !inputs.is_object() {
        return Err(Failure::new(
            Exit::Usage,
            "--inputs must be a JSON object of the process's inputs, such as '{\"x\": 3}'",
        ));
    }
    let remote = Remote::connect(&context.config)?;
    let Some(timeout) = wait else {
        let pid = remote.controller.submit(type_name, inputs)?;
        context
            .out
            .show(|| pid.to_string(), json!({"pid": pid, "type": type_name}));
        return Ok(());
    };
    let timeout = Duration::try_from_secs_f64(timeout)
        .map_err(|e| Failure::new(Exit::Usage, format!("--timeout: {e}")))?;
    let pid = remote.controller.create(type_name, inputs)?;
    let progress = Progress::show(pid, type_name, !context.out.json);
    let ended = remote
        .controller
        .with_timeout(timeout)
        .continue_process(pid);
    progress.end();
    let outputs: Map<String, Value> = ended?.into_iter().collect();
    let value = json!({"pid": pid, "type": type_name, "outputs": outputs});
    context.out.show(
        || {
            let outputs =
                serde_json::to_string_pretty(&outputs).unwrap_or_else(|_| "{}".to_owned());
            format!("{pid} finished; outputs:\n{outputs}")
        },
        value,
    );
    Ok(())
}

/// A line on a terminal's stderr that says what is being waited for, and for how long.
struct Progress {
    stop: Option<mpsc::Sender<()>>,
    drawing: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn show(pid: Uuid, type_name: &str, wanted: bool) -> Self {
        if !wanted || !std::io::stderr().is_terminal() {
            return Progress {
                stop: None,
                drawing: None,
            };
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let what = format!("{type_name} {pid}");
        let drawing = std::thread::spawn(move || {
            let start = Instant::now();
            let frames = ['|', '/', '-', '\\'];
            let mut frame = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REDRAW) {
                frame = (frame + 1) % frames.len();
                eprint!(
                    "\r{} waiting for {what}: {:.0} s ",
                    frames[frame],
                    start.elapsed().as_secs_f64()
                );
            }
            eprint!("\r\x1b[2K");
        });
        Progress {
            stop: Some(stop),
            drawing: Some(drawing),
        }
    }

    fn end(mut self) {
        drop(self.stop.take());
        if let Some(drawing) = self.drawing.take() {
            let _ = drawing.join();
        }
    }
}

fn seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
