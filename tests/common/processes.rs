//! Process types shared by the control tests and the control benchmark (which includes this
//! file by path): small, persistent, built from their inputs.
// Not every includer uses every type.
#![allow(dead_code)]

use runtime_thread::engine::{Command, Persistent, Process, StepContext, StepError};

/// Adds its inputs `a` and `b` into its output `sum`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Add {
    pub a: i64,
    pub b: i64,
}

impl Process for Add {
    async fn step(&mut self, _: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        ctx.out("sum", (self.a + self.b).into());
        Ok(Command::finish())
    }
}

impl Persistent for Add {
    const TYPE_NAME: &'static str = "test.Add";
}

/// Fails in its first step with `boom`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Boom {}

impl Process for Boom {
    async fn step(&mut self, _: &str, _: &mut StepContext) -> Result<Command, StepError> {
        Err(StepError::msg("boom"))
    }
}

impl Persistent for Boom {
    const TYPE_NAME: &'static str = "test.Boom";
}

/// Waits for a resume, then finishes with the value as its output `resumed`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Waits {}

impl Process for Waits {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            return Ok(Command::wait_for_resume("done"));
        }
        let value = ctx.take_resume_value().unwrap_or_default();
        ctx.out("resumed", value);
        Ok(Command::finish())
    }
}

impl Persistent for Waits {
    const TYPE_NAME: &'static str = "test.Waits";
}

/// Waits for a resume in `run`, then outputs `y = 2x` in `emit`: a process that stays running
/// until told, with an output that tells which one it was.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Doubles {
    pub x: i64,
}

impl Process for Doubles {
    async fn step(&mut self, step: &str, ctx: &mut StepContext) -> Result<Command, StepError> {
        if step == "run" {
            return Ok(Command::wait_for_resume("emit"));
        }
        ctx.out("y", (self.x * 2).into());
        Ok(Command::finish())
    }
}

impl Persistent for Doubles {
    const TYPE_NAME: &'static str = "test.Doubles";
}
