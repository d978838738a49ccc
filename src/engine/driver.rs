//! The loop that drives one process through its states.
//!
//! Between steps it honours a kill (at once) and a pause (it parks until played or killed).
//! During a step, pause and kill wait for the step to return (a graceful kill then discards the
//! step's command); a force-kill drops the step at once. In `Waiting`, pause and kill interrupt
//! the wait at once; a paused wait stays armed and continues after `play`.
//!
//! A process with nothing to do until its control requests change (it waits for a resume, or
//! is paused) parks its driver as data in its shared state and ends its task; the next request
//! wakes it onto the runtime again. Parked drivers are dropped when the runtime shuts down, so
//! their processes end abandoned like any other.
//!
//! A persisted process is saved on entering `Running` (before the step, so a crash re-runs it),
//! on entering `Waiting` (with what it waits on, as data), when it parks paused or is played,
//! and when it ends, with its outcome (kept until the parent, or whoever waits for a top-level
//! process, has it; the checkpoints of its ended children are deleted then).

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::future::{BoxFuture, Either};
use serde_json::Value;

use super::checkpoint::{
    CHECKPOINT_VERSION, CheckpointRef, ChildRef, Position, Resumed, SavedWait,
};
use super::error::PersistError;
use super::exit_code::ExitCode;
use super::outcome::{Outputs, ProcessOutcome};
use super::persist::Persister;
use super::process::{Command, Process, StepContext, StepName, WaitOn};
use super::shared::{Control, Parked, ProcessShared};
use super::state::ProcessState;
use crate::thread::{Described, panic_message};

/// How to save a process of type `P`, for a persisted one.
pub(crate) struct Saver<P> {
    pub(crate) store: Arc<dyn Persister>,
    pub(crate) encode: fn(&CheckpointRef<'_, P>) -> Result<Vec<u8>, serde_json::Error>,
    /// The store already holds the checkpoint the next `Running` entry would write (the one
    /// saved at submission, or the one loaded), so that entry skips its save.
    pub(crate) current: bool,
}

/// Where the driver starts: a fresh process at its first step, a reloaded one where it was.
pub(crate) enum Start {
    Step(String),
    Wait(String, SavedWait),
}

enum Next {
    Step(StepName),
    Wait(StepName, Armed),
}

enum Gate {
    Open,
    Parked,
    /// The runner is closing: the process stops here, where its last checkpoint is.
    Closed,
}

/// A wait in progress; it survives pauses.
enum Armed {
    Resume,
    Timer {
        /// Made on the first wait, inside the runtime (a reload re-arms outside it).
        sleep: Option<Pin<Box<tokio::time::Sleep>>>,
        left: Duration,
        deadline: SystemTime,
    },
    Future {
        future: BoxFuture<'static, Result<Value, String>>,
        rerun: String,
    },
    Children(Vec<(ChildRef, Arc<ProcessShared>)>),
}

impl Armed {
    fn arm(on: WaitOn, step: &str, ctx: &StepContext) -> Result<Self, String> {
        Ok(match on {
            WaitOn::Resume => Self::arm_resume(ctx.shared(), None),
            WaitOn::Timer(delay) => Armed::Timer {
                sleep: None,
                left: delay,
                deadline: SystemTime::now() + delay,
            },
            WaitOn::Future(future) => Armed::Future {
                future,
                rerun: step.to_owned(),
            },
            WaitOn::Children(children) => Self::arm_children(children, ctx)?,
        })
    }

    /// Re-arms a wait read from a checkpoint (a future's wait is not one: its step re-runs).
    fn rearm(saved: SavedWait, ctx: &StepContext) -> Result<Self, String> {
        Ok(match saved {
            SavedWait::Resume { value } => {
                // A resume sent between the load and now must not be overwritten.
                if value.is_some() {
                    ctx.shared()
                        .update_control(|c| c.resume = value.map(Box::new));
                }
                ctx.shared().set_awaiting_resume(true);
                Armed::Resume
            }
            SavedWait::Timer { deadline } => {
                let left = deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                Armed::Timer {
                    sleep: None,
                    left,
                    deadline,
                }
            }
            SavedWait::Children { children } => Self::arm_children(children, ctx)?,
            SavedWait::Future { rerun } => {
                return Err(format!(
                    "a wait on a future (step {rerun}) cannot be re-armed"
                ));
            }
        })
    }

