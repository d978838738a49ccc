//! [`DaemonConfig`]: where a daemon's broker, store, files and pool size come from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::DaemonError;
use crate::messaging::shown_url::shown_url;

/// A daemon's settings, as an AiiDA profile gives them: the broker, the checkpoint store, the
/// task queue, the pool's size and the places of its files.
///
/// [`load`](Self::load) builds them in three layers, each overriding the one before:
/// 1. **defaults** for one machine: RabbitMQ on loopback with its default account, the SQLite
///    store, log and pid file under the user's data directory (`$XDG_DATA_HOME/<app>`, else
///    `~/.local/share/<app>`), the control socket in a private directory under
///    `$XDG_RUNTIME_DIR/<app>` (else `/tmp/<app>-<uid>`);
/// 2. **a config file**, JSON as AiiDA's `config.json`, with any of the fields below (unknown
///    ones are refused, so that a typo does not go unnoticed): the one named, else
///    `$<APP>_CONFIG`, else `$XDG_CONFIG_HOME/<app>/daemon.json` (`~/.config/...`) if it
///    exists;
/// 3. **the environment**: `<APP>_BROKER_URL`, `<APP>_PREFIX`, `<APP>_STORE`,
///    `<APP>_STORE_URL`, `<APP>_STORE_SCHEMA`, `<APP>_QUEUE`,
///    `<APP>_WORKERS`, `<APP>_SLOTS`, `<APP>_GRACE_PERIOD` (seconds), `<APP>_LOG_FILE`,
///    `<APP>_CONTROL_SOCKET`, `<APP>_PID_FILE`, where `<APP>` is the app's name in capitals
///    (`my-app` gives `MY_APP`).
///
/// Its `Debug` hides the broker's and the database's passwords.
///
/// ```
/// use runtime_thread::daemon::DaemonConfig;
///
/// let dir = std::env::temp_dir().join(format!("daemon-config-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let file = dir.join("daemon.json");
/// std::fs::write(&file, r#"{ "workers": 4, "queue": "squares.process.queue" }"#)?;
/// let config = DaemonConfig::load("squares", Some(&file))?;
/// assert_eq!(config.workers, 4);
/// assert_eq!(config.queue, "squares.process.queue");
/// assert!(config.store.ends_with("squares/checkpoints.sqlite"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct DaemonConfig {
    /// The RabbitMQ broker's URL (`amqp://user:password@host:port/vhost`).
    pub broker_url: String,
    /// The prefix of the exchanges' and task queues' names on the broker (AiiDA's
    /// `aiida-<profile uuid>`), so that daemons of several apps or profiles share a broker.
    pub prefix: String,
    /// The SQLite checkpoint store the workers share (on one machine, with leases: a process
    /// runs in one worker at a time), unless `store_url` is set.
    pub store: PathBuf,
    /// A PostgreSQL database the workers share instead (`postgres://user:password@host:port/
    /// database`, feature `postgres`), so that workers on several machines continue each
    /// other's processes; each process runs on one worker at a time (see
    /// [`PostgresPersister`](crate::engine::PostgresPersister)).
    pub store_url: Option<String>,
    /// The schema of the store's tables in that database (default `runtime_thread`), so that
    /// several apps or profiles can share one database.
    pub store_schema: String,
    /// The task queue the workers take processes from (after the prefix).
    pub queue: String,
    /// How many workers the daemon starts.
    pub workers: usize,
    /// How many processes each worker runs at once (AiiDA's worker slots; 0: no limit).
    pub slots: usize,
    /// How long a stopping worker may take to end its steps (seconds), before it is killed.
    pub grace_period: f64,
    /// The workers' output, one line each, with time and pid.
    pub log_file: PathBuf,
    /// The supervisor's control socket.
    pub control_socket: PathBuf,
    /// The supervisor's pid file, locked while it runs.
    pub pid_file: PathBuf,
    /// Singleton services the supervisor starts before the workers and stops after them
    /// (see [`SupervisorBuilder::service`](super::SupervisorBuilder::service)).
    pub services: Vec<ServiceConfig>,
}

/// A singleton service in a [`DaemonConfig`]: `{"name": "...", "command": ["program", "arg"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Its name, shown in the status.
    pub name: String,
    /// Its program and arguments.
    pub command: Vec<String>,
}

