//! What a process is: named async steps that each return a [`Command`].

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::checkpoint::{ChildRef, Resumed};
use super::exit_code::ExitCode;
use super::outcome::{Outputs, ProcessOutcome};
use super::runner_core::Core;
use super::shared::ProcessShared;
use super::spec::{PortError, ProcessSpec};

/// A step's name: usually a `&'static str` (no allocation, which matters for the memory of a
/// waiting process), or a `String` built at run time.
pub type StepName = std::borrow::Cow<'static, str>;

/// What a step tells the engine to do next.
pub enum Command {
    /// Run this step next.
    Continue(StepName),
    /// Wait, then run step `then` (the value that ended the wait is in
    /// [`StepContext::take_resume_value`]).
    Wait {
        /// The step to run after the wait.
        then: StepName,
        /// What to wait for.
        on: WaitOn,
    },
    /// Finish with this exit code (zero: success).
    Stop(ExitCode),
    /// Kill the process with this message.
    Kill(String),
}

/// What a waiting process waits for.
pub enum WaitOn {
    /// An external [`ProcessController::resume`](super::ProcessController::resume) with a value.
    Resume,
    /// A time to pass.
    Timer(Duration),
    /// A future's value; an `Err` makes the process excepted. A checkpoint cannot hold a
    /// future: a process reloaded while waiting on one runs the step that returned it again.
    Future(BoxFuture<'static, Result<Value, String>>),
    /// Children this process launched, by pid: the wait ends when all have ended, and the
    /// value is a map from each key to the child's [`ProcessOutcome`] (see
    /// [`StepContext::take_child_outcomes`]). Being data, this wait survives a checkpoint.
    Children(Vec<ChildRef>),
}

impl std::fmt::Debug for WaitOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitOn::Resume => f.write_str("Resume"),
            WaitOn::Timer(delay) => f.debug_tuple("Timer").field(delay).finish(),
            WaitOn::Future(_) => f.write_str("Future(..)"),
            WaitOn::Children(children) => f.debug_tuple("Children").field(children).finish(),
        }
    }
}

impl Command {
    /// Run `step` next.
    pub fn next(step: impl Into<StepName>) -> Self {
        Command::Continue(step.into())
    }

    /// Finish successfully.
    pub fn finish() -> Self {
        Command::Stop(ExitCode::OK)
    }

    /// Finish with a failure exit code.
    pub fn fail(status: u32, message: impl Into<String>) -> Self {
        Command::Stop(ExitCode::new(status, message))
    }

    /// Wait for an external resume, then run `then`.
    pub fn wait_for_resume(then: impl Into<StepName>) -> Self {
        Command::Wait {
            then: then.into(),
            on: WaitOn::Resume,
        }
    }

    /// Wait for `delay`, then run `then`.
    pub fn sleep(then: impl Into<StepName>, delay: Duration) -> Self {
        Command::Wait {
            then: then.into(),
            on: WaitOn::Timer(delay),
        }
    }

    /// Wait for `future`, then run `then` with its value.
    pub fn wait_on<F>(then: impl Into<StepName>, future: F) -> Self
    where
        F: Future<Output = Result<Value, String>> + Send + 'static,
    {
        Command::Wait {
            then: then.into(),
            on: WaitOn::Future(Box::pin(future)),
        }
    }
}

impl Command {
    /// Wait until every child in `children` (`(key, pid)` pairs, children launched by this
    /// process) has ended, then run `then`.
    pub fn wait_for_children<K: Into<String>>(
        then: impl Into<StepName>,
        children: impl IntoIterator<Item = (K, Uuid)>,
    ) -> Self {
        Command::Wait {
            then: then.into(),
            on: WaitOn::Children(
                children
                    .into_iter()
                    .map(|(key, pid)| ChildRef {
                        key: key.into(),
                        pid,
                    })
                    .collect(),
            ),
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Continue(step) => f.debug_tuple("Continue").field(step).finish(),
            Command::Wait { then, on } => {
                let on = match on {
                    WaitOn::Resume => "resume",
                    WaitOn::Timer(_) => "timer",
                    WaitOn::Future(_) => "future",
                    WaitOn::Children(_) => "children",
                };
                f.debug_struct("Wait")
                    .field("then", then)
                    .field("on", &on)
                    .finish()
            }
            Command::Stop(code) => f.debug_tuple("Stop").field(code).finish(),
            Command::Kill(message) => f.debug_tuple("Kill").field(message).finish(),
        }
    }
}

/// A step's failure; any `std::error::Error` converts into it, so steps can use `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError(pub String);

impl<E: std::error::Error> From<E> for StepError {
    fn from(error: E) -> Self {
        StepError(error.to_string())
    }
}

impl StepError {
    /// A failure with this message.
    pub fn msg(message: impl Into<String>) -> Self {
        StepError(message.into())
    }
}

