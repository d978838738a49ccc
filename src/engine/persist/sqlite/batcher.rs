//! Group commit: a queue of changes (the latest per pid wins) and the thread that commits
//! everything queued in one transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::db::{Db, Write};
use super::keeper::Ownership;
use crate::engine::PersistError;
use crate::engine::persist::Committed;

/// How long the writer lets writes gather after the first one of a group: the most a crash
/// can lose beyond the group being committed.
const GROUP_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// The latest change of a pid: a body, or `None` for a delete, and its fencing token.
#[derive(Clone)]
pub(super) struct Pending {
    pub(super) body: Option<Vec<u8>>,
    pub(super) token: Option<i64>,
}

type Changes = HashMap<Uuid, Pending>;

pub(super) struct Batcher {
    shared: Arc<Queue>,
    writer: Option<JoinHandle<()>>,
}

struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when changes are queued or the store closes.
    work: Condvar,
    /// Signalled after each commit (or failed commit).
    committed: Condvar,
}

#[derive(Default)]
struct QueueState {
    queued: Changes,
    /// Leases given up, after the changes queued with them.
    released: HashMap<Uuid, i64>,
    /// The group being committed: still what reads must see until the commit is done.
    in_flight: Arc<Changes>,
    /// Changes queued since the start, and how many of them are committed.
    queued_count: u64,
    committed_count: u64,
    /// A process whose change a lease refused, until a flush reports it.
    refused: Option<Uuid>,
    /// Told when everything queued up to their count is committed.
    waiters: Vec<(u64, oneshot::Sender<Result<(), PersistError>>)>,
    failure: Option<PersistError>,
    closing: bool,
}

