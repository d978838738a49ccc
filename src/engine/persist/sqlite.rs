//! Checkpoints in an SQLite database (feature `sqlite`), in WAL mode.

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{PersistError, Persister, decode, encode};
use crate::engine::checkpoint::Checkpoint;

/// One row per process in table `checkpoints(pid TEXT PRIMARY KEY, body BLOB)`. The database
/// runs in WAL mode with `synchronous = NORMAL`: a save is one transaction, so a crash of the
/// program leaves the last saved checkpoint intact (a power loss may lose the latest saves).
pub struct SqlitePersister {
    connection: Mutex<Connection>,
}

fn store_error(error: rusqlite::Error) -> PersistError {
    PersistError::Store(format!("sqlite: {error}"))
}

impl SqlitePersister {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, PersistError> {
        let connection = Connection::open(path).map_err(store_error)?;
        Self::set_up(connection)
    }

    /// A private in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<Self, PersistError> {
        Self::set_up(Connection::open_in_memory().map_err(store_error)?)
    }

    fn set_up(connection: Connection) -> Result<Self, PersistError> {
        // `journal_mode` answers with the mode now in force, so it is a query, not a plain pragma.
        let _mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(store_error)?;
        connection
            .execute_batch(
                "PRAGMA synchronous = NORMAL;
                 CREATE TABLE IF NOT EXISTS checkpoints (pid TEXT PRIMARY KEY, body BLOB NOT NULL);",
            )
            .map_err(store_error)?;
        Ok(SqlitePersister {
            connection: Mutex::new(connection),
        })
    }

    /// Replaces the stored bytes of `pid` (to test how corrupt checkpoints are handled).
    pub fn put_raw(&self, pid: Uuid, bytes: &[u8]) -> Result<(), PersistError> {
        self.connection
            .lock()
            .execute(
                "INSERT OR REPLACE INTO checkpoints (pid, body) VALUES (?1, ?2)",
                params![pid.to_string(), bytes],
            )
            .map(|_| ())
            .map_err(store_error)
    }
}

impl Persister for SqlitePersister {
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.put_raw(checkpoint.pid, &encode(checkpoint)?)
    }

    fn save_bytes(&self, pid: Uuid, bytes: Vec<u8>) -> Result<(), PersistError> {
        self.put_raw(pid, &bytes)
    }

    fn load(&self, pid: Uuid) -> Result<Checkpoint, PersistError> {
        let body: Option<Vec<u8>> = self
            .connection
            .lock()
            .query_row(
                "SELECT body FROM checkpoints WHERE pid = ?1",
                params![pid.to_string()],
                |row| row.get(0),
            )
            .optional()
            .map_err(store_error)?;
        decode(pid, &body.ok_or(PersistError::NotFound { pid })?)
    }

    fn list(&self) -> Result<Vec<Uuid>, PersistError> {
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
                .map_err(|e| PersistError::Store(format!("a row with pid {text:?}: {e}")))?;
            pids.push(pid);
        }
        Ok(pids)
    }

    fn delete(&self, pid: Uuid) -> Result<(), PersistError> {
        self.connection
            .lock()
            .execute(
                "DELETE FROM checkpoints WHERE pid = ?1",
                params![pid.to_string()],
            )
            .map(|_| ())
            .map_err(store_error)
    }
}
