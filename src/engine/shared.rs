//! The state a process shares with its handles: control requests in, status out.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use parking_lot::{Condvar, Mutex};
use serde_json::Value;
use tokio::sync::Notify;
use uuid::Uuid;

use super::exit_code::ExitCode;
use super::listener::ProcessListener;
use super::outcome::{Outputs, ProcessOutcome, ProcessStatus};
use super::state::ProcessState;

/// How a process ended for whoever waits: its outcome, or why its runtime gave it up.
pub(crate) type Settled = Result<ProcessOutcome, crate::thread::Error>;

/// Requests from handles. Kept as state, not as events, so none is lost: a resume that arrives
/// while the process is paused is still there after `play`.
#[derive(Default)]
pub(crate) struct Control {
    pub(crate) paused: bool,
    /// Boxed: rare, and the control requests are part of every process.
    pub(crate) kill: Option<Box<KillRequest>>,
    pub(crate) resume: Option<Box<Value>>,
    /// The driver of a process that waits only on these requests (a resume, or `play` while
    /// paused), parked here as data instead of as a suspended task; the next change wakes it.
    /// Kept under the same lock as the requests, so parking and waking never miss each other.
    pub(crate) parked: Option<Box<dyn Parked>>,
}

/// A parked driver: [`wake`](Parked::wake) hands it back to its runtime to run again.
pub(crate) trait Parked: Send {
    fn wake(self: Box<Self>);
}

#[derive(Debug, Clone)]
pub(crate) struct KillRequest {
    pub(crate) message: String,
    pub(crate) force: bool,
}

struct Status {
    state: ProcessState,
    paused: bool,
    text: Option<String>,
    /// Waiting for an external resume (not for a timer or a future).
    awaiting_resume: bool,
    /// Set once, when the process ends (boxed: most of a process's life is without it).
    outcome: Option<Box<ProcessOutcome>>,
    /// The children it launched (for waits on them, and for passing a kill on).
    children: Vec<Arc<ProcessShared>>,
    /// Why its driver was dropped before the end: the runtime stopped, or refused it.
    abandoned: Option<crate::thread::Error>,
    /// In the development mode, its handle was dropped unread: a failure is to be reported.
    unread: bool,
}

/// Who a process is: fixed at creation and kept across checkpoints.
pub(crate) struct Identity {
    pub(crate) pid: Uuid,
    pub(crate) ctime: SystemTime,
    pub(crate) type_name: &'static str,
    pub(crate) parent: Option<Uuid>,
    /// Whether it is checkpointed (so an ended parent knows which children's to delete).
    pub(crate) persisted: bool,
    /// Whether it was continued from a checkpoint rather than started here (so it entered
    /// its first state elsewhere, before the checkpoint was taken).
    pub(crate) loaded: bool,
}

impl Identity {
    pub(crate) fn new(type_name: &'static str, parent: Option<Uuid>, persisted: bool) -> Self {
        Identity {
            pid: Uuid::new_v4(),
            ctime: SystemTime::now(),
            type_name,
            parent,
            persisted,
            loaded: false,
        }
    }
}

/// Where a process starts: fresh, or where a checkpoint left it.
pub(crate) struct Restored {
    pub(crate) state: ProcessState,
    pub(crate) paused: bool,
    pub(crate) text: Option<String>,
    pub(crate) awaiting_resume: bool,
    pub(crate) outcome: Option<ProcessOutcome>,
}

impl Restored {
    pub(crate) const FRESH: Restored = Restored {
        state: ProcessState::Created,
        paused: false,
        text: None,
        awaiting_resume: false,
        outcome: None,
    };
}

pub(crate) struct ProcessShared {
    pub(crate) identity: Identity,
    /// Requests from handles; every change wakes `changed`'s waiters. (A plain mutex and one
    /// `Notify` rather than a `watch` channel: a waiting process's memory is mostly this kind
    /// of bookkeeping, and a watch channel costs several hundred bytes.)
    control: Mutex<Control>,
    changed: Notify,
    status: Mutex<Status>,
    /// Signalled when the process ends, for blocking waits on its outcome.
    ended: Condvar,
    /// Signalled when the process changes state or ends, for `wait_for_state`. Not `ended`:
    /// a waiter for the outcome woken at every state change would take the CPU from the
    /// runtime thread for nothing, twice a process (a 4 µs dearer `execute` on one CPU).
    state_changed: Condvar,
    /// Set once the outcome is published: what a blocking waiter spins on before it sleeps.
    published: AtomicBool,
    /// Set once a handle has handed the outcome over (and its checkpoint may go).
    handed_over: AtomicBool,
    listeners: Vec<Arc<dyn ProcessListener>>,
    /// A listener attached after creation by the runner's watcher (the control layer's).
    attached: OnceLock<Arc<dyn ProcessListener>>,
}

