//! What the callers hand the writer: writes in the order they were made, what reads must see
//! of them until they are committed, whether the database can be reached, and the leases this
//! program holds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::{Notify, oneshot};
use tokio_postgres::Client;
use uuid::Uuid;

use super::super::PersistError;
use super::super::lease::Leases;

/// A checkpoint's bytes, shared by the queue and the overlay until they are committed.
pub(crate) type Body = Arc<Vec<u8>>;

/// One change, fenced by the lease it was made under.
pub(crate) enum Change {
    /// Saves a checkpoint, if lease `token` of it is still this program's (0: a process made
    /// here, whose lease the save takes).
    Save { pid: Uuid, body: Body, token: i64 },
    /// Deletes a checkpoint: fenced by the lease when this program holds the process, not
    /// otherwise (handing over the outcome of a process that ended).
    Delete { pid: Uuid, token: Option<i64> },
    /// Gives a lease up.
    Release { pid: Uuid, token: i64 },
}

impl Change {
    pub(crate) fn pid(&self) -> Uuid {
        match self {
            Change::Save { pid, .. } | Change::Delete { pid, .. } | Change::Release { pid, .. } => {
                *pid
            }
        }
    }

    /// What reads see of it: `Some(Some(body))` a save, `Some(None)` a delete.
    fn seen(&self) -> Option<Option<Body>> {
        match self {
            Change::Save { body, .. } => Some(Some(body.clone())),
            Change::Delete { .. } => Some(None),
            Change::Release { .. } => None,
        }
    }
}

/// Changes made together (one save, or a whole `save_all`), committed together.
pub(crate) struct Entry {
    /// The number of the entry, from 1 in the order they were queued.
    pub(crate) seq: u64,
    pub(crate) changes: Vec<Change>,
    /// Told when the entry is committed, or cannot be.
    pub(crate) done: Option<oneshot::Sender<Result<(), PersistError>>>,
}

impl Entry {
    pub(crate) fn settle(self, result: Result<(), PersistError>) {
        if let Some(done) = self.done {
            let _ = done.send(result);
        }
    }
}

/// The queue, shared by the store's callers and its writer thread.
pub(crate) struct Queue {
    state: Mutex<State>,
    /// Wakes the writer: entries were queued, or the store is closing.
    pub(crate) work: Notify,
    /// Signalled whenever entries are settled (committed or given up).
    settled: Condvar,
}

struct State {
    entries: VecDeque<Entry>,
    /// The latest change of each pid not yet committed, with its entry's number: what reads
    /// see first.
    overlay: HashMap<Uuid, (u64, Option<Body>)>,
    /// The number of the latest entry queued.
    queued: u64,
    /// Every entry up to this number is committed or given up.
    settled: u64,
    /// The number of the latest entry given up (not committed), 0 if none.
    lost: u64,
    /// A process whose save a lease refused, until a flush reports it.
    refused: Option<Uuid>,
    /// The connection, while the database can be reached.
    client: Option<Arc<Client>>,
    /// Since when, and why, the database cannot be reached.
    down: Option<(Instant, String)>,
    /// A failure that no reconnection mends: every later call fails with it.
    failure: Option<PersistError>,
    closing: bool,
    leases: Leases,
}

impl Queue {
    /// A queue for `owner`, whose leases are its own until `deadline`.
    pub(crate) fn new(owner: Uuid, deadline: Instant) -> Self {
        let state = State {
            entries: VecDeque::new(),
            overlay: HashMap::new(),
            queued: 0,
            settled: 0,
            lost: 0,
            refused: None,
            client: None,
            down: None,
            failure: None,
            closing: false,
            leases: Leases::new(owner, deadline),
        };
        Queue {
            state: Mutex::new(state),
            work: Notify::new(),
            settled: Condvar::new(),
        }
    }

    /// Queues the saves of `checkpoints` as one entry, each fenced by this program's lease of
    /// its process (a process not held is one made here: its save takes the lease). Refused
    /// while the database cannot be reached, so that a process stops rather than runs on
    /// unsaved, and for a process whose lease is lost.
    pub(crate) fn save(
        &self,
        checkpoints: Vec<(Uuid, Body)>,
        done: Option<oneshot::Sender<Result<(), PersistError>>>,
        shown: &str,
    ) -> Result<(), PersistError> {
        let mut state = self.state.lock();
        state.check(shown)?;
        let mut changes = Vec::with_capacity(checkpoints.len());
        for (pid, body) in checkpoints {
            let token = state.leases.save_token(pid)?;
            changes.push(Change::Save { pid, body, token });
        }
        self.queue(state, changes, done);
        Ok(())
    }

