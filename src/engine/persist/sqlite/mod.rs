//! Checkpoints in an SQLite database (feature `sqlite`), in WAL mode, committed one save at a
//! time or in groups by a writer thread; with leases, one file shared by several programs.

mod batcher;
mod checkpointer;
mod db;
mod keeper;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use uuid::Uuid;

use super::lease::{DEFAULT_LEASE, check_lease, default_owner_name};
use super::{Committed, PersistError, Persister, decode, encode, with_pending};
use crate::engine::checkpoint::Checkpoint;
use batcher::{Batcher, Pending};
use db::{Db, Write};
use keeper::{Keeper, Ownership};

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
/// **Leases** ([`SqliteBuilder::leases`]): for one file shared by several programs on one
/// machine (the workers of a daemon), a process runs in at most one of them at a time. Each
/// program is an owner that renews all its leases at once, every third of
/// [`lease_for`](SqliteBuilder::lease_for) (10 s by default), from a thread of the store's own.
/// [`acquire`](Persister::acquire), which the engine calls before it loads a process to run it,
/// takes the process's lease with a new fencing token, if nobody else holds it, or its holder's
/// leases have run out (it died, or stalled); otherwise it fails with [`PersistError::Held`]. A
/// process made here takes its lease with its first save. Every save (and delete) of a process
/// checks, in its own transaction, that this program is still alive as an owner and holds the
/// lease with its token: a save of a process taken over lands nowhere, and it and every later
/// save of the process fail with [`PersistError::LeaseLost`], as do all saves at once after the
/// program may have outlived its leases, so the engine stops those processes where they are.
/// Leases are released when a process ends or stops here, and all at once when the store is
/// dropped; a program that dies holds its processes until its leases run out. Expiries are on
/// the wall clock, which all programs on the machine share. Every program sharing the file must
/// open it with leases: one without them checks nothing (it is warned about live owners). A
/// program stopped in the middle of a commit (SIGSTOP, a debugger) holds the file's write lock,
/// and the others' saves wait for it, then fail (SQLite's busy timeout, 5 s): for programs that
/// may be frozen, or on several machines, use the PostgreSQL store.
///
/// The tables carry a version (`PRAGMA user_version`); a file made by an older build is
/// migrated when it is opened, and one migrated by a newer build is refused.
///
/// ```
/// use runtime_thread::engine::{Persister, SqlitePersister};
///
/// let dir = std::env::temp_dir().join(format!("doc-sqlite-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let store = SqlitePersister::builder(dir.join("checkpoints.sqlite"))
///     .group_commit(true)
///     .leases(true)
///     .open()?;
/// assert!(store.list()?.is_empty());
/// store.flush()?;
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SqlitePersister {
    /// Declared in the order they are dropped: the queue committed, renewals stopped, then
    /// the leases given up (in `Drop`), and the database closed.
    batcher: Option<Batcher>,
    keeper: Option<Keeper>,
    ownership: Option<Arc<Ownership>>,
    db: Arc<Db>,
}

impl std::fmt::Debug for SqlitePersister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlitePersister")
            .field("group_commit", &self.batcher.is_some())
            .field("leases", &self.ownership.is_some())
            .finish_non_exhaustive()
    }
}

fn store_error(error: rusqlite::Error) -> PersistError {
    PersistError::store("sqlite", error)
}

/// Configures a [`SqlitePersister`]: see [`SqlitePersister::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until `open` is called"]
pub struct SqliteBuilder {
    path: PathBuf,
    group_commit: bool,
    leases: bool,
    lease_for: Duration,
    owner_name: Option<String>,
}

impl SqliteBuilder {
    /// Commits in groups rather than each save on its own (see [`SqlitePersister`]).
    pub fn group_commit(mut self, group_commit: bool) -> Self {
        self.group_commit = group_commit;
        self
    }

    /// Keeps leases, for a file that several programs share (see [`SqlitePersister`]); off by
    /// default, since one program alone needs none, and one restarted after a crash should not
    /// wait for its old leases to run out.
    pub fn leases(mut self, leases: bool) -> Self {
        self.leases = leases;
        self
    }