impl Batcher {
    pub(super) fn start(
        db: Arc<Db>,
        ownership: Option<Arc<Ownership>>,
    ) -> Result<Self, PersistError> {
        let shared = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            work: Condvar::new(),
            committed: Condvar::new(),
        });
        let queue = shared.clone();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || commit_groups(&db, ownership.as_deref(), &queue))
            .map_err(|e| PersistError::store("cannot start the writer thread", e))?;
        Ok(Batcher {
            shared,
            writer: Some(writer),
        })
    }

    /// Queues `changes` under one lock, so that one group commits them all, or none.
    pub(super) fn queue_all(
        &self,
        changes: impl IntoIterator<Item = (Uuid, Pending)>,
    ) -> Result<(), PersistError> {
        let mut state = self.shared.state.lock();
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        for (pid, pending) in changes {
            state.queued.insert(pid, pending);
            state.queued_count += 1;
        }
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Gives up the lease of `pid` (held with `token`) after the changes queued before.
    pub(super) fn release(&self, pid: Uuid, token: i64) {
        let mut state = self.shared.state.lock();
        state.released.insert(pid, token);
        state.queued_count += 1;
        drop(state);
        self.shared.work.notify_one();
    }

    /// A queued or in-flight change of `pid`: `Some(None)` if it is being deleted.
    pub(super) fn queued(&self, pid: Uuid) -> Option<Option<Vec<u8>>> {
        let state = self.shared.state.lock();
        (state.queued.get(&pid))
            .or_else(|| state.in_flight.get(&pid))
            .map(|pending| pending.body.clone())
    }

    /// Every queued or in-flight pid, and whether it is being saved (or deleted).
    pub(super) fn overlay(&self) -> Vec<(Uuid, bool)> {
        let state = self.shared.state.lock();
        let in_flight = state
            .in_flight
            .iter()
            .filter(|(pid, _)| !state.queued.contains_key(pid));
        (state.queued.iter().chain(in_flight))
            .map(|(pid, pending)| (*pid, pending.body.is_some()))
            .collect()
    }

    /// Waits until everything queued so far is committed; `LeaseLost` if a lease refused a
    /// change that no flush has reported yet (it may have been committed, and refused, before
    /// this call).
    pub(super) fn flush(&self) -> Result<(), PersistError> {
        let mut state = self.shared.state.lock();
        let target = state.queued_count;
        while state.committed_count < target && state.failure.is_none() {
            self.shared.committed.wait(&mut state);
        }
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        match state.refused.take() {
            Some(pid) => Err(PersistError::LeaseLost { pid }),
            None => Ok(()),
        }
    }

    /// Ready when everything queued so far is committed, without blocking the caller.
    pub(super) fn until_flushed(&self) -> Committed {
        let mut state = self.shared.state.lock();
        if let Some(failure) = &state.failure {
            let failure = failure.clone();
            return Committed::later(async move { Err(failure) });
        }
        if state.committed_count >= state.queued_count {
            return Committed::now();
        }
        let (done, committed) = oneshot::channel();
        let target = state.queued_count;
        state.waiters.push((target, done));
        Committed::later(async move {
            committed.await.unwrap_or_else(|_| {
                Err(PersistError::store_failed(
                    "the SQLite store closed before it was flushed",
                ))
            })
        })
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.state.lock().closing = true;
        self.shared.work.notify_one();
        // The writer commits what is queued, then ends.
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: takes everything queued, commits it in one transaction, repeats.
fn commit_groups(db: &Db, ownership: Option<&Ownership>, queue: &Queue) {
    loop {
        let (group, released, upto) = {
            let mut state = queue.state.lock();
            while !state.has_work() && !state.closing {
                queue.work.wait(&mut state);
            }
            if !state.has_work() {
                return;
            }
            if !state.closing {
                // Let a group gather: one commit per few writes costs a core's worth of commits.
                drop(state);
                std::thread::sleep(GROUP_LINGER);
                state = queue.state.lock();
            }
            let group = Arc::new(std::mem::take(&mut state.queued));
            let released: Vec<(Uuid, i64)> = state.released.drain().collect();
            state.in_flight = group.clone();
            (group, released, state.queued_count)
        };
        let owner = ownership.map(Ownership::owner);
        let writes = group.iter().map(|(pid, pending)| Write {
            pid: *pid,
            body: pending.body.as_deref(),
            token: pending.token,
        });
        let result = db.apply(owner, writes, &released);
        if let (Ok(refused), Some(ownership)) = (&result, ownership) {
            let mut leases = ownership.leases.lock();
            for (pid, token) in refused {
                leases.refused(*pid, *token);
            }
        }
        let mut state = queue.state.lock();
        state.in_flight = Arc::default();
        match result {
            Ok(refused) => {
                state.committed_count = upto;
                if let Some((pid, _)) = refused.first() {
                    state.refused = Some(*pid);
                }
            }
            Err(error) => {
                tracing::error!(%error, "a group of checkpoints could not be committed");
                state.failure = Some(error);
            }
        }
        let waiters = settled_waiters(&mut state);
        let outcome = state.failure.clone().map_or(Ok(()), Err);
        drop(state);
        queue.committed.notify_all();
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

impl QueueState {
    fn has_work(&self) -> bool {
        !self.queued.is_empty() || !self.released.is_empty()
    }
}

/// The waiters that the last commit settled: all of them once the store has failed.
fn settled_waiters(state: &mut QueueState) -> Vec<oneshot::Sender<Result<(), PersistError>>> {
    let committed = state.committed_count;
    let failed = state.failure.is_some();
    let (settled, waiting) = std::mem::take(&mut state.waiters)
        .into_iter()
        .partition(|(target, _)| failed || *target <= committed);
    state.waiters = waiting;
    settled.into_iter().map(|(_, done)| done).collect()
}

#[cfg(test)]
impl Batcher {
    /// A crash: the writer stops without committing what is still queued.
    pub(super) fn crash(mut self) {
        let mut state = self.shared.state.lock();
        state.queued.clear();
        state.released.clear();
        state.closing = true;
        drop(state);
        self.shared.work.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}
