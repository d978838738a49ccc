//! The RabbitMQ used by the `amqp` tests (`scripts/rabbitmq start`), with names of their own.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use runtime_thread::messaging::amqp::AmqpConfig;

/// The broker's URL (loopback, RabbitMQ's default account).
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Whether a broker answers on 127.0.0.1:5672. When none does: a panic if one is required
/// (`scripts/test` sets `RUNTIME_THREAD_REQUIRE_BROKER`), otherwise `false` and a message.
pub fn available() -> bool {
    let reachable = ("127.0.0.1", 5672)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| {
            TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok()
        });
    if reachable {
        return true;
    }
    if std::env::var_os("RUNTIME_THREAD_REQUIRE_BROKER").is_some() {
        panic!("RabbitMQ is required but not reachable on 127.0.0.1:5672");
    }
    eprintln!("skipped: no RabbitMQ on 127.0.0.1:5672 (`scripts/rabbitmq start` starts one)");
    false
}

/// Exchanges and task queues named for one test (`test-<uuid>`), in kiwipy's testing mode so
/// that nothing is left on the broker; `None` when no broker runs and none is required.
pub fn config() -> Option<AmqpConfig> {
    available().then(|| named(&unique()).testing_mode(true))
}

/// Like [`config`], but with durable task queues and persistent tasks (as outside testing
/// mode), which survive a broker restart; the test deletes its queues.
pub fn durable_config() -> Option<AmqpConfig> {
    available().then(|| named(&unique()))
}

pub fn unique() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// The configuration of the names `prefix` chose (for a second process to use the same ones).
pub fn named(prefix: &str) -> AmqpConfig {
    AmqpConfig::new()
        .url(URL)
        .message_exchange(format!("{prefix}.messages"))
        .task_exchange(format!("{prefix}.tasks"))
        .task_queue_prefix(format!("{prefix}."))
        .default_timeout(Duration::from_secs(10))
}

/// `scripts/rabbitmq restart`: every client connection drops and the broker comes back.
pub fn restart() {
    rabbitmq("restart");
}

/// The broker goes down (the node stays up): every client connection drops.
pub fn stop_app() {
    rabbitmq("stop-app");
}

/// The broker comes back up, ready.
pub fn start_app() {
    rabbitmq("start-app");
}

fn rabbitmq(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/rabbitmq");
    let status = std::process::Command::new(script)
        .arg(command)
        .status()
        .expect("run scripts/rabbitmq");
    assert!(status.success(), "scripts/rabbitmq {command} failed");
}

/// The runtime the `amqp` tests run on: two workers, like a small service.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
