//! [`PidFile`]: the supervisor's pid file, locked while it runs, so that staleness is decided by
//! the kernel rather than guessed from a pid that may have been reused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::DaemonError;

/// A pid file held with an exclusive `flock` for as long as the value lives: a second
/// supervisor cannot take it, and one whose lock is free is stale (its supervisor died), so it is
/// taken over. Removed when dropped.
#[derive(Debug)]
pub(crate) struct PidFile {
    path: PathBuf,
    _file: File,
}

impl PidFile {
    pub(crate) fn take(path: &Path) -> Result<Self, DaemonError> {
        let failed = |source| DaemonError::PidFile {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(failed)?;
        // SAFETY: a plain system call on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DaemonError::PidFileHeld {
                path: path.to_owned(),
                pid: text.trim().parse().ok(),
            });
        }
        // Ours now; whatever it held was stale.
        file.set_len(0).map_err(failed)?;
        file.rewind().map_err(failed)?;
        writeln!(file, "{}", std::process::id()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        Ok(PidFile {
            path: path.to_owned(),
            _file: file,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Removed while still locked, so no other supervisor can have taken it meanwhile.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a pid file says about its supervisor.
#[cfg(feature = "cli")]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PidFileState {
    /// No file.
    Absent,
    /// A supervisor holds it: it runs.
    Held(Option<u32>),
    /// Nobody holds it: its supervisor died without removing it. Removed now.
    StaleRemoved(Option<u32>),
}

#[cfg(feature = "cli")]
impl PidFile {
    /// Looks at the pid file at `path` without taking it, and removes it if it is stale.
    pub(crate) fn probe(path: &Path) -> PidFileState {
        let Ok(mut file) = File::open(path) else {
            return PidFileState::Absent;
        };
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let pid = text.trim().parse().ok();
        // SAFETY: a plain system call on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
            return PidFileState::Held(pid);
        }
        let _ = std::fs::remove_file(path);
        PidFileState::StaleRemoved(pid)
    }
}
