//! [`Worker`]: the worker mode of a daemon's program, which runs processes from the task queue.

use std::sync::Arc;
use std::time::Duration;

use super::config::DaemonConfig;
use super::error::DaemonError;
use super::{broker, store};
use crate::RuntimeThread;
use crate::control::{Launcher, LauncherBuilder, Listening};
use crate::engine::Runner;
use crate::messaging::Communicator;
use crate::messaging::amqp::AmqpCommunicator;

/// How long a stopping worker gives the answers of its last tasks to be made, and its thread
/// to end; the broker gives back whatever task is left unacknowledged.
const FLUSH: Duration = Duration::from_secs(5);

/// One worker of a daemon, as AiiDA's `verdi daemon worker`: a [`Runner`] on the configured
/// store (the SQLite file, or PostgreSQL), reachable over the configured broker ([`Listening`]), and a [`Launcher`] on
/// the configured task queue with the configured slots. A daemon's program runs it when the
/// supervisor starts it in worker mode; the process types are the ones its launcher registers.
///
/// **Stopping** (SIGTERM or SIGINT in [`run`](Self::run), or [`RunningWorker::stop`]): the
/// worker starts no more processes, lets the steps that are running end within the grace
/// period ([`Runner::close`]), and leaves every unfinished process where its last checkpoint
/// is. Then it gives their `continue` tasks, unanswered, back to the queue, and another worker
/// continues them: never while they still run here.
///
/// ```no_run
/// use runtime_thread::control::Launcher;
/// use runtime_thread::daemon::{DaemonConfig, Worker};
/// # use runtime_thread::engine::{Command, Persistent, Process, StepContext, StepError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Add { a: i64, b: i64 }
/// # impl Process for Add {
/// #     async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
/// #         Ok(Command::finish())
/// #     }
/// # }
/// # impl Persistent for Add { const TYPE_NAME: &'static str = "Add"; }
///
/// let config = DaemonConfig::load("squares", None)?;
/// // Serves until SIGTERM or SIGINT.
/// Worker::new(config, Launcher::builder().process::<Add>()).run()?;
/// # Ok::<(), runtime_thread::daemon::DaemonError>(())
/// ```
#[derive(Debug)]
#[must_use = "a worker does nothing until `run` or `start` is called"]
pub struct Worker {
    config: DaemonConfig,
    launcher: LauncherBuilder,
}

/// A started [`Worker`]; [`stop`](Self::stop) it (dropping it stops it too, without waiting
/// for steps).
#[derive(Debug)]
pub struct RunningWorker {
    config: DaemonConfig,
    comm: AmqpCommunicator,
    runner: Runner,
    launcher: Option<Launcher>,
    thread: Arc<RuntimeThread>,
}

impl Worker {
    /// A worker with `config`'s broker, store, queue and slots, running the process types
    /// that `launcher` registers (its queue and slots are set from `config`).
    pub fn new(config: DaemonConfig, launcher: LauncherBuilder) -> Self {
        Worker { config, launcher }
    }

    /// Starts the worker, serves until SIGTERM or SIGINT, then stops it as the type's docs
    /// say. The worker reports on stdout (which a supervisor writes to its log): when it is
    /// ready, and when it has stopped.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start); [`DaemonError::Signals`] when the signals cannot be listened
    /// for.
    pub fn run(self) -> Result<(), DaemonError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        // Listened for before the worker is ready, so that no stop request is missed.
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
            .map_err(|source| DaemonError::Signals { source })?;
        let worker = self.start()?;
        println!(
            "worker ready: queue {}.{}, {} slots, store {}",
            worker.config.prefix,
            worker.config.queue,
            worker.config.slots,
            worker.config.store_shown()
        );
        let signal = signals.forever().next();
        println!("worker stopping (signal {signal:?}): no more tasks; running steps may end");
        let left = worker.stop()?;
        println!("worker stopped; {left} step(s) cut short will run again elsewhere");
        Ok(())
    }

    /// Starts the worker: connects to the broker, opens the store, and takes tasks.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Broker`] when the broker cannot be reached, [`DaemonError::Store`] when
    /// the store cannot be opened, [`DaemonError::Thread`] when the worker's thread cannot
    /// start, [`DaemonError::Worker`] when the runner or the launcher cannot start.
    pub fn start(self) -> Result<RunningWorker, DaemonError> {
        let config = self.config;
        let thread = Arc::new(RuntimeThread::builder().name("worker").start()?);
        let comm = broker::connect(&thread, &config, None)?;
        let store = store::open(&config, "worker")?;
        let watcher = Listening::new(comm.clone(), &thread).map_err(worker_failed)?;
        let runner = Runner::builder()
            .thread(thread.clone())
            .persister(store)
            .watcher(watcher)
            .start()
            .map_err(worker_failed)?;
        let launcher = self
            .launcher
            .queue(config.queue.clone())
            .slots(config.slots)
            .start(&runner, comm.clone())
            .map_err(worker_failed)?;
        Ok(RunningWorker {
            config,
            comm,
            runner,
            launcher: Some(launcher),
            thread,
        })
    }
}

impl RunningWorker {
    /// The worker's runner (to look at its processes).
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Stops the worker as [`Worker`]'s docs say; returns how many steps were still running
    /// when the grace period ran out (they run again wherever their processes are continued).
    ///
    /// # Errors
    ///
    /// [`DaemonError::Worker`] when the runner's thread failed under it.
    pub fn stop(mut self) -> Result<usize, DaemonError> {
        // The processes stop first: a task given back while its process still ran here could
        // start it on a second worker too. Tasks that arrive meanwhile start nothing (the
        // runner is closing) and are given back at once.
        let left = self
            .runner
            .close(self.config.grace())
            .map_err(worker_failed)?;
        let answered = self.launcher.as_ref().map(Launcher::until_answered);
        let comm = self.comm.clone();
        let flushed = self.thread.run_threadsafe(async move {
            // Every task of a process that ended is answered (and acknowledged), every other
            // one given back: none is left acknowledged without its answer.
            if let Some(answered) = answered {
                let _ = tokio::time::timeout(FLUSH, answered).await;
            }
            // The answers on their way out go first; closing the connection gives back
            // whatever is still unacknowledged.
            comm.close().await;
        });
        let _ = flushed.wait();
        drop(self.launcher.take());
        let _ = self.thread.stop_with_grace(FLUSH);
        Ok(left)
    }
}

fn worker_failed(error: impl std::error::Error + Send + Sync + 'static) -> DaemonError {
    DaemonError::Worker(Box::new(error))
}