/// A process: a state machine of named async steps. The engine calls [`step`](Process::step)
/// with the name of the step to run; the returned [`Command`] decides what comes next. A step
/// is async, so it can await anything, including a child process it launched: no nested event
/// loop is ever needed.
///
/// ```
/// use runtime_thread::engine::{Command, StepContext, Process, Runner, StepError};
///
/// struct Add { a: i64, b: i64 }
///
/// impl Process for Add {
///     async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
///         match step {
///             "run" => {
///                 ctx.out("sum", (self.a + self.b).into());
///                 Ok(Command::finish())
///             }
///             other => Err(StepError::msg(format!("no step {other}"))),
///         }
///     }
/// }
///
/// let runner = Runner::start()?;
/// let outputs = runner.run(Add { a: 2, b: 40 })?;
/// assert_eq!(outputs["sum"], 42);
/// # Ok::<(), runtime_thread::engine::EngineError>(())
/// ```
pub trait Process: Send + 'static {
    /// The process type's inputs and outputs (default: anything goes). Keep it in a `static`
    /// (`LazyLock`): it is looked up for every process.
    fn spec() -> &'static ProcessSpec
    where
        Self: Sized,
    {
        ProcessSpec::any()
    }

    /// The first step's name (default `"run"`).
    fn first_step(&self) -> &'static str {
        "run"
    }

    /// Whether killing this process kills the children it launched (default: yes). Each child
    /// is killed with a message naming the parent.
    fn kills_children(&self) -> bool {
        true
    }

    /// The name the process's status and errors show: by default its type's name without the
    /// module path (`Add` for `my_app::jobs::Add`), as plumpy shows a process's class name. A
    /// persisted process shows its [`Persistent::TYPE_NAME`], and a [`Chain`](super::Chain)
    /// its work chain's.
    fn name() -> &'static str
    where
        Self: Sized,
    {
        short_type_name(std::any::type_name::<Self>())
    }

    /// What to call step `step` in errors: the step itself by default. A work chain, whose
    /// steps all run through one engine step, names the outline step it ran last.
    fn step_name<'a>(&'a self, step: &'a str) -> Option<&'a str> {
        Some(step)
    }

    /// Runs one step. Pause and kill requests that arrive meanwhile take effect when it returns
    /// (a force-kill drops it at once).
    fn step(
        &mut self,
        step: &str,
        ctx: &mut StepContext,
    ) -> impl Future<Output = Result<Command, StepError>> + Send;
}

/// A process that can be checkpointed: its fields are its state, and it has a stable name under
/// which a [`Runner`](super::Runner) finds its type when loading.
pub trait Persistent: Process + Serialize + DeserializeOwned {
    /// A name that stays the same across builds (not `std::any::type_name`).
    const TYPE_NAME: &'static str;
}

/// `full` without the module path of its outermost type: `a::b::Add` is `Add`, and
/// `a::Wrap<b::Add>` is `Wrap<b::Add>` (a slice of `full`, so no allocation).
fn short_type_name(full: &'static str) -> &'static str {
    let outer = full.find('<').unwrap_or(full.len());
    match full[..outer].rfind("::") {
        Some(separator) => &full[separator + 2..],
        None => full,
    }
}

/// What a step can see and do besides its own fields.
pub struct StepContext {
    shared: Arc<ProcessShared>,
    runner: Core,
    spec: &'static ProcessSpec,
    // Boxed, like `resumed`: a waiting process carries its context, and these are often empty.
    inputs: Option<Box<Value>>,
    pub(crate) outputs: Outputs,
    pub(crate) resumed: Option<Box<Resumed>>,
    /// The first output that failed its port's checks; the step then ends the process excepted.
    pub(crate) invalid_output: Option<Box<PortError>>,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("pid", &self.shared.identity.pid)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl StepContext {
    pub(crate) fn new(
        shared: Arc<ProcessShared>,
        runner: Core,
        spec: &'static ProcessSpec,
        inputs: Option<Value>,
    ) -> Self {
        StepContext {
            shared,
            runner,
            spec,
            inputs: inputs.map(Box::new),
            outputs: Outputs::new(),
            resumed: None,
            invalid_output: None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ProcessShared> {
        &self.shared
    }

    pub(crate) fn runner(&self) -> &Core {
        &self.runner
    }

    /// The validated inputs (with defaults filled in) of a process started with
    /// [`Runner::launch`](super::Runner::launch); `None` for one submitted as a value.
    pub fn inputs(&self) -> Option<&Value> {
        self.inputs.as_deref()
    }

    /// This process's id.
    pub fn pid(&self) -> Uuid {
        self.shared.identity.pid
    }

    /// Emits an output (replacing an earlier one of the same name). It is checked against the
    /// spec's output port at once: an invalid output is not kept, and the process ends excepted
    /// with the port's path in the message when the step returns.
    pub fn out(&mut self, name: impl Into<String>, value: Value) {
        let name = name.into();
        if let Err(error) = self.spec.outputs.check_emitted("outputs", &name, &value) {
            self.invalid_output.get_or_insert(Box::new(error));
            return;
        }
        self.shared.notify_output(&name, &value);
        self.outputs.insert(name, value);
    }

    /// The outputs emitted so far.
    pub fn outputs(&self) -> &Outputs {
        &self.outputs
    }

    /// The value that ended the last wait, once.
    pub fn take_resume_value(&mut self) -> Option<Value> {
        self.resumed.take().map(|resumed| resumed.into_value())
    }

    /// The outcomes of the children a [`WaitOn::Children`] wait was for, by key (taken once).
    ///
    /// # Errors
    ///
    /// A [`StepError`] when no children were awaited before this step, or when their outcomes, read
    /// back from a checkpoint, do not decode.
    pub fn take_child_outcomes(&mut self) -> Result<BTreeMap<String, ProcessOutcome>, StepError> {
        match self.resumed.take().map(|resumed| *resumed) {
            Some(Resumed::Children(outcomes)) => Ok(outcomes),
            // Read from a checkpoint, where the outcomes are JSON.
            Some(Resumed::Value(value)) => serde_json::from_value(value)
                .map_err(|e| StepError::msg(format!("the children's outcomes do not decode: {e}"))),
            None => Err(StepError::msg("no children were awaited before this step")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short_type_name;

    #[test]
    fn a_type_name_loses_its_module_path_but_keeps_its_parameters() {
        assert_eq!(short_type_name("my_app::jobs::Add"), "Add");
        assert_eq!(short_type_name("Add"), "Add");
        assert_eq!(
            short_type_name("my_app::Wrap<my_app::jobs::Add>"),
            "Wrap<my_app::jobs::Add>"
        );
    }
}
