//! The database: its connection, its tables and their versions, and the statements that change
//! them. With leases, every change is checked against the lease it was made under in the
//! transaction that makes it, which holds SQLite's write lock: no other program can take the
//! lease between the check and the write.

use std::path::Path;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use uuid::Uuid;

use super::checkpointer::{CHECKPOINT_PAGES, Checkpointer, MOST_LOG_PAGES};
use super::store_error;
use crate::engine::PersistError;

/// The tables, one migration per version (`PRAGMA user_version`), run in order in one
/// transaction. Version 1 is what builds before versioning made (they left the version at 0),
/// hence `IF NOT EXISTS`.
const MIGRATIONS: [&str; 2] = [
    // 1: one checkpoint per process.
    "CREATE TABLE IF NOT EXISTS checkpoints (pid TEXT PRIMARY KEY, body BLOB NOT NULL)
         WITHOUT ROWID;",
    // 2: leases. A program holding leases (an owner) renews them all at once by moving its
    // expiry (milliseconds since the Unix epoch); a process's lease names its owner and a
    // fencing token, new at every take, counted in `lease_tokens`.
    "CREATE TABLE owners (owner TEXT PRIMARY KEY, name TEXT NOT NULL, expires INTEGER NOT NULL)
         WITHOUT ROWID;
     CREATE TABLE leases (pid TEXT PRIMARY KEY, owner TEXT NOT NULL, token INTEGER NOT NULL)
         WITHOUT ROWID;
     CREATE INDEX leases_by_owner ON leases (owner);
     CREATE TABLE lease_tokens (last INTEGER NOT NULL);
     INSERT INTO lease_tokens (last) VALUES (0);",
];

/// A change of one process: a save (`Some` body) or a delete (`None`), fenced by `token` when
/// the store keeps leases (`None`: not fenced, a delete of a process not held here).
pub(super) struct Write<'a> {
    pub(super) pid: Uuid,
    pub(super) body: Option<&'a [u8]>,
    pub(super) token: Option<i64>,
}

/// One connection, used by one caller at a time, and the thread that checkpoints its
/// write-ahead log (for a database in a file).
pub(super) struct Db {
    connection: Mutex<Connection>,
    /// Declared last: dropped (and joined) after the connection is closed.
    checkpointer: Option<Checkpointer>,
}

impl Db {
    pub(super) fn open(path: &Path) -> Result<Self, PersistError> {
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

    /// WAL mode, and the tables made or migrated to this build's version.
    pub(super) fn set_up(mut connection: Connection) -> Result<Self, PersistError> {
        // `journal_mode` answers with the mode now in force, so it is a query, not a plain pragma.
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(store_error)?;
        connection
            .execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(store_error)?;
        migrate(&mut connection)?;
        Ok(Db {
            connection: Mutex::new(connection),
            checkpointer: None,
        })
    }

    /// Applies `writes`, then gives up the leases in `releases`, in one transaction. With
    /// leases (`owner`), a fenced change lands only while `owner` is alive and holds the
    /// process's lease with the change's token, or, for a process made here (token 0), while
    /// nobody holds it (the save then takes it). Returns the fenced changes that did not land,
    /// with their tokens.
    pub(super) fn apply<'a>(
        &self,
        owner: Option<Uuid>,
        writes: impl IntoIterator<Item = Write<'a>>,
        releases: &[(Uuid, i64)],
    ) -> Result<Vec<(Uuid, i64)>, PersistError> {
        let mut connection = self.connection.lock();
        let transaction = immediate(&mut connection)?;
        let mut refused = Vec::new();
        // As the tables hold it: compared with each lease read, not parsed from it.
        let owner = owner.map(|owner| owner.to_string());
        {
            let alive = match &owner {
                Some(owner) => owner_alive(&transaction, owner, now_ms())?,
                None => false,
            };
            let mut save = transaction
                .prepare_cached("INSERT OR REPLACE INTO checkpoints (pid, body) VALUES (?1, ?2)")
                .map_err(store_error)?;
            let mut delete = transaction
                .prepare_cached("DELETE FROM checkpoints WHERE pid = ?1")
                .map_err(store_error)?;
            for write in writes {
                let pid = write.pid.to_string();
                if let (Some(owner), Some(token)) = (&owner, write.token) {
                    let lease = lease_of(&transaction, &pid)?;
                    if !alive || !may_change(lease.as_ref(), owner, token) {
                        refused.push((write.pid, token));
                        continue;
                    }
                    if lease.is_none() && write.body.is_some() {
                        take_fresh(&transaction, &pid, owner)?;
                    }
                }
                match write.body {
                    Some(body) => save.execute(params![pid, body]),
                    None => delete.execute(params![pid]),
                }
                .map_err(store_error)?;
            }
            if let Some(owner) = &owner {
                let mut free = transaction
                    .prepare_cached(
                        "DELETE FROM leases WHERE pid = ?1 AND owner = ?2 AND token = ?3",
                    )
                    .map_err(store_error)?;
                for (pid, token) in releases {
                    free.execute(params![pid.to_string(), owner, token])
                        .map_err(store_error)?;
                }
            }
        }
        transaction.commit().map_err(store_error)?;
        Ok(refused)
    }