    /// How long this program's leases last unless it renews them (default 10 s, at least
    /// 300 ms; renewed every third of that). A program that dies, or stalls, this long loses its
    /// processes to the others.
    pub fn lease_for(mut self, lease_for: Duration) -> Self {
        self.lease_for = lease_for;
        self
    }

    /// How this program names itself to a program that finds one of its processes held
    /// (default `host:pid`).
    pub fn owner_name(mut self, name: impl Into<String>) -> Self {
        self.owner_name = Some(name.into());
        self
    }

    /// Opens (or creates, or migrates) the database, and starts the store's threads.
    ///
    /// # Errors
    ///
    /// `PersistError::Store` when the database cannot be opened or set up (its file, WAL mode,
    /// the tables, a version made by a newer build), for a lease shorter than 300 ms, or when a
    /// thread cannot start.
    pub fn open(self) -> Result<SqlitePersister, PersistError> {
        if self.leases {
            check_lease(self.lease_for)?;
        }
        let db = Arc::new(Db::open(&self.path)?);
        let ownership = if self.leases {
            let name = self.owner_name.unwrap_or_else(default_owner_name);
            Some(Arc::new(Ownership::register(&db, name, self.lease_for)?))
        } else {
            warn_of_owners(&db, &self.path);
            None
        };
        let mut store = SqlitePersister {
            batcher: None,
            keeper: None,
            ownership: ownership.clone(),
            db: db.clone(),
        };
        if let Some(ownership) = &ownership {
            store.keeper = Some(Keeper::start(db.clone(), ownership.clone())?);
        }
        if self.group_commit {
            store.batcher = Some(Batcher::start(db, ownership)?);
        }
        Ok(store)
    }
}

/// A program without leases on a file whose other programs keep them checks none of theirs.
fn warn_of_owners(db: &Db, path: &Path) {
    match db.live_owners() {
        Ok(0) | Err(_) => {}
        Ok(owners) => tracing::warn!(
            path = %path.display(),
            owners,
            "other programs hold leases in this SQLite store, and this one opened it without \
             leases: its saves do not respect theirs (open it with `leases(true)`)"
        ),
    }
}

impl SqlitePersister {
    /// A store in the database at `path`, configured by the builder.
    pub fn builder(path: impl AsRef<Path>) -> SqliteBuilder {
        SqliteBuilder {
            path: path.as_ref().to_owned(),
            group_commit: false,
            leases: false,
            lease_for: DEFAULT_LEASE,
            owner_name: None,
        }
    }