    fn arm_resume(shared: &ProcessShared, value: Option<Value>) -> Self {
        // A value left over from an earlier wait must not end this one.
        shared.update_control(|c| c.resume = value.map(Box::new));
        shared.set_awaiting_resume(true);
        Armed::Resume
    }

    fn arm_children(children: Vec<ChildRef>, ctx: &StepContext) -> Result<Self, String> {
        let mut armed = Vec::with_capacity(children.len());
        for child in children {
            let Some(shared) = ctx.shared().child(child.pid) else {
                return Err(format!(
                    "the child '{}' ({}) cannot be found: a process can only wait for children \
                     it launched, and after a reload only for children launched with \
                     launch_persisted whose checkpoints are in the store",
                    child.key, child.pid
                ));
            };
            armed.push((child, shared));
        }
        Ok(Armed::Children(armed))
    }

    async fn ready(&mut self, shared: &ProcessShared) -> Result<Resumed, String> {
        Ok(Resumed::Value(match self {
            Armed::Resume => *shared.until_control(|c| c.resume.take()).await,
            Armed::Timer { sleep, left, .. } => {
                sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(*left)))
                    .as_mut()
                    .await;
                Value::Null
            }
            Armed::Future { future, .. } => future.as_mut().await?,
            Armed::Children(children) => {
                let mut outcomes = BTreeMap::new();
                for (child, shared) in children.iter() {
                    outcomes.insert(child.key.clone(), shared.outcome().await);
                }
                return Ok(Resumed::Children(outcomes));
            }
        }))
    }

    fn saved(&self, shared: &ProcessShared) -> SavedWait {
        match self {
            Armed::Resume => SavedWait::Resume {
                value: shared.with_control(|c| c.resume.as_deref().cloned()),
            },
            Armed::Timer { deadline, .. } => SavedWait::Timer {
                deadline: *deadline,
            },
            Armed::Future { rerun, .. } => SavedWait::Future {
                rerun: rerun.clone(),
            },
            Armed::Children(children) => SavedWait::Children {
                children: children.iter().map(|(child, _)| child.clone()).collect(),
            },
        }
    }
}

/// The future that drives a process to its end. Built outside an `async fn` so that its
/// arguments are not kept beside the driver that owns them: a waiting process's memory is
/// mostly the size of this future, so the driver is one flat loop over a small state.
pub(crate) fn drive<P: Process>(
    process: P,
    ctx: StepContext,
    start: Start,
    saver: Option<Saver<P>>,
) -> impl Future<Output = ()> + Send {
    let first = match start {
        Start::Step(step) | Start::Wait(_, SavedWait::Future { rerun: step }) => {
            Ok(Next::Step(step.into()))
        }
        Start::Wait(then, saved) => {
            Armed::rearm(saved, &ctx).map(|armed| Next::Wait(then.into(), armed))
        }
    };
    let shared = ctx.shared().clone();
    // Counted from here: the driver's `Drop` uncounts it, whatever becomes of it.
    ctx.runner().driver_started();
    let (next, failed) = match first {
        Ok(next) => (next, None),
        Err(error) => (Next::Step(StepName::Borrowed("")), Some(error)),
    };
    let driver = Driver {
        shared,
        process,
        ctx,
        saver,
        next,
    };
    drive_loop(Some(driver), failed)
}

/// Runs a driver until its process ends or it parks. An `async` block, not an `async fn` taking
/// the driver: a block uses what it captured in place, where a function's future would hold its
/// argument twice (before and after the first poll).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its argument twice in every waiting process"
)]
fn drive_loop<P: Process>(
    mut slot: Option<Driver<P>>,
    failed: Option<String>,
) -> impl Future<Output = ()> + Send {
    async move {
        if let (Some(error), Some(driver)) = (failed, slot.as_mut()) {
            let outcome = driver.shared.except(error);
            driver.after_end(&outcome);
            driver.shared.publish(outcome);
            return;
        }
        loop {
            let Some(driver) = slot.as_mut() else {
                return;
            };
            let idle = match driver.run().await {
                Ran::Ended(outcome) => {
                    driver.after_end(&outcome);
                    driver.shared.publish(outcome);
                    return;
                }
                // Dropped on return: the process is abandoned where its checkpoint is.
                Ran::Closed => return,
                Ran::Idle(idle) => idle,
            };
            // Waiting only on control requests: park the driver as data, and end this task.
            let (shared, runner) = (driver.shared.clone(), driver.ctx.runner().clone());
            if runner.parked().park(&shared, |c| idle.stays(c), &mut slot) {
                return;
            }
            // Not parked: the requests changed meanwhile (then this returns at once), the
            // runner is closing (then the gate stops it), or the runtime is stopping (then the
            // process waits here, as a task the stop will drop).
            tokio::select! {
                biased;
                () = runner.closing() => {}
                () = shared.until_control(|c| (!idle.stays(c)).then_some(())) => {}
            }
        }
    }
}

