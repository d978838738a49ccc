//! [`DaemonError`]: what can go wrong when supervising workers.

use std::path::PathBuf;
use std::time::Duration;

use super::status::PoolStatus;

/// Why a supervisor request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The workers' log file cannot be opened.
    #[error(
        "cannot open the workers' log file {path}: {source} (check the directory exists and is writable)"
    )]
    Log {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor has stopped (or is stopping).
    #[error("the supervisor has stopped")]
    Stopped,
    /// The condition waited for did not come in time.
    #[error("the pool did not get there within {after:?}; it is: {status:?}")]
    Timeout {
        /// How long was waited.
        after: Duration,
        /// The last status seen.
        status: Box<PoolStatus>,
    },
    /// The supervisor's thread failed.
    #[error(transparent)]
    Thread(#[from] crate::Error),
}
