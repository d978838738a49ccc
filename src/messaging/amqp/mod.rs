//! The RabbitMQ transport (feature `amqp`): [`AmqpCommunicator`], wire-compatible with kiwipy
//! (the exchanges, queues and their arguments, routing keys, properties and envelopes of
//! kiwipy 0.9), and [`connect`] for synchronous code, kiwipy's `connect()`.
//!
//! Bodies are written as JSON (which kiwipy's YAML decoder reads) and read as JSON or as the
//! YAML kiwipy writes, `!!python/tuple` included; see [`codec`].
//!
//! [`AmqpCommunicator::connect`] (async) or [`connect`] (a `SyncCommunicator` on a runtime thread
//! of its own, kiwipy's `connect()`) speak kiwipy 0.9's wire protocol, so a kiwipy program can call
//! Rust RPC subscribers, send Rust workers tasks and hear Rust broadcasts, and the other way round
//! (tested against a real kiwipy in both directions):
//!
//! ```rust,no_run
//! use runtime_thread::messaging::{amqp, Communicator, Handler, Value};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let comm = amqp::connect("amqp://guest:guest@127.0.0.1:5672/%2f")?;
//!     comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)).wait()?;
//!     assert_eq!(comm.rpc_send("echo", "hi".into()).wait()?, "hi");
//!     comm.close();
//!     Ok(())
//! }
//! ```
//!
//! - Names and declarations as kiwipy's: topic exchanges `kiwipy.messages` and `kiwipy.tasks` (both
//!   configurable, as AiiDA names them per profile), RPC routing keys `[rpc].<id>`, broadcasts on `[broadcast]` with all four envelope keys, task queues durable
//!   with a week's TTL and nothing else (so both sides can declare the same queue), replies through
//!   the exchange the request came by, `{result|exception|pending|cancelled}` replies with `host` on
//!   task replies, the `[task, no_reply]` envelope. kiwipy's testing mode is available too.
//! - Bodies: written as JSON that PyYAML reads back unchanged (floats with a `.` and a signed exponent,
//!   the characters YAML refuses or folds escaped); read as JSON or as the YAML kiwipy writes, with its
//!   tags: `!!python/tuple` is a list, `!!set` a list, `!!binary` its base64 text; any other Python tag
//!   (an object, a call) is refused, not read as data, and aliases have an expansion budget. A body
//!   that does not decode is dropped (a task: rejected without requeue), with an exception reply to
//!   its sender when it has a `reply_to`; bodies over `max_message_size` (16 MiB) are refused both
//!   ways.
//! - Every request, task, broadcast and task reply waits for the publisher confirm; answers to
//!   RPCs go without one, and requests and broadcasts are consumed without acknowledgements
//!   (see [`AmqpCommunicator`] for why). RPCs are `mandatory`, so an RPC to an identifier
//!   nobody serves is `Unroutable` at once; a task's queue is declared before it is sent (as kiwipy
//!   does), so a task nobody consumes yet waits in its queue for a worker, and a sender waiting for
//!   its result gets `Timeout`. Answers have a timeout (kiwipy's have none). lapin's own log events
//!   come out at DEBUG, never with a message body (it logs every returned message at WARN). A task is
//!   acknowledged after its reply is sent (kiwipy acknowledges first, so a worker dying between
//!   the two leaves its sender waiting) and requeued when refused or when its worker's
//!   connection drops (at least once); a task a subscriber refused is held a while and given back
//!   (or at once when another subscriber arrives) rather than redelivered in a hot loop.
//! - Heartbeats (60 s, or `?heartbeat=` in the URL); when the connection drops, callers waiting for
//!   answers get `ConnectionLost` (kiwipy's stay pending forever), and the communicator reconnects
//!   with backoff, declares its queues again and resumes its subscriptions. `close()` is bounded.
//!   Credentials come from the URL or `RUNTIME_THREAD_AMQP_URL`, and are never printed (debug output
//!   and errors show `user:***`).
//! - Differences from kiwipy on purpose, none of them visible to a sender: a communicator serves
//!   all its RPC subscribers from one queue, each subscriber a binding of it (kiwipy declares a
//!   queue and a consumer per subscriber: a worker whose 10,000 processes listen holds 10,000
//!   queues), so subscribing and unsubscribing cost one round trip each and run concurrently;
//!   an RPC subscriber is unbound before it is forgotten, so a request sent after its removal is
//!   `Unroutable` and one sent before is still answered; the broadcast queue is deleted when the
//!   last broadcast subscriber is removed (kiwipy replays up to 66 s of old broadcasts to a later
//!   subscriber).
//!
//! Tests against a real broker and a real kiwipy: the conformance suite above, async and synchronous
//! (`tests/messaging_conformance.rs`); both directions with kiwipy 0.9 (`tests/amqp_kiwipy.rs`, the
//! Python side in `tests/kiwipy/peer.py`); the broker restarted while RPCs, tasks and broadcasts flow,
//! every task processed at least once (`tests/amqp_restart.rs`); a waiting pull is a consumer
//! (`tests/amqp_pull.rs`); lapin's events logged at DEBUG without bodies (`tests/amqp_logging.rs`);
//! a worker killed with SIGKILL holding tasks, which go to another worker, and garbage, truncated,
//! Python-object and oversized bodies on every kind of queue (`tests/amqp_faults.rs`).

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
/// use runtime_thread::messaging::{Communicator, Handler, Value};
///
/// let comm = runtime_thread::messaging::amqp::connect("amqp://guest:guest@127.0.0.1/")?;
/// comm.add_rpc_subscriber("echo", Handler::sync(|v: Value| v)).wait()?;
/// assert_eq!(comm.rpc_send("echo", "hi".into()).wait()?, "hi");
/// comm.close();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// Those of [`connect_with`].
pub fn connect(url: &str) -> Result<SyncCommunicator<AmqpCommunicator>, Error> {
    connect_with(AmqpConfig::new().url(url))
}

/// [`connect`] with a full configuration.
///
/// # Errors
///
/// [`Error::Broker`] when the broker cannot be reached; [`Error::Thread`] when the runtime thread
/// cannot start.
pub fn connect_with(config: AmqpConfig) -> Result<SyncCommunicator<AmqpCommunicator>, Error> {
    // Its work waits on the network (a round trip to the broker takes hundreds of
    // microseconds): a spin for the next job, or for a result, would only burn the CPU that the
    // broker and the other side need.
    let thread = RuntimeThread::builder()
        .name("amqp")
        .idle_spin(std::time::Duration::ZERO)
        .wait_spin(std::time::Duration::ZERO)
        .start()?;
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
