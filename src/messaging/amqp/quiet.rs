//! lapin's own log events, brought to the level they deserve for a user of this crate.
//!
//! lapin logs from the I/O thread it starts for each connection, and from the tasks it runs on the
//! caller's runtime: a WARN carrying the whole message (body included) for every message the broker
//! returns, which here means every RPC or task sent to nobody, already the caller's
//! `Error::Unroutable`; and an ERROR for a connection the broker refused or closed, already the
//! caller's `Error::Broker` or the communicator's own warning as it reconnects. So those events go
//! through [`Quiet`] (lapin gets a runtime whose executor runs its tasks under it, and its I/O
//! thread makes it its default): returned messages are not logged at all (they carry bodies),
//! lapin's other warnings and errors are logged at DEBUG, and everything else passes unchanged to
//! the subscriber that was the default where the connection was opened.

use std::cell::Cell;
use std::fmt::{self, Write};
use std::future::Future;

use async_rs::traits::Executor;
use async_rs::util::{RuntimeParts, Task};
use async_rs::{Runtime, Tokio};
use tracing::field::{Field, Visit};
use tracing::instrument::WithSubscriber;
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Level, Metadata, Subscriber, span};
use tracing_core::callsite::{DefaultCallsite, Identifier};
use tracing_core::field::FieldSet;
use tracing_core::metadata::Kind;

/// A subscriber that passes every event on to `inner`, except lapin's loud ones.
pub(super) struct Quiet {
    inner: Dispatch,
}

impl Quiet {
    /// The filter for a connection opened now: around the current default subscriber.
    pub(super) fn around_current() -> Dispatch {
        let inner = tracing::dispatcher::get_default(Dispatch::clone);
        Dispatch::new(Quiet { inner })
    }
}

/// The tokio runtime the caller runs on, for lapin, with every task lapin spawns or blocks on
/// running under `quiet`.
pub(super) fn runtime(quiet: Dispatch) -> Runtime<RuntimeParts<QuietExecutor, Tokio>> {
    let executor = QuietExecutor {
        tokio: Tokio::current(),
        quiet,
    };
    Runtime::new(RuntimeParts::new(executor, Tokio::current()))
}

/// Tokio's executor, with lapin's futures and blocking jobs under a [`Quiet`] subscriber.
#[derive(Clone, Debug)]
pub(super) struct QuietExecutor {
    tokio: Tokio,
    quiet: Dispatch,
}

impl Executor for QuietExecutor {
    type Task<T: Send + 'static> = <Tokio as Executor>::Task<T>;

    /// lapin blocks on its connector on its I/O thread, where the connector makes [`Quiet`]
    /// the thread's default for good: a scope set here would undo that when it ends.
    fn block_on<T, F: Future<Output = T>>(&self, future: F) -> T {
        self.tokio.block_on(future)
    }

    fn spawn<T: Send + 'static, F: Future<Output = T> + Send + 'static>(
        &self,
        future: F,
    ) -> Task<Self::Task<T>> {
        self.tokio.spawn(future.with_subscriber(self.quiet.clone()))
    }

    fn spawn_blocking<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        job: F,
    ) -> Task<Self::Task<T>> {
        let quiet = self.quiet.clone();
        self.tokio
            .spawn_blocking(move || tracing::dispatcher::with_default(&quiet, job))
    }
}

/// Makes `quiet` the calling thread's default subscriber for the rest of its life, once: lapin
/// calls its connector on its I/O thread, which this crate cannot otherwise reach.
pub(super) fn install_on_this_thread(quiet: &Dispatch) {
    thread_local! {
        static INSTALLED: Cell<bool> = const { Cell::new(false) };
    }
    if INSTALLED.with(|installed| installed.replace(true)) {
        return;
    }
    // Kept for the thread's life: the guard would only restore the global default.
    std::mem::forget(tracing::dispatcher::set_default(quiet));
}

/// A warning or an error of lapin's.
fn is_loud_lapin(metadata: &Metadata<'_>) -> bool {
    metadata.is_event()
        && metadata.target().starts_with("lapin")
        && *metadata.level() <= Level::WARN
}

/// lapin's event for a message the broker returned: its fields hold the message's body.
fn is_returned_message(metadata: &Metadata<'_>) -> bool {
    metadata.target() == "lapin::returned_messages"
}

impl Subscriber for Quiet {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if is_loud_lapin(metadata) {
            // Seen event by event, so that `event` can turn it into a DEBUG one.
            return Interest::sometimes();
        }
        self.inner.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        is_loud_lapin(metadata) || self.inner.enabled(metadata)
    }

    /// What this filter itself needs: lapin's warnings and errors. The inner subscriber is a
    /// dispatcher of its own, whose hint counts too; `None` would lift the global maximum
    /// level for every callsite of the program.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        if !is_loud_lapin(metadata) {
            // The inner dispatcher applies its own `event_enabled` first.
            return self.inner.event(event);
        }
        if is_returned_message(metadata) {
            return;
        }
        demote(&self.inner, metadata.target(), event);
    }

    fn new_span(&self, attributes: &span::Attributes<'_>) -> span::Id {
        self.inner.new_span(attributes)
    }

    fn record(&self, span: &span::Id, values: &span::Record<'_>) {
        self.inner.record(span, values)
    }

    fn record_follows_from(&self, span: &span::Id, follows: &span::Id) {
        self.inner.record_follows_from(span, follows)
    }

    fn enter(&self, span: &span::Id) {
        self.inner.enter(span)
    }

    fn exit(&self, span: &span::Id) {
        self.inner.exit(span)
    }

    fn clone_span(&self, id: &span::Id) -> span::Id {
        self.inner.clone_span(id)
    }

    fn try_close(&self, id: span::Id) -> bool {
        self.inner.try_close(id)
    }
}

/// The DEBUG event a loud lapin event becomes: its text, and the lapin module it came from.
static DEMOTED_META: Metadata<'static> = Metadata::new(
    "lapin event",
    "runtime_thread::messaging::amqp",
    Level::DEBUG,
    Some(file!()),
    Some(line!()),
    Some(module_path!()),
    FieldSet::new(&["message", "lapin"], Identifier(&DEMOTED)),
    Kind::EVENT,
);
static DEMOTED: DefaultCallsite = DefaultCallsite::new(&DEMOTED_META);

/// Passes `event` on to `inner` as a DEBUG event of this crate's. Sent to `inner` directly:
/// tracing drops events emitted from inside a subscriber's own callbacks.
fn demote(inner: &Dispatch, lapin: &str, event: &Event<'_>) {
    if DEMOTED.interest().is_never() || !inner.enabled(&DEMOTED_META) {
        return;
    }
    let mut text = String::new();
    event.record(&mut Fields(&mut text));
    let fields = DEMOTED_META.fields();
    let (Some(message), Some(module)) = (fields.field("message"), fields.field("lapin")) else {
        return;
    };
    let values = [
        (&message, Some(&text.as_str() as &dyn tracing::Value)),
        (&module, Some(&lapin as &dyn tracing::Value)),
    ];
    inner.event(&Event::new(&DEMOTED_META, &fields.value_set(&values)));
}

/// An event's fields as `message name=value ...`.
struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.0, "{value:?}")
        } else {
            write!(self.0, "{}={value:?}", field.name())
        };
    }
}
