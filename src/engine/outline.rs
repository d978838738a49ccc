//! A work chain's outline, and the stepper that walks it.
//!
//! The outline is static data (step and predicate *names*); the stepper's position is a small
//! serialisable stack of indices, so a checkpoint records exactly where a chain is.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::exit_code::ExitCode;

/// The work chain's persisted context: a JSON map (children's results land here).
pub type ChainCtx = Map<String, Value>;

/// A predicate of an `if_` or `while_`: a plain function of the chain and its context, so it
/// is deterministic and a reloaded chain takes the same branches.
pub type Predicate<W> = fn(&W, &ChainCtx) -> bool;

/// One branch of an `if_`: the predicate's name, the predicate, the block it guards.
pub type Branch<W> = (&'static str, Predicate<W>, Vec<Instruction<W>>);

/// One instruction of an outline.
pub enum Instruction<W> {
    /// Run the named step.
    Step(&'static str),
    /// The first branch whose predicate holds runs; else the `else_` block, if any.
    If {
        /// `(name, predicate, block)` for `if_` and each `elif_`.
        branches: Vec<Branch<W>>,
        /// The `else_` block.
        otherwise: Option<Vec<Instruction<W>>>,
    },
    /// Runs the block while the predicate holds.
    While(&'static str, Predicate<W>, Vec<Instruction<W>>),
    /// Stops the chain with this exit code.
    Return(ExitCode),
    /// A misuse found while building (such as `elif_` after a step); the chain refuses to run.
    Invalid(String),
}

impl<W> std::fmt::Debug for Instruction<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Instruction::Step(name) => f.debug_tuple("Step").field(name).finish(),
            Instruction::If {
                branches,
                otherwise,
            } => {
                let branches: Vec<_> = branches
                    .iter()
                    .map(|(name, _, block)| (name, block))
                    .collect();
                f.debug_struct("If")
                    .field("branches", &branches)
                    .field("otherwise", otherwise)
                    .finish()
            }
            Instruction::While(name, _, block) => {
                f.debug_tuple("While").field(name).field(block).finish()
            }
            Instruction::Return(code) => f.debug_tuple("Return").field(code).finish(),
            Instruction::Invalid(why) => f.debug_tuple("Invalid").field(why).finish(),
        }
    }
}

/// Runs the step called `name`.
pub fn step<W>(name: &'static str) -> Instruction<W> {
    Instruction::Step(name)
}

/// Runs `block` if `predicate` holds; chain `.elif_(..)` and `.else_(..)` onto it.
pub fn if_<W>(
    name: &'static str,
    predicate: Predicate<W>,
    block: impl IntoIterator<Item = Instruction<W>>,
) -> Instruction<W> {
    Instruction::If {
        branches: vec![(name, predicate, block.into_iter().collect())],
        otherwise: None,
    }
}

/// Runs `block` again and again while `predicate` holds.
pub fn while_<W>(
    name: &'static str,
    predicate: Predicate<W>,
    block: impl IntoIterator<Item = Instruction<W>>,
) -> Instruction<W> {
    Instruction::While(name, predicate, block.into_iter().collect())
}

/// Stops the chain successfully.
pub fn return_<W>() -> Instruction<W> {
    Instruction::Return(ExitCode::OK)
}

/// Stops the chain with `code` (non-zero: failed).
pub fn return_code<W>(code: ExitCode) -> Instruction<W> {
    Instruction::Return(code)
}

impl<W> Instruction<W> {
    /// Adds an `elif_` branch to an `if_`.
    pub fn elif_(
        self,
        name: &'static str,
        predicate: Predicate<W>,
        block: impl IntoIterator<Item = Instruction<W>>,
    ) -> Self {
        match self {
            Instruction::If {
                mut branches,
                otherwise: None,
            } => {
                branches.push((name, predicate, block.into_iter().collect()));
                Instruction::If {
                    branches,
                    otherwise: None,
                }
            }
            Instruction::If { .. } => Instruction::Invalid(format!("elif_({name}) after else_")),
            other => Instruction::Invalid(format!("elif_({name}) after {}", other.describe())),
        }
    }

