//! The RabbitMQ transport (feature `amqp`): [`AmqpCommunicator`], wire-compatible with kiwipy
//! (the exchanges, queues and their arguments, routing keys, properties and envelopes of
//! kiwipy 0.9), and [`connect`] for synchronous code, kiwipy's `connect()`.
//!
//! Bodies are written as JSON (which kiwipy's YAML decoder reads) and read as JSON or as the
//! YAML kiwipy writes, `!!python/tuple` included; see [`codec`].

pub mod codec;
mod communicator;
mod config;
mod link;
mod quiet;
mod wire;
mod yaml;

pub use communicator::AmqpCommunicator;
pub use config::{AmqpConfig, DEFAULT_URL, URL_VARIABLE};

use std::sync::Arc;

use super::{Error, SyncCommunicator};
use crate::thread::RuntimeThread;

/// Connects to the broker at `url` on a runtime thread of its own, for synchronous code (as
/// kiwipy's `connect()` gives an `RmqThreadCommunicator`); `close()` closes the connection and
/// stops the thread.
///
/// ```no_run
/// use runtime_thread::messaging::{Handler, Value};
///
/// let comm = runtime_thread::messaging::amqp::connect("amqp://guest:guest@127.0.0.1/")?;
/// comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)).wait()??;
/// assert_eq!(comm.rpc_send("echo", "hi".into()).wait()??, "hi");
/// comm.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn connect(url: &str) -> Result<SyncCommunicator<AmqpCommunicator>, Error> {
    connect_with(AmqpConfig::new().url(url))
}

/// [`connect`] with a full configuration.
pub fn connect_with(config: AmqpConfig) -> Result<SyncCommunicator<AmqpCommunicator>, Error> {
    let thread = RuntimeThread::builder().name("amqp").start()?;
    let connected = thread
        .run_threadsafe(AmqpCommunicator::connect(config))
        .wait();
    let comm = match connected {
        Ok(Ok(comm)) => comm,
        Ok(Err(error)) => {
            let _ = thread.stop();
            return Err(error);
        }
        Err(error) => {
            let _ = thread.stop();
            return Err(Error::Thread(error));
        }
    };
    Ok(SyncCommunicator::owning(comm, Arc::new(thread)))
}
