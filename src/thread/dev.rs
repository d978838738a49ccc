//! The development mode (Python's `-X dev` for asyncio): slow polls named, a stall watchdog, and
//! failures that nobody read. Off by default and then free: nothing is timed or wrapped, and no
//! thread runs.
//!
//! Every future that enters through the crate while the mode is on runs inside [`Timed`], which
//! notes in its thread's [`Slot`] what it is and when its poll began, and warns when the poll
//! held the thread longer than the slow-poll threshold. Code inside a poll can say more precisely
//! what it is doing ([`describe`]: the engine names the process and its step). The watchdog
//! thread reads the slots to report a poll that is still running past the stall threshold, while
//! it runs.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use pin_project_lite::pin_project;

/// The environment variable that switches the development mode on (any value but empty or `0`),
/// as `PYTHONDEVMODE` does for Python.
pub const DEV_MODE_VARIABLE: &str = "RUNTIME_THREAD_DEV_MODE";

/// How many of the slowest polls and of the stalls a stop report keeps.
const KEPT: usize = 8;

/// The development mode's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DevConfig {
    pub(crate) on: bool,
    pub(crate) slow_poll: Duration,
    pub(crate) stall: Duration,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            on: dev_mode_from_env(),
            // asyncio's `slow_callback_duration`.
            slow_poll: Duration::from_millis(100),
            // Longer than a slow poll, so that a poll just over the slow-poll threshold gives
            // one warning, not two; a real stall is reported a few hundred ms in.
            stall: Duration::from_millis(250),
        }
    }
}

fn dev_mode_from_env() -> bool {
    std::env::var_os(DEV_MODE_VARIABLE).is_some_and(|value| !value.is_empty() && value != "0")
}

/// What a piece of work is called in the development mode's reports.
#[derive(Debug, Clone)]
pub(crate) enum WorkName {
    /// Submitted without a name: where it was submitted.
    Caller(&'static Location<'static>),
    /// A name given at submission, or built by the layer that runs it.
    Named(Arc<str>),
}

impl fmt::Display for WorkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkName::Caller(location) => write!(f, "the future submitted at {location}"),
            WorkName::Named(name) => f.write_str(name),
        }
    }
}

/// A poll that held its thread longer than the slow-poll threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlowPoll {
    /// The work: its name, where it was submitted, or what it said it was doing (a process's
    /// type, pid and step; a message handler).
    pub work: String,
    /// How long the poll held the thread.
    pub held: Duration,
}

/// A poll that the watchdog saw still running past the stall threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stall {
    /// The work, as in [`SlowPoll::work`].
    pub work: String,
    /// How long the poll had been running when the watchdog reported it.
    pub running_for: Duration,
}

/// What the development mode saw, in the [`StopReport`](crate::StopReport).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevReport {
    /// How many polls were slow.
    pub slow_polls: u64,
    /// The slowest of them, slowest first.
    pub slowest: Vec<SlowPoll>,
    /// The first stalls the watchdog reported.
    pub stalls: Vec<Stall>,
}

/// A runtime thread's development mode: its settings, the slots of the threads that poll its
/// work, what it saw, and its watchdog.
pub(crate) struct Dev {
    config: DevConfig,
    /// The runtime thread's name, in every report.
    thread: Arc<str>,
    slots: Mutex<Vec<Arc<Slot>>>,
    seen: Mutex<DevReport>,
    watchdog: Mutex<Option<JoinHandle<()>>>,
    stopping: Mutex<bool>,
    stop: Condvar,
}

/// What one thread is polling now.
#[derive(Default)]
struct Slot(Mutex<Current>);

#[derive(Default)]
struct Current {
    /// When the poll began, on the [`coarse_now`] clock; `None` between polls.
    since: Option<Duration>,
    name: Option<WorkName>,
    /// What the work said it is doing, more precisely than its name.
    detail: Option<Arc<str>>,
    /// The watchdog has reported this poll.
    reported: bool,
}

impl Current {
    fn work(&self) -> String {
        match (&self.detail, &self.name) {
            (Some(detail), _) => detail.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "unnamed work".to_owned(),
        }
    }
}

thread_local! {
    /// The development mode of the runtime this thread polls for, and this thread's slot.
    static THREAD: RefCell<Option<(Arc<Dev>, Arc<Slot>)>> = const { RefCell::new(None) };
}

