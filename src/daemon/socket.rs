//! The control socket: one JSON request per line, `{id, command, properties}`, and one reply
//! per line, `{id, status: "ok" | "error", reason?, ...}` (circus's shape), on a Unix socket in
//! a private directory. The server is the supervisor's; [`ControlClient`] is the other end.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::io::{AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::error::DaemonError;
use super::output::read_line;
use super::request::{Request, Resize};
use super::status::PoolStatus;

/// Binds the socket at `path`: its directory made private if new, a stale socket file (no
/// supervisor answers on it) replaced. Called on the supervisor's runtime.
pub(super) fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let failed = |source| DaemonError::Socket {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(DaemonError::AlreadyRunning {
                path: path.to_owned(),
            });
        }
        std::fs::remove_file(path).map_err(failed)?;
    }
    UnixListener::bind(path).map_err(failed)
}

/// What the server reaches the pool through.
pub(super) struct Served {
    pub(super) commands: mpsc::UnboundedSender<Request>,
    pub(super) status: watch::Receiver<PoolStatus>,
    pub(super) since: SystemTime,
    /// The supervisor's runtime, where each connection is served.
    pub(super) runtime: tokio::runtime::Handle,
}

impl Served {
    /// Accepts connections until the pool ends, then removes the socket; each connection is
    /// served by a task of its own.
    pub(super) async fn serve(self, listener: UnixListener, path: PathBuf) {
        let served = std::sync::Arc::new(self);
        let mut ended = served.status.clone();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        served.runtime.spawn(served.clone().connection(stream));
                    }
                    Err(error) => tracing::warn!(%error, "the control socket failed to accept"),
                },
                // The pool's actor has ended: so does the socket.
                changed = ended.changed() => if changed.is_err() {
                    drop(listener);
                    let _ = std::fs::remove_file(&path);
                    return;
                },
            }
        }
    }

    async fn connection(self: std::sync::Arc<Self>, stream: tokio::net::UnixStream) {
        let (read, mut write) = stream.into_split();
        let mut reader = AsyncBufReader::new(read);
        let mut line = Vec::new();
        loop {
            line.clear();
            match read_line(&mut reader, &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let reply = self.answer(&line).await;
            let mut bytes = reply.to_string().into_bytes();
            bytes.push(b'\n');
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }

    /// One reply; a request that cannot be read gets an error reply, and the connection goes on.
    async fn answer(&self, line: &[u8]) -> Value {
        let request: Value = match serde_json::from_slice(line) {
            Ok(request) => request,
            Err(error) => return error_reply(Value::Null, &format!("not JSON: {error}")),
        };
        let id = request.get("id").cloned().unwrap_or(Value::Null);
        let Some(command) = request.get("command").and_then(Value::as_str) else {
            return error_reply(id, "no 'command'");
        };
        let properties = request.get("properties").cloned().unwrap_or(json!({}));
        match self.run(command, &properties).await {
            Ok(mut fields) => {
                fields.insert("id".into(), id);
                fields.insert("status".into(), "ok".into());
                Value::Object(fields)
            }
            Err(reason) => error_reply(id, &reason),
        }
    }

    async fn run(&self, command: &str, properties: &Value) -> Result<Map<String, Value>, String> {
        let count = |name: &str| -> Result<usize, String> {
            match properties.get(name) {
                None => Ok(1),
                Some(value) => value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| format!("'{name}' must be a whole number, not {value}")),
            }
        };
        let fields = match command {
            "status" => status_fields(&self.status.borrow()),
            "numprocesses" => object(json!({"numprocesses": self.status.borrow().workers.len()})),
            "stats" => object(json!({"workers": self.status.borrow().workers.iter()
                .map(|w| {
                    let mut stats = worker_stats(w.pid, w.started);
                    stats["restarts"] = w.restarts.into();
                    stats
                })
                .collect::<Vec<_>>()})),
            "dstats" => object(json!({"supervisor": worker_stats(std::process::id(), self.since)})),
            "incr" => self.resize(Resize::By(signed(count("nb")?))).await?,
            "decr" => self.resize(Resize::By(-signed(count("nb")?))).await?,
            "set" => {
                let to = properties
                    .get("numprocesses")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or("'set' needs 'numprocesses', a whole number")?;
                self.resize(Resize::To(to)).await?
            }
            "restart" => {
                let restarted = self.ask(Request::Restart).await?;
                object(json!({"restarted": restarted}))
            }
            "quit" => {
                let waiting = properties.get("waiting").and_then(Value::as_bool) == Some(true);
                let (reply, last) = oneshot::channel();
                (self.commands.send(Request::Quit(reply))).map_err(|_| "stopping already")?;
                if waiting {
                    let last = last.await.map_err(|_| "stopped meanwhile")?;
                    status_fields(&last)
                } else {
                    Map::new()
                }
            }
            other => {
                return Err(format!(
                    "unknown command '{other}' (known: status, numprocesses, stats, dstats, \
                     incr, decr, set, restart, quit)"
                ));
            }
        };
        Ok(fields)
    }

    async fn resize(&self, resize: Resize) -> Result<Map<String, Value>, String> {
        let target = self.ask(|reply| Request::Resize(resize, reply)).await?;
        Ok(object(json!({"numprocesses": target})))
    }

    async fn ask(
        &self,
        request: impl FnOnce(oneshot::Sender<usize>) -> Request,
    ) -> Result<usize, String> {
        let (reply, answer) = oneshot::channel();
        (self.commands.send(request(reply))).map_err(|_| "the supervisor is stopping")?;
        answer
            .await
            .map_err(|_| "the supervisor is stopping".to_owned())
    }
}

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn error_reply(id: Value, reason: &str) -> Value {
    json!({"id": id, "status": "error", "reason": reason})
}

