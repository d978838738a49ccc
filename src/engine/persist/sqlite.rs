//! Checkpoints in an SQLite database (feature `sqlite`), in WAL mode, committed one save at a
//! time or in groups by a writer thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex};
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{PersistError, Persister, decode, encode, with_pending};
use crate::engine::checkpoint::Checkpoint;

/// One row per process in table `checkpoints(pid TEXT PRIMARY KEY, body BLOB)`, in WAL mode
/// with `synchronous = NORMAL` (a power loss may lose the latest commits; a crash of the
/// program does not). The write-ahead log is checkpointed into the database by a thread of the
/// store's own, never inside a commit (where SQLite would do it, with an `fsync`, once the log
/// holds a thousand pages, stalling that commit for milliseconds).
///
/// Two ways to commit:
/// - [`open`](Self::open): every save is its own transaction, done before `save` returns, so a
///   crash of the program right after a step's checkpoint keeps it.
/// - [`open_batched`](Self::open_batched) (group commit): saves and deletes are queued and a
///   writer thread commits everything queued in one transaction, about once a millisecond while
///   writes come. The store is always the result of a prefix of the operations, never a mix,
///   so a crash is like a crash a moment earlier: the writes of the last few milliseconds (the
///   group gathering and the group being committed) are lost, and the processes continue from
///   their checkpoints before them (their steps run again, as the at-least-once rule allows).
///   Measured under SIGKILL at random moments (`tests/engine_sigkill.rs`), the oldest step that
///   ran again had started 1.2-1.6 ms before the kill at the median, and at most 9 ms. Reads
///   see queued operations at once. [`flush`](Persister::flush) waits until everything queued
///   is committed; dropping the store flushes too. A failed commit makes every later save fail
///   with its error, so processes stop rather than run unsaved.
///
/// ```
/// use runtime_thread::engine::{Persister, SqlitePersister};
///
/// let dir = std::env::temp_dir().join(format!("doc-sqlite-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let store = SqlitePersister::open_batched(dir.join("checkpoints.sqlite"))?;
/// assert!(store.list()?.is_empty());
/// store.flush()?;
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SqlitePersister {
    db: Arc<Db>,
    batcher: Option<Batcher>,
}

impl std::fmt::Debug for SqlitePersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePersister")
            .field("group_commit", &self.batcher.is_some())
            .finish_non_exhaustive()
    }
}

fn store_error(error: rusqlite::Error) -> PersistError {
    PersistError::store("sqlite", error)
}

impl SqlitePersister {
    /// Opens (or creates) the database at `path`; each save is committed before it returns.
    ///
    /// # Errors
    ///
    /// `PersistError::Store` when the database cannot be opened or set up (its file, WAL mode, the
    /// table).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PersistError> {
        Ok(SqlitePersister {
            db: Arc::new(Db::open(path)?),
            batcher: None,
        })
    }

    /// Opens (or creates) the database at `path` with group commit (see the type's docs).
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), and when the commit thread cannot start.
    pub fn open_batched(path: impl AsRef<Path>) -> Result<Self, PersistError> {
        let db = Arc::new(Db::open(path)?);
        let batcher = Batcher::start(db.clone())?;
        Ok(SqlitePersister {
            db,
            batcher: Some(batcher),
        })
    }

    /// A private in-memory database (tests, benchmarks).
    ///
    /// # Errors
    ///
    /// `PersistError::Store` when SQLite cannot set the database up.
    pub fn in_memory() -> Result<Self, PersistError> {
        Ok(SqlitePersister {
            db: Arc::new(Db::set_up(
                Connection::open_in_memory().map_err(store_error)?,
            )?),
            batcher: None,
        })
    }

    /// Replaces the stored bytes of `pid` (to test how corrupt checkpoints are handled).
    ///
    /// # Errors
    ///
    /// The database's failure to write.
    pub fn put_raw(&self, pid: Uuid, bytes: &[u8]) -> Result<(), PersistError> {
        self.write(pid, Some(bytes.to_vec()))
    }

    fn write(&self, pid: Uuid, body: Option<Vec<u8>>) -> Result<(), PersistError> {
        match &self.batcher {
            Some(batcher) => batcher.queue(pid, body),
            None => self.db.apply([(&pid, body.as_deref())]),
        }
    }
}

