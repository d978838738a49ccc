//! 13 · A work chain: an outline with `if_` and `while_`, children, and a context.
//!
//! A work chain spells out its control flow as data, the outline, and implements only the
//! steps. That makes its position a few numbers that a checkpoint can hold (see example 15).
//! Here a chain estimates a square root by bisection: each round launches two child processes
//! (the squares of the interval's ends, as if each were an expensive calculation elsewhere),
//! waits for both through its context, and narrows the interval while it is too wide.
//!
//! Run it: `cargo run --example 13_work_chain`

use std::sync::LazyLock;

use runtime_thread::engine::{
    Chain, ChainContext, Command, EngineError, Flow, Outline, Process, Runner, StepContext,
    StepError, WorkChain, if_, step, while_,
};
use serde_json::json;

/// A child: squares a number (stands for any expensive calculation).
struct Square(f64);

impl Process for Square {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        ctx.out("square", json!(self.0 * self.0));
        Ok(Command::finish())
    }
}

/// The chain's own state. Its fields, like its `ctx`, would be saved in a checkpoint.
struct Bisect {
    target: f64,
    low: f64,
    high: f64,
    rounds: u32,
}

impl Bisect {
    fn too_wide(&self) -> bool {
        self.high - self.low > 1e-3
    }
}

// The outline: validate, then loop while the interval is too wide; report how it went.
static OUTLINE: LazyLock<Outline<Bisect>> = LazyLock::new(|| {
    Outline::new([
        step("setup"),
        while_(
            "too_wide",
            |b: &Bisect, _ctx| b.too_wide(),
            [step("evaluate"), step("narrow")],
        ),
        if_("slow", |b: &Bisect, _ctx| b.rounds > 20, [step("warn")]).else_([step("report")]),
    ])
});

impl WorkChain for Bisect {
    const TYPE_NAME: &'static str = "examples.Bisect";

    fn outline() -> &'static Outline<Self> {
        &OUTLINE
    }

    async fn step(&mut self, step: &str, wc: &mut ChainContext<'_>) -> Result<Flow, StepError> {
        match step {
            "setup" => {
                if self.target < 0.0 {
                    return Ok(Flow::Return(runtime_thread::engine::ExitCode::new(
                        300,
                        "no real square root",
                    )));
                }
                self.high = self.target.max(1.0);
            }
            "evaluate" => {
                // A child; the chain waits for it, and its outputs land in ctx["middle"].
                let middle = (self.low + self.high) / 2.0;
                let child = wc.launch(Square(middle));
                wc.to_context("middle", &child);
                wc.ctx_mut().insert("middle_value".into(), json!(middle));
            }
            "narrow" => {
                let square = wc.ctx()["middle"]["square"].as_f64().unwrap_or(f64::NAN);
                let middle = wc.ctx()["middle_value"].as_f64().unwrap_or(f64::NAN);
                if square < self.target {
                    self.low = middle;
                } else {
                    self.high = middle;
                }
                self.rounds += 1;
            }
            "warn" => {
                println!("  (that took {} rounds)", self.rounds);
                wc.out("root", json!((self.low + self.high) / 2.0));
            }
            _ => wc.out("root", json!((self.low + self.high) / 2.0)),
        }
        Ok(Flow::Next)
    }
}

fn main() -> Result<(), EngineError> {
    let runner = Runner::start()?;
    for target in [2.0, 10.0, 1e6] {
        let chain = Bisect {
            target,
            low: 0.0,
            high: 0.0,
            rounds: 0,
        };
        let outputs = runner.run(Chain::new(chain))?;
        println!(
            "sqrt({target}) ~ {:.4}",
            outputs["root"].as_f64().unwrap_or(f64::NAN)
        );
    }
    // A failure exit code returned by a step stops the chain: `run` reports it as an error.
    let negative = Bisect {
        target: -1.0,
        low: 0.0,
        high: 0.0,
        rounds: 0,
    };
    match runner.run(Chain::new(negative)) {
        Err(EngineError::Failed { exit_code }) => println!("sqrt(-1): failed with {exit_code}"),
        other => println!("sqrt(-1): unexpected {other:?}"),
    }
    Ok(())
}