/// RabbitMQ on loopback with its default account (which only accepts loopback connections).
const LOOPBACK_BROKER: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl DaemonConfig {
    /// The defaults for `app` on this machine (see the type's docs).
    pub fn defaults(app: &str) -> Self {
        let data = data_dir(app);
        DaemonConfig {
            broker_url: LOOPBACK_BROKER.to_owned(),
            prefix: app.to_owned(),
            store: data.join("checkpoints.sqlite"),
            store_url: None,
            store_schema: "runtime_thread".to_owned(),
            queue: "process.queue".to_owned(),
            workers: 1,
            slots: 200,
            grace_period: 30.0,
            log_file: data.join("daemon.log"),
            control_socket: runtime_dir(app).join("control.sock"),
            pid_file: data.join("daemon.pid"),
            services: Vec::new(),
        }
    }

    /// The settings for `app`: the defaults, then the config `file` (or the one found as the
    /// type's docs say), then the environment.
    ///
    /// # Errors
    ///
    /// [`DaemonError::Config`] for a file that cannot be read or parsed (a file named here
    /// or in `$<APP>_CONFIG` must exist) and for a value that makes no sense, naming it.
    pub fn load(app: &str, file: Option<&Path>) -> Result<Self, DaemonError> {
        let named = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(variable(app, "CONFIG")).map(PathBuf::from));
        let found = named
            .clone()
            .or_else(|| Some(config_dir(app).join("daemon.json")).filter(|path| path.exists()));
        let mut config = match found {
            Some(path) => Self::read(app, &path)?,
            None => Self::defaults(app),
        };
        config.override_from_env(app)?;
        config.check()?;
        Ok(config)
    }

    /// The RabbitMQ settings: the broker's URL, and the exchanges and task queues named with
    /// the prefix (`<prefix>.messages`, `<prefix>.tasks`, `<prefix>.<queue>`).
    #[cfg(feature = "amqp")]
    pub fn amqp(&self) -> crate::messaging::amqp::AmqpConfig {
        let prefix = &self.prefix;
        crate::messaging::amqp::AmqpConfig::new()
            .url(self.broker_url.clone())
            .message_exchange(format!("{prefix}.messages"))
            .task_exchange(format!("{prefix}.tasks"))
            .task_queue_prefix(format!("{prefix}."))
    }

    /// The grace period as a duration.
    pub fn grace(&self) -> Duration {
        Duration::from_secs_f64(self.grace_period)
    }

    /// The broker's URL with its password replaced by `***`, for messages.
    pub fn broker_shown(&self) -> String {
        shown_url(&self.broker_url)
    }

    /// Where the checkpoint store is, for messages: the database's URL without its password,
    /// or the SQLite file.
    pub fn store_shown(&self) -> String {
        match &self.store_url {
            Some(url) => format!("{} (schema {})", shown_url(url), self.store_schema),
            None => self.store.display().to_string(),
        }
    }

    fn read(app: &str, path: &Path) -> Result<Self, DaemonError> {
        let invalid = |why: String| DaemonError::Config {
            what: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        // Missing fields come from the app's defaults, not from empty ones.
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let serde_json::Value::Object(fields) = &mut value else {
            return Err(invalid("it must be a JSON object of settings".to_owned()));
        };
        let defaults =
            serde_json::to_value(Self::defaults(app)).map_err(|e| invalid(e.to_string()))?;
        if let serde_json::Value::Object(defaults) = defaults {
            for (name, default) in defaults {
                fields.entry(name).or_insert(default);
            }
        }
        serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
    }

    fn override_from_env(&mut self, app: &str) -> Result<(), DaemonError> {
        let text = |name: &str| std::env::var(variable(app, name)).ok();
        let number = |name: &str| -> Result<Option<f64>, DaemonError> {
            text(name)
                .map(|value| {
                    value
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| DaemonError::Config {
                            what: variable(app, name),
                            why: format!("{value:?} is not a number"),
                        })
                })
                .transpose()
        };
        if let Some(url) = text("BROKER_URL") {
            self.broker_url = url;
        }
        if let Some(prefix) = text("PREFIX") {
            self.prefix = prefix;
        }
        if let Some(queue) = text("QUEUE") {
            self.queue = queue;
        }
        if let Some(url) = text("STORE_URL") {
            self.store_url = Some(url);
        }
        if let Some(schema) = text("STORE_SCHEMA") {
            self.store_schema = schema;
        }
        for (name, path) in [
            ("STORE", &mut self.store),
            ("LOG_FILE", &mut self.log_file),
            ("CONTROL_SOCKET", &mut self.control_socket),
            ("PID_FILE", &mut self.pid_file),
        ] {
            if let Some(value) = text(name) {
                *path = PathBuf::from(value);
            }
        }
        for (name, count) in [("WORKERS", &mut self.workers), ("SLOTS", &mut self.slots)] {
            if let Some(value) = number(name)? {
                if value < 0.0 || value.fract() != 0.0 {
                    return Err(DaemonError::Config {
                        what: variable(app, name),
                        why: format!("{value} is not a whole number of at least 0"),
                    });
                }
                *count = value as usize;
            }
        }
        if let Some(grace) = number("GRACE_PERIOD")? {
            self.grace_period = grace;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), DaemonError> {
        let bad = |what: &str, why: &str| {
            Err(DaemonError::Config {
                what: what.to_owned(),
                why: why.to_owned(),
            })
        };
        if !(self.grace_period.is_finite() && (0.0..=86_400.0).contains(&self.grace_period)) {
            return bad("grace_period", "must be between 0 and 86400 seconds");
        }
        if !self.broker_url.starts_with("amqp://") && !self.broker_url.starts_with("amqps://") {
            return bad("broker_url", "must be an amqp:// or amqps:// URL");
        }
        if self
            .services
            .iter()
            .any(|service| service.command.is_empty())
        {
            return bad(
                "services",
                "each needs a command: a program and its arguments",
            );
        }
        if self.queue.is_empty() {
            return bad("queue", "must not be empty");
        }
        if let Some(url) = &self.store_url
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
        {
            return bad(
                "store_url",
                "must be a postgres:// URL (leave it out for the SQLite store)",
            );
        }
        // A Unix socket's path has room for 107 bytes.
        if self.control_socket.as_os_str().len() > 100 {
            return bad(
                "control_socket",
                "is longer than the 100 bytes a Unix socket's path may safely have; choose a shorter path",
            );
        }
        Ok(())
    }
}

