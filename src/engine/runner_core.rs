//! [`Core`]: the part of a runner that its processes hold (their step contexts, drivers and
//! handles): the thread's spawner, the store, the registered types, the live and the parked
//! processes. How processes are started and loaded is the runner's (`runner.rs`), which adds
//! those methods to `Core`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use uuid::Uuid;

use super::checkpoint::Checkpoint;
use super::error::EngineError;
use super::park::ParkedProcesses;
use super::persist::Persister;
use super::shared::ProcessShared;
use crate::thread::{RuntimeThread, Spawner};

/// A runner's shared state. It reaches the thread through a spawner, which does not keep the
/// thread alive.
#[derive(Clone)]
pub(crate) struct Core {
    inner: Arc<Inner>,
}

/// What the runner's watcher does with each new process (see `RunnerBuilder::watcher`): it
/// attaches a listener, and may hold the first step until a future completes.
pub(crate) type Hook = Arc<dyn Fn(&Arc<ProcessShared>) -> Option<Gate> + Send + Sync>;

/// What a process's first step waits for (see `Watch::hold_until`).
pub(crate) type Gate = futures::future::BoxFuture<'static, ()>;

struct Inner {
    spawner: Spawner,
    hook: Option<Hook>,
    persister: Option<Arc<dyn Persister>>,
    /// Registered process types by name: the only code a checkpoint can lead to.
    types: RwLock<HashMap<&'static str, Loader>>,
    /// Persisted processes alive in this runner, so a load neither duplicates one nor misses a
    /// child that is already running.
    live: Mutex<LiveTable>,
    /// Processes whose drivers are parked as data, so that a stopping runtime can drop them
    /// (marking them abandoned) instead of leaving their waiters waiting.
    parked: ParkedProcesses,
    /// `Runner::close`: asked for, and how far it has come.
    closing: Closing,
}

/// A runner's close: once asked for, no process of it takes another step; the close is
/// complete when no driver is left.
#[derive(Default)]
struct Closing {
    asked: CancellationToken,
    /// Drivers alive (running, waiting or parked), whatever their process.
    drivers: AtomicUsize,
    /// Told when the last driver is gone.
    none_left: Notify,
}

#[derive(Default)]
struct LiveTable {
    processes: HashMap<Uuid, Weak<ProcessShared>>,
    prune_at: usize,
}

/// Rebuilds a process of one registered type from its checkpoint (without starting it).
pub(crate) type Loader = fn(Checkpoint) -> Result<Prepared, EngineError>;

/// Starts a decoded process, given the store it was loaded from and its children.
pub(crate) type Starter =
    Box<dyn FnOnce(&Core, Arc<dyn Persister>, Vec<Arc<ProcessShared>>) + Send>;

/// A decoded process, ready to start once its children are linked.
pub(crate) struct Prepared {
    pub(crate) shared: Arc<ProcessShared>,
    pub(crate) children: Vec<Uuid>,
    pub(crate) start: Starter,
}

impl Core {
    pub(crate) fn new(
        thread: &RuntimeThread,
        persister: Option<Arc<dyn Persister>>,
        hook: Option<Hook>,
    ) -> Self {
        // When the runtime shuts down, parked drivers are dropped with its tasks: their
        // processes end abandoned, exactly as those whose tasks it drops, and nothing runs or
        // saves any more (a stop is like a crash for checkpoints). The keeper is an untracked
        // task that never ends, so the stop's grace period does not wait for it, and the
        // runtime drops it only when it shuts down. It holds the runner weakly: a keeper that
        // held it would keep every runner on a long-lived thread alive.
        let runtime = thread.handle().ok();
        let inner = Arc::new(Inner {
            spawner: thread.spawner(),
            hook,
            persister,
            types: RwLock::new(HashMap::new()),
            live: Mutex::new(LiveTable::default()),
            // Not running: nothing could drop parked drivers later, so none may park.
            parked: match runtime {
                Some(_) => ParkedProcesses::default(),
                None => ParkedProcesses::closed(),
            },
            closing: Closing::default(),
        });
        if let Some(runtime) = runtime {
            let keeper = ParkedKeeper(Arc::downgrade(&inner));
            runtime.spawn(async move {
                let _keeper = keeper;
                std::future::pending::<()>().await;
            });
        }
        Core { inner }
    }

    /// How the runner's thread takes work from its processes.
    pub(crate) fn spawner(&self) -> &Spawner {
        &self.inner.spawner
    }