    /// Queues an entry without changes, `done` when everything queued before it is committed
    /// (entries are committed in order).
    pub(crate) fn mark(
        &self,
        done: oneshot::Sender<Result<(), PersistError>>,
        shown: &str,
    ) -> Result<(), PersistError> {
        let state = self.state.lock();
        state.check(shown)?;
        self.queue(state, Vec::new(), Some(done));
        Ok(())
    }

    /// Queues a delete, fenced by the lease if this program holds the process.
    pub(crate) fn delete(&self, pid: Uuid, shown: &str) -> Result<(), PersistError> {
        let mut state = self.state.lock();
        state.check(shown)?;
        let token = state.leases.token(pid)?;
        self.queue(state, vec![Change::Delete { pid, token }], None);
        Ok(())
    }

    /// Gives up the lease of `pid`, after the changes queued before (queued even while the
    /// database is away: it is harmless, and frees the process for others sooner).
    pub(crate) fn release(&self, pid: Uuid) {
        let mut state = self.state.lock();
        let Some(token) = state.leases.release(pid) else {
            return;
        };
        let release = Change::Release { pid, token };
        // Most often right after the process's final save, still queued: released in the same
        // transaction, rather than a commit of its own.
        if let Some(last) = state.entries.back_mut()
            && last
                .changes
                .iter()
                .any(|c| matches!(c, Change::Save { pid: p, .. } if *p == pid))
        {
            last.changes.push(release);
            return;
        }
        self.queue(state, vec![release], None);
    }

    fn queue(
        &self,
        mut state: parking_lot::MutexGuard<'_, State>,
        changes: Vec<Change>,
        done: Option<oneshot::Sender<Result<(), PersistError>>>,
    ) {
        state.queued += 1;
        let seq = state.queued;
        for change in &changes {
            if let Some(seen) = change.seen() {
                state.overlay.insert(change.pid(), (seq, seen));
            }
        }
        state.entries.push_back(Entry { seq, changes, done });
        drop(state);
        self.work.notify_one();
    }

    /// This program's identity as an owner of leases.
    pub(crate) fn owner(&self) -> Uuid {
        self.state.lock().leases.owner()
    }

    /// This program now holds `pid`, with `token`.
    pub(crate) fn holding(&self, pid: Uuid, token: i64) {
        self.state.lock().leases.holding(pid, token);
    }

    /// The leases were renewed: they are this program's until `deadline`.
    pub(crate) fn renewed(&self, deadline: Instant) {
        self.state.lock().leases.renewed(deadline);
    }

    /// The leases ran out before they were renewed: every process held is lost, and the
    /// program goes on as `owner`, until `deadline`. Returns how many were lost.
    pub(crate) fn expired(&self, owner: Uuid, deadline: Instant) -> usize {
        self.state.lock().leases.expired(owner, deadline)
    }

    /// A change of `pid` not yet committed: `Some(None)` if it is being deleted.
    pub(crate) fn pending(&self, pid: Uuid) -> Option<Option<Body>> {
        let state = self.state.lock();
        state.overlay.get(&pid).map(|(_, body)| body.clone())
    }

    /// Every pid with a change not yet committed, and whether it is saved (or deleted).
    pub(crate) fn overlay(&self) -> Vec<(Uuid, bool)> {
        let state = self.state.lock();
        (state.overlay.iter())
            .map(|(pid, (_, body))| (*pid, body.is_some()))
            .collect()
    }

    /// The connection to read through; the reason when there is none.
    pub(crate) fn client(&self, shown: &str) -> Result<Arc<Client>, PersistError> {
        let state = self.state.lock();
        state.check(shown)?;
        state
            .client
            .clone()
            .ok_or_else(|| PersistError::unavailable(format!("no connection to {shown}"), None))
    }

    /// Waits until every entry queued so far is settled; an error if one of them was given
    /// up, if a lease refused a save that no flush has reported yet (it may have been settled
    /// before this call), or if the store has failed.
    pub(crate) fn flush(&self, shown: &str) -> Result<(), PersistError> {
        let mut state = self.state.lock();
        let (target, before) = (state.queued, state.settled);
        while state.settled < target && state.failure.is_none() {
            self.settled.wait(&mut state);
        }
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        if let Some(pid) = state.refused.take() {
            return Err(PersistError::LeaseLost { pid });
        }
        if state.lost > before {
            let why = state.down.as_ref().map_or("", |(_, why)| why.as_str());
            return Err(PersistError::unavailable(
                format!("saves were given up, {shown} could not be reached in time: {why}"),
                None,
            ));
        }
        Ok(())
    }

