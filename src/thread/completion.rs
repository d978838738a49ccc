//! The one-shot result cell shared by a running task and its [`TaskHandle`](super::TaskHandle).
//!
//! The task side resolves it exactly once (with a value, a panic, a cancellation or `Stopped`); the
//! handle side takes the value by sleeping on a condition variable (after the handle's own brief
//! spin, see [`Spin`](super::spin::Spin)), by registering a waker, or by leaving a callback. The
//! `state` atomic is only a fast-path hint: every transition happens under the mutex, so the
//! protocol is the mutex protocol plus one flag read.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::error::Error;
use super::sync::{AtomicBool, AtomicU8, Condvar, Mutex, lock};

const PENDING: u8 = 0;
const READY: u8 = 1;
const TAKEN: u8 = 2;

/// A callback left by [`TaskHandle::on_done`](super::TaskHandle::on_done).
pub(crate) type Callback<T> = Box<dyn FnOnce(Result<T, Error>) + Send>;

pub(crate) struct Completion<T> {
    state: AtomicU8,
    cancel_requested: AtomicBool,
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

struct Slot<T> {
    value: Option<Result<T, Error>>,
    /// The waker of an `.await` on the handle.
    awaiting: Option<Waker>,
    callback: Option<Callback<T>>,
    /// Threads blocked in `wait`; the resolver only signals the condvar when there are some.
    sleepers: usize,
    /// The waker of the task itself, so that a cancellation interrupts it at once.
    task: Option<Waker>,
}

impl<T> Completion<T> {
    pub(crate) fn new() -> Self {
        Completion {
            state: AtomicU8::new(PENDING),
            cancel_requested: AtomicBool::new(false),
            slot: Mutex::new(Slot {
                value: None,
                awaiting: None,
                callback: None,
                sleepers: 0,
                task: None,
            }),
            ready: Condvar::new(),
        }
    }

    /// True once resolved, whether or not the value was taken since.
    pub(crate) fn is_resolved(&self) -> bool {
        self.state.load(Acquire) != PENDING
    }

    /// Stores the outcome unless one was stored before; returns whether this call resolved it.
    /// A waiting callback runs here, on the resolving thread, outside the lock.
    pub(crate) fn resolve(&self, result: Result<T, Error>) -> bool {
        let mut slot = lock(&self.slot);
        if self.state.load(Relaxed) != PENDING {
            return false;
        }
        if let Some(callback) = slot.callback.take() {
            self.state.store(TAKEN, Release);
            drop(slot);
            run_isolated(callback, result);
            return true;
        }
        slot.value = Some(result);
        self.state.store(READY, Release);
        let awaiting = slot.awaiting.take();
        let sleepers = slot.sleepers;
        drop(slot);
        if sleepers > 0 {
            self.ready.notify_all();
        }
        if let Some(waker) = awaiting {
            waker.wake();
        }
        true
    }

    /// True once the outcome was taken (or handed to a callback).
    pub(crate) fn is_taken(&self) -> bool {
        self.state.load(Acquire) == TAKEN
    }

    /// The outcome if resolved (`ResultTaken` if it was taken before), `None` while pending.
    pub(crate) fn try_take(&self) -> Option<Result<T, Error>> {
        if self.state.load(Acquire) == PENDING {
            return None;
        }
        Some(self.take_resolved(&mut lock(&self.slot)))
    }

    fn take_resolved(&self, slot: &mut Slot<T>) -> Result<T, Error> {
        match slot.value.take() {
            Some(value) => {
                self.state.store(TAKEN, Release);
                value
            }
            None => Err(Error::ResultTaken),
        }
    }

    /// Blocks until resolved or until `deadline`; `None` means the deadline passed first.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Option<Result<T, Error>> {
        let mut slot = lock(&self.slot);
        loop {
            if self.state.load(Relaxed) != PENDING {
                return Some(self.take_resolved(&mut slot));
            }
            slot.sleepers += 1;
            slot = match deadline {
                None => self.ready.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                        slot.sleepers -= 1;
                        return None;
                    };
                    let (slot, _) = self
                        .ready
                        .wait_timeout(slot, left)
                        .unwrap_or_else(|p| p.into_inner());
                    slot
                }
            };
            slot.sleepers -= 1;
        }
    }

    /// The `Future` side: ready with the outcome, or pending with the waker stored.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Result<T, Error>> {
        let mut slot = lock(&self.slot);
        if self.state.load(Relaxed) != PENDING {
            return Poll::Ready(self.take_resolved(&mut slot));
        }
        match &slot.awaiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => slot.awaiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Runs `callback` with the outcome: at once on this thread when already resolved, otherwise
    /// later on the thread that resolves it.
    pub(crate) fn on_resolved(&self, callback: Callback<T>) {
        let mut slot = lock(&self.slot);
        if self.state.load(Relaxed) == PENDING {
            slot.callback = Some(callback);
            return;
        }
        let outcome = self.take_resolved(&mut slot);
        drop(slot);
        callback(outcome);
    }

    /// Resolves with `Cancelled` (if still pending) and interrupts the task so that it drops its
    /// future at its next poll. Returns whether this call cancelled it.
    pub(crate) fn cancel(&self) -> bool {
        self.cancel_requested.store(true, SeqCst);
        let cancelled = self.resolve(Err(Error::Cancelled));
        let task = lock(&self.slot).task.take();
        if let Some(task) = task {
            task.wake();
        }
        cancelled
    }

    pub(crate) fn cancel_requested(&self) -> bool {
        self.cancel_requested.load(SeqCst)
    }

    /// Leaves the task's waker for [`cancel`](Self::cancel). The caller must check
    /// [`cancel_requested`](Self::cancel_requested) afterwards: a cancel that took the old waker
    /// just before this call is only seen through the flag.
    pub(crate) fn register_task(&self, waker: &Waker) {
        let mut slot = lock(&self.slot);
        match &slot.task {
            Some(task) if task.will_wake(waker) => {}
            _ => slot.task = Some(waker.clone()),
        }
    }
}

