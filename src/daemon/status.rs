//! [`PoolStatus`]: what a supervisor's pool looks like now.

use std::time::{Duration, SystemTime};

/// A snapshot of a [`Supervisor`](super::Supervisor)'s pool.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// How many workers it keeps running.
    pub target: usize,
    /// The workers running now, oldest first.
    pub workers: Vec<WorkerStatus>,
    /// Workers told to stop that have not exited yet.
    pub stopping: usize,
    /// The longest run of quick exits (or failed starts) of a worker and its replacements: 2
    /// or more means a crash loop.
    pub failures: u32,
    /// While a replacement waits out its backoff: how long until the next start.
    pub backoff: Option<Duration>,
    /// How the last worker that exited on its own ended (or why one could not start).
    pub last_exit: Option<String>,
    /// Workers started so far, replacements included.
    pub started: u64,
    /// The singleton services, in the order they started.
    pub services: Vec<ServiceStatus>,
}

/// A singleton service (see [`SupervisorBuilder::service`](super::SupervisorBuilder::service)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// Its name.
    pub name: String,
    /// Its process id while it runs.
    pub pid: Option<u32>,
    /// How many times it has been replaced.
    pub restarts: u32,
    /// Its quick exits in a row (2 or more: a crash loop).
    pub failures: u32,
    /// While its replacement waits out its backoff: how long until the next start.
    pub backoff: Option<Duration>,
    /// How it last exited (or why it could not start).
    pub last_exit: Option<String>,
}

/// One running worker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStatus {
    /// Its process id (also its process group's).
    pub pid: u32,
    /// When it started.
    pub started: SystemTime,
    /// How many workers it replaces, one after the other, since the pool started (0 for a
    /// worker that replaces none).
    pub restarts: u32,
}

impl PoolStatus {
    pub(crate) fn new(target: usize) -> Self {
        PoolStatus {
            target,
            workers: Vec::new(),
            stopping: 0,
            failures: 0,
            backoff: None,
            last_exit: None,
            started: 0,
            services: Vec::new(),
        }
    }

    /// The pids of the running workers.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid).collect()
    }
}
