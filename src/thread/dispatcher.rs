//! The task on the runtime that takes submitted jobs off the injection queue.
//!
//! On a current-thread runtime each job is polled once inline, in the dispatcher's own poll: a
//! future that is ready on its first poll (the common case for short requests) never becomes a
//! tokio task at all. Only a future that returns `Pending` is spawned. On a multi-thread runtime
//! every job is spawned: there a task may block in `TaskHandle::wait` (through `block_in_place`),
//! and if that task were the dispatcher itself, nothing would drain the queue it waits on.
//!
//! After the last job the dispatcher keeps yielding to the scheduler for the idle spin, so that
//! a caller issuing requests back to back finds it awake and skips the driver wake-up; after
//! that it sleeps on the doorbell and the thread goes idle. It does not spin while the last
//! submitter shares its CPU (see [`Spin`](super::spin::Spin)): that caller could not run
//! until the spin ended.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::config::Flavor;
use super::shared::Shared;
use super::task::Job;

/// Jobs taken per poll before yielding, so other tasks and the IO driver get their turn.
const BATCH: usize = 64;

/// Empty polls between two reads of the clock and of this thread's CPU while spinning: a busy
/// runtime polls the dispatcher between its other tasks, and reading the clock each time cost
/// more than the poll.
const POLLS_PER_LOOK: u32 = 32;

pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    /// When the clock was first read after the last job; `None` while it has not been yet.
    idle_since: Option<Instant>,
    /// Empty polls since the last job.
    idle_polls: u32,
    poll_inline: bool,
    /// The CPU this thread was on when it last looked.
    cpu: u32,
    /// The idle spin, copied here: the dispatcher reads it on every empty poll.
    idle_spin: Duration,
}

impl Dispatcher {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let poll_inline = shared.config.flavor == Flavor::CurrentThread;
        // No work yet, so nothing to stay hot for: start out of the idle spin.
        let now = Instant::now();
        let idle_spin = shared.spin.idle();
        let idle_since = Some(now.checked_sub(idle_spin).unwrap_or(now));
        Dispatcher {
            shared,
            idle_since,
            idle_polls: 0,
            poll_inline,
            cpu: super::spin::current_cpu(),
            idle_spin,
        }
    }

    /// Whether to keep yielding after an empty poll rather than sleep on the doorbell. The
    /// spin is counted from the first clock read after the last job, so it can run up to
    /// `POLLS_PER_LOOK` polls longer than configured.
    fn still_spinning(&mut self) -> bool {
        let spin = self.idle_spin;
        if spin.is_zero() || self.shared.spin.submitter_shares(self.cpu) {
            return false;
        }
        self.idle_polls = self.idle_polls.wrapping_add(1);
        if self.idle_since.is_some() && !self.idle_polls.is_multiple_of(POLLS_PER_LOOK) {
            return true;
        }
        // The scheduler may have moved this thread meanwhile.
        self.cpu = super::spin::current_cpu();
        let now = Instant::now();
        now.duration_since(*self.idle_since.get_or_insert(now)) < spin
    }

    /// Takes every queued job now, so that work accepted before a stop is tracked and gets the
    /// grace period rather than being discarded.
    pub(crate) fn flush(&self) {
        while let Some(job) = self.shared.handoff.pop() {
            self.run_inline(job);
        }
    }

    /// Runs up to one batch; returns how many jobs were taken.
    fn run_batch(&self) -> usize {
        let mut taken = 0;
        while taken < BATCH {
            let Some(job) = self.shared.handoff.pop() else {
                break;
            };
            self.run_inline(job);
            taken += 1;
        }
        taken
    }

    fn run_inline(&self, mut job: Job) {
        if self.poll_inline {
            // A no-op waker is enough: a job that is not ready is spawned right away, and its
            // first poll as a task registers the task's real waker.
            let mut cx = Context::from_waker(Waker::noop());
            if job.as_mut().poll(&mut cx).is_ready() {
                self.shared.counters.add_completed(1);
                return;
            }
        }
        self.shared.tracker.spawn(Spawned {
            job: Some(job),
            shared: self.shared.clone(),
        });
    }
}

impl Future for Dispatcher {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let taken = self.run_batch();
            if taken > 0 {
                self.cpu = self.shared.spin.record_runtime();
                self.idle_since = None;
                self.idle_polls = 0;
            }
            if taken == BATCH || self.still_spinning() {
                // Yield rather than sleep: the scheduler runs other tasks and polls the driver,
                // then comes straight back here.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if self.shared.handoff.prepare_sleep::<Job>(cx.waker()) {
                return Poll::Pending;
            }
        }
    }
}

/// A job that needed more than one poll, now running as a tracked tokio task.
struct Spawned {
    job: Option<Job>,
    shared: Arc<Shared>,
}

impl Future for Spawned {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(job) = self.job.as_mut() else {
            return Poll::Ready(());
        };
        match job.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.job = None;
                self.shared.counters.add_completed(1);
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(job) = self.job.take() {
            // Dropped unfinished: the runtime is shutting down. Dropping the job resolves its
            // handle with `Stopped`.
            drop(job);
            self.shared.counters.add_completed(1);
            self.shared.counters.aborted.fetch_add(1, Relaxed);
        }
    }
}
