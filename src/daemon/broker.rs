//! Reaching the broker a [`DaemonConfig`] names, for the workers and the command line.

use std::time::Duration;

use super::config::DaemonConfig;
use super::error::DaemonError;
use crate::RuntimeThread;
use crate::messaging::amqp::AmqpCommunicator;

/// Connects to the configured broker on `thread`, giving up after `timeout` (the transport's
/// default when `None`).
pub(crate) fn connect(
    thread: &RuntimeThread,
    config: &DaemonConfig,
    timeout: Option<Duration>,
) -> Result<AmqpCommunicator, DaemonError> {
    let mut amqp = config.amqp();
    if let Some(timeout) = timeout {
        amqp = amqp.connect_timeout(timeout);
    }
    let connected = thread
        .run_threadsafe(AmqpCommunicator::connect(amqp))
        .wait()?;
    connected.map_err(|source| DaemonError::Broker {
        url: config.broker_shown(),
        source,
    })
}