    /// The writer's next entries: everything queued, or `None` once the store is closing and
    /// nothing is left.
    pub(crate) async fn take(&self) -> Option<Vec<Entry>> {
        loop {
            // Registered before looking, so that a push in between is not missed.
            let notified = self.work.notified();
            {
                let mut state = self.state.lock();
                if !state.entries.is_empty() {
                    return Some(state.entries.drain(..).collect());
                }
                if state.closing {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Everything queued now (perhaps nothing), without waiting.
    pub(crate) fn take_now(&self) -> Vec<Entry> {
        self.state.lock().entries.drain(..).collect()
    }

    /// Puts entries that could not be committed back at the front, in their order, for the
    /// next connection.
    pub(crate) fn put_back(&self, entries: Vec<Entry>) {
        let mut state = self.state.lock();
        for entry in entries.into_iter().rev() {
            state.entries.push_front(entry);
        }
    }

    /// Marks `entries` committed: reads find their changes in the table from now on. The saves
    /// of the pids in `refused` did not land (their lease is another program's): their entries
    /// fail with `LeaseLost`, and the leases are lost.
    pub(crate) fn committed(&self, entries: Vec<Entry>, refused: &HashSet<Uuid>) {
        let mut state = self.state.lock();
        let mut results = Vec::with_capacity(entries.len());
        for entry in &entries {
            state.forget(entry);
            state.settled = state.settled.max(entry.seq);
            let mut result = Ok(());
            for change in &entry.changes {
                if let Change::Save { pid, token, .. } = change
                    && refused.contains(pid)
                {
                    state.leases.refused(*pid, *token);
                    result = Err(PersistError::LeaseLost { pid: *pid });
                    state.refused = Some(*pid);
                }
            }
            results.push(result);
        }
        drop(state);
        self.settled.notify_all();
        for (entry, result) in entries.into_iter().zip(results) {
            entry.settle(result);
        }
    }

    /// The database can be reached through `client`.
    pub(crate) fn up(&self, client: Arc<Client>) {
        let mut state = self.state.lock();
        state.client = Some(client);
        state.down = None;
    }

    /// The database cannot be reached; returns since when.
    pub(crate) fn down(&self, why: String) -> Instant {
        let mut state = self.state.lock();
        state.client = None;
        state.down.get_or_insert((Instant::now(), why)).0
    }

    /// Gives up every queued entry (the database stayed out of reach too long, or the store
    /// closed while it was); returns how many changes were lost.
    pub(crate) fn give_up(&self, shown: &str) -> usize {
        let mut state = self.state.lock();
        let entries: Vec<Entry> = state.entries.drain(..).collect();
        let why = state
            .down
            .as_ref()
            .map_or(String::new(), |(_, why)| why.clone());
        for entry in &entries {
            state.forget(entry);
            state.settled = state.settled.max(entry.seq);
            state.lost = state.lost.max(entry.seq);
        }
        drop(state);
        self.settled.notify_all();
        let lost = entries.iter().map(|e| e.changes.len()).sum();
        for entry in entries {
            entry.settle(Err(PersistError::unavailable(
                format!("{shown} could not be reached in time: {why}"),
                None,
            )));
        }
        lost
    }

    /// A failure no reconnection mends: every entry queued and every later call fail with it.
    pub(crate) fn fail(&self, failure: PersistError) {
        let mut state = self.state.lock();
        state.failure = Some(failure.clone());
        let entries: Vec<Entry> = state.entries.drain(..).collect();
        drop(state);
        self.settled.notify_all();
        for entry in entries {
            entry.settle(Err(failure.clone()));
        }
    }

    pub(crate) fn close(&self) {
        self.state.lock().closing = true;
        self.work.notify_one();
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.state.lock().closing
    }
}

impl State {
    fn check(&self, shown: &str) -> Result<(), PersistError> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        match &self.down {
            Some((_, why)) => Err(PersistError::unavailable(
                format!("{shown} cannot be reached: {why}"),
                None,
            )),
            None => Ok(()),
        }
    }

    /// Drops the overlay's changes of `entry`, unless a later entry changed the same pid.
    fn forget(&mut self, entry: &Entry) {
        for change in &entry.changes {
            let pid = change.pid();
            if self
                .overlay
                .get(&pid)
                .is_some_and(|(seq, _)| *seq <= entry.seq)
            {
                self.overlay.remove(&pid);
            }
        }
    }
}
