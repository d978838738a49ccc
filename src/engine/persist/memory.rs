//! Checkpoints in memory (tests, benchmarks, a process that only needs pause-and-continue).

use std::collections::HashMap;

use parking_lot::Mutex;
use uuid::Uuid;

use super::{PersistError, Persister, decode, encode};
use crate::engine::checkpoint::Checkpoint;

/// Keeps each checkpoint as its encoded bytes, so a load is a real decode (as from disk) and a
/// later change to the process cannot leak into a saved checkpoint.
#[derive(Default)]
pub struct InMemoryPersister {
    saved: Mutex<HashMap<Uuid, Vec<u8>>>,
}

impl std::fmt::Debug for InMemoryPersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryPersister")
            .field("checkpoints", &self.saved.lock().len())
            .finish()
    }
}

impl InMemoryPersister {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the stored bytes of `pid` (to test how corrupt checkpoints are handled).
    pub fn put_raw(&self, pid: Uuid, bytes: Vec<u8>) {
        self.saved.lock().insert(pid, bytes);
    }
}

impl Persister for InMemoryPersister {
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.save_bytes(checkpoint.pid, encode(checkpoint)?)
    }

    fn save_bytes(&self, pid: Uuid, bytes: Vec<u8>) -> Result<(), PersistError> {
        // The old bytes are dropped outside the lock.
        let _old = self.saved.lock().insert(pid, bytes);
        Ok(())
    }

    fn save_all(&self, checkpoints: Vec<(Uuid, Vec<u8>)>) -> Result<(), PersistError> {
        let mut saved = self.saved.lock();
        let replaced: Vec<_> = checkpoints
            .into_iter()
            .filter_map(|(pid, bytes)| saved.insert(pid, bytes))
            .collect();
        // The replaced bytes are freed after the lock is released.
        drop(saved);
        drop(replaced);
        Ok(())
    }

    fn load(&self, pid: Uuid) -> Result<Checkpoint, PersistError> {
        let bytes = self
            .saved
            .lock()
            .get(&pid)
            .cloned()
            .ok_or(PersistError::NotFound { pid })?;
        decode(pid, &bytes)
    }

    fn list(&self) -> Result<Vec<Uuid>, PersistError> {
        Ok(self.saved.lock().keys().copied().collect())
    }

    fn delete(&self, pid: Uuid) -> Result<(), PersistError> {
        self.saved.lock().remove(&pid);
        Ok(())
    }
}