impl Persister for SqlitePersister {
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.write(checkpoint.pid, Some(encode(checkpoint)?))
    }

    fn save_bytes(&self, pid: Uuid, bytes: Vec<u8>) -> Result<(), PersistError> {
        self.write(pid, Some(bytes))
    }

    fn load(&self, pid: Uuid) -> Result<Checkpoint, PersistError> {
        let body = match self.batcher.as_ref().and_then(|b| b.queued(pid)) {
            Some(queued) => queued,
            None => self.db.get(pid)?,
        };
        decode(pid, &body.ok_or(PersistError::NotFound { pid })?)
    }

    fn list(&self) -> Result<Vec<Uuid>, PersistError> {
        let pending = (self.batcher.as_ref()).map_or_else(Vec::new, Batcher::overlay);
        Ok(with_pending(self.db.pids()?, pending))
    }

    fn delete(&self, pid: Uuid) -> Result<(), PersistError> {
        self.write(pid, None)
    }

    /// One transaction (with group commit: queued at once, so one group commits them all).
    fn save_all(&self, checkpoints: Vec<(Uuid, Vec<u8>)>) -> Result<(), PersistError> {
        match &self.batcher {
            Some(batcher) => batcher.queue_all(checkpoints.into_iter().map(|(p, b)| (p, Some(b)))),
            None => self
                .db
                .apply(checkpoints.iter().map(|(pid, body)| (pid, Some(&body[..])))),
        }
    }

    /// Waits until every save and delete made so far is committed (at once without group
    /// commit); the error of a failed commit.
    fn flush(&self) -> Result<(), PersistError> {
        match &self.batcher {
            Some(batcher) => batcher.flush(),
            None => Ok(()),
        }
    }
}

/// The database: one connection, used by one caller at a time, and the thread that
/// checkpoints its write-ahead log (for a database in a file).
struct Db {
    connection: Mutex<Connection>,
    /// Declared last: dropped (and joined) after the connection is closed.
    checkpointer: Option<Checkpointer>,
}

impl Db {
    fn open(path: impl AsRef<Path>) -> Result<Self, PersistError> {
        let path = path.as_ref();
        let mut db = Self::set_up(Connection::open(path).map_err(store_error)?)?;
        let checkpointer = Checkpointer::start(Connection::open(path).map_err(store_error)?)?;
        let requests = checkpointer.requests.clone();
        // Replaces SQLite's automatic checkpoint, which would run inside the commit.
        db.connection
            .get_mut()
            .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages| {
                if pages >= MOST_LOG_PAGES {
                    // The checkpointer cannot catch up with a writer that never pauses (a
                    // log is only restarted once it is wholly copied): copy the rest here,
                    // rarely, so that the log stays bounded.
                    let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                } else if pages >= CHECKPOINT_PAGES {
                    requests.request();
                }
                Ok(())
            }))
            .map_err(store_error)?;
        db.checkpointer = Some(checkpointer);
        Ok(db)
    }

    fn set_up(connection: Connection) -> Result<Self, PersistError> {
        // `journal_mode` answers with the mode now in force, so it is a query, not a plain pragma.
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(store_error)?;
        connection
            .execute_batch(
                "PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS checkpoints (pid TEXT PRIMARY KEY, body BLOB NOT NULL)
                     WITHOUT ROWID;",
            )
            .map_err(store_error)?;
        Ok(Db {
            connection: Mutex::new(connection),
            checkpointer: None,
        })
    }

    /// Saves (`Some`) and deletes (`None`) in one transaction.
    fn apply<'a>(
        &self,
        writes: impl IntoIterator<Item = (&'a Uuid, Option<&'a [u8]>)>,
    ) -> Result<(), PersistError> {
        let mut connection = self.connection.lock();
        let transaction = connection.transaction().map_err(store_error)?;
        {
            let mut save = transaction
                .prepare_cached("INSERT OR REPLACE INTO checkpoints (pid, body) VALUES (?1, ?2)")
                .map_err(store_error)?;
            let mut delete = transaction
                .prepare_cached("DELETE FROM checkpoints WHERE pid = ?1")
                .map_err(store_error)?;
            for (pid, body) in writes {
                let pid = pid.to_string();
                match body {
                    Some(body) => save.execute(params![pid, body]),
                    None => delete.execute(params![pid]),
                }
                .map_err(store_error)?;
            }
        }
        transaction.commit().map_err(store_error)
    }

    fn get(&self, pid: Uuid) -> Result<Option<Vec<u8>>, PersistError> {
        let connection = self.connection.lock();
        let mut statement = connection
            .prepare_cached("SELECT body FROM checkpoints WHERE pid = ?1")
            .map_err(store_error)?;
        statement
            .query_row(params![pid.to_string()], |row| row.get(0))
            .optional()
            .map_err(store_error)
    }

    fn pids(&self) -> Result<Vec<Uuid>, PersistError> {
        let connection = self.connection.lock();
        let mut statement = connection
            .prepare("SELECT pid FROM checkpoints")
            .map_err(store_error)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(store_error)?;
        let mut pids = Vec::new();
        for row in rows {
            let text = row.map_err(store_error)?;
            let pid = Uuid::parse_str(&text)
                .map_err(|e| PersistError::store(format!("a row with pid {text:?}"), e))?;
            pids.push(pid);
        }
        Ok(pids)
    }
}

