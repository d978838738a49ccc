//! The one error type of the messaging layer.

use std::time::Duration;

/// Everything a [`Communicator`](super::Communicator) operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nobody subscribes under that identifier, so the message cannot be delivered.
    #[error("no subscriber is listening as `{recipient}`: the message cannot be routed")]
    Unroutable {
        /// The identifier the message was sent to.
        recipient: String,
    },
    /// An RPC subscriber with this identifier already exists on this communicator.
    #[error("an RPC subscriber with identifier `{identifier}` already exists; remove it first")]
    DuplicateSubscriber {
        /// The identifier in use.
        identifier: String,
    },
    /// There is no subscriber with this identifier to remove.
    #[error("no subscriber `{identifier}` to remove")]
    UnknownSubscriber {
        /// The identifier that was asked for.
        identifier: String,
    },
    /// The remote handler returned an error (or panicked).
    #[error("the remote handler failed: {message}")]
    Remote {
        /// The handler's error, as displayed.
        message: String,
    },
    /// The handler rejected the message.
    #[error("the subscriber rejected the message")]
    TaskRejected,
    /// No answer came within the timeout. For a task this says nothing about whether it ran: it
    /// stays queued or in progress.
    #[error(
        "no answer within {0:?}; is the recipient running and keeping up? (or pass a longer timeout)"
    )]
    Timeout(Duration),
    /// The remote side cancelled the answer (a deferred reply was dropped unanswered).
    #[error("the remote side cancelled the request before answering")]
    Cancelled,
    /// An operation that starts tasks was polled outside a tokio runtime.
    #[error(
        "this communicator's async methods run on a tokio runtime: await them inside one (a \
         RuntimeThread's `run_threadsafe`, say), or use SyncCommunicator from plain threads"
    )]
    NoRuntime,
    /// The communicator is closed; so is every operation still waiting on it.
    #[error("the communicator is closed")]
    Closed,
    /// No task arrived in the queue within the timeout of a pull.
    #[error("no task arrived in queue `{queue}` in time")]
    QueueEmpty {
        /// The queue that was pulled from.
        queue: String,
    },
    /// A message could not be turned into (or from) the requested type.
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What was being decoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// A message is larger than the transport's limit.
    #[error(
        "the message is {size} bytes, more than the limit of {limit}; send less, or raise the \
         limit (`AmqpConfig::max_message_size`) on both sides"
    )]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The broker, or the connection to it, failed (it cannot be reached, refused a
    /// declaration, closed a channel ...). The message says what was being done; `source`
    /// keeps the client library's error.
    #[error("broker: {reason}")]
    Broker {
        /// What failed.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    },
    /// The connection to the broker dropped while this operation waited for its answer. The
    /// request may or may not have been processed; the communicator reconnects by itself.
    #[error(
        "the connection to the broker was lost while waiting for the answer; it may or may not \
         have been processed, and the communicator is reconnecting, so retry if that is safe"
    )]
    ConnectionLost,
    /// The runtime thread hosting a [`SyncCommunicator`](super::SyncCommunicator) failed.
    #[error(transparent)]
    Thread(#[from] crate::thread::Error),
}
