//! Where checkpoints are kept: the [`Persister`] trait and three stores.

mod committed;
mod json_dir;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod lease;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

pub use committed::Committed;
pub use json_dir::JsonDirPersister;
pub use memory::InMemoryPersister;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresBuilder, PostgresPersister};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteBuilder, SqlitePersister};

use uuid::Uuid;

use super::checkpoint::Checkpoint;
use super::error::PersistError;

/// A store of checkpoints, one per process (a new save replaces the last). Its methods are
/// called on the runtime thread between steps, so a store should be quick (the built-in ones
/// are: memory, one small file, one SQLite row).
pub trait Persister: Send + Sync + 'static {
    /// Saves (or replaces) the checkpoint of `checkpoint.pid`.
    ///
    /// # Errors
    ///
    /// [`PersistError::Store`] when the store fails.
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError>;
    /// Loads a process's checkpoint.
    ///
    /// # Errors
    ///
    /// [`PersistError::NotFound`] for a pid the store does not hold; [`PersistError::Corrupt`] for
    /// bytes that are not a checkpoint of this pid; [`PersistError::Store`] when the store fails.
    fn load(&self, pid: Uuid) -> Result<Checkpoint, PersistError>;
    /// The pids of every saved checkpoint.
    ///
    /// # Errors
    ///
    /// [`PersistError::Store`] when the store fails.
    fn list(&self) -> Result<Vec<Uuid>, PersistError>;
    /// Deletes a process's checkpoint; deleting one that is absent is not an error.
    ///
    /// # Errors
    ///
    /// [`PersistError::Store`] when the store fails.
    fn delete(&self, pid: Uuid) -> Result<(), PersistError>;

    /// Saves a checkpoint given as its encoding ([`Checkpoint::to_bytes`]): the engine saves
    /// through this, so that a store which keeps bytes (as the built-in ones do) gets them
    /// without the engine building a [`Checkpoint`] first. By default it decodes them and
    /// calls [`save`](Persister::save).
    ///
    /// # Errors
    ///
    /// [`PersistError::Corrupt`] for bytes that do not decode (by default); [`PersistError::Store`]
    /// when the store fails.
    fn save_bytes(&self, pid: Uuid, bytes: Vec<u8>) -> Result<(), PersistError> {
        self.save(&decode(pid, &bytes)?)
    }

    /// Saves as [`save_bytes`](Persister::save_bytes) does, and tells when the save is kept:
    /// the engine saves the checkpoint of each step through this and awaits the answer
    /// before the step runs, so that a store which commits on a thread of its own (the
    /// PostgreSQL store committing each save) neither blocks the runtime thread nor lets a
    /// step run before its checkpoint is kept. By default the save is kept when `save_bytes`
    /// returns, and the answer is ready at once; a store that commits in groups answers at once
    /// too, by design (its writes are kept a moment later, see its docs).
    ///
    /// # Errors
    ///
    /// As [`save_bytes`](Persister::save_bytes); the answer carries a failure to commit.
    fn save_committed(&self, pid: Uuid, bytes: Vec<u8>) -> Result<Committed, PersistError> {
        self.save_bytes(pid, bytes).map(|()| Committed::now())
    }

    /// Saves several checkpoints, given as their encodings, as one: all of them or, if the
    /// store fails or the program dies meanwhile, none, in a store that can (the SQLite store
    /// and the in-memory one do). By default they are saved one by one, which a crash can cut
    /// short.
    ///
    /// # Errors
    ///
    /// [`PersistError::Store`] when the store fails; a store that saves in one transaction has then
    /// saved none.
    fn save_all(&self, checkpoints: Vec<(Uuid, Vec<u8>)>) -> Result<(), PersistError> {
        for (pid, bytes) in checkpoints {
            self.save_bytes(pid, bytes)?;
        }
        Ok(())
    }

    /// Ready when every save and delete made so far is kept, as [`flush`](Persister::flush)
    /// but without blocking the caller on a store that commits on a thread of its own (the
    /// PostgreSQL store): what hands an outcome to another program (a launcher answering a
    /// `continue`) awaits this first, so that the store never says "still running" about a
    /// process whose outcome went out. By default it flushes now.
    fn until_flushed(&self) -> Committed {
        match self.flush() {
            Ok(()) => Committed::now(),
            Err(error) => Committed::later(async move { Err(error) }),
        }
    }

    /// Takes the lease of `pid` for this program, before the engine loads the process to run
    /// it, in a store that several programs share and that keeps leases (SQLite with leases,
    /// PostgreSQL; see their docs): while a program holds a process's lease, no other can take
    /// it, and every save it makes of the process checks that it still holds it. By default
    /// there are no leases: it succeeds at once.
    ///
    /// # Errors
    ///
    /// [`PersistError::Held`] when another program holds it; [`PersistError::LeaseLost`] when
    /// this program's own leases have run out; [`PersistError::Unavailable`] or
    /// [`PersistError::Store`] when the store fails.
    fn acquire(&self, pid: Uuid) -> Result<(), PersistError> {
        let _ = pid;
        Ok(())
    }

    /// Gives the lease of `pid` up: its process ended or stopped here (after its last save,
    /// in the order of the saves). By default there are no leases: it does nothing.
    fn release(&self, pid: Uuid) {
        let _ = pid;
    }

    /// Waits until every save and delete made so far is durable, for a store that commits
    /// after it returns (SQLite with group commit); by default there is nothing to wait for.
    ///
    /// # Errors
    ///
    /// The store's failure to commit.
    fn flush(&self) -> Result<(), PersistError> {
        Ok(())
    }
}

/// The pids of a table read after `pending` (the changes not yet committed when it was read,
/// each a save or a delete) was taken: what is pending then is committed, or still pending,
/// by the time the table is read, so the pending changes are applied over it.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn with_pending(table: Vec<Uuid>, pending: Vec<(Uuid, bool)>) -> Vec<Uuid> {
    let mut pids: std::collections::HashSet<Uuid> = table.into_iter().collect();
    for (pid, saved) in pending {
        if saved {
            pids.insert(pid);
        } else {
            pids.remove(&pid);
        }
    }
    pids.into_iter().collect()
}

pub(crate) fn decode(pid: Uuid, bytes: &[u8]) -> Result<Checkpoint, PersistError> {
    let checkpoint =
        Checkpoint::from_bytes(bytes).map_err(|reason| PersistError::Corrupt { pid, reason })?;
    if checkpoint.pid != pid {
        return Err(PersistError::Corrupt {
            pid,
            reason: format!("it holds process {} instead", checkpoint.pid),
        });
    }
    Ok(checkpoint)
}

pub(crate) fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, PersistError> {
    checkpoint
        .to_bytes()
        .map_err(|e| PersistError::store("cannot encode a checkpoint", e))
}
