//! The messaging layer (the kiwipy analogue): RPC, broadcasts and task queues behind one
//! [`Communicator`] trait, with an in-process broker ([`LocalCommunicator`]), RabbitMQ
//! ([`amqp`], feature `amqp`) and a synchronous communicator for plain threads
//! ([`SyncCommunicator`]), built on the core layer.
//!
//! `Communicator` is kiwipy's model as a trait: RPC, broadcasts and task queues, with JSON-like
//! messages (`serde_json::Value`, and `to_value`/`from_value` for typed data). `LocalCommunicator`
//! is the in-process broker; `AmqpCommunicator` (feature `amqp`) goes through RabbitMQ;
//! `SyncCommunicator` drives either from plain threads through a `RuntimeThread`: its operations
//! are the trait's (so `use` the trait), each returning a [`Reply`], whose error is this layer's [`Error`]. Handlers are plain or async
//! closures; they may answer with a value, an error, a rejection, or an answer that comes later
//! (`Response::later`, `Response::deferred`).
//!
//! ```rust
//! use std::time::Duration;
//! use runtime_thread::messaging::{
//!     Broadcast, BroadcastFilter, BroadcastHandler, Communicator, Handler, Response,
//!     SyncCommunicator, TaskSendOptions, TaskSubscriberOptions, Value,
//! };
//! use serde_json::json;
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let comm = SyncCommunicator::local()?;
//!
//!     // RPC: a named subscriber, a request, the answer (or Unroutable, Remote, Timeout...).
//!     comm.add_rpc_subscriber("square", Handler::sync(|v: Value| json!(v.as_i64().unwrap_or(0).pow(2))))
//!         .wait()?;
//!     assert_eq!(comm.rpc_send("square", json!(7)).wait()?, json!(49));
//!
//!     // Broadcasts: to everyone whose filter passes (`*` wildcards, whole-string match).
//!     comm.add_broadcast_subscriber(
//!         BroadcastFilter::new().subject("order.*"),
//!         BroadcastHandler::sync(|b: Broadcast| println!("heard {:?}", b.subject)),
//!     )
//!     .wait()?;
//!     comm.broadcast_send(Broadcast::new("details").subject("order.created").sender("shop"))
//!         .wait()?;
//!
//!     // Task queues: each task to exactly one worker, acknowledged once answered.
//!     comm.add_task_subscriber(
//!         "jobs",
//!         Handler::sync(|task: Value| match task.as_i64() {
//!             Some(n) => Response::Value(json!(n + 1)),
//!             None => Response::Rejected, // offered to another worker instead
//!         }),
//!         TaskSubscriberOptions { prefetch: 4 },
//!     )
//!     .wait()?;
//!     let options = TaskSendOptions::for_queue("jobs").timeout(Duration::from_secs(5));
//!     let result = comm.task_send_with(json!(41), options).wait()?;
//!     assert_eq!(result, json!(42));
//!     comm.close();
//!     Ok(())
//! }
//! ```
//!
//! What it does where kiwipy hangs or spins: every waiting send has a timeout (a default and a
//! per-call one); `close()` is immediate and releases every waiting caller with `Closed`; a handler may
//! call the communicator from inside itself (through the async communicator; blocking on the
//! synchronous one from a handler fails at once with a message to `.await` instead of stalling); a
//! task that every subscriber rejects waits in its queue until a subscriber that has not refused it
//! appears, with no redelivery loop; a subscriber removed with tasks in hand gives them back to the
//! queue at once; a deferred answer whose responder is dropped reaches the caller as `Cancelled`;
//! filters match whole strings (kiwipy's `bob.jones` also matches `bob.jonesy`). A task is delivered
//! at least once: one that is requeued after its subscriber went away may already have run.

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub mod amqp;
mod communicator;
mod error;
mod filter;
mod handler;
mod local;
mod message;
mod reply;
mod response;
pub(crate) mod shown_url;
mod task;
mod threaded;

pub use communicator::{
    Communicator, DEFAULT_TASK_QUEUE, SubscriberId, TaskSendOptions, TaskSubscriberOptions,
};
pub use error::Error;
pub use filter::BroadcastFilter;
pub use handler::{BroadcastHandler, Handler};
pub use local::{DEFAULT_TIMEOUT, LocalCommunicator};
pub use message::{Broadcast, UUID_KEY, Value, as_uuid, from_value, to_value, uuid_value};
pub use reply::Reply;
pub use response::{IntoResponse, Responder, Response};
pub use task::IncomingTask;
pub use threaded::SyncCommunicator;
