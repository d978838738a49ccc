//! Work chains: processes whose steps follow an [`Outline`], with a persisted context and
//! children whose results land in it.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::checkpoint::ChildRef;
use super::error::{EngineError, in_step};
use super::exit_code::ExitCode;
use super::handle::ProcessHandle;
use super::outcome::{Outputs, ProcessOutcome};
use super::outline::{ChainCtx, Found, Outline, Stepper};
use super::process::{Command, Persistent, Process, StepContext, StepError, WaitOn};
use super::spec::ProcessSpec;

/// What a work chain step tells the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Go on with the outline (after the children added with
    /// [`ChainContext::to_context`] have ended, if any).
    Next,
    /// Stop the chain with this exit code (as `return_` in the outline does).
    Return(ExitCode),
}

/// A work chain: named steps run in the order of its [`Outline`]. Wrap it in a [`Chain`] to
/// run it. Its fields and its [`ChainCtx`] are saved in checkpoints (when it is persisted).
///
/// ```
/// use std::sync::LazyLock;
/// use runtime_thread::engine::{Chain, Flow, Outline, Runner, StepError, WorkChain, ChainContext, step, while_};
///
/// struct Countdown { left: u32 }
///
/// static OUTLINE: LazyLock<Outline<Countdown>> = LazyLock::new(|| Outline::new([
///     while_("left", |c: &Countdown, _| c.left > 0, [step("tick")]),
///     step("report"),
/// ]));
///
/// impl WorkChain for Countdown {
///     const TYPE_NAME: &'static str = "doc.Countdown";
///     fn outline() -> &'static Outline<Self> { &OUTLINE }
///     async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
///         match step {
///             "tick" => self.left -= 1,
///             _ => wc.out("done", true.into()),
///         }
///         Ok(Flow::Next)
///     }
/// }
///
/// let outputs = Runner::start()?.run(Chain::new(Countdown { left: 3 }))?;
/// assert_eq!(outputs["done"], true);
/// # Ok::<(), runtime_thread::engine::EngineError>(())
/// ```
pub trait WorkChain: Send + Sized + 'static {
    /// A stable name (for status, and for loading its checkpoints).
    const TYPE_NAME: &'static str;

    /// Inputs and outputs (default: anything goes).
    fn spec() -> &'static ProcessSpec {
        ProcessSpec::any()
    }

    /// The outline; keep it in a `static` (`LazyLock`).
    fn outline() -> &'static Outline<Self>;

    /// Runs the step called `step`.
    fn step(
        &mut self,
        step: &str,
        wc: &mut ChainContext<'_>,
    ) -> impl Future<Output = Result<Flow, StepError>> + Send;

    /// Takes the outcome of a child the last step waited for. The default stores a successful
    /// child's outputs in `ctx[key]` and fails the chain (naming the child) when the child
    /// failed, excepted or was killed; override it to tolerate failures.
    fn on_child_ended(
        &mut self,
        key: &str,
        outcome: ProcessOutcome,
        ctx: &mut ChainCtx,
    ) -> Result<(), StepError> {
        store_child_result(key, outcome, ctx)
    }

    /// Whether killing the chain kills its children (default: yes).
    fn kills_children(&self) -> bool {
        true
    }
}

/// The default of [`WorkChain::on_child_ended`].
///
/// # Errors
///
/// A [`StepError`] naming the child when it failed (a non-zero exit code), excepted or was killed.
pub fn store_child_result(
    key: &str,
    outcome: ProcessOutcome,
    ctx: &mut ChainCtx,
) -> Result<(), StepError> {
    match outcome {
        ProcessOutcome::Finished { exit_code, outputs } if exit_code.is_success() => {
            ctx.insert(key.to_owned(), Value::Object(outputs.into_iter().collect()));
            Ok(())
        }
        ProcessOutcome::Finished { exit_code, .. } => Err(StepError(format!(
            "the child '{key}' failed with exit code {exit_code}"
        ))),
        ProcessOutcome::Excepted {
            message,
            process,
            step,
        } => Err(StepError(format!(
            "the child '{key}' ({process}) excepted{}: {message}",
            in_step(&step)
        ))),
        ProcessOutcome::Killed { message } => Err(StepError(format!(
            "the child '{key}' was killed: {message}"
        ))),
    }
}

/// What a work chain step can see and do.
pub struct ChainContext<'a> {
    ctx: &'a mut ChainCtx,
    process: &'a mut StepContext,
    awaiting: Vec<ChildRef>,
}

impl std::fmt::Debug for ChainContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainContext")
            .field("ctx", &self.ctx)
            .field("process", &self.process)
            .field("awaiting", &self.awaiting)
            .finish()
    }
}

