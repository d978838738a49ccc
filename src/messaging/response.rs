//! What a handler answers: a value, a failure, a rejection, or an answer that comes later.

use std::fmt;
use std::future::Future;

use futures::future::BoxFuture;
use serde::Serialize;
use tokio::sync::oneshot;

use super::error::Error;
use super::message::Value;

/// A handler's answer to an RPC or a task.
pub enum Response {
    /// The result.
    Value(Value),
    /// The handler failed; the sender gets [`Error::Remote`] with this message.
    Failed(String),
    /// For tasks: not for this subscriber; the task is offered to another one (and waits in the
    /// queue if every subscriber rejected it), also when it comes after a `Pending` (a worker
    /// that cannot finish a task it took gives it back). For RPC the sender gets
    /// [`Error::TaskRejected`].
    Rejected,
    /// The answer was cancelled; the sender gets [`Error::Cancelled`].
    Cancelled,
    /// The answer comes later (kiwipy's "pending" reply); it may itself be pending again.
    Pending(BoxFuture<'static, Response>),
}

impl Response {
    /// An answer that a future will give.
    pub fn later<F>(future: F) -> Self
    where
        F: Future + Send + 'static,
        F::Output: IntoResponse,
    {
        Response::Pending(Box::pin(async move { future.await.into_response() }))
    }

    /// An answer that someone will give through the returned [`Responder`]; if the responder is
    /// dropped unanswered, the sender gets [`Error::Cancelled`] rather than waiting forever.
    pub fn deferred() -> (Responder, Response) {
        let (tx, rx) = oneshot::channel();
        let response =
            Response::Pending(Box::pin(
                async move { rx.await.unwrap_or(Response::Cancelled) },
            ));
        (Responder(tx), response)
    }

    /// Encodes a typed value as the answer.
    pub fn json<T: Serialize>(value: &T) -> Self {
        match super::message::to_value(value) {
            Ok(value) => Response::Value(value),
            Err(error) => Response::Failed(error.to_string()),
        }
    }

    /// Follows pending answers to the final one.
    pub(crate) async fn settle(self) -> Result<Value, Error> {
        let mut response = self;
        loop {
            response = match response {
                Response::Value(value) => return Ok(value),
                Response::Failed(message) => return Err(Error::Remote { message }),
                Response::Rejected => return Err(Error::TaskRejected),
                Response::Cancelled => return Err(Error::Cancelled),
                Response::Pending(later) => later.await,
            };
        }
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Value(value) => f.debug_tuple("Value").field(value).finish(),
            Response::Failed(message) => f.debug_tuple("Failed").field(message).finish(),
            Response::Rejected => f.write_str("Rejected"),
            Response::Cancelled => f.write_str("Cancelled"),
            Response::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Gives a [`Response::deferred`] answer.
#[derive(Debug)]
pub struct Responder(oneshot::Sender<Response>);

impl Responder {
    /// Answers; returns false if the sender is no longer waiting.
    pub fn respond(self, response: impl IntoResponse) -> bool {
        self.0.send(response.into_response()).is_ok()
    }
}

/// What a handler may return: a [`Response`], a [`Value`], a string, `()`, or a `Result` of those
/// whose error is reported to the sender as [`Error::Remote`].
pub trait IntoResponse: Send + 'static {
    /// Converts into a [`Response`].
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl IntoResponse for Value {
    fn into_response(self) -> Response {
        Response::Value(self)
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Response {
        Response::Value(Value::String(self))
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Response {
        Response::Value(Value::from(self))
    }
}

impl From<Value> for Response {
    fn from(value: Value) -> Self {
        Response::Value(value)
    }
}

impl IntoResponse for () {
    fn into_response(self) -> Response {
        Response::Value(Value::Null)
    }
}

impl<T, E> IntoResponse for Result<T, E>
where
    T: IntoResponse,
    E: fmt::Display + Send + 'static,
{
    fn into_response(self) -> Response {
        match self {
            Ok(value) => value.into_response(),
            Err(error) => Response::Failed(error.to_string()),
        }
    }
}