/// The write-ahead log's length, in pages, from which it is checkpointed (SQLite's own
/// default for its automatic checkpoint).
const CHECKPOINT_PAGES: std::ffi::c_int = 1000;

/// The length from which a commit copies the rest of the log itself: ten times the
/// checkpointer's threshold, so a writer that never pauses pays for a checkpoint in one commit
/// in ten thousand pages instead of one in a thousand, and the log stays under about 40 MB.
const MOST_LOG_PAGES: std::ffi::c_int = 10 * CHECKPOINT_PAGES;

/// The thread that checkpoints the write-ahead log into the database, on its own connection,
/// when a commit asks for it; writers go on meanwhile (a passive checkpoint waits for nobody).
/// It goes on until the log is wholly copied or a pass makes no progress, because only a
/// wholly copied log starts again from its beginning instead of growing.
struct Checkpointer {
    requests: Arc<Requests>,
    thread: Option<JoinHandle<()>>,
}

/// Whether a checkpoint is asked for, and whether the store is closing.
#[derive(Default)]
struct Requests {
    state: Mutex<RequestState>,
    wake: Condvar,
}

#[derive(Default)]
struct RequestState {
    asked: bool,
    closing: bool,
}

impl Requests {
    fn request(&self) {
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
    fn start(connection: Connection) -> Result<Self, PersistError> {
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

/// How long the writer lets writes gather after the first one of a group: the most a crash
/// can lose beyond the group being committed.
const GROUP_LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// Writes by pid: the latest body, or `None` for a delete.
type Writes = HashMap<Uuid, Option<Vec<u8>>>;

/// Group commit: a queue of writes (the latest per pid wins) and the thread that commits it.
struct Batcher {
    shared: Arc<Queue>,
    writer: Option<JoinHandle<()>>,
}

struct Queue {
    state: Mutex<QueueState>,
    /// Signalled when writes are queued or the store closes.
    work: Condvar,
    /// Signalled after each commit (or failed commit).
    committed: Condvar,
}

#[derive(Default)]
struct QueueState {
    queued: Writes,
    /// The group being committed: still what reads must see until the commit is done.
    in_flight: Arc<Writes>,
    /// Writes queued since the start, and how many of them are committed.
    queued_count: u64,
    committed_count: u64,
    failure: Option<PersistError>,
    closing: bool,
}

impl Batcher {
    fn start(db: Arc<Db>) -> Result<Self, PersistError> {
        let shared = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            work: Condvar::new(),
            committed: Condvar::new(),
        });
        let queue = shared.clone();
        let writer = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || commit_groups(&db, &queue))
            .map_err(|e| PersistError::store("cannot start the writer thread", e))?;
        Ok(Batcher {
            shared,
            writer: Some(writer),
        })
    }

    fn queue(&self, pid: Uuid, body: Option<Vec<u8>>) -> Result<(), PersistError> {
        self.queue_all([(pid, body)])
    }

    /// Queues `writes` under one lock, so that one group commits them all, or none.
    fn queue_all(
        &self,
        writes: impl IntoIterator<Item = (Uuid, Option<Vec<u8>>)>,
    ) -> Result<(), PersistError> {
        let mut state = self.shared.state.lock();
        if let Some(failure) = &state.failure {
            return Err(failure.clone());
        }
        for (pid, body) in writes {
            state.queued.insert(pid, body);
            state.queued_count += 1;
        }
        drop(state);
        self.shared.work.notify_one();
        Ok(())
    }

    /// A queued or in-flight write of `pid`: `Some(None)` if it is being deleted.
    fn queued(&self, pid: Uuid) -> Option<Option<Vec<u8>>> {
        let state = self.shared.state.lock();
        (state.queued.get(&pid))
            .or_else(|| state.in_flight.get(&pid))
            .cloned()
    }

    /// Every queued or in-flight pid, and whether it is being saved (or deleted).
    fn overlay(&self) -> Vec<(Uuid, bool)> {
        let state = self.shared.state.lock();
        let in_flight = state
            .in_flight
            .iter()
            .filter(|(pid, _)| !state.queued.contains_key(pid));
        (state.queued.iter().chain(in_flight))
            .map(|(pid, body)| (*pid, body.is_some()))
            .collect()
    }