/// What a driver's run came to.
enum Ran {
    Ended(ProcessOutcome),
    /// The runner is closing; the process stops where it is.
    Closed,
    /// Nothing to do until the control requests change.
    Idle(Idle),
}

/// Why a driver stops before its process's next step.
enum Halt {
    /// The process ended.
    Ended(ProcessOutcome),
    /// The process stops where its last checkpoint is, without an outcome (abandoned), as on
    /// a close: its store cannot be reached for now.
    Stopped,
}

impl From<ProcessOutcome> for Halt {
    fn from(outcome: ProcessOutcome) -> Self {
        Halt::Ended(outcome)
    }
}

/// What an idle process waits for.
#[derive(Clone, Copy)]
enum Idle {
    /// `play` (or a kill), while paused.
    Play,
    /// A resume (or a pause or a kill), while waiting for one.
    Resume,
}

impl Idle {
    /// Whether the process still has nothing to do with these requests.
    fn stays(self, c: &Control) -> bool {
        match self {
            Idle::Play => c.paused && c.kill.is_none(),
            Idle::Resume => !(c.paused || c.kill.is_some() || c.resume.is_some()),
        }
    }
}

/// A parked driver wakes by going back onto its runtime; refused there (the runtime stopped),
/// it is dropped, which marks its process abandoned.
impl<P: Process> Parked for Driver<P> {
    fn wake(self: Box<Self>) {
        let runner = self.ctx.runner().clone();
        runner.parked().unpark(self.shared.identity.pid);
        let identity = &self.shared.identity;
        let name = format!("process {} {}", identity.type_name, identity.pid);
        let _refused = runner
            .spawner()
            .spawn_job(drive_loop(Some(*self), None), || name);
    }
}

/// A driver dropped before the end (its runtime stopped, or refused it) marks the process
/// killed and abandoned. Nothing is saved then: the last checkpoint stays as it was, as after
/// a crash.
impl<P> Drop for Driver<P> {
    fn drop(&mut self) {
        // Also covers a driver that failed between ending and publishing (a panicking store).
        if self.shared.try_outcome().is_none() {
            self.shared.abandon();
            // Stopped here: another program may continue it now.
            if let Some(saver) = &self.saver {
                saver.store.release(self.shared.identity.pid);
            }
        }
        self.ctx.runner().driver_ended();
    }
}

struct Driver<P> {
    shared: Arc<ProcessShared>,
    process: P,
    ctx: StepContext,
    saver: Option<Saver<P>>,
    /// What comes next: a step to run, or a wait in progress (it survives pauses).
    next: Next,
}

impl<P: Process> Driver<P> {
    async fn run(&mut self) -> Ran {
        loop {
            match self.gate() {
                Err(Halt::Ended(outcome)) => return Ran::Ended(outcome),
                Err(Halt::Stopped) => return Ran::Closed,
                Ok(Gate::Parked) => return Ran::Idle(Idle::Play),
                Ok(Gate::Closed) => return Ran::Closed,
                Ok(Gate::Open) => {}
            }
            let advanced = match &self.next {
                // Boxed: a step's future (the process's own, of any size) only lives while the
                // step runs, and is not part of what a waiting process occupies.
                Next::Step(_) => Box::pin(self.run_step()).await,
                Next::Wait(_, Armed::Resume) => {
                    let taken = self.shared.with_control(|c| {
                        let interrupted = c.paused || c.kill.is_some();
                        (!interrupted).then(|| c.resume.take())
                    });
                    match taken {
                        // Paused or killed: the gate deals with it; the wait stays armed.
                        None => continue,
                        Some(None) => return Ran::Idle(Idle::Resume),
                        Some(Some(value)) => self
                            .woke(Some(Ok(Resumed::Value(*value))))
                            .map_err(Halt::Ended),
                    }
                }
                // Boxed, so that a waiting process's state stays small.
                Next::Wait(..) => Box::pin(self.wait_armed()).await.map_err(Halt::Ended),
            };
            match advanced {
                Ok(()) => {}
                Err(Halt::Ended(outcome)) => return Ran::Ended(outcome),
                Err(Halt::Stopped) => return Ran::Closed,
            }
        }
    }