    /// Adds the `else_` block to an `if_`.
    pub fn else_(self, block: impl IntoIterator<Item = Instruction<W>>) -> Self {
        match self {
            Instruction::If {
                branches,
                otherwise: None,
            } => Instruction::If {
                branches,
                otherwise: Some(block.into_iter().collect()),
            },
            Instruction::If { .. } => Instruction::Invalid("a second else_".to_owned()),
            other => Instruction::Invalid(format!("else_ after {}", other.describe())),
        }
    }

    fn describe(&self) -> String {
        match self {
            Instruction::Step(name) => format!("step {name}"),
            Instruction::If { branches, .. } => format!("if_({})", branches[0].0),
            Instruction::While(name, ..) => format!("while_({name})"),
            Instruction::Return(_) => "return_".to_owned(),
            Instruction::Invalid(why) => why.clone(),
        }
    }
}

/// A work chain's outline: its steps with `if_`, `elif_`, `else_`, `while_` and `return_`,
/// nested at any depth. Keep it in a `static` (`LazyLock`), like a spec.
///
/// ```
/// use runtime_thread::engine::{Outline, if_, step, while_};
///
/// struct Relax { rounds: u32 }
///
/// let outline: Outline<Relax> = Outline::new([
///     step("setup"),
///     while_("not_converged", |w: &Relax, _ctx| w.rounds < 3, [step("iterate")]),
///     if_("was_slow", |w: &Relax, _ctx| w.rounds > 10, [step("report")]).else_([step("done")]),
/// ]);
/// assert!(outline.check().is_ok());
/// ```
pub struct Outline<W> {
    block: Vec<Instruction<W>>,
}

impl<W> std::fmt::Debug for Outline<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.block).finish()
    }
}

impl<W> Outline<W> {
    /// An outline of these instructions.
    pub fn new(block: impl IntoIterator<Item = Instruction<W>>) -> Self {
        Outline {
            block: block.into_iter().collect(),
        }
    }

    /// Whether the outline is well formed (no `elif_`/`else_` misuse, no empty `if_`).
    ///
    /// # Errors
    ///
    /// A message naming what is malformed: an `elif_` or `else_` that follows no `if_`, or an empty
    /// block.
    pub fn check(&self) -> Result<(), String> {
        check_block(&self.block)
    }
}

fn check_block<W>(block: &[Instruction<W>]) -> Result<(), String> {
    for instruction in block {
        match instruction {
            Instruction::Invalid(why) => return Err(format!("invalid outline: {why}")),
            Instruction::If {
                branches,
                otherwise,
            } => {
                for (_, _, inner) in branches {
                    check_block(inner)?;
                }
                if let Some(inner) = otherwise {
                    check_block(inner)?;
                }
            }
            Instruction::While(_, _, inner) => check_block(inner)?,
            Instruction::Step(_) | Instruction::Return(_) => {}
        }
    }
    Ok(())
}

/// Where a work chain is in its outline: one frame per nested block. Serialisable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stepper {
    frames: Vec<Frame>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Frame {
    /// The instruction of this frame's block we are at.
    index: usize,
    /// For an `if_` we are inside: the branch taken (`branches.len()` for `else_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    branch: Option<usize>,
}