impl Dev {
    /// The development mode for a thread configured with `config`, or `None` when it is off.
    pub(crate) fn new(config: DevConfig, thread: &str) -> Option<Arc<Dev>> {
        config.on.then(|| {
            Arc::new(Dev {
                config,
                thread: thread.into(),
                slots: Mutex::new(Vec::new()),
                seen: Mutex::new(DevReport::default()),
                watchdog: Mutex::new(None),
                stopping: Mutex::new(false),
                stop: Condvar::new(),
            })
        })
    }

    /// Makes the calling thread one that polls this runtime's work (the runtime thread, a
    /// worker), so that its polls are watched.
    pub(crate) fn join_thread(self: &Arc<Self>) {
        let slot = Arc::new(Slot::default());
        self.slots.lock().push(slot.clone());
        THREAD.with(|thread| *thread.borrow_mut() = Some((self.clone(), slot)));
    }

    /// Forgets the calling thread's slot, as the thread ends.
    pub(crate) fn leave_thread() {
        if let Some((dev, slot)) = THREAD.with(|thread| thread.borrow_mut().take()) {
            dev.slots.lock().retain(|kept| !Arc::ptr_eq(kept, &slot));
        }
    }

    /// Starts the watchdog thread (once).
    pub(crate) fn start_watchdog(self: &Arc<Self>) -> std::io::Result<()> {
        let dev = self.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{}-watchdog", self.thread))
            .spawn(move || dev.watch())?;
        *self.watchdog.lock() = Some(handle);
        Ok(())
    }

    /// Stops the watchdog and returns what the mode saw.
    pub(crate) fn finish(&self) -> DevReport {
        *self.stopping.lock() = true;
        self.stop.notify_all();
        if let Some(watchdog) = self.watchdog.lock().take() {
            let _ = watchdog.join();
        }
        self.seen.lock().clone()
    }

    /// The watchdog's loop. A stall is the absence of an event (the poll does not return), so
    /// the watchdog has to look at the clock: it wakes four times per stall threshold, which
    /// bounds how late a stall is reported to a quarter of the threshold.
    fn watch(&self) {
        let tick = self.config.stall / 4;
        let mut stopping = self.stopping.lock();
        while !*stopping {
            self.stop.wait_for(&mut stopping, tick);
            if *stopping {
                break;
            }
            self.report_stalls();
        }
    }

    fn report_stalls(&self) {
        let slots = self.slots.lock().clone();
        for slot in slots {
            let mut current = slot.0.lock();
            let Some(since) = current.since else { continue };
            let running_for = coarse_now().saturating_sub(since);
            if current.reported || running_for < self.config.stall {
                continue;
            }
            current.reported = true;
            let work = current.work();
            drop(current);
            tracing::warn!(
                target: "runtime_thread::dev",
                thread = %self.thread,
                %work,
                running_for_ms = running_for.as_millis() as u64,
                "stall: a poll has held the runtime thread for {} ms and is still running: {work}",
                running_for.as_millis()
            );
            let mut seen = self.seen.lock();
            if seen.stalls.len() < KEPT {
                seen.stalls.push(Stall { work, running_for });
            }
        }
    }

    fn record_slow_poll(&self, work: String, held: Duration) {
        tracing::warn!(
            target: "runtime_thread::dev",
            thread = %self.thread,
            %work,
            held_ms = held.as_millis() as u64,
            "slow poll: {work} held the runtime thread for {} ms (threshold {} ms)",
            held.as_millis(),
            self.config.slow_poll.as_millis()
        );
        let mut seen = self.seen.lock();
        seen.slow_polls += 1;
        let at = seen.slowest.partition_point(|slow| slow.held >= held);
        if at < KEPT {
            seen.slowest.insert(at, SlowPoll { work, held });
            seen.slowest.truncate(KEPT);
        }
    }
}

impl fmt::Debug for Dev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dev")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether this thread polls for a runtime in the development mode.
fn watching_this_thread() -> bool {
    THREAD.with(|thread| thread.borrow().is_some())
}

/// Tells the development mode what the current poll is doing, more precisely than the name its
/// work was submitted with (the engine names a process and its step). Does nothing outside a
/// watched poll; `detail` is only called inside one.
pub(crate) fn describe(detail: impl FnOnce() -> Arc<str>) {
    THREAD.with(|thread| {
        if let Some((_, slot)) = thread.borrow().as_ref() {
            let mut current = slot.0.lock();
            if current.since.is_some() {
                current.detail = Some(detail());
            }
        }
    });
}