impl std::fmt::Debug for DaemonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonConfig")
            .field("broker_url", &self.broker_shown())
            .field("prefix", &self.prefix)
            .field("store", &self.store)
            .field("store_url", &self.store_url.as_deref().map(shown_url))
            .field("store_schema", &self.store_schema)
            .field("queue", &self.queue)
            .field("workers", &self.workers)
            .field("slots", &self.slots)
            .field("grace_period", &self.grace_period)
            .field("log_file", &self.log_file)
            .field("control_socket", &self.control_socket)
            .field("pid_file", &self.pid_file)
            .field("services", &self.services)
            .finish()
    }
}

impl Default for DaemonConfig {
    /// The defaults of an app named `runtime-thread`.
    fn default() -> Self {
        Self::defaults("runtime-thread")
    }
}

/// `<APP>_<NAME>`: the app's name in capitals, other characters as `_`.
fn variable(app: &str, name: &str) -> String {
    let app: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{app}_{name}")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// An XDG base directory from `variable`, if it is set to an absolute path.
fn xdg(variable: &str) -> Option<PathBuf> {
    std::env::var_os(variable)
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
}

fn data_dir(app: &str) -> PathBuf {
    xdg("XDG_DATA_HOME")
        .unwrap_or_else(|| home().join(".local/share"))
        .join(app)
}

fn config_dir(app: &str) -> PathBuf {
    xdg("XDG_CONFIG_HOME")
        .unwrap_or_else(|| home().join(".config"))
        .join(app)
}

fn runtime_dir(app: &str) -> PathBuf {
    match xdg("XDG_RUNTIME_DIR") {
        Some(dir) => dir.join(app),
        // SAFETY: getuid cannot fail and touches no memory.
        None => std::env::temp_dir().join(format!("{app}-{}", unsafe { libc::getuid() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_variables_are_the_apps_in_capitals() {
        assert_eq!(variable("my-app", "WORKERS"), "MY_APP_WORKERS");
    }

    #[test]
    fn the_password_is_not_shown() {
        let config = DaemonConfig {
            broker_url: "amqp://me:secret@h/".to_owned(),
            ..DaemonConfig::default()
        };
        assert!(!format!("{config:?}").contains("secret"));
    }
}