    /// Shows a new process to the runner's watcher, if it has one, before its first step.
    pub(crate) fn watch(&self, shared: &Arc<ProcessShared>) -> Option<Gate> {
        self.inner.hook.as_ref().and_then(|hook| hook(shared))
    }

    /// The checkpoint store, if the runner has one.
    pub(crate) fn persister(&self) -> Option<&Arc<dyn Persister>> {
        self.inner.persister.as_ref()
    }

    /// The checkpoint store, which persisting needs.
    pub(crate) fn store(&self) -> Result<Arc<dyn Persister>, EngineError> {
        self.inner.persister.clone().ok_or(EngineError::NoPersister)
    }

    /// Registers `loader` for `type_name`, unless a loader is registered for it already.
    pub(crate) fn register_loader(&self, type_name: &'static str, loader: Loader) {
        // Every persisted submission registers its type: the common case is a read.
        if !self.inner.types.read().contains_key(type_name) {
            self.inner.types.write().insert(type_name, loader);
        }
    }

    /// The loader registered for `type_name`.
    pub(crate) fn loader(&self, type_name: &str) -> Option<Loader> {
        self.inner.types.read().get(type_name).copied()
    }

    /// Deletes the final checkpoint of a top-level persisted process whose outcome a handle
    /// has just handed over (once; a failure is logged: the outcome is delivered anyway).
    pub(crate) fn handed_over(&self, shared: &ProcessShared) {
        if !shared.hand_over() {
            return;
        }
        if let Some(store) = &self.inner.persister
            && let Err(error) = store.delete(shared.identity.pid)
        {
            tracing::error!(pid = %shared.identity.pid, %error, "cannot delete the checkpoint of a process whose outcome was handed over");
        }
    }

    /// The runner's parked processes.
    pub(crate) fn parked(&self) -> &ParkedProcesses {
        &self.inner.parked
    }

    /// Remembers a persisted process as alive in this runner.
    pub(crate) fn track(&self, shared: &Arc<ProcessShared>) {
        let mut live = self.inner.live.lock();
        // Drop the entries of processes gone meanwhile, now and then (amortised O(1)).
        if live.processes.len() >= live.prune_at {
            live.processes.retain(|_, weak| weak.strong_count() > 0);
            live.prune_at = (live.processes.len() * 2).max(1024);
        }
        live.processes
            .insert(shared.identity.pid, Arc::downgrade(shared));
    }

    /// A persisted process of this runner that is still in memory.
    pub(crate) fn live(&self, pid: Uuid) -> Option<Arc<ProcessShared>> {
        self.inner.live.lock().processes.get(&pid)?.upgrade()
    }

    /// Counts a new driver (see `close`).
    pub(crate) fn driver_started(&self) {
        self.inner.closing.drivers.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a driver gone, and tells `until_closed` when it was the last.
    pub(crate) fn driver_ended(&self) {
        let closing = &self.inner.closing;
        if closing.drivers.fetch_sub(1, Ordering::AcqRel) == 1 {
            closing.none_left.notify_waiters();
        }
    }

    /// Drivers alive.
    pub(crate) fn drivers(&self) -> usize {
        self.inner.closing.drivers.load(Ordering::Acquire)
    }

    /// Asks every process to stop at its next step boundary (a waiting or parked one stops at
    /// once), leaving its last checkpoint for another runner to continue. Idempotent.
    pub(crate) fn close(&self) {
        self.inner.closing.asked.cancel();
        self.inner.parked.close();
    }

    /// Whether the runner is closing.
    pub(crate) fn is_closing(&self) -> bool {
        self.inner.closing.asked.is_cancelled()
    }

    /// Completes when the runner is asked to close.
    pub(crate) fn closing(&self) -> WaitForCancellationFuture<'_> {
        self.inner.closing.asked.cancelled()
    }

    /// Completes when no driver is left.
    pub(crate) async fn until_no_drivers(&self) {
        let closing = &self.inner.closing;
        loop {
            let none_left = closing.none_left.notified();
            tokio::pin!(none_left);
            // Registered before the count is read, so a last driver ending in between is heard.
            none_left.as_mut().enable();
            if closing.drivers.load(Ordering::Acquire) == 0 {
                return;
            }
            none_left.await;
        }
    }

    /// A persisted process of this runner that has not ended.
    pub(crate) fn running(&self, pid: Uuid) -> Option<Arc<ProcessShared>> {
        self.live(pid)
            .filter(|shared| !shared.state().is_terminal())
    }
}

/// Drops the runner's parked drivers when the runtime drops it (at shutdown).
struct ParkedKeeper(Weak<Inner>);

impl Drop for ParkedKeeper {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.parked.close();
        }
    }
}
