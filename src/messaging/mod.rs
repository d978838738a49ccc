//! The messaging layer (the kiwipy analogue): RPC, broadcasts and task queues behind one
//! [`Communicator`] trait, with an in-process broker ([`LocalCommunicator`]) and a synchronous
//! communicator for plain threads ([`SyncCommunicator`]), built on the core layer.
//!
//! Messages are JSON-like [`Value`]s; [`to_value`] and [`from_value`] convert typed data.

#[cfg(feature = "amqp")]
#[cfg_attr(docsrs, doc(cfg(feature = "amqp")))]
pub mod amqp;
mod communicator;
mod error;
mod filter;
mod handler;
mod local;
mod message;
mod response;
mod task;
mod threaded;

pub use communicator::{Communicator, DEFAULT_TASK_QUEUE, SubscriberId, TaskSubscriberOptions};
pub use error::Error;
pub use filter::BroadcastFilter;
pub use handler::{BroadcastHandler, Handler};
pub use local::{DEFAULT_TIMEOUT, LocalCommunicator};
pub use message::{Broadcast, Value, from_value, to_value};
pub use response::{IntoResponse, Responder, Response};
pub use task::IncomingTask;
pub use threaded::SyncCommunicator;
