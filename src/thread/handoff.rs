//! The hand-off between submitting threads and the runtime thread: a lifecycle gate and a doorbell
//! in front of a multi-producer queue.
//!
//! Two races are closed here, both with the same store-then-fence-then-load pattern on each side:
//! - a job pushed while the runtime thread decides to sleep is never left unseen: the submitter
//!   rings if it sees the dispatcher asleep, and the dispatcher re-checks the queue after it says so;
//! - a job pushed while the thread shuts down is never left unresolved: the submitter drains the
//!   queue itself if it sees the gate closed after its push, and the closer drains after closing.

use std::sync::atomic::Ordering::SeqCst;
use std::task::Waker;

use super::error::Error;
use super::sync::{AtomicBool, AtomicU8, Mutex, fence, lock};

/// Never started.
const NEW: u8 = 0;
/// `start()` is setting the thread up.
const STARTING: u8 = 1;
/// Accepting work.
const RUNNING: u8 = 2;
/// A stop was requested: new work is refused; what was accepted may still run.
const STOPPING: u8 = 3;
/// The runtime is gone; whatever is still queued is dropped, which resolves its handle.
const CLOSED: u8 = 4;

/// The queue behind the gate: any multi-producer queue whose `pop` may race with `push`.
pub(crate) trait JobQueue<J> {
    fn push(&self, job: J);
    fn pop(&self) -> Option<J>;
    fn is_empty(&self) -> bool;
}

pub(crate) struct Handoff<Q> {
    queue: Q,
    lifecycle: AtomicU8,
    asleep: AtomicBool,
    dispatcher: Mutex<Option<Waker>>,
}

/// What a stop request found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopRequest {
    /// This request moved a started thread to stopping.
    Initiated,
    /// The thread had never been started; it is now closed for good.
    NeverStarted,
    /// A stop was already under way or done.
    AlreadyStopping,
}

impl<Q> Handoff<Q> {
    pub(crate) fn new(queue: Q) -> Self {
        Handoff {
            queue,
            lifecycle: AtomicU8::new(NEW),
            asleep: AtomicBool::new(false),
            dispatcher: Mutex::new(None),
        }
    }

    /// The error for work submitted now, or `None` when work is accepted.
    pub(crate) fn refusal(&self) -> Option<Error> {
        match self.lifecycle.load(SeqCst) {
            RUNNING => None,
            NEW | STARTING => Some(Error::NotStarted),
            _ => Some(Error::Stopped),
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        self.lifecycle.load(SeqCst) == RUNNING
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lifecycle.load(SeqCst) == CLOSED
    }

    /// NEW -> STARTING; any other state means this thread was started (or stopped) before.
    pub(crate) fn begin_start(&self) -> Result<(), Error> {
        match self
            .lifecycle
            .compare_exchange(NEW, STARTING, SeqCst, SeqCst)
        {
            Ok(_) => Ok(()),
            Err(CLOSED) => Err(Error::Stopped),
            Err(_) => Err(Error::AlreadyStarted),
        }
    }

    /// STARTING -> RUNNING; false if a stop was requested during start-up.
    pub(crate) fn mark_running(&self) -> bool {
        self.lifecycle
            .compare_exchange(STARTING, RUNNING, SeqCst, SeqCst)
            .is_ok()
    }

    pub(crate) fn request_stop(&self) -> StopRequest {
        let mut current = self.lifecycle.load(SeqCst);
        loop {
            let (next, outcome) = match current {
                NEW => (CLOSED, StopRequest::NeverStarted),
                STARTING | RUNNING => (STOPPING, StopRequest::Initiated),
                _ => return StopRequest::AlreadyStopping,
            };
            match self
                .lifecycle
                .compare_exchange(current, next, SeqCst, SeqCst)
            {
                Ok(_) => return outcome,
                Err(actual) => current = actual,
            }
        }
    }
}

impl<Q> Handoff<Q> {
    /// Pushes an accepted job and makes sure someone will see it. Returns how many queued jobs this
    /// call had to drop because the runtime closed under it (each drop resolves a handle).
    pub(crate) fn push<J>(&self, job: J) -> usize
    where
        Q: JobQueue<J>,
    {
        self.queue.push(job);
        fence(SeqCst);
        if self.lifecycle.load(SeqCst) == CLOSED {
            return self.drain();
        }
        self.ring();
        0
    }