impl ProcessShared {
    pub(crate) fn new(
        identity: Identity,
        from: Restored,
        listeners: Vec<Arc<dyn ProcessListener>>,
    ) -> Self {
        let shared = ProcessShared {
            identity,
            control: Mutex::new(Control {
                paused: from.paused,
                ..Control::default()
            }),
            changed: Notify::new(),
            status: Mutex::new(Status {
                state: from.state,
                paused: from.paused,
                text: from.text,
                awaiting_resume: from.awaiting_resume,
                outcome: from.outcome.map(Box::new),
                children: Vec::new(),
                abandoned: None,
                unread: false,
            }),
            ended: Condvar::new(),
            state_changed: Condvar::new(),
            published: AtomicBool::new(false),
            handed_over: AtomicBool::new(false),
            listeners,
            attached: OnceLock::new(),
        };
        let state = from.state;
        shared.notify(|l, pid| l.on_state_changed(pid, None, state));
        shared
    }

    /// Changes the control requests and wakes whoever waits on them.
    pub(crate) fn update_control<T>(&self, change: impl FnOnce(&mut Control) -> T) -> T {
        let (result, parked) = {
            let mut control = self.control.lock();
            let result = change(&mut control);
            (result, control.parked.take())
        };
        self.changed.notify_waiters();
        if let Some(parked) = parked {
            parked.wake();
        }
        result
    }

