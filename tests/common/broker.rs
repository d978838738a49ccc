//! The RabbitMQ node the `amqp` tests run against: the project's own, which `scripts/test`
//! starts (`scripts/rabbitmq start`: its own node name, free loopback ports and data under
//! `target/`) and names in `RUNTIME_THREAD_AMQP_URL`. No test touches any other broker.
//!
//! Every test that needs it is `#[ignore]`d, so that a plain `cargo test` counts it as ignored,
//! never as passed; `scripts/test` runs them with `--include-ignored`.

use std::time::Duration;

use runtime_thread::messaging::amqp::AmqpConfig;

/// The variable `scripts/test` sets to the node's URL.
const URL_VARIABLE: &str = "RUNTIME_THREAD_AMQP_URL";

/// The node's URL (loopback, RabbitMQ's default account).
pub fn url() -> String {
    std::env::var(URL_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{URL_VARIABLE} is not set: these tests need the project's RabbitMQ node. Run them \
             through scripts/test, or start it with `scripts/rabbitmq start` and export \
             {URL_VARIABLE}=$(scripts/rabbitmq url)"
        )
    })
}

/// The node's `host:port`.
pub fn address() -> String {
    let url = url();
    let after_at = url.rsplit_once('@').map_or(url.as_str(), |(_, rest)| rest);
    after_at.split('/').next().unwrap_or(after_at).to_owned()
}

/// The node's URL with other credentials.
pub fn url_as(user: &str, password: &str) -> String {
    format!("amqp://{user}:{password}@{}/%2f", address())
}

/// Exchanges and task queues named for one test (`test-<uuid>`), in kiwipy's testing mode so
/// that nothing is left on the broker.
pub fn config() -> AmqpConfig {
    named(&unique()).testing_mode(true)
}

/// Like [`config`], but with durable task queues and persistent tasks (as outside testing
/// mode), which survive a broker restart; the test deletes its queues.
pub fn durable_config() -> AmqpConfig {
    named(&unique())
}

pub fn unique() -> String {
    format!("test-{}", uuid::Uuid::new_v4().simple())
}

/// The configuration of the names `prefix` chose (for a second process to use the same ones).
pub fn named(prefix: &str) -> AmqpConfig {
    AmqpConfig::new()
        .url(url())
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

/// Runs `scripts/rabbitmq <command>` on the node `scripts/test` started (the script finds it
/// through `RUNTIME_THREAD_RABBITMQ_DIR`, which this process inherits).
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