    /// Between steps, and whenever a wait is interrupted: a kill ends the process now; a pause
    /// parks it (once, with a checkpoint) until it is played, which unparks it (likewise).
    /// The status's pause flag says whether it is parked, so a process loaded paused starts
    /// parked even if `play` came before this first look.
    fn gate(&mut self) -> Result<Gate, Halt> {
        let (kill, paused) = self.shared.with_control(|c| (c.kill.clone(), c.paused));
        if let Some(kill) = kill {
            return Err(self.shared.kill(kill.message).into());
        }
        if self.ctx.runner().is_closing() {
            self.save_next_step()?;
            return Ok(Gate::Closed);
        }
        let parked = self.shared.paused();
        if paused != parked {
            let text = paused.then(|| "paused".to_owned());
            self.shared.set_paused(paused, text);
            self.save(self.shared.state(), Self::position)?;
        }
        Ok(if paused { Gate::Parked } else { Gate::Open })
    }

    /// Before stopping for a close: a step about to run is saved as the place to go on from,
    /// so that whoever continues the process does not run the step before it again (a wait
    /// was saved when it began). A store that fails here ends the process, as at any save.
    fn save_next_step(&mut self) -> Result<(), Halt> {
        let Next::Step(name) = &self.next else {
            return Ok(());
        };
        if self.saver.as_ref().is_none_or(|s| s.current) {
            return Ok(());
        }
        let step = name.to_string();
        self.save(ProcessState::Running, |_| Position::Step { step })?;
        if let Some(saver) = self.saver.as_mut() {
            saver.current = true;
        }
        Ok(())
    }

    /// Runs the step in `next`; `Err` carries the outcome when the process ended.
    async fn run_step(&mut self) -> Result<(), Halt> {
        let Next::Step(name) =
            std::mem::replace(&mut self.next, Next::Step(StepName::Borrowed("")))
        else {
            return Ok(());
        };
        let shared = self.shared.clone();
        shared.transition(ProcessState::Running);
        let already_saved = (self.saver.as_mut()).is_some_and(|s| std::mem::take(&mut s.current));
        if !already_saved {
            self.save_before_step(name.to_string()).await?;
        }
        // In the development mode every poll of the step names the process and the step.
        let what = self.ctx.runner().spawner().dev_mode().then(|| {
            let step = self.process.step_name(&name).unwrap_or(&name);
            let identity = &shared.identity;
            Arc::<str>::from(format!(
                "process {} {} in step '{step}'",
                identity.type_name, identity.pid
            ))
        });
        let step = self.process.step(&name, &mut self.ctx);
        let step = AssertUnwindSafe(match what {
            Some(what) => Either::Left(Described::new(step, what)),
            None => Either::Right(step),
        })
        .catch_unwind();
        let force_kill = shared.until_control(|c| {
            c.kill
                .as_ref()
                .filter(|kill| kill.force)
                .map(|kill| kill.message.clone())
        });
        let result = tokio::select! {
            biased;
            message = force_kill => return Err(shared.kill(message).into()),
            result = step => result,
        };
        // A kill asked for during the step wins over what the step decided.
        if let Some(kill) = shared.with_control(|c| c.kill.clone()) {
            return Err(shared.kill(kill.message).into());
        }
        // An output that failed its port's checks ends the process, as a raised error would.
        if let Some(invalid) = self.ctx.invalid_output.take() {
            return Err(shared.except(invalid.to_string()).into());
        }
        match result {
            Err(payload) => Err(shared
                .except_in(
                    self.process.step_name(&name),
                    format!("the step panicked: {}", panic_message(&*payload)),
                )
                .into()),
            Ok(Err(error)) => Err(shared
                .except_in(self.process.step_name(&name), error.0)
                .into()),
            Ok(Ok(Command::Continue(step))) => {
                self.next = Next::Step(step);
                Ok(())
            }
            Ok(Ok(Command::Stop(code))) => {
                let outputs = std::mem::take(&mut self.ctx.outputs);
                Err(finish::<P>(&shared, code, outputs).into())
            }
            Ok(Ok(Command::Kill(message))) => Err(shared.kill(message).into()),
            Ok(Ok(Command::Wait { then, on })) => {
                // Arm first: whoever sees `Waiting` must find a resume wait ready.
                let armed =
                    Armed::arm(on, &name, &self.ctx).map_err(|e| Halt::from(shared.except(e)))?;
                self.next = Next::Wait(then, armed);
                // Saved before it shows: whoever sees `Waiting` finds the wait in the store.
                self.save(ProcessState::Waiting, Self::position)?;
                shared.transition(ProcessState::Waiting);
                Ok(())
            }
        }
    }

