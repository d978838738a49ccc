//! [`Supervisor`]: a resizable pool of worker processes, kept at its size.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use super::backoff::Backoff;
use super::error::DaemonError;
use super::output::WorkerLog;
use super::pid_file::PidFile;
use super::request::{Request, Resize};
use super::socket;
use super::status::{PoolStatus, ServiceStatus, WorkerStatus};
use parking_lot::Mutex;

use crate::{RuntimeThread, TaskHandle};

/// Keeps a pool of identical worker processes at its size, as circus does for AiiDA's
/// `verdi daemon`, without circus's faults:
///
/// - **Event-driven.** A worker's exit is noticed when it happens (the runtime's child
///   reaping, no polling tick) and the worker is replaced at once, unless it keeps failing:
///   then [`Backoff`] spaces the attempts, and the [status](PoolStatus) shows the delay and the
///   last exit.
/// - **One queue of commands.** Resizing and stopping go through one actor, in order: a
///   `decr` right after an `incr` is never refused as "already running".
/// - **No orphans.** Each worker runs in a process group of its own and asks the kernel to
///   kill it when the supervisor's thread dies (`PR_SET_PDEATHSIG`), so not even a SIGKILL of
///   the supervisor leaves workers behind. A stop sends SIGTERM to each group, waits the grace
///   period, then sends SIGKILL; when a worker exits, what it left in its group is killed.
/// - **Output.** With a [log file](SupervisorBuilder::log_file), each line a worker writes to
///   stdout or stderr goes there as `<UTC time> [<pid>] | <line>`, whole.
///
/// ```
/// use std::time::Duration;
/// use runtime_thread::daemon::Supervisor;
///
/// let pool = Supervisor::builder("/bin/sh")
///     .args(["-c", "exec sleep 1000"])
///     .workers(2)
///     .start()?;
/// assert_eq!(pool.incr(1)?, 3);
/// let three = pool.wait_for(|s| s.workers.len() == 3, Duration::from_secs(10))?;
/// println!("workers {:?}", three.pids());
/// let last = pool.stop()?; // SIGTERM, and they exit
/// assert!(last.workers.is_empty());
/// # Ok::<(), runtime_thread::daemon::DaemonError>(())
/// ```
pub struct Supervisor {
    /// Held (locked) while the supervisor lives; removed with it.
    _pid_file: Option<PidFile>,
    /// The control socket's server, which ends (and removes the socket) after the pool.
    socket_server: Mutex<Option<TaskHandle<()>>>,
    thread: RuntimeThread,
    commands: mpsc::UnboundedSender<Request>,
    status: watch::Receiver<PoolStatus>,
}

/// Configures a [`Supervisor`]; made by [`Supervisor::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct SupervisorBuilder {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    workers: usize,
    grace: Duration,
    backoff: Backoff,
    log_file: Option<PathBuf>,
    socket: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    quit_on_signals: bool,
    services: Vec<ServiceSpec>,
}

/// A singleton service: its name, program and arguments.
#[derive(Debug, Clone)]
struct ServiceSpec {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
}

impl Supervisor {
    /// A pool of workers that each run `program` (usually this program's own executable,
    /// `std::env::current_exe()`, with an argument that selects its worker mode).
    pub fn builder(program: impl Into<PathBuf>) -> SupervisorBuilder {
        SupervisorBuilder {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            workers: 1,
            grace: Duration::from_secs(30),
            backoff: Backoff::default(),
            log_file: None,
            socket: None,
            pid_file: None,
            quit_on_signals: false,
            services: Vec::new(),
        }
    }
}

