//! Which runtime thread, if any, the current OS thread belongs to. It answers two questions that
//! tokio cannot answer for us: "would a blocking wait here freeze the runtime?" and "would joining
//! the runtime thread from here join ourselves?"

use std::cell::Cell;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Membership {
    /// The [`RuntimeThread`](super::RuntimeThread) this OS thread belongs to.
    pub(crate) runtime: u64,
    /// True on the one thread that runs every task of a current-thread runtime: blocking there
    /// stops all of them.
    pub(crate) scheduler: bool,
}

thread_local! {
    static MEMBERSHIP: Cell<Option<Membership>> = const { Cell::new(None) };
}

pub(crate) fn enter(membership: Option<Membership>) {
    MEMBERSHIP.with(|cell| cell.set(membership));
}

pub(crate) fn current() -> Option<Membership> {
    MEMBERSHIP.with(Cell::get)
}

pub(crate) fn belongs_to(runtime: u64) -> bool {
    current().is_some_and(|m| m.runtime == runtime)
}

pub(crate) fn on_a_scheduler_thread() -> bool {
    current().is_some_and(|m| m.scheduler)
}