    /// Waits for a timer, a future or children, or a pause or a kill.
    async fn wait_armed(&mut self) -> Result<(), ProcessOutcome> {
        let Next::Wait(_, armed) = &mut self.next else {
            return Ok(());
        };
        let shared = &self.shared;
        let woke = tokio::select! {
            biased;
            // First, so that children abandoned by the same close do not wake the parent.
            () = self.ctx.runner().closing() => None,
            _ = shared.until_control(|c| (c.paused || c.kill.is_some()).then_some(())) => None,
            value = armed.ready(shared) => Some(value),
        };
        self.woke(woke)
    }

    /// After a wait: interrupted (`None`, the gate deals with it and the wait stays armed), or
    /// over, and the next step gets the value.
    fn woke(&mut self, woke: Option<Result<Resumed, String>>) -> Result<(), ProcessOutcome> {
        match woke {
            None => Ok(()),
            Some(Ok(value)) => {
                let then =
                    match std::mem::replace(&mut self.next, Next::Step(StepName::Borrowed(""))) {
                        Next::Wait(then, _) | Next::Step(then) => then,
                    };
                self.shared.set_awaiting_resume(false);
                self.ctx.resumed = Some(Box::new(value));
                self.next = Next::Step(then);
                Ok(())
            }
            Some(Err(error)) => Err(self.shared.except(error)),
        }
    }

    fn position(&self) -> Position {
        match &self.next {
            Next::Step(step) => Position::Step {
                step: step.to_string(),
            },
            Next::Wait(then, armed) => Position::Waiting {
                then: then.to_string(),
                on: armed.saved(&self.shared),
            },
        }
    }

    /// Saves a checkpoint of a persisted process in `state` (the one it is in or entering);
    /// see [`halt_on`](Self::halt_on) for a failure.
    fn save(
        &self,
        state: ProcessState,
        position: impl FnOnce(&Self) -> Position,
    ) -> Result<(), Halt> {
        let Some((saver, encoded)) = self.encoded(state, position) else {
            return Ok(());
        };
        encoded
            .and_then(|bytes| saver.store.save_bytes(self.shared.identity.pid, bytes))
            .map_err(|e| self.halt_on(e))
    }

    /// Saves the checkpoint of the step about to run and waits until the store says it is
    /// kept ([`Persister::save_committed`]), so that no step runs before its checkpoint is
    /// (a store that commits later, in groups, says so at once). Meanwhile the runtime thread
    /// serves the other processes.
    async fn save_before_step(&mut self, step: String) -> Result<(), Halt> {
        let Some((saver, encoded)) =
            self.encoded(ProcessState::Running, |_| Position::Step { step })
        else {
            return Ok(());
        };
        let committed =
            encoded.and_then(|bytes| saver.store.save_committed(self.shared.identity.pid, bytes));
        match committed {
            Ok(committed) => committed.await.map_err(|e| self.halt_on(e)),
            Err(error) => Err(self.halt_on(error)),
        }
    }

    /// What a failed save comes to: a store that cannot be reached for now, or a lease lost
    /// ([`PersistError::stops_process`]), stops the process where its last kept checkpoint is,
    /// for this worker or another to go on from there later; any other failure ends it
    /// excepted, as it cannot go on unsaved.
    fn halt_on(&self, error: PersistError) -> Halt {
        if error.stops_process() {
            tracing::warn!(pid = %self.shared.identity.pid, %error, "a checkpoint could not be saved; the process stops at its last one");
            return Halt::Stopped;
        }
        self.shared
            .except(format!("cannot save a checkpoint: {error}"))
            .into()
    }