fn status_fields(status: &PoolStatus) -> Map<String, Value> {
    object(json!({
        "target": status.target,
        "workers": status.pids(),
        "stopping": status.stopping,
        "failures": status.failures,
        "backoff_ms": status.backoff.map(|d| d.as_millis() as u64),
        "last_exit": status.last_exit,
        "started": status.started,
        "services": status.services.iter().map(|service| json!({
            "name": service.name,
            "pid": service.pid,
            "restarts": service.restarts,
            "failures": service.failures,
            "backoff_ms": service.backoff.map(|d| d.as_millis() as u64),
            "last_exit": service.last_exit,
        })).collect::<Vec<_>>(),
    }))
}

/// A process's figures from `/proc` (computed on demand, no helper process): CPU seconds,
/// resident memory, start time.
fn worker_stats(pid: u32, started: SystemTime) -> Value {
    let ticks = proc_cpu_ticks(pid);
    // SAFETY: a plain query of a constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    let resident = std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<u64>().ok());
    json!({
        "pid": pid,
        "cpu_seconds": ticks.map(|t| t as f64 / per_second),
        "memory_bytes": resident.map(|pages| pages * page),
        "started": started.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
    })
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the whole line, 12 and 13 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The client end of a supervisor's control socket: synchronous (a command line needs no
/// runtime), each request bounded by a timeout, replies with another request's id ignored.
///
/// ```
/// use std::time::Duration;
/// use runtime_thread::daemon::{ControlClient, Supervisor};
///
/// let dir = std::env::temp_dir().join(format!("doc-daemon-{}", std::process::id()));
/// let socket = dir.join("control.sock");
/// let pool = Supervisor::builder("/bin/sleep").args(["1000"]).workers(1)
///     .control_socket(&socket)
///     .start()?;
/// let mut client = ControlClient::connect(&socket, Duration::from_secs(2))?;
/// let reply = client.request("incr", serde_json::json!({"nb": 2}))?;
/// assert_eq!(reply["numprocesses"], 3);
/// client.request("quit", serde_json::json!({"waiting": true}))?;
/// pool.join()?;
/// # std::fs::remove_dir_all(dir).ok();
/// # Ok::<(), runtime_thread::daemon::DaemonError>(())
/// ```
#[derive(Debug)]
pub struct ControlClient {
    stream: BufReader<UnixStream>,
    path: PathBuf,
    timeout: Duration,
    next_id: u64,
}

impl ControlClient {
    /// Connects to the socket at `path`; each request then waits up to `timeout`.
    ///
    /// # Errors
    ///
    /// [`DaemonError::NotRunning`] when nobody listens there.
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, DaemonError> {
        let path = path.as_ref().to_owned();
        let stream = UnixStream::connect(&path).map_err(|source| DaemonError::NotRunning {
            path: path.clone(),
            source,
        })?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        Ok(ControlClient {
            stream: BufReader::new(stream),
            path,
            timeout,
            next_id: 0,
        })
    }

    /// Sends `command` with `properties` and returns the reply (`status` ok).
    ///
    /// # Errors
    ///
    /// [`DaemonError::Refused`] for an error reply (its reason); [`DaemonError::NoAnswer`] when
    /// no reply with this request's id comes within the timeout; [`DaemonError::Socket`] when
    /// the connection fails.
    pub fn request(&mut self, command: &str, properties: Value) -> Result<Value, DaemonError> {
        self.next_id += 1;
        let id = format!("{}-{}", std::process::id(), self.next_id);
        let mut line = json!({"id": id, "command": command, "properties": properties}).to_string();
        line.push('\n');
        let failed = |source| DaemonError::Socket {
            path: self.path.clone(),
            source,
        };
        self.stream
            .get_mut()
            .write_all(line.as_bytes())
            .map_err(failed)?;
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let mut reply = String::new();
            match self.stream.read_line(&mut reply) {
                Ok(0) => {
                    return Err(DaemonError::Socket {
                        path: self.path.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    });
                }
                Ok(_) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(DaemonError::NoAnswer(self.timeout));
                }
                Err(source) => {
                    return Err(DaemonError::Socket {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            let Ok(reply) = serde_json::from_str::<Value>(&reply) else {
                continue;
            };
            // Someone else's (an earlier request that timed out): not ours.
            if reply.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                if std::time::Instant::now() >= deadline {
                    return Err(DaemonError::NoAnswer(self.timeout));
                }
                continue;
            }
            if reply.get("status").and_then(Value::as_str) == Some("ok") {
                return Ok(reply);
            }
            let reason = reply
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            return Err(DaemonError::Refused {
                reason: reason.to_owned(),
            });
        }
    }
}
