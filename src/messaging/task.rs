//! A task taken with the pull API.

use std::fmt;

use super::error::Error;
use super::message::Value;
use super::response::IntoResponse;

/// What a transport does with a pulled task when it is answered or given back.
pub(crate) trait Settle: Send {
    fn answer(&mut self, outcome: Result<Value, Error>);
    fn requeue(&mut self);
}

/// A task pulled with [`Communicator::next_task`](super::Communicator::next_task). Answer it with
/// [`complete`](IncomingTask::complete), or give it back with [`requeue`](IncomingTask::requeue);
/// dropped unanswered, it goes back to the queue (as kiwipy requeues a task nobody processed).
pub struct IncomingTask {
    body: Value,
    no_reply: bool,
    settle: Option<Box<dyn Settle>>,
}

impl IncomingTask {
    pub(crate) fn new(body: Value, no_reply: bool, settle: Box<dyn Settle>) -> Self {
        IncomingTask {
            body,
            no_reply,
            settle: Some(settle),
        }
    }

    /// The task.
    pub fn body(&self) -> &Value {
        &self.body
    }

    /// True if the sender does not wait for a result.
    pub fn no_reply(&self) -> bool {
        self.no_reply
    }

    /// Answers the task (following a pending answer to its end) and acknowledges it. A
    /// [`Response::Rejected`](super::Response::Rejected) gives it back to the queue instead.
    pub async fn complete(mut self, response: impl IntoResponse) {
        let response = response.into_response();
        if matches!(response, super::Response::Rejected) {
            return self.requeue();
        }
        let outcome = response.settle().await;
        if let Some(mut settle) = self.settle.take() {
            settle.answer(outcome);
        }
    }

    /// Gives the task back to its queue unanswered.
    pub fn requeue(mut self) {
        if let Some(mut settle) = self.settle.take() {
            settle.requeue();
        }
    }
}

impl Drop for IncomingTask {
    fn drop(&mut self) {
        if let Some(mut settle) = self.settle.take() {
            settle.requeue();
        }
    }
}

impl fmt::Debug for IncomingTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncomingTask")
            .field("body", &self.body)
            .field("no_reply", &self.no_reply)
            .finish()
    }
}