/// What the stepper found next.
pub(crate) enum Found {
    Step(&'static str),
    Return(ExitCode),
    End,
}

impl Stepper {
    /// Moves to the next step to run, evaluating predicates on the way. Stays on that step
    /// until [`Stepper::step_done`], so a checkpoint taken meanwhile re-runs it.
    pub(crate) fn find_next<W>(
        &mut self,
        outline: &Outline<W>,
        chain: &W,
        ctx: &ChainCtx,
    ) -> Result<Found, String> {
        if self.frames.is_empty() {
            self.frames.push(Frame {
                index: 0,
                branch: None,
            });
        }
        loop {
            let depth = self.frames.len() - 1;
            let block = self.block_at(outline, depth)?;
            let frame = self.frames[depth];
            let Some(instruction) = block.get(frame.index) else {
                if !self.leave_block(outline)? {
                    return Ok(Found::End);
                }
                continue;
            };
            match instruction {
                Instruction::Step(name) => return Ok(Found::Step(name)),
                Instruction::Return(code) => return Ok(Found::Return(code.clone())),
                Instruction::Invalid(why) => return Err(format!("invalid outline: {why}")),
                Instruction::If {
                    branches,
                    otherwise,
                } => {
                    let taken = branches
                        .iter()
                        .position(|(_, holds, _)| holds(chain, ctx))
                        .or(otherwise.as_ref().map(|_| branches.len()));
                    match taken {
                        Some(branch) => self.enter(depth, Some(branch)),
                        None => self.frames[depth].index += 1,
                    }
                }
                Instruction::While(_, holds, _) => {
                    if holds(chain, ctx) {
                        self.enter(depth, None);
                    } else {
                        self.frames[depth].index += 1;
                    }
                }
            }
        }
    }

    /// The step the stepper stands on has run: move past it.
    pub(crate) fn step_done(&mut self) {
        if let Some(frame) = self.frames.last_mut() {
            frame.index += 1;
        }
    }

    fn enter(&mut self, depth: usize, branch: Option<usize>) {
        self.frames[depth].branch = branch;
        self.frames.push(Frame {
            index: 0,
            branch: None,
        });
    }

    /// Leaves the innermost block; false when it was the outline itself (the chain is done).
    /// Leaving an `if_` moves past it; leaving a `while_` body goes back to its predicate.
    fn leave_block<W>(&mut self, outline: &Outline<W>) -> Result<bool, String> {
        self.frames.pop();
        let Some(depth) = self.frames.len().checked_sub(1) else {
            return Ok(false);
        };
        let block = self.block_at(outline, depth)?;
        let frame = &mut self.frames[depth];
        if let Some(Instruction::If { .. }) = block.get(frame.index) {
            frame.index += 1;
        }
        frame.branch = None;
        Ok(true)
    }

    /// The block the frame at `depth` walks, found by following the outer frames.
    fn block_at<'o, W>(
        &self,
        outline: &'o Outline<W>,
        depth: usize,
    ) -> Result<&'o [Instruction<W>], String> {
        let mut block: &[Instruction<W>] = &outline.block;
        for frame in &self.frames[..depth] {
            block = match (block.get(frame.index), frame.branch) {
                (Some(Instruction::While(_, _, body)), _) => body,
                (
                    Some(Instruction::If {
                        branches,
                        otherwise,
                    }),
                    Some(branch),
                ) => match branches.get(branch) {
                    Some((_, _, inner)) => inner,
                    None => otherwise.as_deref().ok_or_else(|| self.lost())?,
                },
                _ => return Err(self.lost()),
            };
        }
        Ok(block)
    }

    fn lost(&self) -> String {
        format!("the saved outline position {self} does not fit this outline (was it changed?)")
    }

    /// The position in plumpy's notation, e.g. `1:while_(not_done)(0:iterate)`, given the
    /// outline for names.
    pub fn describe<W>(&self, outline: &Outline<W>) -> String {
        let mut text = String::new();
        let mut block: &[Instruction<W>] = &outline.block;
        for (depth, frame) in self.frames.iter().enumerate() {
            if depth > 0 {
                text.push('(');
            }
            text.push_str(&frame.index.to_string());
            text.push(':');
            let instruction = block.get(frame.index);
            match instruction {
                Some(Instruction::Step(name)) => text.push_str(name),
                Some(Instruction::While(name, _, body)) => {
                    text.push_str(&format!("while_({name})"));
                    block = body;
                }
                Some(Instruction::If {
                    branches,
                    otherwise,
                }) => {
                    let branch = frame.branch.unwrap_or(0);
                    match branches.get(branch) {
                        Some((name, _, inner)) => {
                            let word = if branch == 0 { "if_" } else { "elif_" };
                            text.push_str(&format!("{word}({name})"));
                            block = inner;
                        }
                        None => {
                            text.push_str("else_");
                            block = otherwise.as_deref().unwrap_or(&[]);
                        }
                    }
                }
                Some(Instruction::Return(_)) => text.push_str("return_"),
                Some(Instruction::Invalid(_)) => text.push_str("invalid"),
                None => text.push_str("end"),
            }
        }
        text.push_str(&")".repeat(self.frames.len().saturating_sub(1)));
        text
    }
}

