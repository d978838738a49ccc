//! Configuration of the RabbitMQ transport, with kiwipy's defaults.

use std::fmt;
use std::time::Duration;

use crate::messaging::local::DEFAULT_TIMEOUT;
use crate::messaging::shown_url::shown_url;

/// The broker used when neither the builder nor `RUNTIME_THREAD_AMQP_URL` names one: loopback,
/// with RabbitMQ's default (loopback-only) account.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The environment variable that overrides [`DEFAULT_URL`].
pub const URL_VARIABLE: &str = "RUNTIME_THREAD_AMQP_URL";

/// How to reach the broker and name things on it. The names and queue arguments default to
/// kiwipy's, so that both can declare the same exchanges and queues.
///
/// ```
/// use std::time::Duration;
/// use runtime_thread::messaging::amqp::AmqpConfig;
///
/// let config = AmqpConfig::new()
///     .url("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .message_exchange("aiida-1234.messages")
///     .task_exchange("aiida-1234.tasks")
///     .default_timeout(Duration::from_secs(5));
/// assert_eq!(config.message_exchange_name(), "aiida-1234.messages");
/// // Credentials are never shown.
/// assert!(!format!("{config:?}").contains("guest:guest"));
/// ```
#[derive(Clone)]
pub struct AmqpConfig {
    pub(crate) url: String,
    pub(crate) message_exchange: String,
    pub(crate) task_exchange: String,
    pub(crate) default_timeout: Duration,
    pub(crate) max_message_size: usize,
    pub(crate) heartbeat: u16,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_initial: Duration,
    pub(crate) reconnect_max: Duration,
    pub(crate) message_ttl_ms: u32,
    pub(crate) queue_expires_ms: u32,
    pub(crate) task_message_ttl_ms: u32,
    pub(crate) testing_mode: bool,
    pub(crate) task_queue_prefix: String,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl AmqpConfig {
    /// kiwipy's defaults; the URL from `RUNTIME_THREAD_AMQP_URL`, else [`DEFAULT_URL`].
    pub fn new() -> Self {
        AmqpConfig {
            url: std::env::var(URL_VARIABLE).unwrap_or_else(|_| DEFAULT_URL.to_owned()),
            message_exchange: "kiwipy.messages".to_owned(),
            task_exchange: "kiwipy.tasks".to_owned(),
            default_timeout: DEFAULT_TIMEOUT,
            max_message_size: 16 << 20,
            heartbeat: 60,
            connect_timeout: Duration::from_secs(10),
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            message_ttl_ms: 66_000,
            queue_expires_ms: 60_000,
            task_message_ttl_ms: 604_800_000,
            testing_mode: false,
            task_queue_prefix: String::new(),
        }
    }

    /// The broker's URL (`amqp://user:password@host:port/vhost`); credentials may be in it.
    /// The vhost is the path, percent-encoded (`%2f` for `/`). An empty one, as in
    /// `amqp://guest:guest@host:5672/` or a URL without a path, means the vhost `/`, as
    /// kiwipy and AiiDA read it.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// The topic exchange of RPCs and broadcasts (kiwipy: `kiwipy.messages`).
    pub fn message_exchange(mut self, name: impl Into<String>) -> Self {
        self.message_exchange = name.into();
        self
    }

    /// The topic exchange of tasks (kiwipy: `kiwipy.tasks`).
    pub fn task_exchange(mut self, name: impl Into<String>) -> Self {
        self.task_exchange = name.into();
        self
    }

    /// How long an RPC or a task waits for its answer unless told otherwise (kiwipy waits
    /// forever; here 30 s by default).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The largest body sent or accepted, in bytes (default 16 MiB). A larger incoming one is
    /// dropped (a task: rejected without requeue); a larger outgoing one is an error before
    /// anything is sent.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// The heartbeat interval proposed to the broker, in seconds (kiwipy: 60; 0 turns it off).
    /// A `heartbeat` in the URL wins.
    pub fn heartbeat(mut self, seconds: u16) -> Self {
        self.heartbeat = seconds;
        self
    }

    /// How long one connection attempt may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The pause before the first reconnection attempt after the connection drops, doubled
    /// after each failed attempt up to `max` (defaults 100 ms and 5 s).
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.reconnect_initial = initial;
        self.reconnect_max = max.max(initial);
        self
    }