    fn flush(&self) -> Result<(), PersistError> {
        let mut state = self.shared.state.lock();
        let target = state.queued_count;
        while state.committed_count < target && state.failure.is_none() {
            self.shared.committed.wait(&mut state);
        }
        state.failure.clone().map_or(Ok(()), Err)
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
fn commit_groups(db: &Db, queue: &Queue) {
    loop {
        let (group, upto) = {
            let mut state = queue.state.lock();
            while state.queued.is_empty() && !state.closing {
                queue.work.wait(&mut state);
            }
            if state.queued.is_empty() {
                return;
            }
            if !state.closing {
                // Let a group gather: one commit per few writes costs a core's worth of commits.
                drop(state);
                std::thread::sleep(GROUP_LINGER);
                state = queue.state.lock();
            }
            let group = Arc::new(std::mem::take(&mut state.queued));
            state.in_flight = group.clone();
            (group, state.queued_count)
        };
        let result = db.apply(group.iter().map(|(pid, body)| (pid, body.as_deref())));
        let mut state = queue.state.lock();
        state.in_flight = Arc::default();
        match result {
            Ok(()) => state.committed_count = upto,
            Err(error) => {
                tracing::error!(%error, "a group of checkpoints could not be committed");
                state.failure = Some(error);
            }
        }
        drop(state);
        queue.committed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Batcher {
        /// A crash: the writer stops without committing what is still queued.
        fn crash(mut self) {
            let mut state = self.shared.state.lock();
            state.queued.clear();
            state.closing = true;
            drop(state);
            self.shared.work.notify_one();
            if let Some(writer) = self.writer.take() {
                let _ = writer.join();
            }
        }
    }

    /// A directory of one test's own, removed when the test ends, even by a failed assertion.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(what: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("sqlite-{what}-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str) -> std::path::PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn table(db: &Db) -> HashMap<Uuid, Vec<u8>> {
        db.pids()
            .unwrap()
            .into_iter()
            .map(|pid| (pid, db.get(pid).unwrap().unwrap()))
            .collect()
    }

    /// After a crash, the table holds exactly the result of some prefix of the writes.
    #[test]
    fn group_commit_leaves_a_prefix_of_the_writes_after_a_crash() {
        let dir = Scratch::new("prefix");
        let pids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20 {
            let path = dir.file(&format!("{round}.sqlite"));
            let db = Arc::new(Db::open(&path).unwrap());
            let batcher = Batcher::start(db.clone()).unwrap();
            let mut states = vec![HashMap::new()];
            for n in 0..(200 + next() % 400) {
                let pid = pids[(next() % 8) as usize];
                let body = (next() % 4 != 0).then(|| format!("{round}-{n}").into_bytes());
                batcher.queue(pid, body.clone()).unwrap();
                let mut state = states.last().cloned().unwrap_or_default();
                match body {
                    Some(body) => state.insert(pid, body),
                    None => state.remove(&pid),
                };
                states.push(state);
                if next() % 50 == 0 {
                    std::thread::yield_now();
                }
            }
            batcher.crash();
            let after = table(&Db::open(&path).unwrap());
            assert!(
                states.contains(&after),
                "round {round}: the table is not the result of a prefix of the writes"
            );
        }
    }

    /// The write-ahead log is copied into the database by the store's own thread, not left
    /// to grow, and not inside a commit.
    #[test]
    fn the_checkpointer_moves_the_log_into_the_database() {
        let dir = Scratch::new("wal");
        let path = dir.file("store.sqlite");
        let store = SqlitePersister::open(&path).unwrap();
        let pids: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
        // Far more pages than one checkpoint's worth.
        for n in 0..3000 {
            let body = format!("{n:04096}");
            store
                .put_raw(pids[n % pids.len()], body.as_bytes())
                .unwrap();
        }
        // Nothing tells when a checkpoint is done: watch the file, within a bound.
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while size() < 50 * 4096 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            size() >= 50 * 4096,
            "nothing was checkpointed: the database holds {} bytes",
            size()
        );
        drop(store);
    }

    #[test]
    fn queued_writes_are_read_back_at_once_and_committed_by_flush() {
        let dir = Scratch::new("batched");
        let path = dir.file("store.sqlite");
        let store = SqlitePersister::open_batched(&path).unwrap();
        let (kept, gone) = (Uuid::new_v4(), Uuid::new_v4());
        store.put_raw(kept, b"not a checkpoint").unwrap();
        store.put_raw(gone, b"x").unwrap();
        store.delete(gone).unwrap();
        assert_eq!(store.list().unwrap(), vec![kept]);
        assert!(matches!(
            store.load(kept),
            Err(PersistError::Corrupt { .. })
        ));
        assert!(matches!(
            store.load(gone),
            Err(PersistError::NotFound { .. })
        ));
        store.flush().unwrap();
        let other = SqlitePersister::open(&path).unwrap();
        assert_eq!(other.list().unwrap(), vec![kept]);
        drop((store, other));
    }
}
