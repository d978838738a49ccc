//! Handlers: plain closures or async ones, behind one type each.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::message::{Broadcast, Value};
use super::response::{IntoResponse, Response};
use crate::thread::panic_message;

type HandlerFn = dyn Fn(Value) -> BoxFuture<'static, Response> + Send + Sync;
type BroadcastFn = dyn Fn(Broadcast) -> BoxFuture<'static, ()> + Send + Sync;

/// Handles RPC requests or tasks. Build it from a plain closure ([`Handler::sync`]) or an async
/// one ([`Handler::from_async`]); either may return anything that is [`IntoResponse`], including
/// an answer that comes later. A panic is caught and reported to the sender as a remote error.
///
/// ```
/// use runtime_thread::messaging::{Handler, Response, Value};
///
/// let echo = Handler::sync(|msg: Value| msg);
/// let slow = Handler::from_async(|msg: Value| async move {
///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///     Ok::<_, String>(msg)
/// });
/// let later = Handler::sync(|msg: Value| Response::later(async move { msg }));
/// # let _ = (echo, slow, later);
/// ```
#[derive(Clone)]
pub struct Handler(Arc<HandlerFn>);

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler(..)")
    }
}

impl Handler {
    /// A handler from a synchronous closure. It runs on the communicator's runtime: keep it short.
    pub fn sync<F, R>(handler: F) -> Self
    where
        F: Fn(Value) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        Handler(Arc::new(move |message| {
            let response = match catch_unwind(AssertUnwindSafe(|| handler(message))) {
                Ok(response) => response.into_response(),
                Err(payload) => panicked(&*payload),
            };
            Box::pin(async move { response })
        }))
    }

    /// A handler from an async closure.
    pub fn from_async<F, Fut>(handler: F) -> Self
    where
        F: Fn(Value) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: IntoResponse,
    {
        Handler(Arc::new(move |message| {
            let future = match catch_unwind(AssertUnwindSafe(|| handler(message))) {
                Ok(future) => future,
                Err(payload) => {
                    let response = panicked(&*payload);
                    return Box::pin(async move { response });
                }
            };
            Box::pin(async move {
                match AssertUnwindSafe(future).catch_unwind().await {
                    Ok(output) => output.into_response(),
                    Err(payload) => panicked(&*payload),
                }
            })
        }))
    }

    /// Runs the handler. Call it outside any lock: handlers may call the communicator.
    pub(crate) fn call(&self, message: Value) -> BoxFuture<'static, Response> {
        (self.0)(message)
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> Response {
    Response::Failed(format!("the handler panicked: {}", panic_message(payload)))
}

/// Receives broadcasts; from a plain closure or an async one. A panic is logged and the
/// subscriber keeps receiving.
#[derive(Clone)]
pub struct BroadcastHandler(Arc<BroadcastFn>);

impl std::fmt::Debug for BroadcastHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BroadcastHandler(..)")
    }
}

impl BroadcastHandler {
    /// From a synchronous closure.
    pub fn sync<F>(handler: F) -> Self
    where
        F: Fn(Broadcast) + Send + Sync + 'static,
    {
        BroadcastHandler(Arc::new(move |message| {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| handler(message))) {
                log_panic(&*payload);
            }
            Box::pin(async {})
        }))
    }

    /// From an async closure.
    pub fn from_async<F, Fut>(handler: F) -> Self
    where
        F: Fn(Broadcast) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        BroadcastHandler(Arc::new(move |message| {
            let future = handler(message);
            Box::pin(async move {
                if let Err(payload) = AssertUnwindSafe(future).catch_unwind().await {
                    log_panic(&*payload);
                }
            })
        }))
    }

    pub(crate) fn call(&self, message: Broadcast) -> BoxFuture<'static, ()> {
        (self.0)(message)
    }
}

fn log_panic(payload: &(dyn std::any::Any + Send)) {
    tracing::error!(panic = %panic_message(payload), "a broadcast subscriber panicked");
}