    /// Opens (or creates) the database at `path`; each save is committed before it returns;
    /// no leases.
    ///
    /// # Errors
    ///
    /// As [`SqliteBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PersistError> {
        Self::builder(path).open()
    }

    /// Opens (or creates) the database at `path` with group commit (see the type's docs); no
    /// leases.
    ///
    /// # Errors
    ///
    /// As [`SqliteBuilder::open`].
    pub fn open_batched(path: impl AsRef<Path>) -> Result<Self, PersistError> {
        Self::builder(path).group_commit(true).open()
    }

    /// A private in-memory database (tests, benchmarks).
    ///
    /// # Errors
    ///
    /// `PersistError::Store` when SQLite cannot set the database up.
    pub fn in_memory() -> Result<Self, PersistError> {
        Ok(SqlitePersister {
            batcher: None,
            keeper: None,
            ownership: None,
            db: Arc::new(Db::set_up(
                Connection::open_in_memory().map_err(store_error)?,
            )?),
        })
    }

    /// Replaces the stored bytes of `pid` (to test how corrupt checkpoints are handled).
    ///
    /// # Errors
    ///
    /// The database's failure to write.
    pub fn put_raw(&self, pid: Uuid, bytes: &[u8]) -> Result<(), PersistError> {
        self.write([(pid, Some(bytes.to_vec()))])
    }

    /// Saves (`Some`) or deletes (`None`) as one, each fenced by this program's lease of its
    /// process when the store keeps leases.
    fn write(
        &self,
        changes: impl IntoIterator<Item = (Uuid, Option<Vec<u8>>)>,
    ) -> Result<(), PersistError> {
        let fenced = self.fence(changes)?;
        match &self.batcher {
            Some(batcher) => batcher.queue_all(fenced),
            None => {
                let writes = fenced.iter().map(|(pid, pending)| Write {
                    pid: *pid,
                    body: pending.body.as_deref(),
                    token: pending.token,
                });
                let owner = self.ownership.as_ref().map(|o| o.owner());
                let refused = self.db.apply(owner, writes, &[])?;
                self.refused(&refused)
            }
        }
    }

    /// The changes with the tokens they are fenced by: a save of a process not held is one
    /// made here, whose save takes the lease; a delete of one not held is not fenced.
    fn fence(
        &self,
        changes: impl IntoIterator<Item = (Uuid, Option<Vec<u8>>)>,
    ) -> Result<Vec<(Uuid, Pending)>, PersistError> {
        let Some(ownership) = &self.ownership else {
            return Ok((changes.into_iter())
                .map(|(pid, body)| (pid, Pending { body, token: None }))
                .collect());
        };
        let mut leases = ownership.leases.lock();
        (changes.into_iter())
            .map(|(pid, body)| {
                let token = match body {
                    Some(_) => Some(leases.save_token(pid)?),
                    None => leases.token(pid)?,
                };
                Ok((pid, Pending { body, token }))
            })
            .collect()
    }

    /// Marks the leases of changes that did not land lost; the error for the first.
    fn refused(&self, refused: &[(Uuid, i64)]) -> Result<(), PersistError> {
        let (Some(ownership), Some((pid, _))) = (&self.ownership, refused.first()) else {
            return Ok(());
        };
        let mut leases = ownership.leases.lock();
        for (pid, token) in refused {
            leases.refused(*pid, *token);
        }
        Err(PersistError::LeaseLost { pid: *pid })
    }
}

