//! The thread that copies the write-ahead log into the database, outside every commit.

use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use super::store_error;
use crate::engine::PersistError;

/// The write-ahead log's length, in pages, from which it is checkpointed (SQLite's own
/// default for its automatic checkpoint).
pub(super) const CHECKPOINT_PAGES: std::ffi::c_int = 1000;

/// The length from which a commit copies the rest of the log itself: ten times the
/// checkpointer's threshold, so a writer that never pauses pays for a checkpoint in one commit
/// in ten thousand pages instead of one in a thousand, and the log stays under about 40 MB.
pub(super) const MOST_LOG_PAGES: std::ffi::c_int = 10 * CHECKPOINT_PAGES;

/// The thread that checkpoints the write-ahead log into the database, on its own connection,
/// when a commit asks for it; writers go on meanwhile (a passive checkpoint waits for nobody).
/// It goes on until the log is wholly copied or a pass makes no progress, because only a
/// wholly copied log starts again from its beginning instead of growing.
pub(super) struct Checkpointer {
    pub(super) requests: Arc<Requests>,
    thread: Option<JoinHandle<()>>,
}

/// Whether a checkpoint is asked for, and whether the store is closing.
#[derive(Default)]
pub(super) struct Requests {
    state: Mutex<RequestState>,
    wake: Condvar,
}

#[derive(Default)]
struct RequestState {
    asked: bool,
    closing: bool,
}

impl Requests {
    pub(super) fn request(&self) {
        let mut state = self.state.lock();
        if !state.asked {
            state.asked = true;
            self.wake.notify_one();
        }
    }

    /// Waits for a request; false once the store is closing and nothing more is asked.
    fn next(&self) -> bool {
        let mut state = self.state.lock();
        while !state.asked && !state.closing {
            self.wake.wait(&mut state);
        }
        std::mem::take(&mut state.asked) || !state.closing
    }

    fn close(&self) {
        self.state.lock().closing = true;
        self.wake.notify_one();
    }
}

impl Checkpointer {
    pub(super) fn start(connection: Connection) -> Result<Self, PersistError> {
        // A connection learns that the database is in WAL mode when it first reads it; until
        // then a checkpoint on it does nothing.
        let mode: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(store_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(PersistError::store_failed(format!(
                "the database is in journal mode {mode}, not WAL"
            )));
        }
        let requests = Arc::new(Requests::default());
        let asked = requests.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpointer".into())
            .spawn(move || {
                while asked.next() {
                    catch_up(&connection);
                }
            })
            .map_err(|e| PersistError::store("cannot start the checkpointer", e))?;
        Ok(Checkpointer {
            requests,
            thread: Some(thread),
        })
    }
}

/// Copies the log into the database, pass after pass, until it is wholly copied (the next
/// write then starts the log again) or a pass copies nothing new.
fn catch_up(connection: &Connection) {
    let mut copied = -1;
    loop {
        match connection.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
            Ok((log, done)) if done < log && done > copied => copied = done,
            Ok(_) => return,
            Err(error) => {
                tracing::warn!(%error, "the write-ahead log could not be checkpointed; a later commit will");
                return;
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.requests.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