impl ChainContext<'_> {
    /// The chain's context (persisted; children's results are stored here).
    pub fn ctx(&self) -> &ChainCtx {
        self.ctx
    }

    /// The chain's context, to change.
    pub fn ctx_mut(&mut self) -> &mut ChainCtx {
        self.ctx
    }

    /// The chain's pid.
    pub fn pid(&self) -> Uuid {
        self.process.pid()
    }

    /// The validated inputs, for a chain launched from inputs.
    pub fn inputs(&self) -> Option<&Value> {
        self.process.inputs()
    }

    /// Emits an output (checked against the spec, as [`StepContext::out`]).
    pub fn out(&mut self, name: impl Into<String>, value: Value) {
        self.process.out(name, value);
    }

    /// The outputs emitted so far.
    pub fn outputs(&self) -> &Outputs {
        self.process.outputs()
    }

    /// Launches a child (not persisted). Add it with [`to_context`](Self::to_context) to wait.
    pub fn launch<P: Process>(&mut self, child: P) -> ProcessHandle {
        self.process.launch(child)
    }

    /// Launches a persisted child, which a reloaded chain finds again.
    ///
    /// # Errors
    ///
    /// `EngineError::NoPersister` when the runner has no store; the store's failure to save the
    /// child's first checkpoint (the child then does not start).
    pub fn launch_persisted<P: Persistent>(
        &mut self,
        child: P,
    ) -> Result<ProcessHandle, EngineError> {
        self.process.launch_persisted(child)
    }

    /// After this step, wait for `child` (launched by this chain) and store its result under
    /// `key` (a later result may overwrite a key).
    pub fn to_context(&mut self, key: impl Into<String>, child: &ProcessHandle) {
        self.awaiting.push(ChildRef {
            key: key.into(),
            pid: child.pid(),
        });
    }
}

/// A [`WorkChain`] as a [`Process`]: the chain, its `ctx` and its position in the outline.
/// Serialisable when the chain is, so it can be persisted.
#[derive(Serialize, Deserialize)]
pub struct Chain<W> {
    chain: W,
    ctx: ChainCtx,
    stepper: Stepper,
    /// The outline step run last, to name it in errors (not part of a checkpoint).
    #[serde(skip)]
    last_step: Option<&'static str>,
}

impl<W: WorkChain> std::fmt::Debug for Chain<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("type", &std::any::type_name::<W>())
            .field("ctx", &self.ctx)
            .field("position", &self.position())
            .finish()
    }
}

/// The single step name of a chain's driver; the real position is the stepper's.
const ADVANCE: &str = "advance";

impl<W: WorkChain> Chain<W> {
    /// Wraps a chain, with an empty context, at the start of its outline.
    pub fn new(chain: W) -> Self {
        Chain {
            chain,
            ctx: ChainCtx::new(),
            stepper: Stepper::default(),
            last_step: None,
        }
    }

    /// The chain.
    pub fn chain(&self) -> &W {
        &self.chain
    }

    /// Its context.
    pub fn ctx(&self) -> &ChainCtx {
        &self.ctx
    }

    /// Its position in the outline, as plumpy writes it (`1:while_(left)(0:tick)`).
    pub fn position(&self) -> String {
        self.stepper.describe(W::outline())
    }

    async fn advance(&mut self, process: &mut StepContext) -> Result<Command, StepError> {
        if process.resumed.is_some() {
            for (key, outcome) in process.take_child_outcomes()? {
                self.chain.on_child_ended(&key, outcome, &mut self.ctx)?;
            }
        }
        let outline = W::outline();
        if self.stepper == Stepper::default() {
            outline.check().map_err(StepError)?;
        }
        let name = match self
            .stepper
            .find_next(outline, &self.chain, &self.ctx)
            .map_err(StepError)?
        {
            Found::End => return Ok(Command::finish()),
            Found::Return(code) => return Ok(Command::Stop(code)),
            Found::Step(name) => name,
        };
        self.last_step = Some(name);
        let mut wc = ChainContext {
            ctx: &mut self.ctx,
            process,
            awaiting: Vec::new(),
        };
        let flow = self.chain.step(name, &mut wc).await?;
        let awaiting = wc.awaiting;
        self.stepper.step_done();
        Ok(match flow {
            Flow::Return(code) => Command::Stop(code),
            // Look ahead now, as plumpy's stepper does: a chain whose last step has run ends
            // with it rather than in one more step. Nothing can change the predicates' inputs
            // before the next step, since no child is awaited.
            Flow::Next if awaiting.is_empty() => {
                match self.stepper.find_next(outline, &self.chain, &self.ctx) {
                    Ok(Found::End) => Command::finish(),
                    Ok(Found::Return(code)) => Command::Stop(code),
                    Ok(Found::Step(_)) => Command::next(ADVANCE),
                    Err(error) => return Err(StepError(error)),
                }
            }
            Flow::Next => Command::Wait {
                then: ADVANCE.into(),
                on: WaitOn::Children(awaiting),
            },
        })
    }
}

impl<W: WorkChain> Process for Chain<W> {
    fn spec() -> &'static ProcessSpec {
        W::spec()
    }

    fn first_step(&self) -> &'static str {
        ADVANCE
    }

    fn name() -> &'static str {
        W::TYPE_NAME
    }

    fn kills_children(&self) -> bool {
        self.chain.kills_children()
    }

    /// The outline step run last: a failed child is reported against the step that launched
    /// it, an error before the first step against none.
    fn step_name<'a>(&'a self, _step: &'a str) -> Option<&'a str> {
        self.last_step
    }

    async fn step(&mut self, _step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        self.advance(ctx).await
    }
}

impl<W> Persistent for Chain<W>
where
    W: WorkChain + Serialize + DeserializeOwned,
{
    const TYPE_NAME: &'static str = W::TYPE_NAME;
}