pin_project! {
    /// A future whose polls are timed and watched, on a thread of a runtime in the development
    /// mode (elsewhere it is polled as it is).
    pub(crate) struct Timed<F> {
        #[pin]
        inner: F,
        name: WorkName,
    }
}

impl<F> Timed<F> {
    pub(crate) fn new(inner: F, name: WorkName) -> Self {
        Timed { inner, name }
    }
}

impl<F: Future> Future for Timed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // The thread's own record is borrowed, not cloned: no reference count is touched (and
        // so no cache line shared with the submitting thread), which keeps the mode cheap.
        THREAD.with(|thread| match thread.borrow().as_ref() {
            Some((dev, slot)) => {
                let watch = PollWatch::begin(dev, slot, this.name);
                let poll = this.inner.poll(cx);
                watch.end();
                poll
            }
            None => this.inner.poll(cx),
        })
    }
}

/// The time on a clock that is cheap to read (a few ns, against some 25 ns for `Instant`) and
/// coarse (a few ms), which is precise enough for thresholds of tens of milliseconds.
#[cfg(target_os = "linux")]
fn coarse_now() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to; CLOCK_MONOTONIC_COARSE always exists on
    // Linux, so the call cannot fail (and a zero time would only under-report).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(not(target_os = "linux"))]
fn coarse_now() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

/// One watched poll. Inside another watched poll (a handler polled inline by its caller) it
/// only names what runs, and the outer poll, which holds the thread all the same, reports it.
struct PollWatch<'a> {
    dev: &'a Dev,
    slot: &'a Slot,
    started: Duration,
    /// For a nested poll: what the outer poll said it was doing before.
    outer_detail: Option<Option<Arc<str>>>,
}

impl<'a> PollWatch<'a> {
    fn begin(dev: &'a Dev, slot: &'a Slot, name: &WorkName) -> Self {
        let started = coarse_now();
        let mut current = slot.0.lock();
        let mut outer_detail = None;
        if current.since.is_some() {
            let detail = Some(Arc::from(name.to_string()));
            outer_detail = Some(std::mem::replace(&mut current.detail, detail));
        } else {
            current.since = Some(started);
            current.name = Some(name.clone());
            current.detail = None;
            current.reported = false;
        }
        PollWatch {
            dev,
            slot,
            started,
            outer_detail,
        }
    }

    fn end(self) {
        let held = coarse_now().saturating_sub(self.started);
        let slow = held >= self.dev.config.slow_poll;
        let mut current = self.slot.0.lock();
        match self.outer_detail {
            // A slow nested poll stays named, so that the outer poll's report names it.
            Some(outer) if !slow => current.detail = outer,
            Some(_) => {}
            None if !slow => current.since = None,
            None => {
                let ended = std::mem::take(&mut *current);
                drop(current);
                self.dev.record_slow_poll(ended.work(), held);
            }
        }
    }
}

pin_project! {
    /// A future that says what it is doing at each of its polls (see [`describe`]).
    pub(crate) struct Described<F> {
        #[pin]
        inner: F,
        what: Arc<str>,
    }
}

impl<F> Described<F> {
    pub(crate) fn new(inner: F, what: Arc<str>) -> Self {
        Described { inner, what }
    }
}

impl<F: Future> Future for Described<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        describe(|| this.what.clone());
        this.inner.poll(cx)
    }
}

/// Wraps `future` so that its polls are watched, when the runtime this thread polls for is in
/// the development mode; otherwise hands it back untouched. For work that enters the runtime
/// from a task of its own (message handlers), which knows its runtime only through the thread.
pub(crate) fn watched<F>(future: F, name: impl FnOnce() -> String) -> MaybeTimed<F> {
    if watching_this_thread() {
        MaybeTimed::Timed {
            inner: Timed::new(future, WorkName::Named(name().into())),
        }
    } else {
        MaybeTimed::Plain { inner: future }
    }
}

pin_project! {
    /// A future that is watched in the development mode, and plain otherwise.
    #[project = MaybeTimedProjection]
    pub(crate) enum MaybeTimed<F> {
        /// Watched.
        Timed { #[pin] inner: Timed<F> },
        /// Not watched.
        Plain { #[pin] inner: F },
    }
}

impl<F: Future> Future for MaybeTimed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            MaybeTimedProjection::Timed { inner } => inner.poll(cx),
            MaybeTimedProjection::Plain { inner } => inner.poll(cx),
        }
    }
}