    /// Parks `driver` unless `stays` no longer holds for the requests (then it is handed
    /// back). Checked and stored under one lock, so a change cannot slip in between.
    pub(crate) fn park<D: Parked + 'static>(
        &self,
        stays: impl FnOnce(&Control) -> bool,
        driver: &mut Option<D>,
    ) -> bool {
        let mut control = self.control.lock();
        if !stays(&control) {
            return false;
        }
        match driver.take() {
            Some(driver) => {
                control.parked = Some(Box::new(driver));
                true
            }
            None => false,
        }
    }

    /// Takes a parked driver out without waking it (to drop it when the runtime stops).
    pub(crate) fn take_parked(&self) -> Option<Box<dyn Parked>> {
        self.control.lock().parked.take()
    }

    /// Reads or changes the control requests without waking anyone (the driver's own use).
    pub(crate) fn with_control<T>(&self, use_: impl FnOnce(&mut Control) -> T) -> T {
        use_(&mut self.control.lock())
    }

    /// Waits until `check` finds what it looks for in the control requests (it may take it).
    pub(crate) async fn until_control<T>(
        &self,
        mut check: impl FnMut(&mut Control) -> Option<T>,
    ) -> T {
        self.wake_when(|| check(&mut self.control.lock())).await
    }

    /// Waits until `check` finds something, re-checking whenever `changed` is notified (on every
    /// control request and when the process ends).
    async fn wake_when<T>(&self, mut check: impl FnMut() -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a change between the check and the await wakes us.
            notified.as_mut().enable();
            if let Some(found) = check() {
                return found;
            }
            notified.await;
        }
    }

    pub(crate) fn paused(&self) -> bool {
        self.status.lock().paused
    }

    pub(crate) fn text(&self) -> Option<String> {
        self.status.lock().text.clone()
    }

    pub(crate) fn children(&self) -> Vec<Arc<ProcessShared>> {
        self.status.lock().children.clone()
    }

    pub(crate) fn child(&self, pid: Uuid) -> Option<Arc<ProcessShared>> {
        let status = self.status.lock();
        status
            .children
            .iter()
            .find(|c| c.identity.pid == pid)
            .cloned()
    }

    pub(crate) fn add_child(&self, child: Arc<ProcessShared>) {
        self.status.lock().children.push(child);
    }

    pub(crate) fn set_children(&self, children: Vec<Arc<ProcessShared>>) {
        self.status.lock().children = children;
    }

    /// How the process ended, once it has.
    pub(crate) fn outcome_now(&self) -> Option<ProcessOutcome> {
        self.status.lock().outcome.as_deref().cloned()
    }

    /// Marks a process whose driver is gone before the end: killed, and its waiters told that
    /// the runtime stopped.
    pub(crate) fn abandon(&self) {
        self.status
            .lock()
            .abandoned
            .get_or_insert(crate::thread::Error::Stopped);
        let message = "the runtime driving the process stopped".to_owned();
        // Ended here, but not for good: not a transition that listeners would announce as a
        // kill, since the last checkpoint stays for a runner elsewhere to continue.
        let was = {
            let mut status = self.status.lock();
            let was = status.state;
            if !was.is_terminal() {
                status.state = ProcessState::Killed;
                status.paused = false;
                status.awaiting_resume = false;
                status.text = Some(message.clone());
            }
            was
        };
        if !was.is_terminal() {
            self.state_changed.notify_all();
            if was == ProcessState::Created {
                self.changed.notify_waiters();
            }
            self.notify(|l, pid| l.on_abandoned(pid));
        }
        self.publish(ProcessOutcome::Killed { message });
    }

    /// Records why a process whose driver its runtime refused never ran (it was abandoned
    /// as the refused driver was dropped).
    pub(crate) fn refused(&self, why: crate::thread::Error) {
        self.status.lock().abandoned = Some(why);
    }

    /// How it ended: `Err(why)` if its driver was abandoned.
    fn settled(status: &Status) -> Option<Settled> {
        let outcome = status.outcome.as_deref()?.clone();
        Some(match &status.abandoned {
            Some(why) => Err(why.clone()),
            None => Ok(outcome),
        })
    }

    /// The outcome if the process has ended (`Err`: abandoned, and why).
    pub(crate) fn try_outcome(&self) -> Option<Settled> {
        Self::settled(&self.status.lock())
    }

    /// True once the outcome is published: what a blocking waiter spins on before it sleeps.
    pub(crate) fn is_published(&self) -> bool {
        self.published.load(Acquire)
    }

    /// Blocks until the process ends or `deadline` passes (`None` then).
    pub(crate) fn wait_outcome(&self, deadline: Option<std::time::Instant>) -> Option<Settled> {
        let mut status = self.status.lock();
        loop {
            if let Some(settled) = Self::settled(&status) {
                return Some(settled);
            }
            match deadline {
                None => self.ended.wait(&mut status),
                Some(deadline) => {
                    if self.ended.wait_until(&mut status, deadline).timed_out() {
                        return Self::settled(&status);
                    }
                }
            }
        }
    }

    /// Waits until the process ends (an abandoned process ended `Killed`).
    pub(crate) async fn outcome(&self) -> ProcessOutcome {
        self.wake_when(|| self.outcome_now()).await
    }

    /// Waits until the process ends; `Err(why)` if its driver was abandoned.
    pub(crate) async fn settled_outcome(&self) -> Settled {
        self.wake_when(|| self.try_outcome()).await
    }

    pub(crate) fn state(&self) -> ProcessState {
        self.status.lock().state
    }

    pub(crate) fn awaiting_resume(&self) -> bool {
        self.status.lock().awaiting_resume
    }

    pub(crate) fn set_awaiting_resume(&self, awaiting: bool) {
        self.status.lock().awaiting_resume = awaiting;
    }

    pub(crate) fn snapshot(&self) -> ProcessStatus {
        let status = self.status.lock();
        ProcessStatus {
            pid: self.identity.pid,
            parent: self.identity.parent,
            ctime: self.identity.ctime,
            process: self.identity.type_name.to_owned(),
            state: status.state,
            paused: status.paused,
            status: status.text.clone(),
            awaiting_resume: status.awaiting_resume,
        }
    }

    /// Moves to `to` if the table allows it; returns whether it did.
    pub(crate) fn transition(&self, to: ProcessState) -> bool {
        let from = {
            let mut status = self.status.lock();
            let from = status.state;
            if from == to && to != ProcessState::Running {
                return true;
            }
            if !from.can_transition_to(to) {
                tracing::error!(pid = %self.identity.pid, %from, %to, "refused a process transition");
                return false;
            }
            status.state = to;
            from
        };
        // With no `wait_for_state` waiting, this is one atomic read.
        self.state_changed.notify_all();
        if from == ProcessState::Created {
            // For `until_started` (once a process: the cost does not matter).
            self.changed.notify_waiters();
        }
        self.notify(|l, pid| l.on_state_changed(pid, Some(from), to));
        true
    }

    /// Blocks until the process is in `state`, has ended, or `deadline` passes; returns the
    /// state it is in then.
    pub(crate) fn wait_for_state(
        &self,
        state: ProcessState,
        deadline: std::time::Instant,
    ) -> ProcessState {
        let mut status = self.status.lock();
        while status.state != state && status.outcome.is_none() {
            if self
                .state_changed
                .wait_until(&mut status, deadline)
                .timed_out()
            {
                break;
            }
        }
        status.state
    }

    pub(crate) fn set_paused(&self, paused: bool, text: Option<String>) {
        {
            let mut status = self.status.lock();
            status.paused = paused;
            if paused {
                status.text = text;
            } else {
                status.text = None;
            }
        }
        // For `until_paused` / `until_played` (pausing is rare: the cost does not matter).
        self.changed.notify_waiters();
        if paused {
            self.notify(|l, pid| l.on_paused(pid));
        } else {
            self.notify(|l, pid| l.on_played(pid));
        }
    }

    /// Waits until the process has left `Created`.
    pub(crate) async fn until_started(&self) {
        self.wake_when(|| (self.state() != ProcessState::Created).then_some(()))
            .await;
    }

    /// Waits until the process is paused (`true`) or not, as `paused` says, or has ended
    /// (`false`).
    pub(crate) async fn until_paused_is(&self, paused: bool) -> bool {
        self.wake_when(|| {
            let status = self.status.lock();
            if status.outcome.is_some() {
                return Some(false);
            }
            (status.paused == paused).then_some(true)
        })
        .await
    }

    pub(crate) fn finish(&self, exit_code: ExitCode, outputs: Outputs) -> ProcessOutcome {
        let text = exit_code.message.clone();
        self.end(ProcessOutcome::Finished { exit_code, outputs }, text)
    }

    /// Ends the process excepted, for a reason that is not a step's.
    pub(crate) fn except(&self, message: String) -> ProcessOutcome {
        self.except_in(None, message)
    }

    /// Ends the process excepted, naming the step that failed when one did.
    pub(crate) fn except_in(&self, step: Option<&str>, message: String) -> ProcessOutcome {
        tracing::debug!(pid = %self.identity.pid, ?step, error = %message, "process excepted");
        self.end(
            ProcessOutcome::Excepted {
                message: message.clone(),
                process: self.identity.type_name.to_owned(),
                step: step.map(str::to_owned),
            },
            Some(message),
        )
    }

    pub(crate) fn kill(&self, message: String) -> ProcessOutcome {
        self.end(
            ProcessOutcome::Killed {
                message: message.clone(),
            },
            Some(message),
        )
    }

    fn end(&self, outcome: ProcessOutcome, text: Option<String>) -> ProcessOutcome {
        {
            let mut status = self.status.lock();
            status.paused = false;
            status.awaiting_resume = false;
            status.text = text;
        }
        self.transition(outcome.state());
        outcome
    }

    /// Makes the outcome of an ended process visible to its waiters. The driver does this last,
    /// after passing a kill on and settling checkpoints, so that whoever sees the outcome also
    /// sees those done.
    pub(crate) fn publish(&self, outcome: ProcessOutcome) {
        {
            let mut status = self.status.lock();
            let unread = status.unread;
            let outcome = status.outcome.get_or_insert_with(|| Box::new(outcome));
            if unread {
                self.report_unread(outcome);
            }
        }
        self.published.store(true, Release);
        self.ended.notify_all();
        self.state_changed.notify_all();
        // The same `Notify` as for control changes: one fewer per process; waiters re-check.
        self.changed.notify_waiters();
    }

    /// Notes that the process's handle was dropped without its outcome being read (development
    /// mode): an exception, now or when the process ends, is reported, as nobody else will see it.
    pub(crate) fn dropped_unread(&self) {
        let mut status = self.status.lock();
        match status.outcome.as_deref() {
            Some(outcome) => self.report_unread(outcome),
            None => status.unread = true,
        }
    }

    fn report_unread(&self, outcome: &ProcessOutcome) {
        if let ProcessOutcome::Excepted { message, step, .. } = outcome {
            let process = format!("process {} {}", self.identity.type_name, self.identity.pid);
            tracing::error!(
                target: "runtime_thread::dev",
                %process,
                step = step.as_deref().unwrap_or(""),
                "unread failure: {process} excepted and its handle was dropped without reading its outcome: {message}"
            );
        }
    }

    /// True the first time it is called for a process whose outcome a persisted checkpoint
    /// keeps for whoever waits (a top-level persisted process): that checkpoint may go now.
    pub(crate) fn hand_over(&self) -> bool {
        self.identity.persisted
            && self.identity.parent.is_none()
            && !self
                .handed_over
                .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    /// Asks a live process to stop gracefully (as [`ProcessController::kill`] does).
    ///
    /// [`ProcessController::kill`]: super::ProcessController::kill
    pub(crate) fn request_kill(&self, message: String) {
        if !self.state().is_terminal() {
            self.update_control(|c| {
                c.kill.get_or_insert(Box::new(KillRequest {
                    message,
                    force: false,
                }));
            });
        }
    }

    pub(crate) fn notify_output(&self, name: &str, value: &Value) {
        self.notify(|l, pid| l.on_output(pid, name, value));
    }

    /// Attaches the runner's watcher's listener, before the process's first step.
    pub(crate) fn attach(&self, listener: Arc<dyn ProcessListener>) {
        let _ = self.attached.set(listener);
    }

    fn notify(&self, event: impl Fn(&dyn ProcessListener, Uuid)) {
        for listener in self.listeners.iter().chain(self.attached.get()) {
            if catch_unwind(AssertUnwindSafe(|| {
                event(listener.as_ref(), self.identity.pid)
            }))
            .is_err()
            {
                tracing::error!(pid = %self.identity.pid, "a process listener panicked; the process carries on");
            }
        }
    }
}