    pub(super) fn get(&self, pid: Uuid) -> Result<Option<Vec<u8>>, PersistError> {
        let connection = self.connection.lock();
        let mut statement = connection
            .prepare_cached("SELECT body FROM checkpoints WHERE pid = ?1")
            .map_err(store_error)?;
        statement
            .query_row(params![pid.to_string()], |row| row.get(0))
            .optional()
            .map_err(store_error)
    }

    pub(super) fn pids(&self) -> Result<Vec<Uuid>, PersistError> {
        let connection = self.connection.lock();
        let mut statement = connection
            .prepare("SELECT pid FROM checkpoints")
            .map_err(store_error)?;
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(store_error)?;
        let mut pids = Vec::new();
        for row in rows {
            pids.push(parse_uuid(&row.map_err(store_error)?)?);
        }
        Ok(pids)
    }

    /// Takes the lease of `pid` for `owner` with a new token, if its checkpoint exists and the
    /// lease is free, `owner`'s own, or its owner's have run out.
    pub(super) fn acquire(&self, owner: Uuid, pid: Uuid) -> Result<i64, PersistError> {
        let mut connection = self.connection.lock();
        let transaction = immediate(&mut connection)?;
        let now = now_ms();
        let key = pid.to_string();
        let holder: Option<(String, String, i64)> = transaction
            .query_row(
                "SELECT l.owner, o.name, o.expires FROM leases l JOIN owners o ON o.owner = l.owner
                 WHERE l.pid = ?1 AND o.expires > ?2",
                params![key, now],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(store_error)?;
        if let Some((holder, name, expires)) = holder
            && holder != owner.to_string()
        {
            return Err(PersistError::Held {
                pid,
                owner: name,
                ends_in: Duration::from_millis(u64::try_from(expires - now).unwrap_or(0)),
            });
        }
        let exists = transaction
            .query_row("SELECT 1 FROM checkpoints WHERE pid = ?1", [&key], |_| {
                Ok(())
            })
            .optional()
            .map_err(store_error)?
            .is_some();
        if !exists {
            return Err(PersistError::NotFound { pid });
        }
        if !owner_alive(&transaction, &owner.to_string(), now)? {
            return Err(PersistError::LeaseLost { pid });
        }
        let token: i64 = transaction
            .query_row(
                "UPDATE lease_tokens SET last = last + 1 RETURNING last",
                [],
                |row| row.get(0),
            )
            .map_err(store_error)?;
        transaction
            .execute(
                "INSERT OR REPLACE INTO leases (pid, owner, token) VALUES (?1, ?2, ?3)",
                params![key, owner.to_string(), token],
            )
            .map_err(store_error)?;
        transaction.commit().map_err(store_error)?;
        Ok(token)
    }

    /// Registers `owner`, named `name`, its leases its own for `lease_for`; forgets owners
    /// dead for a day, and their leases.
    pub(super) fn register(
        &self,
        owner: Uuid,
        name: &str,
        lease_for: Duration,
    ) -> Result<(), PersistError> {
        let mut connection = self.connection.lock();
        let transaction = immediate(&mut connection)?;
        let now = now_ms();
        transaction
            .execute(
                "INSERT INTO owners (owner, name, expires) VALUES (?1, ?2, ?3)",
                params![
                    owner.to_string(),
                    name,
                    now.saturating_add(millis(lease_for))
                ],
            )
            .map_err(store_error)?;
        transaction
            .execute(
                "DELETE FROM owners WHERE expires < ?1",
                [now.saturating_sub(millis(Duration::from_secs(86_400)))],
            )
            .map_err(store_error)?;
        transaction
            .execute(
                "DELETE FROM leases WHERE owner NOT IN (SELECT owner FROM owners)",
                [],
            )
            .map_err(store_error)?;
        transaction.commit().map_err(store_error)
    }

    /// Moves the expiry of every lease of `owner` to `lease_for` from now, if they have not run
    /// out; false if they have.
    pub(super) fn renew(&self, owner: Uuid, lease_for: Duration) -> Result<bool, PersistError> {
        let mut connection = self.connection.lock();
        let transaction = immediate(&mut connection)?;
        let now = now_ms();
        let renewed = transaction
            .execute(
                "UPDATE owners SET expires = ?1 WHERE owner = ?2 AND expires > ?3",
                params![
                    now.saturating_add(millis(lease_for)),
                    owner.to_string(),
                    now
                ],
            )
            .map_err(store_error)?;
        transaction.commit().map_err(store_error)?;
        Ok(renewed == 1)
    }

    /// Forgets `owner` and every lease it holds: its processes are free for others at once.
    pub(super) fn retire(&self, owner: Uuid) -> Result<(), PersistError> {
        let mut connection = self.connection.lock();
        let transaction = immediate(&mut connection)?;
        for sql in [
            "DELETE FROM leases WHERE owner = ?1",
            "DELETE FROM owners WHERE owner = ?1",
        ] {
            transaction
                .execute(sql, [owner.to_string()])
                .map_err(store_error)?;
        }
        transaction.commit().map_err(store_error)
    }

    /// How many owners hold leases that have not run out.
    pub(super) fn live_owners(&self) -> Result<i64, PersistError> {
        let connection = self.connection.lock();
        connection
            .query_row(
                "SELECT count(*) FROM owners WHERE expires > ?1",
                [now_ms()],
                |row| row.get(0),
            )
            .map_err(store_error)
    }
}

/// Makes or migrates the tables under SQLite's write lock, so that programs opening one file
/// at once migrate it once; refuses a database that a newer build migrated.
fn migrate(connection: &mut Connection) -> Result<(), PersistError> {
    let transaction = immediate(connection)?;
    let version: i64 = transaction
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(store_error)?;
    let known = MIGRATIONS.len();
    let done = usize::try_from(version).unwrap_or(usize::MAX);
    if done > known {
        return Err(PersistError::store_failed(format!(
            "the database is at schema version {version}, made by a newer build of runtime-thread \
             (this one knows up to {known}): open it with that build, or a newer one"
        )));
    }
    for migration in &MIGRATIONS[done..] {
        transaction.execute_batch(migration).map_err(store_error)?;
    }
    if done < known {
        transaction
            .pragma_update(
                None,
                "user_version",
                i64::try_from(known).unwrap_or(i64::MAX),
            )
            .map_err(store_error)?;
    }
    transaction.commit().map_err(store_error)
}

/// A transaction that takes the write lock at once, waiting for another program's commit up
/// to the connection's busy timeout (a deferred one that reads first could instead fail at
/// its first write, without waiting, when another program wrote in between).
fn immediate(connection: &mut Connection) -> Result<Transaction<'_>, PersistError> {
    connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(store_error)
}