impl fmt::Display for Stepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let indices: Vec<String> = self.frames.iter().map(|f| f.index.to_string()).collect();
        write!(f, "[{}]", indices.join(","))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Walks the outline to the end, treating every step as done, and lists the steps.
    fn walk(outline: &Outline<u32>, chain: &mut u32) -> Vec<String> {
        let mut stepper = Stepper::default();
        let mut ran = Vec::new();
        let ctx = ChainCtx::new();
        loop {
            match stepper.find_next(outline, chain, &ctx).unwrap() {
                Found::Step(name) => {
                    ran.push(format!("{} {}", name, stepper.describe(outline)));
                    if name == "inc" {
                        *chain += 1;
                    }
                    stepper.step_done();
                }
                Found::Return(code) => {
                    ran.push(format!("return {}", code.status));
                    return ran;
                }
                Found::End => return ran,
            }
        }
    }

    #[test]
    fn while_loops_until_its_predicate_fails_and_positions_read_like_plumpy() {
        let outline = Outline::new([
            step("a"),
            while_("small", |n: &u32, _| *n < 2, [step("inc")]),
            step("z"),
        ]);
        let ran = walk(&outline, &mut 0);
        assert_eq!(
            ran,
            [
                "a 0:a",
                "inc 1:while_(small)(0:inc)",
                "inc 1:while_(small)(0:inc)",
                "z 2:z"
            ]
        );
    }

    #[test]
    fn if_elif_else_take_exactly_one_branch() {
        let outline = |start: u32| {
            let outline = Outline::new([
                if_("zero", |n: &u32, _| *n == 0, [step("is_zero")])
                    .elif_("one", |n: &u32, _| *n == 1, [step("is_one")])
                    .else_([step("is_other")]),
                step("after"),
            ]);
            walk(&outline, &mut start.clone())
        };
        assert_eq!(
            outline(0),
            ["is_zero 0:if_(zero)(0:is_zero)", "after 1:after"]
        );
        assert_eq!(
            outline(1),
            ["is_one 0:elif_(one)(0:is_one)", "after 1:after"]
        );
        assert_eq!(
            outline(7),
            ["is_other 0:else_(0:is_other)", "after 1:after"]
        );
    }

    #[test]
    fn an_if_without_else_and_no_match_is_skipped_and_return_stops() {
        let outline = Outline::new([
            if_("never", |_: &u32, _| false, [step("no")]),
            while_(
                "forever",
                |_: &u32, _| true,
                [
                    if_(
                        "twice",
                        |n: &u32, _| *n >= 2,
                        [return_code(ExitCode::new(3, "x"))],
                    ),
                    step("inc"),
                ],
            ),
        ]);
        let ran = walk(&outline, &mut 0);
        assert_eq!(ran.len(), 3);
        assert_eq!(ran[2], "return 3");
    }

    #[test]
    fn misuse_of_elif_and_else_is_reported_not_panicked() {
        let bad: Outline<u32> = Outline::new([step("a").else_([step("b")])]);
        assert!(bad.check().unwrap_err().contains("else_ after step a"));
        let twice: Outline<u32> = Outline::new([if_("p", |_, _| true, [step("a")])
            .else_([])
            .elif_("q", |_, _| true, [])]);
        assert!(twice.check().unwrap_err().contains("elif_(q) after else_"));
    }

    #[test]
    fn a_position_that_does_not_fit_the_outline_is_an_error() {
        let outline: Outline<u32> = Outline::new([step("a")]);
        let mut stepper: Stepper = serde_json::from_value(
            serde_json::json!({"frames": [{"index": 0, "branch": 1}, {"index": 0}]}),
        )
        .unwrap();
        let error = stepper
            .find_next(&outline, &0, &ChainCtx::new())
            .err()
            .unwrap();
        assert!(error.contains("does not fit"), "{error}");
    }
}