    fn ring(&self) {
        if self.asleep.load(SeqCst) && self.asleep.swap(false, SeqCst) {
            let waker = lock(&self.dispatcher).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    pub(crate) fn pop<J>(&self) -> Option<J>
    where
        Q: JobQueue<J>,
    {
        self.queue.pop()
    }

    /// Called by the dispatcher when it has nothing to do. Returns true when it may sleep: its waker
    /// is stored and every later push will ring it. False means work arrived meanwhile.
    pub(crate) fn prepare_sleep<J>(&self, waker: &Waker) -> bool
    where
        Q: JobQueue<J>,
    {
        {
            let mut stored = lock(&self.dispatcher);
            match &*stored {
                Some(current) if current.will_wake(waker) => {}
                _ => *stored = Some(waker.clone()),
            }
        }
        self.asleep.store(true, SeqCst);
        fence(SeqCst);
        if self.queue.is_empty() {
            return true;
        }
        self.asleep.store(false, SeqCst);
        false
    }

    /// Closes the gate for good and drops whatever is queued; returns how many jobs were dropped.
    pub(crate) fn close<J>(&self) -> usize
    where
        Q: JobQueue<J>,
    {
        self.lifecycle.store(CLOSED, SeqCst);
        fence(SeqCst);
        self.drain()
    }

    fn drain<J>(&self) -> usize
    where
        Q: JobQueue<J>,
    {
        let mut dropped = 0;
        while let Some(job) = self.queue.pop() {
            drop(job);
            dropped += 1;
        }
        dropped
    }
}

/// The production queue: an unbounded crossbeam channel (both ends kept, so it never disconnects).
pub(crate) struct ChannelQueue<J> {
    tx: crossbeam_channel::Sender<J>,
    rx: crossbeam_channel::Receiver<J>,
}

impl<J> ChannelQueue<J> {
    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        ChannelQueue { tx, rx }
    }
}

impl<J> JobQueue<J> for ChannelQueue<J> {
    fn push(&self, job: J) {
        // Cannot fail: this struct owns the receiver, so the channel never disconnects.
        let _ = self.tx.send(job);
    }
    fn pop(&self) -> Option<J> {
        self.rx.try_recv().ok()
    }
    fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::{AtomicBool as LoomBool, AtomicUsize};
    use std::collections::VecDeque;

    struct LoomQueue(loom::sync::Mutex<VecDeque<Job>>);
    impl JobQueue<Job> for LoomQueue {
        fn push(&self, job: Job) {
            self.0.lock().unwrap().push_back(job);
        }
        fn pop(&self) -> Option<Job> {
            self.0.lock().unwrap().pop_front()
        }
        fn is_empty(&self) -> bool {
            self.0.lock().unwrap().is_empty()
        }
    }

    /// A job that counts how it ended: run, or dropped unrun (which resolves its handle).
    struct Job(Arc<AtomicUsize>, Arc<AtomicUsize>, bool);
    impl Job {
        fn run(mut self) {
            self.0.fetch_add(1, SeqCst);
            self.2 = true;
        }
    }
    impl Drop for Job {
        fn drop(&mut self) {
            if !self.2 {
                self.1.fetch_add(1, SeqCst);
            }
        }
    }

    struct Flag(Arc<LoomBool>);
    impl futures::task::ArcWake for Flag {
        fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
            arc_self.0.store(true, SeqCst);
        }
    }

    fn new_handoff() -> Arc<Handoff<LoomQueue>> {
        let handoff = Handoff::new(LoomQueue(loom::sync::Mutex::new(VecDeque::new())));
        handoff.begin_start().unwrap();
        assert!(handoff.mark_running());
        Arc::new(handoff)
    }

    #[test]
    fn a_push_during_sleep_preparation_is_never_missed() {
        loom::model(|| {
            let handoff = new_handoff();
            let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let woken = Arc::new(LoomBool::new(false));
            let submitter = {
                let (handoff, ran, dropped) = (handoff.clone(), ran.clone(), dropped.clone());
                loom::thread::spawn(move || handoff.push(Job(ran, dropped, false)))
            };
            let waker = futures::task::waker(std::sync::Arc::new(Flag(woken.clone())));
            let may_sleep = handoff.prepare_sleep::<Job>(&waker);
            submitter.join().unwrap();
            if may_sleep {
                // Asleep with an empty queue at that moment: the push must have rung us, or come
                // before we looked (then we would not have been allowed to sleep).
                assert!(woken.load(SeqCst), "dispatcher sleeps while a job waits");
            }
            let job: Job = handoff.pop().expect("the job is still queued");
            job.run();
        });
    }

    #[test]
    fn a_push_racing_with_close_is_run_or_dropped_never_stranded() {
        loom::model(|| {
            let handoff = new_handoff();
            let (ran, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
            let submitter = {
                let (handoff, ran, dropped) = (handoff.clone(), ran.clone(), dropped.clone());
                loom::thread::spawn(move || {
                    if handoff.refusal().is_none() {
                        handoff.push(Job(ran, dropped, false));
                    }
                })
            };
            assert_eq!(handoff.request_stop(), StopRequest::Initiated);
            if let Some(job) = handoff.pop::<Job>() {
                job.run();
            }
            handoff.close::<Job>();
            submitter.join().unwrap();
            assert!(
                handoff.queue.is_empty(),
                "a job was stranded in a closed queue"
            );
            assert!(ran.load(SeqCst) + dropped.load(SeqCst) <= 1);
        });
    }
}