/// Runs a callback on the resolving thread, which serves everybody else's work too (usually the
/// runtime thread): a panic in it is logged, never allowed to unwind into the runtime.
fn run_isolated<T>(callback: Callback<T>, result: Result<T, Error>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || callback(result)));
    if let Err(payload) = outcome {
        tracing::error!(
            panic = %super::error::panic_message(&*payload),
            "an on_done callback panicked; the runtime thread carries on"
        );
    }
}

/// Type-erased access for code that resolves handles without knowing their value type.
pub(crate) trait Resolve: Send + Sync {
    /// Resolves with `Stopped` if still pending.
    fn abandon(&self) -> bool;
    fn cancel(&self) -> bool;
    fn is_resolved(&self) -> bool;
}

impl<T: Send> Resolve for Completion<T> {
    fn abandon(&self) -> bool {
        self.resolve(Err(Error::Stopped))
    }
    fn cancel(&self) -> bool {
        Completion::cancel(self)
    }
    fn is_resolved(&self) -> bool {
        Completion::is_resolved(self)
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn a_blocked_waiter_always_gets_the_value() {
        loom::model(|| {
            let cell = Arc::new(Completion::<u32>::new());
            let resolver = {
                let cell = cell.clone();
                thread::spawn(move || assert!(cell.resolve(Ok(7))))
            };
            let got = cell.wait(None).expect("no deadline");
            assert_eq!(got.expect("resolved with a value"), 7);
            resolver.join().unwrap();
        });
    }

    #[test]
    fn resolve_and_cancel_race_to_exactly_one_outcome() {
        loom::model(|| {
            let cell = Arc::new(Completion::<u32>::new());
            let resolver = {
                let cell = cell.clone();
                thread::spawn(move || cell.resolve(Ok(1)))
            };
            let cancelled = cell.cancel();
            let resolved = resolver.join().unwrap();
            assert!(cancelled != resolved, "exactly one side wins");
            match cell.try_take().expect("resolved") {
                Ok(1) => assert!(resolved),
                Err(Error::Cancelled) => assert!(cancelled),
                other => panic!("unexpected outcome {other:?}"),
            }
            assert!(cell.cancel_requested());
        });
    }

    #[test]
    fn a_callback_runs_exactly_once_whichever_side_comes_first() {
        loom::model(|| {
            let cell = Arc::new(Completion::<u32>::new());
            let calls = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let resolver = {
                let cell = cell.clone();
                thread::spawn(move || cell.resolve(Ok(3)))
            };
            let seen = calls.clone();
            cell.on_resolved(Box::new(move |v| {
                assert_eq!(v.expect("value"), 3);
                seen.fetch_add(1, SeqCst);
            }));
            resolver.join().unwrap();
            assert_eq!(calls.load(SeqCst), 1);
        });
    }

    #[test]
    fn a_cancel_always_reaches_a_task_that_is_going_to_sleep() {
        use std::task::Waker;
        loom::model(|| {
            let cell = Arc::new(Completion::<u32>::new());
            let woken = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let canceller = {
                let cell = cell.clone();
                thread::spawn(move || cell.cancel())
            };
            // The task side: register, then re-check the flag, exactly as `Supervised` does.
            let waker: Waker = futures::task::waker(std::sync::Arc::new(Flag(woken.clone())));
            cell.register_task(&waker);
            let saw_flag = cell.cancel_requested();
            assert!(canceller.join().unwrap());
            assert!(saw_flag || woken.load(SeqCst), "the cancel was lost");
        });
    }

    struct Flag(Arc<loom::sync::atomic::AtomicBool>);
    impl futures::task::ArcWake for Flag {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self.0.store(true, SeqCst);
        }
    }
}
