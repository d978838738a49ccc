//! 12 · A simple process with inputs and outputs.
//!
//! A process is a small state machine: the engine calls one named step at a time, and each step
//! returns a command saying what comes next (another step, a wait, a stop with an exit code).
//! Because steps are async, a step can await anything, including another process, without
//! blocking the thread that runs thousands of them. Outputs are emitted as they are produced.
//!
//! Run it: `cargo run --example 12_simple_process`

use runtime_thread::engine::{Command, EngineError, Process, Runner, StepContext, StepError};
use serde_json::json;

/// Its inputs are its fields; its outputs are emitted through the context.
struct Division {
    numerator: f64,
    denominator: f64,
}

impl Process for Division {
    fn first_step(&self) -> &'static str {
        "check"
    }

    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        match step {
            "check" if self.denominator == 0.0 => {
                // A failure exit code: the process finished, but did not succeed.
                Ok(Command::fail(400, "the denominator is zero"))
            }
            "check" => Ok(Command::next("divide")),
            "divide" => {
                ctx.out("quotient", json!(self.numerator / self.denominator));
                ctx.out("pid", json!(ctx.pid().to_string()));
                Ok(Command::finish())
            }
            other => Err(StepError::msg(format!("unknown step {other}"))),
        }
    }
}

fn main() -> Result<(), EngineError> {
    let runner = Runner::start()?;

    let outputs = runner.run(Division {
        numerator: 84.0,
        denominator: 2.0,
    })?;
    println!(
        "84 / 2 = {} (process {})",
        outputs["quotient"], outputs["pid"]
    );

    match runner.run(Division {
        numerator: 1.0,
        denominator: 0.0,
    }) {
        Err(EngineError::Failed { exit_code }) => {
            println!("1 / 0 failed with exit code {exit_code}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // Many at once: submit returns a handle at once; each process is a task on one thread.
    let handles: Vec<_> = (1..=5)
        .map(|d| {
            runner.submit(Division {
                numerator: 60.0,
                denominator: f64::from(d),
            })
        })
        .collect();
    for handle in handles {
        let outputs = handle.wait()?.into_outputs()?;
        println!("60 / d = {}", outputs["quotient"]);
    }
    Ok(())
}