impl Persister for SqlitePersister {
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.write([(checkpoint.pid, Some(encode(checkpoint)?))])
    }

    fn save_bytes(&self, pid: Uuid, bytes: Vec<u8>) -> Result<(), PersistError> {
        self.write([(pid, Some(bytes))])
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
        self.write([(pid, None)])
    }

    /// One transaction (with group commit: queued at once, so one group commits them all).
    fn save_all(&self, checkpoints: Vec<(Uuid, Vec<u8>)>) -> Result<(), PersistError> {
        self.write((checkpoints.into_iter()).map(|(pid, body)| (pid, Some(body))))
    }

    /// With group commit, ready once everything queued so far is committed, without blocking
    /// the caller; at once otherwise.
    fn until_flushed(&self) -> Committed {
        match &self.batcher {
            Some(batcher) => batcher.until_flushed(),
            None => Committed::now(),
        }
    }

    /// Takes the lease of `pid` in one transaction (see the type's docs); without leases, does
    /// nothing.
    fn acquire(&self, pid: Uuid) -> Result<(), PersistError> {
        let Some(ownership) = &self.ownership else {
            return Ok(());
        };
        // A checkpoint this program queued is in the table before its lease is looked for.
        if let Some(batcher) = &self.batcher
            && batcher.queued(pid).is_some()
        {
            batcher.flush()?;
        }
        let token = self.db.acquire(ownership.owner(), pid)?;
        ownership.leases.lock().holding(pid, token);
        Ok(())
    }

    /// After the changes made before it (with group commit, in the same group).
    fn release(&self, pid: Uuid) {
        let Some(ownership) = &self.ownership else {
            return;
        };
        let Some(token) = ownership.leases.lock().release(pid) else {
            return;
        };
        let released = match &self.batcher {
            Some(batcher) => {
                batcher.release(pid, token);
                Ok(Vec::new())
            }
            None => self.db.apply(Some(ownership.owner()), [], &[(pid, token)]),
        };
        if let Err(error) = released {
            tracing::warn!(%pid, %error, "a lease could not be given up; it ends when it runs out");
        }
    }

    /// Waits until every save and delete made so far is committed (at once without group
    /// commit); the error of a failed commit, or `LeaseLost` if a lease refused one of them.
    fn flush(&self) -> Result<(), PersistError> {
        match &self.batcher {
            Some(batcher) => batcher.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for SqlitePersister {
    /// Commits what is queued, stops renewing, and gives every lease up at once: this
    /// program's processes are free for others without waiting for the leases to run out.
    fn drop(&mut self) {
        drop(self.batcher.take());
        drop(self.keeper.take());
        if let Some(ownership) = &self.ownership
            && let Err(error) = self.db.retire(ownership.owner())
        {
            tracing::warn!(%error, "the leases could not be given up; they end when they run out");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

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
            let batcher = Batcher::start(db.clone(), None).unwrap();
            let mut states = vec![HashMap::new()];
            for n in 0..(200 + next() % 400) {
                let pid = pids[(next() % 8) as usize];
                let body = (next() % 4 != 0).then(|| format!("{round}-{n}").into_bytes());
                batcher
                    .queue_all([(
                        pid,
                        Pending {
                            body: body.clone(),
                            token: None,
                        },
                    )])
                    .unwrap();
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

    #[test]
    fn a_file_from_before_versions_is_migrated_and_a_newer_one_refused() {
        let dir = Scratch::new("versions");
        let old = dir.file("old.sqlite");
        let pid = Uuid::new_v4();
        {
            // What builds before versioning made: the table, version 0.
            let connection = Connection::open(&old).unwrap();
            connection
                .execute_batch(
                    "CREATE TABLE checkpoints (pid TEXT PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;",
                )
                .unwrap();
            connection
                .execute(
                    "INSERT INTO checkpoints VALUES (?1, x'00')",
                    [pid.to_string()],
                )
                .unwrap();
        }
        let store = SqlitePersister::builder(&old).leases(true).open().unwrap();
        assert_eq!(store.list().unwrap(), vec![pid]);
        drop(store);

        let newer = dir.file("newer.sqlite");
        drop(SqlitePersister::open(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .execute_batch("PRAGMA user_version = 99;")
            .unwrap();
        let refused = SqlitePersister::open(&newer).unwrap_err();
        assert!(refused.to_string().contains("newer build"), "{refused}");
    }

    #[test]
    fn a_lease_too_short_to_renew_is_refused() {
        let dir = Scratch::new("short");
        let refused = SqlitePersister::builder(dir.file("store.sqlite"))
            .leases(true)
            .lease_for(std::time::Duration::from_millis(10))
            .open()
            .unwrap_err();
        assert!(refused.to_string().contains("too short"), "{refused}");
    }

    #[test]
    fn until_flushed_is_ready_once_what_was_queued_is_committed() {
        let dir = Scratch::new("until");
        let path = dir.file("store.sqlite");
        let store = SqlitePersister::open_batched(&path).unwrap();
        let pid = Uuid::new_v4();
        store.put_raw(pid, b"queued").unwrap();
        futures::executor::block_on(store.until_flushed()).unwrap();
        let other = SqlitePersister::open(&path).unwrap();
        assert_eq!(other.db.get(pid).unwrap().as_deref(), Some(&b"queued"[..]));
        // Nothing queued: ready at once.
        futures::executor::block_on(store.until_flushed()).unwrap();
        drop((store, other));
    }

    #[test]
    fn a_program_without_leases_still_reads_a_leased_file() {
        let dir = Scratch::new("mixed");
        let path = dir.file("store.sqlite");
        let leased = SqlitePersister::builder(&path).leases(true).open().unwrap();
        let pid = Uuid::new_v4();
        leased.put_raw(pid, b"x").unwrap();
        // Warned about (the log), not refused: a tool may look at a worker's file.
        let plain = SqlitePersister::open(&path).unwrap();
        assert_eq!(plain.list().unwrap(), vec![pid]);
        assert_eq!(plain.db.live_owners().unwrap(), 1);
        drop(leased);
        assert_eq!(
            plain.db.live_owners().unwrap(),
            0,
            "the owner is retired on drop"
        );
    }
}
