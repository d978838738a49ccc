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
    #[error("the supervisor has stopped; start a new one to go on")]
    Stopped,
    /// The condition waited for did not come in time.
    #[error("the pool did not get there within {after:?}; it is: {status:?}")]
    Timeout {
        /// How long was waited.
        after: Duration,
        /// The last status seen.
        status: Box<PoolStatus>,
    },
    /// The control socket cannot be made, bound or used.
    #[error(
        "control socket {path}: {source} (is its directory writable, and the path under the \
         ~100 bytes a Unix socket's path may have?)"
    )]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another supervisor answers on this control socket.
    #[error("a supervisor is running already, answering on {path}; stop it first")]
    AlreadyRunning {
        /// The socket's path.
        path: PathBuf,
    },
    /// No supervisor answers on this control socket.
    #[error("no supervisor is running (nothing answers on {path}: {source}); start one first")]
    NotRunning {
        /// The socket's path.
        path: PathBuf,
        /// Why the connection failed.
        #[source]
        source: std::io::Error,
    },
    /// The supervisor answered a control request with an error.
    #[error("the supervisor refused: {reason}")]
    Refused {
        /// Its reason.
        reason: String,
    },
    /// No reply to a control request in time.
    #[error(
        "the supervisor did not answer within {0:?}; is it stuck, or is the machine overloaded?"
    )]
    NoAnswer(Duration),
    /// The pid file cannot be opened or written.
    #[error("pid file {path}: {source} (is its directory there and writable?)")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A running supervisor holds the pid file.
    #[error("a supervisor is running already (pid {}, holding {path}); stop it first", pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    PidFileHeld {
        /// The file.
        path: PathBuf,
        /// The pid it names, if readable.
        pid: Option<u32>,
    },
    /// The stop signals cannot be listened for.
    #[error("cannot listen for SIGTERM and SIGINT: {source}")]
    Signals {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker cannot be reached.
    #[cfg(feature = "amqp")]
    #[error(
        "cannot reach the broker at {url}: {source}. Workers are separate processes and need \
         it: start RabbitMQ (`sudo systemctl start rabbitmq-server`, or `rabbitmq-server \
         -detached`), or set broker_url in the config file (or the <APP>_BROKER_URL variable) \
         to one that runs"
    )]
    Broker {
        /// The broker's URL, its password hidden.
        url: String,
        /// Why.
        #[source]
        source: crate::messaging::Error,
    },
    /// The checkpoint store cannot be opened.
    #[error(
        "cannot use the checkpoint store {at}: {source} (is its directory there and writable, \
         or its database running and reachable?)"
    )]
    Store {
        /// The store: its file, or its database's URL without the password.
        at: String,
        /// Why.
        #[source]
        source: crate::engine::PersistError,
    },
    /// A worker's runner, launcher or controller failed.
    #[error("the worker failed: {0}")]
    Worker(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A setting is missing, unreadable or makes no sense.
    #[error("configuration: {what}: {why}")]
    Config {
        /// The file, field or environment variable.
        what: String,
        /// What is wrong, and what it should be.
        why: String,
    },
    /// The supervisor's thread failed.
    #[error(transparent)]
    Thread(#[from] crate::Error),
}
