//! Checkpoints as JSON files in a directory, one per process, replaced atomically.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{PersistError, Persister, decode, encode};
use crate::engine::checkpoint::Checkpoint;

/// One `<pid>.json` file per process. A save writes a temporary file in the same directory,
/// flushes it to disk and renames it over the old one, so a crash leaves either the old
/// checkpoint or the new one, never half of one.
#[derive(Debug)]
pub struct JsonDirPersister {
    dir: PathBuf,
}

impl JsonDirPersister {
    /// A store in `dir` (created if missing).
    ///
    /// # Errors
    ///
    /// `PersistError::Store` when `dir` cannot be created.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, PersistError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(JsonDirPersister { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the checkpoint of `pid`.
    pub fn path_of(&self, pid: Uuid) -> PathBuf {
        self.dir.join(format!("{pid}.json"))
    }
}

fn io_error(path: &Path, error: std::io::Error) -> PersistError {
    PersistError::store(path.display().to_string(), error)
}

impl Persister for JsonDirPersister {
    fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        self.save_bytes(checkpoint.pid, encode(checkpoint)?)
    }

    fn save_bytes(&self, pid: Uuid, bytes: Vec<u8>) -> Result<(), PersistError> {
        let target = self.path_of(pid);
        let temporary = self.dir.join(format!(".{pid}.json.tmp"));
        let mut file = fs::File::create(&temporary).map_err(|e| io_error(&temporary, e))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(&temporary, e))?;
        fs::rename(&temporary, &target).map_err(|e| io_error(&target, e))
    }

    fn load(&self, pid: Uuid) -> Result<Checkpoint, PersistError> {
        let path = self.path_of(pid);
        match fs::read(&path) {
            Ok(bytes) => decode(pid, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(PersistError::NotFound { pid })
            }
            Err(e) => Err(io_error(&path, e)),
        }
    }

    fn list(&self) -> Result<Vec<Uuid>, PersistError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(&self.dir, e))?;
        let mut pids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.dir, e))?;
            let name = entry.file_name();
            // Temporary files start with a dot and are skipped; other files are not ours.
            let pid = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|stem| Uuid::parse_str(stem).ok());
            pids.extend(pid);
        }
        Ok(pids)
    }

    fn delete(&self, pid: Uuid) -> Result<(), PersistError> {
        let path = self.path_of(pid);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path, e)),
            _ => Ok(()),
        }
    }
}