impl SupervisorBuilder {
    /// Adds arguments to the workers' command line.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the workers (they inherit the rest).
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// How many workers to keep running (default 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// How long a stopping worker has between SIGTERM and SIGKILL (default 30 s, circus's).
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The crash-loop policy (default: [`Backoff::default`]).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Appends the workers' output, line by line, to `path` (default: they inherit the
    /// supervisor's stdout and stderr).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Serves the [control socket](super::ControlClient) at `path` (a Unix socket; its
    /// directory is made private, mode 0700, if it does not exist).
    pub fn control_socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// Writes this process's pid to `path` and holds it locked (`flock`) while the supervisor
    /// lives: a second supervisor with the same file refuses to start, naming the first; a file
    /// left by a supervisor that died is unlocked, so it is taken over. Removed at the end.
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.pid_file = Some(path.into());
        self
    }

    /// Adds a singleton service: one process of `program` with `args`, started before the
    /// workers (the supervisor waits until it runs, or has failed to start, before it starts
    /// them), kept running as a worker is (replaced when it exits, with the same backoff), and
    /// stopped after every worker has exited. Services start in the order they are added and
    /// stop in the reverse order. The [status](PoolStatus::services) shows each; resizing and
    /// restarting concern the workers only.
    pub fn service<I, S>(
        mut self,
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        args: I,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.services.push(ServiceSpec {
            name: name.into(),
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Quits the pool (as [`stop`](Supervisor::stop) does) when the process gets SIGTERM or
    /// SIGINT: for a supervisor that is a process of its own, which then ends when
    /// [`join`](Supervisor::join) returns. A signal that comes while a worker is being replaced
    /// is never lost: it is one more request in the pool's queue.
    pub fn quit_on_signals(mut self) -> Self {
        self.quit_on_signals = true;
        self
    }

    /// Starts the supervisor's thread and the workers.
    ///
    /// # Errors
    ///
    /// [`DaemonError::PidFileHeld`] when another supervisor holds the pid file,
    /// [`DaemonError::PidFile`] when it cannot be written; [`DaemonError::Log`] when the log
    /// file cannot be opened; [`DaemonError::AlreadyRunning`]
    /// when a live supervisor answers on the control socket's path, [`DaemonError::Socket`] when
    /// it cannot be bound; [`DaemonError::Thread`] when the supervisor's thread cannot start. A worker that cannot be started is not an error
    /// here: it counts as a failure, and the status shows why.
    pub fn start(self) -> Result<Supervisor, DaemonError> {
        let pid_file = self.pid_file.as_deref().map(PidFile::take).transpose()?;
        let log = match &self.log_file {
            Some(path) => Some(WorkerLog::open(path).map_err(|source| DaemonError::Log {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let self_quits_on_signals = self.quit_on_signals;
        let mut socket_server = None;
        let thread = RuntimeThread::builder().name("supervisor").start()?;
        let (commands, requests) = mpsc::unbounded_channel();
        let services = start_services(&thread, &self, &log, &commands)?;
        let (publish, status) = watch::channel(PoolStatus::new(self.workers));
        if let Some(path) = self.socket.clone() {
            let served = socket::Served {
                commands: commands.clone(),
                status: status.clone(),
                since: SystemTime::now(),
                runtime: thread.handle()?,
            };
            let bound = path.clone();
            let listener = thread
                .run_threadsafe(async move { socket::bind(&bound) })
                .wait()??;
            socket_server = Some(thread.run_threadsafe(served.serve(listener, path)));
        }
        let pool = Pool::new(thread.handle()?, self, log, publish);
        let pool = Pool { services, ..pool };
        thread.spawn_threadsafe(pool.run(requests))?;
        if self_quits_on_signals {
            let quitting = commands.clone();
            let stopping = thread.shutdown_token();
            let listening = thread
                .run_threadsafe(async move { listen_for_quit(quitting, stopping) })
                .wait()?;
            thread
                .spawn_threadsafe(listening.map_err(|source| DaemonError::Signals { source })?)?;
        }
        Ok(Supervisor {
            _pid_file: pid_file,
            socket_server: Mutex::new(socket_server),
            thread,
            commands,
            status,
        })
    }
}

impl Supervisor {
    /// The pool as it is now.
    pub fn status(&self) -> PoolStatus {
        self.status.borrow().clone()
    }

    /// Waits until `condition` holds for the pool's status (checked at each change), up to
    /// `timeout`, and returns that status.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Timeout`] with the last status seen; [`DaemonError::Stopped`] once the
    /// supervisor has stopped.
    pub fn wait_for(
        &self,
        mut condition: impl FnMut(&PoolStatus) -> bool + Send + 'static,
        timeout: Duration,
    ) -> Result<PoolStatus, DaemonError> {
        let mut status = self.status.clone();
        let waited = self.thread.run_threadsafe(async move {
            let found = tokio::time::timeout(timeout, status.wait_for(|s| condition(s)))
                .await
                .map(|found| found.map(|status| status.clone()));
            match found {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(_)) => Err(DaemonError::Stopped),
                Err(_) => Err(DaemonError::Timeout {
                    after: timeout,
                    status: Box::new(status.borrow().clone()),
                }),
            }
        });
        waited.wait()?
    }

    /// Blocks until the pool has ended (a `quit` through the control socket, or
    /// [`stop`](Self::stop) from another handle's thread), and returns its last status.
    ///
    /// # Errors
    ///
    /// The thread's failure.
    pub fn join(&self) -> Result<PoolStatus, DaemonError> {
        let mut status = self.status.clone();
        let ended = self.thread.run_threadsafe(async move {
            while status.changed().await.is_ok() {}
            status.borrow().clone()
        });
        let last = ended.wait()?;
        self.socket_closed()?;
        Ok(last)
    }

    /// Waits until the control socket's server has ended (after the pool), so that the
    /// socket is gone when `join` or `stop` returns.
    fn socket_closed(&self) -> Result<(), DaemonError> {
        if let Some(server) = self.socket_server.lock().take() {
            server.wait()?;
        }
        Ok(())
    }

    /// Adds `n` workers; returns the new size.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Stopped`] once the supervisor is stopping or stopped.
    pub fn incr(&self, n: usize) -> Result<usize, DaemonError> {
        self.ask(|reply| Request::Resize(Resize::By(n as isize), reply))
    }

    /// Stops `n` workers (the oldest first); returns the new size.
    ///
    /// # Errors
    ///
    /// As [`incr`](Self::incr).
    pub fn decr(&self, n: usize) -> Result<usize, DaemonError> {
        self.ask(|reply| Request::Resize(Resize::By(-(n as isize)), reply))
    }

    /// Sets the number of workers; returns it.
    ///
    /// # Errors
    ///
    /// As [`incr`](Self::incr).
    pub fn set_workers(&self, n: usize) -> Result<usize, DaemonError> {
        self.ask(|reply| Request::Resize(Resize::To(n), reply))
    }

    /// Stops every worker (SIGTERM to each process group, then SIGKILL after the grace
    /// period), waits until all have exited, and stops the supervisor's thread. Pre-empts a
    /// resize in progress.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Stopped`] if it had stopped already.
    pub fn stop(self) -> Result<PoolStatus, DaemonError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Request::Quit(reply))
            .map_err(|_| DaemonError::Stopped)?;
        let last = self
            .thread
            .run_threadsafe(async move { answer.await.map_err(|_| DaemonError::Stopped) })
            .wait()??;
        self.socket_closed()?;
        let _ = self.thread.stop();
        Ok(last)
    }

    fn ask(
        &self,
        request: impl FnOnce(oneshot::Sender<usize>) -> Request,
    ) -> Result<usize, DaemonError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(request(reply))
            .map_err(|_| DaemonError::Stopped)?;
        self.thread
            .run_threadsafe(async move { answer.await.map_err(|_| DaemonError::Stopped) })
            .wait()?
    }
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

/// A worker that runs.
struct Worker {
    pid: u32,
    since: Instant,
    started: SystemTime,
    /// Quick exits in a row of the workers it replaces (see [`Backoff`]).
    failures: u32,
    /// How many workers it replaces: one after the other, each replacing the one before.
    restarts: u32,
}

/// A replacement waiting out its backoff.
struct Pending {
    at: tokio::time::Instant,
    failures: u32,
    restarts: u32,
}

/// The actor that owns the pool: every change goes through its loop, in order.
struct Pool {
    spec: SupervisorBuilder,
    /// The singleton services, each a pool of one of its own, stopped after the workers.
    services: Vec<Service>,
    /// For a service's pool: the main pool, told of each change so that its status shows it
    /// (weak, so that services do not keep the main pool alive).
    nudge: Option<mpsc::WeakUnboundedSender<Request>>,
    /// The supervisor's runtime, where the workers' reaping, output and kill timers run.
    runtime: tokio::runtime::Handle,
    log: Option<WorkerLog>,
    /// Running workers, oldest first.
    workers: VecDeque<Worker>,
    /// Replacements of crash-looping workers, waiting to start.
    pending: Vec<Pending>,
    /// Workers told to stop, not yet exited, with their SIGKILL timer (aborted when they exit,
    /// so that a pid reused later is never signalled).
    stopping: Vec<(u32, tokio::task::AbortHandle)>,
    last_exit: Option<String>,
    started: u64,
    publish: watch::Sender<PoolStatus>,
}

/// A worker's exit, as its reaping task reports it.
struct Exit {
    pid: u32,
    status: std::io::Result<ExitStatus>,
}

impl Pool {
    /// A pool with no workers yet, no services and nobody to tell of its changes.
    fn new(
        runtime: tokio::runtime::Handle,
        spec: SupervisorBuilder,
        log: Option<WorkerLog>,
        publish: watch::Sender<PoolStatus>,
    ) -> Self {
        Pool {
            spec,
            services: Vec::new(),
            nudge: None,
            runtime,
            log,
            workers: VecDeque::new(),
            pending: Vec::new(),
            stopping: Vec::new(),
            last_exit: None,
            started: 0,
            publish,
        }
    }

    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let (exited, mut exits) = mpsc::unbounded_channel();
        self.fill(&exited);
        loop {
            let next_start = self.pending.iter().map(|p| p.at).min();
            tokio::select! {
                request = requests.recv() => match request {
                    Some(Request::Resize(resize, reply)) => {
                        self.resize(resize);
                        self.fill(&exited);
                        let _ = reply.send(self.spec.workers);
                    }
                    Some(Request::Restart(reply)) => {
                        let replaced = self.restart();
                        self.fill(&exited);
                        let _ = reply.send(replaced);
                    }
                    Some(Request::Quit(reply)) => {
                        self.quit(&mut exits).await;
                        let _ = reply.send(self.snapshot());
                        return;
                    }
                    // A service changed: the status below shows it.
                    Some(Request::Refresh) => {}
                    // Every handle is gone: stop the workers too.
                    None => {
                        self.quit(&mut exits).await;
                        return;
                    }
                },
                Some(exit) = exits.recv() => {
                    self.exited(exit);
                    self.fill(&exited);
                }
                () = sleep_until(next_start), if next_start.is_some() => self.fill(&exited),
            }
            self.publish();
        }
    }

    fn resize(&mut self, resize: Resize) {
        self.spec.workers = match resize {
            Resize::By(n) => self.spec.workers.saturating_add_signed(n),
            Resize::To(n) => n,
        };
        // Fewer: waiting replacements go first, then the oldest workers.
        while self.workers.len() + self.pending.len() > self.spec.workers {
            if self.pending.pop().is_none()
                && let Some(oldest) = self.workers.pop_front()
            {
                self.terminate(oldest.pid);
            }
        }
    }

    /// Stops every running worker; `fill` starts their successors at once (with no backoff:
    /// they did not fail).
    fn restart(&mut self) -> usize {
        let old: Vec<Worker> = self.workers.drain(..).collect();
        for worker in &old {
            self.terminate(worker.pid);
        }
        old.len()
    }

    /// Starts the replacements whose time has come, and new workers up to the target.
    fn fill(&mut self, exited: &mpsc::UnboundedSender<Exit>) {
        let now = tokio::time::Instant::now();
        let (due, waiting): (Vec<Pending>, Vec<Pending>) =
            self.pending.drain(..).partition(|p| p.at <= now);
        self.pending = waiting;
        for replacement in due {
            self.start(exited, replacement.failures, replacement.restarts);
        }
        while self.workers.len() + self.pending.len() < self.spec.workers {
            self.start(exited, 0, 0);
        }
        self.publish();
    }

    fn start(&mut self, exited: &mpsc::UnboundedSender<Exit>, failures: u32, restarts: u32) {
        match self.spawn(exited, failures) {
            Ok(worker) => self.workers.push_back(Worker { restarts, ..worker }),
            Err(error) => {
                self.last_exit = Some(format!("could not start: {error}"));
                self.replace_later(failures.saturating_add(1), restarts);
            }
        }
    }

    fn spawn(
        &mut self,
        exited: &mpsc::UnboundedSender<Exit>,
        failures: u32,
    ) -> std::io::Result<Worker> {
        let mut command = tokio::process::Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            .envs(self.spec.envs.iter().cloned());
        command.stdin(Stdio::null());
        if self.log.is_some() {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
        let parent = std::process::id();
        // SAFETY: between fork and exec only async-signal-safe calls: setpgid, prctl, getppid.
        unsafe {
            command.pre_exec(move || orphan_proof(parent));
        }
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        if let Some(log) = &self.log {
            if let Some(stdout) = child.stdout.take() {
                self.runtime.spawn(log.clone().copy(pid, stdout));
            }
            if let Some(stderr) = child.stderr.take() {
                self.runtime.spawn(log.clone().copy(pid, stderr));
            }
        }
        let exited = exited.clone();
        self.runtime.spawn(async move {
            let status = child.wait().await;
            let _ = exited.send(Exit { pid, status });
        });
        self.started += 1;
        Ok(Worker {
            pid,
            since: Instant::now(),
            started: SystemTime::now(),
            failures,
            restarts: 0,
        })
    }

    fn exited(&mut self, exit: Exit) {
        // Whatever the worker left in its group goes with it, at once: the group's id cannot
        // have been reused while members remain, and the worker was only just reaped.
        signal_group(exit.pid, libc::SIGKILL);
        if let Some(at) = self.stopping.iter().position(|(pid, _)| *pid == exit.pid) {
            let (_, kill) = self.stopping.swap_remove(at);
            kill.abort();
            return;
        }
        let Some(at) = self.workers.iter().position(|w| w.pid == exit.pid) else {
            return;
        };
        let Some(worker) = self.workers.remove(at) else {
            return;
        };
        self.last_exit = Some(match &exit.status {
            Ok(status) => format!("{} exited: {status}", exit.pid),
            Err(error) => format!("{} could not be waited for: {error}", exit.pid),
        });
        tracing::info!(pid = exit.pid, exit = ?self.last_exit, "a worker exited; replacing it");
        let failures = (self.spec.backoff).after_exit(worker.failures, worker.since.elapsed());
        self.replace_later(failures, worker.restarts.saturating_add(1));
    }

    /// Schedules a replacement after the backoff its failures call for (at once for none).
    fn replace_later(&mut self, failures: u32, restarts: u32) {
        let at = tokio::time::Instant::now() + self.spec.backoff.delay(failures);
        self.pending.push(Pending {
            at,
            failures,
            restarts,
        });
    }

    /// SIGTERM to a worker's process group; SIGKILL after the grace period if it has not
    /// exited by then (a timer task per stopping worker, aborted when it exits).
    fn terminate(&mut self, pid: u32) {
        signal_group(pid, libc::SIGTERM);
        let grace = self.spec.grace;
        let kill = self.runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            signal_group(pid, libc::SIGKILL);
        });
        self.stopping.push((pid, kill.abort_handle()));
    }

    async fn quit(&mut self, exits: &mut mpsc::UnboundedReceiver<Exit>) {
        self.spec.workers = 0;
        self.pending.clear();
        while let Some(worker) = self.workers.pop_front() {
            self.terminate(worker.pid);
        }
        self.publish();
        while !self.stopping.is_empty() {
            match exits.recv().await {
                Some(exit) => self.exited(exit),
                None => break,
            }
        }
        // The services last, in the reverse order of their start.
        for service in self.services.iter().rev() {
            let (reply, last) = oneshot::channel();
            if service.commands.send(Request::Quit(reply)).is_ok() {
                let _ = last.await;
            }
        }
    }

    /// Shows the pool's status (and tells the main pool, for a service).
    fn publish(&self) {
        self.publish.send_replace(self.snapshot());
        if let Some(main) = self
            .nudge
            .as_ref()
            .and_then(mpsc::WeakUnboundedSender::upgrade)
        {
            let _ = main.send(Request::Refresh);
        }
    }

    fn snapshot(&self) -> PoolStatus {
        let now = tokio::time::Instant::now();
        let failures = (self.workers.iter().map(|w| w.failures))
            .chain(self.pending.iter().map(|p| p.failures))
            .max()
            .unwrap_or(0);
        PoolStatus {
            target: self.spec.workers,
            workers: (self.workers.iter())
                .map(|w| WorkerStatus {
                    pid: w.pid,
                    started: w.started,
                    restarts: w.restarts,
                })
                .collect(),
            stopping: self.stopping.len(),
            failures,
            backoff: (self.pending.iter())
                .map(|p| p.at.saturating_duration_since(now))
                .min(),
            last_exit: self.last_exit.clone(),
            started: self.started,
            services: self.services.iter().map(Service::status).collect(),
        }
    }
}

/// A singleton service's pool, as the main pool sees it.
struct Service {
    name: String,
    commands: mpsc::UnboundedSender<Request>,
    status: watch::Receiver<PoolStatus>,
}

impl Service {
    fn status(&self) -> ServiceStatus {
        let pool = self.status.borrow();
        let running = pool.workers.first();
        ServiceStatus {
            name: self.name.clone(),
            pid: running.map(|w| w.pid),
            restarts: running.map_or(0, |w| w.restarts),
            failures: pool.failures,
            backoff: pool.backoff,
            last_exit: pool.last_exit.clone(),
        }
    }
}

/// How long the supervisor waits for a service to run before it starts the workers anyway
/// (the service's status then shows why it does not run).
const SERVICE_START: Duration = Duration::from_secs(10);

/// Starts each service's pool of one, in order, each once the one before runs.
fn start_services(
    thread: &RuntimeThread,
    spec: &SupervisorBuilder,
    log: &Option<WorkerLog>,
    main: &mpsc::UnboundedSender<Request>,
) -> Result<Vec<Service>, DaemonError> {
    let mut services = Vec::new();
    for service in &spec.services {
        let one = SupervisorBuilder {
            program: service.program.clone(),
            args: service.args.clone(),
            workers: 1,
            log_file: None,
            socket: None,
            pid_file: None,
            quit_on_signals: false,
            services: Vec::new(),
            envs: spec.envs.clone(),
            grace: spec.grace,
            backoff: spec.backoff,
        };
        let (commands, requests) = mpsc::unbounded_channel();
        let (publish, status) = watch::channel(PoolStatus::new(1));
        let pool = Pool::new(thread.handle()?, one, log.clone(), publish);
        let pool = Pool {
            nudge: Some(main.downgrade()),
            ..pool
        };
        thread.spawn_threadsafe(pool.run(requests))?;
        let mut up = status.clone();
        let _ = thread
            .run_threadsafe(async move {
                let running = up.wait_for(|s| !s.workers.is_empty() || s.failures > 0);
                let _ = tokio::time::timeout(SERVICE_START, running).await;
            })
            .wait();
        services.push(Service {
            name: service.name.clone(),
            commands,
            status,
        });
    }
    Ok(services)
}

/// Registers for SIGTERM and SIGINT (on the supervisor's runtime) and returns the task that
/// turns the first of them into a quit.
fn listen_for_quit(
    commands: mpsc::UnboundedSender<Request>,
    stopping: tokio_util::sync::CancellationToken,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
            // The supervisor's thread stops (the pool has ended): nothing to listen for.
            () = stopping.cancelled() => return,
        }
        tracing::info!("a stop signal: quitting the pool");
        let (reply, _) = oneshot::channel();
        let _ = commands.send(Request::Quit(reply));
    })
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// In the child, before exec: a process group of its own (so a stop reaches whatever it
/// starts too), and death with the supervisor's thread (`PR_SET_PDEATHSIG`, Linux), unless the
/// supervisor is already gone.
fn orphan_proof(parent: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls with no pointers.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[cfg(target_os = "linux")]
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Died between fork and prctl: the signal will never come.
        if libc::getppid() as u32 != parent {
            libc::_exit(1);
        }
    }
    Ok(())
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(group) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: a plain system call; a group that has gone gives ESRCH, which is fine.
    unsafe {
        libc::killpg(group, signal);
    }
}