    /// kiwipy's testing mode: exchanges and reply queues are deleted when unused, task queues
    /// are not durable and expire 10 s after their last use, so that tests leave nothing on
    /// the broker. Both sides of a conversation must agree on it (the declarations differ).
    pub fn testing_mode(mut self, on: bool) -> Self {
        self.testing_mode = on;
        self
    }

    /// Prepends `prefix` to every task queue's name (none by default), to keep tenants or tests
    /// apart on one broker; a kiwipy peer must then use the prefixed names.
    pub fn task_queue_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.task_queue_prefix = prefix.into();
        self
    }

    /// The broker-side name of task queue `queue`.
    pub(crate) fn task_queue_name(&self, queue: &str) -> String {
        format!("{}{queue}", self.task_queue_prefix)
    }

    /// The message exchange's name.
    pub fn message_exchange_name(&self) -> &str {
        &self.message_exchange
    }

    /// The task exchange's name.
    pub fn task_exchange_name(&self) -> &str {
        &self.task_exchange
    }

    /// The URL as lapin gets it: an empty vhost spelled `%2f` (lapin would ask for the vhost
    /// named ""), and the `heartbeat` query parameter added unless it has one.
    pub(crate) fn connection_url(&self) -> String {
        let url = with_default_vhost(&self.url);
        if url.contains("heartbeat=") {
            return url;
        }
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}heartbeat={}", self.heartbeat)
    }

    /// The URL without its password, for messages and logs.
    pub(crate) fn redacted_url(&self) -> String {
        shown_url(&self.url)
    }
}

/// `amqp://host:5672/` and `amqp://host:5672` -> `amqp://host:5672/%2f`; any other URL as is.
fn with_default_vhost(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (address, query) = match rest.split_once('?') {
        Some((address, query)) => (address, Some(query)),
        None => (rest, None),
    };
    let authority = address
        .split_once('/')
        .map_or(address, |(authority, _)| authority);
    let vhost = &address[authority.len()..];
    if !(vhost.is_empty() || vhost == "/") {
        return url.to_owned();
    }
    match query {
        Some(query) => format!("{scheme}://{authority}/%2f?{query}"),
        None => format!("{scheme}://{authority}/%2f"),
    }
}

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.redacted_url())
            .field("message_exchange", &self.message_exchange)
            .field("task_exchange", &self.task_exchange)
            .field("default_timeout", &self.default_timeout)
            .field("max_message_size", &self.max_message_size)
            .field("heartbeat", &self.heartbeat)
            .field("testing_mode", &self.testing_mode)
            .field("task_queue_prefix", &self.task_queue_prefix)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_vhost_means_the_root_vhost() {
        let url = |u: &str| AmqpConfig::new().url(u).heartbeat(5).connection_url();
        assert_eq!(
            url("amqp://u:p@h:5672/"),
            "amqp://u:p@h:5672/%2f?heartbeat=5"
        );
        assert_eq!(
            url("amqp://u:p@h:5672"),
            "amqp://u:p@h:5672/%2f?heartbeat=5"
        );
        assert_eq!(url("amqp://h/?heartbeat=7"), "amqp://h/%2f?heartbeat=7");
        assert_eq!(url("amqp://h/%2f"), "amqp://h/%2f?heartbeat=5");
        assert_eq!(url("amqp://h/aiida"), "amqp://h/aiida?heartbeat=5");
    }

    #[test]
    fn the_heartbeat_goes_into_the_url_unless_it_is_there() {
        let config = AmqpConfig::new().url("amqp://h/%2f").heartbeat(30);
        assert_eq!(config.connection_url(), "amqp://h/%2f?heartbeat=30");
        let config = AmqpConfig::new().url("amqp://h/%2f?heartbeat=600&x=1");
        assert_eq!(config.connection_url(), "amqp://h/%2f?heartbeat=600&x=1");
        let config = AmqpConfig::new().url("amqp://h/%2f?frame_max=8192");
        assert_eq!(
            config.connection_url(),
            "amqp://h/%2f?frame_max=8192&heartbeat=60"
        );
    }
}
