//! What a [`RuntimeThread`](crate::RuntimeThread) is configured with: the settings its
//! [`Builder`](crate::Builder) collects, checked before anything starts.

use std::time::Duration;

use super::dev::DevConfig;
use super::error::Error;

/// Which tokio scheduler the thread runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Flavor {
    /// Every task runs on the one runtime thread (the default). A blocking wait on that thread
    /// returns [`Error::WouldDeadlock`].
    #[default]
    CurrentThread,
    /// Tasks run on `workers` worker threads owned by the runtime; the runtime thread itself only
    /// coordinates. Blocking waits from tasks are allowed (`block_in_place`).
    MultiThread {
        /// Number of worker threads (at least 1).
        workers: usize,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) flavor: Flavor,
    pub(crate) max_blocking_threads: Option<usize>,
    pub(crate) grace: Duration,
    pub(crate) signals: Vec<i32>,
    pub(crate) idle_spin: Duration,
    pub(crate) wait_spin: Duration,
    pub(crate) dev: DevConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "runtime-thread".to_owned(),
            flavor: Flavor::CurrentThread,
            max_blocking_threads: None,
            grace: Duration::from_secs(5),
            signals: Vec::new(),
            idle_spin: Duration::from_micros(50),
            wait_spin: Duration::from_micros(20),
            dev: DevConfig::default(),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.name.contains('\0') {
            return Err(Error::InvalidConfig(
                "the thread name must not contain a NUL byte".into(),
            ));
        }
        if let Flavor::MultiThread { workers: 0 } = self.flavor {
            return Err(Error::InvalidConfig(
                "a multi-thread runtime needs at least one worker".into(),
            ));
        }
        if self.dev.slow_poll.is_zero() || self.dev.stall.is_zero() {
            return Err(Error::InvalidConfig(
                "the development mode's thresholds must be longer than zero".into(),
            ));
        }
        if self.max_blocking_threads == Some(0) {
            return Err(Error::InvalidConfig(
                "max_blocking_threads must be at least 1".into(),
            ));
        }
        #[cfg(unix)]
        if let Some(signal) = self
            .signals
            .iter()
            .find(|s| super::signals::is_forbidden(**s))
        {
            return Err(Error::InvalidConfig(format!(
                "signal {signal} cannot be handled (SIGKILL, SIGSTOP and the fault signals are forbidden)"
            )));
        }
        Ok(())
    }
}