    /// The encoded checkpoint of a persisted process in `state`, with its saver. The position
    /// is only worked out for a persisted process: the others pay nothing here.
    #[expect(
        clippy::type_complexity,
        reason = "a pair used at once by the two callers"
    )]
    fn encoded(
        &self,
        state: ProcessState,
        position: impl FnOnce(&Self) -> Position,
    ) -> Option<(&Saver<P>, Result<Vec<u8>, PersistError>)> {
        let saver = self.saver.as_ref()?;
        let position = position(self);
        if self.ctx.runner().spawner().dev_mode() {
            let identity = &self.shared.identity;
            crate::thread::describe(|| {
                format!(
                    "saving the checkpoint of process {} {}",
                    identity.type_name, identity.pid
                )
                .into()
            });
        }
        let checkpoint = checkpoint_of(&self.shared, &self.ctx, state, &self.process, &position);
        Some((saver, saver.encode(&checkpoint)))
    }

    /// Passes a kill on to the children, and settles the process's checkpoints.
    fn after_end(&self, outcome: &ProcessOutcome) {
        if let ProcessOutcome::Killed { message } = outcome
            && self.process.kills_children()
        {
            let message = format!(
                "its parent {} was killed: {message}",
                self.shared.identity.pid
            );
            for child in self.shared.children() {
                child.request_kill(message.clone());
            }
        }
        let Some(saver) = &self.saver else {
            return;
        };
        // The final checkpoint keeps the outcome until it is handed over: to the parent, which
        // deletes it when it ends itself, or to whoever waits for a top-level process (see
        // `ProcessHandle`). A crash before then loses nothing: a reload finds the outcome.
        // Its children's checkpoints go below, so it lists none.
        let checkpoint = CheckpointRef {
            outcome: Some(outcome),
            children: Vec::new(),
            ..checkpoint_of(
                &self.shared,
                &self.ctx,
                outcome.state(),
                &self.process,
                &Position::Ended,
            )
        };
        if let Err(error) = saver.save(&checkpoint) {
            tracing::error!(pid = %self.shared.identity.pid, %error, "cannot save an ended process's final checkpoint");
        }
        // Ended: nothing of it runs here any more (its final checkpoint waits to be handed over).
        saver.store.release(self.shared.identity.pid);
        for child in self.shared.children() {
            if child.identity.persisted
                && child.state().is_terminal()
                && let Err(error) = saver.store.delete(child.identity.pid)
            {
                tracing::error!(pid = %child.identity.pid, %error, "cannot delete an ended child's checkpoint");
            }
        }
    }
}

impl<P> Saver<P> {
    /// Encodes and stores; a process that does not encode is the store's `Store` error, as
    /// with [`Checkpoint::to_bytes`](super::checkpoint::Checkpoint::to_bytes) in the stores.
    pub(crate) fn save(&self, checkpoint: &CheckpointRef<'_, P>) -> Result<(), PersistError> {
        self.store
            .save_bytes(checkpoint.pid, self.encode(checkpoint)?)
    }

    /// A checkpoint's bytes, as the store keeps them.
    pub(crate) fn encode(
        &self,
        checkpoint: &CheckpointRef<'_, P>,
    ) -> Result<Vec<u8>, PersistError> {
        (self.encode)(checkpoint).map_err(|e| PersistError::store("cannot encode a checkpoint", e))
    }
}

/// The checkpoint of a process in its present state (not ended: see `after_end`).
pub(crate) fn checkpoint_of<'a, P>(
    shared: &'a ProcessShared,
    ctx: &'a StepContext,
    state: ProcessState,
    process: &'a P,
    position: &'a Position,
) -> CheckpointRef<'a, P> {
    CheckpointRef {
        version: CHECKPOINT_VERSION,
        type_name: shared.identity.type_name,
        pid: shared.identity.pid,
        parent: shared.identity.parent,
        ctime: shared.identity.ctime,
        state,
        paused: shared.paused(),
        status: shared.text(),
        inputs: ctx.inputs(),
        outputs: &ctx.outputs,
        process,
        position,
        resumed: ctx.resumed.as_deref(),
        children: (shared.children().iter())
            .filter_map(|c| c.identity.persisted.then_some(c.identity.pid))
            .collect(),
        outcome: None,
    }
}

/// Finishes; a successful finish must have every required output, or it becomes a failure with
/// exit code 11 (AiiDA's "missing output") naming the port.
fn finish<P: Process>(shared: &ProcessShared, code: ExitCode, outputs: Outputs) -> ProcessOutcome {
    if !code.is_success() {
        return shared.finish(code, outputs);
    }
    let mut checked = Value::Object(outputs.into_iter().collect());
    let outcome = P::spec().validate_outputs(&mut checked);
    let outputs: Outputs = match checked {
        Value::Object(map) => map.into_iter().collect(),
        _ => Outputs::new(),
    };
    match outcome {
        Ok(()) => shared.finish(code, outputs),
        Err(missing) => shared.finish(ExitCode::new(MISSING_OUTPUT, missing.to_string()), outputs),
    }
}

/// The exit status of a process that finished without a required output (as in AiiDA).
pub(crate) const MISSING_OUTPUT: u32 = 11;