fn owner_alive(transaction: &Transaction<'_>, owner: &str, now: i64) -> Result<bool, PersistError> {
    let alive = transaction
        .prepare_cached("SELECT 1 FROM owners WHERE owner = ?1 AND expires > ?2")
        .and_then(|mut s| s.query_row(params![owner, now], |_| Ok(())).optional())
        .map_err(store_error)?;
    Ok(alive.is_some())
}

/// The lease of `pid`: its owner and token.
fn lease_of(
    transaction: &Transaction<'_>,
    pid: &str,
) -> Result<Option<(String, i64)>, PersistError> {
    transaction
        .prepare_cached("SELECT owner, token FROM leases WHERE pid = ?1")
        .and_then(|mut s| {
            s.query_row([pid], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(store_error)
}

/// Whether a change made under `token` by `owner` may land on a process with `lease`.
fn may_change(lease: Option<&(String, i64)>, owner: &str, token: i64) -> bool {
    match lease {
        None => token == 0,
        Some((holder, held)) => holder == owner && *held == token,
    }
}

/// The first save of a process made here takes its lease, with token 0.
fn take_fresh(transaction: &Transaction<'_>, pid: &str, owner: &str) -> Result<(), PersistError> {
    transaction
        .prepare_cached("INSERT INTO leases (pid, owner, token) VALUES (?1, ?2, 0)")
        .and_then(|mut s| s.execute(params![pid, owner]))
        .map_err(store_error)?;
    Ok(())
}

fn parse_uuid(text: &str) -> Result<Uuid, PersistError> {
    Uuid::parse_str(text).map_err(|e| PersistError::store(format!("a row with pid {text:?}"), e))
}

/// The wall clock, in milliseconds since the Unix epoch: the clock every program on the
/// machine shares. (A jump of it can make a lease run out early or late; the fencing tokens
/// keep a program whose lease was taken over from writing either way.)
fn now_ms() -> i64 {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
